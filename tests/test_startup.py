"""``sradm --help``, ``--version`` and argument errors answer without importing torch or diffusers (issue 19: they
took ~9 s and 400 MB), and the package's lazy import still gives every public name and the from_pretrained dispatch.
Each check runs in a fresh interpreter, since this test process has imported everything already."""

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "diffusers", "numpy", "transformers", "accelerate", "PIL")

_RUN_CLI = """
import json, sys
from sradm_diffusers.commands.cli import main
try:
    status = main(sys.argv[1:])
except SystemExit as exit_:
    status = exit_.code
print(json.dumps({"status": status, "loaded": sorted(m for m in %r if m in sys.modules)}), file=sys.stderr)
""" % (HEAVY,)


def _cli(*args: str) -> tuple[dict, str]:
    result = subprocess.run([sys.executable, "-c", _RUN_CLI, *args], capture_output=True, text=True, timeout=120)
    *lines, last = result.stderr.strip().splitlines()
    return json.loads(last), result.stdout + "\n".join(lines)


@pytest.mark.parametrize(
    "args, status, says",
    [
        (["--help"], 0, "upscale"),
        (["--version"], 0, "sradm 0.1.0"),
        (["upscale", "--help"], 0, "--dtype"),
        (["evaluate", "--help"], 0, "--hr-dir"),
        (["upscale", "x.png", "--tile", "big"], 2, "'big' is not an integer"),
        (["upscale", "x.png", "--dtype", "fp64"], 2, "invalid choice: 'fp64'"),
        (["upscale"], 2, "give at least one INPUT"),
        (["frobnicate"], 2, "invalid choice: 'frobnicate'"),
    ],
)
def test_help_version_and_argument_errors_do_not_import_torch(args, status, says):
    outcome, text = _cli(*args)
    assert outcome["status"] == status, text
    assert says in text
    assert outcome["loaded"] == [], f"sradm {' '.join(args)} imported {outcome['loaded']}"


def test_a_real_command_still_loads_torch():
    # The check above is not vacuous: a command that reads an image goes past argument parsing and needs torch.
    outcome, text = _cli("upscale", "missing-file.png", "--device", "cpu")
    assert outcome["status"] == 1 and "missing-file.png" in text
    assert "torch" in outcome["loaded"]


def test_lazy_package_gives_public_names_and_dispatch_after_a_later_diffusers_import():
    code = """
import sys
import importlib.util
import sradm_diffusers
assert "torch" not in sys.modules and "diffusers" not in sys.modules
assert importlib.util.find_spec("diffusers") is not None  # an availability check first: the hook must survive it
assert "diffusers" not in sys.modules
from diffusers import DiffusionPipeline, ModelMixin  # imported after the package: the hook installs the dispatch
assert getattr(DiffusionPipeline.from_pretrained.__func__, "_sradm_dispatch", False)
assert sradm_diffusers.ModelMixin is ModelMixin
pipe = DiffusionPipeline.from_pretrained(sradm_diffusers.DEMO_MODEL)
assert type(pipe) is sradm_diffusers.SRADMPipeline, type(pipe)
assert set(sradm_diffusers.__all__) <= set(dir(sradm_diffusers))
import types
from sradm_diffusers import imresize  # the function, although the submodule of that name is imported by now
assert "sradm_diffusers.imresize" in sys.modules and not isinstance(imresize, types.ModuleType)
assert tuple(imresize(__import__("torch").zeros(1, 3, 4, 4), 2).shape) == (1, 3, 8, 8)
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
