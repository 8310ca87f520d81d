"""The (HR, LR) pairs ``sradm evaluate`` scores: from an image folder (optionally with LR files beside it) or from a
``datasets`` data set, HR cropped to a multiple of the scale, LR made with ``imresize`` and rounded to uint8
(:mod:`.evaluate` states the protocol)."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from .files import folder_images, load_image
from .runtime import ImageError, UsageError, one_line


@dataclass
class EvalImage:
    """One evaluation item: uint8 HR (1,3,H,W) and LR (1,3,H/s,W/s), or the reason it failed."""

    name: str
    hr: torch.Tensor | None = None
    lr: torch.Tensor | None = None
    error: str | None = None
    note: str | None = None
    """Said in one line but not an error (e.g. an image smaller than ``--center-crop``, evaluated whole)."""


def to_uint8_rgb(image) -> torch.Tensor:
    """PIL image of any mode -> uint8 (1, 3, H, W), converted as the pipeline converts its input."""
    from ..image_processing import preprocess
    from ..metrics.quality import to_uint8

    try:
        return to_uint8(preprocess(image))
    except (TypeError, ValueError) as error:
        raise ImageError(one_line(error)) from error


def crop_to_multiple(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """Crop (..., H, W) at the bottom/right to multiples of ``scale``. Raises ImageError if nothing is left."""
    h, w = hr.shape[-2] // scale * scale, hr.shape[-1] // scale * scale
    if h == 0 or w == 0:
        raise ImageError(f"image {hr.shape[-1]}x{hr.shape[-2]} is smaller than the scale {scale}")
    return hr[..., :h, :w]


def center_crop(hr: torch.Tensor, size: int, scale: int) -> torch.Tensor:
    """The central ``size`` x ``size`` window of (..., H, W) (smaller sides are kept whole); ``size`` must be a
    multiple of ``scale`` and the result keeps H, W multiples of ``scale``."""
    h, w = min(size, hr.shape[-2]) // scale * scale, min(size, hr.shape[-1]) // scale * scale
    top, left = (hr.shape[-2] - h) // 2, (hr.shape[-1] - w) // 2
    return hr[..., top : top + h, left : left + w]


def make_lr(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """uint8 HR (B,3,H,W), H and W multiples of ``scale`` -> uint8 LR ``imresize(hr, 1/scale)`` computed in float64,
    rounded half up and clamped (MATLAB's conversion to uint8; the rounding ``metrics.lr_psnr`` applies)."""
    from ..imresize import imresize

    return torch.floor(imresize(hr.to(torch.float64), 1.0 / scale).clamp(0, 255) + 0.5).to(torch.uint8)


def _pair(name: str, hr_source, scale: int, lr_source=None, crop: int | None = None) -> EvalImage:
    """Load (and crop / make the LR of) one item; any problem becomes ``EvalImage.error``."""
    try:
        hr = crop_to_multiple(to_uint8_rgb(load_image(hr_source)), scale)
        note = None
        if crop is not None:
            full = hr.shape[-1], hr.shape[-2]
            hr = center_crop(hr, crop, scale)
            if hr.shape[-2:] != (crop, crop):
                note = (f"{full[0]}x{full[1]} is smaller than --center-crop {crop}; evaluated on its central "
                        f"{hr.shape[-1]}x{hr.shape[-2]}")
        if lr_source is None:
            lr = make_lr(hr, scale)
        else:
            lr = to_uint8_rgb(load_image(lr_source))
            want = (lr.shape[-2] * scale, lr.shape[-1] * scale)
            if tuple(hr.shape[-2:]) != want:
                raise ImageError(
                    f"HR is {hr.shape[-1]}x{hr.shape[-2]} (after cropping to a multiple of {scale}) but the LR "
                    f"{lr.shape[-1]}x{lr.shape[-2]} needs an HR of {want[1]}x{want[0]} at scale {scale}"
                )
        return EvalImage(name, hr=hr, lr=lr, note=note)
    except ImageError as error:
        return EvalImage(name, error=str(error))


def _lr_file(lr_dir: str, hr_name: str, scale: int) -> str:
    """The LR file of ``hr_name``: the same name, else DIV2K's ``<stem>x<s><ext>``, else a same-stem image."""
    stem, ext = os.path.splitext(hr_name)
    for candidate in (hr_name, f"{stem}x{scale}{ext}"):
        if os.path.isfile(os.path.join(lr_dir, candidate)):
            return os.path.join(lr_dir, candidate)
    for path in folder_images(lr_dir):
        if os.path.splitext(os.path.basename(path))[0] in (stem, f"{stem}x{scale}"):
            return path
    raise ImageError(f"no LR image {hr_name} (or {stem}x{scale}{ext}) in --lr-dir {lr_dir}")


def iter_folder(
    hr_dir: str, scale: int, lr_dir: str | None = None, limit: int | None = None, crop: int | None = None,
    indices: range | None = None,
) -> Iterator[EvalImage]:
    """Items of an HR folder (image files sorted by name), LR from ``lr_dir`` or made with :func:`make_lr`
    (optionally from the central ``crop`` x ``crop`` window of each HR image); only those at ``indices`` if given."""
    for index, path in enumerate(folder_images(hr_dir)[:limit]):
        if indices is not None and index not in indices:
            continue
        name = os.path.basename(path)
        if lr_dir is None:
            yield _pair(name, path, scale, crop=crop)
            continue
        try:
            lr_path = _lr_file(lr_dir, name, scale)
        except ImageError as error:
            yield EvalImage(name, error=str(error))
            continue
        yield _pair(name, path, scale, lr_path)


def load_eval_dataset(name: str, split: str | None, image_column: str, cache_dir: str | None = None):
    """One split of a ``datasets`` data set with ``image_column`` left undecoded (so a corrupt image fails alone).

    ``name``: a local folder (``imagefolder``, streamed from disk), a local ``.parquet`` file (streamed) or a Hub
    id (loaded and cached). ``split`` None picks "test", else "validation", else the only split.

    Returns:
        (iterable dataset, split name).
    Raises:
        UsageError: missing data set, unknown split or column.
    """
    import datasets

    local = os.path.exists(name)
    if local and os.path.isdir(name):
        builder, kwargs = "imagefolder", dict(data_dir=name, drop_labels=True)
    elif local and name.endswith(".parquet"):
        builder, kwargs = "parquet", dict(data_files={"train": name})
    elif local:
        raise UsageError(f"--dataset {name!r} is a file but not .parquet; pass a folder of images or a Hub id.")
    else:
        builder, kwargs = name, {}
    try:
        if split is None:
            names = datasets.get_dataset_split_names(builder, **kwargs)
            split = next((s for s in ("test", "validation") if s in names), names[0] if len(names) == 1 else None)
            if split is None:
                raise UsageError(f"--dataset {name!r} has the splits {names}; choose one with --split.")
        data = datasets.load_dataset(builder, split=split, streaming=local, cache_dir=cache_dir, **kwargs)
    except UsageError:
        raise
    except Exception as error:  # noqa: BLE001 - datasets raises many types; all mean "cannot load it"
        raise UsageError(f"cannot load --dataset {name!r} (split {split!r}): {one_line(error)}") from error
    columns = list(data.features) if data.features is not None else None
    if columns is not None and image_column not in columns:
        raise UsageError(f"--image-column {image_column!r} is not a column of {name!r}; its columns: {columns}.")
    if columns is not None and isinstance(data.features[image_column], datasets.Image):
        data = data.cast_column(image_column, datasets.Image(decode=False))
    return data, split


def _dataset_source(value):
    """A dataset cell -> (something :func:`load_image` opens, its file name or None)."""
    import PIL.Image

    if isinstance(value, dict):
        path = value.get("path")
        if value.get("bytes") is not None:
            return io.BytesIO(value["bytes"]), os.path.basename(path) if path else None
        if path:
            return path, os.path.basename(path)
    if isinstance(value, (bytes, bytearray)):
        return io.BytesIO(value), None
    if isinstance(value, str):
        return value, os.path.basename(value)
    if isinstance(value, PIL.Image.Image):
        buffer = io.BytesIO()
        value.save(buffer, format="PNG")
        buffer.seek(0)
        return buffer, None
    if isinstance(value, np.ndarray):
        return _dataset_source(PIL.Image.fromarray(value))
    raise ImageError(f"unsupported image value of type {type(value).__name__}")


def iter_dataset(
    data, split: str, image_column: str, scale: int, limit: int | None = None, crop: int | None = None,
    indices: range | None = None,
) -> Iterator[EvalImage]:
    """Items of a loaded data set (see :func:`load_eval_dataset`), named by file name or ``<split>[<index>]``;
    only those at ``indices`` if given (names still count every row, so they match an unsplit run)."""
    seen: set[str] = set()
    for index, row in enumerate(data):
        if limit is not None and index >= limit:
            break
        fallback = f"{split}[{index}]"
        try:
            source, name = _dataset_source(row[image_column])
        except ImageError as error:
            if indices is None or index in indices:
                yield EvalImage(fallback, error=str(error))
            continue
        name = name or fallback
        if name in seen:
            name = f"{name} ({fallback})"
        seen.add(name)
        if indices is None or index in indices:
            yield _pair(name, source, scale, crop=crop)
