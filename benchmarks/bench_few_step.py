"""Quality against the number of denoising steps: samplers, their options and the start from the RRDB output.

    python benchmarks/bench_few_step.py --grid samplers --json docs/few_step_samplers.json
    python benchmarks/bench_few_step.py --grid strength --json docs/few_step_strength.json

For each photo of ``--images`` (sorted by name; ``--every 2`` takes every second one) the central ``--crop`` x
``--crop`` HR window is the ground truth and its LR is ``imresize(HR, 1/4)`` rounded to uint8 (``sradm evaluate
--center-crop`` does the same). Every setting samples ``--samples`` SR images per photo with the CPU generators
``sradm upscale --seed 0`` uses (seeds 0, 1, ...), on the bundled demo model, with the scheduler built as
``sradm upscale --scheduler`` builds it. A setting is ``sampler:steps[:strength][:lrc|nolrc]``; ``sampler`` is a
``--scheduler`` name, optionally with ``+option`` suffixes from :data:`OPTIONS` (scheduler config changes).

Columns (means over photos and samples): PSNR-Y / SSIM-Y against HR (4-pixel border cropped); LR-PSNR (the SR
downscaled against the LR; the mean and the worst photo's, capped at :data:`LR_PSNR_CAP` since an exact match is
infinite); spread (the per-pixel std between the samples, 0..255, averaged); sharpness (the mean gradient magnitude
of the SR image's Y over the HR's: 1 = as much edge energy as the ground truth; the bicubic upsample is far below
1, and grain raises it too); the number of U-Net calls (``int(steps * strength)``). "vs ref" compares with the
first row of the grid, 100 DDPM steps. Timings are not reported: this machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from sradm_diffusers.commands.eval_pairs import center_crop, make_lr, to_uint8_rgb
from sradm_diffusers.metrics.quality import compute_metrics, diversity_std, rgb_to_y, to_uint8
from sradm_diffusers.defaults import SCHEDULERS
from sradm_diffusers.commands.files import load_image
from sradm_diffusers.commands.runtime import load_pipeline, sample_generators, set_scheduler

OPTIONS: dict[str, dict] = {
    "karras": {"use_karras_sigmas": True},
    "order1": {"solver_order": 1},
    "order3": {"solver_order": 3},
    "sigma-min": {"final_sigmas_type": "sigma_min"},
    "no-lower-final": {"lower_order_final": False},
    "euler-final": {"euler_at_final": True},
    "leading": {"timestep_spacing": "leading"},
    "linspace": {"timestep_spacing": "linspace"},
    "midpoint": {"solver_type": "midpoint"},
    "bh1": {"solver_type": "bh1"},  # UniPC: NaN in the output on the demo model at 10 steps with LR consistency
}
"""``sampler+option`` suffixes: scheduler config changes on top of ``SCHEDULERS[sampler]``."""

REFERENCE = "ddpm:100:1:lrc"

LR_PSNR_CAP = 100.0
"""LR-PSNR is infinite where the downscaled SR equals the LR exactly (often with LR consistency); it is capped
here so that means stay finite."""

GRIDS: dict[str, list[str]] = {
    # the grid, sampled as the CLI samples (LR consistency on); 100 steps only for DDPM, the reference
    "samplers": [REFERENCE] + [
        f"{s}:{n}:1:lrc" for s in ("ddpm", "ddim", "dpm", "dpm-sde", "unipc", "euler") for n in (5, 10, 20, 50)
    ],
    # without LR consistency (the model alone); the Euler fix shows here
    "samplers-nolrc": ["ddpm:100:1:nolrc"] + [
        f"{s}:{n}:1:nolrc" for s in ("ddpm", "ddim", "dpm", "dpm-sde", "unipc", "euler") for n in (5, 10)
    ],
    # scheduler options at 10 steps
    "options": [REFERENCE] + [
        f"{s}:10:1:lrc" for s in (
            "dpm", "dpm+karras", "dpm+order3", "dpm+sigma-min", "dpm+euler-final", "dpm+no-lower-final",
            "dpm-sde", "dpm-sde+karras", "dpm-sde+order1", "dpm-sde+sigma-min",
            "unipc", "unipc+order3", "ddim", "ddim+leading", "ddim+linspace", "euler", "euler+karras",
        )
    ] + ["dpm-sde+sigma-min:8:1:lrc", "dpm-sde+sigma-min:9:1:lrc"],
    # starting from the RRDB residual: (steps, strength) pairs of at most 10 U-Net calls
    "strength": [REFERENCE] + [
        f"{s}:{n}:{k}:lrc" for s in ("ddpm", "ddim", "dpm-sde", "unipc", "euler")
        for n, k in ((10, 0.5), (10, 0.7), (10, 0.8), (10, 0.9), (14, 0.7), (20, 0.5))
    ],
    # the multistep ODE solvers (sharpest above) around strength 0.8-0.9, with their options
    "strength-multistep": [REFERENCE] + [
        "unipc:11:0.82:lrc", "unipc:12:0.75:lrc", "unipc:8:1:lrc", "unipc:9:1:lrc",
        "unipc+order3:10:0.8:lrc", "unipc+order3:10:0.9:lrc", "unipc+karras:10:0.8:lrc", "unipc+karras:10:0.9:lrc",
        "dpm:10:0.8:lrc", "dpm:10:0.9:lrc", "dpm+order3:10:0.8:lrc", "dpm+order3:10:0.9:lrc",
    ],
}


def parse_setting(text: str) -> tuple[str, list[str], int, float, bool]:
    """``sampler[+opt...]:steps[:strength][:lrc|nolrc]`` -> (sampler, options, steps, strength, lr_consistency)."""
    parts = text.split(":")
    name, *options = parts[0].split("+")
    if name not in SCHEDULERS or any(o not in OPTIONS for o in options):
        raise ValueError(f"bad sampler {parts[0]!r}: use one of {list(SCHEDULERS)} with +{list(OPTIONS)}")
    steps = int(parts[1])
    strength = float(parts[2]) if len(parts) > 2 else 1.0
    lrc = (parts[3] if len(parts) > 3 else "lrc") == "lrc"
    return name, options, steps, strength, lrc


def configure(pipe, model_scheduler_config, name: str, options: list[str]) -> None:
    """The scheduler ``sradm upscale --scheduler name`` builds, then the options applied."""
    import diffusers

    pipe.scheduler = diffusers.DDPMScheduler.from_config(model_scheduler_config)
    set_scheduler(pipe, name)
    extra = {k: v for option in options for k, v in OPTIONS[option].items()}
    if extra:
        pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, **extra)


def gradient_energy(img_u8: torch.Tensor) -> torch.Tensor:
    """Mean |gradient| of the Y channel (finite differences), per image: (B,3,H,W) uint8 -> (B,)."""
    y = rgb_to_y(img_u8)
    dx, dy = y[..., :, 1:] - y[..., :, :-1], y[..., 1:, :] - y[..., :-1, :]
    return (dx[..., :-1, :] ** 2 + dy[..., :, :-1] ** 2).sqrt().flatten(1).mean(1)


def load_items(folder: str, crop: int, every: int, scale: int) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    names = sorted(n for n in os.listdir(folder) if not n.startswith("."))[::every]
    items = []
    for name in names:
        hr = center_crop(to_uint8_rgb(load_image(os.path.join(folder, name))), crop, scale)
        items.append((name, hr, make_lr(hr, scale)))
    return items


def run_setting(pipe, config, items, setting: str, samples: int, cache: dict, crop: int) -> dict:
    """Mean metrics of ``setting`` over ``items``; per-photo rows are looked up in / added to ``cache``."""
    name, options, steps, strength, lrc = parse_setting(setting)
    configure(pipe, config, name, options)
    scale = pipe.config.upscale_factor
    rows = []
    for photo, hr, lr in items:
        key = f"{setting}|{crop}|{samples}|{photo}"
        if key in cache:
            rows.append(cache[key])
            continue
        images = pipe(
            lr[0].permute(1, 2, 0).numpy(), num_inference_steps=steps, generator=sample_generators(0, samples),
            num_images_per_prompt=samples, output_type="pt", lr_consistency=lrc, strength=strength,
        ).images
        sr = to_uint8(images, value_range=(0.0, 1.0))
        metrics = compute_metrics(sr, hr.expand(samples, -1, -1, -1), scale, lr=lr.expand(samples, -1, -1, -1))
        rows.append({
            "psnr_y": float(metrics["psnr_y"].double().mean()),
            "ssim_y": float(metrics["ssim_y"].double().mean()),
            "lr_psnr": float(metrics["lr_psnr"].clamp(max=LR_PSNR_CAP).double().mean()),
            "spread": float(diversity_std(sr)) if samples > 1 else None,
            "sharpness": float((gradient_energy(sr) / gradient_energy(hr)).double().mean()),
        })
        cache[key] = rows[-1]
    mean = {key: sum(r[key] for r in rows) / len(rows) for key in rows[0] if rows[0][key] is not None}
    worst = min(r["lr_psnr"] for r in rows)
    return {"setting": setting, "calls": int(steps * strength), **mean, "lr_psnr_min": worst, "per_image": rows}


def baselines(pipe, items) -> dict:
    """bicubic and RRDB rows (deterministic) for context."""
    from sradm_diffusers import imresize
    from sradm_diffusers.image_processing import preprocess

    out = {}
    for method in ("bicubic", "rrdb"):
        rows = []
        for _, hr, lr in items:
            x = preprocess(lr[0].permute(1, 2, 0).numpy())
            with torch.no_grad():
                sr = imresize(x, 4) if method == "bicubic" else pipe.lr_encoder.upscale(x)
            sr = to_uint8(sr.float().clamp(-1, 1))
            m = compute_metrics(sr, hr, 4, lr=lr)
            rows.append({"psnr_y": float(m["psnr_y"]), "ssim_y": float(m["ssim_y"]),
                         "lr_psnr": float(m["lr_psnr"].clamp(max=LR_PSNR_CAP)),
                         "sharpness": float(gradient_energy(sr) / gradient_energy(hr))})
        out[method] = {key: sum(r[key] for r in rows) / len(rows) for key in rows[0]}
    return out


def format_table(results: list[dict], base: dict) -> str:
    ref = results[0]
    lines = [f"{'setting':<28} {'calls':>5} {'PSNR-Y':>7} {'dPSNR':>6} {'SSIM-Y':>6} {'LR-PSNR':>7} {'LR min':>6} "
             f"{'spread':>6} {'sharp':>5}"]
    for name, row in base.items():
        lines.append(f"{name:<28} {'-':>5} {row['psnr_y']:7.2f} {row['psnr_y'] - ref['psnr_y']:+6.2f} "
                     f"{row['ssim_y']:6.4f} {row['lr_psnr']:7.2f} {'-':>6} {'-':>6} {row['sharpness']:5.3f}")
    for row in results:
        spread = f"{row['spread']:6.2f}" if "spread" in row else f"{'-':>6}"
        lines.append(
            f"{row['setting']:<28} {row['calls']:>5} {row['psnr_y']:7.2f} {row['psnr_y'] - ref['psnr_y']:+6.2f} "
            f"{row['ssim_y']:6.4f} {row['lr_psnr']:7.2f} {row['lr_psnr_min']:6.2f} {spread} "
            f"{row['sharpness']:5.3f}"
        )
    return "\n".join(lines)


def markdown_table(results: list[dict], base: dict) -> str:
    """The table as Markdown (for README.md / model_card.md), same columns as :func:`format_table`."""
    ref = results[0]
    lines = ["| setting | U-Net calls | PSNR-Y | vs ref | SSIM-Y | LR-PSNR | worst photo | spread | sharpness |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, row in base.items():
        lines.append(f"| {name} | - | {row['psnr_y']:.2f} | {row['psnr_y'] - ref['psnr_y']:+.2f} | {row['ssim_y']:.4f} | "
                     f"{row['lr_psnr']:.2f} | - | - | {row['sharpness']:.3f} |")
    for row in results:
        spread = f"{row['spread']:.2f}" if "spread" in row else "-"
        lines.append(
            f"| `{row['setting']}` | {row['calls']} | {row['psnr_y']:.2f} | {row['psnr_y'] - ref['psnr_y']:+.2f} | "
            f"{row['ssim_y']:.4f} | {row['lr_psnr']:.2f} | {row['lr_psnr_min']:.2f} | {spread} | "
            f"{row['sharpness']:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", default="data/demo/test")
    parser.add_argument("--crop", type=int, default=128, help="HR center crop side (default 128)")
    parser.add_argument("--every", type=int, default=1, help="take every N-th photo (default 1: all)")
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--grid", choices=list(GRIDS), default="samplers")
    parser.add_argument("--settings", nargs="*", help="settings instead of --grid (the first is the reference)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    parser.add_argument("--cache", help="JSON file of results already measured (same setting, photos, crop, samples)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    pipe = load_pipeline(None, "cpu")
    pipe.set_progress_bar_config(disable=True)
    config = dict(pipe.scheduler.config)
    items = load_items(args.images, args.crop, args.every, pipe.config.upscale_factor)
    settings = args.settings or GRIDS[args.grid]
    print(f"{len(items)} photos ({', '.join(n for n, _, _ in items)}), {args.crop}x{args.crop} HR crops, "
          f"{args.samples} samples", flush=True)
    base = baselines(pipe, items)
    results = []
    cache = {}
    if args.cache and os.path.exists(args.cache):
        with open(args.cache) as f:
            cache = json.load(f)
    for setting in settings:
        start = time.perf_counter()
        results.append(run_setting(pipe, config, items, setting, args.samples, cache, args.crop))
        if args.cache:
            with open(args.cache, "w") as f:
                json.dump(cache, f)
        row = results[-1]
        print(f"  {setting:<28} PSNR-Y {row['psnr_y']:.2f} LR-PSNR {row['lr_psnr']:.2f} sharp {row['sharpness']:.3f}"
              f" ({time.perf_counter() - start:.0f} s, under load)", flush=True)
    print(format_table(results, base))
    if args.markdown:
        print(markdown_table(results, base))
    if args.json:
        options = " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
            if v not in (None, False) and k not in ("settings", "grid", "json", "threads", "cache", "markdown")
        )
        chosen = f"--settings {' '.join(args.settings)}" if args.settings else f"--grid {args.grid}"
        data = {"command": f"python benchmarks/bench_few_step.py {options} {chosen}",
                "photos": [n for n, _, _ in items], "crop": args.crop, "samples": args.samples,
                "baselines": base, "results": results}
        os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(data, f, indent=1)


if __name__ == "__main__":
    main()
