#!/usr/bin/env python
"""Fit the sampling-memory model of ``sradm_diffusers.sampling.memory`` to measured peak RSS.

Each measurement runs in a fresh process: build a preset's pipeline (random weights), read VmRSS, run one pipeline
call (1 DDPM step, fp32, CPU) on a random LR image, read the peak RSS (``ru_maxrss``); the extra memory of the call
is peak - before. The script prints every point, the least-squares fit
``extra = a * width * batch * H * W + b`` (width = ``full_resolution_width``) and each point's error
against the constants stored in ``memory.py``.

    python benchmarks/memory_fit.py
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
from sradm_diffusers import build_pipeline
from sradm_diffusers.sampling.memory import full_resolution_width, estimate_sampling_bytes
preset, size, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
pipe = build_pipeline(preset, upscale_factor=4)
pipe.set_progress_bar_config(disable=True)
image = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
before = rss()
pipe([image] * batch, num_inference_steps=1, generator=torch.Generator().manual_seed(0), output_type="np")
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
hr = 4 * size
print(json.dumps({"preset": preset, "lr": size, "batch": batch, "extra": peak - before,
                  "width": full_resolution_width(pipe.unet), "pixels": batch * hr * hr,
                  "estimate": estimate_sampling_bytes(pipe.unet, batch, hr, hr)}))
"""

POINTS = [("tiny", 64, 1), ("tiny", 128, 1), ("tiny", 192, 1), ("tiny", 128, 2),
          ("small", 64, 1), ("small", 128, 1), ("small", 192, 1), ("small", 128, 2), ("small", 256, 1)]


def main() -> None:
    rows = []
    for preset, size, batch in POINTS:
        out = subprocess.run([sys.executable, "-c", CHILD, preset, str(size), str(batch)], capture_output=True,
                             text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    x = np.array([[r["width"] * r["pixels"], 1.0] for r in rows], dtype=np.float64)
    y = np.array([r["extra"] for r in rows], dtype=np.float64)
    a, b = np.linalg.lstsq(x, y, rcond=None)[0]
    print(f"fit of this run: extra = {a:.1f} B * width * batch * H * W + {b / 2**20:.0f} MiB")
    print(f"{'preset':6} {'LR':>4} {'B':>2} {'measured MiB':>13} {'estimate MiB':>13} {'est/meas':>8}")
    for r in rows:
        print(f"{r['preset']:6} {r['lr']:4d} {r['batch']:2d} {r['extra'] / 2**20:13.1f} {r['estimate'] / 2**20:13.1f} "
              f"{r['estimate'] / r['extra']:8.2f}")


if __name__ == "__main__":
    main()
