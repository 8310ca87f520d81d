"""Does ``torch.compile`` pay off for the U-Net on this CPU? Compile time, ms per step, and the output change.

    python benchmarks/bench_compile.py                 # demo model, 256 and 512 px outputs, 2 threads
    python benchmarks/bench_compile.py --sizes 256 --threads 1

Per size: the eager step (channels_last inference path, median of ``--repeats``), the first compiled call (the
compilation), the compiled step (median), their ratio, and the largest difference between the two outputs. Inductor
runs with ``freezing`` (weights folded as constants, which lets it pre-pack convolutions). Each size is compiled
anew (a new shape recompiles), which is what a tiled or multi-size workload would pay.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="256,512", help="HR output sides, comma-separated")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import torch._inductor.config as inductor_config

    from sradm_diffusers import DEMO_MODEL, SRADMPipeline

    torch.set_num_threads(args.threads)
    inductor_config.freezing = True
    unet = SRADMPipeline.from_pretrained(DEMO_MODEL).unet.eval()
    scale = unet.config.upscale_factor
    print(f"{'size':>5} {'eager ms':>9} {'compile s':>10} {'compiled ms':>12} {'speed-up':>9} {'max |diff|':>11}")
    for size in map(int, args.sizes.split(",")):
        generator = torch.Generator().manual_seed(0)
        sample = torch.randn(1, 3, size, size, generator=generator)
        features = torch.randn(1, unet.config.cond_channels, size // scale, size // scale, generator=generator)
        timestep = torch.tensor(500)
        with torch.no_grad():
            cond = unet.condition(features)
            reference = unet(sample, timestep, cond).sample
            compiled = torch.compile(unet)
            start = time.perf_counter()
            out = compiled(sample, timestep, cond).sample
            compile_s = time.perf_counter() - start
            eager = median_ms(lambda: unet(sample, timestep, cond), args.repeats)
            fast = median_ms(lambda: compiled(sample, timestep, cond), args.repeats)
        diff = (out - reference).abs().max().item()
        print(f"{size:>5} {eager:>9.0f} {compile_s:>10.1f} {fast:>12.0f} {eager / fast:>8.2f}x {diff:>11.1e}", flush=True)


if __name__ == "__main__":
    main()
