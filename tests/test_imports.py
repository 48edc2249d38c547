"""The import rules of forsetid and forsetictl, read from the source with ``ast`` (every
import, those inside functions too), and what two fork-sensitive imports load.

An import counts as an edge to the module it names: ``from forsetid import protocol``
is an edge to ``forsetid.protocol``. The package a submodule lives in is not counted
(every submodule would then close a cycle with an ``__init__`` that imports it)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from cluster import ROOT

PACKAGES = ("forsetid", "forsetictl")


@dataclass(frozen=True)
class Rule:
    importers: tuple[str, ...]  # modules, or "package.*" for a package and all in it
    forbidden: tuple[str, ...]  # modules (their submodules included), or "*" for any import
    why: str
    allowed: tuple[str, ...] = ()  # exceptions to ``forbidden``


DECISIONS = tuple(
    f"forsetid.{m}"
    for m in ("leader", "hello", "groups", "starts", "members", "event_log", "registry", "placement", "store")
    + ("crashloop", "roles", "restarts", "admin")
    + ("worker", "processes", "cache", "timers", "effects", "closes", "lease", "following", "exit_notes")
    + ("mailboxes", "fences", "talks", "templates", "client_requests", "worker_reports")
)

RULES = [
    Rule(("forsetictl.*",), ("forsetid",), allowed=("forsetid.protocol", "forsetid.const"),
         why="the client knows of the daemon only the wire protocol and the shared constants"),
    Rule(("forsetid.const",), ("*",),
         why="forsetid.const imports nothing: the fork server and every managed process load it"),
    Rule(DECISIONS, ("zmq", "socket", "select", "subprocess", "threading"),
         why="the decisions do no I/O: they take an input and return effects, the socket loops act"),
    Rule(DECISIONS, ("forsetid.etcd", "forsetid.election", "http"),
         why="etcd stays off the decisions' path: only election.py's thread talks to it"),
]  # fmt: skip

# What a managed process and the fork server import must not load the heavy libraries:
# each module mapped makes every fork dearer.
LIGHT_IMPORTS = {
    "import forsetictl; forsetictl.ready": ("zmq", "msgspec"),
    "import forsetid.spawner": ("zmq", "msgspec"),
}


def _matches(name: str, pattern: str) -> bool:
    if pattern == "*":
        return True
    pattern = pattern.removesuffix(".*")
    return name == pattern or name.startswith(pattern + ".")


def source_modules() -> dict[str, str]:
    """Module name -> file, for every module of the packages."""
    found = {}
    for package in PACKAGES:
        for folder, _, files in os.walk(ROOT / package):
            for file in files:
                if file.endswith(".py"):
                    path = os.path.join(folder, file)
                    parts = os.path.relpath(path, ROOT)[: -len(".py")].split(os.sep)
                    found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports_of(module: str, path: str, known: set[str]) -> list[tuple[str, int]]:
    """(module imported, line) for every import in the file, at any depth."""
    is_package = path.endswith("__init__.py")
    out = []
    for node in ast.walk(ast.parse(Path(path).read_text(), path)):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's package, up level - 1
                base = module.split(".")
                base = base[: len(base) - node.level + is_package]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module
            if name == "__future__":
                continue
            for alias in node.names:  # `from package import submodule` imports the submodule
                sub = f"{name}.{alias.name}"
                out.append((sub if sub in known else name, node.lineno))
    return out


def all_imports() -> dict[str, list[tuple[str, int]]]:
    modules = source_modules()
    return {m: imports_of(m, path, set(modules)) for m, path in modules.items()}


def violations(rule: Rule, imports: dict[str, list[tuple[str, int]]]) -> list[str]:
    found = []
    for module, imported in sorted(imports.items()):
        if not any(_matches(module, pattern) for pattern in rule.importers):
            continue
        for name, line in imported:
            if any(_matches(name, f) for f in rule.forbidden) and not any(_matches(name, a) for a in rule.allowed):
                found.append(f"{module} (line {line}) imports {name}")
    return found


def cycles(imports: dict[str, list[tuple[str, int]]]) -> list[list[str]]:
    """Each import cycle among the modules of ``imports``, once, as a path a -> ... -> a."""
    graph = {m: sorted({n for n, _ in names if n in imports and n != m}) for m, names in imports.items()}
    found, done = [], set()

    def visit(module: str, path: list[str]) -> None:
        for nxt in graph[module]:
            if nxt in path:
                cycle = path[path.index(nxt) :] + [nxt]
                if frozenset(cycle) not in done:
                    done.add(frozenset(cycle))
                    found.append(cycle)
            elif nxt not in finished:
                visit(nxt, path + [nxt])
        finished.add(module)

    finished: set[str] = set()
    for module in sorted(graph):
        if module not in finished:
            visit(module, [module])
    return found


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.importers[0])
def test_import_rules_hold(rule):
    broken = violations(rule, all_imports())
    assert not broken, f"{rule.why}; but:\n  " + "\n  ".join(broken)


def test_no_import_cycle():
    found = cycles(all_imports())
    assert not found, "import cycles:\n  " + "\n  ".join(" -> ".join(c) for c in found)


def test_the_checks_see_every_import_and_catch_what_breaks_them():
    imports = all_imports()
    # An import inside a function counts: forsetictl loads its client on first use.
    assert "forsetictl.client" in [n for n, _ in imports["forsetictl"]]
    assert "forsetid.protocol" in [n for n, _ in imports["forsetictl.client"]]
    made_up = {
        "forsetictl.x": [("forsetid.cache", 3), ("forsetid.protocol", 4)],
        "forsetid.const": [("os", 1)],
        "forsetid.leader": [("zmq.asyncio", 2)],
        "forsetid.hello": [("forsetid.etcd", 5)],
        "forsetid.a": [("forsetid.b", 1)],
        "forsetid.b": [("forsetid.a", 9)],
    }
    assert [violations(rule, made_up) for rule in RULES] == [
        ["forsetictl.x (line 3) imports forsetid.cache"],
        ["forsetid.const (line 1) imports os"],
        ["forsetid.leader (line 2) imports zmq.asyncio"],
        ["forsetid.hello (line 5) imports forsetid.etcd"],
    ]
    assert cycles(made_up) == [["forsetid.a", "forsetid.b", "forsetid.a"]]


@pytest.mark.parametrize("statement", LIGHT_IMPORTS)
def test_fork_sensitive_imports_stay_light(statement):
    heavy = LIGHT_IMPORTS[statement]
    code = f"import sys\n{statement}\nprint(' '.join(m for m in {heavy!r} if m in sys.modules))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [], f"`{statement}` loads {done.stdout.split()}: every fork pays for them"
