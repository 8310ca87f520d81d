import numpy as np
import PIL.Image
import pytest
import torch

from sradm_diffusers.image_processing import postprocess, preprocess


def as_unit(batch: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) in [-1, 1] -> (H, W, 3) in [0, 1]."""
    return ((batch[0] + 1) / 2).permute(1, 2, 0).numpy()


def test_rgb_pil_numpy_and_tensor_agree():
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    from_pil = preprocess(PIL.Image.fromarray(rgb))
    from_uint8 = preprocess(rgb)
    from_float = preprocess(rgb.astype(np.float32) / 255)
    from_tensor = preprocess(torch.from_numpy(rgb).permute(2, 0, 1).float() / 255)
    assert from_pil.shape == (1, 3, 5, 7) and from_pil.dtype == torch.float32
    for other in (from_uint8, from_float, from_tensor):
        torch.testing.assert_close(other, from_pil, atol=1e-6, rtol=0)
    np.testing.assert_allclose(as_unit(from_pil), rgb / 255, atol=1e-6)


def test_greyscale_modes_are_replicated():
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    for image in (PIL.Image.fromarray(grey, "L"), grey, grey[..., None]):
        out = as_unit(preprocess(image))
        for channel in range(3):
            np.testing.assert_allclose(out[..., channel], grey / 255, atol=1e-6)


def test_sixteen_bit_greyscale_is_scaled_to_unit_range():
    values = np.array([[0, 65535], [32768, 1000]], dtype=np.uint16)
    image = PIL.Image.fromarray(values)
    assert image.mode.startswith("I;16")
    np.testing.assert_allclose(as_unit(preprocess(image))[..., 0], values / 65535, atol=1e-6)


def test_alpha_is_composited_on_white():
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = [[255, 0], [128, 51]]
    alpha = rgba[..., 3:4] / 255
    expected = (rgba[..., :3] / 255) * alpha + (1 - alpha)
    np.testing.assert_allclose(as_unit(preprocess(PIL.Image.fromarray(rgba, "RGBA"))), expected, atol=1e-6)
    np.testing.assert_allclose(as_unit(preprocess(rgba)), expected, atol=1e-6)
    la = PIL.Image.fromarray(rgba[..., [0, 3]], "LA")
    la_alpha = rgba[..., 3] / 255
    np.testing.assert_allclose(as_unit(preprocess(la))[..., 1], 200 / 255 * la_alpha + 1 - la_alpha, atol=1e-6)


def test_palette_images_are_converted():
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    rgb[:2] = (255, 0, 0)
    rgb[2:] = (0, 0, 255)
    palette = PIL.Image.fromarray(rgb).convert("P", palette=PIL.Image.Palette.ADAPTIVE, colors=2)
    np.testing.assert_allclose(as_unit(preprocess(palette)), rgb / 255, atol=1e-6)


def test_lists_of_different_sizes_are_rejected():
    with pytest.raises(ValueError, match="same size"):
        preprocess([np.zeros((4, 4, 3), np.uint8), np.zeros((5, 4, 3), np.uint8)])
    with pytest.raises(ValueError, match="empty list"):
        preprocess([])


def test_float_numpy_out_of_range_is_rejected_not_clipped():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        preprocess(np.full((4, 4, 3), 255.0, dtype=np.float32))


def test_postprocess_types_and_rounding():
    batch = torch.tensor([-1.0, -0.5, 0.0, 1.0, 1.5]).reshape(1, 1, 1, 5).expand(1, 3, 1, 5)
    pt = postprocess(batch, "pt")
    torch.testing.assert_close(pt[0, 0, 0], torch.tensor([0.0, 0.25, 0.5, 1.0, 1.0]))
    pil = postprocess(batch, "pil")[0]
    assert np.asarray(pil)[0, :, 0].tolist() == [0, 64, 128, 255, 255]
