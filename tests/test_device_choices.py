"""Choices the CLI makes from the device (issue 19): tiling from a CUDA GPU's free memory (mocked here), the memory
plan of a tiled call, and the advice for ``--dtype bf16`` by CPU kind."""

from types import SimpleNamespace

import pytest
import torch

import sradm_diffusers.sampling.memory as memory
from sradm_diffusers.cpu import bf16_advice, cpu_flags, native_bf16
from sradm_diffusers.defaults import AUTO_TILE_PIXELS, DEFAULT_TILE, choose_tiling
from sradm_diffusers.commands.runtime import ImageError, sample_batches

GIB = 2**30


@pytest.fixture
def free_gpu_memory(monkeypatch):
    """A CUDA device with ``free`` bytes free, as torch.cuda.mem_get_info would report it."""
    monkeypatch.delenv(memory.MEMORY_LIMIT_ENV, raising=False)
    state = {"free": 0, "asked": []}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)

    def mem_get_info(device=None):
        state["asked"].append(str(device))
        return state["free"], 141 * GIB

    monkeypatch.setattr(torch.cuda, "mem_get_info", mem_get_info)
    return state


def test_cuda_tiles_only_when_the_whole_image_does_not_fit_its_free_memory(free_gpu_memory):
    free_gpu_memory["free"] = 100 * GIB  # a large GPU: a 2040x1356 output (estimate 6 GiB) is sampled whole
    assert choose_tiling(510, 339, None, 16, torch.device("cuda"), untiled_bytes=6 * GIB) is None
    assert free_gpu_memory["asked"] == ["cuda"]
    free_gpu_memory["free"] = 4 * GIB  # a busy or small one: tiles
    assert choose_tiling(510, 339, None, 16, torch.device("cuda"), untiled_bytes=6 * GIB) == (DEFAULT_TILE, 16)
    # --tile N and --tile 0 are obeyed whatever the memory.
    assert choose_tiling(510, 339, 0, 16, torch.device("cuda"), untiled_bytes=6 * GIB) is None
    free_gpu_memory["free"] = 100 * GIB
    assert choose_tiling(510, 339, 64, 8, torch.device("cuda"), untiled_bytes=6 * GIB) == (64, 8)


def test_cuda_tiling_respects_the_memory_limit_variable(free_gpu_memory, monkeypatch):
    free_gpu_memory["free"] = 100 * GIB
    monkeypatch.setenv(memory.MEMORY_LIMIT_ENV, "2G")
    assert choose_tiling(510, 339, None, 16, "cuda", untiled_bytes=3 * GIB) == (DEFAULT_TILE, 16)


def test_the_cpu_keeps_its_pixel_policy(free_gpu_memory):
    free_gpu_memory["free"] = 100 * GIB  # irrelevant on the CPU
    side = int(AUTO_TILE_PIXELS**0.5)
    assert choose_tiling(side, side, None, 16, torch.device("cpu"), untiled_bytes=1) is None
    assert choose_tiling(side + 1, side, None, 16, torch.device("cpu"), untiled_bytes=1) == (DEFAULT_TILE, 16)
    assert free_gpu_memory["asked"] == []


def test_cli_samples_whole_on_a_gpu_with_room(tmp_path, model_dir, free_gpu_memory, monkeypatch, capsys):
    """``sradm upscale`` on a (mocked) roomy CUDA device: no tiling line for an input the CPU would tile."""
    import numpy as np
    from PIL import Image

    import sradm_diffusers.commands.upscale as upscale
    from sradm_diffusers.commands.cli import main
    from sradm_diffusers.pipeline import SRADMPipeline

    import sradm_diffusers.defaults as defaults

    monkeypatch.setattr(defaults, "AUTO_TILE_PIXELS", 100)  # the tiling policy (choose_tiling) reads these
    monkeypatch.setattr(defaults, "DEFAULT_TILE", 8)
    monkeypatch.setattr(upscale, "resolve_device", lambda name: torch.device("cuda"))
    monkeypatch.setattr(SRADMPipeline, "to", lambda self, *a, **k: self)  # stays on the CPU: no real GPU here
    monkeypatch.setattr(SRADMPipeline, "_execution_device", property(lambda self: torch.device("cpu")))
    free_gpu_memory["free"] = 100 * GIB
    Image.fromarray(np.full((12, 14, 3), 90, np.uint8)).save(tmp_path / "big.png")
    assert main(["upscale", str(tmp_path / "big.png"), "--model", model_dir, "--steps", "1", "--seed", "0",
                 "--tile-overlap", "2"]) == 0
    assert "tiles" not in capsys.readouterr().err
    # Room for 8-pixel tiles (32 HR pixels) but not for the whole 56x48 output: tiles, and says why with numbers.
    unet = SRADMPipeline.from_pretrained(model_dir).unet
    whole, tiled = (memory.estimate_sampling_bytes(unet, 1, h, w, (48, 56)) for h, w in ((48, 56), (32, 32)))
    assert tiled < whole
    free_gpu_memory["free"] = (whole + tiled) // 2
    assert main(["upscale", str(tmp_path / "big.png"), "--model", model_dir, "--steps", "1", "--seed", "0",
                 "--tile-overlap", "2"]) == 0
    err = capsys.readouterr().err
    assert "untiled" in err and "free on cuda" in err and "sampling in tiles of 8 px" in err


def test_a_tiled_call_counts_its_whole_image_tensors(tiny_pipe):
    unet = tiny_pipe.unet
    tile = memory.estimate_sampling_bytes(unet, 1, 512, 512)
    huge = (36000, 48000)  # the 4x output of a 12000x9000 photo
    estimate = memory.estimate_sampling_bytes(unet, 1, 512, 512, output_size=huge)
    # At least x_t, the bicubic upsample and the output: three float32 RGB images of that size (~20 GB each).
    assert estimate - tile >= 3 * 3 * 4 * huge[0] * huge[1]
    assert estimate - tile == pytest.approx(memory.WHOLE_IMAGE_BYTES_PER_PIXEL * huge[0] * huge[1], rel=1e-9)
    # Untiled (the output is what the U-Net sees) nothing is added: the fitted model covers the whole call.
    assert memory.estimate_sampling_bytes(unet, 1, 512, 512, output_size=(512, 512)) == tile


def test_a_12000x9000_input_is_refused_up_front_even_tiled(tiny_pipe, monkeypatch):
    monkeypatch.setenv(memory.MEMORY_LIMIT_ENV, "64G")
    tiny_pipe.enable_tiling(128, 16)
    with pytest.raises(ImageError) as caught:  # the CLI's check, from the size alone: nothing is allocated
        sample_batches(tiny_pipe, SimpleNamespace(width=12000, height=9000), 1, "cpu")
    message = str(caught.value)
    assert message.startswith("12000x9000 input: sampling 1 output(s) of 48000x36000 pixels in tiles of 512x512")
    assert "but only 64.0 GiB is available" in message and "a smaller input" in message
    assert "whole-image tensors" in message
    # A photo that fits is still sampled: 510x339 tiled needs far less than 64 GiB.
    assert sample_batches(tiny_pipe, SimpleNamespace(width=510, height=339), 1, "cpu") == [(0, 1)]


@pytest.mark.parametrize(
    "flags, native",
    [
        ({"avx2", "avx512f", "avx512_bf16"}, True),  # AMD Zen 4, Intel Cooper Lake
        ({"avx2", "avx512f", "amx_bf16", "amx_tile"}, True),  # Intel Sapphire Rapids
        ({"avx2", "fma"}, False),  # AMD Zen 2/3 (the EPYCs of issue 19), older Intel
        ({"avx2", "avx512f"}, False),  # AVX-512 without BF16 (Skylake-SP)
        ({"fp", "asimd", "bf16"}, True),  # arm64 with BF16 (Graviton 3)
        (set(), False),
    ],
)
def test_bf16_advice_by_cpu_kind(flags, native):
    assert native_bf16(frozenset(flags)) is native
    advice = bf16_advice(frozenset(flags))
    assert (advice is None) is native
    if advice:
        assert "--dtype fp32" in advice and "slower" in advice


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse avx512_bf16 avx2\n\n"
                    "processor\t: 1\nflags\t\t: fpu\n")
    assert cpu_flags.__wrapped__(str(info)) == frozenset({"fpu", "sse", "avx512_bf16", "avx2"})
    assert cpu_flags.__wrapped__(str(tmp_path / "missing")) == frozenset()
