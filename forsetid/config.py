"""forseti.toml, validated into typed objects (every key: docs/reference/config.md)."""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import sys
import typing
from typing import Annotated, Literal

import msgspec

from .const import DEFAULT_EVENTS, DEFAULT_LEADER, DEFAULT_LISTEN, GROUP_MAX, GROUP_PATTERN, GROUP_RULE
from .protocol import MAX_PAYLOAD, Call
from .store import BACKENDS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

Role = Literal["leader", "worker", "both"]


class ConfigError(Exception):
    """A config file that cannot be used: the message names the file, key and problem."""


class Candidate(msgspec.Struct, forbid_unknown_fields=True):
    """A node that may lead (backend "etcd"), with the endpoints it serves as leader."""

    name: Annotated[str, msgspec.Meta(min_length=1)]
    leader: Annotated[str, msgspec.Meta(min_length=1)]
    events: Annotated[str, msgspec.Meta(min_length=1)]


class ClusterConfig(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.-]+$")] = "forseti"
    leader: str = DEFAULT_LEADER
    events: str = DEFAULT_EVENTS
    nodes: list[str] = []
    max_retries: Annotated[int, msgspec.Meta(ge=0)] = 20
    max_time: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    backend: str = "memory"  # a name in store.BACKENDS
    etcd: list[str] = []  # backend "etcd": its v3 endpoints (HTTP/JSON gateway), tried in turn
    lease: Annotated[float, msgspec.Meta(ge=1.0)] = 2.0  # seconds a leader holds office unrenewed
    etcd_election: Annotated[float, msgspec.Meta(gt=0)] = 1.0  # etcd's own --election-timeout, in seconds
    candidates: list[Candidate] = []  # backend "etcd": in place of leader and events
    heartbeat: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    liveness: Annotated[int, msgspec.Meta(ge=1)] = 3
    partition: Literal["keep", "stop"] = "keep"  # "stop": a worker's processes die before the leader takes it for down
    max_payload: Annotated[int, msgspec.Meta(ge=0, le=256 << 20)] = MAX_PAYLOAD  # bytes of a call's payload


class NodeConfig(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1)] = msgspec.field(default_factory=socket.gethostname)
    role: Role = "both"
    listen: str = DEFAULT_LISTEN
    capacity: Annotated[int, msgspec.Meta(ge=0)] = 0
    python_path: list[str] = []  # where entry modules are imported from, before the daemon's sys.path
    metrics: str = ""  # "HOST:PORT": Prometheus text on http://HOST:PORT/metrics ("": off)


class SecurityConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Paths are made absolute against the config file's folder as it is read."""

    curve: bool = False  # CURVE authentication and encryption on every socket but inproc
    server_key: str = ""  # the cluster's public key file; daemons read NAME.key_secret beside it
    key: str = ""  # this daemon's own pair (a .key_secret file): what a worker shows the leader
    authorized: str = ""  # public keys by role, in workers/ admins/ clients/ readers/
    insecure: bool = False  # allow a non-loopback tcp bind without curve


class ClientSection(msgspec.Struct, forbid_unknown_fields=True):
    """What only forsetictl and the client library read (checked here too: one file)."""

    endpoints: list[Annotated[str, msgspec.Meta(min_length=1)]] = []  # the nodes a client may use


class Config(msgspec.Struct):
    cluster: ClusterConfig
    node: NodeConfig
    calls: dict[str, Call]
    path: str = "<defaults>"
    security: SecurityConfig = msgspec.field(default_factory=SecurityConfig)

    def candidate(self) -> Candidate | None:
        """This node's entry in ``cluster.candidates`` (backend "etcd")."""
        return next((c for c in self.cluster.candidates if c.name == self.node.name), None)

    def leaders(self) -> list[Candidate]:
        """Where a leader may be: the candidates, or the one leader of backend "memory"."""
        if self.cluster.backend == "etcd":
            return list(self.cluster.candidates)
        return [Candidate(name="", leader=self.cluster.leader, events=self.cluster.events)]

    def binds(self) -> dict[str, str]:
        """Key path -> endpoint, for every endpoint this daemon's role binds."""
        out = {}
        me = self.candidate()
        if self.node.role in ("leader", "both") and me is not None:
            i = self.cluster.candidates.index(me)
            out.update({f"cluster.candidates[{i}].leader": me.leader, f"cluster.candidates[{i}].events": me.events})
        elif self.node.role in ("leader", "both"):
            out.update({"cluster.leader": self.cluster.leader, "cluster.events": self.cluster.events})
        if self.node.role in ("worker", "both"):
            out["node.listen"] = self.node.listen
        if self.node.metrics:
            out["node.metrics"] = "tcp://" + self.node.metrics
        return out


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
    unknown = set(raw) - {"cluster", "node", "calls", "security", "client"}
    if unknown:
        expected = "[cluster], [node], [security], [client] or [calls.NAME]"
        raise ConfigError(f"{path}: unknown section [{sorted(unknown)[0]}]; expected {expected}")
    cluster = _convert(raw.get("cluster", {}), ClusterConfig, path, "cluster")
    if cluster.backend not in BACKENDS:
        known = ", ".join(map(repr, BACKENDS))
        raise ConfigError(f"{path}: cluster.backend: unknown backend {cluster.backend!r} (expected one of: {known})")
    if cluster.partition == "stop" and cluster.liveness < 2:
        raise ConfigError(
            f'{path}: cluster.partition: "stop" needs cluster.liveness >= 2 (it is {cluster.liveness}): a worker '
            "renews its processes' lease once per heartbeat, and the lease must end before the leader's "
            "heartbeat x liveness"
        )
    node = _convert(raw.get("node", {}), NodeConfig, path, "node")
    _convert(raw.get("client", {}), ClientSection, path, "client")
    _election(raw.get("cluster", {}), cluster, path)
    if node.metrics:
        metrics_address(node.metrics, path)
    calls_raw = raw.get("calls", {})
    if not isinstance(calls_raw, dict):
        raise ConfigError(f"{path}: calls: expected tables [calls.NAME]")
    calls = {}
    for name, table in calls_raw.items():
        if not _GROUP_NAME.match(name) or len(name) > GROUP_MAX:
            raise ConfigError(f"{path}: calls.{name}: {GROUP_RULE}")
        calls[name] = _convert(table, Call, path, f"calls.{name}")
        if calls[name].log:  # relative to the config file, as every path in it
            calls[name].log = os.path.join(os.path.dirname(os.path.abspath(path)), calls[name].log)
    security = _convert(raw.get("security", {}), SecurityConfig, path, "security")
    here = os.path.dirname(os.path.abspath(path))
    node.python_path = [os.path.join(here, os.path.expanduser(folder)) for folder in node.python_path]
    for name in ("server_key", "key", "authorized"):
        value = getattr(security, name)
        if value:
            setattr(security, name, os.path.join(here, os.path.expanduser(value)))
    return Config(cluster=cluster, node=node, calls=calls, path=path, security=security)


def _election(raw: dict, cluster: ClusterConfig, path: str) -> None:
    """The keys of backend "etcd" go together, and with no other backend."""
    if cluster.backend != "etcd":
        for key in ("etcd", "lease", "etcd_election", "candidates"):
            if key in raw:
                raise ConfigError(f'{path}: cluster.{key}: only with cluster.backend = "etcd"')
        return
    for key in ("leader", "events"):
        if key in raw:
            raise ConfigError(
                f'{path}: cluster.{key}: with cluster.backend = "etcd", each of cluster.candidates names its own '
                f"leader and events endpoints; remove cluster.{key}"
            )
    if not cluster.etcd:
        raise ConfigError(
            f'{path}: cluster.etcd: required with cluster.backend = "etcd" (e.g. ["http://127.0.0.1:2379"])'
        )
    for i, endpoint in enumerate(cluster.etcd):
        if not re.match(r"^https?://[^/]+:\d+/?$", endpoint):
            raise ConfigError(f'{path}: cluster.etcd[{i}]: {endpoint!r} is not "http://HOST:PORT"')
    if not cluster.candidates:
        raise ConfigError(
            f'{path}: cluster.candidates: required with cluster.backend = "etcd" (every node that may lead)'
        )
    seen: set[str] = set()
    for i, c in enumerate(cluster.candidates):
        if c.name in seen:
            raise ConfigError(f"{path}: cluster.candidates[{i}].name: {c.name!r} is listed twice")
        seen.add(c.name)


def metrics_address(address: str, path: str = "<config>") -> tuple[str, int]:
    """``node.metrics`` as (host, port): "127.0.0.1:9464", "[::1]:9464", "localhost:9464"."""
    host, sep, port = address.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536 or "/" in host:
        raise ConfigError(f'{path}: node.metrics: {address!r} is not HOST:PORT (e.g. "127.0.0.1:9464")')
    return host, int(port)


def check_role(config: Config) -> None:
    """A daemon that may lead is a candidate (backend "etcd"); checked once the role and
    name are final (``--role`` and ``--name`` may change them)."""
    if config.cluster.backend == "etcd" and config.node.role != "worker" and config.candidate() is None:
        names = ", ".join(c.name for c in config.cluster.candidates)
        raise ConfigError(
            f"{config.path}: node.name: {config.node.name!r} has role {config.node.role!r} but is not in "
            f'cluster.candidates ({names}); list it there, or give it role "worker"'
        )


def protected(config: Config) -> None:
    """Protected mode: no bind of a tcp address other than loopback (``*`` and
    ``0.0.0.0`` included) unless CURVE guards it or the file says it may go unguarded.
    Checked once the role is final (``--role`` may change it)."""
    sec = config.security
    if sec.insecure:
        return
    for where, endpoint in config.binds().items():
        scheme, _, rest = endpoint.partition("://")
        if scheme != "tcp" or _loopback(rest.rpartition(":")[0]):
            continue
        if where == "node.metrics":  # plain HTTP: CURVE guards none of it
            raise ConfigError(
                f"{config.path}: node.metrics: {endpoint} would serve the metrics to the network unguarded; "
                "security.insecure = true allows it (security.curve does not guard HTTP)"
            )
        if not sec.curve:
            raise ConfigError(
                f"{config.path}: {where}: {endpoint} is open to the network; set security.curve = true to "
                "authenticate every peer (or security.insecure = true to allow it without)"
            )


def _loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "*", an interface name or a host name: not known to be loopback


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
