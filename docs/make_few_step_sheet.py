"""Few-step sampling side by side: LR | RRDB | 100 DDPM steps | few-step settings | HR, on held-out photos.

    python docs/make_few_step_sheet.py --out docs/few_step_comparison.png

Settings use ``benchmarks/bench_few_step.py``'s notation, ``sampler[+option]:steps[:strength][:lrc|nolrc]``, and are
sampled exactly as there (the scheduler ``sradm upscale --scheduler`` builds, CPU generator seeded ``--seed``). Each
row is the central ``--crop`` HR window of one photo, shown enlarged ``--zoom`` times with nearest neighbour so that
the texture is visible; each SR tile is labelled with its PSNR-Y against HR.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
from PIL import Image, ImageDraw

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks"))

from bench_few_step import configure, parse_setting  # noqa: E402

from sradm_diffusers.commands.eval_pairs import center_crop, make_lr, to_uint8_rgb  # noqa: E402
from sradm_diffusers.image_processing import preprocess  # noqa: E402
from sradm_diffusers.metrics.quality import psnr_y, to_uint8  # noqa: E402
from sradm_diffusers.commands.files import load_image
from sradm_diffusers.commands.runtime import load_pipeline  # noqa: E402


def to_pil(u8: torch.Tensor) -> Image.Image:
    return Image.fromarray(u8[0].permute(1, 2, 0).numpy())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hr-dir", default="data/demo/test")
    parser.add_argument("--names", default="opencv_baboon.png,skimage_astronaut.png,opencv_building.png,"
                        "lomiri_seeding_by_Clements_Engelhardt.png")
    parser.add_argument("--settings", nargs="+",
                        default=["ddpm:100:1:lrc", "dpm-sde:20:1:lrc", "dpm-sde:10:1:lrc", "unipc:11:0.82:lrc"])
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--zoom", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="docs/few_step_comparison.png")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    pipe = load_pipeline(None, "cpu")
    pipe.set_progress_bar_config(disable=True)
    config = dict(pipe.scheduler.config)
    columns = ["LR (nearest)", "RRDB", *args.settings, "HR"]
    rows = []
    for name in args.names.split(","):
        hr = center_crop(to_uint8_rgb(load_image(os.path.join(args.hr_dir, name))), args.crop, 4)
        lr = make_lr(hr, 4)
        with torch.no_grad():
            rrdb = to_uint8(pipe.lr_encoder.upscale(preprocess(lr[0].permute(1, 2, 0).numpy())).clamp(-1, 1))
        tiles = [(to_pil(lr).resize((args.crop, args.crop), Image.NEAREST), None), (to_pil(rrdb), psnr_y(rrdb, hr, 4))]
        for setting in args.settings:
            sampler, options, steps, strength, lrc = parse_setting(setting)
            configure(pipe, config, sampler, options)
            out = pipe(lr[0].permute(1, 2, 0).numpy(), num_inference_steps=steps, strength=strength,
                       lr_consistency=lrc, generator=torch.Generator().manual_seed(args.seed), output_type="pt").images
            sr = to_uint8(out, value_range=(0.0, 1.0))
            tiles.append((to_pil(sr), psnr_y(sr, hr, 4)))
        tiles.append((to_pil(hr), None))
        rows.append(tiles)
        print(f"{name}: done", flush=True)

    side, label_h, gap = args.crop * args.zoom, 16, 4
    sheet = Image.new("RGB", (len(columns) * (side + gap) - gap, label_h + len(rows) * (side + label_h + gap)), "white")
    draw = ImageDraw.Draw(sheet)
    for col, title in enumerate(columns):
        draw.text((col * (side + gap) + 2, 2), title, fill="black")
    for r, tiles in enumerate(rows):
        top = label_h + r * (side + label_h + gap)
        for col, (image, score) in enumerate(tiles):
            sheet.paste(image.resize((side, side), Image.NEAREST), (col * (side + gap), top))
            if score is not None:
                draw.text((col * (side + gap) + 2, top + side + 2), f"PSNR-Y {float(score):.2f}", fill="black")
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    sheet.save(args.out, optimize=True)
    print(f"wrote {args.out} ({sheet.size[0]}x{sheet.size[1]}, seed {args.seed})")


if __name__ == "__main__":
    main()
