"""Cost of one U-Net denoising step on this machine: old code vs the fast inference path, fp32 vs bf16.

    python benchmarks/bench_sampling.py                                  # demo + div2k-x4, 256² and 1024² outputs
    python benchmarks/bench_sampling.py --models demo --sizes 256 --paths reference,fast --repeats 5

Cases run one per subprocess, so that each peak resident memory (ru_maxrss) is its own, and the paths of one case
run back to back (interleaved rounds with ``--rounds``), so that their ratio is measured under the same load.

Paths:
  reference  the U-Net as it was at ``--reference-commit`` (before the fast path), checked out of git into a
             temporary folder and imported from there; contiguous layout, as the pipeline ran it.
  fast       this checkout: under ``torch.no_grad()`` the U-Net runs channels_last end to end with in-place
             activations and the sliced Mish (``SRADMUNet.forward``, ``models/activations.py``); fp32, same outputs
             within 1e-4 (tests/test_fast_inference.py). With ``--allocator keep`` (the default) in a process that
             keeps freed memory (``memory.keep_freed_memory``), as ``sradm`` runs; ``--allocator glibc`` without.
  bf16       the fast path with the U-Net's weights and inputs in bfloat16 (``sradm upscale --dtype bf16``).

Per case it prints the median ms per U-Net step (a direct ``unet(x_t, t, cond)`` call with ``cond`` from
``unet.condition``, as in the pipeline's loop), ms per output megapixel, the FLOPs of one step
(``torch.utils.flop_counter.FlopCounterMode``, counted on the meta device) and the achieved GFLOP/s, and that as
a percentage of the throughput of a plain 3x3 convolution (64 -> 64 channels, 256², channels_last, same dtype)
timed in the same process just before. "conv ms" is the step's convolutions alone: each of the U-Net's conv layers
timed on its own recorded input, summed; no rewrite of the rest of the step can go below it, so reference ms /
conv ms ("max x") is the largest speed-up left without faster convolution kernels. Random weights for div2k-x4 (the cost does not depend on their values);
the bundled demo model's own weights for "demo".
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_REFERENCE_COMMIT = "1f48952"  # last commit before the fast inference path


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up: allocator, oneDNN primitive cache
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def conv_gflops(dtype, repeats: int) -> float:
    """Throughput of a plain 64->64 3x3 convolution on a 256² channels_last map, in GFLOP/s."""
    import torch
    import torch.nn.functional as F

    x = torch.randn(1, 64, 256, 256, dtype=dtype).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(64, 64, 3, 3, dtype=dtype).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ms = _median_ms(lambda: F.conv2d(x, weight, padding=1), repeats)
    return 2 * 64 * 64 * 9 * 256 * 256 / ms / 1e6


def build_unet(model: str):
    import torch

    from sradm_diffusers import DEMO_MODEL, SRADMUNet
    from sradm_diffusers.presets import build_models

    if model == "demo":
        return SRADMUNet.from_pretrained(os.path.join(DEMO_MODEL, "unet")).eval()
    torch.manual_seed(0)
    return build_models(model)[0].eval()


def step_flops(unet, side: int) -> int:
    """FLOPs of one U-Net step at a side x side output, counted without computing (meta tensors)."""
    import copy

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    meta = copy.deepcopy(unet).to("meta")
    sample = torch.empty(1, 3, side, side, device="meta", dtype=unet.dtype)
    cond = torch.empty(1, unet.config.base_channels, side, side, device="meta", dtype=unet.dtype)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        meta(sample, torch.tensor([50], device="meta"), cond)
    return counter.get_total_flops()


def conv_only_ms(unet, sample, timestep, cond, repeats: int) -> float:
    """Sum of the medians of the step's convolutions, each timed alone on the input it got in the step."""
    import torch
    from torch import nn

    recorded = []
    hooks = [
        module.register_forward_pre_hook(lambda module, args: recorded.append((module, args[0].clone())))
        for module in unet.modules()
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)) and module is not getattr(unet, "cond_proj", None)
    ]
    try:
        with torch.no_grad():
            unet(sample, timestep, cond)
    finally:
        for hook in hooks:
            hook.remove()
    with torch.no_grad():
        return sum(_median_ms(lambda: module(x), repeats) for module, x in recorded)


def measure(model: str, side: int, path: str, repeats: int, threads: int, allocator: str) -> dict:
    import torch

    torch.set_num_threads(threads)
    import sradm_diffusers

    if allocator == "keep" and path != "reference":
        from sradm_diffusers.sampling.memory import keep_freed_memory

        if not keep_freed_memory():
            raise SystemExit("--allocator keep needs glibc")

    dtype = torch.bfloat16 if path == "bf16" else torch.float32
    unet = build_unet(model).to(dtype)
    flops = step_flops(unet, side)
    scale = unet.config.upscale_factor
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(1, 3, side, side, generator=generator).to(dtype)
    features = torch.randn(1, unet.config.cond_channels, side // scale, side // scale, generator=generator)
    timestep = torch.tensor([50])

    with torch.no_grad():
        cond = unet.condition(features.to(dtype))
        conv = conv_gflops(dtype, repeats=5)
        ms = _median_ms(lambda: unet(sample, timestep, cond), repeats)
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before the conv timing's copies
    conv_ms = conv_only_ms(unet, sample, timestep, cond, repeats) if path != "reference" else float("nan")
    gflops = flops / ms / 1e6
    return {
        "model": model,
        "side": side,
        "path": path,
        "ms_per_step": ms,
        "ms_per_megapixel": ms / (side * side / 1e6),
        "gflop_per_step": flops / 1e9,
        "gflops": gflops,
        "conv_gflops": conv,
        "percent_of_conv": 100 * gflops / conv,
        "conv_ms": conv_ms,
        "peak_rss_mib": peak_rss_mib,
        "package": os.path.dirname(sradm_diffusers.__file__),
    }


def reference_checkout(commit: str, folder: str) -> str:
    """``src/`` of ``commit`` extracted into ``folder``; returns the path to put on PYTHONPATH."""
    archive = subprocess.run(["git", "-C", REPO, "archive", commit, "src"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
    return os.path.join(folder, "src")


def run_case(model: str, side: int, path: str, args, reference_src: str) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--case", f"{model}:{side}:{path}",
               "--repeats", str(args.repeats if side < 1024 else args.repeats_large), "--threads", str(args.threads),
               "--allocator", args.allocator]
    env = dict(os.environ)
    if path == "reference":
        env["PYTHONPATH"] = reference_src + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if path == "reference" and not result["package"].startswith(reference_src):
        raise RuntimeError(f"the reference case imported {result['package']}, not the checkout of the old commit")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="demo,div2k-x4", help="'demo' (bundled model) and/or preset names")
    parser.add_argument("--sizes", default="256,1024", help="output (HR) side lengths, comma-separated")
    parser.add_argument("--paths", default="reference,fast,bf16", help="reference, fast, bf16")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per case below 1024² (median)")
    parser.add_argument("--repeats-large", type=int, default=2, help="timed steps per case at 1024² and above")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the whole interleaved sweep; medians kept")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reference-commit", default=DEFAULT_REFERENCE_COMMIT)
    parser.add_argument("--allocator", choices=("glibc", "keep"), default="keep",
                        help="C heap policy of the fast and bf16 paths: glibc's default, or keep freed memory "
                             "(memory.keep_freed_memory, as sradm runs); the reference always runs glibc's default")
    parser.add_argument("--json", help="also write all results to this file")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case and print JSON
    args = parser.parse_args()

    if args.case:
        model, side, path = args.case.split(":")
        print(json.dumps(measure(model, int(side), path, args.repeats, args.threads, args.allocator)))
        return

    paths = args.paths.split(",")
    print(f"{'model':<9} {'output':>9} {'path':<10} {'ms/step':>9} {'ms/MP':>9} {'GFLOP':>7} {'GFLOP/s':>8} "
          f"{'conv GFLOP/s':>12} {'% conv':>7} {'speed-up':>8} {'conv ms':>8} {'max x':>6} {'peak RSS':>9}")
    results = []
    with tempfile.TemporaryDirectory() as folder:
        reference_src = reference_checkout(args.reference_commit, folder) if "reference" in paths else ""
        for model in args.models.split(","):
            for side in map(int, args.sizes.split(",")):
                rounds = {path: [] for path in paths}
                for _ in range(args.rounds):
                    for path in paths:
                        rounds[path].append(run_case(model, side, path, args, reference_src))
                base_ms = None
                for path in paths:
                    runs = rounds[path]
                    result = dict(runs[0])
                    for key in ("ms_per_step", "ms_per_megapixel", "gflops", "conv_gflops", "percent_of_conv", "conv_ms"):
                        result[key] = statistics.median(run[key] for run in runs)
                    result["peak_rss_mib"] = max(run["peak_rss_mib"] for run in runs)
                    base_ms = result["ms_per_step"] if path == "reference" else base_ms
                    speedup = f"{base_ms / result['ms_per_step']:.2f}x" if base_ms else "-"
                    conv_ms = result["conv_ms"]
                    ceiling = f"{base_ms / conv_ms:.2f}x" if base_ms and conv_ms == conv_ms else "-"
                    conv_text = f"{conv_ms:.0f}" if conv_ms == conv_ms else "-"
                    print(
                        f"{model:<9} {side:>4}x{side:<4} {path:<10} {result['ms_per_step']:>9.0f} "
                        f"{result['ms_per_megapixel']:>9.0f} {result['gflop_per_step']:>7.1f} {result['gflops']:>8.1f} "
                        f"{result['conv_gflops']:>12.1f} {result['percent_of_conv']:>6.1f}% {speedup:>8} "
                        f"{conv_text:>8} {ceiling:>6} "
                        f"{result['peak_rss_mib']:>6.0f} MiB",
                        flush=True,
                    )
                    results.append(result)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)


if __name__ == "__main__":
    main()
