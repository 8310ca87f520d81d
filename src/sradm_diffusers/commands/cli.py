"""The ``sradm`` command: ``upscale``, ``evaluate``, ``interpolate``, ``fuse``, ``demo`` (argument parsing only).

The work is done in the subcommands' modules beside this one (:mod:`.upscale`, :mod:`.evaluate`,
:mod:`.interpolate`, :mod:`.fuse`, :mod:`.demo`), imported only to run them. Exit status: 0 success,
1 some image failed (each failure is one ``error: <path>: <reason>`` line on stderr), 2 bad options or model
(one line on stderr), 130 interrupted (SIGINT), 143 terminated (SIGTERM). Both signals stop at once, keep the
outputs already written and remove the temporary file of a write in progress.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from ..defaults import (
    AUTO_TILE_PIXELS, DEFAULT_SAMPLING, DEFAULT_TILE, DEFAULT_TILE_OVERLAP, DEVICES, DTYPE_NAMES, FAST_SAMPLER_STEPS,
    LR_CONSISTENCY, MAX_SEED, MIN_TILE, SCHEDULERS,
)
from ..resources import SAMPLE_IMAGE
from .files import check_output_file
from .runtime import DEFAULT_MODEL, Terminated, UsageError, one_line, raise_terminated

__all__ = ["DEFAULT_MODEL", "build_parser", "main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are a :class:`UsageError` (one line, exit status 2) instead of usage + exit."""

    def error(self, message):
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _int_at_least(minimum: int, maximum: int | None = None):
    """argparse type: an integer >= ``minimum`` (and <= ``maximum``), with a message naming the bad value."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} must be >= {minimum}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"{text} is out of range; use {minimum}..{maximum}")
        return value

    return parse


_positive_int = _int_at_least(1)
_seed = _int_at_least(0, MAX_SEED)
_non_negative_int = _int_at_least(0)


LR_CONSISTENCY_DEFAULT = LR_CONSISTENCY
"""Deprecated alias of :data:`sradm_diffusers.defaults.LR_CONSISTENCY` (``--lr-consistency`` unless
``--no-lr-consistency``)."""

_CONSISTENCY = {
    "action": argparse.BooleanOptionalAction, "default": LR_CONSISTENCY_DEFAULT,
    "help": "back-project every step's x_0 so that imresize(SR, 1/s) reproduces the LR input (default: on; on the "
    "demo model it raised every metric on every held-out photo, README 'Beyond one sample')",
}


_FEW_STEP = (
    f"--scheduler {DEFAULT_SAMPLING.scheduler} --steps {DEFAULT_SAMPLING.steps} --strength {DEFAULT_SAMPLING.strength}"
)
_DEFAULT_SAMPLING_TEXT = (
    f"Without --scheduler, --steps and --strength it samples with the few-step default: {_FEW_STEP} "
    f"({DEFAULT_SAMPLING.unet_calls()} U-Net calls, as close to 100 DDPM steps as measured, README 'Few-step "
    "sampling'); giving any of them restores the other ones' own defaults."
)


def _add_sampling_options(parser: argparse.ArgumentParser, seed_default, seed_help: str) -> None:
    """The sampling options ``upscale`` and ``evaluate`` share (same names, same defaults)."""
    parser.add_argument(
        "--steps", type=_positive_int, default=None, metavar="N",
        help=f"denoising steps (default: {DEFAULT_SAMPLING.steps} with the few-step default; otherwise the "
        f"scheduler's num_train_timesteps, 100, for ddpm and {FAST_SAMPLER_STEPS} for the other schedulers)",
    )
    parser.add_argument(
        "--scheduler", choices=list(SCHEDULERS), default=None,
        help=f"sampler swapped in with from_config (default: {DEFAULT_SAMPLING.scheduler} with the few-step default, "
        "otherwise the model's own, DDPM for SRADM checkpoints); the fast ones use timestep_spacing='trailing'; "
        "dpm-sde is DPM-Solver++'s stochastic form",
    )
    parser.add_argument(
        "--strength", type=float, default=None, metavar="S",
        help="in (0, 1]: start from the RRDB output noised to an intermediate step and run the last int(steps * S) "
        f"steps; 1 starts from pure noise (default: {DEFAULT_SAMPLING.strength} with the few-step default, "
        "otherwise 1)",
    )
    parser.add_argument(
        "--samples", type=_positive_int, default=1, metavar="K", help="SR samples per image (default 1)"
    )
    parser.add_argument("--seed", type=_seed, default=seed_default, metavar="S", help=seed_help)
    parser.add_argument("--device", choices=list(DEVICES), default=None, help="default: cuda, else mps, else cpu")
    parser.add_argument(
        "--dtype", choices=list(DTYPE_NAMES), default="fp32",
        help="weights/compute dtype (default fp32). On a CPU, bf16 is faster only where the CPU has native bfloat16 "
        "(avx512_bf16 or amx_bf16 in /proc/cpuinfo; a note says so otherwise, where it is several times slower); "
        "fp16 is for cuda",
    )
    parser.add_argument(
        "--tile", type=_non_negative_int, default=None, metavar="N",
        help=f"sample in overlapping tiles of N x N input pixels (N >= {MIN_TILE}), blended seam-free, in bounded "
        f"memory; 0 never tiles (default, announced: tiles of {DEFAULT_TILE} on cuda when the whole image would not "
        f"fit into the GPU's free memory, on the CPU for inputs over {AUTO_TILE_PIXELS} pixels)",
    )
    parser.add_argument(
        "--tile-overlap", type=_non_negative_int, default=DEFAULT_TILE_OVERLAP, metavar="M",
        help=f"minimum overlap of neighbouring tiles in input pixels, less than N/2 (default {DEFAULT_TILE_OVERLAP})",
    )
    parser.add_argument("--lr-consistency", **_CONSISTENCY)


def _add_model_option(parser: argparse.ArgumentParser, what: str = "SRADM pipeline folder or Hub id") -> None:
    """``--model PATH_OR_REPO`` (default: the bundled demo), as every subcommand takes it."""
    parser.add_argument(
        "--model", default=None, metavar="PATH_OR_REPO", help=f"{what} (default: the bundled CPU demo model, 4x)"
    )


def _version() -> str:
    from .. import __version__

    return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sradm",
        description="SRADM diffusion super-resolution: upscale images, evaluate against bicubic and RRDB.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(
        dest="command", metavar="{upscale,evaluate,interpolate,fuse,demo}", parser_class=_Parser
    )
    commands.required = True

    _add_upscale_command(commands)
    _add_evaluate_command(commands)
    _add_manipulation_commands(commands)
    _add_demo_command(commands)
    return parser


_UPSCALE_DESCRIPTION = (
    "Super-resolve images by the model's upscale factor s. Outputs <name>_x<s>.png next to each "
    "input (or in -o DIR); --samples K writes <name>_x<s>_<k>.png, k=0..K-1. EXIF orientation is applied "
    "when loading; of an animated GIF or multi-page TIFF only the first frame is used (said in a note); "
    "transparency is composited on white (the output is RGB). Files are written to a temporary name and renamed, "
    "never half-written (a symlink is written through; a device or FIFO is refused); inputs are never "
    "overwritten. A bad input is reported in one line and skipped (exit status 1). " + _DEFAULT_SAMPLING_TEXT
)


def _add_upscale_command(commands) -> None:
    """``sradm upscale INPUT...``: the main job."""
    up = commands.add_parser("upscale", help="super-resolve image files", description=_UPSCALE_DESCRIPTION)
    up.add_argument("inputs", nargs="*", metavar="INPUT", help="image files, folders (non-recursive) or glob patterns")
    up.add_argument(
        "--sample", action="store_true",
        help=f"also upscale the bundled 128x128 sample photo ({os.path.basename(SAMPLE_IMAGE)}, NASA, public domain)",
    )
    up.add_argument(
        "-o", "--output", default=None, metavar="OUT",
        help="output folder (created if needed), or an image file name for one input and one sample",
    )
    _add_model_option(up, "saved SRADM pipeline folder or Hugging Face Hub id")
    _add_sampling_options(
        up, None, "seed: sample k of every image uses a generator seeded S+k (default: random noise)"
    )
    up.add_argument(
        "--uncertainty", action="store_true",
        help="with --samples K >= 2: also write the samples' mean <name>_x<s>_mean.png, their per-pixel std as a "
        "colour map of the SR size, <name>_x<s>_std.png, and its colour scale, <name>_x<s>_std_scale.png",
    )


_EVALUATE_DESCRIPTION = (
    "Evaluate on HR images: LR = MATLAB-bicubic imresize(HR, 1/s) rounded to uint8, or the files of "
    "--lr-dir. HR images whose size is not a multiple of s are cropped at the bottom/right to a multiple of s "
    "first. Metrics: PSNR/SSIM on RGB (no crop, scikit-image SSIM), PSNR/SSIM on Y (BT.601, s pixels "
    "cropped, Gaussian SSIM), LR-PSNR, LPIPS (AlexNet; n/a without local weights). Images that fail are "
    "reported, counted and excluded from every mean (exit status 1). SRADM is sampled with the same options "
    "and defaults as 'sradm upscale', so it scores what upscale writes for the same seed. "
    + _DEFAULT_SAMPLING_TEXT
)


def _add_evaluate_command(commands) -> None:
    """``sradm evaluate``: the paper's metrics for bicubic, RRDB and SRADM on an image set."""
    ev = commands.add_parser(
        "evaluate", help="PSNR/SSIM/LPIPS/LR-PSNR of bicubic, RRDB and SRADM on an image set",
        description=_EVALUATE_DESCRIPTION,
    )
    _add_model_option(ev, "SRADM pipeline folder or Hub id for rrdb and sradm")
    source = ev.add_mutually_exclusive_group(required=True)
    source.add_argument("--hr-dir", metavar="DIR", help="folder of HR images (sorted by name, non-recursive)")
    source.add_argument(
        "--dataset", metavar="NAME",
        help="datasets data set: a Hub id, a local image folder (imagefolder) or a .parquet file",
    )
    ev.add_argument(
        "--lr-dir", metavar="DIR",
        help="with --hr-dir: LR images with the same file names (or DIV2K-style <stem>x<s><ext>); HR must be s "
        "times their size (after cropping to a multiple of s)",
    )
    ev.add_argument(
        "--split", default=None, help="with --dataset: split (default: test, else validation, else the only one)"
    )
    ev.add_argument(
        "--image-column", default="image", metavar="C", help="with --dataset: HR image column (default image)"
    )
    ev.add_argument("--scale", type=_positive_int, required=True, metavar="S", help="SR factor; must match the model")
    ev.add_argument(
        "--methods", default="bicubic,rrdb,sradm",
        help="comma-separated subset of bicubic,rrdb,sradm (default all; bicubic alone needs no --model)",
    )
    ev.add_argument("--limit", type=_positive_int, default=None, metavar="N", help="evaluate only the first N images")
    ev.add_argument(
        "--center-crop", type=_positive_int, default=None, metavar="N",
        help="evaluate the central NxN HR window of each image (N a multiple of --scale; a side shorter than N is "
        "kept whole, with a note); keeps sampling fast on CPU",
    )
    ev.add_argument("--json", default=None, metavar="FILE", help="write all numbers to this JSON file (atomically)")
    _add_sampling_options(ev, 0, "seed: sample k of every image uses a generator seeded S+k (default 0)")


def _add_demo_command(commands) -> None:
    """``sradm demo``: the Gradio page."""
    demo = commands.add_parser(
        "demo", help="web page to try the model in a browser (needs the [demo] extra: Gradio)",
        description="Serve a Gradio page: upload an image, pick sampler, steps, seed and samples, compare bicubic "
        "and SR with a slider, download the PNG. Requests run one at a time. Stop with Ctrl+C.",
    )
    _add_model_option(demo)
    demo.add_argument("--host", default=None, metavar="H", help="address to listen on (default 127.0.0.1)")
    demo.add_argument("--port", type=_positive_int, default=None, metavar="P", help="default: first free from 7860")
    demo.add_argument("--device", choices=list(DEVICES), default=None, help="default: cuda, else mps, else cpu")


def _add_manipulation_commands(commands) -> None:
    """``sradm interpolate`` and ``sradm fuse`` (README, "Beyond one sample")."""
    it = commands.add_parser(
        "interpolate", help="SR images along a slerp between two starting noises (DDIM, eta 0)",
        description="Super-resolve one image from starting noises slerp(x_T(A), x_T(B), k/(N-1)), k = 0..N-1, "
        "with deterministic DDIM; -o .gif writes an animation (there and back), other extensions a strip. All "
        "frames are sampled in one batch: when they do not fit into memory, the error names how many do.",
    )
    it.add_argument("input", metavar="INPUT", help="the LR image file")
    it.add_argument(
        "-o", "--output", required=True, metavar="OUT",
        help="output file: .gif writes an animation (there and back), .png/.jpg/.webp the frames side by side",
    )
    _add_model_option(it)
    it.add_argument("--frames", type=_int_at_least(2), default=8, metavar="N", help="frames, 2 or more (default 8)")
    it.add_argument(
        "--seeds", type=_seed, nargs=2, default=(0, 1), metavar=("A", "B"),
        help="seeds of the starting noises of the first and the last frame (default 0 1)",
    )
    it.add_argument(
        "--steps", type=_positive_int, default=20, metavar="N",
        help="DDIM steps (default 20; always DDIM with eta 0 from pure noise, so each frame is a deterministic "
        "function of its noise)",
    )
    it.add_argument("--device", choices=list(DEVICES), default=None, help="default: cuda, else mps, else cpu")
    it.add_argument("--lr-consistency", **_CONSISTENCY)
    fu = commands.add_parser(
        "fuse", help="SR image whose masked region takes its content from a reference image",
        description="Content fusion: the masked part of x_t follows the reference's noised residual at every step "
        "(feathered mask); REFERENCE and MASK have the SR size. MASK is an 8-bit image read as value/255 (white 255 "
        "= reference, black 0 = the model's own content; colour masks by their luminance); 16-bit and float images "
        "are refused. Sampled from pure noise (strength 1), so the reference shapes the masked region from the first "
        "step on; without --scheduler and --steps, the model's own scheduler (DDPM, 100 steps). Inputs are never "
        "overwritten.",
    )
    fu.add_argument("input", metavar="INPUT", help="the LR image file")
    fu.add_argument(
        "--reference", required=True, metavar="REFERENCE",
        help="image of the SR size (s times INPUT) whose content fills the masked region",
    )
    fu.add_argument(
        "--mask", required=True, metavar="MASK",
        help="8-bit greyscale image of the SR size: white (255) takes the reference, black (0) the model's sample",
    )
    fu.add_argument("-o", "--output", required=True, metavar="OUT", help="output image file (e.g. fused.png)")
    _add_model_option(fu)
    fu.add_argument(
        "--feather", type=float, default=8.0, metavar="PX",
        help="width in SR pixels of the soft border blended between reference and sample, 0 (hard) up to the "
        "image's larger side (default 8)",
    )
    fu.add_argument(
        "--steps", type=_positive_int, default=None, metavar="N",
        help=f"denoising steps (default: 100 for ddpm, the model's own; {FAST_SAMPLER_STEPS} for the other schedulers)",
    )
    fu.add_argument(
        "--scheduler", choices=list(SCHEDULERS), default=None,
        help="sampler swapped in with from_config (default: the model's own, DDPM)",
    )
    fu.add_argument("--seed", type=_seed, default=0, metavar="S", help="seed of the noise (default 0)")
    fu.add_argument("--device", choices=list(DEVICES), default=None, help="default: cuda, else mps, else cpu")
    fu.add_argument("--lr-consistency", **_CONSISTENCY)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``sradm`` console script. Returns the exit status (see the module docstring)."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # diffusers may import transformers: keep stderr clean
    parser = build_parser()
    try:
        previous = signal.signal(signal.SIGTERM, raise_terminated)
    except ValueError:  # not the main thread: leave signals alone
        previous = None
    try:
        args = parser.parse_args(argv)
        if args.command == "upscale":
            from .upscale import run_upscale

            inputs = [*args.inputs, *([SAMPLE_IMAGE] if args.sample else [])]
            if not inputs:
                raise UsageError("give at least one INPUT image, folder or glob (or --sample for the bundled photo).")
            return run_upscale(
                inputs, output=args.output, model=args.model, steps=args.steps, scheduler=args.scheduler,
                seed=args.seed, samples=args.samples, device=args.device, dtype=args.dtype,
                lr_consistency=args.lr_consistency, uncertainty=args.uncertainty,
                tile=args.tile, tile_overlap=args.tile_overlap, strength=args.strength,
            )
        if args.command == "interpolate":
            from .interpolate import run_interpolate

            return run_interpolate(
                args.input, args.output, model=args.model, frames=args.frames, seeds=tuple(args.seeds),
                steps=args.steps, device=args.device, lr_consistency=args.lr_consistency,
            )
        if args.command == "fuse":
            from .fuse import run_fuse

            return run_fuse(
                args.input, args.reference, args.mask, args.output, model=args.model, feather=args.feather,
                steps=args.steps, scheduler=args.scheduler, seed=args.seed, device=args.device,
                lr_consistency=args.lr_consistency,
            )
        if args.command == "demo":
            from .demo import launch

            launch(model=args.model, host=args.host, port=args.port, device=args.device)
            return EXIT_OK
        from .evaluate import run_evaluate

        if args.lr_dir is not None and args.hr_dir is None:
            raise UsageError("--lr-dir needs --hr-dir (with --dataset, LR images are always made with imresize).")
        if args.json is not None:
            check_output_file(args.json, "--json")
        return run_evaluate(
            model=args.model, hr_dir=args.hr_dir, lr_dir=args.lr_dir, dataset=args.dataset, split=args.split,
            image_column=args.image_column, scale=args.scale, methods=args.methods, steps=args.steps,
            scheduler=args.scheduler, samples=args.samples, limit=args.limit, json_path=args.json, seed=args.seed,
            device=args.device, center_crop=args.center_crop, lr_consistency=args.lr_consistency,
            strength=args.strength, dtype=args.dtype, tile=args.tile, tile_overlap=args.tile_overlap,
        )
    except UsageError as error:
        print(f"sradm: error: {one_line(error)}", file=sys.stderr)
        return EXIT_USAGE
    except Terminated:
        print("sradm: terminated (SIGTERM); outputs already written are kept", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print("sradm: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
