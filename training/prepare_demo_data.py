#!/usr/bin/env python
"""Build the demo super-resolution data set from real photographs that are available offline.

The result is an ``imagefolder`` directory that ``datasets.load_dataset("imagefolder", data_dir=...)`` reads as two
splits, ``train`` and ``test`` (column ``image``)::

    data/demo/
      train/<source>_<name>.png     photographs used for training
      test/<source>_<name>.png      held-out photographs training never sees (HELD_OUT below)
      MANIFEST.tsv                  split, file, size, sha256, origin of every image (+ package versions)

Sources (all public, all installable without the Hugging Face Hub):

* Debian packages, fetched with ``apt-get download`` and unpacked with ``dpkg -x`` (no installation, no root needed
  once ``apt-get update`` has been run):
  ``lomiri-wallpapers-16.04`` and ``lomiri-wallpapers-20.04`` (photographic wallpapers, 1.3K-6K, in
  ``usr/share/backgrounds/``), ``opencv-doc`` (the classic test images in ``usr/share/doc/opencv-doc/examples/``:
  baboon, fruits, building, the Set5 butterfly, street scenes, ...), ``palapeli-data`` (the five photographs of
  KDE's jigsaw-puzzle collection in ``usr/share/palapeli/collection/``, each with its author and licence in a
  ``.desktop`` file beside it) and ``cimg-examples`` (the example images of CImg: the parrot photo is kept).
  The licence of each Debian file is read from the package's machine-readable ``debian/copyright`` (the last
  ``Files:`` stanza that matches wins, as DEP-5 says); palapeli's ``.desktop`` files override it.
  Checked and not used, because none of their images is a photograph (3D renders, vector art, patterns, paper
  scans): ``gnome-backgrounds`` 43.1, ``ukui-wallpapers`` 20.04.3, ``sway-backgrounds`` 1.7,
  ``mypaint-data-extras`` 2.0.1. ``mate-backgrounds`` and ``plasma-workspace-wallpapers`` are reserved for
  independent evaluation and must never be added here.
* ``scikit-image`` (``skimage.data``): astronaut, chelsea, coffee, rocket, hubble_deep_field, immunohistochemistry,
  retina, stereo_motorcycle (left view).
* ``scikit-learn`` (``sklearn.datasets.load_sample_image``): china.jpg, flower.jpg.
* ``matplotlib`` (``matplotlib.cbook.get_sample_data``): grace_hopper.jpg.
* ``gradio`` (``gradio/media_assets/images``, read from the installed package without importing it): cheetah.jpg,
  cheetah1.jpg, tower.jpg (groot.jpeg is a film still and cheetah2.jpg sits on a baked-in transparency checkerboard;
  neither is used).
* PyPI wheels fetched with ``pip download --no-deps`` (nothing is installed; the file is read from the wheel):
  ``imgaug==0.4.0`` (quokka.jpg) and ``mahotas==1.4.19`` (luispedro.jpg, a portrait; DepartmentStore.jpg is a
  drawing and the Lenna crop is not used).

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
Set5 butterfly) and ``HELD_OUT_2`` (four photos of the sources added for the second demo model: a face, feathers
behind a wire cage, a bee on a flower, a lattice tower) go to ``test/``; everything else to ``train/`` (see
:func:`split_for`). ``HELD_OUT`` is unchanged since the first demo model, so its numbers stay comparable.

``MANIFEST.tsv`` has a ``licence`` column (SPDX-style where the source states one).

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
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

# package -> (output prefix, folder inside the package whose images are used)
DEBIAN_SOURCES: Dict[str, Tuple[str, str]] = {
    "lomiri-wallpapers-16.04": ("lomiri", "usr/share/backgrounds"),
    "lomiri-wallpapers-20.04": ("lomiri", "usr/share/backgrounds"),
    "opencv-doc": ("opencv", "usr/share/doc/opencv-doc/examples"),
    "palapeli-data": ("palapeli", "usr/share/palapeli/collection"),
    "cimg-examples": ("cimg", "usr/share/doc/cimg-dev/examples/img"),
}
DEBIAN_PACKAGES: Tuple[str, ...] = tuple(DEBIAN_SOURCES)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".ppm", ".webp")
MIN_SHORT_SIDE = 256
COLOUR_THRESHOLD = 1.5  # mean |pixel - mean over its 3 channels|, 0..255 scale; greyscale stored as RGB gives ~0
DEFAULT_MAX_SIDE = 1024
SKIMAGE_IMAGES: Tuple[str, ...] = (
    "astronaut",
    "chelsea",
    "coffee",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "rocket",
    "stereo_motorcycle",  # returns (left, right, disparity): the left view is used
)
SKLEARN_IMAGES: Tuple[str, ...] = ("china.jpg", "flower.jpg")
MATPLOTLIB_IMAGES: Tuple[str, ...] = ("grace_hopper.jpg",)
GRADIO_IMAGES: Tuple[str, ...] = ("media_assets/images/cheetah.jpg", "media_assets/images/cheetah1.jpg",
                                  "media_assets/images/tower.jpg")
# wheel spec -> (output prefix, files inside the wheel, licence of the package)
WHEEL_IMAGES: Dict[str, Tuple[str, Tuple[str, ...], str]] = {
    "imgaug==0.4.0": ("imgaug", ("imgaug/quokka.jpg",), "MIT (imgaug package)"),
    "mahotas==1.4.19": ("mahotas", ("mahotas/demos/data/luispedro.jpg",), "MIT (mahotas package)"),
}
# Licences stated by the Python packages for their sample images (docstrings / READMEs shipped with them).
PYTHON_LICENCES: Dict[str, str] = {
    "skimage_astronaut": "public domain (NASA)",
    "skimage_chelsea": "CC0-1.0",
    "skimage_coffee": "CC0-1.0",
    "skimage_hubble_deep_field": "public domain (NASA)",
    "skimage_immunohistochemistry": "no known copyright restrictions",
    "skimage_retina": "CC0-1.0",
    "skimage_rocket": "public domain (SpaceX)",
    "skimage_stereo_motorcycle": "Middlebury 2014 stereo benchmark (scikit-image BSD-3-Clause package)",
    "sklearn_china": "CC-BY-2.0 (danielbuechele)",
    "sklearn_flower": "CC-BY-2.0 (vultilion)",
    "matplotlib_grace_hopper": "public domain (US Navy)",
}

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
# Held out from the sources added for the second demo model (never trained on).
HELD_OUT_2: Tuple[str, ...] = (
    "mahotas_luispedro",  # face / portrait
    "cimg_parrot",  # feathers behind straight wire edges
    "palapeli_european-honey-bee",  # fine hair and petals
    "gradio_tower",  # lattice of thin edges against sky
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
    "cimg_logo": "logo",
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


@dataclass(frozen=True)
class Candidate:
    """One image offered by a source: ``name`` is the output stem, ``origin`` says where it came from."""

    name: str
    origin: str
    load: Callable[[], Image.Image]
    licence: str = "unknown"


# ----------------------------------------------------------------------------------------------------------------
# Pure helpers (tested in tests/test_data.py)
# ----------------------------------------------------------------------------------------------------------------


def sanitize(text: str) -> str:
    """File-name-safe version of ``text``: characters outside ``[A-Za-z0-9_-]`` become ``_``."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)


def output_name(source: str, stem: str) -> str:
    """The deterministic output stem ``<source>_<stem>`` (sanitised), e.g. ``opencv_baboon``."""
    return f"{sanitize(source)}_{sanitize(stem)}"


def split_for(name: str, held_out: Sequence[str] = HELD_OUT + HELD_OUT_2) -> str:
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


def parse_dep5(text: str) -> List[Tuple[Tuple[str, ...], str]]:
    """The ``(file patterns, licence)`` of every ``Files:`` stanza of a machine-readable debian/copyright (DEP-5).

    Continuation lines of ``Files:`` add patterns; the licence is the first line of ``License:`` (its short name).
    """
    stanzas: List[Tuple[Tuple[str, ...], str]] = []
    for block in re.split(r"\n\s*\n", text):
        patterns: List[str] = []
        licence = None
        field = None
        for line in block.splitlines():
            if line[:1] in (" ", "\t"):
                if field == "files":
                    patterns.extend(line.split())
                continue
            key, _, value = line.partition(":")
            field = key.strip().lower()
            if field == "files":
                patterns = value.split()
            elif field == "license" and licence is None:
                licence = value.strip()
        if patterns and licence:
            stanzas.append((tuple(patterns), licence))
    return stanzas


def dep5_licence(stanzas: Sequence[Tuple[Tuple[str, ...], str]], path: str) -> Optional[str]:
    """Licence of ``path`` (relative to the package root) by DEP-5's rule: the last matching stanza wins.

    A pattern matches the path itself or any tail of it (``16.04/x.jpg`` matches ``usr/share/backgrounds/16.04/x.jpg``),
    because upstream paths in debian/copyright are relative to the source tree, not the installed tree. If no stanza
    matches that way, wildcard-free file names alone are compared (lomiri's ``16.04/x.jpg`` is installed as
    ``backgrounds/x.jpg``).
    """
    for match in (lambda pat: fnmatch.fnmatchcase(path, pat) or fnmatch.fnmatchcase(path, "*/" + pat),
                  lambda pat: not any(c in Path(pat).name for c in "*?[") and Path(path).name == Path(pat).name):
        found = None
        for patterns, licence in stanzas:
            if any(match(pat) for pat in patterns):
                found = licence
        if found is not None:
            return found
    return None


def desktop_licence(text: str) -> Optional[str]:
    """``"<licence> (<author>)"`` from a KDE ``.desktop`` file's X-KDE-PluginInfo-License/-Author, or ``None``."""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() in ("X-KDE-PluginInfo-License", "X-KDE-PluginInfo-Author"):
            fields[key.strip()] = value.strip()
    if "X-KDE-PluginInfo-License" not in fields:
        return None
    author = fields.get("X-KDE-PluginInfo-Author")
    return fields["X-KDE-PluginInfo-License"] + (f" ({author})" if author else "")


def pixel_hash(rgb: np.ndarray) -> str:
    """sha256 of an image's shape and pixels (independent of the file encoding)."""
    h = hashlib.sha256(str(rgb.shape).encode())
    h.update(np.ascontiguousarray(rgb).tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------------------------
# Sources
# ----------------------------------------------------------------------------------------------------------------


def _open_file(path: Path) -> Callable[[], Image.Image]:
    def load() -> Image.Image:
        with Image.open(path) as im:
            im.load()
            return im.copy()

    return load


def _from_array(fn: Callable[[], np.ndarray]) -> Callable[[], Image.Image]:
    return lambda: Image.fromarray(np.asarray(fn()))


def fetch_debian_package(package: str, download_dir: Path) -> Optional[Tuple[Path, str]]:
    """Download (or reuse) ``package``'s .deb into ``download_dir`` and unpack it; return (root, version) or None."""
    debs = sorted(download_dir.glob(f"{package}_*.deb"))
    if not debs:
        if shutil.which("apt-get") is None:
            print(f"  skip {package}: apt-get not found (Debian/Ubuntu only)")
            return None
        result = subprocess.run(
            ["apt-get", "download", package], cwd=download_dir, capture_output=True, text=True, check=False
        )
        debs = sorted(download_dir.glob(f"{package}_*.deb"))
        if result.returncode != 0 or not debs:
            message = (result.stderr or result.stdout).strip().splitlines()
            print(f"  skip {package}: apt-get download failed ({message[-1] if message else 'no output'});"
                  " run `apt-get update` (as root) and retry")
            return None
    deb = debs[-1]
    version = urllib.parse.unquote(deb.name[len(package) + 1 :].rsplit("_", 1)[0])  # 4%3a22.12 -> 4:22.12
    root = download_dir / f"{package}_extracted"
    if not root.is_dir():
        tmp = download_dir / f"{package}_extracting"
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run(["dpkg", "-x", str(deb), str(tmp)], check=True)
        tmp.rename(root)
    return root, version


def debian_candidates(download_dir: Path, versions: Dict[str, str]) -> Iterator[Candidate]:
    """Images of the Debian packages in ``DEBIAN_SOURCES``; records each package's version in ``versions``."""
    for package, (source, folder) in DEBIAN_SOURCES.items():
        fetched = fetch_debian_package(package, download_dir)
        if fetched is None:
            continue
        root, version = fetched
        versions[package] = version
        copyright_file = root / "usr/share/doc" / package / "copyright"
        stanzas = parse_dep5(copyright_file.read_text(errors="replace")) if copyright_file.is_file() else []
        base = root / folder
        files = sorted(p for p in base.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        for path in files:
            parts = list(path.relative_to(base).with_suffix("").parts)
            if source == "opencv" and parts[0] == "data":
                parts = parts[1:]  # examples/data/baboon.jpg -> opencv_baboon
            rel = str(path.relative_to(root))
            licence = dep5_licence(stanzas, rel)
            desktop = path.with_suffix(".desktop")
            if desktop.is_file():  # palapeli: the puzzle's own author and licence
                licence = desktop_licence(desktop.read_text(errors="replace")) or licence
            yield Candidate(output_name(source, "_".join(parts)), f"{package}={version}:{rel}", _open_file(path),
                            licence or "unknown")


def fetch_wheel(spec: str, download_dir: Path) -> Optional[Path]:
    """Download (or reuse) the wheel of ``spec`` (``name==version``) with ``pip download --no-deps``; or None."""
    name, version = spec.split("==")
    pattern = f"{name.replace('-', '_')}-{version}-*.whl"
    wheels = sorted(download_dir.glob(pattern))
    if not wheels:
        result = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                                 "--dest", str(download_dir), spec], capture_output=True, text=True, check=False)
        wheels = sorted(download_dir.glob(pattern))
        if result.returncode != 0 or not wheels:
            message = (result.stderr or result.stdout).strip().splitlines()
            print(f"  skip {spec}: pip download failed ({message[-1] if message else 'no output'})")
            return None
    return wheels[-1]


def _from_zip(wheel: Path, member: str) -> Callable[[], Image.Image]:
    def load() -> Image.Image:
        with zipfile.ZipFile(wheel) as zf, Image.open(io.BytesIO(zf.read(member))) as im:
            im.load()
            return im.copy()

    return load


def wheel_candidates(download_dir: Path, versions: Dict[str, str]) -> Iterator[Candidate]:
    """Images read from the PyPI wheels in ``WHEEL_IMAGES`` (downloaded, never installed)."""
    for spec, (source, members, licence) in WHEEL_IMAGES.items():
        wheel = fetch_wheel(spec, download_dir)
        if wheel is None:
            continue
        versions[spec.split("==")[0]] = spec.split("==")[1]
        for member in members:
            yield Candidate(output_name(source, Path(member).stem), f"{wheel.name}:{member}",
                            _from_zip(wheel, member), licence)


def gradio_candidates(versions: Dict[str, str]) -> Iterator[Candidate]:
    """The sample photos of the installed gradio package (located without importing gradio, which is slow)."""
    import importlib.metadata
    import importlib.util

    spec = importlib.util.find_spec("gradio")
    if spec is None or not spec.submodule_search_locations:
        print("  skip gradio: not installed (pip install gradio)")
        return
    versions["gradio"] = importlib.metadata.version("gradio")
    root = Path(list(spec.submodule_search_locations)[0])
    for rel in GRADIO_IMAGES:
        path = root / rel
        if path.is_file():
            yield Candidate(output_name("gradio", path.stem), f"gradio {rel}", _open_file(path),
                            "Apache-2.0 (gradio package)")


def python_package_candidates(versions: Dict[str, str]) -> Iterator[Candidate]:
    """Images bundled with scikit-image, scikit-learn and matplotlib (each skipped if not installed)."""
    try:
        import skimage
        import skimage.data
    except ImportError:
        print("  skip scikit-image: not installed (pip install scikit-image)")
    else:
        versions["scikit-image"] = skimage.__version__

        def skimage_loader(n: str) -> Callable[[], np.ndarray]:
            def load() -> np.ndarray:
                out = getattr(skimage.data, n)()
                return out[0] if isinstance(out, tuple) else out

            return load

        for name in SKIMAGE_IMAGES:
            out = output_name("skimage", name)
            yield Candidate(out, f"skimage.data.{name}()", _from_array(skimage_loader(name)),
                            PYTHON_LICENCES.get(out, "unknown"))
    try:
        import sklearn
        from sklearn.datasets import load_sample_image
    except ImportError:
        print("  skip scikit-learn: not installed (pip install scikit-learn)")
    else:
        versions["scikit-learn"] = sklearn.__version__
        for name in SKLEARN_IMAGES:
            out = output_name("sklearn", Path(name).stem)
            yield Candidate(out, f"sklearn load_sample_image('{name}')",
                            _from_array(lambda n=name: load_sample_image(n)), PYTHON_LICENCES.get(out, "unknown"))
    try:
        import matplotlib
        from matplotlib import cbook
    except ImportError:
        print("  skip matplotlib: not installed (pip install matplotlib)")
    else:
        versions["matplotlib"] = matplotlib.__version__
        for name in MATPLOTLIB_IMAGES:
            path = Path(cbook.get_sample_data(name, asfileobj=False))
            out = output_name("matplotlib", Path(name).stem)
            yield Candidate(out, f"matplotlib sample_data/{name}", _open_file(path),
                            PYTHON_LICENCES.get(out, "unknown"))


# ----------------------------------------------------------------------------------------------------------------
# Build
# ----------------------------------------------------------------------------------------------------------------


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
    rows: List[Tuple[str, ...]] = []  # split, file, size, file sha, pixel sha, origin, licence
    skipped: List[Tuple[str, str]] = []
    seen: Dict[str, str] = {}
    per_source: Dict[str, int] = {}
    try:
        print(f"collecting images (downloads in {download_dir})")
        candidates = (list(debian_candidates(download_dir, versions)) + list(python_package_candidates(versions))
                      + list(gradio_candidates(versions)) + list(wheel_candidates(download_dir, versions)))
        names = [c.name for c in candidates]
        duplicates = {n for n in names if names.count(n) > 1}
        if duplicates:
            raise RuntimeError(f"two sources produce the same output names {sorted(duplicates)}: fix output_name")
        for cand in sorted(candidates, key=lambda c: c.name):
            reason = exclusion_reason(cand.name)
            if reason is not None:
                skipped.append((cand.name, reason))
                continue
            try:
                image = to_rgb(cand.load())
            except Exception as exc:  # unreadable file: report and go on
                skipped.append((cand.name, f"unreadable ({type(exc).__name__}: {exc})"))
                continue
            rgb = np.asarray(image)
            reason = quality_reason(rgb)
            if reason is not None:
                skipped.append((cand.name, reason))
                continue
            original = pixel_hash(rgb)
            if original in seen:
                skipped.append((cand.name, f"duplicate of {seen[original]}"))
                continue
            seen[original] = cand.name
            image = limit_size(image, max_side)
            split = split_for(cand.name)
            (staging / split).mkdir(exist_ok=True)
            buffer = io.BytesIO()
            image.save(buffer, format="PNG", optimize=False, compress_level=6)
            data = buffer.getvalue()
            rel = f"{split}/{cand.name}.png"
            (staging / rel).write_bytes(data)
            rows.append((split, rel, f"{image.width}x{image.height}", hashlib.sha256(data).hexdigest(),
                         pixel_hash(np.asarray(image)), cand.origin, cand.licence))
            source = cand.name.split("_", 1)[0]
            per_source[source] = per_source.get(source, 0) + 1

        if not rows:
            raise RuntimeError("no images collected: install scikit-image or run on Debian with `apt-get update` done")
        files_digest = list_digest((r[1], r[3]) for r in rows)
        pixels_digest = list_digest((r[1], r[4]) for r in rows)
        with open(staging / "MANIFEST.tsv", "w") as f:
            f.write("# sradm-diffusers demo set, made by training/prepare_demo_data.py\n")
            f.write(f"# max_side={max_side}\n")
            for k in sorted(versions):
                f.write(f"# source {k}={versions[k]}\n")
            f.write(f"# sha256 files={files_digest}\n# sha256 pixels={pixels_digest}\n")
            f.write("split\tfile\tsize\tsha256\tpixels_sha256\torigin\tlicence\n")
            for r in rows:
                f.write("\t".join(r) + "\n")
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
    megapixels = {s: sum(int(r[2].split("x")[0]) * int(r[2].split("x")[1]) for r in rows if r[0] == s) / 1e6
                  for s in ("train", "test")}
    return dict(output_dir=str(output_dir), counts=counts, per_source=per_source, skipped=skipped,
                test=[r[1] for r in rows if r[0] == "test"], total_bytes=total_bytes, megapixels=megapixels,
                versions=versions,
                files_sha256=files_digest, pixels_sha256=pixels_digest,
                downloads=None if temp_downloads else str(download_dir))


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
    print(f"megapixels (after --max_side): train {summary['megapixels']['train']:.2f}, "
          f"test {summary['megapixels']['test']:.2f}")
    if summary["downloads"]:
        print(f"downloads kept in {summary['downloads']}")
    print(f"sha256 files:  {summary['files_sha256']}")
    print(f"sha256 pixels: {summary['pixels_sha256']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
