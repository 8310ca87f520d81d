"""The memory guard's arithmetic at its boundaries: sizes, the budget, the refusal's message, samples per call
(found by mutation testing: a changed comparison or unit there failed no test)."""

import pytest

from sradm_diffusers import build_pipeline
from sradm_diffusers.sampling.memory import (
    MEMORY_LIMIT_ENV, SamplingMemoryError, available_bytes, check_sampling_memory, estimate_sampling_bytes,
    full_resolution_width, parse_size, samples_per_batch,
)

MIB = 2**20


@pytest.fixture(scope="module")
def unet():
    return build_pipeline("tiny", upscale_factor=4).unet


@pytest.mark.parametrize("text, size", [
    ("1000000", 1000000), ("8G", 8 * 2**30), ("512M", 512 * MIB), ("1.5T", int(1.5 * 2**40)), (" 2 k ", 2048),
    ("3KB", 3072), ("3KiB", 3072), ("7mib", 7 * MIB), (".5G", 2**29), ("12B", 12),
])
def test_sizes_parse_in_binary_units(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["lots", "", "8X", "-1G", "1.2.3M"])
def test_a_bad_size_names_the_variable_and_the_fix(text):
    with pytest.raises(ValueError) as error:
        parse_size(text)
    assert str(error.value) == f"SRADM_MEMORY_LIMIT={text!r} is not a size; use e.g. 8G, 512M or a number of bytes."


def test_the_budget_comes_from_the_variable_when_set(monkeypatch):
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "3M")
    assert available_bytes() == 3 * MIB and available_bytes("cpu") == 3 * MIB
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "")  # empty: unset, the machine's available memory
    with open("/proc/meminfo") as handle:
        total = next(int(line.split()[1]) * 1024 for line in handle if line.startswith("MemTotal:"))
    assert 0 < available_bytes() <= total


def test_the_estimate_grows_with_pixels_batch_and_width(unet):
    width = full_resolution_width(unet)
    assert width == unet.config.base_channels * unet.config.channel_mults[0]
    one = estimate_sampling_bytes(unet, 1, 64, 64)
    assert estimate_sampling_bytes(unet, 2, 64, 64) - one == one - estimate_sampling_bytes(unet, 0, 64, 64)
    assert estimate_sampling_bytes(unet, 1, 128, 64) - one == one - estimate_sampling_bytes(unet, 0, 64, 64)
    assert estimate_sampling_bytes(unet, 0, 64, 64) > 0  # the fixed overhead


def test_refusal_at_one_byte_short_with_the_fixes(unet, monkeypatch):
    needed = estimate_sampling_bytes(unet, 2, 96, 128)
    monkeypatch.setenv(MEMORY_LIMIT_ENV, str(needed))
    check_sampling_memory(unet, 2, 96, 128)  # exactly enough: no error
    monkeypatch.setenv(MEMORY_LIMIT_ENV, str(needed - 1))
    with pytest.raises(SamplingMemoryError) as error:
        check_sampling_memory(unet, 2, 96, 128)
    gib = lambda n: f"{n / 2**30:.1f} GiB"  # noqa: E731
    assert str(error.value) == (
        f"sampling 2 output(s) of 128x96 pixels needs about {gib(needed)} but only {gib(needed - 1)} is available; "
        "use a smaller input, --tile N (sample in N-pixel tiles)."
    )
    with pytest.raises(SamplingMemoryError) as error:
        check_sampling_memory(unet, 2, 96, 128, samples=2)
    assert str(error.value).endswith(
        "use a smaller input, --tile N (sample in N-pixel tiles), or fewer samples (--samples / num_images_per_prompt)."
    )


def test_samples_per_call_fill_half_the_budget(unet, monkeypatch):
    fixed = estimate_sampling_bytes(unet, 0, 64, 64)
    one = estimate_sampling_bytes(unet, 1, 64, 64) - fixed
    for fit in (1, 2, 3, 5):
        budget = 2 * (fixed + fit * one)  # half of it holds exactly `fit` samples
        monkeypatch.setenv(MEMORY_LIMIT_ENV, str(budget))
        assert samples_per_batch(unet, 64, 64, 8) == fit
        assert samples_per_batch(unet, 64, 64, fit - 1 or 1) == (fit - 1 or 1)  # never more than asked for
        monkeypatch.setenv(MEMORY_LIMIT_ENV, str(budget - 2))
        assert samples_per_batch(unet, 64, 64, 8) == max(fit - 1, 1)
    monkeypatch.setenv(MEMORY_LIMIT_ENV, str(fixed + one))  # one fits in all of it, not in half: still one
    assert samples_per_batch(unet, 64, 64, 8) == 1
    monkeypatch.setenv(MEMORY_LIMIT_ENV, str(fixed + one - 1))
    with pytest.raises(SamplingMemoryError, match="or fewer samples"):
        samples_per_batch(unet, 64, 64, 8)


def test_samples_per_call_count_the_whole_output_when_tiled(unet, monkeypatch):
    """Tiled (a 64 px tile of a 256 px output), each sample also holds the whole-image tensors: fewer fit, and the
    refusal comes where the tile alone would still fit."""
    fixed = estimate_sampling_bytes(unet, 0, 64, 64)
    one_tiled = estimate_sampling_bytes(unet, 1, 64, 64, (256, 256)) - fixed
    one_untiled = estimate_sampling_bytes(unet, 1, 64, 64) - fixed
    assert one_tiled > 2 * one_untiled
    monkeypatch.setenv(MEMORY_LIMIT_ENV, str(2 * (fixed + 3 * one_tiled)))
    assert samples_per_batch(unet, 64, 64, 8, output_size=(256, 256)) == 3
    assert samples_per_batch(unet, 64, 64, 8) == 8  # the same budget holds all 8 untiled 64 px samples
    monkeypatch.setenv(MEMORY_LIMIT_ENV, str(fixed + one_tiled - 1))
    assert samples_per_batch(unet, 64, 64, 1) == 1  # untiled, one sample fits
    with pytest.raises(SamplingMemoryError, match="in tiles of 64x64"):
        samples_per_batch(unet, 64, 64, 8, output_size=(256, 256))


class RecordingLibc:
    """Stands in for glibc: records ``mallopt`` and ``malloc_trim`` calls; ``mallopt`` answers ``accept``."""

    def __init__(self, accept: int = 1):
        self.calls, self.accept = [], accept

    def mallopt(self, param, value):
        self.calls.append(("mallopt", param, value))
        return self.accept

    def malloc_trim(self, pad):
        self.calls.append(("malloc_trim", pad))
        return 1


@pytest.mark.parametrize("accept", [1, 0])
def test_heap_policy_calls_glibc_with_malloc_h_parameters(monkeypatch, accept):
    """M_MMAP_THRESHOLD is -3 and M_TRIM_THRESHOLD -1 in malloc.h; malloc_trim(0) keeps no padding."""
    from sradm_diffusers.sampling import memory

    libc = RecordingLibc(accept)
    monkeypatch.setattr(memory, "_glibc", lambda: libc)
    assert memory.pin_mmap_threshold(12345) is bool(accept)
    assert libc.calls == [("mallopt", -3, 12345)]
    libc.calls.clear()
    assert memory.keep_freed_memory(2**20) is bool(accept)
    assert libc.calls == ([("mallopt", -3, 2**20), ("mallopt", -1, 2**31 - 1)] if accept else [("mallopt", -3, 2**20)])
    libc.calls.clear()
    memory.release_free_heap()
    assert libc.calls == [("malloc_trim", 0)]


def test_heap_policy_is_a_no_op_without_glibc(monkeypatch):
    from sradm_diffusers.sampling import memory

    monkeypatch.setattr(memory, "_glibc", lambda: None)
    assert memory.pin_mmap_threshold(2**20) is False
    assert memory.keep_freed_memory() is False
    memory.release_free_heap()  # nothing to call, no error


def test_trim_hooks_report_whether_they_were_installed(monkeypatch):
    """With glibc: True, and malloc_trim(0) runs before and after each forward (only while ``only_if`` says so);
    without it: False and no hook."""
    import torch

    from sradm_diffusers.sampling import memory

    libc = RecordingLibc()
    monkeypatch.setattr(memory, "_glibc", lambda: libc)
    module, tiled = torch.nn.Identity(), [True]
    assert memory.trim_heap_around_each_call(module, only_if=lambda: tiled[0]) is True
    module(torch.zeros(1))
    assert libc.calls == [("malloc_trim", 0), ("malloc_trim", 0)]
    tiled[0] = False
    module(torch.zeros(1))
    assert len(libc.calls) == 2
    monkeypatch.setattr(memory, "_glibc", lambda: None)
    bare = torch.nn.Identity()
    assert memory.trim_heap_around_each_call(bare) is False
    assert not bare._forward_pre_hooks and not bare._forward_hooks


def test_the_estimate_adds_the_whole_output_per_batch_item_only_when_tiled(unet):
    """340 B per output pixel and batch item on top of the tile's U-Net estimate; an "output" no larger than what
    the U-Net sees is not tiled and adds nothing. A 256x320 output tells height from width."""
    from sradm_diffusers.sampling.memory import WHOLE_IMAGE_BYTES_PER_PIXEL

    for batch in (1, 2):
        tiled = estimate_sampling_bytes(unet, batch, 64, 64, (256, 320))
        assert tiled - estimate_sampling_bytes(unet, batch, 64, 64) == WHOLE_IMAGE_BYTES_PER_PIXEL * batch * 256 * 320
    assert estimate_sampling_bytes(unet, 1, 64, 80, (64, 80)) == estimate_sampling_bytes(unet, 1, 64, 80)
    assert estimate_sampling_bytes(unet, 1, 64, 80, (80, 64)) == estimate_sampling_bytes(unet, 1, 64, 80)
    assert estimate_sampling_bytes(unet, 1, 64, 64, (64, 65)) > estimate_sampling_bytes(unet, 1, 64, 64)


def test_full_resolution_width_is_base_times_first_multiplier():
    from types import SimpleNamespace

    fake = SimpleNamespace(config=SimpleNamespace(base_channels=16, channel_mults=(3, 4)))
    assert full_resolution_width(fake) == 48


@pytest.mark.parametrize("batch", [1, 2])
def test_a_tiled_refusal_names_the_output_and_the_whole_image_memory(unet, monkeypatch, batch):
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "1M")
    with pytest.raises(SamplingMemoryError) as error:
        check_sampling_memory(unet, batch, 64, 64, output_size=(20000, 30000))
    whole_gib = 340 * batch * 20000 * 30000 / 2**30
    message = str(error.value)
    assert "30000x20000 pixels in tiles of 64x64" in message
    assert f"the whole-image tensors (x_t, the bicubic upsample, the output, ...) alone need {whole_gib:.1f} GiB" in message


class FakeMeminfo:
    """``open`` for the memory module: /proc/meminfo with a chosen MemAvailable (kB)."""

    def __init__(self, available_kb):
        self.text = f"MemTotal:       99999999 kB\nMemFree:          1 kB\nMemAvailable:   {available_kb} kB\n"

    def __call__(self, path, *args, **kwargs):
        import io

        assert path == "/proc/meminfo"
        return io.StringIO(self.text)


def test_the_cpu_budget_is_memavailable_in_bytes_and_cuda_asks_the_device(monkeypatch):
    import torch

    from sradm_diffusers.sampling import memory

    monkeypatch.delenv(MEMORY_LIMIT_ENV, raising=False)
    monkeypatch.setattr(memory, "_glibc", lambda: None)
    monkeypatch.setattr(memory, "open", FakeMeminfo(1000), raising=False)
    assert available_bytes() == available_bytes("cpu") == 1024000
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (123 * MIB, 456 * MIB))
    assert available_bytes("cuda") == 123 * MIB
    assert available_bytes("cpu") == 1024000  # a GPU in the machine does not change the CPU budget
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert available_bytes("cuda") == 1024000  # no usable GPU: the host's memory
