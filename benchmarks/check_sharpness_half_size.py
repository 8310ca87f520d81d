"""Edge energy that pixel noise cannot fake: sharpness (``bench_few_step.gradient_energy`` of SR over HR) at full
size and after a 2x box downsample, which halves the std of pixel noise but keeps edges.

    python benchmarks/check_sharpness_half_size.py

Every third held-out photo (4 of 10), central 128 px HR window, one sample (seed 0), LR consistency on, the settings
of ``bench_few_step.py`` given by ``--settings``. README "Few-step sampling" quotes its output.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_few_step import configure, gradient_energy, load_items, parse_setting  # noqa: E402

from sradm_diffusers.metrics.quality import to_uint8  # noqa: E402
from sradm_diffusers.commands.runtime import load_pipeline
from sradm_diffusers.commands.runtime import sample_generators  # noqa: E402


def half(u8: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) uint8 -> 2x box-downsampled uint8."""
    return F.avg_pool2d(u8.float(), 2).round().clamp(0, 255).to(torch.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", default="data/demo/test")
    parser.add_argument("--settings", nargs="+", default=[
        "ddpm:100:1:lrc", "unipc:11:0.82:lrc", "dpm-sde+sigma-min:8:1:lrc", "dpm-sde:10:1:lrc"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = load_pipeline(None, "cpu")
    pipe.set_progress_bar_config(disable=True)
    config = dict(pipe.scheduler.config)
    items = load_items(args.images, 128, 3, pipe.config.upscale_factor)
    for setting in args.settings:
        name, options, steps, strength, lrc = parse_setting(setting)
        configure(pipe, config, name, options)
        full, halved = [], []
        for _, hr, lr in items:
            out = pipe(lr[0].permute(1, 2, 0).numpy(), num_inference_steps=steps, strength=strength,
                       lr_consistency=lrc, generator=sample_generators(0, 1), output_type="pt").images
            sr = to_uint8(out, value_range=(0.0, 1.0))
            full.append(float(gradient_energy(sr) / gradient_energy(hr)))
            halved.append(float(gradient_energy(half(sr)) / gradient_energy(half(hr))))
        print(f"{setting:28s} sharpness {sum(full) / len(full):.3f}  at half size {sum(halved) / len(halved):.3f}")


if __name__ == "__main__":
    main()
