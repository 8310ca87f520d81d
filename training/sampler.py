"""The order in which training sees its data: deterministic, sharded between processes and resumable mid-epoch.

- :class:`ShardedEpochSampler`: each process's indices of each epoch, a pure function of (seed, epoch, process).
- :class:`EpochTaggedSampler`: the same indices tagged with their epoch, for persistent DataLoader workers.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

from training.seeds import derive_seed


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


class EpochTaggedSampler(torch.utils.data.Sampler):
    """Yields ``(epoch, index)`` for every index of ``sampler``, ``epoch`` read from ``sampler.epoch`` when an epoch's
    iteration starts. :class:`PairDataset` makes that epoch's crop, so DataLoader workers can persist across epochs
    (``persistent_workers=True``) and still give exactly the pairs of a fresh run or a resumed one."""

    def __init__(self, sampler):
        self.sampler = sampler

    def __iter__(self):
        epoch = int(self.sampler.epoch)
        return ((epoch, int(index)) for index in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)
