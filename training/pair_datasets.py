"""torch datasets of training and validation pairs (:mod:`training.pairs`) over loaded image data sets.

* :class:`PairDataset` (map-style) and :class:`IterablePairDataset` (streaming): apply ``make_pair``, return
  ``None`` for a skipped image; :func:`collate_pairs` drops the ``None`` entries and reports how many it dropped in
  the batch (``batch["num_skipped"]``), so the skipped count is right with any number of DataLoader workers.
  Random crops come from a generator seeded by ``(seed, epoch, index)``: resuming at an epoch reproduces its data.
* :func:`make_train_dataset`: picks the right wrapper for a loaded dataset; for map-style data it can first
  extract the images once into an on-disk store (:mod:`training.image_store`), so that workers read crops instead
  of decoding whole images: the same pairs, far faster (``benchmarks/bench_data.py``).
* :func:`make_validation_pairs`: fixed centre crops (or whole images cropped to a multiple of the scale).
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from PIL import Image

from training import image_store
from training.pairs import (
    SkippedImage, check_preprocess, check_scale_resolution, crop_box, decode_for_store, decode_image, make_pair,
    pair_from_crop,
)
from training.seeds import pair_seed
from training.sources import check_image_column, undecoded

logger = logging.getLogger(__name__)


class _PairOptions:
    """The :func:`make_pair` options both pair datasets share, checked once.

    Args (keywords of both datasets):
        image_column: the HR image column.
        random_flip, preprocess, random_vflip, random_rot90: see :func:`make_pair`.
        seed: base seed of the crops.
    """

    def _init_options(self, resolution: int, scale: int, image_column: str = "image", random_flip: bool = True,
                      preprocess: Optional[str] = None, seed: int = 0, random_vflip: bool = False,
                      random_rot90: bool = False) -> None:
        check_scale_resolution(resolution, scale)
        check_preprocess(preprocess)
        if resolution is None:
            raise ValueError(f"{type(self).__name__} needs a fixed resolution (crops must stack into a batch).")
        self.image_column = image_column
        self.resolution, self.scale = int(resolution), int(scale)
        self.random_flip, self.random_vflip, self.random_rot90 = random_flip, random_vflip, random_rot90
        self.preprocess = preprocess
        self.seed = int(seed)
        self.epoch = 0

    def _make_pair(self, value: Any, generator: torch.Generator) -> Dict[str, torch.Tensor]:
        """:func:`make_pair` of one image value with these options."""
        return make_pair(value, self.resolution, self.scale, self.random_flip, self.preprocess, generator,
                         random_vflip=self.random_vflip, random_rot90=self.random_rot90)


class PairDataset(_PairOptions, torch.utils.data.Dataset):
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
        resolution, scale: see :func:`make_pair`.
        cache_images: keep every decoded image in memory after its first use. For small sets (the CPU demo:
            45 photos, ~130 MB decoded) this removes PNG decoding from every step; leave it off for large sets.
            Each DataLoader worker process holds its own cache. Ignored with ``store``.
        store: extracted images (``preprocess`` already applied to them).
        options: ``image_column``, ``random_flip``, ``preprocess``, ``seed``, ``random_vflip``, ``random_rot90``
            (:class:`_PairOptions`).
    """

    def __init__(self, dataset, resolution: int, scale: int, cache_images: bool = False, store=None, **options):
        self._init_options(resolution, scale, **options)
        if store is None:
            check_image_column(dataset, self.image_column)
            self.dataset = undecoded(dataset, self.image_column)
        else:
            if dataset is not None and len(dataset) != len(store):
                raise ValueError(f"the store holds {len(store)} images but the dataset has {len(dataset)} rows.")
            self.dataset = None  # workers need only the store: no Arrow table or row cache in them
        self.store = store
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
                pair = self._make_pair(self._image(index), generator)
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


class IterablePairDataset(_PairOptions, torch.utils.data.IterableDataset):
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
        options: as :class:`PairDataset`'s.
    """

    def __init__(self, dataset, resolution: int, scale: int, shuffle_buffer_size: int = 1000, rank: int = 0,
                 world_size: int = 1, **options):
        import datasets
        from datasets.distributed import split_dataset_by_node

        self._init_options(resolution, scale, **options)
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} must be in [0, world_size={world_size}).")
        if isinstance(dataset, datasets.Dataset):
            dataset = dataset.to_iterable_dataset()
        check_image_column(dataset, self.image_column)
        dataset = undecoded(dataset, self.image_column)
        if shuffle_buffer_size and shuffle_buffer_size > 0:
            dataset = dataset.shuffle(seed=self.seed, buffer_size=shuffle_buffer_size)
        if world_size > 1:
            dataset = split_dataset_by_node(dataset, rank=rank, world_size=world_size)
        self.dataset = dataset
        self.rank = int(rank)

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
                pair = self._make_pair(row[self.image_column], generator)
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
    check_preprocess(preprocess)
    check_image_column(dataset, image_column)
    preprocess = None if preprocess == "none" else preprocess
    decode = functools.partial(decode_for_store, preprocess=preprocess)
    return image_store.open_or_extract(undecoded(dataset, image_column), image_column, decode,
                                       preprocess=preprocess, cache_dir=cache_dir, num_workers=num_workers)


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
    check_scale_resolution(resolution, scale)
    if hasattr(dataset, "features"):
        check_image_column(dataset, image_column)
        dataset = undecoded(dataset, image_column)
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
