"""``sradm upscale``: super-resolve image files with an :class:`~sradm_diffusers.SRADMPipeline`.

What it does, and the choices it makes:

- **Inputs** (``INPUT...``): image files, folders (their image files, sorted by name, not recursive, hidden files
  skipped) and glob patterns (expanded with :func:`glob.glob`, sorted; only files with an image extension are kept).
  An argument that names an existing path is taken literally even if it contains ``*``/``?``/``[``. The same file
  named twice is processed once. A folder or pattern does not pick up this command's earlier outputs: a file named
  ``<stem>_x<s>.png`` / ``<stem>_x<s>_<k>.png`` next to an input ``<stem>.<ext>`` is left out (and replaced);
  name such a file explicitly to upscale it again.
- **Loading**: ``PIL.Image.open`` + ``load``, then :func:`PIL.ImageOps.exif_transpose`, so a photo is upscaled the
  way viewers show it (upright) and the output carries no orientation tag. Modes are converted by
  :mod:`sradm_diffusers.image_processing`: greyscale becomes RGB, **transparency is composited on white** and the
  output is RGB without alpha.
- **Outputs**: ``<stem>_x<s>.png`` (``s`` = the model's ``upscale_factor``) next to the input, or in ``-o DIR``;
  with ``--samples K`` (K > 1), K files ``<stem>_x<s>_<k>.png``, ``k = 0..K-1``, and with ``--uncertainty`` also
  their per-pixel mean ``<stem>_x<s>_mean.png`` and std map ``<stem>_x<s>_std.png``
  (:mod:`sradm_diffusers.uncertainty`). ``-o`` is a folder (created by the
  first write) when it exists as one, ends with a path separator, has no image extension, or when the inputs are more
  than one file argument / a folder / a glob; ``-o FILE.png`` (any extension PIL can write) is accepted for one
  input file and one sample. An output that would replace one of the input files, or another output of the same
  run, is refused (a per-image error). Existing outputs of earlier runs are replaced.
- **Atomic writes**: each image is written to ``.<name>.tmp-<pid><ext>`` in the destination folder and renamed with
  :func:`os.replace`; a failure removes the temporary file, so a final name never holds a partial image. An output
  name that is a symbolic link is written through (its regular target is replaced, the link kept); one that is a
  device, FIFO, socket or folder is refused (:mod:`sradm_diffusers.atomic`).
- **Seeds**: with ``--seed S``, sample ``k`` of *every* input uses a fresh CPU ``torch.Generator`` seeded ``S + k``
  (initial noise and, for ancestral samplers, the per-step noise). An image's result therefore does not depend on
  which other images are in the run, nor on the device, nor on the process split. Without ``--seed`` the noise is
  random.
- **Several processes**: under ``accelerate launch --num_processes N`` each process upscales a contiguous share of
  the images (:mod:`sradm_diffusers.distributed`); the files written are those of a one-process run.
- **Sampler**: with none of ``--scheduler``, ``--steps``, ``--strength``, the few-step default
  :data:`DEFAULT_SAMPLING`. Otherwise ``--scheduler`` defaults to the model's own (DDPM), ``--steps`` to the
  scheduler's ``num_train_timesteps`` (100, the reference's full ancestral sampling) for ``ddpm`` and to
  :data:`FAST_SAMPLER_STEPS` for the other schedulers, and ``--strength`` to 1 (start from pure noise).
- **Errors**: a bad input file (missing, empty, not an image, undecodable) or a failed write is reported as one
  line ``error: <path>: <reason>`` on stderr; the other images are still processed and the exit status is 1.
  A bad option or model is one line on stderr and exit status 2 (:class:`UsageError`).

``DEFAULT_MODEL`` is the pipeline used when ``--model`` is omitted: the CPU-trained demo bundled with the package
(:data:`sradm_diffusers.resources.DEMO_MODEL`).
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any, NamedTuple

# No torch, numpy or diffusers at import time: ``sradm --help``, ``--version`` and argument errors read this
# module's constants only, and must answer at once (issue 19). The functions that need them import them.
from ..defaults import (  # noqa: F401 - the sampling defaults and tiling policy, re-exported for older imports
    AUTO_TILE_PIXELS, DEFAULT_SAMPLING, DEFAULT_TILE, DEFAULT_TILE_OVERLAP, DEVICES, FAST_SAMPLER_STEPS,
    LR_CONSISTENCY, MAX_SEED, MIN_TILE, SCHEDULERS, choose_tiling, default_steps, dtype_problem, make_scheduler,
)
from .distributed import ProcessShare
from .files import (
    collect_inputs, drop_previous_outputs, load_image, plan_outputs, prepare_output_folders, write_image_atomic,
)
from .runtime import (  # noqa: F401 - DEFAULT_MODEL, resolve_steps, set_scheduler: re-exported for older imports
    DEFAULT_MODEL, ImageError, StepReporter, UsageError, apply_tiling_policy, is_dtype_unsupported, load_pipeline,
    one_line, prepare_sampler, resolve_device, resolve_steps, sample_batches, sample_generators, sampling_settings,
    set_scheduler,
)


FAST_SCHEDULER = "dpm-sde"
"""Deprecated (the web demo now opens with :data:`DEFAULT_SAMPLING`): the stochastic sampler that was cleanest at 20
steps on the demo model."""


def _report(path: str, reason: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(f"error: {path}: {one_line(reason)}", file=sys.stderr)


def _check_targets(targets: list[str], input_keys: set[str], written_keys: dict[str, str]) -> None:
    """Refuse an output that is an input file, or the output of another input of this run (ImageError)."""
    for target in targets:
        key = os.path.realpath(target)
        if key in input_keys:
            raise ImageError(f"output {target} would overwrite an input file; choose another -o")
        if key in written_keys:
            raise ImageError(f"output {target} is also the output of {written_keys[key]}; use -o with a folder")


def _write_outputs(images, targets: list[str], source: str, written_keys: dict[str, str]) -> int:
    """Write ``images`` to ``targets`` atomically, each path printed on stdout and recorded as ``source``'s; returns
    the number written. A failed write is an :class:`ImageError` naming the file."""
    from tqdm.auto import tqdm

    for target, image in zip(targets, images):
        try:
            write_image_atomic(image, target)
        except (OSError, ValueError) as error:
            raise ImageError(f"cannot write {target}: {one_line(error)}") from error
        written_keys[os.path.realpath(target)] = source
        tqdm.write(target, file=sys.stdout)
    return len(targets)


def _prepare_device(device: str | None, dtype: str, share: ProcessShare):
    """This process's torch device, with ``--dtype`` checked against it (UsageError) and the bf16 advice printed."""
    torch_device = share.device(device, resolve_device)
    problem = dtype_problem(dtype, torch_device.type)
    if problem is not None:
        raise UsageError(problem)
    if dtype == "bf16" and torch_device.type == "cpu" and share.is_main:
        from ..cpu import bf16_advice

        advice = bf16_advice()
        if advice:
            print(f"sradm upscale: note: {advice}.", file=sys.stderr)
    try:
        from ..sampling.memory import available_bytes

        available_bytes(torch_device)
    except ValueError as error:
        raise UsageError(one_line(error)) from error
    return torch_device


def _output_targets(plan, path: str, scale: int, samples: int, uncertainty: bool) -> list[str]:
    """The files one input writes: its samples, then (``--uncertainty``) ``_mean``, ``_std`` and ``_std_scale``."""
    from ..extras.uncertainty import SUMMARY_KINDS

    targets = plan.paths(path, scale, samples)
    if uncertainty:
        targets += [re.sub(r"_0\.png$", f"_{kind}.png", targets[0]) for kind in SUMMARY_KINDS]
    return targets


class _RunOptions(NamedTuple):
    """What every input of one ``sradm upscale`` run is sampled with (resolved once, before the first image)."""

    settings: Any  # defaults.SamplingSettings
    num_steps: int
    samples: int
    seed: int | None
    uncertainty: bool
    tile: int | None
    tile_overlap: int
    device: Any  # torch.device
    dtype: str
    reporter: Any  # runtime.StepReporter or None


def _sample(pipe, image, options: _RunOptions, generators, count: int):
    """``count`` SR images of ``image`` as PIL; a failure becomes a UsageError (unsupported dtype) or ImageError."""
    try:
        return pipe(
            image, num_inference_steps=options.num_steps, generator=generators, num_images_per_prompt=count,
            output_type="pil", callback_on_step_end=options.reporter,
            lr_consistency=options.settings.lr_consistency, strength=options.settings.strength,
        ).images
    except RuntimeError as error:
        if is_dtype_unsupported(error):
            dtype = options.dtype
            raise UsageError(
                f"--dtype {dtype} is not supported on {options.device.type} by this torch build "
                f"({one_line(error)}); use --dtype fp32{' or bf16' if dtype == 'fp16' else ''}."
            ) from error
        raise ImageError(f"upscaling failed: {one_line(error)}") from error
    except ValueError as error:
        raise ImageError(one_line(error)) from error


def _upscale_file(pipe, path: str, targets: list[str], options: _RunOptions, written_keys: dict[str, str]) -> int:
    """Load ``path``, sample it (in memory-sized batches) and write ``targets``; returns the number of files written.
    Raises ImageError for this input (the run goes on) or UsageError."""
    import numpy as np
    import torch

    from ..extras.uncertainty import summary_images

    samples = options.samples
    image = load_image(path)
    apply_tiling_policy(pipe, image.width, image.height, options.tile, options.tile_overlap, options.device, path)
    generators = sample_generators(options.seed, samples)
    written, kept = 0, []
    for start, count in sample_batches(pipe, image, samples, options.device):
        batch_generators = None if generators is None else generators[start : start + count]
        images = _sample(pipe, image, options, batch_generators, count)
        written += _write_outputs(images, targets[start : start + count], path, written_keys)
        kept += images if options.uncertainty else []
    if options.uncertainty:  # mean and std of the K written (8-bit) samples
        stack = torch.from_numpy(np.stack([np.asarray(im) for im in kept])).permute(0, 3, 1, 2) / 255
        written += _write_outputs(summary_images(stack), targets[samples:], path, written_keys)
    return written


def run_upscale(
    inputs: list[str],
    output: str | None = None,
    model: str | None = None,
    steps: int | None = None,
    scheduler: str | None = None,
    seed: int | None = None,
    samples: int = 1,
    device: str | None = None,
    dtype: str = "fp32",
    tile: int | None = None,
    tile_overlap: int = DEFAULT_TILE_OVERLAP,
    lr_consistency: bool | None = None,
    uncertainty: bool = False,
    strength: float | None = None,
) -> int:
    """Run ``sradm upscale``. Returns the exit status: 0 all written, 1 some input failed.

    Raises:
        UsageError: bad options, model or output location (the caller prints it and exits with 2).
    """
    from tqdm.auto import tqdm

    settings = sampling_settings(scheduler, steps, strength, lr_consistency, samples, seed, tile, tile_overlap)
    if uncertainty and samples < 2:
        raise UsageError(f"--uncertainty needs --samples K with K >= 2 (got {samples}): it measures their spread.")
    share = ProcessShare()  # under `accelerate launch`, this process's part of the images
    plan = plan_outputs(output, inputs, samples)
    files, problems, expanded = collect_inputs(inputs)
    for arg, reason in problems if share.is_main else []:
        _report(arg, reason)
    if not files:
        return 1
    prepare_output_folders(plan, files)

    torch_device = _prepare_device(device, dtype, share)
    pipe = load_pipeline(model, torch_device, dtype)
    num_steps = prepare_sampler(pipe, settings)
    scale = int(pipe.config.upscale_factor)
    files = drop_previous_outputs(files, expanded, scale)
    pipe.set_progress_bar_config(disable=None, leave=False, desc="steps")
    reporter = None if sys.stderr.isatty() else StepReporter()
    options = _RunOptions(settings=settings, num_steps=num_steps, samples=samples, seed=seed, uncertainty=uncertainty,
                          tile=tile, tile_overlap=tile_overlap, device=torch_device, dtype=dtype, reporter=reporter)

    input_keys = {os.path.realpath(p) for p in files}
    written_keys: dict[str, str] = {}
    failed, written = (len(problems) if share.is_main else 0), 0
    mine = share.indices(len(files))
    progress = tqdm(files, desc="upscale", unit="image", disable=None if share.is_main else True)
    for number, path in enumerate(progress, 1):
        try:
            targets = _output_targets(plan, path, scale, samples, uncertainty)
            _check_targets(targets, input_keys, written_keys)
            if number - 1 not in mine:  # another process writes these; keep the same collision checks
                written_keys.update((os.path.realpath(target), path) for target in targets)
                continue
            if reporter is not None:
                print(f"sradm upscale: image {number}/{len(files)}: {path}", file=sys.stderr, flush=True)
                reporter.start(os.path.basename(path), int(num_steps * settings.strength))  # the steps that run
            written += _upscale_file(pipe, path, targets, options, written_keys)
        except ImageError as error:
            if number - 1 in mine:  # a collision is found by every process; its owner reports it
                failed += 1
                _report(path, str(error))
    progress.close()
    counts = share.gather((failed, written))
    share.close()
    failed, written = sum(c[0] for c in counts), sum(c[1] for c in counts)
    if failed and share.is_main:
        print(
            f"sradm upscale: {failed} of {len(files) + len(problems)} input(s) failed; {written} file(s) written.",
            file=sys.stderr,
        )
    return 1 if failed else 0
