"""The inliner behind :mod:`.remote_code`: package modules concatenated into one self-contained source file.

:func:`inline_modules` takes the requested modules and every package module they import (relatively, at any depth),
orders them so that top-level imports come first, and removes the relative imports (all names then live in one
namespace; ``from .x import a as b`` becomes ``b = a``). It refuses what it cannot inline faithfully: two modules
binding one top-level name differently, ``from . import module``, and absolute imports of the package itself.

Modules in :data:`INSTALLED_ONLY` are not shipped: the inliner itself and the Hub checks of :mod:`.hub`. Imports of
them are dropped from the shipped file; the code that uses them runs only where the package is installed
(``remote_code.INSTALLED``), so shipped code never reaches a dropped name.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re

PACKAGE = "sradm_diffusers"
#: Modules that only the installed package runs; never copied into shipped code.
INSTALLED_ONLY = (f"{PACKAGE}.loading.inliner", f"{PACKAGE}.loading.hub")


def _source(module: str) -> tuple[str, bool]:
    """(source text, is a package ``__init__``) of a module of this package."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ValueError(f"Cannot find the source of {module}; remote code is generated from an installed package.")
    with open(spec.origin, encoding="utf-8") as handle:
        return handle.read(), spec.submodule_search_locations is not None


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """Absolute name of the module a relative ``from ... import`` in ``module`` reads."""
    parts = module.split(".") if is_package else module.split(".")[:-1]
    if node.level > 1:
        parts = parts[: len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


# A source line with its ending, as the parser counts lines (only \r\n, \r and \n end one; str.splitlines also
# splits on form feeds and other separators).
_SOURCE_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")


def _source_segment(lines: list[str], node: ast.AST) -> str:
    """``ast.get_source_segment`` over source already split by ``_SOURCE_LINE`` (that function splits the whole
    source at every call: quadratic in the module's size when called for every statement)."""
    first, last = node.lineno - 1, node.end_lineno - 1
    if first == last:
        return lines[first].encode()[node.col_offset : node.end_col_offset].decode()
    head = lines[first].encode()[node.col_offset :].decode()
    tail = lines[last].encode()[: node.end_col_offset].decode()
    return "".join([head, *lines[first + 1 : last], tail])


def _module_scope(body: list[ast.stmt]):
    """The statements that run in a module's namespace: ``body`` and the blocks of its if/try/for/while/with."""
    for node in body:
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            for field in ("body", "orelse", "finalbody"):
                yield from _module_scope(getattr(node, field, None) or [])
            for handler in getattr(node, "handlers", None) or []:
                yield from _module_scope(handler.body)


class _Module:
    """One package module: its source, the package modules it imports and the top-level names it binds."""

    def __init__(self, name: str):
        self.name = name
        self.text, self.is_package = _source(name)
        self.tree = ast.parse(self.text, filename=name)
        self.lines = _SOURCE_LINE.findall(self.text)  # numbered as the parser numbers them
        self.relative: list[tuple[ast.ImportFrom, str, bool]] = []  # (node, target module, at top level)
        top = {id(node) for node in self.tree.body}
        for node in ast.walk(self.tree):
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                target = _resolve(name, self.is_package, node)
                target_spec = importlib.util.find_spec(target)
                if target_spec is None:
                    raise ValueError(f"{name}, line {node.lineno}: no module {target}.")
                for alias in node.names:
                    submodule = target_spec.submodule_search_locations is not None and importlib.util.find_spec(
                        f"{target}.{alias.name}") is not None
                    if alias.name == "*" or submodule:
                        raise ValueError(
                            f"{name}, line {node.lineno}: 'from {'.' * node.level}{node.module or ''} import "
                            f"{alias.name}' imports a module object or '*', which cannot be inlined; import the "
                            "names it uses instead."
                        )
                self.relative.append((node, target, id(node) in top))
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                if any(n == PACKAGE or n.startswith(PACKAGE + ".") for n in names if n):
                    raise ValueError(
                        f"{name}, line {node.lineno}: an absolute import of {PACKAGE} cannot be shipped (the package "
                        "is not importable where the shipped code runs); use a relative import."
                    )

    def bindings(self) -> dict[str, str]:
        """Top-level name -> source of the statement that binds it (the shipped file's one namespace)."""
        found = {}
        for node in _module_scope(self.tree.body):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                found[node.name] = _source_segment(self.lines, node)
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for name in (n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)):
                    found[name] = _source_segment(self.lines, node)
            elif isinstance(node, ast.Import):  # what a name is bound to, so that equal imports agree
                for a in node.names:
                    found[a.asname or a.name.split(".")[0]] = f"import {a.name if a.asname else a.name.split('.')[0]}"
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module != "__future__":
                for a in node.names:
                    found[a.asname or a.name] = f"from {node.module} import {a.name}"
            elif isinstance(node, ast.ImportFrom):  # relative: only an alias binds a new name (``b = a`` when inlined)
                for a in node.names:
                    if a.asname and a.asname != a.name:
                        found[a.asname] = f"{a.asname} = {a.name}"
        found.pop("__all__", None)
        return found

    def inlined_text(self) -> str:
        """The source with relative imports, ``from __future__`` imports and ``__all__`` removed."""
        lines = list(self.lines)
        removed = {id(node) for node, _, _ in self.relative}
        edits = []  # (first line index, last line index + 1, replacement lines)
        for node in self.tree.body:
            is_all = isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__"
                                                          for t in node.targets)
            if is_all or (isinstance(node, ast.ImportFrom) and node.module == "__future__"):
                edits.append((node.lineno - 1, node.end_lineno, []))
        for parent in ast.walk(self.tree):
            for field in ("body", "orelse", "finalbody", "handlers"):
                body = getattr(parent, field, None)
                if not isinstance(body, list):
                    continue
                for node in body:
                    if id(node) not in removed:
                        continue
                    first = lines[node.lineno - 1]
                    indent = first[: len(first) - len(first.lstrip())]
                    rest = lines[node.end_lineno - 1].encode()[node.end_col_offset:].decode().strip()
                    if node.col_offset != len(indent) or (rest and not rest.startswith("#")):
                        raise ValueError(
                            f"{self.name}, line {node.lineno}: put the relative import on lines of its own."
                        )
                    new = [f"{indent}{a.asname} = {a.name}\n" for a in node.names if a.asname and a.asname != a.name]
                    if not new and all(id(n) in removed for n in body) and node is body[0]:
                        new = [f"{indent}pass\n"]
                    edits.append((node.lineno - 1, node.end_lineno, new))
        for start, stop, new in sorted(edits, reverse=True):
            lines[start:stop] = new
        return "".join(lines).strip("\n") + "\n"


def _closure(entries: list[str]) -> list[_Module]:
    """``entries`` and every package module they import, ordered so that top-level imports come first."""
    modules: dict[str, _Module] = {}
    pending = list(entries)
    while pending:
        name = pending.pop()
        if name not in modules:
            modules[name] = _Module(name)
            pending.extend(target for _, target, _ in modules[name].relative if target not in INSTALLED_ONLY)
    ordered: list[_Module] = []
    state: dict[str, str] = {}

    def visit(name: str) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            raise ValueError(f"Top-level import cycle through {name}; it cannot be inlined into one file.")
        state[name] = "visiting"
        for _, target, top_level in modules[name].relative:
            if top_level and target not in INSTALLED_ONLY:
                visit(target)
        state[name] = "done"
        ordered.append(modules[name])

    for name in sorted(modules, key=lambda n: (n not in entries, n)):
        visit(name)
    return ordered


def inline_modules(entries: list[str]) -> str:
    """One self-contained Python source with the package modules ``entries`` and everything they import.

    Raises:
        ValueError: the modules cannot be inlined faithfully (see the module docstring); the message names the
            module, line and name.
    """
    modules = _closure(entries)
    bound: dict[str, tuple[str, str]] = {}
    for module in modules:
        for name, statement in module.bindings().items():
            if name in bound and bound[name][1] != statement:
                raise ValueError(
                    f"{bound[name][0]} and {module.name} both define the top-level name {name!r}; the shipped code "
                    "puts them in one namespace. Rename one of them (e.g. make it private with a distinct name)."
                )
            bound.setdefault(name, (module.name, statement))
    for module in modules:
        for node, target, _ in module.relative:
            if target in INSTALLED_ONLY:
                continue
            missing = [a.name for a in node.names if a.name not in bound]
            if missing:
                raise ValueError(f"{module.name}, line {node.lineno}: {missing} are not defined by any inlined module.")
    version = importlib.import_module(PACKAGE).__version__
    header = (
        f"# Generated by {PACKAGE}.loading.inliner from sradm-diffusers {version}: the modules\n"
        + "".join(f"#   {m.name}\n" for m in modules)
        + "# inlined into one file, so that diffusers can load this folder with trust_remote_code=True without the\n"
        "# package. Do not edit: SRADMPipeline.save_pretrained regenerates it.\n\n"
        "from __future__ import annotations\n"
    )
    sections = [f"\n\n# ---- {m.name} ----\n\n{m.inlined_text()}" for m in modules]
    text = header + "".join(sections)
    compile(text, "<generated>", "exec")
    return text
