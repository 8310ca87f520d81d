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
(``pipeline_sradm.py`` ...), so the upload loads with
``DiffusionPipeline.from_pretrained(repo, trust_remote_code=True)`` where sradm-diffusers is not installed.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import Any

import torch

if __package__ in (None, ""):  # run as a script (`accelerate launch training/train.py`): the package's parent folder
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The names below are this module's API since 0.1 (tests, benchmarks and scripts use them as `train.<name>`); they
# live in the modules of one idea each that `main` orchestrates.
from training.args import (  # noqa: E402
    LR_SCHEDULERS, VALIDATION_SCHEDULERS, build_parser, finalize_args, parse_args,
)
from training.checkpoints import register_model_hooks  # noqa: E402
from training.divergence import TrainingDivergedError  # noqa: E402
from training.ema import make_ema  # noqa: E402
from training.finish import finish_run  # noqa: E402
from training.loader import batches, load_training_data, make_loader  # noqa: E402
from training.loop import DEBUG_ENV, RunningLoss, TrainData, Trainer  # noqa: E402
from training.losses import diffusion_loss, encoder_loss  # noqa: E402
from training.models import (  # noqa: E402
    ConditionedUNet, EncoderUpscaler, build_training_models, check_encoder, load_encoder, load_unet,
)
from training.optim import build_lr_scheduler, make_optimizer  # noqa: E402
from training.resume import read_state, resume_position, run_options  # noqa: E402
from training.run_setup import make_accelerator, plan_steps, start_trackers  # noqa: E402
from training.sampler import ShardedEpochSampler  # noqa: E402
from training.validation import Validator, load_validation_pairs, run_validation, validation_scheduler  # noqa: E402

from sradm_diffusers.commands.runtime import Terminated, raise_terminated  # noqa: E402

_validation_scheduler = validation_scheduler  # the 0.1 name
_read_state = read_state  # the 0.1 name

__all__ = [
    "EXIT_OK", "EXIT_WRITE_FAILED", "EXIT_USAGE", "EXIT_DIVERGED", "DEBUG_ENV", "LR_SCHEDULERS",
    "VALIDATION_SCHEDULERS", "build_parser", "parse_args", "finalize_args", "main", "EncoderUpscaler",
    "ConditionedUNet", "load_encoder", "load_unet", "check_encoder", "build_training_models", "encoder_loss",
    "diffusion_loss", "load_training_data", "make_loader", "make_optimizer", "RunningLoss", "load_validation_pairs",
    "batches", "run_validation",
]

EXIT_OK, EXIT_WRITE_FAILED, EXIT_USAGE, EXIT_DIVERGED = 0, 1, 2, 3
"""Exit statuses of ``python training/train.py`` (README "Failure behaviour"): 1 a save failed (disk full, no
permission), 2 bad options or data, 3 the loss or weights became NaN/inf, 130/143 SIGINT/SIGTERM."""


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run one training stage; returns a summary dict (also written to ``output_dir/train_summary.json``).

    The stages of a run, each in its module: flags (:mod:`training.args`), accelerator (:mod:`training.run_setup`),
    models and optimizer, data, validation, resuming (:mod:`training.resume`), the loop (:mod:`training.loop`) and
    the export (:mod:`training.finish`).
    """
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    accelerator = make_accelerator(args)
    device, world = accelerator.device, accelerator.num_processes

    inner, model, frozen_encoder = build_training_models(args)
    if args.gradient_checkpointing:
        inner.enable_gradient_checkpointing()
    if frozen_encoder is not None:
        frozen_encoder.to(device)
    ema = make_ema(inner, args, device)
    register_model_hooks(accelerator, type(inner), "encoder" if args.stage == "encoder" else "unet", ema)
    optimizer = make_optimizer(inner.parameters(), args, device)

    train_set, num_samples = load_training_data(args, accelerator)
    sampler = None
    if num_samples is not None:
        sampler = ShardedEpochSampler(num_samples, args.train_batch_size, world, accelerator.process_index,
                                      seed=args.seed)
    data = TrainData(train_set, make_loader(args, train_set, sampler, device), sampler, num_samples,
                     batches_per_epoch=plan_steps(args, sampler))
    validator = Validator(args, inner, frozen_encoder, ema, accelerator, *load_validation_pairs(args, accelerator))

    lr_scheduler = build_lr_scheduler(
        args.lr_scheduler, optimizer, warmup_steps=args.lr_warmup_steps, total_steps=args.max_train_steps,
        decay_steps=args.lr_decay_steps, decay_factor=args.lr_decay_factor, step_rules=args.lr_step_rules,
        num_processes=world,
    )
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    model, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
    start_trackers(accelerator, args)

    options = run_options(args, world)
    position = resume_position(args, accelerator, options, data.batches_per_epoch)
    Trainer(args, accelerator, model, inner, frozen_encoder, ema, optimizer, lr_scheduler, data, validator,
            position, options).run()
    return finish_run(args, accelerator, inner, frozen_encoder, ema, validator, position)


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


def run_script() -> None:
    """``python training/train.py``: :func:`main` with one ``error:`` line and the exit statuses of :data:`EXIT_OK`
    ... instead of a traceback; SIGTERM stops like SIGINT (exit 143 / 130)."""
    signal.signal(signal.SIGTERM, raise_terminated)
    try:
        main()
    except ValueError as error:
        _fail(str(error), EXIT_USAGE)
    except TrainingDivergedError as error:
        _fail(str(error), EXIT_DIVERGED)
    except OSError as error:  # a save failed: full disk (DiskFullError), no permission, ...
        _fail(str(error), EXIT_WRITE_FAILED)
    except KeyboardInterrupt as error:
        signal_name = "SIGTERM" if isinstance(error, Terminated) else "SIGINT"
        print(f"error: stopped by {signal_name}; continue with --resume_from_checkpoint latest", file=sys.stderr)
        sys.exit(143 if isinstance(error, Terminated) else 130)


if __name__ == "__main__":
    run_script()
