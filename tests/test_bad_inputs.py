"""Bad input, damaged files and interruptions: each case must end with a clear one-line error naming the problem
and the fix, the right exit status, and no output, partial or hidden file left behind.

Three tables: the ``sradm`` command (exit status and stderr), the Python API (exception type and message) and
training / resuming (``training/train.py``). A random tiny pipeline is the model; images are ~10 px.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import PIL.Image
import pytest
import torch
from safetensors.torch import load_file, save_file

from sradm_diffusers import SRADMPipeline
from sradm_diffusers.commands.cli import main
from sradm_diffusers.sampling.memory import MEMORY_LIMIT_ENV, SamplingMemoryError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from training import train_utils as tu  # noqa: E402
from test_train import common, load_weights, run  # noqa: E402

UNET_WEIGHTS = "unet/diffusion_pytorch_model.safetensors"


# ----------------------------------------------------------------------------------------------------- helpers
def _png(path: Path, h: int = 8, w: int = 10, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def _float_tiff(path: Path, value: float, mode: str = "F") -> Path:
    """A greyscale float (mode F) or int32 (mode I) TIFF with one pixel set to ``value``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.full((8, 10), 100.0, np.float32)
    array[3, 4] = value
    image = PIL.Image.fromarray(array, "F") if mode == "F" else PIL.Image.fromarray(array.astype(np.int32), "I")
    image.save(path)
    return path


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def _hidden(root: Path) -> list[str]:
    return [str(p.relative_to(root)) for p in root.rglob(".*")]


def _model(tmp: Path, model_dir: str, mutate: Callable[[Path], None] | None = None) -> Path:
    """A copy of the tiny pipeline folder, damaged by ``mutate``."""
    folder = tmp / "model"
    shutil.copytree(model_dir, folder)
    if mutate is not None:
        mutate(folder)
    return folder


def _drop_weight(folder: Path) -> None:
    weights = load_file(folder / UNET_WEIGHTS)
    del weights["conv_in.0.weight"]
    save_file(weights, folder / UNET_WEIGHTS)


def _nan_weights(folder: Path) -> None:
    weights = load_file(folder / UNET_WEIGHTS)
    weights["conv_in.0.bias"] = torch.full_like(weights["conv_in.0.bias"], float("nan"))
    save_file(weights, folder / UNET_WEIGHTS)


def _truncate(relative: str, keep: float = 0.9) -> Callable[[Path], None]:
    def mutate(folder: Path) -> None:
        path = folder / relative
        os.truncate(path, int(path.stat().st_size * keep))

    return mutate


def _edit_json(relative: str, **changes) -> Callable[[Path], None]:
    def mutate(folder: Path) -> None:
        path = folder / relative
        path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))

    return mutate


def _remove(relative: str) -> Callable[[Path], None]:
    return lambda folder: (folder / relative).unlink()


def _write_text(relative: str, text: str) -> Callable[[Path], None]:
    return lambda folder: (folder / relative).write_text(text)


# ----------------------------------------------------------------------------------------------------- the command
@dataclass
class CliCase:
    """``setup(tmp, model_dir)`` builds the inputs and returns the argv; the run must exit with ``status`` and print
    a stderr line matching ``message``."""

    name: str
    setup: Callable[[Path, str], list]
    status: int
    message: str
    env: dict = field(default_factory=dict)


def _upscale(*extra, model=True, image="in/p.png"):
    """argv factory: upscale ``tmp/image`` (a fresh PNG) with the tiny model, 1 step, into tmp/out/."""

    def setup(tmp, model_dir):
        _png(tmp / image)
        argv = ["upscale", str(tmp / image), "--steps", "1", "-o", str(tmp / "out"), *map(str, extra)]
        return argv + (["--model", model_dir] if model else [])

    return setup


def _upscale_file(make: Callable[[Path], Path], *extra):
    def setup(tmp, model_dir):
        path = make(tmp)
        return ["upscale", str(path), "--steps", "1", "-o", str(tmp / "out"), "--model", model_dir, *extra]

    return setup


def _upscale_model(mutate):
    def setup(tmp, model_dir):
        _png(tmp / "in" / "p.png")
        model = _model(tmp, model_dir, mutate)
        return ["upscale", str(tmp / "in" / "p.png"), "--steps", "1", "-o", str(tmp / "out"), "--model", str(model)]

    return setup


def _upscale_out(out: Callable[[Path], str], *extra, inputs=("in/p.png",)):
    def setup(tmp, model_dir):
        for name in inputs:
            _png(tmp / name)
        return ["upscale", *(str(tmp / name) for name in inputs), "-o", out(tmp), "--steps", "1",
                "--model", model_dir, *extra]

    return setup


def _file(tmp: Path, name: str, data: bytes) -> Path:
    path = tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _evaluate(json_path: Callable[[Path], str], *extra):
    def setup(tmp, model_dir):
        _png(tmp / "hr" / "a.png", 16, 16)
        return ["evaluate", "--hr-dir", str(tmp / "hr"), "--scale", "4", "--methods", "bicubic",
                *(["--json", json_path(tmp)] if json_path else []), *map(str, extra)]

    return setup


def _interrupted_export(folder: Path) -> None:
    (folder / "model_index.json").unlink()
    (folder / ".export.tmp").mkdir()


CLI_CASES = [
    # NaN/inf and out-of-range pixels
    CliCase("tiff_F_nan", _upscale_file(lambda t: _float_tiff(t / "in" / "f.tif", np.nan)), 1,
            r"f\.tif: F-mode image contains NaN or infinite pixels; replace them"),
    CliCase("tiff_F_inf", _upscale_file(lambda t: _float_tiff(t / "in" / "f.tif", np.inf)), 1,
            r"F-mode image contains NaN or infinite"),
    CliCase("tiff_F_negative", _upscale_file(lambda t: _float_tiff(t / "in" / "f.tif", -5.0)), 1,
            r"values in \[-5\.0, 100\.0\]; scale it to 0\.\.255"),
    CliCase("tiff_I_too_large", _upscale_file(lambda t: _float_tiff(t / "in" / "i.tif", 70000, "I")), 1,
            r"I-mode image has values in .*scale it to 0\.\.255"),
    # unreadable files
    CliCase("empty_file", _upscale_file(lambda t: _file(t, "in/e.png", b"")), 1, r"e\.png: empty file \(0 bytes\)"),
    CliCase("not_an_image", _upscale_file(lambda t: _file(t, "in/n.png", b"hello")), 1,
            r"n\.png: not an image file PIL can read"),
    CliCase("truncated_png",
            _upscale_file(lambda t: _file(t, "in/t.png", _png(t / "x.png", 64, 64).read_bytes()[:300])), 1,
            r"t\.png: cannot decode the image"),
    CliCase("missing_input", lambda t, m: ["upscale", str(t / "nope.png"), "--model", m], 1,
            r"nope\.png: no such file or directory"),
    CliCase("empty_folder", lambda t, m: (t / "empty").mkdir() or ["upscale", str(t / "empty"), "--model", m], 1,
            r"no image files in this folder"),
    # damaged or wrong models
    CliCase("model_nan_weights", _upscale_model(_nan_weights), 1,
            r"NaN or infinite values in the model's output.*weights may be corrupt"),
    CliCase("model_missing_weight_key", _upscale_model(_drop_weight), 2,
            r"lacks the weight 'conv_in\.0\.weight'.*folder is incomplete"),
    CliCase("model_truncated_weights", _upscale_model(_truncate(UNET_WEIGHTS)), 2,
            r"diffusion_pytorch_model\.safetensors is damaged or truncated.*re-save or re-download"),
    CliCase("model_scheduler_zero_timesteps",
            _upscale_model(_edit_json("scheduler/scheduler_config.json", num_train_timesteps=0)), 2,
            r"scheduler config .* is invalid: num_train_timesteps=0"),
    CliCase("model_missing_unet_config", _upscale_model(_remove("unet/config.json")), 2,
            r"unet/config\.json is missing; the pipeline folder is incomplete"),
    CliCase("model_broken_unet_config", _upscale_model(_write_text("unet/config.json", "{not json")), 2,
            r"unet/config\.json is not valid JSON.*damaged"),
    CliCase("model_broken_index", _upscale_model(_write_text("model_index.json", "[")), 2,
            r"model_index\.json is not valid JSON"),
    CliCase("model_interrupted_export", _upscale_model(_interrupted_export), 2,
            r"final export into this folder was interrupted.*--resume_from_checkpoint latest"),
    CliCase("model_no_such_folder", lambda t, m: _upscale(model=False)(t, m) + ["--model", str(t / "nomodel")], 2,
            r"no such folder"),
    CliCase("model_is_a_file", lambda t, m: _upscale(model=False)(t, m) + ["--model", str(_png(t / "m.png"))], 2,
            r"is a file; pass the pipeline folder"),
    # options
    CliCase("seed_30_digits", _upscale("--seed", "1" * 30), 2,
            r"--seed: 1{30} is out of range; use 0\.\.9223372036854775807"),
    CliCase("seed_negative", _upscale("--seed", "-1"), 2, r"-1 must be >= 0"),
    CliCase("seed_plus_samples_overflows", _upscale("--seed", str(2**63 - 1), "--samples", "2"), 2,
            r"--seed 9223372036854775807: use 0\.\.9223372036854775806"),
    CliCase("seed_not_a_number", _upscale("--seed", "abc"), 2, r"'abc' is not an integer"),
    CliCase("fp16_on_cpu", _upscale("--dtype", "fp16", "--device", "cpu"), 2,
            r"--dtype fp16 on the CPU is not supported.*use --dtype fp32"),
    CliCase("steps_zero", _upscale("--steps", "0"), 2, r"--steps: 0 must be >= 1"),
    CliCase("steps_too_many", _upscale("--steps", "101"), 2, r"--steps 101: use 1\.\.100"),
    CliCase("samples_zero", _upscale("--samples", "0"), 2, r"--samples: 0 must be >= 1"),
    CliCase("unknown_scheduler", _upscale("--scheduler", "fast"), 2, r"invalid choice: 'fast'"),
    CliCase("no_inputs", lambda t, m: ["upscale", "--model", m], 2, r"give at least one INPUT"),
    CliCase("bad_memory_limit", _upscale(), 2, r"SRADM_MEMORY_LIMIT='lots' is not a size", {MEMORY_LIMIT_ENV: "lots"}),
    # memory guard: refused before sampling, with the fixes
    CliCase("memory_guard", _upscale("--samples", "2"), 1,
            r"needs about .* GiB but only 0\.0 GiB is available; use a smaller input, --tile N",
            {MEMORY_LIMIT_ENV: "1M"}),
    # output locations, checked before loading the model
    CliCase("out_parent_is_a_file", _upscale_out(lambda t: str(_png(t / "f.png")) + "/sub/"), 2,
            r"cannot create the output folder"),
    CliCase("out_file_missing_parent", _upscale_out(lambda t: str(t / "nodir" / "x.png")), 2,
            r"the folder .*nodir' does not exist; create it"),
    CliCase("out_existing_non_image_file", _upscale_out(lambda t: str(_file(t, "x.txt", b"keep"))), 2,
            r"exists and is not a folder"),
    CliCase("out_file_for_two_inputs", _upscale_out(lambda t: str(t / "x.png"), inputs=("in/a.png", "in/b.png")), 2,
            r"names one image file, but the inputs give several"),
    CliCase("out_file_for_two_samples", _upscale_out(lambda t: str(t / "x.png"), "--samples", "2"), 2,
            r"writes 2 files; pass a folder"),
    CliCase("evaluate_json_is_a_folder", _evaluate(lambda t: str((t / "res").mkdir() or t / "res")), 2,
            r"--json .* is a folder; pass a file name"),
    CliCase("evaluate_json_parent_is_a_file", _evaluate(lambda t: str(_file(t, "f", b"")) + "/r.json"), 2,
            r"is a file, not a folder; choose another location"),
    CliCase("evaluate_seed_out_of_range", _evaluate(None, "--seed", str(2**63)), 2,
            r"--seed: 9223372036854775808 is out of range"),
    CliCase("evaluate_missing_hr_dir",
            lambda t, m: ["evaluate", "--hr-dir", str(t / "nohr"), "--scale", "4", "--methods", "bicubic"], 2,
            r"is not a folder"),
    CliCase("evaluate_lr_dir_without_hr_dir",
            lambda t, m: ["evaluate", "--dataset", "x", "--lr-dir", str(t), "--scale", "4"], 2,
            r"--lr-dir needs --hr-dir"),
]


@pytest.mark.parametrize("case", CLI_CASES, ids=[case.name for case in CLI_CASES])
def test_cli_bad_input(case, tmp_path, model_dir, capsys, monkeypatch):
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    argv = case.setup(tmp_path, model_dir)
    before, hidden_before = _files(tmp_path), _hidden(tmp_path)
    capsys.readouterr()
    status = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert status == case.status, err
    matching = [line for line in err.splitlines() if "error" in line and re.search(case.message, line)]
    assert matching, f"no stderr line matches {case.message!r}:\n{err}"
    assert "Traceback" not in err
    assert _files(tmp_path) == before, "a file was written"
    assert _hidden(tmp_path) == hidden_before, "a hidden (temporary) file was left"


# ----------------------------------------------------------------------------------------------------- the API
def _nan_array():
    image = np.full((8, 10, 3), 0.5, np.float32)
    image[2, 3, 1] = np.nan
    return image


def _api_call(image=None, **kwargs):
    def call(pipe, tmp):
        return pipe(np.zeros((8, 10, 3), np.uint8) if image is None else image(), num_inference_steps=1, **kwargs)

    return call


def _api_load(mutate):
    def call(pipe, tmp):
        folder = tmp / "m"
        pipe.save_pretrained(folder)
        mutate(folder)
        return SRADMPipeline.from_pretrained(folder)

    return call


def _poison(pipe, tmp):
    with torch.no_grad():
        pipe.unet.conv_out[1].weight.fill_(float("nan"))
    return pipe(np.zeros((8, 10, 3), np.uint8), num_inference_steps=1)


def _tight_memory(pipe, tmp):
    os.environ[MEMORY_LIMIT_ENV] = "1M"
    try:
        return pipe(np.zeros((8, 10, 3), np.uint8), num_inference_steps=1, num_images_per_prompt=3)
    finally:
        del os.environ[MEMORY_LIMIT_ENV]


API_CASES = [
    ("numpy_nan", _api_call(_nan_array), ValueError, r"numpy image contains NaN or infinite values"),
    ("numpy_inf", _api_call(lambda: np.full((8, 10, 3), np.inf, np.float32)), ValueError, r"NaN or infinite"),
    ("torch_nan", _api_call(lambda: torch.from_numpy(_nan_array()).permute(2, 0, 1)), ValueError,
         r"image tensor contains NaN"),
    ("pil_F_nan", _api_call(lambda: PIL.Image.fromarray(np.full((8, 10), np.nan, np.float32), "F")), ValueError,
         r"F-mode image contains NaN"),
    ("numpy_out_of_range", _api_call(lambda: np.full((8, 10, 3), 2.0, np.float32)), ValueError, r"must be in \[0, 1\]"),
    ("nan_latents", _api_call(latents=torch.full((1, 3, 32, 40), float("nan"))), ValueError,
         r"NaN or infinite values in latents; pass finite"),
    ("nan_weights", _poison, ValueError, r"NaN or infinite values in the model's output"),
    ("memory_guard", _tight_memory, SamplingMemoryError,
         r"3 output\(s\) of 40x32 pixels needs about .*--tile N.*fewer samples \(--samples"),
    ("zero_steps", lambda p, t: p(np.zeros((8, 10, 3), np.uint8), num_inference_steps=0), ValueError,
         r"num_inference_steps must be an integer >= 1"),
    ("bad_output_type", _api_call(output_type="jpeg"), ValueError, r"Unknown output_type 'jpeg'"),
    ("empty_list", lambda p, t: p([], num_inference_steps=1), ValueError, r"empty list of images"),
    ("load_missing_weight", _api_load(_drop_weight), ValueError, r"lacks the weight 'conv_in\.0\.weight'"),
    ("load_truncated_weights", _api_load(_truncate(UNET_WEIGHTS, 0.5)), ValueError, r"damaged or truncated"),
    ("load_zero_timesteps", _api_load(_edit_json("scheduler/scheduler_config.json", num_train_timesteps=0)), ValueError,
         r"num_train_timesteps=0"),
]


@pytest.mark.parametrize("case", API_CASES, ids=[case[0] for case in API_CASES])
def test_api_bad_input(case, tiny_pipe, tmp_path):
    _, call, error, message = case
    with pytest.raises(error, match=message):
        call(tiny_pipe, tmp_path)
    assert _hidden(tmp_path) == []


def test_memory_error_is_a_memory_error_and_a_value_error():
    assert issubclass(SamplingMemoryError, MemoryError) and issubclass(SamplingMemoryError, ValueError)


def test_bin_only_model_loads_with_one_note(tiny_pipe, tmp_path, caplog):
    tiny_pipe.save_pretrained(tmp_path / "m", safe_serialization=False)
    assert not list((tmp_path / "m").rglob("*.safetensors"))
    with caplog.at_level("WARNING", logger="sradm_diffusers.loading.hub"):
        loaded = SRADMPipeline.from_pretrained(tmp_path / "m")
    notes = [r.getMessage() for r in caplog.records if r.name == "sradm_diffusers.loading.hub"]
    assert len(notes) == 1 and "weights-only loader" in notes[0] and "unet and lr_encoder" in notes[0]
    for name, tensor in tiny_pipe.unet.state_dict().items():
        assert torch.equal(loaded.unet.state_dict()[name], tensor), name  # the weights themselves round-trip exactly


# ----------------------------------------------------------------------------------------------------- correct output
def test_samples_are_batched_to_fit_memory_and_progress_is_shown(tmp_path, model_dir, capsys, monkeypatch):
    """With (half the) memory for only one sample per call, --samples 3 still writes the three samples of seeds
    S..S+2 (as one batch of 3 would, up to float rounding: a batch of 3 and three of 1 take other kernels, hence
    <= 1 level)."""
    src = _png(tmp_path / "in" / "p.png")
    assert main(["upscale", str(src), "--samples", "3", "--seed", "7", "--steps", "2", "-o", str(tmp_path / "all"),
                 "--model", model_dir]) == 0
    from sradm_diffusers.sampling.memory import estimate_sampling_bytes
    from sradm_diffusers.commands.runtime import sample_batches

    pipe = SRADMPipeline.from_pretrained(model_dir)
    one = estimate_sampling_bytes(pipe.unet, 1, 32, 40)
    per_sample = one - estimate_sampling_bytes(pipe.unet, 0, 32, 40)
    monkeypatch.setenv(MEMORY_LIMIT_ENV, str(2 * one + per_sample))  # half of it holds one sample, not two
    with PIL.Image.open(src) as image:
        assert sample_batches(pipe, image, 3, torch.device("cpu")) == [(0, 1), (1, 1), (2, 1)]
    capsys.readouterr()
    assert main(["upscale", str(src), "--samples", "3", "--seed", "7", "--steps", "2", "-o", str(tmp_path / "one"),
                 "--model", model_dir]) == 0
    err = capsys.readouterr().err
    assert "sradm upscale: image 1/1:" in err  # stderr is not a terminal here: a plain progress line
    for k in range(3):
        a, b = (np.asarray(PIL.Image.open(tmp_path / run / f"p_x4_{k}.png"), np.int16) for run in ("all", "one"))
        assert np.abs(a - b).max() <= 1


def test_sigterm_during_a_write_keeps_finished_outputs_and_no_temporary_file(tmp_path, model_dir):
    """SIGTERM arrives while the second image is being written (its temporary file half-written): exit status 143,
    the first output kept, no temporary file left."""
    for name in ("a.png", "b.png"):
        _png(tmp_path / "in" / name)
    script = (
        "import os, signal, sys, time, PIL.Image\n"
        "from sradm_diffusers.commands.cli import main\n"
        "real, calls = PIL.Image.Image.save, []\n"
        "def save(self, fp, *args, **kwargs):\n"
        "    calls.append(fp)\n"
        "    if len(calls) == 2:\n"
        "        open(fp, 'wb').write(b'partial')\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "        time.sleep(30)\n"
        "    return real(self, fp, *args, **kwargs)\n"
        "PIL.Image.Image.save = save\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-c", script, "upscale", str(tmp_path / "in"), "-o", str(out), "--steps", "1",
         "--model", model_dir], capture_output=True, text=True, timeout=120,
        env=dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1"),
    )
    assert result.returncode == 143, result.stderr[-2000:]
    assert "terminated (SIGTERM)" in result.stderr
    assert sorted(os.listdir(out)) == ["a_x4.png"]
    with PIL.Image.open(out / "a_x4.png") as image:
        assert image.size == (40, 32)


# ----------------------------------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def train_images(tmp_path_factory):
    """train/: 4 usable 40x40 PNGs; unreadable/: 3 files that are not images."""
    root = tmp_path_factory.mktemp("train_images")
    for i in range(4):
        _png(root / "good" / "train" / f"img{i}.png", 40, 40, seed=i)
    for i in range(3):
        _file(root / "unreadable" / "train", f"bad{i}.png", b"not a png " * (i + 1))
    return root


def _train_args(images: Path, out: Path, *extra):
    args = common(images, out, "--max_train_steps", 4, "--checkpointing_steps", 2, "--validation_steps", 0,
                  "--num_validation_images", 0, *extra)
    return ["--stage", "encoder", *[a for a in args if a not in ("--validation_split", "test")]]


@pytest.fixture(scope="module")
def trained(train_images, tmp_path_factory):
    """An encoder run of 4 steps with checkpoint-2 and checkpoint-4."""
    out = tmp_path_factory.mktemp("trained") / "run"
    run(_train_args(train_images / "good", out))
    assert {p.name for p in out.iterdir() if p.name.startswith("checkpoint")} == {"checkpoint-2", "checkpoint-4"}
    return out


def test_training_on_only_unreadable_images_fails_and_writes_nothing(train_images, tmp_path):
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, str(ROOT / "training" / "train.py"), *_train_args(train_images / "unreadable", out)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env=dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1"),
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert re.match(r"error: No training pair in a whole epoch: \d+ image\(s\) were skipped \(unreadable", last), last
    assert "Nothing was trained or saved; check --train_data_dir" in last
    names = {p.name for p in out.iterdir()}
    assert not {n for n in names if n.startswith("checkpoint")}
    assert not names & {"config.json", "diffusion_pytorch_model.safetensors", "README.md", "train_summary.json"}
    assert _hidden(out) == []


def test_all_skipped_batches_are_not_steps(train_images, tmp_path, monkeypatch):
    """Batches whose every image was skipped do not count as steps and do not touch the optimizer."""
    calls = []
    real_step = torch.optim.Adam.step
    monkeypatch.setattr(torch.optim.Adam, "step", lambda self, *a, **k: (calls.append(1), real_step(self, *a, **k))[1])
    mixed = tmp_path / "mixed"
    shutil.copytree(train_images / "good", mixed)
    for i in range(4):
        (mixed / "train" / f"zz_bad{i}.png").write_bytes(b"broken")
    summary = run(_train_args(mixed, tmp_path / "run", "--train_batch_size", 1,
                              "--max_train_steps", 6))
    assert summary["global_step"] == 6 and len(calls) == 6
    assert summary["trained_pairs"] == 6 and summary["skipped_images"] >= 1


def _damaged_copy(trained: Path, tmp: Path, mutate) -> Path:
    out = tmp / "run"
    shutil.copytree(trained, out, ignore=shutil.ignore_patterns("logs"))
    mutate(out)
    return out


TRAIN_CASES = [
    ("truncated_optimizer", "checkpoint-4", _truncate("checkpoint-4/optimizer.bin", 0.5),
         r"checkpoint-4.* is damaged: optimizer\.bin is truncated or damaged.*older checkpoint"),
    ("missing_scheduler", "checkpoint-4", _remove("checkpoint-4/scheduler.bin"), r"scheduler\.bin is missing or empty"),
    ("empty_random_states", "checkpoint-4", _write_text("checkpoint-4/random_states_0.pkl", ""),
         r"random_states_0\.pkl is missing or empty"),
    ("truncated_weights", "checkpoint-4", _truncate("checkpoint-4/encoder/diffusion_pytorch_model.safetensors"),
         r"encoder/diffusion_pytorch_model\.safetensors is missing or truncated"),
    ("missing_config", "checkpoint-4", _remove("checkpoint-4/encoder/config.json"),
         r"encoder/config\.json is missing or damaged"),
    ("missing_training_state", "checkpoint-4", _remove("checkpoint-4/training_state_0.json"),
         r"training_state_0\.json is missing"),
    ("not_a_checkpoint", "checkpoint-9", lambda out: None,
         r"not a checkpoint-<step> folder.*Available in .*checkpoint-2.*checkpoint-4"),
    ("unfinished_save", "checkpoint-6.tmp", lambda out: (out / "checkpoint-6.tmp").mkdir(), r"unfinished checkpoint"),
]


@pytest.mark.parametrize("case", TRAIN_CASES, ids=[case[0] for case in TRAIN_CASES])
def test_resume_from_a_damaged_checkpoint_is_refused(case, trained, train_images, tmp_path):
    _, checkpoint, mutate, message = case
    out = _damaged_copy(trained, tmp_path, mutate)
    before = _files(out)
    with pytest.raises(ValueError, match=message):
        run(_train_args(train_images / "good", out, "--max_train_steps", 6,
                        "--resume_from_checkpoint", checkpoint))
    assert _files(out) - {"training_args.json"} <= before  # no checkpoint, model or card was written
    assert not [p for p in out.iterdir() if p.name in ("checkpoint-6", ".export.tmp")]


def test_resume_with_another_batch_size_is_refused(trained, train_images, tmp_path):
    out = _damaged_copy(trained, tmp_path, lambda out: None)
    with pytest.raises(ValueError, match=r"checkpoint-4 was saved with --train_batch_size 2 but this run has 3.*"
                                         r"Resume with --train_batch_size 2, or start a new run"):
        run(_train_args(train_images / "good", out, "--train_batch_size", 3, "--max_train_steps", 6,
                        "--resume_from_checkpoint", "latest"))
    assert not (out / "checkpoint-6").exists()


def test_latest_skips_a_damaged_checkpoint_and_says_why(trained, train_images, tmp_path, caplog):
    out = _damaged_copy(trained, tmp_path, _truncate("checkpoint-4/optimizer.bin", 0.5))
    caplog.set_level("WARNING", logger="sradm.train")
    summary = run(_train_args(train_images / "good", out, "--resume_from_checkpoint", "latest"))
    assert "Skipping checkpoint-4: optimizer.bin is truncated" in caplog.text
    assert summary["global_step"] == 4  # resumed from checkpoint-2 and trained steps 3-4 again
    # ... to the same weights as the uninterrupted run (same path; a tolerance only because the resumed run's
    # optimizer state comes back through torch.load and its weights through safetensors).
    fresh, resumed = load_weights(trained), load_weights(out)
    for key in fresh:
        torch.testing.assert_close(resumed[key], fresh[key], atol=1e-6, rtol=1e-5)


def test_recover_export_discards_an_unfinished_one_and_finishes_a_complete_one(tmp_path):
    (tmp_path / "config.json").write_text("old")
    (tmp_path / ".export.tmp").mkdir()
    (tmp_path / ".export.tmp" / "config.json").write_text("new, not marked complete")
    assert "removed" in tu.recover_export(str(tmp_path))
    assert (tmp_path / "config.json").read_text() == "old" and _hidden(tmp_path) == []

    def write(folder):
        Path(folder, "config.json").write_text("new")
        Path(folder, "weights").write_text("new weights")

    tu.export_atomic(str(tmp_path), write)
    assert (tmp_path / "config.json").read_text() == "new" and (tmp_path / "weights").read_text() == "new weights"
    assert _hidden(tmp_path) == []
