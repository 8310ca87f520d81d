"""The training data of a run as batches: the dataset of pairs, the DataLoader over it and its workers.

- :func:`load_training_data`: ``--dataset_name`` / ``--train_data_dir`` as a dataset of pairs (extracted once into
  an image store by the main process first, then opened by the others).
- :func:`make_loader`: the DataLoader (persistent workers tagged with the epoch, pinned host batches on CUDA).
- :func:`batches`: a DataLoader iterator that starts at a given batch of the epoch (resuming).
- :func:`loader_worker_init`: each worker's constant memory footprint.
"""

from __future__ import annotations

import os

import torch

from training.pair_datasets import collate_pairs, make_train_dataset
from training.sampler import EpochTaggedSampler
from training.sources import load_image_dataset


def load_training_data(args, accelerator):
    """(training dataset of pairs, its length or None when streaming)."""
    with accelerator.main_process_first():
        dataset = load_image_dataset(
            dataset_name=args.dataset_name, dataset_config_name=args.dataset_config_name,
            train_data_dir=args.train_data_dir, split=args.train_split, image_column=args.image_column,
            streaming=args.streaming, cache_dir=args.cache_dir,
        )
        if args.max_train_samples is not None:
            dataset = dataset.take(args.max_train_samples) if args.streaming else dataset.select(
                range(min(args.max_train_samples, len(dataset)))
            )
        # The main process extracts the images once (all cores); the others then open the finished store.
        pairs = make_train_dataset(
            dataset, args.resolution, args.scale, image_column=args.image_column, random_flip=args.random_flip,
            preprocess=None if args.preprocess == "none" else args.preprocess, seed=args.seed,
            shuffle_buffer_size=args.shuffle_buffer_size, rank=accelerator.process_index,
            world_size=accelerator.num_processes, cache_images=args.cache_images, extract=args.extract_images,
            cache_dir=args.cache_dir, extract_workers=_cpu_count(),
        )
    return pairs, (None if args.streaming else len(pairs))


def _cpu_count() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def make_loader(args, train_set, sampler, device) -> torch.utils.data.DataLoader:
    """The training DataLoader.

    Map-style data: items ``(epoch, index)`` (:class:`~training.sampler.EpochTaggedSampler`) so the worker
    processes persist across epochs (no respawn, no lost per-worker caches) and still make each epoch's crops; host
    batches pinned on CUDA so the copies overlap compute; workers keep a constant footprint
    (:func:`loader_worker_init`).
    """
    workers = args.dataloader_num_workers
    return torch.utils.data.DataLoader(
        train_set, batch_size=args.train_batch_size,
        sampler=EpochTaggedSampler(sampler) if sampler is not None else None,
        collate_fn=collate_pairs, num_workers=workers, pin_memory=device.type == "cuda",
        persistent_workers=workers > 0 and sampler is not None,  # a stream's workers must see set_epoch
        prefetch_factor=4 if workers > 0 else None, worker_init_fn=loader_worker_init,
    )


def batches(loader, start_batch: int, streaming: bool):
    """Iterate a DataLoader from batch ``start_batch`` (the sampler already skips for map-style data)."""
    iterator = iter(loader)
    if streaming:
        for _ in range(start_batch):  # a stream cannot seek: read and drop what was already trained on
            next(iterator, None)
    return iterator


WORKER_MMAP_THRESHOLD = 128 * 1024


def loader_worker_init(worker_id: int) -> None:
    """``worker_init_fn`` of the training DataLoader: pin glibc's mmap threshold at its default 128 KiB.

    Every pair allocates a few crop-sized buffers (the pread band, float HR, intermediate resize) of 77 KB-1 MB.
    glibc raises its mmap threshold after the first such block is freed and serves the rest from the heap, whose
    freed gaps then stayed resident: a worker's own memory (USS) grew by ~14 MB per 64-pair batch without bound
    (``benchmarks/bench_data.py``). A fixed threshold keeps those blocks mmapped and returned on free; the worker
    then stays at a constant ~15 MB of its own pages. Does nothing where the C library is not glibc.
    """
    from sradm_diffusers.sampling.memory import pin_mmap_threshold

    pin_mmap_threshold(WORKER_MMAP_THRESHOLD)
