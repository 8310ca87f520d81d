"""The pipeline's diffusers-style parts: get_timesteps, prepare_latents, one tile plan per call, the Hub mixin."""

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline, UniPCMultistepScheduler

from sradm_diffusers.loading.pipeline_hub import SRADMHubMixin
from sradm_diffusers.pipeline import SRADMPipeline
from sradm_diffusers.sampling import tiling


def test_sampling_class_keeps_the_hub_overrides_in_the_mixin():
    assert SRADMPipeline.__mro__[1:3] == (SRADMHubMixin, DiffusionPipeline)
    for name in ("save_pretrained", "from_pretrained", "load_config", "register_to_config", "download"):
        assert name not in SRADMPipeline.__dict__, name
        assert name in SRADMHubMixin.__dict__, name


def test_get_timesteps_runs_the_last_int_steps_times_strength(tiny_pipe):
    tiny_pipe.scheduler = UniPCMultistepScheduler.from_config(tiny_pipe.scheduler.config, timestep_spacing="trailing")
    everything = tiny_pipe.get_timesteps(11, 1.0, "cpu")
    tiny_pipe.scheduler.set_timesteps(11)
    assert torch.equal(everything, tiny_pipe.scheduler.timesteps) and len(everything) == 11
    # 11 steps at strength 0.82: int(9.02) = 9 steps run, the last 9 of the 11-step grid.
    assert torch.equal(tiny_pipe.get_timesteps(11, 0.82, "cpu"), everything[2:])


def test_prepare_latents_draws_from_the_generator_and_pads(tiny_pipe):
    shape = (2, 3, 8, 12)
    drawn = tiny_pipe.prepare_latents(shape, torch.Generator().manual_seed(3), None, "cpu", (0, 0))
    assert torch.equal(drawn, torch.randn(shape, generator=torch.Generator().manual_seed(3)))
    given = torch.randn(shape)
    padded = tiny_pipe.prepare_latents(shape, None, given, "cpu", (4, 2))
    assert padded.shape == (2, 3, 12, 14) and torch.equal(padded[..., :8, :12], given)
    with pytest.raises(ValueError, match=r"latents have shape \(2, 3, 8, 8\); expected \(2, 3, 8, 12\)"):
        tiny_pipe.prepare_latents(shape, None, torch.zeros(2, 3, 8, 8), "cpu", (0, 0))


def test_one_tile_plan_per_call(tiny_pipe, lr_image, monkeypatch):
    made = []
    original = tiling.TilePlan.make.__func__

    def counting(cls, *args):
        plan = original(cls, *args)
        made.append(len(plan.tiles))
        return plan

    monkeypatch.setattr(tiling.TilePlan, "make", classmethod(counting))
    tiny_pipe.enable_tiling(16, 4)
    for strength in (1.0, 0.5):
        made.clear()
        out = tiny_pipe(lr_image, num_inference_steps=2, strength=strength, output_type="np",
                        generator=torch.Generator().manual_seed(0)).images
        assert out.shape == (1, 4 * lr_image.shape[0], 4 * lr_image.shape[1], 3) and np.isfinite(out).all()
        assert len(made) == 1 and made[0] > 1, made


def test_shipped_pipeline_file_holds_the_sampling_code_only(tiny_pipe, tmp_path):
    """The Hub checks, the inliner and the models stay out of pipeline_sradm.py (the models ship in their own
    component files); what is left is the sampling code and the save/load code that shipped pipelines run."""
    tiny_pipe.save_pretrained(tmp_path)
    text = (tmp_path / "pipeline_sradm.py").read_text()
    header = [line[4:].strip() for line in text.splitlines() if line.startswith("#   ")]
    assert header[-1] == "sradm_diffusers.pipeline"
    for left_out in ("sradm_diffusers.loading.inliner", "sradm_diffusers.loading.hub", "sradm_diffusers.models.unet",
                     "sradm_diffusers.models.rrdb_encoder"):
        assert left_out not in header
    assert "def inline_modules" not in text and "def explain_load_error" not in text
    assert "class SRADMUNet" not in text and "class RRDBEncoder" not in text
