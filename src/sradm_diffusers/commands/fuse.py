"""``sradm fuse``: an SR image whose masked region takes its content from a reference image.

The method is :func:`sradm_diffusers.extras.fusion.fuse`; this module is the command around it, with ``sradm
upscale``'s front-end behaviour: options, inputs and output location checked before the model loads, the sizes of
REFERENCE and MASK and the memory before sampling, one line per error.
"""

from __future__ import annotations

import math

import torch

from ..extras.fusion import mask_tensor, check_feather, fuse


def run_fuse(
    input_path: str, reference_path: str, mask_path: str, output: str, model: str | None = None,
    feather: float = 8.0, steps: int | None = None, scheduler: str | None = None, seed: int = 0,
    device: str | None = None, lr_consistency: bool | None = None,
) -> int:
    """``sradm fuse``: write the fused SR image to ``output``.

    Like ``sradm upscale``, the options, the three inputs and the output location (not an input file, not a folder
    or device, in a writable folder) are checked before the model is loaded; ``--steps``, the sizes of REFERENCE and
    MASK and the memory before sampling. Returns 0, or 1 when sampling failed (e.g. NaN output) or the result could
    not be written (one line on stderr; nothing is left under the output name or beside it).

    Raises:
        UsageError: bad options, model, inputs or output (one line, exit status 2).
    """
    import sys

    from ..defaults import LR_CONSISTENCY
    from ..sampling.memory import SamplingMemoryError, check_sampling_memory
    from .runtime import (
        ImageError, UsageError, load_pipeline, one_line, resolve_device, resolve_steps, set_scheduler,
    )
    from .runtime import note
    from .files import check_single_output, load_image, write_image_atomic

    lr_consistency = LR_CONSISTENCY if lr_consistency is None else lr_consistency
    if not math.isfinite(feather) or feather < 0:
        raise UsageError(f"--feather {feather}: use a finite width in pixels >= 0 (0 = hard mask).")
    check_single_output(output, [input_path, reference_path, mask_path])
    loaded = []
    for path in (input_path, reference_path, mask_path):
        try:
            loaded.append(load_image(path))
        except ImageError as error:
            raise UsageError(f"{path}: {error}") from error
    image, reference, mask = loaded
    try:
        check_feather(feather, mask.height, mask.width)
        mask_values = mask_tensor(mask, mask.height, mask.width)
    except ValueError as error:
        raise UsageError(f"--feather / --mask {mask_path}: {one_line(error)}") from error
    if 0 < mask_values.max() < 1.5 / 255:
        note(f"{mask_path}: the mask's values are only 0 and 1 of 0..255, so it takes 1/255 of the reference; "
              "paint the region white (255) to take all of it")
    torch_device = resolve_device(device)
    pipe = load_pipeline(model, torch_device)
    set_scheduler(pipe, scheduler)
    num_steps = resolve_steps(pipe, steps)
    scale = pipe.config.upscale_factor
    for option, path, other in (("--reference", reference_path, reference), ("--mask", mask_path, mask)):
        if other.size != (image.width * scale, image.height * scale):
            raise UsageError(
                f"{option} {path} is {other.width}x{other.height}; REFERENCE and MASK must have the SR size "
                f"{image.width * scale}x{image.height * scale} ({scale} times {input_path})."
            )
    try:
        check_sampling_memory(pipe.unet, 1, *pipe.unet_input_size(image.height, image.width), torch_device)
    except SamplingMemoryError as error:
        raise UsageError(f"{one_line(error).split(';')[0]}; use a smaller input.") from error
    pipe.set_progress_bar_config(disable=None, leave=False, desc="steps")
    try:
        result = fuse(
            pipe, image, reference, mask, feather=feather, generator=torch.Generator().manual_seed(seed),
            num_inference_steps=num_steps, lr_consistency=lr_consistency,
        )
    except (RuntimeError, ValueError) as error:  # e.g. NaN output of damaged weights: as upscale's per-image error
        print(f"sradm: error: {input_path}: fusion failed: {one_line(error)}", file=sys.stderr)
        return 1
    try:
        write_image_atomic(result.images[0], output)
    except (OSError, ValueError) as error:
        print(f"sradm: error: cannot write {output}: {one_line(error)}; nothing was written.", file=sys.stderr)
        return 1
    print(output)
    return 0
