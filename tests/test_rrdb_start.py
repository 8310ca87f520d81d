"""sampling.rrdb_start against independent expectations: where a truncated schedule begins, the head run on a
given trunk and in tiles, and the clamps of the start residual (mutants of these survived the feature tests)."""

import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler

from sradm_diffusers import RRDBEncoder
from sradm_diffusers.presets import default_scheduler
from sradm_diffusers.sampling import rrdb_start
from sradm_diffusers.sampling.rrdb_start import rrdb_residual, rrdb_upscale, truncate_timesteps


@pytest.mark.parametrize("cls", [UniPCMultistepScheduler, DPMSolverMultistepScheduler])
@pytest.mark.parametrize("steps, strength, begin", [(11, 0.82, 2), (10, 0.5, 5), (8, 1.0, 0)])
def test_the_scheduler_is_told_where_the_truncated_schedule_begins(cls, steps, strength, begin):
    scheduler = cls.from_config(default_scheduler().config)
    scheduler.set_timesteps(steps)
    full = scheduler.timesteps.clone()
    timesteps = truncate_timesteps(scheduler, steps, strength)
    assert torch.equal(timesteps, full[begin:])
    assert scheduler.begin_index == begin
    # the multistep solvers start their step index there: the first step is the one at timesteps[0]
    scheduler.step(torch.zeros(1, 3, 4, 4), timesteps[0], torch.zeros(1, 3, 4, 4))
    assert scheduler.step_index == begin + 1


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    model = RRDBEncoder(num_features=8, num_blocks=2, growth_channels=4, upscale_factor=4, bicubic_skip=True).eval()
    return model


def test_the_head_on_a_given_trunk_and_in_tiles_is_the_whole_upscale(encoder):
    """With the bicubic skip the head reads the LR image too; tiles need the full halo to match at their seams."""
    lr = torch.rand(1, 3, 20, 24, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        whole = encoder.upscale(lr)
        trunk = encoder(lr, return_trunk=True)[1]
        torch.testing.assert_close(rrdb_upscale(encoder, lr, trunk=trunk), whole, rtol=0, atol=1e-6)
        tiled = rrdb_upscale(encoder, lr, tile=8)
    # measured: up to ~1e-6 between tiled and whole (another conv shape); a halo 4 pixels short differs by ~1e-2
    torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-5)


def test_the_start_residual_clamps_the_rrdb_image_then_the_residual(monkeypatch):
    """x0 = clamp((clamp(sr, -1, 1) - up) * residual_scale, -1, 1), with sr cropped to up's size."""
    sr = torch.tensor([3.0, -3.0, 0.9, 0.2]).reshape(1, 1, 2, 2).repeat(1, 3, 2, 2)  # (1, 3, 4, 4): cropped to 2x2
    monkeypatch.setattr(rrdb_start, "rrdb_upscale", lambda encoder, lr, tile, trunk: sr)
    up = torch.tensor([-0.5, 0.5, -0.9, 0.2]).reshape(1, 1, 2, 2).repeat(1, 3, 1, 1)
    got = rrdb_residual(None, torch.zeros(1, 3, 1, 1), up, 0.5)
    expected = ((sr[:, :, :2, :2].clamp(-1, 1) - up) * 0.5).clamp(-1, 1)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert got[0, 0, 0, 0] == 0.75 and got[0, 0, 0, 1] == -0.75  # |sr| = 3 clamped to 1 first
    got = rrdb_residual(None, torch.zeros(1, 3, 1, 1), up, 4.0)
    assert got.abs().max() == 1.0 and got[0, 0, 1, 0] == 1.0  # (0.9 + 0.9) * 4 clamped to the model's range
