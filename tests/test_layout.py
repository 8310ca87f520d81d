"""The package's structure rules (docs/architecture.md): no import cycles, small modules, short functions.

Module-level imports only (what runs at import time); imports inside functions are the deliberate lazy ones (the
CLI answers ``--help`` without torch) and ``if TYPE_CHECKING:`` blocks never run.
"""

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"sradm_diffusers": ROOT / "src" / "sradm_diffusers", "training": ROOT / "training"}
MAX_MODULE_LINES = 420  # "about 400"
MAX_FUNCTION_LINES = 80  # without its docstring; longer only with the reason in the docstring ("Long because ...")


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the packages (package ``__init__`` as the package)."""
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _top_level_imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules ``name`` imports when it is imported (relative imports resolved)."""
    is_package = path.name == "__init__.py"
    base = name.split(".") if is_package else name.split(".")[:-1]
    targets = set()

    def visit(body):
        for node in body:
            if isinstance(node, ast.If) and not _is_type_checking(node):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
            elif isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    stem = base[: len(base) - node.level + 1]
                    module = ".".join(stem + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets.add(module)
                targets.update(f"{module}.{alias.name}" for alias in node.names)  # `from . import x`

    visit(ast.parse(path.read_text(encoding="utf-8")).body)
    # A module imports its parent packages first; keep only edges to the package's own modules.
    return {t for t in targets if t in modules and t != name}


def test_no_import_cycles():
    modules = _modules()
    graph = {name: _top_level_imports(name, path, modules) for name, path in modules.items()}
    # a submodule's own parent package is imported before it, but importing the package is not a cycle back
    for name in graph:
        graph[name] = {t for t in graph[name] if not name.startswith(t + ".")}
    state, stack, cycles = {}, [], []

    def walk(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                walk(target)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            walk(node)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_cycle_check_finds_a_cycle(tmp_path, monkeypatch):
    """The checker itself: two modules importing each other at the top are reported."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text("from . import b\n")
    (tmp_path / "pkg" / "b.py").write_text("from .a import thing\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGES", {"pkg": tmp_path / "pkg"})
    with pytest.raises(AssertionError, match=r"pkg\.a -> pkg\.b -> pkg\.a"):
        test_no_import_cycles()


@pytest.mark.parametrize("package", ["sradm_diffusers", "training"])
def test_modules_and_functions_stay_small(package):
    long_modules, long_functions = [], []
    for name, path in _modules().items():
        if not name.startswith(package):
            continue
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > MAX_MODULE_LINES:
            long_modules.append(f"{name}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                first = node.body[0]
                if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):  # the docstring
                    length -= first.end_lineno - first.lineno + 1
                if length > MAX_FUNCTION_LINES and "Long because" not in (ast.get_docstring(node) or ""):
                    long_functions.append(f"{name}.{node.name}: {length} lines")
    assert not long_modules and not long_functions, (long_modules, long_functions)
