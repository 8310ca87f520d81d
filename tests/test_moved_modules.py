"""The flat module paths of 0.1 still import: the same module object, with a FutureWarning naming the new path."""

import importlib
import sys
import warnings

import pytest

import sradm_diffusers  # noqa: F401 - installs the finder
from sradm_diffusers._moved import MOVED


@pytest.mark.parametrize("old, new", sorted(MOVED.items()))
def test_old_path_is_the_new_module_with_a_warning(old, new):
    sys.modules.pop(f"sradm_diffusers.{old}", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(f"sradm_diffusers.{old}")
    assert module is importlib.import_module(f"sradm_diffusers.{new}")
    # the module keeps its own spec: tools that read its source (the remote-code inliner) still find the file
    assert module.__spec__.name == f"sradm_diffusers.{new}" and module.__spec__.origin.endswith(".py")
    messages = [str(w.message) for w in caught if issubclass(w.category, FutureWarning)]
    assert messages == [f"sradm_diffusers.{old} moved to sradm_diffusers.{new}; import it from there (the old path "
                        "goes away in version 0.3)."]


def test_patching_through_the_old_path_reaches_the_new_module(monkeypatch):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        old = importlib.import_module("sradm_diffusers.tiling")
    from sradm_diffusers.sampling import tiling

    monkeypatch.setattr(old, "plan_tiles", "patched")
    assert tiling.plan_tiles == "patched"


def test_unknown_names_are_not_aliased():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("sradm_diffusers.no_such_module")
