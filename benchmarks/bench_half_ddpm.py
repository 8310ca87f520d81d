#!/usr/bin/env python
"""Where half-precision DDPM sampling lost its time (issue 19: fp16, 100 steps, 21 generators, 4x slower than fp32).

Before the fix the pipeline kept x_t in the U-Net's dtype, so every DDPM step drew its noise as
``randn_tensor(..., dtype=float16)`` from a list of CPU generators: one CPU ``torch.randn`` per generator in
float16. Torch's CPU normal kernel vectorizes float32 only; float16 went through a scalar Box-Muller on half values
with its own uniform draws (torch <= 2.12), so it was slower *and drew other numbers than float32* (the half
result then followed other noise). The step's thresholding also upcast and downcast x_0 every step. Now x_t and
the scheduler stay float32 and only the U-Net runs in half precision.

This script times, on this machine's torch, the DDPM scheduler step alone (the demo model's scheduler config,
21 CPU generators, 21 x 3 x H x W) with a float16 model output (the old path) and a float32 one (the new path), and
one CPU randn per dtype, and says whether float16 randn draws the float32 numbers here.

    python benchmarks/bench_half_ddpm.py [--size 256] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from diffusers import DDPMScheduler

from sradm_diffusers import DEMO_MODEL


def median_ms(fn, rounds: int) -> float:
    fn()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=21)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    scheduler = DDPMScheduler.from_pretrained(os.path.join(DEMO_MODEL, "scheduler"))
    scheduler.set_timesteps(100)
    t = scheduler.timesteps[50]
    shape = (args.batch, 3, args.size, args.size)
    generators = [torch.Generator().manual_seed(k) for k in range(args.batch)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; DDPM step on {shape}, {args.batch} CPU "
          f"generators, thresholding={scheduler.config.thresholding}")
    for dtype in (torch.float16, torch.float32):
        sample, output = torch.randn(shape).to(dtype), torch.randn(shape).to(dtype)
        ms = median_ms(lambda: scheduler.step(output, t, sample, generator=generators), args.rounds)
        randn = median_ms(lambda: torch.randn(shape[1:], generator=generators[0], dtype=dtype), args.rounds)
        print(f"{str(dtype):14} scheduler step {ms:8.1f} ms; one CPU randn of {shape[1:]} {randn:6.1f} ms")
    half = torch.randn(100000, generator=torch.Generator().manual_seed(0), dtype=torch.float16).float()
    full = torch.randn(100000, generator=torch.Generator().manual_seed(0)).half().float()
    print(f"float16 randn draws the float32 numbers (rounded) in this torch: {torch.equal(half, full)}")


if __name__ == "__main__":
    main()
