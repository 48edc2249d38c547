"""The size rules of forsetid and forsetictl, read from the source with ``ast``: no class
over about 250 lines, no function over about 80 (tests included). A class that grows
past it has two jobs: the decisions live in pure classes that split by what they decide
(``leader.py`` takes its worker reports, client requests and admin requests from
mixins, each in a file of its own)."""

from __future__ import annotations

import ast

from cluster import ROOT

CLASS_LINES = 260  # ("about 250": a docstring's worth of slack)
FUNCTION_LINES = 85


def _too_long() -> list[str]:
    found = []
    for folder in ("forsetid", "forsetictl", "tests", "scripts", "conf"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1 if hasattr(node, "lineno") else 0
                if isinstance(node, ast.ClassDef) and lines > CLASS_LINES:
                    found.append(f"{path.relative_to(ROOT)}: class {node.name} has {lines} lines")
                elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and lines > FUNCTION_LINES:
                    found.append(f"{path.relative_to(ROOT)}: {node.name}() has {lines} lines")
    return found


def test_no_class_over_about_250_lines_and_no_function_over_about_80():
    assert not _too_long(), "\n".join(_too_long())
