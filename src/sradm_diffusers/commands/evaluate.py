"""``sradm evaluate``: score bicubic, RRDB and SRADM super-resolution on a set of HR images.

Protocol (shared/reference/srdiff.md; metrics from :mod:`sradm_diffusers.metrics.quality`):

1. **HR**: every image is loaded like ``sradm upscale`` loads one (PIL, EXIF orientation applied, transparency
   composited on white, greyscale to RGB) as uint8 RGB. An HR image whose height or width is not a multiple of the
   scale ``s`` is **cropped at the bottom/right** to the largest multiple of ``s`` (the usual "mod crop"; DIV2K's
   1020x678 becomes 1020x676 at 4x).
2. **LR**: ``imresize(HR, 1/s)`` (MATLAB bicubic with antialiasing) computed in float and rounded to uint8 (half up,
   clamped): the LR a user would have as an image file, and the same rounding LR-PSNR applies. With ``--lr-dir``
   the LR files are read as given (same file name as the HR one, or DIV2K's ``<stem>x<s><ext>``); the cropped HR
   must then be exactly ``s`` times the LR size, otherwise that image fails.
3. **Methods**, all fed the same uint8 LR:

   - ``bicubic``: ``imresize(lr, s)`` clamped to [-1, 1] (the pipeline's own base ``up``);
   - ``rrdb``: ``pipe.lr_encoder.upscale(lr)`` clamped (the regression baseline; the encoder is fully
     convolutional, so it runs on the LR as is, without the pipeline's padding);
   - ``sradm``: the pipeline sampled exactly as ``sradm upscale`` samples, with the same options and defaults
     (:mod:`sradm_diffusers.defaults`: without ``--scheduler``, ``--steps``, ``--strength`` the few-step
     :data:`~sradm_diffusers.defaults.DEFAULT_SAMPLING`; LR consistency on; the same tiling policy and dtype),
     ``K = --samples`` samples per image (``num_images_per_prompt=K``; sample ``k`` seeded ``seed + k``), so it
     scores the images ``sradm upscale --seed S`` writes for the LR. Each metric is the mean over the K samples,
     plus ``diversity_std`` (spread of the K samples on the 0..255 scale) when K > 1, and then also the row
     ``sradm_mean``: the metrics of the K samples' per-pixel mean image.

   Outputs are rounded to uint8 before scoring.
4. **Metrics** per image and method: ``psnr_rgb``, ``ssim_rgb`` (RGB, no crop), ``psnr_y``, ``ssim_y`` (BT.601 Y,
   ``s`` pixels cropped), ``lr_psnr``, ``lpips`` (None/null where :func:`~.quality.load_lpips` finds
   no local weights). A method's score is the mean over the images that did not fail.

Images that cannot be loaded or scored are reported (one line on stderr), listed in the JSON (``failed``,
``n_failed``) and in the table footer, and left out of every mean; the exit status is then 1.

The JSON (``--json``) is ``{"scale", "n_images", "n_failed", "methods": {method: {metric: mean}},
"per_image": {name: {method: {metric: value}}}, "failed": {name: reason}, "config": {...}}``. JSON has no
infinity: an infinite PSNR (an exact match, e.g. an LR-PSNR with LR consistency) is written as the string
:data:`JSON_INFINITY` (``"inf"``; Python's ``float("inf")`` reads it back), and ``null`` means only "not computed"
(an LPIPS without local weights). ``config`` names the sampler as ``--scheduler`` does (``"dpm-sde"``; null: the
model's own) beside its class (``scheduler_class``), with ``steps``, ``strength``, ``unet_calls``, ``dtype``,
``tile`` and ``tile_overlap``.
"""

from __future__ import annotations

import itertools
import os
import sys
import warnings
from dataclasses import dataclass

import torch

from ..defaults import DEFAULT_TILE_OVERLAP, LR_CONSISTENCY, SamplingSettings, dtype_problem
from .distributed import ProcessShare
from .eval_pairs import EvalImage, iter_dataset, iter_folder, load_eval_dataset, make_lr  # noqa: F401 - make_lr: API
from .eval_report import (  # noqa: F401 - JSON_INFINITY, format_table: API
    JSON_INFINITY, METRICS, format_table, summarize, write_json_atomic,
)
from .files import folder_images
from .runtime import (
    DEFAULT_MODEL, ImageError, StepReporter, UsageError, apply_tiling_policy, load_pipeline, one_line,
    prepare_sampler, resolve_device, sample_generators, sampling_settings,
)


METHODS = ("bicubic", "rrdb", "sradm")


# ----------------------------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------------------------
# Methods and metrics
# ----------------------------------------------------------------------------------------------------------------


def parse_methods(text: str) -> list[str]:
    """``--methods`` "a,b" -> ["a", "b"] in the canonical order; unknown or empty is a UsageError."""
    names = [m.strip().lower() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHODS]
    if unknown or not names:
        raise UsageError(f"--methods {text!r}: use a comma-separated subset of {','.join(METHODS)}.")
    return [m for m in METHODS if m in names]


@dataclass
class Evaluator:
    """Runs the methods on one item and scores them.

    Args:
        scale: SR factor.
        methods: subset of :data:`METHODS`.
        pipe: the SRADM pipeline (needed for rrdb and sradm).
        steps, samples, seed, strength, lr_consistency: sradm sampling settings (the pipeline's scheduler is used).
        lpips_model: from :func:`~.quality.load_lpips`, or None.
        tile, tile_overlap: ``--tile`` / ``--tile-overlap``, the tiling policy of ``sradm upscale``
            (:func:`~sradm_diffusers.defaults.choose_tiling`).
        on_image: called with (name, LR width, LR height) before an item's sradm sampling (progress), or None.
        step_callback: the pipeline's ``callback_on_step_end`` (progress), or None.
    """

    scale: int
    methods: list[str]
    pipe: object = None
    steps: int = 100
    samples: int = 1
    seed: int | None = 0
    lpips_model: object = None
    lr_consistency: bool = LR_CONSISTENCY
    strength: float = 1.0
    tile: int | None = None
    tile_overlap: int = DEFAULT_TILE_OVERLAP
    step_callback: object = None

    def super_resolve(self, method: str, lr: torch.Tensor) -> torch.Tensor:
        """uint8 LR (1,3,h,w) -> uint8 SR (K,3,s*h,s*w) (K = 1 except for sradm)."""
        from ..image_processing import preprocess
        from ..imresize import imresize
        from ..metrics.quality import to_uint8

        lr_hwc = lr[0].permute(1, 2, 0).numpy()
        if method == "bicubic":
            return to_uint8(imresize(preprocess(lr_hwc), self.scale).clamp(-1.0, 1.0))
        pipe = self.pipe
        if method == "rrdb":
            encoder = pipe.lr_encoder
            lr_in = preprocess(lr_hwc).to(device=encoder.device, dtype=encoder.dtype)
            with torch.no_grad():
                return to_uint8(encoder.upscale(lr_in).float().clamp(-1.0, 1.0))
        apply_tiling_policy(pipe, lr_hwc.shape[1], lr_hwc.shape[0], self.tile, self.tile_overlap, pipe.device,
                            "sradm evaluate: LR")
        images = pipe(
            lr_hwc,
            num_inference_steps=self.steps,
            generator=sample_generators(self.seed, self.samples),
            num_images_per_prompt=self.samples,
            output_type="pt",
            callback_on_step_end=self.step_callback,
            lr_consistency=self.lr_consistency,
            strength=self.strength,
        ).images
        return to_uint8(images, value_range=(0.0, 1.0))

    def score(self, item: EvalImage) -> dict[str, dict[str, float | None]]:
        """{method: {metric: value}} for one loaded item; values are means over the K samples."""
        from ..metrics.quality import compute_metrics, diversity_std

        results = {}
        for method in self.methods:
            sr = self.super_resolve(method, item.lr)
            k = sr.shape[0]
            hr = item.hr.to(sr.device).expand(k, -1, -1, -1)
            lr = item.lr.to(sr.device).expand(k, -1, -1, -1)
            values = compute_metrics(sr, hr, self.scale, lr=lr, lpips_model=self.lpips_model)
            row = {key: (None if values[key] is None else float(values[key].double().mean())) for key in METRICS}
            results[method] = row
            if method == "sradm" and k > 1:
                row["diversity_std"] = float(diversity_std(sr))
                mean = sr.float().mean(dim=0, keepdim=True).round().to(torch.uint8)  # the K samples' mean image
                values = compute_metrics(mean, hr[:1], self.scale, lr=lr[:1], lpips_model=self.lpips_model)
                results["sradm_mean"] = {key: None if values[key] is None else float(values[key]) for key in METRICS}
        return results


# ----------------------------------------------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------------------------------------------


def _load_lpips_quietly(device) -> object:
    """:func:`load_lpips`; its one-time warning is printed as one ``warning:`` line."""
    from ..metrics.quality import load_lpips

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = load_lpips(device=device)
    for warning in caught:
        print(f"warning: {one_line(str(warning.message), limit=2000)}", file=sys.stderr)
    return model


def evaluate_items(
    items, evaluator: Evaluator, progress: bool = True, total: int | None = None, reporter=None,
) -> tuple[dict, dict]:
    """Score every item. Returns (per_image {name: {method: metrics}}, failed {name: reason}).

    ``progress``: a tqdm bar on a terminal; with ``reporter`` (a :class:`~sradm_diffusers.upscale.StepReporter`, for
    a stderr that is not a terminal) one line per image and at most one step line per its interval instead.
    """
    from tqdm.auto import tqdm

    per_image, failed = {}, {}
    bar = tqdm(items, desc="evaluate", unit="image", total=total, disable=None if progress else True)
    for number, item in enumerate(bar, 1):
        if item.note is not None:
            tqdm.write(f"note: {item.name}: {item.note}", file=sys.stderr)
        if reporter is not None and progress:
            print(f"sradm evaluate: image {number}{'' if total is None else f'/{total}'}: {item.name}",
                  file=sys.stderr, flush=True)
            reporter.start(item.name, evaluator.steps and int(evaluator.steps * evaluator.strength))
        if item.error is None:
            try:
                per_image[item.name] = evaluator.score(item)
                continue
            except (ValueError, RuntimeError, ImageError) as error:
                item.error = one_line(error)
        failed[item.name] = item.error
        tqdm.write(f"error: {item.name}: {item.error}", file=sys.stderr)
    bar.close()
    return per_image, failed


def _row_count(data, limit: int | None) -> int:
    """Rows :func:`iter_dataset` visits: ``len(data)`` capped at ``limit``; a streaming data set is counted."""
    try:
        total = len(data)
    except TypeError:
        total = sum(1 for _ in itertools.islice(data, limit))
    return total if limit is None else min(limit, total)


def _sampling_config(settings: SamplingSettings, pipe, dtype: str, tile: int | None, tile_overlap: int) -> dict:
    """The sradm sampling as the JSON's ``config`` records it (all None when sradm is not evaluated)."""
    if pipe is None:
        keys = ("sampling", "scheduler", "scheduler_class", "steps", "strength", "unet_calls", "lr_consistency",
                "dtype", "tile", "tile_overlap")
        return dict.fromkeys(keys)
    resolved = settings.replace(steps=settings.num_inference_steps(pipe.scheduler))
    return {
        "sampling": resolved.describe(pipe.scheduler),
        "scheduler": settings.scheduler,
        "scheduler_class": type(pipe.scheduler).__name__,
        "steps": resolved.steps,
        "strength": settings.strength,
        "unet_calls": resolved.unet_calls(),
        "lr_consistency": settings.lr_consistency,
        "dtype": dtype,
        "tile": tile,
        "tile_overlap": tile_overlap,
    }


def _merge(parts: list[dict]) -> dict:
    """One dict from the processes' dicts, in process order."""
    return {key: value for part in parts for key, value in part.items()}


def _check_source_options(hr_dir, lr_dir, dataset, scale: int, center_crop: int | None) -> None:
    """UsageError for a data source or crop that cannot work, before anything loads."""
    if (hr_dir is None) == (dataset is None):
        raise UsageError("give exactly one of --hr-dir DIR and --dataset NAME.")
    if scale < 1:
        raise UsageError(f"--scale {scale}: use a positive integer such as 4.")
    if hr_dir is not None and not os.path.isdir(hr_dir):
        raise UsageError(f"--hr-dir {hr_dir!r} is not a folder.")
    if lr_dir is not None and not os.path.isdir(lr_dir):
        raise UsageError(f"--lr-dir {lr_dir!r} is not a folder.")
    if center_crop is not None and (center_crop < scale or center_crop % scale):
        raise UsageError(f"--center-crop {center_crop}: use a positive multiple of --scale {scale}.")
    if center_crop is not None and lr_dir is not None:
        raise UsageError("--center-crop cannot be combined with --lr-dir (the LR files are used as given).")


def _load_model(model: str, torch_device, dtype: str, scale: int, settings: SamplingSettings, share):
    """(pipeline with its sampler prepared, number of inference steps); UsageError if its scale is not ``scale``."""
    pipe = load_pipeline(model, torch_device, dtype)
    factor = int(pipe.config.upscale_factor)
    if factor != scale:
        raise UsageError(
            f"--scale {scale} does not match the model's upscale_factor {factor} ({model}); "
            f"pass --scale {factor} or a x{scale} model."
        )
    num_steps = prepare_sampler(pipe, settings)
    # on a terminal the steps bar of each image (as upscale shows it); otherwise the StepReporter's lines
    pipe.set_progress_bar_config(disable=None if share.is_main else True, leave=False, desc="steps")
    return pipe, num_steps


def _folder_items(hr_dir: str, lr_dir, scale: int, limit, center_crop, share):
    """(items of this process, their count, the JSON's source entries) for ``--hr-dir``."""
    names = folder_images(hr_dir)
    if not names:
        raise UsageError(f"--hr-dir {hr_dir!r} has no image files.")
    mine = share.indices(len(names[:limit])) if share.num_processes > 1 else None
    total = len(names[:limit]) if mine is None else len(mine)
    items = iter_folder(hr_dir, scale, lr_dir=lr_dir, limit=limit, crop=center_crop, indices=mine)
    return items, total, {"hr_dir": hr_dir, "lr_dir": lr_dir}


def _dataset_items(dataset: str, split, image_column: str, cache_dir, scale: int, limit, center_crop, share):
    """(items of this process, their count or None when unknown, the JSON's source entries) for ``--dataset``."""
    data, split = load_eval_dataset(dataset, split, image_column, cache_dir=cache_dir)
    mine = share.indices(_row_count(data, limit)) if share.num_processes > 1 else None
    total = None if mine is None else len(mine)
    items = iter_dataset(data, split, image_column, scale, limit=limit, crop=center_crop, indices=mine)
    return items, total, {"dataset": dataset, "split": split, "image_column": image_column}


def run_evaluate(
    model: str | None = None,
    hr_dir: str | None = None,
    lr_dir: str | None = None,
    dataset: str | None = None,
    split: str | None = None,
    image_column: str = "image",
    scale: int = 4,
    methods: str | list[str] = "bicubic,rrdb,sradm",
    steps: int | None = None,
    scheduler: str | None = None,
    samples: int = 1,
    limit: int | None = None,
    json_path: str | None = None,
    seed: int | None = 0,
    device: str | None = None,
    cache_dir: str | None = None,
    center_crop: int | None = None,
    lr_consistency: bool = LR_CONSISTENCY,
    strength: float | None = None,
    dtype: str = "fp32",
    tile: int | None = None,
    tile_overlap: int = DEFAULT_TILE_OVERLAP,
) -> int:
    """Run ``sradm evaluate``: print the table, write the JSON. Returns 0, or 1 if some image failed.

    The sampling options and their defaults are ``sradm upscale``'s (:func:`~.runtime.sampling_settings`).

    Raises:
        UsageError: bad options, data source or model (the caller prints it; exit status 2).
    """
    methods = parse_methods(methods) if isinstance(methods, str) else parse_methods(",".join(methods))
    _check_source_options(hr_dir, lr_dir, dataset, scale, center_crop)
    needs_model = any(m != "bicubic" for m in methods)
    model = model if model is not None else DEFAULT_MODEL

    settings = sampling_settings(scheduler, steps, strength, lr_consistency, samples, seed, tile, tile_overlap)

    share = ProcessShare()  # under `accelerate launch`, this process's part of the images
    torch_device = share.device(device, resolve_device)
    if needs_model and dtype_problem(dtype, torch_device.type) is not None:
        raise UsageError(dtype_problem(dtype, torch_device.type))
    pipe, num_steps = _load_model(model, torch_device, dtype, scale, settings, share) if needs_model else (None, None)
    reporter = None if sys.stderr.isatty() or "sradm" not in methods else StepReporter(command="sradm evaluate")

    if hr_dir is not None:
        items, total, source = _folder_items(hr_dir, lr_dir, scale, limit, center_crop, share)
    else:
        items, total, source = _dataset_items(dataset, split, image_column, cache_dir, scale, limit, center_crop, share)

    lpips_model = _load_lpips_quietly(torch_device)
    evaluator = Evaluator(
        scale=scale, methods=methods, pipe=pipe, steps=num_steps or 0, samples=samples, seed=seed,
        lpips_model=lpips_model, lr_consistency=settings.lr_consistency, strength=settings.strength, tile=tile,
        tile_overlap=tile_overlap, step_callback=reporter,
    )
    per_image, failed = evaluate_items(items, evaluator, progress=share.is_main, total=total, reporter=reporter)
    # Contiguous shares gathered in process order: the same per-image order (and means) as one process.
    per_image, failed = _merge(share.gather(per_image)), _merge(share.gather(failed))
    share.close()
    config = {
        "model": model if needs_model else None,
        **_sampling_config(settings, pipe if "sradm" in methods else None, dtype, tile, tile_overlap),
        "samples": samples if "sradm" in methods else None,
        "seed": seed,
        "methods": methods,
        "lpips": lpips_model is not None,
        "center_crop": center_crop,
        **source,
    }
    result = summarize(per_image, failed, methods, scale, config)
    if not share.is_main:
        return 1 if failed else 0
    print(format_table(result))
    if json_path is not None:
        try:
            write_json_atomic(result, json_path)
        except OSError as error:
            raise UsageError(f"cannot write --json {json_path!r}: {one_line(error)}") from error
    return 1 if failed else 0
