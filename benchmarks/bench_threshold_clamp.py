"""What skipping dynamic thresholding's quantile saves per denoising step (sampling.prediction.thresholding_as_clamp).

With ``sample_max_value=1`` (every SRADM scheduler config) the threshold is always 1, so the schedulers' per-step
``torch.quantile`` of |x_0| over the whole image (a sort) only feeds a clamp. Prints the median time of that quantile
and of the clamp that replaces it, per output size and thread count.

    python benchmarks/bench_threshold_clamp.py
"""

from __future__ import annotations

import argparse
import statistics
import timeit

import torch


def median_ms(fn, repeats: int) -> float:
    return statistics.median(timeit.repeat(fn, number=1, repeat=repeats)) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["512x512", "2040x1356"], help="output sizes WxH")
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"{'output':>10} {'threads':>7} {'quantile ms':>12} {'clamp ms':>9}")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for size in args.sizes:
            width, height = map(int, size.split("x"))
            x0 = torch.randn(1, 3, height, width)
            quantile = median_ms(lambda: torch.quantile(x0.abs().reshape(1, -1), 0.995, dim=1), args.repeats)
            clamp = median_ms(lambda: x0.clamp(-1.0, 1.0), args.repeats)
            print(f"{size:>10} {threads:>7} {quantile:12.1f} {clamp:9.1f}")


if __name__ == "__main__":
    main()
