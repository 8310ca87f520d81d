import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    UniPCMultistepScheduler,
)

from sradm_diffusers import SRADMPipeline, build_pipeline, imresize

from pipeline_calls import run


@pytest.mark.parametrize("factor", [4, 8])
def test_odd_sizes_give_exactly_scaled_output(lr_image, factor):
    pipe = build_pipeline("tiny", upscale_factor=factor)
    pipe.set_progress_bar_config(disable=True)
    out = run(pipe, lr_image, num_inference_steps=2)
    assert out.shape == (1, 3, 29 * factor, 37 * factor)
    pil = pipe(PIL.Image.fromarray(lr_image), num_inference_steps=2).images[0]
    assert pil.size == (37 * factor, 29 * factor)


def test_same_seed_same_output_and_different_seed_differs(tiny_pipe, lr_image):
    a, b, c = run(tiny_pipe, lr_image, 1), run(tiny_pipe, lr_image, 1), run(tiny_pipe, lr_image, 2)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert (a - c).abs().max() > 1e-3


def test_batch_equals_singles_with_the_same_generators(tiny_pipe, lr_image):
    other = np.ascontiguousarray(lr_image[::-1])
    generators = [torch.Generator().manual_seed(10), torch.Generator().manual_seed(11)]
    batch = tiny_pipe([lr_image, other], num_inference_steps=3, generator=generators, output_type="pt").images
    first = run(tiny_pipe, lr_image, 10, num_inference_steps=3)
    second = run(tiny_pipe, other, 11, num_inference_steps=3)
    # A batch of 2 and two batches of 1 take different oneDNN kernels (chosen by shape), so they agree only to
    # float rounding: 1.5e-5 after three steps was seen on AMD EPYC. Same-path reruns stay bit-exact (test above).
    torch.testing.assert_close(batch, torch.cat([first, second]), atol=1e-4, rtol=0)


def test_k_samples_per_image_differ(tiny_pipe, lr_image):
    out = run(tiny_pipe, lr_image, num_images_per_prompt=3)
    assert out.shape[0] == 3
    assert (out[0] - out[1]).abs().max() > 1e-3 and (out[1] - out[2]).abs().max() > 1e-3


def test_latents_fix_the_initial_noise(tiny_pipe, lr_image):
    latents = torch.randn(1, 3, 116, 148, generator=torch.Generator().manual_seed(3))
    scheduler = DDIMScheduler.from_config(tiny_pipe.scheduler.config)  # deterministic given x_T
    tiny_pipe.scheduler = scheduler
    a = tiny_pipe(lr_image, num_inference_steps=3, latents=latents, output_type="pt").images
    b = tiny_pipe(lr_image, num_inference_steps=3, latents=latents.clone(), output_type="pt").images
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    with pytest.raises(ValueError, match="latents have shape"):
        tiny_pipe(lr_image, num_inference_steps=3, latents=torch.randn(1, 3, 10, 10))


def test_output_types(tiny_pipe, lr_image):
    pt = run(tiny_pipe, lr_image)
    np_out = run(tiny_pipe, lr_image, output_type="np")
    pil = run(tiny_pipe, lr_image, output_type="pil")
    assert pt.dtype == torch.float32 and 0 <= pt.min() and pt.max() <= 1
    assert np_out.shape == (1, 116, 148, 3)
    np.testing.assert_allclose(np_out[0], pt[0].permute(1, 2, 0).numpy(), atol=1e-6)
    assert isinstance(pil[0], PIL.Image.Image) and pil[0].mode == "RGB"
    np.testing.assert_array_equal(np.asarray(pil[0]), np.round(np_out[0] * 255).astype(np.uint8))
    images, = tiny_pipe(lr_image, num_inference_steps=2, return_dict=False, output_type="np")
    assert images.shape == (1, 116, 148, 3)


def test_callback_sees_every_step_and_can_replace_latents(tiny_pipe, lr_image):
    seen = []

    def callback(pipe, step, timestep, tensors):
        seen.append((step, int(timestep), tuple(tensors["latents"].shape)))
        return {"latents": torch.zeros_like(tensors["latents"])}

    tiny_pipe.scheduler = DDIMScheduler.from_config(tiny_pipe.scheduler.config)
    out = run(tiny_pipe, lr_image, callback_on_step_end=callback)
    assert [s[0] for s in seen] == [0, 1, 2, 3]
    assert all(shape == (1, 3, 116, 148) for _, _, shape in seen)
    # The last step's latents were zeroed, so the result is exactly the bicubic base.
    lr = torch.from_numpy(lr_image).permute(2, 0, 1)[None].float() / 127.5 - 1
    expected = (imresize(lr, 4).clamp(-1, 1) + 1) / 2
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def test_encoder_and_condition_run_once_per_call(tiny_pipe, lr_image, monkeypatch):
    calls = {"encoder": 0, "condition": 0, "unet": 0}
    for name, module, method in [("encoder", tiny_pipe.lr_encoder, "forward"), ("condition", tiny_pipe.unet, "condition")]:
        original = getattr(module, method)

        def counted(*args, _original=original, _name=name, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, method, counted)
    original_forward = tiny_pipe.unet.forward

    def counted_forward(*args, **kwargs):
        calls["unet"] += 1
        return original_forward(*args, **kwargs)

    monkeypatch.setattr(tiny_pipe.unet, "forward", counted_forward)
    run(tiny_pipe, lr_image, num_inference_steps=5, num_images_per_prompt=2)
    assert calls == {"encoder": 1, "condition": 1, "unet": 5}


def make_oracle(pipe, residual):
    """A noise predictor that knows the true x_0: exact eps for the VP parametrisation at (fractional) t."""
    alphas_cumprod = DDPMScheduler.from_config(pipe.scheduler.config).alphas_cumprod.double()
    sigmas = ((1 - alphas_cumprod) / alphas_cumprod).sqrt()

    def oracle(sample, timestep, cond=None, return_dict=True, **conditioning):  # cond or lr_features: ignored
        t = float(timestep)
        sigma = float(np.interp(t, np.arange(len(sigmas)), sigmas.numpy()))
        abar = 1.0 / (1.0 + sigma**2)
        x0 = torch.nn.functional.pad(residual, (0, sample.shape[-1] - residual.shape[-1], 0, sample.shape[-2] - residual.shape[-2]))
        eps = (sample - abar**0.5 * x0) / (1 - abar) ** 0.5
        return type("Out", (), {"sample": eps.float()})()

    return oracle


@pytest.mark.parametrize(
    "scheduler_cls, steps",
    [
        (DDPMScheduler, 100),
        (DDIMScheduler, 20),
        (DPMSolverMultistepScheduler, 20),
        (UniPCMultistepScheduler, 20),
        (EulerDiscreteScheduler, 20),
    ],
)
def test_scheduler_swaps_recover_the_residual(tiny_pipe, lr_image, monkeypatch, scheduler_cls, steps):
    """With a perfect noise predictor every scheduler must land on up(LR) + x0 / residual_scale.

    Euler scales its model input (x_t / sqrt(sigma^2 + 1)); the oracle assumes the VP form, so this also checks
    that ``scale_model_input`` is applied to the noisy sample.
    """
    y, x = torch.meshgrid(torch.linspace(-1, 1, 116), torch.linspace(-1, 1, 148), indexing="ij")
    residual = torch.stack([0.8 * x * y, 0.5 * torch.sin(3 * x), -0.6 * y])[None]
    tiny_pipe.scheduler = scheduler_cls.from_config(tiny_pipe.scheduler.config)
    monkeypatch.setattr(tiny_pipe.unet, "forward", make_oracle(tiny_pipe, residual))
    out = run(tiny_pipe, lr_image, num_inference_steps=steps)
    lr = torch.from_numpy(lr_image).permute(2, 0, 1)[None].float() / 127.5 - 1
    expected = ((imresize(lr, 4).clamp(-1, 1) + residual / 2).clamp(-1, 1) + 1) / 2
    torch.testing.assert_close(out, expected, atol=2e-3, rtol=0)


def test_default_scheduler_is_the_reference_schedule(tiny_pipe):
    config = tiny_pipe.scheduler.config
    assert isinstance(tiny_pipe.scheduler, DDPMScheduler)
    assert config.num_train_timesteps == 100 and config.beta_schedule == "squaredcos_cap_v2"
    assert config.clip_sample and config.clip_sample_range == 1.0 and config.prediction_type == "epsilon"


def test_fast_samplers_made_from_the_stored_config_use_trailing_timesteps(tiny_pipe):
    dpm = DPMSolverMultistepScheduler.from_config(tiny_pipe.scheduler.config)
    dpm.set_timesteps(20)
    assert dpm.timesteps.tolist() == [99 - 5 * k for k in range(20)]  # starts at T-1, last call at t=4
    ddpm = DDPMScheduler.from_config(tiny_pipe.scheduler.config)
    ddpm.set_timesteps(100)
    assert ddpm.timesteps.tolist() == list(range(99, -1, -1))  # 100 DDPM steps are every timestep, as the reference


@pytest.mark.parametrize("steps", [0, -1, 101, 2.5])
def test_bad_step_counts_are_rejected(tiny_pipe, lr_image, steps):
    with pytest.raises(ValueError, match="num_inference_steps"):
        tiny_pipe(lr_image, num_inference_steps=steps)


def test_unknown_output_type_is_rejected(tiny_pipe, lr_image):
    with pytest.raises(ValueError, match="output_type"):
        tiny_pipe(lr_image, num_inference_steps=1, output_type="jpeg")


def test_upscale_factor_mismatch_between_components_is_rejected():
    pipe4, pipe8 = build_pipeline("tiny", upscale_factor=4), build_pipeline("tiny", upscale_factor=8)
    with pytest.raises(ValueError, match="disagree on the upscale factor"):
        SRADMPipeline(unet=pipe4.unet, lr_encoder=pipe8.lr_encoder, scheduler=pipe4.scheduler)
    with pytest.raises(ValueError, match="disagree on the upscale factor"):
        SRADMPipeline(unet=pipe4.unet, lr_encoder=pipe4.lr_encoder, scheduler=pipe4.scheduler, upscale_factor=8)


def test_feature_channel_mismatch_is_rejected():
    small, tiny = build_pipeline("small"), build_pipeline("tiny")
    with pytest.raises(ValueError, match="cond_channels"):
        SRADMPipeline(unet=tiny.unet, lr_encoder=small.lr_encoder, scheduler=tiny.scheduler)


def test_unknown_preset_is_rejected():
    with pytest.raises(ValueError, match="Unknown preset 'huge'"):
        build_pipeline("huge")


@pytest.mark.parametrize(
    "bad, error, match",
    [
        (torch.rand(3, 8), ValueError, "shape"),
        (torch.rand(1, 4, 8, 8), ValueError, "shape"),
        (torch.rand(3, 8, 8) * 2, ValueError, r"\[0, 1\]"),
        (torch.full((3, 8, 8), float("nan")), ValueError, "NaN"),
        (np.full((8, 8, 3), np.inf, dtype=np.float32), ValueError, "NaN or infinite"),
        (np.zeros((0, 8, 3), dtype=np.uint8), ValueError, "empty"),
        (torch.zeros(3, 0, 8), ValueError, "empty"),
        ("not an image", TypeError, "Unsupported image type"),
        (np.zeros((8, 8, 3), dtype=np.int64), TypeError, "dtype"),
    ],
)
def test_bad_images_are_rejected(tiny_pipe, bad, error, match):
    with pytest.raises(error, match=match):
        tiny_pipe(bad, num_inference_steps=1)


@pytest.mark.parametrize("scheduler_cls", [DDPMScheduler, DDIMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler])
def test_schedulers_keep_x0_inside_the_residual_range(tiny_pipe, lr_image, monkeypatch, scheduler_cls):
    """A predictor that believes in an out-of-range residual (2.0) must still yield x_0 clipped to 1.0.

    DPM-Solver and UniPC ignore ``clip_sample``; the stored config's thresholding (max 1.0) clips them too.
    """
    residual = torch.full((1, 3, 116, 148), 2.0)
    tiny_pipe.scheduler = scheduler_cls.from_config(tiny_pipe.scheduler.config)
    monkeypatch.setattr(tiny_pipe.unet, "forward", make_oracle(tiny_pipe, residual))
    out = run(tiny_pipe, lr_image, num_inference_steps=20)
    lr = torch.from_numpy(lr_image).permute(2, 0, 1)[None].float() / 127.5 - 1
    expected = ((imresize(lr, 4).clamp(-1, 1) + 0.5).clamp(-1, 1) + 1) / 2  # residual 1.0 / residual_scale 2
    torch.testing.assert_close(out, expected, atol=2e-3, rtol=0)
