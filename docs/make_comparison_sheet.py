"""Side-by-side sheet of the demo model on held-out photos: LR | bicubic | RRDB | SRADM x3 samplers | HR.

The SRADM columns are 100 DDPM steps and 20 steps of DPM-Solver++ in its ODE (``dpm``) and SDE (``dpm-sde``) forms,
built exactly as ``sradm upscale --scheduler`` builds them.

    python docs/make_comparison_sheet.py --hr-dir data/demo/test --out docs/demo_comparison.png

Each row is the central ``--crop`` x ``--crop`` HR window of one photo; the LR is ``imresize(HR, 1/4)`` rounded to
uint8 (shown enlarged with nearest neighbour, so its pixels are visible). Seeds are fixed, so the sheet is
reproducible.
"""

from __future__ import annotations

import argparse
import os

import torch
from PIL import Image, ImageDraw

from sradm_diffusers import DEMO_MODEL, SRADMPipeline, imresize
from sradm_diffusers.commands.eval_pairs import center_crop, make_lr, to_uint8_rgb
from sradm_diffusers.commands.runtime import set_scheduler

FAST_SAMPLERS = (("dpm", "SRADM DPM-20"), ("dpm-sde", "SRADM DPM-SDE-20"))
COLUMNS = ("LR (nearest)", "bicubic", "RRDB", "SRADM DDPM-100", *(title for _, title in FAST_SAMPLERS), "HR")


def to_image(tensor: torch.Tensor) -> Image.Image:
    """(1, 3, H, W) in [-1, 1] -> PIL."""
    array = ((tensor[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    return Image.fromarray(array)


def row_images(pipe, hr_u8: torch.Tensor, seed: int) -> list[Image.Image]:
    scale = pipe.config.upscale_factor
    lr_u8 = make_lr(hr_u8, scale)
    lr = lr_u8.float() / 127.5 - 1
    size = (hr_u8.shape[-1], hr_u8.shape[-2])
    with torch.no_grad():
        rrdb = pipe.lr_encoder.upscale(lr)
    lr_pil = Image.fromarray(lr_u8[0].permute(1, 2, 0).numpy())
    ddpm = pipe(lr_pil, num_inference_steps=100, generator=torch.Generator().manual_seed(seed)).images[0]
    default_scheduler, fast = pipe.scheduler, []
    for name, _ in FAST_SAMPLERS:
        set_scheduler(pipe, name)
        fast.append(pipe(lr_pil, num_inference_steps=20, generator=torch.Generator().manual_seed(seed)).images[0])
        pipe.scheduler = default_scheduler
    return [
        lr_pil.resize(size, Image.NEAREST),
        to_image(imresize(lr, scale)),
        to_image(rrdb),
        ddpm,
        *fast,
        Image.fromarray(hr_u8[0].permute(1, 2, 0).numpy()),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEMO_MODEL)
    parser.add_argument("--hr-dir", default="data/demo/test")
    parser.add_argument("--names", default="opencv_baboon.png,skimage_astronaut.png,opencv_building.png,"
                        "lomiri_seeding_by_Clements_Engelhardt.png")
    parser.add_argument("--crop", type=int, default=192)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="docs/demo_comparison.png")
    args = parser.parse_args()

    pipe = SRADMPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    rows = []
    for name in args.names.split(","):
        hr = to_uint8_rgb(Image.open(os.path.join(args.hr_dir, name)).convert("RGB"))
        rows.append(row_images(pipe, center_crop(hr, args.crop, pipe.config.upscale_factor), args.seed))

    tile, label_h, gap = rows[0][0].size[0], 18, 4
    sheet = Image.new("RGB", (len(COLUMNS) * (tile + gap) - gap, label_h + len(rows) * (tile + gap)), "white")
    draw = ImageDraw.Draw(sheet)
    for col, title in enumerate(COLUMNS):
        draw.text((col * (tile + gap) + 4, 3), title, fill="black")
    for r, images in enumerate(rows):
        for col, image in enumerate(images):
            sheet.paste(image, (col * (tile + gap), label_h + r * (tile + gap)))
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    sheet.save(args.out, optimize=True)
    print(f"wrote {args.out} ({sheet.size[0]}x{sheet.size[1]}, {len(rows)} photos, seed {args.seed})")


if __name__ == "__main__":
    main()
