"""extras.uncertainty's maps against values computed here: the colour of a known std with a given or the default
vmax, the scale bar's minimum size and height, the summary's map (mutants of these survived the feature tests)."""

import numpy as np
import pytest
import torch

from sradm_diffusers.extras import uncertainty as U


def _ramp_colour(value: float, vmax: float) -> np.ndarray:
    """The ramp's colour for ``value``: linear between the ramp's stops, written out here."""
    ramp = U._RAMP.astype(np.float64)
    t = min(max(value / vmax, 0.0), 1.0) * (len(ramp) - 1)
    low = min(int(np.floor(t)), len(ramp) - 2)
    return np.round(ramp[low] * (1 - (t - low)) + ramp[low + 1] * (t - low)).astype(np.uint8)


def _std(value_0_255: float, size=(6, 5)) -> torch.Tensor:
    return torch.full((3, *size), value_0_255 / 255.0)


@pytest.mark.parametrize("vmax", [0.5, 10.0, 40.0])
def test_std_map_uses_the_given_vmax(vmax):
    std = _std(5.0)
    got = np.asarray(U.std_map(std, vmax=vmax))
    assert got.shape == (6, 5, 3)
    np.testing.assert_array_equal(got[0, 0], _ramp_colour(5.0, vmax))
    framed = np.asarray(U.uncertainty_map(std, vmax=vmax))
    np.testing.assert_array_equal(framed[:6], got)


def test_the_default_vmax_is_the_99th_percentile_but_at_least_one():
    small = _std(0.4)  # every value 0.4 (0..255): the percentile is below 1, so vmax is 1
    np.testing.assert_array_equal(np.asarray(U.std_map(small))[0, 0], _ramp_colour(0.4, 1.0))
    values = torch.linspace(0, 20, 100).reshape(1, 10, 10).repeat(3, 1, 1) / 255.0
    vmax = float(np.percentile(np.linspace(0, 20, 100), 99))
    np.testing.assert_array_equal(np.asarray(U.std_map(values))[5, 5], _ramp_colour(float(values[0, 5, 5]) * 255, vmax))


def test_the_scale_bar_is_at_least_16_pixels_and_as_tall_as_asked():
    assert U.scale_bar(3.0, width=1, height=1).size == (16, 16)
    assert U.scale_bar(3.0, width=40, height=1).size == (40, 16)
    assert U.scale_bar(3.0, width=1, height=40).size == (16, 40)
    framed = U.uncertainty_map(_std(5.0, (8, 64)), vmax=3.0, bar_height=40)
    assert framed.size == (64, 48)
    np.testing.assert_array_equal(np.asarray(framed)[8:], np.asarray(U.scale_bar(3.0, 64, 40)))


def test_the_summary_map_is_the_samples_std_with_the_default_vmax():
    g = torch.Generator().manual_seed(0)
    samples = torch.rand(4, 3, 6, 7, generator=g)
    mean, std_image, bar = U.summary_images(samples)
    values = samples.std(dim=0, correction=0).mean(dim=0).numpy() * 255.0
    vmax = max(float(np.percentile(values, 99)), 1.0)
    np.testing.assert_array_equal(np.asarray(std_image), U.colourize(values, vmax))
    np.testing.assert_array_equal(np.asarray(bar), np.asarray(U.scale_bar(vmax)))


def test_colourize_below_one_still_spreads_the_ramp():
    values = np.array([[0.0, 0.25, 0.5]])
    got = U.colourize(values, 0.5)
    np.testing.assert_array_equal(got[0, 2], U._RAMP[-1].round().astype(np.uint8))
    np.testing.assert_array_equal(got[0, 1], _ramp_colour(0.25, 0.5))


def test_documented_defaults_eight_samples_and_a_256x28_bar():
    from types import SimpleNamespace

    calls = []

    def pipe(image, num_images_per_prompt, output_type, **kwargs):
        calls.append((num_images_per_prompt, output_type))
        return SimpleNamespace(images=torch.rand(num_images_per_prompt, 3, 4, 4))

    out = U.sample_with_uncertainty(pipe, "image")
    assert calls == [(8, "pt")] and out.samples.shape == (8, 3, 4, 4)
    assert U.scale_bar(3.0).size == (256, 28)
    assert U.summary_images(torch.rand(2, 3, 4, 4))[2].size == (256, 28)
