"""Windowed multi-head self-attention (Eq. 13 of the SRADM paper).

The feature map is cut into non-overlapping ``window x window`` tiles and every pixel attends to the other pixels
of its own tile only, so the cost grows linearly with the image area instead of quadratically. Feature maps whose
sides are not multiples of the window are zero-padded on the bottom/right; padded positions are masked out of the
keys, so the result for every real pixel is exactly attention over the real pixels of its tile, whatever the size.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn


def _group_count(channels: int, max_groups: int = 32) -> int:
    """Largest divisor of ``channels`` <= ``max_groups`` leaving >= 4 channels per group (valid even on 1x1 maps)."""
    for groups in range(max(1, min(max_groups, channels // 4)), 0, -1):
        if channels % groups == 0:
            return groups
    return 1


class WindowAttention(nn.Module):
    """Pre-norm residual block of multi-head self-attention inside non-overlapping windows.

    Args:
        channels: feature channels C.
        window_size: side of the square attention window, in pixels of this feature map.
        head_dim: channels per attention head; ``channels`` must be divisible by it.

    Shapes:
        ``forward(x)``: x (B, C, H, W), any H, W >= 1 -> (B, C, H, W).
    """

    def __init__(self, channels: int, window_size: int = 8, head_dim: int = 32):
        super().__init__()
        if window_size < 1:
            raise ValueError(f"window_size must be >= 1, got {window_size}.")
        if channels % head_dim != 0:
            raise ValueError(
                f"channels ({channels}) must be divisible by head_dim ({head_dim}); choose a head_dim that divides it."
            )
        self.window_size = window_size
        self.num_heads = channels // head_dim
        self.norm = nn.GroupNorm(_group_count(channels), channels)
        self.to_qkv = nn.Linear(channels, 3 * channels)
        self.to_out = nn.Linear(channels, channels)
        # Start as an identity block: a freshly inserted attention layer must not disturb the U-Net.
        nn.init.zeros_(self.to_out.weight)
        nn.init.zeros_(self.to_out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled():
            return self._forward_channels_last(x)
        batch, channels, height, width = x.shape
        win = self.window_size
        pad_h, pad_w = (-height) % win, (-width) % win

        h = self.norm(x)
        if pad_h or pad_w:
            h = F.pad(h, (0, pad_w, 0, pad_h))
        rows, cols = h.shape[2] // win, h.shape[3] // win

        # (B, C, rows*win, cols*win) -> (B*rows*cols, win*win, C): one sequence per window.
        tokens = (
            h.reshape(batch, channels, rows, win, cols, win)
            .permute(0, 2, 4, 3, 5, 1)
            .reshape(batch * rows * cols, win * win, channels)
        )
        q, k, v = (
            self.to_qkv(tokens)
            .reshape(tokens.shape[0], win * win, 3, self.num_heads, channels // self.num_heads)
            .permute(2, 0, 3, 1, 4)
        )
        mask = self._key_mask(height, width, batch, x.device) if (pad_h or pad_w) else None
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out = self.to_out(out.transpose(1, 2).reshape(tokens.shape[0], win * win, channels))

        out = (
            out.reshape(batch, rows, cols, win, win, channels)
            .permute(0, 5, 1, 3, 2, 4)
            .reshape(batch, channels, rows * win, cols * win)
        )
        return x + out[:, :, :height, :width]

    def _forward_channels_last(self, x: torch.Tensor) -> torch.Tensor:
        """Inference path, the same arithmetic as ``forward`` with the windows cut from a (B, H, W, C) view.

        In channels_last memory ``permute(0, 2, 3, 1)`` is free, so cutting windows and putting them back costs one
        copy each way and the result is channels_last again, with no layout round trip.
        """
        batch, channels, height, width = x.shape
        win, heads = self.window_size, self.num_heads
        pad_h, pad_w = (-height) % win, (-width) % win

        h = self.norm(x).permute(0, 2, 3, 1)  # (B, H, W, C)
        if pad_h or pad_w:
            h = F.pad(h, (0, 0, 0, pad_w, 0, pad_h))
        rows, cols = h.shape[1] // win, h.shape[2] // win
        windows = batch * rows * cols

        tokens = (
            h.reshape(batch, rows, win, cols, win, channels)
            .permute(0, 1, 3, 2, 4, 5)
            .reshape(windows, win * win, channels)
        )
        q, k, v = self.to_qkv(tokens).reshape(windows, win * win, 3, heads, channels // heads).permute(2, 0, 3, 1, 4)
        mask = _key_mask(height, width, win, x.device).repeat(batch, 1, 1, 1) if (pad_h or pad_w) else None
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out = self.to_out(out.transpose(1, 2).reshape(windows, win * win, channels))

        out = (
            out.reshape(batch, rows, cols, win, win, channels)
            .permute(0, 1, 3, 2, 4, 5)
            .reshape(batch, rows * win, cols * win, channels)[:, :height, :width]
            .permute(0, 3, 1, 2)  # (B, C, H, W) view in channels_last memory
        )
        return x + out

    def _key_mask(self, height: int, width: int, batch: int, device: torch.device) -> torch.Tensor:
        """Boolean mask (B*windows, 1, 1, win*win): True where the key is a real (unpadded) pixel."""
        return _key_mask(height, width, self.window_size, device).repeat(batch, 1, 1, 1)


@functools.lru_cache(maxsize=16)
def _key_mask(height: int, width: int, win: int, device: torch.device) -> torch.Tensor:
    """Boolean mask (windows, 1, 1, win*win) for one image, cached: it depends only on the feature map's size."""
    rows, cols = -(-height // win), -(-width // win)
    valid = torch.zeros(rows * win, cols * win, dtype=torch.bool, device=device)
    valid[:height, :width] = True
    return valid.reshape(rows, win, cols, win).permute(0, 2, 1, 3).reshape(rows * cols, 1, 1, win * win)
