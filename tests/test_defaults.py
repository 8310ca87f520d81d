"""One set of sampling defaults (sradm_diffusers.defaults) read by every front end (issue 21, 1).

- the documented values are literally UniPC / 11 trailing steps / strength 0.82 / LR consistency / 9 U-Net calls
  (counted with a forward hook on the bundled demo model);
- `DEFAULT_SAMPLING(pipe, image, generator=...)` is `sradm upscale`'s default output for the same seed, bit for bit
  (the same code path in the same process), and leaves the pipeline's stored scheduler as it was;
- `sradm evaluate --methods sradm` with defaults scores exactly the images `sradm upscale` writes with defaults;
- the web demo and the Space open with the object, whatever it holds; no front end imports another for defaults;
- the module imports neither torch nor diffusers.
"""

from __future__ import annotations

import ast
import functools
import json
import math
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from sradm_diffusers import DEFAULT_SAMPLING, DEMO_MODEL, SAMPLE_IMAGE, SamplingSettings, SRADMPipeline
from sradm_diffusers import defaults
from sradm_diffusers.commands.cli import main

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "sradm_diffusers"


@pytest.fixture(scope="module")
def demo():
    pipe = SRADMPipeline.from_pretrained(DEMO_MODEL)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _crop(path, box) -> PIL.Image.Image:
    with PIL.Image.open(SAMPLE_IMAGE) as image:
        crop = image.convert("RGB").crop(box)
    crop.save(path)
    return crop


def test_module_imports_neither_torch_nor_diffusers():
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('sradm_defaults', {str(PACKAGE / 'defaults.py')!r})\n"
        "module = sys.modules['sradm_defaults'] = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "print(module.DEFAULT_SAMPLING.scheduler, 'torch' in sys.modules, 'diffusers' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["unipc", "False", "False"]


def test_documented_values_and_nine_unet_calls(demo):
    assert DEFAULT_SAMPLING == SamplingSettings(scheduler="unipc", steps=11, strength=0.82, lr_consistency=True)
    from sradm_diffusers.commands.runtime import DTYPES

    assert defaults.DTYPE_NAMES == tuple(DTYPES)  # the CLI's torch-free choices name upscale's dtypes
    assert DEFAULT_SAMPLING.unet_calls() == 9 and defaults.SCHEDULERS["unipc"] == (
        "UniPCMultistepScheduler", {"timestep_spacing": "trailing"})

    calls, seen = [], []
    hook = demo.unet.register_forward_hook(lambda module, args, output: calls.append(1))
    stored, stored_entry = demo.scheduler, demo.config["scheduler"]
    config_before = dict(stored.config)

    def spy(pipe, step, timestep, tensors):
        seen.append((type(pipe.scheduler).__name__, pipe.scheduler.config.timestep_spacing, int(timestep)))
        return {}

    try:
        image = np.asarray(PIL.Image.open(SAMPLE_IMAGE).convert("RGB"))[40:56, 60:80]
        DEFAULT_SAMPLING(demo, image, generator=torch.Generator().manual_seed(0), callback_on_step_end=spy)
    finally:
        hook.remove()
    assert len(calls) == 9 and len(seen) == 9  # one U-Net forward per step run
    assert {(name, spacing) for name, spacing, _ in seen} == {("UniPCMultistepScheduler", "trailing")}
    assert seen[0][2] == 81  # the RRDB output noised to t = 81 of 100 (the third of 11 trailing steps)
    # the stored scheduler is the same object with the same config, and so is the pipeline's config entry
    assert demo.scheduler is stored and type(stored).__name__ == "DDPMScheduler"
    assert dict(stored.config) == config_before and demo.config["scheduler"] == stored_entry


def test_scheduler_is_put_back_after_an_error_and_fixed_arguments_are_refused(tiny_pipe):
    stored = tiny_pipe.scheduler
    with pytest.raises(ValueError, match="NaN"):
        DEFAULT_SAMPLING(tiny_pipe, np.full((8, 8, 3), np.nan, dtype=np.float32))
    assert tiny_pipe.scheduler is stored
    with pytest.raises(TypeError, match=r"strength come from the settings; change them with \.replace"):
        DEFAULT_SAMPLING(tiny_pipe, np.zeros((8, 8, 3), np.uint8), strength=1.0)
    assert DEFAULT_SAMPLING.replace(lr_consistency=False) == SamplingSettings("unipc", 11, 0.82, False)


@pytest.mark.parametrize(
    "kwargs, message",
    [(dict(scheduler="heun"), "scheduler 'heun'"), (dict(steps=0), "steps must be"), (dict(strength=0), "strength"),
     (dict(strength=1.5), "strength"), (dict(steps=2.0), "steps must be")],
)
def test_bad_settings_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SamplingSettings(**kwargs)


def test_the_command_lines_rule():
    assert defaults.resolve_sampling() == DEFAULT_SAMPLING
    assert defaults.resolve_sampling(lr_consistency=False) == DEFAULT_SAMPLING.replace(lr_consistency=False)
    # once one sampling option is given, the others take their own defaults
    assert defaults.resolve_sampling(scheduler="dpm-sde") == SamplingSettings("dpm-sde", None, 1.0, True)
    assert defaults.resolve_sampling(steps=50) == SamplingSettings(None, 50, 1.0, True)
    assert defaults.resolve_sampling(strength=0.5) == SamplingSettings(None, None, 0.5, True)


def test_python_one_liner_equals_the_cli_default(demo, tmp_path):
    crop = _crop(tmp_path / "crop.png", (56, 36, 88, 60))  # 32x24 LR
    assert main(["upscale", str(tmp_path / "crop.png"), "--seed", "0", "-o", str(tmp_path / "cli.png")]) == 0
    sr = DEFAULT_SAMPLING(demo, crop, generator=torch.Generator().manual_seed(0)).images[0]
    with PIL.Image.open(tmp_path / "cli.png") as written:
        # the same code path in the same process: bit-exact
        np.testing.assert_array_equal(np.asarray(written), np.asarray(sr))
    # the two-line diffusers idiom gives the same image
    swapped = SRADMPipeline(**{**demo.components, "scheduler": DEFAULT_SAMPLING.make_scheduler(demo.scheduler.config)})
    swapped.set_progress_bar_config(disable=True)
    again = swapped(crop, generator=torch.Generator().manual_seed(0), **DEFAULT_SAMPLING.call_kwargs()).images[0]
    np.testing.assert_array_equal(np.asarray(again), np.asarray(sr))


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def test_evaluate_scores_what_upscale_writes(tmp_path, capsys):
    from sradm_diffusers.commands.evaluate import make_lr
    from sradm_diffusers.metrics.quality import compute_metrics

    hr_dir, lr_dir, out_dir = tmp_path / "hr", tmp_path / "lr", tmp_path / "up"
    for folder in (hr_dir, lr_dir):
        folder.mkdir()
    _crop(hr_dir / "a.png", (0, 0, 64, 48))
    _crop(hr_dir / "b.png", (40, 60, 88, 100))
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--hr-dir", str(hr_dir), "--scale", "4", "--methods", "sradm", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    config = result["config"]
    assert (config["scheduler"], config["steps"], config["strength"], config["unet_calls"]) == ("unipc", 11, 0.82, 9)
    assert config["lr_consistency"] is True and config["scheduler_class"] == "UniPCMultistepScheduler"

    hr = {}
    for name in ("a.png", "b.png"):  # the LR evaluate makes, as a file: what a user would upscale
        hr[name] = torch.from_numpy(np.asarray(PIL.Image.open(hr_dir / name).convert("RGB")).copy()).permute(2, 0, 1)
        lr = make_lr(hr[name][None], 4)[0]
        PIL.Image.fromarray(lr.permute(1, 2, 0).numpy()).save(lr_dir / name)
    assert main(["upscale", str(lr_dir), "--seed", "0", "-o", str(out_dir)]) == 0
    capsys.readouterr()

    for name, stem in (("a.png", "a"), ("b.png", "b")):
        sr = np.asarray(PIL.Image.open(out_dir / f"{stem}_x4.png").convert("RGB"))
        lr = torch.from_numpy(np.asarray(PIL.Image.open(lr_dir / name)).copy()).permute(2, 0, 1)
        scored = result["per_image"][name]["sradm"]
        assert scored["psnr_rgb"] == pytest.approx(_psnr(sr, hr[name].permute(1, 2, 0).numpy()), abs=1e-9)
        metrics = compute_metrics(torch.from_numpy(sr.copy()).permute(2, 0, 1), hr[name], 4, lr=lr)
        for key in ("ssim_rgb", "psnr_y", "ssim_y", "lr_psnr"):
            value = float(metrics[key])
            expected = "inf" if value == math.inf else pytest.approx(value, abs=1e-9)
            assert scored[key] == expected, key
        assert scored["lpips"] is None or isinstance(scored["lpips"], float)


def test_evaluate_tiles_as_upscale_does(tmp_path, model_dir, capsys):
    hr_dir = tmp_path / "hr"
    hr_dir.mkdir()
    _crop(hr_dir / "t.png", (0, 0, 160, 96))  # 40x24 LR: 3x2 tiles of 16 LR pixels (the smallest --tile)
    out = tmp_path / "r.json"
    tiles = ["--tile", "16", "--tile-overlap", "2"]
    assert main(["evaluate", "--model", model_dir, "--hr-dir", str(hr_dir), "--scale", "4", "--methods", "sradm",
                 "--json", str(out), *tiles]) == 0
    from sradm_diffusers.commands.evaluate import make_lr

    hr = np.asarray(PIL.Image.open(hr_dir / "t.png").convert("RGB"))
    lr = make_lr(torch.from_numpy(hr.copy()).permute(2, 0, 1)[None], 4)[0].permute(1, 2, 0).numpy()
    PIL.Image.fromarray(lr).save(tmp_path / "t.png")
    assert main(["upscale", str(tmp_path / "t.png"), "--model", model_dir, "--seed", "0", "-o",
                 str(tmp_path / "t_sr.png"), *tiles]) == 0
    capsys.readouterr()
    sr = np.asarray(PIL.Image.open(tmp_path / "t_sr.png"))
    scored = json.loads(out.read_text())["per_image"]["t.png"]["sradm"]
    assert scored["psnr_rgb"] == pytest.approx(_psnr(sr, hr), abs=1e-9)


def test_demo_and_space_open_with_the_defaults_object(tiny_pipe, monkeypatch):
    gr = pytest.importorskip("gradio", reason="the web demo needs the [demo] extra")
    from sradm_diffusers.commands.demo.runner import DemoRunner

    monkeypatch.setattr(defaults, "DEFAULT_SAMPLING", SamplingSettings("ddim", 7, 0.5, False))
    monkeypatch.setattr(DemoRunner, "from_model", classmethod(lambda cls, model=None, device=None: cls(tiny_pipe)))
    pages = []
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kwargs: pages.append(self))
    runpy.run_path(str(ROOT / "spaces" / "sradm-demo" / "app.py"), run_name="__main__")
    (page,) = pages
    values = {b.elem_id: b.value for b in page.blocks.values() if getattr(b, "elem_id", None)}
    assert (values["sampler"], values["steps"], values["strength"], values["lr_consistency"]) == ("ddim", 7, 0.5, False)


def _imports(path: Path) -> set[str]:
    """Module names a source file imports (relative ones resolved inside the package), at any depth."""
    names = set()
    package = ".".join(path.relative_to(ROOT / "src").with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_no_front_end_imports_another_for_defaults():
    """The command front ends (and the CLI, which dispatches to them inside main()) read sradm_diffusers.defaults;
    none imports the CLI or another command's module (the former cycle: cli -> demo -> cli). They share only the
    command layer's runtime (commands.runtime, commands.files, ...)."""
    commands = PACKAGE / "commands"
    front_ends = {
        "upscale": commands / "upscale.py", "evaluate": commands / "evaluate.py", "demo": commands / "demo",
        "interpolate": commands / "interpolate.py", "fuse": commands / "fuse.py",
    }
    for name, path in front_ends.items():
        files = sorted(path.glob("*.py")) if path.is_dir() else [path]
        imported = set().union(*(_imports(f) for f in files))
        others = {f"sradm_diffusers.commands.{other}" for other in [*front_ends, "cli"] if other != name}
        assert not imported & others, (name, imported & others)
    cli_top_level = {n.module for n in ast.parse((commands / "cli.py").read_text()).body if isinstance(n, ast.ImportFrom)}
    assert "defaults" in cli_top_level and not cli_top_level & {"evaluate", "demo", "interpolate", "fuse"}
    assert "sradm_diffusers.defaults" in _imports(commands / "demo" / "runner.py")


def test_training_validation_uses_the_table():
    from training import train

    from sradm_diffusers.presets import default_scheduler

    for name in train.VALIDATION_SCHEDULERS:
        scheduler = train._validation_scheduler(name)
        expected = defaults.make_scheduler(name, default_scheduler().config)
        assert type(scheduler) is type(expected) and scheduler.config == expected.config


def test_evaluate_reports_progress_and_dpm_sde_by_name(tmp_path, model_dir, capsys, monkeypatch):
    import sradm_diffusers.commands.evaluate as evaluation

    monkeypatch.setattr(evaluation, "StepReporter", functools.partial(evaluation.StepReporter, interval=0.0))
    hr_dir = tmp_path / "hr"
    hr_dir.mkdir()
    _crop(hr_dir / "x.png", (0, 0, 32, 24))
    out = tmp_path / "r.json"
    assert main(["evaluate", "--model", model_dir, "--hr-dir", str(hr_dir), "--scale", "4", "--methods", "sradm",
                 "--scheduler", "dpm-sde", "--steps", "3", "--json", str(out)]) == 0
    captured = capsys.readouterr()
    assert "sradm evaluate: image 1/1: x.png" in captured.err  # stderr is not a terminal under pytest
    assert [line for line in captured.err.splitlines() if ": step " in line] == [
        f"sradm evaluate: x.png: step {k}/3" for k in (1, 2, 3)]
    config = json.loads(out.read_text())["config"]
    assert (config["scheduler"], config["scheduler_class"]) == ("dpm-sde", "DPMSolverMultistepScheduler")
    assert "SRADM: dpm-sde (DPMSolverMultistepScheduler), 3 steps" in captured.out


def test_interpolate_reports_progress(tmp_path, model_dir, capsys, monkeypatch):
    import sradm_diffusers.commands.runtime as runtime

    monkeypatch.setattr(runtime, "StepReporter", functools.partial(runtime.StepReporter, interval=0.0))
    _crop(tmp_path / "in.png", (0, 0, 8, 8))
    assert main(["interpolate", str(tmp_path / "in.png"), "-o", str(tmp_path / "strip.png"), "--frames", "2",
                 "--steps", "2", "--model", model_dir]) == 0
    err = capsys.readouterr().err
    assert "sradm interpolate: 2 frames of 8x8 in one batch, 2 DDIM steps" in err
    assert "sradm interpolate: 2 frames of 8x8: step 2/2" in err


def test_json_tells_an_exact_match_from_not_computed(tmp_path):
    from sradm_diffusers.commands.evaluate import JSON_INFINITY, write_json_atomic

    write_json_atomic({"lr_psnr": math.inf, "lpips": None, "bad": math.nan, "rows": [math.inf, 1.5]}, tmp_path / "j")
    data = json.loads((tmp_path / "j").read_text())
    assert data == {"lr_psnr": "inf", "lpips": None, "bad": None, "rows": ["inf", 1.5]} and JSON_INFINITY == "inf"
    assert float(data["lr_psnr"]) == math.inf


def test_every_option_has_help():
    from sradm_diffusers.commands.cli import build_parser

    parser = build_parser()
    (commands,) = [a for a in parser._actions if a.dest == "command"]
    for name, sub in commands.choices.items():
        for action in sub._actions:
            assert action.help and action.help.strip(), (name, action.dest)
