"""K diverse SR samples of one input, their per-pixel mean and standard deviation, and a readable uncertainty map.

    out = sample_with_uncertainty(pipe, image, num_samples=8, generator=torch.Generator().manual_seed(0))
    out.samples        # (K, 3, H, W) in [0, 1]
    out.mean, out.std  # (3, H, W): per-pixel mean and population std over the K samples, in [0, 1] units
    std_map(out.std)           # PIL image of the SR size: the colour-mapped std of the channel-averaged samples
    scale_bar(vmax)            # its colour scale as a separate small image (uncertainty_map(out.std): both stacked)

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


def _vmax(values: np.ndarray, vmax: float | None) -> float:
    """The std (0..255 scale) mapped to the top colour: ``vmax``, or the values' 99th percentile (at least 1)."""
    return max(float(np.percentile(values, 99)), 1.0) if vmax is None else float(vmax)


def _std_values(std: torch.Tensor) -> np.ndarray:
    """(3, H, W) or (H, W) std in [0, 1] units -> (H, W) float on the 0..255 scale, averaged over channels."""
    return (std.float().mean(dim=0) if std.dim() == 3 else std.float()).cpu().numpy() * 255.0


def std_map(std: torch.Tensor, vmax: float | None = None) -> Image.Image:
    """The channel-averaged std as a colour map of the same size (W, H) as the SR samples, no legend.

    Args:
        std: (3, H, W) or (H, W) in [0, 1] units, e.g. :attr:`UncertaintyOutput.std`.
        vmax: std (0..255 scale) mapped to the top colour; default: the map's 99th percentile (at least 1).
    """
    values = _std_values(std)
    return Image.fromarray(colourize(values, _vmax(values, vmax)))


def scale_bar(vmax: float, width: int = 256, height: int = 28) -> Image.Image:
    """The colour scale of :func:`std_map` with ``vmax``: a ramp from 0 to ``vmax`` (0..255 scale) and its labels,
    an RGB image of ``width`` x ``height`` (at least 16 x 16)."""
    width, height = max(int(width), 16), max(int(height), 16)
    canvas = Image.new("RGB", (width, height), "white")
    ramp_width = max(width // 2, 8)
    ramp = colourize(np.tile(np.linspace(0, vmax, ramp_width), (height // 2, 1)), vmax)
    canvas.paste(Image.fromarray(ramp), (4, 2))
    draw = ImageDraw.Draw(canvas)
    draw.text((6 + ramp_width, 2), f"std 0..{vmax:.1f}", fill="black")
    draw.text((4, 2 + height // 2), "(0..255 scale)", fill="black")
    return canvas


def uncertainty_map(std: torch.Tensor, vmax: float | None = None, bar_height: int = 28) -> Image.Image:
    """:func:`std_map` with its :func:`scale_bar` appended below it (one picture, ``bar_height`` pixels taller than
    the SR size; ``sradm upscale --uncertainty`` writes the two as separate files).

    Args:
        std: (3, H, W) or (H, W) in [0, 1] units, e.g. :attr:`UncertaintyOutput.std`.
        vmax: std (0..255 scale) mapped to the top colour; default: the map's 99th percentile (at least 1).
        bar_height: height in pixels of the scale bar strip.
    Returns:
        RGB image of size (W, H + bar_height).
    """
    values = _std_values(std)
    vmax = _vmax(values, vmax)
    height, width = values.shape
    canvas = Image.new("RGB", (width, height + bar_height), "white")
    canvas.paste(std_map(std, vmax), (0, 0))
    canvas.paste(scale_bar(vmax, width, bar_height).crop((0, 0, width, bar_height)), (0, height))
    return canvas


SUMMARY_KINDS = ("mean", "std", "std_scale")
"""What :func:`summary_images` returns, in order; ``sradm upscale --uncertainty`` writes ``<stem>_x<s>_<kind>.png``."""


def summary_images(samples: torch.Tensor) -> tuple[Image.Image, Image.Image, Image.Image]:
    """(K, 3, H, W) samples in [0, 1] -> their mean as a PIL image (W, H), :func:`std_map` of their std (W, H) and
    the map's :func:`scale_bar` (the :data:`SUMMARY_KINDS`)."""
    samples = samples.float()
    mean = (samples.mean(dim=0).clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    std = samples.std(dim=0, correction=0)
    vmax = _vmax(_std_values(std), None)
    return Image.fromarray(mean), std_map(std, vmax), scale_bar(vmax)
