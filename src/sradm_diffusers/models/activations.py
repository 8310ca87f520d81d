"""An in-place Mish for CPU inference, about three times faster than ``F.mish`` and equal to it within 2e-6.

ATen's CPU Mish evaluates ``x * tanh(log1p(exp(x)))``: three transcendental functions per element make it compute
bound (9 ms for a 64x256x256 map on 2 cores, where copying the map takes 0.6 ms; a third of a demo U-Net step).
With ``u = 1 + exp(x)``,

    tanh(softplus(x)) = (u^2 - 1) / (u^2 + 1) = 1 - 1 / d,  d = (u^2 + 1) / 2,   so   mish(x) = x - x / d:

one exponential, an add, a fused ``addcmul`` for d and a fused ``addcdiv``. The extremes stay right: d >= 1, so
x / d cannot overflow; for large x, ``u^2`` overflows to inf and the result is x; for very negative x it tends to 0
with an absolute error of about |x| * 6e-8 from the cancellation (mish(-20) = -4e-8 comes out as 0).

The passes run on slices about the size of the cores' L2 caches, in a float32 scratch buffer (in bf16 or fp16 the
cancellation would cost most of their bits), so no map-sized temporary is allocated. On other devices ``F.mish``,
one fused kernel there, is used unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Elements per slice: 4 MiB of float32, 2 MiB per core on the 2-core machine this was tuned on (its L2 size). Demo
# U-Net step, 256² / 1024² output: 1 MiB slices 120 / 1764 ms, 4 MiB 109 / 1890 ms, 8 MiB 117 / 1843 ms. Each slice
# is four OpenMP regions, so fewer slices also suffer less when other processes compete for the cores.
SLICE_ELEMENTS = 1 << 20


def mish_(x: torch.Tensor) -> torch.Tensor:
    """Mish of ``x`` (any shape, floating point) written into ``x``; returns ``x``. Inference only (no autograd)."""
    flat = _dense_flat_view(x)
    if x.device.type != "cpu" or flat is None:
        return F.mish(x, inplace=True)
    scratch = torch.empty(min(flat.numel(), SLICE_ELEMENTS), dtype=torch.float32)
    half = torch.tensor(0.5)
    upcast = torch.empty_like(scratch) if x.dtype != torch.float32 else None
    for piece in flat.split(SLICE_ELEMENTS):
        n = piece.numel()
        values = piece if upcast is None else upcast[:n].copy_(piece)
        u = torch.exp(values, out=scratch[:n]).add_(1)
        denominator = torch.addcmul(half, u, u, value=0.5, out=u)
        torch.addcdiv(values, values, denominator, value=-1, out=values)
        if upcast is not None:
            piece.copy_(values)
    return x


def _dense_flat_view(x: torch.Tensor) -> torch.Tensor | None:
    """A 1-D view of all of ``x``'s elements in memory order, or None when they are not one dense block."""
    if x.is_contiguous():
        return x.view(-1)
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return x.permute(0, 2, 3, 1).view(-1)
    return None
