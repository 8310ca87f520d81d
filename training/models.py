"""The networks a training stage builds, loads and checks, and the wrappers that make their training call a forward.

- :class:`EncoderUpscaler`, :class:`ConditionedUNet`: ``forward`` is the call the loss needs, so DDP and autocast
  see it (stage ``encoder``: the RRDB regression SR; stage ``diffusion``: the conditioned noise prediction).
- :func:`load_encoder`, :func:`load_unet`: ``--pretrained_encoder`` / ``--pretrained_unet`` from a component folder,
  a pipeline folder or a Hub id; :func:`check_encoder`: an encoder that cannot condition the U-Net is refused.
- :func:`build_training_models`: (trainable model, its wrapper, the frozen encoder or None) for ``--stage``.
"""

from __future__ import annotations

import json
import logging
import os

import torch
from torch import nn

logger = logging.getLogger("sradm.train")


class EncoderUpscaler(nn.Module):
    """Training wrapper: forward = the encoder's regression SR, so DDP/autocast see the call. lr -> (B,3,sH,sW)."""

    def __init__(self, encoder):
        super().__init__()
        self.inner = encoder

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return self.inner.upscale(lr)


class ConditionedUNet(nn.Module):
    """Training wrapper: forward(x_t, t, LR features) = unet(x_t, t, unet.condition(features)).sample."""

    def __init__(self, unet):
        super().__init__()
        self.inner = unet

    def forward(self, sample: torch.Tensor, timesteps: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return self.inner(sample, timesteps, self.inner.condition(features)).sample


def load_encoder(source: str):
    """An ``RRDBEncoder`` from an encoder folder, a pipeline folder (its ``lr_encoder``) or a Hub id."""
    from sradm_diffusers import RRDBEncoder

    if os.path.isdir(source) and os.path.isfile(os.path.join(source, "model_index.json")):
        return RRDBEncoder.from_pretrained(source, subfolder="lr_encoder")
    if os.path.isdir(source) and not os.path.isfile(os.path.join(source, "config.json")):
        raise ValueError(
            f"--pretrained_encoder {source!r} has no config.json: pass the output_dir of a --stage encoder run."
        )
    try:
        return RRDBEncoder.from_pretrained(source)
    except OSError as error:
        if os.path.isdir(source):
            raise
        raise ValueError(
            f"--pretrained_encoder {source!r} is not a local folder (from {os.getcwd()!r}) and could not be loaded "
            f"from the Hub ({str(error).splitlines()[0]}). Train the encoder first (--stage encoder) or fix the path."
        ) from error


def load_unet(source: str, preset_unet):
    """The ``SRADMUNet`` to fine-tune, from a U-Net folder, a pipeline folder (its ``unet``) or a Hub id.

    Its config must equal ``preset_unet``'s (the run's ``--preset`` and ``--scale``): fine-tuning keeps the
    architecture, and a mismatch raises ``ValueError`` naming the differing entries.
    """
    from sradm_diffusers import SRADMUNet

    subfolder = "unet" if os.path.isfile(os.path.join(source, "model_index.json")) else None
    try:
        loaded = SRADMUNet.from_pretrained(source, subfolder=subfolder)
    except OSError as error:
        raise ValueError(
            f"--pretrained_unet {source!r} could not be loaded ({str(error).splitlines()[0]}): pass a U-Net folder, "
            "a pipeline folder or a Hub id."
        ) from error
    def as_json(value):  # a saved config holds lists where the preset's holds tuples
        return json.loads(json.dumps(value))

    differing = sorted(
        key for key, value in preset_unet.config.items()
        if not key.startswith("_") and as_json(loaded.config.get(key)) != as_json(value)
    )
    if differing:
        raise ValueError(
            f"--pretrained_unet {source!r} differs from the preset's U-Net in {', '.join(differing)}: "
            "use the --preset and --scale it was trained with."
        )
    return loaded


def check_encoder(encoder, unet, preset: str, scale: int, source: str) -> None:
    """Raise ``ValueError`` if a loaded encoder cannot condition ``unet`` (other scale or feature width)."""
    if encoder.config.upscale_factor != scale:
        raise ValueError(
            f"--pretrained_encoder {source!r} was trained for {encoder.config.upscale_factor}x, but this run is "
            f"--scale {scale}. Train an encoder for {scale}x (--stage encoder --scale {scale}) or change --scale."
        )
    if encoder.out_channels != unet.config.cond_channels:
        raise ValueError(
            f"--pretrained_encoder {source!r} produces {encoder.out_channels} feature channels "
            f"(num_features={encoder.config.num_features}, num_blocks={encoder.config.num_blocks}), but preset "
            f"{preset!r} expects {unet.config.cond_channels}. Use the encoder trained with --preset {preset}, or the "
            "preset the encoder was trained with."
        )


def build_training_models(args):
    """(trainable inner model, training wrapper, frozen encoder or None) for ``args.stage``."""
    from sradm_diffusers.presets import build_models

    unet, encoder = build_models(args.preset, args.scale)
    if args.stage == "encoder":
        if args.pretrained_encoder:
            loaded = load_encoder(args.pretrained_encoder)
            check_encoder(loaded, unet, args.preset, args.scale, args.pretrained_encoder)
            def public(config):
                return {k: v for k, v in config.items() if not k.startswith("_")}

            if public(loaded.config) != public(encoder.config):
                logger.warning("--pretrained_encoder config differs from preset %s; using the loaded one.", args.preset)
            encoder = loaded
        return encoder, EncoderUpscaler(encoder), None
    if args.pretrained_unet:
        unet = load_unet(args.pretrained_unet, unet)
    frozen = load_encoder(args.pretrained_encoder)
    check_encoder(frozen, unet, args.preset, args.scale, args.pretrained_encoder)
    if unet.size_multiple and args.resolution % unet.size_multiple:
        raise ValueError(
            f"--resolution {args.resolution} must be a multiple of {unet.size_multiple} for preset {args.preset!r} "
            "(one factor 2 per U-Net downsampling)."
        )
    frozen.requires_grad_(False)
    frozen.eval()
    if args.channels_last:
        frozen.to(memory_format=torch.channels_last)
    return unet, ConditionedUNet(unet), frozen
