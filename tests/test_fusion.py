"""Content fusion on the bundled demo model."""

import diffusers
import pytest
import torch

from sradm_diffusers import imresize
from sradm_diffusers.extras.fusion import feather_mask, fuse


def test_feather_mask_is_a_normalised_blur():
    mask = torch.zeros(1, 1, 20, 40)
    mask[..., :20] = 1
    soft = feather_mask(mask, 4.0)
    assert soft[0, 0, 10, 0] == pytest.approx(1.0) and soft[0, 0, 10, -1] == pytest.approx(0.0)
    assert soft[0, 0, 10, 19] == pytest.approx(0.5, abs=0.15)  # the border is half-way
    assert torch.all(soft[0, 0, 10, 1:] <= soft[0, 0, 10, :-1] + 1e-6)  # falls monotonically
    assert torch.equal(feather_mask(mask, 0), mask)


def test_masked_region_follows_the_reference_and_the_rest_the_plain_sample(demo_pipe, demo_lr):
    demo_pipe.scheduler = diffusers.DDIMScheduler.from_config(demo_pipe.scheduler.config, timestep_spacing="trailing")
    # other detail on the same LR content (the model's residual covers +-0.5 around the upsample): a checkerboard
    checker = ((torch.arange(64)[:, None] // 4 + torch.arange(80)[None] // 4) % 2).float() * 0.3 - 0.15
    reference = (imresize(demo_lr, 4) + checker).clamp(0, 1)
    mask = torch.zeros(64, 80)
    mask[:, :32] = 1
    kwargs = dict(num_inference_steps=8, output_type="pt")
    plain = demo_pipe(demo_lr, generator=torch.Generator().manual_seed(0), **kwargs).images[0]
    fused = fuse(demo_pipe, demo_lr, reference, mask, feather=4.0, generator=torch.Generator().manual_seed(0),
                 **kwargs).images[0]
    inside, outside = (slice(None), slice(None), slice(0, 24)), (slice(None), slice(None), slice(48, 80))
    distance_to_reference = {name: (x[inside] - reference[0][inside]).abs().mean() for name, x in
                             (("fused", fused), ("plain", plain))}
    assert distance_to_reference["fused"] < 0.5 * distance_to_reference["plain"]
    moved_inside = (fused[inside] - plain[inside]).abs().mean()
    moved_outside = (fused[outside] - plain[outside]).abs().mean()
    assert moved_outside < 0.1 * moved_inside
    for stat in (torch.mean, torch.std):  # per-channel statistics outside the mask
        torch.testing.assert_close(stat(fused[outside], dim=(1, 2)), stat(plain[outside], dim=(1, 2)), atol=0.01,
                                   rtol=0)


def test_reference_and_mask_sizes_are_checked(demo_pipe, demo_lr):
    with pytest.raises(ValueError, match="HR size"):
        fuse(demo_pipe, demo_lr, torch.rand(1, 3, 60, 80), torch.ones(64, 80), num_inference_steps=2)
    with pytest.raises(ValueError, match="mask"):
        fuse(demo_pipe, demo_lr, torch.rand(1, 3, 64, 80), torch.ones(32, 40), num_inference_steps=2)
