"""Assemble an SRADMPipeline folder from a trained U-Net and encoder, e.g. from an intermediate checkpoint.

    python training/export_pipeline.py --unet output/demo-x4/checkpoint-4500/unet \
        --encoder output/demo-x4-encoder-2 --output_dir src/sradm_diffusers/pretrained/sradm-demo-x4

The scheduler is the package default (:func:`sradm_diffusers.presets.default_scheduler`), so the folder gets the
current stored-scheduler settings. The output is written to a temporary folder and renamed into place when it is
complete, and it is loaded back and compared with the inputs before that.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile

import torch

from sradm_diffusers import RRDBEncoder, SRADMPipeline, SRADMUNet
from sradm_diffusers.presets import default_scheduler


def export(unet_dir: str, encoder_dir: str, output_dir: str, residual_scale: float = 2.0) -> None:
    unet = SRADMUNet.from_pretrained(unet_dir)
    encoder = RRDBEncoder.from_pretrained(encoder_dir)
    pipe = SRADMPipeline(unet=unet, lr_encoder=encoder, scheduler=default_scheduler(), residual_scale=residual_scale)
    parent = os.path.dirname(os.path.abspath(output_dir))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".export-", dir=parent)
    try:
        pipe.save_pretrained(staging)
        loaded = SRADMPipeline.from_pretrained(staging)
        for name, tensor in pipe.unet.state_dict().items():
            if not torch.equal(loaded.unet.state_dict()[name], tensor):
                raise RuntimeError(f"re-loaded U-Net parameter {name} differs; not exporting")
        if os.path.exists(output_dir):
            shutil.rmtree(output_dir)
        os.replace(staging, output_dir)
    finally:
        if os.path.exists(staging):
            shutil.rmtree(staging)
    print(f"wrote {output_dir}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--unet", required=True, help="folder with the U-Net's config.json and weights")
    parser.add_argument("--encoder", required=True, help="folder of the frozen RRDB encoder used in training")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--residual_scale", type=float, default=2.0)
    args = parser.parse_args()
    export(args.unet, args.encoder, args.output_dir, args.residual_scale)


if __name__ == "__main__":
    main()
