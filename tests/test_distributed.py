"""`sradm upscale` / `sradm evaluate` under `accelerate launch` with 2 CPU processes (gloo): each process takes its
share of the images, and the files, the table and the JSON equal a one-process run's."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from sradm_diffusers.commands.cli import main

pytest.importorskip("accelerate")
ROOT = Path(__file__).resolve().parents[1]


def _image(h, w, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    image = np.stack([x * 5.0, y * 6.0, (x + y) * 2.5], axis=-1) + rng.normal(0, 8, (h, w, 3))
    return np.clip(image, 0, 255).round().astype(np.uint8)


@pytest.fixture
def photos(tmp_path):
    """Three HR photos (an odd count: the processes get 2 and 1)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, (h, w) in enumerate([(32, 40), (36, 44), (40, 32)]):
        PIL.Image.fromarray(_image(h, w, i)).save(folder / f"img{i}.png")
    return folder


def _launch(*args):
    """``accelerate launch`` the ``sradm`` command on 2 CPU processes; returns the finished process."""
    # accelerate 1.x starts several CPU processes through torch.distributed.run only with --multi_gpu;
    # ACCELERATE_USE_CPU=true then puts each on the CPU with the gloo backend (as tests/test_train.py does).
    # CUDA_VISIBLE_DEVICES="": CPU processes that cannot see a GPU (with one visible, gloo may pick it up).
    env = dict(os.environ, HF_HUB_OFFLINE="1", ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
           str(port), "-m", "sradm_diffusers.commands.cli", *map(str, args)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_upscale_splits_images_between_processes(photos, model_dir, tmp_path):
    # Both runs on the CPU: without --device the one-process run would take a GPU where there is one.
    args = ["--model", model_dir, "--steps", 2, "--seed", 7, "--samples", 2, "--device", "cpu"]
    assert main(["upscale", str(photos), "-o", str(tmp_path / "one") + os.sep, *map(str, args)]) == 0
    result = _launch("upscale", photos, "-o", str(tmp_path / "two") + os.sep, *args)

    names = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert len(names) == 6 and sorted(p.name for p in (tmp_path / "two").iterdir()) == names
    # Every output is written (and announced on stdout) once, by one of the two processes.
    announced = sorted(Path(line).name for line in result.stdout.split())
    assert announced == names
    for name in names:
        one = np.asarray(PIL.Image.open(tmp_path / "one" / name), dtype=np.int16)
        two = np.asarray(PIL.Image.open(tmp_path / "two" / name), dtype=np.int16)
        # Same seeds, same computation; other processes may round differently by one 8-bit level at most.
        assert np.abs(one - two).max() <= 1 and np.abs(one - two).mean() < 0.01


def test_evaluate_gathers_one_table_and_json(photos, model_dir, tmp_path):
    args = ["--hr-dir", photos, "--scale", 4, "--model", model_dir, "--methods", "bicubic,sradm", "--steps", 2,
            "--samples", 2, "--device", "cpu"]
    assert main(["evaluate", *map(str, args), "--json", str(tmp_path / "one.json")]) == 0
    result = _launch("evaluate", *args, "--json", tmp_path / "two.json")

    one = json.loads((tmp_path / "one.json").read_text())
    two = json.loads((tmp_path / "two.json").read_text())
    assert two["n_images"] == one["n_images"] == 3 and two["n_failed"] == 0
    assert two["methods"].keys() == one["methods"].keys() == {"bicubic", "sradm", "sradm_mean"}
    for method, scores in one["methods"].items():
        for key, value in scores.items():
            if not isinstance(value, float):  # None (no LPIPS weights here) or a non-finite value's text
                assert two["methods"][method][key] == value, (method, key)
            else:
                assert two["methods"][method][key] == pytest.approx(value, rel=1e-4, abs=1e-4), (method, key)
    assert result.stdout.count("Method") == 1  # the table is printed once, by the main process
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".json"].count("two.json") == 1


def test_one_process_takes_everything(monkeypatch):
    from sradm_diffusers.commands.distributed import ProcessShare

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    share = ProcessShare()
    assert share.state is None and share.is_main and share.num_processes == 1
    assert share.indices(5) == range(5) and share.indices(0) == range(0)
    assert share.gather({"a": 1}) == [{"a": 1}]
    assert share.device(None, lambda name: ("resolved", name)) == ("resolved", None)
