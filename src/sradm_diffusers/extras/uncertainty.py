"""K diverse SR samples of one input, their per-pixel mean and standard deviation, and a readable uncertainty map.

    out = sample_with_uncertainty(pipe, image, num_samples=8, generator=torch.Generator().manual_seed(0))
    out.samples        # (K, 3, H, W) in [0, 1]
    out.mean, out.std  # (3, H, W): per-pixel mean and population std over the K samples, in [0, 1] units
    uncertainty_map(out.std)   # PIL image: colour-mapped std of the luma-averaged channels, with a scale bar

Where the LR image pins the content down (flat regions) the samples agree; where it does not (texture, edges the
LR cannot resolve) they differ: the std is the model's own uncertainty about the detail it invents.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw

# A perceptually ordered dark-blue -> teal -> yellow ramp (anchor colours in the spirit of viridis); drawn with
# PIL so the package needs no plotting library.
_RAMP = np.array(
    [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float64
)


@dataclass
class UncertaintyOutput:
    """Samples of one input and their statistics, all float tensors in [0, 1] image units.

    Attributes:
        samples: (K, 3, H, W).
        mean: (3, H, W) per-pixel mean over the K samples.
        std: (3, H, W) per-pixel population standard deviation over the K samples.
    """

    samples: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor


def sample_with_uncertainty(pipe, image, num_samples: int = 8, **kwargs) -> UncertaintyOutput:
    """Draw ``num_samples`` SR samples of one LR ``image`` in one batch and return them with their mean and std.

    Args:
        pipe: an :class:`~sradm_diffusers.SRADMPipeline`.
        image: one LR image (anything the pipeline accepts for a single input).
        num_samples: K >= 2.
        **kwargs: passed to ``pipe(...)`` (``num_inference_steps``, ``generator``, ``latents``, ``lr_consistency``,
            ...); ``num_images_per_prompt`` and ``output_type`` are set here.
    """
    if not isinstance(num_samples, int) or num_samples < 2:
        raise ValueError(f"num_samples must be an integer >= 2 to measure a spread; got {num_samples!r}.")
    for fixed in ("num_images_per_prompt", "output_type"):
        if fixed in kwargs:
            raise ValueError(f"sample_with_uncertainty sets {fixed} itself; do not pass it.")
    samples = pipe(image, num_images_per_prompt=num_samples, output_type="pt", **kwargs).images
    if samples.shape[0] != num_samples:
        raise ValueError(f"pass one input image; got {samples.shape[0] // num_samples} images.")
    samples = samples.float()
    return UncertaintyOutput(samples=samples, mean=samples.mean(dim=0), std=samples.std(dim=0, correction=0))


def colourize(values: np.ndarray, vmax: float) -> np.ndarray:
    """(H, W) non-negative values -> (H, W, 3) uint8 through the ramp, 0 -> dark blue, ``vmax`` and above -> yellow."""
    t = np.clip(values / vmax, 0.0, 1.0) * (len(_RAMP) - 1) if vmax > 0 else np.zeros_like(values)
    low = np.minimum(np.floor(t).astype(int), len(_RAMP) - 2)
    frac = (t - low)[..., None]
    return np.round(_RAMP[low] * (1 - frac) + _RAMP[low + 1] * frac).astype(np.uint8)


def uncertainty_map(std: torch.Tensor, vmax: float | None = None, bar_height: int = 28) -> Image.Image:
    """The channel-averaged std as a colour map with a labelled scale bar below it (values on the 0..255 scale).

    Args:
        std: (3, H, W) or (H, W) in [0, 1] units, e.g. :attr:`UncertaintyOutput.std`.
        vmax: std (0..255 scale) mapped to the top colour; default: the map's 99th percentile (at least 1).
        bar_height: height in pixels of the scale bar strip.
    Returns:
        RGB image of size (W, H + bar_height).
    """
    values = (std.float().mean(dim=0) if std.dim() == 3 else std.float()).cpu().numpy() * 255.0
    if vmax is None:
        vmax = max(float(np.percentile(values, 99)), 1.0)
    height, width = values.shape
    canvas = Image.new("RGB", (width, height + bar_height), "white")
    canvas.paste(Image.fromarray(colourize(values, vmax)), (0, 0))
    ramp_width = max(width // 2, 16)
    ramp = colourize(np.tile(np.linspace(0, vmax, ramp_width), (bar_height // 2, 1)), vmax)
    canvas.paste(Image.fromarray(ramp), (4, height + 2))
    draw = ImageDraw.Draw(canvas)
    draw.text((6 + ramp_width, height + 2), f"std 0..{vmax:.1f}", fill="black")
    draw.text((4, height + 2 + bar_height // 2), "(0..255 scale)", fill="black")
    return canvas


def summary_images(samples: torch.Tensor) -> tuple[Image.Image, Image.Image]:
    """(K, 3, H, W) samples in [0, 1] -> (their mean as a PIL image, :func:`uncertainty_map` of their std)."""
    samples = samples.float()
    mean = (samples.mean(dim=0).clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(mean), uncertainty_map(samples.std(dim=0, correction=0))
