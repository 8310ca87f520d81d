"""Saving, loading from folders and from a Hub repository id (offline, through a real huggingface_hub cache)."""

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from sradm_diffusers import RRDBEncoder, SRADMPipeline, SRADMUNet, build_pipeline


def sample(pipe, image, seed=0):
    return pipe(image, num_inference_steps=3, generator=torch.Generator().manual_seed(seed), output_type="pt").images


# A loaded pipeline runs on memory-mapped safetensors weights whose addresses need not be 64-byte aligned, so oneDNN
# may pick other convolution kernels than for freshly allocated weights (seen on AMD EPYC: 1.5e-5 after three
# steps). The weights themselves must round-trip bit-exactly; the sampled images only to float rounding.
CROSS_PATH_ATOL = 1e-4


def test_save_load_round_trip_is_exact(tiny_pipe, lr_image, tmp_path):
    tiny_pipe.save_pretrained(tmp_path)
    loaded = SRADMPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded.unet, SRADMUNet) and isinstance(loaded.lr_encoder, RRDBEncoder)
    assert loaded.config.upscale_factor == 4 and loaded.config.residual_scale == 2.0
    for name, tensor in tiny_pipe.unet.state_dict().items():
        torch.testing.assert_close(loaded.unet.state_dict()[name], tensor, atol=0, rtol=0)
    torch.testing.assert_close(loaded.lr_encoder.state_dict(), tiny_pipe.lr_encoder.state_dict(), atol=0, rtol=0)
    torch.testing.assert_close(sample(loaded, lr_image), sample(tiny_pipe, lr_image), atol=CROSS_PATH_ATOL, rtol=0)


def test_model_index_names_the_shipped_modules_and_public_classes(tiny_pipe, tmp_path):
    tiny_pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    # [module shipped in the folder, public class]: diffusers loads the shipped code with trust_remote_code=True,
    # the installed package its own classes of those names (tests/test_remote_code.py).
    assert index["_class_name"] == ["pipeline_sradm", "SRADMPipeline"]
    assert index["unet"] == ["sradm_unet", "SRADMUNet"]
    assert index["lr_encoder"] == ["sradm_rrdb_encoder", "RRDBEncoder"]
    assert index["scheduler"] == ["diffusers", "DDPMScheduler"]
    assert index["upscale_factor"] == 4
    assert tiny_pipe.config["unet"] == ("sradm_diffusers", "SRADMUNet")  # in memory: the installed package's


def test_swapped_scheduler_is_saved_and_restored(tiny_pipe, tmp_path):
    from diffusers import DPMSolverMultistepScheduler

    tiny_pipe.scheduler = DPMSolverMultistepScheduler.from_config(tiny_pipe.scheduler.config)
    tiny_pipe.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "model_index.json").read_text())["scheduler"][1] == "DPMSolverMultistepScheduler"
    assert isinstance(SRADMPipeline.from_pretrained(tmp_path).scheduler, DPMSolverMultistepScheduler)


def lay_out_hub_cache(folder: Path, cache_dir: Path, repo_id: str, tree_listing: bool = False) -> str:
    """Arrange ``folder`` as huggingface_hub stores a downloaded snapshot: blobs by hash, symlinked snapshot.

    ``tree_listing``: also write the repository's file listing (``trees/<commit>.json``), which recent
    huggingface_hub versions (2.4 here) cache with a snapshot and diffusers reads when offline.
    """
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    repo_dir = cache_dir / f"models--{repo_id.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    listing = {}
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            git_blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
            listing[path.relative_to(folder).as_posix()] = {"size": len(data), "blob_id": git_blob}
            blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
            blob.parent.mkdir(parents=True, exist_ok=True)
            blob.write_bytes(data)
            link = repo_dir / "snapshots" / commit / path.relative_to(folder)
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.path.relpath(blob, link.parent), link)
    if tree_listing:
        (repo_dir / "trees").mkdir()
        (repo_dir / "trees" / f"{commit}.json").write_text(json.dumps({"format_version": 1, "files": listing}))
    return commit


def test_load_by_repo_id_from_the_hub_cache_offline(tiny_pipe, lr_image, tmp_path, monkeypatch):
    saved, cache = tmp_path / "saved", tmp_path / "hub"
    tiny_pipe.save_pretrained(saved)
    commit = lay_out_hub_cache(saved, cache, "org/sradm-tiny")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    loaded = SRADMPipeline.from_pretrained("org/sradm-tiny", cache_dir=cache)
    loaded.set_progress_bar_config(disable=True)
    torch.testing.assert_close(loaded.unet.state_dict(), tiny_pipe.unet.state_dict(), atol=0, rtol=0)
    torch.testing.assert_close(sample(loaded, lr_image), sample(tiny_pipe, lr_image), atol=CROSS_PATH_ATOL, rtol=0)
    assert commit in os.path.realpath(SRADMPipeline.download("org/sradm-tiny", cache_dir=cache))


def test_missing_repo_offline_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(OSError, match="not in the local Hugging Face cache"):
        SRADMPipeline.from_pretrained("org/does-not-exist", cache_dir=tmp_path)


def test_folder_that_is_not_a_pipeline_is_rejected(tiny_pipe, tmp_path):
    with pytest.raises(ValueError, match="model_index.json does not exist"):
        SRADMPipeline.from_pretrained(tmp_path)
    tiny_pipe.unet.save_pretrained(tmp_path / "unet_only")
    with pytest.raises(ValueError, match="holds SRADMUNet, not a pipeline"):
        SRADMPipeline.from_pretrained(tmp_path / "unet_only")


def test_incomplete_pipeline_folder_names_the_missing_file(tiny_pipe, tmp_path):
    tiny_pipe.save_pretrained(tmp_path)
    (tmp_path / "lr_encoder" / "config.json").unlink()
    with pytest.raises(ValueError, match=r"lr_encoder[/\\]config.json is missing"):
        SRADMPipeline.from_pretrained(tmp_path)


def test_weights_that_disagree_with_config_are_named(tmp_path):
    build_pipeline("tiny").save_pretrained(tmp_path)
    # Replace the encoder's weights with those of a wider encoder: the config no longer describes them.
    wider = RRDBEncoder(num_features=16, num_blocks=2, growth_channels=8, upscale_factor=4)
    weights = tmp_path / "lr_encoder" / "diffusion_pytorch_model.safetensors"
    assert set(load_file(weights)) == set(wider.state_dict())
    save_file({k: v.contiguous() for k, v in wider.state_dict().items()}, weights)
    with pytest.raises(ValueError, match=r"do not match the architecture") as info:
        SRADMPipeline.from_pretrained(tmp_path)
    assert "lr_encoder/diffusion_pytorch_model.safetensors" in str(info.value)
    assert "has shape (8, 16, 3, 3) but lr_encoder/config.json describes shape (8, 8, 3, 3)" in str(info.value)
