"""``memory.return_large_blocks_to_os``: freed large tensors leave the process (the CLI's allocator setting)."""

import ctypes
import ctypes.util
import subprocess
import sys
import textwrap

import pytest

# In a fresh process: allocate 40 tensors of 8 MiB, each followed by a smaller tensor that stays alive (as a
# tiled sampling step interleaves large activations with small kept tensors), free the large ones, and print
# how much of the 320 MiB is still resident.
_SCRIPT = textwrap.dedent(
    """
    import os, sys, torch
    from sradm_diffusers.memory import return_large_blocks_to_os
    if sys.argv[1] == "set":
        assert return_large_blocks_to_os(4 * 2**20)
    page = os.sysconf("SC_PAGE_SIZE")
    rss = lambda: int(open("/proc/self/statm").read().split()[1]) * page / 2**20
    warm = torch.ones(2**21); del warm  # glibc raises its threshold to a freed mmapped block's size
    before = rss()
    large, small = [], []
    for _ in range(40):
        large.append(torch.ones(2**21))  # 8 MiB, written so that its pages are resident
        small.append(torch.ones(2**16))  # 256 KiB
    del large
    print(rss() - before)
    """
)


def _retained_mib(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", _SCRIPT, mode], check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt and /proc are Linux features")
def test_freed_large_tensors_are_returned_with_the_setting_and_kept_without():
    if ctypes.util.find_library("c") is None or not hasattr(ctypes.CDLL(ctypes.util.find_library("c")), "mallopt"):
        pytest.skip("the C library has no mallopt (not glibc)")
    kept_by_default = _retained_mib("default")
    kept_with_setting = _retained_mib("set")
    assert kept_by_default > 200, f"control: glibc's default kept only {kept_by_default:.0f} MiB of 320"
    assert kept_with_setting < 16, f"{kept_with_setting:.0f} MiB of freed tensors still resident"


def test_the_command_line_applies_the_setting(monkeypatch, capsys):
    from sradm_diffusers import cli, memory

    calls = []
    monkeypatch.setattr(memory, "return_large_blocks_to_os", lambda: calls.append(True) or True)
    assert cli.main(["upscale"]) == cli.EXIT_USAGE  # no input: refused after the setting was made
    assert calls == [True]
