"""Few-step sampling: the start from the RRDB residual (``strength``), and x_0 clipping for Euler."""

import math

import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    UniPCMultistepScheduler,
)

from sradm_diffusers import build_pipeline, imresize
from sradm_diffusers.image_processing import preprocess
from sradm_diffusers.metrics.quality import lr_psnr, to_uint8
from sradm_diffusers.sampling.prediction import bound_x0, clip_model_output, needs_x0_clipping
from sradm_diffusers.sampling.rrdb_start import rrdb_upscale
from sradm_diffusers.commands.runtime import set_scheduler

from pipeline_calls import run


def record_unet_inputs(pipe) -> list[tuple[torch.Tensor, float]]:
    """(sample, timestep) of every U-Net call, recorded by a forward pre-hook."""
    calls = []
    pipe.unet.register_forward_pre_hook(lambda module, args: calls.append((args[0].clone(), float(args[1]))))
    return calls


# ------------------------------------------------------------------------------------------------ strength


def test_strength_one_is_the_pure_noise_path(tiny_pipe, lr_image, monkeypatch):
    default = run(tiny_pipe, lr_image, num_inference_steps=3)

    def no_rrdb(*args, **kwargs):
        raise AssertionError("strength=1 must not use the RRDB start")

    monkeypatch.setattr(tiny_pipe.lr_encoder, "head", no_rrdb)
    same = run(tiny_pipe, lr_image, num_inference_steps=3, strength=1.0)
    torch.testing.assert_close(same, default, atol=0, rtol=0)


@pytest.mark.parametrize(
    "strength, steps, error, match",
    [
        (0.0, 4, ValueError, r"strength must be in \(0, 1\]"),
        (-0.5, 4, ValueError, r"strength must be in \(0, 1\]"),
        (1.5, 4, ValueError, r"strength must be in \(0, 1\]"),
        (float("nan"), 4, ValueError, r"strength must be in \(0, 1\]"),
        ("0.5", 4, TypeError, r"strength must be a float"),
        (True, 4, TypeError, r"strength must be a float"),
        (0.2, 4, ValueError, r"runs no denoising step .* raise strength to at least 0.25"),
    ],
)
def test_bad_strength_is_rejected(tiny_pipe, lr_image, strength, steps, error, match):
    with pytest.raises(error, match=match):
        run(tiny_pipe, lr_image, num_inference_steps=steps, strength=strength)


def independent_rrdb_residual(pipe, lr_image) -> torch.Tensor:
    lr = preprocess(lr_image)
    with torch.no_grad():
        sr = pipe.lr_encoder.upscale(lr).clamp(-1, 1)
    return ((sr - imresize(lr, 4).clamp(-1, 1)) * pipe.config.residual_scale).clamp(-1, 1)


def test_rrdb_start_with_ddim_begins_at_the_right_noised_residual(tiny_pipe, lr_image):
    tiny_pipe.scheduler = DDIMScheduler.from_config(tiny_pipe.scheduler.config, timestep_spacing="trailing")
    noise = torch.randn(1, 3, 116, 148, generator=torch.Generator().manual_seed(5))
    calls = record_unet_inputs(tiny_pipe)
    out = tiny_pipe(lr_image, num_inference_steps=10, strength=0.3, latents=noise, output_type="pt").images

    # trailing spacing over T train steps: t_i = round(T - i * T / 10) - 1; strength 0.3 runs the last 3
    train_steps = tiny_pipe.scheduler.config.num_train_timesteps
    expected_ts = [round(train_steps - i * train_steps / 10) - 1 for i in range(7, 10)]
    assert [t for _, t in calls] == expected_ts
    abar = DDPMScheduler.from_config(tiny_pipe.scheduler.config).alphas_cumprod[expected_ts[0]]
    x0 = independent_rrdb_residual(tiny_pipe, lr_image)
    expected = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    torch.testing.assert_close(calls[0][0][:, :, :116, :148], expected, atol=1e-5, rtol=0)

    calls.clear()
    again = tiny_pipe(lr_image, num_inference_steps=10, strength=0.3, latents=noise, output_type="pt").images
    torch.testing.assert_close(again, out, atol=0, rtol=0)  # deterministic sampler, same path twice
    assert len(calls) == 3


def test_rrdb_start_runs_the_encoder_once_per_input_image_for_its_k_samples(tiny_pipe, lr_image):
    tiny_pipe.scheduler = DDIMScheduler.from_config(tiny_pipe.scheduler.config, timestep_spacing="trailing")
    batches = []
    tiny_pipe.lr_encoder.conv_first.register_forward_pre_hook(lambda module, args: batches.append(args[0].shape[0]))
    noise = torch.randn(6, 3, 116, 148, generator=torch.Generator().manual_seed(5))
    calls = record_unet_inputs(tiny_pipe)
    tiny_pipe([lr_image, lr_image[::-1].copy()], num_inference_steps=10, strength=0.3, latents=noise,
              num_images_per_prompt=3, output_type="pt")
    assert batches == [2]  # one pass gives the conditioning and the trunk of the RRDB start: 2 images, not 6
    x0 = independent_rrdb_residual(tiny_pipe, lr_image)
    abar = DDPMScheduler.from_config(tiny_pipe.scheduler.config).alphas_cumprod[int(calls[0][1])]
    for k in range(3):  # every sample of the first image starts from its residual, with its own noise
        expected = abar.sqrt() * x0 + (1 - abar).sqrt() * noise[k : k + 1]
        torch.testing.assert_close(calls[0][0][k : k + 1, :, :116, :148], expected, atol=1e-5, rtol=0)


def test_rrdb_start_on_a_padded_image_uses_the_encoders_pass_over_the_padding(lr_image):
    # The div2k-x4 U-Net needs HR sizes divisible by 8, so the 29x37 LR image is mirror-padded to 30x38; the RRDB
    # start reuses the trunk of that padded image (computed once for the conditioning), cropped back to 116x148.
    torch.manual_seed(0)
    pipe = build_pipeline("div2k-x4")  # random weights: the test checks where the start comes from, not quality
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")
    noise = torch.randn(1, 3, 116, 148, generator=torch.Generator().manual_seed(8))
    calls = record_unet_inputs(pipe)
    pipe(lr_image, num_inference_steps=10, strength=0.1, latents=noise, output_type="pt")
    assert len(calls) == 1 and calls[0][0].shape[-2:] == (120, 152)

    lr = preprocess(lr_image)
    padded = torch.nn.functional.pad(lr, (0, 1, 0, 1), mode="reflect")
    with torch.no_grad():
        sr = pipe.lr_encoder.upscale(padded)[:, :, :116, :148].clamp(-1, 1)
    x0 = ((sr - imresize(lr, 4).clamp(-1, 1)) * pipe.config.residual_scale).clamp(-1, 1)
    abar = DDPMScheduler.from_config(pipe.scheduler.config).alphas_cumprod[int(calls[0][1])]
    expected = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    torch.testing.assert_close(calls[0][0][:, :, :116, :148], expected, atol=1e-5, rtol=0)


def test_rrdb_start_with_euler_scales_the_noised_residual(tiny_pipe, lr_image):
    tiny_pipe.scheduler = EulerDiscreteScheduler.from_config(tiny_pipe.scheduler.config, timestep_spacing="trailing")
    noise = torch.randn(1, 3, 116, 148, generator=torch.Generator().manual_seed(6))
    calls = record_unet_inputs(tiny_pipe)
    tiny_pipe(lr_image, num_inference_steps=8, strength=0.5, latents=noise, output_type="pt")

    train_steps = tiny_pipe.scheduler.config.num_train_timesteps
    t_start = round(train_steps - 4 * train_steps / 8) - 1
    assert len(calls) == 4 and calls[0][1] == pytest.approx(t_start)
    abar = float(DDPMScheduler.from_config(tiny_pipe.scheduler.config).alphas_cumprod[t_start])
    sigma = math.sqrt((1 - abar) / abar)
    x0 = independent_rrdb_residual(tiny_pipe, lr_image)
    expected = (x0 + sigma * noise) / math.sqrt(sigma**2 + 1)  # x_t = x_0 + sigma * eps, scaled for the U-Net
    torch.testing.assert_close(calls[0][0][:, :, :116, :148], expected, atol=1e-5, rtol=0)


def test_tiled_rrdb_upscale_equals_the_whole_image(tiny_pipe, demo_pipe, lr_image):
    lr = preprocess(lr_image)
    for pipe in (tiny_pipe, demo_pipe):  # without and with the encoder's bicubic skip
        with torch.no_grad():
            whole = pipe.lr_encoder.upscale(lr)
            tiled = rrdb_upscale(pipe.lr_encoder, lr, tile=8)
        torch.testing.assert_close(tiled, whole, atol=1e-4, rtol=0)
    assert tiny_pipe.lr_encoder.config.bicubic_skip != demo_pipe.lr_encoder.config.bicubic_skip


def test_rrdb_start_with_tiling_matches_untiled(tiny_pipe, lr_image):
    tiny_pipe.scheduler = DDIMScheduler.from_config(tiny_pipe.scheduler.config, timestep_spacing="trailing")
    noise = torch.randn(1, 3, 116, 148, generator=torch.Generator().manual_seed(7))
    whole = tiny_pipe(lr_image, num_inference_steps=4, strength=0.5, latents=noise, output_type="pt").images
    tiny_pipe.enable_tiling(tile_size=16, tile_overlap=4)
    calls = record_unet_inputs(tiny_pipe)
    tiled = tiny_pipe(lr_image, num_inference_steps=4, strength=0.5, latents=noise, output_type="pt").images
    assert len(calls) > 2  # several tiles per step
    # The tiles blend the noise predictions, so the two differ by float rounding plus the blend's seams: measured
    # mean 4.8e-6 (max 2.9e-4); bar 2e-5 (4x). Flat tile weights give 1.4e-4 and overwriting tiles 1.5e-4, which
    # fail it (benchmarks/tiling_tolerances.py).
    assert float((tiled - whole).abs().mean()) < 2e-5


# ------------------------------------------------------------------------------------------------ x_0 clipping


def test_only_schedulers_without_the_configs_x0_bound_need_clipping(tiny_pipe):
    config = tiny_pipe.scheduler.config
    assert config.clip_sample or config.thresholding
    assert needs_x0_clipping(EulerDiscreteScheduler.from_config(config))
    for cls in (DDPMScheduler, DDIMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler):
        assert not needs_x0_clipping(cls.from_config(config)), cls.__name__
    unbounded = {**config, "clip_sample": False, "thresholding": False}
    assert not needs_x0_clipping(EulerDiscreteScheduler.from_config(unbounded))


def test_clipped_model_output_makes_euler_step_from_the_bounded_x0(tiny_pipe):
    config = {**tiny_pipe.scheduler.config, "thresholding": False, "clip_sample": True, "clip_sample_range": 1.0}
    scheduler = EulerDiscreteScheduler.from_config(config, timestep_spacing="trailing")
    scheduler.set_timesteps(5)
    t, sigma = scheduler.timesteps[0], float(scheduler.sigmas[0])
    generator = torch.Generator().manual_seed(0)
    x_t = torch.randn(1, 3, 8, 8, generator=generator) * scheduler.init_noise_sigma
    eps = torch.randn(1, 3, 8, 8, generator=generator)
    model_input = scheduler.scale_model_input(x_t, t)
    corrected = clip_model_output(scheduler, eps, model_input, t)
    # Euler (epsilon): x_0 = x_t - sigma * eps; the corrected output must give the clamped one
    torch.testing.assert_close(x_t - sigma * corrected, (x_t - sigma * eps).clamp(-1, 1), atol=1e-3 * sigma, rtol=0)


def test_dynamic_thresholding_bound(tiny_pipe):
    config = {**tiny_pipe.scheduler.config, "thresholding": True, "dynamic_thresholding_ratio": 0.5,
              "sample_max_value": 3.0, "_use_default_values": []}  # else from_config drops the two options
    scheduler = EulerDiscreteScheduler.from_config(config)
    x0 = torch.stack([torch.linspace(-4, 4, 9).repeat(3, 1, 1), torch.linspace(-0.5, 0.5, 9).repeat(3, 1, 1)])
    bounded = bound_x0(scheduler, x0)
    # sample 0: median of |x0| = 2 -> clamp to +-2 and divide by 2; sample 1: median 0.25 < 1 -> s = 1, unchanged
    torch.testing.assert_close(bounded[0], x0[0].clamp(-2, 2) / 2)
    torch.testing.assert_close(bounded[1], x0[1])


def test_euler_without_lr_consistency_matches_the_lr_on_the_demo_model(demo_pipe, demo_lr):
    """Regression: Euler's unclipped x_0 at sigma ~ 2000 gave ~10 dB LR-PSNR; DDIM (which clips) gives > 35."""
    set_scheduler(demo_pipe, "euler")
    out = run(demo_pipe, demo_lr, num_inference_steps=10, lr_consistency=False)
    lr_u8 = to_uint8(demo_lr * 2 - 1)
    assert float(lr_psnr(to_uint8(out, value_range=(0.0, 1.0)), lr_u8, 4)) > 35.0


# ------------------------------------------------------------------------------------------------ CLI default


def _spy_calls(monkeypatch) -> list[tuple[str, int, float]]:
    """(scheduler class, num_inference_steps, strength) of every pipeline call the CLI makes."""
    from sradm_diffusers import SRADMPipeline

    calls, original = [], SRADMPipeline.__call__

    def spy(self, *args, **kwargs):
        calls.append((type(self.scheduler).__name__, kwargs["num_inference_steps"], kwargs["strength"]))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SRADMPipeline, "__call__", spy)
    return calls


def test_cli_default_is_the_few_step_setting(tmp_path, model_dir, lr_image, monkeypatch):
    import numpy as np
    import PIL.Image

    from sradm_diffusers.commands.cli import main
    from sradm_diffusers.defaults import DEFAULT_SAMPLING, SCHEDULERS

    source = tmp_path / "p.png"
    PIL.Image.fromarray(lr_image[:8, :10]).save(source)
    calls = _spy_calls(monkeypatch)
    base = ["upscale", str(source), "--seed", "0", "--model", model_dir]
    assert main([*base, "-o", str(tmp_path / "default.png")]) == 0
    name, steps, strength = DEFAULT_SAMPLING.scheduler, DEFAULT_SAMPLING.steps, DEFAULT_SAMPLING.strength
    assert calls[-1] == (SCHEDULERS[name][0], steps, strength)
    explicit = ["--scheduler", name, "--steps", str(steps), "--strength", str(strength)]
    assert main([*base, "-o", str(tmp_path / "explicit.png"), *explicit]) == 0
    with PIL.Image.open(tmp_path / "default.png") as a, PIL.Image.open(tmp_path / "explicit.png") as b:
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    # any sampling option given: the other ones keep their former defaults (model's DDPM, its 100 steps, strength 1)
    train_steps = DDPMScheduler.from_pretrained(model_dir, subfolder="scheduler").config.num_train_timesteps
    assert main([*base, "-o", str(tmp_path / "s.png"), "--steps", "3"]) == 0
    assert calls[-1] == ("DDPMScheduler", 3, 1.0)
    assert main([*base, "-o", str(tmp_path / "k.png"), "--strength", "0.05"]) == 0
    assert calls[-1] == ("DDPMScheduler", train_steps, 0.05)


@pytest.mark.parametrize("value, match", [("0", r"strength must be in \(0, 1\]"), ("1.5", r"strength must be in"),
                                          ("0.1", r"runs no denoising step")])
def test_cli_bad_strength_exits_2(tmp_path, model_dir, lr_image, capsys, value, match):
    import PIL.Image

    from sradm_diffusers.commands.cli import main

    source = tmp_path / "p.png"
    PIL.Image.fromarray(lr_image[:8, :10]).save(source)
    argv = ["upscale", str(source), "--model", model_dir, "--steps", "4", "--strength", value]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--strength" in err
    assert __import__("re").search(match, err)
