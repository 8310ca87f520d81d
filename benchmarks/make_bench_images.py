"""Make a DIV2K-sized benchmark folder (default 800 PNGs of 2040x1356) from the photos on this machine.

Each output image is a random crop of a random source photo, resized by a random factor so that the crop is
2040x1356, randomly flipped, with mild Gaussian noise (sigma 2 of 255, about a camera's) and PNG compression level 3,
so that the files are about as large as DIV2K's (its training PNGs average 4.4 MB). Deterministic for a given seed and
source folder. Keep the output outside the repository; it is only input for ``benchmarks/bench_data.py``::

    apt-get download gnome-backgrounds && dpkg -x gnome-backgrounds_*.deb /tmp/gbg
    python benchmarks/make_bench_images.py --source /tmp/gbg/usr/share/backgrounds/gnome --output /work/bench_div2k
"""

from __future__ import annotations

import argparse
import functools
import os
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image

SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


@functools.lru_cache(maxsize=None)
def _source(path: str) -> Image.Image:
    """Each source photo decoded once per process (a 4096 px WebP takes longer to decode than the rest of a job)."""
    return Image.open(path).convert("RGB")


def make_one(job) -> str:
    index, sources, out_dir, width, height, seed, level = job
    path = Path(out_dir) / f"{index:04d}.png"
    if path.exists():  # an earlier, interrupted run made it
        return str(path)
    rng = np.random.default_rng([seed, index])
    source = _source(sources[rng.integers(len(sources))])
    sw, sh = source.size
    # crop a (factor*width, factor*height) window, resized to (width, height)
    max_factor = min(sw / width, sh / height)
    factor = rng.uniform(min(0.5, max_factor), max_factor)
    cw, ch = int(width * factor), int(height * factor)
    left, top = int(rng.integers(sw - cw + 1)), int(rng.integers(sh - ch + 1))
    image = source.crop((left, top, left + cw, top + ch)).resize((width, height), Image.BICUBIC)
    if rng.integers(2):
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    pixels = np.asarray(image, dtype=np.float32) + 2.0 * rng.standard_normal((height, width, 3), dtype=np.float32)
    tmp = path.with_suffix(".tmp.png")
    Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8)).save(tmp, compress_level=level)
    tmp.rename(path)
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", required=True, help="Folder of photos (searched recursively).")
    parser.add_argument("--output", required=True, help="Output folder (created; keep it outside the repository).")
    parser.add_argument("--count", type=int, default=800)
    parser.add_argument("--width", type=int, default=2040)
    parser.add_argument("--height", type=int, default=1356)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--compress_level", type=int, default=3,
                        help="PNG zlib level: 3 gives ~4.5 MB files (DIV2K: 4.4 MB) and encodes 3x faster than 6.")
    args = parser.parse_args()

    sources = sorted(str(p) for p in Path(args.source).rglob("*") if p.suffix.lower() in SUFFIXES)
    sources = [p for p in sources if min(Image.open(p).size) >= min(args.width, args.height) // 2]
    if not sources:
        raise SystemExit(f"no photos of at least {min(args.width, args.height) // 2} px under {args.source!r}.")
    os.makedirs(args.output, exist_ok=True)
    jobs = [(i, sources, args.output, args.width, args.height, args.seed, args.compress_level)
            for i in range(args.count)]
    with Pool(args.processes) as pool:
        for done, _ in enumerate(pool.imap_unordered(make_one, jobs), 1):
            if done % 100 == 0:
                print(f"{done}/{args.count}", flush=True)
    total = sum(f.stat().st_size for f in Path(args.output).glob("*.png"))
    print(f"{args.count} images from {len(sources)} photos in {args.output} ({total / 2**30:.2f} GiB)")


if __name__ == "__main__":
    main()
