#!/usr/bin/env python
"""Build the demo super-resolution data set from real photographs that are available offline.

The result is an ``imagefolder`` directory that ``datasets.load_dataset("imagefolder", data_dir=...)`` reads as two
splits, ``train`` and ``test`` (column ``image``)::

    data/demo/
      train/<source>_<name>.png     photographs used for training
      test/<source>_<name>.png      held-out photographs training never sees (HELD_OUT below)
      MANIFEST.tsv                  split, file, size, sha256, origin of every image (+ package versions)

Sources (all public, all installable without the Hugging Face Hub; :mod:`training.demo_sources` fetches them):

* Debian packages, fetched with ``apt-get download`` and unpacked with ``dpkg -x`` (no installation, no root needed
  once ``apt-get update`` has been run):
  ``lomiri-wallpapers-16.04`` and ``lomiri-wallpapers-20.04`` (photographic wallpapers, 1.3K-6K, in
  ``usr/share/backgrounds/``) and ``opencv-doc`` (the classic test images in ``usr/share/doc/opencv-doc/examples/``:
  baboon, fruits, building, the Set5 butterfly, street scenes, ...).
* ``scikit-image`` (``skimage.data``): astronaut, chelsea, coffee, rocket, hubble_deep_field, immunohistochemistry,
  retina, stereo_motorcycle (left view).
* ``scikit-learn`` (``sklearn.datasets.load_sample_image``): china.jpg, flower.jpg.
* ``matplotlib`` (``matplotlib.cbook.get_sample_data``): grace_hopper.jpg.

A source that is not available (package not installed, no ``apt-get``, package not in the apt lists) is skipped
with a message; the summary lists how many images each source gave, so a smaller set never goes unnoticed.

Selection (in this order): the image must decode; it is converted to RGB (alpha composited on white); images whose
short side is below ``MIN_SHORT_SIDE`` (256) are dropped; greyscale images (mean |pixel - pixel's channel mean| below
``COLOUR_THRESHOLD``) are dropped; names in ``EXCLUDE`` / matching ``EXCLUDE_PATTERNS`` (drawings, logos, documents,
synthetic test patterns, deliberately blurred images, the second view of stereo / optical-flow / stitching pairs) are
dropped with the reason printed; exact pixel duplicates are dropped (first by name order kept).

Resizing: an image whose longest side exceeds ``--max_side`` (default 1024) is downscaled with PIL's LANCZOS filter
so that its longest side is ``max_side`` (aspect ratio kept, sizes rounded). This keeps the set small (tens of MB),
removes JPEG artefacts of the large wallpapers, and keeps random 4x crops meaningful (a 160 px crop of a 6K photo is
a featureless patch). Images are stored as PNG (lossless) under deterministic names ``<source>_<name>.png``.

Split: a fixed, documented list ``HELD_OUT`` (a spread of faces, fur/texture, architecture, nature, food and the
Set5 butterfly) goes to ``test/``; everything else to ``train/`` (see :func:`split_for`).

Re-running gives the identical set: the script prints a summary and the sha256 of the file list (``files``: over the
sorted ``split/name sha256(file bytes)`` lines; ``pixels``: the same over decoded pixels, which stays equal across
PNG encoder versions). Usage::

    python training/prepare_demo_data.py --output_dir data/demo
    python training/prepare_demo_data.py --output_dir /work/data/demo --keep_downloads
"""
from __future__ import annotations

import argparse
import fnmatch
import hashlib
import io
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

if __package__ in (None, ""):  # run as a script (`python training/prepare_demo_data.py`): the package's parent
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Candidate, sanitize and output_name are this module's names since 0.1 (tests use P.output_name).
from training.demo_sources import (  # noqa: E402
    Candidate, debian_candidates, output_name, python_package_candidates, sanitize,
)

__all__ = ["Candidate", "sanitize", "output_name", "split_for", "exclusion_reason", "to_rgb", "colourfulness",
           "quality_reason", "target_size", "limit_size", "list_digest", "pixel_hash", "build", "main"]

MIN_SHORT_SIDE = 256
COLOUR_THRESHOLD = 1.5  # mean |pixel - mean over its 3 channels|, 0..255 scale; greyscale stored as RGB gives ~0
DEFAULT_MAX_SIDE = 1024

# Held-out photographs (the ``test`` split), chosen as a spread of content. A name whose source is unavailable is
# simply absent from the set.
HELD_OUT: Tuple[str, ...] = (
    "skimage_astronaut",  # face / portrait
    "matplotlib_grace_hopper",  # face / portrait (if matplotlib is installed)
    "skimage_chelsea",  # animal fur
    "opencv_baboon",  # fur and fine texture (the Set14 mandrill)
    "opencv_dnn_superres_butterfly",  # the Set5 butterfly, 256x256
    "opencv_building",  # architecture, straight edges
    "opencv_fruits",  # food, saturated colour
    "opencv_text_scenetext06",  # street, shop front with lettering
    "lomiri_picosdeeuropa_by_Aitzol_Berasategi",  # mountain landscape
    "lomiri_seeding_by_Clements_Engelhardt",  # nature close-up (dandelions)
)

# Colour images that are not natural photographs, or near-duplicates of one that is kept.
EXCLUDE: Dict[str, str] = {
    "lomiri_Fossa_by_Jasper_Roks": "digital artwork",
    "lomiri_Painting-Colors_by__herobrine7gamer": "abstract graphic",
    "lomiri_umang_by_Abhishek_Mudgal": "abstract gradient",
    "lomiri_Infinite-Sea_by_Aury88": "digital composite (synthetic gradient sky)",
    "opencv_WindowsLogo": "logo",
    "opencv_opencv-logo": "logo",
    "opencv_opencv-logo-white": "logo",
    "opencv_ml": "drawing",
    "opencv_starry_night": "painting",
    "opencv_fuzzy_input": "drawing",
    "opencv_cards": "rendered graphic",
    "opencv_detect_blob": "synthetic shapes",
    "opencv_pca_test1": "test pattern (cut-out shapes on a light box)",
    "opencv_chessboard": "calibration board",
    "opencv_imageTextN": "document",
    "opencv_imageTextR": "document",
    "opencv_sudoku": "document",
    "opencv_ximgproc_stanford": "map screenshot",
    "opencv_ximgproc_polygonstanfordoutput": "map screenshot",
    "opencv_licenseplate_motion": "deliberately motion-blurred",
    "opencv_text_defocus": "deliberately defocused",
    "opencv_text_motion": "deliberately motion-blurred",
    "opencv_ela_modified": "tampered copy of opencv_ela_original",
    "opencv_aero3": "overlapping view of opencv_aero1 (stitching pair)",
    "opencv_aloeR": "stereo pair of opencv_aloeL",
    "opencv_right": "stereo pair of opencv_left",
    "opencv_graf3": "same wall as opencv_graf1 (viewpoint pair)",
    "opencv_leuvenB": "same scene as opencv_leuvenA (exposure pair)",
    "opencv_rubberwhale2": "optical-flow pair of opencv_rubberwhale1",
    "opencv_basketball2": "optical-flow pair of opencv_basketball1",
}
EXCLUDE_PATTERNS: Dict[str, str] = {
    "opencv_pic[0-9]*": "synthetic shapes",
    "opencv_text_scenetext_*": "crop / mask of an opencv_text_scenetext photograph",
    "opencv_shape_*": "binary shape",
    "opencv_alphamat_trimaps_*": "mask",
    "opencv_alphamat_output_mattes_*": "mask",
    "opencv_fuzzy_mask*": "mask",
    "opencv_ximgproc_peilin_*": "binary shape",
}


# ----------------------------------------------------------------------------------------------------------------
# Pure helpers (tested in tests/test_data.py)
# ----------------------------------------------------------------------------------------------------------------


def split_for(name: str, held_out: Sequence[str] = HELD_OUT) -> str:
    """``"test"`` if ``name`` (an output stem such as ``"opencv_baboon"``) is held out, else ``"train"``."""
    return "test" if name in set(held_out) else "train"


def exclusion_reason(name: str) -> Optional[str]:
    """Why ``name`` is excluded by the curated lists (drawing, logo, near-duplicate, ...), or ``None``."""
    if name in EXCLUDE:
        return EXCLUDE[name]
    for pattern, reason in EXCLUDE_PATTERNS.items():
        if fnmatch.fnmatchcase(name, pattern):
            return reason
    return None


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL image to RGB; transparency is composited on white."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def colourfulness(rgb: np.ndarray) -> float:
    """Mean absolute deviation of each pixel from its own channel mean, on the 0..255 scale (0 for greyscale).

    Args:
        rgb: uint8 array (H, W, 3).
    """
    a = rgb.astype(np.float32)
    return float(np.abs(a - a.mean(axis=2, keepdims=True)).mean())


def quality_reason(rgb: np.ndarray, min_short_side: int = MIN_SHORT_SIDE, threshold: float = COLOUR_THRESHOLD):
    """Why an RGB uint8 image (H, W, 3) is rejected (too small / greyscale), or ``None`` if it is kept."""
    h, w = rgb.shape[:2]
    if min(h, w) < min_short_side:
        return f"too small ({w}x{h}, short side < {min_short_side})"
    c = colourfulness(rgb)
    if c < threshold:
        return f"greyscale (colourfulness {c:.2f} < {threshold})"
    return None


def target_size(width: int, height: int, max_side: int) -> Tuple[int, int]:
    """(width, height) with the longest side at most ``max_side`` (aspect kept, rounded); unchanged if it fits."""
    if max_side <= 0:
        raise ValueError(f"max_side={max_side} must be a positive number of pixels, e.g. 1024.")
    longest = max(width, height)
    if longest <= max_side:
        return width, height
    factor = max_side / longest
    return max(1, round(width * factor)), max(1, round(height * factor))


def limit_size(image: Image.Image, max_side: int) -> Image.Image:
    """Downscale ``image`` with LANCZOS so that its longest side is at most ``max_side``."""
    size = target_size(image.width, image.height, max_side)
    if size == image.size:
        return image
    return image.resize(size, resample=Image.Resampling.LANCZOS)


def list_digest(entries: Iterable[Tuple[str, str]]) -> str:
    """sha256 over the sorted ``"<relpath> <hash>\\n"`` lines of ``entries`` (relpath, hash)."""
    h = hashlib.sha256()
    for rel, digest in sorted(entries):
        h.update(f"{rel} {digest}\n".encode())
    return h.hexdigest()


def pixel_hash(rgb: np.ndarray) -> str:
    """sha256 of an image's shape and pixels (independent of the file encoding)."""
    h = hashlib.sha256(str(rgb.shape).encode())
    h.update(np.ascontiguousarray(rgb).tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------------------------
# Build
# ----------------------------------------------------------------------------------------------------------------

Row = Tuple[str, str, str, str, str, str]  # split, file, size, file sha256, pixel sha256, origin


def build(output_dir: Path, max_side: int = DEFAULT_MAX_SIDE, download_dir: Optional[Path] = None,
          keep_downloads: bool = False) -> Dict[str, object]:
    """Build the data set into ``output_dir`` (replacing a previous build there); return a summary dict."""
    output_dir = Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()) and not (output_dir / "MANIFEST.tsv").exists():
        raise ValueError(f"--output_dir {output_dir} exists, is not empty and was not made by this script "
                         "(no MANIFEST.tsv): choose an empty or new directory.")
    temp_downloads = None
    if download_dir is None:
        if keep_downloads:
            download_dir = output_dir.parent / f"{output_dir.name}_downloads"
        else:
            temp_downloads = tempfile.mkdtemp(prefix="sradm_demo_debs_")
            download_dir = Path(temp_downloads)
    download_dir = Path(download_dir)
    download_dir.mkdir(parents=True, exist_ok=True)

    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}_staging_", dir=output_dir.parent))
    versions: Dict[str, str] = {}
    try:
        print(f"collecting images (downloads in {download_dir})")
        candidates = list(debian_candidates(download_dir, versions)) + list(python_package_candidates(versions))
        rows, skipped, per_source = _store_selected(candidates, staging, max_side)
        if not rows:
            raise RuntimeError("no images collected: install scikit-image or run on Debian with `apt-get update` done")
        files_digest, pixels_digest = _write_manifest(staging, rows, versions, max_side)
        # Replace the previous build only once the new one is complete.
        if output_dir.exists():
            shutil.rmtree(output_dir)
        staging.rename(output_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
        if temp_downloads is not None:
            shutil.rmtree(temp_downloads, ignore_errors=True)

    counts = {s: sum(1 for r in rows if r[0] == s) for s in ("train", "test")}
    total_bytes = sum((output_dir / r[1]).stat().st_size for r in rows)
    return dict(output_dir=str(output_dir), counts=counts, per_source=per_source, skipped=skipped,
                test=[r[1] for r in rows if r[0] == "test"], total_bytes=total_bytes, versions=versions,
                files_sha256=files_digest, pixels_sha256=pixels_digest,
                downloads=None if temp_downloads else str(download_dir))


def _store_selected(candidates: List[Candidate], staging: Path, max_side: int):
    """Select the candidates (curated lists, decoding, size and colour, pixel duplicates; in name order), store the
    kept ones as ``staging/<split>/<name>.png``; return (manifest rows, [(name, reason skipped)], {source: count})."""
    names = [c.name for c in candidates]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise RuntimeError(f"two sources produce the same output names {sorted(duplicates)}: fix output_name")
    rows: List[Row] = []
    skipped: List[Tuple[str, str]] = []
    seen: Dict[str, str] = {}
    per_source: Dict[str, int] = {}
    for cand in sorted(candidates, key=lambda c: c.name):
        image, reason = _selected_image(cand, seen)
        if reason is not None:
            skipped.append((cand.name, reason))
            continue
        image = limit_size(image, max_side)
        split = split_for(cand.name)
        (staging / split).mkdir(exist_ok=True)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", optimize=False, compress_level=6)
        data = buffer.getvalue()
        rel = f"{split}/{cand.name}.png"
        (staging / rel).write_bytes(data)
        rows.append((split, rel, f"{image.width}x{image.height}", hashlib.sha256(data).hexdigest(),
                     pixel_hash(np.asarray(image)), cand.origin))
        source = cand.name.split("_", 1)[0]
        per_source[source] = per_source.get(source, 0) + 1
    return rows, skipped, per_source


def _selected_image(cand: Candidate, seen: Dict[str, str]) -> Tuple[Optional[Image.Image], Optional[str]]:
    """(the candidate's RGB image, None) if it is kept, else (None, why not); records kept pixels in ``seen``."""
    reason = exclusion_reason(cand.name)
    if reason is not None:
        return None, reason
    try:
        image = to_rgb(cand.load())
    except Exception as exc:  # unreadable file: report and go on
        return None, f"unreadable ({type(exc).__name__}: {exc})"
    rgb = np.asarray(image)
    reason = quality_reason(rgb)
    if reason is not None:
        return None, reason
    original = pixel_hash(rgb)
    if original in seen:
        return None, f"duplicate of {seen[original]}"
    seen[original] = cand.name
    return image, None


def _write_manifest(staging: Path, rows: List[Row], versions: Dict[str, str], max_side: int) -> Tuple[str, str]:
    """Write ``staging/MANIFEST.tsv``; return the (files, pixels) digests it records."""
    files_digest = list_digest((r[1], r[3]) for r in rows)
    pixels_digest = list_digest((r[1], r[4]) for r in rows)
    with open(staging / "MANIFEST.tsv", "w") as f:
        f.write("# sradm-diffusers demo set, made by training/prepare_demo_data.py\n")
        f.write(f"# max_side={max_side}\n")
        for k in sorted(versions):
            f.write(f"# source {k}={versions[k]}\n")
        f.write(f"# sha256 files={files_digest}\n# sha256 pixels={pixels_digest}\n")
        f.write("split\tfile\tsize\tsha256\tpixels_sha256\torigin\n")
        for r in rows:
            f.write("\t".join(r) + "\n")
    return files_digest, pixels_digest


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default="data/demo", help="where train/, test/ and MANIFEST.tsv are written")
    parser.add_argument("--max_side", type=int, default=DEFAULT_MAX_SIDE,
                        help="downscale (LANCZOS) so that the longest side is at most this many pixels")
    parser.add_argument("--keep_downloads", action="store_true",
                        help="keep the downloaded .deb files and their unpacked trees (next to --output_dir as "
                             "<output_dir>_downloads unless --download_dir is given); a re-run reuses them")
    parser.add_argument("--download_dir", default=None, help="where .deb files are downloaded / reused from")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.max_side <= 0:
        raise SystemExit(f"--max_side={args.max_side} must be a positive number of pixels, e.g. 1024")
    summary = build(Path(args.output_dir), args.max_side, Path(args.download_dir) if args.download_dir else None,
                    args.keep_downloads)
    print("\nskipped:")
    for name, reason in summary["skipped"]:
        print(f"  {name}: {reason}")
    print(f"\nsources: {', '.join(f'{k}={v}' for k, v in sorted(summary['versions'].items()))}")
    print(f"images per source: {summary['per_source']}")
    print(f"held out (test): {', '.join(Path(p).stem for p in summary['test'])}")
    print(f"wrote {summary['counts']['train']} train + {summary['counts']['test']} test images, "
          f"{summary['total_bytes'] / 2**20:.1f} MiB, to {summary['output_dir']}")
    if summary["downloads"]:
        print(f"downloads kept in {summary['downloads']}")
    print(f"sha256 files:  {summary['files_sha256']}")
    print(f"sha256 pixels: {summary['pixels_sha256']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
