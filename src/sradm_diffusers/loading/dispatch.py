"""``DiffusionPipeline.from_pretrained`` on an SRADM folder or Hub repository returns this package's SRADMPipeline.

A saved SRADM folder names the pipeline module it ships (``"_class_name": ["pipeline_sradm", "SRADMPipeline"]``),
which stock diffusers runs only with ``trust_remote_code=True``; folders saved before that name the class alone
(``"SRADMPipeline"``), which diffusers looks up in its own namespace and does not find. Importing
``sradm_diffusers`` wraps ``DiffusionPipeline.from_pretrained`` once: called on ``DiffusionPipeline`` itself, without
``trust_remote_code`` or ``custom_pipeline``, for a folder or repository whose ``model_index.json`` names
``SRADMPipeline``, it returns ``SRADMPipeline.from_pretrained(...)`` with the same arguments (the installed code, not
the shipped copy). Every other call goes to diffusers unchanged; ``trust_remote_code=True`` still loads the shipped
code, as asked.
"""

from __future__ import annotations

import functools
import json
import os

from diffusers import DiffusionPipeline

PIPELINE_CLASS_NAME = "SRADMPipeline"


def _model_index(path: str | os.PathLike, kwargs: dict) -> dict | None:
    """``model_index.json`` of a local folder or (from the cache, or a download) of a Hub repository; None if there is
    none to read (diffusers then reports the problem itself)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        index = os.path.join(path, "model_index.json")
    else:
        from huggingface_hub import hf_hub_download

        try:
            index = hf_hub_download(
                path, "model_index.json", revision=kwargs.get("revision"), cache_dir=kwargs.get("cache_dir"),
                token=kwargs.get("token"), proxies=kwargs.get("proxies"),
                local_files_only=bool(kwargs.get("local_files_only")),
            )
        except Exception:  # noqa: BLE001 - not a repository we can read: not ours to handle
            return None
    try:
        with open(index, encoding="utf-8") as handle:
            loaded = json.load(handle)
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None


def names_sradm_pipeline(index: dict) -> bool:
    """Whether a ``model_index.json`` describes an SRADM pipeline (either layout)."""
    name = index.get("_class_name")
    if isinstance(name, (list, tuple)) and len(name) == 2:
        name = name[1]
    return name == PIPELINE_CLASS_NAME


def install() -> None:
    """Wrap ``DiffusionPipeline.from_pretrained`` (once per process) as the module docstring describes."""
    stock = DiffusionPipeline.__dict__["from_pretrained"].__func__
    if getattr(stock, "_sradm_dispatch", False):
        return

    @functools.wraps(stock)
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        if (
            cls is DiffusionPipeline
            and not kwargs.get("trust_remote_code")
            and kwargs.get("custom_pipeline") is None
            and names_sradm_pipeline(_model_index(pretrained_model_name_or_path, kwargs) or {})
        ):
            from ..pipeline import SRADMPipeline

            kwargs.pop("trust_remote_code", None)
            return SRADMPipeline.from_pretrained(pretrained_model_name_or_path, **kwargs)
        return stock(cls, pretrained_model_name_or_path, **kwargs)

    from_pretrained._sradm_dispatch = True
    DiffusionPipeline.from_pretrained = classmethod(from_pretrained)
