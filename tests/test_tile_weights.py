"""The blend of tiled noise predictions, value by value: the raised-cosine ramps of ``tile_weights`` against a
closed form, which sides ramp, and the per-pixel shares (sampling.tiling)."""

import math

import numpy as np
import pytest
import torch

from sradm_diffusers import build_pipeline
from sradm_diffusers.sampling.tiling import Tile, TiledNoisePredictor, plan_tiles, tile_weights


def expected_profile(size: int, ramp: int, rise: bool, fall: bool) -> np.ndarray:
    """The documented 1-D profile written as sin^2 (0.5 - 0.5 cos x = sin^2(x / 2)): pixel i (centre i + 0.5) of a
    rising side weighs sin^2(pi (i + 0.5) / (2 ramp)) for i < ramp, a falling side mirrors it; 1 elsewhere."""
    ramp = min(ramp, size)
    weights = np.ones(size)
    for i in range(size):
        if rise and i < ramp:
            weights[i] = min(weights[i], math.sin(math.pi * (i + 0.5) / (2 * ramp)) ** 2)
        from_end = size - 1 - i
        if fall and from_end < ramp:
            weights[i] = min(weights[i], math.sin(math.pi * (from_end + 0.5) / (2 * ramp)) ** 2)
    return weights


def test_a_one_pixel_ramp_halves_the_shared_border_pixels():
    # Tile (top 8, bottom 16) inside a 24 x 16 canvas: both row sides shared, column sides on the canvas edges.
    weights = tile_weights(Tile(8, 16, 0, 16), 24, 16, ramp=1)
    # 0.5 - 0.5 cos(pi / 2): cos(pi / 2) is 6e-17 in floating point, hence the one-ulp tolerance.
    np.testing.assert_allclose(weights[:, 0].numpy(), [0.5, 1, 1, 1, 1, 1, 1, 0.5], rtol=0, atol=1e-16)
    np.testing.assert_allclose(weights[0].numpy(), np.full(16, 0.5), rtol=0, atol=1e-16)


@pytest.mark.parametrize("ramp", [2, 3, 8, 20])
def test_ramps_are_the_raised_cosine_sampled_at_pixel_centres(ramp):
    weights = tile_weights(Tile(8, 24, 16, 48), 40, 64, ramp)
    assert weights.dtype == torch.float64  # shares are normalised in float64, then cast to the model's dtype
    rows, cols = expected_profile(16, ramp, True, True), expected_profile(32, ramp, True, True)
    np.testing.assert_allclose(weights.numpy(), np.outer(rows, cols), rtol=0, atol=1e-15)
    if ramp == 2:  # sin^2(pi / 8) and sin^2(3 pi / 8), written out
        np.testing.assert_allclose(weights[:2, 16].numpy(), [0.1464466094067262, 0.8535533905932737], atol=1e-15)


@pytest.mark.parametrize(
    "tile, rise_fall_rows, rise_fall_cols",
    [
        (Tile(0, 16, 0, 16), (False, True), (False, True)),  # top-left corner tile
        (Tile(1, 17, 0, 16), (True, True), (False, True)),  # one pixel below the top edge: its top is shared
        (Tile(0, 16, 1, 17), (False, True), (True, True)),  # one pixel right of the left edge: its left is shared
        (Tile(24, 40, 48, 64), (True, False), (True, False)),  # ends on the canvas' bottom and right edges
        (Tile(24, 39, 47, 63), (True, True), (True, True)),  # one pixel short of both: all four sides shared
        (Tile(0, 40, 0, 64), (False, False), (False, False)),  # the whole canvas: weight 1 everywhere
    ],
)
def test_only_sides_shared_with_a_neighbour_ramp(tile, rise_fall_rows, rise_fall_cols):
    ramp = 4
    weights = tile_weights(tile, 40, 64, ramp)
    rows = expected_profile(tile.bottom - tile.top, ramp, *rise_fall_rows)
    cols = expected_profile(tile.right - tile.left, ramp, *rise_fall_cols)
    np.testing.assert_allclose(weights.numpy(), np.outer(rows, cols), rtol=0, atol=1e-15)


def test_a_ramp_longer_than_the_tile_is_cut_to_the_tile():
    weights = tile_weights(Tile(8, 11, 0, 64), 40, 64, ramp=8)
    np.testing.assert_allclose(weights[:, 0].numpy(), expected_profile(3, 3, True, True), atol=1e-15)


def test_zero_overlap_gives_flat_weights():
    assert torch.equal(tile_weights(Tile(8, 24, 8, 24), 40, 40, ramp=0), torch.ones(16, 16, dtype=torch.float64))


def test_shares_sum_to_one_to_float64_precision_for_a_float64_model():
    """The shares are formed in float64 and only then cast to the model's dtype: a float64 model gets shares that sum
    to one to ~1e-16 (a float32 normaliser would leave ~1e-7)."""
    height, width, ramp = 116, 148, 16
    tiles = plan_tiles(height, width, 48, ramp, 8)
    unet = build_pipeline("tiny").unet.double()
    predictor = TiledNoisePredictor(unet, torch.zeros(1, 4, height // 4, width // 4), tiles, 4, ramp)
    total = torch.zeros(height, width, dtype=torch.float64)
    for t, share in zip(tiles, predictor.shares):
        assert share.dtype == torch.float64
        total[t.top : t.bottom, t.left : t.right] += share
    # Measured: max |total - 1| = 2.2e-16 (one float64 ulp); a float32 normaliser gives ~6e-8. Margin: 10 ulps.
    assert (total - 1).abs().max() <= 2.5e-15
    # Each share is its tile's weight over the sum of the weights covering the pixel, computed here in numpy.
    weights = [tile_weights(t, height, width, ramp).numpy() for t in tiles]
    summed = np.zeros((height, width))
    for t, w in zip(tiles, weights):
        summed[t.top : t.bottom, t.left : t.right] += w
    for t, w, share in zip(tiles, weights, predictor.shares):
        np.testing.assert_allclose(share.numpy(), w / summed[t.top : t.bottom, t.left : t.right], rtol=1e-15)


def test_shares_are_cast_to_the_models_dtype():
    """A float32 model multiplies its float32 predictions by float32 shares: no float64 result to cast back."""
    tiles = plan_tiles(64, 64, 32, 8, 8)
    unet = build_pipeline("tiny").unet
    predictor = TiledNoisePredictor(unet, torch.zeros(1, unet.config.cond_channels, 16, 16), tiles, 4, 8)
    assert {share.dtype for share in predictor.shares} == {torch.float32}
    assert predictor(torch.zeros(1, 3, 64, 64), 10).dtype == torch.float32
