"""docs/reference/config.md, made from forsetid/config.py: every key of forseti.toml with
its type and default as the daemon's msgspec structs decode it; what each key means is
below (a key the structs have and this table lacks, or the reverse, fails the generation).
scripts/gen_docs.py writes it."""

from __future__ import annotations

import msgspec
from msgspec import inspect as mi

from forsetid import config as c
from forsetid.protocol import Call

TABLES = [
    ("cluster", c.ClusterConfig, "The same in every daemon's file (and in a client's, for `max_payload`)."),
    ("cluster.candidates[]", c.Candidate, "Backend `etcd`: one `[[cluster.candidates]]` table per node that may lead."),
    ("node", c.NodeConfig, "This daemon."),
    ("calls.NAME", Call, "One table per group; `NAME` is 1-128 characters of `A-Z a-z 0-9 _ . : @ -`."),
    ("security", c.SecurityConfig, "Paths are relative to the config file ([Security](../guides/security.md))."),
    ("client", c.ClientSection, "Read by clients only (`forsetictl --config`, `Client.from_config`)."),
]
DEFAULTS = {"node.name": "the host name"}  # defaults made at run time

MEANINGS = {
    "cluster.name": "a name for the cluster",
    "cluster.leader": "the leader's ROUTER: it binds it, workers and clients connect to it",
    "cluster.events": "the leader's PUB for events",
    "cluster.nodes": "allow-list of worker names; empty = any worker may join",
    "cluster.backend": '`"memory"`: one leader; `"etcd"`: leaders elected among `cluster.candidates` (see [A highly available leader](../guides/ha.md))',
    "cluster.etcd": "backend `etcd`: etcd's v3 endpoints (`http://HOST:PORT`, its HTTP/JSON gateway), tried in turn",
    "cluster.lease": "backend `etcd`: seconds a leader holds office without renewing it (at least 1; etcd's leases are whole seconds)",
    "cluster.etcd_election": 'backend `etcd`: etcd\'s own `--election-timeout`, in seconds; with `partition = "stop"` a worker works out from it how long a failover may take, and warns at start if its processes would not outlive that (see [Partitions: the timing argument](../internals/partitions.md))',
    "cluster.heartbeat": "seconds between heartbeats (worker ping, leader pong, event-stream tick)",
    "cluster.liveness": "heartbeats of silence after which a peer is taken for dead; a daemon whose name another live daemon has gives up after liveness + 2 heartbeats and a second",
    "cluster.partition": '`"stop"`: a worker that hears from no leader stops its processes before the leader can take it for down and place them elsewhere, even when the worker daemon is frozen or dead (needs `liveness >= 2`; see [Partitions: the timing argument](../internals/partitions.md)); `"keep"`: they go on, and a duplicate is resolved when the worker returns',
    "cluster.max_payload": "bytes of a call's or send's payload (the client checks it first, from its config file)",
    "node.name": "this node's name",
    "node.role": '`"leader"`, `"worker"` or `"both"`',
    "node.listen": "this worker's client endpoint (cached reads)",
    "node.capacity": "most processes this node takes; 0 = no limit",
    "node.metrics": "`HOST:PORT` for Prometheus text on `/metrics` (see [Metrics](../guides/metrics.md)); empty: off",
    "node.python_path": "folders `entry` modules are imported from, before the daemon's own `sys.path` (relative to the config file)",
    "calls.NAME.args": "arguments after the key",
    "calls.NAME.ready": "wait for `forsetictl.ready()`",
    "calls.NAME.start_timeout": "seconds to become ready",
    "calls.NAME.stop_timeout": "seconds between SIGTERM and SIGKILL",
    "calls.NAME.endpoint": "template for `FORSETI_ENDPOINT` and the location's endpoint; placeholders escaped as in `log` (each value one path segment: `%XX` for all but `A-Z a-z 0-9 _ . -`)",
    "calls.NAME.log": "a file per key for the process's output, e.g. `\"/var/log/forseti/{group}/{key}.log\"` (folders made, appended; relative to the config file; one that cannot be opened fails the start); none: the daemon's log",
    "calls.NAME.mailbox": "requests a process may hold unanswered (see [Talking to a process](../guides/talking.md)); more get `busy`; `0`: the group takes no messages",
    "calls.NAME.restart": '`"on-failure"`: start the key\'s process again after an abnormal exit or its node going away; `"always"`: after any exit but a `stop` (see [Restart policies](../guides/restarts.md))',
    "security.curve": "CURVE on every socket but inproc (see [Security](../guides/security.md))",
    "security.server_key": "the cluster's public key file (daemons read `NAME.key_secret` beside it)",
    "security.key": "this daemon's or client's own key pair (a `.key_secret` file)",
    "security.authorized": "daemons: public keys by role, in `workers/ admins/ clients/ readers/`",
    "security.insecure": "allow a non-loopback tcp bind without CURVE",
    "client.endpoints": "clients only (`forsetictl --config`, `Client.from_config`): the nodes a client may use, in order (see [Client library](../guides/python-client.md)); empty: the node the file describes",
    "cluster.max_retries": "crash-loop guard: more than `max_retries` abnormal exits (or failed starts) of one group on one node within `max_time` seconds suspend that group there for `max_time` seconds",
    "cluster.max_time": "crash-loop guard: the window, and the suspension, in seconds (see `cluster.max_retries`)",
    "calls.NAME.entry": "`package.module:function`: the process is a fork of the fork server calling `function(key, *args, *extra_args)` ([Groups and their processes](../guides/processes.md)); exactly one of `entry` and `command`",
    "calls.NAME.command": "a program and its arguments, run without a shell; `{key}`, `{group}`, `{node}` filled into the arguments they stand in; exactly one of `entry` and `command`",
    "cluster.candidates": "backend `etcd`, in place of `cluster.leader` and `cluster.events`: `name`, `leader`, `events` of every node that may lead",
    "cluster.candidates[].name": "a candidate's node name (its `node.name`)",
    "cluster.candidates[].leader": "the ROUTER it binds when it leads (as `cluster.leader`)",
    "cluster.candidates[].events": "the PUB it binds when it leads (as `cluster.events`)",
}


def type_name(t) -> str:
    if isinstance(t, mi.UnionType):
        return " or ".join(type_name(x) for x in t.types if not isinstance(x, mi.NoneType))
    if isinstance(t, mi.ListType):
        return f"list of {type_name(t.item_type)}"
    if isinstance(t, mi.LiteralType):
        return " \\| ".join(f'`"{v}"`' for v in t.values)
    if isinstance(t, mi.StructType):
        return "tables"
    names = {mi.StrType: "string", mi.IntType: "integer", mi.FloatType: "number", mi.BoolType: "boolean"}
    base = names.get(type(t), "value")
    if isinstance(t, (mi.IntType, mi.FloatType)):
        rules = [f"{op} {v:,}" for op, v in ((">", t.gt), (">=", t.ge), ("<=", t.le)) if v is not None]
        return base + (f" ({', '.join(rules)})" if rules else "")
    return base


def default(key: str, f) -> str:
    if key in DEFAULTS:
        return DEFAULTS[key]
    if f.default_factory is not msgspec.NODEFAULT:
        value = f.default_factory()
    elif f.default is not msgspec.NODEFAULT:
        value = f.default
    else:
        return "required"
    if value is None:
        return "none"
    return "`" + msgspec.json.encode(value).decode().replace('":"', '" = "') + "`"


def rows() -> list[str]:
    out, seen = [], set()
    for prefix, struct, intro in TABLES:
        out += [f"## `[{prefix.replace('[]', '')}]`" if "[]" not in prefix else "## `[[cluster.candidates]]`", "",
                intro, "", "| key | type | default | meaning |", "|---|---|---|---|"]  # fmt: skip
        for f in mi.type_info(struct).fields:
            key = f"{prefix}.{f.name}"
            if key not in MEANINGS:
                raise LookupError(f"no meaning for {key}: add it to scripts/docs_config.py's MEANINGS")
            seen.add(key)
            meaning = MEANINGS[key].replace("|", "\\|")
            out.append(f"| `{key}` | {type_name(f.type)} | {default(key, f)} | {meaning} |")
        out.append("")
    extra = set(MEANINGS) - seen
    if extra:
        raise LookupError(f"MEANINGS has keys the config does not: {sorted(extra)}")
    return out


def page() -> str:
    return "\n".join([HEAD, *rows(), TAIL]).rstrip() + "\n"


HEAD = """\
<!-- Generated by scripts/gen_docs.py from forsetid/config.py: do not edit (tests/test_docs.py checks it). -->
# Configuration

One TOML file serves `forsetid` and `forsetictl`. Everything but the groups has a
default; unknown keys and wrong types are refused at start with the file, the key path
and what was expected (`conf/x.toml: cluster.max_retries: Expected int, got str`).
`forsetid --check --config FILE` checks a file without starting anything.
`conf/forseti.toml` is a commented example of a single-machine cluster; `conf/cluster/`,
`conf/ha/` and `conf/secure/` are examples of several nodes, an etcd backend and CURVE.
"""

TAIL = """\
## Rules across keys

Group names are 1-128 characters of `A-Z a-z 0-9 _ . : @ -`; keys are 1-1024 characters.
The leader's groups are the ones that count (a worker is sent the call with each start);
a worker's own `[calls]` tell its fork server which modules to import ahead of time.
`forsetictl --config F` talks to the node `F` describes: its `node.listen`, or
`cluster.leader` if its role is `leader`. `forsetictl` reads only those keys (and
`node.role`; with backend `etcd`, a role `leader` file's client talks to its own
candidate's `leader`); the daemon validates the whole file when it starts. Another
`cluster.backend` than `memory` or `etcd` is refused with the key and the known names;
so is every inconsistent combination of the etcd keys (`cluster.leader` beside
`cluster.candidates`, candidates without `backend = "etcd"`, a name listed twice, a
daemon of role `leader` or `both` that is not a candidate), each with the key named.
"""
