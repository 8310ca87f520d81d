#!/usr/bin/env python
"""fp32 vs bf16 for one demo U-Net step on this CPU, in one process: is ``--dtype bf16`` worth it here?

Prints the CPU's model name, whether it has native bfloat16 (``sradm_diffusers.cpu.native_bf16``), and the median
time of one U-Net step (``torch.no_grad``, channels_last as the pipeline runs it) per dtype and output size.

    python benchmarks/bench_cpu_dtype.py [--sizes 128 256] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from sradm_diffusers import DEMO_MODEL, SRADMPipeline
from sradm_diffusers.cpu import cpu_flags, native_bf16


def step_ms(unet, size: int, dtype: torch.dtype, rounds: int) -> float:
    """Median ms of one U-Net call on a (1, 3, size, size) x_t with conditioning features of the LR size."""
    scale = unet.config.upscale_factor
    x = torch.randn(1, 3, size, size, dtype=dtype)
    features = torch.randn(1, unet.config.cond_channels, size // scale, size // scale, dtype=dtype)
    t = torch.tensor([50])
    times = []
    with torch.no_grad():
        unet(x, t, lr_features=features)  # warm-up
        for _ in range(rounds):
            start = time.perf_counter()
            unet(x, t, lr_features=features)
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 "unknown CPU")
    flags = sorted(f for f in cpu_flags() if "bf16" in f or f.startswith("amx"))
    print(f"{model}; {torch.get_num_threads()} threads; bf16 flags: {flags or 'none'}; native bf16: {native_bf16()}")
    pipe = SRADMPipeline.from_pretrained(DEMO_MODEL)
    for size in args.sizes:
        fp32 = step_ms(pipe.unet.to(torch.float32), size, torch.float32, args.rounds)
        bf16 = step_ms(pipe.unet.to(torch.bfloat16), size, torch.bfloat16, args.rounds)
        print(f"demo U-Net step, {size}x{size} output: fp32 {fp32:.0f} ms, bf16 {bf16:.0f} ms, bf16 is "
              f"{fp32 / bf16:.2f}x as fast")


if __name__ == "__main__":
    main()
