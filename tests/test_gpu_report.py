"""``benchmarks/gpu_report.py --device cpu --quick``: the GPU report's dry run goes through every part (issue 19)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_report_dry_run_on_the_cpu(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_report.py"), "--device", "cpu", "--quick",
                             "--json", str(tmp_path / "report.json")], capture_output=True, text=True, env=env,
                            cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["device"] == "CPU" and report["quick"] is True
    # Every model x dtype row; TF32 and fp16 are CUDA's, the others are timed on the CPU.
    assert {(r["preset"], r["mode"]) for r in report["unet"]} == {
        (p, m) for p in ("demo", "div2k-x4") for m in ("fp32", "tf32", "bf16", "fp16")}
    for row in report["unet"]:
        assert (row["ms"] is None) == (row["mode"] in ("tf32", "fp16")) and (row["ms"] is None or row["ms"] > 0)
    up = report["upscale"]
    assert up["status"] == 0 and up["sampling_s"] > 0 and up["imports_s"] > 0 and up["cuda_init_s"] < 0.5
    parts = up["interpreter_s"] + up["imports_s"] + up["cuda_init_s"] + up["load_and_write_s"] + up["sampling_s"]
    assert abs(parts - up["wall_s"]) < 1e-6 and up["interpreter_s"] > 0
    assert report["train_synthetic"]["samples_per_s"] > 0 and report["train_loader"]["samples_per_s"] > 0
    assert "| demo | 32x32 | bf16 |" in result.stdout and "samples/s" in result.stdout
