"""The wire protocol: every message a Forseti daemon or client sends or receives.

Framing (ZeroMQ):

* requests and replies: one frame holding one MessagePack map. A DEALER sends the
  frame as is; the ROUTER it reaches sees ``[identity, frame]`` and answers the same way.
* events (leader PUB): two frames ``[topic, frame]``; the topic is the group name
  followed by one NUL byte, so subscribing to ``b"users\\0"`` gets exactly the group
  "users" and subscribing to ``b""`` gets every group.

Every map has ``"t"`` (the message's tag, below), ``"v"`` (the protocol version,
:data:`VERSION`) and ``"id"`` (a request id chosen by the sender; the reply carries the
same id, so a DEALER may keep many requests in flight; 0 where no reply is expected).
A peer that sends another version, or anything that does not decode, gets an
``error`` reply naming the problem and is otherwise ignored.

Requests a client may send to a worker's ``node.listen`` or to the leader:
``get`` ``find`` ``stop`` ``ls`` ``nodes`` ``calls`` ``add-call`` ``remove-call`` ``info``.
Replies: ``location`` ``stopped`` ``locations`` ``node-list`` ``call-list`` ``ok``
``info-reply`` ``error``. Between a worker and the leader: ``hello``/``welcome``,
``ping``/``pong`` (heartbeats), ``spawn`` -> ``spawned`` | ``spawn-failed``, ``kill``,
``exited`` reports, ``suspend`` (the crash-loop guard tripped), and ``add-call`` (the
leader tells its workers of a new group).
Events: ``event`` (a process started or exited) and ``tick`` (the publisher is alive;
also sent to every new subscription, which then knows that it is live).
"""

from __future__ import annotations

import itertools
import random
import re
from typing import Annotated, Any, Literal, Union, get_args

import msgspec
import zmq

from . import templates
from .const import GROUP_MAX, GROUP_PATTERN, GROUP_RULE

VERSION = 1
MAX_PAYLOAD = 1 << 20  # bytes of a call's payload (cluster.max_payload's default)
ENVELOPE = 64 << 10  # what a request may add to its payload: group, key, args
MAX_MESSAGE = MAX_PAYLOAD + ENVELOPE  # bytes a client may send; ZeroMQ drops larger frames (MAXMSGSIZE)
MAX_PEER_MESSAGE = 64 << 20  # at the leader's ROUTER, where a worker's hello lists all it runs

Group = Annotated[str, msgspec.Meta(min_length=1, max_length=GROUP_MAX, pattern=GROUP_PATTERN)]
KEY_MAX = 1024
KEY_RULE = f"a key is 1-{KEY_MAX} characters, without NUL"  # (argv and the environment take no NUL)
Key = Annotated[str, msgspec.Meta(min_length=1, max_length=KEY_MAX, pattern=r"^[^\x00]*$")]
Seconds = Annotated[float, msgspec.Meta(ge=0, le=86400)]
Arg = str | int | float | bool | None
Reason = Literal["exit", "stopped", "node-down", "conflict", "shutdown", "partition"]
Restart = Literal["never", "on-failure", "always"]  # calls.NAME.restart (restarts.py)
RESTARTS: tuple[str, ...] = get_args(Restart)

# Error kinds a reply may carry; forsetictl maps them to exceptions.
BAD_MESSAGE = "bad-message"
VERSION_MISMATCH = "version"
UNKNOWN_GROUP = "unknown-group"
SPAWN_FAILED = "spawn-failed"
NO_WORKER = "no-worker"
NO_LEADER = "no-leader"
NOT_ALLOWED = "not-allowed"  # a worker's name is not in cluster.nodes: it stops
NAME_TAKEN = "name-taken"  # another live daemon has that name: try again later
SUSPENDED = "suspended"
GROUP_EXISTS = "group-exists"  # add-call of a group that exists, without replace
UNKNOWN_NODE = "unknown-node"  # drain or undrain of a node the leader does not know
FORBIDDEN = "forbidden"  # the request is outside the sender's role (security.curve)
NOT_LEADER = "not-leader"  # a standby candidate (backend "etcd"): ``Error.leader`` names the leader if known
NOT_FOUND = "not-found"  # a call or send with create=False: the key runs nowhere
GONE = "gone"  # the process exited (or its node was lost) before it answered
BUSY = "busy"  # the process's mailbox is full (calls.NAME.mailbox)
NO_MAILBOX = "no-mailbox"  # the group takes no messages (calls.NAME.mailbox = 0)
TOO_LARGE = "too-large"  # a payload over cluster.max_payload


class Call(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """How to start a process for a key: exactly one of ``entry`` or ``command``."""

    entry: str | None = None
    command: list[str] | None = None
    args: list[Arg] = []
    ready: bool = False
    start_timeout: Annotated[float, msgspec.Meta(gt=0, le=86400)] = 10.0
    stop_timeout: Annotated[float, msgspec.Meta(ge=0, le=86400)] = 5.0
    endpoint: str | None = None
    log: str | None = None  # a file per key for the process's output (placeholders as in command)
    restart: Restart = "never"  # what the leader does when a process of the group exits (restarts.py)
    mailbox: Annotated[int, msgspec.Meta(ge=0)] = 1000  # requests a process holds unanswered (0: no mailbox)

    def __post_init__(self) -> None:
        if (self.entry is None) == (self.command is None):
            raise ValueError("a call needs exactly one of `entry` or `command`")
        if self.restart not in RESTARTS:  # (decoding checks it too; a Call built in Python does not)
            known = ", ".join(map(repr, RESTARTS))
            raise ValueError(f"`restart` must be one of {known}, got {self.restart!r}")
        if self.entry is not None:
            module, _, func = self.entry.partition(":")
            if not module or not func:
                raise ValueError(f"`entry` must look like 'package.module:function', got {self.entry!r}")
        if self.command is not None and not self.command:
            raise ValueError("`command` must not be empty")
        filled = [("command", a) for a in self.command or ()] + [
            ("endpoint", self.endpoint or ""),
            ("log", self.log or ""),
        ]
        for where, template in filled:
            unknown = templates.unknown_placeholder(template)
            if unknown:
                known = ", ".join("{" + n + "}" for n in templates.PLACEHOLDERS)
                raise ValueError(f"`{where}` has an unknown placeholder {{{unknown}}} (known: {known})")
        code = templates.code_error(self.command or [])
        if code:
            raise ValueError(code)


class Location(msgspec.Struct, frozen=True):
    """Where the process for (group, key) runs: on ``node``, as ``pid``; ``endpoint``: the
    group's endpoint template filled for this key (or what the process reported with
    ``ready()``), None without one; ``started_at``: Unix seconds."""

    group: str
    key: str
    node: str
    pid: int
    endpoint: str | None = None
    started_at: float = 0.0


class NodeInfo(msgspec.Struct):
    """A worker as the leader knows it. ``state``: "up", "draining" (takes no new
    process), "down" (taken for dead) or "left" (shut down cleanly); ``capacity``: 0 for
    no limit."""

    name: str
    state: Literal["up", "draining", "down", "left"]
    processes: int
    capacity: int
    suspended: list[str] = []  # groups that crash-looped here, for a while
    listen: str = ""  # the node's client endpoint (its node.listen; "": not told, an older worker)


class Msg(msgspec.Struct, tag_field="t", kw_only=True):
    v: int = VERSION
    id: int = 0


# -- requests (client -> worker or leader; a worker forwards what it cannot answer) --


DEADLINE_SLACK = 0.25  # seconds: a deadline counts as passed only this long after it (clocks differ a little)


class Request(Msg, kw_only=True):
    """What a client asks. ``deadline``: the wall-clock time (Unix seconds) after which
    its caller no longer waits (0: none). Every daemon on its way drops a request whose
    deadline has passed (:func:`expired`): not answered, not forwarded, and a ``get``
    or ``call`` whose caller has given up starts no process."""

    deadline: float = 0.0


def expired(deadline: float, now: float) -> bool:
    """Whether a request's caller no longer waits, by this daemon's clock ``now``."""
    return 0 < deadline < now - DEADLINE_SLACK


# Get and find: ``seq`` and ``epoch`` say which events the asker has applied already (a
# client's near cache); a worker whose cache has not seen them yet asks the leader
# instead of answering from it, so that nobody hears of a process after its exit.


class Get(Request, tag="get"):
    group: Group
    key: Key
    args: list[Arg] = []
    seq: int = 0
    epoch: str = ""


class Find(Request, tag="find"):
    group: Group
    key: Key
    seq: int = 0
    epoch: str = ""


class Stop(Request, tag="stop"):
    group: Group
    key: Key


class List(Request, tag="ls"):
    group: Group | None = None


class Nodes(Request, tag="nodes"):
    pass


class Calls(Request, tag="calls"):
    pass


class AddCall(Request, tag="add-call"):
    """Add a group; one of that name is replaced only with ``replace`` (else ``group-exists``)."""

    name: Group
    call: Call
    replace: bool = False


class Drain(Request, tag="drain"):
    """The node takes no new process; ``stop``: its processes are stopped too."""

    node: str
    stop: bool = False


class Undrain(Request, tag="undrain"):
    node: str


class RemoveCall(Request, tag="remove-call"):
    """Remove a group: its running processes go on until they exit; new gets fail."""

    name: Group


class Info(Request, tag="info"):
    pass


class Talk(Request, tag="call"):
    """Deliver ``payload`` to the process of (group, key), started first as ``get``
    would unless ``create`` is false; ``one_way``: a send, answered ``ok`` once in the
    mailbox; else a call, answered ``reply``. A worker sends a talk on to the node that hosts the key as a
    client would, with ``here`` true."""

    group: Group
    key: Key
    payload: bytes
    args: list[Arg] = []
    create: bool = True
    one_way: bool = False
    here: bool = False  # sent on by the caller's node: only the process on this node, else not-found


# -- replies --


class Found(Msg, tag="location"):
    """Reply to get/find. ``seq`` and ``epoch``: where the answering leader's event
    sequence stood (a worker answering from its cache: where its cache stood)."""

    location: Location | None
    seq: int = 0
    epoch: str = ""


class Stopped(Msg, tag="stopped"):
    found: bool


class Locations(Msg, tag="locations"):
    items: list[Location]


class NodeList(Msg, tag="node-list"):
    items: list[NodeInfo]


class CallList(Msg, tag="call-list"):
    items: dict[str, Call]


class Ok(Msg, tag="ok"):
    pass


class Answer(Msg, tag="reply"):
    """A process's reply to a call."""

    payload: bytes


class Seat(msgspec.Struct, frozen=True):
    """A node that may lead (backend "etcd") and the endpoints it serves as leader."""

    name: str
    leader: str
    events: str


class InfoReply(Msg, tag="info-reply"):
    node: str
    role: str
    events: str
    version: int = VERSION
    silence: float = 3.0  # heartbeat x liveness: an event stream quiet this long is dead
    state: str = ""  # a leader's: "leader" or "standby" (backend "etcd"); a worker's: ""
    leader: str = ""  # the leading node's name, as this daemon knows it ("": unknown)
    term: int = 0  # the leader's term (backend "etcd"; 0 with "memory")
    epoch: str = ""  # the leader's epoch (its event stream's; with "etcd", its term as text)
    candidates: list[Seat] = []  # every node that may lead (backend "etcd")
    listen: str = ""  # a worker's client endpoint (node.listen); "" for a leader alone


class Error(Msg, tag="error"):
    kind: str
    message: str
    leader: str = ""  # of a not-leader: the candidate that leads, if the standby knows it


# -- worker <-> leader --


class Starting(msgspec.Struct, frozen=True):
    """A start under way on a worker, and the id of the ``spawn`` it will answer."""

    id: int
    group: str
    key: str


class Hello(Msg, tag="hello"):
    """A worker's first message, and again whenever the leader does not know it (the
    leader restarted, or took it for dead): all it runs and is starting, and every
    group it knows. ``welcomed_by``: the epoch of the last leader that welcomed it ("":
    none), which tells a new leader that it has a predecessor."""

    node: str
    incarnation: str
    capacity: int = 0
    processes: list[Location] = []
    starting: list[Starting] = []
    welcomed_by: str = ""
    calls: dict[str, Call] = {}
    suspended: dict[str, Seconds] = {}  # group -> seconds left
    # Processes killed when this worker's lease lapsed (cluster.partition = "stop") since
    # the last welcome: their exits, which may not have reached any leader.
    exited: list[Exited] = []
    listen: str = ""  # its client endpoint (node.listen): the leader's `nodes` tells clients and other nodes


class Welcome(Msg, tag="welcome"):
    """``term``: the election's (backend "etcd"; 0 with "memory"). A worker obeys no
    leader of an older term than the newest that welcomed it."""

    epoch: str
    calls: dict[str, Call] = {}
    term: int = 0
    leader: str = ""  # the leader's node name


class Suspend(Msg, tag="suspend"):
    """A worker's crash-loop guard tripped: start no ``group`` here for ``seconds``."""

    group: str
    seconds: Seconds


class Leaving(Msg, tag="leaving"):
    """A worker shutting down cleanly: place nothing more there; once it is silent, it
    has left (not gone down). Its processes' exits follow, with reason ``shutdown``."""


class Ping(Msg, tag="ping"):
    """A worker's heartbeat, every ``cluster.heartbeat`` seconds."""


class Pong(Msg, tag="pong"):
    """The leader's answer; ``known`` false = say hello again."""

    epoch: str
    known: bool


class Spawn(Msg, tag="spawn"):
    group: str
    key: str
    call: Call
    args: list[Arg] = []


class Spawned(Msg, tag="spawned"):
    location: Location


class SpawnFailed(Msg, tag="spawn-failed"):
    group: str
    key: str
    reason: str


class Kill(Msg, tag="kill"):
    """Stop a process. ``drain``: stopped by ``drain --stop``, not by a user's ``stop``
    (both say reason "stopped"): with a restart policy it starts again elsewhere."""

    location: Location
    reason: Reason = "stopped"
    drain: bool = False


class Exited(Msg, tag="exited"):
    """A process has exited; ``drain`` is its ``Kill``'s, carried back (the leader that
    reads it may be another one than the leader that sent the kill)."""

    location: Location
    exit_code: int | None
    signal: int | None
    reason: Reason
    at: float
    drain: bool = False


# -- events (leader PUB) --


class Event(Msg, tag="event"):
    """``seq`` counts every event of this leader (``epoch``); ``gseq`` counts the events
    of this one group, so a subscriber of one group can tell a gap too. ``adopted``, of a
    ``started`` event: not a new start but a process that ran already, registered from its
    worker's hello (a new leader learning what runs, or a worker back after a silence)."""

    seq: int
    epoch: str
    kind: Literal["started", "exited"]
    location: Location
    exit_code: int | None = None
    signal: int | None = None
    reason: Reason | None = None
    at: float = 0.0
    gseq: int = 0
    adopted: bool = False


class Elected(Msg, tag="elected"):
    """A candidate has won an election (backend "etcd"): workers go to it at once rather
    than waiting for their old leader's silence. Sent again to every new subscriber."""

    node: str
    term: int
    epoch: str


class Tick(Msg, tag="tick"):
    """Where the sequence stands. On a group's topic, ``gseq`` is that group's."""

    seq: int
    epoch: str
    gseq: int = 0


Message = Union[  # noqa: UP007 (a table: requests, replies, worker <-> leader, events)
    Get, Find, Stop, List, Nodes, Calls, AddCall, RemoveCall, Drain, Undrain, Info, Talk,
    Found, Stopped, Locations, NodeList, CallList, Ok, Answer, InfoReply, Error,
    Hello, Welcome, Suspend, Leaving, Ping, Pong, Spawn, Spawned, SpawnFailed, Kill, Exited,
    Event, Tick, Elected,
]  # fmt: skip

CLIENT_REQUESTS = (Get, Find, Stop, List, Nodes, Calls, AddCall, RemoveCall, Drain, Undrain, Info, Talk)

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Message)
encode = _encoder.encode


class Refused(ValueError):
    """A request that breaks a rule of this protocol, refused before it is sent: the
    message names the rule (the daemon would answer ``bad-message``)."""


_RULES = {"group": GROUP_RULE, "name": GROUP_RULE, "key": KEY_RULE}  # the field -> the rule, in words


_PASSED: dict[tuple[str, str], None] = {}  # (group, key) of lookups that passed (a cache of the check below)
_PASSED_MAX = 4096


def checked(msg: Msg, limit: int = MAX_MESSAGE) -> bytes:
    """The frame of a request, as sure to pass the daemon's decoding as it can be made:
    over ``limit`` bytes, or a field that breaks its type's rule (the same types decode
    it at the daemon), raises :class:`Refused` naming the rule. A ``get`` or ``find``
    without arguments of a (group, key) that passed before is not decoded again (a
    client asks the same keys over and over: the check was a tenth of its cost)."""
    frame = encode(msg)
    if len(frame) > limit:
        raise Refused(f"{tag(msg)}: the request is {len(frame)} bytes, over the limit of {limit} bytes")
    lookup = (msg.group, msg.key) if type(msg) is Find or (type(msg) is Get and not msg.args) else None
    if lookup is not None and lookup in _PASSED:
        return frame
    try:
        _decoder.decode(frame)
    except msgspec.ValidationError as exc:
        field = re.search(r"at `\$\.(\w+)`", str(exc))
        rule = _RULES.get(field.group(1)) if field else None
        raise Refused(f"{tag(msg)}: {rule + ' (' + str(exc) + ')' if rule else exc}") from None
    if lookup is not None:
        if len(_PASSED) >= _PASSED_MAX:
            _PASSED.clear()
        _PASSED[lookup] = None
    return frame


class BadMessage(Exception):
    """A frame that is not a valid message; ``reply`` is the error to send back."""

    def __init__(self, reply: Error):
        super().__init__(reply.message)
        self.reply = reply


def decode(frame: bytes) -> Message:
    """Decode one frame, or raise BadMessage carrying the error reply for the sender."""
    try:
        msg = _decoder.decode(frame)
    except Exception as exc:  # DecodeError, and UnicodeDecodeError for bad UTF-8
        raise BadMessage(_explain(frame, exc)) from None
    if msg.v != VERSION:
        raise BadMessage(_version_error(msg.v, msg.id))
    return msg


def _explain(frame: bytes, exc: Exception) -> Error:
    # Only on the error path: look at the raw map to answer with the sender's id and
    # to tell a newer protocol from garbage.
    try:
        raw = msgspec.msgpack.decode(frame)
    except Exception as raw_exc:
        raw, exc = None, raw_exc
    req_id = raw.get("id") if isinstance(raw, dict) else None
    req_id = req_id if type(req_id) is int and 0 <= req_id < 1 << 63 else 0
    version = raw.get("v") if isinstance(raw, dict) else None
    if type(version) is int and version != VERSION:
        return _version_error(version, req_id)
    if not frame:
        detail = "empty frame"
    elif raw is None:
        detail = f"not MessagePack ({exc})"
    else:
        detail = str(exc)
    return Error(id=req_id, kind=BAD_MESSAGE, message=f"malformed message: {detail}")


def _version_error(version: Any, req_id: int) -> Error:
    return Error(
        id=req_id,
        kind=VERSION_MISMATCH,
        message=f"protocol version {version} is not supported; this peer speaks version {VERSION}",
    )


# -- mailbox frames: a worker and its processes (FORSETI_MAILBOX) --
#
# A process connects a DEALER to $FORSETI_MAILBOX and sends [b"hello", ID], ID being
# $FORSETI_MAILBOX_ID. The worker then sends it [b"call", N, PAYLOAD] (a request that
# waits for a reply) or [b"send", N, PAYLOAD] (one way), N a request number in ASCII
# digits; the process answers each with [b"reply", N, PAYLOAD] (a one-way request as
# soon as it takes it: that frees its place in the mailbox; the payload is ignored).


class MailboxHello(msgspec.Struct, frozen=True):
    id: int


class MailboxReply(msgspec.Struct, frozen=True):
    number: int
    payload: bytes


def mailbox_request(number: int, one_way: bool, payload: bytes) -> list[bytes]:
    return [b"send" if one_way else b"call", b"%d" % number, payload]


def mailbox_frame(frames: list[bytes]) -> MailboxHello | MailboxReply | None:
    """What a process sent on the mailbox socket (None: nothing we know)."""
    if len(frames) == 2 and frames[0] == b"hello" and frames[1].isdigit():
        return MailboxHello(int(frames[1]))
    if len(frames) == 3 and frames[0] == b"reply" and frames[1].isdigit():
        return MailboxReply(int(frames[1]), bytes(frames[2]))
    return None


def topic(group: str) -> bytes:
    """The PUB topic of a group's events."""
    return group.encode() + b"\0"


def tag(msg: Msg | type[Msg]) -> str:
    """A message's (or a message class's) ``"t"``, as the wire spells it."""
    cls = msg if isinstance(msg, type) else type(msg)
    return str(cls.__struct_config__.tag)


def request_ids() -> itertools.count[int]:
    """Ids for one sender's requests. They start at random: a reply meant for another
    life of the same peer (a restarted leader or worker) must not match a new request."""
    return itertools.count(random.getrandbits(48) + 1)


_EVENTS, _POLLIN, _NOBLOCK = zmq.EVENTS, int(zmq.POLLIN), zmq.NOBLOCK


def waiting(sock: zmq.Socket, limit: int | None = None, copy: bool = True):
    """The messages waiting on ``sock`` (at most ``limit``), each a list of frames, for as
    long as ZMQ_EVENTS says one waits. A socket's ZMQ_FD signals a change, not a level:
    only asking ZMQ_EVENTS until it says "nothing" re-arms it, so a reader that stops
    at ``limit`` must look again before it sleeps."""
    for _ in itertools.repeat(None) if limit is None else range(limit):
        if not int(sock.getsockopt(_EVENTS)) & _POLLIN:
            return
        yield sock.recv_multipart(_NOBLOCK, copy=copy)


class Sequence:
    """Where a subscriber stands in the event stream of one publisher: its epoch and
    the last count seen (``seq`` for every group, or a group's ``gseq``).

    Events count up by one; a tick repeats the count. A count that jumps ahead means
    events were lost (the publisher's high-water mark, a reconnect); a new epoch is a
    new leader, whose events say nothing of the old one's. Either way whoever keeps a
    picture built from the events must throw it away: nothing fills a gap."""

    NEW_EPOCH = -1  # what follow() returns when the count started again under a new leader

    def __init__(self) -> None:
        self.epoch: str | None = None
        self.n = 0

    def follow(self, epoch: str, n: int, is_event: bool) -> int | None:
        """Step over an event's (or a tick's) stamp: the number of events missed just
        before it (0: none, NEW_EPOCH: unknown), or None if it was seen already."""
        step = 1 if is_event else 0
        if epoch != self.epoch:
            missed = self.NEW_EPOCH
        elif n < self.n + step:
            return None
        else:
            missed = n - self.n - step
        self.epoch, self.n = epoch, n
        return missed

    def has_seen(self, n: int, epoch: str) -> bool:
        """Whether the events up to ``n`` of ``epoch`` ("": none at all) are behind us."""
        return not epoch or (epoch == self.epoch and n <= self.n)

    def not_behind(self, n: int, epoch: str | None) -> bool:
        """Whether an answer given at event ``n`` of ``epoch`` (None: known first hand)
        is as new as what was applied: one older than an applied exit must not undo it."""
        return n >= self.n and (epoch is None or epoch == self.epoch)
