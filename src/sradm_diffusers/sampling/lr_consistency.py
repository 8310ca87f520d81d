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

from ..imresize import imresize
from .prediction import predicted_x0, model_output_for

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

    def project(self, x0: torch.Tensor, iterations: int = BACK_PROJECTION_ITERATIONS) -> torch.Tensor:
        """Back-project a residual x_0 (B, 3, H', W') in model units; a padded border (H' > s*h) is left as is."""
        height, width = self.up.shape[-2:]
        inside = x0[:, :, :height, :width].float()
        # x_0 lives in [-1, 1] (the scheduler clips it there), so SR stays within up +- 1/residual_scale. Made per
        # call rather than kept: two whole-image tensors less held through the sampling loop.
        low = torch.clamp(self.up - 1.0 / self.residual_scale, min=-1.0)
        high = torch.clamp(self.up + 1.0 / self.residual_scale, max=1.0)
        sr = back_project(self.up + inside / self.residual_scale, self.lr, self.scale, iterations, low, high)
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
        x0 = self.project(predicted_x0(scheduler, model_output, model_input, t).clamp(-1.0, 1.0))
        return model_output_for(scheduler, x0, model_input, t, model_output.dtype)
