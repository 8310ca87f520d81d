"""The extracted-image training path (training/image_store.py and PairDataset(store=...)).

Every pair is checked against an independent computation on the source image file: the HR patch must be found as
an exact crop of the decoded image and the LR must equal ``imresize`` of it. The store must hold no decoded image
in the dataset object, reproduce any epoch from ``(seed, epoch, index)`` (mid-epoch resume, persistent workers),
follow changes of the folder, and survive a damaged or unfinished store.
"""

import json
import logging
import os
import pickle
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `training.*`

datasets = pytest.importorskip("datasets")

from sradm_diffusers.imresize import imresize  # noqa: E402
from training import data as D  # noqa: E402
from training import image_store as S  # noqa: E402
from training import train_utils as tu  # noqa: E402

SIZES = [(70, 90), (64, 64), (81, 100), (66, 75)]  # (h, w) of the good images


def _noise(h, w, seed):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture
def folder(tmp_path):
    """imagefolder: 4 noise PNGs of SIZES, a 20x20 one (too small for 32 px crops) and a corrupt file."""
    root = tmp_path / "imgs" / "train"
    root.mkdir(parents=True)
    for i, (h, w) in enumerate(SIZES):
        Image.fromarray(_noise(h, w, i)).save(root / f"img{i}.png")
    Image.fromarray(_noise(20, 20, 9)).save(root / "small.png")
    (root / "zz_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not image data")
    return tmp_path / "imgs"


def _load(folder, tmp_path):
    return D.load_image_dataset(train_data_dir=folder, cache_dir=str(tmp_path / "hf"))


def _sources(dataset):
    """Row index -> decoded uint8 (H, W, 3) of the row's file (None if unreadable), decoded here with PIL."""
    out = []
    for row in D._undecoded(dataset, "image"):
        try:
            out.append(np.asarray(Image.open(row["image"]["path"]).convert("RGB")))
        except Exception:  # noqa: BLE001 - the corrupt file
            out.append(None)
    return out


def _locate(big, crop):
    h, w = crop.shape[:2]
    for top in range(big.shape[0] - h + 1):
        for left in range(big.shape[1] - w + 1):
            if np.array_equal(big[top : top + h, left : left + w], crop):
                return top, left
    return None


def _u8(t):
    return np.round((t.permute(1, 2, 0).numpy() + 1.0) / 2.0 * 255.0).astype(np.uint8)


def test_pairs_are_crops_of_the_right_image_at_varying_positions_and_lr_is_imresize(folder, tmp_path):
    dataset = _load(folder, tmp_path)
    sources = _sources(dataset)
    pairs = D.make_train_dataset(dataset, 32, 4, extract=True, cache_dir=str(tmp_path / "hf"), random_flip=False,
                                 seed=5)
    assert pairs.store is not None and pairs.dataset is None
    positions = {}
    for epoch in range(3):
        for index, source in enumerate(sources):
            pair = pairs[(epoch, index)]
            if source is None or min(source.shape[:2]) < 32:
                assert pair is None  # unreadable / too small: skipped, as without the store
                continue
            hr = _u8(pair["hr"])
            where = _locate(source, hr)
            assert where is not None, f"item {index} is not a crop of its own image"
            positions.setdefault(index, set()).add(where)
            hr01 = torch.from_numpy(source[where[0] : where[0] + 32, where[1] : where[1] + 32].copy()).permute(2, 0, 1)
            hr01 = hr01.float() / 255.0
            assert torch.equal(pair["hr"], hr01 * 2 - 1)
            assert torch.equal(pair["lr"], imresize(hr01, 0.25) * 2 - 1)
            assert pair["index"] == index
    assert len(positions) == len(SIZES)
    assert all(len(p) > 1 for p in positions.values()), "crop positions must change with the epoch"


def test_store_gives_the_same_pairs_as_decoding_each_image(folder, tmp_path):
    dataset = _load(folder, tmp_path)
    kwargs = dict(random_flip=True, random_vflip=True, random_rot90=True, seed=11)
    stored = D.make_train_dataset(dataset, 32, 4, extract=True, cache_dir=str(tmp_path / "hf"), **kwargs)
    decoded = D.make_train_dataset(dataset, 32, 4, extract=False, **kwargs)
    assert decoded.store is None
    for epoch in range(2):
        for index in range(len(dataset)):
            a, b = stored[(epoch, index)], decoded[(epoch, index)]
            assert (a is None) == (b is None)
            if a is not None:
                assert torch.equal(a["hr"], b["hr"]) and torch.equal(a["lr"], b["lr"])


def test_dataset_holds_no_decoded_image_and_reads_a_band_per_crop(tmp_path):
    root = tmp_path / "big" / "train"
    root.mkdir(parents=True)
    for i in range(6):
        Image.fromarray(_noise(300, 400, i)).save(root / f"b{i}.png")
    dataset = _load(tmp_path / "big", tmp_path)
    total_pixels = 6 * 300 * 400 * 3
    stored = D.make_train_dataset(dataset, 32, 4, extract=True, cache_dir=str(tmp_path / "hf"))
    cached = D.make_train_dataset(dataset, 32, 4, extract=False, cache_images=True)
    tracemalloc.start()
    for index in range(len(stored)):
        stored[(0, index)]
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    band = 32 * 400 * 3
    assert peak < 4 * band + 200_000, f"reading crops allocated {peak} bytes at peak; one band is {band}"
    for index in range(len(cached)):
        cached[(0, index)]
    # What a spawned worker receives (and a forked one keeps): the store index, not pixels. The in-memory image
    # cache, for contrast, carries every decoded image.
    assert len(pickle.dumps(stored)) < total_pixels / 100
    assert len(pickle.dumps(cached)) > total_pixels


def _batches(pairs, sampler, workers, epoch, start=0, count=None):
    loader = torch.utils.data.DataLoader(
        pairs, batch_size=sampler.batch_size, sampler=D.EpochTaggedSampler(sampler), collate_fn=D.collate_pairs,
        num_workers=workers, persistent_workers=workers > 0, worker_init_fn=D.loader_worker_init)
    out = []
    for e in range(epoch, epoch + 2):
        sampler.set_position(e, start if e == epoch else 0)
        for batch in loader:
            out.append((e, batch["index"].tolist(), batch["hr"], batch["lr"]))
    out = out if count is None else out[:count]
    for e, indices, hr, lr in out:  # each batch = the epoch's pairs, computed here item by item in this process
        expected = D.collate_pairs([pairs[(e, i)] for i in indices])
        assert torch.equal(hr, expected["hr"]) and torch.equal(lr, expected["lr"])
    return out


def test_resume_mid_epoch_with_persistent_workers_is_exact(tmp_path):
    root = tmp_path / "many" / "train"
    root.mkdir(parents=True)
    for i in range(12):
        Image.fromarray(_noise(48 + i, 56, i)).save(root / f"m{i:02d}.png")
    dataset = _load(tmp_path / "many", tmp_path)
    pairs = D.make_train_dataset(dataset, 32, 4, extract=True, cache_dir=str(tmp_path / "hf"), random_flip=True,
                                 seed=2)
    sampler = tu.ShardedEpochSampler(len(pairs), 3, seed=2)  # 4 batches per epoch
    straight = _batches(pairs, sampler, workers=2, epoch=0)  # epochs 0 and 1 with the same two workers
    assert len(straight) == 8
    in_process = _batches(pairs, sampler, workers=0, epoch=0)
    resumed = _batches(pairs, sampler, workers=2, epoch=1, start=2, count=2)  # resume at epoch 1, batch 2
    for a, b in zip(straight, in_process):
        assert a[:2] == b[:2] and torch.equal(a[2], b[2]) and torch.equal(a[3], b[3])
    for a, b in zip(straight[6:], resumed):
        assert a[:2] == b[:2] and torch.equal(a[2], b[2]) and torch.equal(a[3], b[3])
    # epoch 1 is not a replay of epoch 0: other order and other crops of the same images
    assert [b[1] for b in straight[:4]] != [b[1] for b in straight[4:]]


def _store(folder, tmp_path):
    return D.open_store(_load(folder, tmp_path), cache_dir=str(tmp_path / "hf"))


def test_store_follows_changes_of_the_folder(folder, tmp_path, monkeypatch):
    first = _store(folder, tmp_path)
    assert _store(folder, tmp_path).folder == first.folder  # unchanged folder: the same store, reused
    # replace one image (new content, new mtime): a new store with the new pixels
    path = folder / "train" / "img1.png"
    new = _noise(64, 64, 99)
    Image.fromarray(new).save(path)
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    second = _store(folder, tmp_path)
    assert second.folder != first.folder
    rows = [row["image"]["path"] for row in D._undecoded(_load(folder, tmp_path), "image")]
    np.testing.assert_array_equal(second.read_image(rows.index(str(path))), new)
    # a new file: another store, one row longer
    Image.fromarray(_noise(40, 40, 7)).save(folder / "train" / "img_new.png")
    third = _store(folder, tmp_path)
    assert third.folder not in (first.folder, second.folder) and len(third) == len(second) + 1

    # an unchanged folder never extracts again
    def refuse(*args, **kwargs):
        raise AssertionError("extracted again although nothing changed")

    monkeypatch.setattr(S, "extract_images", refuse)
    assert _store(folder, tmp_path).folder == third.folder


@pytest.mark.parametrize("damage", ["truncate", "index", "version"])
def test_damaged_store_is_extracted_again(folder, tmp_path, damage, caplog):
    store = _store(folder, tmp_path)
    expected = [store.read_image(i) if store.size(i) else None for i in range(len(store))]
    pixels, index = Path(store.folder) / S.PIXELS, Path(store.folder) / S.INDEX
    if damage == "truncate":
        with open(pixels, "r+b") as handle:
            handle.truncate(pixels.stat().st_size - 1000)
    elif damage == "index":
        index.write_text('{"version": 1, "entries": [')
    else:
        meta = json.loads(index.read_text())
        meta["version"] = 0
        index.write_text(json.dumps(meta))
    with pytest.raises(S.StoreDamaged):
        S.ImageStore(store.folder)
    with caplog.at_level(logging.WARNING):
        again = _store(folder, tmp_path)
    assert "damaged" in caplog.text and again.folder == store.folder
    for i, image in enumerate(expected):
        if image is None:
            assert again.size(i) is None and again.skip_reason(i)
        else:
            np.testing.assert_array_equal(again.read_image(i), image)


def test_store_key_follows_each_local_file(tmp_path):
    """The key tracks each referenced file itself, also where the datasets fingerprint does not (rows built
    from paths: same paths, same fingerprint)."""
    paths = []
    for i in range(3):
        paths.append(str(tmp_path / f"k{i}.png"))
        Image.fromarray(_noise(40, 40, i)).save(paths[-1])

    def key():
        rows = datasets.Dataset.from_dict({"image": [{"path": p, "bytes": None} for p in paths]},
                                          features=datasets.Features({"image": datasets.Image(decode=False)}))
        return rows._fingerprint, S.store_key(rows, "image", None)

    fingerprint, first = key()
    Image.fromarray(_noise(40, 40, 50)).save(paths[1])
    os.utime(paths[1], ns=(time.time_ns(), time.time_ns() + 10**9))
    assert key() == (fingerprint, key()[1]) and key()[1] != first
    assert S.store_key(datasets.Dataset.from_dict({"image": [{"path": p, "bytes": None} for p in paths]},
                                                  features=datasets.Features({"image": datasets.Image(decode=False)})),
                       "image", "celeba") != key()[1]  # the preprocessing is part of the key


KILL_SCRIPT = """
import os, sys
sys.path.insert(0, {root!r})
from training import data as D, image_store as S
dataset = D._undecoded(D.load_image_dataset(train_data_dir={folder!r}, cache_dir={cache!r}), "image")
calls = []
def decode(value):
    calls.append(1)
    if len(calls) == 3:
        os._exit(9)  # killed in the middle of the extraction: no cleanup runs
    return D.decode_for_store(value)
S.open_or_extract(dataset, "image", decode, cache_dir={cache!r})
"""


def test_killed_extraction_leaves_no_store_and_the_next_run_completes_it(folder, tmp_path):
    import subprocess

    cache = str(tmp_path / "hf")
    _load(folder, tmp_path)
    script = KILL_SCRIPT.format(root=str(Path(__file__).resolve().parents[1]), folder=str(folder), cache=cache)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1"))
    assert result.returncode == 9, result.stderr[-2000:]
    root = Path(S.default_cache_root(cache))
    assert [p.name for p in root.iterdir() if ".tmp-" not in p.name] == []  # only the unfinished temporary
    store = _store(folder, tmp_path)
    assert len(store) == len(SIZES) + 2 and store.size(0) is not None


def test_interrupted_extraction_leaves_no_store(folder, tmp_path):
    dataset = _load(folder, tmp_path)
    calls = []

    def decode_then_fail(value):
        calls.append(value)
        if len(calls) == 3:
            raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of the extraction
        return D.decode_for_store(value)

    root = Path(S.default_cache_root(str(tmp_path / "hf")))
    with pytest.raises(KeyboardInterrupt):
        S.open_or_extract(D._undecoded(dataset, "image"), "image", decode_then_fail, cache_dir=str(tmp_path / "hf"))
    assert list(root.iterdir()) == []  # neither a store nor its temporary folder
    store = _store(folder, tmp_path)  # the next run extracts it completely
    assert len(store) == len(dataset)


def test_skipped_rows_are_counted_through_the_store(folder, tmp_path):
    dataset = _load(folder, tmp_path)
    pairs = D.make_train_dataset(dataset, 32, 4, extract=True, cache_dir=str(tmp_path / "hf"))
    batch = D.collate_pairs([pairs[(0, i)] for i in range(len(pairs))])
    assert batch["num_skipped"] == 2 and batch["hr"].shape == (len(SIZES), 3, 32, 32)
    reasons = [pairs.store.skip_reason(i) for i in range(len(pairs))]
    assert sum(r is not None for r in reasons) == 1 and "unreadable" in [r for r in reasons if r][0]


def test_when_extraction_is_used():
    assert D.should_extract(None, False, None) and D.should_extract(None, False, "none")
    assert not D.should_extract(None, False, "celeba") and D.should_extract(True, False, "celeba")
    assert not D.should_extract(None, True, None) and not D.should_extract(False, False, None)
    with pytest.raises(ValueError, match="streaming"):
        D.should_extract(True, True, None)
