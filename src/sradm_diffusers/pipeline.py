"""SRADMPipeline: diffusion super-resolution by residual prediction over a bicubic upsample."""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline, ImagePipelineOutput, ModelMixin, SchedulerMixin
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.utils import replace_example_docstring
from diffusers.utils.torch_utils import randn_tensor

from .image_processing import OUTPUT_TYPES, ImageInput, check_finite, postprocess, preprocess
from .imresize import imresize
from .loading.pipeline_hub import SRADMHubMixin
from .sampling.lr_consistency import FINAL_ITERATIONS, LRConsistency
from .sampling.memory import check_sampling_memory
from .sampling.prediction import clip_model_output, needs_x0_clipping, thresholding_as_clamp
from .sampling.rrdb_start import check_strength, rrdb_residual, truncate_timesteps
from .sampling.tiling import TilePlan, TiledNoisePredictor, check_tile_arguments, encode_features_tiled

EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> import torch
        >>> from diffusers import DPMSolverMultistepScheduler
        >>> from PIL import Image
        >>> from sradm_diffusers import DEMO_MODEL, SAMPLE_IMAGE, SRADMPipeline

        >>> pipe = SRADMPipeline.from_pretrained(DEMO_MODEL)  # a local folder or a Hub id
        >>> pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)  # few steps
        >>> image = Image.open(SAMPLE_IMAGE).convert("RGB")  # 128 x 128
        >>> sr = pipe(image, num_inference_steps=10, generator=torch.Generator().manual_seed(0)).images[0]
        >>> sr.size == (4 * image.width, 4 * image.height)
        True
        ```
"""


def _check_generators(generator, num_images: int, num_images_per_prompt: int) -> None:
    """A list of generators must hold one per output image (``num_images * num_images_per_prompt``)."""
    batch = num_images * num_images_per_prompt
    if isinstance(generator, list) and len(generator) != batch:
        raise ValueError(
            f"Got {len(generator)} generators for {num_images} image(s) x num_images_per_prompt="
            f"{num_images_per_prompt} = {batch} outputs; pass one generator, or a list of exactly {batch}."
        )


def _pad_bottom_right(x: torch.Tensor, pad_h: int, pad_w: int) -> torch.Tensor:
    """Mirror-pad (B, C, H, W) on the bottom/right; replicate where the image is too small to mirror."""
    if pad_h == 0 and pad_w == 0:
        return x
    mode = "reflect" if pad_h < x.shape[-2] and pad_w < x.shape[-1] else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


def _per_sample(x: torch.Tensor, samples: int) -> torch.Tensor:
    """(B, ...) -> (B * samples, ...), each image repeated for its samples; ``x`` itself (no copy) for one."""
    return x if samples == 1 else x.repeat_interleave(samples, dim=0)


class SRADMPipeline(SRADMHubMixin, DiffusionPipeline):
    """Single-image super-resolution with SRADM.

    The RRDB encoder and ``unet.condition`` turn the LR image into HR-size conditioning once per image; the scheduler
    then denoises a residual x_0 from Gaussian noise, and the result is ``up(LR) + x_0 / residual_scale`` with
    ``up`` the MATLAB-compatible bicubic upsample (:func:`sradm_diffusers.imresize`).

    Args:
        unet: the noise predictor (:class:`~sradm_diffusers.SRADMUNet`).
        lr_encoder: the RRDB encoder (:class:`~sradm_diffusers.RRDBEncoder`, frozen during diffusion training).
        scheduler: any diffusers scheduler; the stored default is ``DDPMScheduler`` with the reference's 100-step
            cosine schedule and x_0 clipped to [-1, 1], the residual's range.
        upscale_factor: SR factor s; must equal both components' ``upscale_factor``.
        residual_scale: x_0 = (HR - up(LR)) * residual_scale during training (2.0 in the reference), so the model's
            [-1, 1] range covers residuals up to +-0.5 image units.

    Saving and loading (the Hub, the code shipped for ``trust_remote_code``) come from
    :class:`~sradm_diffusers.loading.pipeline_hub.SRADMHubMixin`; this class is the sampling.
    """

    model_cpu_offload_seq = "lr_encoder->unet"
    _callback_tensor_inputs = ["latents"]

    def __init__(
        self,
        # ModelMixin, not the concrete classes: loaded from the code shipped in a saved folder, the components'
        # classes come from their own files (unet/sradm_unet.py ...), copies of those the pipeline file defines.
        unet: ModelMixin,
        lr_encoder: ModelMixin,
        scheduler: SchedulerMixin,
        upscale_factor: int | None = None,
        residual_scale: float = 2.0,
    ):
        super().__init__()
        upscale_factor = unet.config.upscale_factor if upscale_factor is None else upscale_factor
        factors = {
            "pipeline upscale_factor": upscale_factor,
            "unet.config.upscale_factor": unet.config.upscale_factor,
            "lr_encoder.config.upscale_factor": lr_encoder.config.upscale_factor,
        }
        if len(set(factors.values())) != 1:
            raise ValueError(
                f"Components disagree on the upscale factor: {factors}. Build the U-Net, the encoder and the "
                "pipeline for one factor (e.g. build_pipeline(name, upscale_factor=s))."
            )
        if unet.config.cond_channels != lr_encoder.out_channels:
            raise ValueError(
                f"unet.config.cond_channels={unet.config.cond_channels} but the lr_encoder produces "
                f"{lr_encoder.out_channels} feature channels; build the U-Net with cond_channels=lr_encoder.out_channels."
            )
        if residual_scale <= 0:
            raise ValueError(f"residual_scale must be positive, got {residual_scale}.")
        self.register_modules(unet=unet, lr_encoder=lr_encoder, scheduler=scheduler)
        self.register_to_config(upscale_factor=upscale_factor, residual_scale=residual_scale)
        self.tiling: tuple[int, int] | None = None
        self._interrupt = False
        self._num_timesteps = 0

    @property
    def interrupt(self) -> bool:
        """Set ``pipe._interrupt = True`` (e.g. in ``callback_on_step_end``) to skip the remaining steps."""
        return self._interrupt

    @property
    def num_timesteps(self) -> int:
        """Number of denoising steps of the current (or last) call."""
        return self._num_timesteps

    def enable_tiling(self, tile_size: int = 128, tile_overlap: int = 16) -> None:
        """Sample images larger than ``tile_size`` x ``tile_size`` LR pixels in overlapping tiles, in bounded memory.

        One sampler trajectory covers the whole image: at every step the U-Net runs on HR tiles of
        ``tile_size * s`` pixels overlapping by at least ``tile_overlap * s``, and their noise predictions are
        blended with smooth weights that sum to one (:mod:`sradm_diffusers.sampling.tiling`). The encoder and the
        conditioning see a halo covering their receptive field, so tiling leaves them unchanged. Tile starts snap
        to the U-Net's attention-window grid; an image that fits in one tile is sampled exactly as untiled.

        Args:
            tile_size: tile side in LR (input) pixels, like Real-ESRGAN's ``--tile``.
            tile_overlap: minimum overlap of neighbouring tiles in LR pixels; less than ``tile_size / 2``.
        """
        check_tile_arguments(tile_size, tile_overlap)
        self.tiling = (tile_size, tile_overlap)

    def disable_tiling(self) -> None:
        """Sample the whole image in one U-Net call per step again (the default)."""
        self.tiling = None

    def check_inputs(self, num_inference_steps: int, num_images_per_prompt: int, output_type: str, callback_inputs):
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be an integer >= 1, got {num_inference_steps!r}.")
        max_steps = self.scheduler.config.num_train_timesteps
        if num_inference_steps > max_steps:
            raise ValueError(
                f"num_inference_steps={num_inference_steps} exceeds the scheduler's num_train_timesteps={max_steps}; "
                f"use at most {max_steps} steps."
            )
        if not isinstance(num_images_per_prompt, int) or num_images_per_prompt < 1:
            raise ValueError(f"num_images_per_prompt must be an integer >= 1, got {num_images_per_prompt!r}.")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"Unknown output_type {output_type!r}; use one of {', '.join(OUTPUT_TYPES)}.")
        unknown = [k for k in callback_inputs or [] if k not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(
                f"callback_on_step_end_tensor_inputs has {unknown}; allowed: {self._callback_tensor_inputs}."
            )

    def prepare_extra_step_kwargs(self, generator, eta: float) -> dict[str, Any]:
        """Pass ``eta``/``generator`` only to schedulers whose ``step`` accepts them."""
        params = set(inspect.signature(self.scheduler.step).parameters)
        extra = {}
        if "eta" in params:
            extra["eta"] = eta
        if "generator" in params:
            extra["generator"] = generator
        return extra

    def tile_plan(self, height: int, width: int) -> TilePlan | None:
        """The HR tiles of ``enable_tiling`` for a padded LR image of height x width; None when untiled or when the
        image fits in one tile. Made once per call; everything tiled in that call reads it."""
        if self.tiling is None:
            return None
        plan = TilePlan.make(self.unet, self.config.upscale_factor, height, width, *self.tiling)
        return plan if len(plan.tiles) > 1 else None

    def encode_features(self, lr: torch.Tensor, tiles: TilePlan | None = None, return_trunk: bool = False):
        """LR (B, 3, h, w) in [-1, 1], already padded -> encoder features (B, cond_channels, h, w), once per image;
        the U-Net conditions them inside its forward (so CPU-offload hooks cover every module). On the LR tiles of
        ``tiles`` (:meth:`tile_plan`) when given. With ``return_trunk``, ``(features, trunk)``: the encoder's trunk
        features (B, num_features, h, w) too, for the RRDB start of ``strength < 1``."""
        if tiles is None:
            out = self.lr_encoder(lr.to(dtype=self.lr_encoder.dtype), return_trunk=return_trunk)
        else:
            out = encode_features_tiled(self.lr_encoder, lr, tiles.tile_size, return_trunk)
        features, trunk = out if return_trunk else (out, None)
        features = features.to(dtype=self.unet.dtype)
        return (features, trunk) if return_trunk else features

    def unet_input_size(self, height: int, width: int) -> tuple[int, int]:
        """Largest HR (height, width) the U-Net sees at once for an LR input of height x width: the whole output,
        or at most one tile when tiling is enabled. What sampling memory grows with."""
        scale = self.config.upscale_factor
        limit = self.tiling[0] * scale if self.tiling is not None else max(height, width) * scale
        return min(height * scale, limit), min(width * scale, limit)

    def noise_predictor(
        self, features: torch.Tensor, tiles: TilePlan | None = None
    ) -> Callable[[torch.Tensor, Any], torch.Tensor]:
        """``predict_noise(x_t, t) -> eps`` given the padded LR image's ``features`` (:meth:`encode_features`);
        x_t may hold K samples per image (batch B*K), which share the image's features and conditioning.

        Untiled (``tiles`` None): the U-Net on the whole image. Tiled: a
        :class:`~sradm_diffusers.sampling.tiling.TiledNoisePredictor` over ``tiles``.
        """
        if tiles is None:
            return lambda sample, t: self.unet(sample, t, lr_features=features).sample
        return TiledNoisePredictor(self.unet, features, tiles.tiles, self.config.upscale_factor, ramp=tiles.ramp)

    def get_timesteps(self, num_inference_steps: int, strength: float, device) -> torch.Tensor:
        """The timesteps this call runs: the scheduler's ``num_inference_steps`` timesteps, or for ``strength`` < 1
        only the last ``int(num_inference_steps * strength)`` of them (as diffusers' img2img pipelines)."""
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        if strength < 1.0:
            return truncate_timesteps(self.scheduler, num_inference_steps, strength)
        return self.scheduler.timesteps

    def prepare_latents(
        self,
        shape: tuple[int, int, int, int],
        generator,
        latents: torch.Tensor | None,
        device,
        padding: tuple[int, int],
    ) -> torch.Tensor:
        """The starting noise x_T in float32: ``latents`` if given (checked: shape (B*K, 3, s*h, s*w), finite), else
        drawn from ``generator``; padded at the bottom/right by ``padding`` HR pixels (the U-Net's size multiple).

        x_t and the scheduler's arithmetic stay in float32 whatever the U-Net's dtype; only the U-Net runs in half
        precision. So a half-precision run draws the float32 run's noise (torch < 2.13 drew other numbers for a
        float16 CPU randn, through a scalar kernel several times slower: with DDPM's per-step noise from a list of
        CPU generators that made fp16 sampling 4x slower than fp32 on a GPU, issue 19), and the scheduler's updates
        (a few 1e-3 per step) are not rounded to 8 or 11 bits.
        """
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"latents have shape {tuple(latents.shape)}; expected {shape} for this input.")
        else:
            check_finite(latents, "latents", "pass finite Gaussian noise (e.g. randn_tensor) or latents=None.")
        return _pad_bottom_right(latents.to(device=device, dtype=torch.float32), *padding)

    def denoise(
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        predict_noise: Callable[[torch.Tensor, Any], torch.Tensor],
        consistency: LRConsistency | None,
        extra_step_kwargs: dict[str, Any],
        callback_on_step_end=None,
        callback_tensor_inputs: list[str] = ("latents",),
    ) -> torch.Tensor:
        """The reverse process: x_t (B*K, 3, H, W) float32 -> x_0, one scheduler step per timestep.

        Each step predicts the noise (the U-Net in its own dtype, on tiles if ``predict_noise`` tiles), bounds the
        implied x_0 (LR consistency's back-projection, or the config's clip for schedulers that cannot clip), and
        steps the scheduler; ``callback_on_step_end`` may replace x_t, and ``pipe._interrupt`` skips what is left.
        """
        clip_x0 = needs_x0_clipping(self.scheduler)  # e.g. Euler, which cannot clip x_0 itself
        with thresholding_as_clamp(self.scheduler):
            for i, t in enumerate(self.progress_bar(timesteps)):
                if self.interrupt:
                    continue
                model_input = self.scheduler.scale_model_input(latents, t)
                noise_pred = predict_noise(model_input.to(self.unet.dtype), t).float()
                if consistency is not None:
                    noise_pred = consistency.correct_model_output(self.scheduler, noise_pred, model_input, t)
                elif clip_x0:
                    noise_pred = clip_model_output(self.scheduler, noise_pred, model_input, t)
                latents = self.scheduler.step(noise_pred, t, latents, **extra_step_kwargs).prev_sample
                if callback_on_step_end is not None:
                    available = {"latents": latents}
                    tensors = {name: available[name] for name in callback_tensor_inputs}
                    latents = callback_on_step_end(self, i, t, tensors).get("latents", latents)
        return latents

    def _lr_padding(self, height: int, width: int) -> tuple[int, int]:
        """LR padding that makes the HR size a multiple of the U-Net's ``size_multiple``."""
        multiple = self.unet.size_multiple // math.gcd(self.unet.size_multiple, self.config.upscale_factor)
        return (-height) % multiple, (-width) % multiple

    def noise_rrdb_start(
        self, noise, timestep, lr_padded, up_per_image, tiles, trunk, num_images_per_prompt: int, hr_padding
    ) -> torch.Tensor:
        """x_t for ``strength`` < 1: the RRDB head's residual (B*K,3,sH,sW), padded as the latents, noised to
        ``timestep`` with ``noise`` (:mod:`sradm_diffusers.sampling.rrdb_start`)."""
        tile = tiles.tile_size if tiles is not None else None
        x0 = rrdb_residual(self.lr_encoder, lr_padded, up_per_image, self.config.residual_scale, tile, trunk)
        x0 = _pad_bottom_right(_per_sample(x0, num_images_per_prompt).to(noise.dtype), *hr_padding)
        return self.scheduler.add_noise(x0, noise, timestep.reshape(1))

    def residual_to_image(self, latents, up, consistency, hr_height: int, hr_width: int) -> torch.Tensor:
        """The SR image (B,3,sH,sW) in [-1, 1]: ``up`` plus the denoised residual (unpadded, unscaled), after the
        final LR back-projection when ``consistency`` is on. Raises ``ValueError`` on non-finite output."""
        if consistency is not None:
            latents = consistency.project(latents, FINAL_ITERATIONS)
        residual = latents[:, :, :hr_height, :hr_width].float() / self.config.residual_scale
        check_finite(residual, "the model's output (the denoised residual)", "its weights may be corrupt (NaN/inf "
                     "in the files) or half precision overflowed: check or re-save the model, or use float32.")
        return (up + residual).clamp(-1.0, 1.0)

    @torch.no_grad()
    @replace_example_docstring(EXAMPLE_DOC_STRING)
    def __call__(
        self,
        image: ImageInput | list[ImageInput],
        num_inference_steps: int = 100,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        num_images_per_prompt: int = 1,
        eta: float = 0.0,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[[Any, int, Any, dict], dict]
        | PipelineCallback
        | MultiPipelineCallbacks
        | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],
        lr_consistency: bool = False,
        strength: float = 1.0,
    ) -> ImagePipelineOutput | tuple:
        """Super-resolve ``image`` by ``upscale_factor``.

        Args:
            image: LR image(s): PIL, numpy HWC (uint8 or float in [0, 1]), torch CHW/BCHW in [0, 1], or a list
                (see :mod:`sradm_diffusers.image_processing` for modes and alpha).
            num_inference_steps: denoising steps (at most the scheduler's ``num_train_timesteps``).
            generator: one generator, or one per output image (``len(images) * num_images_per_prompt``).
            latents: optional x_T of shape (B * num_images_per_prompt, 3, s*h, s*w); overrides ``generator``
                for the initial noise (ancestral schedulers still draw per-step noise from ``generator``).
            num_images_per_prompt: K different SR samples per input; outputs are grouped by input.
            eta: DDIM's eta, passed only to schedulers that accept it.
            output_type: "pil", "np" (B, H, W, 3) in [0, 1], or "pt" (B, 3, H, W) in [0, 1].
            callback_on_step_end: ``fn(pipe, step, timestep, tensors) -> dict`` after every step, or a diffusers
                ``PipelineCallback`` / ``MultiPipelineCallbacks`` (whose ``tensor_inputs`` then decide what it
                gets); a returned "latents" replaces the current x_t. Setting ``pipe._interrupt`` stops sampling.
            lr_consistency: back-project the predicted x_0 at every step (and the result) so that
                ``imresize(SR, 1/s)`` reproduces the LR input (:mod:`sradm_diffusers.sampling.lr_consistency`).
            strength: in (0, 1]. Below 1, start from the RRDB head's residual noised to an intermediate timestep
                and run only the last ``int(num_inference_steps * strength)`` steps (SDEdit / img2img;
                :mod:`sradm_diffusers.sampling.rrdb_start`); ``latents`` is then the noise added. 1: from pure noise.

        Examples:

        Returns:
            ``ImagePipelineOutput`` with ``images`` of size (s*h, s*w), or a tuple if ``return_dict`` is False.
        """
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        self.check_inputs(num_inference_steps, num_images_per_prompt, output_type, callback_on_step_end_tensor_inputs)
        check_strength(strength, num_inference_steps)
        device = self._execution_device
        scale = self.config.upscale_factor

        lr = preprocess(image).to(device)
        batch, (height, width) = lr.shape[0] * num_images_per_prompt, lr.shape[-2:]
        _check_generators(generator, lr.shape[0], num_images_per_prompt)
        check_sampling_memory(self.unet, batch, *self.unet_input_size(height, width), device, num_images_per_prompt,
                              output_size=(height * scale, width * scale))
        pad_h, pad_w = self._lr_padding(height, width)
        # Encoder and conditioning once per input image; its K samples share them. The RRDB start (strength < 1)
        # reuses the encoder's trunk.
        lr_padded = _pad_bottom_right(lr, pad_h, pad_w)
        tiles = self.tile_plan(*lr_padded.shape[-2:])
        if strength < 1:
            features, trunk = self.encode_features(lr_padded, tiles, return_trunk=True)
        else:
            features, trunk = self.encode_features(lr_padded, tiles), None
        predict_noise = self.noise_predictor(features, tiles)
        up_per_image = imresize(lr, scale).clamp(-1.0, 1.0)
        lr, up = (_per_sample(x, num_images_per_prompt) for x in (lr, up_per_image))

        consistency = LRConsistency(lr, up, scale, self.config.residual_scale) if lr_consistency else None
        hr_shape = (batch, 3, height * scale, width * scale)
        latents = self.prepare_latents(hr_shape, generator, latents, device, (pad_h * scale, pad_w * scale))
        timesteps = self.get_timesteps(num_inference_steps, strength, device)
        if strength < 1.0:
            latents = self.noise_rrdb_start(latents, timesteps[0], lr_padded, up_per_image, tiles, trunk,
                                            num_images_per_prompt, (pad_h * scale, pad_w * scale))
            del trunk  # a whole-image tensor: not held through the loop
        else:
            latents = latents * self.scheduler.init_noise_sigma
        extra_step_kwargs = self.prepare_extra_step_kwargs(generator, eta)
        self._num_timesteps = len(timesteps)
        self._interrupt = False
        latents = self.denoise(latents, timesteps, predict_noise, consistency, extra_step_kwargs,
                               callback_on_step_end, callback_on_step_end_tensor_inputs)

        sr = self.residual_to_image(latents, up, consistency, height * scale, width * scale)
        self.unet.reset_condition_cache()
        self.maybe_free_model_hooks()

        images = postprocess(sr, output_type)
        return ImagePipelineOutput(images=images) if return_dict else (images,)
