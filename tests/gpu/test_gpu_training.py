"""A few training steps on a CUDA GPU with ``--mixed_precision bf16``: checkpoint, then resume to the same end.

Marked ``gpu``; skipped, with the reason, where torch sees no CUDA device."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)"),
]

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu-images")
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:48, 0:48]
    (root / "train").mkdir()
    for i in range(4):
        image = np.stack([x * 5 + 20 * i, y * 5, (x + y) * 2], -1) + rng.normal(0, 8, (48, 48, 3))
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(root / "train" / f"img{i}.png")
    return root


def _argv(images, out, steps, *extra):
    from test_train import common

    argv = [a for a in common(images, out, "--max_train_steps", steps, "--checkpointing_steps", 2,
                              "--validation_steps", 0, "--num_validation_images", 0, "--mixed_precision", "bf16")
            if a not in ("--validation_split", "test")]
    return ["--stage", "diffusion", *argv, *extra]


def test_bf16_training_checkpoints_and_resumes_on_cuda(images, tmp_path):
    from test_train import load_weights, run

    encoder = tmp_path / "encoder"
    summary = run(["--stage", "encoder", *_argv(images, encoder, 2)[2:]])
    assert summary["global_step"] == 2
    straight = tmp_path / "straight"
    assert run(_argv(images, straight, 4, "--pretrained_encoder", str(encoder)))["global_step"] == 4
    resumed = tmp_path / "resumed"
    run(_argv(images, resumed, 2, "--pretrained_encoder", str(encoder)))
    summary = run(_argv(images, resumed, 4, "--pretrained_encoder", str(encoder), "--resume_from_checkpoint", "latest"))
    assert summary["global_step"] == 4 and (resumed / "checkpoint-4").is_dir()

    at_2 = load_weights(straight / "checkpoint-2" / "unet")
    end, again = load_weights(straight / "unet"), load_weights(resumed / "unet")
    for key in end:
        assert torch.isfinite(again[key]).all(), key
    # GPU kernels need not be bit-reproducible (cuDNN picks algorithms); a resume that lost the optimizer state or
    # restarted from step 0 differs from the straight run by about the training's own change (steps 2 -> 4), so
    # the resumed weights must be much closer to the straight run's than that change.
    drift = max((again[k].float() - end[k].float()).abs().max().item() for k in end)
    change = max((end[k].float() - at_2[k].float()).abs().max().item() for k in end)
    assert change > 0 and drift < 0.1 * change, (drift, change)
