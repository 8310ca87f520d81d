"""Compatibility module: the helpers of ``training/train.py`` that do not need a model, under their old names.

They now live in modules of one idea each; import them from there in new code (this module keeps ``from training
import train_utils as tu`` working for scripts and tests written against 0.1):

- :mod:`training.recipes`: ``--config FILE`` recipes (:func:`load_recipe`, :func:`apply_recipe`, :data:`STAGES`).
- :mod:`training.checkpoints`: ``checkpoint-<step>`` folders, complete or absent (:func:`save_checkpoint_atomic`,
  :func:`resolve_resume_checkpoint`, :func:`checkpoint_problem`, ...).
- :mod:`training.resume`: what a checkpoint fixes for the run that resumes it (:data:`STATE_OPTIONS`).
- :mod:`training.atomic_export`: the final model swapped in (:func:`export_atomic`, :func:`recover_export`).
- :mod:`training.safe_io`: crash points, the disk-full error, file modes (:class:`DiskFullError`, :data:`KILL_ENV`).
- :mod:`training.divergence`: NaN/inf losses and weights (:class:`NonFiniteWatch`, :class:`TrainingDivergedError`).
- :mod:`training.sampler`: the resumable data order (:class:`ShardedEpochSampler`); :mod:`training.seeds`.
- :mod:`training.optim`: the learning-rate schedule (:func:`build_lr_scheduler`).
"""

from __future__ import annotations

import argparse
import hashlib
import math
from typing import Any, Sequence

import numpy as np
import torch

from training.atomic_export import (
    EXPORT_COMPLETE, EXPORT_KEY_FILES, EXPORT_OLD, EXPORT_TMP, export_atomic, recover_export,
)
from training.checkpoints import (
    CHECKPOINT_PREFIX, TMP_SUFFIX, checkpoint_problem, checkpoint_step, list_checkpoints, prune_checkpoints,
    remove_unfinished_checkpoints, resolve_resume_checkpoint, save_checkpoint_atomic,
)
from training.divergence import NO_STEP, NonFiniteWatch, TrainingDivergedError, divergence_message
from training.optim import build_lr_scheduler
from training.recipes import STAGES, apply_recipe, load_recipe
from training.resume import STATE_OPTIONS, check_resume_options
from training.safe_io import KILL_ENV, DiskFullError, apply_umask, crash_point, disk_full_error
from training.sampler import ShardedEpochSampler
from training.seeds import derive_seed

__all__ = [
    "EXPORT_COMPLETE",
    "EXPORT_KEY_FILES",
    "EXPORT_OLD",
    "EXPORT_TMP",
    "export_atomic",
    "recover_export",
    "CHECKPOINT_PREFIX",
    "TMP_SUFFIX",
    "checkpoint_problem",
    "checkpoint_step",
    "list_checkpoints",
    "prune_checkpoints",
    "remove_unfinished_checkpoints",
    "resolve_resume_checkpoint",
    "save_checkpoint_atomic",
    "NO_STEP",
    "NonFiniteWatch",
    "TrainingDivergedError",
    "divergence_message",
    "build_lr_scheduler",
    "STAGES",
    "apply_recipe",
    "load_recipe",
    "STATE_OPTIONS",
    "check_resume_options",
    "KILL_ENV",
    "DiskFullError",
    "apply_umask",
    "crash_point",
    "disk_full_error",
    "ShardedEpochSampler",
    "derive_seed",
    "tensor_digest",
    "image_grid",
    "scalar_config",
]


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
