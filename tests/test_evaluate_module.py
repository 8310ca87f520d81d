"""The `evaluate` metric script shipped in the package loads offline and agrees with sradm_diffusers.metrics.quality."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

evaluate = pytest.importorskip("evaluate")

from sradm_diffusers.metrics import quality as M  # noqa: E402

# Without weights the module warns (once per process) that LPIPS is null; expected here.
pytestmark = pytest.mark.filterwarnings("ignore:LPIPS is reported as null:RuntimeWarning")

KEYS = ("psnr_rgb", "ssim_rgb", "psnr_y", "ssim_y", "lr_psnr")


@pytest.fixture(scope="module")
def load_metric(tmp_path_factory):
    """evaluate.load of EVALUATE_MODULE with every evaluate cache in a temporary directory, offline."""
    cache = tmp_path_factory.mktemp("hf_cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    # evaluate reads these at import time; patch its config so nothing is written under ~/.cache.
    mp.setattr(evaluate.config, "HF_MODULES_CACHE", cache / "modules")
    mp.setattr(evaluate.config, "HF_EVALUATE_CACHE", cache / "evaluate")
    mp.setattr(evaluate.config, "HF_METRICS_CACHE", cache / "metrics")

    def load(**kwargs):
        return evaluate.load(M.EVALUATE_MODULE, cache_dir=str(cache / "metric_data"), **kwargs)

    yield load
    mp.undo()


@pytest.fixture
def no_lpips(monkeypatch, tmp_path):
    for var in ("SRADM_LPIPS_ALEX", "SRADM_LPIPS_LIN", "SRADM_LPIPS_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))


def _image(h, w, seed, base=None, sigma=12.0):
    """uint8 (h, w, 3): structured image, or `base` plus noise."""
    rng = np.random.default_rng(seed)
    if base is None:
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([x * 5.0, y * 6.0, (x + y) * 2.5], axis=-1)
        base[h // 4 : h // 2, w // 3 : w // 2] = 200
    return np.clip(base + rng.normal(0, sigma, base.shape), 0, 255).round().astype(np.uint8)


def _pairs():
    """Two (sr, hr) pairs of different odd sizes (numpy HWC uint8)."""
    out = []
    for i, (h, w) in enumerate([(29, 37), (33, 41)]):
        hr = _image(h, w, seed=10 + i)
        out.append((_image(h, w, seed=20 + i, base=hr.astype(np.float64)), hr))
    return out


def _t(a):
    return torch.from_numpy(a).permute(2, 0, 1)


def _expected(pairs, scale, lrs=None, lpips_model=None):
    rows = [
        M.compute_metrics(_t(sr), _t(hr), scale, lr=None if lrs is None else _t(lrs[i]), lpips_model=lpips_model)
        for i, (sr, hr) in enumerate(pairs)
    ]
    keys = KEYS + (("lpips",) if lpips_model is not None else ())
    return {k: float(np.mean([r[k].item() for r in rows])) for k in keys}


def test_add_batch_pil_matches_metrics(load_metric, no_lpips):
    pairs = _pairs()
    metric = load_metric()
    for sr, hr in pairs:  # one add_batch per size (images of different sizes in one run)
        metric.add_batch(predictions=[Image.fromarray(sr)], references=[Image.fromarray(hr)])
    result = metric.compute(scale=4)
    expected = _expected(pairs, 4)
    for k in KEYS:
        assert abs(result[k] - expected[k]) < 1e-9, k
    assert result["lpips"] is None
    assert result["n_images"] == 2


def test_compute_numpy_with_lr_matches_metrics(load_metric, no_lpips):
    pairs = _pairs()
    lrs = [_image(-(-sr.shape[0] // 3), -(-sr.shape[1] // 3), seed=30 + i) for i, (sr, _) in enumerate(pairs)]
    metric = load_metric(keep_in_memory=True)
    result = metric.compute(predictions=[p[0] for p in pairs], references=[p[1] for p in pairs], lr=lrs, scale=3)
    expected = _expected(pairs, 3, lrs=lrs)
    for k in KEYS:
        assert abs(result[k] - expected[k]) < 1e-9, k
    # the given LR is really used: it differs from the LR made from the reference
    without_lr = _expected(pairs, 3)
    assert abs(result["lr_psnr"] - without_lr["lr_psnr"]) > 1.0


def test_lpips_through_evaluate(load_metric, monkeypatch, tmp_path):
    g = torch.Generator().manual_seed(1)
    shapes = {0: (64, 3, 11, 11), 3: (192, 64, 5, 5), 6: (384, 192, 3, 3), 8: (256, 384, 3, 3), 10: (256, 256, 3, 3)}
    alex = {}
    for idx, s in shapes.items():
        alex[f"features.{idx}.weight"] = torch.randn(s, generator=g) * (2 / (s[1] * s[2] * s[3])) ** 0.5
        alex[f"features.{idx}.bias"] = torch.zeros(s[0])
    channels = (64, 192, 384, 256, 256)
    lin = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) for k, c in enumerate(channels)}
    torch.save(alex, tmp_path / "a.pth")
    torch.save(lin, tmp_path / "l.pth")
    monkeypatch.setenv("SRADM_LPIPS_ALEX", str(tmp_path / "a.pth"))
    monkeypatch.setenv("SRADM_LPIPS_LIN", str(tmp_path / "l.pth"))
    hr = _image(45, 67, seed=40)
    pairs = [(_image(45, 67, seed=41, base=hr.astype(np.float64), sigma=30), hr)]
    metric = load_metric(keep_in_memory=True)
    result = metric.compute(predictions=[pairs[0][0]], references=[pairs[0][1]], scale=4)
    expected = _expected(pairs, 4, lpips_model=M.load_lpips())
    assert result["lpips"] is not None and result["lpips"] > 0
    assert abs(result["lpips"] - expected["lpips"]) < 1e-6
    assert abs(result["psnr_rgb"] - expected["psnr_rgb"]) < 1e-9


def test_identical_images_and_errors(load_metric, no_lpips):
    hr = _image(29, 37, seed=50)
    metric = load_metric(keep_in_memory=True)
    result = metric.compute(predictions=[hr], references=[hr], scale=4)
    assert result["psnr_rgb"] == float("inf") and result["psnr_y"] == float("inf")
    assert abs(result["ssim_rgb"] - 1) < 1e-12 and abs(result["ssim_y"] - 1) < 1e-12
    with pytest.raises(ValueError, match="scale"):
        load_metric(keep_in_memory=True).compute(predictions=[hr], references=[hr])
    with pytest.raises(ValueError, match="same size"):
        load_metric(keep_in_memory=True).compute(predictions=[hr[:-1]], references=[hr], scale=4)
    with pytest.raises(ValueError, match="one LR image per example"):
        load_metric(keep_in_memory=True).compute(predictions=[hr], references=[hr], lr=[hr, hr], scale=4)


def test_module_path_is_in_the_package():
    assert os.path.isabs(M.EVALUATE_MODULE) and os.path.isfile(M.EVALUATE_MODULE)
    assert M.EVALUATE_MODULE.endswith(".py")
