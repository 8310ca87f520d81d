"""Pictures (and the colour-shift numbers) of README's "Beyond one sample", on the bundled demo model.

    python docs/make_features_sheet.py --hr-dir data/demo/test --out-dir docs

Writes ``features_uncertainty.png``, ``features_interpolation.gif``, ``features_fusion.png`` and
``features_lr_consistency.png``, and prints the colour shift of SRADM against the bicubic upsample
(:func:`sradm_diffusers.metrics.colour.colour_shift`) with and without ``lr_consistency`` over every photo in ``--hr-dir``.
Each photo is its central ``--crop`` HR window, LR = ``imresize(HR, 1/4)`` rounded to uint8; samplers are the CLI's
``dpm-sde`` 20 steps (DDIM 20 for the interpolation); seeds are fixed, so the pictures are reproducible.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import torch
from PIL import Image, ImageDraw

from sradm_diffusers import DEMO_MODEL, SRADMPipeline
from sradm_diffusers.metrics.colour import colour_shift
from sradm_diffusers.commands.eval_pairs import center_crop, make_lr, to_uint8_rgb
from sradm_diffusers.extras.fusion import fuse
from sradm_diffusers.extras.interpolation import interpolate
from sradm_diffusers.metrics.quality import lr_psnr, psnr_y, to_uint8
from sradm_diffusers.extras.uncertainty import sample_with_uncertainty, summary_images
from sradm_diffusers.commands.files import folder_images
from sradm_diffusers.commands.runtime import set_scheduler


def to_pil(image: torch.Tensor) -> Image.Image:
    """(3, H, W) in [0, 1] -> PIL."""
    return Image.fromarray((image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


def labelled_row(images: list[Image.Image], titles: list[str]) -> Image.Image:
    width, height = images[0].size
    row = Image.new("RGB", (width * len(images), height + 14), "white")
    draw = ImageDraw.Draw(row)
    for k, (image, title) in enumerate(zip(images, titles)):
        row.paste(image.resize((width, image.height * width // image.width), Image.NEAREST), (k * width, 14))
        draw.text((k * width + 2, 1), title, fill="black")
    return row


def stack(rows: list[Image.Image]) -> Image.Image:
    sheet = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows)), "white")
    top = 0
    for row in rows:
        sheet.paste(row, (0, top))
        top += row.height
    return sheet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hr-dir", default="data/demo/test")
    parser.add_argument("--out-dir", default="docs")
    parser.add_argument("--crop", type=int, default=128)
    args = parser.parse_args()

    pipe = SRADMPipeline.from_pretrained(DEMO_MODEL)
    pipe.set_progress_bar_config(disable=True)
    set_scheduler(pipe, "dpm-sde")
    photos = folder_images(args.hr_dir)
    hrs = [center_crop(to_uint8_rgb(Image.open(p).convert("RGB")), args.crop, 4) for p in photos]
    lrs = [make_lr(hr, 4) for hr in hrs]
    lr_images = [Image.fromarray(lr[0].permute(1, 2, 0).numpy()) for lr in lrs]
    hr_images = [Image.fromarray(hr[0].permute(1, 2, 0).numpy()) for hr in hrs]
    size = (args.crop, args.crop)

    # LR consistency on/off, and the colour shift, on every photo
    rows, shifts = [], {False: [], True: []}
    for k, (lr, hr) in enumerate(zip(lrs, hrs)):
        outs = {}
        for on in (False, True):
            sr = pipe(lr_images[k], num_inference_steps=20, generator=torch.Generator().manual_seed(0),
                      output_type="pt", lr_consistency=on).images
            shift = colour_shift(sr, lr.float() / 255, 4)
            shifts[on].append((shift["global"].abs().mean().item(), shift["local"].item()))
            sr8 = to_uint8(sr, value_range=(0.0, 1.0))
            outs[on] = (sr, lr_psnr(sr8, lr, 4).item(), psnr_y(sr8, hr, 4).item())
        if k < 3:
            difference = ((outs[True][0] - outs[False][0]) * 8 + 0.5).clamp(0, 1)[0]
            rows.append(labelled_row(
                [lr_images[k].resize(size, Image.NEAREST), to_pil(outs[False][0][0]), to_pil(outs[True][0][0]),
                 to_pil(difference), hr_images[k]],
                ["LR", f"SRADM {outs[False][1]:.1f} dB", f"+LR-consist. {outs[True][1]:.1f} dB", "difference x8",
                 "HR"],
            ))
    stack(rows).save(os.path.join(args.out_dir, "features_lr_consistency.png"))
    for on in (False, True):
        values = np.array(shifts[on])
        print(f"lr_consistency={on}: colour shift vs bicubic over {len(values)} photos ({args.crop} px): "
              f"global |mean| {values[:, 0].mean():.3f}, max {values[:, 0].max():.3f}; "
              f"LR-resolution {values[:, 1].mean():.3f}, max {values[:, 1].max():.3f} (0..255)")

    # Uncertainty: 4 samples, their mean, the std map
    k = 1
    out = sample_with_uncertainty(pipe, lr_images[k], num_samples=4, num_inference_steps=20,
                                  generator=[torch.Generator().manual_seed(s) for s in range(4)])
    mean, std_map = summary_images(out.samples)
    images = [lr_images[k].resize(size, Image.NEAREST), *[to_pil(s) for s in out.samples], mean]
    top = labelled_row(images, ["LR", "sample 0", "sample 1", "sample 2", "sample 3", "mean"])
    sheet = Image.new("RGB", (top.width + std_map.width, max(top.height, std_map.height + 14)), "white")
    sheet.paste(top, (0, 0))
    sheet.paste(std_map, (top.width, 14))
    ImageDraw.Draw(sheet).text((top.width + 2, 1), "std (uncertainty)", fill="black")
    sheet.save(os.path.join(args.out_dir, "features_uncertainty.png"))

    # Interpolation between two noises (DDIM, eta 0)
    frames = interpolate(pipe, lr_images[k], num_frames=6, generator_a=torch.Generator().manual_seed(0),
                         generator_b=torch.Generator().manual_seed(1), num_inference_steps=20)
    loop = frames + frames[-2:0:-1]
    loop[0].save(os.path.join(args.out_dir, "features_interpolation.gif"), save_all=True, append_images=loop[1:],
                 duration=200, loop=0)
    labelled_row(frames, [f"t={t / 5:.1f}" for t in range(6)]).save(
        os.path.join(args.out_dir, "features_interpolation.png"))

    # Content fusion: a disc of another photo's HR texture inside photo k
    reference = np.asarray(hr_images[k]).copy()
    donor = np.asarray(hr_images[(k + 1) % len(hr_images)])
    yy, xx = np.mgrid[: args.crop, : args.crop]
    disc = (yy - args.crop / 2) ** 2 + (xx - args.crop / 2) ** 2 < (args.crop / 4) ** 2
    reference[disc] = donor[disc]
    mask = Image.fromarray((disc * 255).astype(np.uint8))
    reference = Image.fromarray(reference)
    plain = pipe(lr_images[k], num_inference_steps=20, generator=torch.Generator().manual_seed(0)).images[0]
    fused = fuse(pipe, lr_images[k], reference, mask, feather=8.0, generator=torch.Generator().manual_seed(0),
                 num_inference_steps=20).images[0]
    labelled_row(
        [lr_images[k].resize(size, Image.NEAREST), reference, mask.convert("RGB"), plain, fused],
        ["LR", "reference", "mask", "SRADM", "fused (feather 8)"],
    ).save(os.path.join(args.out_dir, "features_fusion.png"))


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
