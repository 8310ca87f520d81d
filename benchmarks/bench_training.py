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

End to end (issue 22: train.py must reach >= 85 % of the synthetic step's rate). ``--end_to_end DIR`` runs
``training/train.py`` on an image folder twice (``--warmup`` and ``--warmup + --steps`` steps) and takes the
difference, so start-up and the final save cancel, and prints it next to the synthetic step with train.py's
defaults (channels_last, fused Adam)::

    python benchmarks/bench_training.py --presets small --stages encoder,diffusion --resolution 64 \
        --batch_size 16 --threads 1 --workers 1 --warmup 5 --steps 40 --end_to_end /tmp/photos

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
            mixed_precision: str, threads: int | None, channels_last: bool = False, fused: bool = False) -> dict:
    """Measure one configuration in this process; returns a dict of results.

    ``channels_last`` and ``fused`` make the step the one ``train.py`` runs by default (channels_last model and
    inputs, ``train.make_optimizer``'s fused Adam); both off is the plain step.
    """
    import torch

    sys.path.insert(0, ROOT)  # the repository root: `training` is a package
    from training import train

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
    if fused:
        optimizer = train.make_optimizer(inner.parameters(), train.build_parser().parse_args(["--stage", stage]), dev)
    else:
        optimizer = torch.optim.Adam(inner.parameters(), lr=2e-4)
    scheduler = default_scheduler()
    hr = (torch.rand(batch, 3, resolution, resolution) * 2 - 1).to(dev)
    lr = imresize(hr, 1 / scale)
    if channels_last:
        model.to(memory_format=torch.channels_last)
        if frozen is not None:
            frozen.to(memory_format=torch.channels_last)
        hr, lr = hr.contiguous(memory_format=torch.channels_last), lr.contiguous(memory_format=torch.channels_last)
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
        "device": device, "mixed_precision": mixed_precision, "channels_last": channels_last, "fused": fused,
    }
    if dev.type == "cuda":
        result.update(memory="cuda max_memory_allocated", step_peak_MiB=torch.cuda.max_memory_allocated() / 2**20,
                      total_peak_MiB=None)
    else:
        result.update(memory="psutil RSS sampled" if process else "ru_maxrss", step_peak_MiB=end_peak - baseline,
                      total_peak_MiB=end_peak)
    return result


def flops_per_sample(preset: str, stage: str, resolution: int) -> float:
    """GFLOP of one training sample's forward + backward (``torch.utils.flop_counter``; batch 2, halved), for
    projecting a measured GPU rate from one preset to another (a projection: real GPUs are not equally efficient
    on every model, and small batches of small crops do not fill a large GPU)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    sys.path.insert(0, ROOT)  # the repository root: `training` is a package
    from training import train

    from sradm_diffusers import imresize
    from sradm_diffusers.presets import build_models, default_scheduler

    unet, encoder = build_models(preset)
    scale = encoder.config.upscale_factor
    hr = torch.rand(2, 3, resolution, resolution) * 2 - 1
    lr = imresize(hr, 1 / scale)
    with FlopCounterMode(display=False) as counter:
        if stage == "encoder":
            loss = train.encoder_loss(train.EncoderUpscaler(encoder), lr, hr)
        else:
            loss = train.diffusion_loss(train.ConditionedUNet(unet), encoder.eval().requires_grad_(False),
                                        default_scheduler(), lr, hr, torch.Generator().manual_seed(0))
        loss.backward()
    return counter.get_total_flops() / 2 / 1e9


def end_to_end(preset: str, stage: str, resolution: int, batch: int, data_dir: str, warmup: int, steps: int,
               threads: int, workers: int, workdir: str) -> dict:
    """``training/train.py`` itself on ``data_dir``: the steady-state time per step, from two runs that differ only
    in ``--max_train_steps`` (``warmup`` and ``warmup + steps``): start-up, data preparation, the final save and
    any first-step costs are the same in both and cancel. The image store is prepared before either run.
    Validation and checkpoints are off; everything else is train.py's defaults (channels_last, fused Adam,
    ``--logging_steps``). ``threads`` torch threads (OMP_NUM_THREADS) and ``workers`` loader processes."""
    import torch

    sys.path.insert(0, ROOT)  # the repository root: `training` is a package
    from training import data as sr_data

    from sradm_diffusers.presets import build_models

    cache = os.path.join(workdir, "hf")
    sr_data.open_store(sr_data.load_image_dataset(train_data_dir=data_dir, cache_dir=cache), cache_dir=cache)
    argv = ["--stage", stage, "--preset", preset, "--train_data_dir", data_dir, "--resolution", str(resolution),
            "--train_batch_size", str(batch), "--dataloader_num_workers", str(workers), "--report_to", "none",
            "--num_validation_images", "0", "--validation_steps", "0", "--checkpointing_steps", str(10**9),
            "--cache_dir", cache, "--random_flip"]
    if stage == "diffusion":
        encoder = os.path.join(workdir, "encoder")
        if not os.path.isdir(encoder):
            torch.manual_seed(0)
            build_models(preset)[1].save_pretrained(encoder)
        argv += ["--pretrained_encoder", encoder]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    walls = []
    for n in (warmup, warmup + steps):
        out = os.path.join(workdir, f"{stage}-{n}")
        started = time.perf_counter()
        result = subprocess.run([sys.executable, os.path.join(ROOT, "training", "train.py"), *argv, "--output_dir",
                                 out, "--max_train_steps", str(n)], env=env, capture_output=True, text=True)
        walls.append(time.perf_counter() - started)
        if result.returncode:
            raise RuntimeError(f"train.py failed: {result.stderr.strip().splitlines()[-3:]}")
    step_s = (walls[1] - walls[0]) / steps
    return {"step_s": step_s, "samples_per_s": batch / step_s, "runs_s": walls}


def compare(args) -> None:
    """``--end_to_end DIR``: train.py's steady rate next to the synthetic step's, per (preset, stage)."""
    import tempfile

    print(f"load average before: {os.getloadavg()[0]:.2f} (other processes on the CPU slow every step)")
    print(f"{'preset':<10} {'stage':<9} {'patch':>5} {'batch':>5} {'synthetic/s':>11} {'train.py/s':>10} "
          f"{'ratio':>6}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_e2e_") as workdir:
        for preset in args.presets.split(","):
            for stage in args.stages.split(","):
                res, batch = DEFAULTS[preset]
                res, batch = args.resolution or res, args.batch_size or batch
                cmd = [sys.executable, os.path.abspath(__file__), "--_one", f"{preset}:{stage}", "--warmup",
                       str(args.warmup), "--steps", str(args.steps), "--threads", str(args.threads),
                       "--resolution", str(res), "--batch_size", str(batch), "--channels_last", "--fused"]
                env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
                out = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if out.returncode:
                    raise SystemExit(f"synthetic step failed: {out.stderr.strip().splitlines()[-3:]}")
                synthetic = json.loads(out.stdout.strip().splitlines()[-1])
                real = end_to_end(preset, stage, res, batch, args.end_to_end, args.warmup, args.steps,
                                  args.threads, args.workers, workdir)
                ratio = real["samples_per_s"] / synthetic["samples_per_s"]
                rows.append({"preset": preset, "stage": stage, "synthetic": synthetic, "train_py": real,
                             "ratio": ratio})
                print(f"{preset:<10} {stage:<9} {res:>5} {batch:>5} {synthetic['samples_per_s']:>11.2f} "
                      f"{real['samples_per_s']:>10.2f} {ratio:>6.2f}", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print(f"{args.threads} torch thread(s), {args.workers} loader worker(s); synthetic = median of {args.steps} "
          f"steps after {args.warmup}; train.py = ({args.warmup}+{args.steps})-step run minus {args.warmup}-step run")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(rows, handle, indent=2)


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
    parser.add_argument("--channels_last", action="store_true", help="channels_last model and batch, as train.py.")
    parser.add_argument("--fused", action="store_true", help="train.py's optimizer (fused Adam where available).")
    parser.add_argument("--end_to_end", default=None, metavar="DIR",
                        help="Also run training/train.py on this image folder and print its steady rate next to "
                        "the synthetic step's (with --channels_last --fused, train.py's defaults).")
    parser.add_argument("--workers", type=int, default=1, help="Loader workers of the --end_to_end runs.")
    parser.add_argument("--flops", action="store_true", help="Only print GFLOP per training sample per preset/stage.")
    parser.add_argument("--_one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args._one:  # child process: one configuration, JSON on the last stdout line
        preset, stage = args._one.split(":")
        res, batch = DEFAULTS[preset]
        print(json.dumps(run_one(preset, stage, args.resolution or res, args.batch_size or batch, args.warmup,
                                 args.steps, args.device, args.mixed_precision, args.threads,
                                 channels_last=args.channels_last, fused=args.fused)))
        return
    if args.end_to_end:
        compare(args)
        return
    if args.flops:
        for preset in args.presets.split(","):
            for stage in args.stages.split(","):
                res = args.resolution or DEFAULTS[preset][0]
                print(f"{preset:<10} {stage:<9} {res:>4} px: {flops_per_sample(preset, stage, res):8.2f} GFLOP per "
                      "sample (forward + backward)", flush=True)
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
            cmd += ["--channels_last"] if args.channels_last else []
            cmd += ["--fused"] if args.fused else []
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
