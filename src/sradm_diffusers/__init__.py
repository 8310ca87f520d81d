"""SRADM super-resolution as a diffusers pipeline.

Public API: ``SRADMPipeline``, ``SRADMUNet``, ``RRDBEncoder``, ``build_pipeline``, ``imresize``, the bundled
``DEMO_MODEL`` (a pipeline folder) and ``SAMPLE_IMAGE`` (an LR photo), and the sampling defaults every front end
uses, ``DEFAULT_SAMPLING`` (a :class:`~sradm_diffusers.defaults.SamplingSettings`; torch-free module).

Importing the package is cheap: the names above are imported on first use (PEP 562), so that the ``sradm`` command
answers ``--help``, ``--version`` and bad arguments without loading torch and diffusers (seconds and hundreds of MB).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types

__version__ = "0.1.0"

_LAZY = {
    "DEFAULT_SAMPLING": ".defaults",
    "SamplingSettings": ".defaults",
    "DEMO_MODEL": ".resources",
    "SAMPLE_IMAGE": ".resources",
    "PRESETS": ".presets",
    "build_pipeline": ".presets",
    "RRDBEncoder": ".models",
    "SRADMUNet": ".models",
    "SRADMPipeline": ".pipeline",
    # The diffusers pipeline loader resolves a component's base class as an attribute of the library named in
    # model_index.json ("sradm_diffusers"), so ModelMixin must be reachable here. It is not part of our API.
    "ModelMixin": "diffusers",
}

__all__ = [
    "DEFAULT_SAMPLING",
    "DEMO_MODEL",
    "PRESETS",
    "RRDBEncoder",
    "SAMPLE_IMAGE",
    "SRADMPipeline",
    "SRADMUNet",
    "SamplingSettings",
    "build_pipeline",
    "imresize",
]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted({*globals(), *_LAZY, "imresize"})


class _Package(types.ModuleType):
    """The package's module type: ``imresize`` is the function, although a submodule has the same name (importing
    a submodule binds it as an attribute of its package, which would hide the lazily imported function)."""

    @property
    def imresize(self):
        from .imresize import imresize

        return imresize

    @imresize.setter
    def imresize(self, value) -> None:
        pass  # the import system binding the submodule: the public name stays the function


sys.modules[__name__].__class__ = _Package


class _DispatchOnceDiffusersLoads(importlib.abc.MetaPathFinder):
    """Installs :mod:`~sradm_diffusers.loading.dispatch` right after ``diffusers`` is imported (a post-import hook), so
    ``DiffusionPipeline.from_pretrained`` returns ``SRADMPipeline`` for SRADM folders once this package is imported,
    whether diffusers was imported before or after it."""

    searching = False

    def find_spec(self, fullname, path, target=None):
        if fullname != "diffusers" or self.searching:
            return None
        # A bare importlib.util.find_spec("diffusers") (availability checks) lands here too without importing it,
        # so the hook stays installed until the module really executes.
        self.searching = True
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self.searching = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_install(module):
            exec_module(module)
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            _install_dispatch()

        spec.loader.exec_module = exec_then_install
        return spec


def _install_dispatch() -> None:
    from .loading import dispatch

    dispatch.install()


if "diffusers" in sys.modules:
    _install_dispatch()
else:
    sys.meta_path.insert(0, _DispatchOnceDiffusersLoads())

# sradm_diffusers.tiling and the other flat module paths of 0.1 still import, with a FutureWarning (torch-free).
from . import _moved  # noqa: E402

_moved.install()
