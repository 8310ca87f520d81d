"""The pipeline and ``sradm upscale`` on a CUDA GPU: dtypes against the CPU result, offload, tiling.

Marked ``gpu``; skipped, with the reason, where torch sees no CUDA device. The README's ``python -m pytest -q``
runs them. Tolerances: issue 19's by-hand run on an H200 (torch 2.11, cu130) gave mean |cuda - cpu| 0.0002 in fp32
after 10 DDIM steps and 65 dB between tiled and whole on cuda; these tests were written without a GPU, so each bar
keeps a wide margin over those values and says which.
"""

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import DDIMScheduler

from sradm_diffusers import DEMO_MODEL, SAMPLE_IMAGE, SRADMPipeline, imresize

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)"),
]

STEPS = 10


@pytest.fixture(scope="module")
def photo():
    return PIL.Image.open(SAMPLE_IMAGE).convert("RGB").crop((32, 32, 96, 80))  # 64 x 48 LR pixels


def _pipe(dtype=torch.float32):
    pipe = SRADMPipeline.from_pretrained(DEMO_MODEL, **({} if dtype == torch.float32 else {"torch_dtype": dtype}))
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _sample(pipe, photo, **kwargs):
    return pipe(photo, num_inference_steps=STEPS, generator=torch.Generator().manual_seed(0), output_type="np",
                **kwargs).images


@pytest.fixture(scope="module")
def cpu_result(photo):
    return _sample(_pipe(), photo)


def _residual(photo, reference):
    """Mean |SR - bicubic| of the CPU result: the size of what diffusion adds."""
    lr = torch.from_numpy(np.asarray(photo).copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
    bicubic = ((imresize(lr, 4).clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()
    return np.abs(reference - bicubic).mean()


def test_fp32_on_cuda_matches_the_cpu(photo, cpu_result):
    out = _sample(_pipe().to("cuda"), photo)
    # Measured 0.0002 on an H200 (issue 19): a 10x margin.
    assert out.shape == cpu_result.shape and np.abs(out - cpu_result).mean() < 0.002


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_half_precision_on_cuda_follows_the_cpu_fp32_result(photo, cpu_result, dtype):
    out = _sample(_pipe(dtype).to("cuda"), photo)
    assert np.isfinite(out).all()
    # As tests/test_conventions.py on the CPU (fp16 2 %, bf16 9 % of the residual, measured there): 25 % of the
    # residual tells rounding from a result that lost the residual (100 %) or followed other noise (75 %).
    assert np.abs(out - cpu_result).mean() < 0.25 * _residual(photo, cpu_result)


def _peak_mib(run) -> tuple[np.ndarray, float]:
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    out = run()
    torch.cuda.synchronize()
    return out, torch.cuda.max_memory_allocated() / 2**20


@pytest.mark.parametrize("offload", ["enable_model_cpu_offload", "enable_sequential_cpu_offload"])
def test_offload_keeps_weights_on_the_gpu_only_inside_their_hook(photo, offload):
    plain = _pipe().to("cuda")
    expected, plain_peak = _peak_mib(lambda: _sample(plain, photo))
    del plain
    pipe = _pipe()
    getattr(pipe, offload)()
    seen = {}

    def record(name):
        # A torch forward hook runs outside accelerate's wrapper of forward: with model offload the model is still
        # on the GPU here (it leaves when the next model comes in or the call ends), and the other one is not.
        def hook(module, args, output):
            seen[name] = {other: {p.device.type for p in getattr(pipe, other).parameters()}
                          for other in ("unet", "lr_encoder")}
        return hook

    for name in ("unet", "lr_encoder"):
        getattr(pipe, name).register_forward_hook(record(name))
    out, peak = _peak_mib(lambda: _sample(pipe, photo))
    assert np.abs(out - expected).max() < 1e-4  # issue 19 measured 0 (the same kernels on the same device)
    if offload == "enable_model_cpu_offload":
        assert seen["lr_encoder"]["lr_encoder"] == {"cuda"} and seen["unet"]["unet"] == {"cuda"}
        assert "cuda" not in seen["unet"]["lr_encoder"]  # the encoder left when the U-Net came in
    for name in ("unet", "lr_encoder"):  # and is off the GPU once the call is over
        assert "cuda" not in {p.device.type for p in getattr(pipe, name).parameters()}, name
    assert peak < plain_peak, (peak, plain_peak)


def test_tiling_on_cuda_matches_the_whole_image(photo):
    pipe = _pipe().to("cuda")
    whole = _sample(pipe, photo)
    pipe.enable_tiling(32, 8)
    tiled = _sample(pipe, photo)
    psnr = 10 * np.log10(1.0 / np.mean((tiled - whole) ** 2))
    # The same call on the CPU: 53.4 dB (tiles of 32 overlapping by 8, 10 DDIM steps); issue 19 saw 65 dB on an H200
    # in another setting. 45 dB leaves 8 dB for the device's rounding.
    assert psnr > 45, psnr


def test_cli_upscale_on_cuda(tmp_path, photo, cpu_result):
    from sradm_diffusers.commands.cli import main

    photo.save(tmp_path / "p.png")
    assert main(["upscale", str(tmp_path / "p.png"), "--device", "cuda", "--scheduler", "ddim", "--steps", str(STEPS),
                 "--seed", "0", "--no-lr-consistency", "-o", str(tmp_path / "out.png")]) == 0
    written = np.asarray(PIL.Image.open(tmp_path / "out.png"), dtype=np.float64) / 255
    assert written.shape == cpu_result.shape[1:]
    # The API's CPU result in 8 bits: rounding (half a level) plus the fp32 cuda/cpu difference above.
    assert np.abs(written - cpu_result[0]).mean() < 0.002 + 0.5 / 255
