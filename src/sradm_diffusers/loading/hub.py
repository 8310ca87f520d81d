"""Finding SRADM pipeline folders: Hub repositories (through huggingface_hub's cache) and local checks.

Stock ``DiffusionPipeline.download`` treats the code an SRADM repository ships (``pipeline_sradm.py`` and the
component modules, for ``trust_remote_code=True`` without this package) as code to run, and refuses it without
``trust_remote_code``. The installed package runs its own code, so ``SRADMPipeline.download`` fetches the configs and
weights alone with ``huggingface_hub.snapshot_download``, which honours ``HF_HUB_OFFLINE``, ``cache_dir``,
``revision`` and ``token``.
"""

from __future__ import annotations

import json
import logging
import os

from huggingface_hub import snapshot_download
from huggingface_hub import constants as hub_constants
from huggingface_hub.errors import LocalEntryNotFoundError

PIPELINE_FILES = ["model_index.json", "*/config.json", "*/scheduler_config.json", "*.safetensors", "README.md"]
COMPONENTS = ("unet", "lr_encoder", "scheduler")
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
PICKLE_WEIGHTS_NAME = "diffusion_pytorch_model.bin"

logger = logging.getLogger(__name__)


def resolve_pipeline_folder(
    repo_id: str,
    cache_dir: str | None = None,
    force_download: bool = False,
    proxies: dict | None = None,
    local_files_only: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    **_: object,
) -> str:
    """Return the local folder of the pipeline repository ``repo_id`` (downloading it unless offline)."""
    offline = bool(local_files_only) or hub_constants.HF_HUB_OFFLINE
    try:
        return snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=cache_dir,
            force_download=force_download,
            proxies=proxies,
            local_files_only=offline,
            token=token,
            allow_patterns=PIPELINE_FILES,
        )
    except LocalEntryNotFoundError as error:
        raise OSError(
            f"The SRADM pipeline '{repo_id}' (revision {revision or 'main'}) is not in the local Hugging Face cache "
            f"and downloading is {'disabled (HF_HUB_OFFLINE=1 or local_files_only=True)' if offline else 'not possible'}"
            ". Download it once with network access, or pass the path of a local pipeline folder."
        ) from error


def check_pipeline_folder(folder: str | os.PathLike) -> None:
    """Raise ``ValueError`` naming what is missing if ``folder`` is not a saved SRADM pipeline."""
    folder = os.fspath(folder)
    index = os.path.join(folder, "model_index.json")
    if not os.path.isfile(index) and os.path.isdir(os.path.join(folder, ".export.tmp")):
        raise ValueError(
            f"{folder}: the training run's final export into this folder was interrupted (.export.tmp is left); "
            "run the same training command again with --resume_from_checkpoint latest to finish it."
        )
    if not os.path.isfile(index):
        config = os.path.join(folder, "config.json")
        if os.path.isfile(config):
            with open(config, encoding="utf-8") as handle:
                class_name = json.load(handle).get("_class_name", "a single model")
            raise ValueError(
                f"{folder} holds {class_name}, not a pipeline (no model_index.json). Load it with "
                f"{class_name}.from_pretrained('{folder}'), or pass the folder written by SRADMPipeline.save_pretrained."
            )
        raise ValueError(
            f"{folder} is not an SRADM pipeline folder: {index} does not exist. Pass the folder written by "
            "SRADMPipeline.save_pretrained (model_index.json, unet/, lr_encoder/, scheduler/)."
        )
    with open(index, encoding="utf-8") as handle:
        try:
            entries = json.load(handle)
        except json.JSONDecodeError as error:
            raise ValueError(f"{index} is not valid JSON ({error}); re-save the pipeline.") from error
    missing = [name for name in COMPONENTS if name not in entries]
    if missing:
        raise ValueError(f"{index} lacks the components {missing}; it is not an SRADM pipeline.")
    for name in COMPONENTS:
        config_name = "scheduler_config.json" if name == "scheduler" else "config.json"
        path = os.path.join(folder, name, config_name)
        if not os.path.isfile(path):
            raise ValueError(f"{path} is missing; the pipeline folder is incomplete (re-save or re-download it).")
        try:
            with open(path, encoding="utf-8") as handle:
                config = json.load(handle)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(
                f"{path} is not valid JSON ({error}); the pipeline folder is damaged (re-save it)."
            ) from error
        if not isinstance(config, dict):
            raise ValueError(f"{path} must hold a JSON object; the pipeline folder is damaged (re-save it).")
    _check_scheduler_config(os.path.join(folder, "scheduler", "scheduler_config.json"))
    _check_weight_files(folder)
    _note_pickle_weights(folder)


def _check_scheduler_config(path: str) -> None:
    with open(path, encoding="utf-8") as handle:
        steps = json.load(handle).get("num_train_timesteps", 1000)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(
            f"The scheduler config {path} is invalid: num_train_timesteps={steps!r} (must be an integer >= 1, the "
            "number of diffusion steps the model was trained with; 100 for SRADM). Fix or re-save it."
        )


def _note_pickle_weights(folder: str) -> None:
    """Say once per load when a component has only ``.bin`` (pickle) weights: diffusers reads them with torch's
    weights-only loader, which refuses pickles that would run code, but safetensors is the safe default."""
    pickled = [
        name for name in ("unet", "lr_encoder")
        if not os.path.isfile(os.path.join(folder, name, WEIGHTS_NAME))
        and os.path.isfile(os.path.join(folder, name, PICKLE_WEIGHTS_NAME))
    ]
    if pickled:
        logger.warning(
            "%s: %s hold only .bin weights; loading them with torch's weights-only loader (no code is run). "
            "Re-save the pipeline (save_pretrained writes safetensors) to avoid pickle files.", folder,
            " and ".join(pickled),
        )


def _first_shape_mismatch(folder: str) -> str | None:
    """Compare each model component's config with its safetensors header; describe the first disagreement."""
    from safetensors import safe_open

    from ..models import RRDBEncoder, SRADMUNet

    for name, model_class in (("unet", SRADMUNet), ("lr_encoder", RRDBEncoder)):
        weights = os.path.join(folder, name, "diffusion_pytorch_model.safetensors")
        if not os.path.isfile(weights):
            continue
        expected = model_class.from_config(model_class.load_config(os.path.join(folder, name))).state_dict()
        with safe_open(weights, framework="pt") as handle:
            for key in handle.keys():
                stored = tuple(handle.get_slice(key).get_shape())
                wanted = tuple(expected[key].shape) if key in expected else None
                if stored != wanted:
                    described = f"shape {wanted}" if wanted else "no such parameter"
                    return f"{weights}: '{key}' has shape {stored} but {name}/config.json describes {described}"
    return None


def _check_weight_files(folder: str) -> None:
    """Open each model component's safetensors file (a truncated or damaged header fails here) and check that it
    holds every weight its config needs: diffusers would otherwise initialise a missing one at random."""
    import torch
    from safetensors import safe_open

    from ..models import RRDBEncoder, SRADMUNet

    for name, model_class in (("unet", SRADMUNet), ("lr_encoder", RRDBEncoder)):
        weights = os.path.join(folder, name, WEIGHTS_NAME)
        if not os.path.isfile(weights):
            continue
        try:
            with safe_open(weights, framework="pt") as handle:
                stored = set(handle.keys())
        except Exception as error:  # noqa: BLE001 - safetensors raises its own error types
            raise ValueError(
                f"{weights} is damaged or truncated ({' '.join(str(error).split())[:200]}); the model folder is "
                "incomplete: re-save or re-download it."
            ) from error
        with torch.device("meta"):
            expected = model_class.from_config(model_class.load_config(os.path.join(folder, name))).state_dict()
        missing = sorted(set(expected) - stored)
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise ValueError(
                f"{weights} lacks the weight '{missing[0]}'{more} that {name}/config.json needs: the model folder is "
                "incomplete (or its config belongs to another model); re-save or re-download it."
            )


def explain_load_error(source: str | os.PathLike, error: Exception) -> Exception:
    """Wrap a low-level loading error (e.g. a state-dict size mismatch) in one that names the file and the fix."""
    message = str(error)
    if "Unable to load weights" in message:
        return ValueError(
            f"{message.strip()[:300]}: the file is damaged or truncated; re-save or re-download the model."
        )
    if "size mismatch" not in message and "expected shape" not in message:
        return error
    detail = _first_shape_mismatch(os.fspath(source)) if os.path.isdir(source) else None
    return ValueError(
        f"The weights in {source} do not match the architecture in its config.json files: "
        f"{detail or message.strip()[:800]}. The config and the weights were written by different models; "
        "re-save the pipeline from the model that produced the weights."
    )
