"""SRADMUNet: the conditional noise predictor of SRADM (Figure 2 of the paper).

x_t -> conv+Mish -> contraction path (per level: two residual blocks, optional window attention, strided-conv
downsampling) -> middle (residual block, window attention, residual block) -> expansion path (per level: skip
concatenation, two residual blocks, optional window attention, transposed-conv upsampling) -> conv+Mish -> 1x1 conv.
The LR encoder's features are brought to HR size once per image by ``condition()`` (one transposed conv) and added
to the hidden state after the first level's residual blocks. The time step enters every residual block through a
sinusoidal embedding and an MLP.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.utils import BaseOutput
from torch import nn

from .activations import mish_
from .attention import WindowAttention


@dataclass
class SRADMUNetOutput(BaseOutput):
    """``sample``: the predicted noise, (B, out_channels, H, W)."""

    sample: torch.Tensor


def sinusoidal_embedding(timesteps: torch.Tensor, dim: int) -> torch.Tensor:
    """Transformer sinusoidal encoding of (possibly fractional) time steps: (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, device=timesteps.device, dtype=torch.float32) / (half - 1))
    angles = timesteps.float()[:, None] * freqs[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """x (B, C, H, W) in channels_last memory format; returns x itself when it already is."""
    return x.contiguous(memory_format=torch.channels_last)


class ConvMish(nn.Sequential):
    """3x3 conv followed by Mish. (B, C_in, H, W) -> (B, C_out, H, W)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.Mish())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return super().forward(x)
        # Inference: Mish in the conv's own output buffer. A full-resolution elementwise op is memory bound on a
        # CPU and a fresh output (newly mapped pages) costs more than the op; autograd would need the input.
        return mish_(self[0](x))


class ResidualBlock(nn.Module):
    """Two conv+Mish blocks; the time embedding is added after the first. (B,C_in,H,W),(B,T) -> (B,C_out,H,W)."""

    def __init__(self, in_channels: int, out_channels: int, time_channels: int):
        super().__init__()
        self.block1 = ConvMish(in_channels, out_channels)
        self.time_proj = nn.Sequential(nn.Mish(), nn.Linear(time_channels, out_channels))
        self.block2 = ConvMish(out_channels, out_channels)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled():
            return self._forward_inplace(x, temb)
        h = self.block1(x) + self.time_proj(temb)[:, :, None, None]
        return self.block2(h) + self.skip(x)

    def _forward_inplace(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """The same arithmetic with the adds done in the conv outputs' buffers (see ``ConvMish.forward``)."""
        h = self.block1(x)
        h += self.time_proj(temb)[:, :, None, None]
        out = self.block2(h)
        del h  # one full-size map less alive while the skip branch runs
        out += self.skip(x)
        return out


class Level(nn.Module):
    """One resolution level: residual blocks, then optional window attention. Checkpointable as a whole."""

    def __init__(self, in_channels, out_channels, time_channels, num_blocks, attention, window_size, head_dim):
        super().__init__()
        self.resnets = nn.ModuleList(
            ResidualBlock(in_channels if i == 0 else out_channels, out_channels, time_channels)
            for i in range(num_blocks)
        )
        self.attention = WindowAttention(out_channels, window_size, head_dim) if attention else None
        self.gradient_checkpointing = False

    def _run(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x, temb)
        return self.attention(x) if self.attention is not None else x

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and self.gradient_checkpointing:
            return self._gradient_checkpointing_func(self._run, x, temb)
        return self._run(x, temb)


class SRADMUNet(ModelMixin, ConfigMixin):
    """Conditional noise predictor eps_theta(x_t, t, LR features).

    Args:
        in_channels / out_channels: channels of x_t and of the predicted noise (3).
        base_channels: width after the input block (64 in the paper's recipes).
        channel_mults: width multiplier per level; ``len(channel_mults) - 1`` downsamplings. The SRDiff reference
            uses 4 levels (3 halvings); the paper's text describes 4 halvings, i.e. 5 levels.
        layers_per_level: residual blocks per level (2).
        cond_channels: channels of the LR encoder's features (``RRDBEncoder.out_channels``).
        upscale_factor: SR factor s; ``condition()`` upsamples by exactly s.
        attention_levels: one flag per level: window attention after that level's residual blocks (both paths).
        mid_attention: window attention between the two middle residual blocks.
        attention_window: window side in pixels of the feature map it runs on.
        attention_head_dim: channels per attention head.

    Shapes: ``forward(sample (B,3,H,W), timestep (B,) or scalar, cond (B,base_channels,H,W))`` with H, W multiples
    of ``2 ** (len(channel_mults) - 1)`` (the pipeline pads to that and crops back). Instead of ``cond``, ``forward``
    also takes the encoder's ``lr_features`` and conditions them itself (see ``forward``), so that everything the
    U-Net computes runs inside its own ``forward``, the call diffusers' CPU-offload hooks wrap.
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        base_channels: int = 64,
        channel_mults: tuple[int, ...] = (1, 2, 3, 4),
        layers_per_level: int = 2,
        cond_channels: int = 384,
        upscale_factor: int = 4,
        attention_levels: tuple[bool, ...] = (False, False, True, True),
        mid_attention: bool = True,
        attention_window: int = 8,
        attention_head_dim: int = 32,
    ):
        super().__init__()
        if len(attention_levels) != len(channel_mults):
            raise ValueError(
                f"attention_levels has {len(attention_levels)} entries but channel_mults has {len(channel_mults)}: "
                "give one attention flag per level."
            )
        if upscale_factor < 2 or upscale_factor % 2:
            raise ValueError(f"upscale_factor must be even (2, 4, 8), got {upscale_factor}.")
        widths = [base_channels * m for m in channel_mults]
        attn = dict(window_size=attention_window, head_dim=attention_head_dim)

        self.time_embedding = nn.Sequential(
            nn.Linear(base_channels, base_channels * 4), nn.Mish(), nn.Linear(base_channels * 4, base_channels)
        )
        self.cond_proj = nn.ConvTranspose2d(
            cond_channels, base_channels, 2 * upscale_factor, stride=upscale_factor, padding=upscale_factor // 2
        )
        self.conv_in = ConvMish(in_channels, base_channels)

        self.down_levels, self.downsamplers = nn.ModuleList(), nn.ModuleList()
        prev = base_channels
        for i, width in enumerate(widths):
            self.down_levels.append(
                Level(prev, width, base_channels, layers_per_level, attention_levels[i], **attn)
            )
            if i < len(widths) - 1:
                self.downsamplers.append(nn.Conv2d(width, width, 3, stride=2, padding=1))
            prev = width

        self.mid_block1 = ResidualBlock(prev, prev, base_channels)
        self.middle_attention = WindowAttention(prev, **attn) if mid_attention else None
        self.mid_block2 = ResidualBlock(prev, prev, base_channels)

        self.up_levels, self.upsamplers = nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(len(widths))):
            out = widths[i - 1] if i > 0 else base_channels
            self.up_levels.append(
                Level(prev + widths[i], out, base_channels, layers_per_level, attention_levels[i], **attn)
            )
            if i > 0:
                self.upsamplers.append(nn.ConvTranspose2d(out, out, 4, stride=2, padding=1))
            prev = out

        self.conv_out = nn.Sequential(ConvMish(base_channels, base_channels), nn.Conv2d(base_channels, out_channels, 1))
        # (lr_features, its version, origin, sample shape, cond): the last conditioning made inside forward().
        self._condition_cache: tuple | None = None

    @property
    def size_multiple(self) -> int:
        """H and W of ``sample`` must be multiples of this (one factor 2 per downsampling)."""
        return 2 ** (len(self.config.channel_mults) - 1)

    def condition(self, features: torch.Tensor) -> torch.Tensor:
        """LR features (B, cond_channels, h, w) -> HR-size conditioning (B, base_channels, s*h, s*w). Once per image."""
        if torch.is_grad_enabled():
            return self.cond_proj(features)
        self._use_channels_last_weights()
        # Made once per image in the layout forward() runs in, so that no step has to convert it.
        return to_channels_last(self.cond_proj(features))

    def reset_condition_cache(self) -> None:
        """Drop the conditioning ``forward(..., lr_features=...)`` keeps between steps (call after sampling)."""
        self._condition_cache = None

    def _condition_in_forward(self, sample: torch.Tensor, features: torch.Tensor, origin: tuple[int, int]):
        """``condition(features)`` cropped to ``sample``'s (H, W) from HR pixel ``origin`` and repeated to its batch.

        During inference the result is kept until ``forward`` sees other features (or they change in place), so
        the sampling loop conditions once per image even though every step passes the features.
        """
        key = (features._version, tuple(origin), tuple(sample.shape))
        cached = self._condition_cache
        if cached is not None and cached[0] is features and cached[1:4] == key:
            return cached[4]
        batch, images = sample.shape[0], features.shape[0]
        if batch % images:
            raise ValueError(
                f"lr_features hold {images} images but sample has batch {batch}; the batch must be a multiple of "
                "the images (num_images_per_prompt samples per image)."
            )
        (dy, dx), (height, width) = origin, sample.shape[-2:]
        cond = self.condition(features)[:, :, dy : dy + height, dx : dx + width]
        if batch != images:
            cond = cond.repeat_interleave(batch // images, dim=0)
        if not torch.is_grad_enabled():
            cond = to_channels_last(cond)
            self._condition_cache = (features, *key, cond)
        return cond

    def _use_channels_last_weights(self) -> None:
        """Store the conv weights channels_last (values and state_dict keys unchanged), once.

        A channels_last input with a contiguous weight makes every convolution copy its weight first; for the
        div2k-x4 U-Net those copies cost about a seventh of a step.
        """
        if not self.conv_in[0].weight.is_contiguous(memory_format=torch.channels_last):
            self.to(memory_format=torch.channels_last)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        cond: torch.Tensor | None = None,
        return_dict: bool = True,
        *,
        lr_features: torch.Tensor | None = None,
        features_origin: tuple[int, int] = (0, 0),
    ) -> SRADMUNetOutput | tuple[torch.Tensor]:
        """Predict the noise in ``sample`` (B, C, H, W) at ``timestep``.

        Give exactly one of:
            cond: HR conditioning (B, base_channels, H, W) from ``condition()``.
            lr_features: the encoder's LR features (B_img, cond_channels, h, w), conditioned here. ``sample``'s
                batch B must be a multiple of B_img (K samples per image share its features; the conditioning is
                made once per image and repeated). ``condition(lr_features)`` is cropped to (H, W) starting at HR
                pixel ``features_origin`` (dy, dx): a tile's features with a halo. In inference the conditioning is
                cached across the steps that pass the same ``lr_features`` tensor.
        """
        if (cond is None) == (lr_features is None):
            raise ValueError(
                "Pass exactly one of cond (from unet.condition) or lr_features (from the lr_encoder) to SRADMUNet."
            )
        if cond is None:
            cond = self._condition_in_forward(sample, lr_features, features_origin)
        if sample.shape[-2] % self.size_multiple or sample.shape[-1] % self.size_multiple:
            raise ValueError(
                f"sample size {tuple(sample.shape[-2:])} is not a multiple of {self.size_multiple}; pad it first "
                "(SRADMPipeline does this automatically)."
            )
        if cond.shape[-2:] != sample.shape[-2:] or cond.shape[0] != sample.shape[0]:
            raise ValueError(
                f"cond has shape {tuple(cond.shape)} but sample has {tuple(sample.shape)}: cond must be "
                "unet.condition(lr_encoder(lr)) for an LR image 1/upscale_factor the size of sample."
            )
        timesteps = torch.as_tensor(timestep, device=sample.device)
        timesteps = timesteps.reshape(-1).expand(sample.shape[0]) if timesteps.numel() == 1 else timesteps
        temb = self.time_embedding(sinusoidal_embedding(timesteps, self.config.base_channels).to(sample.dtype))

        inference = not torch.is_grad_enabled()
        if inference:
            # channels_last end to end: oneDNN's 3x3 convolutions run about twice as fast in it on CPUs, and every
            # op below (Mish, GroupNorm, the attention's window reshapes, torch.cat) keeps the layout.
            sample, cond = to_channels_last(sample), to_channels_last(cond)
            self._use_channels_last_weights()

        h = self.conv_in(sample)
        skips = []
        for i, level in enumerate(self.down_levels):
            h = level(h, temb)
            if i == 0:
                h = h.add_(cond) if inference else h + cond
            skips.append(h)
            if i < len(self.downsamplers):
                h = self.downsamplers[i](h)

        h = self.mid_block1(h, temb)
        if self.middle_attention is not None:
            h = self.middle_attention(h)
        h = self.mid_block2(h, temb)

        for i, level in enumerate(self.up_levels):
            h = torch.cat([h, skips.pop()], dim=1)  # rebinding h frees its inputs before the level runs
            h = level(h, temb)
            if i < len(self.upsamplers):
                h = self.upsamplers[i](h)

        eps = self.conv_out(h)
        if inference:
            eps = eps.contiguous()  # callers get the usual layout; 3 channels make this copy cheap
        return SRADMUNetOutput(sample=eps) if return_dict else (eps,)
