"""The losses of the two stages: L1 regression for the RRDB encoder, SRDiff's noise loss for the U-Net."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def encoder_loss(model: nn.Module, lr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """L1 between ``model(lr)`` (the encoder's regression SR) and ``hr``, both in [-1, 1]."""
    return F.l1_loss(model(lr).float(), hr.float())


def diffusion_loss(
    model: nn.Module,
    encoder: nn.Module,
    noise_scheduler,
    lr: torch.Tensor,
    hr: torch.Tensor,
    generator: torch.Generator | None,
    residual_scale: float = 2.0,
    loss_type: str = "l1",
) -> torch.Tensor:
    """The SRDiff noise loss of one batch.

    x0 = clamp((hr - clamp(imresize(lr, s), -1, 1)) * residual_scale, -1, 1); t ~ U{0..T-1}; eps ~ N(0, I);
    x_t = scheduler.add_noise(x0, eps, t); loss = |eps - model(x_t, t, encoder(lr))| (mean; squared for "l2").
    ``lr`` (B,3,h,w), ``hr`` (B,3,sh,sw) in [-1, 1]; ``generator`` makes t and eps reproducible.
    """
    from sradm_diffusers import imresize

    scale = hr.shape[-1] // lr.shape[-1]
    up = imresize(lr, scale).clamp(-1.0, 1.0)
    x0 = ((hr - up) * residual_scale).clamp(-1.0, 1.0)
    gen_device = generator.device if generator is not None else hr.device
    timesteps = torch.randint(
        0, noise_scheduler.config.num_train_timesteps, (hr.shape[0],), generator=generator, device=gen_device
    ).to(hr.device)
    noise = torch.randn(x0.shape, generator=generator, device=gen_device, dtype=x0.dtype).to(hr.device)
    noisy = noise_scheduler.add_noise(x0, noise, timesteps)
    with torch.no_grad():
        features = encoder(lr)
    pred = model(noisy, timesteps, features)
    if loss_type == "l2":
        return F.mse_loss(pred.float(), noise.float())
    return F.l1_loss(pred.float(), noise.float())
