"""Image files in and out of the ``sradm`` commands: finding inputs, loading them upright, planning and writing
outputs atomically (never over an input, never half-written).

Inputs: files, folders (non-recursive, hidden files skipped) and glob patterns; EXIF orientation applied, the first
frame of a multi-frame file (with a note). Outputs: a temporary name in the destination folder renamed into place
(:mod:`.atomic`), written through a symlink to its regular target; devices, FIFOs and folders refused.
"""

from __future__ import annotations

import glob
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from .atomic import NotARegularFileError, check_writable_folder, file_kind, output_target, replacing
from .runtime import ImageError, UsageError, note, one_line


def image_extensions() -> set[str]:
    """Lower-case file extensions (with the dot) of the formats PIL can open."""
    from PIL import Image

    return {ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


def folder_images(folder: str | os.PathLike) -> list[str]:
    """Image files directly inside ``folder`` (by extension; hidden files skipped), sorted by name."""
    exts = image_extensions()
    names = sorted(
        name for name in os.listdir(folder)
        if not name.startswith(".") and os.path.splitext(name)[1].lower() in exts
        and os.path.isfile(os.path.join(folder, name))
    )
    return [os.path.join(folder, name) for name in names]


def collect_inputs(inputs: list[str]) -> tuple[list[str], list[tuple[str, str]], set[str]]:
    """Expand INPUT arguments (files, folders, globs) into image files.

    Returns:
        (files in argument order, duplicates removed; [(argument, reason)] for arguments that yield nothing;
        the files that came from a folder or a pattern rather than being named).
    """
    files: list[str] = []
    problems: list[tuple[str, str]] = []
    expanded: set[str] = set()
    seen: set[str] = set()
    exts = image_extensions()
    for arg in inputs:
        if os.path.isdir(arg):
            found = folder_images(arg)
            if not found:
                problems.append((arg, "no image files in this folder"))
        elif os.path.exists(arg) or os.path.islink(arg):
            found = [arg]
        elif glob.has_magic(arg):
            found = sorted(
                p for p in glob.glob(arg) if os.path.isfile(p) and os.path.splitext(p)[1].lower() in exts
            )
            if not found:
                problems.append((arg, "no image files match this pattern"))
        else:
            found = []
            problems.append((arg, "no such file or directory"))
        for path in found:
            key = os.path.realpath(path)
            if key not in seen:
                seen.add(key)
                files.append(path)
                if path != arg:
                    expanded.add(path)
    return files, problems, expanded


def drop_previous_outputs(files: list[str], expanded: set[str], scale: int) -> list[str]:
    """Leave out of a folder/pattern expansion the files named like this command's output of another input in the
    same folder (``<stem>_x<s>.png``, ``<stem>_x<s>_<k>.png`` next to ``<stem>.<ext>``): results of an earlier run,
    which this run replaces. Files named explicitly are always kept."""
    pattern = re.compile(rf"^(?P<stem>.+)_x{scale}(?:_\d+|_mean|_std)?\.png$")
    stems = {(os.path.dirname(p), Path(p).stem) for p in files}
    kept = []
    for path in files:
        match = pattern.match(os.path.basename(path))
        if path in expanded and match and (os.path.dirname(path), match["stem"]) in stems:
            continue
        kept.append(path)
    return kept


def load_image(source):
    """Open an image file (path, or a binary file object) with PIL, fully decoded and EXIF-orientation applied.

    Raises:
        ImageError: empty file, not an image, truncated or otherwise undecodable data (one-line reason).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if isinstance(source, (str, os.PathLike)):
        if not os.path.exists(source):
            raise ImageError("no such file")
        if os.path.isdir(source):
            raise ImageError("is a folder, not an image file")
        mode = os.stat(source).st_mode
        if not stat.S_ISREG(mode):  # a FIFO would block the read, a device never ends
            raise ImageError(f"is {file_kind(mode)}, not a regular image file; save the image to a file first")
        if os.path.getsize(source) == 0:
            raise ImageError("empty file (0 bytes)")
    try:
        with Image.open(source) as image:
            image.load()
            frames = getattr(image, "n_frames", 1)
            if frames > 1:
                name = os.fspath(source) if isinstance(source, (str, os.PathLike)) else "input"
                note(f"{name}: {image.format} with {frames} frames/pages; only the first one is used")
            oriented = ImageOps.exif_transpose(image)
            # exif_transpose returns a new image only when it transposes (Pillow >= 10); detach from the file.
            result = oriented.copy() if oriented is image else oriented
    except UnidentifiedImageError:
        raise ImageError("not an image file PIL can read") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise ImageError(f"cannot decode the image ({one_line(error)})") from error
    if result.width == 0 or result.height == 0:
        raise ImageError(f"image has no pixels ({result.width}x{result.height})")
    return result


def _save_format(path: str) -> str | None:
    """PIL format name that can write a file with this extension, or None."""
    from PIL import Image

    Image.init()
    fmt = Image.registered_extensions().get(os.path.splitext(path)[1].lower())
    return fmt if fmt in Image.SAVE else None


@dataclass
class OutputPlan:
    """Where the outputs go: ``folder`` (None: next to each input) or the single output ``file``."""

    folder: str | None = None
    file: str | None = None

    def paths(self, source: str, scale: int, samples: int) -> list[str]:
        """Output paths of the ``samples`` results of ``source``."""
        if self.file is not None:
            return [self.file]
        stem = Path(source).stem
        folder = self.folder if self.folder is not None else os.path.dirname(source)
        if samples == 1:
            return [os.path.join(folder, f"{stem}_x{scale}.png")]
        return [os.path.join(folder, f"{stem}_x{scale}_{k}.png") for k in range(samples)]


def plan_outputs(out: str | None, inputs: list[str], samples: int) -> OutputPlan:
    """Interpret ``-o`` (module docstring). Raises :class:`UsageError` for a file name that cannot be used."""
    if out is None:
        return OutputPlan()
    single_file = len(inputs) == 1 and os.path.isfile(inputs[0])
    seps = tuple(s for s in (os.sep, os.altsep) if s)
    if os.path.isdir(out) or out.endswith(seps) or _save_format(out) is None:
        if os.path.exists(out) and not os.path.isdir(out):
            raise UsageError(f"-o {out!r} exists and is not a folder; pass a folder or an image file name (.png).")
        return OutputPlan(folder=out)
    if not single_file:
        raise UsageError(
            f"-o {out!r} names one image file, but the inputs give several images (or a folder/pattern); "
            f"pass a folder, e.g. -o {os.path.splitext(out)[0]}{os.sep}"
        )
    if samples > 1:
        raise UsageError(
            f"-o {out!r} names one file, but --samples {samples} writes {samples} files; pass a folder instead."
        )
    return OutputPlan(file=out)


def _nearest_existing(path: str) -> str:
    """``path`` (absolute) or its nearest ancestor that exists."""
    path = os.path.abspath(path)
    while not os.path.lexists(path):
        path = os.path.dirname(path)
    return path


def check_output_file(path: str, option: str) -> None:
    """Before any work: ``path`` (a file to be written, its missing parent folders created) must not be a folder
    nor any other non-regular file (device, FIFO, socket, looping link; :mod:`sradm_diffusers.atomic`), and its
    nearest existing ancestor must be a writable folder. Raises :class:`UsageError` naming the fix."""
    if os.path.isdir(path):
        example = os.path.join(path, "results.json")
        raise UsageError(f"{option} {path!r} is a folder; pass a file name, e.g. {example!r}.")
    try:
        output_target(path)
    except NotARegularFileError as error:
        raise UsageError(f"{option} {one_line(error)}") from error
    ancestor = _nearest_existing(os.path.dirname(os.path.abspath(path)))
    if not os.path.isdir(ancestor):
        raise UsageError(f"{option} {path!r}: {ancestor!r} is a file, not a folder; choose another location.")
    try:
        check_writable_folder(ancestor)
    except OSError as error:
        raise UsageError(f"{option} {path!r}: cannot write in {ancestor!r} ({one_line(error)}); choose a writable "
                         "location.") from error


def check_single_output(output: str, inputs: list[str], extensions: tuple[str, ...] | None = None) -> None:
    """Before any work, for the commands that write one image file (``sradm interpolate``, ``sradm fuse``): ``-o``
    must name a file (extension in ``extensions``, else any PIL can write) in an existing writable folder, must not
    be a device, FIFO or folder, and must not be (or link to) one of the ``inputs``. Raises :class:`UsageError`."""
    seps = tuple(s for s in (os.sep, os.altsep) if s)
    if os.path.isdir(output) or output.endswith(seps):
        example = os.path.join(output, "out.png")
        raise UsageError(f"-o {output!r} is a folder; pass an image file name, e.g. -o {example}")
    ext = os.path.splitext(output)[1].lower()
    if (extensions is not None and ext not in extensions) or (extensions is None and _save_format(output) is None):
        names = "/".join(extensions) if extensions is not None else ".png/.jpg/.webp"
        raise UsageError(f"-o {output!r}: name an image file with one of the extensions {names}.")
    key = os.path.realpath(output)
    for source in inputs:
        if os.path.realpath(source) == key:
            raise UsageError(f"-o {output!r} would overwrite an input file ({source}); choose another -o.")
    folder = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(folder):
        raise UsageError(f"-o {output!r}: the folder {folder!r} does not exist; create it first.")
    prepare_output_folders(OutputPlan(file=output), [])


def prepare_output_folders(plan: OutputPlan, files: list[str]) -> None:
    """Before loading the model: check that every folder outputs go to is writable, or for a missing ``-o DIR``
    that it can be created (its nearest existing ancestor is a writable folder; it is created by the first write,
    so a run that fails before writing leaves no empty folder behind); for a single ``-o FILE``, that its folder
    exists and that the file is not a device, FIFO or other non-regular file. Raises :class:`UsageError`."""
    if plan.file is not None:
        folder = os.path.dirname(os.path.abspath(plan.file))
        if not os.path.isdir(folder):
            raise UsageError(
                f"-o {plan.file!r}: the folder {os.path.dirname(plan.file)!r} does not exist; create it, or pass a "
                "folder ending with a separator (created if needed)."
            )
        try:
            output_target(plan.file)
        except NotARegularFileError as error:
            raise UsageError(f"-o {one_line(error)}") from error
        folders = [folder]
    elif plan.folder is not None:
        existing = _nearest_existing(plan.folder)
        if not os.path.isdir(existing):
            raise UsageError(
                f"cannot create the output folder -o {plan.folder!r}: {existing!r} is not a folder; pass another -o."
            )
        folders = [existing]
    else:
        folders = sorted({os.path.dirname(os.path.abspath(path)) for path in files})
    for folder in folders:
        try:
            check_writable_folder(folder)
        except OSError as error:
            where = "-o" if plan.folder or plan.file else "next to the inputs in"
            raise UsageError(
                f"cannot write outputs {where} {folder!r} ({one_line(error)}); pass a writable folder with -o DIR."
            ) from error


def write_image_atomic(image, path: str, fmt: str | None = None) -> None:
    """Save a PIL image to ``path`` through a temporary file in the same folder and :func:`os.replace`.

    The temporary name is ``.<name>.tmp-<pid><ext>``; it is removed if saving fails, so ``path`` either keeps its
    old content or holds the complete new image. Missing parent folders are created first. A symbolic link at
    ``path`` is written through; a device, FIFO or folder there is refused (:mod:`sradm_diffusers.atomic`).
    """
    fmt = fmt or _save_format(path) or "PNG"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with replacing(path) as tmp:
        image.save(tmp, format=fmt)
