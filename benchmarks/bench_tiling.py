"""Tiled sampling with the bundled demo model: peak memory, time per step, and how time per step grows with area.

Each case runs in a fresh subprocess, so that its peak resident memory (``ru_maxrss``) is its own; the cases are
run interleaved (``--rounds``) and medians are printed, so that a shared machine affects them alike.

    python benchmarks/bench_tiling.py                           # 510x339 -> 2040x1356, and 255x170 vs 510x340
    python benchmarks/bench_tiling.py --sizes 510x339 --tiles 128,96 --steps 2 --rounds 1
    python benchmarks/bench_tiling.py --sizes 510x339 --allocator glibc,trim,keep,keep+trim   # C heap policies

``--allocator``: ``glibc`` leaves the C allocator alone (the Python API's default); ``trim`` returns the heap's
free pages after every U-Net call (``memory.trim_heap_around_each_call``); ``keep`` keeps freed memory in the
process instead of faulting in fresh pages every step (``memory.keep_freed_memory``); ``keep+trim`` both.

Prints per case: tiles, seconds per denoising step (median over steps after the first), seconds for the encoder
and setup before the first step, peak RSS. Then the ratio of time per step for 4x the area.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def measure(width: int, height: int, tile: int, overlap: int, steps: int, threads: int, allocator: str) -> dict:
    import numpy as np
    import torch

    from sradm_diffusers import DEMO_MODEL, SRADMPipeline
    from sradm_diffusers.sampling.memory import keep_freed_memory, trim_heap_around_each_call
    from sradm_diffusers.sampling.tiling import plan_tiles, unet_alignment

    torch.set_num_threads(threads)
    pipe = SRADMPipeline.from_pretrained(DEMO_MODEL)
    pipe.set_progress_bar_config(disable=True)
    if "keep" in allocator.split("+") and not keep_freed_memory():
        raise SystemExit("--allocator keep needs glibc")
    if "trim" in allocator.split("+") and not trim_heap_around_each_call(pipe.unet):
        raise SystemExit("--allocator trim needs glibc")
    if tile:
        pipe.enable_tiling(tile, overlap)
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    stamps: list[float] = []

    def stamp(pipe, step, timestep, tensors):
        stamps.append(time.perf_counter())
        return tensors

    start = time.perf_counter()
    pipe(image, num_inference_steps=steps, generator=torch.Generator().manual_seed(0), output_type="np",
         callback_on_step_end=stamp)
    total = time.perf_counter() - start
    step_times = [b - a for a, b in zip(stamps, stamps[1:])]
    scale = pipe.config.upscale_factor
    hr_h, hr_w = -(-height * scale // 4) * 4, -(-width * scale // 4) * 4
    tiles = plan_tiles(hr_h, hr_w, tile * scale, overlap * scale, unet_alignment(pipe.unet, scale)) if tile else []
    return {
        "size": f"{width}x{height}", "allocator": allocator, "tile": tile, "overlap": overlap, "tiles": len(tiles) or 1,
        "tile_area_ratio": sum((t.bottom - t.top) * (t.right - t.left) for t in tiles) / (hr_h * hr_w) if tiles else 1,
        "s_per_step": statistics.median(step_times) if step_times else float("nan"),
        "s_before_first_step_end": stamps[0] - start, "call_s": total,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="510x339,255x170,510x340", help="LR WxH, comma-separated")
    parser.add_argument("--tiles", default="128", help="tile sizes in LR pixels (0: untiled), comma-separated")
    parser.add_argument("--overlap", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3, help="steps per call (the first one is not timed)")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved repetitions of every case")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--allocator", default="glibc", help="glibc, trim, keep, keep+trim; comma-separated")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: one case, JSON out
    args = parser.parse_args()
    if args.case:
        size, tile, allocator = args.case.split(":")
        width, height = map(int, size.split("x"))
        print(json.dumps(measure(width, height, int(tile), args.overlap, args.steps, args.threads, allocator)))
        return

    cases = [(size, int(tile), allocator) for size in args.sizes.split(",") for tile in args.tiles.split(",")
             for allocator in args.allocator.split(",")]
    results: dict[tuple, list[dict]] = {case: [] for case in cases}
    for _ in range(args.rounds):
        for size, tile, allocator in cases:
            command = [sys.executable, __file__, "--case", f"{size}:{tile}:{allocator}", "--overlap", str(args.overlap),
                       "--steps", str(args.steps), "--threads", str(args.threads)]
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            results[(size, tile, allocator)].append(json.loads(out.strip().splitlines()[-1]))
            print(out.strip().splitlines()[-1], flush=True)  # each case as it finishes
    print(f"{'LR':>9} {'alloc':>9} {'tile':>5} {'tiles':>6} {'tiled area':>10} {'s/step':>8} {'peak RSS MiB':>13}")
    per_step = {}
    for (size, tile, allocator), runs in results.items():
        s = statistics.median(r["s_per_step"] for r in runs)
        rss = max(r["peak_rss_mib"] for r in runs)
        per_step[(size, tile, allocator)] = s
        print(f"{size:>9} {allocator:>9} {tile:>5} {runs[0]['tiles']:>6} {runs[0]['tile_area_ratio']:>10.2f} {s:>8.2f} {rss:>13.0f}")
    sizes = args.sizes.split(",")
    for tile, allocator in ((t, a) for t in args.tiles.split(",") for a in args.allocator.split(",")):
        if "255x170" in sizes and "510x340" in sizes:
            ratio = per_step[("510x340", int(tile), allocator)] / per_step[("255x170", int(tile), allocator)]
            print(f"tile {tile}, {allocator}: 4x the area (255x170 -> 510x340) costs {ratio:.2f}x the time per step")


if __name__ == "__main__":
    main()
