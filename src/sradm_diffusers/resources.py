"""Files shipped inside the package: the CPU-trained demo pipeline and a sample low-resolution photo."""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent

#: Folder of the bundled demo pipeline (preset "small", 4x, trained on CPU; see model_card.md).
#: Usable wherever a pipeline folder or Hub id is: ``SRADMPipeline.from_pretrained(DEMO_MODEL)``.
DEMO_MODEL = str(_PACKAGE_DIR / "pretrained" / "sradm-demo-x4")

#: A 128x128 LR photo for the quick start: scikit-image's "astronaut" (NASA, public domain) downscaled 4x
#: with :func:`sradm_diffusers.imresize`. It is one of the demo model's held-out evaluation photos.
SAMPLE_IMAGE = str(_PACKAGE_DIR / "assets" / "astronaut_lr_x4.png")
