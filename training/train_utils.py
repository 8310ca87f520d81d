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
- :mod:`training.loop` (:func:`tensor_digest`), :mod:`training.validation` (:func:`image_grid`),
  :mod:`training.run_setup` (:func:`scalar_config`).
"""

from __future__ import annotations

from training.atomic_export import (
    EXPORT_COMPLETE, EXPORT_KEY_FILES, EXPORT_OLD, EXPORT_TMP, export_atomic, recover_export,
)
from training.checkpoints import (
    CHECKPOINT_PREFIX, TMP_SUFFIX, checkpoint_problem, checkpoint_step, list_checkpoints, prune_checkpoints,
    remove_unfinished_checkpoints, resolve_resume_checkpoint, save_checkpoint_atomic,
)
from training.divergence import NO_STEP, NonFiniteWatch, TrainingDivergedError, divergence_message
from training.loop import tensor_digest
from training.optim import build_lr_scheduler
from training.recipes import STAGES, apply_recipe, load_recipe
from training.resume import STATE_OPTIONS, check_resume_options
from training.run_setup import scalar_config
from training.safe_io import KILL_ENV, DiskFullError, apply_umask, crash_point, disk_full_error
from training.sampler import ShardedEpochSampler
from training.seeds import derive_seed
from training.validation import image_grid

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
