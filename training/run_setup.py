"""What a run sets up before its first step: the accelerator, the number of steps, the trackers.

- :func:`make_accelerator`: ``accelerate``'s ``Accelerator`` for the flags, the output folder cleaned of what a
  killed run left (unfinished checkpoints, an interrupted export), TF32/cuDNN settings and the global seed.
- :func:`plan_steps`: ``--max_train_steps`` / ``--num_train_epochs`` made consistent with the data set's length.
- :func:`start_trackers`: TensorBoard / W&B with the flags as scalars, and ``output_dir/training_args.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
from typing import Any

import torch

from training.atomic_export import recover_export
from training.checkpoints import remove_unfinished_checkpoints

logger = logging.getLogger("sradm.train")


def make_accelerator(args):
    """The run's ``Accelerator`` (gradient accumulation, mixed precision, trackers, ``output_dir/logging_dir``).

    The main process also creates ``--output_dir`` and removes what a killed run left in it; every process then
    waits for it. Raises ``ValueError`` when ``--report_to`` asks for TensorBoard and it is not installed.
    """
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed

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
        remove_unfinished_checkpoints(args.output_dir)
        recovered = recover_export(args.output_dir)
        if recovered:
            logger.warning("%s: %s.", args.output_dir, recovered)
    accelerator.wait_for_everyone()
    if torch.cuda.is_available():
        # TF32 only changes fp32 matmuls/convolutions on Ampere and newer; fixed-size crops let cuDNN pick once.
        torch.backends.cuda.matmul.allow_tf32 = args.allow_tf32
        torch.backends.cudnn.allow_tf32 = args.allow_tf32
        torch.backends.cudnn.benchmark = True
    set_seed(args.seed)
    return accelerator


def plan_steps(args, sampler) -> int | None:
    """Batches per epoch of each process (None for a stream); sets ``args.max_train_steps`` from
    ``--num_train_epochs`` when it is not given, and ``args.num_train_epochs`` to the epochs the steps take."""
    if sampler is None:
        return None
    batches_per_epoch = sampler.batches_per_epoch
    updates_per_epoch = math.ceil(batches_per_epoch / args.gradient_accumulation_steps)
    if args.max_train_steps is None:
        args.max_train_steps = args.num_train_epochs * updates_per_epoch
    args.num_train_epochs = math.ceil(args.max_train_steps / updates_per_epoch)
    return batches_per_epoch


def start_trackers(accelerator, args) -> None:
    """Main process: start the trackers with the flags as their config and write ``training_args.json`` (without
    ``--hub_token``)."""
    if not accelerator.is_main_process:
        return
    accelerator.init_trackers(args.tracker_project_name, config=scalar_config(args))
    with open(os.path.join(args.output_dir, "training_args.json"), "w", encoding="utf-8") as handle:
        json.dump({k: v for k, v in vars(args).items() if k != "hub_token"}, handle, indent=2, default=str)


def scalar_config(args: argparse.Namespace) -> dict[str, Any]:
    """The run's flags as a flat dict of str/int/float/bool (what trackers such as TensorBoard accept)."""
    out = {}
    for key, value in sorted(vars(args).items()):
        if key == "hub_token":
            continue
        if isinstance(value, (bool, int, float, str)) and not (isinstance(value, float) and math.isnan(value)):
            out[key] = value
        else:
            out[key] = str(value)
    return out
