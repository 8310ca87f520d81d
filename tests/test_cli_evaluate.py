"""`sradm evaluate`: JSON layout, bicubic numbers against a direct computation with sradm_diffusers.metrics.quality,
--lr-dir, the bottom/right crop of odd HR sizes, failed images, --limit, --dataset (local imagefolder), K > 1
diversity, scale and model errors. Tiny random pipeline, HR images of 32..44 px, 2 denoising steps."""

import json
import os

import numpy as np
import PIL.Image
import pytest
import torch

from sradm_diffusers.metrics import quality as M
from sradm_diffusers.commands.cli import main
from sradm_diffusers.imresize import imresize

SCALE = 4
METRIC_KEYS = {"psnr_rgb", "ssim_rgb", "psnr_y", "ssim_y", "lr_psnr", "lpips"}


@pytest.fixture(autouse=True)
def no_lpips(monkeypatch, tmp_path):
    """No LPIPS weights anywhere: LPIPS must come out as null / n/a."""
    for var in ("SRADM_LPIPS_ALEX", "SRADM_LPIPS_LIN", "SRADM_LPIPS_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))


def _hr_array(h, w, seed):
    """uint8 (h, w, 3) with structure (gradients, a block) and noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    image = np.stack([x * 5.0, y * 6.0, (x + y) * 2.5], axis=-1)
    image[h // 4 : h // 2, w // 3 : w // 2] = 210
    return np.clip(image + rng.normal(0, 8, image.shape), 0, 255).round().astype(np.uint8)


def _write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(array).save(path)
    return path


@pytest.fixture
def hr_dir(tmp_path):
    folder = tmp_path / "hr"
    for i, (h, w) in enumerate([(32, 40), (36, 44), (40, 32)]):
        _write(folder / f"img{i}.png", _hr_array(h, w, seed=i))
    return folder


def _evaluate(*args, json_path):
    return main(["evaluate", *map(str, args), "--json", str(json_path)])


def _load(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _direct_bicubic(hr_u8_hwc, lr_u8_hwc=None):
    """The bicubic row computed here from the definitions: crop, LR, up-sample, metrics (floats)."""
    h, w = hr_u8_hwc.shape[0] // SCALE * SCALE, hr_u8_hwc.shape[1] // SCALE * SCALE
    hr_np = hr_u8_hwc[:h, :w]
    if lr_u8_hwc is None:  # MATLAB bicubic in float, rounded half up to uint8
        lr_u8_hwc = np.clip(np.floor(imresize(hr_np.astype(np.float64), 1 / SCALE) + 0.5), 0, 255).astype(np.uint8)
    lr = torch.from_numpy(np.array(lr_u8_hwc)).permute(2, 0, 1)[None]
    hr = torch.from_numpy(np.array(hr_np)).permute(2, 0, 1)[None]
    up = imresize(lr.float() / 255.0 * 2.0 - 1.0, SCALE).clamp(-1, 1)
    sr = M.to_uint8(up)
    _direct_bicubic.last = (sr, hr)
    return {
        "psnr_rgb": float(M.psnr_rgb(sr, hr)[0]),
        "ssim_rgb": float(M.ssim_rgb(sr, hr)[0]),
        "psnr_y": float(M.psnr_y(sr, hr, SCALE)[0]),
        "ssim_y": float(M.ssim_y(sr, hr, SCALE)[0]),
        "lr_psnr": float(M.lr_psnr(sr, lr, SCALE)[0]),
        "lpips": None,
    }


def _assert_close(got: dict, want: dict, tol=1e-9):
    assert set(got) == set(want)
    for key, value in want.items():
        if value is None:
            assert got[key] is None, key
        else:
            assert got[key] == pytest.approx(value, rel=tol, abs=tol), key


def test_json_layout_and_table(hr_dir, model_dir, tmp_path, capsys):
    out = tmp_path / "res" / "r.json"
    assert _evaluate("--model", model_dir, "--hr-dir", hr_dir, "--scale", SCALE, "--steps", 2, json_path=out) == 0
    result = _load(out)
    assert set(result) == {"scale", "n_images", "n_failed", "methods", "per_image", "failed", "config"}
    assert result["scale"] == SCALE and result["n_images"] == 3 and result["n_failed"] == 0 and result["failed"] == {}
    assert list(result["methods"]) == ["bicubic", "rrdb", "sradm"]
    for method, scores in result["methods"].items():
        assert set(scores) == METRIC_KEYS, method  # K = 1: no diversity_std
        assert scores["lpips"] is None
    assert list(result["per_image"]) == ["img0.png", "img1.png", "img2.png"]
    for name, rows in result["per_image"].items():
        assert set(rows) == {"bicubic", "rrdb", "sradm"} and all(set(r) == METRIC_KEYS for r in rows.values())
    for method in ("bicubic", "rrdb", "sradm"):  # the reported score is the mean over images
        per = [result["per_image"][n][method]["psnr_y"] for n in result["per_image"]]
        assert result["methods"][method]["psnr_y"] == pytest.approx(np.mean(per), rel=1e-12)
    config = result["config"]
    assert {"model", "steps", "scheduler", "samples", "seed"} <= set(config)
    assert config["model"] == model_dir and config["steps"] == 2 and config["samples"] == 1 and config["seed"] == 0
    assert os.listdir(out.parent) == ["r.json"]  # written via a temporary file, nothing left behind

    lines = capsys.readouterr().out.splitlines()
    titles = ["Method", "PSNR", "SSIM", "LPIPS", "LR-PSNR", "PSNR-Y", "SSIM-Y"]
    assert [c.strip() for c in lines[0].split("|")] == titles
    rows = {line.split("|")[0].strip(): [c.strip() for c in line.split("|")[1:]] for line in lines[2:5]}
    assert set(rows) == {"Bicubic", "RRDB", "SRADM"}
    assert rows["Bicubic"][0] == f"{result['methods']['bicubic']['psnr_rgb']:.2f}" and rows["Bicubic"][2] == "n/a"


def test_bicubic_equals_direct_computation_and_needs_no_model(hr_dir, tmp_path):
    out = tmp_path / "r.json"
    assert _evaluate("--hr-dir", hr_dir, "--scale", SCALE, "--methods", "bicubic", json_path=out) == 0
    result = _load(out)
    assert list(result["methods"]) == ["bicubic"] and result["config"]["model"] is None
    wants = []
    for name, rows in result["per_image"].items():
        hr = np.asarray(PIL.Image.open(hr_dir / name).convert("RGB"))
        want = _direct_bicubic(hr)
        _assert_close(rows["bicubic"], want)
        wants.append(want)
        # the LR made from HR agrees with the one metrics.compute_metrics assumes when it is not given an LR
        sr, hr_t = _direct_bicubic.last
        assert float(M.compute_metrics(sr, hr_t, SCALE)["lr_psnr"][0]) == pytest.approx(rows["bicubic"]["lr_psnr"])
    for key in ("psnr_rgb", "ssim_rgb", "psnr_y", "ssim_y", "lr_psnr"):
        assert result["methods"]["bicubic"][key] == pytest.approx(np.mean([w[key] for w in wants]), rel=1e-12)


def test_odd_hr_size_is_cropped_bottom_right(tmp_path):
    big = _hr_array(35, 42, seed=7)  # 35x42 -> 32x40 at x4
    _write(tmp_path / "odd" / "a.png", big)
    _write(tmp_path / "even" / "a.png", big[:32, :40].copy())
    _write(tmp_path / "topleft" / "a.png", big[3:, 2:].copy())  # a crop from the other corner differs
    results = {}
    for name in ("odd", "even", "topleft"):
        out = tmp_path / f"{name}.json"
        assert _evaluate("--hr-dir", tmp_path / name, "--scale", SCALE, "--methods", "bicubic", json_path=out) == 0
        results[name] = _load(out)["per_image"]["a.png"]["bicubic"]
    _assert_close(results["odd"], results["even"], tol=0)
    assert results["odd"]["psnr_rgb"] != results["topleft"]["psnr_rgb"]
    _assert_close(results["odd"], _direct_bicubic(big))


def test_center_crop_evaluates_the_central_window(tmp_path, capsys):
    big = _hr_array(41, 50, seed=3)  # -> 40x48 mod-crop, then the central 24x24 window: rows 8..32, cols 12..36
    _write(tmp_path / "full" / "a.png", big)
    _write(tmp_path / "window" / "a.png", big[8:32, 12:36].copy())
    results = {}
    for name, extra in (("full", ["--center-crop", 24]), ("window", [])):
        out = tmp_path / f"{name}.json"
        args = ["--hr-dir", tmp_path / name, "--scale", SCALE, "--methods", "bicubic", *extra]
        assert _evaluate(*args, json_path=out) == 0
        results[name] = _load(out)
    assert results["full"]["config"]["center_crop"] == 24
    _assert_close(results["full"]["per_image"]["a.png"]["bicubic"], results["window"]["per_image"]["a.png"]["bicubic"], tol=0)
    for bad in (["--center-crop", 6], ["--center-crop", 8, "--lr-dir", tmp_path / "window"]):
        assert main(["evaluate", "--hr-dir", str(tmp_path / "full"), "--scale", "4", "--methods", "bicubic",
                     *map(str, bad)]) == 2
    assert "--center-crop" in capsys.readouterr().err


def test_lr_dir(tmp_path, capsys):
    hr_dir, lr_dir = tmp_path / "hr", tmp_path / "lr"
    given = {}
    for i, name in enumerate(["a.png", "b.png", "c.png", "d.png"]):
        hr = _hr_array(32, 40, seed=10 + i)
        _write(hr_dir / name, hr)
        # LR made some other way (PIL's bicubic): it must be read as given, not remade
        given[name] = np.asarray(PIL.Image.fromarray(hr).resize((10, 8), PIL.Image.BICUBIC))
    _write(lr_dir / "a.png", given["a.png"])
    _write(lr_dir / "bx4.png", given["b.png"])  # DIV2K naming
    _write(lr_dir / "c.png", given["c.png"][:7, :9].copy())  # wrong size for a 32x40 HR
    out = tmp_path / "r.json"  # no LR for d.png
    rc = _evaluate("--hr-dir", hr_dir, "--lr-dir", lr_dir, "--scale", SCALE, "--methods", "bicubic", json_path=out)
    assert rc == 1
    result = _load(out)
    assert sorted(result["per_image"]) == ["a.png", "b.png"] and sorted(result["failed"]) == ["c.png", "d.png"]
    assert "36x28" in result["failed"]["c.png"] and "32" in result["failed"]["c.png"]
    for name in ("a.png", "b.png"):
        hr = np.asarray(PIL.Image.open(hr_dir / name))
        _assert_close(result["per_image"][name]["bicubic"], _direct_bicubic(hr, given[name]))
        assert result["per_image"][name]["bicubic"] != _direct_bicubic(hr)  # differs from a remade LR
    args = ["--dataset", str(hr_dir), "--lr-dir", str(lr_dir), "--scale", "4"]
    assert "--lr-dir needs --hr-dir" in _usage_error(args, capsys)


def test_failing_image_is_counted(hr_dir, tmp_path, capsys):
    (hr_dir / "broken.png").write_bytes(b"\x89PNG not really")
    (hr_dir / "empty.png").write_bytes(b"")
    _write(hr_dir / "tiny.png", _hr_array(3, 3, seed=0))  # smaller than the scale
    out = tmp_path / "r.json"
    assert _evaluate("--hr-dir", hr_dir, "--scale", SCALE, "--methods", "bicubic", json_path=out) == 1
    result = _load(out)
    assert result["n_images"] == 3 and result["n_failed"] == 3
    assert sorted(result["failed"]) == ["broken.png", "empty.png", "tiny.png"]
    assert sorted(result["per_image"]) == ["img0.png", "img1.png", "img2.png"]
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 3 and all(sum(n in line for line in errors) == 1 for n in result["failed"])
    assert "3 failed" in captured.out and "failed: broken.png" in captured.out


def test_limit(hr_dir, tmp_path):
    out = tmp_path / "r.json"
    assert _evaluate("--hr-dir", hr_dir, "--scale", SCALE, "--methods", "bicubic", "--limit", 2, json_path=out) == 0
    result = _load(out)
    assert result["n_images"] == 2 and list(result["per_image"]) == ["img0.png", "img1.png"]


def test_dataset_imagefolder(hr_dir, tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))  # keep ~/.cache clean
    (hr_dir / "zz_corrupt.png").write_bytes(b"garbage")
    ref, out = tmp_path / "ref.json", tmp_path / "ds.json"
    assert _evaluate("--hr-dir", hr_dir, "--scale", SCALE, "--methods", "bicubic", json_path=ref) == 1
    assert _evaluate("--dataset", hr_dir, "--scale", SCALE, "--methods", "bicubic", json_path=out) == 1
    from_dir, from_dataset = _load(ref), _load(out)
    assert from_dataset["config"]["split"] == "train" and from_dataset["n_failed"] == 1
    assert list(from_dataset["failed"]) == ["zz_corrupt.png"]
    assert from_dataset["per_image"] == from_dir["per_image"]
    assert _evaluate("--dataset", hr_dir, "--scale", SCALE, "--methods", "bicubic", "--limit", 1,
                     json_path=out) == 0
    assert list(_load(out)["per_image"]) == ["img0.png"]


def test_samples_give_diversity(hr_dir, model_dir, tmp_path):
    out = tmp_path / "r.json"
    rc = _evaluate("--model", model_dir, "--hr-dir", hr_dir, "--scale", SCALE, "--methods", "bicubic,sradm",
                   "--samples", 2, "--steps", 2, "--scheduler", "ddim", "--limit", 2, json_path=out)
    assert rc == 0
    result = _load(out)
    assert list(result["methods"]) == ["bicubic", "sradm", "sradm_mean"]  # sradm_mean: the K samples' mean image
    assert set(result["methods"]["sradm"]) == METRIC_KEYS | {"diversity_std"}
    assert set(result["methods"]["sradm_mean"]) == METRIC_KEYS
    assert set(result["methods"]["bicubic"]) == METRIC_KEYS
    per = [rows["sradm"]["diversity_std"] for rows in result["per_image"].values()]
    assert all(d > 0 for d in per)
    assert result["methods"]["sradm"]["diversity_std"] == pytest.approx(np.mean(per))
    assert result["config"]["samples"] == 2 and result["config"]["scheduler"] == "ddim"
    assert result["config"]["scheduler_class"] == "DDIMScheduler"


def _usage_error(args, capsys):
    capsys.readouterr()
    assert main(["evaluate", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_usage_errors(hr_dir, model_dir, capsys):
    base = ["--hr-dir", str(hr_dir)]
    err = _usage_error(base + ["--model", model_dir, "--scale", "2"], capsys)
    assert "--scale 2" in err and "upscale_factor 4" in err
    assert "--methods" in _usage_error(base + ["--scale", "4", "--methods", "bicubic,lanczos"], capsys)
    assert "--hr-dir" in _usage_error(["--scale", "4", "--methods", "bicubic"], capsys)
    assert "not a folder" in _usage_error(["--hr-dir", str(hr_dir / "nope"), "--scale", "4"], capsys)
