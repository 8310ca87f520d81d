"""extras.fusion's input rules at their edges: wide PIL modes, integer and bool tensors, the feather's type and
upper bound (mutants of these survived the fusion tests)."""

import numpy as np
import pytest
import torch
from PIL import Image

from sradm_diffusers.extras.fusion import check_feather, mask_tensor


def test_a_wide_pil_mask_is_refused_with_the_fix():
    mask = Image.fromarray(np.zeros((4, 5), np.int32), mode="I")
    with pytest.raises(ValueError) as error:
        mask_tensor(mask, 4, 5)
    assert str(error.value) == (
        "mask is a 'I'-mode (16/32-bit or float) image; save it as an 8-bit greyscale image "
        "(0 = keep the SR content, 255 = take the reference) or pass a float array in [0, 1]."
    )


def test_tensor_masks_follow_the_array_rules():
    u8 = torch.tensor([[0, 51, 255], [255, 0, 0]], dtype=torch.uint8)
    torch.testing.assert_close(mask_tensor(u8, 2, 3)[0, 0], torch.tensor([[0.0, 0.2, 1.0], [1.0, 0.0, 0.0]]))
    flags = torch.tensor([[False, True, True], [True, False, False]])
    torch.testing.assert_close(mask_tensor(flags, 2, 3)[0, 0], flags.float())
    with pytest.raises(ValueError, match="mask has dtype torch.int64; pass uint8"):
        mask_tensor(torch.tensor([[0, 1, 1], [1, 0, 0]]), 2, 3)
    with pytest.raises(ValueError, match="mask has dtype torch.int16; pass uint8"):
        mask_tensor(np.array([[0, 1, 1], [1, 0, 0]], np.int16), 2, 3)


def test_the_feather_is_a_number_up_to_the_larger_side():
    check_feather(12, 8, 12)  # exactly the larger side is allowed
    check_feather(0, 8, 12)
    with pytest.raises(ValueError, match="use 0..12"):
        check_feather(12.5, 8, 12)
    for bad in (True, False, "4", float("nan"), float("inf")):
        with pytest.raises(ValueError, match="feather must be a finite number of pixels"):
            check_feather(bad, 8, 12)
