"""``memory.trim_heap_around_each_call``: the heap's freed pages leave the process before and after every U-Net
call."""

import subprocess
import sys
import textwrap

import pytest
import torch

from sradm_diffusers.sampling.memory import _glibc

# In a fresh process: 40 tensors of 8 MiB are allocated, each followed by a 256 KiB tensor that stays alive (as
# tiled sampling interleaves large activations with kept whole-image tensors), and the large ones are freed; then
# a module runs whose forward does the same. Prints how much of the 320 MiB is still resident when the forward
# starts, and after the call.
_SCRIPT = textwrap.dedent(
    """
    import os, sys, torch
    from sradm_diffusers.sampling.memory import trim_heap_around_each_call
    page = os.sysconf("SC_PAGE_SIZE")
    rss = lambda: int(open("/proc/self/statm").read().split()[1]) * page / 2**20
    kept = []

    def fragment():
        large = []
        for _ in range(40):
            large.append(torch.ones(2**21))
            kept.append(torch.ones(2**16))

    class Probe(torch.nn.Module):
        def forward(self, x):
            print(rss() - before)
            fragment()
            return x + 1

    module = Probe()
    if sys.argv[1] == "trim":
        assert trim_heap_around_each_call(module)
    warm = torch.ones(2**21); del warm  # glibc raises its mmap threshold to a freed block's size
    before = rss()
    fragment()
    assert module(torch.zeros(3)).tolist() == [1, 1, 1]  # the hooks leave inputs and output alone
    print(rss() - before - 10)  # less the 2 x 5 MiB of small tensors kept on purpose
    """
)


def _retained_mib(mode: str) -> tuple[float, float]:
    out = subprocess.run([sys.executable, "-c", _SCRIPT, mode], check=True, capture_output=True, text=True)
    before_call, after_call = map(float, out.stdout.strip().splitlines()[-2:])
    return before_call, after_call


@pytest.mark.skipif(_glibc() is None, reason="malloc_trim is a glibc function")
def test_freed_heap_pages_are_returned_before_and_after_the_call_and_kept_without_the_hooks():
    for moment, by_default, with_trim in zip(("before", "after"), _retained_mib("default"), _retained_mib("trim")):
        assert by_default > 200, f"control: glibc kept only {by_default:.0f} MiB of 320 {moment} the call untrimmed"
        assert with_trim < 32, f"{with_trim:.0f} MiB of freed tensors still resident {moment} the call"


def test_the_command_line_pipeline_keeps_freed_memory_and_trims_only_while_tiling(monkeypatch, model_dir):
    from sradm_diffusers.commands import runtime
    from sradm_diffusers.sampling import memory

    kept, trims = [], []
    monkeypatch.setattr(runtime, "keep_freed_memory", lambda: kept.append(True) or True)

    class FakeLibc:
        def malloc_trim(self, pad):
            trims.append(pad)

    monkeypatch.setattr(memory, "_glibc", FakeLibc)
    monkeypatch.setattr(memory, "release_free_heap", lambda: None)  # the memory check's trim, before each call
    pipe = runtime.load_pipeline(str(model_dir))
    assert kept == [True]
    lr = torch.rand(1, 3, 16, 16)  # an image in [0, 1]
    run = lambda: pipe(lr, num_inference_steps=2, output_type="pt")  # noqa: E731
    run()
    assert trims == []  # untiled: nothing to trim, the pages are reused by the next step
    pipe.enable_tiling(tile_size=8, tile_overlap=2)
    run()
    tiles = len(pipe.tile_plan(16, 16).tiles)
    assert tiles > 1 and trims == [0] * (2 * 2 * tiles)  # before and after every tile of every step
