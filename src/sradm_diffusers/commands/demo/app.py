"""The Gradio page of ``sradm demo`` (and of the Spaces app in ``spaces/sradm-demo/``).

One event does the work: :func:`upscale_handler` turns the page's raw values into a :class:`DemoRunner` request and
its results into the page's outputs; bad input becomes a ``gr.Error`` message in the page. The event listener runs
with ``preprocess=False`` so that an unreadable upload reaches the package's own image loader (and its message)
instead of failing inside Gradio's image preprocessing; the values are checked by :class:`DemoRunner`.
"""

from __future__ import annotations

import os

# Before gradio is imported: no telemetry and no version check (nothing leaves the machine).
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import shutil  # noqa: E402
import tempfile  # noqa: E402
import weakref  # noqa: E402

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import PIL.Image  # noqa: E402

from ...resources import SAMPLE_IMAGE  # noqa: E402
from ..runtime import ImageError, UsageError, one_line  # noqa: E402
from .runner import MAX_SAMPLES, DemoResult, DemoRunner  # noqa: E402

TITLE = "SRADM super-resolution"


class _RunFolders:
    """A private temporary folder per request; the previous request's folder is removed when the next one starts
    (Gradio has copied its files into its own cache by then)."""

    def __init__(self):
        self.root = tempfile.mkdtemp(prefix="sradm-demo-")
        self._last: str | None = None
        weakref.finalize(self, shutil.rmtree, self.root, ignore_errors=True)  # also runs at interpreter exit

    def new(self) -> str:
        if self._last is not None:
            shutil.rmtree(self._last, ignore_errors=True)
        self._last = tempfile.mkdtemp(dir=self.root)
        return self._last


def _upload_path(payload) -> tuple[str, str]:
    """The raw value of the image input (Gradio's FileData as a dict) -> (server path of the upload, file name)."""
    if payload is None:
        raise UsageError("Upload an image first (or click the sample below the input).")
    path = payload.get("path") if isinstance(payload, dict) else None
    if not path:
        raise UsageError("The image did not reach the server; upload it again.")
    name = os.path.basename(payload.get("orig_name") or path)
    return path, name


def uncertainty_image(std: np.ndarray) -> tuple[PIL.Image.Image, str]:
    """(H, W) per-pixel standard deviation -> a greyscale picture scaled to its maximum, and a caption."""
    peak = float(std.max())
    scaled = std / peak if peak > 0 else std
    picture = PIL.Image.fromarray((scaled * 255.0).round().astype(np.uint8), mode="L")
    return picture, f"Per-pixel std over the samples; white = {peak:.3f} (image range 0..1)"


def page_outputs(result: DemoResult, status: str):
    """A :class:`DemoResult` -> values of (slider, gallery, uncertainty, files, status, shown); ``shown`` keeps
    (bicubic, samples) for :func:`compare_selected`."""
    gallery = [(image, f"sample {k} (seed {result.seed + k})") for k, image in enumerate(result.samples)]
    # gr.update (not a new gr.Image) so that the page's component, with its PNG format, encodes the picture.
    if result.uncertainty is None:
        uncertainty = gr.update(value=None, visible=False)
    else:
        picture, caption = uncertainty_image(result.uncertainty)
        uncertainty = gr.update(value=picture, label=caption, visible=True)
    shown = (result.bicubic, result.samples)
    return (result.bicubic, result.samples[0]), gallery, uncertainty, result.files, status, shown


def compare_selected(shown, event: gr.SelectData):
    """A click on a gallery sample puts it in the slider, against the same bicubic image."""
    if not shown:
        return gr.update()
    bicubic, samples = shown
    return gr.update(value=(bicubic, samples[event.index]), label=f"Bicubic | SRADM sample {event.index}")


def make_handler(runner: DemoRunner):
    """The upscale event's function, bound to ``runner``."""
    folders = _RunFolders()

    def upscale_handler(
        image, sampler, steps, seed, samples, lr_consistency=False, strength=1.0, progress=gr.Progress()
    ):
        try:
            path, name = _upload_path(image)
            result = runner(
                path, sampler, steps, seed, samples, output_dir=folders.new(), name=name,
                on_step=lambda done, total: progress((done, total), desc="Denoising", unit="steps"),
                lr_consistency=lr_consistency, strength=strength,
            )
        except (UsageError, ImageError) as error:
            raise gr.Error(one_line(error), title="Cannot upscale", print_exception=False) from error
        except RuntimeError as error:  # e.g. out of memory
            raise gr.Error(f"Upscaling failed: {one_line(error)}", title="Cannot upscale") from error
        low = result.bicubic.width // runner.scale, result.bicubic.height // runner.scale
        status = (
            f"{low[0]}x{low[1]} → {result.bicubic.width}x{result.bicubic.height} with {sampler}, "
            f"{result.steps} steps, strength {result.strength:g} ({int(result.steps * result.strength)} U-Net calls), "
            f"{len(result.samples)} sample(s), in {result.seconds:.1f} s."
        )
        return page_outputs(result, status)

    return upscale_handler


def build_demo(runner: DemoRunner) -> gr.Blocks:
    """The page: inputs on the left, results on the right, the upscale event queued one at a time."""
    default_sampler = runner.default_sampler
    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        model = (
            "The bundled model is a small demo trained on a CPU: expect modest detail."
            if runner.model_name is None else f"Model: `{runner.model_name}`."
        )
        device = "CPU" if runner.pipe.device.type == "cpu" else runner.pipe.device.type.upper()
        gr.Markdown(
            f"# {TITLE} ({runner.scale}x)\nDiffusion super-resolution (SRADM). {model} Sampling runs on this "
            f"server's {device}, one request at a time."
        )
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(
                    label="Low-resolution image", type="filepath", sources=["upload", "clipboard"],
                    image_mode=None, height=280, elem_id="input-image",
                )
                gr.Examples([[SAMPLE_IMAGE]], inputs=[image], label="Sample (click to use)")
                sampler = gr.Dropdown(runner.samplers, value=default_sampler, label="Sampler", elem_id="sampler")
                default_steps, default_strength = runner.sampler_defaults(default_sampler)
                steps = gr.Slider(
                    1, runner.max_steps, value=default_steps, step=1, label="Steps", elem_id="steps",
                )
                strength = gr.Slider(
                    0.01, 1.0, value=default_strength, step=0.01, elem_id="strength",
                    label="Strength (below 1: start from the RRDB output, int(steps x strength) U-Net calls)",
                )
                with gr.Row():
                    seed = gr.Number(value=0, precision=0, minimum=0, label="Seed", elem_id="seed")
                    samples = gr.Slider(1, MAX_SAMPLES, value=1, step=1, label="Samples", elem_id="samples")
                # Options the pipeline gains go here, one control each. Tiling needs none: the request budget
                # (MAX_INPUT_PIXELS) keeps every input within one tile's worth of memory.
                lr_consistency = gr.Checkbox(
                    value=runner.default_lr_consistency, label="LR consistency (downscaled SR reproduces the input)",
                    elem_id="lr_consistency",
                )
                button = gr.Button("Upscale", variant="primary", elem_id="upscale")
            with gr.Column(scale=2):
                comparison = gr.ImageSlider(
                    label="Bicubic | SRADM (drag the handle)", type="pil", format="png", elem_id="comparison",
                )
                status = gr.Markdown(elem_id="status")
                gallery = gr.Gallery(
                    label="Samples", format="png", columns=MAX_SAMPLES, height=220, object_fit="contain",
                    preview=False, elem_id="gallery",
                )
                uncertainty = gr.Image(
                    label="Uncertainty", format="png", height=320, visible=False, elem_id="uncertainty"
                )
                shown = gr.State()
                files = gr.File(
                    label="Full-resolution PNG", file_count="multiple", interactive=False, elem_id="download"
                )

        sampler.change(runner.sampler_defaults, inputs=sampler, outputs=[steps, strength], queue=False)
        gallery.select(compare_selected, inputs=shown, outputs=comparison, queue=False)
        button.click(
            make_handler(runner),
            inputs=[image, sampler, steps, seed, samples, lr_consistency, strength],
            outputs=[comparison, gallery, uncertainty, files, status, shown],
            preprocess=False,
            concurrency_limit=1,
        )
    demo.queue(default_concurrency_limit=1)
    return demo


def launch(
    model: str | None = None, host: str | None = None, port: int | None = None, device: str | None = None
) -> None:
    """Load ``model`` (None: the bundled demo) and serve the page until interrupted. ``host``/``port`` None leave
    Gradio's defaults (``GRADIO_SERVER_NAME``/``GRADIO_SERVER_PORT``, else 127.0.0.1 and the first free port from
    7860), which is what Hugging Face Spaces relies on."""
    runner = DemoRunner.from_model(model, device)
    build_demo(runner).launch(server_name=host, server_port=port, show_error=False)


__all__ = ["build_demo", "launch", "make_handler"]
