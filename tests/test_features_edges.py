"""Edges of the feature modules: exact one-line errors, argument boundaries and small helpers, each against a value
computed here (found by mutation testing: a changed message, bound or constant there failed no test)."""

import math

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

from sradm_diffusers import build_pipeline


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    pipe = build_pipeline("tiny", upscale_factor=4)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _raises(error, fn, *args, **kwargs) -> str:
    with pytest.raises(error) as raised:
        fn(*args, **kwargs)
    return str(raised.value)


# ----------------------------------------------------------------------------------------------------- fusion


def test_fusion_mask_kinds_and_their_errors():
    from sradm_diffusers.extras.fusion import mask_tensor

    eight = np.zeros((4, 6), np.uint8)
    eight[:, :3] = 255
    expected = torch.from_numpy((eight / 255.0).astype(np.float32))[None, None]
    for mask in (eight, PIL.Image.fromarray(eight), PIL.Image.fromarray(eight).convert("RGB"),
                 torch.from_numpy(eight / 255.0), (eight / 255.0).astype(np.float64)):
        out = mask_tensor(mask, 4, 6)
        assert out.shape == (1, 1, 4, 6) and out.dtype == torch.float32
        torch.testing.assert_close(out, expected)
    assert _raises(ValueError, mask_tensor, eight, 4, 5) == (
        "mask has shape (4, 6); pass one (H, W) mask of the HR size (4, 5).")
    assert _raises(ValueError, mask_tensor, torch.zeros(2, 4, 6), 4, 6) == (
        "mask has shape (2, 4, 6); pass one (H, W) mask of the HR size (4, 6).")
    for value in (-0.5, 1.5):  # one rule: float values are taken as they are, so they must be fractions
        assert _raises(ValueError, mask_tensor, torch.full((4, 6), value), 4, 6) == (
            f"float mask values must lie in [0, 1], got {value}..{value}; scale them (or pass an 8-bit mask, read "
            "as 0..255).")


def test_feather_kernel_is_the_sampled_gaussian_and_zero_keeps_the_mask():
    from sradm_diffusers.extras.fusion import feather_mask

    point = torch.zeros(1, 1, 41, 41)
    point[..., 20, 20] = 1
    soft = feather_mask(point, 6.0)  # sigma 3, radius 9
    x = torch.arange(-9, 10, dtype=torch.float32)
    kernel = torch.exp(-(x**2) / 18)
    kernel /= kernel.sum()
    expected = torch.zeros(41, 41)
    expected[11:30, 11:30] = kernel[:, None] * kernel[None, :]
    torch.testing.assert_close(soft[0, 0], expected, atol=1e-7, rtol=0)
    mask = (torch.rand(1, 1, 8, 8) > 0.5).float()
    assert feather_mask(mask, 0.0) is mask
    for bad in (-1.0, 9.0):  # the range is 0..max(H, W)
        assert _raises(ValueError, feather_mask, mask, bad) == (
            f"feather {bad:g} px: use 0..8 (the larger side of the 8x8 output).")
    assert _raises(ValueError, feather_mask, mask, float("inf")) == "feather must be a finite number of pixels, got inf."


def test_fuse_refuses_a_second_callback_and_a_reference_of_another_size(pipe):
    from sradm_diffusers.extras.fusion import fuse

    lr = torch.rand(1, 3, 8, 10)
    assert _raises(ValueError, fuse, pipe, lr, torch.rand(1, 3, 32, 40), torch.ones(32, 40),
                   callback_on_step_end=lambda *a: {}) == (
        "fuse runs as the pipeline's callback_on_step_end; do not pass another one.")
    assert _raises(ValueError, fuse, pipe, lr, torch.rand(1, 3, 32, 36), torch.ones(32, 40)) == (
        "reference is 36x32; it must be the HR size 40x32 (4 times the LR image).")


def test_fusion_noise_and_blend_on_a_padded_canvas(pipe):
    """The callback blends only the image's own region of a padded canvas (the padding is left as is)."""
    from sradm_diffusers.extras.fusion import ContentFusion

    pipe.scheduler.set_timesteps(3)
    reference = torch.ones(1, 3, 4, 6)
    mask = torch.full((1, 1, 4, 6), 0.25)
    latents = torch.zeros(1, 3, 8, 8)
    out = ContentFusion(reference, mask)(pipe, 2, pipe.scheduler.timesteps[2], {"latents": latents})["latents"]
    assert torch.all(out[..., :4, :6] == 0.25) and torch.all(out[..., 4:, :] == 0) and torch.all(out[..., 6:] == 0)


# ----------------------------------------------------------------------------------------------- interpolation


def test_slerp_of_parallel_noises_is_linear_and_keeps_the_dtype():
    from sradm_diffusers.extras.interpolation import slerp

    a = torch.randn(2, 5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(slerp(a, 2 * a, 0.25), 1.25 * a)
    half = slerp(a.half(), -a.half(), 0.5)
    assert half.dtype == torch.float16 and half.shape == (2, 5)
    b = torch.randn(2, 5, generator=torch.Generator().manual_seed(1))
    omega = math.acos(float((a.flatten() @ b.flatten()) / (a.norm() * b.norm())))
    t = 0.3
    expected = (math.sin((1 - t) * omega) * a + math.sin(t * omega) * b) / math.sin(omega)
    torch.testing.assert_close(slerp(a, b, t), expected, atol=1e-6, rtol=0)


def test_interpolate_argument_errors(pipe):
    from sradm_diffusers.extras.interpolation import interpolate

    for frames in (1, 2.0, "3"):
        assert _raises(ValueError, interpolate, pipe, torch.rand(1, 3, 8, 8), num_frames=frames) == (
            f"num_frames must be an integer >= 2 (the two ends); got {frames!r}.")
    assert _raises(ValueError, interpolate, pipe, torch.rand(2, 3, 8, 8), num_frames=2) == (
        "interpolate takes one LR image; got 2.")


def test_interpolate_restores_the_scheduler_and_two_frames_are_the_ends(pipe):
    from sradm_diffusers.extras.interpolation import interpolate

    before = pipe.scheduler
    frames = interpolate(pipe, torch.rand(1, 3, 8, 8), num_frames=2, num_inference_steps=2, output_type="pt",
                         generator_a=torch.Generator().manual_seed(0), generator_b=torch.Generator().manual_seed(1))
    assert pipe.scheduler is before and frames.shape == (2, 3, 32, 32)
    assert isinstance(interpolate(pipe, torch.rand(1, 3, 8, 8), num_frames=2, num_inference_steps=1), list)


def test_frames_to_strip_places_frames_left_to_right():
    from sradm_diffusers.extras.interpolation import frames_to_strip

    frames = [PIL.Image.new("RGB", (3, 2), (10 * k, 0, 0)) for k in range(3)]
    strip = np.asarray(frames_to_strip(frames))
    assert strip.shape == (2, 9, 3)
    assert strip[:, :, 0].tolist() == [[0, 0, 0, 10, 10, 10, 20, 20, 20]] * 2


def test_cli_interpolate_errors(tmp_path, model_dir, capsys):
    from sradm_diffusers.commands.cli import main
    from sradm_diffusers.commands.interpolate import run_interpolate
    from sradm_diffusers.commands.runtime import UsageError

    PIL.Image.new("RGB", (8, 6)).save(tmp_path / "a.png")
    assert _raises(UsageError, run_interpolate, str(tmp_path / "a.png"), str(tmp_path / "x.png"), model=model_dir,
                   frames=1) == "--frames 1: use 2 or more."
    assert _raises(UsageError, run_interpolate, str(tmp_path / "none.png"), str(tmp_path / "x.png"),
                   model=model_dir).startswith(f"{tmp_path / 'none.png'}: ")
    assert main(["interpolate", str(tmp_path / "a.png"), "-o", str(tmp_path / "x.tif"), "--model", model_dir]) == 2
    assert "name an image file with one of the extensions .gif/.png/.jpg/.jpeg/.webp." in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------- uncertainty


def test_colourize_interpolates_between_anchors_and_handles_zero_vmax():
    from sradm_diffusers.extras.uncertainty import colourize

    ramp = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=float)
    values = np.array([[0.5, 1.0, 1.5, 3.75, -1.0]])  # vmax 4: positions 0.5, 1, 1.5, 3.75 anchors; below 0
    expected = [np.round(ramp[0] / 2 + ramp[1] / 2), ramp[1], np.round(ramp[1] / 2 + ramp[2] / 2),
                np.round(ramp[3] / 4 + 3 * ramp[4] / 4), ramp[0]]
    assert colourize(values, 4.0)[0].tolist() == [list(map(int, e)) for e in expected]
    assert colourize(values, 0.0)[0].tolist() == [[68, 1, 84]] * 5  # vmax 0: all at the bottom colour
    assert colourize(values, 4.0).dtype == np.uint8


def test_uncertainty_map_layout_and_default_scale():
    from sradm_diffusers.extras.uncertainty import colourize, uncertainty_map

    std = torch.zeros(30, 40)
    std[:, 20:] = torch.linspace(0, 12 / 255, 20)
    image = uncertainty_map(std)  # default vmax: the 99th percentile (at least 1) on the 0..255 scale
    values = std.numpy() * 255
    vmax = max(float(np.percentile(values, 99)), 1.0)
    pixels = np.asarray(image)
    assert image.size == (40, 30 + 28)
    np.testing.assert_array_equal(pixels[:30], colourize(values, vmax))
    ramp = colourize(np.tile(np.linspace(0, vmax, 20), (14, 1)), vmax)  # half width, half the bar's height
    np.testing.assert_array_equal(pixels[32:46, 4:24], ramp)
    assert (pixels[32:46, 24] == 255).all() and (pixels[30:32] == 255).all()  # white margins
    assert (pixels[32:44, 26:] != 255).any() and (pixels[44:, 4:] != 255).any()  # the two labels
    # a narrow map: the scale bar is drawn at least 16 x 16 (an 8-pixel ramp, 8 rows) and cropped to the map's size
    small = np.asarray(uncertainty_map(torch.zeros(3, 10, 12), vmax=2.0, bar_height=10))
    assert small.shape == (20, 12, 3)
    bar = colourize(np.tile(np.linspace(0, 2, 8), (8, 1)), 2)
    np.testing.assert_array_equal(small[12:20, 4:12], bar)


def test_uncertainty_argument_errors(pipe):
    from sradm_diffusers.extras.uncertainty import sample_with_uncertainty

    for k in (1, 2.0):
        assert _raises(ValueError, sample_with_uncertainty, pipe, torch.rand(1, 3, 8, 8), num_samples=k) == (
            f"num_samples must be an integer >= 2 to measure a spread; got {k!r}.")
    for fixed in ("num_images_per_prompt", "output_type"):
        assert _raises(ValueError, sample_with_uncertainty, pipe, torch.rand(1, 3, 8, 8), **{fixed: 1}) == (
            f"sample_with_uncertainty sets {fixed} itself; do not pass it.")
    assert _raises(ValueError, sample_with_uncertainty, pipe, torch.rand(2, 3, 8, 8), num_samples=2,
                   num_inference_steps=1) == "pass one input image; got 2 images."


def test_summary_images_are_the_rounded_mean_and_the_std_map():
    from sradm_diffusers.extras.uncertainty import scale_bar, std_map, summary_images

    samples = torch.rand(3, 3, 6, 7, generator=torch.Generator().manual_seed(0))
    mean, spread, scale = summary_images(samples)
    expected = np.round(samples.mean(dim=0).permute(1, 2, 0).numpy() * 255)
    assert np.abs(np.asarray(mean, dtype=float) - expected).max() == 0
    std = samples.std(dim=0, correction=0)
    np.testing.assert_array_equal(np.asarray(spread), np.asarray(std_map(std)))  # the SR size, no legend
    assert spread.size == (7, 6)
    vmax = max(float(np.percentile(std.mean(dim=0).numpy() * 255, 99)), 1.0)
    np.testing.assert_array_equal(np.asarray(scale), np.asarray(scale_bar(vmax)))


# --------------------------------------------------------------------------------------------------- RRDB start


@pytest.mark.parametrize("strength, steps, error, message", [
    (True, 10, TypeError, "strength must be a float in (0, 1], got bool True."),
    ("0.5", 10, TypeError, "strength must be a float in (0, 1], got str '0.5'."),
    (0.0, 10, ValueError, "strength must be in (0, 1] (1 = start from pure noise), got 0.0."),
    (1.01, 10, ValueError, "strength must be in (0, 1] (1 = start from pure noise), got 1.01."),
    (0.09, 10, ValueError, "strength=0.09 with num_inference_steps=10 runs no denoising step (int(steps * strength) "
                           "= 0); raise strength to at least 0.1 or use more steps."),
])
def test_strength_errors(strength, steps, error, message):
    from sradm_diffusers.sampling.rrdb_start import check_strength

    assert _raises(error, check_strength, strength, steps) == message


def test_strength_boundaries_are_accepted():
    from sradm_diffusers.sampling.rrdb_start import check_strength

    check_strength(1.0, 1)
    check_strength(1, 3)
    check_strength(0.1, 10)  # exactly one step


@pytest.mark.parametrize("scheduler_class", [DDIMScheduler, DPMSolverMultistepScheduler])
def test_truncated_timesteps_are_the_last_int_steps_times_strength(pipe, scheduler_class):
    from sradm_diffusers.sampling.rrdb_start import truncate_timesteps

    scheduler = scheduler_class.from_config(pipe.scheduler.config)
    for steps, strength in ((10, 0.82), (11, 0.82), (4, 0.5), (5, 1.0)):
        scheduler.set_timesteps(steps)
        full = scheduler.timesteps.clone()
        kept = truncate_timesteps(scheduler, steps, strength)
        run = int(steps * strength)
        assert kept.tolist() == full[(steps - run) * scheduler.order :].tolist()
        assert len(kept) == run * scheduler.order


def test_cli_fuse_names_an_unreadable_file_and_a_bad_mask(tmp_path, model_dir):
    from sradm_diffusers.commands.fuse import run_fuse
    from sradm_diffusers.commands.runtime import UsageError

    PIL.Image.new("RGB", (8, 6)).save(tmp_path / "a.png")
    PIL.Image.new("RGB", (32, 24)).save(tmp_path / "ref.png")
    PIL.Image.new("L", (32, 24), 255).save(tmp_path / "mask.png")
    PIL.Image.new("L", (30, 24), 255).save(tmp_path / "small.png")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    for broken in range(3):
        paths = [str(tmp_path / name) for name in ("a.png", "ref.png", "mask.png")]
        paths[broken] = str(tmp_path / "broken.png")
        message = _raises(UsageError, run_fuse, *paths, str(tmp_path / "out.png"), model=model_dir, steps=1)
        assert message.startswith(f"{tmp_path / 'broken.png'}: ")
    message = _raises(UsageError, run_fuse, str(tmp_path / "a.png"), str(tmp_path / "ref.png"),
                      str(tmp_path / "small.png"), str(tmp_path / "out.png"), model=model_dir, steps=1)
    assert message == (f"--mask {tmp_path / 'small.png'} is 30x24; REFERENCE and MASK must have the SR size 32x24 "
                       f"(4 times {tmp_path / 'a.png'}).")
    assert not (tmp_path / "out.png").exists()


def test_fusion_caps_the_reference_at_the_models_residual_range(pipe):
    """A reference far from the upsample is taken as far as the model's residual reaches: up +- 1/residual_scale."""
    from sradm_diffusers import imresize
    from sradm_diffusers.extras.fusion import fuse

    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    lr = torch.zeros(1, 3, 8, 8)
    lr[..., :, 4:] = 1.0  # black left half, white right half
    reference = 1 - imresize(lr, 4).clamp(0, 1)  # the opposite: white where the LR is black and back
    out = fuse(pipe, lr, reference, torch.ones(32, 32), feather=0.0, num_inference_steps=1, output_type="pt",
               generator=torch.Generator().manual_seed(0)).images
    up = imresize(lr * 2 - 1, 4).clamp(-1, 1)
    residual = ((reference * 2 - 1 - up) * pipe.config.residual_scale).clamp(-1, 1)
    expected = ((up + residual / pipe.config.residual_scale).clamp(-1, 1) + 1) / 2
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    assert out[..., 2:30, 2:14].max() <= 0.25 + 1e-6 and out[..., 2:30, 18:30].min() >= 0.75 - 1e-6


def test_a_feather_below_one_pixel_still_blurs():
    from sradm_diffusers.extras.fusion import feather_mask

    mask = torch.zeros(1, 1, 1, 9)
    mask[..., 4] = 1
    soft = feather_mask(mask, 1.0)  # sigma 0.5, radius 2
    kernel = torch.exp(-torch.arange(-2.0, 3.0) ** 2 / 0.5)
    torch.testing.assert_close(soft[0, 0, 0, 2:7], kernel / kernel.sum(), atol=1e-7, rtol=0)
