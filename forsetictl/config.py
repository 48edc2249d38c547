"""What a client reads of ``forseti.toml``, and which endpoint it talks to.

Only the keys a client needs are read here (the daemon validates the whole file when it
starts): which endpoint serves clients of the node the file describes, and the client's
``[security]``: ``curve``, and its key files ``key`` and ``server_key`` (paths relative to
the config file's folder, made absolute here).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from forsetid.const import DEFAULT_LEADER, DEFAULT_LISTEN
from forsetid.protocol import MAX_PAYLOAD

from .security import load_keys

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROLES = ("leader", "worker", "both")
ENDPOINT_ENV = "FORSETI_ENDPOINT"
KEY_ENV = "FORSETI_KEY"  # the client's own .key_secret file, for the command line
LOCAL_CONFIG = "forseti.toml"  # looked for in the current directory


class ConfigError(Exception):
    """A config file a client cannot use: the message names the file, key and problem."""


@dataclass(frozen=True)
class ClientConfig:
    path: str
    endpoint: str  # where a client of this node connects: the node's cache, or the leader itself
    endpoints: tuple[str, ...] = ()  # client.endpoints: the nodes a client may use (else `endpoint` alone)
    curve: bool = False  # security.curve: the cluster's sockets are CURVE servers
    key: str | None = None  # security.key: this client's .key_secret file (absolute)
    server_key: str | None = None  # security.server_key: the server's public key file (absolute)
    max_payload: int = MAX_PAYLOAD  # cluster.max_payload: bytes of a call's payload, checked before sending

    @property
    def all_endpoints(self) -> list[str]:
        return list(self.endpoints) or [self.endpoint]


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
    if role == "leader" and _string(raw, "cluster.backend", "memory", path) == "etcd":
        endpoint = _candidate_leader(raw, _string(raw, "node.name", "", path), path)
    elif role == "leader":
        endpoint = _string(raw, "cluster.leader", DEFAULT_LEADER, path)
    else:
        endpoint = _string(raw, "node.listen", DEFAULT_LISTEN, path)
    curve = _bool(raw, "security.curve", False, path)
    key, server_key = (_path(raw, f"security.{name}", path) for name in ("key", "server_key"))
    endpoints = tuple(_strings(raw, "client.endpoints", path))
    max_payload = _table(raw, ["cluster"], path).get("max_payload", MAX_PAYLOAD)
    if type(max_payload) is not int or max_payload < 0:
        raise ConfigError(f"{path}: cluster.max_payload: expected a number of bytes (an integer >= 0)")
    return ClientConfig(path, endpoints[0] if endpoints else endpoint, endpoints, curve, key, server_key, max_payload)


def _strings(raw: dict, where: str, path: str) -> list[str]:
    *tables, key = where.split(".")
    value = _table(raw, tables, path).get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{path}: {where}: expected a list of endpoints (strings)")
    return value


def _candidate_leader(raw: dict, name: str, path: str) -> str:
    """A candidate's own leader endpoint (backend "etcd": it leads, or says who does)."""
    seats = _table(raw, ["cluster"], path).get("candidates", [])
    for seat in seats if isinstance(seats, list) else ():
        if isinstance(seat, dict) and seat.get("name") == name and isinstance(seat.get("leader"), str):
            return seat["leader"]
    raise ConfigError(f"{path}: node.name: {name!r} is not in cluster.candidates (with its leader endpoint)")


def _table(raw: dict, tables: list[str], path: str) -> dict:
    table = raw
    for depth, name in enumerate(tables, 1):
        table = table.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {'.'.join(tables[:depth])}: expected a table")
    return table


def _string(raw: dict, where: str, default: str, path: str) -> str:
    """The string at the dotted key path ``where`` (``default`` if it is absent)."""
    *tables, key = where.split(".")
    value = _table(raw, tables, path).get(key, default)
    if not isinstance(value, str):
        raise ConfigError(f"{path}: {where}: expected a string")
    return value


def _bool(raw: dict, where: str, default: bool, path: str) -> bool:
    *tables, key = where.split(".")
    value = _table(raw, tables, path).get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{path}: {where}: expected true or false")
    return value


def _path(raw: dict, where: str, path: str) -> str | None:
    """The file named at ``where``, made absolute against the config file's folder (None: absent)."""
    value = _string(raw, where, "", path)
    if not value:
        return None
    return os.path.join(os.path.dirname(os.path.abspath(path)), os.path.expanduser(value))


def client_keys(
    config: ClientConfig | None,
    key: str | None = None,
    server_key: str | None = None,
    key_label: str = "key",
    server_label: str = "server_key",
) -> tuple[str | None, str | None]:
    """The key files a client uses: ``key`` and ``server_key`` where given, else the
    config's when it says ``security.curve = true``; (None, None) for none. The files are
    read once here, so that a problem is told with where the path came from (the labels
    name the arguments: ``--key``, say): KeyFileError, or ConfigError for the config's."""
    labels = {"key": key_label, "server_key": server_label}
    if config is not None and config.curve:
        if key is None:
            key, labels["key"] = config.key, f"{config.path}: security.key:"
        if server_key is None:
            server_key, labels["server_key"] = config.server_key, f"{config.path}: security.server_key:"
        for name, value in (("key", key), ("server_key", server_key)):
            if value is None:
                raise ConfigError(f"{config.path}: security.{name}: needed with security.curve = true")
    load_keys(key, server_key, labels["key"], labels["server_key"])
    return key, server_key


def from_env(name: str) -> str | None:
    """``$FORSETI_ENDPOINT`` or ``$FORSETI_KEY`` as the user set them for forsetictl. In a
    process that Forseti started (it has ``$FORSETI_GROUP``), forsetid gave both names
    other meanings (the process's own endpoint and key): none then."""
    if os.environ.get("FORSETI_GROUP"):
        return None
    return os.environ.get(name) or None


def resolve(endpoint: str | None = None, config: str | None = None) -> tuple[str, ClientConfig | None]:
    """The endpoint a command talks to: ``--endpoint``, the node of
    ``--config``, ``$FORSETI_ENDPOINT``, the node of ``./forseti.toml``, the default; and
    the config file read on the way, if any (its ``[security]`` holds the keys)."""
    if endpoint:
        return endpoint, None
    if config:
        cfg = load(config)
        return cfg.endpoint, cfg
    if env := from_env(ENDPOINT_ENV):
        return env, None
    if os.path.exists(LOCAL_CONFIG):
        cfg = load(LOCAL_CONFIG)
        return cfg.endpoint, cfg
    return DEFAULT_LISTEN, None


def resolve_endpoint(endpoint: str | None = None, config: str | None = None) -> str:
    """The endpoint alone, as :func:`resolve` finds it."""
    return resolve(endpoint, config)[0]
