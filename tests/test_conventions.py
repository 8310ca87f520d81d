"""diffusers pipeline conventions: interrupt, num_timesteps, PipelineCallback objects, generator lists, dtypes, and
the docstring example (run here as a doctest)."""

import doctest
import warnings

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback

from sradm_diffusers import DEMO_MODEL, SAMPLE_IMAGE, SRADMPipeline, imresize


def _count_unet_calls(pipe):
    calls = []
    pipe.unet.register_forward_pre_hook(lambda module, args: calls.append(1))
    return calls


def test_interrupt_skips_the_remaining_steps_and_num_timesteps_counts_them(tiny_pipe, lr_image):
    calls = _count_unet_calls(tiny_pipe)
    seen = []

    def stop_after_two(pipe, step, timestep, tensors):
        seen.append((step, pipe.num_timesteps))
        if step == 1:
            pipe._interrupt = True
        return tensors

    out = tiny_pipe(lr_image, num_inference_steps=5, callback_on_step_end=stop_after_two, output_type="pt").images
    assert len(calls) == 2 and seen == [(0, 5), (1, 5)]
    assert tiny_pipe.interrupt and tiny_pipe.num_timesteps == 5
    assert torch.isfinite(out).all()
    # The next call starts uninterrupted.
    tiny_pipe(lr_image, num_inference_steps=3, output_type="pt")
    assert len(calls) == 5 and not tiny_pipe.interrupt and tiny_pipe.num_timesteps == 3


class ScaleLatents(PipelineCallback):
    """Multiplies x_t by ``factor`` after every step and records the steps it saw."""

    tensor_inputs = ["latents"]

    def __init__(self, factor: float):
        super().__init__()
        self.factor, self.steps = factor, []

    def callback_fn(self, pipeline, step_index, timestep, callback_kwargs):
        self.steps.append(step_index)
        return {"latents": callback_kwargs["latents"] * self.factor}


def _with_function_callback(pipe, lr_image, factor):
    def scale(pipe, step, timestep, tensors):
        return {"latents": tensors["latents"] * factor}

    return pipe(lr_image, num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="pt",
                callback_on_step_end=scale).images


def test_pipeline_callback_objects_are_accepted(tiny_pipe, lr_image):
    callback = ScaleLatents(0.5)
    out = tiny_pipe(lr_image, num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="pt",
                    callback_on_step_end=callback).images
    assert callback.steps == [0, 1, 2]
    torch.testing.assert_close(out, _with_function_callback(tiny_pipe, lr_image, 0.5), atol=0, rtol=0)

    first, second = ScaleLatents(0.5), ScaleLatents(0.8)
    out = tiny_pipe(lr_image, num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="pt",
                    callback_on_step_end=MultiPipelineCallbacks([first, second])).images
    assert first.steps == second.steps == [0, 1, 2]
    expected = _with_function_callback(tiny_pipe, lr_image, 0.5 * 0.8)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    plain = tiny_pipe(lr_image, num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="pt")
    assert (plain.images - out).abs().max() > 1e-3  # the callbacks really changed the trajectory


@pytest.mark.parametrize("count", [1, 3, 5])
def test_generator_list_must_match_batch_times_k(tiny_pipe, lr_image, count):
    generators = [torch.Generator().manual_seed(i) for i in range(count)]
    with pytest.raises(ValueError, match=r"Got %d generators .* = 4 outputs" % count):
        tiny_pipe([lr_image, lr_image], num_inference_steps=1, generator=generators, num_images_per_prompt=2)


def test_generator_list_of_batch_times_k_is_per_output(tiny_pipe, lr_image):
    generators = [torch.Generator().manual_seed(i) for i in range(4)]
    out = tiny_pipe([lr_image, lr_image], num_inference_steps=2, generator=generators, num_images_per_prompt=2,
                    output_type="pt").images
    alone = tiny_pipe(lr_image, num_inference_steps=2, generator=torch.Generator().manual_seed(3), output_type="pt")
    torch.testing.assert_close(out[3:], alone.images, atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def small_photo():
    return PIL.Image.open(SAMPLE_IMAGE).convert("RGB").crop((40, 40, 72, 64))  # 32 x 24 LR pixels


def _sample(pipe, image):
    pipe.set_progress_bar_config(disable=True)
    return pipe(image, num_inference_steps=4, generator=torch.Generator().manual_seed(0), output_type="np").images


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_pipelines_give_finite_images(small_photo, dtype):
    reference = _sample(SRADMPipeline.from_pretrained(DEMO_MODEL), small_photo)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # diffusers 0.42 prefers dtype= but keeps torch_dtype=
        loaded = SRADMPipeline.from_pretrained(DEMO_MODEL, torch_dtype=dtype)
    assert loaded.unet.dtype == loaded.lr_encoder.dtype == dtype
    moved = SRADMPipeline.from_pretrained(DEMO_MODEL).to(dtype)
    assert moved.unet.dtype == moved.lr_encoder.dtype == dtype
    # The diffusion residual: how far the float32 result is from the bicubic upsample it starts from.
    lr = torch.from_numpy(np.asarray(small_photo).copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
    bicubic = ((imresize(lr, 4).clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()
    residual = np.abs(reference - bicubic).mean()
    for pipe in (loaded, moved):
        out = _sample(pipe, small_photo)
        assert out.dtype == np.float32 and out.shape == reference.shape == (1, 96, 128, 3)
        assert np.isfinite(out).all()
        # Same noise draws (x_t and the scheduler stay in float32), so the image follows the float32 one up to the
        # U-Net's rounding. Measured (AMD EPYC, torch 2.13): residual 0.0266; mean |half - fp32| 0.0005 (fp16, 2 %
        # of it) and 0.0024 (bf16, 9 %). The bar, 25 % of the residual, leaves a 2.7x margin over bf16 and fails
        # a result that lost the residual (bicubic: 100 %) or followed other noise (another seed: 75 %, the 0.020
        # that torch 2.11's own float16 CPU noise gave on an Intel CPU, issue 19).
        assert np.abs(out - reference).mean() < 0.25 * residual


def test_docstring_example_runs():
    doc = SRADMPipeline.__call__.__doc__
    assert ">>> pipe = SRADMPipeline.from_pretrained(DEMO_MODEL)" in doc  # replace_example_docstring filled it in
    code = doc.split("```py", 1)[1].split("```", 1)[0]  # the example's code block, without the Markdown fences
    test = doctest.DocTestParser().get_doctest(code, {}, "SRADMPipeline.__call__", None, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    assert runner.summarize(verbose=False) == doctest.TestResults(failed=0, attempted=len(test.examples))
    assert len(test.examples) == 9
