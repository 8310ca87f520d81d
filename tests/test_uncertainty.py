"""sample_with_uncertainty / uncertainty_map on the bundled demo model."""

import diffusers
import numpy as np
import pytest
import torch

from sradm_diffusers import imresize
from sradm_diffusers.extras.uncertainty import colourize, sample_with_uncertainty, scale_bar, std_map, uncertainty_map


@pytest.fixture
def ddim_pipe(demo_pipe):
    demo_pipe.scheduler = diffusers.DDIMScheduler.from_config(demo_pipe.scheduler.config, timestep_spacing="trailing")
    return demo_pipe


def test_identical_latents_and_a_deterministic_sampler_give_zero_std(ddim_pipe, demo_lr):
    noise = torch.randn((1, 3, 64, 80), generator=torch.Generator().manual_seed(0))
    out = sample_with_uncertainty(ddim_pipe, demo_lr, num_samples=3, latents=noise.repeat(3, 1, 1, 1),
                                  num_inference_steps=6)
    assert out.samples.shape == (3, 3, 64, 80) and out.mean.shape == out.std.shape == (3, 64, 80)
    assert out.std.max() < 1e-4  # the three batch rows run one code path; allow last-bit kernel differences
    assert torch.allclose(out.mean, out.samples[0], atol=1e-4)


def test_std_is_positive_and_largest_where_the_input_has_detail(ddim_pipe, demo_lr):
    generators = [torch.Generator().manual_seed(k) for k in range(4)]
    out = sample_with_uncertainty(ddim_pipe, demo_lr, num_samples=4, generator=generators, num_inference_steps=6)
    torch.testing.assert_close(out.std, out.samples.std(dim=0, correction=0))
    std = out.std.mean(dim=0)
    assert std.mean() > 1 / 255
    up = imresize(demo_lr, 4)[0].mean(dim=0)  # detail = gradient magnitude of the bicubic upsample
    gradient = torch.zeros_like(up)
    gradient[1:-1, 1:-1] = (up[2:, 1:-1] - up[:-2, 1:-1]).abs() + (up[1:-1, 2:] - up[1:-1, :-2]).abs()
    detailed = gradient > gradient.quantile(0.75)
    flat = gradient < gradient.quantile(0.25)
    assert std[detailed].mean() > 2 * std[flat].mean()


def test_uncertainty_map_colours_and_scale_bar():
    assert colourize(np.array([[0.0]]), 4.0)[0, 0].tolist() == [68, 1, 84]
    assert colourize(np.array([[4.0, 9.0]]), 4.0)[0].tolist() == [[253, 231, 37], [253, 231, 37]]
    assert colourize(np.array([[2.0]]), 4.0)[0, 0].tolist() == [33, 145, 140]  # the ramp's middle anchor
    std = torch.zeros(3, 40, 50)
    std[:, :, 25:] = 8 / 255
    image = uncertainty_map(std, vmax=8.0, bar_height=20)
    assert image.size == (50, 60)
    pixels = np.asarray(image)
    assert pixels[10, 5].tolist() == [68, 1, 84] and pixels[10, 45].tolist() == [253, 231, 37]
    assert pixels[45:, :].std() > 0  # the bar and its labels are drawn
    np.testing.assert_array_equal(np.asarray(std_map(std, vmax=8.0)), pixels[:40])  # the same map, without the bar
    bar = np.asarray(scale_bar(8.0, width=100, height=20))
    assert bar.shape == (20, 100, 3) and bar[5, 4].tolist() == [68, 1, 84] and bar[5, 53].tolist() == [253, 231, 37]


def test_needs_two_samples(ddim_pipe, demo_lr):
    with pytest.raises(ValueError, match="num_samples"):
        sample_with_uncertainty(ddim_pipe, demo_lr, num_samples=1)
