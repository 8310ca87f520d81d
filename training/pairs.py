"""One HR image -> one (LR, HR) training pair, with the project's one degradation::

    image (PIL / numpy / datasets value) --RGB (alpha on white)--> [celeba: centre crop 178, imresize to 160]
        --random crop R x R (R a multiple of s)--> [random h-flip (v-flip, rot90 optional)]
        --> hr (3, R, R) in [0, 1] --imresize(hr, 1/s)--> lr (3, R/s, R/s)
        --> both mapped to [-1, 1]

:func:`make_pair` is that transform; it raises :class:`SkippedImage` for unreadable or too-small images (counted,
not fatal). :func:`crop_box` and :func:`pair_from_crop` are its two halves, shared with the extracted-image path
(:func:`decode_for_store` gives :mod:`training.image_store` the pixels :func:`make_pair` would crop), so both paths
make the same pairs from the same generator.
"""

from __future__ import annotations

import io
import os
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import numpy as np
import torch
from PIL import Image

from sradm_diffusers.imresize import imresize

CELEBA_CROP = 178  # centre crop of the aligned 178x218 CelebA images (the reference's protocol)
CELEBA_SIZE = 160  # ... resized to 160x160 = HR (LR 20x20 at 8x)
PREPROCESS_CHOICES = (None, "none", "celeba")


class SkippedImage(Exception):
    """An image that cannot become a training pair (unreadable, or smaller than the crop). Counted, not fatal."""


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert a PIL image to RGB; transparent pixels are composited on white."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def decode_image(value: Any) -> Image.Image:
    """Open one dataset value as an RGB PIL image.

    Args:
        value: ``PIL.Image``; numpy array (H, W) / (H, W, 3|4) uint8; a ``datasets`` undecoded image dict
            ``{"bytes": ..., "path": ...}``; raw ``bytes``; or a file path.
    Raises:
        SkippedImage: the value cannot be decoded (corrupt file, missing path, unsupported value).
    """
    try:
        if isinstance(value, Image.Image):
            image = value
        elif isinstance(value, np.ndarray):
            image = Image.fromarray(value)
        elif isinstance(value, Mapping):
            if value.get("bytes") is not None:
                image = Image.open(io.BytesIO(value["bytes"]))
            elif value.get("path"):
                image = Image.open(value["path"])
            else:
                raise SkippedImage("image value has neither bytes nor path")
        elif isinstance(value, (bytes, bytearray)):
            image = Image.open(io.BytesIO(value))
        elif isinstance(value, (str, os.PathLike)):
            image = Image.open(value)
        else:
            raise SkippedImage(f"unsupported image value of type {type(value).__name__}")
        image.load()
        return to_rgb(image)
    except SkippedImage:
        raise
    except Exception as exc:  # PIL raises many types for corrupt data
        raise SkippedImage(f"unreadable image ({type(exc).__name__}: {exc})") from exc


def check_scale_resolution(resolution: Optional[int], scale: int) -> None:
    """Raise ``ValueError`` unless ``scale`` is a positive integer and ``resolution`` (None: whole images) a positive
    multiple of it, so that the LR crop aligns with the HR crop."""
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"scale={scale!r} must be a positive integer upscaling factor such as 4 or 8.")
    if resolution is not None:
        if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or resolution < 1:
            raise ValueError(f"resolution={resolution!r} must be a positive integer (HR crop size in pixels).")
        if resolution % scale:
            raise ValueError(
                f"resolution={resolution} is not a multiple of scale={scale}: the LR crop would not align with the HR "
                f"crop. Use a multiple such as {max(scale, resolution // scale * scale)} or "
                f"{(resolution // scale + 1) * scale}."
            )


def celeba_preprocess(image: Image.Image) -> Image.Image:
    """The CelebA protocol: centre crop 178x178, then MATLAB-bicubic resize (imresize, uint8) to 160x160.

    Raises:
        SkippedImage: the image is smaller than 178 px on a side.
    """
    w, h = image.size
    if w < CELEBA_CROP or h < CELEBA_CROP:
        raise SkippedImage(f"image {w}x{h} is smaller than the CelebA centre crop {CELEBA_CROP}")
    left, top = (w - CELEBA_CROP) // 2, (h - CELEBA_CROP) // 2
    crop = np.array(image.crop((left, top, left + CELEBA_CROP, top + CELEBA_CROP)))  # writable copy
    # 178 -> 160 is not an integer factor: resize to an explicit size; uint8 in/out as the reference's image files.
    return Image.fromarray(imresize(crop, size=(CELEBA_SIZE, CELEBA_SIZE)))


def _randint(high: int, generator: Optional[torch.Generator]) -> int:
    """Uniform integer in [0, high)."""
    return int(torch.randint(0, high, (1,), generator=generator).item()) if high > 1 else 0


def make_pair(
    image: Any,
    resolution: Optional[int],
    scale: int,
    random_flip: bool = True,
    preprocess: Optional[str] = None,
    generator: Optional[torch.Generator] = None,
    *,
    random_vflip: bool = False,
    random_rot90: bool = False,
    center_crop: bool = False,
) -> Dict[str, torch.Tensor]:
    """Turn one HR image into an (LR, HR) training pair.

    Args:
        image: the HR image (anything :func:`decode_image` accepts).
        resolution: HR crop size R (a multiple of ``scale``); ``None`` keeps the whole image, cropped at the
            bottom/right to a multiple of ``scale`` (for validation).
        scale: the upscaling factor s.
        random_flip: random horizontal flip (p = 0.5).
        preprocess: ``None``/``"none"``, or ``"celeba"`` (centre crop 178, imresize to 160 before cropping).
        generator: ``torch.Generator`` for the crop position and flips (``None``: torch's global RNG).
        random_vflip: random vertical flip (p = 0.5), off by default.
        random_rot90: random 90-degree rotation (p = 0.5), off by default.
        center_crop: take the centre crop instead of a random one.

    Returns:
        ``{"hr": (3, R, R) float32 in [-1, 1], "lr": (3, R/s, R/s) float32 in [-1, 1]}`` where ``lr`` is
        ``imresize(hr01, 1/s) * 2 - 1`` computed on the float HR crop ``hr01`` in [0, 1] (not clamped or
        quantised; bicubic may overshoot [-1, 1] slightly).

    Raises:
        ValueError: ``resolution`` not a multiple of ``scale``, bad ``scale`` or ``preprocess``.
        SkippedImage: unreadable image, or smaller than ``resolution`` (or than ``scale``).
    """
    check_scale_resolution(resolution, scale)
    check_preprocess(preprocess)
    rgb = decode_image(image)
    if preprocess == "celeba":
        rgb = celeba_preprocess(rgb)
    w, h = rgb.size
    top, left, crop_h, crop_w = crop_box(h, w, resolution, scale, center_crop, generator)
    # Crop before converting: a whole 2040x1356 image as an array costs ~10 ms, the 160 px crop ~0.1 ms.
    array = np.asarray(rgb.crop((left, top, left + crop_w, top + crop_h)))
    return pair_from_crop(array, scale, generator, random_flip, random_vflip, random_rot90)


def check_preprocess(preprocess: Optional[str]) -> None:
    """Raise ``ValueError`` unless ``preprocess`` is one of :data:`PREPROCESS_CHOICES`."""
    if preprocess not in PREPROCESS_CHOICES:
        raise ValueError(f"preprocess={preprocess!r} is not supported; use one of {PREPROCESS_CHOICES}.")


def crop_box(
    height: int,
    width: int,
    resolution: Optional[int],
    scale: int,
    center_crop: bool = False,
    generator: Optional[torch.Generator] = None,
) -> Tuple[int, int, int, int]:
    """``(top, left, crop_h, crop_w)`` of :func:`make_pair`'s crop in an image of ``height x width``.

    Draws ``top`` then ``left`` from ``generator`` (a random crop); every pipeline that must give the same pairs
    (the decoded image, the extracted store) calls this with the same generator state.

    Raises:
        SkippedImage: the image is smaller than ``resolution`` (or than ``scale`` when ``resolution`` is None).
    """
    h, w = height, width
    if resolution is None:
        crop_h, crop_w = h // scale * scale, w // scale * scale
        if crop_h == 0 or crop_w == 0:
            raise SkippedImage(f"image {w}x{h} is smaller than scale={scale}")
        return 0, 0, crop_h, crop_w
    if w < resolution or h < resolution:
        raise SkippedImage(f"image {w}x{h} is smaller than resolution={resolution}")
    if center_crop:
        return (h - resolution) // 2, (w - resolution) // 2, resolution, resolution
    top = _randint(h - resolution + 1, generator)
    left = _randint(w - resolution + 1, generator)
    return top, left, resolution, resolution


def pair_from_crop(
    array: np.ndarray,
    scale: int,
    generator: Optional[torch.Generator] = None,
    random_flip: bool = True,
    random_vflip: bool = False,
    random_rot90: bool = False,
) -> Dict[str, torch.Tensor]:
    """The pair of one uint8 HR crop (H, W, 3): flips drawn from ``generator`` (after the crop position), then
    ``lr = imresize(hr01, 1/scale)``; both mapped to [-1, 1] (see :func:`make_pair`)."""
    hr = torch.from_numpy(np.array(array, dtype=np.float32)).permute(2, 0, 1) / 255.0
    if random_flip and _randint(2, generator):
        hr = hr.flip(-1)
    if random_vflip and _randint(2, generator):
        hr = hr.flip(-2)
    if random_rot90 and _randint(2, generator):
        hr = hr.rot90(1, dims=(-2, -1))
    hr = hr.contiguous()
    lr = imresize(hr, 1.0 / scale)
    return {"hr": hr * 2.0 - 1.0, "lr": lr * 2.0 - 1.0}


def decode_for_store(value: Any, preprocess: Optional[str] = None) -> Union[np.ndarray, str]:
    """One row for :mod:`image_store`: the (H, W, 3) uint8 image :func:`make_pair` would crop (after ``preprocess``),
    or the reason it would be skipped."""
    try:
        image = decode_image(value)
        if preprocess == "celeba":
            image = celeba_preprocess(image)
        return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
    except SkippedImage as exc:
        return str(exc)
