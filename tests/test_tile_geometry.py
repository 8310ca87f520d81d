"""Tile geometry against independent computations: the conditioning halo of any transposed convolution (measured by
autograd) and the exact tile layout of the documented rule (worked out by hand) (sampling.tiling)."""

import re
from types import SimpleNamespace

import pytest
import torch

from sradm_diffusers import SRADMUNet
from sradm_diffusers.sampling.tiling import (
    Tile,
    check_tile_arguments,
    condition_halo,
    map_lr_tiles,
    plan_tiles,
    unet_alignment,
)


def measured_condition_reach(conv: torch.nn.ConvTranspose2d, first: int, last: int) -> int:
    """LR pixels beyond rows ``first..last`` (LR) that the HR rows ``stride * first .. stride * (last + 1) - 1`` of
    ``conv``'s output read, on the far side: measured by autograd with positive weights."""
    stride = conv.stride[0]
    conv = conv.double()
    with torch.no_grad():
        conv.weight.copy_(torch.rand(conv.weight.shape, dtype=torch.float64) + 0.01)
    x = torch.rand(1, conv.in_channels, 24, 24, dtype=torch.float64, requires_grad=True)
    conv(x)[:, :, stride * first : stride * (last + 1), :].sum().backward()
    rows = torch.nonzero(x.grad.abs().sum(dim=(0, 1, 3))).flatten()
    return int(max(first - rows.min(), rows.max() - last))


@pytest.mark.parametrize(
    "kernel, stride, padding",
    [
        (8, 4, 2),  # the U-Net's own for x4: 2s, s, s // 2
        (16, 8, 4),  # and for x8
        (4, 4, 0),  # no overlap between the inputs' footprints
        (3, 1, 2),  # padding beyond the kernel's centre: the far side reaches further
        (7, 2, 0),  # odd kernel, no padding: the near side reaches further
        (12, 4, 1),
        (5, 2, 3),
    ],
)
def test_condition_halo_matches_the_measured_reach_of_any_transposed_conv(kernel, stride, padding):
    torch.manual_seed(0)
    conv = torch.nn.ConvTranspose2d(2, 3, kernel, stride=stride, padding=padding)
    unet = SimpleNamespace(cond_proj=conv)
    assert condition_halo(unet) == measured_condition_reach(conv, 10, 12)


@pytest.mark.parametrize(
    "attention_levels, mid_attention, scale, alignment",
    [
        ((True, False, False), True, 4, 16),  # only the middle attends at depth 2: windows of 4 * 2**2 HR pixels
        ((True, False, False), False, 4, 4),  # level 0 windows (4) and the size multiple (2**2)
        ((False, True, False), False, 4, 8),
        ((True, False, False), False, 6, 12),  # an x6 model: tile starts also fall on whole LR pixels
        ((False, False, False), False, 8, 8),  # no attention: the size multiple and the scale
    ],
)
def test_alignment_is_the_lcm_of_every_grid_a_tile_must_respect(attention_levels, mid_attention, scale, alignment):
    unet = SRADMUNet(base_channels=8, channel_mults=(1, 1, 1), attention_levels=attention_levels,
                     mid_attention=mid_attention, attention_window=4, attention_head_dim=8, cond_channels=4,
                     upscale_factor=scale)
    assert unet_alignment(unet, scale) == alignment


@pytest.mark.parametrize(
    "length, tile, overlap, align, starts",
    [
        (320, 128, 32, 32, [0, 96, 192]),  # 1 + ceil(192 / 96) tiles, stride ceil(192 / 2 / 32) * 32 = 96
        (128, 128, 32, 32, [0]),  # exactly one tile
        (129, 128, 32, 32, [0, 32]),  # one pixel more: a second tile, the stride rounded up to the grid
        (1000, 256, 64, 64, [0, 192, 384, 576, 768]),  # 1 + ceil(744 / 192) = 5, stride ceil(744 / 4 / 64) * 64
        (100, 40, 0, 8, [0, 32, 64]),  # no overlap asked: the aligned stride 40 gives 3 tiles, spread to 32
        (300, 128, 40, 32, [0, 64, 128, 192]),  # overlap 40 leaves 88 pixels, a stride of at most 64 on the grid
        (100, 64, 8, 32, [0, 32, 64]),  # the largest aligned stride is exactly one grid step
    ],
)
def test_tile_starts_follow_the_documented_rule(length, tile, overlap, align, starts):
    tiles = plan_tiles(length, 8, tile, overlap, align)
    assert [t.top for t in tiles] == starts
    assert [t.bottom for t in tiles] == [min(s + tile, length) for s in starts]
    assert {(t.left, t.right) for t in tiles} == {(0, 8)}


def test_tiles_are_listed_row_by_row():
    # Rows: 1 + ceil(72 / 96) = 2 tiles at stride 96; columns: 2 at stride ceil(22 / 32) * 32 = 32.
    assert plan_tiles(200, 150, 128, 32, 32) == [
        Tile(0, 128, 0, 128), Tile(0, 128, 32, 150), Tile(96, 200, 0, 128), Tile(96, 200, 32, 150),
    ]


def test_lr_tiles_are_read_once_each_with_their_halo():
    """``map_lr_tiles`` calls ``fn`` once per ``tile`` x ``tile`` LR tile, on the tile plus ``halo`` pixels (cut at
    the image edge), and pastes only the tile's own part of the ``scale``-times larger outputs."""
    rows, cols = torch.meshgrid(torch.arange(10.0), torch.arange(7.0), indexing="ij")
    coords = (100 * rows + cols)[None, None]  # each pixel holds its own position: windows say where they came from
    windows = []

    def fn(window):
        windows.append((int(window[0, 0, 0, 0]) // 100, int(window[0, 0, -1, -1]) // 100 + 1,
                        int(window[0, 0, 0, 0]) % 100, int(window[0, 0, -1, -1]) % 100 + 1))
        upsampled = window.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)
        return upsampled, -upsampled

    first, second = map_lr_tiles(fn, [coords], tile=4, halo=1, scale=2)
    # Tiles start at rows 0, 4, 8 and columns 0, 4; windows (y0, y1, x0, x1) grow by one pixel where there is room.
    assert windows == [(0, 5, 0, 5), (0, 5, 3, 7), (3, 9, 0, 5), (3, 9, 3, 7), (7, 10, 0, 5), (7, 10, 3, 7)]
    expected = coords.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)
    assert torch.equal(first, expected) and torch.equal(second, -expected)


@pytest.mark.parametrize("tile_size, tile_overlap", [(1, 0), (2, 0), (3, 1), (17, 8), (64, 0)])
def test_tile_arguments_at_their_documented_bounds_are_accepted(tile_size, tile_overlap):
    check_tile_arguments(tile_size, tile_overlap)  # tile_size >= 1 and 0 <= tile_overlap < tile_size / 2


def test_a_tile_size_below_one_is_rejected():
    with pytest.raises(ValueError, match="tile_size must be >= 1 LR pixel, got 0"):
        check_tile_arguments(0, 0)


@pytest.mark.parametrize("tile_size, tile_overlap", [(2, 1), (3, 2), (16, 8), (1, -1), (9, 5)])
def test_an_overlap_past_its_bounds_is_rejected_with_a_valid_suggestion(tile_size, tile_overlap):
    with pytest.raises(ValueError, match="less than half of tile_size") as error:
        check_tile_arguments(tile_size, tile_overlap)
    suggestion = re.search(r"e\.g\. tile_overlap=(\S+)\)", str(error.value)).group(1)
    # The value offered is the largest overlap under a quarter of the tile, written as an integer.
    assert suggestion == str(max(k for k in range(tile_size) if 4 * k < tile_size))
    check_tile_arguments(tile_size, int(suggestion))
