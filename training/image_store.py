"""Decoded training images cached on disk once, so that loader workers crop without decoding.

A DIV2K image is a 2040x1356 PNG: decoding it for every 160 px training crop costs far more than the crop, and
keeping every decoded image in each loader worker costs ~6.6 GB per worker. Instead the training images are decoded
once (in parallel), written as raw uint8 pixels to one file, and each crop is read back with a single ``os.pread`` of
the rows it covers (no mmap: a worker's resident memory stays one crop band, the pixels live in the page cache that
all workers share). The crop position is drawn exactly as :func:`data.make_pair` draws it on the decoded image, so
the pairs are the same pairs as without the cache.

Why whole images and not ~480 px PNG sub-images (BasicSR's DIV2K practice): a 480 px PNG tile still costs ~4 ms to
decode here (``benchmarks/bench_data.py`` prints the figures), which alone would cap a worker below 250 pairs/s, and
raw overlapping tiles would take ~3x the disk of raw whole images. Raw whole images also keep the crop distribution
of the original pipeline (uniform over the whole image) and its ``(seed, epoch, index)`` reproducibility.

Layout of a store folder (``<cache root>/sradm_extracted/<key>``):

* ``pixels.u8``: the images' RGB pixels (H, W, 3) uint8, one after the other in dataset row order;
* ``index.json``: format version, key, and per row ``[offset, height, width]`` or ``{"skip": reason}`` for a row
  that could not be decoded; ``total_bytes`` = the size ``pixels.u8`` must have.

The folder is built under a temporary name and renamed when complete, so a reader never sees half a store; a store
whose ``index.json`` does not parse, has another format version or whose ``pixels.u8`` has the wrong size is deleted
and extracted again (:func:`open_or_extract`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from multiprocessing import get_context
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

import numpy as np

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
PIXELS, INDEX = "pixels.u8", "index.json"
STORE_DIRNAME = "sradm_extracted"

__all__ = ["ImageStore", "StoreDamaged", "extract_images", "open_or_extract", "store_key", "default_cache_root"]


class StoreDamaged(Exception):
    """A store folder that cannot be used (partial, truncated, other format version)."""


class ImageStore:
    """Read side of an extracted store: image sizes and crops, without holding any decoded image.

    Args:
        folder: a complete store folder (see the module docstring).

    Raises:
        StoreDamaged: missing/unparsable ``index.json``, other format version, ``pixels.u8`` of the wrong size.
    """

    def __init__(self, folder: str):
        self.folder = str(folder)
        try:
            with open(os.path.join(self.folder, INDEX), encoding="utf-8") as handle:
                index = json.load(handle)
            entries, total = index["entries"], int(index["total_bytes"])
            version = index.get("version")
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise StoreDamaged(f"{INDEX} is missing or unreadable ({error})") from error
        if version != FORMAT_VERSION:
            raise StoreDamaged(f"format version {version!r}, expected {FORMAT_VERSION}")
        pixels = os.path.join(self.folder, PIXELS)
        size = os.path.getsize(pixels) if os.path.isfile(pixels) else -1
        if size != total:
            raise StoreDamaged(f"{PIXELS} has {size} bytes, the index says {total}")
        self.key = index.get("key")
        self._offsets = np.array([e[0] if isinstance(e, list) else -1 for e in entries], dtype=np.int64)
        self._shapes = np.array([e[1:3] if isinstance(e, list) else (0, 0) for e in entries], dtype=np.int64)
        self._skips = {i: e["skip"] for i, e in enumerate(entries) if not isinstance(e, list)}
        self._fd: Optional[int] = None
        self._pid: Optional[int] = None

    def __len__(self) -> int:
        return len(self._offsets)

    def __getstate__(self) -> Dict[str, Any]:  # a DataLoader worker opens its own file descriptor
        state = dict(self.__dict__)
        state["_fd"] = state["_pid"] = None
        return state

    def size(self, index: int) -> Optional[Tuple[int, int]]:
        """(height, width) of row ``index``, or None when the row could not be decoded (see :meth:`skip_reason`)."""
        if index in self._skips:
            return None
        h, w = self._shapes[index]
        return int(h), int(w)

    def skip_reason(self, index: int) -> Optional[str]:
        return self._skips.get(index)

    def _file(self) -> int:
        if self._fd is None or self._pid != os.getpid():  # after a fork: a descriptor of our own
            self._fd = os.open(os.path.join(self.folder, PIXELS), os.O_RDONLY)
            self._pid = os.getpid()
        return self._fd

    def read_crop(self, index: int, top: int, left: int, height: int, width: int) -> np.ndarray:
        """Pixels ``[top:top+height, left:left+width]`` of image ``index`` as a new (height, width, 3) uint8 array.

        One ``pread`` of the whole rows the crop covers (``height * W * 3`` bytes), then the columns are sliced out.
        """
        h, w = self._shapes[index]
        if index in self._skips or top < 0 or left < 0 or top + height > h or left + width > w:
            raise IndexError(f"crop {height}x{width} at ({top}, {left}) is outside image {index} of size {h}x{w}")
        row = int(w) * 3
        band = os.pread(self._file(), height * row, int(self._offsets[index]) + top * row)
        if len(band) != height * row:
            raise StoreDamaged(f"{PIXELS} of {self.folder} is shorter than its index says")
        return np.frombuffer(band, np.uint8).reshape(height, int(w), 3)[:, left : left + width].copy()

    def read_image(self, index: int) -> np.ndarray:
        """The whole image ``index`` as (H, W, 3) uint8 (tests and tools; training reads crops)."""
        h, w = self.size(index)
        return self.read_crop(index, 0, 0, h, w)


# ------------------------------------------------------------------------------------------------- keys and places
def default_cache_root(cache_dir: Optional[str] = None) -> str:
    """``<cache_dir or the datasets cache>/sradm_extracted``: stores live beside the ``datasets`` cache."""
    if cache_dir is None:
        import datasets

        cache_dir = str(datasets.config.HF_DATASETS_CACHE)
    return os.path.join(cache_dir, STORE_DIRNAME)


def _local_files(dataset, image_column: str) -> List[Tuple[str, int, int]]:
    """(path, size, mtime_ns) of every row whose image is a local file (not embedded bytes), in row order."""
    import pyarrow.compute as pc

    files = []
    table = dataset.select_columns([image_column]).with_format("arrow")
    for start in range(0, len(dataset), 4096):
        column = table[start : start + 4096].column(0)
        if not hasattr(column.type, "get_field_index") or column.type.get_field_index("path") < 0:
            return []  # not an image struct (e.g. a column of raw bytes): the fingerprint covers it
        paths = pc.struct_field(column, "path").to_pylist()
        embedded = pc.is_valid(pc.struct_field(column, "bytes")).to_pylist()
        for path, has_bytes in zip(paths, embedded):
            if path and not has_bytes and os.path.isfile(path):
                stat = os.stat(path)
                files.append((path, stat.st_size, stat.st_mtime_ns))
    return files


def store_key(dataset, image_column: str, preprocess: Optional[str]) -> str:
    """A key that changes whenever the images a store would hold change.

    It hashes the format version, the options that change the stored pixels (``image_column``, ``preprocess``),
    the number of rows, the ``datasets`` fingerprint (which follows the source, revision, split and selection) and,
    for rows that point at local files (an ``imagefolder``), every file's path, size and modification time: adding,
    removing, replacing or touching an image gives a new store.
    """
    digest = hashlib.sha256()
    fingerprint = getattr(dataset, "_fingerprint", None)
    parts = [FORMAT_VERSION, image_column, preprocess or "none", len(dataset), fingerprint]
    digest.update(json.dumps(parts).encode())
    for path, size, mtime in _local_files(dataset, image_column):
        digest.update(f"{path}\0{size}\0{mtime}\n".encode())
    return digest.hexdigest()[:24]


# ------------------------------------------------------------------------------------------------- extraction
def extract_images(
    values: Iterable[Any],
    folder: str,
    key: str,
    decode: Callable[[Any], Union[np.ndarray, str]],
    num_workers: int = 1,
) -> ImageStore:
    """Decode every image value (in order) into a new store at ``folder``; returns it opened.

    Args:
        values: the rows' image values (undecoded ``datasets`` dicts, paths, arrays...).
        folder: where the store goes; built in ``folder + ".tmp-<random>"`` and renamed when complete. If another
            process completed the same store first, that one is kept and opened.
        key: recorded in the index (see :func:`store_key`).
        decode: a picklable function value -> (H, W, 3) uint8 array, or a string (why the row cannot be used).
        num_workers: decoding processes (1: in this process).
    """
    tmp = f"{folder}.tmp-{uuid.uuid4().hex[:8]}"
    os.makedirs(tmp)
    entries: List[Any] = []
    offset = 0
    try:
        with open(os.path.join(tmp, PIXELS), "wb") as out:
            if num_workers > 1:
                # fork shares the import of training/data.py; the children only decode
                with get_context("fork").Pool(num_workers, initializer=_one_thread) as pool:
                    results = pool.imap(decode, values, chunksize=1)
                    offset = _write_all(results, out, entries)
            else:
                offset = _write_all(map(decode, values), out, entries)
            out.flush()
            os.fsync(out.fileno())
        index = {"version": FORMAT_VERSION, "key": key, "total_bytes": offset, "entries": entries}
        with open(os.path.join(tmp, INDEX), "w", encoding="utf-8") as handle:
            json.dump(index, handle)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.rename(tmp, folder)
        except OSError:  # another process finished the same store first (the target exists and is not empty)
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ImageStore(folder)


def _one_thread() -> None:
    """Pool initializer: one torch thread per decoding process (``celeba`` preprocessing resizes with torch; with
    the parent's thread count the processes oversubscribed the cores: 240 CelebA-size images took 122 s instead
    of 5.4 s on the loaded 2-core machine). SIGTERM gets its default action back: the forked process inherits
    train.py's handler, which would turn the pool's own terminate() into a traceback from every idle worker."""
    import signal

    import torch

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    torch.set_num_threads(1)


def _write_all(results: Iterable[Any], out, entries: List[Any]) -> int:
    offset = 0
    for result in results:
        if isinstance(result, str):
            entries.append({"skip": result})
            continue
        out.write(result.data)
        entries.append([offset, int(result.shape[0]), int(result.shape[1])])
        offset += result.nbytes
    return offset


def open_or_extract(
    dataset,
    image_column: str,
    decode: Callable[[Any], Union[np.ndarray, str]],
    preprocess: Optional[str] = None,
    cache_dir: Optional[str] = None,
    num_workers: int = 1,
) -> ImageStore:
    """The store of ``dataset``'s images: opened if a complete one exists, else extracted now.

    A damaged store (see :class:`ImageStore`) is deleted with a warning and extracted again. Unfinished
    ``.tmp-*`` folders older than a day (left by a killed extraction) are removed.

    Args:
        dataset: a map-style ``datasets.Dataset`` with ``image_column`` (cast to ``Image(decode=False)``).
        decode: see :func:`extract_images`; ``preprocess`` (the name of what ``decode`` applies) enters the key.
        cache_dir: the ``datasets`` cache folder (``--cache_dir``); default the ``datasets`` default.
        num_workers: decoding processes for a first extraction.
    """
    root = default_cache_root(cache_dir)
    os.makedirs(root, exist_ok=True)
    _remove_stale(root)
    key = store_key(dataset, image_column, preprocess)
    folder = os.path.join(root, key)
    if os.path.isdir(folder):
        try:
            return ImageStore(folder)
        except StoreDamaged as error:
            logger.warning("Extracted images in %s are damaged (%s); extracting them again.", folder, error)
            shutil.rmtree(folder, ignore_errors=True)
    started = time.perf_counter()
    logger.info("Extracting %d training images once into %s (%d processes)...", len(dataset), folder, num_workers)
    values = (row[image_column] for row in dataset.select_columns([image_column]))
    store = extract_images(values, folder, key, decode, num_workers=num_workers)
    logger.info("Extracted %d images (%d unreadable) in %.1f s, %.2f GiB.", len(store), len(store._skips),
                time.perf_counter() - started, os.path.getsize(os.path.join(folder, PIXELS)) / 2**30)
    return store


def _remove_stale(root: str, age_s: float = 86400.0) -> None:
    now = time.time()
    for name in os.listdir(root):
        path = os.path.join(root, name)
        if ".tmp-" in name and os.path.isdir(path) and now - os.path.getmtime(path) > age_s:
            shutil.rmtree(path, ignore_errors=True)
