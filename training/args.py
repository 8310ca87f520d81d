"""The flags of ``training/train.py``: the parser, ``--config`` recipes as its defaults, checks that name the fix.

:func:`build_parser` defines the flags in groups (data, model, optimisation, checkpoints/validation/logging, hub);
:func:`parse_args` applies a recipe file (:mod:`training.recipes`) under the command line; :func:`finalize_args`
fills derived defaults (``--scale`` from the preset, ``--validation_resolution``) and rejects inconsistent
combinations with a ``ValueError`` (exit status 2 under ``training/train.py``).
"""

from __future__ import annotations

import argparse

from training.recipes import STAGES, apply_recipe, load_recipe
from training.sources import HUB_DATASETS

LR_SCHEDULERS = (
    "step", "constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial",
    "piecewise_constant",
)
VALIDATION_SCHEDULERS = ("dpm", "ddim", "ddpm", "unipc")


class _ArgumentParser(argparse.ArgumentParser):
    """Flag errors become ``ValueError`` (one ``error:`` line, exit status 2) instead of usage text + exit."""

    def error(self, message):
        raise ValueError(f"{message} (see python training/train.py --help)")


def build_parser() -> argparse.ArgumentParser:
    """The parser of every flag; ``--config`` values are applied on top of it by :func:`parse_args`."""
    p = _ArgumentParser(
        description="Train SRADM (stage 'encoder': RRDB regression; stage 'diffusion': the noise predictor).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--config", type=str, default=None,
                   help="Recipe file (JSON, or YAML with PyYAML) of flag values; command-line flags override it.")
    p.add_argument("--stage", type=str, choices=STAGES, default=None, help="Which network to train.")
    _add_data_flags(p.add_argument_group("data"))
    _add_model_flags(p.add_argument_group("model"))
    _add_optimisation_flags(p.add_argument_group("optimisation"))
    _add_monitoring_flags(p.add_argument_group("checkpoints, validation, logging"))
    _add_hub_flags(p.add_argument_group("hub"))
    return p


def _add_data_flags(g) -> None:
    g.add_argument("--dataset_name", type=str, default=None,
                   help=f"Hub dataset id (known: {', '.join(HUB_DATASETS)}) or a datasets builder name.")
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


def _add_model_flags(g) -> None:
    from sradm_diffusers.presets import PRESETS

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


def _add_optimisation_flags(g) -> None:
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


def _add_monitoring_flags(g) -> None:
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


def _add_hub_flags(g) -> None:
    g.add_argument("--push_to_hub", action=argparse.BooleanOptionalAction, default=False)
    g.add_argument("--hub_model_id", type=str, default=None)
    g.add_argument("--hub_token", type=str, default=None)
    g.add_argument("--hub_private_repo", action=argparse.BooleanOptionalAction, default=False)
    g.add_argument("--license", type=str, default="apache-2.0", help="License in the model card's metadata.")
    g.add_argument("--model_card_template", type=str, default=None, help="Default: the repository's model_card.md.")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse flags; values from ``--config`` become defaults that the command line overrides."""
    parser = build_parser()
    known, _ = parser.parse_known_args(argv)
    if known.config:
        parser_recipe = load_recipe(known.config, known.stage)
        apply_recipe(parser, parser_recipe, known.config)
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
