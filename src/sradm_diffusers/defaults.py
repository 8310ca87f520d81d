"""The sampling defaults every front end reads: ``sradm upscale`` / ``evaluate`` / ``demo``, the Space, the Python API.

Imports neither torch nor diffusers at import time (diffusers is imported when a scheduler is built), so the
command line can describe its options without loading either.

    from sradm_diffusers import DEFAULT_SAMPLING
    sr = DEFAULT_SAMPLING(pipe, image, generator=torch.Generator().manual_seed(0)).images[0]

is what ``sradm upscale image.png --seed 0`` computes for an input of at most :data:`AUTO_TILE_PIXELS` pixels
(larger ones the command line samples in tiles; call ``pipe.enable_tiling(DEFAULT_TILE, DEFAULT_TILE_OVERLAP)``
first to match it). The pipeline's own scheduler (``DDPMScheduler``, the paper's sampler) stays what it was: the
settings build their scheduler ``from_config`` of it and swap it in for that call only.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass

SCHEDULERS: dict[str, tuple[str, dict]] = {
    "ddpm": ("DDPMScheduler", {}),
    "ddim": ("DDIMScheduler", {"timestep_spacing": "trailing"}),
    "dpm": ("DPMSolverMultistepScheduler", {"timestep_spacing": "trailing", "algorithm_type": "dpmsolver++"}),
    "dpm-sde": ("DPMSolverMultistepScheduler", {"timestep_spacing": "trailing", "algorithm_type": "sde-dpmsolver++"}),
    "unipc": ("UniPCMultistepScheduler", {"timestep_spacing": "trailing"}),
    "euler": ("EulerDiscreteScheduler", {"timestep_spacing": "trailing"}),
}
"""``--scheduler`` name -> (diffusers class name, extra ``from_config`` arguments). Fast samplers always get
"trailing" timesteps (also the stored default of this package's pipelines), so pipelines saved with another
spacing are sampled the same way. ``dpm-sde`` is DPM-Solver++'s stochastic (SDE) form: it injects fresh noise
at every step, like the DDPM sampler the model was trained for; on the demo model at 20 steps it was more
LR-consistent and had less grain along strong edges than the deterministic ``dpm`` (model_card.md). ``dpm`` names
its algorithm explicitly, so it is the ODE form even when swapped in from a ``dpm-sde`` scheduler's config."""

FAST_SAMPLER_STEPS = 20
"""Default number of steps for every scheduler but DDPM (which defaults to its ``num_train_timesteps``, 100)."""

LR_CONSISTENCY = True
"""LR consistency (``lr_consistency=True``) unless a front end is told otherwise: on the demo model it raised every
metric on every held-out photo (README "Beyond one sample")."""

DEFAULT_TILE = 128
DEFAULT_TILE_OVERLAP = 16
AUTO_TILE_PIXELS = 256 * 256
"""Tiling policy of the command line: inputs of more than ``AUTO_TILE_PIXELS`` pixels are sampled in tiles of
``DEFAULT_TILE`` input pixels overlapping by ``DEFAULT_TILE_OVERLAP`` (announced in one line), so that a large
photo does not exhaust memory; smaller inputs are sampled whole. On cuda the GPU's free memory decides instead
(:func:`choose_tiling`)."""

MIN_TILE = 8
"""Smallest ``--tile``: every tile carries a fixed cost (a U-Net call, the margin the blend needs), so tiny tiles
cost far more than they save. On a 64x64 input with the demo model (2 DDPM steps, overlap 0, one thread, on a
shared 2-core machine; ``python benchmarks/bench_tile_size.py``), untiled took 1.8 s, tiles of 32 px 3.2 s, 16 px
7.4 s, 8 px 22 s, 4 px 46 s (a drill's ``--tile 1`` run had not finished one step after 300 s). Below 8 px the
cost keeps doubling with every halving and buys nothing: a tile of 8 px at 4x is 32 HR pixels, far below any
memory limit. Tiles of 16 px or more are the sensible range (4x the untiled time at 16 px on this input)."""

MAX_SEED = 2**63 - 1
"""Largest seed (``torch.Generator.manual_seed`` takes 64-bit integers; 63 bits keep every S + k in range)."""

DEVICES = ("cpu", "cuda", "mps")
DTYPE_NAMES = ("fp32", "fp16", "bf16")


def make_scheduler(name: str, config):
    """A fresh ``SCHEDULERS[name]`` scheduler built ``from_config(config)`` (a scheduler's ``.config``).

    Raises:
        ValueError: ``name`` is not a key of :data:`SCHEDULERS`.
    """
    if name not in SCHEDULERS:
        raise ValueError(f"scheduler {name!r} is not one of {', '.join(SCHEDULERS)}.")
    import diffusers

    class_name, extra = SCHEDULERS[name]
    return getattr(diffusers, class_name).from_config(config, **extra)


def default_steps(scheduler) -> int:
    """Steps when none are given: ``num_train_timesteps`` (the full ancestral chain) for ``DDPMScheduler``,
    else :data:`FAST_SAMPLER_STEPS` (at most ``num_train_timesteps``)."""
    max_steps = int(scheduler.config.num_train_timesteps)
    return max_steps if type(scheduler).__name__ == "DDPMScheduler" else min(FAST_SAMPLER_STEPS, max_steps)


def choose_tiling(
    width: int, height: int, tile: int | None, overlap: int, device=None, untiled_bytes: int | None = None
) -> tuple[int, int] | None:
    """``(tile_size, tile_overlap)`` for an input of width x height pixels, or None to sample it whole.

    ``tile`` 0 never tiles, N > 0 always tiles with N. None tiles with :data:`DEFAULT_TILE` when needed: on a CUDA
    ``device``, when sampling the whole image (``untiled_bytes``, :func:`sradm_diffusers.memory.
    estimate_sampling_bytes`) would not fit into the GPU's free memory (``torch.cuda.mem_get_info``, or
    ``SRADM_MEMORY_LIMIT``); elsewhere (the CPU, where tiles also keep the U-Net's activations in cache) above
    :data:`AUTO_TILE_PIXELS` input pixels.
    """
    if tile == 0:
        return None
    if tile is None:
        if device is not None and str(device).startswith("cuda") and untiled_bytes is not None:
            from .sampling.memory import available_bytes

            budget = available_bytes(device)
            if budget is None or untiled_bytes <= budget:
                return None
        elif width * height <= AUTO_TILE_PIXELS:
            return None
    return (DEFAULT_TILE if tile is None else tile, overlap)


def dtype_problem(dtype: str, device_type: str) -> str | None:
    """Why ``--dtype dtype`` cannot run on a device of type ``device_type`` (one line), or None if it can."""
    if dtype == "fp16" and device_type == "cpu":
        from .cpu import native_bf16

        use = "fp32 or bf16" if native_bf16() else "fp32"
        return (
            "--dtype fp16 on the CPU is not supported: half-precision convolutions have no fast CPU kernels (about "
            f"5x slower than fp32) and diffusers warns they may fail; use --dtype {use} on this CPU, fp16 on cuda."
        )
    return None


_FIXED_CALL_ARGUMENTS = ("num_inference_steps", "strength", "lr_consistency")


@dataclass(frozen=True)
class SamplingSettings:
    """How to sample: a scheduler from :data:`SCHEDULERS`, its steps, the start strength and LR consistency.

    Args:
        scheduler: a key of :data:`SCHEDULERS`, or None for the pipeline's own scheduler.
        steps: ``num_inference_steps``, or None for :func:`default_steps` of the scheduler used.
        strength: in (0, 1]; below 1 sampling starts from the RRDB output noised to an intermediate step and runs
            the last ``int(steps * strength)`` steps (``SRADMPipeline(strength=)``).
        lr_consistency: back-project every step's ``x_0`` onto the LR input (``SRADMPipeline(lr_consistency=)``).

    Use :meth:`__call__` to sample with them in one line, or the diffusers idiom in two:
    ``pipe.scheduler = settings.make_scheduler(pipe.scheduler.config)`` and ``pipe(image,
    **settings.call_kwargs(pipe.scheduler))`` (which keeps the new scheduler for later calls and ``save_pretrained``).
    """

    scheduler: str | None = None
    steps: int | None = None
    strength: float = 1.0
    lr_consistency: bool = LR_CONSISTENCY

    def __post_init__(self):
        if self.scheduler is not None and self.scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler {self.scheduler!r} is not one of {', '.join(SCHEDULERS)} (or None).")
        if self.steps is not None and (isinstance(self.steps, bool) or not isinstance(self.steps, int)
                                       or self.steps < 1):
            raise ValueError(f"steps must be a positive integer or None; got {self.steps!r}.")
        # the pipeline's own messages (sampling.rrdb_start.check_strength), so every front end says the same
        if isinstance(self.strength, bool) or not isinstance(self.strength, (int, float)):
            kind = type(self.strength).__name__
            raise TypeError(f"strength must be a float in (0, 1], got {kind} {self.strength!r}.")
        if not 0 < self.strength <= 1:
            raise ValueError(f"strength must be in (0, 1] (1 = start from pure noise), got {self.strength!r}.")

    def replace(self, **changes) -> "SamplingSettings":
        """A copy with some fields changed, e.g. ``DEFAULT_SAMPLING.replace(lr_consistency=False)``."""
        return dataclasses.replace(self, **changes)

    def make_scheduler(self, config):
        """The scheduler these settings sample with, built ``from_config(config)`` of the pipeline's scheduler;
        None when :attr:`scheduler` is None (keep the pipeline's own)."""
        return None if self.scheduler is None else make_scheduler(self.scheduler, config)

    def num_inference_steps(self, scheduler) -> int:
        """:attr:`steps`, or :func:`default_steps` of ``scheduler`` (the one sampling) when it is None."""
        return default_steps(scheduler) if self.steps is None else self.steps

    def unet_calls(self, scheduler=None) -> int:
        """U-Net evaluations of one call: ``int(steps * strength)`` (``scheduler`` is needed when steps is None)."""
        return int(self.num_inference_steps(scheduler) * self.strength)

    def call_kwargs(self, scheduler=None) -> dict:
        """``num_inference_steps``, ``strength`` and ``lr_consistency`` for ``pipe(...)``; ``scheduler`` (the one
        sampling) is needed only when :attr:`steps` is None."""
        return {
            "num_inference_steps": self.num_inference_steps(scheduler),
            "strength": float(self.strength),
            "lr_consistency": bool(self.lr_consistency),
        }

    @contextlib.contextmanager
    def scheduler_swapped(self, pipe):
        """Context in which ``pipe.scheduler`` is a fresh scheduler of these settings (yields it); the pipeline's
        own scheduler object (and its config) is put back afterwards, also after an error."""
        original = pipe.scheduler
        scheduler = self.make_scheduler(original.config)
        if scheduler is None:
            yield original
            return
        pipe.scheduler = scheduler
        try:
            yield scheduler
        finally:
            pipe.scheduler = original

    def __call__(self, pipe, image, **kwargs):
        """``pipe(image, **kwargs)`` sampled with these settings; returns what the pipeline returns.

        The settings' scheduler replaces ``pipe.scheduler`` for this call only (so the stored scheduler, and what
        ``save_pretrained`` writes, stay the model's own). Why a callable and not the usual ``pipe.scheduler = ...``
        swap: the default is a scheduler *and* three call arguments, and the swap would leave the pipeline changed
        for every later call. Not for concurrent calls on one pipeline (diffusers pipelines are not either).

        Args:
            pipe: an :class:`~sradm_diffusers.SRADMPipeline`.
            image: as for the pipeline.
            **kwargs: other pipeline arguments (``generator``, ``num_images_per_prompt``, ``output_type``, ...).
        Raises:
            TypeError: ``num_inference_steps``, ``strength`` or ``lr_consistency`` passed (use :meth:`replace`).
        """
        fixed = sorted(set(kwargs) & set(_FIXED_CALL_ARGUMENTS))
        if fixed:
            raise TypeError(
                f"{', '.join(fixed)} come from the settings; change them with .replace(...), e.g. "
                "DEFAULT_SAMPLING.replace(steps=20, strength=1.0)(pipe, image)."
            )
        with self.scheduler_swapped(pipe) as scheduler:
            return pipe(image, **self.call_kwargs(scheduler), **kwargs)

    def describe(self, scheduler=None) -> str:
        """One line for tables and logs, e.g. ``unipc (UniPCMultistepScheduler), 11 steps, strength 0.82 (9 U-Net
        calls), LR consistency``; ``scheduler`` (the one sampling) names the pipeline's own when :attr:`scheduler`
        is None."""
        name = self.scheduler if self.scheduler is not None else "the model's own"
        class_name = SCHEDULERS[self.scheduler][0] if self.scheduler is not None else type(scheduler).__name__
        steps = self.num_inference_steps(scheduler) if (self.steps is not None or scheduler is not None) else None
        text = f"{name} ({class_name})"
        if steps is not None:
            text += f", {steps} steps, strength {self.strength:g} ({int(steps * self.strength)} U-Net calls)"
        return text + (", LR consistency" if self.lr_consistency else ", no LR consistency")


DEFAULT_SAMPLING = SamplingSettings(scheduler="unipc", steps=11, strength=0.82, lr_consistency=True)
"""The few-step default of every front end: UniPC on an 11-step trailing grid, started from the RRDB output noised
to its third timestep (t = 81 of 100), LR consistency on: 9 U-Net calls. On 128 px crops of the 10 held-out photos
(2 samples each) it came within 0.15 dB PSNR-Y of 100 DDPM steps with the same edge energy (-0.5 %): the fastest
measured setting that meets the few-step goal without leaving noise in the image (README "Few-step sampling",
``benchmarks/bench_few_step.py``)."""


def resolve_sampling(
    scheduler: str | None = None, steps: int | None = None, strength: float | None = None,
    lr_consistency: bool | None = None,
) -> SamplingSettings:
    """The command line's rule: with none of ``scheduler``, ``steps``, ``strength``, :data:`DEFAULT_SAMPLING`;
    once one is given, the others take their own defaults (the model's scheduler, :func:`default_steps`, strength
    1). ``lr_consistency`` None keeps :data:`LR_CONSISTENCY`.

    Raises:
        ValueError: a bad value (the message names it).
    """
    consistency = LR_CONSISTENCY if lr_consistency is None else bool(lr_consistency)
    if scheduler is None and steps is None and strength is None:
        return DEFAULT_SAMPLING.replace(lr_consistency=consistency)
    return SamplingSettings(scheduler, steps, 1.0 if strength is None else strength, consistency)


__all__ = [
    "AUTO_TILE_PIXELS", "DEFAULT_SAMPLING", "DEFAULT_TILE", "DEFAULT_TILE_OVERLAP", "FAST_SAMPLER_STEPS",
    "LR_CONSISTENCY", "MAX_SEED", "MIN_TILE", "SCHEDULERS", "SamplingSettings", "choose_tiling", "default_steps",
    "make_scheduler", "resolve_sampling",
]
