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

import io
import itertools
import json
import math
import os
import sys
import warnings
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from .. import upscale as _upscale
from ..atomic import replacing
from ..defaults import AUTO_TILE_PIXELS, DEFAULT_TILE_OVERLAP, LR_CONSISTENCY, SamplingSettings, choose_tiling
from ..distributed import ProcessShare
from ..upscale import (
    ImageError,
    StepReporter,
    UsageError,
    folder_images,
    load_image,
    load_pipeline,
    one_line,
    resolve_device,
    sample_generators,
)

JSON_INFINITY = "inf"
"""What ``--json`` writes for an infinite PSNR (an exact match); ``null`` is reserved for "not computed"."""

METHODS = ("bicubic", "rrdb", "sradm")
METRICS = ("psnr_rgb", "ssim_rgb", "psnr_y", "ssim_y", "lr_psnr", "lpips")
METHOD_TITLES = {"bicubic": "Bicubic", "rrdb": "RRDB", "sradm": "SRADM", "sradm_mean": "SRADM mean of K"}
TABLE_COLUMNS = (  # (title, metric key, format)
    ("PSNR", "psnr_rgb", "{:.2f}"),
    ("SSIM", "ssim_rgb", "{:.4f}"),
    ("LPIPS", "lpips", "{:.4f}"),
    ("LR-PSNR", "lr_psnr", "{:.2f}"),
    ("PSNR-Y", "psnr_y", "{:.2f}"),
    ("SSIM-Y", "ssim_y", "{:.4f}"),
)


@dataclass
class EvalImage:
    """One evaluation item: uint8 HR (1,3,H,W) and LR (1,3,H/s,W/s), or the reason it failed."""

    name: str
    hr: torch.Tensor | None = None
    lr: torch.Tensor | None = None
    error: str | None = None
    note: str | None = None
    """Said in one line but not an error (e.g. an image smaller than ``--center-crop``, evaluated whole)."""


# ----------------------------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------------------------


def to_uint8_rgb(image) -> torch.Tensor:
    """PIL image of any mode -> uint8 (1, 3, H, W), converted as the pipeline converts its input."""
    from ..image_processing import preprocess
    from .quality import to_uint8

    try:
        return to_uint8(preprocess(image))
    except (TypeError, ValueError) as error:
        raise ImageError(one_line(error)) from error


def crop_to_multiple(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """Crop (..., H, W) at the bottom/right to multiples of ``scale``. Raises ImageError if nothing is left."""
    h, w = hr.shape[-2] // scale * scale, hr.shape[-1] // scale * scale
    if h == 0 or w == 0:
        raise ImageError(f"image {hr.shape[-1]}x{hr.shape[-2]} is smaller than the scale {scale}")
    return hr[..., :h, :w]


def center_crop(hr: torch.Tensor, size: int, scale: int) -> torch.Tensor:
    """The central ``size`` x ``size`` window of (..., H, W) (smaller sides are kept whole); ``size`` must be a
    multiple of ``scale`` and the result keeps H, W multiples of ``scale``."""
    h, w = min(size, hr.shape[-2]) // scale * scale, min(size, hr.shape[-1]) // scale * scale
    top, left = (hr.shape[-2] - h) // 2, (hr.shape[-1] - w) // 2
    return hr[..., top : top + h, left : left + w]


def make_lr(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """uint8 HR (B,3,H,W), H and W multiples of ``scale`` -> uint8 LR ``imresize(hr, 1/scale)`` computed in float64,
    rounded half up and clamped (MATLAB's conversion to uint8; the rounding ``metrics.lr_psnr`` applies)."""
    from ..imresize import imresize

    return torch.floor(imresize(hr.to(torch.float64), 1.0 / scale).clamp(0, 255) + 0.5).to(torch.uint8)


def _pair(name: str, hr_source, scale: int, lr_source=None, crop: int | None = None) -> EvalImage:
    """Load (and crop / make the LR of) one item; any problem becomes ``EvalImage.error``."""
    try:
        hr = crop_to_multiple(to_uint8_rgb(load_image(hr_source)), scale)
        note = None
        if crop is not None:
            full = hr.shape[-1], hr.shape[-2]
            hr = center_crop(hr, crop, scale)
            if hr.shape[-2:] != (crop, crop):
                note = (f"{full[0]}x{full[1]} is smaller than --center-crop {crop}; evaluated on its central "
                        f"{hr.shape[-1]}x{hr.shape[-2]}")
        if lr_source is None:
            lr = make_lr(hr, scale)
        else:
            lr = to_uint8_rgb(load_image(lr_source))
            want = (lr.shape[-2] * scale, lr.shape[-1] * scale)
            if tuple(hr.shape[-2:]) != want:
                raise ImageError(
                    f"HR is {hr.shape[-1]}x{hr.shape[-2]} (after cropping to a multiple of {scale}) but the LR "
                    f"{lr.shape[-1]}x{lr.shape[-2]} needs an HR of {want[1]}x{want[0]} at scale {scale}"
                )
        return EvalImage(name, hr=hr, lr=lr, note=note)
    except ImageError as error:
        return EvalImage(name, error=str(error))


def _lr_file(lr_dir: str, hr_name: str, scale: int) -> str:
    """The LR file of ``hr_name``: the same name, else DIV2K's ``<stem>x<s><ext>``, else a same-stem image."""
    stem, ext = os.path.splitext(hr_name)
    for candidate in (hr_name, f"{stem}x{scale}{ext}"):
        if os.path.isfile(os.path.join(lr_dir, candidate)):
            return os.path.join(lr_dir, candidate)
    for path in folder_images(lr_dir):
        if os.path.splitext(os.path.basename(path))[0] in (stem, f"{stem}x{scale}"):
            return path
    raise ImageError(f"no LR image {hr_name} (or {stem}x{scale}{ext}) in --lr-dir {lr_dir}")


def iter_folder(
    hr_dir: str, scale: int, lr_dir: str | None = None, limit: int | None = None, crop: int | None = None,
    indices: range | None = None,
) -> Iterator[EvalImage]:
    """Items of an HR folder (image files sorted by name), LR from ``lr_dir`` or made with :func:`make_lr`
    (optionally from the central ``crop`` x ``crop`` window of each HR image); only those at ``indices`` if given."""
    for index, path in enumerate(folder_images(hr_dir)[:limit]):
        if indices is not None and index not in indices:
            continue
        name = os.path.basename(path)
        if lr_dir is None:
            yield _pair(name, path, scale, crop=crop)
            continue
        try:
            lr_path = _lr_file(lr_dir, name, scale)
        except ImageError as error:
            yield EvalImage(name, error=str(error))
            continue
        yield _pair(name, path, scale, lr_path)


def load_eval_dataset(name: str, split: str | None, image_column: str, cache_dir: str | None = None):
    """One split of a ``datasets`` data set with ``image_column`` left undecoded (so a corrupt image fails alone).

    ``name``: a local folder (``imagefolder``, streamed from disk), a local ``.parquet`` file (streamed) or a Hub
    id (loaded and cached). ``split`` None picks "test", else "validation", else the only split.

    Returns:
        (iterable dataset, split name).
    Raises:
        UsageError: missing data set, unknown split or column.
    """
    import datasets

    local = os.path.exists(name)
    if local and os.path.isdir(name):
        builder, kwargs = "imagefolder", dict(data_dir=name, drop_labels=True)
    elif local and name.endswith(".parquet"):
        builder, kwargs = "parquet", dict(data_files={"train": name})
    elif local:
        raise UsageError(f"--dataset {name!r} is a file but not .parquet; pass a folder of images or a Hub id.")
    else:
        builder, kwargs = name, {}
    try:
        if split is None:
            names = datasets.get_dataset_split_names(builder, **kwargs)
            split = next((s for s in ("test", "validation") if s in names), names[0] if len(names) == 1 else None)
            if split is None:
                raise UsageError(f"--dataset {name!r} has the splits {names}; choose one with --split.")
        data = datasets.load_dataset(builder, split=split, streaming=local, cache_dir=cache_dir, **kwargs)
    except UsageError:
        raise
    except Exception as error:  # noqa: BLE001 - datasets raises many types; all mean "cannot load it"
        raise UsageError(f"cannot load --dataset {name!r} (split {split!r}): {one_line(error)}") from error
    columns = list(data.features) if data.features is not None else None
    if columns is not None and image_column not in columns:
        raise UsageError(f"--image-column {image_column!r} is not a column of {name!r}; its columns: {columns}.")
    if columns is not None and isinstance(data.features[image_column], datasets.Image):
        data = data.cast_column(image_column, datasets.Image(decode=False))
    return data, split


def _dataset_source(value):
    """A dataset cell -> (something :func:`load_image` opens, its file name or None)."""
    import PIL.Image

    if isinstance(value, dict):
        path = value.get("path")
        if value.get("bytes") is not None:
            return io.BytesIO(value["bytes"]), os.path.basename(path) if path else None
        if path:
            return path, os.path.basename(path)
    if isinstance(value, (bytes, bytearray)):
        return io.BytesIO(value), None
    if isinstance(value, str):
        return value, os.path.basename(value)
    if isinstance(value, PIL.Image.Image):
        buffer = io.BytesIO()
        value.save(buffer, format="PNG")
        buffer.seek(0)
        return buffer, None
    if isinstance(value, np.ndarray):
        return _dataset_source(PIL.Image.fromarray(value))
    raise ImageError(f"unsupported image value of type {type(value).__name__}")


def iter_dataset(
    data, split: str, image_column: str, scale: int, limit: int | None = None, crop: int | None = None,
    indices: range | None = None,
) -> Iterator[EvalImage]:
    """Items of a loaded data set (see :func:`load_eval_dataset`), named by file name or ``<split>[<index>]``;
    only those at ``indices`` if given (names still count every row, so they match an unsplit run)."""
    seen: set[str] = set()
    for index, row in enumerate(data):
        if limit is not None and index >= limit:
            break
        fallback = f"{split}[{index}]"
        try:
            source, name = _dataset_source(row[image_column])
        except ImageError as error:
            if indices is None or index in indices:
                yield EvalImage(fallback, error=str(error))
            continue
        name = name or fallback
        if name in seen:
            name = f"{name} ({fallback})"
        seen.add(name)
        if indices is None or index in indices:
            yield _pair(name, source, scale, crop=crop)


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
        from .quality import to_uint8

        lr_hwc = lr[0].permute(1, 2, 0).numpy()
        if method == "bicubic":
            return to_uint8(imresize(preprocess(lr_hwc), self.scale).clamp(-1.0, 1.0))
        pipe = self.pipe
        if method == "rrdb":
            encoder = pipe.lr_encoder
            lr_in = preprocess(lr_hwc).to(device=encoder.device, dtype=encoder.dtype)
            with torch.no_grad():
                return to_uint8(encoder.upscale(lr_in).float().clamp(-1.0, 1.0))
        tiling = choose_tiling(lr_hwc.shape[1], lr_hwc.shape[0], self.tile, self.tile_overlap)
        if tiling is not None and self.tile is None:
            from tqdm.auto import tqdm

            tqdm.write(f"sradm evaluate: {lr_hwc.shape[1]}x{lr_hwc.shape[0]} LR is over {AUTO_TILE_PIXELS} pixels: "
                       f"sampling in tiles of {tiling[0]} px overlapping by {tiling[1]}, as sradm upscale does "
                       "(--tile N to choose, --tile 0 to turn off)", file=sys.stderr)
        if tiling is None:
            pipe.disable_tiling()
        else:
            pipe.enable_tiling(*tiling)
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
        from .quality import compute_metrics, diversity_std

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


def mean_of(rows: list[dict[str, float | None]], key: str) -> float | None:
    """Mean of ``row[key]`` over rows; None if there are no rows or any value is None."""
    values = [row.get(key) for row in rows]
    if not values or any(v is None for v in values):
        return None
    return float(sum(values) / len(values))


def summarize(per_image: dict, failed: dict, methods: list[str], scale: int, config: dict) -> dict:
    """The result dict (the JSON): means per method over the images in ``per_image``."""
    summary = {}
    if any("sradm_mean" in scores for scores in per_image.values()):
        methods = [*methods, "sradm_mean"]
    for method in methods:
        rows = [scores[method] for scores in per_image.values()]
        keys = list(METRICS) + (["diversity_std"] if any("diversity_std" in r for r in rows) else [])
        summary[method] = {key: mean_of(rows, key) for key in keys}
    return {
        "scale": scale,
        "n_images": len(per_image),
        "n_failed": len(failed),
        "methods": summary,
        "per_image": per_image,
        "failed": failed,
        "config": config,
    }


def _json_safe(value):
    """JSON has no infinity: +inf becomes :data:`JSON_INFINITY`, NaN and -inf None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return JSON_INFINITY if value == math.inf else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def write_json_atomic(data: dict, path: str) -> None:
    """Write ``data`` as JSON via ``.<name>.tmp-<pid>`` in the same folder and :func:`os.replace`."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with replacing(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        json.dump(_json_safe(data), handle, indent=2, allow_nan=False)
        handle.write("\n")


def _fmt(value: float | None, pattern: str) -> str:
    if value is None:
        return "n/a"
    if not math.isfinite(value):
        return "inf"
    return pattern.format(value)


def format_table(result: dict) -> str:
    """The paper-style table of ``result`` (from :func:`summarize`), with a footer on images and failures."""
    header = ["Method"] + [title for title, _, _ in TABLE_COLUMNS]
    rows = [
        [METHOD_TITLES[m]] + [_fmt(scores.get(key), fmt) for _, key, fmt in TABLE_COLUMNS]
        for m, scores in result["methods"].items()
    ]
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]

    def line(cells):
        return " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    out = [line(header), "-+-".join("-" * w for w in widths)] + [line(r) for r in rows]
    scale = result["scale"]
    out.append(
        f"x{scale}, {result['n_images']} image(s) (HR cropped at the bottom/right to multiples of {scale}), "
        f"{result['n_failed']} failed."
    )
    config = result["config"]
    sradm = result["methods"].get("sradm")
    if sradm is not None:
        text = f"SRADM: {config['sampling']}, {config['samples']} sample(s)/image, seed {config['seed']}"
        if sradm.get("diversity_std") is not None:
            text += f", diversity std {sradm['diversity_std']:.3f} (0..255)"
        out.append(text + ".")
    for name, reason in result["failed"].items():
        out.append(f"failed: {name}: {reason}")
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------------------------------------------


def _load_lpips_quietly(device) -> object:
    """:func:`load_lpips`; its one-time warning is printed as one ``warning:`` line."""
    from .quality import load_lpips

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


def sampling_settings(
    scheduler: str | None, steps: int | None, strength: float | None, lr_consistency: bool, samples: int,
    seed: int | None, tile: int | None, tile_overlap: int,
) -> SamplingSettings:
    """The sradm sampling of ``sradm evaluate``, resolved by ``sradm upscale``'s rule
    (:func:`~sradm_diffusers.defaults.resolve_sampling`); bad values are a :class:`UsageError`."""
    from ..defaults import resolve_sampling
    from ..upscale import check_sampling_options

    check_sampling_options(samples, seed, tile, tile_overlap)
    try:
        return resolve_sampling(scheduler, steps, strength, lr_consistency)
    except ValueError as error:
        option = "--strength" if "strength" in str(error) else "--steps" if "steps" in str(error) else "--scheduler"
        raise UsageError(f"{option}: {one_line(error)}") from error


def _prepare_sampler(pipe, settings: SamplingSettings) -> int:
    """Put the settings' scheduler into ``pipe`` (as ``sradm upscale`` does) and return the checked step count."""
    from ..sampling.rrdb_start import check_strength

    _upscale.set_scheduler(pipe, settings.scheduler)
    num_steps = _upscale.resolve_steps(pipe, settings.steps)
    try:
        check_strength(settings.strength, num_steps)
    except (TypeError, ValueError) as error:
        raise UsageError(f"--strength: {one_line(error)}") from error
    return num_steps


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

    The sampling options and their defaults are ``sradm upscale``'s (:func:`sampling_settings`).

    Raises:
        UsageError: bad options, data source or model (the caller prints it; exit status 2).
    """
    methods = parse_methods(methods) if isinstance(methods, str) else parse_methods(",".join(methods))
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
    needs_model = any(m != "bicubic" for m in methods)
    model = model if model is not None else _upscale.DEFAULT_MODEL

    settings = sampling_settings(scheduler, steps, strength, lr_consistency, samples, seed, tile, tile_overlap)

    share = ProcessShare()  # under `accelerate launch`, this process's part of the images
    torch_device = share.device(device, resolve_device)
    if needs_model and _upscale.dtype_problem(dtype, torch_device.type) is not None:
        raise UsageError(_upscale.dtype_problem(dtype, torch_device.type))
    pipe, num_steps = None, None
    if needs_model:
        pipe = load_pipeline(model, torch_device, dtype)
        factor = int(pipe.config.upscale_factor)
        if factor != scale:
            raise UsageError(
                f"--scale {scale} does not match the model's upscale_factor {factor} ({model}); "
                f"pass --scale {factor} or a x{scale} model."
            )
        num_steps = _prepare_sampler(pipe, settings)
        # on a terminal the steps bar of each image (as upscale shows it); otherwise the StepReporter's lines
        pipe.set_progress_bar_config(disable=None if share.is_main else True, leave=False, desc="steps")
    reporter = None if sys.stderr.isatty() or "sradm" not in methods else StepReporter(command="sradm evaluate")

    if hr_dir is not None:
        if not folder_images(hr_dir):
            raise UsageError(f"--hr-dir {hr_dir!r} has no image files.")
        mine = share.indices(len(folder_images(hr_dir)[:limit])) if share.num_processes > 1 else None
        total = len(folder_images(hr_dir)[:limit]) if mine is None else len(mine)
        items = iter_folder(hr_dir, scale, lr_dir=lr_dir, limit=limit, crop=center_crop, indices=mine)
        source = {"hr_dir": hr_dir, "lr_dir": lr_dir}
    else:
        data, split = load_eval_dataset(dataset, split, image_column, cache_dir=cache_dir)
        mine = share.indices(_row_count(data, limit)) if share.num_processes > 1 else None
        total = None if mine is None else len(mine)
        items = iter_dataset(data, split, image_column, scale, limit=limit, crop=center_crop, indices=mine)
        source = {"dataset": dataset, "split": split, "image_column": image_column}

    lpips_model = _load_lpips_quietly(torch_device)
    evaluator = Evaluator(
        scale=scale, methods=methods, pipe=pipe, steps=num_steps or 0, samples=samples, seed=seed,
        lpips_model=lpips_model, lr_consistency=settings.lr_consistency, strength=settings.strength, tile=tile,
        tile_overlap=tile_overlap, step_callback=reporter,
    )
    per_image, failed = evaluate_items(items, evaluator, progress=share.is_main, total=total, reporter=reporter)
    # Contiguous shares gathered in process order: the same per-image order (and means) as one process.
    per_image, failed = _merge(share.gather(per_image)), _merge(share.gather(failed))
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
