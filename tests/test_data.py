"""Tests of training/data.py (datasets -> (LR, HR) pairs) and the pure parts of training/prepare_demo_data.py.

Everything runs offline on tiny PNG files written to tmp_path (an imagefolder) and a parquet file made with datasets.
"""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `training.*`

datasets = pytest.importorskip("datasets")

from sradm_diffusers.imresize import imresize  # noqa: E402
from training import data as D  # noqa: E402
from training import prepare_demo_data as P  # noqa: E402


def _noise_image(h, w, seed, channels=3):
    """Random uint8 (h, w, channels) image: every crop of it is unique, so a crop can be located."""
    return np.random.default_rng(seed).integers(0, 256, (h, w, channels), dtype=np.uint8)


@pytest.fixture
def image_folder(tmp_path):
    """imagefolder with train/ (5 good 40..44 x 52 images, a 20x20 one, a corrupt file) and test/ (one image)."""
    root = tmp_path / "imgs"
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    for i in range(5):
        Image.fromarray(_noise_image(40 + i, 52, i)).save(root / "train" / f"good{i}.png")
    Image.fromarray(_noise_image(20, 20, 10)).save(root / "train" / "small.png")
    (root / "train" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not image data")
    Image.fromarray(_noise_image(48, 40, 20)).save(root / "test" / "held.png")
    return root


def _load(root, tmp_path, **kwargs):
    return D.load_image_dataset(train_data_dir=root, cache_dir=str(tmp_path / "hf_cache"), **kwargs)


def _locate(big, crop):
    """(top, left) where ``crop`` (h, w, 3) sits in ``big`` (H, W, 3), or None."""
    h, w = crop.shape[:2]
    for top in range(big.shape[0] - h + 1):
        for left in range(big.shape[1] - w + 1):
            if np.array_equal(big[top : top + h, left : left + w], crop):
                return top, left
    return None


def _to_uint8_hwc(t):
    """(3, H, W) in [-1, 1] from make_pair -> the uint8 (H, W, 3) pixels it came from."""
    return np.round(((t.permute(1, 2, 0).numpy() + 1.0) / 2.0) * 255.0).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------------------
# make_pair
# ---------------------------------------------------------------------------------------------------------------


def test_make_pair_shapes_dtypes_and_ranges():
    image = Image.fromarray(_noise_image(50, 61, 0))
    pair = D.make_pair(image, 32, 4, random_flip=True, generator=torch.Generator().manual_seed(0))
    assert pair["hr"].shape == (3, 32, 32) and pair["lr"].shape == (3, 8, 8)
    assert pair["hr"].dtype == torch.float32 and pair["lr"].dtype == torch.float32
    assert pair["hr"].min() >= -1.0 and pair["hr"].max() <= 1.0
    # noise images use the full range; bicubic LR stays near [-1, 1] (small overshoot allowed)
    assert pair["hr"].min() < -0.9 and pair["hr"].max() > 0.9
    assert pair["lr"].abs().max() < 1.5


def test_hr_is_a_crop_and_lr_is_imresize_of_it_exactly():
    array = _noise_image(45, 57, 1)
    for seed in range(4):
        pair = D.make_pair(array, 24, 4, random_flip=False, generator=torch.Generator().manual_seed(seed))
        crop = _to_uint8_hwc(pair["hr"])
        where = _locate(array, crop)
        assert where is not None, "the HR patch must be an exact crop of the input"
        top, left = where
        hr01 = torch.from_numpy(array[top : top + 24, left : left + 24]).permute(2, 0, 1).float() / 255.0
        assert torch.equal(pair["hr"], hr01 * 2 - 1)
        assert torch.equal(pair["lr"], imresize(hr01, 0.25) * 2 - 1)


def test_flip_is_applied_before_the_degradation():
    array = _noise_image(16, 16, 2)
    hr01 = torch.from_numpy(array).permute(2, 0, 1).float() / 255.0
    flips = set()
    for seed in range(12):
        pair = D.make_pair(array, 16, 2, random_flip=True, generator=torch.Generator().manual_seed(seed))
        flipped = torch.equal(pair["hr"], hr01.flip(-1) * 2 - 1)
        assert flipped or torch.equal(pair["hr"], hr01 * 2 - 1)
        source = hr01.flip(-1) if flipped else hr01
        assert torch.equal(pair["lr"], imresize(source, 0.5) * 2 - 1)
        flips.add(flipped)
    assert flips == {True, False}


def test_alpha_is_composited_on_white():
    rgba = np.zeros((16, 16, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red, fully transparent on the left half, opaque on the right
    rgba[:, 8:, 3] = 255
    pair = D.make_pair(Image.fromarray(rgba, "RGBA"), 16, 4, random_flip=False)
    hr = _to_uint8_hwc(pair["hr"])
    assert (hr[:, :8] == 255).all()  # white
    assert (hr[:, 8:] == [255, 0, 0]).all()


def test_resolution_must_be_a_multiple_of_scale():
    image = _noise_image(64, 64, 3)
    with pytest.raises(ValueError, match="multiple of scale"):
        D.make_pair(image, 30, 4)
    with pytest.raises(ValueError, match="multiple of scale"):
        D.PairDataset([{"image": image}], resolution=30, scale=4)
    with pytest.raises(ValueError, match="scale"):
        D.make_pair(image, 32, 0)
    with pytest.raises(ValueError, match="preprocess"):
        D.make_pair(image, 32, 4, preprocess="ffhq")


def test_celeba_preprocessing_gives_160_hr_and_20_lr_at_8x():
    face = _noise_image(218, 178, 4)  # aligned CelebA size: 178 wide, 218 high
    pair = D.make_pair(face, 160, 8, random_flip=False, preprocess="celeba")
    assert pair["hr"].shape == (3, 160, 160) and pair["lr"].shape == (3, 20, 20)
    # independent: centre crop rows 20..197, then MATLAB bicubic (uint8) to 160x160
    expected = imresize(face[20:198, 0:178], size=(160, 160))
    assert np.array_equal(_to_uint8_hwc(pair["hr"]), expected)
    hr01 = torch.from_numpy(expected).permute(2, 0, 1).float() / 255.0
    assert torch.equal(pair["lr"], imresize(hr01, 1 / 8) * 2 - 1)
    with pytest.raises(D.SkippedImage):
        D.make_pair(_noise_image(170, 178, 5), 160, 8, preprocess="celeba")


def test_small_and_corrupt_images_raise_skipped_image():
    with pytest.raises(D.SkippedImage, match="smaller"):
        D.make_pair(_noise_image(20, 40, 6), 32, 4)
    with pytest.raises(D.SkippedImage, match="unreadable"):
        D.make_pair({"bytes": b"garbage", "path": None}, 32, 4)
    with pytest.raises(D.SkippedImage):
        D.make_pair("/nonexistent/file.png", 32, 4)


# ---------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------


def test_load_imagefolder_splits_and_column_error(image_folder, tmp_path):
    train = _load(image_folder, tmp_path)
    test = _load(image_folder, tmp_path, split="test")
    assert len(train) == 7 and len(test) == 1
    assert train.column_names == ["image"]
    with pytest.raises(ValueError) as info:
        _load(image_folder, tmp_path, image_column="img")
    message = str(info.value)
    assert "'img'" in message and "['image']" in message
    with pytest.raises(ValueError, match="validation"):
        _load(image_folder, tmp_path, split="validation")
    with pytest.raises(ValueError, match="exactly one"):
        D.load_image_dataset()
    with pytest.raises(ValueError, match="does not exist"):
        D.load_image_dataset(train_data_dir=tmp_path / "missing")


@pytest.fixture
def parquet_file(tmp_path):
    images = [Image.fromarray(_noise_image(36, 40, 30 + i)) for i in range(3)]
    ds = datasets.Dataset.from_dict({"hr": images, "lr": images}).cast_column("hr", datasets.Image())
    ds = ds.cast_column("lr", datasets.Image())
    path = tmp_path / "pairs.parquet"
    ds.to_parquet(str(path))
    return path


def test_load_parquet_file_and_column_error_lists_columns(parquet_file, tmp_path):
    ds = D.load_image_dataset(train_data_dir=parquet_file, image_column="hr", cache_dir=str(tmp_path / "c"))
    assert len(ds) == 3 and set(ds.column_names) == {"hr", "lr"}
    same = D.load_image_dataset(dataset_name="parquet", data_files=str(parquet_file), image_column="hr",
                                cache_dir=str(tmp_path / "c"))
    assert len(same) == 3
    with pytest.raises(ValueError) as info:
        D.load_image_dataset(train_data_dir=parquet_file, cache_dir=str(tmp_path / "c"))  # default column 'image'
    assert "'image'" in str(info.value) and "'hr'" in str(info.value) and "'lr'" in str(info.value)
    pairs = D.PairDataset(ds, 32, 4, image_column="hr")
    assert pairs[0]["hr"].shape == (3, 32, 32)


def test_hub_registry_defaults_are_passed_to_load_dataset(monkeypatch):
    calls = []
    rows = datasets.Dataset.from_dict({"image": [None] * 202599, "row": list(range(202599))})

    def fake_load_dataset(path, split=None, streaming=False, cache_dir=None, **kwargs):
        calls.append(dict(path=path, split=split, **kwargs))
        return rows

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    test5000 = D.load_image_dataset(dataset_name="nielsr/CelebA-faces", split="test5000")
    assert calls[-1]["split"] == "train"
    assert len(test5000) == 5000 and test5000[0]["row"] == 182637 and test5000[-1]["row"] == 187636
    train = D.load_image_dataset(dataset_name="nielsr/CelebA-faces", split="train")
    assert len(train) == 162770 and train[-1]["row"] == 162769
    D.load_image_dataset(dataset_name="goodfellowliu/DIV2K", split="validation")
    assert calls[-1]["data_files"] == {"train": "DIV2K_train_HR.zip", "validation": "DIV2K_valid_HR.zip"}
    assert calls[-1]["split"] == "validation"
    spec = D.HUB_DATASETS["eugenesiow/Div2k"]
    assert spec.revision == "refs/convert/parquet" and spec.image_column == "hr"


# ---------------------------------------------------------------------------------------------------------------
# torch datasets, collate, workers
# ---------------------------------------------------------------------------------------------------------------


def test_pair_dataset_skips_and_counts_without_crashing(image_folder, tmp_path):
    pairs = D.PairDataset(_load(image_folder, tmp_path), resolution=32, scale=4, seed=0)
    items = [pairs[i] for i in range(len(pairs))]
    assert sum(item is None for item in items) == 2  # the 20x20 image and the corrupt file
    batch = D.collate_pairs(items)
    assert batch["num_skipped"] == 2
    assert batch["hr"].shape == (5, 3, 32, 32) and batch["lr"].shape == (5, 3, 8, 8)
    assert sorted(batch["index"].tolist()) == [i for i, item in enumerate(items) if item is not None]
    empty = D.collate_pairs([None, None])
    assert empty["hr"] is None and empty["num_skipped"] == 2


def test_image_cache_gives_the_same_pairs_and_still_skips(image_folder, tmp_path):
    dataset = _load(image_folder, tmp_path)
    plain = D.PairDataset(dataset, resolution=32, scale=4, seed=1)
    cached = D.PairDataset(dataset, resolution=32, scale=4, seed=1, cache_images=True)
    for epoch in (0, 1):  # the second epoch reads from the cache
        plain.set_epoch(epoch)
        cached.set_epoch(epoch)
        for i in range(len(plain)):
            a, b = plain[i], cached[i]
            assert (a is None) == (b is None)
            if a is not None:
                assert torch.equal(a["hr"], b["hr"]) and torch.equal(a["lr"], b["lr"])


def test_crops_are_deterministic_in_seed_epoch_and_index():
    same_image = [{"image": _noise_image(64, 64, 7)}] * 4
    a = D.PairDataset(same_image, 16, 4, seed=3)
    b = D.PairDataset(same_image, 16, 4, seed=3)
    assert torch.equal(a[1]["hr"], b[1]["hr"]) and torch.equal(a[1]["lr"], b[1]["lr"])
    assert torch.equal(a[2]["hr"], a[2]["hr"])
    assert not torch.equal(a[1]["hr"], a[2]["hr"])  # same image, different index -> different crop
    assert not torch.equal(D.PairDataset(same_image, 16, 4, seed=4)[1]["hr"], a[1]["hr"])
    first_epoch = a[1]["hr"]
    a.set_epoch(1)
    assert not torch.equal(a[1]["hr"], first_epoch)
    b.set_epoch(1)
    assert torch.equal(a[1]["hr"], b[1]["hr"])  # resuming at epoch 1 reproduces it
    assert D.pair_seed(0, 1, 2) == D.pair_seed(0, 1, 2) != D.pair_seed(0, 2, 1)


def test_dataloader_with_two_workers_matches_single_process(image_folder, tmp_path):
    pairs = D.PairDataset(_load(image_folder, tmp_path), resolution=32, scale=4, seed=1)
    pairs.set_epoch(2)

    def run(num_workers):
        loader = torch.utils.data.DataLoader(pairs, batch_size=3, shuffle=False, num_workers=num_workers,
                                             collate_fn=D.collate_pairs)
        batches = list(loader)
        skipped = sum(b["num_skipped"] for b in batches)
        got = {int(i): hr for b in batches if b["hr"] is not None for i, hr in zip(b["index"], b["hr"])}
        return skipped, got

    skipped0, got0 = run(0)
    skipped2, got2 = run(2)
    assert skipped0 == skipped2 == 2
    assert sorted(got0) == sorted(got2) and len(got0) == 5
    assert all(torch.equal(got0[i], got2[i]) for i in got0)


def test_iterable_dataset_with_workers_and_nodes(image_folder, tmp_path):
    ds = _load(image_folder, tmp_path)
    stream = ds.to_iterable_dataset(num_shards=2)
    pairs = D.make_train_dataset(stream, 32, 4, seed=0, shuffle_buffer_size=4)
    assert isinstance(pairs, D.IterablePairDataset)
    loader = torch.utils.data.DataLoader(pairs, batch_size=2, num_workers=2, collate_fn=D.collate_pairs)
    batches = list(loader)
    assert sum(b["num_skipped"] for b in batches) == 2
    assert sum(b["hr"].shape[0] for b in batches if b["hr"] is not None) == 5

    def sums(rank):
        node = D.IterablePairDataset(ds.to_iterable_dataset(num_shards=2), 32, 4, rank=rank, world_size=2,
                                     shuffle_buffer_size=0)
        return [None if item is None else round(float(item["hr"].double().sum()), 3) for item in node]

    rank0, rank1 = sums(0), sums(1)
    assert len(rank0) + len(rank1) == 7  # every row goes to exactly one process
    assert not set(x for x in rank0 if x is not None) & set(x for x in rank1 if x is not None)

    # datasets' own shuffle: the order depends on the epoch
    one = D.IterablePairDataset(ds.to_iterable_dataset(num_shards=1), 32, 4, shuffle_buffer_size=7, seed=0)
    orders = []
    for epoch in (0, 1, 0):
        one.set_epoch(epoch)
        orders.append([None if item is None else float(item["hr"].double().sum()) for item in one])
    assert orders[0] == orders[2]  # re-running an epoch reproduces it
    assert orders[0] != orders[1]


def test_make_train_dataset_picks_map_style_for_dataset(image_folder, tmp_path):
    pairs = D.make_train_dataset(_load(image_folder, tmp_path), 32, 4, shuffle_buffer_size=10, rank=0, world_size=1)
    assert isinstance(pairs, D.PairDataset) and len(pairs) == 7


# ---------------------------------------------------------------------------------------------------------------
# Validation pairs
# ---------------------------------------------------------------------------------------------------------------


def test_validation_pairs_mod_crop_and_centre_crop():
    images = [_noise_image(37, 50, 40), _noise_image(30, 30, 41), {"bytes": b"junk", "path": None}]
    whole = D.make_validation_pairs(images, scale=4)
    assert [p["index"] for p in whole] == [0, 1]  # the corrupt one is left out
    assert whole[0]["hr"].shape == (3, 36, 48) and whole[0]["lr"].shape == (3, 9, 12)
    assert np.array_equal(_to_uint8_hwc(whole[0]["hr"]), images[0][:36, :48])
    hr01 = torch.from_numpy(images[0][:36, :48]).permute(2, 0, 1).float() / 255
    assert torch.equal(whole[0]["lr"], imresize(hr01, 0.25) * 2 - 1)

    centre = D.make_validation_pairs(images, scale=4, resolution=32)
    assert [p["index"] for p in centre] == [0]  # 30x30 is smaller than 32
    assert np.array_equal(_to_uint8_hwc(centre[0]["hr"]), images[0][2:34, 9:41])
    again = D.make_validation_pairs(images, scale=4, resolution=32)
    assert torch.equal(again[0]["hr"], centre[0]["hr"])


def test_validation_pairs_from_a_dataset(image_folder, tmp_path):
    ds = _load(image_folder, tmp_path)
    paths = [row["image"]["path"] for row in ds.cast_column("image", datasets.Image(decode=False))]
    pairs = D.make_validation_pairs(ds, scale=4, max_images=6)
    # with whole images every readable one is kept, the 20x20 one too; only the corrupt file is left out
    assert [p["index"] for p in pairs] == [i for i in range(6) if not paths[i].endswith("corrupt.png")]
    assert all(p["hr"].shape[1] % 4 == 0 and p["hr"].shape[2] % 4 == 0 for p in pairs)


# ---------------------------------------------------------------------------------------------------------------
# prepare_demo_data: the pure functions
# ---------------------------------------------------------------------------------------------------------------


def test_demo_split_is_deterministic_and_fixed():
    names = [P.output_name(s, n) for s in ("opencv", "skimage", "lomiri") for n in ("baboon", "astronaut", "x y")]
    first = [P.split_for(n) for n in names]
    assert first == [P.split_for(n) for n in reversed(names)][::-1]
    assert P.split_for("opencv_baboon") == "test" and P.split_for("skimage_astronaut") == "test"
    assert P.split_for("opencv_apple") == "train"
    assert all(P.split_for(n) == "test" for n in P.HELD_OUT)
    assert 8 <= len(P.HELD_OUT) <= 12 and len(set(P.HELD_OUT)) == len(P.HELD_OUT)
    assert not set(P.HELD_OUT) & set(P.EXCLUDE)  # a held-out photo is never excluded
    assert P.split_for("custom", held_out=("custom",)) == "test"


def test_demo_second_held_out_list_adds_to_the_first():
    # The first model's ten held-out photos stay held out (its numbers stay comparable); the second list only adds.
    assert len(P.HELD_OUT) == 10 and "matplotlib_grace_hopper" in P.HELD_OUT
    assert all(P.split_for(n) == "test" for n in P.HELD_OUT + P.HELD_OUT_2)
    assert not set(P.HELD_OUT_2) & set(P.HELD_OUT)
    assert not set(P.HELD_OUT_2) & set(P.EXCLUDE) and all(P.exclusion_reason(n) is None for n in P.HELD_OUT_2)
    sources = {n.split("_", 1)[0] for n in P.HELD_OUT_2}
    assert sources <= {prefix for prefix, _ in P.DEBIAN_SOURCES.values()} | {"gradio"} | {
        prefix for prefix, _, _ in P.WHEEL_IMAGES.values()}
    # the sets reserved for independent evaluation are never a source
    assert not {"mate-backgrounds", "plasma-workspace-wallpapers"} & set(P.DEBIAN_PACKAGES)


DEP5 = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: wallpapers

Files: *
Copyright: 2020 Someone
License: GPL-3+
 The licence text continues here.

Files: 16.04/bridge.jpg
 16.04/tower.jpg
Copyright: 2018 A Photographer
License: CC-BY-SA-4.0

Files: debian/*
Copyright: 2021 A Maintainer
License: Expat
"""


def test_dep5_licence_last_matching_stanza_wins_and_tails_match():
    stanzas = P.parse_dep5(DEP5)
    assert stanzas == [(("*",), "GPL-3+"), (("16.04/bridge.jpg", "16.04/tower.jpg"), "CC-BY-SA-4.0"),
                       (("debian/*",), "Expat")]
    assert P.dep5_licence(stanzas, "usr/share/backgrounds/16.04/tower.jpg") == "CC-BY-SA-4.0"  # a tail matches
    assert P.dep5_licence(stanzas, "usr/share/backgrounds/other.jpg") == "GPL-3+"
    # no stanza matches by path: a wildcard-free file name decides (installed flat, listed under 16.04/) ...
    without_star = [s for s in stanzas if s[0] != ("*",)]
    assert P.dep5_licence(without_star, "usr/share/backgrounds/bridge.jpg") == "CC-BY-SA-4.0"
    # ... but "debian/*" does not match every file by its "*" name, and an unlisted file has no licence
    assert P.dep5_licence(without_star, "usr/share/backgrounds/other.jpg") is None
    assert P.parse_dep5("no stanzas here") == []


def test_desktop_licence_reads_kde_plugin_fields():
    text = "[Desktop Entry]\nName=Bee\nName[de]=Biene\nX-KDE-PluginInfo-Author=J. Severns\n" \
           "X-KDE-PluginInfo-License=Public Domain\n"
    assert P.desktop_licence(text) == "Public Domain (J. Severns)"
    assert P.desktop_licence("X-KDE-PluginInfo-License=FDL\n") == "FDL"
    assert P.desktop_licence("[Desktop Entry]\nName=x\n") is None


def test_demo_naming_filtering_and_sizes():
    assert P.output_name("lomiri", "Wine by J.Mede") == "lomiri_Wine_by_J_Mede"
    assert P.exclusion_reason("opencv_starry_night") == "painting"
    assert P.exclusion_reason("opencv_pic3") is not None
    assert P.exclusion_reason("opencv_text_scenetext_word01") is not None
    assert P.exclusion_reason("opencv_text_scenetext01") is None
    assert P.exclusion_reason("opencv_baboon") is None
    grey = np.repeat(_noise_image(300, 300, 50, channels=1), 3, axis=2)
    assert "greyscale" in P.quality_reason(grey)
    assert "too small" in P.quality_reason(_noise_image(255, 400, 51))
    assert P.quality_reason(_noise_image(256, 400, 52)) is None
    assert P.target_size(6000, 4000, 1024) == (1024, 683)
    assert P.target_size(2056, 3088, 1024) == (682, 1024)
    assert P.target_size(500, 333, 1024) == (500, 333)
    big = Image.fromarray(_noise_image(40, 100, 53))
    assert P.limit_size(big, 50).size == (50, 20)
    assert P.list_digest([("b", "2"), ("a", "1")]) == P.list_digest([("a", "1"), ("b", "2")])
    assert P.list_digest([("a", "1")]) != P.list_digest([("a", "2")])
    with pytest.raises(ValueError, match="max_side"):
        P.target_size(10, 10, 0)
