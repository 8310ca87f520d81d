"""Old module paths keep importing, with a ``FutureWarning`` that names the new one.

Until version 0.2 the package was flat (``sradm_diffusers.tiling``, ``sradm_diffusers.hub``, ...). Scripts that import
those paths get the module at its new place; ``sys.modules`` holds one object under both names, so attributes set
through the old name (monkeypatching, for example) reach the code that uses the new one.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

PACKAGE = "sradm_diffusers"

#: old module (below the package) -> its new place.
MOVED = {
    "tiling": "sampling.tiling",
    "rrdb_start": "sampling.rrdb_start",
    "lr_consistency": "sampling.lr_consistency",
    "prediction": "sampling.prediction",
    "memory": "sampling.memory",
    "hub": "loading.hub",
    "remote_code": "loading.remote_code",
    "dispatch": "loading.dispatch",
    "uncertainty": "extras.uncertainty",
    "interpolation": "extras.interpolation",
    "fusion": "extras.fusion",
    "lpips": "metrics.lpips",
    "colour": "metrics.colour",
    "evaluate_metric": "metrics.evaluate_metric",
    "evaluation": "commands.evaluate",
    "upscale": "commands.upscale",
    "cli": "commands.cli",
    "atomic": "commands.atomic",
    "distributed": "commands.distributed",
    "demo": "commands.demo",
}


def _new_name(fullname: str) -> str | None:
    """The new name of ``sradm_diffusers.<old>`` or of a module inside an old package (``demo.app``); else None."""
    prefix = PACKAGE + "."
    if not fullname.startswith(prefix):
        return None
    old = fullname[len(prefix):]
    for moved, new in MOVED.items():
        if old == moved or old.startswith(moved + "."):
            return f"{PACKAGE}.{new}{old[len(moved):]}"
    return None


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``sradm_diffusers.<old>`` and loads it as the module at its new place."""

    def find_spec(self, fullname, path=None, target=None):
        return importlib.util.spec_from_loader(fullname, self) if _new_name(fullname) else None

    def create_module(self, spec):
        new = _new_name(spec.name)
        warnings.warn(
            f"{spec.name} moved to {new}; import it from there (the old path goes away in version 0.3).",
            FutureWarning, stacklevel=2,
        )
        module = importlib.import_module(new)
        spec.loader_state = module.__spec__  # the import system sets module.__spec__ to the alias spec next
        return module

    def exec_module(self, module):
        """The module is already executed at its new place; give it back its own spec (file, origin)."""
        module.__spec__ = module.__spec__.loader_state


def install() -> None:
    """Add the finder to ``sys.meta_path`` once per process."""
    if not any(isinstance(finder, _Alias) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Alias())  # first: a module inside a moved package must not load twice
