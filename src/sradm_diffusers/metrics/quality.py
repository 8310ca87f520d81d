"""Super-resolution metrics, batched in torch, on uint8 images as the SR field reports them.

Two protocols (shared/reference/srdiff.md, "Evaluation protocol"):

- **RGB** (the SRDiff/SRADM reference): :func:`psnr_rgb`, :func:`ssim_rgb`. RGB, data range 255, no border crop,
  scikit-image's SSIM (7x7 uniform window, sample covariance N/(N-1), K1=0.01, K2=0.03, per channel, mean over
  the map without its 3-pixel border, then over channels).
- **Y** (BasicSR / NTIRE): :func:`psnr_y`, :func:`ssim_y`. Y of YCbCr as MATLAB ``rgb2ycbcr`` (BT.601,
  Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255 for R, G, B in 0..255, not rounded), ``crop`` pixels removed
  from each border, SSIM with an 11x11 Gaussian window (sigma 1.5), 'valid' filtering, no covariance correction.

Plus :func:`lr_psnr` (consistency of the SR image with its LR input), :func:`diversity_std` (spread of K samples)
and AlexNet LPIPS (:class:`~sradm_diffusers.metrics.lpips.LPIPS`, :func:`load_lpips`; weights only from local files).

Inputs: torch uint8 tensors (B,3,H,W) or (3,H,W), values 0..255 (use :func:`to_uint8` on model outputs in
[-1, 1]). Outputs: float64 tensors (B,), or 0-dim for an unbatched (3,H,W) input (float32 on MPS, which has no
float64). The PSNR of two identical images is ``inf`` (the MSE is 0), as scikit-image and BasicSR return.

``EVALUATE_MODULE`` is the path of the same metrics packaged as a Hugging Face ``evaluate`` metric, loadable
offline: ``evaluate.load(sradm_diffusers.metrics.quality.EVALUATE_MODULE)``.
"""

from __future__ import annotations

import math
import os

import torch

from .lpips import LPIPS, find_lpips_weights, load_lpips
from .ssim import DATA_RANGE as _DATA_RANGE
from .ssim import float_dtype as _float_dtype
from .ssim import ssim_mean as _ssim_mean

__all__ = [
    "EVALUATE_MODULE",
    "LPIPS",
    "compute_metrics",
    "diversity_std",
    "find_lpips_weights",
    "load_lpips",
    "lr_psnr",
    "psnr_rgb",
    "psnr_y",
    "rgb_to_y",
    "ssim_rgb",
    "ssim_y",
    "to_uint8",
]

EVALUATE_MODULE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "evaluate_metric", "sradm_sr_metrics.py")
"""Absolute path of the ``evaluate`` metric script: ``evaluate.load(EVALUATE_MODULE)``."""

_RGB_WIN = 7  # scikit-image default window
_Y_WIN, _Y_SIGMA = 11, 1.5  # BasicSR / NTIRE


# ----------------------------------------------------------------------------- conversion and checks
def to_uint8(x: torch.Tensor, value_range: tuple[float, float] = (-1.0, 1.0)) -> torch.Tensor:
    """Round a float image tensor to uint8 the way SR code bases save images.

    ``v = (x - lo) * 255 / (hi - lo)``, rounded to nearest (ties to even, as ``np.round``), clamped to 0..255.
    For the default range this is SRDiff's ``round((x + 1) * 127.5)``. Half-precision inputs are upcast to float32
    first. A uint8 input is returned unchanged.

    Args:
        x: float tensor of any shape, e.g. (B,3,H,W), values nominally in ``value_range``.
        value_range: (lo, hi) mapped to (0, 255).
    Returns:
        uint8 tensor of the same shape and device.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"to_uint8 expects a torch.Tensor, got {type(x).__name__}.")
    if x.dtype == torch.uint8:
        return x
    if not x.is_floating_point():
        raise TypeError(f"to_uint8 expects a float (or uint8) tensor, got dtype {x.dtype}.")
    lo, hi = (float(v) for v in value_range)
    if not hi > lo:
        raise ValueError(f"value_range must be (lo, hi) with hi > lo; got {value_range}.")
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    if not bool(torch.isfinite(x).all()):
        raise ValueError("to_uint8 got NaN or infinite values; check the model output before scoring it.")
    return ((x - lo) * (255.0 / (hi - lo))).round().clamp(0, 255).to(torch.uint8)


def _as_batch(x: torch.Tensor, name: str) -> tuple[torch.Tensor, bool]:
    """Validate a uint8 image tensor; return it as (B,3,H,W) and whether it was unbatched."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch uint8 tensor (B,3,H,W) or (3,H,W); got {type(x).__name__}. "
            "Convert numpy HWC arrays with torch.from_numpy(a).permute(2, 0, 1)."
        )
    if x.dtype != torch.uint8:
        raise TypeError(
            f"{name} must have dtype uint8 (0..255); got {x.dtype}. "
            "Round float images first with sradm_diffusers.metrics.quality.to_uint8(x, value_range=(-1, 1))."
        )
    unbatched = x.ndim == 3
    if unbatched:
        x = x[None]
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"{name} must be (B,3,H,W) or (3,H,W) RGB; got shape {tuple(x.shape)}.")
    return x, unbatched


def _pair_uint8(sr: torch.Tensor, hr: torch.Tensor, hr_name: str = "hr") -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Validated uint8 (B,3,H,W) pair, ``hr`` on ``sr``'s device, and whether the input was unbatched."""
    sr, unbatched = _as_batch(sr, "sr")
    hr, _ = _as_batch(hr, hr_name)
    if sr.shape != hr.shape:
        raise ValueError(
            f"sr and {hr_name} must have the same shape; got {tuple(sr.shape)} and {tuple(hr.shape)} "
            f"(for unbatched inputs the batch dim was added)."
        )
    return sr, hr.to(device=sr.device), unbatched


def _pair(sr: torch.Tensor, hr: torch.Tensor, hr_name: str = "hr") -> tuple[torch.Tensor, torch.Tensor, bool]:
    sr, hr, unbatched = _pair_uint8(sr, hr, hr_name)
    dtype = _float_dtype(sr.device)
    return sr.to(dtype), hr.to(dtype), unbatched


def _out(v: torch.Tensor, unbatched: bool) -> torch.Tensor:
    return v[0] if unbatched else v


def _crop(x: torch.Tensor, crop: int) -> torch.Tensor:
    if isinstance(crop, bool) or not isinstance(crop, int) or crop < 0:
        raise ValueError(f"crop must be a non-negative int (pixels per border; the scale by convention); got {crop!r}.")
    if crop == 0:
        return x
    if min(x.shape[-2:]) <= 2 * crop:
        raise ValueError(f"crop={crop} removes the whole {tuple(x.shape[-2:])} image.")
    return x[..., crop:-crop, crop:-crop]


# ----------------------------------------------------------------------------- PSNR / SSIM cores
def _psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR (B,) of float tensors (B,C,H,W) on the 0..255 scale; inf where they are equal."""
    mse = (a - b).pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(_DATA_RANGE**2 / mse)


# ----------------------------------------------------------------------------- RGB protocol (reference)
def psnr_rgb(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """PSNR on RGB, data range 255, no crop (SRDiff reference / ``skimage.metrics.peak_signal_noise_ratio``).

    Args: sr, hr: uint8 (B,3,H,W) or (3,H,W). Returns: (B,) float, in dB; ``inf`` for identical images.
    """
    sr, hr, unbatched = _pair(sr, hr)
    return _out(_psnr(sr, hr), unbatched)


def ssim_rgb(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """SSIM on RGB as ``skimage.metrics.structural_similarity(sr, hr, channel_axis=-1, data_range=255)``.

    7x7 uniform window, sample covariance (x 49/48), K1=0.01, K2=0.03; per channel, mean of the SSIM map without
    its 3-pixel border (scikit-image crops the filter's padded border), then mean over the three channels.

    Args: sr, hr: uint8 (B,3,H,W) or (3,H,W), H, W >= 7. Returns: (B,) float in [-1, 1].
    """
    sr, hr, unbatched = _pair_uint8(sr, hr)
    return _out(_ssim_mean(sr, hr, _RGB_WIN, None, luma=False), unbatched)


# ----------------------------------------------------------------------------- Y protocol (BasicSR / NTIRE)
def rgb_to_y(img: torch.Tensor) -> torch.Tensor:
    """Y of YCbCr (BT.601, MATLAB ``rgb2ycbcr``) on the 0..255 scale, not rounded.

    Args: img: (B,3,H,W) or (3,H,W), RGB in 0..255 (uint8 or float).
    Returns: float (B,1,H,W) / (1,H,W) with values in [16, 235]; float64 (float32 on MPS) for uint8 input.
    """
    if not img.is_floating_point():
        img = img.to(_float_dtype(img.device))
    r, g, b = img.unbind(dim=-3)
    return (16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0).unsqueeze(-3)


def psnr_y(sr: torch.Tensor, hr: torch.Tensor, crop: int) -> torch.Tensor:
    """PSNR on the BT.601 Y channel with ``crop`` pixels removed from each border (BasicSR ``calculate_psnr``
    with ``test_y_channel=True, crop_border=crop``), data range 255.

    Args: sr, hr: uint8 (B,3,H,W) or (3,H,W); crop: int >= 0, by convention the scale factor.
    Returns: (B,) float in dB; ``inf`` for identical images.
    """
    sr, hr, unbatched = _pair(sr, hr)
    return _out(_psnr(_crop(rgb_to_y(sr), crop), _crop(rgb_to_y(hr), crop)), unbatched)


def ssim_y(sr: torch.Tensor, hr: torch.Tensor, crop: int) -> torch.Tensor:
    """SSIM on the BT.601 Y channel with ``crop`` border pixels removed (BasicSR ``calculate_ssim`` with
    ``test_y_channel=True``): 11x11 Gaussian window, sigma 1.5, 'valid' filtering, no covariance correction,
    K1=0.01, K2=0.03, data range 255.

    Args: sr, hr: uint8 (B,3,H,W) or (3,H,W), at least 11x11 after cropping; crop: int >= 0.
    Returns: (B,) float in [-1, 1].
    """
    sr, hr, unbatched = _pair_uint8(sr, hr)
    return _out(_ssim_mean(_crop(sr, crop), _crop(hr, crop), _Y_WIN, _Y_SIGMA, luma=True), unbatched)


# ----------------------------------------------------------------------------- LR consistency
def _check_scale(scale) -> float:
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a positive number (the SR factor, e.g. 4); got {scale!r}.")
    return float(scale)


def _downscale_uint8_values(img: torch.Tensor, scale: float) -> torch.Tensor:
    """``imresize(img, 1/scale)`` in float, then rounded like MATLAB's uint8 conversion (half away from zero,
    clamped to 0..255). img: float (B,3,H,W) on 0..255. Returns float (B,3,ceil(H/s),ceil(W/s)) of integers."""
    from ..imresize import imresize

    down = imresize(img, 1.0 / scale)
    return torch.floor(down.clamp(0, 255) + 0.5)


def lr_psnr(sr: torch.Tensor, lr: torch.Tensor, scale: float) -> torch.Tensor:
    """LR-PSNR: PSNR between the SR image brought back to LR size and the LR input (SRDiff protocol).

    The SR image is downscaled with the project's MATLAB-compatible bicubic ``imresize(sr, 1/scale)`` computed in
    float, rounded to uint8 values (half away from zero, clamped, as MATLAB), and compared with ``lr`` on RGB, data
    range 255, no crop.

    Args:
        sr: uint8 (B,3,H,W) or (3,H,W).
        lr: uint8 (B,3,h,w) or (3,h,w) with (h, w) = ceil((H, W) / scale).
        scale: the SR factor (e.g. 4).
    Returns: (B,) float in dB; ``inf`` where the downscaled SR equals the LR exactly.
    """
    scale = _check_scale(scale)
    sr, unbatched = _as_batch(sr, "sr")
    lr, _ = _as_batch(lr, "lr")
    dtype = _float_dtype(sr.device)
    down = _downscale_uint8_values(sr.to(dtype), scale)
    if down.shape != lr.shape:
        raise ValueError(
            f"sr {tuple(sr.shape)} downscaled by 1/{scale:g} gives {tuple(down.shape)}, which does not match "
            f"lr {tuple(lr.shape)}; pass the LR image this SR image was made from and its scale."
        )
    return _out(_psnr(down, lr.to(device=sr.device, dtype=dtype)), unbatched)


# ----------------------------------------------------------------------------- diversity
def diversity_std(samples: torch.Tensor) -> torch.Tensor:
    """Diversity of K SR samples of one input: per-pixel (and per-channel) population standard deviation across
    the K samples, averaged over all pixels and channels, on the 0..255 scale.

    Args: samples: uint8 (K,3,H,W), K >= 2.
    Returns: 0-dim float tensor; 0 when all samples are identical.
    """
    samples, _ = _as_batch(samples, "samples")
    if samples.shape[0] < 2:
        raise ValueError(f"diversity_std needs K >= 2 samples of one input; got shape {tuple(samples.shape)}.")
    x = samples.to(_float_dtype(samples.device))
    return x.std(dim=0, correction=0).mean()


# ----------------------------------------------------------------------------- everything at once
def compute_metrics(
    sr: torch.Tensor,
    hr: torch.Tensor,
    scale: int,
    lr: torch.Tensor | None = None,
    lpips_model: LPIPS | None = None,
) -> dict[str, torch.Tensor | None]:
    """All per-image metrics of a batch, as ``sradm evaluate`` reports them.

    Args:
        sr, hr: uint8 (B,3,H,W) or (3,H,W).
        scale: integer SR factor: the Y-protocol border crop and the LR-PSNR downscale.
        lr: uint8 LR inputs; if None, LR-PSNR is measured against ``imresize(hr, 1/scale)`` rounded to uint8
            (the LR the benchmark would make from ``hr``).
        lpips_model: an :class:`LPIPS` from :func:`load_lpips`; None gives ``lpips: None``.
    Returns:
        dict with keys psnr_rgb, ssim_rgb, psnr_y, ssim_y, lr_psnr, lpips: float tensors (B,) (0-dim if
        unbatched) on sr's device, or None for lpips without a model.
    """
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a positive int (the SR factor); got {scale!r}.")
    if lr is None:
        hr_b, unbatched = _as_batch(hr, "hr")
        lr = _downscale_uint8_values(hr_b.to(_float_dtype(hr_b.device)), scale).to(torch.uint8)
        if unbatched:
            lr = lr[0]
    out = {
        "psnr_rgb": psnr_rgb(sr, hr),
        "ssim_rgb": ssim_rgb(sr, hr),
        "psnr_y": psnr_y(sr, hr, scale),
        "ssim_y": ssim_y(sr, hr, scale),
        "lr_psnr": lr_psnr(sr, lr, scale),
        "lpips": None,
    }
    if lpips_model is not None:
        device = next(lpips_model.parameters()).device
        with torch.no_grad():
            out["lpips"] = lpips_model(sr.to(device), hr.to(device)).to(out["psnr_rgb"].device)
    return out
