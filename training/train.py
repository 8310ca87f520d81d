#!/usr/bin/env python
"""Train SRADM in two stages with accelerate: the RRDB encoder, then the diffusion U-Net.

Stage 1, ``--stage encoder``: the RRDB encoder with its regression head (``RRDBEncoder.upscale``) learns
LR -> HR with an L1 loss (images in [-1, 1]). The output folder is an ``RRDBEncoder`` (``from_pretrained(dir)``);
it is also the "RRDB" baseline of the paper's tables.

Stage 2, ``--stage diffusion``: the encoder from ``--pretrained_encoder`` is frozen; the U-Net learns to predict the
noise added to the scaled residual ``x0 = clamp((HR - imresize(LR, s).clamp(-1, 1)) * residual_scale, -1, 1)`` at
``t ~ U{0..T-1}`` of the pipeline's DDPM schedule, conditioned on ``unet.condition(encoder(LR))``. The output folder
is a complete ``SRADMPipeline`` (``SRADMPipeline.from_pretrained(dir)``).

Quick start (CPU demo; ``python training/prepare_demo_data.py --output_dir data/demo`` makes the images)::

    python training/train.py --config training/configs/demo_x4.json --stage encoder
    python training/train.py --config training/configs/demo_x4.json --stage diffusion

Paper recipes (GPU): ``training/configs/celeba_x8.json`` and ``div2k_x4.json``. A recipe file holds flag values;
its ``"encoder"`` / ``"diffusion"`` sections are picked by ``--stage``; any flag given on the command line
overrides the file.

Resuming: checkpoints ``output_dir/checkpoint-<step>`` hold the models (diffusers format), EMA, optimizer, LR
schedule, RNG states and the data position; ``--resume_from_checkpoint latest`` continues exactly where the newest
complete checkpoint left off (same batches, same noise). Checkpoints are written to ``checkpoint-<step>.tmp`` and
renamed when complete, so a crash during a save never damages the previous ones.

Multi-GPU / multi-node: run the same command under accelerate, e.g.::

    accelerate launch --multi_gpu --num_processes 4 training/train.py --config training/configs/div2k_x4.json \\
        --stage diffusion

Each process takes its own slice of every global batch (``--train_batch_size`` is per process; the effective batch
is ``train_batch_size * num_processes * gradient_accumulation_steps``), gradients are averaged by DDP, and only the
main process validates, saves and uploads. The recipes' batch sizes are effective sizes for one GPU: divide
``train_batch_size`` by the number of GPUs to keep the paper's batch. Several CPU processes (gloo backend; a test,
not a speed-up) run with ``ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 ...`` (in
accelerate 1.x ``--cpu --num_processes N`` starts N processes only through MPI). Set ``SRADM_TRAIN_DEBUG_DIR`` to a
folder to have every process log the dataset indices and a digest of each batch it trains on (``rank<r>.jsonl``).

Publishing: ``--push_to_hub --hub_model_id user/name`` uploads the output folder (without checkpoints, validation
images and logs) with a model card generated from the repository's ``model_card.md``; a ``README.md`` card is
written into the output folder in any case. A diffusion run's folder also holds the code generated from the package
(``pipeline_sradm.py`` ...), so the upload loads with ``DiffusionPipeline.from_pretrained(repo, trust_remote_code=True)``
where sradm-diffusers is not installed.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

if __package__ in (None, ""):  # run as a script (`accelerate launch training/train.py`): the package's parent folder
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from training import data as sr_data  # noqa: E402
from training import model_card as sr_card  # noqa: E402
from training import train_utils as tu  # noqa: E402

logger = logging.getLogger("sradm.train")

DEBUG_ENV = "SRADM_TRAIN_DEBUG_DIR"
LR_SCHEDULERS = (
    "step", "constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial",
    "piecewise_constant",
)
VALIDATION_SCHEDULERS = ("dpm", "ddim", "ddpm", "unipc")


EXIT_OK, EXIT_WRITE_FAILED, EXIT_USAGE, EXIT_DIVERGED = 0, 1, 2, 3
"""Exit statuses of ``python training/train.py`` (README "Failure behaviour"): 1 a save failed (disk full, no
permission), 2 bad options or data, 3 the loss or weights became NaN/inf, 130/143 SIGINT/SIGTERM."""


# ----------------------------------------------------------------------------------------------------- arguments
class _ArgumentParser(argparse.ArgumentParser):
    """Flag errors become ``ValueError`` (one ``error:`` line, exit status 2) instead of usage text + exit."""

    def error(self, message):
        raise ValueError(f"{message} (see python training/train.py --help)")


def build_parser() -> argparse.ArgumentParser:
    from sradm_diffusers.presets import PRESETS

    p = _ArgumentParser(
        description="Train SRADM (stage 'encoder': RRDB regression; stage 'diffusion': the noise predictor).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--config", type=str, default=None,
                   help="Recipe file (JSON, or YAML with PyYAML) of flag values; command-line flags override it.")
    p.add_argument("--stage", type=str, choices=tu.STAGES, default=None, help="Which network to train.")

    g = p.add_argument_group("data")
    g.add_argument("--dataset_name", type=str, default=None,
                   help=f"Hub dataset id (known: {', '.join(sr_data.HUB_DATASETS)}) or a datasets builder name.")
    g.add_argument("--dataset_config_name", type=str, default=None)
    g.add_argument("--train_data_dir", type=str, default=None,
                   help="Local folder of HR images (imagefolder; train/ test/ sub-folders become splits) or .parquet.")
    g.add_argument("--image_column", type=str, default="image", help="Column holding the HR image.")
    g.add_argument("--train_split", type=str, default="train")
    g.add_argument("--cache_dir", type=str, default=None, help="datasets cache folder.")
    g.add_argument("--max_train_samples", type=int, default=None, help="Use only the first N training images.")
    g.add_argument("--streaming", action=argparse.BooleanOptionalAction, default=False,
                   help="Stream the dataset instead of downloading it (needs --max_train_steps).")
    g.add_argument("--shuffle_buffer_size", type=int, default=1000, help="Shuffle buffer when --streaming.")
    g.add_argument("--preprocess", type=str, choices=("none", "celeba"), default="none",
                   help="'celeba': centre crop 178 and resize to 160 before cropping (the CelebA protocol).")
    g.add_argument("--resolution", type=int, default=160, help="HR training patch size (a multiple of --scale).")
    g.add_argument("--random_flip", action=argparse.BooleanOptionalAction, default=False,
                   help="Random horizontal flips.")
    g.add_argument("--dataloader_num_workers", type=int, default=0)
    g.add_argument("--channels_last", action=argparse.BooleanOptionalAction, default=True,
                   help="Train in channels_last memory format (about 2x faster 3x3 convs on AVX-512 CPUs, faster "
                   "on tensor-core GPUs).")
    g.add_argument("--cache_images", action=argparse.BooleanOptionalAction, default=False,
                   help="Keep decoded training images in memory (small local sets; unused with --extract_images).")
    g.add_argument("--extract_images", action=argparse.BooleanOptionalAction, default=None,
                   help="Decode the training images once into a store beside the datasets cache (--cache_dir) and "
                   "crop from it: same pairs, no per-pair decoding. Default: on unless --streaming or --preprocess "
                   "celeba.")
    g.add_argument("--validation_data_dir", type=str, default=None, help="Local folder of validation HR images.")
    g.add_argument("--validation_split", type=str, default=None,
                   help="Split of the training dataset to validate on (e.g. 'validation', 'test5000', 'test').")
    g.add_argument("--validation_resolution", type=int, default=None,
                   help="Centre-crop size of validation images (default --resolution; 0 = whole images).")

    g = p.add_argument_group("model")
    g.add_argument("--preset", type=str, choices=sorted(PRESETS), default="small", help="Architecture preset.")
    g.add_argument("--scale", type=int, default=None, help="Upscale factor (default: the preset's).")
    g.add_argument("--pretrained_encoder", type=str, default=None,
                   help="Encoder folder from --stage encoder (or a pipeline folder / Hub id); required for "
                   "--stage diffusion, optional initialisation for --stage encoder.")
    g.add_argument("--pretrained_unet", type=str, default=None,
                   help="Initialise --stage diffusion from this U-Net: a U-Net folder, a pipeline folder (its unet) or "
                   "a Hub id. Fine-tunes an existing model; --preset must match it.")
    g.add_argument("--residual_scale", type=float, default=2.0, help="x0 = (HR - up(LR)) * residual_scale.")
    g.add_argument("--loss", type=str, choices=("l1", "l2"), default="l1", help="Noise loss of the diffusion stage.")

    g = p.add_argument_group("optimisation")
    g.add_argument("--output_dir", type=str, default="sradm-model")
    g.add_argument("--seed", type=int, default=0, help="Seed of initialisation, data order, crops and noise.")
    g.add_argument("--train_batch_size", type=int, default=16, help="Batch size per process.")
    g.add_argument("--num_train_epochs", type=int, default=100)
    g.add_argument("--max_train_steps", type=int, default=None, help="Optimizer steps; overrides --num_train_epochs.")
    g.add_argument("--gradient_accumulation_steps", type=int, default=1)
    g.add_argument("--gradient_checkpointing", action=argparse.BooleanOptionalAction, default=False)
    g.add_argument("--learning_rate", type=float, default=2e-4)
    g.add_argument("--lr_scheduler", type=str, choices=LR_SCHEDULERS, default="constant",
                   help="'step' = x --lr_decay_factor every --lr_decay_steps (the reference); others from diffusers.")
    g.add_argument("--lr_warmup_steps", type=int, default=0)
    g.add_argument("--lr_decay_steps", type=int, default=None, help="Decay interval of --lr_scheduler step.")
    g.add_argument("--lr_decay_factor", type=float, default=0.5, help="Decay factor of --lr_scheduler step.")
    g.add_argument("--lr_step_rules", type=str, default=None, help="Rules of --lr_scheduler piecewise_constant.")
    g.add_argument("--adam_beta1", type=float, default=0.9)
    g.add_argument("--adam_beta2", type=float, default=0.999)
    g.add_argument("--adam_weight_decay", type=float, default=0.0)
    g.add_argument("--adam_epsilon", type=float, default=1e-8)
    g.add_argument("--max_grad_norm", type=float, default=1.0, help="Gradient clipping norm (<= 0: off).")
    g.add_argument("--use_ema", action=argparse.BooleanOptionalAction, default=False,
                   help="Keep an EMA of the weights; validation and the saved model use it.")
    g.add_argument("--ema_decay", type=float, default=0.9999)
    g.add_argument("--mixed_precision", type=str, choices=("no", "fp16", "bf16"), default=None,
                   help="Default: accelerate's config.")
    g.add_argument("--allow_tf32", action=argparse.BooleanOptionalAction, default=True,
                   help="TF32 matmuls/convolutions for fp32 on Ampere and newer GPUs (--no-allow_tf32: full fp32).")

    g = p.add_argument_group("checkpoints, validation, logging")
    g.add_argument("--checkpointing_steps", type=int, default=500)
    g.add_argument("--checkpoints_total_limit", type=int, default=None, help="Keep at most this many checkpoints.")
    g.add_argument("--resume_from_checkpoint", type=str, default=None, help="A checkpoint path/name or 'latest'.")
    g.add_argument("--validation_steps", type=int, default=1000, help="Validate every N steps (0: only at the end).")
    g.add_argument("--num_validation_images", type=int, default=4)
    g.add_argument("--validation_inference_steps", type=int, default=20, help="Sampling steps when validating.")
    g.add_argument("--validation_scheduler", type=str, choices=VALIDATION_SCHEDULERS, default="dpm",
                   help="Sampler used when validating the diffusion stage.")
    g.add_argument("--logging_dir", type=str, default="logs", help="Tracker logs, relative to --output_dir.")
    g.add_argument("--logging_steps", type=int, default=50,
                   help="Log the mean loss, learning rate and samples/s every N steps (the only host syncs of the "
                   "loop).")
    g.add_argument("--report_to", type=str, default="tensorboard",
                   help="'tensorboard', 'wandb', 'all' or 'none'.")
    g.add_argument("--tracker_project_name", type=str, default="sradm")

    g = p.add_argument_group("hub")
    g.add_argument("--push_to_hub", action=argparse.BooleanOptionalAction, default=False)
    g.add_argument("--hub_model_id", type=str, default=None)
    g.add_argument("--hub_token", type=str, default=None)
    g.add_argument("--hub_private_repo", action=argparse.BooleanOptionalAction, default=False)
    g.add_argument("--license", type=str, default="apache-2.0", help="License in the model card's metadata.")
    g.add_argument("--model_card_template", type=str, default=None, help="Default: the repository's model_card.md.")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse flags; values from ``--config`` become defaults that the command line overrides."""
    parser = build_parser()
    known, _ = parser.parse_known_args(argv)
    if known.config:
        parser_recipe = tu.load_recipe(known.config, known.stage)
        tu.apply_recipe(parser, parser_recipe, known.config)
    args = parser.parse_args(argv)
    return finalize_args(args)


def finalize_args(args: argparse.Namespace) -> argparse.Namespace:
    """Fill derived defaults and reject inconsistent combinations with messages that name the fix."""
    from sradm_diffusers.presets import PRESETS

    if args.stage is None:
        raise ValueError("Choose the stage with --stage encoder (train the RRDB encoder first) or --stage diffusion.")
    if (args.dataset_name is None) == (args.train_data_dir is None):
        raise ValueError("Give exactly one of --dataset_name (a Hub dataset) and --train_data_dir (local images).")
    if args.scale is None:
        args.scale = PRESETS[args.preset]["upscale_factor"]
    if args.resolution % args.scale:
        raise ValueError(
            f"--resolution {args.resolution} is not a multiple of --scale {args.scale}; use e.g. "
            f"{args.resolution // args.scale * args.scale or args.scale}."
        )
    if args.validation_resolution is None:
        args.validation_resolution = args.resolution
    if args.validation_resolution and args.validation_resolution % args.scale:
        raise ValueError(f"--validation_resolution {args.validation_resolution} is not a multiple of --scale.")
    for name in ("train_batch_size", "gradient_accumulation_steps", "checkpointing_steps", "num_train_epochs",
                 "logging_steps"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}.")
    if args.max_train_steps is not None and args.max_train_steps < 1:
        raise ValueError(
            f"--max_train_steps {args.max_train_steps} trains nothing (the model would be its random initialisation); "
            "use 1 or more, or leave it out to train --num_train_epochs epochs."
        )
    if args.streaming and not args.max_train_steps:
        raise ValueError("--streaming datasets have no known length: give --max_train_steps.")
    if args.lr_scheduler == "step" and not args.lr_decay_steps:
        raise ValueError("--lr_scheduler step needs --lr_decay_steps (the reference halves the LR every 100K/200K).")
    if args.stage == "diffusion" and not args.pretrained_encoder:
        raise ValueError(
            "--stage diffusion needs --pretrained_encoder: the output_dir of a --stage encoder run (or a Hub id)."
        )
    if args.pretrained_unet and args.stage != "diffusion":
        raise ValueError("--pretrained_unet initialises the noise predictor: use it with --stage diffusion.")
    if args.push_to_hub and not args.hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id (e.g. your-name/sradm-div2k-x4).")
    if args.report_to == "none":
        args.report_to = None
    return args


# ----------------------------------------------------------------------------------------------------- models
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


# ----------------------------------------------------------------------------------------------------- losses
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


# ----------------------------------------------------------------------------------------------------- data
def load_training_data(args, accelerator):
    """(training dataset of pairs, its length or None when streaming)."""
    with accelerator.main_process_first():
        dataset = sr_data.load_image_dataset(
            dataset_name=args.dataset_name, dataset_config_name=args.dataset_config_name,
            train_data_dir=args.train_data_dir, split=args.train_split, image_column=args.image_column,
            streaming=args.streaming, cache_dir=args.cache_dir,
        )
        if args.max_train_samples is not None:
            dataset = dataset.take(args.max_train_samples) if args.streaming else dataset.select(
                range(min(args.max_train_samples, len(dataset)))
            )
        # The main process extracts the images once (all cores); the others then open the finished store.
        pairs = sr_data.make_train_dataset(
            dataset, args.resolution, args.scale, image_column=args.image_column, random_flip=args.random_flip,
            preprocess=None if args.preprocess == "none" else args.preprocess, seed=args.seed,
            shuffle_buffer_size=args.shuffle_buffer_size, rank=accelerator.process_index,
            world_size=accelerator.num_processes, cache_images=args.cache_images, extract=args.extract_images,
            cache_dir=args.cache_dir, extract_workers=_cpu_count(),
        )
    return pairs, (None if args.streaming else len(pairs))


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def make_loader(args, train_set, sampler, device) -> torch.utils.data.DataLoader:
    """The training DataLoader. Map-style data: items ``(epoch, index)`` (:class:`data.EpochTaggedSampler`) so the
    worker processes persist across epochs (no respawn, no lost per-worker caches) and still make each epoch's
    crops; host batches pinned on CUDA so the copies overlap compute; workers keep a constant footprint
    (:func:`data.loader_worker_init`)."""
    workers = args.dataloader_num_workers
    return torch.utils.data.DataLoader(
        train_set, batch_size=args.train_batch_size,
        sampler=sr_data.EpochTaggedSampler(sampler) if sampler is not None else None,
        collate_fn=sr_data.collate_pairs, num_workers=workers, pin_memory=device.type == "cuda",
        persistent_workers=workers > 0 and sampler is not None,  # a stream's workers must see set_epoch
        prefetch_factor=4 if workers > 0 else None, worker_init_fn=sr_data.loader_worker_init,
    )


def make_optimizer(params, args, device) -> torch.optim.Optimizer:
    """Adam (the reference's optimizer) with torch's fused kernel where it exists for ``device`` (CUDA; CPU in
    torch >= 2.4), else the multi-tensor (foreach) one; the update rule is the same."""
    kwargs = dict(lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
                  weight_decay=args.adam_weight_decay, eps=args.adam_epsilon)
    params = list(params)
    try:
        return torch.optim.Adam(params, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):  # fused not implemented for this device / torch
        return torch.optim.Adam(params, foreach=True, **kwargs)


class RunningLoss:
    """The losses of the steps since the last log, summed on the device: adding one is not a host sync.

    :meth:`mean` reads it (one sync, at logging intervals). Non-finite losses are caught by ``tu.NonFiniteWatch``,
    checked before every save.
    """

    def __init__(self, device: torch.device):
        self.total = torch.zeros((), device=device)
        self.count = 0

    def add(self, loss: torch.Tensor) -> None:
        self.total += loss.detach().float()
        self.count += 1

    def mean(self, accelerator) -> torch.Tensor:
        """The mean loss over the interval and all processes, as a 0-d device tensor."""
        local = self.total / max(self.count, 1)
        if accelerator.num_processes > 1:
            return accelerator.reduce(local.reshape(1), reduction="mean")[0]
        return local

    def reset(self) -> None:
        self.total.zero_()
        self.count = 0


def load_validation_pairs(args, accelerator) -> tuple[list[dict], str]:
    """Validation pairs (main process only; [] elsewhere or without validation data) and a description."""
    if not accelerator.is_main_process or args.num_validation_images < 1:
        return [], ""
    if args.validation_data_dir:
        source = dict(train_data_dir=args.validation_data_dir, split="train")
        where = f"folder {os.path.basename(os.path.normpath(args.validation_data_dir))}"
    elif args.validation_split:
        source = dict(dataset_name=args.dataset_name, dataset_config_name=args.dataset_config_name,
                      train_data_dir=args.train_data_dir, split=args.validation_split)
        where = f"split {args.validation_split!r} of {args.dataset_name or 'the training folder'}"
    else:
        return [], ""
    dataset = sr_data.load_image_dataset(image_column=args.image_column, streaming=args.streaming,
                                         cache_dir=args.cache_dir, **source)
    pairs = sr_data.make_validation_pairs(
        dataset, args.scale, resolution=args.validation_resolution or None, image_column=args.image_column,
        preprocess=None if args.preprocess == "none" else args.preprocess, max_images=args.num_validation_images,
    )
    crop = f"centre {args.validation_resolution}px crops" if args.validation_resolution else "whole images"
    return pairs, f"{where}, {crop}"


def batches(loader, start_batch: int, streaming: bool):
    """Iterate a DataLoader from batch ``start_batch`` (the sampler already skips for map-style data)."""
    iterator = iter(loader)
    if streaming:
        for _ in range(start_batch):  # a stream cannot seek: read and drop what was already trained on
            next(iterator, None)
    return iterator


# ----------------------------------------------------------------------------------------------------- validation
def _validation_scheduler(name: str):
    """``--validation_scheduler``, built from the package's scheduler table as ``sradm upscale --scheduler`` is."""
    from sradm_diffusers.defaults import make_scheduler
    from sradm_diffusers.presets import default_scheduler

    return make_scheduler(name, default_scheduler().config)


@torch.no_grad()
def run_validation(args, inner, frozen_encoder, pairs, device, step: int, accelerator=None) -> dict[str, float]:
    """SR of every validation pair; returns mean metrics and saves ``validation/step-<step>.png``.

    Metrics (``sradm_diffusers.metrics``): PSNR-Y with ``scale`` pixels cropped and LR-PSNR of the SR image, plus
    the bicubic PSNR-Y for reference. LR inputs are the pairs' LR rounded to uint8 (as a saved LR image).
    """
    from sradm_diffusers import SRADMPipeline, imresize
    from sradm_diffusers.metrics.quality import lr_psnr, psnr_y, to_uint8

    was_training = inner.training
    inner.eval()
    pipe = None
    if args.stage == "diffusion":
        pipe = SRADMPipeline(
            unet=inner, lr_encoder=frozen_encoder, scheduler=_validation_scheduler(args.validation_scheduler),
            upscale_factor=args.scale, residual_scale=args.residual_scale,
        )
        pipe.set_progress_bar_config(disable=True)
    scores = {"psnr_y": [], "lr_psnr": [], "psnr_y_bicubic": []}
    rows = []
    for i, pair in enumerate(pairs):
        lr_u8 = to_uint8(pair["lr"][None])
        hr_u8 = to_uint8(pair["hr"][None])
        lr = (lr_u8.float() / 127.5 - 1.0).to(device)
        if pipe is not None:
            generator = torch.Generator().manual_seed(tu.derive_seed(args.seed, "validation", i))
            sr = pipe(lr_u8.float().to(device) / 255.0, num_inference_steps=args.validation_inference_steps,
                      generator=generator, output_type="pt").images
            sr_u8 = to_uint8(sr.cpu(), value_range=(0.0, 1.0))
        else:
            sr_u8 = to_uint8(inner.upscale(lr).clamp(-1, 1).float().cpu())
        bicubic_u8 = to_uint8(imresize(lr.cpu(), args.scale).clamp(-1, 1))
        scores["psnr_y"].append(float(psnr_y(sr_u8, hr_u8, args.scale)[0]))
        scores["psnr_y_bicubic"].append(float(psnr_y(bicubic_u8, hr_u8, args.scale)[0]))
        scores["lr_psnr"].append(float(lr_psnr(sr_u8, lr_u8, args.scale)[0]))
        rows.append([t[0].permute(1, 2, 0).numpy() for t in (bicubic_u8, sr_u8, hr_u8)])
    if was_training:
        inner.train()

    def mean(values):
        finite = [v for v in values if math.isfinite(v)]
        return float(np.mean(finite)) if finite else float("inf")

    metrics = {key: mean(values) for key, values in scores.items()}
    if rows:
        folder = os.path.join(args.output_dir, "validation")
        os.makedirs(folder, exist_ok=True)
        grid = tu.image_grid(rows)
        grid.save(os.path.join(folder, f"step-{step:07d}.png"))
        if accelerator is not None:
            for tracker in accelerator.trackers:
                if tracker.name == "tensorboard":
                    tracker.writer.add_image("validation/bicubic|sr|hr", np.asarray(grid), step, dataformats="HWC")
    return metrics


# ----------------------------------------------------------------------------------------------------- main
def _debug_writer(accelerator):
    folder = os.environ.get(DEBUG_ENV)
    if not folder:
        return None
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"rank{accelerator.process_index}.jsonl")
    return open(path, "a", encoding="utf-8")


def _read_state(checkpoint: str, rank: int) -> dict[str, Any]:
    """This process's ``training_state_<rank>.json`` of ``checkpoint``: a checkpoint without it cannot continue
    the run (the data position and counters would silently restart)."""
    path = os.path.join(checkpoint, f"training_state_{rank}.json")
    if not os.path.isfile(path):
        raise ValueError(
            f"{path} is missing: {os.path.basename(checkpoint)} cannot be resumed exactly (data position and "
            "counters). Resume from another checkpoint, or with the number of processes it was saved with."
        )
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run one training stage; returns a summary dict (also written to ``output_dir/train_summary.json``)."""
    args = parse_args(argv)

    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed
    from diffusers.training_utils import EMAModel
    from tqdm.auto import tqdm

    from sradm_diffusers import SRADMPipeline
    from sradm_diffusers.presets import default_scheduler

    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if args.report_to in ("tensorboard", "all"):
        from accelerate.utils import is_tensorboard_available

        if not is_tensorboard_available():
            raise ValueError("--report_to tensorboard needs tensorboard: pip install 'sradm-diffusers[train]', "
                             "or pass --report_to none.")

    logging_dir = os.path.join(args.output_dir, args.logging_dir)
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=args.report_to,
        project_config=ProjectConfiguration(project_dir=args.output_dir, logging_dir=logging_dir),
    )
    if not accelerator.is_main_process:
        logger.setLevel(logging.WARNING)
    if accelerator.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)
        tu.remove_unfinished_checkpoints(args.output_dir)
        recovered = tu.recover_export(args.output_dir)
        if recovered:
            logger.warning("%s: %s.", args.output_dir, recovered)
    accelerator.wait_for_everyone()
    if torch.cuda.is_available():
        # TF32 only changes fp32 matmuls/convolutions on Ampere and newer; fixed-size crops let cuDNN pick once.
        torch.backends.cuda.matmul.allow_tf32 = args.allow_tf32
        torch.backends.cudnn.allow_tf32 = args.allow_tf32
        torch.backends.cudnn.benchmark = True
    set_seed(args.seed)
    device = accelerator.device
    rank, world = accelerator.process_index, accelerator.num_processes

    # Models ---------------------------------------------------------------------------------------------------
    inner, model, frozen_encoder = build_training_models(args)
    model_cls = type(inner)
    subfolder = "encoder" if args.stage == "encoder" else "unet"
    if args.gradient_checkpointing:
        inner.enable_gradient_checkpointing()
    if frozen_encoder is not None:
        frozen_encoder.to(device)
    noise_scheduler = default_scheduler()
    ema = None
    if args.use_ema:
        ema = EMAModel(inner.parameters(), decay=args.ema_decay, model_cls=model_cls, model_config=inner.config)
        ema.to(device)

    def save_model_hook(models, weights, output_dir):
        if accelerator.is_main_process:
            for m in models:
                accelerator.unwrap_model(m).inner.save_pretrained(os.path.join(output_dir, subfolder))
                weights.pop()
            if ema is not None:
                ema.save_pretrained(os.path.join(output_dir, "ema"))

    def load_model_hook(models, input_dir):
        if ema is not None:
            with warnings.catch_warnings():  # diffusers' own EMAModel.from_pretrained trips its from_config deprecation
                warnings.simplefilter("ignore", FutureWarning)
                loaded = EMAModel.from_pretrained(os.path.join(input_dir, "ema"), model_cls)
            ema.load_state_dict(loaded.state_dict())
            ema.to(device)
            del loaded
        while models:
            m = models.pop()
            loaded = model_cls.from_pretrained(os.path.join(input_dir, subfolder))
            accelerator.unwrap_model(m).inner.load_state_dict(loaded.state_dict())
            del loaded

    accelerator.register_save_state_pre_hook(save_model_hook)
    accelerator.register_load_state_pre_hook(load_model_hook)

    optimizer = make_optimizer(inner.parameters(), args, device)

    # Data -----------------------------------------------------------------------------------------------------
    train_set, num_samples = load_training_data(args, accelerator)
    sampler = None
    if num_samples is not None:
        sampler = tu.ShardedEpochSampler(num_samples, args.train_batch_size, world, rank, seed=args.seed)
    loader = make_loader(args, train_set, sampler, device)
    validation_pairs, validation_source = load_validation_pairs(args, accelerator)

    if sampler is not None:
        batches_per_epoch = sampler.batches_per_epoch
        updates_per_epoch = math.ceil(batches_per_epoch / args.gradient_accumulation_steps)
        if args.max_train_steps is None:
            args.max_train_steps = args.num_train_epochs * updates_per_epoch
        args.num_train_epochs = math.ceil(args.max_train_steps / updates_per_epoch)
    else:
        batches_per_epoch = None
    lr_scheduler = tu.build_lr_scheduler(
        args.lr_scheduler, optimizer, warmup_steps=args.lr_warmup_steps, total_steps=args.max_train_steps,
        decay_steps=args.lr_decay_steps, decay_factor=args.lr_decay_factor, step_rules=args.lr_step_rules,
        num_processes=world,
    )
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    model, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)

    if accelerator.is_main_process:
        accelerator.init_trackers(args.tracker_project_name, config=tu.scalar_config(args))
        with open(os.path.join(args.output_dir, "training_args.json"), "w", encoding="utf-8") as handle:
            json.dump({k: v for k, v in vars(args).items() if k != "hub_token"}, handle, indent=2, default=str)

    # Resume ---------------------------------------------------------------------------------------------------
    global_step, epoch, batch_in_epoch, skipped_local, seen_local = 0, 0, 0, 0, 0
    checkpoint = tu.resolve_resume_checkpoint(args.resume_from_checkpoint, args.output_dir)
    if args.resume_from_checkpoint and checkpoint is None:
        logger.info("No complete checkpoint in %s; starting a new run.", args.output_dir)
    state_options = {name: getattr(args, name) for name in tu.STATE_OPTIONS if hasattr(args, name)}
    state_options["num_processes"] = world
    if checkpoint is not None:
        logger.info("Resuming from %s", checkpoint)
        state = _read_state(checkpoint, rank)
        tu.check_resume_options(state, state_options, checkpoint)
        try:
            accelerator.load_state(checkpoint)
        except Exception as error:  # noqa: BLE001 - any unreadable part of the checkpoint
            raise ValueError(
                f"cannot resume from {checkpoint}: {' '.join(str(error).split())[:300]}. The checkpoint is damaged; "
                "delete it (then 'latest' takes the previous one) or pass an older one."
            ) from error
        global_step = state.get("global_step", tu.checkpoint_step(checkpoint))
        if state.get("seed", args.seed) != args.seed:
            logger.warning("Resuming with --seed %s but the checkpoint was trained with %s: the data order changes.",
                           args.seed, state.get("seed"))
        if "epoch" in state:
            epoch, batch_in_epoch = state["epoch"], state["batch_in_epoch"]
        elif batches_per_epoch:
            epoch, batch_in_epoch = divmod(global_step * args.gradient_accumulation_steps, batches_per_epoch)
        skipped_local, seen_local = state.get("skipped", 0), state.get("seen", 0)

    total_batch = args.train_batch_size * world * args.gradient_accumulation_steps
    logger.info(
        "***** %s stage: preset %s, %dx, %s training images, %d steps, batch %d (%d per process x %d processes x %d "
        "accumulation), resolution %d *****", args.stage, args.preset, args.scale, num_samples or "streamed",
        args.max_train_steps, total_batch, args.train_batch_size, world, args.gradient_accumulation_steps,
        args.resolution,
    )
    debug = _debug_writer(accelerator)
    progress = tqdm(total=args.max_train_steps, initial=global_step, desc="steps",
                    disable=not accelerator.is_local_main_process)
    last_metrics: dict[str, float] = {}
    last_validation: dict[str, Any] = {}

    def validate(step: int) -> None:
        nonlocal last_metrics, last_validation
        if not validation_pairs:
            return
        if ema is not None:
            ema.store(inner.parameters())
            ema.copy_to(inner.parameters())
        started = time.perf_counter()
        metrics = run_validation(args, inner, frozen_encoder, validation_pairs, device, step, accelerator)
        if ema is not None:
            ema.restore(inner.parameters())
        accelerator.log({f"val/{k}": v for k, v in metrics.items()}, step=step)
        logger.info("validation at step %d (%.1fs): %s", step, time.perf_counter() - started,
                    ", ".join(f"{k}={v:.2f}" for k, v in metrics.items()))
        last_metrics = metrics
        last_validation = {"step": step, "num_images": len(validation_pairs), "source": validation_source}
        if args.stage == "diffusion":
            last_validation["sampler"] = f"{args.validation_scheduler} with {args.validation_inference_steps} steps"

    def checkpoint_state() -> dict[str, Any]:
        return {"global_step": global_step, "epoch": epoch, "batch_in_epoch": batch_in_epoch,
                "skipped": skipped_local, "seen": seen_local, "seed": args.seed, "options": state_options}

    # Loop -----------------------------------------------------------------------------------------------------
    watch = tu.NonFiniteWatch(device)

    def check_finite() -> None:  # before every save (all processes): a NaN model is never written
        problem = watch.problem(inner.parameters(), accelerator)
        if problem is not None:
            progress.close()
            raise tu.TrainingDivergedError(
                tu.divergence_message(problem, global_step, args.output_dir, args.learning_rate)
            )

    model.train()
    running_loss, steps_since_log = RunningLoss(device), 0
    step_started, done = time.perf_counter(), global_step >= args.max_train_steps
    gen_device = device if device.type == "cuda" else torch.device("cpu")
    while not done:
        if sampler is not None:
            sampler.set_position(epoch, batch_in_epoch)
        train_set.set_epoch(epoch)
        iterator = batches(loader, batch_in_epoch, sampler is None)
        epoch_start_batch, steps_in_epoch = batch_in_epoch, 0
        while not done:
            batch = next(iterator, None)
            if sampler is None and world > 1:  # streams may split unevenly: stop the epoch when any process is dry
                have = torch.tensor([0.0 if batch is None else 1.0], device=device)
                if accelerator.reduce(have, reduction="sum").item() < world:
                    batch = None
            if batch is None:
                break
            skipped_local += batch["num_skipped"]
            if world > 1:
                has_pairs = torch.tensor([0.0 if batch["hr"] is None else 1.0], device=device)
                any_pairs = accelerator.reduce(has_pairs, reduction="sum").item() > 0
            else:
                any_pairs = batch["hr"] is not None
            if not any_pairs:
                batch_in_epoch += 1  # every image of the global batch was skipped: not a step, no update
                continue
            steps_in_epoch += 1
            if batch["hr"] is None:  # only this process's images were skipped: a zero-weight dummy keeps DDP in step
                weight = 0.0
                lr = torch.zeros(1, 3, args.resolution // args.scale, args.resolution // args.scale, device=device)
                hr = torch.zeros(1, 3, args.resolution, args.resolution, device=device)
            else:
                weight = 1.0
                lr = batch["lr"].to(device, non_blocking=True)
                hr = batch["hr"].to(device, non_blocking=True)
                if args.channels_last:
                    lr, hr = lr.contiguous(memory_format=torch.channels_last), hr.contiguous(
                        memory_format=torch.channels_last)
                seen_local += hr.shape[0]
            if debug is not None:
                debug.write(json.dumps({"rank": rank, "epoch": epoch, "batch": batch_in_epoch, "step": global_step,
                                        "indices": batch["index"].tolist(), "digest": tu.tensor_digest(hr)}) + "\n")
                debug.flush()
            generator = torch.Generator(device=gen_device).manual_seed(
                tu.derive_seed(args.seed, "noise", rank, epoch, batch_in_epoch)
            )
            batch_in_epoch += 1
            with accelerator.accumulate(model):
                if args.stage == "encoder":
                    loss = encoder_loss(model, lr, hr)
                else:
                    with accelerator.autocast():
                        loss = diffusion_loss(model, frozen_encoder, noise_scheduler, lr, hr, generator,
                                              args.residual_scale, args.loss)
                loss = loss * weight
                watch.observe(loss, global_step + 1)
                running_loss.add(loss)
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)

            if not accelerator.sync_gradients:
                continue
            if ema is not None:
                ema.step(inner.parameters())
            global_step += 1
            steps_since_log += 1
            progress.update(1)
            done = global_step >= args.max_train_steps
            if global_step % args.logging_steps == 0 or done:
                # The loop's only host sync: the mean loss of the interval (all processes, all micro-batches).
                mean_loss = running_loss.mean(accelerator).item()
                running_loss.reset()
                elapsed = time.perf_counter() - step_started
                step_started = time.perf_counter()
                logs = {"train/loss": mean_loss, "train/lr": lr_scheduler.get_last_lr()[0],
                        "train/samples_per_sec": total_batch * steps_since_log / max(elapsed, 1e-9)}
                steps_since_log = 0
                accelerator.log(logs, step=global_step)
                progress.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{logs['train/lr']:.2e}",
                                     samples_s=f"{logs['train/samples_per_sec']:.1f}")
            tu.crash_point(f"step-{global_step}")
            if global_step % args.checkpointing_steps == 0:
                check_finite()
                path = tu.save_checkpoint_atomic(accelerator, args.output_dir, global_step,
                                                 args.checkpoints_total_limit, extra_state=checkpoint_state())
                logger.info("Saved %s", path)
            if accelerator.is_main_process and args.validation_steps and global_step % args.validation_steps == 0:
                validate(global_step)
        if not done:
            if steps_in_epoch == 0 and epoch_start_batch == 0:
                progress.close()
                # An epoch repeats a data set smaller than one global batch to fill it: count images, not visits.
                visits = batches_per_epoch * args.train_batch_size * world if sampler is not None else None
                skipped = skipped_local if visits is None else min(num_samples, visits)
                raise ValueError(
                    f"No training pair in a whole epoch: {skipped} image(s) were skipped (unreadable, or smaller "
                    f"than --resolution {args.resolution} px) and none was usable. Nothing was trained or saved; check "
                    "--train_data_dir / --dataset_name and --resolution."
                )
            epoch, batch_in_epoch = epoch + 1, 0
    check_finite()
    progress.close()
    if debug is not None:
        debug.close()

    # Export ---------------------------------------------------------------------------------------------------
    accelerator.wait_for_everyone()
    counts = accelerator.reduce(torch.tensor([float(skipped_local), float(seen_local)], device=device), "sum")
    skipped_total, seen_total = int(counts[0].item()), int(counts[1].item())
    logger.info("Skipped %d image(s) that could not become training pairs (unreadable or smaller than %d px); "
                "trained on %d pairs.", skipped_total, args.resolution, seen_total)
    summary: dict[str, Any] = {"stage": args.stage, "global_step": global_step, "skipped_images": skipped_total,
                               "trained_pairs": seen_total, "num_processes": world}
    if accelerator.is_main_process:
        if validation_pairs and last_validation.get("step") != global_step:
            validate(global_step)
        if ema is not None:
            ema.store(inner.parameters())
            ema.copy_to(inner.parameters())
        num_parameters = sum(p.numel() for p in inner.parameters())
        if args.stage != "encoder":
            num_parameters += sum(p.numel() for p in frozen_encoder.parameters())
        summary["metrics"] = last_metrics
        values = sr_card.card_values(
            args, stage=args.stage, global_step=global_step, num_parameters=num_parameters, num_processes=world,
            metrics=last_metrics or None, validation=last_validation or None,
        )
        template = sr_card.load_template(args.model_card_template)

        def write_export(folder: str) -> None:
            if args.stage == "encoder":
                accelerator.unwrap_model(model).inner.save_pretrained(folder)
            else:
                SRADMPipeline(
                    unet=accelerator.unwrap_model(model).inner, lr_encoder=frozen_encoder,
                    scheduler=default_scheduler(), upscale_factor=args.scale, residual_scale=args.residual_scale,
                ).save_pretrained(folder)
            sr_card.write_model_card(folder, values, template)
            with open(os.path.join(folder, "train_summary.json"), "w", encoding="utf-8") as handle:
                json.dump(summary, handle, indent=2)

        # Written beside the old model and swapped in: a crash leaves the old or the new model, never half of one.
        tu.export_atomic(args.output_dir, write_export)
        if ema is not None:
            ema.restore(inner.parameters())
        if args.push_to_hub:
            repo_id = sr_card.push_to_hub(args.output_dir, args.hub_model_id, token=args.hub_token,
                                          private=args.hub_private_repo or None)
            logger.info("Uploaded %s to https://huggingface.co/%s", args.output_dir, repo_id)
            summary["repo_id"] = repo_id
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like SIGINT so that the same cleanup (unfinished checkpoint or export folders) runs."""


def _raise_terminated(signum, frame):
    raise Terminated()


def _fail(message: str, status: int) -> None:
    """Print the one-line error and exit. Under ``accelerate launch`` (which then adds its own CalledProcessError
    traceback, unless it was given ``--quiet``) a second line says that this line is the cause."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):  # an open progress bar would redraw itself after the error
        bar.close()
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    if "ACCELERATE_DYNAMO_BACKEND" in os.environ:  # set by accelerate launch for the script it starts
        print(f"error: training/train.py exited with status {status} for the reason above; a launcher traceback "
              "that follows only repeats it (accelerate launch --quiet leaves it out).", file=sys.stderr)
    sys.stderr.flush()
    sys.exit(status)


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        main()
    except ValueError as error:
        _fail(str(error), EXIT_USAGE)
    except tu.TrainingDivergedError as error:
        _fail(str(error), EXIT_DIVERGED)
    except OSError as error:  # a save failed: full disk (tu.DiskFullError), no permission, ...
        _fail(str(error), EXIT_WRITE_FAILED)
    except KeyboardInterrupt as error:
        signal_name = "SIGTERM" if isinstance(error, Terminated) else "SIGINT"
        print(f"error: stopped by {signal_name}; continue with --resume_from_checkpoint latest", file=sys.stderr)
        sys.exit(143 if isinstance(error, Terminated) else 130)
