"""Sharing ``sradm upscale`` / ``sradm evaluate`` work between the processes of ``accelerate launch``.

diffusers' distributed-inference pattern: every process runs the same command, takes a contiguous share of the
images with accelerate's ``PartialState().split_between_processes``, and the results are gathered in process order,
so a run over N processes writes the same files and reports the same numbers as one process (per-image seeds never
depend on which process handles an image). Outside ``accelerate launch`` (``WORLD_SIZE`` unset or 1) nothing is
imported and the share is everything.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


class ProcessShare:
    """This process's part of a run: ``indices(n)``, ``gather(obj)``, ``is_main`` and the device to run on."""

    def __init__(self):
        self.state = None
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            from accelerate import PartialState
            from accelerate.utils import parse_flag_from_env

            # As accelerate's Accelerator does: ACCELERATE_USE_CPU (set by `accelerate launch --cpu`, or by hand with
            # --multi_gpu for several CPU processes) means CPU processes with the gloo backend.
            self.state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))

    @property
    def num_processes(self) -> int:
        return 1 if self.state is None else self.state.num_processes

    @property
    def is_main(self) -> bool:
        """True in the process that prints the summary and writes the shared files (the only one, alone)."""
        return self.state is None or self.state.is_main_process

    def device(self, requested: str | None, resolve) -> "torch.device":
        """``resolve(requested)`` (``--device``), except when launched without ``--device``: then this process's own
        device from accelerate (e.g. ``cuda:1``, or the CPU under ``ACCELERATE_USE_CPU``)."""
        if requested is not None or self.state is None:
            return resolve(requested)
        return self.state.device

    def indices(self, count: int) -> range:
        """The contiguous range of item indices 0..count-1 this process handles (all of them when alone)."""
        if self.state is None:
            return range(count)
        with self.state.split_between_processes(list(range(count))) as mine:
            return range(mine[0], mine[-1] + 1) if mine else range(0)

    def gather(self, obj: Any) -> list[Any]:
        """``obj`` of every process, in process order (``[obj]`` when alone). Every process must call it."""
        if self.state is None:
            return [obj]
        from accelerate.utils import gather_object

        return gather_object([obj])

    def close(self) -> None:
        """Tear down the process group after the last :meth:`gather` (every process calls it; alone, nothing).

        Without it the gloo/NCCL group's threads are still running when the interpreter exits, and a process that
        finished first can abort with "terminate called without an active exception" (seen with 2 processes and 1
        image, the second one idle)."""
        if self.state is None:
            return
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
