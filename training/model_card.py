"""Model cards of trained SRADM models and their upload to the Hugging Face Hub.

The card text is the part of the repository's top-level ``model_card.md`` between :data:`BEGIN` and :data:`END`,
a ``string.Template`` with ``${name}`` placeholders. :func:`card_values` computes every placeholder from a training
run; :func:`render_model_card` fills them (an unfilled placeholder is an error, never literal ``${...}`` text on the
Hub); :func:`write_model_card` checks the YAML metadata through ``huggingface_hub.ModelCard`` and adds the library
name and tags with diffusers' ``populate_model_card``; :func:`push_to_hub` uploads a finished output folder.
"""

from __future__ import annotations

import json
import os
import string
from typing import Any, Mapping

TEMPLATE_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "model_card.md")
BEGIN = "<!-- sradm-card-template:begin -->"
END = "<!-- sradm-card-template:end -->"
CARD_TAGS = ("sradm", "super-resolution", "diffusers", "image-to-image")
# Never uploaded: training state, validation grids and tracker logs (the output folder holds them all).
UPLOAD_IGNORE_PATTERNS = ["checkpoint-*", "*.tmp", "*.tmp/*", "validation/*", "logs/*", "debug/*", "*.old"]

_USAGE = {
    "diffusion": """```python
import torch
from PIL import Image
from diffusers import DPMSolverMultistepScheduler
from sradm_diffusers import SRADMPipeline

pipe = SRADMPipeline.from_pretrained("${repo_id}")
lr = Image.open("input.png").convert("RGB")
sr = pipe(lr, num_inference_steps=100, generator=torch.Generator().manual_seed(0)).images[0]
sr.save("sr.png")

# Faster: 20 steps of DPM-Solver++
pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
sr = pipe(lr, num_inference_steps=20).images[0]
```

Command line: `sradm upscale input.png -o sr.png --model ${repo_id} --steps 20 --scheduler dpm`""",
    "encoder": """This folder holds the RRDB encoder alone: the deterministic regression SR network ("RRDB" baseline)
and the frozen LR encoder of the SRADM diffusion stage (`train.py --stage diffusion --pretrained_encoder ${repo_id}`).

```python
import numpy as np
import torch
from PIL import Image
from sradm_diffusers import RRDBEncoder

encoder = RRDBEncoder.from_pretrained("${repo_id}").eval()
lr = torch.from_numpy(np.asarray(Image.open("input.png").convert("RGB"))).permute(2, 0, 1)[None] / 127.5 - 1
with torch.no_grad():
    sr = encoder.upscale(lr).clamp(-1, 1)
Image.fromarray(((sr[0].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()).save("sr.png")
```""",
}

_DESCRIPTION = {
    "diffusion": "An SRADM diffusion super-resolution pipeline (`SRADMPipeline`: RRDB LR encoder + attention U-Net "
    "noise predictor + DDPM scheduler), trained with `training/train.py` of sradm-diffusers.",
    "encoder": "The RRDB LR encoder of SRADM (`RRDBEncoder`), trained alone as a regression SR network with L1 loss "
    "(stage 1 of SRADM training) with `training/train.py` of sradm-diffusers.",
}


def load_template(path: str | None = None) -> str:
    """The card template: the text between :data:`BEGIN` and :data:`END` of ``path`` (default ``model_card.md``).

    Raises:
        ValueError: the file lacks the markers.
    """
    path = path or TEMPLATE_PATH
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    start, stop = text.find(BEGIN), text.find(END)
    if start < 0 or stop < start:
        raise ValueError(f"{path} must contain the card template between {BEGIN!r} and {END!r}.")
    return text[start + len(BEGIN) : stop].strip("\n") + "\n"


def template_placeholders(template: str) -> set[str]:
    """Names of the ``${name}`` / ``$name`` placeholders of a template."""
    names = set()
    for match in string.Template.pattern.finditer(template):
        name = match.group("named") or match.group("braced")
        if name:
            names.add(name)
    return names


def render_model_card(values: Mapping[str, Any], template: str | None = None) -> str:
    """Fill every placeholder of ``template`` (default: :func:`load_template`) from ``values``.

    Raises:
        ValueError: a placeholder without a value (names all of them).
    """
    template = load_template() if template is None else template
    missing = sorted(template_placeholders(template) - set(values))
    if missing:
        raise ValueError(f"Model card placeholders without a value: {missing}; add them to card_values().")
    return string.Template(template).substitute({key: str(value) for key, value in values.items()})


def _fmt(value: float) -> str:
    return f"{value:.2f}" if value == value and abs(value) != float("inf") else str(value)


def _validation_text(metrics: Mapping[str, float] | None, validation: Mapping[str, Any] | None, scale: int) -> str:
    if not metrics:
        return "No validation was run for this model."
    validation = dict(validation or {})
    lines = [
        f"Measured by the training script at step {validation.get('step', '?')} on {validation.get('num_images', '?')} "
        f"validation image(s) ({validation.get('source', 'held-out images')}); LR inputs made with MATLAB-compatible "
        f"bicubic downscaling by {scale}.",
    ]
    if validation.get("sampler"):
        lines.append(f"SR samples drawn with {validation['sampler']}.")
    lines += [
        "",
        "| Metric | Value |",
        "|---|---|",
        f"| PSNR-Y (dB, BT.601 Y, {scale}-pixel border cropped) | {_fmt(metrics['psnr_y'])} |",
        f"| LR-PSNR (dB, RGB, SR downscaled by 1/{scale} vs the LR input) | {_fmt(metrics['lr_psnr'])} |",
    ]
    for key in sorted(set(metrics) - {"psnr_y", "lr_psnr"}):
        lines.append(f"| {key} | {_fmt(metrics[key])} |")
    lines += ["", "These are quick in-training numbers on few images, not a benchmark; use `sradm evaluate` for that."]
    return "\n".join(lines)


def _dataset_text(args) -> str:
    if getattr(args, "dataset_name", None):
        text = f"[{args.dataset_name}](https://huggingface.co/datasets/{args.dataset_name})"
        if getattr(args, "dataset_config_name", None):
            text += f" (config `{args.dataset_config_name}`)"
    elif getattr(args, "train_data_dir", None):
        text = f"local image folder `{os.path.basename(os.path.normpath(args.train_data_dir))}`"
    else:
        text = "unspecified"
    if getattr(args, "preprocess", "none") not in (None, "none"):
        text += f", preprocessing `{args.preprocess}`"
    return text


def card_values(
    args,
    *,
    stage: str,
    global_step: int,
    num_parameters: int,
    num_processes: int = 1,
    metrics: Mapping[str, float] | None = None,
    validation: Mapping[str, Any] | None = None,
    repo_id: str | None = None,
) -> dict[str, str]:
    """Every placeholder value of the card of a run with flags ``args`` (an argparse namespace) and its results."""
    import diffusers

    try:
        from sradm_diffusers import __version__ as library_version
    except ImportError:  # pragma: no cover - the package is always installed with the script
        library_version = "unknown"

    repo_id = repo_id or getattr(args, "hub_model_id", None) or os.path.basename(os.path.normpath(args.output_dir))
    config = {k: v for k, v in sorted(vars(args).items()) if k not in ("hub_token",)}
    per_device = int(args.train_batch_size)
    accumulation = int(args.gradient_accumulation_steps)
    title = f"SRADM {args.scale}x super-resolution ({stage} stage, {args.preset})"
    usage = string.Template(_USAGE[stage]).substitute(repo_id=repo_id)
    if stage == "diffusion":
        loss = f"{args.loss.upper()} between true and predicted noise (epsilon prediction)"
    else:
        loss = "L1 between the regression SR output and the HR patch"
    if args.lr_scheduler == "step":
        schedule = f"step (x{args.lr_decay_factor:g} every {args.lr_decay_steps} steps)"
    else:
        schedule = args.lr_scheduler
    return {
        "license": args.license,
        "datasets": json.dumps([args.dataset_name] if getattr(args, "dataset_name", None) else []),
        "title": title,
        "description": _DESCRIPTION[stage],
        "scale": str(args.scale),
        "preset": args.preset,
        "num_parameters": f"{num_parameters / 1e6:.2f}M",
        "dataset": _dataset_text(args),
        "library_version": library_version,
        "diffusers_version": diffusers.__version__,
        "usage": usage,
        "stage": stage,
        "steps": str(global_step),
        "resolution": str(args.resolution),
        "batch_size": str(per_device * accumulation * num_processes),
        "num_processes": str(num_processes),
        "per_device_batch_size": str(per_device),
        "gradient_accumulation_steps": str(accumulation),
        "learning_rate": f"{args.learning_rate:g}",
        "lr_scheduler": schedule,
        "loss": loss,
        "ema": f"yes (decay {args.ema_decay:g}); the published weights are the EMA weights" if args.use_ema else "no",
        "mixed_precision": args.mixed_precision,
        "validation": _validation_text(metrics, validation, args.scale),
        "config_json": json.dumps(config, indent=2, default=str),
        "residual_scale": f"{getattr(args, 'residual_scale', 2.0):g}",
        "repo_id": repo_id,
    }


def write_model_card(output_dir: str, values: Mapping[str, Any], template: str | None = None) -> str:
    """Render the card into ``output_dir/README.md``; returns its path.

    The text goes through ``huggingface_hub.ModelCard`` (which parses the YAML header, so a broken header fails
    here rather than on the Hub) and diffusers' ``populate_model_card`` (library name and the SRADM tags).
    """
    from diffusers.utils.hub_utils import populate_model_card
    from huggingface_hub import ModelCard

    card = ModelCard(render_model_card(values, template))
    present = set(card.data.tags or [])
    populate_model_card(card, tags=[tag for tag in CARD_TAGS if tag not in present])
    path = os.path.join(output_dir, "README.md")
    card.save(path)
    return path


def push_to_hub(
    output_dir: str,
    repo_id: str,
    token: str | None = None,
    commit_message: str = "Upload SRADM model trained with sradm-diffusers",
    private: bool | None = None,
) -> str:
    """Create ``repo_id`` if needed and upload ``output_dir`` without checkpoints, validation images and logs.

    Returns the repository id the Hub reports (``create_repo``'s answer may normalise the name).
    """
    import huggingface_hub

    url = huggingface_hub.create_repo(repo_id, token=token, exist_ok=True, private=private, repo_type="model")
    repo_id = getattr(url, "repo_id", None) or repo_id
    huggingface_hub.upload_folder(
        repo_id=repo_id,
        folder_path=output_dir,
        token=token,
        repo_type="model",
        commit_message=commit_message,
        ignore_patterns=UPLOAD_IGNORE_PATTERNS,
    )
    return repo_id
