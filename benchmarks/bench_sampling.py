"""Sampling cost of SRADMPipeline on this machine: ms per denoising step, peak memory, time outside the U-Net.

Each (preset, LR size) case runs in a fresh subprocess so that its peak resident memory (ru_maxrss) is its own.

    python benchmarks/bench_sampling.py                       # tiny and div2k-x4, LR 64x64 and 128x128, 4x
    python benchmarks/bench_sampling.py --presets tiny --sizes 64 --steps 10

Prints one line per case: median ms per U-Net step, ms for the whole call, the share of the call spent outside
the U-Net (preprocessing, bicubic base, encoder, condition, scheduler steps, postprocessing), peak RSS.
Random weights: the cost does not depend on their values.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def measure(preset: str, size: int, steps: int, threads: int) -> dict:
    import numpy as np
    import torch

    from sradm_diffusers import build_pipeline

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    pipe = build_pipeline(preset, upscale_factor=4)
    pipe.set_progress_bar_config(disable=True)
    image = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    step_times: list[float] = []
    forward = pipe.unet.forward

    def timed_forward(*args, **kwargs):
        start = time.perf_counter()
        out = forward(*args, **kwargs)
        step_times.append(time.perf_counter() - start)
        return out

    pipe.unet.forward = timed_forward
    pipe(image, num_inference_steps=1)  # warm-up (allocator, kernels)
    step_times.clear()
    start = time.perf_counter()
    pipe(image, num_inference_steps=steps, generator=torch.Generator().manual_seed(0))
    total = time.perf_counter() - start
    return {
        "preset": preset,
        "lr_size": size,
        "steps": steps,
        "ms_per_step": 1000 * statistics.median(step_times),
        "call_ms": 1000 * total,
        "outside_unet_share": (total - sum(step_times)) / total,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_after_load_mib": rss_loaded / 1024,
        "threads": threads,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="tiny,div2k-x4")
    parser.add_argument("--sizes", default="64,128", help="LR side lengths (square inputs), comma-separated")
    parser.add_argument("--steps", type=int, default=5, help="denoising steps per timed call")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case and print JSON
    args = parser.parse_args()

    if args.case:
        preset, size = args.case.split(":")
        print(json.dumps(measure(preset, int(size), args.steps, args.threads)))
        return

    print(f"{'preset':<10} {'LR':>7} {'HR':>9} {'ms/step':>10} {'call ms':>10} {'outside U-Net':>14} {'peak RSS':>10}")
    for preset in args.presets.split(","):
        for size in map(int, args.sizes.split(",")):
            command = [sys.executable, __file__, "--case", f"{preset}:{size}", "--steps", str(args.steps),
                       "--threads", str(args.threads)]
            result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
            print(
                f"{preset:<10} {size:>3}x{size:<3} {4 * size:>4}x{4 * size:<4} {result['ms_per_step']:>10.1f} "
                f"{result['call_ms']:>10.0f} {100 * result['outside_unet_share']:>13.1f}% "
                f"{result['peak_rss_mib']:>8.0f} MiB"
            )


if __name__ == "__main__":
    main()
