"""``sradm upscale``: super-resolve image files with an :class:`~sradm_diffusers.SRADMPipeline`.

What it does, and the choices it makes:

- **Inputs** (``INPUT...``): image files, folders (their image files, sorted by name, not recursive, hidden files
  skipped) and glob patterns (expanded with :func:`glob.glob`, sorted; only files with an image extension are kept).
  An argument that names an existing path is taken literally even if it contains ``*``/``?``/``[``. The same file
  named twice is processed once. A folder or pattern does not pick up this command's earlier outputs: a file named
  ``<stem>_x<s>.png`` / ``<stem>_x<s>_<k>.png`` next to an input ``<stem>.<ext>`` is left out (and replaced);
  name such a file explicitly to upscale it again.
- **Loading**: ``PIL.Image.open`` + ``load``, then :func:`PIL.ImageOps.exif_transpose`, so a photo is upscaled the
  way viewers show it (upright) and the output carries no orientation tag. Modes are converted by
  :mod:`sradm_diffusers.image_processing`: greyscale becomes RGB, **transparency is composited on white** and the
  output is RGB without alpha.
- **Outputs**: ``<stem>_x<s>.png`` (``s`` = the model's ``upscale_factor``) next to the input, or in ``-o DIR``;
  with ``--samples K`` (K > 1), K files ``<stem>_x<s>_<k>.png``, ``k = 0..K-1``, and with ``--uncertainty`` also
  their per-pixel mean ``<stem>_x<s>_mean.png`` and std map ``<stem>_x<s>_std.png``
  (:mod:`sradm_diffusers.uncertainty`). ``-o`` is a folder (created by the
  first write) when it exists as one, ends with a path separator, has no image extension, or when the inputs are more
  than one file argument / a folder / a glob; ``-o FILE.png`` (any extension PIL can write) is accepted for one
  input file and one sample. An output that would replace one of the input files, or another output of the same
  run, is refused (a per-image error). Existing outputs of earlier runs are replaced.
- **Atomic writes**: each image is written to ``.<name>.tmp-<pid><ext>`` in the destination folder and renamed with
  :func:`os.replace`; a failure removes the temporary file, so a final name never holds a partial image. An output
  name that is a symbolic link is written through (its regular target is replaced, the link kept); one that is a
  device, FIFO, socket or folder is refused (:mod:`sradm_diffusers.atomic`).
- **Seeds**: with ``--seed S``, sample ``k`` of *every* input uses a fresh CPU ``torch.Generator`` seeded ``S + k``
  (initial noise and, for ancestral samplers, the per-step noise). An image's result therefore does not depend on
  which other images are in the run, nor on the device, nor on the process split. Without ``--seed`` the noise is
  random.
- **Several processes**: under ``accelerate launch --num_processes N`` each process upscales a contiguous share of
  the images (:mod:`sradm_diffusers.distributed`); the files written are those of a one-process run.
- **Sampler**: with none of ``--scheduler``, ``--steps``, ``--strength``, the few-step default
  :data:`DEFAULT_SAMPLING`. Otherwise ``--scheduler`` defaults to the model's own (DDPM), ``--steps`` to the
  scheduler's ``num_train_timesteps`` (100, the reference's full ancestral sampling) for ``ddpm`` and to
  :data:`FAST_SAMPLER_STEPS` for the other schedulers, and ``--strength`` to 1 (start from pure noise).
- **Errors**: a bad input file (missing, empty, not an image, undecodable) or a failed write is reported as one
  line ``error: <path>: <reason>`` on stderr; the other images are still processed and the exit status is 1.
  A bad option or model is one line on stderr and exit status 2 (:class:`UsageError`).

``DEFAULT_MODEL`` is the pipeline used when ``--model`` is omitted: the CPU-trained demo bundled with the package
(:data:`sradm_diffusers.resources.DEMO_MODEL`).
"""

from __future__ import annotations

import glob
import os
import re
import stat
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

# No torch, numpy or diffusers at import time: ``sradm --help``, ``--version`` and argument errors read this
# module's constants only, and must answer at once (issue 19). The functions that need them import them.
from .atomic import NotARegularFileError, check_writable_folder, file_kind, output_target, replacing
from .distributed import ProcessShare
from .sampling.memory import keep_freed_memory, trim_heap_around_each_call
from .resources import DEMO_MODEL
from .defaults import (  # noqa: F401 - the sampling defaults and tiling policy, re-exported for older imports
    AUTO_TILE_PIXELS, DEFAULT_SAMPLING, DEFAULT_TILE, DEFAULT_TILE_OVERLAP, DEVICES, FAST_SAMPLER_STEPS,
    LR_CONSISTENCY, MAX_SEED, MIN_TILE, SCHEDULERS, choose_tiling, default_steps, dtype_problem, make_scheduler,
)

if TYPE_CHECKING:
    import torch

DEFAULT_MODEL: str = DEMO_MODEL
"""Folder (or Hub id) used when ``--model`` is not given: the bundled demo pipeline."""

FAST_SCHEDULER = "dpm-sde"
"""Deprecated (the web demo now opens with :data:`DEFAULT_SAMPLING`): the stochastic sampler that was cleanest at 20
steps on the demo model."""

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
"""``--dtype`` name -> the ``torch`` dtype's attribute name (:func:`torch_dtype`)."""


class UsageError(ValueError):
    """A bad option, model or output location: reported in one line, exit status 2."""


class ImageError(Exception):
    """One input image cannot be processed: reported as ``error: <path>: <reason>`` and skipped."""


def one_line(error: BaseException | str, limit: int = 400) -> str:
    """An exception (or text) as a single line of at most ``limit`` characters."""
    text = str(error) if not isinstance(error, str) else error
    text = " ".join(text.split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ----------------------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------------------


def torch_dtype(name: str) -> "torch.dtype":
    """``--dtype`` name ("fp32", "fp16", "bf16") -> ``torch.float32`` / ``torch.float16`` / ``torch.bfloat16``."""
    import torch

    return getattr(torch, DTYPES[name])


def resolve_device(name: str | None) -> torch.device:
    """``--device``: None picks cuda, then mps, then cpu; an unavailable device is a :class:`UsageError`."""
    import torch

    if name is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name not in DEVICES:
        raise UsageError(f"--device {name!r} is not one of {', '.join(DEVICES)}.")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError(
            "--device cuda, but torch sees no CUDA GPU (torch.cuda.is_available() is False); use --device cpu."
        )
    if name == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise UsageError("--device mps, but the MPS backend is not available on this machine; use --device cpu.")
    return torch.device(name)


def load_pipeline(model: str | None, device: torch.device | str = "cpu", dtype: str = "fp32"):
    """Load an SRADM pipeline folder or Hub id for command-line use.

    Args:
        model: ``--model``; None means :data:`DEFAULT_MODEL`.
        device: where to run it.
        dtype: "fp32", "fp16" or "bf16" (weights loaded in that dtype with ``torch_dtype``).
    Returns:
        The pipeline, on ``device``.
    Raises:
        UsageError: the model cannot be loaded (message: one line naming the model and the fix).
    """
    from diffusers.utils import logging as diffusers_logging

    from .pipeline import SRADMPipeline

    model = DEFAULT_MODEL if model is None else model
    if dtype not in DTYPES:
        raise UsageError(f"--dtype {dtype!r} is not one of {', '.join(DTYPES)}.")
    model = os.path.expanduser(model)
    # A Hub id is "name" or "org/name"; anything else with a separator (absolute, ./, ../, a/b/c) is a path.
    looks_like_path = (
        os.path.isabs(model) or model.startswith(("./", "../", ".\\", "..\\")) or model.count("/") > 1
        or (os.sep != "/" and os.sep in model)
    )
    if os.path.islink(model) and not os.path.exists(model):
        raise UsageError(
            f"--model {model!r} is a symbolic link that loops or points to nothing ({os.readlink(model)!r}); "
            "fix the link or pass the pipeline folder itself."
        )
    if looks_like_path and not os.path.exists(model):
        raise UsageError(f"--model {model!r}: no such folder; pass a saved SRADM pipeline folder or a Hub id.")
    if os.path.isfile(model):
        raise UsageError(f"--model {model!r} is a file; pass the pipeline folder (the one holding model_index.json).")
    bars = diffusers_logging.is_progress_bar_enabled()
    diffusers_logging.disable_progress_bar()  # "Loading pipeline components..."
    try:
        kwargs = {} if dtype == "fp32" else {"torch_dtype": torch_dtype(dtype)}
        with warnings.catch_warnings():
            # newer diffusers rename torch_dtype to dtype (FutureWarning); older ones only know torch_dtype
            warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
            pipe = SRADMPipeline.from_pretrained(model, **kwargs)
    except Exception as error:  # noqa: BLE001 - any loading failure becomes one line and exit status 2
        raise UsageError(f"cannot load --model {model!r}: {one_line(error)}") from error
    finally:
        if bars:
            diffusers_logging.enable_progress_bar()
    try:
        pipe.to(device)
    except Exception as error:  # noqa: BLE001
        raise UsageError(f"cannot move the model to {device}: {one_line(error)}") from error
    # The C heap: keep freed activations for the next step instead of faulting in fresh pages (a third of a step at
    # 1024x1024), and hand the fragments back after every tile while tiling (bounded RSS for large photos).
    keep_freed_memory()
    trim_heap_around_each_call(pipe.unet, only_if=lambda: pipe.tiling is not None)
    return pipe


def set_scheduler(pipe, name: str | None) -> None:
    """Swap ``pipe.scheduler`` for ``SCHEDULERS[name]`` built ``from_config`` of the current one (None: keep it)."""
    if name is None:
        return
    if name not in SCHEDULERS:
        raise UsageError(f"--scheduler {name!r} is not one of {', '.join(SCHEDULERS)}.")
    pipe.scheduler = make_scheduler(name, pipe.scheduler.config)


def resolve_steps(pipe, steps: int | None) -> int:
    """``--steps``: check it against the scheduler's ``num_train_timesteps``, or pick the default (module doc)."""
    max_steps = int(pipe.scheduler.config.num_train_timesteps)
    if max_steps < 1:
        raise UsageError(
            f"the model's scheduler config is invalid: num_train_timesteps={max_steps} (must be >= 1); fix "
            "scheduler/scheduler_config.json or re-save the model."
        )
    if steps is None:
        return default_steps(pipe.scheduler)
    if steps < 1 or steps > max_steps:
        raise UsageError(f"--steps {steps}: use 1..{max_steps} (the model's scheduler has {max_steps} timesteps).")
    return steps


def check_sampling_options(samples: int, seed: int | None, tile: int | None, tile_overlap: int) -> None:
    """``--samples``, ``--seed``, ``--tile`` and ``--tile-overlap`` as ``upscale`` and ``evaluate`` share them;
    a bad value is a :class:`UsageError` naming the option and the range to use."""
    if samples < 1:
        raise UsageError(f"--samples {samples}: use 1 or more.")
    if seed is not None and not 0 <= seed <= MAX_SEED - (samples - 1):
        raise UsageError(
            f"--seed {seed}: use 0..{MAX_SEED - (samples - 1)} (sample k uses seed S+k, a 63-bit integer)."
        )
    if tile != 0:
        from .sampling.tiling import check_tile_arguments

        try:
            check_tile_arguments(DEFAULT_TILE if tile is None else tile, tile_overlap)
        except ValueError as error:
            raise UsageError(f"--tile/--tile-overlap: {one_line(error)}") from error
    if tile is not None and 0 < tile < MIN_TILE:
        raise UsageError(
            f"--tile {tile}: tiles smaller than {MIN_TILE} input pixels cost far more time than they save memory (on "
            f"a 64 px image tiles of 4 px took 25x the untiled time, of 8 px 12x, of 16 px 4x); use --tile "
            f"{MIN_TILE} or more (16 or more is sensible), or --tile 0 to sample whole."
        )


def sample_generators(seed: int | None, samples: int) -> list[torch.Generator] | None:
    """K CPU generators seeded ``seed + k`` (one per sample of an image), or None for random noise."""
    import torch

    if seed is None:
        return None
    return [torch.Generator("cpu").manual_seed(seed + k) for k in range(samples)]


def sample_batches(pipe, image, samples: int, device) -> list[tuple[int, int]]:
    """(first sample, count) of the pipeline calls that produce the ``samples`` outputs of ``image`` (PIL): as many
    per call as fit into memory (:mod:`sradm_diffusers.memory`). Raises :class:`ImageError` when not one fits."""
    from .sampling.memory import samples_per_batch

    try:
        scale = pipe.config.upscale_factor
        per_call = samples_per_batch(pipe.unet, *pipe.unet_input_size(image.height, image.width), samples, device,
                                     output_size=(image.height * scale, image.width * scale))
    except ValueError as error:
        raise ImageError(f"{image.width}x{image.height} input: {one_line(error)}") from error
    return [(start, min(per_call, samples - start)) for start in range(0, samples, per_call)]


def is_dtype_unsupported(error: BaseException) -> bool:
    """True for torch's "<op> not implemented for 'Half'/'BFloat16'" errors (half precision on a CPU build)."""
    text = str(error)
    return "not implemented for" in text and ("'Half'" in text or "'BFloat16'" in text)


# ----------------------------------------------------------------------------------------------------------------
# Input files
# ----------------------------------------------------------------------------------------------------------------


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
                _note(f"{name}: {image.format} with {frames} frames/pages; only the first one is used")
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


# ----------------------------------------------------------------------------------------------------------------
# Output files
# ----------------------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------------------------------------------


class StepReporter:
    """``callback_on_step_end`` that prints ``<command>: <name>: step i/N`` to stderr at most every ``interval``
    seconds: the progress of long samplings when stderr is not a terminal (where the progress bars are off)."""

    def __init__(self, interval: float = 10.0, command: str = "sradm upscale"):
        self.interval, self.name, self.total, self.last = interval, "", 0, time.monotonic()
        self.command = command

    def start(self, name: str, total: int) -> None:
        self.name, self.total, self.last = name, total, time.monotonic()

    def __call__(self, pipe, step: int, timestep, tensors: dict) -> dict:
        if time.monotonic() - self.last >= self.interval:
            self.last = time.monotonic()
            print(f"{self.command}: {self.name}: step {step + 1}/{self.total}", file=sys.stderr, flush=True)
        return {}


def _note(text: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(f"note: {one_line(text)}", file=sys.stderr)


def _report(path: str, reason: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(f"error: {path}: {one_line(reason)}", file=sys.stderr)


def run_upscale(
    inputs: list[str],
    output: str | None = None,
    model: str | None = None,
    steps: int | None = None,
    scheduler: str | None = None,
    seed: int | None = None,
    samples: int = 1,
    device: str | None = None,
    dtype: str = "fp32",
    tile: int | None = None,
    tile_overlap: int = DEFAULT_TILE_OVERLAP,
    lr_consistency: bool = LR_CONSISTENCY,
    uncertainty: bool = False,
    strength: float | None = None,
) -> int:
    """Run ``sradm upscale``. Returns the exit status: 0 all written, 1 some input failed.

    Raises:
        UsageError: bad options, model or output location (the caller prints it and exits with 2).
    """
    import numpy as np
    import torch
    from tqdm.auto import tqdm

    from .extras.uncertainty import SUMMARY_KINDS, summary_images
    from .sampling.rrdb_start import check_strength

    check_sampling_options(samples, seed, tile, tile_overlap)
    if uncertainty and samples < 2:
        raise UsageError(f"--uncertainty needs --samples K with K >= 2 (got {samples}): it measures their spread.")
    share = ProcessShare()  # under `accelerate launch`, this process's part of the images
    plan = plan_outputs(output, inputs, samples)
    files, problems, expanded = collect_inputs(inputs)
    for arg, reason in problems if share.is_main else []:
        _report(arg, reason)
    if not files:
        return 1
    prepare_output_folders(plan, files)

    torch_device = share.device(device, resolve_device)
    problem = dtype_problem(dtype, torch_device.type)
    if problem is not None:
        raise UsageError(problem)
    if dtype == "bf16" and torch_device.type == "cpu" and share.is_main:
        from .cpu import bf16_advice

        advice = bf16_advice()
        if advice:
            print(f"sradm upscale: note: {advice}.", file=sys.stderr)
    try:
        from .sampling.memory import available_bytes

        available_bytes(torch_device)
    except ValueError as error:
        raise UsageError(one_line(error)) from error
    if scheduler is None and steps is None and strength is None:
        scheduler, steps, strength = DEFAULT_SAMPLING.scheduler, DEFAULT_SAMPLING.steps, DEFAULT_SAMPLING.strength
    strength = 1.0 if strength is None else strength
    pipe = load_pipeline(model, torch_device, dtype)
    set_scheduler(pipe, scheduler)
    num_steps = resolve_steps(pipe, steps)
    try:
        check_strength(strength, num_steps)
    except (TypeError, ValueError) as error:
        raise UsageError(f"--strength: {one_line(error)}") from error
    scale = int(pipe.config.upscale_factor)
    files = drop_previous_outputs(files, expanded, scale)
    pipe.set_progress_bar_config(disable=None, leave=False, desc="steps")
    reporter = None if sys.stderr.isatty() else StepReporter()

    input_keys = {os.path.realpath(p) for p in files}
    written_keys: dict[str, str] = {}
    failed, written = (len(problems) if share.is_main else 0), 0
    mine = share.indices(len(files))
    progress = tqdm(files, desc="upscale", unit="image", disable=None if share.is_main else True)
    for number, path in enumerate(progress, 1):
        try:
            targets = plan.paths(path, scale, samples)
            if uncertainty:  # <stem>_x<s>_mean.png, _std.png and _std_scale.png next to the samples
                targets += [re.sub(r"_0\.png$", f"_{kind}.png", targets[0]) for kind in SUMMARY_KINDS]
            for target in targets:
                key = os.path.realpath(target)
                if key in input_keys:
                    raise ImageError(f"output {target} would overwrite an input file; choose another -o")
                if key in written_keys:
                    raise ImageError(f"output {target} is also the output of {written_keys[key]}; use -o with a folder")
            if number - 1 not in mine:  # another process writes these; keep the same collision checks
                written_keys.update((os.path.realpath(target), path) for target in targets)
                continue
            image = load_image(path)
            untiled = None
            if torch_device.type == "cuda":
                from .sampling.memory import available_bytes, estimate_sampling_bytes

                untiled = estimate_sampling_bytes(pipe.unet, 1, image.height * scale, image.width * scale)
            tiling = choose_tiling(image.width, image.height, tile, tile_overlap, torch_device, untiled)
            if tiling is not None and tile is None:
                free = available_bytes(torch_device) if untiled is not None else None
                why = (f"would need about {untiled / 2**30:.1f} GiB untiled, {free / 2**30:.1f} GiB free on "
                       f"{torch_device}" if untiled is not None else f"is over {AUTO_TILE_PIXELS} pixels")
                tqdm.write(
                    f"{path}: {image.width}x{image.height} {why}: sampling in tiles of "
                    f"{tiling[0]} px overlapping by {tiling[1]} (--tile N to choose, --tile 0 to turn off)",
                    file=sys.stderr,
                )
            if tiling is None:
                pipe.disable_tiling()
            else:
                pipe.enable_tiling(*tiling)
            if reporter is not None:
                print(f"sradm upscale: image {number}/{len(files)}: {path}", file=sys.stderr, flush=True)
                reporter.start(os.path.basename(path), int(num_steps * strength))  # the steps that run
            generators = sample_generators(seed, samples)
            sample_images = []
            for start, count in sample_batches(pipe, image, samples, torch_device):
                try:
                    result = pipe(
                        image,
                        num_inference_steps=num_steps,
                        generator=None if generators is None else generators[start : start + count],
                        num_images_per_prompt=count,
                        output_type="pil",
                        callback_on_step_end=reporter,
                        lr_consistency=lr_consistency,
                        strength=strength,
                    )
                except RuntimeError as error:
                    if is_dtype_unsupported(error):
                        raise UsageError(
                            f"--dtype {dtype} is not supported on {torch_device.type} by this torch build "
                            f"({one_line(error)}); use --dtype fp32{' or bf16' if dtype == 'fp16' else ''}."
                        ) from error
                    raise ImageError(f"upscaling failed: {one_line(error)}") from error
                except ValueError as error:
                    raise ImageError(one_line(error)) from error
                for target, sr in zip(targets[start : start + count], result.images):
                    try:
                        write_image_atomic(sr, target)
                    except (OSError, ValueError) as error:
                        raise ImageError(f"cannot write {target}: {one_line(error)}") from error
                    written_keys[os.path.realpath(target)] = path
                    written += 1
                    tqdm.write(target, file=sys.stdout)
                sample_images += result.images if uncertainty else []
            if uncertainty:  # mean and std of the K written (8-bit) samples
                stack = torch.from_numpy(np.stack([np.asarray(im) for im in sample_images])).permute(0, 3, 1, 2) / 255
                for target, summary in zip(targets[samples:], summary_images(stack)):
                    try:
                        write_image_atomic(summary, target)
                    except (OSError, ValueError) as error:
                        raise ImageError(f"cannot write {target}: {one_line(error)}") from error
                    written_keys[os.path.realpath(target)] = path
                    written += 1
                    tqdm.write(target, file=sys.stdout)
        except ImageError as error:
            if number - 1 in mine:  # a collision is found by every process; its owner reports it
                failed += 1
                _report(path, str(error))
    progress.close()
    counts = share.gather((failed, written))
    failed, written = sum(c[0] for c in counts), sum(c[1] for c in counts)
    if failed and share.is_main:
        print(
            f"sradm upscale: {failed} of {len(files) + len(problems)} input(s) failed; {written} file(s) written.",
            file=sys.stderr,
        )
    return 1 if failed else 0
