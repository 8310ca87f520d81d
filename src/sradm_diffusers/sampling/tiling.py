"""Tiled noise prediction: one sampler trajectory for the whole image, the U-Net run on overlapping tiles.

At every denoising step the U-Net predicts the noise of each HR tile; the predictions are blended with smooth
weights that sum to one at every pixel (the MultiDiffusion / mixture-of-diffusers scheme), and the scheduler then
takes one step on the full image. Only the U-Net's activations are per tile, so peak memory is set by the tile
size, not by the image.

Conditioning does not depend on the tiling:

- The RRDB encoder runs once per image, in LR tiles, each with a halo equal to its receptive-field radius
  (:func:`encoder_halo`), so every feature equals the one computed on the whole image (up to kernel rounding).
  Features are kept at LR size: (B, cond_channels, h, w), e.g. 64 x 339 x 510 floats = 44 MB for the demo model.
- ``unet.condition`` (a transposed conv that brings features to HR size) is recomputed, inside the U-Net's
  forward, for each tile at each step from the tile's features plus a one-LR-pixel halo, instead of holding the
  HR-size conditioning of the whole image (base_channels x H x W floats: 354 MB for the demo model at 2040 x 1356).

Tiles start on the U-Net's alignment grid (:func:`unet_alignment`): a multiple of every window-attention grid
(``attention_window * 2**level`` HR pixels) and of the U-Net's size multiple, so each attention window of a tile
is exactly a window of the whole image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from diffusers import ModelMixin

# The models are typed as ModelMixin (SRADMUNet / RRDBEncoder): importing them here would copy both models into the
# shipped pipeline file, which needs only the sampling code (each model ships in its own component file).


@dataclass(frozen=True)
class Tile:
    """One HR tile ``[top:bottom, left:right]`` of the (padded) image; bounds in HR pixels."""

    top: int
    bottom: int
    left: int
    right: int


def encoder_halo(lr_encoder: ModelMixin) -> int:
    """Receptive-field radius, in LR pixels, of the encoder's conditioning features, counted from its layers.

    Every layer is a stride-1 convolution, so the radius is the sum of ``kernel_size // 2`` along the longest
    chain to the deepest selected feature map: ``conv_first``, each RRDB's dense blocks (each a chain of five
    convolutions, every one seeing the previous one's output) up to that block, and ``trunk_conv`` if the trunk
    output itself is selected (see ``RRDBEncoder.feature_stride``).
    """

    def radius(conv: torch.nn.Conv2d) -> int:
        return max(k // 2 for k in conv.kernel_size)

    num_blocks, stride = len(lr_encoder.blocks), lr_encoder.config.feature_stride
    deepest = (num_blocks + 1) // stride * stride - 1  # index into [block outputs..., trunk output]
    per_block = sum(radius(conv) for dense in lr_encoder.blocks[0].dense_blocks for conv in dense.convs)
    halo = radius(lr_encoder.conv_first) + per_block * min(deepest + 1, num_blocks)
    return halo + (radius(lr_encoder.trunk_conv) if deepest == num_blocks else 0)


def condition_halo(unet: ModelMixin) -> int:
    """LR pixels beyond an HR region's own that ``unet.condition`` reads, on either side (its transposed conv's
    reach): output y reads the inputs i with ``i * stride - padding <= y <= i * stride - padding + kernel - 1``."""
    conv = unet.cond_proj
    kernel, stride, padding = conv.kernel_size[0], conv.stride[0], conv.padding[0]
    before = (kernel - 1 - padding) // stride  # inputs left of the region's first LR pixel
    after = (padding - 1) // stride + 1  # inputs right of its last one
    return max(before, after)


def unet_alignment(unet: ModelMixin, upscale_factor: int) -> int:
    """HR grid (pixels) that tile starts snap to: a multiple of the U-Net's size multiple, of every attention
    level's window grid (``attention_window * 2**level``) and of the upscale factor."""
    config = unet.config
    grids = [unet.size_multiple, upscale_factor]
    depth = len(config.channel_mults) - 1
    grids += [config.attention_window * 2**level for level, on in enumerate(config.attention_levels) if on]
    if config.mid_attention:
        grids.append(config.attention_window * 2**depth)
    return math.lcm(*grids)


def check_tile_arguments(tile_size, tile_overlap) -> None:
    """Raise ``ValueError`` unless ``tile_size`` >= 1 and 0 <= ``tile_overlap`` < ``tile_size`` / 2 (integers)."""
    for name, value in (("tile_size", tile_size), ("tile_overlap", tile_overlap)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{name} must be an integer number of LR pixels, got {value!r}.")
    if tile_size < 1:
        raise ValueError(f"tile_size must be >= 1 LR pixel, got {tile_size}.")
    if tile_overlap < 0 or 2 * tile_overlap >= tile_size:
        raise ValueError(
            f"tile_overlap={tile_overlap} must be >= 0 and less than half of tile_size={tile_size} "
            f"(e.g. tile_overlap={max(0, (tile_size - 1) // 4)})."
        )


def _axis_starts(length: int, tile: int, overlap: int, align: int) -> list[int]:
    """Aligned tile starts along one axis: first 0, then evenly spaced, consecutive tiles overlapping >= overlap."""
    if length <= tile:
        return [0]
    max_stride = (tile - overlap) // align * align
    if max_stride < align:
        raise ValueError(
            f"tile of {tile} HR pixels with overlap {overlap} leaves no room for a stride of the model's "
            f"{align}-pixel alignment; use a larger tile_size or a smaller tile_overlap."
        )
    count = 1 + math.ceil((length - tile) / max_stride)
    stride = math.ceil((length - tile) / (count - 1) / align) * align
    return [k * stride for k in range(count)]


def plan_tiles(height: int, width: int, tile: int, overlap: int, align: int) -> list[Tile]:
    """Cover an HR canvas (height, width) with tiles of at most ``tile`` x ``tile`` HR pixels.

    Starts are multiples of ``align``; a tile ends at ``start + tile`` or at the canvas edge, so a tile inside the
    canvas is exactly ``tile`` wide and the last one may be narrower. Neighbours overlap by at least ``overlap``.
    """
    tile = max(align, tile // align * align)
    rows = _axis_starts(height, tile, overlap, align)
    cols = _axis_starts(width, tile, overlap, align)
    return [Tile(y, min(y + tile, height), x, min(x + tile, width)) for y in rows for x in cols]


def _ramp(size: int, ramp: int, rise: bool, fall: bool) -> torch.Tensor:
    """1-D weights (size,): raised-cosine rise over the first ``ramp`` pixels and fall over the last; 1 between.

    The weights are strictly positive (the ramp samples the cosine at pixel centres), so every pixel has weight.
    """
    weights = torch.ones(size, dtype=torch.float64)
    ramp = min(ramp, size)
    if ramp > 0:
        edge = 0.5 - 0.5 * torch.cos(math.pi * (torch.arange(ramp, dtype=torch.float64) + 0.5) / ramp)
        if rise:
            weights[:ramp] = torch.minimum(weights[:ramp], edge)
        if fall:
            weights[size - ramp :] = torch.minimum(weights[size - ramp :], edge.flip(0))
    return weights


def tile_weights(tile: Tile, height: int, width: int, ramp: int) -> torch.Tensor:
    """Blending weights (tile height, tile width) of ``tile``: ramps on the sides shared with a neighbour only
    (a side on the canvas edge keeps weight 1 up to the edge)."""
    rows = _ramp(tile.bottom - tile.top, ramp, tile.top > 0, tile.bottom < height)
    cols = _ramp(tile.right - tile.left, ramp, tile.left > 0, tile.right < width)
    return rows[:, None] * cols[None, :]


@dataclass(frozen=True)
class TilePlan:
    """How one pipeline call tiles its image: made once per call, read by the encoder, the U-Net and the RRDB start.

    Attributes:
        tile_size: LR tile side (``enable_tiling``'s ``tile_size``), used by the LR-side passes.
        ramp: width in HR pixels of the blending ramp between neighbouring HR tiles (``tile_overlap * s``).
        tiles: the HR tiles of the padded image (:func:`plan_tiles`).
    """

    tile_size: int
    ramp: int
    tiles: list[Tile]

    @classmethod
    def make(cls, unet: ModelMixin, scale: int, height: int, width: int, tile_size: int, tile_overlap: int):
        """The plan for a padded LR image of height x width pixels and upscale factor ``scale``."""
        align = unet_alignment(unet, scale)
        tiles = plan_tiles(height * scale, width * scale, tile_size * scale, tile_overlap * scale, align)
        return cls(tile_size, tile_overlap * scale, tiles)


def map_lr_tiles(fn, inputs: list[torch.Tensor], tile: int, halo: int, scale: int = 1) -> list[torch.Tensor]:
    """``fn(*inputs)`` computed on ``tile`` x ``tile`` windows of the LR-sized ``inputs`` (B, C_i, h, w), each read
    with a ``halo``-pixel margin; the part of ``fn``'s outputs (maps ``scale`` times the window's size) that belongs
    to the window's own tile is pasted into the whole. Equals ``fn`` on the whole image when ``halo`` covers its
    receptive field. ``fn`` returns a tuple of maps; so does this, assembled (B, C_j, scale*h, scale*w)."""
    height, width = inputs[0].shape[-2:]
    wholes = None
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            bottom, right = min(top + tile, height), min(left + tile, width)
            y0, x0 = max(top - halo, 0), max(left - halo, 0)
            y1, x1 = min(bottom + halo, height), min(right + halo, width)
            patches = fn(*(x[:, :, y0:y1, x0:x1] for x in inputs))
            if wholes is None:
                wholes = [p.new_empty(*p.shape[:2], height * scale, width * scale) for p in patches]
            own = (slice(None), slice(None), slice((top - y0) * scale, (bottom - y0) * scale),
                   slice((left - x0) * scale, (right - x0) * scale))
            for whole, patch in zip(wholes, patches):
                whole[:, :, top * scale : bottom * scale, left * scale : right * scale] = patch[own]
    return wholes


@torch.no_grad()
def encode_features_tiled(lr_encoder: ModelMixin, lr: torch.Tensor, tile: int, return_trunk: bool = False):
    """The encoder's features of ``lr`` (B, 3, h, w) in [-1, 1], computed on ``tile`` x ``tile`` LR tiles, each
    read with an :func:`encoder_halo` margin so that it equals the whole-image result. Returns (B, C, h, w), or
    with ``return_trunk`` ``(features, trunk)`` as ``lr_encoder(lr, return_trunk=True)`` (the trunk is one of the
    features, so the halo covers it too)."""
    kept = 2 if return_trunk else 1  # the trunk is assembled only when asked for
    wholes = map_lr_tiles(
        lambda window: lr_encoder(window, return_trunk=True)[:kept],
        [lr.to(dtype=lr_encoder.dtype)],
        tile,
        encoder_halo(lr_encoder),
    )
    return tuple(wholes) if return_trunk else wholes[0]


class TiledNoisePredictor:
    """``predict(sample, t) -> eps`` for the whole image, evaluating the U-Net tile by tile.

    Args:
        unet: the noise predictor.
        features: LR features (B, cond_channels, h, w) of the padded LR image (from :func:`encode_features_tiled`),
            once per image: the sample may hold K samples per image (batch B*K).
        tiles: HR tiles covering the padded canvas (B*K, 3, s*h, s*w) (from :func:`plan_tiles`).
        upscale_factor: s; tile bounds must be multiples of it.
        ramp: width in HR pixels of the weight ramps on shared tile sides (the requested overlap).
    """

    def __init__(self, unet: ModelMixin, features: torch.Tensor, tiles: list[Tile], upscale_factor: int, ramp: int):
        self.unet, self.features, self.tiles, self.scale = unet, features, tiles, upscale_factor
        self.halo = condition_halo(unet)
        height, width = features.shape[-2] * upscale_factor, features.shape[-1] * upscale_factor
        weights = [tile_weights(tile, height, width, ramp) for tile in tiles]
        total = torch.zeros(height, width, dtype=torch.float64)
        for tile, weight in zip(tiles, weights):
            total[tile.top : tile.bottom, tile.left : tile.right] += weight
        # Each tile's share of every pixel it covers; the shares of a pixel sum to one.
        self.shares = [
            (weight / total[t.top : t.bottom, t.left : t.right]).to(features.device, unet.dtype)
            for t, weight in zip(tiles, weights)
        ]

    def features_for(self, tile: Tile) -> tuple[torch.Tensor, tuple[int, int]]:
        """The LR features ``tile`` needs (its own plus a ``condition_halo`` margin) and the HR offset (dy, dx) of
        the tile inside ``unet.condition`` of them: the U-Net's ``lr_features`` / ``features_origin``."""
        s, halo = self.scale, self.halo
        top, left = tile.top // s, tile.left // s
        y0, x0 = max(top - halo, 0), max(left - halo, 0)
        y1 = min(tile.bottom // s + halo, self.features.shape[-2])
        x1 = min(tile.right // s + halo, self.features.shape[-1])
        return self.features[:, :, y0:y1, x0:x1], ((top - y0) * s, (left - x0) * s)

    def condition(self, tile: Tile) -> torch.Tensor:
        """HR conditioning (B, base_channels, tile h, tile w) of ``tile``, equal to that tile of the whole image's."""
        patch, (dy, dx) = self.features_for(tile)
        cond = self.unet.condition(patch)
        return cond[:, :, dy : dy + tile.bottom - tile.top, dx : dx + tile.right - tile.left]

    def __call__(self, sample: torch.Tensor, timestep) -> torch.Tensor:
        """Blended noise prediction (B*K, 3, H, W) for ``sample`` (B*K, 3, H, W) at ``timestep``: K samples per
        image of ``features``. The U-Net conditions each tile inside its own forward (offload hooks cover it)."""
        eps = torch.zeros_like(sample)
        for tile, share in zip(self.tiles, self.shares):
            region = (slice(None), slice(None), slice(tile.top, tile.bottom), slice(tile.left, tile.right))
            patch, origin = self.features_for(tile)
            eps[region] += share * self.unet(sample[region], timestep, lr_features=patch, features_origin=origin).sample
        return eps
