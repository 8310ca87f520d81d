"""A run that diverged: the first step whose loss was NaN or infinite, found without a per-step host sync.

:class:`NonFiniteWatch` records that step on the device and is read before every save, so a NaN model is never
written; :func:`divergence_message` is the one-line error (exit status 3, :class:`TrainingDivergedError`).
"""

from __future__ import annotations

import os

import torch

from training.checkpoints import list_checkpoints


class TrainingDivergedError(RuntimeError):
    """The loss or the weights became NaN or infinite: the run stops without saving them (exit status 3)."""


NO_STEP = 2**62  # "no step yet" in NonFiniteWatch.first


class NonFiniteWatch:
    """The first optimizer step whose loss was NaN or infinite, recorded on the device.

    :meth:`observe` is a few device ops per step and never waits for the device; :meth:`problem` synchronises
    (and, with several processes, gathers) and is meant for the moments before a save, so a NaN model is never
    written while the loop keeps its speed.
    """

    def __init__(self, device):
        self.first = torch.full((), NO_STEP, dtype=torch.long, device=device)

    def observe(self, loss: torch.Tensor, step: int) -> None:
        """Remember ``step`` if ``loss`` has a non-finite value and no earlier step had one."""
        bad = ~torch.isfinite(loss.detach()).all()
        self.first = torch.where(bad & (self.first == NO_STEP), step, self.first)

    def problem(self, parameters, accelerator=None) -> str | None:
        """What is not finite ("the training loss ... at step N" / "the weights"), or None when all is well."""
        first = self.first.reshape(1)
        if accelerator is not None and accelerator.num_processes > 1:
            first = accelerator.gather(first)
        step = int(first.min().item())
        if step != NO_STEP:
            return f"the training loss became NaN or infinite at step {step}"
        finite = torch.stack([torch.isfinite(p.detach()).all() for p in parameters]).all()
        return None if bool(finite.item()) else "the weights became NaN or infinite"


def divergence_message(problem: str, step: int, output_dir: str, learning_rate: float) -> str:
    """The one-line error of a diverged run: what, when it was noticed, what was kept, what to do."""
    checkpoints = list_checkpoints(output_dir)
    kept = (f"the last good checkpoint, {os.path.basename(checkpoints[-1][1])}, is kept in {output_dir}"
            if checkpoints else f"no checkpoint had been saved in {output_dir}")
    noticed = "" if problem.endswith(f"at step {step}") else f" (noticed at step {step}, before saving)"
    return (
        f"{problem}{noticed}: training stopped; no checkpoint or final model was written from it and {kept}. Lower "
        f"--learning_rate (this run: {learning_rate:g}) or --max_grad_norm, then rerun"
        + (" with --resume_from_checkpoint latest." if checkpoints else ".")
    )
