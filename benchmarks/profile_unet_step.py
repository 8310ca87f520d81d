"""Where one U-Net step's time goes: a torch.profiler table of a few inference steps (fp32, channels_last path).

    python benchmarks/profile_unet_step.py                        # demo model, 256x256 output, 3 steps
    python benchmarks/profile_unet_step.py --model div2k-x4 --side 1024 --by-shape

Prints the operators sorted by their own CPU time, summed over the profiled steps (divide by ``--steps`` for one
step). ``--by-shape`` splits them by input shape (which convolution costs what).
"""

from __future__ import annotations

import argparse

import torch

from sradm_diffusers.sampling.memory import keep_freed_memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo", help="'demo' (bundled weights) or a preset name (random weights)")
    parser.add_argument("--side", type=int, default=256, help="output (HR) side length")
    parser.add_argument("--steps", type=int, default=3, help="profiled steps (after two warm-up steps)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", type=int, default=20)
    parser.add_argument("--by-shape", action="store_true")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as sradm runs
    from bench_sampling import build_unet

    unet = build_unet(args.model)
    scale = unet.config.upscale_factor
    sample = torch.randn(1, 3, args.side, args.side)
    features = torch.randn(1, unet.config.cond_channels, args.side // scale, args.side // scale)
    timestep = torch.tensor([50])
    with torch.no_grad():
        cond = unet.condition(features)
        for _ in range(2):
            unet(sample, timestep, cond)
        with torch.profiler.profile(record_shapes=args.by_shape) as profile:
            for _ in range(args.steps):
                unet(sample, timestep, cond)
    table = profile.key_averages(group_by_input_shape=args.by_shape)
    print(table.table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
