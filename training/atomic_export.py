"""The final model, written beside the old one and swapped in: a crash leaves the old or the new model, never a mix.

:func:`export_atomic` writes into ``output_dir/.export.tmp``, marks it complete and swaps its entries in
(:func:`_swap_in_export`); :func:`recover_export`, run at the start of the next run, finishes a complete export that
a crash interrupted or discards an incomplete one.
"""

from __future__ import annotations

import os
import shutil
from typing import Callable

from training.safe_io import apply_umask, crash_point, disk_full_error

EXPORT_TMP, EXPORT_OLD, EXPORT_COMPLETE = ".export.tmp", ".export.old", ".complete"
EXPORT_KEY_FILES = ("model_index.json", "config.json")  # what makes a folder loadable: moved out first, in last


def _swap_in_export(output_dir: str) -> None:
    """Move the complete export in ``.export.tmp`` into ``output_dir``, replacing the entries of the same names.

    The old key file (``model_index.json`` / ``config.json``) is moved out first and the new one moved in last, so a
    kill in between leaves a folder that does not load (a clear "model_index.json does not exist" error), never a
    silent mix of old and new components; running this again finishes the swap (every step is repeatable).
    """
    tmp, old = os.path.join(output_dir, EXPORT_TMP), os.path.join(output_dir, EXPORT_OLD)
    os.makedirs(old, exist_ok=True)

    def retire(name: str) -> None:
        current = os.path.join(output_dir, name)
        if os.path.lexists(current):
            target = os.path.join(old, name)
            if os.path.isdir(target) and not os.path.islink(target):
                shutil.rmtree(target)
            os.replace(current, target)

    pending = [name for name in os.listdir(tmp) if name != EXPORT_COMPLETE]
    keys = [name for name in EXPORT_KEY_FILES if name in pending]
    for name in keys:
        retire(name)
    for name in sorted(set(pending) - set(keys)):
        retire(name)
        os.replace(os.path.join(tmp, name), os.path.join(output_dir, name))
        crash_point("export-swap")
    for name in keys:
        os.replace(os.path.join(tmp, name), os.path.join(output_dir, name))
    shutil.rmtree(tmp)
    shutil.rmtree(old, ignore_errors=True)


def recover_export(output_dir: str) -> str | None:
    """Finish or discard an export that a crash interrupted; returns what was done (for the log) or None.

    A complete export (``.export.tmp/.complete`` exists) is swapped in; an incomplete one is deleted and the old
    model, which was not touched yet, stays.
    """
    tmp, old = os.path.join(output_dir, EXPORT_TMP), os.path.join(output_dir, EXPORT_OLD)
    done = None
    if os.path.isfile(os.path.join(tmp, EXPORT_COMPLETE)):
        _swap_in_export(output_dir)
        done = "finished the interrupted final export"
    elif os.path.isdir(tmp):
        shutil.rmtree(tmp)
        done = "removed an unfinished final export (the previous model is unchanged)"
    if os.path.isdir(old):
        shutil.rmtree(old)
    return done


def export_atomic(output_dir: str, write: Callable[[str], None]) -> None:
    """Call ``write(folder)`` on an empty temporary folder beside the model in ``output_dir`` (same file system),
    mark it complete, then swap its entries into ``output_dir`` (:func:`_swap_in_export`). A crash while writing
    leaves the old model untouched; a crash while swapping is finished by :func:`recover_export`."""
    recover_export(output_dir)
    tmp = os.path.join(output_dir, EXPORT_TMP)
    try:
        os.makedirs(tmp)
        write(tmp)
        apply_umask(tmp)
        crash_point("export-write")
        with open(os.path.join(tmp, EXPORT_COMPLETE), "w", encoding="utf-8"):
            pass
    except BaseException as error:
        full = disk_full_error(error, "the final model", output_dir)
        shutil.rmtree(tmp, ignore_errors=True)
        if full is not None:
            raise full from error
        raise
    _swap_in_export(output_dir)
