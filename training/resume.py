"""Resuming a run exactly: the options a checkpoint fixes, and this process's saved position in the data."""

from __future__ import annotations

import os
from typing import Any

STATE_OPTIONS = ("stage", "preset", "scale", "resolution", "train_batch_size", "gradient_accumulation_steps",
                 "num_processes", "use_ema")
"""Options a resumed run must share with its checkpoint: they fix the data order, the meaning of a step or the
layout of the saved state."""


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
