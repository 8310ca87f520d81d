"""``checkpoint-<step>`` folders that are either complete or absent.

A save goes to ``checkpoint-<step>.tmp`` and is renamed when every process has written its part
(:func:`save_checkpoint_atomic`); :func:`list_checkpoints` never lists an unfinished one, and
:func:`checkpoint_problem` names what makes a complete-looking one unusable (a file deleted or truncated afterwards),
so ``--resume_from_checkpoint latest`` (:func:`resolve_resume_checkpoint`) skips it with a warning.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import zipfile
from typing import Any

from training.ema import load_ema
from training.safe_io import apply_umask, crash_point, disk_full_error

CHECKPOINT_PREFIX = "checkpoint-"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
TMP_SUFFIX = ".tmp"

logger = logging.getLogger("sradm.train")


def list_checkpoints(output_dir: str) -> list[tuple[int, str]]:
    """Complete checkpoints in ``output_dir`` as (step, path), oldest first.

    Only folders named exactly ``checkpoint-<step>`` count: an unfinished save (``checkpoint-<step>.tmp``) is
    never listed, so ``--resume_from_checkpoint latest`` cannot pick it.
    """
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        match = _CHECKPOINT_RE.match(name)
        path = os.path.join(output_dir, name)
        if match and os.path.isdir(path):
            found.append((int(match.group(1)), path))
    return sorted(found)


def checkpoint_problem(path: str) -> str | None:
    """What makes the checkpoint folder ``path`` unusable (a missing, empty or truncated file), or None.

    Checked without loading: the torch files (optimizer, LR schedule, RNG states) must be complete zip archives,
    the JSON files must parse, the model folders must hold a config and a safetensors file whose header opens.
    """
    from safetensors import safe_open

    names = set(os.listdir(path))
    models = [name for name in ("unet", "encoder", "ema") if name in names]
    if not any(name in models for name in ("unet", "encoder")):
        return "it has no unet/ or encoder/ model folder"
    required = ["optimizer.bin", "scheduler.bin", "random_states_0.pkl", "training_state_0.json"]
    required += sorted(n for n in names if re.fullmatch(r"(random_states|training_state)_\d+\.(pkl|json)", n))
    for name in dict.fromkeys(required):
        file = os.path.join(path, name)
        if not os.path.isfile(file) or os.path.getsize(file) == 0:
            return f"{name} is missing or empty"
        try:
            if name.endswith(".json"):
                with open(file, encoding="utf-8") as handle:
                    json.load(handle)
            else:
                zipfile.ZipFile(file).close()
        except (OSError, ValueError, zipfile.BadZipFile) as error:
            return f"{name} is truncated or damaged ({error})"
    for model in models:
        folder = os.path.join(path, model)
        config = os.path.join(folder, "config.json")
        weights = os.path.join(folder, "diffusion_pytorch_model.safetensors")
        try:
            with open(config, encoding="utf-8") as handle:
                json.load(handle)
        except (OSError, ValueError) as error:
            return f"{model}/config.json is missing or damaged ({error})"
        try:
            with safe_open(weights, framework="pt"):
                pass
        except Exception as error:  # noqa: BLE001 - safetensors raises its own error types
            reason = " ".join(str(error).split())
            return f"{model}/diffusion_pytorch_model.safetensors is missing or truncated ({reason})"
    return None


def resolve_resume_checkpoint(resume: str | None, output_dir: str) -> str | None:
    """Path of the checkpoint to resume from, or None to start fresh.

    ``resume`` is "latest" (the newest *complete* checkpoint in ``output_dir``: damaged newer ones are skipped with a
    warning naming the problem; None if there is none), a path, or a folder name inside ``output_dir``.

    Raises:
        ValueError: an explicit checkpoint that does not exist, is an unfinished ``.tmp`` save or is damaged.
    """
    if not resume:
        return None
    if resume == "latest":
        for _, path in reversed(list_checkpoints(output_dir)):
            problem = checkpoint_problem(path)
            if problem is None:
                return path
            logger.warning("Skipping %s: %s. Resuming from an older checkpoint.", os.path.basename(path), problem)
        return None
    path = resume if os.path.isdir(resume) else os.path.join(output_dir, resume)
    if path.rstrip("/").endswith(TMP_SUFFIX):
        raise ValueError(f"{resume!r} is an unfinished checkpoint (a save that did not complete); pick another one.")
    if not os.path.isdir(path) or not _CHECKPOINT_RE.match(os.path.basename(os.path.normpath(path))):
        available = [os.path.basename(p) for _, p in list_checkpoints(output_dir)]
        raise ValueError(
            f"--resume_from_checkpoint {resume!r} is not a checkpoint-<step> folder (looked for {path!r}). "
            f"Available in {output_dir!r}: {available or 'none'}; or pass 'latest'."
        )
    problem = checkpoint_problem(path)
    if problem is not None:
        raise ValueError(
            f"--resume_from_checkpoint {resume!r} is damaged: {problem}. Pass an older checkpoint, or 'latest' to "
            "take the newest complete one."
        )
    return path


def checkpoint_step(path: str) -> int:
    """The global step encoded in a ``checkpoint-<step>`` folder name."""
    match = _CHECKPOINT_RE.match(os.path.basename(os.path.normpath(path)))
    if match is None:
        raise ValueError(f"{path!r} is not named checkpoint-<step>.")
    return int(match.group(1))


def prune_checkpoints(output_dir: str, total_limit: int | None) -> list[str]:
    """Delete the oldest complete checkpoints so that at most ``total_limit`` remain; returns the removed paths."""
    if not total_limit or total_limit < 1:
        return []
    checkpoints = list_checkpoints(output_dir)
    removed = [path for _, path in checkpoints[: max(0, len(checkpoints) - total_limit)]]
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


def save_checkpoint_atomic(
    accelerator,
    output_dir: str,
    step: int,
    total_limit: int | None = None,
    extra_state: dict[str, Any] | None = None,
) -> str:
    """``accelerator.save_state`` into ``checkpoint-<step>.tmp``, then rename to ``checkpoint-<step>``.

    Every process writes its part (its RNG state and ``extra_state`` as ``training_state_<rank>.json``; the main
    process the models, optimizer and LR schedule) into the temporary folder; only after all have finished does the
    main process rename it. A crash at any point leaves the previous checkpoints untouched and at most a ``.tmp``
    folder that :func:`list_checkpoints` ignores (removed at once after an exception, by the next save or run after
    a kill). Afterwards the oldest checkpoints beyond ``total_limit`` are
    removed (only once the new one is complete).

    Returns the final path.
    """
    final = os.path.join(output_dir, f"{CHECKPOINT_PREFIX}{step}")
    tmp = final + TMP_SUFFIX
    if accelerator.is_main_process and os.path.exists(tmp):
        shutil.rmtree(tmp)  # left over by a crash during an earlier save
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(tmp)
        crash_point(f"checkpoint-{step}")
        if extra_state is not None:
            os.makedirs(tmp, exist_ok=True)
            with open(os.path.join(tmp, f"training_state_{accelerator.process_index}.json"), "w") as handle:
                json.dump(extra_state, handle, indent=2)
    except BaseException as error:
        full = disk_full_error(error, f"{CHECKPOINT_PREFIX}{step}", output_dir)  # before the cleanup frees space
        shutil.rmtree(tmp, ignore_errors=True)  # a SIGKILL skips this; the next save or run removes the folder
        if full is not None:
            raise full from error
        raise
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        apply_umask(tmp)
        if os.path.exists(final):  # e.g. the same step saved again after a resume: replace it only now
            old = final + ".old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        prune_checkpoints(output_dir, total_limit)
    accelerator.wait_for_everyone()
    return final


def remove_unfinished_checkpoints(output_dir: str) -> None:
    """Delete ``checkpoint-<step>.tmp`` folders left by a save that was killed."""
    if os.path.isdir(output_dir):
        for name in os.listdir(output_dir):
            if name.startswith(CHECKPOINT_PREFIX) and name.endswith(TMP_SUFFIX):
                shutil.rmtree(os.path.join(output_dir, name), ignore_errors=True)


def register_model_hooks(accelerator, model_cls, subfolder: str, ema=None) -> None:
    """Make ``accelerator.save_state`` / ``load_state`` keep the trained model in diffusers format.

    A checkpoint then holds ``<subfolder>/`` (``"encoder"`` or ``"unet"``; ``model_cls.save_pretrained`` of the
    wrapped model's ``inner``) and, with ``ema``, ``ema/``; loading reads them back into the prepared wrapper.
    """

    def save_model_hook(models, weights, output_dir):
        if accelerator.is_main_process:
            for m in models:
                accelerator.unwrap_model(m).inner.save_pretrained(os.path.join(output_dir, subfolder))
                weights.pop()
            if ema is not None:
                ema.save_pretrained(os.path.join(output_dir, "ema"))

    def load_model_hook(models, input_dir):
        if ema is not None:
            load_ema(ema, input_dir, model_cls, accelerator.device)
        while models:
            m = models.pop()
            loaded = model_cls.from_pretrained(os.path.join(input_dir, subfolder))
            accelerator.unwrap_model(m).inner.load_state_dict(loaded.state_dict())
            del loaded

    accelerator.register_save_state_pre_hook(save_model_hook)
    accelerator.register_load_state_pre_hook(load_model_hook)
