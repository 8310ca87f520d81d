"""The CPU inference Mish (``models.activations.mish_``) against ATen's ``F.mish``."""

import pytest
import torch
import torch.nn.functional as F

from sradm_diffusers.models import activations
from sradm_diffusers.models.activations import mish_


def test_equals_aten_mish_over_the_whole_float32_range():
    torch.manual_seed(0)
    x = torch.cat([torch.randn(100_000) * 6, torch.linspace(-120, 120, 20_001)])
    x = torch.cat([x, torch.tensor([0.0, -0.0, 1e-30, -1e-30, 88.0, 89.0, 1e30, -1e30, 3.4e38, -3.4e38])])
    expected = F.mish(x.double()).float()
    out = mish_(x.clone())
    torch.testing.assert_close(out, expected, atol=2e-6, rtol=1e-6)
    # Large inputs are returned unchanged (the (1 + e^x)^2 overflow is harmless), very negative ones go to zero.
    assert out[-4] == x[-4] and out[-2] == x[-2]  # 1e30, 3.4e38
    assert out[-3] == 0 and out[-1] == 0  # -1e30, -3.4e38


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_works_in_place_in_every_layout(layout, monkeypatch):
    monkeypatch.setattr(activations, "SLICE_ELEMENTS", 1000)  # several slices and a short last one
    x = torch.randn(2, 5, 13, 17) * 4
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":
        x = torch.randn(2, 5, 13, 34)[..., ::2] * 4  # not one dense block: ATen's kernel, still in place
    expected = F.mish(x)
    data_ptr, strides = x.data_ptr(), x.stride()
    out = mish_(x)
    assert out is x and x.data_ptr() == data_ptr and x.stride() == strides
    torch.testing.assert_close(x, expected, atol=2e-6, rtol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_is_computed_in_float32(dtype):
    torch.manual_seed(1)
    x = (torch.randn(3, 8, 40, 40) * 5).to(dtype).contiguous(memory_format=torch.channels_last)
    # Rounded once from the float32 result: within half an ulp of the output's dtype of the exact value, plus the
    # float32 formula's absolute error (its cancellation for very negative x). Computed in bf16/fp16 arithmetic,
    # the cancellation would cost up to 2^-8 * |x|, 0.05 at x = -6.
    expected = F.mish(x.double())
    out = mish_(x.clone())
    assert out.dtype == dtype
    half_ulp = torch.finfo(dtype).eps * expected.abs() / 2
    assert ((out.double() - expected).abs() <= half_ulp + 2e-6).all()
