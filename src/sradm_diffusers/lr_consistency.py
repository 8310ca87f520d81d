"""Consistency with the LR input: back-projection of the predicted x_0 at every denoising step.

``pipe(image, lr_consistency=True)`` makes the SR image agree with its input under the degradation the model was
trained with, ``imresize(SR, 1/s) == LR``. At every step the predicted residual x_0 is turned into an SR image,
corrected by iterated back-projection through the same MATLAB bicubic ``imresize``::

    SR <- clip(SR + imresize(LR - imresize(SR, 1/s), s))

(only the part of SR that ``imresize(., 1/s)`` sees changes: the low frequencies; the sampled detail stays), and
the scheduler then continues from the corrected x_0. Schedulers only take a model output, so the correction is
handed to them as the equivalent model output: for epsilon prediction
``eps' = (x_t - sqrt(abar_t) x_0') / sqrt(1 - abar_t)``, which every diffusers scheduler (DDPM, DDIM, DPM-Solver++,
UniPC, Euler) maps back to exactly x_0' (the same relation they use to get x_0 from eps). ``x_t`` here is the scaled
model input, which for sigma-parameterised schedulers (Euler) is ``x_t / sqrt(sigma^2 + 1)``: in that form all of
them share ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps``. The ILVR/DDNM family of methods works the same way.
"""

from __future__ import annotations

import torch

from .imresize import imresize

BACK_PROJECTION_ITERATIONS = 4
"""Back-projection iterations per denoising step (each is one ``imresize`` down and up of the HR image)."""

FINAL_ITERATIONS = 20
"""Iterations on the final image, so the saved result meets the constraint to well under one 8-bit level."""


def back_project(
    sr: torch.Tensor, lr: torch.Tensor, scale: int, iterations: int, low: torch.Tensor, high: torch.Tensor
) -> torch.Tensor:
    """Move ``sr`` toward ``imresize(sr, 1/scale) == lr`` while keeping it inside ``[low, high]``.

    Args:
        sr: (B, 3, s*h, s*w) in [-1, 1].
        lr: (B, 3, h, w) in [-1, 1].
        scale: s.
        iterations: back-projection steps; the LR error shrinks each time (``imresize`` down after up keeps low
            frequencies nearly unchanged, so their error is removed in a few steps).
        low, high: element-wise bounds broadcastable to ``sr`` (image range and the model's residual range).
    Returns:
        The corrected SR image, same shape and dtype.
    """
    for _ in range(iterations):
        error = lr - imresize(sr, 1.0 / scale)
        sr = torch.maximum(torch.minimum(sr + imresize(error, scale), high), low)
    return sr


class LRConsistency:
    """Per-call state of ``lr_consistency=True``: the LR image, its bicubic upsample and the residual's scale.

    Args:
        lr: (B, 3, h, w) in [-1, 1], the (unpadded) LR input repeated per sample.
        up: (B, 3, s*h, s*w), ``imresize(lr, s)`` clamped to [-1, 1].
        scale: s.
        residual_scale: the pipeline's ``residual_scale`` (x_0 = (SR - up) * residual_scale).
    """

    def __init__(self, lr: torch.Tensor, up: torch.Tensor, scale: int, residual_scale: float):
        self.lr, self.up, self.scale, self.residual_scale = lr, up, scale, residual_scale
        # x_0 lives in [-1, 1] (the scheduler clips it there), so SR stays within up +- 1/residual_scale.
        self.low = torch.clamp(up - 1.0 / residual_scale, min=-1.0)
        self.high = torch.clamp(up + 1.0 / residual_scale, max=1.0)

    def project(self, x0: torch.Tensor, iterations: int = BACK_PROJECTION_ITERATIONS) -> torch.Tensor:
        """Back-project a residual x_0 (B, 3, H', W') in model units; a padded border (H' > s*h) is left as is."""
        height, width = self.up.shape[-2:]
        inside = x0[:, :, :height, :width].float()
        sr = back_project(self.up + inside / self.residual_scale, self.lr, self.scale, iterations, self.low, self.high)
        projected = x0.clone()
        projected[:, :, :height, :width] = ((sr - self.up) * self.residual_scale).to(x0.dtype)
        return projected

    def correct_model_output(self, scheduler, model_output: torch.Tensor, model_input: torch.Tensor, t) -> torch.Tensor:
        """The model output that makes ``scheduler`` see the back-projected x_0 instead of the predicted one.

        Args:
            scheduler: the pipeline's scheduler (``prediction_type`` epsilon, sample or v_prediction).
            model_output: the U-Net's output at timestep ``t``.
            model_input: ``scheduler.scale_model_input(x_t, t)``, the tensor the U-Net saw.
            t: the current timestep.
        """
        alpha_bar = _alpha_bar(scheduler, t).to(device=model_input.device, dtype=torch.float32)
        a, b = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
        x_t, output = model_input.float(), model_output.float()
        prediction = scheduler.config.prediction_type
        if prediction == "epsilon":
            x0 = (x_t - b * output) / a
        elif prediction == "sample":
            x0 = output
        elif prediction == "v_prediction":
            x0 = a * x_t - b * output
        else:
            raise ValueError(
                f"lr_consistency supports prediction_type epsilon, sample or v_prediction; the scheduler has "
                f"{prediction!r}."
            )
        x0 = self.project(x0.clamp(-1.0, 1.0))
        if prediction == "sample":
            return x0.to(model_output.dtype)
        eps = (x_t - a * x0) / b
        corrected = eps if prediction == "epsilon" else a * eps - b * x0
        return corrected.to(model_output.dtype)


def _alpha_bar(scheduler, t) -> torch.Tensor:
    """abar_t of the current step: from the scheduler's sigma when it tracks one (Euler, DPM-Solver, UniPC:
    sigma^2 = (1 - abar) / abar), else from ``alphas_cumprod`` at the integer timestep (DDPM, DDIM)."""
    step_index = getattr(scheduler, "step_index", None)
    sigmas = getattr(scheduler, "sigmas", None)
    if step_index is not None and sigmas is not None and type(scheduler).__name__.startswith("Euler"):
        sigma = sigmas[step_index].float()
        return 1.0 / (1.0 + sigma**2)
    return scheduler.alphas_cumprod[int(round(float(t)))].float()
