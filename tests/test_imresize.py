"""Tests for the MATLAB-compatible bicubic imresize, against hand-derived weights and a slow loop reference."""

import math

import numpy as np
import pytest
import torch

from sradm_diffusers.imresize import imresize


# ---------------------------------------------------------------------------------------------------------------
# Slow, obviously-correct reference written from MATLAB's algorithm: loop over output pixels, mirror indexing.
# ---------------------------------------------------------------------------------------------------------------
def _ref_cubic(d):
    a = abs(d)
    if a <= 1:
        return 1.5 * a**3 - 2.5 * a**2 + 1
    if a <= 2:
        return -0.5 * a**3 + 2.5 * a**2 - 4 * a + 2
    return 0.0


def _ref_mirror(i, n):
    """0-based index i mapped into [0, n) by symmetric reflection (edge pixel repeated), period 2n."""
    i = i % (2 * n)
    return i if i < n else 2 * n - 1 - i


def _ref_resize_1d(v, out_len, scale, antialias=True):
    n = len(v)
    stretch = scale < 1 and antialias
    width = 4.0 / scale if stretch else 4.0
    out = np.zeros(out_len)
    for o in range(1, out_len + 1):  # 1-based as MATLAB
        u = o / scale + 0.5 * (1 - 1 / scale)
        left = math.floor(u - width / 2)
        taps = math.ceil(width) + 2
        ws, idx = [], []
        for k in range(taps):
            j = left + k  # 1-based input index
            d = u - j
            ws.append(scale * _ref_cubic(scale * d) if stretch else _ref_cubic(d))
            idx.append(_ref_mirror(j - 1, n))
        total = sum(ws)
        out[o - 1] = sum(w / total * v[i] for w, i in zip(ws, idx))
    return out


def _ref_imresize(img, scale, antialias=True):
    """img: float64 (H, W). Same scale both dims, so height is resized first (MATLAB's order on ties)."""
    h, w = img.shape
    oh, ow = math.ceil(h * scale), math.ceil(w * scale)
    tmp = np.stack([_ref_resize_1d(img[:, c], oh, scale, antialias) for c in range(w)], axis=1)
    return np.stack([_ref_resize_1d(tmp[r, :], ow, scale, antialias) for r in range(oh)], axis=0)


# Kernel values at the offsets used below, from the cubic formula (a = -0.5) evaluated by hand:
C025 = 1.5 * 0.25**3 - 2.5 * 0.25**2 + 1  # 0.8671875
C075 = 1.5 * 0.75**3 - 2.5 * 0.75**2 + 1  # 0.2265625
C125 = -0.5 * 1.25**3 + 2.5 * 1.25**2 - 4 * 1.25 + 2  # -0.0703125
C175 = -0.5 * 1.75**3 + 2.5 * 1.75**2 - 4 * 1.75 + 2  # -0.0234375


def test_hand_constants():
    assert (C025, C075, C125, C175) == (0.8671875, 0.2265625, -0.0703125, -0.0234375)
    assert C025 + C075 + C125 + C175 == 1.0


def test_hand_derived_2x_upscale():
    # Output pixel 0 sits at input position -0.25 (0-based); taps -2,-1,0,1 at distances 1.75,0.75,0.25,1.25;
    # mirrored -1 -> 0, -2 -> 1. Output pixel 1 sits at 0.25: taps -1,0,1,2 at distances 1.25,0.25,0.75,1.75.
    s = np.array([3.0, -1.0, 7.0, 2.0])
    y = imresize(torch.tensor(s).reshape(1, 4), 2)
    assert y.shape == (2, 8)
    exp0 = (C075 + C025) * s[0] + (C175 + C125) * s[1]
    exp1 = (C125 + C025) * s[0] + C075 * s[1] + C175 * s[2]
    # Last pixel mirrors the first: position 3.25 with taps 2,3,4->3,5->2.
    exp7 = (C075 + C025) * s[3] + (C175 + C125) * s[2]
    for row in range(2):  # height 1 -> 2 just copies the row
        assert y[row, 0].item() == pytest.approx(exp0, abs=1e-12)
        assert y[row, 1].item() == pytest.approx(exp1, abs=1e-12)
        assert y[row, 7].item() == pytest.approx(exp7, abs=1e-12)


def test_hand_derived_2x_downscale_antialiased():
    # scale 0.5: kernel cubic(d/2)/2, width 8. Output 0 sits at 0.5 (0-based); taps -3..4 at |d| 3.5,2.5,1.5,0.5,...
    # which give cubic(1.75)/2, cubic(1.25)/2, cubic(0.75)/2, cubic(0.25)/2 symmetric; mirror -1->0,-2->1,-3->2.
    s = np.array([5.0, 1.0, -2.0, 4.0, 8.0, 0.5, 3.0, 6.0])
    y = imresize(torch.tensor(s).reshape(1, 8), size=(1, 4))
    exp0 = (
        (C075 + C025) / 2 * s[0]
        + (C125 + C025) / 2 * s[1]
        + (C175 + C075) / 2 * s[2]
        + C125 / 2 * s[3]
        + C175 / 2 * s[4]
    )
    assert y[0, 0].item() == pytest.approx(exp0, abs=1e-12)
    # Without antialiasing: plain cubic at 0.5-pixel offsets: taps -1,0,1,2 at distances 1.5,0.5,0.5,1.5.
    c05, c15 = 1.5 * 0.125 - 2.5 * 0.25 + 1, -0.5 * 3.375 + 2.5 * 2.25 - 6 + 2
    y = imresize(torch.tensor(s).reshape(1, 8), size=(1, 4), antialiasing=False)
    exp1 = c15 * s[1] + c05 * s[2] + c05 * s[3] + c15 * s[4]  # output 1 sits at 2.5
    assert y[0, 1].item() == pytest.approx(exp1, abs=1e-12)


@pytest.mark.parametrize("scale", [4, 1 / 4, 2, 1 / 3, 8, 1 / 8])
def test_matches_loop_reference(scale):
    rng = np.random.default_rng(0)
    img = rng.standard_normal((37, 29))
    ref = _ref_imresize(img, scale)
    out = imresize(torch.tensor(img), scale)
    assert out.dtype == torch.float64
    assert out.shape == (math.ceil(37 * scale), math.ceil(29 * scale))
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-6, rtol=0)
    out32 = imresize(torch.tensor(img, dtype=torch.float32), scale)
    np.testing.assert_allclose(out32.numpy(), ref, atol=1e-4, rtol=0)


def test_matches_loop_reference_no_antialias():
    img = np.random.default_rng(1).standard_normal((21, 17))
    out = imresize(torch.tensor(img), 1 / 3, antialiasing=False)
    np.testing.assert_allclose(out.numpy(), _ref_imresize(img, 1 / 3, antialias=False), atol=1e-6, rtol=0)


def test_dimension_order_smaller_scale_first():
    # Unequal scales: width shrinks (smaller scale) so it is resized first. Reference: width pass, then height.
    img = np.random.default_rng(2).standard_normal((9, 16))
    out = imresize(torch.tensor(img), size=(18, 4)).numpy()
    tmp = np.stack([_ref_resize_1d(img[r], 4, 4 / 16) for r in range(9)], axis=0)
    ref = np.stack([_ref_resize_1d(tmp[:, c], 18, 2.0) for c in range(4)], axis=1)
    np.testing.assert_allclose(out, ref, atol=1e-10, rtol=0)


def test_scale_one_is_identity():
    x = torch.randn(2, 3, 13, 11)
    assert torch.equal(imresize(x, 1), x)
    assert torch.equal(imresize(x, size=(13, 11)), x)


@pytest.mark.parametrize("scale", [4, 1 / 4, 3, 1 / 3])
def test_constant_stays_constant(scale):
    x = torch.full((2, 31, 23), 0.37, dtype=torch.float64)
    y = imresize(x, scale)
    assert y.shape == (2, math.ceil(31 * scale), math.ceil(23 * scale))
    torch.testing.assert_close(y, torch.full_like(y, 0.37), atol=1e-12, rtol=0)


def test_batched_equals_per_image():
    x = torch.randn(2, 3, 19, 25)
    y = imresize(x, 1 / 3)
    for b in range(2):
        for c in range(3):
            torch.testing.assert_close(y[b, c], imresize(x[b, c], 1 / 3), atol=1e-6, rtol=0)


def test_keeps_dtype():
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        y = imresize(torch.rand(3, 8, 8, dtype=dtype), 0.5)
        assert y.dtype == dtype and y.shape == (3, 4, 4)


def _ref_imresize_uint8(img, scale):
    """MATLAB on uint8: each 1-D pass (height first on equal scales) returns uint8, i.e. rounds and clamps."""
    q = lambda a: np.clip(np.floor(a + 0.5), 0, 255)  # noqa: E731  (half away from zero; values >= 0 after clip)
    h, w = img.shape
    oh, ow = math.ceil(h * scale), math.ceil(w * scale)
    tmp = q(np.stack([_ref_resize_1d(img[:, c], oh, scale) for c in range(w)], axis=1))
    return q(np.stack([_ref_resize_1d(tmp[r, :], ow, scale) for r in range(oh)], axis=0))


@pytest.mark.parametrize("scale", [2, 1 / 3])
def test_uint8_rounds_and_clamps(scale):
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, size=(15, 14), dtype=np.uint8)
    img[::2, ::2] = 255  # strong edges make cubic over/undershoot beyond [0, 255]
    img[1::2, 1::2] = 0
    y = imresize(torch.from_numpy(img), scale)
    assert y.dtype == torch.uint8
    if scale > 1:
        unrounded = _ref_imresize(img.astype(np.float64), scale)
        assert unrounded.max() > 255 and unrounded.min() < 0  # the clamp is exercised
    expected = _ref_imresize_uint8(img.astype(np.float64), scale)
    np.testing.assert_array_equal(y.numpy(), expected.astype(np.uint8))
    np.testing.assert_array_equal(imresize(img, scale), expected.astype(np.uint8))  # numpy path agrees


def test_numpy_hwc_round_trip():
    rng = np.random.default_rng(4)
    hwc = rng.integers(0, 256, size=(17, 12, 3), dtype=np.uint8)
    out = imresize(hwc, 1 / 2)
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.shape == (9, 6, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], imresize(torch.from_numpy(hwc[..., c].copy()), 1 / 2).numpy())
    f = rng.random((17, 12, 3)).astype(np.float32)
    outf = imresize(f, 2)
    assert outf.dtype == np.float32 and outf.shape == (34, 24, 3)
    np.testing.assert_allclose(outf[..., 1], _ref_imresize(f[..., 1].astype(np.float64), 2), atol=1e-5)
    gray = imresize(f[..., 0].astype(np.float64), 3)
    assert gray.dtype == np.float64 and gray.shape == (51, 36)


def test_errors():
    x = torch.rand(3, 8, 8)
    with pytest.raises(ValueError, match="exactly one"):
        imresize(x)
    with pytest.raises(ValueError, match="exactly one"):
        imresize(x, 2, size=(16, 16))
    with pytest.raises(ValueError, match="-2"):
        imresize(x, -2)
    with pytest.raises(ValueError, match="scale=0"):
        imresize(x, 0)
    with pytest.raises(TypeError, match="scale"):
        imresize(x, "2")
    with pytest.raises(ValueError, match="size"):
        imresize(x, size=(0, 4))
    with pytest.raises(ValueError, match="shape"):
        imresize(torch.rand(8), 2)
    with pytest.raises(ValueError, match="empty"):
        imresize(torch.rand(3, 0, 8), 2)
    with pytest.raises(TypeError, match="int32"):
        imresize(torch.zeros(4, 4, dtype=torch.int32), 2)
    with pytest.raises(TypeError, match="bool"):
        imresize(np.zeros((4, 4), dtype=bool), 2)
    with pytest.raises(ValueError, match="shape"):
        imresize(np.zeros((2, 4, 4, 3), dtype=np.uint8), 2)
    with pytest.raises(TypeError, match="list"):
        imresize([[1.0, 2.0]], 2)
