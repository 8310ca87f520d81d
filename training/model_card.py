"""Model cards of trained SRADM models and their upload to the Hugging Face Hub.

The card text is the part of the repository's top-level ``model_card.md`` between :data:`BEGIN` and :data:`END`,
a ``string.Template`` with ``${name}`` placeholders. :func:`card_values` computes every placeholder from a training
run; :func:`render_model_card` fills them (an unfilled placeholder is an error, never literal ``${...}`` text on the
Hub); :func:`write_model_card` checks the YAML metadata through ``huggingface_hub.ModelCard`` and adds the library
name and tags with diffusers' ``populate_model_card``; :func:`push_to_hub` uploads a finished output folder.
"""

from __future__ import annotations

import json
import math
import os
import re
import string
import subprocess
import urllib.parse
from typing import Any, Mapping

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPLATE_PATH = os.path.join(REPO_ROOT, "model_card.md")
BEGIN = "<!-- sradm-card-template:begin -->"
END = "<!-- sradm-card-template:end -->"
CARD_TAGS = ("sradm", "super-resolution", "diffusers", "image-to-image")
# Never uploaded: training state, validation grids and tracker logs (the output folder holds them all).
UPLOAD_IGNORE_PATTERNS = ["checkpoint-*", "*.tmp", "*.tmp/*", "validation/*", "logs/*", "debug/*", "*.old"]

_USAGE = {
    "diffusion": """Three ways to load this repository; each gives the same images for the same seed.

**1. With sradm-diffusers installed** (its own `SRADMPipeline`):

```python
import torch
from diffusers import DPMSolverMultistepScheduler
from PIL import Image
from sradm_diffusers import SRADMPipeline

pipe = SRADMPipeline.from_pretrained("${repo_id}")
lr = Image.open("input.png").convert("RGB")
sr = pipe(lr, num_inference_steps=100, generator=torch.Generator().manual_seed(0)).images[0]
sr.save("sr.png")

# Faster: 20 steps of SDE-DPM-Solver++ (`sradm upscale --scheduler dpm-sde`)
pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, algorithm_type="sde-dpmsolver++")
sr_fast = pipe(lr, num_inference_steps=20, generator=torch.Generator().manual_seed(0)).images[0]
```

**2. With diffusers' generic loader**, sradm-diffusers installed (importing it lets `DiffusionPipeline` return
its `SRADMPipeline`):

```python
import sradm_diffusers  # noqa: F401
import torch
from diffusers import DiffusionPipeline
from PIL import Image

pipe = DiffusionPipeline.from_pretrained("${repo_id}")
lr = Image.open("input.png").convert("RGB")
sr = pipe(lr, num_inference_steps=100, generator=torch.Generator().manual_seed(0)).images[0]
sr.save("sr_diffusers.png")
```

**3. Without sradm-diffusers**, from the code in this repository (`pipeline_sradm.py`, `unet/sradm_unet.py`,
`lr_encoder/sradm_rrdb_encoder.py`, generated from sradm-diffusers ${library_version} when the model was saved;
they need only torch, diffusers, numpy and pillow). Read them before you trust them:

```python
import torch
from diffusers import DiffusionPipeline
from PIL import Image

pipe = DiffusionPipeline.from_pretrained("${repo_id}", trust_remote_code=True)
lr = Image.open("input.png").convert("RGB")
sr = pipe(lr, num_inference_steps=100, generator=torch.Generator().manual_seed(0)).images[0]
sr.save("sr_remote_code.png")
```

Offline (`HF_HUB_OFFLINE=1`), diffusers ${diffusers_version} asks the Hub for the code's commit when a cached
repository is loaded with `trust_remote_code=True`; pass the cached folder instead:
`DiffusionPipeline.from_pretrained(huggingface_hub.snapshot_download("${repo_id}"), trust_remote_code=True)`.

Command line (sradm-diffusers installed):
`sradm upscale input.png -o sr.png --model ${repo_id} --steps 20 --scheduler dpm-sde`""",
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
    source_url: str | None = None,
) -> dict[str, str]:
    """Every placeholder value of the card of a run with flags ``args`` (an argparse namespace) and its results.

    ``source_url``: the git URL the install instructions name (default: :func:`git_source_url`; "" for none).
    """
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
    usage = string.Template(_USAGE[stage]).substitute(
        repo_id=repo_id, library_version=library_version, diffusers_version=diffusers.__version__)
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
        "install": install_text(source_url if source_url is not None else git_source_url()),
        "model_index": model_index_yaml(repo_id, metrics, validation, args),
    }


def git_source_url(root: str = REPO_ROOT) -> str | None:
    """The https URL of the ``origin`` remote of the sradm-diffusers clone at ``root`` (credentials removed), or None
    when it has none: the package is installed from git, so the card names where the training code came from."""
    try:
        result = subprocess.run(["git", "-C", root, "remote", "get-url", "origin"], capture_output=True, text=True,
                                timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    url = result.stdout.strip()
    if result.returncode != 0 or not url:
        return None
    scp = re.fullmatch(r"[\w.-]+@([\w.-]+):(.+)", url)  # git@github.com:org/repo.git
    if scp:
        url = f"https://{scp.group(1)}/{scp.group(2)}"
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("https", "http"):
        return None
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path.removesuffix(".git"), "", ""))


def install_text(source_url: str | None) -> str:
    """Install instructions: sradm-diffusers is not on PyPI; pip installs it from its git URL or a clone."""
    lines = ["sradm-diffusers is installed from its git repository (it is not on PyPI). Install torch for your "
             "hardware first (https://pytorch.org), then:", "", "```bash"]
    if source_url:
        lines.append(f'pip install "sradm-diffusers @ git+{source_url}"')
        lines.append("# or, in a clone of that repository: pip install -e .")
    else:
        lines.append("# in a clone of the sradm-diffusers repository")
        lines.append("pip install -e .")
    lines.append("```")
    return "\n".join(lines)


def model_index_yaml(repo_id: str, metrics: Mapping[str, float] | None, validation: Mapping[str, Any] | None,
                     args) -> str:
    """The ``metrics`` and ``model-index`` YAML of the card header: the measured validation metrics as the Hub reads
    them ("" without metrics)."""
    if not metrics:
        return ""
    from huggingface_hub import EvalResult, ModelCardData

    validation = dict(validation or {})
    names = {"psnr_y": ("psnr", f"PSNR-Y (dB, BT.601 Y, {args.scale}-pixel border cropped)"),
             "lr_psnr": ("psnr", f"LR-PSNR (dB, SR downscaled by 1/{args.scale} vs the LR input)")}
    dataset = getattr(args, "dataset_name", None)
    results = [
        EvalResult(
            task_type="image-to-image", task_name=f"{args.scale}x super-resolution",
            dataset_type=dataset or "imagefolder",
            dataset_name=f"{validation.get('num_images', '?')} validation image(s) "
                         f"({validation.get('source', 'held-out images')})",
            metric_type=names.get(key, (key, key))[0], metric_name=names.get(key, (key, key))[1],
            metric_value=round(float(value), 2),  # as the card's table shows it
        )
        for key, value in sorted(metrics.items())
        if math.isfinite(float(value))
    ]
    if not results:
        return ""
    metric_types = sorted({result.metric_type for result in results})
    return ModelCardData(model_name=repo_id, metrics=metric_types, eval_results=results).to_yaml().strip()


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
