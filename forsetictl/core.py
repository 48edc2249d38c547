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
again, which endpoint to use and when to move to another (those in ``asking.py``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import zmq

from forsetid import protocol as p
from forsetid.const import DEFAULT_LISTEN
from forsetid.protocol import Location

from .asking import SILENT as SILENT
from .asking import Asking, Endpoints, Op, endpoints
from .asking import Attempt as Attempt
from .asking import Failure as Failure
from .asking import Post as Post
from .asking import judged as judged
from .errors import BadRequest, ForsetiError
from .near_cache import NearCache
from .security import CurveKeys, load_keys

DEFAULT_ENDPOINT = DEFAULT_LISTEN  # (also forsetictl.client.DEFAULT_ENDPOINT)


class Core(Asking):
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
        self.max_payload = p.MAX_PAYLOAD  # bytes of a call's payload (a config file's cluster.max_payload)
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
        client = cls(config.all_endpoints, timeout=timeout, cache=cache, key=key, server_key=server_key)
        client.max_payload = config.max_payload
        return client

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

    def call(
        self, group: str, key: str, payload: bytes, *, args: list | None = None, create: bool = True,
        timeout: float | None = None, retry: bool = False,
    ) -> Any:  # fmt: skip
        """Deliver ``payload`` to the process of (group, key), started first as ``get``
        would unless ``create`` is false (then NotFound), and return its reply (bytes).
        Gone if it ends (or its node is lost) before it answers, Busy if its mailbox is
        full. ``timeout``: this call's own; ``retry``: the payload is safe to deliver
        twice, so the call may be sent again through another node if this one stops
        answering (otherwise it is delivered at most once)."""
        return self._run(self._talk(group, key, payload, args, create, False, timeout, retry))

    def send(
        self, group: str, key: str, payload: bytes, *, args: list | None = None, create: bool = True,
        timeout: float | None = None, retry: bool = False,
    ) -> Any:  # fmt: skip
        """As :meth:`call`, one way: returns (None) once the payload is in the process's mailbox."""
        return self._run(self._talk(group, key, payload, args, create, True, timeout, retry))

    def get_key(self, key: str, args: list | None = None) -> Any:
        """``get("default", key, args)``: the original Forseti's get of the default group."""
        return self.get("default", key, args)

    def search_key(self, key: str) -> Any:
        """``find("default", key)``: the original Forseti's find in the default group."""
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
        """The node takes new processes again (state ``up``). ForsetiError kind ``unknown-node``."""
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

    def _talk(
        self, group: str, key: str, payload: bytes, args, create: bool, one_way: bool, timeout, retry: bool
    ) -> Op[bytes | None]:
        if len(payload) > self.max_payload:
            limit = f"over the limit of {self.max_payload} bytes (cluster.max_payload)"
            raise BadRequest(f"refused before sending: a payload of {len(payload)} bytes is {limit}", p.TOO_LARGE)
        msg = p.Talk(group=group, key=key, payload=bytes(payload), args=list(args or ()), create=create,
                     one_way=one_way)  # fmt: skip
        reply = yield from self._ask(msg, timeout=timeout, repeat=retry)
        return None if one_way else reply.payload

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
