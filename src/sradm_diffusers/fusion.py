"""Content fusion: an SR image whose masked region takes its content from a reference image of the HR size.

    sr = fuse(pipe, lr_image, reference, mask, generator=torch.Generator().manual_seed(0)).images[0]

As in SRDiff's face fusion, after every denoising step the masked part of x_t is replaced by the reference's
residual (``(reference - up(LR)) * residual_scale``) noised to the step's noise level with the scheduler's own
``add_noise``; outside the mask the model keeps denoising its own sample, and across the mask border it sees a
consistent x_t at every noise level, so it fills in a transition instead of a seam. Two choices of ours:

- the mask is **feathered** (a Gaussian blur of ``feather`` HR pixels) and the replacement is a blend
  ``m * noised_ref + (1 - m) * x_t``: a hard 0/1 switch leaves a step in the residual that the last, nearly
  noise-free steps can no longer smooth;
- it runs as a ``callback_on_step_end`` (:class:`ContentFusion`), so the pipeline's loop is unchanged.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .image_processing import preprocess
from .imresize import imresize


def _mask_tensor(mask, height: int, width: int) -> torch.Tensor:
    """PIL / numpy (H, W) / torch (H, W) mask -> float (1, 1, H, W) in [0, 1]; 1 = take the reference."""
    if isinstance(mask, torch.Tensor):
        values = mask.detach().float().cpu()
    else:
        array = np.asarray(mask.convert("L") if hasattr(mask, "convert") else mask, dtype=np.float32)
        values = torch.from_numpy(array / 255.0 if array.max() > 1 else array)
    values = values.squeeze()
    if values.dim() != 2 or tuple(values.shape) != (height, width):
        raise ValueError(
            f"mask has shape {tuple(values.shape)}; pass one (H, W) mask of the HR size {(height, width)}."
        )
    if values.min() < 0 or values.max() > 1:
        raise ValueError("mask values must lie in [0, 1] (or 0..255 for an 8-bit image).")
    return values[None, None]


def feather_mask(mask: torch.Tensor, feather: float) -> torch.Tensor:
    """Gaussian blur (sigma = ``feather`` / 2 pixels) of a (1, 1, H, W) mask; ``feather`` 0 returns it as is."""
    if feather <= 0:
        return mask
    sigma = feather / 2.0
    radius = int(np.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    padded = F.pad(mask, (radius, radius, radius, radius), mode="replicate")
    blurred = F.conv2d(padded, kernel.view(1, 1, 1, -1))
    return F.conv2d(blurred, kernel.view(1, 1, -1, 1)).clamp(0.0, 1.0)


class ContentFusion:
    """A ``callback_on_step_end`` that keeps the masked part of x_t on the reference's noised residual.

    Args:
        reference_residual: (B, 3, H, W) in model units, ``(reference - up) * residual_scale``.
        mask: (1, 1, H, W) in [0, 1], already feathered.
        generator: for the noise added to the reference at every step.
    """

    def __init__(self, reference_residual: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None):
        self.reference_residual, self.mask, self.generator = reference_residual, mask, generator

    def __call__(self, pipe, step: int, timestep, tensors: dict) -> dict:
        latents = tensors["latents"]
        timesteps = pipe.scheduler.timesteps
        height, width = self.reference_residual.shape[-2:]
        reference = self.reference_residual.to(device=latents.device, dtype=latents.dtype)
        if step + 1 < len(timesteps):
            noise = torch.randn(reference.shape, generator=self.generator, dtype=torch.float32).to(latents)
            reference = pipe.scheduler.add_noise(reference, noise, timesteps[step + 1 : step + 2])
        mask = self.mask.to(device=latents.device, dtype=latents.dtype)
        fused = latents.clone()
        inside = fused[:, :, :height, :width]
        fused[:, :, :height, :width] = mask * reference + (1 - mask) * inside
        return {"latents": fused}


def fuse(pipe, image, reference, mask, feather: float = 8.0, generator: torch.Generator | None = None, **kwargs):
    """Super-resolve one LR ``image`` with the masked region's content taken from ``reference``.

    Args:
        pipe: an :class:`~sradm_diffusers.SRADMPipeline`.
        image: the LR image (h, w).
        reference: an image of the HR size (s*h, s*w), any type the pipeline accepts as input.
        mask: (s*h, s*w) PIL "L"/numpy/torch, 1 (or 255) where the reference's content is wanted.
        feather: width in HR pixels of the soft border (0: hard mask, SRDiff's original).
        generator: for the initial noise and the noise added to the reference.
        **kwargs: other pipeline arguments (``num_inference_steps``, ``output_type``, ``latents``, ...).
    Returns:
        The pipeline's output.
    """
    if "callback_on_step_end" in kwargs:
        raise ValueError("fuse runs as the pipeline's callback_on_step_end; do not pass another one.")
    lr = preprocess(image)
    scale = pipe.config.upscale_factor
    height, width = lr.shape[-2] * scale, lr.shape[-1] * scale
    ref = preprocess(reference)
    if tuple(ref.shape[-2:]) != (height, width):
        raise ValueError(
            f"reference is {ref.shape[-1]}x{ref.shape[-2]}; it must be the HR size {width}x{height} "
            f"({scale} times the LR image)."
        )
    up = imresize(lr, scale).clamp(-1.0, 1.0)
    residual = ((ref - up) * pipe.config.residual_scale).clamp(-1.0, 1.0)
    soft = feather_mask(_mask_tensor(mask, height, width), feather)
    fusion = ContentFusion(residual, soft, generator)
    return pipe(image, generator=generator, callback_on_step_end=fusion, **kwargs)


def run_fuse(
    input_path: str, reference_path: str, mask_path: str, output: str, model: str | None = None,
    feather: float = 8.0, steps: int | None = None, scheduler: str | None = None, seed: int = 0,
    device: str | None = None, lr_consistency: bool | None = None,
) -> int:
    """``sradm fuse``: write the fused SR image to ``output``. Raises ``UsageError`` (exit status 2) on bad input."""
    from .upscale import (
        ImageError, UsageError, load_image, load_pipeline, resolve_device, resolve_steps, set_scheduler,
        write_image_atomic,
    )

    from .defaults import LR_CONSISTENCY

    lr_consistency = LR_CONSISTENCY if lr_consistency is None else lr_consistency
    loaded = []
    for path in (input_path, reference_path, mask_path):
        try:
            loaded.append(load_image(path))
        except ImageError as error:
            raise UsageError(f"{path}: {error}") from error
    image, reference, mask = loaded
    pipe = load_pipeline(model, resolve_device(device))
    set_scheduler(pipe, scheduler)
    pipe.set_progress_bar_config(disable=None, leave=False, desc="steps")
    try:
        result = fuse(
            pipe, image, reference, mask.convert("L"), feather=feather, generator=torch.Generator().manual_seed(seed),
            num_inference_steps=resolve_steps(pipe, steps), lr_consistency=lr_consistency,
        )
    except ValueError as error:
        raise UsageError(str(error)) from error
    write_image_atomic(result.images[0], output)
    print(output)
    return 0
