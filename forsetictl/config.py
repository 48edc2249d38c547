"""What a client reads of ``forseti.toml``, and which endpoint it talks to.

Only the keys a client needs are read here (the daemon validates the whole file when it
starts): which endpoint serves clients of the node the file describes. The client's
``[security]`` keys (``key``, ``server_key``: paths relative to the config file) will be
read here too, each with :func:`_string` and its key path.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from forsetid.const import DEFAULT_LEADER, DEFAULT_LISTEN

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROLES = ("leader", "worker", "both")
ENDPOINT_ENV = "FORSETI_ENDPOINT"
LOCAL_CONFIG = "forseti.toml"  # looked for in the current directory


class ConfigError(Exception):
    """A config file a client cannot use: the message names the file, key and problem."""


@dataclass(frozen=True)
class ClientConfig:
    path: str
    endpoint: str  # where a client of this node connects: the node's cache, or the leader itself


def load(path: str) -> ClientConfig:
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    role = _string(raw, "node.role", "both", path)
    if role not in ROLES:
        raise ConfigError(f"{path}: node.role: expected one of {', '.join(map(repr, ROLES))}, got {role!r}")
    if role == "leader":
        endpoint = _string(raw, "cluster.leader", DEFAULT_LEADER, path)
    else:
        endpoint = _string(raw, "node.listen", DEFAULT_LISTEN, path)
    return ClientConfig(path=path, endpoint=endpoint)


def _string(raw: dict, where: str, default: str, path: str) -> str:
    """The string at the dotted key path ``where`` (``default`` if it is absent)."""
    *tables, key = where.split(".")
    table = raw
    for depth, name in enumerate(tables, 1):
        table = table.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {'.'.join(tables[:depth])}: expected a table")
    value = table.get(key, default)
    if not isinstance(value, str):
        raise ConfigError(f"{path}: {where}: expected a string")
    return value


def resolve_endpoint(endpoint: str | None = None, config: str | None = None) -> str:
    """The endpoint a command talks to (SPEC section 4): ``--endpoint``, the node of
    ``--config``, ``$FORSETI_ENDPOINT``, the node of ``./forseti.toml``, the default."""
    if endpoint:
        return endpoint
    if config:
        return load(config).endpoint
    if os.environ.get(ENDPOINT_ENV):
        return os.environ[ENDPOINT_ENV]
    if os.path.exists(LOCAL_CONFIG):
        return load(LOCAL_CONFIG).endpoint
    return DEFAULT_LISTEN
