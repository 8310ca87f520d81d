"""Assemble an SRADMPipeline folder from a trained U-Net and encoder, e.g. from an intermediate checkpoint.

    python training/export_pipeline.py --unet output/demo-x4/checkpoint-14000/unet \
        --encoder output/demo-x4-encoder-2 --output_dir src/sradm_diffusers/pretrained/sradm-demo-x4

Several ``--unet`` folders (checkpoints of one run) are averaged parameter by parameter: a uniform average of the
last checkpoints of a run smooths the step-to-step noise of the weights, as an EMA would for a run trained without
one. They must share one config.

The scheduler is the package default (:func:`sradm_diffusers.presets.default_scheduler`), so the folder gets the
current stored-scheduler settings. The output is written to a temporary folder and renamed into place when it is
complete, and it is loaded back and compared with the inputs before that. Like every ``save_pretrained`` folder it
holds the code generated from the package (``pipeline_sradm.py``, ``unet/sradm_unet.py``,
``lr_encoder/sradm_rrdb_encoder.py``) that ``DiffusionPipeline.from_pretrained(..., trust_remote_code=True)`` runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from collections.abc import Sequence

import torch

from sradm_diffusers import RRDBEncoder, SRADMPipeline, SRADMUNet
from sradm_diffusers.presets import default_scheduler


def average_unets(unet_dirs: Sequence[str]) -> SRADMUNet:
    """Load the U-Nets saved in ``unet_dirs`` and return one whose parameters are their uniform average (fp32).

    Raises ``ValueError`` if the folders' configs differ (checkpoints of different models cannot be averaged).
    """
    if not unet_dirs:
        raise ValueError("average_unets needs at least one U-Net folder.")
    first = SRADMUNet.from_pretrained(unet_dirs[0])
    if len(unet_dirs) == 1:
        return first
    reference = {k: v for k, v in first.config.items() if not k.startswith("_")}
    total = {name: tensor.detach().double().clone() for name, tensor in first.state_dict().items()}
    for folder in unet_dirs[1:]:
        unet = SRADMUNet.from_pretrained(folder)
        config = {k: v for k, v in unet.config.items() if not k.startswith("_")}
        if config != reference:
            changed = sorted(k for k in reference.keys() | config.keys() if reference.get(k) != config.get(k))
            raise ValueError(
                f"{folder} has a different U-Net config than {unet_dirs[0]} (keys {changed}); only checkpoints of "
                "one model can be averaged."
            )
        for name, tensor in unet.state_dict().items():
            total[name] += tensor.double()
    first.load_state_dict({name: (tensor / len(unet_dirs)).float() for name, tensor in total.items()})
    first.register_to_config(_name_or_path="average of " + ", ".join(str(folder) for folder in unet_dirs))
    return first


def _make_readable(folder: str) -> None:
    """Give the staged folder the usual umask permissions (mkdtemp makes it private to the owner)."""
    umask = os.umask(0)
    os.umask(umask)
    for root, _subdirs, files in os.walk(folder):
        os.chmod(root, 0o777 & ~umask)
        for name in files:
            os.chmod(os.path.join(root, name), 0o666 & ~umask)


def export(unet_dirs: str | Sequence[str], encoder_dir: str, output_dir: str, residual_scale: float = 2.0) -> None:
    """Write the pipeline of ``unet_dirs`` (one folder, or several to average) and ``encoder_dir`` to ``output_dir``."""
    unet = average_unets([unet_dirs] if isinstance(unet_dirs, str) else list(unet_dirs))
    encoder = RRDBEncoder.from_pretrained(encoder_dir)
    pipe = SRADMPipeline(unet=unet, lr_encoder=encoder, scheduler=default_scheduler(), residual_scale=residual_scale)
    parent = os.path.dirname(os.path.abspath(output_dir))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".export-", dir=parent)
    try:
        pipe.save_pretrained(staging)
        _make_readable(staging)
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


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--unet", required=True, nargs="+",
                        help="folder(s) with a U-Net's config.json and weights; several are averaged")
    parser.add_argument("--encoder", required=True, help="folder of the frozen RRDB encoder used in training")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--residual_scale", type=float, default=2.0)
    args = parser.parse_args(argv)
    export(args.unet, args.encoder, args.output_dir, args.residual_scale)


if __name__ == "__main__":
    main()
