"""training/export_pipeline.py: a pipeline folder from U-Net checkpoint(s) and an encoder, with averaging."""

import json
import os
import stat
import sys
from pathlib import Path

import pytest
import torch


from training import export_pipeline  # noqa: E402
from sradm_diffusers import SRADMPipeline, build_pipeline  # noqa: E402


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """Two tiny U-Net checkpoints of one config (different weights), a third of another config, and an encoder."""
    root = tmp_path_factory.mktemp("parts")
    torch.manual_seed(0)
    first = build_pipeline("tiny", upscale_factor=4)
    torch.manual_seed(1)
    second = build_pipeline("tiny", upscale_factor=4)
    first.unet.save_pretrained(root / "unet-a")
    second.unet.save_pretrained(root / "unet-b")
    first.lr_encoder.save_pretrained(root / "encoder")
    other = type(first.unet)(**{**dict(first.unet.config), "base_channels": 24})
    other.save_pretrained(root / "unet-other")
    return root, first, second


def test_single_unet_round_trips(parts, tmp_path):
    root, first, _ = parts
    export_pipeline.main(["--unet", str(root / "unet-a"), "--encoder", str(root / "encoder"),
                          "--output_dir", str(tmp_path / "pipe")])
    pipe = SRADMPipeline.from_pretrained(tmp_path / "pipe")
    for name, tensor in first.unet.state_dict().items():
        assert torch.equal(pipe.unet.state_dict()[name], tensor), name
    for name, tensor in first.lr_encoder.state_dict().items():
        assert torch.equal(pipe.lr_encoder.state_dict()[name], tensor), name


def test_several_unets_are_averaged(parts, tmp_path):
    root, first, second = parts
    export_pipeline.main(["--unet", str(root / "unet-a"), str(root / "unet-b"), "--encoder", str(root / "encoder"),
                          "--output_dir", str(tmp_path / "pipe")])
    pipe = SRADMPipeline.from_pretrained(tmp_path / "pipe")
    a, b = first.unet.state_dict(), second.unet.state_dict()
    differing = 0
    for name, tensor in pipe.unet.state_dict().items():
        expected = (a[name].double() + b[name].double()) / 2
        torch.testing.assert_close(tensor.double(), expected, rtol=0, atol=1e-7)
        differing += int(not torch.equal(a[name], b[name]))
    assert differing > 0  # the two checkpoints really differ, so the average is not one of them
    config = json.loads((tmp_path / "pipe" / "unet" / "config.json").read_text())
    assert config["_name_or_path"] == f"average of {root / 'unet-a'}, {root / 'unet-b'}"


def test_exported_folder_has_umask_permissions_not_mkdtemp_ones(parts, tmp_path):
    root, _, _ = parts
    export_pipeline.main(["--unet", str(root / "unet-a"), "--encoder", str(root / "encoder"),
                          "--output_dir", str(tmp_path / "pipe")])
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(tmp_path / "pipe").st_mode) == 0o777 & ~umask
    weights = tmp_path / "pipe" / "unet" / "diffusion_pytorch_model.safetensors"
    assert stat.S_IMODE(os.stat(weights).st_mode) == 0o666 & ~umask


def test_mismatched_configs_are_refused_and_nothing_is_written(parts, tmp_path):
    root, _, _ = parts
    with pytest.raises(ValueError, match="base_channels"):
        export_pipeline.main(["--unet", str(root / "unet-a"), str(root / "unet-other"),
                              "--encoder", str(root / "encoder"), "--output_dir", str(tmp_path / "pipe")])
    assert not (tmp_path / "pipe").exists()
