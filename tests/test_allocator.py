"""``memory.trim_heap_after_each_call``: the heap's freed pages leave the process after every U-Net call."""

import subprocess
import sys
import textwrap

import pytest
import torch

from sradm_diffusers.memory import _glibc

# In a fresh process: a module whose forward allocates 40 tensors of 8 MiB, each followed by a 256 KiB tensor that
# stays alive (as tiled sampling interleaves large activations with kept tensors), and frees the large ones.
# Prints how much of the 320 MiB is still resident after the call.
_SCRIPT = textwrap.dedent(
    """
    import os, sys, torch
    from sradm_diffusers.memory import trim_heap_after_each_call
    page = os.sysconf("SC_PAGE_SIZE")
    rss = lambda: int(open("/proc/self/statm").read().split()[1]) * page / 2**20
    kept = []

    class Fragmenting(torch.nn.Module):
        def forward(self):
            large = []
            for _ in range(40):
                large.append(torch.ones(2**21))
                kept.append(torch.ones(2**16))
            return torch.arange(3)

    module = Fragmenting()
    if sys.argv[1] == "trim":
        assert trim_heap_after_each_call(module)
    warm = torch.ones(2**21); del warm  # glibc raises its mmap threshold to a freed block's size
    before = rss()
    assert module().tolist() == [0, 1, 2]  # the hook leaves the output alone
    print(rss() - before)
    """
)


def _retained_mib(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", _SCRIPT, mode], check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(_glibc() is None, reason="malloc_trim is a glibc function")
def test_freed_heap_pages_are_returned_after_the_call_and_kept_without_the_hook():
    kept_by_default = _retained_mib("default")
    kept_with_trim = _retained_mib("trim")
    assert kept_by_default > 200, f"control: glibc kept only {kept_by_default:.0f} MiB of 320 without trimming"
    assert kept_with_trim < 32, f"{kept_with_trim:.0f} MiB of freed tensors still resident after trimming"


def test_the_command_line_pipeline_keeps_freed_memory_and_trims_only_while_tiling(monkeypatch, model_dir):
    from sradm_diffusers import memory, upscale

    kept, trims = [], []
    monkeypatch.setattr(upscale, "keep_freed_memory", lambda: kept.append(True) or True)

    class FakeLibc:
        def malloc_trim(self, pad):
            trims.append(pad)

    monkeypatch.setattr(memory, "_glibc", FakeLibc)
    monkeypatch.setattr(memory, "release_free_heap", lambda: None)  # the memory check's trim, before each call
    pipe = upscale.load_pipeline(str(model_dir))
    assert kept == [True]
    lr = torch.rand(1, 3, 16, 16)  # an image in [0, 1]
    run = lambda: pipe(lr, num_inference_steps=2, output_type="pt")  # noqa: E731
    run()
    assert trims == []  # untiled: nothing to trim, the pages are reused by the next step
    pipe.enable_tiling(tile_size=8, tile_overlap=2)
    run()
    tiles = len(pipe._tiles(torch.zeros(1, 3, 16, 16)))
    assert tiles > 1 and trims == [0] * (2 * tiles)  # after every tile of every step
