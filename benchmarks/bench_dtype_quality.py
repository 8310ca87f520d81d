"""What ``--dtype bf16`` costs in quality on held-out photos: the bundled demo model, bf16 vs fp32, same noise.

    python benchmarks/bench_dtype_quality.py --images /work/data/demo/test --count 3

For each of the first ``--count`` photos (sorted by name) it takes the central 256x256 crop as HR, makes its
64x64 LR with the MATLAB-compatible bicubic (``imresize``), and samples both pipelines (loaded as
``sradm upscale --dtype`` loads them) with the same scheduler, steps and initial noise. It prints the PSNR (RGB,
8-bit) of the bf16 output against the fp32 output, each one's PSNR-Y against HR, and the sampling time of each.
DPM-Solver++ (SDE) with 20 steps by default, the CLI's fast sampler; ``--scheduler``/``--steps`` change it.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from PIL import Image

from sradm_diffusers import imresize
from sradm_diffusers.metrics.quality import psnr_rgb, psnr_y, to_uint8
from sradm_diffusers.commands.runtime import load_pipeline, set_scheduler


def lr_hr_pair(path: str, side: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Central side x side crop of the photo at ``path`` in [-1, 1] (1, 3, side, side) and its 4x-smaller LR."""
    image = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255
    top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
    hr = torch.from_numpy(image[top : top + side, left : left + side]).permute(2, 0, 1)[None] * 2 - 1
    return imresize(hr, 0.25).clamp(-1, 1), hr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", default="data/demo/test")
    parser.add_argument("--count", type=int, default=3)
    parser.add_argument("--scheduler", default="dpm-sde")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--dtype", default="bf16", help="the dtype compared with fp32")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    pipes = {}
    for dtype in ("fp32", args.dtype):
        pipes[dtype] = load_pipeline(None, "cpu", dtype)
        set_scheduler(pipes[dtype], args.scheduler)
        pipes[dtype].set_progress_bar_config(disable=True)

    print(f"{'image':<44} {'PSNR vs fp32':>12} {'PSNR-Y fp32':>11} {'PSNR-Y ' + args.dtype:>11} "
          f"{'s fp32':>7} {'s ' + args.dtype:>7}")
    names = sorted(os.listdir(args.images))[: args.count]
    for name in names:
        lr, hr = lr_hr_pair(os.path.join(args.images, name))
        latents = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
        outputs, seconds = {}, {}
        for dtype, pipe in pipes.items():
            start = time.perf_counter()
            out = pipe((lr + 1) / 2, num_inference_steps=args.steps, latents=latents, output_type="pt",
                       generator=torch.Generator().manual_seed(1)).images
            seconds[dtype] = time.perf_counter() - start
            outputs[dtype] = to_uint8(out.float(), (0.0, 1.0))
        hr8 = to_uint8(hr)
        print(f"{name:<44} {psnr_rgb(outputs[args.dtype], outputs['fp32']).item():>12.2f} "
              f"{psnr_y(outputs['fp32'], hr8, 4).item():>11.2f} {psnr_y(outputs[args.dtype], hr8, 4).item():>11.2f} "
              f"{seconds['fp32']:>7.1f} {seconds[args.dtype]:>7.1f}", flush=True)


if __name__ == "__main__":
    main()
