"""extras.interpolation's memory refusal (how many frames fit, written out here), its documented defaults and the
frame strip (mutants of these survived the feature tests)."""

import numpy as np
import pytest
import torch
from PIL import Image

from sradm_diffusers.extras.interpolation import check_frames_memory, frames_to_strip, interpolate
from sradm_diffusers.sampling.memory import MEMORY_LIMIT_ENV, SamplingMemoryError, estimate_sampling_bytes


@pytest.mark.parametrize("fit", [1, 2, 3, 5])
def test_the_refusal_names_how_many_frames_fit(tiny_pipe, monkeypatch, fit):
    lr_height, lr_width = 6, 10
    height, width = lr_height * 4, lr_width * 4
    fixed = estimate_sampling_bytes(tiny_pipe.unet, 0, height, width)
    one = estimate_sampling_bytes(tiny_pipe.unet, 1, height, width) - fixed
    budget = fixed + fit * one + one // 2  # `fit` frames fit, one more does not
    monkeypatch.setenv(MEMORY_LIMIT_ENV, str(budget))
    check_frames_memory(tiny_pipe, lr_height, lr_width, fit)  # fits: no error
    frames = fit + 2
    with pytest.raises(SamplingMemoryError) as error:
        check_frames_memory(tiny_pipe, lr_height, lr_width, frames)
    message = str(error.value)
    assert message.startswith(f"{frames} frames are sampled in one batch: sampling {frames} output(s) of {width}x"
                              f"{height} pixels needs about ")
    assert ";" not in message.split(": ", 1)[1].split("; ")[0]  # only the first clause of the pipeline's message
    fix = f"use --frames {fit} or fewer" if fit >= 2 else "even 2 frames do not fit: use a smaller input"
    assert message.endswith(f"; {fix}.")


def test_defaults_are_eight_frames_of_twenty_ddim_steps(tiny_pipe):
    steps = []

    def count(pipe, step, timestep, tensors):
        steps.append(step)
        return {}

    frames = interpolate(tiny_pipe, np.zeros((4, 4, 3), np.uint8), generator_a=torch.Generator().manual_seed(0),
                         generator_b=torch.Generator().manual_seed(1), callback_on_step_end=count)
    assert len(frames) == 8 and steps == list(range(20))
    assert type(tiny_pipe.scheduler).__name__ == "DDPMScheduler"  # restored


@pytest.mark.parametrize("count", [1, 3])
def test_the_strip_puts_frames_side_by_side(count):
    frames = [Image.new("RGB", (5, 4), (40 * k, 10, 200 - 40 * k)) for k in range(count)]
    strip = np.asarray(frames_to_strip(frames))
    assert strip.shape == (4, 5 * count, 3)
    for k, frame in enumerate(frames):
        np.testing.assert_array_equal(strip[:, 5 * k : 5 * k + 5], np.asarray(frame))
