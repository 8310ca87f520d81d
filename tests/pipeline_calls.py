"""The seeded pipeline call several test modules share (importable: pytest puts this folder on sys.path)."""

import torch


def run(pipe, image, seed=0, **kwargs):
    """``pipe(image)`` with a fresh generator seeded ``seed``, 4 steps and tensor output unless told otherwise;
    returns the images (B, 3, H, W) in [0, 1]."""
    kwargs.setdefault("num_inference_steps", 4)
    kwargs.setdefault("output_type", "pt")
    return pipe(image, generator=torch.Generator().manual_seed(seed), **kwargs).images
