"""The client's core, without I/O: what both clients (``Client`` and ``AsyncClient``)
send and how they read the answers.

Every method of the API is written once here, as a generator that yields what it needs
done on the wire and is sent back what came of it:

* :class:`Attempt`: send this frame to this endpoint and wait until ``until`` (a
  ``time.monotonic()``) for the reply with this id; the shell sends back the decoded
  reply, or a :class:`Failure` (the node said nothing, its connection was refused or
  lost, its handshake refused us).
* :class:`Post`: send this frame, wait for nothing (its reply, when it comes while the
  shell waits for another, is handed to :meth:`Core.stray`).

The sync shell (``client.py``) runs such a generator with blocking sockets, the asyncio
shell (``aio.py``) with awaits: they differ only in how they wait. Here live the rules:
building and checking a request (by the protocol's own types, before it is sent), ids,
matching and decoding answers, the errors they raise, which requests are safe to send
again, which endpoint to use and when to move to another.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Generator
from typing import Any, NamedTuple, TypeVar

import zmq

from forsetid import protocol as p
from forsetid.const import DEFAULT_LISTEN
from forsetid.protocol import Location

from .errors import AUTHENTICATION, AccessDenied, BadEndpoint, BadRequest, ForsetiError, Timeout, Unreachable, raised
from .near_cache import NearCache
from .security import CurveKeys, load_keys

DEFAULT_ENDPOINT = DEFAULT_LISTEN  # (also forsetictl.client.DEFAULT_ENDPOINT)

# Requests that may be sent again to another node when theirs stopped answering: each
# has the same effect done twice as once (a get of a key that started meanwhile finds
# it; a second stop finds nothing to stop). Changes to the cluster's groups and nodes
# are not repeated: their answer would be the second one's.
SAFE_TO_REPEAT = frozenset(p.tag(m) for m in (p.Get, p.Find, p.Stop, p.List, p.Nodes, p.Calls, p.Info))
PATIENCE = 1.0  # seconds an attempt waits at least before a safe request moves to another node
REFUSED_GRACE = 0.5  # seconds a refused connection is given (a daemon starting) when there is nowhere else to go
_SCHEME = re.compile(r"^(tcp|ipc|inproc|ws|wss|tipc|vmci)://.+")
_ANY_HOST = re.compile(r"^tcp://(\*|0\.0\.0\.0|\[::\]|::):")  # a bind to every interface: no address to connect to

T = TypeVar("T")
Op = Generator[Any, Any, T]  # what the shells run


class Attempt(NamedTuple):
    endpoint: str
    id: int
    frame: bytes
    until: float  # time.monotonic() after which the shell gives up waiting
    pinned: bool = False  # a probe of this one endpoint (leader()): a line of its own, closed after
    refused_at: float = 0.0  # from when a refused connection counts (before: it may be starting)


class Post(NamedTuple):
    endpoint: str
    frame: bytes


class Failure(NamedTuple):
    """What a shell sends back when no reply came: ``kind`` "silent" (nothing within the
    time), "refused" (nothing listens), "lost" (the connection broke), "denied" (the
    handshake was refused), "malformed" (a frame that does not decode)."""

    kind: str
    why: str = ""


SILENT = Failure("silent")


def judged(verdict: tuple[str, str] | None, a: Attempt, final: bool = False) -> Failure | None:
    """What a socket's monitor says (``Handshakes.verdict``) means for attempt ``a``: a
    refused connection counts only from ``a.refused_at`` (or once the wait is over)."""
    if verdict is None or (verdict[0] == "refused" and not final and time.monotonic() < a.refused_at):
        return None
    return Failure(*verdict)


def endpoints(spec: str | list[str] | tuple[str, ...]) -> list[str]:
    """The endpoints a client was given: one, a list, or comma-separated; each must have
    a scheme (``tcp://HOST:PORT``, ``ipc://PATH``): BadEndpoint names one that has not."""
    given = [spec] if isinstance(spec, str) else list(spec)
    out = [e.strip() for part in given for e in str(part).split(",") if e.strip()]
    if not out:
        raise BadEndpoint("no endpoint given (e.g. tcp://127.0.0.1:7072)")
    for e in out:
        if not _SCHEME.match(e):
            hint = f": write tcp://{e}" if "://" not in e else ""
            raise BadEndpoint(f"endpoint {e!r} has no known scheme (tcp://, ipc://, inproc://){hint}")
    return list(dict.fromkeys(out))


class Endpoints:
    """Which node a client talks to: the ones it was given, then the ones it learnt from
    the cluster (the nodes' ``listen``). It stays with one until that one fails."""

    def __init__(self, given: list[str]) -> None:
        self.all = list(given)
        self.current = given[0]
        self.asked: set[str] = set()  # nodes already asked for the others' endpoints

    def learn(self, listens: list[str]) -> None:
        for e in listens:
            if e and e not in self.all and _SCHEME.match(e) and not _ANY_HOST.match(e):
                self.all.append(e)

    def others(self, tried: list[str]) -> bool:
        return any(e not in tried for e in self.all)

    def move(self, tried: list[str]) -> str | None:
        """The next endpoint after the current one not tried yet (now the current one), or None."""
        i = self.all.index(self.current) if self.current in self.all else -1
        for e in self.all[i + 1 :] + self.all[: i + 1]:
            if e not in tried:
                self.current = e
                return e
        return None


class Core:
    """The API of both clients; a shell adds ``_run`` (how an :data:`Op` is carried
    out), ``_here`` (the state of this thread, or of the one loop) and ``_plain_ctx``
    (a context for the near cache's non-blocking SUB socket)."""

    _run: Callable[[Op], Any]
    _now: Callable[[Any], Any]  # a value as the shell returns one (itself, or an awaitable of it)
    _here: Callable[[], Any]  # an object with ``near`` (NearCache | None)
    _plain_ctx: zmq.Context

    def __init__(
        self,
        endpoint: str | list[str] | tuple[str, ...] = DEFAULT_ENDPOINT,
        timeout: float = 5.0,
        cache: bool = False,
        context: zmq.Context | None = None,
        key: str | os.PathLike | None = None,
        server_key: str | os.PathLike | None = None,
    ) -> None:
        self.endpoints = Endpoints(endpoints(endpoint))
        self._ctx = self._plain_ctx = context or zmq.Context.instance()  # (the shells make non-blocking calls)
        self.timeout = timeout
        self._keys: CurveKeys | None = load_keys(key, server_key)
        self._ids = p.request_ids()
        self._cache = cache
        self._publishers: list[str] | None = None  # where events come from (every candidate's, with etcd)
        self._about: p.InfoReply | None = None  # the last `info` answer
        self._learning: dict[int, str] = {}  # id of a `nodes` posted -> the endpoint asked
        self.requests = 0  # requests sent: what the near cache saves shows here
        self._setup()

    def _setup(self) -> None:
        """The shell's own state (its sockets, by thread or for its loop)."""

    @classmethod
    def from_config(
        cls,
        path: str,
        timeout: float = 5.0,
        cache: bool = False,
        key: str | os.PathLike | None = None,
        server_key: str | os.PathLike | None = None,
    ):
        """A client of the node that the config file at ``path`` describes (with
        ``client.endpoints``, of those); with ``security.curve = true``, with the
        config's ``security.key`` and ``security.server_key`` where ``key``/``server_key``
        are not given. A problem with the file raises ``ConfigError`` naming the file and
        the key path."""
        from .config import client_keys, load

        config = load(path)
        given = (None if key is None else os.fspath(key), None if server_key is None else os.fspath(server_key))
        key, server_key = client_keys(config, given[0], given[1])
        return cls(config.all_endpoints, timeout=timeout, cache=cache, key=key, server_key=server_key)

    @property
    def endpoint(self) -> str:
        """The endpoint in use (the first given, until it fails)."""
        return self.endpoints.current

    @property
    def near(self) -> NearCache | None:
        """This thread's near cache (``cache=True``), once the first lookup opened it."""
        return self._here().near

    # -- the API: each returns what the shell makes of an Op (a value, or an awaitable) --

    def get(self, group: str, key: str, args: list | None = None) -> Any:
        """The process for (group, key) (a :class:`Location`), started on the
        least-loaded worker if none runs."""
        near = self._here().near
        if near is not None and (loc := near.lookup(group, key)) is not None:
            return self._now(loc)  # (the near cache's answer: no Op to run)
        return self._run(self._located(p.Get(group=group, key=key, args=list(args or ()))))

    def find(self, group: str, key: str) -> Any:
        """Where (group, key) runs: a :class:`Location`, or None."""
        near = self._here().near
        if near is not None and (loc := near.lookup(group, key)) is not None:
            return self._now(loc)
        return self._run(self._located(p.Find(group=group, key=key)))

    def get_key(self, key: str, args: list | None = None) -> Any:
        return self.get("default", key, args)

    def search_key(self, key: str) -> Any:
        return self.find("default", key)

    def stop(self, group: str, key: str) -> Any:
        """Terminate it (SIGTERM, then SIGKILL after stop_timeout); False if none ran."""
        return self._run(self._stop(group, key))

    def processes(self, group: str | None = None) -> Any:
        """[Location, ...] of one group, or of all."""
        return self._run(self._field(p.List(group=group), "items"))

    def nodes(self) -> Any:
        """[NodeInfo(name, state, processes, capacity, suspended, listen), ...]"""
        return self._run(self._field(p.Nodes(), "items"))

    def calls(self) -> Any:
        """{name: Call}: the cluster's groups."""
        return self._run(self._field(p.Calls(), "items"))

    def add_call(
        self,
        name: str,
        entry: str | None = None,
        command: list[str] | None = None,
        args: list | None = None,
        replace: bool = False,
        **options,
    ) -> Any:
        """Add a group at run time; options: ready, start_timeout, stop_timeout,
        endpoint, log, restart ("never", "on-failure", "always"). A group of that name is
        replaced only with ``replace=True`` (else the leader answers ``group-exists``). A
        call that cannot be (no or both of entry and command, an unknown placeholder, an
        unknown restart policy) raises ForsetiError kind ``bad-call``, unsent."""
        try:
            call = p.Call(entry=entry, command=command, args=list(args or ()), **options)
        except (TypeError, ValueError) as exc:
            raise ForsetiError(f"bad call '{name}': {exc}", "bad-call") from None
        return self._run(self._field(p.AddCall(name=name, call=call, replace=replace)))

    def drain(self, node: str, stop: bool = False) -> Any:
        """The node takes no new process (state ``draining``); ``stop``: its processes are
        stopped too. Lookups through it go on. ForsetiError kind ``unknown-node``."""
        return self._run(self._field(p.Drain(node=node, stop=stop)))

    def undrain(self, node: str) -> Any:
        return self._run(self._field(p.Undrain(node=node)))

    def remove_call(self, name: str) -> Any:
        """Remove a group: its running processes go on until they exit; new gets fail
        with ``unknown-group``. Raises UnknownGroup if there is no such group."""
        return self._run(self._field(p.RemoveCall(name=name)))

    def info(self) -> Any:
        """The node's own account of itself (:class:`forsetid.protocol.InfoReply`)."""
        return self._run(self._ask(p.Info()))

    def leader(self) -> Any:
        """Who leads, and how each candidate stands: ``{"leader": NAME or None, "epoch":
        ..., "candidates": [{"name", "state"}]}``, state "leader", "standby" or
        "unreachable", each candidate asked directly (backend "etcd"). With backend
        "memory", the one leader (epoch: its event stream's)."""
        return self._run(self._leader())

    # -- the Ops --

    def _field(self, msg: p.Msg, name: str | None = None) -> Op[Any]:
        reply = yield from self._ask(msg)
        return getattr(reply, name) if name else None

    def _stop(self, group: str, key: str) -> Op[bool]:
        reply = yield from self._ask(p.Stop(group=group, key=key))
        if (near := self._here().near) is not None:
            near.drop(group, key)  # gone: do not wait for its exit event to say so
        return reply.found

    def _located(self, msg: p.Get | p.Find) -> Op[Location | None]:
        here = self._here()
        if here.near is None and self._cache:
            here.near = yield from self._open_near()  # (not live before its first tick)
        near: NearCache | None = here.near
        if near is None:
            return (yield from self._ask(msg)).location
        msg.seq, msg.epoch = near.asking(msg.group, msg.key)
        try:
            reply = yield from self._ask(msg)
            if reply.location is not None and not near.learn(reply.location, reply.seq, reply.epoch):
                # Its exit arrived while the answer was on its way: a find says so; a get
                # keeps its answer, the process it started (or found), which may exit at once.
                return None if isinstance(msg, p.Find) else reply.location
            return reply.location
        finally:
            near.asked(msg.group, msg.key)

    def _open_near(self) -> Op[NearCache]:
        publishers = yield from self._learn_publishers()
        silence = self._about.silence if self._about is not None else 3.0
        return NearCache(self._plain_ctx, publishers, silence, self._keys)

    def _learn_publishers(self) -> Op[list[str]]:
        """Where events come from: the leader's socket, and with candidates (backend
        "etcd") every candidate's (only the leader publishes: after a failover events go
        on from the next one, with a new epoch)."""
        info = self._about = yield from self._ask(p.Info())
        if self._publishers is None:
            publishers = [info.events] if info.events else []
            self._publishers = publishers + [s.events for s in info.candidates if s.events not in publishers]
        return self._publishers

    def _leader(self) -> Op[dict]:
        here = yield from self._ask(p.Info())
        if not here.candidates:
            name = here.node if here.state == "leader" else here.leader
            seats = [{"name": name, "state": "leader"}] if name else []
            return {"leader": name or None, "epoch": here.epoch or None, "candidates": seats}
        seats, term = [], 0
        for seat in here.candidates:
            try:
                info = yield from self._ask(p.Info(), at=seat.leader, timeout=min(self.timeout, 1.0))
                state = info.state or "standby"
                if state == "leader":
                    term = max(term, info.term)
            except ForsetiError:
                state = "unreachable"
            seats.append({"name": seat.name, "state": state})
        leader = next((s["name"] for s in seats if s["state"] == "leader"), None)
        return {"leader": leader, "epoch": term or None, "candidates": seats}

    # -- one request: its frame, its attempts, its answer --

    def _ask(
        self, msg: p.Msg, at: str | None = None, timeout: float | None = None, repeat: bool | None = None
    ) -> Op[Any]:
        """Send ``msg`` and return its reply; ``at``: to that endpoint alone; ``timeout``:
        this request's own (default the client's). A request safe to repeat (``repeat``,
        by default its kind's: SAFE_TO_REPEAT) moves to another node when its own stops
        answering, within the timeout; another raises at once what became of it."""
        timeout = self.timeout if timeout is None else timeout
        msg.id = next(self._ids)
        try:
            frame = p.checked(msg)
        except p.Refused as exc:
            raise BadRequest(f"refused before sending: {exc}") from None
        self.requests += 1
        deadline = time.monotonic() + timeout
        repeat = at is None and (p.tag(msg) in SAFE_TO_REPEAT if repeat is None else repeat)
        tried: list[str] = []
        while True:
            endpoint = at or self.endpoints.current
            tried.append(endpoint)
            now = until = refused_at = time.monotonic()
            if repeat and self.endpoints.others(tried):
                until = min(deadline, now + max(PATIENCE, timeout / 2))
            else:  # nowhere else to go: a node that is just starting may yet listen
                until, refused_at = deadline, min(deadline, now + REFUSED_GRACE)
            out = yield Attempt(endpoint, msg.id, frame, until, at is not None, refused_at)
            if not isinstance(out, Failure):
                if at is None and endpoint not in self.endpoints.asked:
                    yield self._ask_for_others(endpoint)
                if isinstance(out, p.Error):
                    raise raised(out)
                return out
            moved = at is None and out.kind != "malformed" and self.endpoints.move(tried)
            if not (repeat and moved) or out.kind == "denied" or time.monotonic() >= deadline:
                raise self._failed(out, endpoint, timeout)

    def _ask_for_others(self, endpoint: str) -> Post:
        """A `nodes` request posted to a node that answered: its reply (read whenever
        it comes) tells the other nodes' client endpoints."""
        self.endpoints.asked.add(endpoint)
        msg = p.Nodes(id=next(self._ids))
        self._learning[msg.id] = endpoint
        return Post(endpoint, p.encode(msg))

    def stray(self, msg: p.Msg) -> None:
        """A reply that no request waits for: the answer to a posted `nodes`, or one
        that came too late (dropped)."""
        if self._learning.pop(msg.id, None) is not None and isinstance(msg, p.NodeList):
            self.endpoints.learn([n.listen for n in msg.items if n.state in ("up", "draining")])

    def _failed(self, out: Failure, endpoint: str, timeout: float) -> ForsetiError:
        if out.kind == "denied":
            return AccessDenied(f"authentication failed at {endpoint}: {out.why}", AUTHENTICATION)
        if out.kind == "refused":
            return Unreachable(f"nothing listens at {endpoint} (connection refused): is forsetid running there?")
        if out.kind == "malformed":
            return ForsetiError(f"malformed reply from {endpoint}: {out.why}", p.BAD_MESSAGE)
        if out.kind == "lost":
            return Timeout(f"no answer from {endpoint}: the connection was lost")
        return Timeout(f"no answer from {endpoint} within {timeout:g} s")
