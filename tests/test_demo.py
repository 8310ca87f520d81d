"""The web demo without a browser: DemoRunner (options, results, files, errors), the Gradio handler and page wiring,
the `sradm demo` options and the Spaces app. A random `tiny` pipeline does the sampling; images are ~10 px."""

from __future__ import annotations

import hashlib
import re
import runpy
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from sradm_diffusers.commands.cli import build_parser
from sradm_diffusers.defaults import DEFAULT_SAMPLING
from sradm_diffusers.commands.demo import DemoRunner
from sradm_diffusers.commands.demo.runner import MAX_SAMPLES, uncertainty_map
from sradm_diffusers.imresize import imresize
from sradm_diffusers.defaults import SCHEDULERS
from sradm_diffusers.commands.runtime import ImageError, UsageError, resolve_steps, set_scheduler

SPACE_APP = Path(__file__).resolve().parents[1] / "spaces" / "sradm-demo" / "app.py"


@pytest.fixture
def runner(tiny_pipe):
    return DemoRunner(tiny_pipe, max_input_pixels=400)


@pytest.fixture
def lr_file(tmp_path, lr_image):
    path = tmp_path / "photo.png"
    PIL.Image.fromarray(lr_image[:10, :12]).save(path)
    return path


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_result_is_the_pipelines_with_the_cli_seeds(runner, tiny_pipe, lr_file, tmp_path):
    before = _sha(lr_file)
    steps_seen = []
    result = runner(lr_file, "ddim", 3, 7, 2, output_dir=str(tmp_path), name="photo.png",
                    on_step=lambda done, total: steps_seen.append((done, total)), lr_consistency=False)

    # The same computation done by hand, like `sradm upscale --scheduler ddim --steps 3 --seed 7 --samples 2`.
    tiny_pipe.scheduler = runner.base_scheduler
    set_scheduler(tiny_pipe, "ddim")
    with PIL.Image.open(lr_file) as image:
        expected = tiny_pipe(
            image, num_inference_steps=3, num_images_per_prompt=2, output_type="np",
            generator=[torch.Generator().manual_seed(7), torch.Generator().manual_seed(8)],
        ).images
    expected_u8 = (expected * 255.0).round().astype(np.uint8)
    # Same code path run twice on the same inputs: bit-exact.
    assert [np.asarray(s).tolist() for s in result.samples] == [e.tolist() for e in expected_u8]
    assert steps_seen == [(0, 3), (1, 3), (2, 3), (3, 3)]

    assert [Path(f).name for f in result.files] == ["photo_x4_0.png", "photo_x4_1.png"]
    for path, sample in zip(result.files, result.samples):
        with PIL.Image.open(path) as png:
            assert png.format == "PNG" and np.array_equal(np.asarray(png), np.asarray(sample))

    # Bicubic: MATLAB imresize of the input in [0, 1], computed here on numpy (float64 path): within one level.
    with PIL.Image.open(lr_file) as image:
        lr = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
    bicubic = np.clip(imresize(lr, 4), 0, 1) * 255.0
    assert result.bicubic.size == (48, 40)
    assert np.abs(np.asarray(result.bicubic, dtype=np.float64) - bicubic).max() <= 1.0

    # Uncertainty of two samples: the std of two values is half their distance.
    assert result.uncertainty.shape == (40, 48)
    np.testing.assert_allclose(result.uncertainty, (np.abs(expected[0] - expected[1]) / 2).mean(-1), atol=1e-6)
    assert _sha(lr_file) == before


def test_one_sample_has_no_uncertainty_and_pil_input_is_untouched(runner, lr_image, tmp_path):
    image = PIL.Image.fromarray(lr_image[:8, :8])
    pixels = np.asarray(image).copy()
    result = runner(image, "euler", 2, 0, 1, output_dir=str(tmp_path))
    assert result.uncertainty is None
    assert [Path(f).name for f in result.files] == ["image_x4.png"]
    assert np.array_equal(np.asarray(image), pixels) and image.size == (8, 8)


def test_uncertainty_map_is_the_per_pixel_std():
    samples = np.random.default_rng(0).random((3, 5, 4, 3)).astype(np.float32)
    expected = np.array([[np.mean([np.std(samples[:, y, x, c]) for c in range(3)]) for x in range(4)] for y in range(5)])
    np.testing.assert_allclose(uncertainty_map(samples), expected, atol=1e-6)


def test_default_sampler_and_steps_are_the_clis(runner, tiny_pipe):
    assert runner.default_sampler == DEFAULT_SAMPLING.scheduler == "unipc"
    assert (runner.default_strength, runner.default_lr_consistency) == (0.82, True)
    assert runner.samplers == list(SCHEDULERS)
    original = tiny_pipe.scheduler
    for name in SCHEDULERS:
        expected_pipe = type("P", (), {})()
        expected_pipe.scheduler = original
        set_scheduler(expected_pipe, name)
        expected = (11, 0.82) if name == "unipc" else (resolve_steps(expected_pipe, None), 1.0)
        assert runner.sampler_defaults(name) == expected  # the few-step default, else `--scheduler <name>` alone
        assert runner.default_steps(name) == expected[0]
    assert tiny_pipe.scheduler is original  # asking for a default swaps nothing


@pytest.mark.parametrize(
    "sampler, steps, seed, samples, message",
    [
        ("bogus", 2, 0, 1, "Sampler 'bogus'"),
        ("ddim", 0, 0, 1, "Steps 0 is out of range; use 1..100"),
        ("ddim", 101, 0, 1, "Steps 101"),
        ("ddim", 2.5, 0, 1, "Steps must be a whole number"),
        ("ddim", "two", 0, 1, "Steps must be a whole number"),
        ("ddim", None, 0, 1, "Steps must be a whole number"),
        ("ddim", 2, -1, 1, "Seed -1"),
        ("ddim", 2, 2**63 - 1, 2, "Seed 9223372036854775807 is out of range; use 0..9223372036854775806"),
        ("ddim", 2, 0, MAX_SAMPLES + 1, f"Samples {MAX_SAMPLES + 1}"),
    ],
)
def test_bad_options_are_named(runner, lr_file, tmp_path, sampler, steps, seed, samples, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        runner(lr_file, sampler, steps, seed, samples, output_dir=str(tmp_path))
    assert list(tmp_path.glob("*_x4*.png")) == []


def test_image_too_large_for_the_budget(runner, tmp_path):
    path = tmp_path / "wide.png"
    PIL.Image.new("RGB", (30, 10)).save(path)  # 300 pixels: fits once (budget 400), not twice
    runner(path, "ddim", 1, 0, 1, output_dir=str(tmp_path))
    with pytest.raises(UsageError, match=r"30x10 \(300 pixels\) and 2 sample\(s\).*at most 400"):
        runner(path, "ddim", 1, 0, 2, output_dir=str(tmp_path))


def test_unreadable_files(runner, tmp_path):
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not an image at all")
    with pytest.raises(ImageError, match="not an image file"):
        runner(garbage, "ddim", 1, 0, 1, output_dir=str(tmp_path))
    truncated = tmp_path / "truncated.png"
    noise = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    PIL.Image.fromarray(noise).save(tmp_path / "whole.png")
    truncated.write_bytes((tmp_path / "whole.png").read_bytes()[:2000])
    with pytest.raises(ImageError, match="cannot decode"):
        runner(truncated, "ddim", 1, 0, 1, output_dir=str(tmp_path))


# ---- the Gradio side --------------------------------------------------------------------------------------------


def test_handler_outputs_and_errors(runner, lr_file):
    gr = pytest.importorskip("gradio", reason="the web demo needs the [demo] extra")
    from sradm_diffusers.commands.demo.app import compare_selected, make_handler

    handler = make_handler(runner)
    payload = {"path": str(lr_file), "orig_name": "holiday.png", "url": None}
    # Values arrive raw from the page (preprocess=False): sliders may send floats.
    comparison, gallery, uncertainty, files, status, shown = handler(payload, "ddim", 2.0, 3, 2.0)
    before, after = comparison
    assert before.size == after.size == (48, 40)
    assert [caption for _, caption in gallery] == ["sample 0 (seed 3)", "sample 1 (seed 4)"]
    assert gallery[0][0] is after
    assert uncertainty["visible"] is True and uncertainty["value"].size == (48, 40)
    assert uncertainty["label"].startswith("Per-pixel std over the samples; white = ")
    assert [Path(f).name for f in files] == ["holiday_x4_0.png", "holiday_x4_1.png"]
    assert status.startswith("12x10 → 48x40 with ddim, 2 steps, strength 1 (2 U-Net calls), 2 sample(s)")
    # Clicking the second sample in the gallery shows it in the slider, against the same bicubic image.
    selected = compare_selected(shown, gr.SelectData(None, {"index": 1, "value": None}))
    assert selected["value"] == (before, gallery[1][0]) and selected["label"].endswith("sample 1")

    _, _, uncertainty, files, _, _ = handler(payload, "ddim", 1, 0, 1)
    assert uncertainty["visible"] is False and [Path(f).name for f in files] == ["holiday_x4.png"]

    *_, status, _ = handler(payload, "unipc", 11.0, 0, 1, True, 0.82)  # the page's defaults, as it sends them
    assert "with unipc, 11 steps, strength 0.82 (9 U-Net calls), 1 sample(s)" in status
    with pytest.raises(gr.Error, match="Strength 0.05"):
        handler(payload, "unipc", 11, 0, 1, True, 0.05)  # int(11 * 0.05) = 0 steps
    with pytest.raises(gr.Error, match="Upload an image first"):
        handler(None, "ddim", 1, 0, 1)
    with pytest.raises(gr.Error, match="Steps 0"):
        handler(payload, "ddim", 0, 0, 1)
    garbage = lr_file.with_name("garbage.png")
    garbage.write_bytes(b"junk")
    with pytest.raises(gr.Error, match="not an image file PIL can read"):
        handler({"path": str(garbage), "orig_name": "garbage.png"}, "ddim", 1, 0, 1)


def test_lr_consistency_option_is_the_pipelines(runner, tiny_pipe, lr_file, tmp_path):
    result = runner(lr_file, "ddim", 2, 5, 1, output_dir=str(tmp_path), lr_consistency=True)
    tiny_pipe.scheduler = runner.base_scheduler
    set_scheduler(tiny_pipe, "ddim")
    with PIL.Image.open(lr_file) as image:
        kwargs = dict(num_inference_steps=2, output_type="np", generator=torch.Generator().manual_seed(5))
        on = tiny_pipe(image, lr_consistency=True, **kwargs).images[0]
        off = tiny_pipe(image, lr_consistency=False, **kwargs).images[0]
    assert np.asarray(result.samples[0]).tolist() == (on * 255.0).round().astype(np.uint8).tolist()
    assert np.abs(on - off).max() > 1e-3  # the option really reaches the pipeline


def test_page_wiring(runner):
    gr = pytest.importorskip("gradio", reason="the web demo needs the [demo] extra")
    from sradm_diffusers.commands.demo.app import build_demo

    demo = build_demo(runner)
    (upscale,) = [fn for fn in demo.fns.values() if getattr(fn.fn, "__name__", "") == "upscale_handler"]
    assert upscale.concurrency_limit == 1 and upscale.preprocess is False and upscale.tracks_progress
    assert demo._queue.default_concurrency_limit == 1
    assert demo.analytics_enabled is False
    assert any(isinstance(block, gr.ImageSlider) for block in demo.blocks.values())
    steps = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "steps")
    assert steps.value == DEFAULT_SAMPLING.steps and steps.maximum == runner.max_steps
    consistency = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "lr_consistency")
    assert consistency.value is DEFAULT_SAMPLING.lr_consistency
    strength = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "strength")
    assert strength.value == DEFAULT_SAMPLING.strength
    assert {consistency._id, strength._id} <= {block._id for block in upscale.inputs}


def test_cli_options():
    args = build_parser().parse_args(["demo", "--model", "m", "--host", "0.0.0.0", "--port", "8000"])
    assert (args.command, args.model, args.host, args.port) == ("demo", "m", "0.0.0.0", 8000)
    with pytest.raises(UsageError, match="--port"):
        build_parser().parse_args(["demo", "--port", "0"])


def test_spaces_app_runs_the_package_demo(monkeypatch):
    import sradm_diffusers.commands.demo

    calls = []
    monkeypatch.setattr(sradm_diffusers.commands.demo, "launch", lambda **kwargs: calls.append(kwargs))
    runpy.run_path(str(SPACE_APP), run_name="__main__")
    assert calls == [{}]


def test_cli_without_gradio_names_the_extra(monkeypatch, capsys):
    import sys

    from sradm_diffusers.commands.cli import main

    monkeypatch.setitem(sys.modules, "gradio", None)  # as if not installed: importing it raises ImportError
    import sradm_diffusers.commands.demo

    monkeypatch.delitem(sys.modules, "sradm_diffusers.commands.demo.app", raising=False)
    monkeypatch.delattr(sradm_diffusers.commands.demo, "app", raising=False)
    assert main(["demo"]) == 2
    assert 'pip install "sradm-diffusers[demo]"' in capsys.readouterr().err
