"""No data loss and no silent failure (issue 24): the newer commands (``sradm interpolate``, ``sradm fuse``), odd
things at an output path (symlinks, FIFOs, devices, read-only and full file systems), odd inputs, and training that
diverges, is told to train nothing, or meets a full disk.

Every bad input is made the way a user meets it: a real symbolic link, a real FIFO (``os.mkfifo``), a device node
(``mknod``, root only), a read-only or tiny ``tmpfs`` mount (root only), else the test is skipped and says why.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from sradm_diffusers.commands.cli import main
from sradm_diffusers.sampling.memory import MEMORY_LIMIT_ENV

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from training import train_utils as tu  # noqa: E402
from test_train import common, run  # noqa: E402


def _png(path: Path, h: int = 8, w: int = 10, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def _mask(path: Path, value: int, h: int = 32, w: int = 40) -> Path:
    array = np.zeros((h, w), np.uint8)
    array[:, w // 2 :] = value
    PIL.Image.fromarray(array, "L").save(path)
    return path


def _tree(root: Path) -> dict[str, bytes | str]:
    """Every entry under ``root``: file bytes, or what a non-regular entry is."""
    out = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            out[key] = f"link->{os.readlink(path)}"
        elif path.is_dir():
            out[key] = "dir"
        elif stat.S_ISREG(path.lstat().st_mode):
            out[key] = path.read_bytes()
        else:
            out[key] = f"mode {oct(path.lstat().st_mode)}"
    return out


def _cli(argv, capsys) -> tuple[int, str]:
    capsys.readouterr()
    status = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return status, err


def _one_error_line(err: str, pattern: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("sradm: error:") or line.startswith("error:")]
    assert len(lines) == 1, err
    assert re.search(pattern, lines[0]), lines[0]
    return lines[0]


@contextlib.contextmanager
def _tmpfs(path: Path, options: str):
    """A tmpfs mounted at ``path`` (skip the test when this machine does not allow it)."""
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root and mount rights): {result.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(folder: Path) -> None:
    """Fill a small file system to the last block."""
    handle = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(handle, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(handle)
    assert shutil.disk_usage(folder).free < 8192


# ----------------------------------------------------------------------------------------------------- item 1
@pytest.mark.parametrize("which", ["input", "reference", "mask"])
def test_fuse_refuses_to_overwrite_an_input(which, tmp_path, model_dir, capsys):
    files = {"input": _png(tmp_path / "photo.png"), "reference": _png(tmp_path / "ref.png", 32, 40, seed=1),
             "mask": _mask(tmp_path / "mask.png", 255)}
    before = _tree(tmp_path)
    status, err = _cli(["fuse", files["input"], "--reference", files["reference"], "--mask", files["mask"],
                        "-o", files[which], "--steps", "2", "--model", model_dir], capsys)
    assert status == 2
    _one_error_line(err, rf"-o '.*{files[which].name}' would overwrite an input file")
    assert _tree(tmp_path) == before


def test_interpolate_refuses_to_overwrite_its_input_also_through_a_link(tmp_path, model_dir, capsys):
    photo = _png(tmp_path / "photo.png")
    (tmp_path / "alias.png").symlink_to(photo)
    before = _tree(tmp_path)
    for out in (photo, tmp_path / "alias.png"):
        status, err = _cli(["interpolate", photo, "-o", out, "--frames", "2", "--steps", "2", "--model", model_dir],
                           capsys)
        assert status == 2
        _one_error_line(err, r"would overwrite an input file")
    assert _tree(tmp_path) == before


# ----------------------------------------------------------------------------------------------------- item 3
def test_output_symlink_is_written_through_and_kept(tmp_path, model_dir, capsys):
    """-o link.png where link.png -> real/target.png: the link stays, the target gets the image, no temp left."""
    photo = _png(tmp_path / "in" / "p.png")
    target = tmp_path / "real" / "target.png"
    target.parent.mkdir()
    target.write_bytes(b"old content")
    link = tmp_path / "out" / "link.png"
    link.parent.mkdir()
    link.symlink_to(target)
    status, err = _cli(["upscale", photo, "-o", link, "--steps", "1", "--model", model_dir], capsys)
    assert status == 0, err
    assert link.is_symlink() and os.readlink(link) == str(target)
    with PIL.Image.open(target) as image:
        assert image.size == (40, 32)
    assert sorted(os.listdir(target.parent)) == ["target.png"] and sorted(os.listdir(link.parent)) == ["link.png"]


def test_evaluate_json_through_a_symlink(tmp_path, capsys):
    _png(tmp_path / "hr" / "a.png", 32, 32)
    target = tmp_path / "results.json"
    target.write_text("{}")
    (tmp_path / "link.json").symlink_to(target)
    status, err = _cli(["evaluate", "--hr-dir", tmp_path / "hr", "--scale", "4", "--methods", "bicubic",
                        "--json", tmp_path / "link.json"], capsys)
    assert status == 0, err
    assert (tmp_path / "link.json").is_symlink()
    assert '"n_images": 1' in target.read_text()


def _fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("command", ["upscale", "interpolate", "evaluate"])
def test_fifo_at_the_output_path_is_refused_and_kept(command, tmp_path, model_dir, capsys):
    photo = _png(tmp_path / "in" / "p.png", 16, 16)
    fifo = _fifo(tmp_path / "out" / ("r.json" if command == "evaluate" else "r.png"))
    argv = {
        "upscale": ["upscale", photo, "-o", fifo, "--steps", "1", "--model", model_dir],
        "interpolate": ["interpolate", photo, "-o", fifo, "--frames", "2", "--steps", "1", "--model", model_dir],
        "evaluate": ["evaluate", "--hr-dir", photo.parent, "--scale", "4", "--methods", "bicubic", "--json", fifo],
    }[command]
    before = _tree(tmp_path)
    status, err = _cli(argv, capsys)
    assert status == 2
    _one_error_line(err, r"r\.(png|json) is a FIFO \(named pipe\), not a regular file")
    assert stat.S_ISFIFO(fifo.lstat().st_mode) and _tree(tmp_path) == before


def test_character_device_at_the_json_path_is_refused_and_kept(tmp_path, capsys):
    """The drill's case: a copy of /dev/full (mknod NAME c 1 7) as --json."""
    device = tmp_path / "full"
    result = subprocess.run(["mknod", str(device), "c", "1", "7"], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"mknod needs root (CAP_MKNOD) here: {result.stderr.strip()}")
    _png(tmp_path / "hr" / "a.png", 16, 16)
    status, err = _cli(["evaluate", "--hr-dir", tmp_path / "hr", "--scale", "4", "--methods", "bicubic",
                        "--json", device], capsys)
    assert status == 2
    _one_error_line(err, r"full is a character device, not a regular file")
    assert stat.S_ISCHR(device.lstat().st_mode)


def test_atomic_writer_refuses_a_device_a_fifo_a_folder_and_a_looping_link(tmp_path):
    """Only nodes made in tmp_path: a test must never point a writer at a system device such as /dev/null."""
    from sradm_diffusers.commands.atomic import NotARegularFileError, replacing

    loop = tmp_path / "loop.json"
    loop.symlink_to(loop)
    (tmp_path / "folder").mkdir()
    cases = [(loop, "loops"), (_fifo(tmp_path / "pipe"), "FIFO"), (tmp_path / "folder", "a folder")]
    device = tmp_path / "null"
    if subprocess.run(["mknod", str(device), "c", "1", "3"], capture_output=True).returncode == 0:
        cases.append((device, "a character device"))  # a copy of /dev/null (root only)
    before = _tree(tmp_path)
    for path, kind in cases:
        with pytest.raises(NotARegularFileError, match=kind):
            with replacing(str(path)) as tmp:
                Path(tmp).write_text("x")
    assert _tree(tmp_path) == before


# ----------------------------------------------------------------------------------------------------- item 5
def test_absurdly_small_tiles_are_refused_with_the_minimum(tmp_path, model_dir, capsys):
    from sradm_diffusers.defaults import MIN_TILE

    photo = _png(tmp_path / "p.png", 64, 64)
    for tile in (MIN_TILE - 1, 1):
        status, err = _cli(["upscale", photo, "--tile", tile, "--tile-overlap", 0, "-o", tmp_path / "out",
                            "--model", model_dir], capsys)
        assert status == 2
        _one_error_line(err, rf"--tile {tile}: tiles smaller than {MIN_TILE} input pixels .* use --tile {MIN_TILE} or")
    assert not (tmp_path / "out").exists()
    status, err = _cli(["upscale", photo, "--tile", MIN_TILE, "--tile-overlap", 0, "--steps", 1, "-o",
                        tmp_path / "out", "--model", model_dir], capsys)
    assert status == 0, err


# ----------------------------------------------------------------------------------------------------- item 6
def _interpolate(tmp, model_dir, *extra, out="strip.png"):
    return ["interpolate", _png(tmp / "p.png"), "-o", tmp / out, "--steps", "2", "--model", model_dir, *extra]


def _fuse(tmp, model_dir, *extra, out="fused.png", mask=255):
    return ["fuse", _png(tmp / "p.png"), "--reference", _png(tmp / "ref.png", 32, 40, seed=1),
            "--mask", _mask(tmp / "mask.png", mask), "-o", tmp / out, "--steps", "2", "--model", model_dir, *extra]


FRONT_END_CASES = [
    ("interpolate_steps_too_many", lambda t, m: _interpolate(t, m, "--steps", 1000),
     r"--steps 1000: use 1\.\.100"),
    ("interpolate_frames_too_many", lambda t, m: _interpolate(t, m, "--frames", 10**7),
     r"--frames 10000000: 10000000 frames are sampled in one batch: .*needs about .*; use --frames \d+ or fewer"),
    ("interpolate_out_is_a_folder", lambda t, m: (t / "sub").mkdir() or _interpolate(t, m, out="sub"),
     r"is a folder; pass an image file"),
    ("interpolate_out_bad_extension", lambda t, m: _interpolate(t, m, out="x.txt"), r"name an image file with one"),
    ("interpolate_out_folder_missing", lambda t, m: _interpolate(t, m, out="no/x.png"),
     r"the folder .*no' does not exist; create it first"),
    ("fuse_feather_inf", lambda t, m: _fuse(t, m, "--feather", "inf"), r"--feather inf: use a finite width"),
    ("fuse_feather_nan", lambda t, m: _fuse(t, m, "--feather", "nan"), r"--feather nan: use a finite width"),
    ("fuse_feather_negative", lambda t, m: _fuse(t, m, "--feather", "-1"), r"--feather -1\.0: use a finite width"),
    ("fuse_feather_1e7", lambda t, m: _fuse(t, m, "--feather", "1e7"), r"feather 1e\+07 px: use 0\.\.40"),
    ("fuse_steps_too_many", lambda t, m: _fuse(t, m, "--steps", 1000), r"--steps 1000: use 1\.\.100"),
    ("fuse_reference_wrong_size",
     lambda t, m: _fuse(t, m) [:3] + [_png(t / "small.png", 8, 10)] + _fuse(t, m)[4:],
     r"--reference .*small\.png is 10x8; REFERENCE and MASK must have the SR size 40x32"),
    ("fuse_out_is_a_folder", lambda t, m: _fuse(t, m, out="."), r"is a folder; pass an image file"),
]


@pytest.mark.parametrize("case", FRONT_END_CASES, ids=[case[0] for case in FRONT_END_CASES])
def test_interpolate_and_fuse_check_options_and_output_first(case, tmp_path, model_dir, capsys):
    _, setup, pattern = case
    argv = setup(tmp_path, model_dir)
    before = _tree(tmp_path)
    status, err = _cli(argv, capsys)
    assert status == 2
    _one_error_line(err, pattern)
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("command", ["interpolate", "fuse"])
def test_nan_output_of_damaged_weights_is_one_line_exit_1(command, tmp_path, model_dir, capsys):
    from safetensors.torch import load_file, save_file

    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    weights_file = model / "unet" / "diffusion_pytorch_model.safetensors"
    weights = load_file(weights_file)
    weights["conv_in.0.bias"] = torch.full_like(weights["conv_in.0.bias"], float("nan"))
    save_file(weights, weights_file)
    make = _interpolate if command == "interpolate" else _fuse
    status, err = _cli(make(tmp_path, str(model), *(["--frames", 2] if command == "interpolate" else [])), capsys)
    assert status == 1
    _one_error_line(err, r"p\.png: (interpolation|fusion) failed: NaN or infinite values in the model's output")
    assert not (tmp_path / "strip.png").exists() and not (tmp_path / "fused.png").exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_fuse_into_a_read_only_folder_fails_before_sampling(tmp_path, model_dir, capsys, monkeypatch):
    sampled = []
    from sradm_diffusers.extras import fusion

    monkeypatch.setattr(fusion, "fuse", lambda *a, **k: sampled.append(1))
    with contextlib.ExitStack() as stack:
        folder = tmp_path / "ro"
        if os.geteuid() == 0:  # root ignores permission bits: only a read-only mount stops it
            stack.enter_context(_tmpfs(folder, "ro,size=64k"))
        else:
            folder.mkdir()
            folder.chmod(0o555)
            stack.callback(folder.chmod, 0o755)
        status, err = _cli(_fuse(tmp_path, model_dir, out="ro/fused.png"), capsys)
        assert status == 2 and not sampled
        _one_error_line(err, r"cannot write outputs -o .*ro' \(.*(Read-only file system|Permission denied)")
        assert os.listdir(folder) == []


def test_interpolate_on_a_full_disk_says_so_and_leaves_nothing(tmp_path, model_dir, capsys):
    with _tmpfs(tmp_path / "small", "size=64k") as folder:
        _fill(folder)
        status, err = _cli(_interpolate(tmp_path, model_dir, "--frames", 2, out="small/strip.png"), capsys)
        assert status == 1
        _one_error_line(err, r"cannot write .*strip\.png: .*No space left on device.*; nothing was written")
        assert sorted(os.listdir(folder)) == ["filler"]


# ----------------------------------------------------------------------------------------------------- item 8
def test_fuse_mask_rule_is_the_same_for_every_type():
    from sradm_diffusers.extras.fusion import mask_tensor

    def values(mask):
        return mask_tensor(mask, 2, 3)[0, 0]

    ones = np.array([[0, 1, 1], [0, 0, 1]], np.uint8)
    expected = torch.from_numpy(ones.astype(np.float32))
    for scale in (1, 2, 255):  # 8-bit: always /255, whatever the maximum
        torch.testing.assert_close(values(ones * scale), expected * scale / 255)
        torch.testing.assert_close(values(PIL.Image.fromarray(ones * scale, "L")), expected * scale / 255)
        torch.testing.assert_close(values(torch.from_numpy(ones * scale)), expected * scale / 255)
    torch.testing.assert_close(values(PIL.Image.fromarray(ones * 255, "L").convert("1")), expected)
    torch.testing.assert_close(values(ones.astype(bool)), expected)
    torch.testing.assert_close(values(ones.astype(np.float64) * 0.5), expected * 0.5)  # float: as is
    for bad, message in (
        (ones.astype(np.float32) * 2, r"float mask values must lie in \[0, 1\], got 0\.\.2"),
        (np.full((2, 3), np.nan, np.float32), r"must lie in \[0, 1\]"),
        (ones.astype(np.int64), r"mask has dtype torch\.int64; pass uint8"),
        (PIL.Image.fromarray(ones.astype(np.int32) * 1000, "I"), r"'I'-mode .* save it as an 8-bit"),
    ):
        with pytest.raises(ValueError, match=message):
            values(bad)


def test_fuse_cli_reads_a_0_1_png_mask_as_1_of_255_and_says_so(tmp_path, model_dir, capsys):
    status, err = _cli(_fuse(tmp_path, model_dir, mask=1), capsys)
    assert status == 0, err
    assert re.search(r"note: .*mask\.png: the mask's values are only 0 and 1 of 0\.\.255", err)


def test_fuse_refuses_a_16_bit_mask(tmp_path, model_dir, capsys):
    argv = _fuse(tmp_path, model_dir)
    PIL.Image.fromarray(np.full((32, 40), 40000, np.uint16)).save(tmp_path / "mask.png")
    status, err = _cli(argv, capsys)
    assert status == 2
    _one_error_line(err, r"mask\.png: mask is a 'I(;16)?'-mode \(16/32-bit or float\) image")
    assert not (tmp_path / "fused.png").exists()


def test_feather_outside_the_image_is_refused_by_the_api(tiny_pipe, lr_image):
    from sradm_diffusers.extras.fusion import fuse

    ref = np.zeros((29 * 4, 37 * 4, 3), np.uint8)
    mask = np.zeros((29 * 4, 37 * 4), np.uint8)
    for feather in (float("inf"), 1e7, -1.0):
        with pytest.raises(ValueError, match="feather"):
            fuse(tiny_pipe, lr_image, ref, mask, feather=feather, num_inference_steps=1)


def test_interpolate_api_names_the_frames_that_fit(tiny_pipe, lr_image, monkeypatch):
    from sradm_diffusers.extras.interpolation import interpolate
    from sradm_diffusers.sampling.memory import SamplingMemoryError, estimate_sampling_bytes

    height, width = 29 * 4, 37 * 4
    monkeypatch.setenv(MEMORY_LIMIT_ENV, str(estimate_sampling_bytes(tiny_pipe.unet, 3, height, width)))
    with pytest.raises(SamplingMemoryError, match=r"5 frames are sampled in one batch: .*; use --frames 3 or fewer"):
        interpolate(tiny_pipe, lr_image, num_frames=5, num_inference_steps=1)


# ----------------------------------------------------------------------------------------------------- item 9
@pytest.mark.parametrize("fmt", ["GIF", "TIFF"])
def test_multi_frame_input_says_only_the_first_frame_is_used(fmt, tmp_path, model_dir, capsys):
    frames = [PIL.Image.fromarray(np.full((8, 10, 3), 60 * k, np.uint8)) for k in range(3)]
    path = tmp_path / f"anim.{fmt.lower()}"
    frames[0].save(path, format=fmt, save_all=True, append_images=frames[1:])
    status, err = _cli(["upscale", path, "--steps", "1", "-o", tmp_path / "out", "--model", model_dir], capsys)
    assert status == 0, err
    assert re.search(rf"note: .*anim\.{fmt.lower()}: {fmt} with 3 frames/pages; only the first one is used", err)
    assert (tmp_path / "out" / "anim_x4.png").is_file()


# ----------------------------------------------------------------------------------------------------- item 11
def test_fifo_input_is_named_as_a_fifo(tmp_path, model_dir, capsys):
    fifo = _fifo(tmp_path / "in" / "pipe.png")
    status, err = _cli(["upscale", fifo, "--steps", "1", "-o", tmp_path / "out", "--model", model_dir], capsys)
    assert status == 1
    assert re.search(r"error: .*pipe\.png: is a FIFO \(named pipe\), not a regular image file", err), err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("relative", [False, True])
def test_symlink_loop_as_model_is_named(relative, tmp_path, model_dir, capsys, monkeypatch):
    loop = tmp_path / "mymodel"
    loop.symlink_to(loop)
    monkeypatch.chdir(tmp_path)
    status, err = _cli(["upscale", _png(tmp_path / "p.png"), "-o", tmp_path / "out",
                        "--model", "mymodel" if relative else loop], capsys)
    assert status == 2
    _one_error_line(err, r"--model '.*mymodel' is a symbolic link that loops or points to nothing")


def test_failed_check_after_loading_leaves_no_empty_output_folder(tmp_path, model_dir, capsys):
    status, err = _cli(["upscale", _png(tmp_path / "p.png"), "--strength", "0", "--steps", "2",
                        "-o", tmp_path / "new" / "out/", "--model", model_dir], capsys)
    assert status == 2
    _one_error_line(err, r"--strength: strength must be in \(0, 1\]")
    assert not (tmp_path / "new").exists()


def test_center_crop_larger_than_the_image_is_said(tmp_path, capsys):
    _png(tmp_path / "hr" / "small.png", 40, 48)
    _png(tmp_path / "hr" / "large.png", 80, 80)
    status, err = _cli(["evaluate", "--hr-dir", tmp_path / "hr", "--scale", "4", "--methods", "bicubic",
                        "--center-crop", "64", "--json", tmp_path / "r.json"], capsys)
    assert status == 0, err
    notes = [line for line in err.splitlines() if line.startswith("note:")]
    assert notes == ["note: small.png: 48x40 is smaller than --center-crop 64; evaluated on its central 48x40"]


# ----------------------------------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """train/: 4 usable 40x40 PNGs; tiny/train/: one 16x16 PNG (below --resolution 32)."""
    root = tmp_path_factory.mktemp("images")
    for i in range(4):
        _png(root / "good" / "train" / f"img{i}.png", 40, 40, seed=i)
    _png(root / "tiny" / "train" / "small.png", 16, 16)
    return root


def _args(data: Path, out: Path, *extra):
    args = common(data, out, "--max_train_steps", 4, "--checkpointing_steps", 2, "--validation_steps", 0,
                  "--num_validation_images", 0, *extra)
    return ["--stage", "encoder", *[a for a in args if a not in ("--validation_split", "test")]]


MODEL_FILES = {"config.json", "diffusion_pytorch_model.safetensors", "README.md", "train_summary.json"}


def _train_script(argv, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "training" / "train.py"), *map(str, argv)], capture_output=True, text=True,
        timeout=300, cwd=ROOT, env=dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1",
                                        **env),
    )


def test_max_train_steps_zero_is_refused(images, tmp_path):
    with pytest.raises(ValueError, match=r"--max_train_steps 0 trains nothing .*use 1 or more"):
        run(_args(images / "good", tmp_path / "run", "--max_train_steps", 0))
    assert not (tmp_path / "run").exists()


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(images, tmp_path, monkeypatch):
    """The loss becomes NaN at step 3: checkpoint-2 stays, checkpoint-4 and the final model are not written, and the
    error names step 3 (noticed before the save at step 4)."""
    from training import losses  # the training loop looks the stage's loss up there at every step

    real, calls = losses.encoder_loss, []

    def loss(*args):
        calls.append(1)
        value = real(*args)
        return value * float("nan") if len(calls) >= 3 else value

    monkeypatch.setattr(losses, "encoder_loss", loss)
    out = tmp_path / "run"
    with pytest.raises(tu.TrainingDivergedError,
                       match=r"loss became NaN or infinite at step 3 \(noticed at step 4, before saving\).*"
                             r"checkpoint-2, is kept .*--resume_from_checkpoint latest"):
        run(_args(images / "good", out, "--max_train_steps", 6))
    names = {p.name for p in out.iterdir()}
    assert {n for n in names if n.startswith("checkpoint")} == {"checkpoint-2"}
    assert not names & MODEL_FILES and not [n for n in names if n.startswith(".")]
    assert tu.checkpoint_problem(str(out / "checkpoint-2")) is None
    from safetensors.torch import load_file

    weights = load_file(out / "checkpoint-2" / "encoder" / "diffusion_pytorch_model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_a_diverging_learning_rate_exits_3_without_a_model(images, tmp_path):
    """The drill's case, end to end: --learning_rate 1e30."""
    out = tmp_path / "run"
    result = _train_script(_args(images / "good", out, "--learning_rate", "1e30"))
    assert result.returncode == 3, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert re.match(r"error: the training loss became NaN or infinite at step \d+", last), last
    assert not {p.name for p in out.iterdir()} & MODEL_FILES


def test_one_image_below_the_resolution_is_counted_once(images, tmp_path):
    """A one-image folder fills a batch of 2 by repeating the image: it is one skipped image, not two."""
    with pytest.raises(ValueError, match=r"No training pair in a whole epoch: 1 image\(s\) were skipped"):
        run(_args(images / "tiny", tmp_path / "run"))


def test_saved_weights_follow_the_umask(images, tmp_path):
    out = tmp_path / "run"
    previous = os.umask(0o022)
    try:
        run(_args(images / "good", out, "--max_train_steps", 2))
    finally:
        os.umask(previous)
    weights = [out / "diffusion_pytorch_model.safetensors",
               out / "checkpoint-2" / "encoder" / "diffusion_pytorch_model.safetensors"]
    files = [p for p in out.rglob("*") if p.is_file() and "logs" not in p.parts]
    assert set(weights) <= set(files)
    assert {str(p.relative_to(out)): oct(p.stat().st_mode & 0o777) for p in files} == {
        str(p.relative_to(out)): "0o644" for p in files}


def test_full_disk_during_a_checkpoint_save_says_so(images, tmp_path):
    """A 1.1 MB tmpfs holds checkpoint-2 (about 0.75 MB) but not checkpoint-4 as well: exit status 1 and one line
    that says "no space left on device" and where; checkpoint-2 is intact, nothing half-written is left."""
    with _tmpfs(tmp_path / "disk", "size=1100k") as disk:
        out = disk / "run"
        result = _train_script(_args(images / "good", out, "--cache_dir", str(tmp_path / "cache")))
        assert result.returncode == 1, result.stderr[-2000:]
        assert "Traceback" not in result.stderr
        last = result.stderr.strip().splitlines()[-1]
        expected = (rf"error: no space left on device while saving checkpoint-4 in {re.escape(str(out))} "
                    r"\(\d+\.\d MiB free\); the unfinished save was removed and earlier checkpoints are kept")
        assert re.match(expected, last), last
        names = sorted(p.name for p in out.iterdir() if p.name.startswith(("checkpoint", ".")))
        assert names == ["checkpoint-2"] and tu.checkpoint_problem(str(out / "checkpoint-2")) is None
        assert not {p.name for p in out.iterdir()} & MODEL_FILES


def test_full_disk_during_the_final_export_says_so(tmp_path):
    """The export's writer fails as safetensors does on a full disk (simulated: a tmpfs run reaches the export only
    with exactly the right size); the old model stays and no temporary folder is left."""
    (tmp_path / "config.json").write_text("old")

    def write(folder):
        Path(folder, "config.json").write_text("new")
        raise OSError(28, "No space left on device")

    with pytest.raises(tu.DiskFullError, match=r"no space left on device while saving the final model in "):
        tu.export_atomic(str(tmp_path), write)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]
    assert (tmp_path / "config.json").read_text() == "old"


def test_accelerate_launch_with_a_bad_flag_shows_train_py_error(tmp_path):
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable)) or shutil.which("accelerate")
    if accelerate is None:
        pytest.skip("the accelerate command is not on PATH")
    launch = [accelerate, "launch", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no",
              "--dynamo_backend", "no"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    quiet = subprocess.run([*launch, "--quiet", "training/train.py", "--bogus"], capture_output=True, text=True,
                           timeout=300, cwd=ROOT, env=env)
    assert quiet.returncode == 1 and "Traceback" not in quiet.stderr, quiet.stderr[-2000:]
    assert quiet.stderr.strip().splitlines() == [
        "error: unrecognized arguments: --bogus (see python training/train.py --help)",
        "error: training/train.py exited with status 2 for the reason above; a launcher traceback that follows only "
        "repeats it (accelerate launch --quiet leaves it out).",
    ]
    plain = _train_script(["--bogus"])  # without a launcher: the error line alone, exit status 2
    assert plain.returncode == 2
    assert plain.stderr.strip().splitlines() == ["error: unrecognized arguments: --bogus "
                                                 "(see python training/train.py --help)"]


def test_nonfinite_watch_keeps_the_first_bad_step():
    watch = tu.NonFiniteWatch("cpu")
    for step, value in ((1, 0.5), (2, 1.0), (3, float("nan")), (4, float("inf")), (5, 0.1)):
        watch.observe(torch.tensor(value), step)
    finite = [torch.ones(3), torch.zeros(2, 2)]
    assert watch.problem(finite) == "the training loss became NaN or infinite at step 3"
    fresh = tu.NonFiniteWatch("cpu")
    fresh.observe(torch.tensor([1.0, 2.0]), 1)
    assert fresh.problem(finite) is None
    assert fresh.problem([*finite, torch.tensor([1.0, -float("inf")])]) == "the weights became NaN or infinite"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the no-host-sync check needs a CUDA device")
def test_nonfinite_watch_does_not_wait_for_the_gpu():
    watch = tu.NonFiniteWatch("cuda")
    losses = [torch.tensor(v, device="cuda") for v in (1.0, float("nan"), 2.0)]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any host-device synchronisation raises
    try:
        for step, loss in enumerate(losses, 1):
            watch.observe(loss, step)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert watch.problem([torch.ones(2, device="cuda")]) == "the training loss became NaN or infinite at step 2"
