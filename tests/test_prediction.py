"""sampling.prediction against formulas written out here: abar per scheduler, Imagen's dynamic thresholding, the
clip range, and the model output whose x_0 is the bounded one (mutants of these survived the feature tests)."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, EulerDiscreteScheduler

from sradm_diffusers.presets import default_scheduler
from sradm_diffusers.sampling.prediction import (
    alpha_bar, bound_x0, clip_model_output, model_output_for, needs_x0_clipping, predicted_x0,
)


def _config(**entries):
    return SimpleNamespace(config=dict(entries))


def _x0(seed=0, spread=1.0):
    return torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(seed)) * spread


def test_euler_abar_comes_from_its_sigma_at_fractional_timesteps():
    """Euler on a "linspace" grid visits fractional timesteps; its x_0 uses sigma_i, not abar at the rounded t."""
    scheduler = EulerDiscreteScheduler.from_config(default_scheduler().config, timestep_spacing="linspace")
    scheduler.set_timesteps(7)
    sample = torch.zeros(1, 3, 4, 4)
    for i, t in enumerate(scheduler.timesteps[:-1]):
        scheduler.scale_model_input(sample, t)  # sets the step index, as the pipeline's loop does
        sigma = float(scheduler.sigmas[i])
        assert float(alpha_bar(scheduler, t)) == pytest.approx(1.0 / (1.0 + sigma**2), rel=1e-6)
        scheduler._step_index += 1
    fractional = [float(t) for t in scheduler.timesteps if float(t) != round(float(t))]
    assert fractional, "the test needs a fractional timestep"
    # at such a timestep the rounded-table value differs clearly, so the two paths are told apart
    scheduler._step_index = 1
    t = scheduler.timesteps[1]
    table = float(scheduler.alphas_cumprod[int(round(float(t)))])
    assert abs(float(alpha_bar(scheduler, t)) - table) > 1e-3 * table


def test_ddpm_and_ddim_abar_is_the_table_at_t():
    for cls in (DDPMScheduler, DDIMScheduler):
        scheduler = cls.from_config(default_scheduler().config)
        scheduler.set_timesteps(10)
        for t in scheduler.timesteps:
            assert float(alpha_bar(scheduler, t)) == float(scheduler.alphas_cumprod[int(t)])


def _imagen_threshold(x0: np.ndarray, ratio: float, max_value: float) -> np.ndarray:
    flat = np.abs(x0.reshape(x0.shape[0], -1))
    s = np.clip(np.quantile(flat, ratio, axis=1), 1.0, max_value).reshape(-1, 1, 1, 1)
    return np.clip(x0, -s, s) / s


@pytest.mark.parametrize("ratio, max_value, spread", [(0.9, 1.5, 1.0), (0.8, 1.5, 1.0), (0.8, 1.5, 4.0), (0.995, 3.0, 2.0)])
def test_dynamic_thresholding_is_imagens(ratio, max_value, spread):
    """Quantile s per sample, limited to [1, max_value]: ratio 0.8 and spread 1 put s inside (1, 1.5), spread 4
    above the range."""
    x0 = _x0(1, spread)
    got = bound_x0(_config(thresholding=True, dynamic_thresholding_ratio=ratio, sample_max_value=max_value), x0)
    expected = _imagen_threshold(x0.numpy().astype(np.float64), ratio, max_value)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_thresholding_defaults_are_diffusers():
    """Absent or None entries take diffusers' defaults: ratio 0.995, sample_max_value 1 (a clamp to [-1, 1])."""
    x0 = _x0(2, 2.0)
    got = bound_x0(_config(thresholding=True, sample_max_value=2.0), x0)
    np.testing.assert_allclose(got.numpy(), _imagen_threshold(x0.numpy().astype(np.float64), 0.995, 2.0), rtol=1e-5,
                               atol=1e-6)
    got = bound_x0(_config(thresholding=True, sample_max_value=None, dynamic_thresholding_ratio=None), x0)
    torch.testing.assert_close(got, x0.clamp(-1, 1), rtol=0, atol=0)


def test_thresholding_below_one_is_a_scaled_clamp():
    x0 = _x0(3)
    got = bound_x0(_config(thresholding=True, sample_max_value=0.5), x0)
    torch.testing.assert_close(got, x0.clamp(-0.5, 0.5) * 2.0, rtol=0, atol=1e-7)


@pytest.mark.parametrize("config, limit", [({"clip_sample_range": 2.0}, 2.0), ({"clip_sample_range": None}, 1.0),
                                           ({}, 1.0), ({"thresholding": False, "clip_sample_range": 0.5}, 0.5)])
def test_without_thresholding_x0_is_clipped_to_the_range(config, limit):
    x0 = _x0(4, 2.0)
    torch.testing.assert_close(bound_x0(_config(**config), x0), x0.clamp(-limit, limit), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_clip_model_output_gives_the_noise_of_the_clipped_x0(dtype):
    """DDIM, eps prediction: x = sqrt(abar) x0 + sqrt(1 - abar) eps; the returned eps' gives clamp(x0, -1, 1)."""
    scheduler = DDIMScheduler.from_config(default_scheduler().config, thresholding=False, clip_sample_range=1.0)
    scheduler.set_timesteps(10)
    t = scheduler.timesteps[3]
    abar = float(scheduler.alphas_cumprod[int(t)])
    g = torch.Generator().manual_seed(5)
    x, eps = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    x0 = (x - (1 - abar) ** 0.5 * eps.to(dtype).float()) / abar**0.5
    expected = (x - abar**0.5 * x0.clamp(-1, 1)) / (1 - abar) ** 0.5
    got = clip_model_output(scheduler, eps.to(dtype), x, t)
    assert got.dtype == dtype
    torch.testing.assert_close(got.float(), expected.to(dtype).float(), rtol=0, atol=1e-2 if dtype != torch.float32
                               else 1e-4)
    # bfloat16 rounds eps' by up to 2^-8 relative: x_0 then exceeds 1 by up to ~0.008 here (measured), bar 0.02
    slack = 1e-4 if dtype == torch.float32 else 0.02
    np.testing.assert_array_less(predicted_x0(scheduler, got.float(), x, t).abs().numpy(), 1.0 + slack)


def _scheduler(prediction_type):
    scheduler = DDIMScheduler.from_config(default_scheduler().config, prediction_type=prediction_type)
    scheduler.set_timesteps(10)
    return scheduler


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_x0_and_model_output_follow_each_prediction_type(prediction_type, dtype):
    """x = a x0 + b eps with a = sqrt(abar), b = sqrt(1 - abar); v = a eps - b x0 (so x0 = a x - b v)."""
    scheduler = _scheduler(prediction_type)
    t = scheduler.timesteps[4]
    abar = float(scheduler.alphas_cumprod[int(t)])
    a, b = abar**0.5, (1 - abar) ** 0.5
    g = torch.Generator().manual_seed(6)
    x0, eps = torch.randn(1, 3, 8, 8, generator=g), torch.randn(1, 3, 8, 8, generator=g)
    x = a * x0 + b * eps
    output = {"epsilon": eps, "sample": x0, "v_prediction": a * eps - b * x0}[prediction_type]
    torch.testing.assert_close(predicted_x0(scheduler, output, x, t), x0, rtol=0, atol=1e-5)
    back = model_output_for(scheduler, x0, x, t, dtype)
    assert back.dtype == dtype
    torch.testing.assert_close(back.float(), output.to(dtype).float(), rtol=0, atol=1e-5 if dtype == torch.float32
                               else 3e-2)


def test_an_unknown_prediction_type_is_named_with_the_supported_ones():
    scheduler = _scheduler("flow")
    message = "x_0 correction supports prediction_type epsilon, sample, v_prediction; the scheduler has 'flow'."
    with pytest.raises(ValueError) as error:
        predicted_x0(scheduler, torch.zeros(1), torch.zeros(1), scheduler.timesteps[0])
    assert str(error.value) == message


@pytest.mark.parametrize("cls, entries, needed", [
    (EulerDiscreteScheduler, {"clip_sample": True, "thresholding": False}, True),
    (EulerDiscreteScheduler, {"clip_sample": False, "thresholding": True}, True),
    (EulerDiscreteScheduler, {"clip_sample": False, "thresholding": False}, False),
    (DDIMScheduler, {"clip_sample": True, "thresholding": False}, False),
    (DDIMScheduler, {"clip_sample": False, "thresholding": True}, False),
    (DDIMScheduler, {"clip_sample": False, "thresholding": False}, False),
])
def test_x0_clipping_is_added_only_where_the_class_lacks_the_option(cls, entries, needed):
    scheduler = cls.from_config({**default_scheduler().config, **entries})
    assert needs_x0_clipping(scheduler) is needed


def test_absent_clip_and_threshold_entries_mean_no_clipping():
    """A config without clip_sample / thresholding asks for no bound (both default to False)."""
    assert needs_x0_clipping(SimpleNamespace(config={})) is False
    assert needs_x0_clipping(SimpleNamespace(config={"clip_sample": True})) is True
    assert needs_x0_clipping(SimpleNamespace(config={"thresholding": True})) is True


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_the_clamp_threshold_keeps_the_sample_dtype_and_matches_the_scheduler(dtype):
    from sradm_diffusers.sampling.prediction import thresholding_as_clamp

    scheduler = DDPMScheduler.from_config(default_scheduler().config)
    sample = (_x0(7, 2.0)).to(dtype)
    reference = scheduler._threshold_sample(sample.float()).to(dtype)  # diffusers' own, through its quantile
    with thresholding_as_clamp(scheduler):
        got = scheduler._threshold_sample(sample)
    assert got.dtype == dtype
    torch.testing.assert_close(got, reference, rtol=0, atol=0)
    assert "_threshold_sample" not in vars(scheduler)  # the instance is restored
