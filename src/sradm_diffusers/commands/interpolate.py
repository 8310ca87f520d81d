"""``sradm interpolate``: SR frames of one image along a slerp between two starting noises, as a strip or a GIF.

The method is :func:`sradm_diffusers.extras.interpolation.interpolate`; this module is the command around it, with
``sradm upscale``'s front-end behaviour: options, input and output location checked before the model loads, one line
per error (exit status 2 for usage, 1 for a failed sampling or write), progress lines when stderr is not a terminal.
"""

from __future__ import annotations

import torch

from ..extras.interpolation import OUTPUT_EXTENSIONS, check_frames_memory, frames_to_strip, interpolate


def run_interpolate(
    input_path: str, output: str, model: str | None = None, frames: int = 8, seeds: tuple[int, int] = (0, 1),
    steps: int = 20, device: str | None = None, lr_consistency: bool | None = None, frame_ms: int = 150,
) -> int:
    """``sradm interpolate``: write the frames as a strip (any image extension) or an animated ``.gif``.

    Like ``sradm upscale``, the options, the input and the output location (not an input file, not a folder or
    device, in a writable folder) are checked before the model is loaded, and ``--steps`` and the memory the frames
    need before sampling. Returns 0, or 1 when sampling failed (e.g. NaN output) or the result could not be
    written (one line on stderr; nothing is left under the output name or beside it).

    Raises:
        UsageError: bad options, model, input or output (one line, exit status 2).
    """
    import sys

    from ..defaults import LR_CONSISTENCY
    from .runtime import (
        ImageError, StepReporter, UsageError, load_pipeline, one_line, resolve_device, resolve_steps,
    )
    from .files import check_single_output, load_image, write_image_atomic

    lr_consistency = LR_CONSISTENCY if lr_consistency is None else lr_consistency

    if frames < 2:
        raise UsageError(f"--frames {frames}: use 2 or more.")
    check_single_output(output, [input_path], OUTPUT_EXTENSIONS)
    try:
        image = load_image(input_path)
    except ImageError as error:
        raise UsageError(f"{input_path}: {error}") from error
    torch_device = resolve_device(device)
    pipe = load_pipeline(model, torch_device)
    steps = resolve_steps(pipe, steps)
    try:
        check_frames_memory(pipe, image.height, image.width, frames, torch_device)
    except ValueError as error:
        raise UsageError(f"--frames {frames}: {one_line(error)}") from error
    pipe.set_progress_bar_config(disable=None, leave=False, desc="steps")
    reporter = None  # on a terminal the steps bar; otherwise a line at the start and at most one per 10 s
    if not sys.stderr.isatty():
        reporter = StepReporter(command="sradm interpolate")
        reporter.start(f"{frames} frames of {image.width}x{image.height}", steps)
        print(f"sradm interpolate: {frames} frames of {image.width}x{image.height} in one batch, {steps} DDIM steps",
              file=sys.stderr, flush=True)
    try:
        images = interpolate(
            pipe, image, num_frames=frames, generator_a=torch.Generator().manual_seed(seeds[0]),
            generator_b=torch.Generator().manual_seed(seeds[1]), num_inference_steps=steps,
            lr_consistency=lr_consistency, callback_on_step_end=reporter,
        )
    except (RuntimeError, ValueError) as error:  # e.g. NaN output of damaged weights: as upscale's per-image error
        print(f"sradm: error: {input_path}: interpolation failed: {one_line(error)}", file=sys.stderr)
        return 1
    try:
        if output.lower().endswith(".gif"):
            from ..commands.atomic import replacing

            loop = images + images[-2:0:-1]  # there and back again
            with replacing(output) as tmp:
                loop[0].save(tmp, format="GIF", save_all=True, append_images=loop[1:], duration=frame_ms, loop=0)
        else:
            write_image_atomic(frames_to_strip(images), output)
    except (OSError, ValueError) as error:
        print(f"sradm: error: cannot write {output}: {one_line(error)}; nothing was written.", file=sys.stderr)
        return 1
    print(output)
    return 0
