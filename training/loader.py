"""The training DataLoader's workers (and, below, what feeds them)."""

from __future__ import annotations

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
