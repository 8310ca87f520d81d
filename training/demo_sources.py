"""Where the demo data set's photographs come from (:mod:`training.prepare_demo_data` selects and stores them).

Each source yields :class:`Candidate` images under deterministic names ``<source>_<name>`` (:func:`output_name`):

* :func:`debian_candidates`: Debian packages fetched with ``apt-get download`` and unpacked with ``dpkg -x`` (no
  installation): ``lomiri-wallpapers-16.04``/``-20.04`` (photographic wallpapers) and ``opencv-doc`` (the classic
  test images).
* :func:`python_package_candidates`: the images bundled with scikit-image, scikit-learn and matplotlib.

A source that is not available is skipped with a printed message.
"""

from __future__ import annotations

import functools
import importlib
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, Optional, Tuple

import numpy as np
from PIL import Image

DEBIAN_PACKAGES: Tuple[str, ...] = ("lomiri-wallpapers-16.04", "lomiri-wallpapers-20.04", "opencv-doc")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".ppm", ".webp")
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


@dataclass(frozen=True)
class Candidate:
    """One image offered by a source: ``name`` is the output stem, ``origin`` says where it came from."""

    name: str
    origin: str
    load: Callable[[], Image.Image]


def sanitize(text: str) -> str:
    """File-name-safe version of ``text``: characters outside ``[A-Za-z0-9_-]`` become ``_``."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)


def output_name(source: str, stem: str) -> str:
    """The deterministic output stem ``<source>_<stem>`` (sanitised), e.g. ``opencv_baboon``."""
    return f"{sanitize(source)}_{sanitize(stem)}"


def _open_file(path: Path) -> Callable[[], Image.Image]:
    """A loader of the image file ``path`` (read when called, the file closed again)."""
    def load() -> Image.Image:
        with Image.open(path) as im:
            im.load()
            return im.copy()

    return load


def _from_array(fn: Callable[[], np.ndarray]) -> Callable[[], Image.Image]:
    """A loader of the PIL image of the array ``fn()`` returns."""
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
    version = deb.name[len(package) + 1 :].rsplit("_", 1)[0]
    root = download_dir / f"{package}_extracted"
    if not root.is_dir():
        tmp = download_dir / f"{package}_extracting"
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run(["dpkg", "-x", str(deb), str(tmp)], check=True)
        tmp.rename(root)
    return root, version


def debian_candidates(download_dir: Path, versions: Dict[str, str]) -> Iterator[Candidate]:
    """Images of the Debian packages in ``DEBIAN_PACKAGES``; records each package's version in ``versions``."""
    for package in DEBIAN_PACKAGES:
        fetched = fetch_debian_package(package, download_dir)
        if fetched is None:
            continue
        root, version = fetched
        versions[package] = version
        if package.startswith("lomiri-wallpapers"):
            base, source = root / "usr/share/backgrounds", "lomiri"
        else:
            base, source = root / "usr/share/doc/opencv-doc/examples", "opencv"
        files = sorted(p for p in base.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        for path in files:
            parts = list(path.relative_to(base).with_suffix("").parts)
            if source == "opencv" and parts[0] == "data":
                parts = parts[1:]  # examples/data/baboon.jpg -> opencv_baboon
            yield Candidate(output_name(source, "_".join(parts)), f"{package}={version}:{path.relative_to(root)}",
                            _open_file(path))


def _installed(module: str, package: str, versions: Dict[str, str]) -> bool:
    """Whether ``module`` imports; records ``package``'s version in ``versions``, or prints why it is skipped."""
    try:
        importlib.import_module(module)
    except ImportError:
        print(f"  skip {package}: not installed (pip install {package})")
        return False
    versions[package] = importlib.import_module(module.split(".")[0]).__version__
    return True


def _skimage_image(name: str) -> np.ndarray:
    """``skimage.data.<name>()``; for a stereo pair (a tuple), the left view."""
    import skimage.data

    out = getattr(skimage.data, name)()
    return out[0] if isinstance(out, tuple) else out


def python_package_candidates(versions: Dict[str, str]) -> Iterator[Candidate]:
    """Images bundled with scikit-image, scikit-learn and matplotlib (each skipped if not installed)."""
    if _installed("skimage.data", "scikit-image", versions):
        for name in SKIMAGE_IMAGES:
            yield Candidate(output_name("skimage", name), f"skimage.data.{name}()",
                            _from_array(functools.partial(_skimage_image, name)))
    if _installed("sklearn.datasets", "scikit-learn", versions):
        from sklearn.datasets import load_sample_image

        for name in SKLEARN_IMAGES:
            yield Candidate(output_name("sklearn", Path(name).stem), f"sklearn load_sample_image('{name}')",
                            _from_array(functools.partial(load_sample_image, name)))
    if _installed("matplotlib.cbook", "matplotlib", versions):
        from matplotlib import cbook

        for name in MATPLOTLIB_IMAGES:
            path = Path(cbook.get_sample_data(name, asfileobj=False))
            yield Candidate(output_name("matplotlib", Path(name).stem), f"matplotlib sample_data/{name}",
                            _open_file(path))
