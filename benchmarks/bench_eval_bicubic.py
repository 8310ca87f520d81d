"""Speed of ``sradm evaluate --methods bicubic`` on a DIV2K-sized set: 100 HR images of 1020x678 at 4x.

    python benchmarks/bench_eval_bicubic.py                    # 100 images, 3 end-to-end runs
    python benchmarks/bench_eval_bicubic.py --n 20 --repeats 1 --source synthetic

Writes the images (crops of scikit-image's ``retina`` photo, or synthetic structured images: gradients, shapes,
sinusoidal texture and noise) as PNG to a temporary folder, then prints:

- end to end: median wall seconds of the ``sradm evaluate`` command in a fresh process (Python start-up and imports
  included), images/s, the process's peak RSS;
- in process, split into loading (PNG decode, bottom/right crop, making the uint8 LR) and compute (bicubic up-sampling
  and the five metrics), median over the repeats, plus the per-metric cost on one image.

Numbers only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np


def synthetic(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    image = np.stack([x / w * 200, y / h * 180, (x + y) / (w + h) * 220], axis=-1)
    freq = rng.uniform(0.02, 0.2, 2)
    image += 30 * np.sin(x * freq[0])[..., None] * np.cos(y * freq[1])[..., None]
    for _ in range(12):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(10, 120)
        image[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = rng.integers(0, 256, 3)
    image += rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def photo_crops(h: int, w: int, n: int, seed: int) -> list[np.ndarray]:
    from skimage import data

    source = data.retina()  # 1411x1411 RGB
    rng = np.random.default_rng(seed)
    crops = []
    for i in range(n):
        top, left = rng.integers(0, source.shape[0] - h + 1), rng.integers(0, source.shape[1] - w + 1)
        crop = source[top : top + h, left : left + w]
        crops.append(np.ascontiguousarray(crop[::-1] if i % 2 else crop))
    return crops


def write_images(folder: str, n: int, h: int, w: int, source: str) -> str:
    from PIL import Image

    if source == "skimage":
        try:
            arrays = photo_crops(h, w, n, seed=0)
        except Exception as error:  # noqa: BLE001 - scikit-image or its data missing: fall back
            print(f"(skimage data unavailable: {error}; using synthetic images)")
            source, arrays = "synthetic", None
    if source == "synthetic":
        arrays = [synthetic(h, w, seed=i) for i in range(n)]
    for i, array in enumerate(arrays):
        Image.fromarray(array).save(os.path.join(folder, f"{i:04d}.png"))
    return source


def end_to_end(hr_dir: str, json_path: str, threads: int | None = None) -> tuple[float, int, int]:
    """(wall seconds, peak RSS in bytes, exit status) of one `sradm evaluate --methods bicubic` process."""
    script = shutil.which("sradm")
    command = [script] if script else [sys.executable, "-m", "sradm_diffusers.commands.cli"]
    command += ["evaluate", "--hr-dir", hr_dir, "--scale", "4", "--methods", "bicubic", "--json", json_path]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)  # torch's intra-op thread count in the child
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, env=env)
        _, status, usage = os.wait4(process.pid, 0)  # reaps it and gives its own rusage
        elapsed = time.perf_counter() - start
        code = os.waitstatus_to_exitcode(status)
        process.returncode = code
        if code not in (0,):
            err.seek(0)
            print(err.read().decode(errors="replace")[-2000:])
    return elapsed, usage.ru_maxrss * 1024, code


def in_process(hr_dir: str, repeats: int, threads: int | None = None) -> dict:
    import torch

    if threads:
        torch.set_num_threads(threads)
    from sradm_diffusers.metrics import quality as M
    from sradm_diffusers.commands.evaluate import Evaluator, iter_folder

    load_times, compute_times = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        items = list(iter_folder(hr_dir, 4))
        load_times.append(time.perf_counter() - start)
        evaluator = Evaluator(scale=4, methods=["bicubic"])
        start = time.perf_counter()
        for item in items:
            evaluator.score(item)
        compute_times.append(time.perf_counter() - start)
    item = items[0]
    sr = evaluator.super_resolve("bicubic", item.lr)
    parts = {}
    for name, fn in [
        ("bicubic up", lambda: evaluator.super_resolve("bicubic", item.lr)),
        ("psnr_rgb", lambda: M.psnr_rgb(sr, item.hr)),
        ("ssim_rgb", lambda: M.ssim_rgb(sr, item.hr)),
        ("psnr_y", lambda: M.psnr_y(sr, item.hr, 4)),
        ("ssim_y", lambda: M.ssim_y(sr, item.hr, 4)),
        ("lr_psnr", lambda: M.lr_psnr(sr, item.lr, 4)),
    ]:
        fn()
        start = time.perf_counter()
        for _ in range(3):
            fn()
        parts[name] = (time.perf_counter() - start) / 3
    return {
        "n": len(items),
        "hr_size": tuple(item.hr.shape[-2:]),
        "load": statistics.median(load_times),
        "compute": statistics.median(compute_times),
        "parts": parts,
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="number of HR images (default 100)")
    parser.add_argument("--size", default="1020x678", help="HR width x height (default 1020x678, DIV2K-like)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each measurement (median reported)")
    parser.add_argument("--source", choices=["skimage", "synthetic"], default="skimage")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--keep", metavar="DIR", help="write the images here and keep them (default: temp dir)")
    args = parser.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))

    folder = args.keep or tempfile.mkdtemp(prefix="bench_eval_")
    try:
        hr_dir = os.path.join(folder, "hr")
        os.makedirs(hr_dir, exist_ok=True)
        source = write_images(hr_dir, args.n, h, w, args.source)
        size_mb = sum(os.path.getsize(os.path.join(hr_dir, f)) for f in os.listdir(hr_dir)) / 2**20
        print(f"{args.n} HR images {w}x{h} ({source}, {size_mb:.0f} MB of PNG) in {hr_dir}; load average "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")

        runs = [end_to_end(hr_dir, os.path.join(folder, "result.json"), args.threads) for _ in range(args.repeats)]
        wall = statistics.median(r[0] for r in runs)
        peak = max(r[1] for r in runs)
        status = {r[2] for r in runs}
        print(
            f"end to end (sradm evaluate --methods bicubic, fresh process): median {wall:.2f} s over {args.repeats} "
            f"run(s), {args.n / wall:.1f} images/s, peak RSS {peak / 2**20:.0f} MiB, exit status {sorted(status)}"
        )

        stats = in_process(hr_dir, args.repeats, args.threads)
        total = stats["load"] + stats["compute"]
        print(
            f"in process ({stats['threads']} torch threads, HR cropped to {stats['hr_size'][1]}x{stats['hr_size'][0]}):"
            f" load+LR {stats['load']:.2f} s, compute {stats['compute']:.2f} s "
            f"({stats['n'] / stats['compute']:.1f} images/s), total {total:.2f} s"
        )
        print("per image: " + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in stats["parts"].items()))
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
