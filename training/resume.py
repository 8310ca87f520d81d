"""Resuming a run exactly: where each process stands (:class:`Position`), the options a checkpoint fixes, and
:func:`resume_position`, which loads ``--resume_from_checkpoint`` and returns the position to continue from (same
batches, same noise as the uninterrupted run)."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any

from training.checkpoints import checkpoint_step, resolve_resume_checkpoint

STATE_OPTIONS = ("stage", "preset", "scale", "resolution", "train_batch_size", "gradient_accumulation_steps",
                 "num_processes", "use_ema")
"""Options a resumed run must share with its checkpoint: they fix the data order, the meaning of a step or the
layout of the saved state."""

logger = logging.getLogger("sradm.train")


@dataclass
class Position:
    """Where one process's run stands; saved in every checkpoint as ``training_state_<rank>.json``.

    Attributes:
        global_step: optimizer steps done.
        epoch, batch_in_epoch: the next batch of this process's data order.
        skipped, seen: images this process skipped (unreadable or too small) and pairs it trained on so far.
    """

    global_step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    skipped: int = 0
    seen: int = 0

    def state(self, seed: int, options: dict[str, Any]) -> dict[str, Any]:
        """The JSON of ``training_state_<rank>.json``: the position, the run's seed and its :func:`run_options`."""
        return {"global_step": self.global_step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                "skipped": self.skipped, "seen": self.seen, "seed": seed, "options": options}


def run_options(args, num_processes: int) -> dict[str, Any]:
    """This run's values of :data:`STATE_OPTIONS`."""
    options = {name: getattr(args, name) for name in STATE_OPTIONS if hasattr(args, name)}
    options["num_processes"] = num_processes
    return options


def check_resume_options(state: dict[str, Any], options: dict[str, Any], checkpoint: str) -> None:
    """Refuse to resume when an option of :data:`STATE_OPTIONS` differs from the checkpoint's (``state["options"]``).

    Raises:
        ValueError: naming the option, both values and the fix.
    """
    saved = state.get("options", {})
    for name in STATE_OPTIONS:
        if name in saved and name in options and saved[name] != options[name]:
            flag = "the number of processes" if name == "num_processes" else f"--{name}"
            raise ValueError(
                f"{os.path.basename(os.path.normpath(checkpoint))} was saved with {flag} {saved[name]!r} but this run "
                f"has {options[name]!r}: the resumed run would not continue the same training. Resume with {flag} "
                f"{saved[name]!r}, or start a new run in another --output_dir."
            )


def read_state(checkpoint: str, rank: int) -> dict[str, Any]:
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


def resume_position(args, accelerator, options: dict[str, Any], batches_per_epoch: int | None) -> Position:
    """Load ``--resume_from_checkpoint`` into the prepared models, optimizer and schedule (``accelerator.load_state``)
    and return the position it saved; a fresh :class:`Position` when there is nothing to resume.

    Raises:
        ValueError: the checkpoint was saved with other :data:`STATE_OPTIONS`, lacks this process's state, or is
            damaged.
    """
    checkpoint = resolve_resume_checkpoint(args.resume_from_checkpoint, args.output_dir)
    if args.resume_from_checkpoint and checkpoint is None:
        logger.info("No complete checkpoint in %s; starting a new run.", args.output_dir)
    if checkpoint is None:
        return Position()
    logger.info("Resuming from %s", checkpoint)
    state = read_state(checkpoint, accelerator.process_index)
    check_resume_options(state, options, checkpoint)
    try:
        accelerator.load_state(checkpoint)
    except Exception as error:  # noqa: BLE001 - any unreadable part of the checkpoint
        raise ValueError(
            f"cannot resume from {checkpoint}: {' '.join(str(error).split())[:300]}. The checkpoint is damaged; "
            "delete it (then 'latest' takes the previous one) or pass an older one."
        ) from error
    position = Position(global_step=state.get("global_step", checkpoint_step(checkpoint)),
                        skipped=state.get("skipped", 0), seen=state.get("seen", 0))
    if state.get("seed", args.seed) != args.seed:
        logger.warning("Resuming with --seed %s but the checkpoint was trained with %s: the data order changes.",
                       args.seed, state.get("seed"))
    if "epoch" in state:
        position.epoch, position.batch_in_epoch = state["epoch"], state["batch_in_epoch"]
    elif batches_per_epoch:
        position.epoch, position.batch_in_epoch = divmod(
            position.global_step * args.gradient_accumulation_steps, batches_per_epoch
        )
    return position
