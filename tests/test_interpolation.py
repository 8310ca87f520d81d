"""Latent slerp interpolation on the bundled demo model."""

import diffusers
import pytest
import torch

from sradm_diffusers.extras.interpolation import interpolate, slerp


def test_slerp_ends_and_norm():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 64, generator=g), torch.randn(3, 64, generator=g)
    a, b = a * 14 / a.norm(), b * 14 / b.norm()  # equal norms, like two draws of high-dimensional noise
    torch.testing.assert_close(slerp(a, b, 0.0), a)
    torch.testing.assert_close(slerp(a, b, 1.0), b)
    middle = slerp(a, b, 0.5)
    # the equal-angle point, of the ends' norm (a linear mix would shrink it)
    cos = torch.nn.functional.cosine_similarity
    torch.testing.assert_close(cos(middle.flatten(), a.flatten(), 0), cos(middle.flatten(), b.flatten(), 0))
    assert middle.norm() == pytest.approx(14, rel=1e-5) and (a + b).norm() / 2 < 0.8 * 14


def test_ends_are_the_plain_samples_and_the_path_is_smooth(demo_pipe, demo_lr):
    frames = interpolate(demo_pipe, demo_lr, num_frames=5, generator_a=torch.Generator().manual_seed(0),
                         generator_b=torch.Generator().manual_seed(1), num_inference_steps=6, output_type="pt")
    assert frames.shape == (5, 3, 64, 80)
    scheduler = demo_pipe.scheduler
    demo_pipe.scheduler = diffusers.DDIMScheduler.from_config(scheduler.config)
    plain = [demo_pipe(demo_lr, num_inference_steps=6, generator=torch.Generator().manual_seed(s), eta=0.0,
                       output_type="pt").images[0] for s in (0, 1)]
    demo_pipe.scheduler = scheduler
    # batch of 5 vs single image: oneDNN may pick other kernels, so last-bit differences (project tolerance 1e-4)
    torch.testing.assert_close(frames[0], plain[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(frames[-1], plain[1], atol=1e-4, rtol=0)
    ends = (frames[0] - frames[-1]).abs().mean()
    steps = [(frames[k] - frames[k + 1]).abs().mean() for k in range(4)]
    assert ends > 1 / 255
    assert max(steps) < ends


def test_needs_two_frames(demo_pipe, demo_lr):
    with pytest.raises(ValueError, match="num_frames"):
        interpolate(demo_pipe, demo_lr, num_frames=1)
