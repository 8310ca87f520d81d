import torch

from sradm_diffusers import imresize
from sradm_diffusers.metrics.colour import colour_shift


def test_colour_shift_measures_a_tint_and_ignores_high_frequency_detail():
    g = torch.Generator().manual_seed(0)
    lr = torch.rand((2, 3, 8, 10), generator=g) * 0.6 + 0.2
    up = imresize(lr, 4).clamp(0, 1)
    tint = torch.tensor([6.0, 0.0, -3.0]).view(1, 3, 1, 1) / 255
    shifts = colour_shift(up + tint, lr, 4)
    torch.testing.assert_close(shifts["global"], torch.tensor([[6.0, 0.0, -3.0]] * 2), atol=1e-3, rtol=0)
    checker = ((torch.arange(32)[:, None] + torch.arange(40)[None]) % 2).float() * 0.1 - 0.05  # Nyquist detail
    detail = colour_shift(up + checker, lr, 4)
    torch.testing.assert_close(shifts["local"], torch.tensor([3.0, 3.0]), atol=1e-3, rtol=0)  # (6 + 0 + 3) / 3
    assert detail["global"].abs().max() < 0.01 and detail["local"].max() < 0.1 * shifts["local"].max()
