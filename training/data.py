"""Data for training and validation under one name: image data sets -> (LR, HR) pairs made with the project's one
degradation (LR = MATLAB-bicubic ``imresize`` of the HR crop).

The pieces live in modules of one idea each; this module re-exports them so that ``from training import data``
(scripts, tests and benchmarks written against 0.1) keeps working. New code imports them from their modules:

* :mod:`training.sources`: :data:`HUB_DATASETS`, :func:`load_image_dataset` (Hub data sets, image folders, parquet).
* :mod:`training.pairs`: :func:`make_pair` (one image -> one pair), :class:`SkippedImage`, :func:`crop_box`,
  :func:`pair_from_crop`, :func:`decode_image`, :func:`to_rgb`.
* :mod:`training.pair_datasets`: :class:`PairDataset`, :class:`IterablePairDataset`, :func:`collate_pairs`,
  :func:`make_train_dataset` (optionally over :mod:`training.image_store`), :func:`make_validation_pairs`.
* :mod:`training.sampler`: :class:`EpochTaggedSampler`; :mod:`training.seeds`: :func:`pair_seed`.
* :mod:`training.loader`: :func:`loader_worker_init` and the training DataLoader.
"""

from __future__ import annotations

from training.loader import WORKER_MMAP_THRESHOLD, loader_worker_init
from training.pair_datasets import (
    IterablePairDataset, PairDataset, collate_pairs, make_train_dataset, make_validation_pairs, open_store,
    should_extract,
)
from training.pairs import (
    CELEBA_CROP, CELEBA_SIZE, PREPROCESS_CHOICES, SkippedImage, celeba_preprocess, crop_box, decode_for_store,
    decode_image, make_pair, pair_from_crop, to_rgb,
)
from training.sampler import EpochTaggedSampler
from training.seeds import pair_seed
from training.sources import HUB_DATASETS, HubDataset, check_image_column, load_image_dataset, undecoded

_undecoded = undecoded  # the 0.1 name, used by scripts and tests

__all__ = [
    "HubDataset",
    "HUB_DATASETS",
    "CELEBA_CROP",
    "CELEBA_SIZE",
    "PREPROCESS_CHOICES",
    "SkippedImage",
    "load_image_dataset",
    "check_image_column",
    "undecoded",
    "decode_image",
    "to_rgb",
    "celeba_preprocess",
    "make_pair",
    "crop_box",
    "pair_from_crop",
    "decode_for_store",
    "pair_seed",
    "EpochTaggedSampler",
    "should_extract",
    "open_store",
    "PairDataset",
    "IterablePairDataset",
    "collate_pairs",
    "make_train_dataset",
    "make_validation_pairs",
    "WORKER_MMAP_THRESHOLD",
    "loader_worker_init",
]
