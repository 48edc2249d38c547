"""The thin client: one DEALER socket, one request at a time, for one thread.

With ``cache=True`` it also keeps a *near cache*: the locations it has been answered
with, kept true by the leader's events on a SUB socket of its own, so that a repeated
``find``/``get`` of a live key costs no round trip at all (``near_cache.py``).

With ``key`` and ``server_key`` (SPEC section 8) every socket it opens is a CURVE client;
a monitor on the request socket tells a handshake the server refused from a silent
server, so that a refused client hears "authentication failed" at once, not a timeout.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Iterator

import msgspec
import zmq

from forsetid import protocol as p
from forsetid.const import DEFAULT_LISTEN
from forsetid.protocol import Location, NodeInfo, Sequence

from .near_cache import NearCache
from .security import CurveKeys, Handshakes, load_keys, monitored


class ForsetiError(Exception):
    """The cluster answered with an error (or did not answer: see subclasses)."""

    kind = "error"

    def __init__(self, message: str, kind: str | None = None) -> None:
        super().__init__(message)
        if kind is not None:
            self.kind = kind


class SpawnError(ForsetiError):
    """The process could not be started (the message says why)."""

    kind = p.SPAWN_FAILED


class UnknownGroup(ForsetiError):
    kind = p.UNKNOWN_GROUP


class NoWorker(ForsetiError):
    """No worker is up with room for one more process."""

    kind = p.NO_WORKER


class Timeout(ForsetiError):
    """No answer within the client's timeout."""

    kind = "timeout"


class AccessDenied(ForsetiError):
    """The request is outside the sender's role (kind ``"forbidden"``), or the server
    refused this client at the handshake (kind ``"authentication"``: a key in no role
    folder, no key for a CURVE server, a key for a server without CURVE)."""

    kind = p.FORBIDDEN


class NotFound(ForsetiError):
    """A call or send with ``create=False`` to a key that runs nowhere."""

    kind = p.NOT_FOUND


class Gone(ForsetiError):
    """The process exited, or its node was lost, before it answered (the message says how)."""

    kind = p.GONE


class Busy(ForsetiError):
    """The process's mailbox is full (``calls.NAME.mailbox`` requests unanswered)."""

    kind = p.BUSY


AUTHENTICATION = "authentication"  # the kind of an AccessDenied raised for a refused handshake

_ERRORS = {cls.kind: cls for cls in (SpawnError, UnknownGroup, NoWorker, AccessDenied, NotFound, Gone, Busy, Timeout)}
_ERRORS[p.NO_LEADER] = Timeout  # the node answered at once that no leader does


class Event(msgspec.Struct, frozen=True):
    """A process started or exited somewhere in the cluster."""

    seq: int
    kind: str  # "started" | "exited"
    group: str
    key: str
    node: str
    pid: int
    exit_code: int | None
    signal: int | None
    reason: str | None  # "exit" "stopped" "node-down" "conflict" "shutdown" "partition"; None when started
    at: float
    endpoint: str | None = None
    missed: int = 0  # kind "missed": how many events were lost here (0 = unknown: a new leader)
    adopted: bool = False  # kind "started": a process that ran already (a new leader learnt of it), not a new start


DEFAULT_ENDPOINT = DEFAULT_LISTEN
_JUNK = object()


class Client:
    """Talks to one node (a worker's ``node.listen``, or the leader). Not thread-safe:
    give each thread its own Client.

    ``cache=True``: answer ``find``/``get`` of a key seen before from memory (see
    :class:`NearCache`).

    ``key``: the path of this client's own ``.key_secret`` file, and ``server_key``: the
    path of the cluster's public key file (``server.key``); both or neither. With them
    every socket is a CURVE client; a request outside the key's role raises
    :class:`AccessDenied` (kind ``"forbidden"``), a handshake the server refused raises it
    with kind ``"authentication"``, within the timeout. A file that cannot be used raises
    ``KeyFileError`` (a ValueError) naming it."""

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        timeout: float = 5.0,
        cache: bool = False,
        context: zmq.Context | None = None,
        key: str | os.PathLike | None = None,
        server_key: str | os.PathLike | None = None,
    ):
        self.endpoint = endpoint
        self.timeout = timeout
        self._keys: CurveKeys | None = load_keys(key, server_key)
        self._ctx = context or zmq.Context.instance()
        self._ids = itertools.count(1)
        self._sock: zmq.Socket | None = None
        self._wait_ms: int | None = None  # the socket's RCVTIMEO
        self._shakes: Handshakes | None = None  # the socket's monitor (none for inproc://)
        self._poller: zmq.Poller | None = None  # the socket and its monitor, until a handshake succeeds
        self._publishers: list[str] | None = None  # where events come from (every candidate's, with etcd)
        self._cache = cache
        self.max_payload = p.MAX_PAYLOAD  # bytes of a call's payload (cluster.max_payload in a config file)
        self.near: NearCache | None = None  # opened on the first lookup
        self.requests = 0  # requests sent: what the near cache saves shows here

    @classmethod
    def from_config(
        cls,
        path: str,
        timeout: float = 5.0,
        cache: bool = False,
        key: str | os.PathLike | None = None,
        server_key: str | os.PathLike | None = None,
    ) -> Client:
        """A client of the node that the config file at ``path`` describes; with
        ``security.curve = true``, with the config's ``security.key`` and
        ``security.server_key`` where ``key``/``server_key`` are not given. A problem
        with the file raises ``ConfigError`` naming the file and the key path."""
        from .config import client_keys, load

        config = load(path)
        key, server_key = client_keys(config, key, server_key)
        return cls(config.endpoint, timeout=timeout, cache=cache, key=key, server_key=server_key)

    # -- the API --

    def get(self, group: str, key: str, args: list | None = None) -> Location:
        """The process for (group, key), started on the least-loaded worker if none runs."""
        near = self.near or self._open_near()
        if near is not None and (loc := near.lookup(group, key)) is not None:
            return loc
        return self._located(near, p.Get(group=group, key=key, args=list(args or ())))

    def find(self, group: str, key: str) -> Location | None:
        near = self.near or self._open_near()
        if near is not None and (loc := near.lookup(group, key)) is not None:
            return loc
        return self._located(near, p.Find(group=group, key=key))

    def get_key(self, key: str, args: list | None = None) -> Location:
        return self.get("default", key, args)

    def search_key(self, key: str) -> Location | None:
        return self.find("default", key)

    def call(
        self, group: str, key: str, payload: bytes, *, args: list | None = None, create: bool = True,
        timeout: float | None = None,
    ) -> bytes:  # fmt: skip
        """Deliver ``payload`` to the process of (group, key), started first as ``get``
        would unless ``create`` is false (then NotFound), and return its reply. Gone if
        it exits (or its node is lost) before it answers, Busy if its mailbox is full."""
        return self._talk(group, key, payload, args, create, False, timeout).payload

    def send(
        self, group: str, key: str, payload: bytes, *, args: list | None = None, create: bool = True,
        timeout: float | None = None,
    ) -> None:  # fmt: skip
        """As :meth:`call`, one way: returns once the payload is in the process's mailbox."""
        self._talk(group, key, payload, args, create, True, timeout)

    def _talk(self, group, key, payload, args, create, one_way, timeout):
        if len(payload) > self.max_payload:
            text = f"a payload of {len(payload)} bytes is over the limit of {self.max_payload} (cluster.max_payload)"
            raise ForsetiError(text, p.TOO_LARGE)
        wait = self.timeout if timeout is None else timeout
        talk = p.Talk(group=group, key=key, payload=bytes(payload), args=list(args or ()), create=create,
                      one_way=one_way, deadline=time.time() + wait)  # fmt: skip
        saved, self.timeout = self.timeout, wait
        try:
            return self._request(talk)
        finally:
            self.timeout = saved

    def stop(self, group: str, key: str) -> bool:
        """Terminate it (SIGTERM, then SIGKILL after stop_timeout); False if none ran."""
        found = self._request(p.Stop(group=group, key=key)).found
        if self.near is not None:
            self.near.drop(group, key)  # gone: do not wait for its exit event to say so
        return found

    def processes(self, group: str | None = None) -> list[Location]:
        return self._request(p.List(group=group)).items

    def nodes(self) -> list[NodeInfo]:
        return self._request(p.Nodes()).items

    def calls(self) -> dict[str, p.Call]:
        return self._request(p.Calls()).items

    def add_call(
        self,
        name: str,
        entry: str | None = None,
        command: list[str] | None = None,
        args: list | None = None,
        replace: bool = False,
        **options,
    ) -> None:
        """Add a group at run time; options: ready, start_timeout, stop_timeout,
        endpoint, log, restart ("never", "on-failure", "always"). A group of that name is
        replaced only with ``replace=True`` (else the leader answers ``group-exists``). A
        call that cannot be (no or both of entry and command, an unknown placeholder, an
        unknown restart policy) raises ForsetiError kind ``bad-call``, unsent."""
        try:
            call = p.Call(entry=entry, command=command, args=list(args or ()), **options)
        except (TypeError, ValueError) as exc:
            raise ForsetiError(f"bad call '{name}': {exc}", "bad-call") from None
        self._request(p.AddCall(name=name, call=call, replace=replace))

    def drain(self, node: str, stop: bool = False) -> None:
        """The node takes no new process (state ``draining``); ``stop``: its processes are
        stopped too. Lookups through it go on. ForsetiError kind ``unknown-node``."""
        self._request(p.Drain(node=node, stop=stop))

    def undrain(self, node: str) -> None:
        self._request(p.Undrain(node=node))

    def remove_call(self, name: str) -> None:
        """Remove a group: its running processes go on until they exit; new gets fail
        with ``unknown-group``. Raises UnknownGroup if there is no such group."""
        self._request(p.RemoveCall(name=name))

    def info(self) -> p.InfoReply:
        return self._request(p.Info())

    def leader(self) -> dict:
        """Who leads, and how each candidate stands: ``{"leader": NAME or None, "epoch":
        ..., "candidates": [{"name", "state"}]}``, state "leader", "standby" or
        "unreachable", each candidate asked directly (backend "etcd"). With backend
        "memory", the one leader (epoch: its event stream's)."""
        here = self.info()
        if not here.candidates:
            name = here.node if here.state == "leader" else here.leader
            seats = [{"name": name, "state": "leader"}] if name else []
            return {"leader": name or None, "epoch": here.epoch or None, "candidates": seats}
        seats, term = [], 0
        for seat in here.candidates:
            probe = Client(seat.leader, timeout=min(self.timeout, 1.0), context=self._ctx)
            probe._keys = self._keys  # (the same key pair, loaded once)
            try:
                info = probe.info()
                state = info.state or "standby"
                if state == "leader":
                    term = max(term, info.term)
            except ForsetiError:
                state = "unreachable"
            finally:
                probe.close()
            seats.append({"name": seat.name, "state": state})
        leader = next((s["name"] for s in seats if s["state"] == "leader"), None)
        return {"leader": leader, "epoch": term or None, "candidates": seats}

    def events(self, group: str | None = None) -> EventStream:
        """Follow started/exited events (of one group, or all). The stream is live when
        this returns: nothing published afterwards is missed for want of a subscription."""
        if self._publishers is None:
            self._learn_publishers(self.info())
        first, *others = self._publishers or [""]
        return EventStream(self._ctx, first, group, self.timeout, self._keys, others)

    # -- plumbing --

    def _learn_publishers(self, info: p.InfoReply) -> None:
        """Where events come from: the leader's socket, and with candidates (backend
        "etcd") every candidate's (only the leader publishes: after a failover the
        stream goes on from the next one, a "missed" event first)."""
        publishers = [info.events] if info.events else []
        self._publishers = publishers + [s.events for s in info.candidates if s.events not in publishers]

    def _open_near(self) -> NearCache | None:
        if self._cache:
            info = self.info()
            self._learn_publishers(info)
            self.near = NearCache(self._ctx, info.events, info.silence, self._keys)
        return self.near

    def _located(self, near: NearCache | None, msg: p.Get | p.Find) -> Location | None:
        if near is None:
            return self._request(msg).location
        msg.seq, msg.epoch = near.asking(msg.group, msg.key)
        try:
            reply = self._request(msg)
            if reply.location is not None and not near.learn(reply.location, reply.seq, reply.epoch):
                # Its exit arrived while the answer was on its way: a find says so; a get
                # keeps its answer, the process it started (or found), which may exit at once.
                return None if isinstance(msg, p.Find) else reply.location
            return reply.location
        finally:
            near.asked()

    def _connect(self) -> zmq.Socket:
        sock = self._sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        # A send waits for a pipe: none may be there if a refused handshake closed it.
        sock.setsockopt(zmq.SNDTIMEO, max(1, int(self.timeout * 1000)))
        self._wait_ms = None
        if self._keys is not None:
            self._keys.apply(sock)
        if monitored(self.endpoint):
            self._shakes = Handshakes(sock, curve=self._keys is not None)
            if self._keys is not None:  # watched with the socket until a handshake succeeds
                self._poller = zmq.Poller()
                self._poller.register(sock, zmq.POLLIN)
                self._poller.register(self._shakes.monitor, zmq.POLLIN)
        sock.connect(self.endpoint)
        return sock

    def _request(self, msg: p.Msg):
        self.requests += 1
        sock = self._sock or self._connect()
        msg.id = next(self._ids)
        if isinstance(msg, p.Request):  # (a talk has its own)
            msg.deadline = msg.deadline or time.time() + self.timeout
        try:
            sock.send(p.encode(msg))
        except zmq.Again:
            self._no_answer()
        start = time.monotonic()
        wait_ms = max(1, int(self.timeout * 1000))
        while True:
            if self._poller is not None:
                frame = self._recv_watching(sock, start + self.timeout)
            else:
                # A blocking recv bounded by RCVTIMEO: a poll() per request would cost more
                # than the rest of the client's work (pyzmq builds a Poller each time).
                if wait_ms != self._wait_ms:
                    sock.setsockopt(zmq.RCVTIMEO, wait_ms)
                    self._wait_ms = wait_ms
                try:
                    frame = sock.recv()
                except zmq.Again:
                    self._no_answer()
            try:
                reply = p.decode(frame)
            except p.BadMessage as exc:
                raise ForsetiError(f"malformed reply from {self.endpoint}: {exc}", p.BAD_MESSAGE) from None
            if reply.id == msg.id:
                break
            # A stray (the answer to an earlier request): wait on, until the deadline.
            left = start + self.timeout - time.monotonic()
            if left <= 0:
                self._no_answer()
            wait_ms = max(1, int(left * 1000))
        if isinstance(reply, p.Error):
            raise _ERRORS.get(reply.kind, ForsetiError)(reply.message, reply.kind)
        return reply

    def _recv_watching(self, sock: zmq.Socket, deadline: float) -> bytes:
        """The next frame, waiting on the socket and its monitor together (a CURVE client
        whose handshake has not succeeded yet): a refusal is told at once."""
        shakes, poller = self._shakes, self._poller
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self._no_answer()
            ready = dict(poller.poll(max(1, math.ceil(left * 1000))))
            if shakes.monitor in ready:
                shakes.read()
                if shakes.refused:
                    self._denied()
            if sock in ready:
                frame = sock.recv()
                shakes.read()  # the success that came with it, most likely
                if shakes.succeeded:  # from now on, the blocking recv alone
                    self._poller = None
                return frame

    def _no_answer(self):
        """Raise: AccessDenied if the monitor tells of a failed handshake, else Timeout."""
        if self._shakes is not None:
            self._shakes.read()
            if self._shakes.failure is not None:
                self._denied()
        self._drop_socket()
        raise Timeout(f"no answer from {self.endpoint} within {self.timeout:g} s")

    def _denied(self):
        why = self._shakes.failure
        self._drop_socket()  # nor keep a socket that retries the refused handshake
        raise AccessDenied(f"authentication failed at {self.endpoint}: {why}", AUTHENTICATION)

    def _drop_socket(self) -> None:
        # A late answer, or a request still queued for a peer that is not there, must
        # not surface later: the next request gets a new socket.
        if self._shakes is not None:
            self._shakes.close(self._sock)
            self._shakes = None
        self._poller = None
        self._sock.close()
        self._sock = None

    def close(self) -> None:
        if self._sock is not None:
            self._drop_socket()
        if self.near is not None:
            self.near.close()
            self.near = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class EventStream:
    """An iterator of :class:`Event`; ``next_event(timeout)`` waits at most that long.

    Where events were lost (the publisher's high-water mark, a reconnect, a new leader),
    the stream yields one ``Event`` of kind ``"missed"`` before the next real one: whoever
    keeps state from events should rebuild it then (``Client.processes()``). ``heard``:
    when the publisher last spoke (an event, or the tick it sends every heartbeat on every
    topic followed): a stream silent for the node's ``info().silence`` has lost it."""

    def __init__(
        self,
        ctx: zmq.Context,
        endpoint: str,
        group: str | None,
        timeout: float,
        keys: CurveKeys | None = None,
        also: list[str] | None = None,
    ):
        """``also``: more publishers to follow on the same stream (the other candidates)."""
        self.endpoint = endpoint
        self.group = group
        self.heard = time.monotonic()
        self.events = Sequence()  # where the stream stands: gseq for one group, seq for all
        self._pending: Event | None = None  # the real event that follows a "missed" one
        self._sock = ctx.socket(zmq.SUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SUBSCRIBE, p.topic(group) if group else b"")
        if keys is not None:
            keys.apply(self._sock)
        # Watched until the first tick: a refused handshake is told at once, not as silence.
        shakes = Handshakes(self._sock, curve=keys is not None) if monitored(endpoint) else None
        self._sock.connect(endpoint)
        for other in also or ():
            self._sock.connect(other)
        live = False
        try:
            self._first_tick(timeout, shakes)
            live = True
        finally:
            if shakes is not None:
                shakes.close(self._sock)
            if not live:
                self.close()

    def _first_tick(self, timeout: float, shakes: Handshakes | None) -> None:
        """The publisher answers every new subscription with a tick: wait for it."""
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        if shakes is not None:
            poller.register(shakes.monitor, zmq.POLLIN)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            ready = dict(poller.poll(max(0, math.ceil(left * 1000)))) if left > 0 else {}
            if shakes is not None and (shakes.monitor in ready or not ready):
                shakes.read()
                if shakes.refused or (not ready and shakes.failure is not None):
                    raise AccessDenied(f"authentication failed at {self.endpoint}: {shakes.failure}", AUTHENTICATION)
            if not ready:
                raise Timeout(f"no events from {self.endpoint} within {timeout:g} s")
            if self._sock not in ready:
                continue
            msg = self._receive(0)
            if isinstance(msg, p.Tick):
                self.events.follow(msg.epoch, msg.gseq if self.group else msg.seq, is_event=False)
                return

    def _receive(self, timeout: float | None):
        ms = None if timeout is None else max(0, int(timeout * 1000))
        if not self._sock.poll(ms):
            return None
        self.heard = time.monotonic()
        try:
            return p.decode(self._sock.recv_multipart()[-1])
        except p.BadMessage:
            return _JUNK  # neither an event nor a tick: the callers skip it

    def next_event(self, timeout: float | None = None) -> Event | None:
        """The next event, or None if none came within ``timeout`` seconds."""
        if self._pending is not None:
            event, self._pending = self._pending, None
            return event
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            msg = self._receive(None if deadline is None else deadline - time.monotonic())
            if msg is None:
                return None
            if isinstance(msg, (p.Event, p.Tick)):
                missed = self.check(msg)
                event = _event(msg) if isinstance(msg, p.Event) else None
                if missed is not None:
                    self._pending = event
                    return missed
                if event is not None:
                    return event

    def check(self, msg: p.Event | p.Tick) -> Event | None:
        """Follow the sequence; a "missed" event if ``msg`` reveals a gap."""
        n = msg.gseq if self.group else msg.seq
        missed = self.events.follow(msg.epoch, n, isinstance(msg, p.Event))
        if not missed:  # in order, or seen already
            return None
        count = 0 if missed == Sequence.NEW_EPOCH else missed  # 0: unknown, a new leader
        return Event(n, "missed", self.group or "", "", "", 0, None, None, None, time.time(), missed=count)

    def __iter__(self) -> Iterator[Event]:
        while True:
            yield self.next_event()

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _event(msg: p.Event) -> Event:
    loc = msg.location
    return Event(
        msg.seq,
        msg.kind,
        loc.group,
        loc.key,
        loc.node,
        loc.pid,
        msg.exit_code,
        msg.signal,
        msg.reason,
        msg.at,
        loc.endpoint,
        adopted=msg.adopted,
    )
