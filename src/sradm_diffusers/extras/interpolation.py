"""Latent-space interpolation: SR images of one LR input along a spherical path between two starting noises.

    frames = interpolate(pipe, image, num_frames=8, generator_a=torch.Generator().manual_seed(0),
                         generator_b=torch.Generator().manual_seed(1))   # list of PIL images

The sampler is switched to DDIM with ``eta = 0`` for the call, so each frame is a deterministic function of its x_T
and nearby noises give nearby images. Noises are interpolated with slerp rather than linearly: a linear mix of two
independent Gaussian draws has a smaller norm than either (at the midpoint by 1/sqrt(2)), i.e. it is not a typical
x_T; slerp keeps the norm.
"""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from ..image_processing import preprocess


def slerp(a: torch.Tensor, b: torch.Tensor, t: float, eps: float = 1e-7) -> torch.Tensor:
    """Spherical interpolation between ``a`` (t = 0) and ``b`` (t = 1), tensors of one shape, each as one vector;
    falls back to linear interpolation when they are (nearly) parallel."""
    a_flat, b_flat = a.flatten().double(), b.flatten().double()
    cos = torch.dot(a_flat, b_flat) / (a_flat.norm() * b_flat.norm())
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    if omega.abs() < eps:
        mixed = (1 - t) * a_flat + t * b_flat
    else:
        mixed = (torch.sin((1 - t) * omega) * a_flat + torch.sin(t * omega) * b_flat) / torch.sin(omega)
    return mixed.reshape(a.shape).to(a.dtype)


def interpolate(
    pipe,
    image,
    num_frames: int = 8,
    generator_a: torch.Generator | None = None,
    generator_b: torch.Generator | None = None,
    num_inference_steps: int = 20,
    output_type: str = "pil",
    **kwargs,
):
    """``num_frames`` SR images of one LR ``image`` from x_T = slerp(x_T(a), x_T(b), k / (num_frames - 1)).

    Frame 0 and the last frame are the plain DDIM (eta 0) samples from the noises of ``generator_a`` and
    ``generator_b``. All frames are sampled in one batch.

    Args:
        pipe: an :class:`~sradm_diffusers.SRADMPipeline` (its scheduler is restored afterwards).
        image: one LR image.
        num_frames: >= 2.
        generator_a, generator_b: generators for the two end noises (CPU generators give device-independent noise).
        num_inference_steps: DDIM steps.
        output_type: as for the pipeline.
        **kwargs: other pipeline arguments (e.g. ``lr_consistency``).
    Returns:
        The ``num_frames`` images (a list for "pil", else a batch).
    Raises:
        SamplingMemoryError: (a ``ValueError``) the frames do not fit into memory together; names how many do.
    """
    if not isinstance(num_frames, int) or num_frames < 2:
        raise ValueError(f"num_frames must be an integer >= 2 (the two ends); got {num_frames!r}.")
    lr = preprocess(image)
    if lr.shape[0] != 1:
        raise ValueError(f"interpolate takes one LR image; got {lr.shape[0]}.")
    check_frames_memory(pipe, lr.shape[-2], lr.shape[-1], num_frames, pipe._execution_device)
    scale = pipe.config.upscale_factor
    shape = (1, 3, lr.shape[-2] * scale, lr.shape[-1] * scale)
    noise_a = randn_tensor(shape, generator=generator_a, dtype=torch.float32)
    noise_b = randn_tensor(shape, generator=generator_b, dtype=torch.float32)
    latents = torch.cat([slerp(noise_a, noise_b, k / (num_frames - 1)) for k in range(num_frames)])
    original = pipe.scheduler
    pipe.scheduler = DDIMScheduler.from_config(original.config)
    try:
        return pipe(
            lr.repeat(num_frames, 1, 1, 1).add(1).div(2),  # back to [0, 1], the pipeline's tensor input range
            num_inference_steps=num_inference_steps, latents=latents, eta=0.0, output_type=output_type, **kwargs,
        ).images
    finally:
        pipe.scheduler = original


def frames_to_strip(frames: list[Image.Image]) -> Image.Image:
    """Frames side by side, left to right."""
    width, height = frames[0].size
    strip = Image.new("RGB", (width * len(frames), height))
    for k, frame in enumerate(frames):
        strip.paste(frame, (k * width, 0))
    return strip


OUTPUT_EXTENSIONS = (".gif", ".png", ".jpg", ".jpeg", ".webp")
"""``sradm interpolate -o``: ``.gif`` writes an animation, the others a strip of the frames."""


def check_frames_memory(pipe, lr_height: int, lr_width: int, num_frames: int, device=None) -> None:
    """Raise :class:`~sradm_diffusers.memory.SamplingMemoryError` naming the largest ``num_frames`` that fits when
    the frames of an LR input of ``lr_height`` x ``lr_width``, all sampled in one batch, would not fit into the
    available memory (:mod:`sradm_diffusers.memory`)."""
    from ..sampling.memory import SamplingMemoryError, available_bytes, check_sampling_memory, estimate_sampling_bytes

    height, width = pipe.unet_input_size(lr_height, lr_width)
    try:
        check_sampling_memory(pipe.unet, num_frames, height, width, device)
    except SamplingMemoryError as error:
        budget = available_bytes(device)
        fixed = estimate_sampling_bytes(pipe.unet, 0, height, width)
        fit = int((budget - fixed) // max(estimate_sampling_bytes(pipe.unet, 1, height, width) - fixed, 1))
        needed = str(error).split(";")[0]
        fix = f"use --frames {fit} or fewer" if fit >= 2 else "even 2 frames do not fit: use a smaller input"
        raise SamplingMemoryError(f"{num_frames} frames are sampled in one batch: {needed}; {fix}.") from None


