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
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # torch is imported where it is used: ``sradm --help`` imports this module and must stay light
    import torch

BYTES_PER_WIDTH_PIXEL = 37.0
"""Fitted: peak bytes per HR pixel, batch item and channel of the U-Net's full-resolution width."""

FIXED_BYTES = 58 * 2**20
"""Fitted: allocator and library overhead of a pipeline call, independent of the image size."""

WHOLE_IMAGE_BYTES_PER_PIXEL = 340
"""Measured: peak bytes per HR pixel and batch item of the whole-image tensors of a *tiled* call (x_t, the bicubic
upsample, the blended noise prediction, the scheduler's and LR consistency's temporaries, the output and its
conversion to 8 bits), which tiling does not shrink. ``python benchmarks/memory_tiled.py`` (tiny preset, 32-pixel
tiles, the CLI's default sampling, fp32, CPU): 194, 218 and 315 B per HR pixel at 0.26, 1.05 and 2.36 Mpx
outputs, least-squares slope 336 B; stored rounded up. At a 12000x9000 input (a 1.7-gigapixel output) that is
about 550 GiB, so such a run is refused before it starts instead of failing after hours."""

MEMORY_LIMIT_ENV = "SRADM_MEMORY_LIMIT"


class SamplingMemoryError(MemoryError, ValueError):
    """Sampling would need more memory than is available. A ``ValueError`` too, so per-image handlers see it."""


def full_resolution_width(unet) -> int:
    """Channels of the U-Net's first (HR-size) level."""
    return int(unet.config.base_channels * unet.config.channel_mults[0])


def estimate_sampling_bytes(
    unet, batch: int, height: int, width: int, output_size: tuple[int, int] | None = None
) -> int:
    """Estimated peak extra memory (bytes) of sampling ``batch`` images when the U-Net sees HR ``height`` x ``width``
    pixels at once: the whole output, or one tile. ``output_size``: the HR (height, width) of the whole output when
    it is larger (tiled sampling), whose whole-image tensors (:data:`WHOLE_IMAGE_BYTES_PER_PIXEL`) are added."""
    per_pixel = BYTES_PER_WIDTH_PIXEL * full_resolution_width(unet)
    needed = per_pixel * batch * height * width + FIXED_BYTES
    if output_size is not None and output_size[0] * output_size[1] > height * width:
        needed += WHOLE_IMAGE_BYTES_PER_PIXEL * batch * output_size[0] * output_size[1]
    return int(needed)


def parse_size(text: str) -> int:
    """'8G', '512M', '1.5T', '1000000' -> bytes."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)i?B?\s*", text, flags=re.IGNORECASE)
    if match is None:
        raise ValueError(f"{MEMORY_LIMIT_ENV}={text!r} is not a size; use e.g. 8G, 512M or a number of bytes.")
    power = " KMGT".index(match.group(2).upper() or " ")
    return int(float(match.group(1)) * 1024**power)


def available_bytes(device: torch.device | str | None = None) -> int | None:
    """Memory sampling may use now: ``SRADM_MEMORY_LIMIT``, else the device's free memory (None if unknown)."""
    import torch

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


def check_sampling_memory(
    unet, batch: int, height: int, width: int, device=None, samples: int = 1,
    output_size: tuple[int, int] | None = None,
) -> None:
    """Raise :class:`SamplingMemoryError` if sampling ``batch`` outputs would not fit into :func:`available_bytes`:
    the U-Net sees HR ``height`` x ``width`` at once; ``output_size`` is the whole HR (height, width) when that is a
    tile (:func:`estimate_sampling_bytes`). ``samples`` (K per input) only shapes the message."""
    budget = available_bytes(device)
    if budget is None:
        return
    needed = estimate_sampling_bytes(unet, batch, height, width, output_size)
    if needed <= budget:
        return
    tiled = output_size is not None and output_size[0] * output_size[1] > height * width
    if tiled:
        whole = WHOLE_IMAGE_BYTES_PER_PIXEL * batch * output_size[0] * output_size[1]
        size = f"{output_size[1]}x{output_size[0]} pixels in tiles of {width}x{height}"
        fixes = (f"a smaller input: tiling bounds only the U-Net's memory, and the whole-image tensors (x_t, the "
                 f"bicubic upsample, the output, ...) alone need {_gib(whole)}; upscale the image in parts")
    else:
        size = f"{width}x{height} pixels"
        fixes = "a smaller input, --tile N (sample in N-pixel tiles)"
    if samples > 1:
        fixes += ", or fewer samples (--samples / num_images_per_prompt)"
    raise SamplingMemoryError(
        f"sampling {batch} output(s) of {size} needs about {_gib(needed)} but only {_gib(budget)} is available; use "
        f"{fixes}."
    )


def samples_per_batch(
    unet, height: int, width: int, samples: int, device=None, output_size: tuple[int, int] | None = None
) -> int:
    """How many of the ``samples`` outputs of one image (the U-Net seeing HR ``height`` x ``width``; ``output_size``
    the whole output when tiled) to sample per pipeline call: as many as fit into half the available memory
    (headroom for the estimate's error; larger batches gain little), at least one. Raises
    :class:`SamplingMemoryError` when not even one fits into all of it."""
    check_sampling_memory(unet, 1, height, width, device, samples, output_size)
    budget = available_bytes(device)
    if budget is None:
        return samples
    one = estimate_sampling_bytes(unet, 1, height, width, output_size) - FIXED_BYTES
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


def pin_mmap_threshold(threshold: int) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes (setting it also stops glibc raising it on its own):
    blocks above it are mmapped and handed back to the OS when freed. False where it does not apply (not glibc,
    or glibc refused the value)."""
    libc = _glibc()
    return libc is not None and hasattr(libc, "mallopt") and bool(libc.mallopt(_M_MMAP_THRESHOLD, int(threshold)))


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
    return pin_mmap_threshold(mmap_threshold) and bool(_glibc().mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


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
