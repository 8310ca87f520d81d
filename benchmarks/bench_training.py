#!/usr/bin/env python
"""Training throughput and memory of one optimizer step, per stage and preset.

For each (preset, stage) a fresh subprocess builds the models exactly as ``training/train.py`` does, makes one random
batch at the recipe's patch size, and runs warm-up steps and then timed steps of the training step of
``train.py`` (its ``encoder_loss`` / ``diffusion_loss``, backward, gradient clipping at 1.0, Adam). It prints:

- samples/s: batch size / median step time over the timed steps;
- peak memory: on CUDA ``torch.cuda.max_memory_allocated`` (tensors only); on CPU the process's resident set size
  (RSS). With psutil installed, RSS is sampled every 2 ms during the timed steps and "step peak" is the highest
  sample minus the RSS before the first step (what training adds on top of the loaded models); without psutil it
  is ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (the peak over the subprocess's life) minus the same baseline
  read the same way. The "memory" column says which was used.

Threads: one intra-op thread by default. On a busy machine (other processes on the cores) OpenMP threads that wait
for each other made the same step 5-50x slower with 2 threads than with 1 in our runs, so multi-thread figures
only mean something on an idle machine (``--threads 0`` uses torch's default). The load average is printed.

Defaults finish in a few minutes on a 2-core CPU:

    python benchmarks/bench_training.py                       # tiny (64 px, batch 16) and div2k-x4 (160 px, batch 4)
    python benchmarks/bench_training.py --presets small --batch_size 16 --resolution 64
    python benchmarks/bench_training.py --device cuda --presets div2k-x4 --batch_size 64 --mixed_precision bf16

Numbers are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULTS = {  # preset: (HR patch, batch) - the recipes' patch sizes, batches small enough for a CPU
    "tiny": (64, 16),
    "small": (64, 16),
    "celeba-x8": (160, 4),
    "div2k-x4": (160, 4),
}


def _rss_mib(process) -> float:
    return process.memory_info().rss / 2**20


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_one(preset: str, stage: str, resolution: int, batch: int, warmup: int, steps: int, device: str,
            mixed_precision: str, threads: int | None) -> dict:
    """Measure one configuration in this process; returns a dict of results."""
    import torch

    sys.path.insert(0, os.path.join(ROOT, "training"))
    import train

    from sradm_diffusers import imresize
    from sradm_diffusers.presets import build_models, default_scheduler

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    dev = torch.device(device)
    unet, encoder = build_models(preset)
    scale = encoder.config.upscale_factor
    if stage == "encoder":
        inner, model, frozen = encoder, train.EncoderUpscaler(encoder), None
    else:
        inner, model, frozen = unet, train.ConditionedUNet(unet), encoder.eval().requires_grad_(False).to(dev)
    model.to(dev).train()
    optimizer = torch.optim.Adam(inner.parameters(), lr=2e-4)
    scheduler = default_scheduler()
    hr = (torch.rand(batch, 3, resolution, resolution) * 2 - 1).to(dev)
    lr = imresize(hr, 1 / scale)
    dtype = {"no": None, "bf16": torch.bfloat16, "fp16": torch.float16}[mixed_precision]

    def step(i: int) -> None:
        generator = torch.Generator(device="cpu").manual_seed(i)
        with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
            if stage == "encoder":
                loss = train.encoder_loss(model, lr, hr)
            else:
                loss = train.diffusion_loss(model, frozen, scheduler, lr, hr, generator)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(inner.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    try:
        import psutil

        process = psutil.Process()
    except ImportError:
        process = None
    baseline = _rss_mib(process) if process else _maxrss_mib()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    peak = [baseline]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_mib(process))
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True) if process else None
    if sampler:
        sampler.start()
    for i in range(warmup):
        step(i)
    sync()
    times = []
    for i in range(steps):
        start = time.perf_counter()
        step(warmup + i)
        sync()
        times.append(time.perf_counter() - start)
    stop.set()
    if sampler:
        sampler.join()
    end_peak = peak[0] if process else _maxrss_mib()
    median = statistics.median(times)
    result = {
        "preset": preset, "stage": stage, "resolution": resolution, "batch": batch,
        "params_M": sum(p.numel() for p in inner.parameters()) / 1e6,
        "step_s": median, "samples_per_s": batch / median, "threads": torch.get_num_threads(),
        "device": device, "mixed_precision": mixed_precision,
    }
    if dev.type == "cuda":
        result.update(memory="cuda max_memory_allocated", step_peak_MiB=torch.cuda.max_memory_allocated() / 2**20,
                      total_peak_MiB=None)
    else:
        result.update(memory="psutil RSS sampled" if process else "ru_maxrss", step_peak_MiB=end_peak - baseline,
                      total_peak_MiB=end_peak)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default="tiny,div2k-x4", help=f"Comma list of {', '.join(DEFAULTS)}.")
    parser.add_argument("--stages", default="encoder,diffusion")
    parser.add_argument("--resolution", type=int, default=None, help="HR patch (default: per preset).")
    parser.add_argument("--batch_size", type=int, default=None, help="Batch (default: per preset).")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3, help="Timed steps (median reported).")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--mixed_precision", choices=("no", "bf16", "fp16"), default="no")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch.set_num_threads; 0 = torch's default (all cores). 1 by default: see the docstring.")
    parser.add_argument("--json", default=None, help="Also write the results to this file.")
    parser.add_argument("--_one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args._one:  # child process: one configuration, JSON on the last stdout line
        preset, stage = args._one.split(":")
        res, batch = DEFAULTS[preset]
        print(json.dumps(run_one(preset, stage, args.resolution or res, args.batch_size or batch, args.warmup,
                                 args.steps, args.device, args.mixed_precision, args.threads)))
        return

    results = []
    print(f"load average before: {os.getloadavg()[0]:.2f} (other processes on the CPU slow every step)")
    header = (f"{'preset':<10} {'stage':<9} {'params':>7} {'patch':>5} {'batch':>5} {'step s':>7} "
              f"{'samples/s':>9} {'step peak MiB':>13} {'RSS peak MiB':>12}  memory")
    print(header)
    print("-" * len(header))
    for preset in args.presets.split(","):
        if preset not in DEFAULTS:
            raise SystemExit(f"Unknown preset {preset!r}; choose from {', '.join(DEFAULTS)}.")
        for stage in args.stages.split(","):
            cmd = [sys.executable, os.path.abspath(__file__), "--_one", f"{preset}:{stage}", "--warmup",
                   str(args.warmup), "--steps", str(args.steps), "--device", args.device, "--mixed_precision",
                   args.mixed_precision, "--threads", str(args.threads)]
            for flag, value in (("--resolution", args.resolution), ("--batch_size", args.batch_size)):
                if value:
                    cmd += [flag, str(value)]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode:
                print(f"{preset:<10} {stage:<9} failed: {out.stderr.strip().splitlines()[-1:]}")
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            results.append(r)
            total = f"{r['total_peak_MiB']:.0f}" if r["total_peak_MiB"] is not None else "-"
            print(f"{preset:<10} {stage:<9} {r['params_M']:>6.2f}M {r['resolution']:>5} {r['batch']:>5} "
                  f"{r['step_s']:>7.3f} {r['samples_per_s']:>9.2f} {r['step_peak_MiB']:>13.0f} {total:>12}  "
                  f"{r['memory']}", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if results:
        print(f"device {results[0]['device']}, {results[0]['threads']} torch threads, mixed precision "
              f"{results[0]['mixed_precision']}; median of {args.steps} timed steps after {args.warmup} warm-up")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
