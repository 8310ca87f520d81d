"""Starting the reverse process from the RRDB head's own SR image instead of from pure noise (``strength < 1``).

The RRDB encoder is also a regression SR network (``lr_encoder.upscale``, the "rrdb" baseline). Its residual
``x0_rrdb = (rrdb_sr - up(LR)) * residual_scale`` is a good guess of x_0 that lacks fine detail. As in SDEdit and
diffusers' img2img pipelines, ``pipe(image, strength=s)`` noises that guess to an intermediate timestep,
``x_t = scheduler.add_noise(x0_rrdb, noise, t_start)``, and denoises only from there: of the scheduler's
``num_inference_steps`` timesteps, the last ``int(num_inference_steps * s)`` run. The noise at t_start is strong
enough to let the model replace the regression's blur by sampled detail, while the low frequencies (which the
RRDB gets right) survive. ``strength=1`` is sampling from pure noise.
"""

from __future__ import annotations

import numbers

import torch
from diffusers import ModelMixin

from .tiling import map_lr_tiles


def check_strength(strength, num_inference_steps: int) -> None:
    """``strength`` must be a real number in (0, 1] that leaves at least one of the ``num_inference_steps`` steps."""
    if isinstance(strength, bool) or not isinstance(strength, numbers.Real):
        raise TypeError(f"strength must be a float in (0, 1], got {type(strength).__name__} {strength!r}.")
    if not (0.0 < float(strength) <= 1.0):
        raise ValueError(f"strength must be in (0, 1] (1 = start from pure noise), got {strength!r}.")
    if int(num_inference_steps * float(strength)) < 1:
        raise ValueError(
            f"strength={strength!r} with num_inference_steps={num_inference_steps} runs no denoising step "
            f"(int(steps * strength) = 0); raise strength to at least {1 / num_inference_steps:.3g} or use more steps."
        )


def truncate_timesteps(scheduler, num_inference_steps: int, strength: float) -> torch.Tensor:
    """The timesteps that ``strength`` runs, after ``scheduler.set_timesteps(num_inference_steps)``.

    Skips the first ``num_inference_steps - int(num_inference_steps * strength)`` steps (times the scheduler's
    ``order`` entries) and tells the scheduler where it starts (``set_begin_index``), as diffusers' img2img does.
    """
    run = min(int(num_inference_steps * strength), num_inference_steps)
    begin = (num_inference_steps - run) * scheduler.order
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(begin)
    return scheduler.timesteps[begin:]


def head_halo(lr_encoder: ModelMixin) -> int:
    """LR pixels of context that the HR head of ``lr_encoder.upscale`` reads around an output pixel, given the
    trunk's features: its convolutions (at most one LR pixel each, as they run after upsampling) and the bicubic
    skip's (2)."""
    head = [*lr_encoder.upsample_convs, lr_encoder.hr_conv, lr_encoder.conv_last]
    return sum(max(k // 2 for k in conv.kernel_size) for conv in head) + 2


def rrdb_upscale(
    lr_encoder: ModelMixin, lr: torch.Tensor, tile: int | None = None, trunk: torch.Tensor | None = None
) -> torch.Tensor:
    """``lr_encoder.upscale(lr)`` for lr (B, 3, h, w) in [-1, 1] -> (B, 3, s*h, s*w).

    With ``tile``, in bounded memory: the trunk runs once on the whole image at LR size (small), and the HR head,
    whose feature maps are what costs memory, on ``tile`` x ``tile`` LR tiles each read with a :func:`head_halo`
    margin, so the result equals the whole-image one. ``trunk``: ``lr``'s trunk features when the caller has them
    already (``lr_encoder(lr, return_trunk=True)``), so that the RRDB blocks do not run again.
    """
    lr = lr.to(dtype=lr_encoder.dtype)
    if trunk is None:
        trunk = lr_encoder(lr, return_trunk=True)[1]
    if tile is None:
        return lr_encoder.head(trunk, lr)
    scale, halo = lr_encoder.config.upscale_factor, head_halo(lr_encoder)
    return map_lr_tiles(lambda t, x: (lr_encoder.head(t, x),), [trunk, lr], tile, halo, scale)[0]


def rrdb_residual(
    lr_encoder: ModelMixin,
    lr: torch.Tensor,
    up: torch.Tensor,
    residual_scale: float,
    tile: int | None = None,
    trunk: torch.Tensor | None = None,
) -> torch.Tensor:
    """x0_rrdb = (clamp(rrdb_sr) - up) * residual_scale, clamped to the model's [-1, 1] range.

    Args:
        lr: (B, 3, h', w') in [-1, 1]: the LR image, possibly padded on the bottom/right (as the pipeline pads it
            for the U-Net); rrdb_sr is cropped to ``up``'s size.
        up: ``imresize`` of the unpadded LR image by s, clamped to [-1, 1], (B, 3, H, W) with H <= s*h'.
        trunk: ``lr``'s trunk features if already computed (see :func:`rrdb_upscale`).
    Returns:
        float32 (B, 3, H, W) in [-1, 1].
    """
    height, width = up.shape[-2:]
    sr = rrdb_upscale(lr_encoder, lr, tile, trunk)[:, :, :height, :width].float().clamp(-1.0, 1.0)
    return ((sr - up.float()) * residual_scale).clamp(-1.0, 1.0)

