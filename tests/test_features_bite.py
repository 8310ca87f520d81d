"""Behaviour of the newer features pinned against computations written here, so that breaking one fails a test.

Each test names the break it was checked against in docs/testing.md (a deliberate change to the source, reverted):
LR consistency applied once instead of at every step, a single NaN among finite values, the memory estimate with
tiling, tiled sampling under offload, interpolation's slerp, fusion's feather and noise level, the command-line
outputs' content, and the README's documented defaults.
"""

import math

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import DDIMScheduler

from sradm_diffusers import build_pipeline, imresize
from sradm_diffusers.commands.cli import main


def _ddim_tiny():
    torch.manual_seed(0)
    pipe = build_pipeline("tiny", upscale_factor=4)
    for module in pipe.unet.modules():  # zero-initialised attention outputs would hide the attention entirely
        if hasattr(module, "to_out"):
            torch.nn.init.normal_(module.to_out.weight, std=0.05)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _lr(height=16, width=16, seed=0):
    """(1, 3, h, w) in [0, 1] with structure: gradients, a bright square and noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 10.0, y * 12.0, (x + y) * 5.0], axis=-1) + rng.normal(0, 20, (height, width, 3))
    image[4:10, 5:11] = 230
    return torch.from_numpy(np.clip(image, 0, 255) / 255).permute(2, 0, 1)[None].float()


def _noise(shape, seed=3):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------------------------
# LR consistency: back-projection at every step (a reference loop written here)
# ---------------------------------------------------------------------------------------------------------------


def _back_project(sr, lr, low, high, iterations):
    for _ in range(iterations):
        sr = torch.clamp(sr + imresize(lr - imresize(sr, 0.25), 4), low, high)
    return sr


@torch.no_grad()
def _reference_lr_consistency(pipe, lr01, latents, steps, every_step=True):
    """DDIM (eta 0) with the predicted x_0 back-projected at every step (4 iterations) and the result (20)."""
    lr = lr01 * 2 - 1
    rs = pipe.config.residual_scale
    up = imresize(lr, 4).clamp(-1, 1)
    low, high = (up - 1 / rs).clamp(min=-1), (up + 1 / rs).clamp(max=1)
    features = pipe.lr_encoder(lr)
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(steps)
    x = latents.clone()
    for t in scheduler.timesteps:
        eps = pipe.unet(x, t, lr_features=features).sample
        abar = scheduler.alphas_cumprod[int(t)]
        if every_step:
            x0 = ((x - (1 - abar).sqrt() * eps) / abar.sqrt()).clamp(-1, 1)
            x0 = (_back_project(up + x0 / rs, lr, low, high, 4) - up) * rs
            eps = (x - abar.sqrt() * x0) / (1 - abar).sqrt()
        x = scheduler.step(eps, t, x, eta=0.0).prev_sample
    sr = _back_project(up + x / rs, lr, low, high, 20).clamp(-1, 1)
    return (sr + 1) / 2


def test_lr_consistency_back_projects_at_every_step():
    pipe, lr = _ddim_tiny(), _lr()
    latents = _noise((1, 3, 64, 64))
    out = pipe(lr, num_inference_steps=4, latents=latents, lr_consistency=True, output_type="pt").images
    expected = _reference_lr_consistency(pipe, lr, latents, 4)
    once = _reference_lr_consistency(pipe, lr, latents, 4, every_step=False)
    # Same operations in another order of calls: measured max difference 6e-8 (float32 rounding); bar 1e-5 (x170).
    # Projecting only the final image moves the result by far more (measured mean 0.021), which fails it.
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    assert (once - expected).abs().mean() > 100 * 1e-5


# ---------------------------------------------------------------------------------------------------------------
# A single NaN or inf among finite values is refused (not only all-NaN tensors)
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_one_non_finite_value_among_finite_ones_is_refused(tiny_pipe, bad):
    from sradm_diffusers.image_processing import check_finite, preprocess

    image = np.full((8, 10, 3), 0.5, np.float32)
    image[3, 4, 2] = bad
    with pytest.raises(ValueError, match="numpy image contains NaN or infinite"):
        preprocess(image)
    with pytest.raises(ValueError, match="image tensor contains NaN or infinite"):
        preprocess(torch.from_numpy(image).permute(2, 0, 1))
    grey = np.full((8, 10), 100.0, np.float32)
    grey[5, 1] = bad
    with pytest.raises(ValueError, match="F-mode image contains NaN or infinite"):
        preprocess(PIL.Image.fromarray(grey, "F"))
    latents = torch.zeros(1, 3, 32, 40)
    latents[0, 1, 7, 9] = bad
    with pytest.raises(ValueError, match="NaN or infinite values in latents"):
        tiny_pipe(np.full((8, 10, 3), 0.5, np.float32), num_inference_steps=1, latents=latents)
    values = torch.zeros(2, 3, 4, 4)
    values[1, 2, 3, 0] = bad
    with pytest.raises(ValueError, match="NaN or infinite values in the output; fix it"):
        check_finite(values, "the output", "fix it")
    check_finite(torch.zeros(2, 3, 4, 4), "the output", "fix it")  # finite: no error


# ---------------------------------------------------------------------------------------------------------------
# Memory: --tile lowers the estimate (the fix the refusal names)
# ---------------------------------------------------------------------------------------------------------------


def test_tiling_lowers_the_memory_estimate_so_a_refused_image_fits(tiny_pipe, monkeypatch):
    from sradm_diffusers.sampling.memory import SamplingMemoryError, estimate_sampling_bytes

    image = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    whole = estimate_sampling_bytes(tiny_pipe.unet, 1, 256, 384)
    # 16-pixel LR tiles -> 64x64 HR, plus the whole-image tensors of the 256x384 output a tiled call still holds
    tile = estimate_sampling_bytes(tiny_pipe.unet, 1, 64, 64, (256, 384))
    assert tile < whole
    monkeypatch.setenv("SRADM_MEMORY_LIMIT", str((whole + tile) // 2))
    with pytest.raises(SamplingMemoryError, match="--tile N"):
        tiny_pipe(image, num_inference_steps=1)
    assert tiny_pipe.unet_input_size(64, 96) == (256, 384)
    tiny_pipe.enable_tiling(tile_size=16, tile_overlap=4)
    assert tiny_pipe.unet_input_size(64, 96) == (64, 64)
    out = tiny_pipe(image, num_inference_steps=1, output_type="pt").images
    assert out.shape == (1, 3, 256, 384)


def test_cli_tile_is_the_fix_for_a_memory_refusal(tmp_path, model_dir, monkeypatch, capsys):
    from sradm_diffusers.sampling.memory import estimate_sampling_bytes
    from sradm_diffusers.models import SRADMUNet

    unet = SRADMUNet.from_pretrained(model_dir, subfolder="unet")
    whole = estimate_sampling_bytes(unet, 1, 256, 384)
    tile = estimate_sampling_bytes(unet, 1, 64, 64, (256, 384))  # the whole output's tensors too
    PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)).save(
        tmp_path / "a.png")
    monkeypatch.setenv("SRADM_MEMORY_LIMIT", str((whole + tile) // 2))
    args = ["upscale", str(tmp_path / "a.png"), "--model", model_dir, "--steps", "1", "--scheduler", "ddim"]
    assert main([*args, "-o", str(tmp_path / "refused.png"), "--tile", "0"]) == 1
    assert "--tile N" in capsys.readouterr().err and not (tmp_path / "refused.png").exists()
    assert main([*args, "-o", str(tmp_path / "tiled.png"), "--tile", "16", "--tile-overlap", "4"]) == 0
    assert PIL.Image.open(tmp_path / "tiled.png").size == (384, 256)


# ---------------------------------------------------------------------------------------------------------------
# Interpolation: x_T is the slerp of the two noises (computed here)
# ---------------------------------------------------------------------------------------------------------------


def _slerp(a, b, t):
    a64, b64 = a.double().flatten(), b.double().flatten()
    omega = math.acos(float(a64 @ b64 / (a64.norm() * b64.norm())))
    mixed = (math.sin((1 - t) * omega) * a64 + math.sin(t * omega) * b64) / math.sin(omega)
    return mixed.reshape(a.shape).float()


def test_interpolation_frames_start_from_the_slerp_of_the_two_noises():
    from diffusers.utils.torch_utils import randn_tensor

    from sradm_diffusers.extras.interpolation import interpolate

    pipe, lr = _ddim_tiny(), _lr()
    frames = interpolate(pipe, lr, num_frames=4, generator_a=torch.Generator().manual_seed(0),
                         generator_b=torch.Generator().manual_seed(1), num_inference_steps=3, output_type="pt")
    a = randn_tensor((1, 3, 64, 64), generator=torch.Generator().manual_seed(0))
    b = randn_tensor((1, 3, 64, 64), generator=torch.Generator().manual_seed(1))
    latents = torch.cat([_slerp(a, b, k / 3) for k in range(4)])
    expected = pipe(lr.repeat(4, 1, 1, 1), num_inference_steps=3, latents=latents, eta=0.0, output_type="pt").images
    # one code path run twice on equal inputs: measured difference 0; 1e-6 allows last-bit kernel differences
    torch.testing.assert_close(frames, expected, atol=1e-6, rtol=0)
    # a linear mix of the same noises gives other middle frames (measured mean 0.011; the break this guards against)
    linear = torch.cat([a * (1 - k / 3) + b * k / 3 for k in range(4)])
    mixed = pipe(lr.repeat(4, 1, 1, 1), num_inference_steps=3, latents=linear, eta=0.0, output_type="pt").images
    assert (mixed[1:3] - expected[1:3]).abs().mean() > 1e-3


# ---------------------------------------------------------------------------------------------------------------
# Fusion: the feather profile (measured on the output) and the reference's noise level at each step
# ---------------------------------------------------------------------------------------------------------------


def _gaussian_step(x, edge, sigma):
    """The blurred unit step (1 left of ``edge``, 0 right of it): 0.5 * erfc((x - edge) / (sigma * sqrt 2))."""
    return 0.5 * torch.special.erfc((x - edge) / (sigma * math.sqrt(2)))


def test_fusion_feather_profile_on_the_output():
    """One DDIM step: the output is up + (m * ref + (1 - m) * x_0) / s, so (out - plain) / (ref - plain) is m."""
    from sradm_diffusers.extras.fusion import fuse

    pipe, lr = _ddim_tiny(), _lr()
    up = imresize(lr, 4).clamp(0, 1)
    reference = up  # residual 0: the output moves toward the upsample by m times the plain sample's residual
    mask = np.zeros((64, 64), np.uint8)
    mask[:, :32] = 255  # 0/255 masks: scaled by 1/255 in every mask convention
    latents = _noise((1, 3, 64, 64))
    plain = pipe(lr, num_inference_steps=1, latents=latents, output_type="pt").images
    fused = fuse(pipe, lr, reference, PIL.Image.fromarray(mask), feather=8.0, num_inference_steps=1,
                 latents=latents, output_type="pt").images
    moved, full = (fused - plain)[0], (reference - plain)[0]
    usable = (full.abs() > 0.05) & (plain[0] > 0.01) & (plain[0] < 0.99)  # away from 0 and the [0, 1] clamp
    ratio = torch.where(usable, moved / torch.where(usable, full, 1), float("nan"))
    profile = ratio.permute(2, 0, 1).reshape(64, -1).nanmean(dim=1)  # per column
    expected = _gaussian_step(torch.arange(64.0), 31.5, 4.0)  # sigma = feather / 2
    # measured max deviation from the continuous Gaussian step 0.0013 (the kernel is sampled); bar 0.01 (x8).
    # A feather twice as wide (sigma = feather) deviates by 0.16.
    assert (profile - expected).abs().max() < 0.01
    hard = fuse(pipe, lr, reference, PIL.Image.fromarray(mask), feather=0.0, num_inference_steps=1,
                latents=latents, output_type="pt").images
    torch.testing.assert_close(hard[..., :32], reference[..., :32], atol=1e-6, rtol=0)
    torch.testing.assert_close(hard[..., 32:], plain[..., 32:], atol=1e-6, rtol=0)


def test_fusion_brings_the_reference_to_the_next_steps_noise_level():
    from sradm_diffusers.extras.fusion import ContentFusion

    pipe = _ddim_tiny()
    pipe.scheduler.set_timesteps(5)
    reference = torch.rand(1, 3, 16, 16) * 2 - 1
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., :, :8] = 1
    latents = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    for step, t in enumerate(pipe.scheduler.timesteps):
        fusion = ContentFusion(reference, mask, torch.Generator().manual_seed(step))
        out = fusion(pipe, step, t, {"latents": latents})["latents"]
        if step + 1 < 5:
            abar = pipe.scheduler.alphas_cumprod[int(pipe.scheduler.timesteps[step + 1])]
            noise = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(step))
            target = abar.sqrt() * reference + (1 - abar).sqrt() * noise
        else:  # after the last step: the clean reference
            target = reference
        torch.testing.assert_close(out[..., :8], target[..., :8], atol=1e-6, rtol=0)
        torch.testing.assert_close(out[..., 8:], latents[..., 8:], atol=0, rtol=0)


# ---------------------------------------------------------------------------------------------------------------
# Tiled sampling under model CPU offload: every module runs inside its component's hook
# ---------------------------------------------------------------------------------------------------------------


def test_tiled_sampling_under_model_offload_runs_every_module_inside_its_hook(lr_image):
    pytest.importorskip("accelerate")
    from test_offload import _latents, _normalized, _pipe, _record_calls, _wrap

    pipe = _pipe()
    pipe.enable_tiling(tile_size=16, tile_overlap=4)
    latents = _latents((1, 3, 116, 148))
    expected = pipe(lr_image, num_inference_steps=2, latents=latents, output_type="pt").images
    pipe.enable_model_cpu_offload(device="cpu")
    timeline = []
    for component in ("lr_encoder", "unet"):
        _wrap(getattr(pipe, component)._hf_hook, timeline, component)
    _record_calls(pipe, timeline)
    unet_calls = []
    pipe.unet.register_forward_pre_hook(lambda module, args: unet_calls.append(tuple(args[0].shape[-2:])))
    out = pipe(lr_image, num_inference_steps=2, latents=latents, output_type="pt").images
    torch.testing.assert_close(out, expected, atol=0, rtol=0)  # same path, same order of operations

    assert len(unet_calls) > 2 and all(h <= 64 and w <= 64 for h, w in unet_calls)  # tiles, 2 steps
    active, seen = None, set()
    for event, item in timeline:
        if event == "enter":
            active = item
        elif event == "exit":
            active = None
        else:
            component, name, device = item
            assert active == component, f"{component}.{name} ran outside {component}'s offload hook"
            assert device == _normalized(pipe._execution_device)
            seen.add((component, name))
    assert ("unet", "cond_proj") in seen and any(c == "lr_encoder" for c, _ in seen)
    entered = [item for event, item in timeline if event == "enter"]
    assert entered[0] == "lr_encoder" and entered.count("unet") == len(unet_calls)


# ---------------------------------------------------------------------------------------------------------------
# The command line's feature outputs: their content, not only their size
# ---------------------------------------------------------------------------------------------------------------


def _png(path, height, width, seed=0, low=40, high=216):
    rng = np.random.default_rng(seed)
    PIL.Image.fromarray(rng.integers(low, high, (height, width, 3), dtype=np.uint8)).save(path)
    return path


def _rgb(path):
    with PIL.Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float64)


def _cli_pipe(model_dir):
    from sradm_diffusers import SRADMPipeline

    pipe = SRADMPipeline.from_pretrained(model_dir)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_cli_uncertainty_map_shows_the_samples_spread(tmp_path, model_dir):
    from sradm_diffusers.extras.uncertainty import colourize

    source = _png(tmp_path / "a.png", 8, 10)
    assert main(["upscale", str(source), "--samples", "3", "--uncertainty", "--seed", "0", "--steps", "2",
                 "--model", model_dir]) == 0
    samples = np.stack([_rgb(tmp_path / f"a_x4_{k}.png") for k in range(3)])
    std = samples.std(axis=0).mean(axis=-1)  # population std per pixel, channel-averaged, 0..255 scale
    vmax = max(float(np.percentile(std, 99)), 1.0)
    expected = colourize(std, vmax).astype(np.float64)
    written = _rgb(tmp_path / "a_x4_std.png")[:32]
    # The command maps the float samples' std, this test the written 8-bit ones: measured mean difference 0 here;
    # bar 1 (of 0..255) for samples that round differently elsewhere. A map of one sample differs by 41.
    assert np.abs(written - expected).mean() < 1.0
    assert np.corrcoef(written.mean(axis=-1).ravel(), expected.mean(axis=-1).ravel())[0, 1] > 0.9


def test_cli_interpolate_writes_the_api_frames(tmp_path, model_dir):
    from sradm_diffusers.extras.interpolation import interpolate

    source = _png(tmp_path / "a.png", 8, 10)
    args = ["interpolate", str(source), "--frames", "4", "--steps", "2", "--seeds", "4", "9", "--model", model_dir]
    assert main([*args, "-o", str(tmp_path / "strip.png")]) == 0
    assert main([*args, "-o", str(tmp_path / "path.gif")]) == 0
    frames = interpolate(_cli_pipe(model_dir), PIL.Image.open(source).convert("RGB"), num_frames=4,
                         generator_a=torch.Generator().manual_seed(4), generator_b=torch.Generator().manual_seed(9),
                         num_inference_steps=2, lr_consistency=True)
    expected = np.concatenate([np.asarray(f, dtype=np.float64) for f in frames], axis=1)
    strip = _rgb(tmp_path / "strip.png")
    assert strip.shape == expected.shape == (32, 160, 3)
    assert np.abs(strip - expected).max() <= 1  # same computation, rounding to 8 bits
    with PIL.Image.open(tmp_path / "path.gif") as gif:
        assert gif.n_frames == 6
        played = []
        for k in range(6):
            gif.seek(k)
            played.append(np.asarray(gif.convert("RGB"), dtype=np.float64))
    # There and back: frames 0, 1, 2, 3, 2, 1. GIF's 256-colour palette is lossy on these noisy random-weight
    # images (with 3 frames a played frame was 10-11 levels from its own on average, 27-45 from the others), so each
    # must be nearest its own frame.
    distance = np.array([[np.abs(frame - expected[:, 40 * j : 40 * (j + 1)]).mean() for j in range(4)]
                         for frame in played])
    assert distance.argmin(axis=1).tolist() == [0, 1, 2, 3, 2, 1]
    assert np.abs(played[4] - played[2]).max() == 0 and np.abs(played[5] - played[1]).max() == 0


def test_cli_fuse_writes_the_api_result(tmp_path, model_dir):
    from sradm_diffusers.extras.fusion import fuse

    source = _png(tmp_path / "a.png", 8, 10)
    reference = _png(tmp_path / "ref.png", 32, 40, seed=1)
    mask = np.zeros((32, 40), np.uint8)
    mask[:, :20] = 255
    PIL.Image.fromarray(mask).save(tmp_path / "mask.png")
    assert main(["fuse", str(source), "--reference", str(reference), "--mask", str(tmp_path / "mask.png"),
                 "--steps", "2", "--seed", "3", "--feather", "6", "--scheduler", "ddim", "--model", model_dir,
                 "-o", str(tmp_path / "out.png")]) == 0
    pipe = _cli_pipe(model_dir)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")  # as --scheduler
    expected = fuse(pipe, PIL.Image.open(source).convert("RGB"),
                    PIL.Image.open(reference).convert("RGB"), PIL.Image.fromarray(mask), feather=6.0,
                    generator=torch.Generator().manual_seed(3), num_inference_steps=2, lr_consistency=True).images[0]
    assert np.abs(_rgb(tmp_path / "out.png") - np.asarray(expected, dtype=np.float64)).max() <= 1


# ---------------------------------------------------------------------------------------------------------------
# What the README promises, as literals
# ---------------------------------------------------------------------------------------------------------------


def test_cli_default_is_unipc_11_steps_strength_082_and_9_unet_calls(tmp_path, model_dir, monkeypatch):
    """README "Few-step sampling": UniPC on an 11-step grid from strength 0.82: 9 U-Net calls."""
    from sradm_diffusers import SRADMPipeline
    from sradm_diffusers.models import SRADMUNet

    calls, unet_calls = [], []
    original_call, original_forward = SRADMPipeline.__call__, SRADMUNet.forward

    def spy(self, *args, **kwargs):
        calls.append((type(self.scheduler).__name__, kwargs["num_inference_steps"], kwargs["strength"]))
        return original_call(self, *args, **kwargs)

    def counted(self, *args, **kwargs):
        unet_calls.append(1)
        return original_forward(self, *args, **kwargs)

    monkeypatch.setattr(SRADMPipeline, "__call__", spy)
    monkeypatch.setattr(SRADMUNet, "forward", counted)
    source = _png(tmp_path / "a.png", 8, 10)
    assert main(["upscale", str(source), "--seed", "0", "--model", model_dir, "-o", str(tmp_path / "o.png")]) == 0
    assert calls == [("UniPCMultistepScheduler", 11, 0.82)]
    assert len(unet_calls) == 9


def test_sigint_exits_130_and_leaves_no_output(tmp_path, model_dir):
    import os
    import subprocess
    import sys

    source = _png(tmp_path / "a.png", 8, 10)
    script = (
        "import os, signal, sys, time\n"
        "from sradm_diffusers import SRADMPipeline\n"
        "from sradm_diffusers.commands.cli import main\n"
        "def interrupted(self, *args, **kwargs):\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(30)\n"
        "SRADMPipeline.__call__ = interrupted\n"
        # Python turns SIGINT into KeyboardInterrupt only where SIGINT is not ignored; a test run started in the
        # background of a shell ignores it, as a terminal's foreground job would not.
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, "upscale", str(source), "-o", str(tmp_path / "out") + os.sep, "--steps",
         "1", "--model", model_dir], capture_output=True, text=True, timeout=120,
        env=dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1"),
    )
    assert result.returncode == 130, result.stderr[-2000:]
    assert "interrupted" in result.stderr
    # -o DIR is created by the first write: interrupted before it, nothing exists, not even a temporary file
    assert not (tmp_path / "out").exists()


def test_progress_is_at_most_one_line_per_10_seconds(monkeypatch, capsys):
    from sradm_diffusers.commands import runtime

    clock = [100.0]
    monkeypatch.setattr(runtime.time, "monotonic", lambda: clock[0])
    reporter = runtime.StepReporter()
    reporter.start("image 1/1", 40)
    printed_at = []
    for step in range(40):  # a step every 3 s
        clock[0] += 3.0
        reporter(None, step, None, {})
        line = capsys.readouterr().err
        if line:
            assert line == f"sradm upscale: image 1/1: step {step + 1}/40\n"
            printed_at.append(clock[0])
    gaps = np.diff([100.0, *printed_at])
    assert len(printed_at) == 10 and gaps.min() >= 10 and gaps.max() < 13  # 12 s: four 3-s steps


# ---------------------------------------------------------------------------------------------------------------
# Training's final export: one that was complete when the run died is finished by the next run, not discarded
# ---------------------------------------------------------------------------------------------------------------


def test_a_complete_export_killed_mid_swap_is_finished_by_the_next_run(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    from training import train_utils as tu

    out = tmp_path / "model"
    out.mkdir()
    for name in ("model_index.json", "a.bin", "b.bin", "c.bin"):
        (out / name).write_text(f"old {name}")
    new = {name: f"new {name}" for name in ("model_index.json", "a.bin", "b.bin", "c.bin", "d.bin")}
    script = (
        "import sys\n"
        f"sys.path.insert(0, {str(root)!r})\n"
        "import json, os\n"
        "from training import train_utils as tu\n"
        "new = json.loads(sys.argv[2])\n"
        "def write(folder):\n"
        "    for name, text in new.items():\n"
        "        open(os.path.join(folder, name), 'w').write(text)\n"
        "tu.export_atomic(sys.argv[1], write)\n"
    )
    import json

    # SIGKILL after the first entry was swapped in: old and new files side by side, the key file moved out
    result = subprocess.run([sys.executable, "-c", script, str(out), json.dumps(new)], capture_output=True,
                            env=dict(os.environ, **{tu.KILL_ENV: "export-swap"}), timeout=60)
    assert result.returncode == -9
    assert not (out / "model_index.json").exists()  # mid-swap: the folder does not load
    assert tu.recover_export(str(out)) == "finished the interrupted final export"
    assert {p.name: p.read_text() for p in out.iterdir()} == new  # every new file, nothing old, nothing hidden


# ---------------------------------------------------------------------------------------------------------------
# accelerate launch: each process does its own share, recorded by the processes themselves
# ---------------------------------------------------------------------------------------------------------------

RECORDING_LAUNCHER = """
import json, os, sys
from sradm_diffusers import SRADMPipeline
from sradm_diffusers.commands.cli import main

original = SRADMPipeline.__call__

def recorded(self, image, *args, **kwargs):
    with open(os.path.join(os.environ["RECORD_DIR"], f"rank{os.environ['RANK']}.jsonl"), "a") as log:
        log.write(json.dumps([image.width, image.height, kwargs.get("num_images_per_prompt", 1)]) + "\\n")
    return original(self, image, *args, **kwargs)

SRADMPipeline.__call__ = recorded
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("sizes, shares", [
    ([(10, 8), (11, 9), (8, 10), (12, 8)], (2, 2)),  # LR width x height, one per photo, in file-name order
    ([(10, 8)], (1, 0)),  # more processes than images: the second one has nothing to do
])
def test_accelerate_launch_splits_the_images_evenly_and_each_process_samples_only_its_share(
    tmp_path, model_dir, sizes, shares
):
    pytest.importorskip("accelerate")
    import json
    import os
    import socket
    import subprocess
    import sys

    photos = tmp_path / "photos"
    photos.mkdir()
    for k, (w, h) in enumerate(sizes):
        _png(photos / f"img{k}.png", h, w, seed=k)
    launcher = tmp_path / "launcher.py"
    launcher.write_text(RECORDING_LAUNCHER)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
           str(port), str(launcher), "upscale", str(photos), "-o", str(tmp_path / "out") + os.sep, "--steps", "1",
           "--scheduler", "ddim", "--samples", "2", "--seed", "0", "--model", model_dir]
    env = dict(os.environ, HF_HUB_OFFLINE="1", ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1",
               RECORD_DIR=str(tmp_path))
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    done = {}
    for rank in (0, 1):
        log = tmp_path / f"rank{rank}.jsonl"
        lines = log.read_text().splitlines() if log.exists() else []
        done[rank] = [tuple(json.loads(line)[:2]) for line in lines]
        assert all(json.loads(line)[2] == 2 for line in lines)  # both samples of an image in one call
    # contiguous shares in order, as even as the count allows (accelerate's split_between_processes)
    assert done == {0: sizes[: shares[0]], 1: sizes[shares[0] :]}
    assert len(os.listdir(tmp_path / "out")) == 2 * len(sizes)


# ---------------------------------------------------------------------------------------------------------------
# Code shipped for trust_remote_code: the non-default paths too (tiling, LR consistency, strength < 1)
# ---------------------------------------------------------------------------------------------------------------

REMOTE_PATHS_SCRIPT = """
import json, sys
import numpy as np
import torch
from diffusers import DiffusionPipeline

torch.set_num_threads(1)
args = json.loads(sys.argv[1])
pipe = DiffusionPipeline.from_pretrained(args["folder"], trust_remote_code=True)
pipe.set_progress_bar_config(disable=True)
image = np.load(args["image"])
for name, options in args["variants"].items():
    tile = options.pop("tile", None)
    if tile:
        pipe.enable_tiling(*tile)
    out = pipe(image, num_inference_steps=4, generator=torch.Generator().manual_seed(0), output_type="pt",
               **options).images
    pipe.disable_tiling()
    torch.save(out, f"{args['out']}/{name}.pt")
print("MODULES" + json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "sradm_diffusers")))
"""

REMOTE_VARIANTS = {
    "tiled": {"tile": [8, 2]},
    "lr_consistency": {"lr_consistency": True},
    "strength": {"strength": 0.5},
    "all": {"tile": [8, 2], "lr_consistency": True, "strength": 0.5},
}


def test_shipped_code_runs_tiling_lr_consistency_and_strength_like_the_package(tiny_pipe, lr_image, tmp_path):
    import copy
    import json
    import os
    import subprocess
    import sys

    from test_hub import CROSS_PATH_ATOL
    from test_remote_code import HIDE_PACKAGE

    folder = tmp_path / "saved"
    tiny_pipe.save_pretrained(folder)
    np.save(tmp_path / "image.npy", lr_image)
    (tmp_path / "out").mkdir()
    args = {"folder": str(folder), "image": str(tmp_path / "image.npy"), "out": str(tmp_path / "out"),
            "variants": REMOTE_VARIANTS}
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", HIDE_PACKAGE + REMOTE_PATHS_SCRIPT, json.dumps(args)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    assert json.loads(result.stdout.split("MODULES", 1)[1]) == []
    for name, options in copy.deepcopy(REMOTE_VARIANTS).items():
        tile = options.pop("tile", None)
        if tile:
            tiny_pipe.enable_tiling(*tile)
        expected = tiny_pipe(lr_image, num_inference_steps=4, generator=torch.Generator().manual_seed(0),
                             output_type="pt", **options).images
        tiny_pipe.disable_tiling()
        torch.testing.assert_close(torch.load(tmp_path / "out" / f"{name}.pt"), expected, atol=CROSS_PATH_ATOL,
                                   rtol=0, msg=name)
