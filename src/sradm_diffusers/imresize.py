"""MATLAB-compatible bicubic ``imresize``: the project's one degradation and bicubic resize.

Everything that makes or compares a low-resolution image goes through :func:`imresize`: the (LR, HR) training pairs,
the pipeline's bicubic base ``up = imresize(lr, s)``, the LR images made for evaluation and the LR-PSNR metric
(``imresize(sr, 1/s)`` against the LR input). Training and inference must agree on it exactly, so there is one
implementation, here.

It reproduces MATLAB's ``imresize(x, scale, 'bicubic')``: the cubic convolution kernel with ``a = -0.5``, the kernel
stretched by ``1/scale`` when downscaling (antialiasing), MATLAB's sample positions, tap count and weight
normalisation, symmetric (mirror) border handling, output size ``ceil(in * scale)`` and the order in which the two
dimensions are resized (the one with the smaller scale first; height first on ties).

Each 1-D resize is a dense ``(out, in)`` weight matrix applied with one batched matmul over all leading dimensions;
the matrices are cached per ``(in, out, scale, antialiasing, device, dtype)``.
"""

from __future__ import annotations

import functools
import math
from numbers import Real
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch

__all__ = ["imresize", "cubic", "resize_weights"]

_TORCH_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_NUMPY_FLOATS = (np.float16, np.float32, np.float64)


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with ``a = -0.5`` (MATLAB's ``cubic``), support ``[-2, 2]``.

    Args:
        x: array of distances (any shape, float).
    Returns:
        array of kernel values, same shape; ``cubic(0) = 1``, ``cubic(k) = 0`` for nonzero integers ``k``.
    """
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    inner = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    outer = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return inner + outer


def _contributions(in_len: int, out_len: int, scale: float, antialiasing: bool) -> Tuple[np.ndarray, np.ndarray]:
    """MATLAB's ``contributions``: 0-based input indices and weights, each of shape (out_len, P), float64."""
    kernel_width = 4.0
    if scale < 1 and antialiasing:
        kernel = lambda d: scale * cubic(scale * d)  # noqa: E731
        kernel_width = kernel_width / scale
    else:
        kernel = cubic
    x = np.arange(1, out_len + 1, dtype=np.float64)  # 1-based output coordinates, as MATLAB
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)  # their positions in 1-based input coordinates
    left = np.floor(u - kernel_width / 2.0)
    taps = int(math.ceil(kernel_width)) + 2
    indices = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]  # 1-based
    weights = kernel(u[:, None] - indices)
    weights = weights / weights.sum(axis=1, keepdims=True)
    # Symmetric border: 1..n, n..1 repeated (MATLAB's aux vector), back to 0-based.
    aux = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    indices = aux[np.mod(indices.astype(np.int64) - 1, aux.size)]
    keep = np.any(weights != 0, axis=0)  # MATLAB trims all-zero weight columns
    return indices[:, keep], weights[:, keep]


def resize_weights(in_len: int, out_len: int, scale: float, antialiasing: bool = True) -> np.ndarray:
    """Dense 1-D resize matrix ``W`` (out_len, in_len), float64, such that ``y = W @ x`` is MATLAB's 1-D resize.

    Rows sum to 1. Taps that fall outside ``[0, in_len)`` are mirrored back and their weights accumulated.
    """
    indices, weights = _contributions(in_len, out_len, scale, antialiasing)
    matrix = np.zeros((out_len, in_len), dtype=np.float64)
    rows = np.broadcast_to(np.arange(out_len)[:, None], indices.shape)
    np.add.at(matrix, (rows, indices), weights)
    return matrix


@functools.lru_cache(maxsize=128)
def _cached_weights(
    in_len: int, out_len: int, scale: float, antialiasing: bool, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    return torch.from_numpy(resize_weights(in_len, out_len, scale, antialiasing)).to(device=device, dtype=dtype)


def _check_scale(scale) -> Tuple[float, float]:
    values = tuple(scale) if isinstance(scale, (tuple, list)) else (scale, scale)
    if len(values) != 2:
        raise ValueError(f"imresize: scale={scale!r} must be one number or a pair (scale_h, scale_w).")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, Real):
            raise TypeError(f"imresize: scale={scale!r} must be a positive number (e.g. 4 or 0.25).")
        v = float(v)
        if not math.isfinite(v) or v <= 0:
            raise ValueError(f"imresize: scale={scale!r} must be finite and > 0 (e.g. 4 to enlarge, 0.25 to shrink).")
        out.append(v)
    return out[0], out[1]


def _check_size(size) -> Tuple[int, int]:
    if not isinstance(size, (tuple, list, torch.Size)) or len(size) != 2:
        raise ValueError(f"imresize: size={size!r} must be a pair (out_h, out_w) of positive integers.")
    out = []
    for v in size:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v <= 0:
            raise ValueError(f"imresize: size={size!r} must be a pair (out_h, out_w) of positive integers.")
        out.append(int(v))
    return out[0], out[1]


def _resize_tensor(
    x: torch.Tensor, scales: Tuple[float, float], out_hw: Tuple[int, int], antialiasing: bool, quantize: bool = False
) -> torch.Tensor:
    """Resize a float tensor (..., H, W) along its last two dimensions, MATLAB's dimension order.

    With ``quantize`` (uint8 sources) every pass is rounded half up and clamped to [0, 255], as MATLAB's
    per-dimension resize returns the input's class after each pass.
    """
    order = (0, 1) if scales[0] <= scales[1] else (1, 0)
    for dim in order:
        in_len = x.shape[-2 + dim]
        out_len, s = out_hw[dim], scales[dim]
        if in_len == out_len and s == 1.0:
            continue  # the kernel at integer offsets is a delta: exact identity
        w = _cached_weights(in_len, out_len, s, bool(antialiasing), x.device, x.dtype)
        x = torch.matmul(w, x) if dim == 0 else torch.matmul(x, w.t())
        if quantize:
            x = torch.floor(x + 0.5).clamp_(0, 255)
    return x


def imresize(
    x: Union[torch.Tensor, np.ndarray],
    scale: Optional[Union[float, Sequence[float]]] = None,
    *,
    size: Optional[Sequence[int]] = None,
    antialiasing: bool = True,
) -> Union[torch.Tensor, np.ndarray]:
    """Resize images like MATLAB's ``imresize(x, scale, 'bicubic')``.

    Args:
        x: one of
            - torch float tensor (..., H, W), any leading dims (e.g. (B, 3, H, W) in [-1, 1]; the resize is linear,
              so any range works, and values may overshoot the input range slightly);
            - torch uint8 tensor (..., H, W) in [0, 255];
            - numpy array (H, W) or (H, W, C), dtype uint8 or float16/32/64.
        scale: factor for both dimensions (4 makes the image 4x larger, 0.25 4x smaller), or a pair
            ``(scale_h, scale_w)``; must be > 0. Output size is ``ceil(in * scale)`` per dimension.
        size: ``(out_h, out_w)`` instead of ``scale``; the per-dimension scale is then ``out / in``.
        antialiasing: stretch the kernel by ``1/scale`` when downscaling (MATLAB's default, True).

    Returns:
        Same type and layout as ``x`` with the last two (torch) / first two (numpy) dimensions resized.
        Float inputs keep their dtype and device (float16/bfloat16 are computed in float32). uint8 inputs are
        computed in float64 (as MATLAB) and, like MATLAB, rounded half away from zero and clamped to [0, 255]
        after each of the two 1-D passes (so the dimension order matters for uint8).

    Raises:
        ValueError: both or neither of ``scale``/``size``, non-positive scale, bad size, wrong rank, empty image.
        TypeError: unsupported input type or dtype, non-numeric scale.
    """
    if (scale is None) == (size is None):
        raise ValueError(f"imresize: give exactly one of scale= or size= (got scale={scale!r}, size={size!r}).")

    if isinstance(x, np.ndarray):
        if x.ndim not in (2, 3):
            raise ValueError(f"imresize: numpy input must be (H, W) or (H, W, C), got shape {x.shape}.")
        if x.dtype != np.uint8 and x.dtype.type not in _NUMPY_FLOATS:
            raise TypeError(f"imresize: numpy dtype {x.dtype} is not supported; use uint8 or float16/32/64.")
        # A copy when the array is read-only (e.g. np.asarray(PIL image)): torch cannot wrap those.
        t = torch.from_numpy(np.ascontiguousarray(x) if x.flags.writeable else np.array(x))
        t = t.movedim(-1, 0) if x.ndim == 3 else t
        out = imresize(t, scale, size=size, antialiasing=antialiasing)
        out = out.movedim(0, -1) if x.ndim == 3 else out
        return out.numpy()

    if not isinstance(x, torch.Tensor):
        raise TypeError(f"imresize: expected a torch.Tensor or numpy.ndarray, got {type(x).__name__}.")
    if x.dtype != torch.uint8 and x.dtype not in _TORCH_FLOATS:
        raise TypeError(f"imresize: tensor dtype {x.dtype} is not supported; use a float dtype or uint8.")
    if x.ndim < 2:
        raise ValueError(f"imresize: tensor input must be (..., H, W), got shape {tuple(x.shape)}.")
    in_h, in_w = x.shape[-2], x.shape[-1]
    if in_h == 0 or in_w == 0:
        raise ValueError(f"imresize: empty image of shape {tuple(x.shape)}; H and W must be >= 1.")

    if scale is not None:
        scales = _check_scale(scale)
        out_hw = (int(math.ceil(in_h * scales[0])), int(math.ceil(in_w * scales[1])))
    else:
        out_hw = _check_size(size)
        scales = (out_hw[0] / in_h, out_hw[1] / in_w)

    if x.dtype == torch.uint8:
        y = _resize_tensor(x.to(torch.float64), scales, out_hw, antialiasing, quantize=True)
        return y.to(torch.uint8)
    if x.dtype in (torch.float16, torch.bfloat16):
        return _resize_tensor(x.to(torch.float32), scales, out_hw, antialiasing).to(x.dtype)
    return _resize_tensor(x, scales, out_hw, antialiasing)
