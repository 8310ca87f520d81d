"""preprocess / postprocess on every accepted input kind, against conversions written here with numpy, and the exact
one-line errors (found by mutation testing: these paths had no test that a changed constant or message failed)."""

import numpy as np
import PIL.Image
import pytest
import torch

from sradm_diffusers.image_processing import check_finite, postprocess, preprocess


def _expected(rgb01: np.ndarray) -> torch.Tensor:
    """(H, W, 3) in [0, 1] -> the pipeline's (1, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(rgb01.astype(np.float32)).permute(2, 0, 1)[None] * 2 - 1


def _grey(values: np.ndarray) -> np.ndarray:
    return np.repeat(values[..., None], 3, axis=-1)


def test_16_bit_and_float_greyscale_are_scaled_and_replicated():
    values = np.array([[0, 257, 65535], [1000, 40000, 7]], dtype=np.uint16)
    out = preprocess(PIL.Image.fromarray(values, "I;16"))
    torch.testing.assert_close(out, _expected(_grey(values / 65535.0)), atol=1e-6, rtol=0)
    for mode, dtype in (("I", np.int32), ("F", np.float32)):
        values = np.array([[0, 1, 255], [128, 254, 7]], dtype=dtype)
        out = preprocess(PIL.Image.fromarray(values, mode))
        assert out.shape == (1, 3, 2, 3)
        torch.testing.assert_close(out, _expected(_grey(values / 255.0)), atol=1e-6, rtol=0)


@pytest.mark.parametrize("value, shown", [(256.0, "256.0"), (-1.0, "-1.0")])
def test_float_greyscale_outside_0_255_is_refused_with_its_range(value, shown):
    values = np.array([[0.0, 10.0], [value, 255.0]], dtype=np.float32)
    low, high = (value, 255.0) if value < 0 else (0.0, value)
    message = (f"F-mode image has values in [{low}, {high}]; scale it to 0..255 (or save it as 8-bit) before "
               "upscaling.")
    with pytest.raises(ValueError) as error:
        preprocess(PIL.Image.fromarray(values, "F"))
    assert str(error.value) == message and shown in message


def test_non_finite_float_greyscale_message():
    values = np.array([[0.0, np.inf]], dtype=np.float32)
    with pytest.raises(ValueError) as error:
        preprocess(PIL.Image.fromarray(values, "F"))
    assert str(error.value) == ("F-mode image contains NaN or infinite pixels; replace them (e.g. numpy.nan_to_num) "
                                "before upscaling.")


def test_one_pixel_images_are_accepted_and_empty_ones_refused():
    assert preprocess(PIL.Image.new("RGB", (1, 1), (255, 0, 0))).tolist() == [[[[1.0]], [[-1.0]], [[-1.0]]]]
    assert preprocess(PIL.Image.new("RGB", (1, 3))).shape == (1, 3, 3, 1)
    assert preprocess(PIL.Image.new("RGB", (3, 1))).shape == (1, 3, 1, 3)
    for size in ((0, 4), (4, 0)):
        with pytest.raises(ValueError) as error:
            preprocess(PIL.Image.new("RGB", size))
        assert str(error.value) == f"Got an empty image of size {size[0]}x{size[1]}; give an image with pixels."


@pytest.mark.parametrize("mode", ["RGBA", "LA", "PA", "RGBa"])
def test_alpha_modes_are_composited_on_white(mode):
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (4, 5, 4), dtype=np.uint8)
    rgba[0, 0, 3], rgba[0, 1, 3] = 0, 255
    image = PIL.Image.fromarray(rgba, "RGBA").convert(mode)
    as_rgba = np.asarray(image.convert("RGBA"), dtype=np.float64) / 255
    expected = as_rgba[..., :3] * as_rgba[..., 3:] + (1 - as_rgba[..., 3:])
    torch.testing.assert_close(preprocess(image), _expected(expected), atol=1e-6, rtol=0)
    assert preprocess(image)[0, :, 0, 0].tolist() == [1.0, 1.0, 1.0]  # fully transparent: white


def test_premultiplied_la_is_composited_on_white():
    rng = np.random.default_rng(0)
    la = rng.integers(0, 256, (4, 5, 2), dtype=np.uint8)
    la[0, 0, 1], la[0, 1, 1] = 0, 255
    image = PIL.Image.fromarray(la, "LA").convert("La")
    premultiplied = np.asarray(image, dtype=np.float64) / 255  # (grey * alpha, alpha)
    grey = premultiplied[..., 0] + (1 - premultiplied[..., 1])  # "over" white with premultiplied colour
    # Pillow un-premultiplies to 8 bits on the way (La -> LA), rounding once more: measured 0.65 of an 8-bit level
    # (5.1e-3 in the pipeline's [-1, 1]); bound: one level (2 / 255 in [-1, 1]).
    torch.testing.assert_close(preprocess(image), _expected(_grey(grey)), atol=2 / 255, rtol=0)
    assert preprocess(image)[0, :, 0, 0].tolist() == [1.0, 1.0, 1.0]


def test_palette_with_and_without_transparency():
    palette = PIL.Image.new("P", (3, 2))
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * 759)
    palette.putdata([0, 1, 2, 1, 2, 0])
    plain = preprocess(palette)
    torch.testing.assert_close(plain, _expected(np.asarray(palette.convert("RGB"), dtype=np.float64) / 255))
    palette.info["transparency"] = 1  # index 1 (red) transparent: composited to white
    out = preprocess(palette)
    assert out[0, :, 0, 1].tolist() == [1.0, 1.0, 1.0] and out[0, :, 0, 2].tolist() == [-1.0, -1.0, 1.0]


def test_numpy_layouts_and_ranges():
    rng = np.random.default_rng(1)
    grey = rng.random((3, 4)).astype(np.float32)
    torch.testing.assert_close(preprocess(grey), _expected(_grey(grey)))
    torch.testing.assert_close(preprocess(grey[..., None]), _expected(_grey(grey)))
    rgba = rng.random((3, 4, 4)).astype(np.float32)
    expected = rgba[..., :3] * rgba[..., 3:] + (1 - rgba[..., 3:])
    torch.testing.assert_close(preprocess(rgba), _expected(expected), atol=1e-6, rtol=0)
    eight = rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)
    torch.testing.assert_close(preprocess(eight), _expected(eight / 255.0), atol=1e-6, rtol=0)
    bounds = np.array([[[0.0, 1.0, 0.5]]], dtype=np.float64)  # the range's ends are accepted
    assert preprocess(bounds)[0, :, 0, 0].tolist() == [-1.0, 1.0, 0.0]


@pytest.mark.parametrize("array, error, message", [
    (np.zeros((2, 3, 2), np.float32), ValueError,
     "numpy images must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) in HWC layout; got shape (2, 3, 2)."),
    (np.zeros((1, 2, 3, 3), np.float32), ValueError,
     "numpy images must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) in HWC layout; got shape (1, 2, 3, 3)."),
    (np.zeros((2, 3, 3), np.int16), TypeError, "numpy images must be uint8 (0..255) or float (0..1); got dtype int16."),
    (np.full((2, 3, 3), 1.5, np.float32), ValueError,
     "The numpy image has values in [1.5, 1.5] but float images must be in [0, 1]; divide 0..255 data by 255 "
     "(or pass uint8)."),
    (np.full((2, 3, 3), -0.25, np.float32), ValueError,
     "The numpy image has values in [-0.25, -0.25] but float images must be in [0, 1]; divide 0..255 data by 255 "
     "(or pass uint8)."),
    (np.zeros((0, 3, 3), np.uint8), ValueError,
     "Got an empty numpy image of shape (0, 3, 3); give an image with pixels."),
])
def test_numpy_errors_are_exact(array, error, message):
    with pytest.raises(error) as raised:
        preprocess(array)
    assert str(raised.value) == message


@pytest.mark.parametrize("tensor, error, message", [
    (torch.zeros(4, 2, 2), ValueError,
     "torch images must be (3, H, W) or (B, 3, H, W) RGB in [0, 1]; got shape (1, 4, 2, 2)."),
    (torch.zeros(2, 2), ValueError, "torch images must be (3, H, W) or (B, 3, H, W) RGB in [0, 1]; got shape (2, 2)."),
    (torch.zeros(3, 2, 2, dtype=torch.uint8), TypeError,
     "torch images must be float tensors in [0, 1]; got dtype torch.uint8."),
    (torch.zeros(1, 3, 0, 2), ValueError,
     "Got an empty image tensor of shape (1, 3, 0, 2); give an image with pixels."),
    (torch.zeros(1, 3, 2, 0), ValueError,
     "Got an empty image tensor of shape (1, 3, 2, 0); give an image with pixels."),
    (torch.zeros(0, 3, 2, 2), ValueError,
     "Got an empty image tensor of shape (0, 3, 2, 2); give an image with pixels."),
    (torch.full((3, 2, 2), float("nan")), ValueError,
     "The image tensor contains NaN or infinite values; clean the input before upscaling."),
    ("image.png", TypeError,
     "Unsupported image type str; pass a PIL image, a numpy array (HWC) or a torch tensor (CHW/BCHW in [0, 1]), or "
     "a list of them."),
])
def test_tensor_and_type_errors_are_exact(tensor, error, message):
    with pytest.raises(error) as raised:
        preprocess(tensor)
    assert str(raised.value) == message


def test_batches_lists_and_their_errors():
    a, b = torch.rand(3, 4, 5), torch.rand(2, 3, 4, 5)
    torch.testing.assert_close(preprocess([a, b]), torch.cat([a[None], b]) * 2 - 1)
    torch.testing.assert_close(preprocess((a,)), a[None] * 2 - 1)
    with pytest.raises(ValueError) as raised:
        preprocess([])
    assert str(raised.value) == "Got an empty list of images; pass at least one image."
    with pytest.raises(ValueError) as raised:
        preprocess([a, torch.rand(3, 5, 4)])
    assert str(raised.value) == ("All images of one call must have the same size, got [(4, 5), (5, 4)]; call the "
                                 "pipeline once per size.")


def test_check_finite_message():
    with pytest.raises(ValueError) as raised:
        check_finite(torch.tensor([0.0, float("inf")]), "the thing", "do this.")
    assert str(raised.value) == "NaN or infinite values in the thing; do this."


def test_postprocess_ranges_rounding_and_types():
    sr = torch.tensor([-1.5, -1.0, 0.0, 1.0, 2.0, 2 * (100.6 / 255) - 1, 2 * (100.4 / 255) - 1])
    sr = sr.view(1, 1, 1, -1).repeat(2, 3, 1, 1)  # (2, 3, 1, 7)
    pt = postprocess(sr, "pt")
    expected = ((sr + 1) / 2).clamp(0, 1)
    torch.testing.assert_close(pt, expected)
    array = postprocess(sr, "np")
    assert isinstance(array, np.ndarray) and array.shape == (2, 1, 7, 3)
    np.testing.assert_allclose(array, expected.permute(0, 2, 3, 1).numpy())
    images = postprocess(sr, "pil")
    assert len(images) == 2 and images[1].mode == "RGB" and images[1].size == (7, 1)
    assert np.asarray(images[1])[0, :, 0].tolist() == [0, 0, 128, 255, 255, 101, 100]
    assert postprocess(sr)[0].size == (7, 1)  # "pil" is the default


@pytest.mark.parametrize("mode, byteorder", [("I;16B", ">"), ("I;16L", "<"), ("I;16N", "=")])
def test_16_bit_byte_orders_are_scaled_not_clipped(mode, byteorder):
    values = np.array([[0, 300, 65535], [1000, 40000, 7]], dtype=f"{byteorder}u2")
    image = PIL.Image.frombytes(mode, (3, 2), values.tobytes())
    torch.testing.assert_close(preprocess(image), _expected(_grey(values / 65535.0)), atol=1e-6, rtol=0)


def test_32_bit_integer_greyscale_above_255_is_refused_not_clipped():
    with pytest.raises(ValueError) as error:
        preprocess(PIL.Image.fromarray(np.array([[0, 300]], dtype=np.int32), "I"))
    assert str(error.value).startswith("I-mode image has values in [0.0, 300.0]; scale it to 0..255")


def test_an_rgb_colour_key_is_not_treated_as_transparency():
    """Only palette images use ``info["transparency"]`` as alpha here; an RGB image keeps its pixels."""
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[0, 0] = (10, 20, 30)
    image = PIL.Image.fromarray(rgb)
    image.info["transparency"] = (0, 0, 0)
    torch.testing.assert_close(preprocess(image), _expected(rgb / 255.0), atol=1e-6, rtol=0)
