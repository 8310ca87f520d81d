"""Every code block of README.md runs as pasted on a CPU (issue 21, 3), as the cards' snippets are tested.

- ```python blocks: each one in a fresh interpreter, in an empty temporary folder, offline. Lines that need a GPU
  are written under ``if torch.cuda.is_available():`` in the README, so they run where there is one.
- ```bash blocks: every line is classified. ``sradm`` commands are run (``python -m sradm_diffusers.commands.cli``) in a
  temporary folder that links the clone's ``src/`` (so relative paths in them resolve), and must write nothing but
  what they name; the others are left out for a stated reason (installing, the test suite itself, a server, the
  training runs and the demo-set evaluations that take hours). A new command line in the README must fall into one
  of the classes below, or this test fails and asks for it.
- ```text blocks are synopses, not commands.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import PIL.Image
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")

NOT_RUN = {  # first words of a command -> why the test leaves it out
    "pip": "installs packages (the test runs in the installed environment)",
    "HF_HUB_OFFLINE=1": "the test suite itself",
    "pytest": "the test suite itself",
    "python": "training-data preparation or a training run (minutes to hours; tests/test_train*.py cover train.py)",
    "accelerate": "a GPU training run",
    "sradm demo": "serves a page until Ctrl+C (tests/test_demo*.py)",
}
NEEDS_DEMO_SET = "data/demo/"  # commands on the demo set (built by training/prepare_demo_data.py): minutes to hours


def _fenced() -> list[tuple[str, str]]:
    """(language, code) of every fenced block, in order."""
    found, language, lines = [], None, []
    for line in README.splitlines(keepends=True):
        if line.startswith("```"):
            if language is None:
                language, lines = line[3:].strip(), []
            else:
                found.append((language, "".join(lines)))
                language = None
        elif language is not None:
            lines.append(line)
    assert language is None, "an unclosed code fence in README.md"
    return found


def blocks(language: str) -> list[str]:
    return [code for lang, code in _fenced() if lang == language]


def _env() -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])])
    return env


def commands() -> list[str]:
    """Every command of the ```bash blocks (comments and ``&&`` chains split off), in order."""
    found = []
    for block in blocks("bash"):
        for line in block.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                found += [part.strip() for part in line.split("&&")]
    return found


def test_the_readme_has_the_blocks_this_test_runs():
    assert len(blocks("python")) >= 3 and any("DEFAULT_SAMPLING(pipe, image" in b for b in blocks("python"))
    assert "sradm upscale --sample -o outputs/" in commands()
    assert not blocks(""), "a code block without a language: mark it python, bash or text"


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_python_block_runs_as_pasted(index, tmp_path):
    code = blocks("python")[index]
    for line in code.splitlines():  # a GPU-only call outside a guard would fail on a CPU-only machine
        if re.search(r"enable_(model|sequential)_cpu_offload\(|\.to\(\"cuda\"\)", line):
            assert line.startswith((" ", "\t")), f"GPU-only line not under `if torch.cuda.is_available():`: {line}"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(), capture_output=True, text=True)
    assert result.returncode == 0, f"README python block {index} failed:\n{code}\n{result.stderr[-3000:]}"
    assert list(tmp_path.iterdir()) == []  # writes nothing where it runs


def _classify(command: str) -> str | None:
    """None: run it; otherwise the reason it is not run."""
    if NEEDS_DEMO_SET in command:
        return "needs the demo set and minutes to hours of CPU"
    for start, reason in NOT_RUN.items():
        if command == start or command.startswith(start + " "):
            return reason
    if command.startswith("sradm "):
        return None
    raise AssertionError(f"README command not classified by tests/test_readme.py: {command!r}")


@pytest.mark.parametrize("command", [c for c in commands() if _classify(c) is None])
def test_sradm_command_runs_as_pasted(command, tmp_path):
    (tmp_path / "src").symlink_to(ROOT / "src")  # the clone's relative paths, with the outputs in tmp_path
    args = shlex.split(command)[1:]
    result = subprocess.run([sys.executable, "-m", "sradm_diffusers.commands.cli", *args], cwd=tmp_path, env=_env(),
                            capture_output=True, text=True)
    assert result.returncode == 0, f"{command}\n{result.stderr[-3000:]}"
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()
                     and not str(p.relative_to(tmp_path)).startswith("src"))
    assert written and all(path.startswith("outputs/") for path in written), written  # git-ignored, nothing else
    if args[:2] == ["upscale", "--sample"]:
        with PIL.Image.open(tmp_path / "outputs" / "astronaut_lr_x4_x4.png") as image:
            assert image.size == (512, 512)


def test_every_command_is_classified():
    reasons = {c: _classify(c) for c in commands()}
    assert any(reason is None for reason in reasons.values())
