"""What the web demo does for one request, without Gradio: check the options, load the image, sample, write PNGs.

The results match ``sradm upscale`` with the same options: the same samplers (:data:`SCHEDULERS`), defaults
(:mod:`sradm_diffusers.defaults`: the page opens with :data:`DEFAULT_SAMPLING`), seeds (sample ``k`` uses a CPU
generator seeded ``seed + k``) and output names.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import PIL.Image

from ... import defaults
from ...defaults import LR_CONSISTENCY, MAX_SEED, SCHEDULERS, default_steps, make_scheduler
from ...image_processing import postprocess, preprocess
from ...imresize import imresize
from ...sampling.rrdb_start import check_strength
from ..runtime import ImageError, UsageError, load_pipeline, resolve_device, sample_generators
from ..files import OutputPlan, load_image, write_image_atomic

MAX_SAMPLES = 4
"""Most SR samples one request may ask for."""

MAX_INPUT_PIXELS = 256 * 256
"""Default budget of one request, in LR pixels times samples: a 256x256 input with one sample, 128x128 with four.
It bounds the time and memory one visitor can take on a CPU server."""

StepCallback = Callable[[int, int], None]
"""``on_step(done, total)``: called before the first denoising step (done = 0) and after every step."""


@dataclass
class DemoResult:
    """One request's outputs, all at the SR size (s*h, s*w).

    Attributes:
        bicubic: the input upsampled with MATLAB-bicubic :func:`imresize`, the image SRADM adds its residual to.
        samples: the K SR samples, RGB.
        uncertainty: per-pixel standard deviation over the samples (mean over RGB), float32 (s*h, s*w) in [0, 0.5];
            None when K = 1.
        files: the full-resolution PNG of each sample, named like ``sradm upscale`` names them.
        seconds: wall-clock time of the sampling.
        steps, seed: the checked options (sample ``k`` used ``seed + k``).
        strength: the checked start strength (``int(steps * strength)`` U-Net calls per sample).
    """

    bicubic: PIL.Image.Image
    samples: list[PIL.Image.Image]
    uncertainty: np.ndarray | None
    files: list[str]
    seconds: float
    steps: int
    seed: int
    strength: float = 1.0


def uncertainty_map(samples: np.ndarray) -> np.ndarray:
    """(K, H, W, 3) SR samples in [0, 1] -> (H, W) float32: their per-pixel standard deviation, mean over RGB."""
    return samples.std(axis=0).mean(axis=-1).astype(np.float32)


def _as_int(value, name: str, low: int, high: int | None = None) -> int:
    """An integer option from the page (JSON numbers may arrive as 3.0); :class:`UsageError` when out of range."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    try:
        number = int(value) if isinstance(value, (int, str)) and not isinstance(value, bool) else None
    except ValueError:
        number = None
    if number is None:
        raise UsageError(f"{name} must be a whole number, got {value!r}.")
    if number < low or (high is not None and number > high):
        allowed = f"{low}..{high}" if high is not None else f">= {low}"
        raise UsageError(f"{name} {number} is out of range; use {allowed}.")
    return number


def _as_strength(value, steps: int) -> float:
    """The strength option from the page: a number in (0, 1] leaving at least one step; :class:`UsageError` else."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise UsageError(f"Strength must be a number in (0, 1], got {value!r}.")
    try:
        strength = float(value)
        check_strength(strength, steps)
    except (TypeError, ValueError) as error:
        raise UsageError(f"Strength {value!r}: {error}") from error
    return strength


class DemoRunner:
    """Holds one loaded pipeline and serves upscale requests, one at a time.

    Args:
        pipe: an :class:`~sradm_diffusers.SRADMPipeline`; its scheduler is the base every sampler is built from.
        max_input_pixels: budget of one request in LR pixels times samples (:data:`MAX_INPUT_PIXELS`).
        model_name: what the page calls the model (None: the bundled demo model).
    """

    def __init__(self, pipe, max_input_pixels: int = MAX_INPUT_PIXELS, model_name: str | None = None):
        self.pipe = pipe
        self.model_name = model_name
        self.pipe.set_progress_bar_config(disable=True)  # progress goes to the page, not the server's stderr
        self.base_scheduler = pipe.scheduler
        self.scale = int(pipe.config.upscale_factor)
        self.max_steps = int(pipe.scheduler.config.num_train_timesteps)
        self.max_input_pixels = max_input_pixels
        self.samplers = list(SCHEDULERS)
        # read when the page is built (not bound at import), so the page always opens with the current default
        self.default_sampler = defaults.DEFAULT_SAMPLING.scheduler
        self.default_strength = defaults.DEFAULT_SAMPLING.strength
        self.default_lr_consistency = defaults.DEFAULT_SAMPLING.lr_consistency
        self._lock = threading.Lock()  # the scheduler is swapped per request: never two requests at once

    @classmethod
    def from_model(cls, model: str | None = None, device: str | None = None, **kwargs) -> "DemoRunner":
        """Load ``model`` (a pipeline folder or Hub id; None: the bundled demo model) like ``sradm upscale``."""
        return cls(load_pipeline(model, resolve_device(device)), model_name=model, **kwargs)

    def default_steps(self, sampler: str) -> int:
        """Steps the page sets when ``sampler`` is chosen (:meth:`sampler_defaults`)."""
        return self.sampler_defaults(sampler)[0]

    def sampler_defaults(self, sampler: str) -> tuple[int, float]:
        """(steps, strength) the page sets when ``sampler`` is chosen: :data:`DEFAULT_SAMPLING`'s for its scheduler
        (the few-step default), else what ``sradm upscale --scheduler <sampler>`` uses (the full schedule for
        ddpm, the fast default otherwise; strength 1)."""
        default = defaults.DEFAULT_SAMPLING
        if sampler == default.scheduler:
            return default.num_inference_steps(self._scheduler(sampler)), default.strength
        return default_steps(self._scheduler(sampler)), 1.0

    def _scheduler(self, sampler: str):
        """A fresh scheduler for ``sampler``, built like ``sradm upscale --scheduler`` from the model's own."""
        if sampler not in SCHEDULERS:
            raise UsageError(f"Sampler {sampler!r} is not one of {', '.join(SCHEDULERS)}.")
        return make_scheduler(sampler, self.base_scheduler.config)

    def check_size(self, width: int, height: int, samples: int) -> None:
        """:class:`UsageError` when a ``width`` x ``height`` input with ``samples`` samples exceeds the budget."""
        if width * height * samples > self.max_input_pixels:
            side = int(self.max_input_pixels**0.5)
            raise UsageError(
                f"The image is {width}x{height} ({width * height} pixels) and {samples} sample(s) were asked for; "
                f"this demo accepts at most {self.max_input_pixels} input pixels times samples per run "
                f"(about {side}x{side} with one sample). Crop or downscale the image, or ask for fewer samples."
            )

    def __call__(
        self,
        image: str | os.PathLike | PIL.Image.Image,
        sampler: str,
        steps,
        seed,
        samples,
        output_dir: str,
        name: str = "image",
        on_step: StepCallback | None = None,
        lr_consistency: bool = LR_CONSISTENCY,
        strength=1.0,
    ) -> DemoResult:
        """Super-resolve one image.

        Args:
            image: an image file (read with :func:`~sradm_diffusers.upscale.load_image`: EXIF orientation applied)
                or a PIL image. Never modified.
            sampler: a key of :data:`SCHEDULERS`.
            steps: denoising steps, 1..num_train_timesteps.
            seed: non-negative integer; sample ``k`` uses ``seed + k``.
            samples: K, 1..:data:`MAX_SAMPLES`.
            output_dir: existing folder the PNGs are written to.
            name: file name of the input, for the output names (``<stem>_x<s>.png`` / ``<stem>_x<s>_<k>.png``).
            on_step: progress callback, see :data:`StepCallback`.
            lr_consistency: back-project every step's x_0 onto the LR input (``SRADMPipeline(lr_consistency=)``).
            strength: in (0, 1]; below 1 start from the RRDB output (``SRADMPipeline(strength=)``); the page opens
                with :data:`DEFAULT_SAMPLING`'s.
        Raises:
            UsageError: a bad option, or an image too large for the budget.
            ImageError: the file cannot be read as an image.
        """
        scheduler = self._scheduler(sampler)
        steps = _as_int(steps, "Steps", 1, self.max_steps)
        samples = _as_int(samples, "Samples", 1, MAX_SAMPLES)
        seed = _as_int(seed, "Seed", 0, MAX_SEED - (samples - 1))  # sample k uses seed + k, a 63-bit integer
        strength = _as_strength(strength, steps)
        calls = int(steps * strength)  # the steps that run
        if isinstance(image, PIL.Image.Image):
            if image.width == 0 or image.height == 0:
                raise ImageError(f"image has no pixels ({image.width}x{image.height})")
        else:
            image = load_image(image)
        self.check_size(image.width, image.height, samples)

        def step_end(pipe, step, timestep, tensors):
            if on_step is not None:
                on_step(step + 1, calls)
            return {}

        with self._lock:
            self.pipe.scheduler = scheduler
            if on_step is not None:
                on_step(0, calls)
            start = time.perf_counter()
            try:
                arrays = self.pipe(
                    image,
                    num_inference_steps=steps,
                    generator=sample_generators(seed, samples),
                    num_images_per_prompt=samples,
                    output_type="np",
                    callback_on_step_end=step_end,
                    lr_consistency=bool(lr_consistency),
                    strength=strength,
                ).images
            except ValueError as error:  # the pipeline's input checks, and its memory check (SamplingMemoryError)
                raise ImageError(str(error)) from error
            seconds = time.perf_counter() - start

        sr = [PIL.Image.fromarray(a) for a in (arrays * 255.0).round().astype(np.uint8)]
        bicubic = postprocess(imresize(preprocess(image), self.scale).clamp(-1.0, 1.0))[0]
        files = OutputPlan(folder=output_dir).paths(name, self.scale, samples)
        for path, picture in zip(files, sr):
            write_image_atomic(picture, path)
        uncertainty = uncertainty_map(arrays) if samples > 1 else None
        return DemoResult(
            bicubic=bicubic, samples=sr, uncertainty=uncertainty, files=files, seconds=seconds, steps=steps, seed=seed,
            strength=strength,
        )
