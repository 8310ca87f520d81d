"""The inliner's source segments equal ``ast.get_source_segment``'s, for every node of every package module and of
sources with the line endings and characters that differ between the parser's lines and ``str.splitlines``."""

import ast
import pkgutil

import pytest

import sradm_diffusers
from sradm_diffusers.loading.inliner import _SOURCE_LINE, _source_segment

TRICKY = [
    "x = 1\r\ny = (2,\r\n     3)\r\n",  # Windows endings
    "a = 'é'; b = 'ü' + \\\n    'ß'\n",  # multi-byte characters before and inside a node (offsets are in bytes)
    "a = 1\n\x0cb = 'x\x0cy\x0bz'; c = (1,\n  2)\n",  # form feeds, a vertical tab: str.splitlines breaks there
    "def f():\r    return {\r  1: 2}\rz = 3",  # old Mac endings, no final newline
    "s = '''one\n\u2028two'''\n",  # a Unicode line separator inside a string
]


def package_sources():
    for info in pkgutil.walk_packages(sradm_diffusers.__path__, "sradm_diffusers."):
        spec = info.module_finder.find_spec(info.name)
        with open(spec.origin, encoding="utf-8") as handle:
            yield handle.read()


@pytest.mark.parametrize("source", TRICKY + list(package_sources()))
def test_segments_equal_ast_get_source_segment(source):
    tree, lines = ast.parse(source), _SOURCE_LINE.findall(source)
    assert "".join(lines) == source
    # Every statement, nested ones included (what the inliner cuts out), and, in the short sources, every node: the
    # reference re-splits the source per call, so every node of a large module would take long.
    kinds = ast.stmt if len(source) > 1000 else ast.AST
    nodes = [node for node in ast.walk(tree) if isinstance(node, kinds) and getattr(node, "end_lineno", None)]
    assert nodes
    for node in nodes:
        assert _source_segment(lines, node) == ast.get_source_segment(source, node)
