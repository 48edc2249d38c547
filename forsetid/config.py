"""forseti.toml, validated into typed objects (see README, "Configuration")."""

from __future__ import annotations

import re
import socket
import sys
import typing
from typing import Annotated, Literal

import msgspec

from .const import DEFAULT_EVENTS, DEFAULT_LEADER, DEFAULT_LISTEN, GROUP_MAX, GROUP_PATTERN, GROUP_RULE
from .protocol import Call
from .store import BACKENDS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

Role = Literal["leader", "worker", "both"]


class ConfigError(Exception):
    """A config file that cannot be used: the message names the file, key and problem."""


class ClusterConfig(msgspec.Struct, forbid_unknown_fields=True):
    name: str = "forseti"
    leader: str = DEFAULT_LEADER
    events: str = DEFAULT_EVENTS
    nodes: list[str] = []
    max_retries: Annotated[int, msgspec.Meta(ge=0)] = 20
    max_time: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    backend: str = "memory"  # a name in store.BACKENDS
    heartbeat: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    liveness: Annotated[int, msgspec.Meta(ge=1)] = 3


class NodeConfig(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1)] = msgspec.field(default_factory=socket.gethostname)
    role: Role = "both"
    listen: str = DEFAULT_LISTEN
    capacity: Annotated[int, msgspec.Meta(ge=0)] = 0


class Config(msgspec.Struct):
    cluster: ClusterConfig
    node: NodeConfig
    calls: dict[str, Call]
    path: str = "<defaults>"


_GROUP_NAME = re.compile(GROUP_PATTERN)


def load(path: str) -> Config:
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse(raw, path)


def parse(raw: dict, path: str = "<config>") -> Config:
    unknown = set(raw) - {"cluster", "node", "calls"}
    if unknown:
        raise ConfigError(f"{path}: unknown section [{sorted(unknown)[0]}]; expected [cluster], [node] or [calls.NAME]")
    cluster = _convert(raw.get("cluster", {}), ClusterConfig, path, "cluster")
    if cluster.backend not in BACKENDS:
        known = ", ".join(map(repr, BACKENDS))
        raise ConfigError(f"{path}: cluster.backend: unknown backend {cluster.backend!r} (expected one of: {known})")
    node = _convert(raw.get("node", {}), NodeConfig, path, "node")
    calls_raw = raw.get("calls", {})
    if not isinstance(calls_raw, dict):
        raise ConfigError(f"{path}: calls: expected tables [calls.NAME]")
    calls = {}
    for name, table in calls_raw.items():
        if not _GROUP_NAME.match(name) or len(name) > GROUP_MAX:
            raise ConfigError(f"{path}: calls.{name}: {GROUP_RULE}")
        calls[name] = _convert(table, Call, path, f"calls.{name}")
    return Config(cluster=cluster, node=node, calls=calls, path=path)


def _convert(value, typ, path: str, where: str):
    try:
        return msgspec.convert(value, typ)
    except msgspec.ValidationError as exc:
        # msgspec says "... - at `$.x`" (or nothing, at the top); say it with the TOML key path.
        detail, sep, at = str(exc).rpartition(" - at `$")
        if not sep:
            detail, at = str(exc), ""
        unknown = re.match(r"Object contains unknown field `(.*)`$", detail)
        if unknown and not at.rstrip("`"):
            known = ", ".join(f.name for f in msgspec.structs.fields(typ))
            raise ConfigError(f"{path}: {where}.{unknown[1]}: unknown key (expected one of: {known})") from None
        field = at.rstrip("`").lstrip(".")
        choices = _choices(typ, field)
        if choices:
            detail += f" (expected one of: {', '.join(map(repr, choices))})"
        raise ConfigError(f"{path}: {where}{at.rstrip('`')}: {detail}") from None


def _choices(typ, field: str) -> tuple:
    """The allowed values of a Literal field, to say what was expected."""
    for f in msgspec.structs.fields(typ) if field.isidentifier() else ():
        if f.name == field and typing.get_origin(f.type) is Literal:
            return typing.get_args(f.type)
    return ()
