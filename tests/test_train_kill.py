"""Training survives SIGKILL at any moment: at a random step, during a checkpoint save and during the final export
(while writing it and while swapping it in over an existing model). Each killed run is a real subprocess that
SIGKILLs itself at the named point (``SRADM_TRAIN_KILL_AT``, :func:`train_utils.crash_point`); every resume uses
``--resume_from_checkpoint latest``, and the end result must equal an uninterrupted run.

Every training run of this file (the reference too) is a subprocess with the same environment: one intra-op
thread and MKL's conditional numerical reproducibility, so that the resumed and the uninterrupted run take one
arithmetic path (a float sum over 16 threads, or an MKL kernel picked by the alignment of a fresh allocation, rounds
differently: on a 16-core machine an in-process reference differed from the resumed weights by more than 1e-6)."""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from training import train_utils as tu  # noqa: E402
from test_train import common, load_weights  # noqa: E402

from sradm_diffusers import SRADMPipeline  # noqa: E402

TOTAL_STEPS = 6
KILL_SEED = 20
"""Seed of the RNG that picks the step of the first kill (printed, so that a failure reproduces)."""

PINNED_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "MKL_CBWR": "COMPATIBLE"}


def _args(images: Path, encoder: Path, out: Path, steps: int, resume: bool = True) -> list[str]:
    argv = common(images, out, "--max_train_steps", steps, "--checkpointing_steps", 2, "--validation_steps", 0,
                  "--num_validation_images", 0, "--use_ema", "--ema_decay", "0.9")
    argv = [a for a in argv if a not in ("--validation_split", "test")]
    return ["--stage", "diffusion", "--pretrained_encoder", str(encoder), *argv,
            *(["--resume_from_checkpoint", "latest"] if resume else [])]


def _train(argv: list[str], kill_at: str | None = None) -> subprocess.CompletedProcess:
    """training/train.py in a subprocess with :data:`PINNED_ENV` (and ``SRADM_TRAIN_KILL_AT`` if given)."""
    env = {k: v for k, v in os.environ.items() if k != tu.KILL_ENV}
    env.update(PINNED_ENV, **({tu.KILL_ENV: kill_at} if kill_at else {}))
    return subprocess.run([sys.executable, str(ROOT / "training" / "train.py"), *argv], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def run(argv: list[str]) -> dict:
    """A training run to its end (subprocess); returns its train_summary.json."""
    result = _train(argv)
    assert result.returncode == 0, result.stderr[-3000:]
    out = Path(argv[argv.index("--output_dir") + 1])
    return json.loads((out / "train_summary.json").read_text())


def _killed_run(argv: list[str], point: str) -> None:
    """training/train.py in a subprocess that SIGKILLs itself at ``point``; asserts it really died there."""
    result = _train(argv, kill_at=point)
    assert result.returncode == -9, f"not killed at {point}: {result.stderr[-2000:]}"


def _steps(out: Path) -> list[int]:
    return [step for step, _ in tu.list_checkpoints(str(out))]


def _assert_same(a: dict, b: dict) -> None:
    # The resumed run takes the same code path, but its weights come back through safetensors and its optimizer
    # state through torch.load into other allocations; the project rule keeps bit-exactness for a path run twice
    # in one allocation layout, so a tolerance far below any training update (1e-6) is used here.
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=1e-5, msg=f"weights differ at {key}")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Images, a trained tiny encoder, and the uninterrupted reference run of TOTAL_STEPS steps."""
    from test_bad_inputs import _png

    root = tmp_path_factory.mktemp("kill")
    for i in range(4):
        _png(root / "images" / "train" / f"img{i}.png", 40, 40, seed=i)
    images = root / "images"
    encoder = root / "encoder"
    run(["--stage", "encoder", *[a for a in common(images, encoder, "--max_train_steps", 2, "--validation_steps", 0,
                                                   "--num_validation_images", 0)
                                 if a not in ("--validation_split", "test")]])
    reference = root / "reference"
    run(_args(images, encoder, reference, TOTAL_STEPS, resume=False))
    return images, encoder, reference


def test_sigkill_at_a_step_in_a_checkpoint_save_and_in_the_export_then_resume(setup, tmp_path):
    images, encoder, reference = setup
    out = tmp_path / "run"

    # An earlier, shorter run left a complete model (step 2) that the final export will replace.
    run(_args(images, encoder, out, 2, resume=False))
    old_unet = load_weights(out / "unet")

    # 1. SIGKILL right after a random optimizer step (before that step's checkpoint).
    step = random.Random(KILL_SEED).randint(3, TOTAL_STEPS - 1)
    print(f"first SIGKILL after step {step} (random.Random({KILL_SEED}))")
    _killed_run(_args(images, encoder, out, TOTAL_STEPS), f"step-{step}")
    latest = (step - 1) // 2 * 2
    assert _steps(out)[-1] == latest, f"killed at step {step}"

    # 2. SIGKILL in the middle of the next checkpoint save: the partial folder is never a checkpoint.
    save = latest + 2
    _killed_run(_args(images, encoder, out, TOTAL_STEPS), f"checkpoint-{save}")
    assert (out / f"checkpoint-{save}.tmp").is_dir() and _steps(out)[-1] == latest, f"killed at step {step}"

    # 3. SIGKILL while the final export is being written beside the old model: the old model is untouched.
    _killed_run(_args(images, encoder, out, TOTAL_STEPS), "export-write")
    assert _steps(out)[-1] == TOTAL_STEPS and not (out / f"checkpoint-{save}.tmp").exists()
    assert (out / ".export.tmp").is_dir()
    _assert_same(load_weights(out / "unet"), old_unet)
    SRADMPipeline.from_pretrained(out)

    # 4. SIGKILL while the new export is swapped in: the folder refuses to load (never a mix of old and new)...
    _killed_run(_args(images, encoder, out, TOTAL_STEPS), "export-swap")
    assert (out / ".export.tmp" / ".complete").is_file() and not (out / "model_index.json").exists()
    with pytest.raises(ValueError, match="final export into this folder was interrupted"):
        SRADMPipeline.from_pretrained(out)

    # ... and the next run finishes it, then ends exactly where the uninterrupted run ended.
    summary = run(_args(images, encoder, out, TOTAL_STEPS))
    assert summary["global_step"] == TOTAL_STEPS
    assert not [p.name for p in out.iterdir() if p.name.startswith(".") or p.name.endswith(".tmp")]
    _assert_same(load_weights(out / "unet"), load_weights(reference / "unet"))
    _assert_same(load_weights(out / f"checkpoint-{TOTAL_STEPS}" / "unet"),
                 load_weights(reference / f"checkpoint-{TOTAL_STEPS}" / "unet"))
    assert any(not torch.allclose(old_unet[k], v) for k, v in load_weights(out / "unet").items())
    SRADMPipeline.from_pretrained(out)
