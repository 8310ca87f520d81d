"""Throughput of the training input pipeline: the loader ``training/train.py`` builds, on a folder of images.

It builds the data exactly as ``train.py`` does (``load_training_data``: ``datasets`` imagefolder, then
``make_train_dataset`` with the image store; ``make_loader``: the same sampler, workers, collate) and prints:

1. first-time preparation, timed separately: the ``datasets`` imagefolder scan and the one-time extraction of the
   images into the store (skipped when a store of the same images exists; ``--fresh`` deletes it first);
2. the steady state: after ``--warmup_batches`` batches (workers started, caches warm), the training pairs per
   second of ``--batches`` batches in total and per worker, the pairs per CPU-second the workers used (what a
   worker makes on a core of its own; on a shared machine the wall-clock rate also measures the others), the peak resident memory (RSS) of each loader
   worker sampled every 20 ms with psutil (RSS counts the pages a worker shares with its parent after fork,
   torch's libraries mostly, so it is an upper bound of what the worker adds);
3. with ``--profile``, the cost of each piece of one pair in this process (one thread): decoding a whole PNG,
   decoding a 480 px PNG tile (BasicSR's sub-image format), reading a crop from the store, making the pair from
   the crop (float conversion, flip, ``imresize``), and ``imresize`` alone.

The machine's other load changes every figure; the load average is printed. Numbers are printed, never asserted::

    python benchmarks/make_bench_images.py --source /tmp/gbg/usr/share/backgrounds/gnome --output /work/bench_div2k
    python benchmarks/bench_data.py --train_data_dir /work/bench_div2k --resolution 160 --scale 4 --workers 1
    python benchmarks/bench_data.py --train_data_dir /work/bench_div2k --resolution 160 --scale 4 --workers 1 \\
        --no-extract_images --batches 3      # the previous pipeline: decode the PNG for every pair
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # the repository root: `training` is a package


class WorkerMemory:
    """Peak RSS and USS (MiB) of each child process of this one, sampled every ``interval`` seconds in a thread.

    RSS counts every page mapped into the worker, including those it shares with its parent after fork (torch's
    libraries, the parent's heap); USS (unique set size, from /proc/PID/smaps) only the pages no other process
    maps: what the worker itself holds.
    """

    def __init__(self, interval: float = 0.1):
        import psutil

        self.process, self.interval = psutil.Process(), interval
        self.peaks: dict[int, float] = {}
        self.unique: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for child in self.process.children():
                try:
                    info = child.memory_full_info()
                except Exception:  # noqa: BLE001 - a child that just exited
                    continue
                self.peaks[child.pid] = max(self.peaks.get(child.pid, 0.0), info.rss / 2**20)
                self.unique[child.pid] = max(self.unique.get(child.pid, 0.0), info.uss / 2**20)
            time.sleep(self.interval)

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far by the live children (the loader workers)."""
        total = 0.0
        for child in self.process.children():
            try:
                times = child.cpu_times()
            except Exception:  # noqa: BLE001
                continue
            total += times.user + times.system
        return total

    def __enter__(self) -> "WorkerMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def training_args(options, cache_dir: str):
    from training import train

    argv = ["--stage", "encoder", "--train_data_dir", options.train_data_dir, "--resolution",
            str(options.resolution), "--scale", str(options.scale), "--train_batch_size", str(options.batch_size),
            "--dataloader_num_workers", str(options.workers), "--cache_dir", cache_dir, "--random_flip",
            "--report_to", "none", "--preprocess", options.preprocess]
    if options.extract_images is not None:
        argv.append("--extract_images" if options.extract_images else "--no-extract_images")
    if options.max_train_samples:
        argv += ["--max_train_samples", str(options.max_train_samples)]
    return train.parse_args(argv)


def profile_pieces(options, train_set) -> None:
    """Milliseconds per piece of one pair, in this process, one thread."""
    import numpy as np
    import torch
    from PIL import Image

    from training import data as sr_data

    from sradm_diffusers.imresize import imresize

    torch.set_num_threads(1)
    files = sorted(os.path.join(options.train_data_dir, f) for f in os.listdir(options.train_data_dir)
                   if f.lower().endswith((".png", ".jpg", ".jpeg", ".webp")))[:8]
    rows = []

    def timed(name, fn, repeats):
        fn()
        started = time.perf_counter()
        for i in range(repeats):
            fn(i)
        rows.append((name, (time.perf_counter() - started) / repeats * 1e3))

    timed("decode a whole image file", lambda i=0: Image.open(files[i % len(files)]).load(), 8)
    whole = np.asarray(Image.open(files[0]).convert("RGB"))
    tiles = []
    for k in range(4):
        buffer = io.BytesIO()
        Image.fromarray(whole[k * 100 : k * 100 + 480, k * 200 : k * 200 + 480]).save(buffer, "PNG", compress_level=3)
        tiles.append(buffer.getvalue())
    timed("decode a 480 px PNG tile", lambda i=0: Image.open(io.BytesIO(tiles[i % 4])).load(), 40)
    rgb = Image.fromarray(whole)
    r = options.resolution
    timed("make_pair on a decoded image", lambda i=0: sr_data.make_pair(rgb, r, options.scale), 100)
    store = getattr(train_set, "store", None)
    if store is not None:
        n = len(store)
        gen = np.random.default_rng(0)

        def read(i=0):
            index = int(gen.integers(n))
            size = store.size(index)
            if size and min(size) >= r:
                store.read_crop(index, int(gen.integers(size[0] - r + 1)), int(gen.integers(size[1] - r + 1)), r, r)

        timed("store.read_crop (random image, position)", read, 400)
    crop = whole[:r, :r].copy()
    timed("pair_from_crop (float, flip, imresize)", lambda i=0: sr_data.pair_from_crop(crop, options.scale), 400)
    hr = torch.rand(3, r, r)
    timed(f"imresize {r} -> {r // options.scale} alone", lambda i=0: imresize(hr, 1 / options.scale), 400)
    timed("one dataset item (store or decode path)", lambda i=0: train_set[(0, i % len(train_set))], 100)
    print("\nper-piece cost, this process, 1 thread:")
    for name, ms in rows:
        print(f"  {name:<44} {ms:8.3f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train_data_dir", required=True)
    parser.add_argument("--resolution", type=int, default=160)
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1, help="DataLoader worker processes.")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=40, help="Timed batches.")
    parser.add_argument("--warmup_batches", type=int, default=4)
    parser.add_argument("--preprocess", choices=("none", "celeba"), default="none")
    parser.add_argument("--extract_images", action=argparse.BooleanOptionalAction, default=None,
                        help="As train.py's flag (default: train.py's automatic choice).")
    parser.add_argument("--max_train_samples", type=int, default=None)
    parser.add_argument("--cache_dir", default=None,
                        help="datasets cache (and store) folder; default a temporary folder removed afterwards.")
    parser.add_argument("--fresh", action="store_true", help="Delete an existing store first (time extraction).")
    parser.add_argument("--profile", action="store_true", help="Also time the pieces of one pair.")
    options = parser.parse_args()

    import psutil
    import torch
    from accelerate import Accelerator

    from training import train
    from training import train_utils as tu

    temporary = options.cache_dir is None
    cache_dir = tempfile.mkdtemp(prefix="bench_data_") if temporary else options.cache_dir
    if options.fresh:
        shutil.rmtree(os.path.join(cache_dir, "sradm_extracted"), ignore_errors=True)
    print(f"load average before: {os.getloadavg()[0]:.2f} (2-core machine shared with other jobs)")
    try:
        args = training_args(options, cache_dir)
        accelerator = Accelerator(cpu=True)
        started = time.perf_counter()
        from training import data as sr_data

        dataset = sr_data.load_image_dataset(train_data_dir=args.train_data_dir, split=args.train_split,
                                             image_column=args.image_column, cache_dir=cache_dir)
        scanned = time.perf_counter() - started
        root = os.path.join(cache_dir, "sradm_extracted")
        existed = set(os.listdir(root)) if os.path.isdir(root) else set()
        started = time.perf_counter()
        train_set, num_samples = train.load_training_data(args, accelerator)
        prepared = time.perf_counter() - started
        store = getattr(train_set, "store", None)
        print(f"{num_samples} images; imagefolder scan {scanned:.1f} s; "
              + (f"image store {'opened' if os.path.basename(store.folder) in existed else 'extracted (first time)'}"
                 f" in {prepared:.1f} s ({os.path.getsize(os.path.join(store.folder, 'pixels.u8')) / 2**30:.2f} "
                 f"GiB at {store.folder})"
                 if store is not None else f"no store (decode per pair); dataset ready in {prepared:.1f} s"))

        sampler = tu.ShardedEpochSampler(num_samples, args.train_batch_size, seed=args.seed)
        loader = train.make_loader(args, train_set, sampler, torch.device("cpu"))
        with WorkerMemory() as memory:
            epoch, count, iterator = 0, 0, None
            times = []

            def next_batch():
                nonlocal epoch, iterator
                while True:
                    if iterator is None:
                        sampler.set_position(epoch, 0)
                        iterator = iter(loader)
                    batch = next(iterator, None)
                    if batch is not None:
                        return batch
                    epoch, iterator = epoch + 1, None

            for _ in range(options.warmup_batches):
                next_batch()
            started, cpu_started = time.perf_counter(), memory.cpu_seconds()
            for _ in range(options.batches):
                batch = next_batch()
                count += 0 if batch["hr"] is None else batch["hr"].shape[0]
                times.append(time.perf_counter())
            elapsed = time.perf_counter() - started
            cpu = memory.cpu_seconds() - cpu_started
            del iterator, loader
        rate = count / elapsed
        workers = max(options.workers, 1)
        print(f"steady state: {count} pairs in {elapsed:.2f} s = {rate:.1f} pairs/s total, {rate / workers:.1f} per "
              f"worker ({options.workers} worker process(es), batch {options.batch_size}, {options.resolution} px HR, "
              f"{options.scale}x)")
        if options.workers > 0 and cpu > 0:
            print(f"per core: the workers used {cpu:.2f} CPU-s = {count / cpu:.1f} pairs per CPU-second of a worker "
                  f"(what one worker makes on a core of its own, independent of the machine's other load)")
        if memory.peaks:
            peaks, unique = sorted(memory.peaks.values()), sorted(memory.unique.values())
            print(f"peak RSS per worker: {', '.join(f'{p:.0f}' for p in peaks)} MiB (median "
                  f"{statistics.median(peaks):.0f}); peak USS (its own pages) per worker: "
                  f"{', '.join(f'{p:.0f}' for p in unique)} MiB; main process RSS "
                  f"{psutil.Process().memory_info().rss / 2**20:.0f} MiB")
        print(f"load average after: {os.getloadavg()[0]:.2f}")
        if options.profile:
            profile_pieces(options, train_set)
    finally:
        if temporary:
            shutil.rmtree(cache_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
