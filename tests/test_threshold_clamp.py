"""Dynamic thresholding with sample_max_value <= 1 is a clamp: the pipeline skips the per-step quantile, bit-exact."""

import inspect

import pytest
import torch
from diffusers import (
    DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, UniPCMultistepScheduler,
)

from sradm_diffusers.presets import default_scheduler
from sradm_diffusers.sampling.prediction import bound_x0, thresholding_as_clamp

CLASSES = [DDPMScheduler, DDIMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler]


def _run(scheduler, steps=4):
    """Four steps of ``scheduler`` on a fixed sample with a model output far outside [-1, 1] (so x_0 is bounded)."""
    scheduler.set_timesteps(steps)
    sample = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    for i, t in enumerate(scheduler.timesteps):
        output = 3 * torch.randn(sample.shape, generator=torch.Generator().manual_seed(i + 1))
        extra = {"generator": torch.Generator().manual_seed(9)} if "generator" in inspect.signature(
            scheduler.step).parameters else {}
        sample = scheduler.step(output, t, sample, **extra).prev_sample
    return sample


@pytest.mark.parametrize("max_value", [1.0, 0.5])
@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_clamp_equals_the_schedulers_own_thresholding(cls, max_value, monkeypatch):
    config = dict(default_scheduler().config, sample_max_value=max_value)
    reference = _run(cls.from_config(config))
    scheduler = cls.from_config(config)
    monkeypatch.setattr(torch, "quantile", lambda *a, **k: pytest.fail("quantile called inside the block"))
    with thresholding_as_clamp(scheduler):
        fast = _run(scheduler)
    assert torch.equal(fast, reference)
    assert "_threshold_sample" not in vars(scheduler)  # the instance is restored


def test_other_configs_keep_the_quantile():
    config = dict(default_scheduler().config, sample_max_value=1.5)
    scheduler = UniPCMultistepScheduler.from_config(config)
    with thresholding_as_clamp(scheduler):
        assert "_threshold_sample" not in vars(scheduler)
    x0 = torch.linspace(-3, 3, 2 * 3 * 8 * 8).reshape(2, 3, 8, 8)
    s = torch.quantile(x0.abs().reshape(2, -1), 0.995, dim=1).clamp(1.0, 1.5).reshape(2, 1, 1, 1)
    torch.testing.assert_close(bound_x0(scheduler, x0), x0.clamp(-s, s) / s, rtol=0, atol=0)


def test_bound_x0_without_quantile_for_max_value_one(monkeypatch):
    scheduler = EulerDiscreteScheduler.from_config(default_scheduler().config)
    x0 = torch.linspace(-3, 3, 96).reshape(1, 3, 4, 8)
    monkeypatch.setattr(torch, "quantile", lambda *a, **k: pytest.fail("quantile called"))
    assert torch.equal(bound_x0(scheduler, x0), x0.clamp(-1, 1))


def test_pipeline_sampling_never_sorts_the_image(tiny_pipe, lr_image, monkeypatch):
    tiny_pipe.scheduler = UniPCMultistepScheduler.from_config(tiny_pipe.scheduler.config, timestep_spacing="trailing")
    reference = tiny_pipe(lr_image, num_inference_steps=3, generator=torch.Generator().manual_seed(0),
                          output_type="pt").images
    calls = []
    original = torch.quantile
    monkeypatch.setattr(torch, "quantile", lambda *a, **k: calls.append(1) or original(*a, **k))
    again = tiny_pipe(lr_image, num_inference_steps=3, generator=torch.Generator().manual_seed(0),
                      output_type="pt").images
    assert calls == [] and torch.equal(again, reference)
