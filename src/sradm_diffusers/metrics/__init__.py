"""Image-quality metrics and the ``sradm evaluate`` protocol.

- :mod:`.quality`: PSNR/SSIM on RGB and on Y, LR-PSNR, sample diversity (shared/reference/srdiff.md's protocol).
- :mod:`.lpips`: LPIPS (AlexNet) from local weights.
- :mod:`.colour`: colour-shift diagnostics against the LR input.
- :mod:`.ssim`: the strip-wise SSIM engine behind both SSIM protocols.
- ``evaluate_metric/``: the same metrics as a Hugging Face ``evaluate`` module.

The names of :mod:`.quality` are re-exported here: ``sradm_diffusers.metrics`` was that module before the package
was split up.
"""

from .quality import *  # noqa: F401,F403
from .quality import __all__, to_uint8  # noqa: F401
