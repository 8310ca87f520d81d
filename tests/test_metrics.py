"""sradm_diffusers.metrics (quality, lpips) against independent computations (scikit-image, numpy, explicit loops)."""

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from sradm_diffusers.metrics import lpips as lpips_mod
from sradm_diffusers.metrics import quality as M
from sradm_diffusers.metrics import ssim as ssim_engine


# ----------------------------------------------------------------------------- data
def _structured(b, h, w, seed):
    """uint8 (b,3,h,w): gradients, a bright square and noise, so SSIM is far from trivial values."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 5.0, y * 7.0, (x + y) * 3.0], axis=0)
    out = []
    for i in range(b):
        img = base + rng.normal(0, 12, base.shape) + 20 * i
        img[:, h // 4 : h // 2, w // 3 : w // 2] = 210 - 30 * i
        out.append(img)
    return torch.from_numpy(np.clip(np.stack(out), 0, 255).round().astype(np.uint8))


def _degrade(img, seed, sigma=10.0):
    rng = np.random.default_rng(seed)
    noisy = img.numpy().astype(np.float64) + rng.normal(0, sigma, img.shape)
    return torch.from_numpy(np.clip(noisy, 0, 255).round().astype(np.uint8))


@pytest.fixture
def pair():
    hr = _structured(2, 29, 37, seed=1)  # H=29, W=37: odd sizes
    sr = _degrade(hr, seed=2)
    return sr, hr


def _hwc(t):
    return t.permute(1, 2, 0).numpy()


# ----------------------------------------------------------------------------- to_uint8
def test_to_uint8_matches_numpy_rounding():
    x = torch.linspace(-1.2, 1.2, 2 * 3 * 5 * 7).reshape(2, 3, 5, 7)
    x[0, 0, 0, :3] = torch.tensor([-1.0, 1.0, 1 / 255 - 1])  # exact ends and a half-step value
    expected = np.clip(np.round((x.numpy() + 1) * 127.5), 0, 255).astype(np.uint8)
    assert torch.equal(M.to_uint8(x), torch.from_numpy(expected))
    x01 = (x + 1) / 2
    expected01 = np.clip(np.round(x01.numpy() * 255), 0, 255).astype(np.uint8)
    assert np.abs(M.to_uint8(x01, value_range=(0, 1)).numpy().astype(int) - expected01).max() <= 1
    u = torch.from_numpy(expected)
    assert M.to_uint8(u) is u
    with pytest.raises(ValueError, match="NaN"):
        M.to_uint8(torch.tensor([float("nan")]))
    with pytest.raises(ValueError, match="value_range"):
        M.to_uint8(x, value_range=(1, 1))


# ----------------------------------------------------------------------------- RGB protocol vs scikit-image
def test_psnr_rgb_matches_skimage(pair):
    sr, hr = pair
    got = M.psnr_rgb(sr, hr)
    assert got.shape == (2,)
    for i in range(2):
        ref = peak_signal_noise_ratio(_hwc(hr[i]), _hwc(sr[i]), data_range=255)
        assert abs(got[i].item() - ref) < 1e-4


def test_ssim_rgb_matches_skimage(pair):
    sr, hr = pair
    got = M.ssim_rgb(sr, hr)
    assert got.shape == (2,)
    for i in range(2):
        ref = structural_similarity(_hwc(sr[i]), _hwc(hr[i]), channel_axis=-1, data_range=255)
        assert 0.2 < ref < 0.99  # a non-trivial value
        assert abs(got[i].item() - ref) < 1e-5
    # unbatched input -> 0-dim, same value
    single = M.ssim_rgb(sr[1], hr[1])
    assert single.ndim == 0 and abs(single.item() - got[1].item()) < 1e-12


def test_ssim_rgb_small_image_matches_skimage():
    hr = _structured(1, 7, 9, seed=5)
    sr = _degrade(hr, seed=6, sigma=30)
    ref = structural_similarity(_hwc(sr[0]), _hwc(hr[0]), channel_axis=-1, data_range=255)
    assert abs(M.ssim_rgb(sr, hr)[0].item() - ref) < 1e-5
    with pytest.raises(ValueError, match="7x7"):
        M.ssim_rgb(sr[..., :6, :], hr[..., :6, :])


# ----------------------------------------------------------------------------- Y protocol vs a plain reference
def _y_numpy(img_chw):
    r, g, b = img_chw.astype(np.float64)
    return 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0


def _ssim_gauss_numpy(a, b):
    """BasicSR-style SSIM: explicit 2-D correlation with an 11x11 Gaussian (sigma 1.5), 'valid' region."""
    coords = np.arange(11) - 5.0
    win = np.exp(-(coords[:, None] ** 2 + coords[None, :] ** 2) / (2 * 1.5**2))
    win /= win.sum()
    h, w = a.shape
    out = np.empty((h - 10, w - 10))
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    for i in range(h - 10):
        for j in range(w - 10):
            pa, pb = a[i : i + 11, j : j + 11], b[i : i + 11, j : j + 11]
            mu_a, mu_b = (win * pa).sum(), (win * pb).sum()
            va = (win * pa * pa).sum() - mu_a**2
            vb = (win * pb * pb).sum() - mu_b**2
            cov = (win * pa * pb).sum() - mu_a * mu_b
            out[i, j] = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (va + vb + c2))
    return out.mean()


@pytest.mark.parametrize("crop", [0, 3, 4])
def test_y_protocol_matches_plain_reference(pair, crop):
    sr, hr = pair
    got_psnr = M.psnr_y(sr, hr, crop)
    got_ssim = M.ssim_y(sr, hr, crop)
    assert got_psnr.shape == got_ssim.shape == (2,)
    for i in range(2):
        ys, yh = _y_numpy(sr[i].numpy()), _y_numpy(hr[i].numpy())
        if crop:
            ys, yh = ys[crop:-crop, crop:-crop], yh[crop:-crop, crop:-crop]
        ref_psnr = 10 * np.log10(255.0**2 / np.mean((ys - yh) ** 2))
        ref_ssim = _ssim_gauss_numpy(ys, yh)
        assert abs(got_psnr[i].item() - ref_psnr) < 1e-4
        assert abs(got_ssim[i].item() - ref_ssim) < 1e-5


def test_rgb_to_y_range():
    black = torch.zeros(3, 1, 1, dtype=torch.uint8)
    white = torch.full((3, 1, 1), 255, dtype=torch.uint8)
    assert abs(M.rgb_to_y(black).item() - 16.0) < 1e-12
    assert abs(M.rgb_to_y(white).item() - 235.0) < 1e-12


def test_identical_images(pair):
    _, hr = pair
    assert torch.isinf(M.psnr_rgb(hr, hr)).all() and (M.psnr_rgb(hr, hr) > 0).all()
    assert torch.isinf(M.psnr_y(hr, hr, 4)).all()
    assert torch.allclose(M.ssim_rgb(hr, hr), torch.ones(2, dtype=torch.float64))
    assert torch.allclose(M.ssim_y(hr, hr, 4), torch.ones(2, dtype=torch.float64))


def test_batch_equals_single_images(pair):
    sr, hr = pair
    for fn in (M.psnr_rgb, M.ssim_rgb, lambda a, b: M.psnr_y(a, b, 2), lambda a, b: M.ssim_y(a, b, 2)):
        batched = fn(sr, hr)
        singles = torch.stack([fn(sr[i], hr[i]) for i in range(2)])
        assert torch.allclose(batched, singles, rtol=0, atol=1e-12)


def _ssim_gauss_numpy_vectorised(a, b):
    """The same BasicSR-style SSIM as _ssim_gauss_numpy, with numpy sliding windows (fast enough for wide images)."""
    coords = np.arange(11) - 5.0
    win = np.exp(-(coords[:, None] ** 2 + coords[None, :] ** 2) / (2 * 1.5**2))
    win /= win.sum()

    def filt(img):
        return np.einsum("ijkl,kl->ij", np.lib.stride_tricks.sliding_window_view(img, (11, 11)), win)

    mu_a, mu_b = filt(a), filt(b)
    va, vb, cov = filt(a * a) - mu_a**2, filt(b * b) - mu_b**2, filt(a * b) - mu_a * mu_b
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    return (((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (va + vb + c2))).mean()


def _wide_pair():
    """uint8 (2,3,64,700) with saturated (255) and black bands: the largest and smallest window sums."""
    hr = _structured(2, 64, 700, seed=21)
    sr = _degrade(hr, seed=22, sigma=20)
    hr[0, :, :9], sr[0, :, :9] = 255, 254
    hr[1, :, -10:] = 0
    return sr, hr


@pytest.mark.parametrize("strip_rows", [None, 0, 13])
def test_ssim_in_strips_matches_references_closely(monkeypatch, strip_rows):
    """SSIM is computed in strips of rows (window overlap carried over between strips). Cut wide images into the
    default strips (None), the smallest ones (0 -> the window overlap) and 13 rows (short last strips), and compare
    with float64 references far below the 1e-5 protocol tolerance: the uniform-window sums must be exact."""
    if strip_rows is not None:
        monkeypatch.setattr(
            ssim_engine, "_strip_rows", lambda device, out_rows, row_bytes, halo: min(max(strip_rows, halo), out_rows)
        )
    sr, hr = _wide_pair()
    got_rgb, got_y = M.ssim_rgb(sr, hr), M.ssim_y(sr, hr, 3)
    for i in range(2):
        ref_rgb = structural_similarity(_hwc(sr[i]), _hwc(hr[i]), channel_axis=-1, data_range=255)
        assert abs(got_rgb[i].item() - ref_rgb) < 1e-10
        ys, yh = _y_numpy(sr[i].numpy())[3:-3, 3:-3], _y_numpy(hr[i].numpy())[3:-3, 3:-3]
        assert abs(got_y[i].item() - _ssim_gauss_numpy_vectorised(ys, yh)) < 1e-10
    # the vectorised reference is the loop reference
    small_s, small_h = _y_numpy(sr[0, :, :25, 300:340].numpy()), _y_numpy(hr[0, :, :25, 300:340].numpy())
    assert abs(_ssim_gauss_numpy_vectorised(small_s, small_h) - _ssim_gauss_numpy(small_s, small_h)) < 1e-12


def test_ssim_rgb_exact_without_ieee_float32_matmul():
    """With reduced-precision float32 matrix products requested (bfloat16 where the CPU has it), the uniform-window
    sums switch from float32 to float64 products, which gives the same values."""
    sr, hr = _wide_pair()
    default = M.ssim_rgb(sr, hr)
    torch.set_float32_matmul_precision("medium")
    try:
        reduced = M.ssim_rgb(sr, hr)
    finally:
        torch.set_float32_matmul_precision("highest")
    assert torch.allclose(reduced, default, rtol=0, atol=1e-12)
    ref = structural_similarity(_hwc(sr[1]), _hwc(hr[1]), channel_axis=-1, data_range=255)
    assert abs(reduced[1].item() - ref) < 1e-10


def test_input_errors(pair):
    sr, hr = pair
    with pytest.raises(TypeError, match="to_uint8"):
        M.psnr_rgb(sr.float(), hr)
    with pytest.raises(TypeError, match="uint8"):
        M.ssim_rgb(_hwc(sr[0]), hr[0])
    with pytest.raises(ValueError, match="same shape"):
        M.psnr_rgb(sr[..., 1:], hr)
    with pytest.raises(ValueError, match=r"\(B,3,H,W\)"):
        M.psnr_rgb(sr[:, :1], hr[:, :1])
    with pytest.raises(ValueError, match="crop"):
        M.psnr_y(sr, hr, -1)
    with pytest.raises(ValueError, match="crop=15"):
        M.psnr_y(sr, hr, 15)
    with pytest.raises(ValueError, match="11x11"):
        M.ssim_y(sr, hr, 10)


# ----------------------------------------------------------------------------- LR-PSNR
def _lr_psnr_by_hand(sr, lr, scale):
    from sradm_diffusers.imresize import imresize

    down = imresize(sr.to(torch.float64), 1 / scale).numpy()
    down = np.floor(np.clip(down, 0, 255) + 0.5)  # MATLAB uint8 rounding
    mse = ((down - lr.numpy().astype(np.float64)) ** 2).reshape(len(sr), -1).mean(axis=1)
    return 10 * np.log10(255.0**2 / mse)


@pytest.mark.parametrize("scale, hw", [(4, (29, 37)), (3, (27, 21)), (2, (30, 22))])
def test_lr_psnr_matches_hand_computation(scale, hw):
    sr = _structured(2, *hw, seed=3)
    h, w = -(-hw[0] // scale), -(-hw[1] // scale)
    lr = _structured(2, h, w, seed=4)
    got = M.lr_psnr(sr, lr, scale)
    assert got.shape == (2,)
    np.testing.assert_allclose(got.numpy(), _lr_psnr_by_hand(sr, lr, scale), rtol=0, atol=1e-6)
    assert abs(M.lr_psnr(sr[0], lr[0], scale).item() - got[0].item()) < 1e-9


def test_lr_psnr_consistent_and_shape_errors():
    from sradm_diffusers.imresize import imresize

    sr = _structured(2, 32, 24, seed=7)
    lr = torch.from_numpy(np.floor(np.clip(imresize(sr.double(), 0.25).numpy(), 0, 255) + 0.5).astype(np.uint8))
    assert torch.isinf(M.lr_psnr(sr, lr, 4)).all()
    with pytest.raises(ValueError, match="does not match"):
        M.lr_psnr(sr, lr[..., :-1], 4)
    with pytest.raises(ValueError, match="scale"):
        M.lr_psnr(sr, lr, 0)


# ----------------------------------------------------------------------------- diversity
def test_diversity_std_matches_numpy():
    samples = torch.cat([_degrade(_structured(1, 29, 37, seed=8), seed=s, sigma=15) for s in range(4)])
    ref = np.std(samples.numpy().astype(np.float64), axis=0).mean()
    got = M.diversity_std(samples)
    assert got.ndim == 0 and abs(got.item() - ref) < 1e-9 and ref > 1
    assert M.diversity_std(samples[:1].repeat(3, 1, 1, 1)).item() == 0.0
    with pytest.raises(ValueError, match="K >= 2"):
        M.diversity_std(samples[:1])


# ----------------------------------------------------------------------------- compute_metrics
def test_compute_metrics_combines_the_functions(pair):
    from sradm_diffusers.imresize import imresize

    sr, hr = pair
    out = M.compute_metrics(sr, hr, 4)
    assert set(out) == {"psnr_rgb", "ssim_rgb", "psnr_y", "ssim_y", "lr_psnr", "lpips"}
    assert out["lpips"] is None
    assert torch.equal(out["psnr_rgb"], M.psnr_rgb(sr, hr))
    assert torch.equal(out["ssim_y"], M.ssim_y(sr, hr, 4))
    lr_from_hr = torch.from_numpy(np.floor(np.clip(imresize(hr.double(), 0.25).numpy(), 0, 255) + 0.5).astype(np.uint8))
    np.testing.assert_allclose(out["lr_psnr"].numpy(), _lr_psnr_by_hand(sr, lr_from_hr, 4), atol=1e-6)
    lr = _structured(2, 8, 10, seed=9)
    assert torch.equal(M.compute_metrics(sr, hr, 4, lr=lr)["lr_psnr"], M.lr_psnr(sr, lr, 4))
    with pytest.raises(ValueError, match="scale"):
        M.compute_metrics(sr, hr, 2.5)


# ----------------------------------------------------------------------------- LPIPS
_CONV_SHAPES = {0: (64, 3, 11, 11), 3: (192, 64, 5, 5), 6: (384, 192, 3, 3), 8: (256, 384, 3, 3), 10: (256, 256, 3, 3)}
_LIN_CHANNELS = (64, 192, 384, 256, 256)


@pytest.fixture
def lpips_files(tmp_path):
    """Random weights saved in torchvision's AlexNet and lpips' alex.pth formats (in tmp_path)."""
    g = torch.Generator().manual_seed(0)
    alex = {}
    for idx, shape in _CONV_SHAPES.items():
        fan_in = shape[1] * shape[2] * shape[3]
        alex[f"features.{idx}.weight"] = torch.randn(shape, generator=g) * (2 / fan_in) ** 0.5
        alex[f"features.{idx}.bias"] = torch.randn(shape[0], generator=g) * 0.05
    alex["classifier.1.weight"] = torch.randn(4, 9, generator=g)  # classifier keys exist in the file; ignored
    alex["classifier.1.bias"] = torch.randn(4, generator=g)
    lin = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) for k, c in enumerate(_LIN_CHANNELS)}
    torch.save(alex, tmp_path / "alexnet-owt-7be5be79.pth")
    torch.save(lin, tmp_path / "alex.pth")
    return tmp_path, alex, lin


@pytest.fixture
def no_lpips_env(monkeypatch, tmp_path):
    for var in ("SRADM_LPIPS_ALEX", "SRADM_LPIPS_LIN", "SRADM_LPIPS_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))


def _lpips_reference(x, y, alex, lin):
    """LPIPS written out: scaling layer, AlexNet conv/relu/pool per layer, unit norm, squared diff, lin, mean."""
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def feats(img):
        h = (img - shift) / scale
        outs = []
        h = F.relu(F.conv2d(h, alex["features.0.weight"], alex["features.0.bias"], stride=4, padding=2))
        outs.append(h)
        h = F.max_pool2d(h, 3, 2)
        h = F.relu(F.conv2d(h, alex["features.3.weight"], alex["features.3.bias"], padding=2))
        outs.append(h)
        h = F.max_pool2d(h, 3, 2)
        for idx in (6, 8, 10):
            h = F.relu(F.conv2d(h, alex[f"features.{idx}.weight"], alex[f"features.{idx}.bias"], padding=1))
            outs.append(h)
        return outs

    total = torch.zeros(x.shape[0])
    for k, (a, b) in enumerate(zip(feats(x), feats(y))):
        a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        d = F.conv2d((a - b) ** 2, lin[f"lin{k}.model.1.weight"])
        total += d.mean(dim=(1, 2, 3))
    return total


def _lpips_images():
    hr = _structured(2, 45, 67, seed=11)
    return _degrade(hr, seed=12, sigma=25), hr


def test_lpips_matches_written_out_formula(lpips_files, no_lpips_env, monkeypatch):
    folder, alex, lin = lpips_files
    monkeypatch.setenv("SRADM_LPIPS_DIR", str(folder))
    model = M.load_lpips()
    assert isinstance(model, M.LPIPS)
    sr, hr = _lpips_images()
    with torch.no_grad():
        got = model(sr, hr)
        ref = _lpips_reference(sr.float() / 127.5 - 1, hr.float() / 127.5 - 1, alex, lin)
    assert got.shape == (2,)
    assert (got > 0).all()
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    # float input in [-1, 1] gives the same; identical images give exactly 0; unbatched -> 0-dim
    torch.testing.assert_close(model(sr.float() / 127.5 - 1, hr.float() / 127.5 - 1), got)
    assert torch.equal(model(hr, hr), torch.zeros(2))
    assert model(sr[0], hr[0]).ndim == 0
    # compute_metrics fills the lpips key
    torch.testing.assert_close(M.compute_metrics(sr, hr, 4, lpips_model=model)["lpips"], got)


def test_lpips_found_by_env_files_paths_and_hub_cache(lpips_files, no_lpips_env, monkeypatch, tmp_path):
    folder, alex, lin = lpips_files
    sr, hr = _lpips_images()
    ref = _lpips_reference(sr.float() / 127.5 - 1, hr.float() / 127.5 - 1, alex, lin)
    alex_file, lin_file = folder / "alexnet-owt-7be5be79.pth", folder / "alex.pth"

    by_args = M.load_lpips(alex_file, lin_file)
    monkeypatch.setenv("SRADM_LPIPS_ALEX", str(alex_file))
    monkeypatch.setenv("SRADM_LPIPS_LIN", str(lin_file))
    by_env = M.load_lpips()
    monkeypatch.delenv("SRADM_LPIPS_ALEX")
    hub = tmp_path / "torch_home"
    (hub / "hub" / "checkpoints").mkdir(parents=True)
    (hub / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth").write_bytes(alex_file.read_bytes())
    monkeypatch.setenv("TORCH_HOME", str(hub))
    by_hub = M.load_lpips()
    for model in (by_args, by_env, by_hub):
        assert model is not None
        with torch.no_grad():
            torch.testing.assert_close(model(sr, hr), ref, rtol=1e-5, atol=1e-6)


def test_lpips_missing_weights_returns_none_and_warns_once(no_lpips_env, monkeypatch):
    monkeypatch.setattr(lpips_mod, "_warned", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert M.load_lpips() is None
        assert M.load_lpips() is None
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1
    assert "SRADM_LPIPS_DIR" in messages[0] and "alexnet-owt-7be5be79.pth" in messages[0]


def test_lpips_bad_paths_and_files(lpips_files, no_lpips_env, tmp_path):
    folder, _, _ = lpips_files
    with pytest.raises(ValueError, match="not a file"):
        M.load_lpips(tmp_path / "nope.pth", folder / "alex.pth")
    with pytest.raises(ValueError, match="AlexNet"):
        M.load_lpips(folder / "alex.pth", folder / "alex.pth")
    with pytest.raises(ValueError, match="linear-layer"):
        M.load_lpips(folder / "alexnet-owt-7be5be79.pth", folder / "alexnet-owt-7be5be79.pth")
    model = M.load_lpips(folder / "alexnet-owt-7be5be79.pth", folder / "alex.pth")
    small = torch.zeros(1, 3, 30, 64, dtype=torch.uint8)
    with pytest.raises(ValueError, match=">= 31"):
        model(small, small)
