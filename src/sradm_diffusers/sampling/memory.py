"""Estimating the peak memory of sampling before it starts, so a run that cannot fit is refused with the fix.

The U-Net dominates: every denoising step holds several feature maps of its full-resolution width
``base_channels * channel_mults[0]`` at the HR size; lower levels add a quarter per level and less. The peak extra
memory of one pipeline call is modelled as ``BYTES_PER_WIDTH_PIXEL * width * batch * H * W + FIXED_BYTES`` for an
HR size H x W. The constants are a least-squares fit to the peak RSS of 18 pipeline calls (two runs of
``python benchmarks/memory_fit.py``: presets tiny and small, LR 64..256 px, batch 1 and 2, fp32, CPU, on a shared
machine): the estimate is 0.79x..1.55x the measured value, and the same point measured twice differed by up to
25 %. A third run fitted 38.6 B and 48 MiB on its own; the stored constants were 0.78x..1.19x of its points. The
guard is meant to stop runs that need several times the memory there is, not to fill it exactly.

The budget is the memory available now (``MemAvailable`` of ``/proc/meminfo`` on Linux, the free memory of a CUDA
device), or ``SRADM_MEMORY_LIMIT`` (bytes, or a number with a K/M/G/T suffix) when it is set.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import re
from typing import Callable

import torch

BYTES_PER_WIDTH_PIXEL = 37.0
"""Fitted: peak bytes per HR pixel, batch item and channel of the U-Net's full-resolution width."""

FIXED_BYTES = 58 * 2**20
"""Fitted: allocator and library overhead of a pipeline call, independent of the image size."""

MEMORY_LIMIT_ENV = "SRADM_MEMORY_LIMIT"


class SamplingMemoryError(MemoryError, ValueError):
    """Sampling would need more memory than is available. A ``ValueError`` too, so per-image handlers see it."""


def full_resolution_width(unet) -> int:
    """Channels of the U-Net's first (HR-size) level."""
    return int(unet.config.base_channels * unet.config.channel_mults[0])


def estimate_sampling_bytes(unet, batch: int, height: int, width: int) -> int:
    """Estimated peak extra memory (bytes) of sampling ``batch`` images of HR size ``height`` x ``width``."""
    per_pixel = BYTES_PER_WIDTH_PIXEL * full_resolution_width(unet)
    return int(per_pixel * batch * height * width + FIXED_BYTES)


def parse_size(text: str) -> int:
    """'8G', '512M', '1.5T', '1000000' -> bytes."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)i?B?\s*", text, flags=re.IGNORECASE)
    if match is None:
        raise ValueError(f"{MEMORY_LIMIT_ENV}={text!r} is not a size; use e.g. 8G, 512M or a number of bytes.")
    power = " KMGT".index(match.group(2).upper() or " ")
    return int(float(match.group(1)) * 1024**power)


def available_bytes(device: torch.device | str | None = None) -> int | None:
    """Memory sampling may use now: ``SRADM_MEMORY_LIMIT``, else the device's free memory (None if unknown)."""
    limit = os.environ.get(MEMORY_LIMIT_ENV)
    if limit:
        return parse_size(limit)
    device = torch.device(device or "cpu")
    if device.type == "cuda" and torch.cuda.is_available():
        return int(torch.cuda.mem_get_info(device)[0])
    release_free_heap()  # what this process has freed but kept (``keep_freed_memory``) is available too
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _gib(num_bytes: float) -> str:
    return f"{num_bytes / 2**30:.1f} GiB"


def check_sampling_memory(unet, batch: int, height: int, width: int, device=None, samples: int = 1) -> None:
    """Raise :class:`SamplingMemoryError` if sampling ``batch`` outputs of HR size ``height`` x ``width`` would not
    fit into :func:`available_bytes`. ``samples`` (K per input) only shapes the message."""
    budget = available_bytes(device)
    if budget is None:
        return
    needed = estimate_sampling_bytes(unet, batch, height, width)
    if needed <= budget:
        return
    fixes = "a smaller input, --tile N (sample in N-pixel tiles)"
    if samples > 1:
        fixes += ", or fewer samples (--samples / num_images_per_prompt)"
    raise SamplingMemoryError(
        f"sampling {batch} output(s) of {width}x{height} pixels needs about {_gib(needed)} but only {_gib(budget)} "
        f"is available; use {fixes}."
    )


def samples_per_batch(unet, height: int, width: int, samples: int, device=None) -> int:
    """How many of the ``samples`` outputs of one image (HR ``height`` x ``width``) to sample per pipeline call: as
    many as fit into half the available memory (headroom for the estimate's error; larger batches gain little),
    at least one. Raises :class:`SamplingMemoryError` when not even one fits into all of it."""
    check_sampling_memory(unet, 1, height, width, device, samples)
    budget = available_bytes(device)
    if budget is None:
        return samples
    one = estimate_sampling_bytes(unet, 1, height, width) - FIXED_BYTES
    return max(1, min(samples, int((budget / 2 - FIXED_BYTES) // max(one, 1))))


@functools.lru_cache(maxsize=None)
def _glibc():
    """The C library when it is glibc (has ``malloc_trim``), else None. Looked up once: ``find_library`` runs
    ``ldconfig``, and the memory check calls this before every pipeline call."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory(mmap_threshold: int = 2**30) -> bool:
    """Make glibc keep freed memory for reuse instead of giving it back to the OS and faulting it in again.

    By default glibc serves blocks above 32 MiB with fresh ``mmap`` calls and returns heap tops above 64 MiB, so
    every denoising step faults in new, zeroed pages for its large activations: at a 1024x1024 output, 2.4 GiB of
    page faults per demo U-Net step, a third of its time (``benchmarks/bench_sampling.py --allocator``). After
    this call blocks up to ``mmap_threshold`` bytes come from the heap, and freed heap memory stays in the process
    for the next step. It is process wide and cannot be undone, so the library never calls it on import:
    ``sradm`` does, and API users who sample repeatedly in a process of their own may. Peak resident memory grows
    a little (freed gaps are kept); ``trim_heap_around_each_call`` bounds that for large tiled photos. Returns
    False where it does not apply (not glibc, or glibc refused the threshold).
    """
    libc = _glibc()
    if libc is None or not hasattr(libc, "mallopt"):
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold))) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    )


def release_free_heap() -> None:
    """Give the C heap's free pages back to the OS now (glibc's ``malloc_trim``; nothing elsewhere)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def trim_heap_around_each_call(module: torch.nn.Module, only_if: Callable[[], bool] | None = None) -> bool:
    """Return the C heap's free pages to the OS before and after every forward of ``module`` (``malloc_trim``).

    Tiled sampling interleaves per-tile U-Net activations with whole-image work (the scheduler step, LR
    consistency, the final projection), so the heap fragments and its freed gaps stay resident, and whatever runs
    next comes on top of them. Trimming before each U-Net call (each tile) gives back the gaps of the whole-image
    work (300-500 MiB between steps on the demo model's 510x339 -> 2040x1356 run); trimming after it, the tile's
    activations before whole-image work resumes. ``only_if``: trim only when it returns True (``sradm`` trims
    while its pipeline tiles; untiled, trimming would only refault the same pages every step).
    ``benchmarks/bench_tiling.py --allocator glibc,trim,keep,keep+trim`` measures peak memory and time per step.
    Returns False where it does not apply (not glibc).
    """
    libc = _glibc()
    if libc is None:
        return False

    def trim(*_) -> None:  # returns None: a hook's return value would replace the inputs or the output
        if only_if is None or only_if():
            libc.malloc_trim(0)

    module.register_forward_pre_hook(trim)
    module.register_forward_hook(trim)
    return True
