"""RRDB low-resolution encoder (ESRGAN's residual-in-residual dense blocks, no batch norm).

The trunk turns the LR image into conditioning features for the noise predictor. A regression head (nearest
upsampling + convs, as in ESRGAN) turns the same trunk into a stand-alone SR network: that is stage 1 of training
and the "RRDB" baseline of the paper's tables. The diffusion path never runs the head.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, negative_slope=0.2)


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convs; the output is scaled by 0.2 and added to the input. (B,F,h,w) -> same."""

    def __init__(self, num_features: int, growth_channels: int):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(num_features + i * growth_channels, growth_channels if i < 4 else num_features, 3, padding=1)
            for i in range(5)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for i, conv in enumerate(self.convs):
            out = conv(torch.cat(features, dim=1))
            if i < 4:
                features.append(_lrelu(out))
        return x + 0.2 * out


class RRDB(nn.Module):
    """Three residual dense blocks inside a scaled (0.2) residual connection. (B,F,h,w) -> same."""

    def __init__(self, num_features: int, growth_channels: int):
        super().__init__()
        self.dense_blocks = nn.Sequential(*(ResidualDenseBlock(num_features, growth_channels) for _ in range(3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.2 * self.dense_blocks(x)


class RRDBEncoder(ModelMixin, ConfigMixin):
    """RRDB trunk that encodes an LR image, plus the regression head of the RRDB baseline.

    Images enter and leave on the pipeline's [-1, 1] scale; internally the trunk sees [0, 1], as in the SRDiff
    reference implementation, so its pretrained behaviour does not depend on the caller's convention.

    Args:
        in_channels: image channels (3).
        num_features: trunk width F (32 for the CelebA recipe, 64 for DIV2K).
        num_blocks: number of RRDB blocks (8 for CelebA, 17 for DIV2K).
        growth_channels: dense-block growth (16 for CelebA, 32 for DIV2K).
        upscale_factor: SR factor s of the regression head; a power of two.
        feature_stride: conditioning uses every ``feature_stride``-th of the block outputs followed by the trunk
            output (indices stride-1, 2*stride-1, ...), concatenated on channels.
        bicubic_skip: if True, ``upscale`` adds the head's output to the bicubic upsample of the LR image, so the
            head learns only the missing detail. Off in the paper's presets (ESRGAN's plain head, as the SRDiff
            reference); on in the CPU demo, where it reaches a useful regression baseline in minutes of training.
            It never affects the conditioning features.
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        num_features: int = 64,
        num_blocks: int = 17,
        growth_channels: int = 32,
        upscale_factor: int = 4,
        feature_stride: int = 3,
        bicubic_skip: bool = False,
    ):
        super().__init__()
        if upscale_factor < 2 or upscale_factor & (upscale_factor - 1):
            raise ValueError(f"upscale_factor must be a power of two >= 2 (2, 4, 8), got {upscale_factor}.")
        if num_blocks + 1 < feature_stride:
            raise ValueError(
                f"num_blocks ({num_blocks}) + 1 must be >= feature_stride ({feature_stride}) so that at least one "
                "feature map is selected for conditioning."
            )
        self.gradient_checkpointing = False
        self.conv_first = nn.Conv2d(in_channels, num_features, 3, padding=1)
        self.blocks = nn.ModuleList(RRDB(num_features, growth_channels) for _ in range(num_blocks))
        self.trunk_conv = nn.Conv2d(num_features, num_features, 3, padding=1)
        self.upsample_convs = nn.ModuleList(
            nn.Conv2d(num_features, num_features, 3, padding=1) for _ in range(int(math.log2(upscale_factor)))
        )
        self.hr_conv = nn.Conv2d(num_features, num_features, 3, padding=1)
        self.conv_last = nn.Conv2d(num_features, in_channels, 3, padding=1)

    @property
    def out_channels(self) -> int:
        """Channels of the conditioning features returned by ``forward``."""
        return self.config.num_features * ((self.config.num_blocks + 1) // self.config.feature_stride)

    def _trunk(self, lr: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        first = self.conv_first((lr + 1) / 2)
        h, collected = first, []
        for block in self.blocks:
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                h = self._gradient_checkpointing_func(block, h)
            else:
                h = block(h)
            collected.append(h)
        trunk = first + self.trunk_conv(h)
        collected.append(trunk)
        return trunk, collected

    def forward(self, lr: torch.Tensor, return_trunk: bool = False):
        """Conditioning features: lr (B, 3, h, w) in [-1, 1] -> (B, ``out_channels``, h, w).

        With ``return_trunk``, also the trunk features (B, ``num_features``, h, w) that :meth:`head` turns into the
        regression SR image: ``(features, trunk)``, so that a caller needing both runs the RRDB blocks once.
        """
        trunk, collected = self._trunk(lr)
        stride = self.config.feature_stride
        features = torch.cat(collected[stride - 1 :: stride], dim=1)
        return (features, trunk) if return_trunk else features

    def upscale(self, lr: torch.Tensor) -> torch.Tensor:
        """Regression SR (the RRDB baseline): lr (B, 3, h, w) in [-1, 1] -> (B, 3, s*h, s*w), about [-1, 1].

        The output is not clamped, so that the L1 training loss sees the raw prediction; clamp before display.
        """
        trunk, _ = self._trunk(lr)
        return self.head(trunk, lr)

    def head(self, trunk: torch.Tensor, lr: torch.Tensor) -> torch.Tensor:
        """The HR head of :meth:`upscale`: trunk features (B, F, h, w) of ``lr`` (B, 3, h, w) -> (B, 3, s*h, s*w).
        Separate so that it can run on tiles of the trunk (:func:`sradm_diffusers.sampling.rrdb_start.rrdb_upscale`)."""
        h = trunk
        for conv in self.upsample_convs:
            h = _lrelu(conv(F.interpolate(h, scale_factor=2, mode="nearest")))
        out = self.conv_last(_lrelu(self.hr_conv(h)))
        if self.config.bicubic_skip:
            from ..imresize import imresize

            return imresize(lr, self.config.upscale_factor) + 2 * out
        return out * 2 - 1
