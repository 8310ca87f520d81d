"""Between a scheduler's model output and its predicted x_0, and the model's x_0 bound for every scheduler.

The SRADM model is trained on residuals x_0 in [-1, 1] and its scheduler config asks for the predicted x_0 to be
kept there (``clip_sample`` / ``thresholding``). DDPM, DDIM, DPM-Solver++ and UniPC do that inside ``step``;
sigma-parameterised schedulers such as ``EulerDiscreteScheduler`` have no such option. With this model's cosine
schedule their first sigma is about 2000 (abar = 2.4e-7 at t = 99), so Euler's x_0 = x - sigma * eps turns an
error of 0.1 in the predicted noise into an x_0 off by 200, and the sampler never recovers (about 10 dB LR-PSNR).
:func:`clip_model_output` gives such schedulers the bound their config asks for, by handing them the model output
whose x_0 is the clipped one.

All schedulers share, in terms of the *scaled* model input ``x = scale_model_input(x_t, t)``,
``x = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` (for Euler, ``x = x_t / sqrt(sigma^2 + 1)``); the conversions
below use that relation, which each scheduler inverts the same way to get x_0.
"""

from __future__ import annotations

import contextlib
import inspect

import torch

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")


def alpha_bar(scheduler, t) -> torch.Tensor:
    """abar_t of the current step: from the scheduler's sigma when it tracks one (Euler, DPM-Solver, UniPC:
    sigma^2 = (1 - abar) / abar), else from ``alphas_cumprod`` at the integer timestep (DDPM, DDIM)."""
    step_index = getattr(scheduler, "step_index", None)
    sigmas = getattr(scheduler, "sigmas", None)
    if step_index is not None and sigmas is not None and type(scheduler).__name__.startswith("Euler"):
        sigma = sigmas[step_index].float()
        return 1.0 / (1.0 + sigma**2)
    return scheduler.alphas_cumprod[int(round(float(t)))].float()


def _prediction_type(scheduler) -> str:
    prediction = scheduler.config.prediction_type
    if prediction not in PREDICTION_TYPES:
        raise ValueError(
            f"x_0 correction supports prediction_type {', '.join(PREDICTION_TYPES)}; the scheduler has {prediction!r}."
        )
    return prediction


def predicted_x0(scheduler, model_output: torch.Tensor, model_input: torch.Tensor, t) -> torch.Tensor:
    """The x_0 (float32, same shape) that ``scheduler`` derives from ``model_output`` at ``t``."""
    abar = alpha_bar(scheduler, t).to(device=model_input.device, dtype=torch.float32)
    a, b = abar.sqrt(), (1 - abar).sqrt()
    x, output = model_input.float(), model_output.float()
    prediction = _prediction_type(scheduler)
    if prediction == "epsilon":
        return (x - b * output) / a
    if prediction == "sample":
        return output
    return a * x - b * output


def model_output_for(scheduler, x0: torch.Tensor, model_input: torch.Tensor, t, dtype: torch.dtype) -> torch.Tensor:
    """The model output from which ``scheduler`` derives exactly ``x0`` at ``t`` (the inverse of
    :func:`predicted_x0`, keeping the noise direction implied by ``model_input``)."""
    prediction = _prediction_type(scheduler)
    if prediction == "sample":
        return x0.to(dtype)
    abar = alpha_bar(scheduler, t).to(device=model_input.device, dtype=torch.float32)
    a, b = abar.sqrt(), (1 - abar).sqrt()
    eps = (model_input.float() - a * x0) / b
    return (eps if prediction == "epsilon" else a * eps - b * x0).to(dtype)


def _scheduler_options(scheduler) -> set[str]:
    return set(inspect.signature(type(scheduler).__init__).parameters)


def needs_x0_clipping(scheduler) -> bool:
    """True when the config asks for a bounded x_0 (``clip_sample`` or ``thresholding``) but the scheduler's class
    does not implement the option asked for (e.g. ``EulerDiscreteScheduler`` built from the model's config)."""
    config, options = scheduler.config, _scheduler_options(scheduler)
    wants_clip, wants_threshold = bool(config.get("clip_sample", False)), bool(config.get("thresholding", False))
    handled = (wants_threshold and "thresholding" in options) or (wants_clip and "clip_sample" in options)
    return (wants_clip or wants_threshold) and not handled


def bound_x0(scheduler, x0: torch.Tensor) -> torch.Tensor:
    """x_0 (B, C, H, W) bounded as the config asks: dynamic thresholding (Imagen's: per sample, the ``ratio``
    quantile s of |x_0|, limited to [1, sample_max_value]; x_0 -> clamp(x_0, -s, s) / s) if ``thresholding``,
    else clamped to +-``clip_sample_range``."""
    config = scheduler.config
    if config.get("thresholding", False):
        # keys the scheduler's class does not know may be absent or None: diffusers' defaults then
        ratio = config.get("dynamic_thresholding_ratio") or 0.995
        max_value = config.get("sample_max_value") or 1.0
        if max_value <= 1.0:  # s is limited to [1, max_value]: always max_value, no quantile needed
            return x0.clamp(-max_value, max_value) / max_value
        s = torch.quantile(x0.abs().reshape(x0.shape[0], -1), ratio, dim=1).clamp(1.0, max_value)
        s = s.reshape(-1, *([1] * (x0.dim() - 1)))
        return torch.maximum(torch.minimum(x0, s), -s) / s
    limit = float(config.get("clip_sample_range") or 1.0)
    return x0.clamp(-limit, limit)


def clip_model_output(scheduler, model_output: torch.Tensor, model_input: torch.Tensor, t) -> torch.Tensor:
    """``model_output`` changed so that ``scheduler`` sees the x_0 bounded by :func:`bound_x0`."""
    x0 = bound_x0(scheduler, predicted_x0(scheduler, model_output, model_input, t))
    return model_output_for(scheduler, x0, model_input, t, model_output.dtype)


def _clamp_threshold(max_value: float):
    def threshold(sample: torch.Tensor) -> torch.Tensor:
        return (sample.float().clamp(-max_value, max_value) / max_value).to(sample.dtype)

    return threshold


@contextlib.contextmanager
def thresholding_as_clamp(scheduler):
    """While the block runs, the scheduler's dynamic thresholding skips its quantile when the config makes it a
    clamp: with ``sample_max_value`` <= 1 the per-sample threshold s, limited to [1, sample_max_value], is always
    ``sample_max_value``, so ``clamp(x_0, -s, s) / s`` needs no quantile of |x_0|. That quantile sorts the whole
    image at every step: about 80 ms at 512x512 and 1 s at 2040x1356 on this project's 2-core CPU machine, against
    under 4 ms for the clamp (``python benchmarks/bench_threshold_clamp.py``).
    Every SRADM config is of that kind (``sample_max_value=1.0``, :func:`~sradm_diffusers.presets.default_scheduler`);
    the result is bit-identical. Other schedulers and configs are left alone.
    """
    config = scheduler.config
    max_value = config.get("sample_max_value") or 1.0
    if not (config.get("thresholding", False) and max_value <= 1.0 and hasattr(scheduler, "_threshold_sample")):
        yield
        return
    scheduler._threshold_sample = _clamp_threshold(float(max_value))  # shadows the method on this instance only
    try:
        yield
    finally:
        del scheduler._threshold_sample
