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

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..image_processing import preprocess
from ..imresize import imresize


_WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def mask_tensor(mask, height: int, width: int) -> torch.Tensor:
    """A mask -> float (1, 1, H, W) in [0, 1]; 1 = take the reference. One rule for every type:

    - 8-bit masks are always divided by 255: PIL images of 8-bit modes (converted to greyscale "L" first, so
      RGB masks count by their luminance; mode "1" is 0/255) and uint8 arrays or tensors. A 0/1 PNG therefore
      takes at most 1/255 of the reference: white is 255.
    - bool arrays / tensors: False 0, True 1.
    - float arrays / tensors are taken as they are and must lie in [0, 1].
    - anything else (16- or 32-bit integer and float PIL images, other integer dtypes) raises ``ValueError``.
    """
    if hasattr(mask, "convert"):  # PIL
        if mask.mode in _WIDE_MODES:
            raise ValueError(
                f"mask is a {mask.mode!r}-mode (16/32-bit or float) image; save it as an 8-bit greyscale image "
                "(0 = keep the SR content, 255 = take the reference) or pass a float array in [0, 1]."
            )
        values = torch.from_numpy(np.asarray(mask.convert("L"), dtype=np.float32) / 255.0)
    else:
        tensor = mask.detach().cpu() if isinstance(mask, torch.Tensor) else torch.from_numpy(np.asarray(mask))
        if tensor.dtype == torch.uint8:
            values = tensor.float() / 255.0
        elif tensor.dtype == torch.bool or tensor.is_floating_point():
            values = tensor.float()
        else:
            raise ValueError(
                f"mask has dtype {tensor.dtype}; pass uint8 (0..255, divided by 255), bool, or float values in [0, 1]."
            )
    values = values.squeeze()
    if values.dim() != 2 or tuple(values.shape) != (height, width):
        raise ValueError(
            f"mask has shape {tuple(values.shape)}; pass one (H, W) mask of the HR size {(height, width)}."
        )
    if not torch.isfinite(values).all() or values.min() < 0 or values.max() > 1:
        raise ValueError(
            f"float mask values must lie in [0, 1], got {values.min().item():g}..{values.max().item():g}; scale them "
            "(or pass an 8-bit mask, read as 0..255)."
        )
    return values[None, None]


def check_feather(feather: float, height: int, width: int) -> None:
    """Raise ``ValueError`` unless ``feather`` is a finite width in [0, max(height, width)] HR pixels (a blur wider
    than the image only costs memory: its kernel grows with ``feather``)."""
    if isinstance(feather, bool) or not isinstance(feather, (int, float)) or not math.isfinite(feather):
        raise ValueError(f"feather must be a finite number of pixels, got {feather!r}.")
    limit = max(height, width)
    if not 0 <= feather <= limit:
        raise ValueError(f"feather {feather:g} px: use 0..{limit} (the larger side of the {width}x{height} output).")


def feather_mask(mask: torch.Tensor, feather: float) -> torch.Tensor:
    """Gaussian blur (sigma = ``feather`` / 2 pixels) of a (1, 1, H, W) mask; ``feather`` 0 returns it as is.
    ``feather`` must lie in [0, max(H, W)] (:func:`check_feather`)."""
    check_feather(feather, *mask.shape[-2:])
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
        mask: (s*h, s*w) PIL image, numpy array or torch tensor: 255 (8-bit) or 1.0 (float) where the reference's
            content is wanted (the rule: :func:`mask_tensor`).
        feather: width in HR pixels of the soft border, 0..max(s*h, s*w) (0: hard mask, SRDiff's original).
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
    soft = feather_mask(mask_tensor(mask, height, width), feather)
    fusion = ContentFusion(residual, soft, generator)
    return pipe(image, generator=generator, callback_on_step_end=fusion, **kwargs)


