#!/usr/bin/env python
"""Measure the whole-image memory of a tiled pipeline call: bytes per HR pixel that do not shrink with the tile.

Tiling bounds the U-Net's activations to one tile, but x_t, the bicubic upsample, the blended noise prediction, the
scheduler's temporaries, LR consistency and the output stay whole-image tensors. Each point runs in a fresh
process: the ``tiny`` preset (random weights) with 32-pixel tiles, so that the tile's share is small, sampled the
way ``sradm upscale`` samples by default (UniPC, 11 steps, strength 0.82, LR consistency on), fp32, CPU. It prints
the peak-RSS growth of the call minus the tile estimate of ``memory.estimate_sampling_bytes``, per HR pixel, and
the least-squares slope over the points (``memory.WHOLE_IMAGE_BYTES_PER_PIXEL`` stores it, rounded up).

    python benchmarks/memory_tiled.py
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

CHILD = r"""
import json, resource, sys
import numpy as np, torch
torch.set_num_threads(1)
from diffusers import UniPCMultistepScheduler
from sradm_diffusers import build_pipeline
from sradm_diffusers.sampling.memory import estimate_sampling_bytes
size, tile = int(sys.argv[1]), 32
pipe = build_pipeline("tiny", upscale_factor=4)
pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")
pipe.set_progress_bar_config(disable=True)
pipe.enable_tiling(tile, 4)
image = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
before = rss()
pipe(image, num_inference_steps=11, strength=0.82, lr_consistency=True, generator=torch.Generator().manual_seed(0),
     output_type="pil")
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"lr": size, "extra": peak - before, "pixels": (4 * size) ** 2,
                  "tile": estimate_sampling_bytes(pipe.unet, 1, 4 * tile, 4 * tile)}))
"""

SIZES = (128, 256, 384)


def main() -> None:
    rows = []
    for size in SIZES:
        out = subprocess.run([sys.executable, "-c", CHILD, str(size)], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{'LR':>4} {'HR Mpx':>7} {'peak growth MiB':>16} {'minus tile, B/px':>17}")
    for r in rows:
        per_pixel = (r["extra"] - r["tile"]) / r["pixels"]
        print(f"{r['lr']:4d} {r['pixels'] / 1e6:7.2f} {r['extra'] / 2**20:16.1f} {per_pixel:17.1f}")
    x = np.array([[r["pixels"], 1.0] for r in rows], dtype=np.float64)
    y = np.array([r["extra"] - r["tile"] for r in rows], dtype=np.float64)
    slope, offset = np.linalg.lstsq(x, y, rcond=None)[0]
    print(f"whole-image memory: {slope:.1f} B per HR pixel (+ {offset / 2**20:.0f} MiB)")


if __name__ == "__main__":
    main()
