"""Colour stability: how far an SR image's colours drift from its bicubic upsample.

Diffusion SR models are often reported to shift colours (a global tint, or blotches at low frequency). SRADM
predicts a residual over ``up = imresize(LR, s)``, so its colours are anchored to the upsample by construction; this
module measures what is left. ``lr_consistency=True`` removes any low-frequency drift exactly (the SR's
``imresize(., 1/s)`` equals the LR), so it doubles as the colour correction.
"""

from __future__ import annotations

import torch

from ..imresize import imresize


def colour_shift(sr: torch.Tensor, lr: torch.Tensor, scale: int) -> dict[str, torch.Tensor]:
    """Colour error of SR images against their bicubic upsample ``up = imresize(lr, s)``, on the 0..255 scale.

    Args:
        sr: (B, 3, s*h, s*w) in [0, 1].
        lr: (B, 3, h, w) in [0, 1].
        scale: s.
    Returns:
        ``global``: (B, 3) per-channel mean of ``sr - up`` (a tint; ``up`` clamped to [0, 1]);
        ``local``: (B,) ``|imresize(sr, 1/s) - imresize(up, 1/s)|`` averaged over LR pixels and channels: colour
        differences at the LR's resolution (blotches the global mean hides); added detail above it is ignored.
    """
    up = imresize(lr.float(), scale).clamp(0, 1)
    return {
        "global": (sr.float() - up).mean(dim=(2, 3)) * 255,
        "local": (imresize(sr.float() - up, 1.0 / scale)).abs().mean(dim=(1, 2, 3)) * 255,
    }
