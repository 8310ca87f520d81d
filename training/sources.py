"""Where training images come from: Hub data sets, local image folders and parquet files, as ``datasets`` splits.

* :data:`HUB_DATASETS`: the supported Hugging Face Hub data sets, their columns and splits (one place).
* :func:`load_image_dataset`: a ``datasets.Dataset`` / ``IterableDataset`` from the Hub, a local image folder
  (``imagefolder``: ``train/`` and ``test/`` sub-folders become splits) or a parquet file, its image column checked.
* :func:`undecoded`: the image column left as bytes, so that a corrupt file is skipped when its pair is made
  instead of crashing ``datasets``' decoder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union


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
    index_range, source_split = None, split
    if train_data_dir is not None:
        builder, kwargs, where = _local_source(train_data_dir)
    else:
        spec = HUB_DATASETS.get(dataset_name)
        if spec is not None:
            data_files = data_files if data_files is not None else spec.data_files
            revision = revision if revision is not None else spec.revision
            dataset_config_name = dataset_config_name or spec.dataset_config_name
            if split in spec.index_splits:
                source_split, index_range = spec.source_split, spec.index_splits[split]
        builder, where = dataset_name, dataset_name
        kwargs = dict(name=dataset_config_name, data_files=dict(data_files) if isinstance(data_files, Mapping)
                      else data_files, revision=revision)
    try:
        ds = datasets.load_dataset(builder, split=source_split, streaming=streaming, cache_dir=cache_dir, **kwargs)
    except ValueError as exc:
        if "split" in str(exc).lower():
            raise ValueError(f"split={split!r} is not available in {where}: {exc}") from exc
        raise
    if index_range is not None:
        ds = _select_rows(ds, index_range, streaming, f"split={split!r} of {where}", source_split)
    check_image_column(ds, image_column, where)
    return ds


def _local_source(train_data_dir: Union[str, os.PathLike]) -> Tuple[str, Dict[str, Any], str]:
    """``(builder, load_dataset kwargs, description)`` of a local image folder or ``.parquet`` file."""
    path = Path(train_data_dir)
    if not path.exists():
        raise ValueError(f"train_data_dir={str(path)!r} does not exist; pass a folder of images or a .parquet file.")
    if path.is_file():
        if path.suffix != ".parquet":
            raise ValueError(f"train_data_dir={str(path)!r} is a file but not .parquet; pass a folder of images.")
        return "parquet", dict(data_files={"train": str(path)}), str(path)
    return "imagefolder", dict(data_dir=str(path), drop_labels=True), str(path)


def _select_rows(ds, index_range: Tuple[int, int], streaming: bool, what: str, source_split: str):
    """The rows ``start..stop-1`` of ``ds`` (a virtual split of :data:`HUB_DATASETS`)."""
    start, stop = index_range
    if streaming:
        return ds.skip(start).take(stop - start)
    if len(ds) < stop:
        raise ValueError(
            f"{what} needs rows {start}..{stop - 1}, but the {source_split!r} split has only {len(ds)} rows; use "
            "split='all' or check the dataset."
        )
    return ds.select(range(start, stop))


def undecoded(dataset, image_column: str):
    """Cast an ``Image`` column to ``decode=False`` so that a corrupt file is skipped here instead of crashing."""
    import datasets

    features = getattr(dataset, "features", None)
    if features is not None and isinstance(features.get(image_column), datasets.Image):
        if features[image_column].decode:
            dataset = dataset.cast_column(image_column, datasets.Image(decode=False))
    return dataset
