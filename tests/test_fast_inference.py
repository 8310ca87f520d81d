"""The U-Net's inference path (channels_last, in-place activations) against its reference path.

Under ``torch.no_grad()`` SRADMUNet, its residual blocks and WindowAttention take the fast path; with autograd on
they run the original out-of-place code in the caller's layout, which is what these tests use as the reference.
The two differ only in the last bits: oneDNN picks different convolution kernels for the two memory layouts, so
they are compared with the project's cross-path tolerance of 1e-4.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sradm_diffusers import DEMO_MODEL, SRADMPipeline, SRADMUNet
from sradm_diffusers.models import SRADMUNetOutput, WindowAttention

CROSS_PATH_ATOL = 1e-4


@pytest.fixture(scope="module")
def demo_pipe():
    pipe = SRADMPipeline.from_pretrained(DEMO_MODEL)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def reference_unet():
    """A copy of the demo U-Net only ever run with autograd on, so its weights keep their contiguous layout."""
    return SRADMUNet.from_pretrained(f"{DEMO_MODEL}/unet")


def reference_call(unet, *args, **kwargs):
    """The U-Net's reference path: autograd on selects the original out-of-place, caller's-layout code."""
    with torch.enable_grad():
        return unet(*args, **kwargs).sample.detach()


def demo_inputs(unet, height: int, width: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    scale = unet.config.upscale_factor
    sample = torch.randn(1, 3, height, width, generator=generator)
    features = torch.randn(1, unet.config.cond_channels, height // scale, width // scale, generator=generator)
    with torch.no_grad():
        cond = unet.condition(features)
    return sample, cond


def test_unet_fast_path_matches_reference(demo_pipe, reference_unet):
    unet = demo_pipe.unet
    # 36x44: the attention level sees 9x11, not a multiple of the 8-pixel window, so the key mask is exercised.
    sample, cond = demo_inputs(unet, 36, 44)
    with torch.no_grad():
        fast = unet(sample, 37, cond).sample
    reference = reference_call(reference_unet, sample.contiguous(), 37, cond.contiguous())
    assert unet.conv_in[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert reference_unet.conv_in[0].weight.is_contiguous()
    assert fast.shape == reference.shape == (1, 3, 36, 44)
    assert fast.is_contiguous()
    assert reference.abs().max() > 0.1  # a real prediction, not a degenerate all-zero output
    torch.testing.assert_close(fast, reference, rtol=0, atol=CROSS_PATH_ATOL)


def test_unet_accepts_either_layout(demo_pipe, reference_unet):
    unet = demo_pipe.unet
    sample, cond = demo_inputs(unet, 32, 40, seed=1)
    with torch.no_grad():
        from_contiguous = unet(sample.contiguous(), 10, cond.contiguous()).sample
        from_channels_last = unet(
            sample.to(memory_format=torch.channels_last), 10, cond.to(memory_format=torch.channels_last)
        ).sample
    # The fast path converts both to channels_last first, so this is the same computation twice: bit-exact.
    assert torch.equal(from_contiguous, from_channels_last)
    reference = reference_call(reference_unet, sample.to(memory_format=torch.channels_last), 10, cond)
    torch.testing.assert_close(from_contiguous, reference, rtol=0, atol=CROSS_PATH_ATOL)


def test_window_attention_fast_path_matches_reference():
    torch.manual_seed(0)
    attention = WindowAttention(channels=16, window_size=4, head_dim=8)
    torch.nn.init.normal_(attention.to_out.weight, std=0.2)  # it starts as an identity block; make it act
    x = torch.randn(2, 16, 7, 10)  # padded on both sides, batch of 2: the cached mask is tiled per image
    with torch.no_grad():
        fast = attention(x.to(memory_format=torch.channels_last))
        fast_again = attention(x)
    with torch.enable_grad():
        reference = attention(x).detach()
    assert (reference - x).abs().max() > 0.05
    torch.testing.assert_close(fast, reference, rtol=0, atol=1e-5)
    torch.testing.assert_close(fast_again, reference, rtol=0, atol=1e-5)


def test_pipeline_fast_path_matches_reference(demo_pipe, reference_unet, monkeypatch):
    image = np.random.default_rng(3).integers(0, 256, (13, 11, 3), dtype=np.uint8)  # odd sizes: padded to 4
    latents = torch.randn(1, 3, 52, 44, generator=torch.Generator().manual_seed(4))

    def run():
        return demo_pipe(image, num_inference_steps=3, latents=latents, output_type="pt",
                         generator=torch.Generator().manual_seed(5)).images

    fast = run()
    monkeypatch.setattr(demo_pipe.unet, "forward", lambda *args, **kw: _reference_forward(reference_unet, *args, **kw))
    reference = run()
    assert fast.shape == reference.shape == (1, 3, 52, 44)
    torch.testing.assert_close(fast, reference, rtol=0, atol=CROSS_PATH_ATOL)


def _reference_forward(unet, sample, timestep, cond=None, return_dict=True, **conditioning):
    # The pipeline passes lr_features (conditioned inside forward); the reference conditions them with grad on.
    cond = None if cond is None else cond.contiguous()
    eps = reference_call(unet, sample.contiguous(), timestep, cond, **conditioning)
    return SRADMUNetOutput(sample=eps) if return_dict else (eps,)


def test_bf16_unet_is_finite_and_close_to_fp32(demo_pipe):
    unet = demo_pipe.unet
    sample, cond = demo_inputs(unet, 64, 64, seed=2)
    bf16 = SRADMUNet.from_pretrained(f"{DEMO_MODEL}/unet", torch_dtype=torch.bfloat16)
    with torch.no_grad():
        fp32 = unet(sample, 60, cond).sample
        low = bf16(sample.bfloat16(), 60, cond.bfloat16()).sample.float()
    assert torch.isfinite(low).all()
    # bfloat16 keeps 8 significant bits (relative rounding 2^-9 per op) through ~40 layers: the noise prediction
    # (unit scale, mean |eps| ~0.85 here) was off by 0.004 on average and 0.03 at most when this was written;
    # the bounds are five times that, loose enough for other CPUs' kernels.
    error = (low - fp32).abs()
    assert error.mean() < 0.02, error.mean()
    assert error.max() < 0.15, error.max()
