import os

# Tests never reach the network; set before huggingface_hub reads its constants.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

# The tensors in these tests are tiny; one intra-op thread avoids oversubscribing a shared 2-core machine, where
# two spinning OpenMP threads can make a step many times slower.
torch.set_num_threads(1)


@pytest.fixture
def tiny_pipe():
    from sradm_diffusers import build_pipeline

    torch.manual_seed(0)
    pipe = build_pipeline("tiny", upscale_factor=4)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def lr_image():
    """A 37x29 (w x h) RGB uint8 image with structure (gradients + a square)."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:29, 0:37]
    image = np.stack([x * 6, y * 8, (x + y) * 3], axis=-1).astype(np.float32)
    image[8:18, 10:20] = 220
    image += rng.normal(0, 4, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """A saved random-weight `tiny` 4x pipeline folder, for the command-line tests' --model."""
    from sradm_diffusers import build_pipeline

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("model") / "tiny"
    build_pipeline("tiny", upscale_factor=4).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def demo_pipe():
    """The bundled demo pipeline (per test module: tests swap its scheduler)."""
    from sradm_diffusers import DEMO_MODEL, SRADMPipeline

    pipe = SRADMPipeline.from_pretrained(DEMO_MODEL)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def demo_lr():
    """A 20x16 LR crop of the bundled sample photo as a (1, 3, 16, 20) tensor in [0, 1]: flat sky on top-left,
    detail below."""
    from PIL import Image

    from sradm_diffusers import SAMPLE_IMAGE

    array = np.asarray(Image.open(SAMPLE_IMAGE).convert("RGB"))[40:56, 60:80]
    return torch.from_numpy(array.copy()).permute(2, 0, 1)[None].float() / 255
