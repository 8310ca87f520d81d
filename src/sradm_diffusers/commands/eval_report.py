"""What ``sradm evaluate`` reports: the means over images, the table, and the JSON (infinity written as ``"inf"``,
``null`` only for "not computed")."""

from __future__ import annotations

import json
import math
import os

from .atomic import replacing


JSON_INFINITY = "inf"
"""What ``--json`` writes for an infinite PSNR (an exact match); ``null`` is reserved for "not computed"."""


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
