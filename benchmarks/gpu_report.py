#!/usr/bin/env python
"""One-command performance report for a GPU machine (issue 19); prints three tables, asserts nothing.

1. **U-Net step**: ms per call (median) and peak memory of one U-Net forward under ``torch.no_grad`` for the demo
   model (bundled weights) and the paper-size ``div2k-x4`` preset (random weights), at a 256x256 and a 2040x1356
   output (the 4x of a 510x339 photo; padded to the U-Net's size multiple as the pipeline pads), in fp32 (TF32
   off), TF32 (fp32 storage, TF32 matmul and convolutions), bf16 and fp16. Peak memory: on CUDA
   ``torch.cuda.max_memory_allocated`` during the timed calls (tensors, weights included); not measured on the CPU.
2. **sradm upscale start-up**: the command run in a fresh interpreter on a 510x339 photo (the bundled sample photo
   resized), wall time split into interpreter and imports, CUDA initialisation, model loading and writing, and the
   pipeline call(s) themselves (sampling).
3. **Training samples/s**: ``benchmarks/bench_training.py``'s step on a synthetic batch (``run_one``), and
   ``training/train.py`` itself on an image folder (the real data loader): two runs of N1 < N2 steps in this
   process, samples/s = (N2 - N1) * batch / (t2 - t1), so start-up and the export cancel out.

    python benchmarks/gpu_report.py                     # on a CUDA machine, a few minutes
    python benchmarks/gpu_report.py --device cpu --quick  # dry run of every part at tiny sizes (CI)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))  # the repository root: `training` is a package

MODES = ("fp32", "tf32", "bf16", "fp16")
FULL = {"sizes": [(256, 256), (1356, 2040)], "photo": (510, 339), "rounds": 5, "train": ("div2k-x4", 160, 16, 3, 8),
        "sampling": []}
QUICK = {"sizes": [(32, 32)], "photo": (24, 16), "rounds": 1, "train": ("tiny", 32, 2, 1, 2),
         "sampling": ["--scheduler", "ddim", "--steps", "1"]}
"""Per mode: U-Net output sizes (H, W); photo (W, H); timed rounds; training (preset, patch, batch, N1, N2); extra
``sradm upscale`` options (none: its default sampling)."""


# ----------------------------------------------------------------------------------------------------------------
# 1. U-Net step
# ----------------------------------------------------------------------------------------------------------------


def load_unet(preset: str):
    """The demo model's U-Net (bundled weights) or a preset's (random weights)."""
    import torch

    from sradm_diffusers import DEMO_MODEL, SRADMUNet, build_pipeline

    if preset == "demo":
        return SRADMUNet.from_pretrained(os.path.join(DEMO_MODEL, "unet"))
    torch.manual_seed(0)
    return build_pipeline(preset).unet


def unet_step(unet, height: int, width: int, mode: str, device: str, rounds: int) -> dict:
    """Median ms and peak memory (MiB, CUDA only) of one U-Net call at an HR output of height x width."""
    import torch

    if mode == "fp16" and device == "cpu" or mode == "tf32" and device != "cuda":
        return {"ms": None, "peak_MiB": None, "note": f"{mode} is for cuda"}
    dtype = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[mode]
    multiple, scale = unet.size_multiple, unet.config.upscale_factor
    height, width = -(-height // multiple) * multiple, -(-width // multiple) * multiple
    unet = unet.to(device=device, dtype=dtype)
    x = torch.randn(1, 3, height, width, device=device, dtype=dtype)
    features = torch.randn(1, unet.config.cond_channels, height // scale, width // scale, device=device, dtype=dtype)
    t = torch.tensor([50], device=device)
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = mode == "tf32"
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    times = []
    with torch.no_grad():
        unet(x, t, lr_features=features)  # warm-up: kernel selection, conditioning cache
        sync()
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        for _ in range(rounds):
            start = time.perf_counter()
            unet(x, t, lr_features=features)
            sync()
            times.append((time.perf_counter() - start) * 1e3)
    unet.reset_condition_cache()
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    return {"ms": statistics.median(times), "peak_MiB": peak, "size": f"{width}x{height}"}


def unet_table(device: str, plan: dict) -> list[dict]:
    rows = []
    for preset in ("demo", "div2k-x4"):
        unet = load_unet(preset)
        for height, width in plan["sizes"]:
            for mode in MODES:
                row = {"preset": preset, "output": f"{width}x{height}", "mode": mode}
                row.update(unet_step(unet, height, width, mode, device, plan["rounds"]))
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
        del unet
    return rows


# ----------------------------------------------------------------------------------------------------------------
# 2. sradm upscale start-up
# ----------------------------------------------------------------------------------------------------------------

_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import torch, diffusers
import sradm_diffusers.commands.upscale, sradm_diffusers.pipeline
from sradm_diffusers.commands.cli import main
from sradm_diffusers.pipeline import SRADMPipeline
t1 = time.perf_counter()
if sys.argv[1] == "cuda":
    torch.zeros(1, device="cuda")
    torch.cuda.synchronize()
t2 = time.perf_counter()
sampling = []
call = SRADMPipeline.__call__
def timed(self, *args, **kwargs):
    start = time.perf_counter()
    try:
        return call(self, *args, **kwargs)
    finally:
        if sys.argv[1] == "cuda":
            torch.cuda.synchronize()
        sampling.append(time.perf_counter() - start)
SRADMPipeline.__call__ = timed
status = main(["upscale", *sys.argv[2:]])
t3 = time.perf_counter()
print(json.dumps({"status": status, "imports_s": t1 - t0, "cuda_init_s": t2 - t1,
                  "sampling_s": sum(sampling), "load_and_write_s": t3 - t2 - sum(sampling)}))
"""


def upscale_startup(device: str, plan: dict, folder: str) -> dict:
    """``sradm upscale`` (CLI default sampling, seed 0) on one photo in a fresh interpreter, timed by phase."""
    from PIL import Image

    from sradm_diffusers import SAMPLE_IMAGE

    photo = os.path.join(folder, "photo.png")
    Image.open(SAMPLE_IMAGE).convert("RGB").resize(plan["photo"], Image.BICUBIC).save(photo)
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", _CHILD, device, photo, "--device", device, "--seed", "0", "-o",
                             os.path.join(folder, "out.png"), *plan["sampling"]],
                            capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"sradm upscale failed: {result.stderr[-2000:]}")
    row = json.loads(result.stdout.strip().splitlines()[-1])
    row.update(photo="x".join(map(str, plan["photo"])), wall_s=wall,
               interpreter_s=wall - row["imports_s"] - row["cuda_init_s"] - row["sampling_s"] - row["load_and_write_s"])
    return row


# ----------------------------------------------------------------------------------------------------------------
# 3. Training
# ----------------------------------------------------------------------------------------------------------------


def synthetic_training(device: str, plan: dict, mixed_precision: str) -> dict:
    """bench_training.run_one: one diffusion-stage step on a random batch (no data loading)."""
    import bench_training

    preset, patch, batch, _, _ = plan["train"]
    return bench_training.run_one(preset, "diffusion", patch, batch, 1, plan["rounds"] + 1, device,
                                  mixed_precision, None)


def loader_training(device: str, plan: dict, mixed_precision: str, folder: str) -> dict:
    """training/train.py (diffusion stage, real image folder and data loader): samples/s from two run lengths."""
    import numpy as np
    from training import train
    from accelerate.state import AcceleratorState, GradientState
    from PIL import Image

    preset, patch, batch, short, long = plan["train"]
    images = Path(folder) / "images" / "train"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(max(2 * batch, 4)):
        Image.fromarray(rng.integers(0, 256, (patch + 8, patch + 8, 3), dtype=np.uint8)).save(images / f"{i}.png")
    encoder = os.path.join(folder, "encoder")

    def run(argv: list[str]) -> float:
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
        start = time.perf_counter()
        try:
            train.main(argv)
        finally:
            AcceleratorState._reset_state(True)
            GradientState._reset_state()
        return time.perf_counter() - start

    common = ["--preset", preset, "--train_data_dir", str(images.parent), "--resolution", str(patch),
              "--train_batch_size", str(batch), "--report_to", "none", "--validation_steps", "0",
              "--num_validation_images", "0", "--mixed_precision", mixed_precision, "--seed", "0",
              "--checkpointing_steps", "1000000"]
    if device == "cpu":
        os.environ["ACCELERATE_USE_CPU"] = "true"
    run(["--stage", "encoder", *common, "--max_train_steps", "1", "--output_dir", encoder])
    times = {}
    for steps in (short, long):
        times[steps] = run(["--stage", "diffusion", "--pretrained_encoder", encoder, *common, "--max_train_steps",
                            str(steps), "--output_dir", os.path.join(folder, f"diffusion-{steps}")])
    return {"preset": preset, "resolution": patch, "batch": batch,
            "samples_per_s": (long - short) * batch / (times[long] - times[short])}


# ----------------------------------------------------------------------------------------------------------------


def _fmt(value, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="GPU performance report (issue 19).")
    parser.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and one round: a dry run of every part")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write every number to this file")
    args = parser.parse_args(argv)
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    plan = QUICK if args.quick else FULL
    mixed = "bf16" if device == "cuda" else "no"
    where = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    print(f"# sradm-diffusers GPU report, {datetime.date.today()}: {where}, torch {torch.__version__}"
          f"{' (quick dry run)' if args.quick else ''}")
    report = {"device": where, "torch": torch.__version__, "quick": args.quick}

    report["unet"] = unet_table(device, plan)
    print("\n| model | output | dtype | ms / step | peak MiB |\n|---|---|---|---|---|")
    for r in report["unet"]:
        print(f"| {r['preset']} | {r['output']} | {r['mode']} | {_fmt(r['ms'])} | {_fmt(r['peak_MiB'], '.0f')} |")

    with tempfile.TemporaryDirectory() as folder:
        up = report["upscale"] = upscale_startup(device, plan, folder)
        print(f"\n`sradm upscale` of a {up['photo']} photo: {up['wall_s']:.1f} s wall = interpreter "
              f"{up['interpreter_s']:.1f} + imports {up['imports_s']:.1f} + CUDA init {up['cuda_init_s']:.1f} + model "
              f"load and writing {up['load_and_write_s']:.1f} + sampling {up['sampling_s']:.1f} s")
        synthetic = report["train_synthetic"] = synthetic_training(device, plan, mixed)
        real = report["train_loader"] = loader_training(device, plan, mixed, folder)
    print(f"\nTraining ({synthetic['preset']}, {synthetic['resolution']} px, batch {synthetic['batch']}, "
          f"mixed precision {mixed}): synthetic batch {synthetic['samples_per_s']:.1f} samples/s, train.py with its "
          f"data loader {real['samples_per_s']:.1f} samples/s")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
