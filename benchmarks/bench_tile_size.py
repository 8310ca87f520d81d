"""What small ``--tile`` sizes cost: seconds for 2 DDPM steps on a 64x64 input, untiled and in tiles of N px.

    python benchmarks/bench_tile_size.py                  # demo model, tiles 64 32 16 8 4, overlap 0, 1 thread
    python benchmarks/bench_tile_size.py --tiles 32 16 --threads 2

Every tile is a U-Net call with its own fixed cost and blend margin, so below some size tiling stops saving memory
that matters and only adds time; ``sradm upscale`` refuses tiles under ``upscale.MIN_TILE`` for that reason.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, nargs="+", default=[64, 32, 16, 8, 4])
    parser.add_argument("--size", type=int, default=64, help="input side in pixels (default 64)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    from sradm_diffusers import DEMO_MODEL, SRADMPipeline

    torch.set_num_threads(args.threads)
    pipe = SRADMPipeline.from_pretrained(DEMO_MODEL)
    pipe.set_progress_bar_config(disable=True)
    image = np.random.default_rng(0).integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
    baseline = None
    for tile in [None, *args.tiles]:
        if tile is None:
            pipe.disable_tiling()
        else:
            pipe.enable_tiling(tile, 0)
        start = time.perf_counter()
        pipe(image, num_inference_steps=2, generator=torch.Generator().manual_seed(0))
        seconds = time.perf_counter() - start
        baseline = seconds if baseline is None else baseline
        label = "untiled" if tile is None else f"tile {tile:3d}"
        print(f"{label}: {seconds:6.2f} s for 2 steps ({seconds / baseline:4.1f}x untiled)", flush=True)


if __name__ == "__main__":
    main()
