"""``forsetid --check``: the checks a start makes, and what the daemon would do, with
nothing bound or connected, no etcd asked and no fork server started.

Checked: the file (``config.load``: every key and type, the groups' definitions and
templates), the role and name (``check_role``), protected mode (``protected``), with
``security.curve`` every key file and the authorized folder (``keys.curve_keys``), and,
where the role runs processes, that each ``entry`` module is found on
``node.python_path`` and the daemon's ``sys.path``. Found, not imported: importing a
module runs its code, so a function missing inside it shows only when a worker starts
(its log says so then)."""

from __future__ import annotations

import importlib.util
import shlex
import sys
from importlib.machinery import PathFinder

from .config import Config, ConfigError, check_role, protected
from .keys import curve_keys


def report(config: Config) -> list[str]:
    """What the daemon would bind, connect to and start, as lines to print; a
    ``ConfigError`` for the first thing a start would refuse."""
    check_role(config)
    protected(config)
    curve_keys(config)
    node, cluster = config.node, config.cluster
    lines = [
        f"{config.path}: valid: node {node.name}, role {node.role}, cluster {cluster.name}, backend {cluster.backend}"
    ]
    lines.append("binds:")
    for where, endpoint in config.binds().items():
        if where == "node.metrics":
            endpoint = f"http://{node.metrics}/metrics"
        lines.append(f"  {where} = {endpoint}{_served(config, where)}")
    lines.append("connects to:")
    lines += _connects(config)
    lines.append("groups:" if config.calls else "groups: none in this file")
    for name, call in config.calls.items():
        how = f"entry {call.entry}" if call.entry else f"command {shlex.join(call.command or [])}"
        more = [f"args {call.args}"] if call.args else []
        more += ["ready"] if call.ready else []
        more += [f"restart {call.restart}"] if call.restart != "never" else []
        more += [f"endpoint {call.endpoint}"] if call.endpoint else []
        more += [f"log {call.log}"] if call.log else []
        if call.entry and node.role != "leader":
            more.append(f"module at {_module_file(config, name, call.entry)}")
        lines.append(f"  {name}: {how}" + (f" ({', '.join(more)})" if more else ""))
    if config.calls and node.role == "leader":
        lines.append("  (a leader imports no entry: the workers look their modules up)")
    return lines


def _served(config: Config, where: str) -> str:
    sec = config.security
    if where == "node.metrics":
        return " (Prometheus text, plain HTTP)"
    if not sec.curve:
        return ""
    return f" (CURVE: secret key {sec.server_key}_secret; peers' keys in {sec.authorized})"


def _connects(config: Config) -> list[str]:
    node, cluster, sec = config.node, config.cluster, config.security
    out = []
    if node.role in ("worker", "both"):
        who = f"as {sec.key}" if sec.key else "as the server's own key"
        guard = f" (CURVE: pinning {sec.server_key}, {who})" if sec.curve else ""
        for c in config.leaders():
            mine = node.role == "both" and c.name in ("", node.name)
            name = f"leader candidate {c.name}" if c.name else "leader"
            where = "in this daemon (inproc)" if mine else f"at {c.leader}, events at {c.events}{guard}"
            out.append(f"  {name} {where}")
    if node.role in ("leader", "both") and cluster.backend == "etcd":
        out.append(f"  etcd at {', '.join(cluster.etcd)} (election of {cluster.name}, lease {cluster.lease:g} s)")
    return out or ["  nothing (a leader of backend memory waits for its workers)"]


def _module_file(config: Config, group: str, entry: str) -> str:
    module = entry.partition(":")[0]
    origin = find_module(module, config.node.python_path)
    if origin is None:
        searched = ", ".join([*config.node.python_path, *(p for p in sys.path if p)])
        raise ConfigError(
            f"{config.path}: calls.{group}.entry: module {module!r} not found (searched: {searched}); "
            "see node.python_path"
        )
    return origin


def find_module(module: str, python_path: list[str]) -> str | None:
    """Where ``module`` (dotted) would be imported from, ``python_path`` first, as the
    fork server imports it; None if nowhere. Nothing is imported: a package's parts are
    looked up in its folders, not through its ``__init__``."""
    parts = module.split(".")
    if parts[0] in sys.builtin_module_names:
        return "built-in" if len(parts) == 1 else None
    spec = PathFinder.find_spec(parts[0], python_path) if python_path else None
    if spec is None:
        try:
            spec = importlib.util.find_spec(parts[0])  # (a top-level name: its finders, no code run)
        except (ImportError, ValueError):
            return None
    for i in range(1, len(parts)):
        if spec is None or not spec.submodule_search_locations:
            return None
        spec = PathFinder.find_spec(".".join(parts[: i + 1]), list(spec.submodule_search_locations))
    if spec is None:
        return None
    return spec.origin or f"namespace package {module}"  # (a file, or "built-in", "frozen")
