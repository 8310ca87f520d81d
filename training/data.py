"""Data for training and validation: image datasets -> (LR, HR) pairs made with the project's one degradation.

One HR image becomes one training pair::

    image (PIL / numpy / datasets value) --RGB (alpha on white)--> [celeba: centre crop 178, imresize to 160]
        --random crop R x R (R a multiple of s)--> [random h-flip (v-flip, rot90 optional)]
        --> hr (3, R, R) in [0, 1] --imresize(hr, 1/s)--> lr (3, R/s, R/s)
        --> both mapped to [-1, 1]

Pieces, from the bottom up:

* :data:`HUB_DATASETS`: the supported Hugging Face Hub data sets, their columns and splits (one place).
* :func:`load_image_dataset`: a ``datasets.Dataset`` / ``IterableDataset`` from the Hub, a local image folder
  (``imagefolder``: ``train/`` and ``test/`` sub-folders become splits) or a parquet file.
* :func:`make_pair`: the transform above; raises :class:`SkippedImage` for unreadable / too-small images.
* :class:`PairDataset` (map-style) and :class:`IterablePairDataset` (streaming): apply ``make_pair``, return
  ``None`` for a skipped image; :func:`collate_pairs` drops the ``None`` entries and reports how many it dropped in
  the batch (``batch["num_skipped"]``), so the skipped count is right with any number of DataLoader workers.
  Random crops come from a generator seeded by ``(seed, epoch, index)``: resuming at an epoch reproduces its data.
* :func:`make_train_dataset`: picks the right wrapper for a loaded dataset; for map-style data it can first
  extract the images once into an on-disk store (:mod:`image_store`), so that workers read crops instead of
  decoding whole images: the same pairs, far faster (``benchmarks/bench_data.py``).
* :class:`EpochTaggedSampler`: items ``(epoch, index)``, so persistent DataLoader workers make the right epoch.
* :func:`make_validation_pairs`: fixed centre crops (or whole images cropped to a multiple of the scale).
"""

from __future__ import annotations

import functools
import io
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

from sradm_diffusers.imresize import imresize

from training import image_store

logger = logging.getLogger(__name__)

__all__ = [
    "HubDataset",
    "HUB_DATASETS",
    "CELEBA_CROP",
    "CELEBA_SIZE",
    "SkippedImage",
    "load_image_dataset",
    "decode_image",
    "to_rgb",
    "make_pair",
    "crop_box",
    "pair_from_crop",
    "pair_seed",
    "EpochTaggedSampler",
    "should_extract",
    "open_store",
    "PairDataset",
    "IterablePairDataset",
    "collate_pairs",
    "make_train_dataset",
    "make_validation_pairs",
]

CELEBA_CROP = 178  # centre crop of the aligned 178x218 CelebA images (the reference's protocol)
CELEBA_SIZE = 160  # ... resized to 160x160 = HR (LR 20x20 at 8x)
PREPROCESS_CHOICES = (None, "none", "celeba")


# ----------------------------------------------------------------------------------------------------------------
# Supported Hub data sets
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HubDataset:
    """How to load one Hub data set as HR images.

    Attributes:
        dataset_name: the Hub id.
        image_column: the column holding the HR image.
        data_files: ``data_files`` for ``load_dataset`` (picks the HR archives out of a repo of many).
        revision: the git revision to load (e.g. the auto-converted parquet branch).
        dataset_config_name: default config, if the repo has several.
        index_splits: virtual splits made by row ranges of ``source_split``: ``{split: (start, stop)}``.
        source_split: the Hub split that ``index_splits`` slice.
        preprocess: the :func:`make_pair` preprocessing the paper's protocol uses for it.
        notes: anything a user should know.
    """

    dataset_name: str
    image_column: str = "image"
    data_files: Optional[Mapping[str, str]] = None
    revision: Optional[str] = None
    dataset_config_name: Optional[str] = None
    index_splits: Mapping[str, Tuple[int, int]] = field(default_factory=dict)
    source_split: str = "train"
    preprocess: Optional[str] = None
    notes: str = ""


HUB_DATASETS: Dict[str, HubDataset] = {
    "goodfellowliu/DIV2K": HubDataset(
        dataset_name="goodfellowliu/DIV2K",
        image_column="image",
        data_files={"train": "DIV2K_train_HR.zip", "validation": "DIV2K_valid_HR.zip"},
        notes="imagefolder repo of the original zips (train HR 3.5 GB, 800 images; validation HR 449 MB, 100 "
        "images). Loading the whole repo would mix HR and LR files, so the HR archives are picked with "
        "data_files. Protocol: random 160x160 HR crops at 4x; test on the 100 validation images at full size.",
    ),
    "eugenesiow/Div2k": HubDataset(
        dataset_name="eugenesiow/Div2k",
        image_column="hr",
        revision="refs/convert/parquet",
        dataset_config_name="bicubic_x4",
        notes="script-based repo (does not load with datasets>=4); its auto-converted parquet branch may. Columns "
        "'hr' and 'lr'; only 'hr' is used (LR is always remade with imresize). Prefer goodfellowliu/DIV2K.",
    ),
    "nielsr/CelebA-faces": HubDataset(
        dataset_name="nielsr/CelebA-faces",
        image_column="image",
        source_split="train",
        # The Hub repo has one 'train' split of all 202,599 aligned images in file order (000001.jpg ...).
        # The official partition: train 000001-162770, validation 162771-182637, test 182638-202599 (1-based);
        # as 0-based row ranges below. SRDiff evaluates on the first 5,000 test images ('test5000').
        index_splits={
            "train": (0, 162770),
            "validation": (162770, 182637),
            "test": (182637, 202599),
            "test5000": (182637, 187637),
            "all": (0, 202599),
        },
        preprocess="celeba",
        notes="parquet, about 1.4 GB, 178x218 aligned faces; preprocess='celeba' (centre crop 178 -> 160). "
        "Streaming works. The row ranges assume the rows are in file-name order.",
    ),
}


# ----------------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------------


def _column_names(dataset) -> Optional[List[str]]:
    names = getattr(dataset, "column_names", None)
    if names is None and getattr(dataset, "features", None) is not None:
        names = list(dataset.features)
    return list(names) if names is not None else None


def check_image_column(dataset, image_column: str, where: str = "the dataset") -> None:
    """Raise ``ValueError`` naming ``image_column`` and the available columns if it is missing from ``dataset``."""
    names = _column_names(dataset)
    if names is None:  # a streaming dataset of unknown features: checked when the first example is read
        return
    if image_column not in names:
        hint = ""
        spec = HUB_DATASETS.get(where)
        if spec is not None and spec.image_column in names:
            hint = f" (HUB_DATASETS gives {spec.image_column!r} as this dataset's HR image column)"
        raise ValueError(
            f"image_column={image_column!r} is not a column of {where}; available columns: {names}{hint}. "
            f"Pass one of them as image_column (--image_column)."
        )


def load_image_dataset(
    dataset_name: Optional[str] = None,
    dataset_config_name: Optional[str] = None,
    train_data_dir: Optional[Union[str, os.PathLike]] = None,
    split: str = "train",
    image_column: str = "image",
    streaming: bool = False,
    cache_dir: Optional[str] = None,
    data_files: Optional[Union[str, Sequence[str], Mapping[str, Any]]] = None,
    revision: Optional[str] = None,
):
    """Load one split of an image data set.

    Args:
        dataset_name: a Hub id (defaults for the ids in :data:`HUB_DATASETS` are filled in: data_files, revision,
            config, virtual row-range splits) or a packaged builder name such as ``"parquet"`` / ``"imagefolder"``
            used with ``data_files``.
        dataset_config_name: the dataset config (e.g. ``"bicubic_x4"``).
        train_data_dir: a local folder of images (loaded with ``imagefolder``; ``train/``, ``test/``, ...
            sub-folders become splits, otherwise everything is ``train``) or a local ``.parquet`` file.
            Give exactly one of ``dataset_name`` and ``train_data_dir``.
        split: the split to return (for CelebA also ``test5000``/``all``, see :data:`HUB_DATASETS`).
        image_column: the column with the HR image; checked here.
        streaming: return an ``IterableDataset`` (no full download).
        cache_dir, data_files, revision: passed to ``datasets.load_dataset``.

    Returns:
        ``datasets.Dataset`` (or ``datasets.IterableDataset`` when streaming) with ``image_column``.

    Raises:
        ValueError: both/neither source given, missing folder, unknown split, missing column.
    """
    import datasets

    if (dataset_name is None) == (train_data_dir is None):
        raise ValueError(
            f"give exactly one of dataset_name (a Hub id such as {list(HUB_DATASETS)}) and train_data_dir (a local "
            f"image folder or .parquet file); got dataset_name={dataset_name!r}, train_data_dir={train_data_dir!r}."
        )
    index_range = None
    source_split = split
    if train_data_dir is not None:
        path = Path(train_data_dir)
        if not path.exists():
            raise ValueError(f"train_data_dir={str(path)!r} does not exist; pass a folder of images or a .parquet file.")
        if path.is_file():
            if path.suffix != ".parquet":
                raise ValueError(f"train_data_dir={str(path)!r} is a file but not .parquet; pass a folder of images.")
            builder, kwargs = "parquet", dict(data_files={"train": str(path)})
        else:
            builder, kwargs = "imagefolder", dict(data_dir=str(path), drop_labels=True)
        where = str(path)
    else:
        spec = HUB_DATASETS.get(dataset_name)
        if spec is not None:
            data_files = data_files if data_files is not None else spec.data_files
            revision = revision if revision is not None else spec.revision
            dataset_config_name = dataset_config_name or spec.dataset_config_name
            if split in spec.index_splits:
                source_split, index_range = spec.source_split, spec.index_splits[split]
        builder = dataset_name
        kwargs = dict(name=dataset_config_name, data_files=dict(data_files) if isinstance(data_files, Mapping)
                      else data_files, revision=revision)
        where = dataset_name
    try:
        ds = datasets.load_dataset(builder, split=source_split, streaming=streaming, cache_dir=cache_dir, **kwargs)
    except ValueError as exc:
        if "split" in str(exc).lower():
            raise ValueError(f"split={split!r} is not available in {where}: {exc}") from exc
        raise

    if index_range is not None:
        start, stop = index_range
        if streaming:
            ds = ds.skip(start).take(stop - start)
        else:
            if len(ds) < stop:
                raise ValueError(
                    f"split={split!r} of {where} needs rows {start}..{stop - 1}, but the {source_split!r} split has "
                    f"only {len(ds)} rows; use split='all' or check the dataset."
                )
            ds = ds.select(range(start, stop))
    check_image_column(ds, image_column, where)
    return ds


# ----------------------------------------------------------------------------------------------------------------
# One image -> one pair
# ----------------------------------------------------------------------------------------------------------------


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


def _check_scale_resolution(resolution: Optional[int], scale: int) -> None:
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
    _check_scale_resolution(resolution, scale)
    _check_preprocess(preprocess)
    rgb = decode_image(image)
    if preprocess == "celeba":
        rgb = celeba_preprocess(rgb)
    w, h = rgb.size
    top, left, crop_h, crop_w = crop_box(h, w, resolution, scale, center_crop, generator)
    # Crop before converting: a whole 2040x1356 image as an array costs ~10 ms, the 160 px crop ~0.1 ms.
    array = np.asarray(rgb.crop((left, top, left + crop_w, top + crop_h)))
    return pair_from_crop(array, scale, generator, random_flip, random_vflip, random_rot90)


def _check_preprocess(preprocess: Optional[str]) -> None:
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


# ----------------------------------------------------------------------------------------------------------------
# torch datasets
# ----------------------------------------------------------------------------------------------------------------


def pair_seed(seed: int, epoch: int, index: int, *extra: int) -> int:
    """A well-mixed 63-bit seed for one example from ``(seed, epoch, index, *extra)`` (all non-negative ints)."""
    state = np.random.SeedSequence([int(seed), int(epoch), int(index), *map(int, extra)]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def _undecoded(dataset, image_column: str):
    """Cast an ``Image`` column to ``decode=False`` so that a corrupt file is skipped here instead of crashing."""
    import datasets

    features = getattr(dataset, "features", None)
    if features is not None and isinstance(features.get(image_column), datasets.Image):
        if features[image_column].decode:
            dataset = dataset.cast_column(image_column, datasets.Image(decode=False))
    return dataset


class PairDataset(torch.utils.data.Dataset):
    """Map-style dataset of (LR, HR) pairs from a ``datasets.Dataset`` (or any sequence of row dicts).

    ``dataset[i]`` is ``{"hr", "lr", "index"}`` (see :func:`make_pair`) or ``None`` when image ``i`` is skipped
    (:class:`SkippedImage`); use :func:`collate_pairs` as the DataLoader's ``collate_fn``. The crop and flips of
    item ``i`` come from a generator seeded with ``pair_seed(seed, epoch, i)``, so a run resumed at an epoch
    sees the same data. The epoch is the one set by :meth:`set_epoch`, or given with the item:
    ``dataset[(epoch, i)]``, which is what :class:`EpochTaggedSampler` yields, so that persistent DataLoader
    workers (whose copies of the dataset never see ``set_epoch``) make the right epoch's crops.

    With ``store`` (an :class:`image_store.ImageStore` of the same rows, see :func:`make_train_dataset`), the crop
    is read from the extracted pixels instead of decoding the image: the same pairs, without decoding and without
    holding any image in memory (``dataset`` is then not kept).

    Args:
        dataset: rows with ``image_column`` (may be ``None`` with ``store``).
        resolution, scale, random_flip, preprocess, random_vflip, random_rot90: see :func:`make_pair`.
        image_column: the HR image column.
        seed: base seed of the crops.
        cache_images: keep every decoded image in memory after its first use. For small sets (the CPU demo:
            45 photos, ~130 MB decoded) this removes PNG decoding from every step; leave it off for large sets.
            Each DataLoader worker process holds its own cache. Ignored with ``store``.
        store: extracted images (``preprocess`` already applied to them).
    """

    def __init__(
        self,
        dataset,
        resolution: int,
        scale: int,
        image_column: str = "image",
        random_flip: bool = True,
        preprocess: Optional[str] = None,
        seed: int = 0,
        random_vflip: bool = False,
        random_rot90: bool = False,
        cache_images: bool = False,
        store=None,
    ):
        _check_scale_resolution(resolution, scale)
        _check_preprocess(preprocess)
        if resolution is None:
            raise ValueError("PairDataset needs a fixed resolution (crops must stack into a batch).")
        if store is None:
            check_image_column(dataset, image_column)
            self.dataset = _undecoded(dataset, image_column)
        else:
            if dataset is not None and len(dataset) != len(store):
                raise ValueError(f"the store holds {len(store)} images but the dataset has {len(dataset)} rows.")
            self.dataset = None  # workers need only the store: no Arrow table or row cache in them
        self.store = store
        self.image_column = image_column
        self.resolution, self.scale = int(resolution), int(scale)
        self.random_flip, self.random_vflip, self.random_rot90 = random_flip, random_vflip, random_rot90
        self.preprocess = preprocess
        self.seed = int(seed)
        self.epoch = 0
        self._cache: Optional[Dict[int, Image.Image]] = {} if cache_images and store is None else None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose crops ``__getitem__`` returns for plain integer indices."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.store) if self.store is not None else len(self.dataset)

    def __getitem__(self, item: Union[int, Tuple[int, int]]) -> Optional[Dict[str, Any]]:
        epoch, index = (int(item[0]), int(item[1])) if isinstance(item, tuple) else (self.epoch, int(item))
        generator = torch.Generator().manual_seed(pair_seed(self.seed, epoch, index))
        try:
            if self.store is not None:
                pair = self._stored_pair(index, generator)
            else:
                pair = make_pair(
                    self._image(index), self.resolution, self.scale, self.random_flip,
                    self.preprocess, generator, random_vflip=self.random_vflip, random_rot90=self.random_rot90,
                )
        except SkippedImage as exc:
            logger.debug("skipped image %d: %s", index, exc)
            return None
        pair["index"] = index
        return pair

    def _stored_pair(self, index: int, generator: torch.Generator) -> Dict[str, torch.Tensor]:
        """:func:`make_pair` on the extracted image ``index``: same draws, the crop read from disk."""
        size = self.store.size(index)
        if size is None:
            raise SkippedImage(self.store.skip_reason(index))
        top, left, crop_h, crop_w = crop_box(size[0], size[1], self.resolution, self.scale, False, generator)
        array = self.store.read_crop(index, top, left, crop_h, crop_w)
        return pair_from_crop(array, self.scale, generator, self.random_flip, self.random_vflip, self.random_rot90)

    def _image(self, index: int) -> Any:
        """The row's image value, decoded once and kept when ``cache_images`` is on."""
        if self._cache is None:
            return self.dataset[index][self.image_column]
        if index not in self._cache:
            image = decode_image(self.dataset[index][self.image_column])
            image.load()
            self._cache[index] = image
        return self._cache[index]


class IterablePairDataset(torch.utils.data.IterableDataset):
    """(LR, HR) pairs from a streaming ``datasets.IterableDataset``.

    The stream is shuffled with ``datasets``' own ``shuffle(seed=seed, buffer_size=shuffle_buffer_size)``
    (reshuffled per epoch through :meth:`set_epoch`), split between distributed processes with
    ``datasets.distributed.split_dataset_by_node(rank, world_size)`` and between DataLoader workers by
    ``datasets`` itself (by shards when there are enough, else by example). Skipped images are yielded as
    ``None`` and counted by :func:`collate_pairs`. The crops of the k-th example a worker yields come from
    ``pair_seed(seed, epoch, k, rank, worker_id)``.

    Args:
        dataset: a ``datasets.IterableDataset`` (or ``Dataset``, converted with ``to_iterable_dataset``).
        shuffle_buffer_size: ``0`` disables shuffling.
        rank, world_size: this process's place in a distributed run (``accelerator.process_index`` /
            ``num_processes``).
        Others: as :class:`PairDataset`.
    """

    def __init__(
        self,
        dataset,
        resolution: int,
        scale: int,
        image_column: str = "image",
        random_flip: bool = True,
        preprocess: Optional[str] = None,
        seed: int = 0,
        shuffle_buffer_size: int = 1000,
        rank: int = 0,
        world_size: int = 1,
        random_vflip: bool = False,
        random_rot90: bool = False,
    ):
        import datasets
        from datasets.distributed import split_dataset_by_node

        _check_scale_resolution(resolution, scale)
        if resolution is None:
            raise ValueError("IterablePairDataset needs a fixed resolution (crops must stack into a batch).")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} must be in [0, world_size={world_size}).")
        if isinstance(dataset, datasets.Dataset):
            dataset = dataset.to_iterable_dataset()
        check_image_column(dataset, image_column)
        dataset = _undecoded(dataset, image_column)
        if shuffle_buffer_size and shuffle_buffer_size > 0:
            dataset = dataset.shuffle(seed=seed, buffer_size=shuffle_buffer_size)
        if world_size > 1:
            dataset = split_dataset_by_node(dataset, rank=rank, world_size=world_size)
        self.dataset = dataset
        self.image_column = image_column
        self.resolution, self.scale = int(resolution), int(scale)
        self.random_flip, self.random_vflip, self.random_rot90 = random_flip, random_vflip, random_rot90
        self.preprocess = preprocess
        self.seed, self.rank = int(seed), int(rank)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle the stream (``datasets`` uses ``seed + epoch``) and select the epoch's crops."""
        self.epoch = int(epoch)
        self.dataset.set_epoch(self.epoch)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        for k, row in enumerate(self.dataset):
            if self.image_column not in row:
                raise ValueError(f"image_column={self.image_column!r} is not in the streamed rows; available "
                                 f"columns: {sorted(row)}. Pass one of them as image_column.")
            generator = torch.Generator().manual_seed(pair_seed(self.seed, self.epoch, k, self.rank, worker))
            try:
                pair = make_pair(
                    row[self.image_column], self.resolution, self.scale, self.random_flip, self.preprocess,
                    generator, random_vflip=self.random_vflip, random_rot90=self.random_rot90,
                )
            except SkippedImage as exc:
                logger.debug("skipped streamed image %d (worker %d): %s", k, worker, exc)
                yield None
                continue
            pair["index"] = k
            yield pair


def collate_pairs(batch: Sequence[Optional[Dict[str, Any]]]) -> Dict[str, Any]:
    """Stack the pairs of a batch, dropping the ``None`` entries of skipped images.

    Returns:
        ``{"hr": (B, 3, R, R), "lr": (B, 3, R/s, R/s), "index": (B,) int64, "num_skipped": int}`` where
        ``B`` = number of valid entries. When every entry was skipped, ``hr``/``lr`` are ``None`` and ``index`` is
        empty: the trainer should skip the step (and add ``num_skipped`` to its running total in any case).
    """
    valid = [item for item in batch if item is not None]
    num_skipped = len(batch) - len(valid)
    if not valid:
        return {"hr": None, "lr": None, "index": torch.zeros(0, dtype=torch.long), "num_skipped": num_skipped}
    return {
        "hr": torch.stack([item["hr"] for item in valid]),
        "lr": torch.stack([item["lr"] for item in valid]),
        "index": torch.tensor([int(item["index"]) for item in valid], dtype=torch.long),
        "num_skipped": num_skipped,
    }


class EpochTaggedSampler(torch.utils.data.Sampler):
    """Yields ``(epoch, index)`` for every index of ``sampler``, ``epoch`` read from ``sampler.epoch`` when an epoch's
    iteration starts. :class:`PairDataset` makes that epoch's crop, so DataLoader workers can persist across epochs
    (``persistent_workers=True``) and still give exactly the pairs of a fresh run or a resumed one."""

    def __init__(self, sampler):
        self.sampler = sampler

    def __iter__(self):
        epoch = int(self.sampler.epoch)
        return ((epoch, int(index)) for index in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)


def should_extract(extract: Optional[bool], streaming: bool, preprocess: Optional[str]) -> bool:
    """Whether training reads extracted images (``extract`` None = automatic).

    Automatic: yes for map-style data without preprocessing (DIV2K-like photos, where decoding dominates), no for
    streams (never stored) and for ``preprocess="celeba"`` (178x218 JPEGs decode and resize at ~200 pairs/s per
    worker already; the stored 160x160 pixels of CelebA's 202,599 images would take 15.6 GB).
    """
    if streaming:
        if extract:
            raise ValueError("--extract_images needs a map-style dataset; it cannot be used with --streaming.")
        return False
    if extract is not None:
        return bool(extract)
    return preprocess in (None, "none")


def make_train_dataset(
    dataset,
    resolution: int,
    scale: int,
    *,
    extract: Optional[bool] = False,
    cache_dir: Optional[str] = None,
    extract_workers: int = 1,
    **kwargs,
):
    """:class:`IterablePairDataset` for a streaming ``datasets.IterableDataset``, else :class:`PairDataset`.

    ``kwargs`` go to the chosen class; ``shuffle_buffer_size``, ``rank`` and ``world_size`` are dropped for a
    map-style dataset (shuffle and shard it with the DataLoader's sampler / ``accelerator.prepare``).

    Args:
        extract: for a map-style dataset, decode its images once into an on-disk store beside the ``datasets``
            cache (:mod:`image_store`; reused while the images and options are unchanged) and crop from it.
            ``None``: :func:`should_extract` decides.
        cache_dir: the ``datasets`` cache folder the store goes beside.
        extract_workers: processes decoding a first extraction.
    """
    import datasets

    if isinstance(dataset, datasets.IterableDataset):
        should_extract(extract, True, kwargs.get("preprocess"))
        kwargs.pop("cache_images", None)  # a stream is read once per epoch: nothing to reuse
        return IterablePairDataset(dataset, resolution, scale, **kwargs)
    for key in ("shuffle_buffer_size", "rank", "world_size"):
        kwargs.pop(key, None)
    if should_extract(extract, False, kwargs.get("preprocess")):
        store = open_store(dataset, kwargs.get("image_column", "image"), kwargs.get("preprocess"), cache_dir,
                           extract_workers)
        kwargs.pop("cache_images", None)
        return PairDataset(dataset, resolution, scale, store=store, **kwargs)
    return PairDataset(dataset, resolution, scale, **kwargs)


def open_store(dataset, image_column: str = "image", preprocess: Optional[str] = None,
               cache_dir: Optional[str] = None, num_workers: int = 1):
    """The :class:`image_store.ImageStore` of ``dataset``'s images (extracted now if not yet; see
    :func:`image_store.open_or_extract`)."""
    _check_preprocess(preprocess)
    check_image_column(dataset, image_column)
    preprocess = None if preprocess == "none" else preprocess
    decode = functools.partial(decode_for_store, preprocess=preprocess)
    return image_store.open_or_extract(_undecoded(dataset, image_column), image_column, decode,
                                       preprocess=preprocess, cache_dir=cache_dir, num_workers=num_workers)


# ----------------------------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------------------------


def make_validation_pairs(
    dataset,
    scale: int,
    resolution: Optional[int] = None,
    image_column: str = "image",
    preprocess: Optional[str] = None,
    max_images: Optional[int] = None,
) -> List[Dict[str, Any]]:
    """Fixed validation pairs: centre crops of ``resolution`` or, with ``resolution=None``, whole images cropped at
    the bottom/right to a multiple of ``scale`` (the usual "mod crop").

    Args:
        dataset: a ``datasets.Dataset`` / ``IterableDataset`` or a sequence of rows (dicts with ``image_column``)
            or of images.
        scale: the upscaling factor s.
        resolution: centre-crop size (multiple of ``scale``) or ``None`` for whole images.
        image_column: the HR image column (ignored for a sequence of images).
        preprocess: as :func:`make_pair` (``"celeba"`` for the CelebA protocol).
        max_images: use at most this many images (the first ones).

    Returns:
        A list (in dataset order) of ``{"hr": (3, H, W), "lr": (3, H/s, W/s)`` float32 in [-1, 1],
        ``"index": position in the dataset}``; skipped (unreadable / too small) images are left out and logged.
    """
    _check_scale_resolution(resolution, scale)
    if hasattr(dataset, "features"):
        check_image_column(dataset, image_column)
        dataset = _undecoded(dataset, image_column)
    pairs, skipped = [], 0
    for index, row in enumerate(dataset):
        if max_images is not None and index >= max_images:
            break
        value = row[image_column] if isinstance(row, Mapping) and image_column in row else row
        try:
            pair = make_pair(value, resolution, scale, random_flip=False, preprocess=preprocess, center_crop=True)
        except SkippedImage as exc:
            logger.warning("validation image %d skipped: %s", index, exc)
            skipped += 1
            continue
        pair["index"] = index
        pairs.append(pair)
    if skipped:
        logger.warning("%d validation image(s) skipped, %d kept", skipped, len(pairs))
    return pairs


# ----------------------------------------------------------------------------------------------------------------
# DataLoader workers
# ----------------------------------------------------------------------------------------------------------------

WORKER_MMAP_THRESHOLD = 128 * 1024


def loader_worker_init(worker_id: int) -> None:
    """``worker_init_fn`` of the training DataLoader: pin glibc's mmap threshold at its default 128 KiB.

    Every pair allocates a few crop-sized buffers (the pread band, float HR, intermediate resize) of 77 KB-1 MB.
    glibc raises its mmap threshold after the first such block is freed and serves the rest from the heap, whose
    freed gaps then stayed resident: a worker's own memory (USS) grew by ~14 MB per 64-pair batch without bound
    (``benchmarks/bench_data.py``). A fixed threshold keeps those blocks mmapped and returned on free; the worker
    then stays at a constant ~15 MB of its own pages. Does nothing where the C library is not glibc.
    """
    from sradm_diffusers.sampling.memory import pin_mmap_threshold

    pin_mmap_threshold(WORKER_MMAP_THRESHOLD)
