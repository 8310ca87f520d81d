"""Code shipped inside saved pipeline folders, so that diffusers loads them without this package installed.

``DiffusionPipeline.from_pretrained(repo, trust_remote_code=True)`` loads a pipeline whose ``model_index.json`` names
``"_class_name": [module, class]`` from ``<module>.py`` at the repository root, and a component named
``[module, class]`` from ``<component>/<module>.py``. Each such file is imported alone (diffusers copies the files
that it imports relatively, but downloads only ``<component>/<module>.py`` of a model folder), so every shipped file
must be self-contained.

:func:`~.inliner.inline_modules` builds each such file from this package's own source; :func:`write_remote_code`
writes the files into a folder saved by ``save_pretrained`` and points ``model_index.json`` at them;
:func:`installed_model_index` maps those entries back to the installed package's public classes (what
``SRADMPipeline.from_pretrained`` loads). The files are regenerated at every save, never edited.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import shutil

PACKAGE = "sradm_diffusers"
#: The pipeline module at the root of a saved folder: ``"_class_name": ["pipeline_sradm", "SRADMPipeline"]``.
PIPELINE_MODULE = "pipeline_sradm"
#: True when this code runs as the installed package, False when it runs as code shipped in a saved folder.
INSTALLED = __name__.startswith(PACKAGE + ".")


def component_module_name(model_class: type) -> str:
    """Name of the shipped module of a component class: ``sradm_`` + its defining module's last part.

    ``SRADMUNet`` (``sradm_diffusers.models.unet``) -> ``"sradm_unet"``; a class loaded from shipped code keeps the
    name of the file it came from.
    """
    module = model_class.__module__.rsplit(".", 1)[-1]
    return f"sradm_{module}" if INSTALLED else module


def _shipped_file(model_class: type) -> str:
    """The file a class loaded from shipped code came from (copied as is when such a pipeline is saved again)."""
    return inspect.getsourcefile(model_class)


def write_remote_code(pipeline, folder: str | os.PathLike) -> list[str]:
    """Write the shipped modules of ``pipeline`` into ``folder`` (saved by ``save_pretrained``) and point
    ``model_index.json`` at them. Returns the written files, relative to ``folder``.

    The root ``pipeline_sradm.py`` holds the pipeline module and all it imports; ``<component>/sradm_<module>.py``
    holds each model component of this package with all it imports. Components from other libraries (the
    scheduler) are left to diffusers.
    """
    folder = os.fspath(folder)
    index_path = os.path.join(folder, "model_index.json")
    with open(index_path, encoding="utf-8") as handle:
        index = json.load(handle)
    written = {}
    pipeline_class = type(pipeline)
    ours = (lambda cls: cls.__module__.startswith(PACKAGE + ".")) if INSTALLED else (lambda cls: True)
    if ours(pipeline_class):
        written[f"{PIPELINE_MODULE}.py"] = pipeline_class
        index["_class_name"] = [PIPELINE_MODULE, pipeline_class.__name__]
    for name, component in pipeline.components.items():  # the pipeline's models and scheduler, none optional
        library = index[name][0]  # save_pretrained writes [library or module, class name] for each
        in_package = library == PACKAGE if INSTALLED else library.startswith("diffusers_modules.")
        component_class = type(component)
        if in_package and ours(component_class):
            module = component_module_name(component_class)
            written[f"{name}/{module}.py"] = component_class
            index[name] = [module, component_class.__name__]
    for relative, owner in written.items():
        path = os.path.join(folder, *relative.split("/"))
        if INSTALLED:
            from .inliner import inline_modules  # installed-only: not part of the shipped code

            with open(path, "w", encoding="utf-8") as handle:
                handle.write(inline_modules([owner.__module__]))
        else:
            shutil.copyfile(_shipped_file(owner), path)
    with open(index_path, "w", encoding="utf-8") as handle:
        json.dump(index, handle, indent=2, sort_keys=True)
        handle.write("\n")
    return sorted(written)


def installed_model_index(index: dict) -> dict:
    """``index`` with the entries naming shipped modules replaced by this package's public classes.

    ``["pipeline_sradm", "SRADMPipeline"]`` -> ``"SRADMPipeline"``; ``["sradm_unet", "SRADMUNet"]`` ->
    ``["sradm_diffusers", "SRADMUNet"]``. Mapping by public class name keeps published folders loading when modules
    move inside the package. Shipped code (not the installed package) leaves ``index`` unchanged.
    """
    if not INSTALLED:
        return index
    package = importlib.import_module(PACKAGE)
    public = set(getattr(package, "__all__", ()))
    index = dict(index)
    for key, value in index.items():
        if not (isinstance(value, (list, tuple)) and len(value) == 2 and isinstance(value[0], str)):
            continue
        module, class_name = value
        if key == "_class_name" and module == PIPELINE_MODULE and class_name in public:
            index[key] = class_name
        elif key != "_class_name" and module.startswith("sradm_") and class_name in public:
            index[key] = [PACKAGE, class_name]
    return index
