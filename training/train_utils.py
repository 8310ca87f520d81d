"""Helpers of ``training/train.py`` that do not need a model: recipe files, checkpoints, data order, LR schedule.

Kept apart from the training loop so that each can be read (and tested) on its own:

- :func:`load_recipe` / :func:`apply_recipe`: ``--config FILE`` recipes whose values the command line overrides.
- :func:`list_checkpoints`, :func:`resolve_resume_checkpoint`, :func:`save_checkpoint_atomic`,
  :func:`prune_checkpoints`, :func:`checkpoint_problem`: ``checkpoint-<step>`` folders that are either complete or
  absent; a damaged one (a file deleted or truncated afterwards) is named and skipped by ``latest``.
- :func:`export_atomic`, :func:`recover_export`: the final model written beside the old one and swapped in.
- :class:`ShardedEpochSampler`: the data order as a pure function of (seed, epoch, process), so a resumed run sees
  exactly the batches the uninterrupted run would have seen.
- :func:`build_lr_scheduler`: diffusers' schedules plus the reference's step decay.
- :func:`derive_seed`: per-step random streams that do not depend on what ran before.
- :class:`NonFiniteWatch`: the first step whose loss was NaN or infinite, kept on the device (no per-step sync) and
  checked before every save; :class:`TrainingDivergedError`, :class:`DiskFullError`: the failures that stop a run.
"""

from __future__ import annotations

import argparse
import difflib
import errno
import hashlib
import json
import logging
import math
import os
import re
import shutil
import signal
import zipfile
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

STAGES = ("encoder", "diffusion")
CHECKPOINT_PREFIX = "checkpoint-"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
TMP_SUFFIX = ".tmp"
KILL_ENV = "SRADM_TRAIN_KILL_AT"
EXPORT_TMP, EXPORT_OLD, EXPORT_COMPLETE = ".export.tmp", ".export.old", ".complete"
EXPORT_KEY_FILES = ("model_index.json", "config.json")  # what makes a folder loadable: moved out first, in last
STATE_OPTIONS = ("stage", "preset", "scale", "resolution", "train_batch_size", "gradient_accumulation_steps",
                 "num_processes", "use_ema")
"""Options a resumed run must share with its checkpoint: they fix the data order, the meaning of a step or the
layout of the saved state."""

logger = logging.getLogger("sradm.train")


def crash_point(name: str) -> None:
    """Fault injection for the kill tests: SIGKILL this process when ``$SRADM_TRAIN_KILL_AT`` equals ``name``."""
    if os.environ.get(KILL_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


class TrainingDivergedError(RuntimeError):
    """The loss or the weights became NaN or infinite: the run stops without saving them (exit status 3)."""


class DiskFullError(OSError):
    """No space left on the device while saving a checkpoint or the model (exit status 1)."""


def _is_disk_full(error: BaseException, folder: str) -> bool:
    """True when ``error`` (or an exception it chains) is ENOSPC/EDQUOT, or torch's zip writer failed
    ("unexpected pos", "file write failed") while ``folder``'s file system has less than 1 MiB left."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(error)
        if "No space left on device" in text:
            return True
        if "unexpected pos" in text or "file write failed" in text:
            try:
                return shutil.disk_usage(folder).free < 2**20
            except OSError:
                return False
        error = error.__cause__ or error.__context__
    return False


def disk_full_error(error: BaseException, what: str, folder: str) -> DiskFullError | None:
    """A :class:`DiskFullError` that says "no space left on device" and where, if ``error`` is a full disk."""
    if not _is_disk_full(error, folder):
        return None
    try:
        free = f"{shutil.disk_usage(folder).free / 2**20:.1f} MiB free"
    except OSError:
        free = "free space unknown"
    return DiskFullError(
        f"no space left on device while saving {what} in {os.path.abspath(folder)} ({free}); the unfinished save was "
        "removed and earlier checkpoints are kept. Free some space (or keep fewer with --checkpoints_total_limit, or "
        "use another --output_dir), then continue with --resume_from_checkpoint latest."
    )


def apply_umask(folder: str) -> None:
    """Give the files under ``folder`` the permissions of the umask (``0666 & ~umask``): safetensors' writer
    creates them readable by the owner only (0600)."""
    umask = os.umask(0)
    os.umask(umask)
    for root, _subdirs, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, 0o666 & ~umask)


NO_STEP = 2**62


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


# ----------------------------------------------------------------------------------------------------- recipes
def load_recipe(path: str, stage: str | None) -> dict[str, Any]:
    """Read a recipe file and return the flag values it sets for ``stage``.

    A recipe is a JSON object (or YAML mapping for ``.yaml``/``.yml`` files, when PyYAML is installed) whose keys
    are flag names without the leading dashes (``learning_rate``, ``train_batch_size``, ...). Optional sections
    ``"encoder"`` and ``"diffusion"`` hold the values of one stage; they override the top-level values, and the one
    used is chosen by ``--stage`` (on the command line or as a top-level ``"stage"`` key). Keys starting with ``_``
    (e.g. ``"_comment"``) are ignored.

    Raises:
        ValueError: unreadable file, not a mapping, or sections present but no stage chosen.
    """
    if not os.path.isfile(path):
        raise ValueError(f"--config {path!r} does not exist; pass the path of a recipe file (training/configs/*.json).")
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    if path.endswith((".yaml", ".yml")):
        try:
            import yaml
        except ImportError as error:
            raise ValueError(
                f"--config {path!r} is YAML but PyYAML is not installed; pip install pyyaml or use JSON."
            ) from error
        try:
            recipe = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ValueError(f"--config {path!r} is not valid YAML: {error}") from error
    else:
        try:
            recipe = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"--config {path!r} is not valid JSON: {error}") from error
    if not isinstance(recipe, dict):
        raise ValueError(f"--config {path!r} must hold a JSON object of flag values, got {type(recipe).__name__}.")

    sections = {name: recipe.get(name) for name in STAGES if name in recipe}
    for name, section in sections.items():
        if not isinstance(section, dict):
            raise ValueError(f"Section {name!r} of {path!r} must be an object of flag values, got {section!r}.")
    values = {k: v for k, v in recipe.items() if k not in STAGES and not k.startswith("_")}
    stage = stage or values.get("stage")
    if sections:
        if stage is None:
            raise ValueError(
                f"{path!r} has per-stage sections {sorted(sections)}; choose one with --stage "
                f"{'|'.join(STAGES)}."
            )
        if stage not in STAGES:
            raise ValueError(f"--stage must be one of {', '.join(STAGES)}, got {stage!r}.")
        values.update({k: v for k, v in (sections.get(stage) or {}).items() if not k.startswith("_")})
    return {key.replace("-", "_"): value for key, value in values.items()}


def _check_value(action: argparse.Action, key: str, value: Any, path: str) -> Any:
    """Validate (and where needed convert) one recipe value the way argparse would treat the flag."""
    where = f"{key!r} in {path!r}"
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse.BooleanOptionalAction)):
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, got {value!r}.")
        return value
    if value is None:
        return None
    if action.type in (int, float):
        if isinstance(value, str):
            try:
                value = action.type(value)
            except ValueError as error:
                raise ValueError(f"{where} must be a number, got {value!r}.") from error
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where} must be a number, got {value!r}.")
        if action.type is int:
            if float(value) != int(value):
                raise ValueError(f"{where} must be an integer, got {value!r}.")
            value = int(value)
        else:
            value = float(value)
    elif not isinstance(value, str):
        raise ValueError(f"{where} must be a string, got {value!r}.")
    if action.choices is not None and value not in action.choices:
        raise ValueError(f"{where} is {value!r}; choose one of {', '.join(map(str, action.choices))}.")
    return value


def apply_recipe(parser: argparse.ArgumentParser, recipe: dict[str, Any], path: str) -> None:
    """``parser.set_defaults`` from a recipe after checking every key is a flag and every value fits it.

    Raises:
        ValueError: an unknown key (with the closest flag names) or a value of the wrong type / not in the choices.
    """
    actions = {action.dest: action for action in parser._actions if action.dest not in ("help", "config")}
    unknown = [key for key in recipe if key not in actions]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, actions, n=2)
            hints.append(f"{key!r}" + (f" (did you mean {' or '.join(close)}?)" if close else ""))
        raise ValueError(
            f"{path!r} sets unknown option(s) {', '.join(hints)}. Recipe keys are the flag names of "
            "training/train.py without dashes; see `python training/train.py --help`."
        )
    parser.set_defaults(**{key: _check_value(actions[key], key, value, path) for key, value in recipe.items()})


# ----------------------------------------------------------------------------------------------------- checkpoints
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


# ----------------------------------------------------------------------------------------------------- final export
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


# ----------------------------------------------------------------------------------------------------- data order
class ShardedEpochSampler(Sampler[int]):
    """Deterministic, resumable, per-process sampler over a map-style dataset.

    Epoch ``e`` uses the permutation ``randperm(n)`` drawn from a generator seeded with ``derive_seed(seed, e)``
    (or ``arange(n)`` without shuffling), cut to a whole number of global batches
    (``num_processes * batch_size``; when the data set is smaller than one global batch it is repeated to fill
    one). Global batch ``b`` is split among processes, process ``r`` taking the slice ``r`` of it, so processes
    never see the same sample in a step. ``set_position(epoch, start_batch)`` starts an epoch in the middle: the
    remaining batches are exactly those the uninterrupted epoch would still have produced.

    Args:
        num_samples: length of the data set.
        batch_size: per-process batch size.
        num_processes, process_index: the data-parallel layout (accelerator.num_processes / process_index).
        seed: base seed of the permutations.
        shuffle: False gives the data set's order (still sharded).
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        num_processes: int = 1,
        process_index: int = 0,
        seed: int = 0,
        shuffle: bool = True,
    ):
        if num_samples < 1:
            raise ValueError("The training set is empty; check --train_data_dir / --dataset_name.")
        if batch_size < 1:
            raise ValueError(f"--train_batch_size must be >= 1, got {batch_size}.")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.num_processes = num_processes
        self.process_index = process_index
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.start_batch = 0

    @property
    def batches_per_epoch(self) -> int:
        """Batches each process gets per epoch."""
        return max(1, self.num_samples // (self.batch_size * self.num_processes))

    def set_position(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def epoch_indices(self, epoch: int) -> np.ndarray:
        """All indices of ``epoch`` for this process, (batches_per_epoch * batch_size,)."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(derive_seed(self.seed, "epoch", epoch))
            order = torch.randperm(self.num_samples, generator=generator).numpy()
        else:
            order = np.arange(self.num_samples)
        global_batch = self.batch_size * self.num_processes
        order = np.resize(order, self.batches_per_epoch * global_batch).reshape(-1, self.num_processes, self.batch_size)
        return order[:, self.process_index].reshape(-1)

    def __iter__(self) -> Iterator[int]:
        indices = self.epoch_indices(self.epoch)[self.start_batch * self.batch_size :]
        return iter(indices.tolist())

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start_batch) * self.batch_size


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed that is a pure function of ``parts`` (ints/strings), for independent reproducible streams."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


# ----------------------------------------------------------------------------------------------------- LR schedule
def build_lr_scheduler(
    name: str,
    optimizer: torch.optim.Optimizer,
    *,
    warmup_steps: int,
    total_steps: int,
    decay_steps: int | None = None,
    decay_factor: float = 0.5,
    step_rules: str | None = None,
    num_processes: int = 1,
):
    """A ``LambdaLR`` for optimizer steps.

    ``name`` is "step" (linear warm-up, then the learning rate times ``decay_factor`` every ``decay_steps``
    optimizer steps, as the SRDiff reference) or any name of ``diffusers.optimization.get_scheduler``. Step counts
    are multiplied by ``num_processes`` because accelerate's prepared scheduler advances once per process for each
    optimizer step (the convention of diffusers' training examples).
    """
    from diffusers.optimization import get_scheduler

    if name == "step":
        if not decay_steps or decay_steps < 1:
            raise ValueError(f"--lr_scheduler step needs --lr_decay_steps >= 1, got {decay_steps!r}.")
        warm, every = warmup_steps * num_processes, decay_steps * num_processes

        def factor(step: int) -> float:
            ramp = min(1.0, (step + 1) / warm) if warm > 0 else 1.0
            return ramp * decay_factor ** (step // every)

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return get_scheduler(
        name,
        optimizer,
        step_rules=step_rules,
        num_warmup_steps=warmup_steps * num_processes,
        num_training_steps=total_steps * num_processes,
    )


# ----------------------------------------------------------------------------------------------------- misc
def tensor_digest(*tensors: torch.Tensor) -> str:
    """Short sha1 of tensors' bytes (to tell batches apart in debug logs)."""
    sha = hashlib.sha1()
    for tensor in tensors:
        sha.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return sha.hexdigest()[:16]


def image_grid(rows: Sequence[Sequence[np.ndarray]]):
    """PIL image of a grid of uint8 HWC arrays (rows of equal count; cells padded to the largest cell, 2 px gap)."""
    from PIL import Image

    cell_h = max(cell.shape[0] for row in rows for cell in row)
    cell_w = max(cell.shape[1] for row in rows for cell in row)
    cols = max(len(row) for row in rows)
    gap = 2
    canvas = np.full(
        (len(rows) * (cell_h + gap) - gap, cols * (cell_w + gap) - gap, 3), 255, dtype=np.uint8
    )
    for i, row in enumerate(rows):
        for j, cell in enumerate(row):
            y, x = i * (cell_h + gap), j * (cell_w + gap)
            canvas[y : y + cell.shape[0], x : x + cell.shape[1]] = cell
    return Image.fromarray(canvas)


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
