"""Two demo models side by side on held-out photos: old model | new model | HR, crops of textures, edges and faces.

    python docs/make_model_v2_sheet.py --old output/old-model --new src/sradm_diffusers/pretrained/sradm-demo-x4 \
        --out docs/model_v2_comparison.png

Each row is one HR window (``--crop`` pixels, top-left corner given per photo below) of a held-out photo of
``data/demo/test``; its LR is ``imresize(window, 1/4)`` rounded to uint8, and both models upscale that LR with the
command line's default sampling (``sradm upscale`` without sampling options: UniPC 11 steps, strength 0.82, LR
consistency on), seed 0 for both. Tiles are enlarged ``--zoom`` times with nearest neighbour so that texture is
visible, and each SR tile is labelled with its PSNR-Y against the HR window.
"""

from __future__ import annotations

import argparse
import os

import torch
from PIL import Image, ImageDraw

from sradm_diffusers import SRADMPipeline
from sradm_diffusers.commands.eval_pairs import make_lr, to_uint8_rgb
from sradm_diffusers.commands.files import load_image
from sradm_diffusers.commands.runtime import prepare_sampler, sampling_settings
from sradm_diffusers.metrics.quality import psnr_y

# (file, x, y, what the window shows): HR top-left corners of the windows
WINDOWS = (
    ("opencv_baboon.png", 0, 256, "fur"),
    ("palapeli_european-honey-bee.png", 200, 180, "hair, petals"),
    ("opencv_building.png", 256, 128, "window grid"),
    ("gradio_tower.png", 150, 300, "lattice"),
    ("cimg_parrot.png", 128, 128, "wire cage, feathers"),
    ("skimage_astronaut.png", 170, 70, "face"),
    ("matplotlib_grace_hopper.png", 160, 150, "face"),
    ("mahotas_luispedro.png", 90, 100, "face"),
)


def upscale(pipe, lr_u8: torch.Tensor, settings, num_steps: int, seed: int) -> torch.Tensor:
    """What ``sradm upscale`` writes for this LR (uint8 (1, 3, h, w)) with the default sampling: uint8 (1, 3, H, W)."""
    lr_pil = Image.fromarray(lr_u8[0].permute(1, 2, 0).numpy())
    out = pipe(lr_pil, num_inference_steps=num_steps, generator=[torch.Generator("cpu").manual_seed(seed)],
               output_type="pil", lr_consistency=settings.lr_consistency, strength=settings.strength).images[0]
    return to_uint8_rgb(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", required=True, help="pipeline folder of the old model")
    parser.add_argument("--new", required=True, help="pipeline folder of the new model")
    parser.add_argument("--hr-dir", default="data/demo/test")
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--zoom", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="docs/model_v2_comparison.png")
    args = parser.parse_args()

    settings = sampling_settings(None, None, None, None, 1, args.seed, None, 16)  # the command line's default
    pipes = []
    for folder in (args.old, args.new):
        pipe = SRADMPipeline.from_pretrained(folder)
        pipe.set_progress_bar_config(disable=True)
        pipes.append((pipe, prepare_sampler(pipe, settings)))

    tile = args.crop * args.zoom
    label_h, gap, columns = 16, 4, ("old model", "new model", "HR")
    sheet = Image.new("RGB", (len(columns) * (tile + gap) - gap, label_h + len(WINDOWS) * (tile + label_h + gap)),
                      "white")
    draw = ImageDraw.Draw(sheet)
    for col, title in enumerate(columns):
        draw.text((col * (tile + gap) + 4, 2), title, fill="black")
    for row, (name, x, y, what) in enumerate(WINDOWS):
        hr = to_uint8_rgb(load_image(os.path.join(args.hr_dir, name)))[..., y : y + args.crop, x : x + args.crop]
        lr = make_lr(hr, 4)
        top = label_h + row * (tile + label_h + gap)
        labels = []
        for col, (pipe, num_steps) in enumerate(pipes):
            sr = upscale(pipe, lr, settings, num_steps, args.seed)
            labels.append(f"PSNR-Y {float(psnr_y(sr, hr, 4)):.2f}")
            image = Image.fromarray(sr[0].permute(1, 2, 0).numpy()).resize((tile, tile), Image.NEAREST)
            sheet.paste(image, (col * (tile + gap), top + label_h))
        labels.append(f"{os.path.splitext(name)[0][:30]} ({what})")
        sheet.paste(Image.fromarray(hr[0].permute(1, 2, 0).numpy()).resize((tile, tile), Image.NEAREST),
                    (2 * (tile + gap), top + label_h))
        for col, text in enumerate(labels):
            draw.text((col * (tile + gap) + 4, top + 2), text, fill="black")
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    sheet.save(args.out, optimize=True)
    print(f"wrote {args.out} ({sheet.size[0]}x{sheet.size[1]}, {len(WINDOWS)} windows, seed {args.seed})")


if __name__ == "__main__":
    main()
