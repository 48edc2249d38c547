"""docs/reference/protocol.md, made from forsetid/protocol.py: msgspec.inspect gives every
message's tag, fields, types, defaults and enumerations; the words for each field are the
comment on its line in protocol.py, else the ones below. scripts/gen_docs.py writes it."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import get_args

import msgspec
from msgspec import inspect as mi

from forsetid import protocol as p

SOURCE = Path(p.__file__)

SECTIONS = [
    ("Client requests", "A client (or a worker, forwarding) to a worker's `node.listen` or the leader's "
     "`cluster.leader`. Each may also carry `deadline` ([Framing](#framing)).", [p.Get, p.Find, p.Stop, p.List, p.Nodes, p.Calls, p.AddCall, p.RemoveCall, p.Drain,
                           p.Undrain, p.Info, p.Talk]),
    ("Replies", "To a request, with its `id`.",
     [p.Found, p.Stopped, p.Locations, p.NodeList, p.CallList, p.Ok, p.Answer, p.InfoReply, p.Error]),
    ("Between a worker and the leader", "Over the worker's DEALER to the leader's ROUTER. A client never sends "
     "these; `add-call` and `remove-call` also go from the leader to every worker, so that a group added at run "
     "time outlives the leader.", [p.Hello, p.Welcome, p.Ping, p.Pong, p.Spawn, p.Spawned, p.SpawnFailed, p.Kill,
                                   p.Exited, p.Suspend, p.Leaving]),
    ("Events", "On the leader's PUB socket (`cluster.events`), two frames `[topic, map]`: see [Events and ticks]"
     "(#events-and-ticks).", [p.Event, p.Tick, p.Elected]),
]  # fmt: skip
SHAPES = [p.Location, p.NodeInfo, p.Call, p.Seat, p.Starting]

# Words for a field whose line in protocol.py has no comment, by message tag (or shape name) and field ...
WORDS: dict[tuple[str, str], str] = {
    ("get", "args"): "extra start arguments, after the group's own `args` (used only if this get starts the process)",
    ("get", "seq"): "the last event `seq` the asker has applied (a near cache): a worker whose cache is behind "
    "asks the leader instead of answering from it",
    ("get", "epoch"): "the epoch of that `seq` (`\"\"`: none applied)",
    ("call", "payload"): "the message for the process (MessagePack bin), at most `cluster.max_payload` bytes",
    ("call", "args"): "extra start arguments, as `get`'s (if this call starts the process)",
    ("call", "create"): "start the process first, as `get` would; false: `not-found` if it runs nowhere",
    ("call", "one_way"): "a send: answered `ok` once in the mailbox; false: a call, answered `reply`",
    ("ls", "group"): "one group's processes; nil: every group's",
    ("add-call", "name"): "the group's name",
    ("add-call", "call"): "how its processes start (a [call](#shape-call) map)",
    ("remove-call", "name"): "the group's name",
    ("drain", "node"): "the node's name",
    ("drain", "stop"): "also stop its processes (those with a restart policy start elsewhere)",
    ("undrain", "node"): "the node's name",
    ("location", "location"): "where it runs; nil: it runs nowhere (`find`)",
    ("location", "seq"): "where the answering leader's event sequence stood (a worker answering from its cache: "
    "where its cache stood); a cache keeps the answer only if it has applied no later event",
    ("location", "epoch"): "the epoch of that `seq`",
    ("stopped", "found"): "a process (or a restart waiting) was stopped; false: none ran",
    ("locations", "items"): "every process, of one group or all (a list of [location](#shape-location))",
    ("node-list", "items"): "every worker the leader knows (a list of [node](#shape-node))",
    ("call-list", "items"): "the groups, a **map** from the group's name to its [call](#shape-call) (not a list)",
    ("reply", "payload"): "the process's reply (MessagePack bin)",
    ("info-reply", "node"): "this daemon's name",
    ("info-reply", "role"): "`leader`, `worker` or `both`",
    ("info-reply", "events"): "the event endpoint this daemon follows or serves (`cluster.events`)",
    ("info-reply", "version"): "the protocol version it speaks",
    ("error", "kind"): "one of the [error kinds](#error-kinds)",
    ("error", "message"): "one line for a person: what went wrong, naming the problem",
    ("hello", "node"): "the worker's name (`node.name`)",
    ("hello", "incarnation"): "new at every start of the daemon: tells a restarted worker from a reconnected one",
    ("hello", "capacity"): "`node.capacity` (0: no limit)",
    ("hello", "processes"): "every process it runs",
    ("hello", "starting"): "its starts under way, each with the id of the `spawn` it will answer",
    ("hello", "calls"): "every group it knows, by name",
    ("welcome", "epoch"): "the leader's epoch (its event stream's)",
    ("welcome", "calls"): "the leader's groups, by name",
    ("pong", "epoch"): "the leader's epoch",
    ("pong", "known"): "false: the leader does not know this worker (it restarted, or took it for down): say "
    "hello again. An unasked pong (id 0) goes to a worker whose connection the leader saw close",
    ("spawn", "call"): "how to start it",
    ("spawn", "args"): "the get's extra arguments",
    ("spawned", "location"): "where it runs now",
    ("spawn-failed", "reason"): "why, for a person",
    ("kill", "location"): "the process to stop",
    ("kill", "reason"): "the reason its exit will carry",
    ("exited", "location"): "the process",
    ("exited", "exit_code"): "its exit code if it exited by itself; nil otherwise",
    ("exited", "signal"): "the signal that killed it, if one did; nil otherwise",
    ("exited", "reason"): "why it ended",
    ("exited", "at"): "when (Unix seconds)",
    ("suspend", "group"): "the group",
    ("suspend", "seconds"): "for how long (`cluster.max_time`)",
    ("event", "seq"): "this event's number in the leader's life (`epoch`): one more than the last",
    ("event", "epoch"): "the leader's epoch: a new one means a new leader, whose numbers start again",
    ("event", "kind"): "`started` or `exited`",
    ("event", "location"): "the process",
    ("event", "exit_code"): "`exited` only: its exit code if it exited by itself; nil if a signal killed it, if "
    "its exit went unseen (`node-down`, a report lost), and for `started`",
    ("event", "signal"): "`exited` only: the signal's number if one killed it; else nil",
    ("event", "reason"): "`exited` only: why (see [Enumerations](#enumerations)); nil for `started`",
    ("event", "at"): "when it started or exited (Unix seconds)",
    ("event", "gseq"): "this event's number among its group's events",
    ("tick", "seq"): "the `seq` of the last event published",
    ("tick", "epoch"): "the leader's epoch",
    ("elected", "node"): "the candidate that now leads",
    ("elected", "term"): "its term (etcd's create revision of the leader key)",
    ("elected", "epoch"): "its epoch",
    ("add-call", "replace"): "replace a group of that name (else the leader answers `group-exists`)",
    ("event", "adopted"): "of a `started` event: not a new start but a process that ran already, registered from "
    "its worker's hello (a new leader learning what runs, or a worker back after a silence)",
    ("exited", "drain"): "its `kill` was a drain's (`drain --stop`), not a user's `stop`: with a restart policy it "
    "starts again elsewhere (carried from the kill, as another leader may read the exit)",
    ("kill", "drain"): "stopped by `drain --stop`, not by a user's `stop` (both say reason `stopped`)",
    ("hello", "exited"): "`exited` reports of processes killed when its lease lapsed (`partition = \"stop\"`) "
    "since the last welcome, which no leader may have heard",
    ("hello", "welcomed_by"): "the epoch of the last leader that welcomed it (`\"\"`: none): tells a new leader "
    "that it has a predecessor",
    ("tick", "gseq"): "on a group's topic, that group's last `gseq`; 0 on `\"\"`",
    ("welcome", "term"): "the election's term (backend `etcd`; 0 with `memory`): a worker obeys no leader of an "
    "older term than the newest that welcomed it",
    ("Location", "group"): "the group",
    ("Location", "key"): "the key",
    ("Location", "node"): "the worker it runs on",
    ("Location", "pid"): "its process id on that machine",
    ("Location", "endpoint"): "the group's `endpoint` template filled for this key (or what `ready()` reported); "
    "nil: none",
    ("Location", "started_at"): "when it started (Unix seconds)",
    ("NodeInfo", "name"): "the worker's name",
    ("NodeInfo", "state"): "`up`, `draining` (takes no new process), `down` (taken for dead) or `left` (shut "
    "down cleanly)",
    ("NodeInfo", "processes"): "processes registered on it",
    ("NodeInfo", "capacity"): "`node.capacity` (0: no limit)",
    ("Call", "entry"): "`package.module:function`, called with the key in a fork of the fork server",
    ("Call", "command"): "a program and its arguments, run without a shell; `{key}`, `{group}`, `{node}` filled in",
    ("Call", "args"): "arguments after the key",
    ("Call", "ready"): "counts as started only when the process calls `forsetictl.ready()`",
    ("Call", "start_timeout"): "seconds to become started (ready)",
    ("Call", "stop_timeout"): "seconds between SIGTERM and SIGKILL",
    ("Call", "endpoint"): "a template for `FORSETI_ENDPOINT` and the location's endpoint",
    ("Seat", "name"): "the candidate's node name",
    ("Seat", "leader"): "its ROUTER endpoint as leader",
    ("Seat", "events"): "its PUB endpoint as leader",
    ("Starting", "id"): "the id of the `spawn` this start will answer",
    ("Starting", "group"): "the group",
    ("Starting", "key"): "the key",
}  # fmt: skip
# ... or by field name alone.
COMMON = {
    "group": "the group's name",
    "key": "the key",
    "seq": "as `get`'s",
    "epoch": "as `get`'s",
    "deadline": "when the caller stops waiting (Unix seconds; 0: never)",
}
WORDS.update({("find", f): WORDS[("get", f)] for f in ("seq", "epoch")})


def comments() -> dict[tuple[str, str], str]:
    """(class name, field) -> the comment at the end of its line in protocol.py."""
    lines = SOURCE.read_text().splitlines()
    out = {}
    for node in ast.walk(ast.parse(SOURCE.read_text())):
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    line = lines[item.lineno - 1]
                    if "  # " in line:
                        out[(node.name, item.target.id)] = line.split("  # ", 1)[1].strip()
    return out


def words(cls: type, field: str, notes: dict[tuple[str, str], str]) -> str:
    name = cls.__name__
    tag = p.tag(cls) if issubclass(cls, p.Msg) else name
    text = WORDS.get((tag, field)) or notes.get((name, field)) or COMMON.get(field, "")
    if not text:
        raise LookupError(f"no words for {tag}.{field}: add them to scripts/docs_protocol.py's WORDS")
    return text.replace("|", "\\|")


def type_name(t) -> str:
    """A msgspec type as MessagePack types, with its constraints."""
    if isinstance(t, mi.UnionType):
        return " or ".join(type_name(x) for x in t.types)
    if isinstance(t, mi.StrType):
        rules = [f"{t.min_length}..{t.max_length} chars" if t.max_length else ""]
        rules.append(f"`{t.pattern}`" if t.pattern and t.pattern != r"^[^\x00]*$" else "no NUL" if t.pattern else "")
        rules = [r for r in rules if r]
        return "str" + (f" ({', '.join(rules)})" if rules else "")
    if isinstance(t, mi.LiteralType):
        return "str: " + " \\| ".join(f"`{v}`" for v in t.values)
    if isinstance(t, (mi.IntType, mi.FloatType)):
        base = "int" if isinstance(t, mi.IntType) else "float"
        rules = [f"{op} {v}" for op, v in ((">", t.gt), (">=", t.ge), ("<", t.lt), ("<=", t.le)) if v is not None]
        return base + (f" ({', '.join(rules)})" if rules else "")
    if isinstance(t, mi.ListType):
        return f"array of {type_name(t.item_type)}"
    if isinstance(t, mi.DictType):
        return f"map {type_name(t.key_type)} → {type_name(t.value_type)}"
    if isinstance(t, mi.StructType):
        if issubclass(t.cls, p.Msg):
            return f"[`{p.tag(t.cls)}`](#{p.tag(t.cls)}) map"
        return f"[{shape(t.cls)}](#shape-{shape(t.cls)}) map"
    simple = {mi.BoolType: "bool", mi.BytesType: "bin", mi.NoneType: "nil", mi.AnyType: "any"}
    return simple.get(type(t), type(t).__name__)


def shape(cls: type) -> str:
    return "node" if cls is p.NodeInfo else cls.__name__.lower()


def default(f) -> str:
    if f.required:
        return "**required**"
    value = f.default if f.default is not msgspec.NODEFAULT else f.default_factory()
    return "`" + msgspec.json.encode(value).decode().replace("null", "nil") + "`"


def nil_ok(t) -> str:
    return "yes" if isinstance(t, mi.UnionType) and any(isinstance(x, mi.NoneType) for x in t.types) else "no"


def table(cls: type, notes: dict, skip: tuple[str, ...] = ("v", "id", "deadline")) -> list[str]:
    info = mi.type_info(cls)
    rows = ["| field | type | if absent | nil? | meaning |", "|---|---|---|---|---|"]
    for f in info.fields:
        if f.name in skip:
            continue
        rows.append(
            f"| `{f.name}` | {type_name(f.type)} | {default(f)} | {nil_ok(f.type)} | {words(cls, f.name, notes)} |"
        )
    return rows if len(rows) > 2 else ["No fields of its own."]


def message(cls: type, notes: dict) -> list[str]:
    out = [f"### `{p.tag(cls)}`", ""]
    doc = (cls.__doc__ or "").strip()
    if doc and not doc.startswith(cls.__name__ + "("):
        out += [" ".join(doc.split()).replace("``", "`"), ""]
    return out + table(cls, notes) + [""]


def enumerations() -> list[str]:
    kinds = [v for k, v in vars(p).items() if k.isupper() and isinstance(v, str) and re.fullmatch("[a-z-]+", v)]
    event_kind = next(f.type for f in mi.type_info(p.Event).fields if f.name == "kind")
    rows = [
        ("event `kind`", event_kind.values),
        ("`reason` of `event`, `exited` and `kill`", get_args(p.Reason)),
        ("node `state`", ("up", "draining", "down", "left")),
        ("`restart` of a call", p.RESTARTS),
        ("`role` of `info-reply`", ("leader", "worker", "both")),
        ("`state` of `info-reply`", ("leader", "standby", "")),
        ("error `kind`", tuple(kinds)),
    ]
    return ["| field | values |", "|---|---|"] + [
        f"| {name} | {', '.join(f'`{v}`' for v in vs)} |" for name, vs in rows
    ]


def page() -> str:
    notes = comments()
    out = [HEAD.format(version=p.VERSION, max_payload=p.MAX_PAYLOAD, envelope=p.ENVELOPE // 1024)]
    for title, intro, classes in SECTIONS:
        out += [f"## {title}", "", intro, ""]
        for cls in classes:
            out += message(cls, notes)
    out += ["## Shapes inside messages", ""]
    for cls in SHAPES:
        out += [f"### {shape(cls)} {{#shape-{shape(cls)}}}", "", f"`{cls.__name__}`, a map.", ""]
        out += table(cls, notes, skip=()) + [""]
    out += ["## Enumerations", "", *enumerations(), "", TAIL]
    return "\n".join(out).rstrip() + "\n"


HEAD = """\
<!-- Generated by scripts/gen_docs.py from forsetid/protocol.py: do not edit (tests/test_docs.py checks it). -->
# Wire protocol

Everything a client in another language needs: ZeroMQ sockets and MessagePack maps.
This page is made from `forsetid/protocol.py`, where every message is a msgspec struct
(one tagged union), so the names, types and defaults below are the ones the daemons
decode with. `tests/dealer_process.py` is a managed process in ten lines of plain pyzmq.

## Framing

* **Requests and replies** are one ZeroMQ frame each, holding one MessagePack map. A
  client connects a DEALER to a worker's `node.listen` (or the leader's
  `cluster.leader`) and sends the frame as it is; the answer comes back on the same
  socket. Many requests may be in flight: match answers by `id`.
* **Events** come from the leader's PUB (an XPUB) at `cluster.events`, two frames
  `[topic, map]`. The topic is the group's name followed by one NUL byte: subscribe to
  `b"users\\0"` for the group `users` alone, or to `b""` for every group.
* **Every map** has `t` (the message's tag, a str: the headings below), `v` (the
  protocol version, an int, now `{version}`; absent counts as `{version}`) and `id` (an int,
  0 to 2^63-1, chosen by the sender; the reply carries the same one; `0` where no reply
  is expected). Unknown fields are ignored (but not inside a [call](#shape-call) map).
* **Every client request** may carry `deadline` (a float, Unix seconds; `0` or absent:
  none): a daemon that receives it more than 0.25 s after its deadline drops it
  unanswered, and a `get` or `call` whose caller has given up starts no process.

## A client in a dozen lines

Any ZeroMQ binding and any MessagePack library will do; here pyzmq and msgspec, against
the single-machine cluster of [Getting started](../getting-started.md) (its worker's
`node.listen` is `tcp://127.0.0.1:7072`, its leader's `cluster.events`
`tcp://127.0.0.1:7071`):

<!-- run -->
```python
import msgspec
import zmq

ctx = zmq.Context.instance()
events = ctx.socket(zmq.SUB)
events.setsockopt(zmq.SUBSCRIBE, b"users\\0")  # one group's topic: its name and a NUL
events.connect("tcp://127.0.0.1:7071")
first = msgspec.msgpack.decode(events.recv_multipart()[1])  # a tick, at once: the stream is live
assert first["t"] == "tick"

node = ctx.socket(zmq.DEALER)
node.setsockopt(zmq.RCVTIMEO, 5000)
node.connect("tcp://127.0.0.1:7072")
node.send(msgspec.msgpack.encode({{"t": "get", "v": 1, "id": 7, "group": "users", "key": "wire"}}))
reply = msgspec.msgpack.decode(node.recv())
assert reply["t"] == "location" and reply["id"] == 7
print(reply["location"])  # {{'group': 'users', 'key': 'wire', 'node': ..., 'pid': ..., ...}}

node.send(msgspec.msgpack.encode({{"t": "get", "v": 1, "id": 8, "group": "nope", "key": "k"}}))
error = msgspec.msgpack.decode(node.recv())
assert (error["t"], error["id"], error["kind"]) == ("error", 8, "unknown-group")

topic, frame = events.recv_multipart()  # the started event, or a heartbeat's tick before it
print(topic, msgspec.msgpack.decode(frame)["t"])
node.close()
events.close()
```

## Types

* **str** is MessagePack str (UTF-8); a bin where a str is expected is refused
  (`bad-message`: "Expected `str`, got `bytes`"). **bin** is used only for payloads.
* **int** is a MessagePack int; **float** a MessagePack float (an int is accepted too).
  Times (`at`, `started_at`, `deadline`) are float Unix seconds; durations float seconds.
* **absent or nil.** "If absent" says what a missing field counts as; "**required**": it
  must be there. A field that may be nil says so: elsewhere nil is refused (`seq: nil`
  is a `bad-message`; leave it out instead). The daemons send every field of their own
  messages (a [call](#shape-call) map leaves out the fields at their defaults).
* A `bad-message` or `version` error answers with the request's `id` when that `id` was
  an int from 0 to 2^63-1, and with `id` 0 otherwise (the request's own `id` was the
  problem, or the frame did not decode at all).
* **Sizes.** A frame over `cluster.max_payload` ({max_payload} bytes by default) + {envelope} KiB at a
  worker's client socket, or over 64 MiB at the leader's (where a worker's hello lists all
  it runs), is dropped by ZeroMQ and the sender disconnected. The arguments and
  environment of one start may take at most 64 KiB: a larger `get` fails with
  `spawn-failed`, naming the size.

## Events and ticks

* `event` is published for every start and exit, on its group's topic. `seq` grows by
  one per event within an `epoch` (one leader's life); `gseq` by one per event of that
  group. A subscriber that sees a gap in the count it follows (`seq` on `b""`, `gseq` on
  a group's topic), or a new `epoch`, has missed events and should re-read what it keeps
  (`ls`): nothing fills a gap.
* `tick` says where the count stands, so that a quiet stream is known to be alive. Every
  `cluster.heartbeat` seconds the leader publishes one on `b""` with `gseq` 0, **and one
  on the topic of every group someone subscribed to on its own, with that group's
  `gseq`**. Each new subscription also gets a tick at once, on its own topic (with that
  group's `gseq`, or 0 on `b""`): a subscriber that has its first tick is live.
  ZeroMQ matches topics by prefix, so a subscriber of `b""` also receives the ticks
  published on the groups' topics: read a tick's count by the topic it came on (on
  `b""`, `seq`; on `GROUP\\0`, that group's `gseq`).
* `elected` (backend `etcd`): a candidate that wins an election publishes it on `b""` at
  once, again with every heartbeat's tick, and to every new subscriber of `b""`; workers
  move to it at once. A standby publishes nothing.

## Mailbox frames

Between a worker and a managed process, on `$FORSETI_MAILBOX` (an `ipc://` socket in a
folder of mode 0700, one per worker; it never leaves the machine). Multipart messages,
not MessagePack; the process holds a DEALER:

| direction | frames | meaning |
|---|---|---|
| process → worker | `[b"hello", ID]` | once connected; `ID` is `$FORSETI_MAILBOX_ID` (ASCII digits) |
| worker → process | `[b"call", N, PAYLOAD]` | a request that waits for a reply; `N` a request number in ASCII digits |
| worker → process | `[b"send", N, PAYLOAD]` | a one-way request |
| process → worker | `[b"reply", N, PAYLOAD]` | the answer to request `N`; to a `send`, as soon as the process takes it (that frees its place in the mailbox; the payload is ignored) |

## Which reply answers which request

| request | its reply |
|---|---|
| `get`, `find` | `location` (`location` nil: `find` of a key that runs nowhere) |
| `stop` | `stopped` |
| `ls` | `locations` |
| `nodes` | `node-list` |
| `calls` | `call-list` |
| `add-call`, `remove-call`, `drain`, `undrain` | `ok` |
| `info` | `info-reply` |
| `call` | `reply`; with `one_way` (a send): `ok`, once in the process's mailbox |
| any | `error`, instead, when it cannot be done |

A request whose `deadline` has passed is dropped unanswered; any other gets one reply,
unless the node it was sent to is lost meanwhile (a client's timeout covers that, and it
may send a request that is safe to repeat to another node). A worker answers `get` and `find` from its cache when it can, and forwards the
rest to the leader, whose reply it passes back with the client's `id`.

## Error kinds

Every `error` reply has a `kind` (below, under [Enumerations](#enumerations)) and a
`message`. What each means, and which exception a Python client raises for it:
[Errors and exit statuses](errors.md). A standby candidate (backend `etcd`) answers
`not-leader` with `leader`, the leader's name if it knows it; its `cluster.candidates`
entry gives the endpoint to go to.
"""

TAIL = """\
`state` of `info-reply`: `leader` or `standby` from a candidate of backend `etcd`, `""`
otherwise. An error `kind` may be added in a later version: treat an unknown one as a
failure with its `message`.
"""
