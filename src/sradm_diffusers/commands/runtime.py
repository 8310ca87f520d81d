"""What every ``sradm`` command shares at run time: its errors, the model, the device, the sampler and progress lines.

Nothing here is imported by the library (``SRADMPipeline`` and its sampling modules): it is the command layer's own
runtime. torch and diffusers are imported inside the functions, so ``sradm --help`` stays free of them.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from typing import TYPE_CHECKING

from ..defaults import (
    AUTO_TILE_PIXELS, DEFAULT_TILE, DEVICES, MAX_SEED, MIN_TILE, SCHEDULERS, SamplingSettings, choose_tiling,
    default_steps, make_scheduler,
)
from ..resources import DEMO_MODEL
from ..sampling.memory import keep_freed_memory, trim_heap_around_each_call

if TYPE_CHECKING:
    import torch


DEFAULT_MODEL: str = DEMO_MODEL
"""Folder (or Hub id) used when ``--model`` is not given: the bundled demo pipeline."""


DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
"""``--dtype`` name -> the ``torch`` dtype's attribute name (:func:`torch_dtype`)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like SIGINT's KeyboardInterrupt so that the same cleanup runs (temporary image files in
    ``sradm``, unfinished checkpoint or export folders in ``training/train.py``)."""


def raise_terminated(signum, frame) -> None:
    """SIGTERM handler: raise :class:`Terminated` where the process was."""
    raise Terminated()


class UsageError(ValueError):
    """A bad option, model or output location: reported in one line, exit status 2."""


class ImageError(Exception):
    """One input image cannot be processed: reported as ``error: <path>: <reason>`` and skipped."""


def one_line(error: BaseException | str, limit: int = 400) -> str:
    """An exception (or text) as a single line of at most ``limit`` characters."""
    text = str(error) if not isinstance(error, str) else error
    text = " ".join(text.split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def torch_dtype(name: str) -> "torch.dtype":
    """``--dtype`` name ("fp32", "fp16", "bf16") -> ``torch.float32`` / ``torch.float16`` / ``torch.bfloat16``."""
    import torch

    return getattr(torch, DTYPES[name])


def resolve_device(name: str | None) -> torch.device:
    """``--device``: None picks cuda, then mps, then cpu; an unavailable device is a :class:`UsageError`."""
    import torch

    if name is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name not in DEVICES:
        raise UsageError(f"--device {name!r} is not one of {', '.join(DEVICES)}.")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError(
            "--device cuda, but torch sees no CUDA GPU (torch.cuda.is_available() is False); use --device cpu."
        )
    if name == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise UsageError("--device mps, but the MPS backend is not available on this machine; use --device cpu.")
    return torch.device(name)


def load_pipeline(model: str | None, device: torch.device | str = "cpu", dtype: str = "fp32"):
    """Load an SRADM pipeline folder or Hub id for command-line use.

    Args:
        model: ``--model``; None means :data:`DEFAULT_MODEL`.
        device: where to run it.
        dtype: "fp32", "fp16" or "bf16" (weights loaded in that dtype with ``torch_dtype``).
    Returns:
        The pipeline, on ``device``.
    Raises:
        UsageError: the model cannot be loaded (message: one line naming the model and the fix).
    """
    from diffusers.utils import logging as diffusers_logging

    from ..pipeline import SRADMPipeline

    model = DEFAULT_MODEL if model is None else model
    if dtype not in DTYPES:
        raise UsageError(f"--dtype {dtype!r} is not one of {', '.join(DTYPES)}.")
    model = os.path.expanduser(model)
    # A Hub id is "name" or "org/name"; anything else with a separator (absolute, ./, ../, a/b/c) is a path.
    looks_like_path = (
        os.path.isabs(model) or model.startswith(("./", "../", ".\\", "..\\")) or model.count("/") > 1
        or (os.sep != "/" and os.sep in model)
    )
    if os.path.islink(model) and not os.path.exists(model):
        raise UsageError(
            f"--model {model!r} is a symbolic link that loops or points to nothing ({os.readlink(model)!r}); "
            "fix the link or pass the pipeline folder itself."
        )
    if looks_like_path and not os.path.exists(model):
        raise UsageError(f"--model {model!r}: no such folder; pass a saved SRADM pipeline folder or a Hub id.")
    if os.path.isfile(model):
        raise UsageError(f"--model {model!r} is a file; pass the pipeline folder (the one holding model_index.json).")
    bars = diffusers_logging.is_progress_bar_enabled()
    diffusers_logging.disable_progress_bar()  # "Loading pipeline components..."
    try:
        kwargs = {} if dtype == "fp32" else {"torch_dtype": torch_dtype(dtype)}
        with warnings.catch_warnings():
            # newer diffusers rename torch_dtype to dtype (FutureWarning); older ones only know torch_dtype
            warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
            pipe = SRADMPipeline.from_pretrained(model, **kwargs)
    except Exception as error:  # noqa: BLE001 - any loading failure becomes one line and exit status 2
        raise UsageError(f"cannot load --model {model!r}: {one_line(error)}") from error
    finally:
        if bars:
            diffusers_logging.enable_progress_bar()
    try:
        pipe.to(device)
    except Exception as error:  # noqa: BLE001
        raise UsageError(f"cannot move the model to {device}: {one_line(error)}") from error
    # The C heap: keep freed activations for the next step instead of faulting in fresh pages (a third of a step at
    # 1024x1024), and hand the fragments back after every tile while tiling (bounded RSS for large photos).
    keep_freed_memory()
    trim_heap_around_each_call(pipe.unet, only_if=lambda: pipe.tiling is not None)
    return pipe


def set_scheduler(pipe, name: str | None) -> None:
    """Swap ``pipe.scheduler`` for ``SCHEDULERS[name]`` built ``from_config`` of the current one (None: keep it)."""
    if name is None:
        return
    if name not in SCHEDULERS:
        raise UsageError(f"--scheduler {name!r} is not one of {', '.join(SCHEDULERS)}.")
    pipe.scheduler = make_scheduler(name, pipe.scheduler.config)


def resolve_steps(pipe, steps: int | None) -> int:
    """``--steps``: check it against the scheduler's ``num_train_timesteps``, or pick the default (module doc)."""
    max_steps = int(pipe.scheduler.config.num_train_timesteps)
    if max_steps < 1:
        raise UsageError(
            f"the model's scheduler config is invalid: num_train_timesteps={max_steps} (must be >= 1); fix "
            "scheduler/scheduler_config.json or re-save the model."
        )
    if steps is None:
        return default_steps(pipe.scheduler)
    if steps < 1 or steps > max_steps:
        raise UsageError(f"--steps {steps}: use 1..{max_steps} (the model's scheduler has {max_steps} timesteps).")
    return steps


def check_sampling_options(samples: int, seed: int | None, tile: int | None, tile_overlap: int) -> None:
    """``--samples``, ``--seed``, ``--tile`` and ``--tile-overlap`` as ``upscale`` and ``evaluate`` share them;
    a bad value is a :class:`UsageError` naming the option and the range to use."""
    if samples < 1:
        raise UsageError(f"--samples {samples}: use 1 or more.")
    if seed is not None and not 0 <= seed <= MAX_SEED - (samples - 1):
        raise UsageError(
            f"--seed {seed}: use 0..{MAX_SEED - (samples - 1)} (sample k uses seed S+k, a 63-bit integer)."
        )
    if tile != 0:
        from ..sampling.tiling import check_tile_arguments

        try:
            check_tile_arguments(DEFAULT_TILE if tile is None else tile, tile_overlap)
        except ValueError as error:
            raise UsageError(f"--tile/--tile-overlap: {one_line(error)}") from error
    if tile is not None and 0 < tile < MIN_TILE:
        raise UsageError(
            f"--tile {tile}: tiles smaller than {MIN_TILE} input pixels cost far more time than they save memory (on "
            f"a 64 px image tiles of 4 px took 25x the untiled time, of 8 px 12x, of 16 px 4x); use --tile "
            f"{MIN_TILE} or more (16 or more is sensible), or --tile 0 to sample whole."
        )


def sampling_settings(
    scheduler: str | None, steps: int | None, strength: float | None, lr_consistency: bool | None, samples: int,
    seed: int | None, tile: int | None, tile_overlap: int,
) -> SamplingSettings:
    """The sampling options of ``sradm upscale`` and ``sradm evaluate`` checked and resolved by one rule
    (:func:`~sradm_diffusers.defaults.resolve_sampling`: without ``--scheduler``, ``--steps``, ``--strength`` the
    few-step default); bad values are a :class:`UsageError` naming the option."""
    from ..defaults import resolve_sampling

    check_sampling_options(samples, seed, tile, tile_overlap)
    try:
        return resolve_sampling(scheduler, steps, strength, lr_consistency)
    except (TypeError, ValueError) as error:
        option = "--strength" if "strength" in str(error) else "--steps" if "steps" in str(error) else "--scheduler"
        raise UsageError(f"{option}: {one_line(error)}") from error


def prepare_sampler(pipe, settings: SamplingSettings) -> int:
    """Put the settings' scheduler into ``pipe`` and return the step count, checked against it with the strength."""
    from ..sampling.rrdb_start import check_strength

    set_scheduler(pipe, settings.scheduler)
    num_steps = resolve_steps(pipe, settings.steps)
    try:
        check_strength(settings.strength, num_steps)
    except (TypeError, ValueError) as error:
        raise UsageError(f"--strength: {one_line(error)}") from error
    return num_steps


def sample_generators(seed: int | None, samples: int) -> list[torch.Generator] | None:
    """K CPU generators seeded ``seed + k`` (one per sample of an image), or None for random noise."""
    import torch

    if seed is None:
        return None
    return [torch.Generator("cpu").manual_seed(seed + k) for k in range(samples)]


def sample_batches(pipe, image, samples: int, device) -> list[tuple[int, int]]:
    """(first sample, count) of the pipeline calls that produce the ``samples`` outputs of ``image`` (PIL): as many
    per call as fit into memory (:mod:`sradm_diffusers.memory`). Raises :class:`ImageError` when not one fits."""
    from ..sampling.memory import samples_per_batch

    try:
        scale = pipe.config.upscale_factor
        per_call = samples_per_batch(pipe.unet, *pipe.unet_input_size(image.height, image.width), samples, device,
                                     output_size=(image.height * scale, image.width * scale))
    except ValueError as error:
        raise ImageError(f"{image.width}x{image.height} input: {one_line(error)}") from error
    return [(start, min(per_call, samples - start)) for start in range(0, samples, per_call)]


def is_dtype_unsupported(error: BaseException) -> bool:
    """True for torch's "<op> not implemented for 'Half'/'BFloat16'" errors (half precision on a CPU build)."""
    text = str(error)
    return "not implemented for" in text and ("'Half'" in text or "'BFloat16'" in text)


class StepReporter:
    """``callback_on_step_end`` that prints ``<command>: <name>: step i/N`` to stderr at most every ``interval``
    seconds: the progress of long samplings when stderr is not a terminal (where the progress bars are off)."""

    def __init__(self, interval: float = 10.0, command: str = "sradm upscale"):
        self.interval, self.name, self.total, self.last = interval, "", 0, time.monotonic()
        self.command = command

    def start(self, name: str, total: int) -> None:
        self.name, self.total, self.last = name, total, time.monotonic()

    def __call__(self, pipe, step: int, timestep, tensors: dict) -> dict:
        if time.monotonic() - self.last >= self.interval:
            self.last = time.monotonic()
            print(f"{self.command}: {self.name}: step {step + 1}/{self.total}", file=sys.stderr, flush=True)
        return {}


def note(text: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(f"note: {one_line(text)}", file=sys.stderr)


def apply_tiling_policy(pipe, width: int, height: int, tile: int | None, overlap: int, device, name: str) -> None:
    """Enable or disable ``pipe``'s tiling for a width x height input as ``--tile``/``--tile-overlap`` and the
    default policy (:func:`~sradm_diffusers.defaults.choose_tiling`) decide; when the policy chose to tile, say why
    in one line on stderr (the estimate against the GPU's free memory on cuda, the pixel count elsewhere)."""
    from tqdm.auto import tqdm

    untiled = None
    scale = int(pipe.config.upscale_factor)
    if getattr(device, "type", str(device)) == "cuda":
        from ..sampling.memory import estimate_sampling_bytes

        untiled = estimate_sampling_bytes(pipe.unet, 1, height * scale, width * scale)
    tiling = choose_tiling(width, height, tile, overlap, device, untiled)
    if tiling is not None and tile is None:
        if untiled is not None:
            from ..sampling.memory import available_bytes

            why = (f"would need about {untiled / 2**30:.1f} GiB untiled, {available_bytes(device) / 2**30:.1f} GiB "
                   f"free on {device}")
        else:
            why = f"is over {AUTO_TILE_PIXELS} pixels"
        tqdm.write(f"{name}: {width}x{height} {why}: sampling in tiles of {tiling[0]} px overlapping by {tiling[1]} "
                   "(--tile N to choose, --tile 0 to turn off)", file=sys.stderr)
    if tiling is None:
        pipe.disable_tiling()
    else:
        pipe.enable_tiling(*tiling)
