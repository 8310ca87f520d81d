"""`sradm upscale`: inputs (files, folders, globs), output names and sizes, -o, samples, seeds, schedulers, atomic
writes, per-file errors and exit codes. A random tiny pipeline saved to disk is the --model; images are ~10 px."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import DDPMScheduler

from sradm_diffusers import build_pipeline
from sradm_diffusers.commands.cli import main
from sradm_diffusers.defaults import SCHEDULERS
from sradm_diffusers.commands.runtime import set_scheduler

SCALE = 4
FAST = ["--steps", "2"]


def _write(path, h=8, w=10, seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4}[mode]
    array = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(array, mode).save(path)
    return path


def _read(path):
    with PIL.Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def _files(folder):
    return sorted(p.name for p in Path(folder).iterdir())


def _run(*args, model=None):
    argv = ["upscale", *map(str, args), *FAST]
    if model is not None:
        argv += ["--model", model]
    return main(argv)


def test_files_folders_and_globs(tmp_path, model_dir):
    a = tmp_path / "a"
    _write(a / "x.png", 8, 10, seed=1)
    _write(a / "y.jpg", 12, 6, seed=2)
    (a / "notes.txt").write_text("not an image")
    _write(a / ".hidden.png", seed=3)
    _write(tmp_path / "b" / "z.png", 9, 7, seed=4)
    _write(tmp_path / "b" / "skip.bmp", seed=5)
    single = _write(tmp_path / "c" / "one.png", 5, 6, seed=6)

    rc = _run(a, tmp_path / "b" / "*.png", single, "--seed", "0", model=model_dir)
    assert rc == 0
    assert _files(a) == [".hidden.png", "notes.txt", "x.png", "x_x4.png", "y.jpg", "y_x4.png"]
    assert _files(tmp_path / "b") == ["skip.bmp", "z.png", "z_x4.png"]  # the glob picked *.png only
    for out, (h, w) in [(a / "x_x4.png", (8, 10)), (a / "y_x4.png", (12, 6)), (tmp_path / "b" / "z_x4.png", (9, 7)),
                        (tmp_path / "c" / "one_x4.png", (5, 6))]:
        with PIL.Image.open(out) as image:
            assert image.size == (w * SCALE, h * SCALE) and image.mode == "RGB" and image.format == "PNG"


def test_output_option(tmp_path, model_dir, capsys):
    src = _write(tmp_path / "in" / "pic.png")
    other = _write(tmp_path / "in" / "pic2.png", seed=1)

    existing = tmp_path / "existing"
    existing.mkdir()
    assert _run(src, "-o", existing, model=model_dir) == 0
    assert _files(existing) == ["pic_x4.png"]

    assert _run(src, "-o", f"{tmp_path / 'new'}{os.sep}", model=model_dir) == 0  # trailing separator: a folder
    assert _files(tmp_path / "new") == ["pic_x4.png"]

    assert _run(src, other, "-o", tmp_path / "many", model=model_dir) == 0  # several inputs: a folder
    assert _files(tmp_path / "many") == ["pic2_x4.png", "pic_x4.png"]

    target = tmp_path / "named" / "result.png"
    target.parent.mkdir()
    assert _run(src, "-o", target, model=model_dir) == 0
    assert _files(target.parent) == ["result.png"]
    assert _read(target).shape == (8 * SCALE, 10 * SCALE, 3)

    capsys.readouterr()
    assert _run(src, other, "-o", tmp_path / "x.png", model=model_dir) == 2
    assert _run(src, "-o", tmp_path / "x.png", "--samples", "2", model=model_dir) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "pass a folder" in err[0] and "--samples 2" in err[1]
    assert not (tmp_path / "x.png").exists()
    assert _files(tmp_path / "in") == ["pic.png", "pic2.png"]  # nothing next to the inputs


def test_samples_write_k_different_files(tmp_path, model_dir):
    src = _write(tmp_path / "p.png")
    assert _run(src, "--samples", "3", "--seed", "1", model=model_dir) == 0
    assert _files(tmp_path) == ["p.png", "p_x4_0.png", "p_x4_1.png", "p_x4_2.png"]
    outs = [_read(tmp_path / f"p_x4_{k}.png") for k in range(3)]
    for i in range(3):
        assert outs[i].shape == (32, 40, 3)
        for j in range(i):
            assert np.abs(outs[i] - outs[j]).max() > 10


def test_seed_reproducible_and_independent_of_other_inputs(tmp_path, model_dir):
    src = _write(tmp_path / "in" / "p.png", seed=0)
    _write(tmp_path / "in" / "q.png", seed=1)
    runs = {}
    for name, args in {"a": [src, "--seed", "5"], "b": [tmp_path / "in", "--seed", "5"],
                       "c": [src, "--seed", "6"], "k": [src, "--seed", "5", "--samples", "2"]}.items():
        assert _run(*args, "-o", tmp_path / name, model=model_dir) == 0
        runs[name] = tmp_path / name
    first = _read(runs["a"] / "p_x4.png")
    assert np.array_equal(first, _read(runs["b"] / "p_x4.png"))  # same seed, other images in the run
    assert np.abs(first - _read(runs["c"] / "p_x4.png")).max() > 10  # another seed
    # sample k uses seed S+k: sample 0 of the K=2 run is the K=1 run with S, sample 1 the K=1 run with S+1
    assert np.abs(first - _read(runs["k"] / "p_x4_0.png")).max() <= 1
    assert np.abs(_read(runs["c"] / "p_x4.png") - _read(runs["k"] / "p_x4_1.png")).max() <= 1


def test_scheduler_choices(tmp_path, model_dir):
    src = _write(tmp_path / "p.png")
    outputs = {}
    for name in SCHEDULERS:
        argv = ["upscale", str(src), "--scheduler", name, "--seed", "0", "-o", str(tmp_path / name), "--steps", "4"]
        # without the LR projection: with random tiny weights it can pin two samplers' outputs to the same image
        argv.append("--no-lr-consistency")
        assert main(argv + ["--model", model_dir]) == 0
        outputs[name] = _read(tmp_path / name / "p_x4.png")
    names = list(outputs)
    for i in range(len(names)):
        for j in range(i):
            assert not np.array_equal(outputs[names[i]], outputs[names[j]]), (names[i], names[j])
    # the SDE sampler draws noise at every step from the seeded generators: same seed, same image
    argv = ["upscale", str(src), "--scheduler", "dpm-sde", "--seed", "0", "-o", str(tmp_path / "again"), "--steps", "4",
            "--no-lr-consistency"]
    assert main(argv + ["--model", model_dir]) == 0
    np.testing.assert_array_equal(_read(tmp_path / "again" / "p_x4.png"), outputs["dpm-sde"])

    pipe = build_pipeline("tiny")
    original = dict(pipe.scheduler.config)
    for name, (class_name, extra) in SCHEDULERS.items():
        set_scheduler(pipe, name)
        assert type(pipe.scheduler).__name__ == class_name
        assert pipe.scheduler.config.num_train_timesteps == original["num_train_timesteps"]
        assert pipe.scheduler.config.beta_schedule == original["beta_schedule"]
    set_scheduler(pipe, "dpm-sde")
    assert pipe.scheduler.config.algorithm_type == "sde-dpmsolver++"
    set_scheduler(pipe, "dpm")
    assert pipe.scheduler.config.algorithm_type == "dpmsolver++"
    for name in ("ddim", "dpm", "dpm-sde", "unipc", "euler"):  # even for a pipeline stored with another spacing
        pipe.scheduler = DDPMScheduler.from_config(original, timestep_spacing="leading")
        set_scheduler(pipe, name)
        assert pipe.scheduler.config.timestep_spacing == "trailing", name


def test_bad_files_reported_in_one_line_each(tmp_path, model_dir, capsys):
    folder = tmp_path / "imgs"
    _write(folder / "a_good.png", seed=0)
    (folder / "b_garbage.png").write_bytes(b"this is not a png")
    (folder / "c_empty.png").write_bytes(b"")
    good_bytes = (folder / "a_good.png").read_bytes()
    (folder / "d_truncated.png").write_bytes(good_bytes[: len(good_bytes) // 2])
    _write(folder / "e_good.png", seed=1)

    rc = _run(folder, tmp_path / "missing.png", model=model_dir)
    assert rc == 1
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    bad = ["b_garbage.png", "c_empty.png", "d_truncated.png", "missing.png"]
    assert len(errors) == len(bad)
    for name in bad:
        assert sum(name in line for line in errors) == 1
    assert any("empty file" in line for line in errors if "c_empty" in line)
    assert _files(folder) == ["a_good.png", "a_good_x4.png", "b_garbage.png", "c_empty.png", "d_truncated.png",
                              "e_good.png", "e_good_x4.png"]


def test_write_is_atomic(tmp_path, model_dir, monkeypatch, capsys):
    src = _write(tmp_path / "p.png")
    _write(tmp_path / "q.png", seed=1)
    assert _run(src, model=model_dir) == 0
    assert _files(tmp_path) == ["p.png", "p_x4.png", "q.png"]  # no temporary file left
    before = (tmp_path / "p_x4.png").read_bytes()

    real_save = PIL.Image.Image.save
    targets = []

    def failing_save(self, fp, format=None, **params):
        targets.append(str(fp))
        real_save(self.crop((0, 0, 4, 4)), fp, format=format)  # a partial, different file ...
        raise OSError("disk full (simulated)")  # ... then the failure

    monkeypatch.setattr(PIL.Image.Image, "save", failing_save)
    capsys.readouterr()
    assert _run(tmp_path, "--samples", "1", model=model_dir) == 1
    errors = capsys.readouterr().err.splitlines()
    assert sum(line.startswith("error:") and "disk full" in line for line in errors) == 2
    assert targets and all(os.path.basename(t).startswith(".") and ".tmp-" in t for t in targets)
    assert _files(tmp_path) == ["p.png", "p_x4.png", "q.png"]  # q_x4.png never appears, no temp files
    assert (tmp_path / "p_x4.png").read_bytes() == before  # the old output is intact


def test_never_overwrites_an_input(tmp_path, model_dir, capsys):
    src = _write(tmp_path / "p.png")
    before = src.read_bytes()
    assert _run(src, "-o", src, model=model_dir) == 1
    assert "overwrite an input" in capsys.readouterr().err
    assert src.read_bytes() == before
    # named explicitly, a file called like an output is an input like any other
    _write(tmp_path / "p_x4.png", 3, 3)
    assert _run(tmp_path / "p_x4.png", model=model_dir) == 0
    assert _read(tmp_path / "p_x4_x4.png").shape == (12, 12, 3)
    # a folder run does not take earlier outputs as inputs: only p.png is upscaled, its old output replaced
    assert _run(tmp_path, model=model_dir) == 0
    assert _files(tmp_path) == ["p.png", "p_x4.png", "p_x4_x4.png"]
    assert _read(tmp_path / "p_x4.png").shape == (32, 40, 3)
    assert _read(tmp_path / "p_x4_x4.png").shape == (12, 12, 3)
    # named together with its source, the output would be overwritten: refused
    capsys.readouterr()
    assert _run(tmp_path / "p.png", tmp_path / "p_x4.png", model=model_dir) == 1
    assert "would overwrite an input" in capsys.readouterr().err


def test_exif_orientation_and_alpha(tmp_path, model_dir):
    rotated = tmp_path / "rot.jpg"
    image = PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (6, 10, 3), dtype=np.uint8))
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    image.save(rotated, exif=exif)
    _write(tmp_path / "alpha.png", 7, 9, mode="RGBA")
    assert _run(rotated, tmp_path / "alpha.png", model=model_dir) == 0
    assert _read(tmp_path / "rot_x4.png").shape == (10 * SCALE, 6 * SCALE, 3)  # upright: 6 wide, 10 high
    with PIL.Image.open(tmp_path / "alpha_x4.png") as out:
        assert out.mode == "RGB" and out.size == (9 * SCALE, 7 * SCALE)


def test_model_and_option_errors_exit_2(tmp_path, model_dir, capsys):
    src = _write(tmp_path / "p.png")
    cases = [
        (["--model", str(tmp_path / "nope")], "no such folder"),
        (["--model", str(tmp_path)], "model_index.json"),
        (["--model", model_dir, "--steps", "0"], "--steps"),
        (["--model", model_dir, "--steps", "101"], "--steps 101"),
        (["--model", model_dir, "--scheduler", "magic"], "--scheduler"),
        (["--model", model_dir, "--dtype", "fp8"], "--dtype"),
    ]
    for extra, message in cases:
        capsys.readouterr()
        assert main(["upscale", str(src), *extra]) == 2, extra
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, (extra, err)
    assert _files(tmp_path) == ["p.png"]


def test_console_script_is_installed(tmp_path, model_dir):
    script = shutil.which("sradm") or str(Path(sys.executable).with_name("sradm"))
    assert os.path.exists(script), "the `sradm` console script is not installed (pip install -e .)"
    src = _write(tmp_path / "p.png")
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    done = subprocess.run([script, "upscale", str(src), "--model", model_dir, *FAST, "--seed", "0"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(tmp_path / "p_x4.png")
    assert _read(tmp_path / "p_x4.png").shape == (32, 40, 3)
    no_input = subprocess.run([script, "upscale"], capture_output=True, text=True, env=env, timeout=300)
    assert no_input.returncode == 2 and "--sample" in no_input.stderr


def test_bundled_demo_model_and_sample_are_the_defaults(tmp_path):
    """No --model: the bundled demo pipeline; --sample: the bundled 128x128 photo, upscaled 4x."""
    from sradm_diffusers import DEMO_MODEL, SAMPLE_IMAGE

    assert os.path.isfile(os.path.join(DEMO_MODEL, "model_index.json"))
    out = tmp_path / "sample_x4.png"
    assert main(["upscale", "--sample", "-o", str(out), "--scheduler", "dpm-sde", "--steps", "2", "--seed", "0"]) == 0
    assert _read(out).shape == (512, 512, 3)
    with PIL.Image.open(SAMPLE_IMAGE) as sample:
        assert sample.size == (128, 128)
