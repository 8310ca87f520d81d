"""Validation during training: a few fixed pairs super-resolved and scored as ``sradm evaluate`` scores them.

The LR input is ``sradm evaluate``'s (:func:`sradm_diffusers.commands.eval_pairs.make_lr`: ``imresize`` of the uint8
HR in float64, rounded half up), the sampler comes from the package's scheduler table
(:func:`sradm_diffusers.defaults.make_scheduler`, as ``sradm upscale --scheduler``) and the metrics are
:mod:`sradm_diffusers.metrics.quality`'s: PSNR-Y with ``scale`` pixels cropped, LR-PSNR, and the bicubic PSNR-Y for
reference. Each call saves a grid of bicubic | SR | HR rows as ``output_dir/validation/step-<step>.png``.

- :func:`load_validation_pairs`: the pairs of ``--validation_data_dir`` or ``--validation_split`` (main process).
- :func:`run_validation`: one pass over them; mean metrics.
- :class:`Validator`: validation at chosen steps, with the EMA weights swapped in, logged and remembered for the
  model card.
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any, Sequence

import numpy as np
import torch

from training.ema import ema_weights
from training.pair_datasets import make_validation_pairs
from training.seeds import derive_seed
from training.sources import load_image_dataset

logger = logging.getLogger("sradm.train")


def load_validation_pairs(args, accelerator) -> tuple[list[dict], str]:
    """Validation pairs (main process only; [] elsewhere or without validation data) and a description."""
    if not accelerator.is_main_process or args.num_validation_images < 1:
        return [], ""
    if args.validation_data_dir:
        source = dict(train_data_dir=args.validation_data_dir, split="train")
        where = f"folder {os.path.basename(os.path.normpath(args.validation_data_dir))}"
    elif args.validation_split:
        source = dict(dataset_name=args.dataset_name, dataset_config_name=args.dataset_config_name,
                      train_data_dir=args.train_data_dir, split=args.validation_split)
        where = f"split {args.validation_split!r} of {args.dataset_name or 'the training folder'}"
    else:
        return [], ""
    dataset = load_image_dataset(image_column=args.image_column, streaming=args.streaming,
                                 cache_dir=args.cache_dir, **source)
    pairs = make_validation_pairs(
        dataset, args.scale, resolution=args.validation_resolution or None, image_column=args.image_column,
        preprocess=None if args.preprocess == "none" else args.preprocess, max_images=args.num_validation_images,
    )
    crop = f"centre {args.validation_resolution}px crops" if args.validation_resolution else "whole images"
    return pairs, f"{where}, {crop}"


def validation_scheduler(name: str):
    """``--validation_scheduler``, built from the package's scheduler table as ``sradm upscale --scheduler`` is."""
    from sradm_diffusers.defaults import make_scheduler
    from sradm_diffusers.presets import default_scheduler

    return make_scheduler(name, default_scheduler().config)


def _validation_pipeline(args, unet, frozen_encoder):
    """An ``SRADMPipeline`` of the U-Net being trained, sampling with ``--validation_scheduler``, no progress bar."""
    from sradm_diffusers import SRADMPipeline

    pipe = SRADMPipeline(
        unet=unet, lr_encoder=frozen_encoder, scheduler=validation_scheduler(args.validation_scheduler),
        upscale_factor=args.scale, residual_scale=args.residual_scale,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _super_resolve(args, inner, pipe, lr_u8: torch.Tensor, device, index: int) -> torch.Tensor:
    """uint8 LR (1,3,h,w) -> uint8 SR (1,3,s*h,s*w): the diffusion pipeline (seeded by the pair's index) when
    ``pipe`` is given, else the encoder's regression SR."""
    from sradm_diffusers.metrics.quality import to_uint8

    if pipe is None:
        lr = (lr_u8.float() / 127.5 - 1.0).to(device)
        return to_uint8(inner.upscale(lr).clamp(-1, 1).float().cpu())
    generator = torch.Generator().manual_seed(derive_seed(args.seed, "validation", index))
    sr = pipe(lr_u8.float().to(device) / 255.0, num_inference_steps=args.validation_inference_steps,
              generator=generator, output_type="pt").images
    return to_uint8(sr.cpu(), value_range=(0.0, 1.0))


@torch.no_grad()
def run_validation(args, inner, frozen_encoder, pairs, device, step: int, accelerator=None) -> dict[str, float]:
    """SR of every validation pair; returns mean metrics and saves ``validation/step-<step>.png``.

    Args:
        pairs: from :func:`load_validation_pairs`, ``{"hr": (3,H,W) in [-1, 1], ...}`` (H, W multiples of the scale).
        inner: the model being trained (an ``RRDBEncoder`` or an ``SRADMUNet``), put back in its training mode.
        accelerator: its TensorBoard tracker, if any, also gets the grid.
    Returns:
        ``{"psnr_y", "lr_psnr", "psnr_y_bicubic"}``, each the mean over the pairs of its finite values (dB).
    """
    from sradm_diffusers import imresize
    from sradm_diffusers.commands.eval_pairs import make_lr
    from sradm_diffusers.metrics.quality import lr_psnr, psnr_y, to_uint8

    was_training = inner.training
    inner.eval()
    pipe = _validation_pipeline(args, inner, frozen_encoder) if args.stage == "diffusion" else None
    scores = {"psnr_y": [], "lr_psnr": [], "psnr_y_bicubic": []}
    rows = []
    for i, pair in enumerate(pairs):
        hr_u8 = to_uint8(pair["hr"][None])
        lr_u8 = make_lr(hr_u8, args.scale)
        sr_u8 = _super_resolve(args, inner, pipe, lr_u8, device, i)
        bicubic_u8 = to_uint8(imresize(lr_u8.float() / 127.5 - 1.0, args.scale).clamp(-1, 1))
        scores["psnr_y"].append(float(psnr_y(sr_u8, hr_u8, args.scale)[0]))
        scores["psnr_y_bicubic"].append(float(psnr_y(bicubic_u8, hr_u8, args.scale)[0]))
        scores["lr_psnr"].append(float(lr_psnr(sr_u8, lr_u8, args.scale)[0]))
        rows.append([t[0].permute(1, 2, 0).numpy() for t in (bicubic_u8, sr_u8, hr_u8)])
    if was_training:
        inner.train()
    if rows:
        _save_grid(image_grid(rows), args.output_dir, step, accelerator)
    return {key: _finite_mean(values) for key, values in scores.items()}


def _finite_mean(values: Sequence[float]) -> float:
    """Mean of the finite values (an exact match scores inf); inf when none is finite."""
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else float("inf")


def image_grid(rows: Sequence[Sequence[np.ndarray]]):
    """PIL image of a grid of uint8 HWC arrays (rows of equal count; cells padded to the largest cell, 2 px gap)."""
    from PIL import Image

    cell_h = max(cell.shape[0] for row in rows for cell in row)
    cell_w = max(cell.shape[1] for row in rows for cell in row)
    cols = max(len(row) for row in rows)
    gap = 2
    canvas = np.full(
        (len(rows) * (cell_h + gap) - gap, cols * (cell_w + gap) - gap, 3), 255, dtype=np.uint8
    )
    for i, row in enumerate(rows):
        for j, cell in enumerate(row):
            y, x = i * (cell_h + gap), j * (cell_w + gap)
            canvas[y : y + cell.shape[0], x : x + cell.shape[1]] = cell
    return Image.fromarray(canvas)


def _save_grid(grid, output_dir: str, step: int, accelerator=None) -> None:
    """``grid`` as ``output_dir/validation/step-<step>.png`` and, with a TensorBoard tracker, as its image."""
    folder = os.path.join(output_dir, "validation")
    os.makedirs(folder, exist_ok=True)
    grid.save(os.path.join(folder, f"step-{step:07d}.png"))
    for tracker in accelerator.trackers if accelerator is not None else ():
        if tracker.name == "tensorboard":
            tracker.writer.add_image("validation/bicubic|sr|hr", np.asarray(grid), step, dataformats="HWC")


class Validator:
    """Validation of the model being trained at the steps the loop chooses (main process).

    Validates with the EMA weights when there are any, logs the metrics to the trackers and the log, and keeps the
    last result: :attr:`metrics` and :attr:`info` (step, number of images, source, sampler) for the model card.
    """

    def __init__(self, args, inner, frozen_encoder, ema, accelerator, pairs: list[dict], source: str):
        self.args, self.inner, self.frozen_encoder, self.ema = args, inner, frozen_encoder, ema
        self.accelerator, self.pairs, self.source = accelerator, pairs, source
        self.metrics: dict[str, float] = {}
        self.info: dict[str, Any] = {}

    def validate(self, step: int) -> None:
        """Validate at ``step`` (nothing without validation pairs)."""
        if not self.pairs:
            return
        args = self.args
        started = time.perf_counter()
        with ema_weights(self.ema, self.inner):
            metrics = run_validation(args, self.inner, self.frozen_encoder, self.pairs, self.accelerator.device, step,
                                     self.accelerator)
        self.accelerator.log({f"val/{k}": v for k, v in metrics.items()}, step=step)
        logger.info("validation at step %d (%.1fs): %s", step, time.perf_counter() - started,
                    ", ".join(f"{k}={v:.2f}" for k, v in metrics.items()))
        self.metrics = metrics
        self.info = {"step": step, "num_images": len(self.pairs), "source": self.source}
        if args.stage == "diffusion":
            self.info["sampler"] = f"{args.validation_scheduler} with {args.validation_inference_steps} steps"

    def validate_final(self, step: int) -> None:
        """Validate the final model unless the last validation was at ``step`` already."""
        if self.info.get("step") != step:
            self.validate(step)
