"""Following the cluster's events: :class:`Event`, what a stream makes of the leader's
messages (:class:`Follower`, no I/O), and the sync :class:`EventStream` (the asyncio one
is in ``aio.py``)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import msgspec
import zmq

from forsetid import protocol as p
from forsetid.protocol import Sequence

from .errors import AUTHENTICATION, AccessDenied, Timeout
from .security import CurveKeys, Handshakes, monitored


class Event(msgspec.Struct, frozen=True):
    """A process started or exited somewhere in the cluster.

    ``kind``: ``"started"``, ``"exited"``, or ``"missed"`` (events were lost just before
    the next one: ``missed`` says how many, 0 when a new leader makes it unknowable; rebuild
    whatever you keep from events, with ``processes()``). ``seq``: the event's number in
    its leader's life. ``exit_code``: of an exit by itself; ``signal``: the number of the
    signal that killed it; both None when started, and when its exit went unseen (its node
    lost). ``reason``, of an exit: ``"exit"``, ``"stopped"``, ``"node-down"``,
    ``"conflict"``, ``"shutdown"`` or ``"partition"``. ``at``: Unix seconds. ``adopted``,
    of a start: a process that ran already, which a new leader learnt of from its worker."""

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


class Follower:
    """Where a stream stands, and what each frame it receives means to its reader.

    Where events were lost (the publisher's high-water mark, a reconnect, a new leader),
    the stream yields one ``Event`` of kind ``"missed"`` before the next real one: whoever
    keeps state from events should rebuild it then (``processes()``). ``heard``: when the
    publisher last spoke (an event, or the tick it sends every heartbeat on every topic
    followed): a stream silent for the node's ``info().silence`` has lost it."""

    def __init__(self, endpoint: str, group: str | None) -> None:
        self.endpoint = endpoint
        self.group = group
        self.heard = time.monotonic()
        self.events = Sequence()  # where the stream stands: gseq for one group, seq for all
        self._pending: Event | None = None  # the real event that follows a "missed" one

    def topic(self) -> bytes:
        return p.topic(self.group) if self.group else b""

    def first_tick(self, frames: list[bytes]) -> bool:
        """Whether ``frames`` is the tick that answers the subscription (it is live)."""
        msg = self._decode(frames)
        if isinstance(msg, p.Tick):
            self.events.follow(msg.epoch, msg.gseq if self.group else msg.seq, is_event=False)
            return True
        return False

    def pending(self) -> Event | None:
        event, self._pending = self._pending, None
        return event

    def take(self, frames: list[bytes]) -> Event | None:
        """The event to give for ``frames`` (a "missed" one first if they reveal a gap), or None."""
        msg = self._decode(frames)
        if not isinstance(msg, (p.Event, p.Tick)):
            return None
        missed = self.check(msg)
        event = _event(msg) if isinstance(msg, p.Event) else None
        if missed is not None:
            self._pending = event
            return missed
        return event

    def check(self, msg: p.Event | p.Tick) -> Event | None:
        """Follow the sequence; a "missed" event if ``msg`` reveals a gap."""
        n = msg.gseq if self.group else msg.seq
        missed = self.events.follow(msg.epoch, n, isinstance(msg, p.Event))
        if not missed:  # in order, or seen already
            return None
        count = 0 if missed == Sequence.NEW_EPOCH else missed  # 0: unknown, a new leader
        return Event(n, "missed", self.group or "", "", "", 0, None, None, None, time.time(), missed=count)

    def _decode(self, frames: list[bytes]):
        self.heard = time.monotonic()
        try:
            return p.decode(frames[-1])
        except p.BadMessage:
            return None  # neither an event nor a tick: skipped

    def refused(self, shakes: Handshakes) -> AccessDenied:
        return AccessDenied(f"authentication failed at {self.endpoint}: {shakes.failure}", AUTHENTICATION)

    def silent(self, timeout: float) -> Timeout:
        return Timeout(f"no events from {self.endpoint} within {timeout:g} s")


def subscriber(ctx: zmq.Context, follower: Follower, keys: CurveKeys | None, endpoints: list[str]):
    """A SUB socket to every publisher, and the monitor of its handshakes (None for inproc)."""
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SUBSCRIBE, follower.topic())
    if keys is not None:
        keys.apply(sock)
    # Watched until the first tick: a refused handshake is told at once, not as silence.
    shakes = Handshakes(sock, curve=keys is not None) if monitored(endpoints[0]) else None
    for endpoint in endpoints:
        sock.connect(endpoint)
    return sock, shakes


class EventStream(Follower):
    """An iterator of :class:`Event`, live once returned (``Client.events()``);
    ``next_event(timeout)`` waits at most that long. Where events were lost (a reconnect,
    a new leader), it yields one event of kind ``"missed"`` before the next real one.
    ``heard``: when the publisher last spoke (``time.monotonic()``; it ticks every
    heartbeat): a stream silent for the node's ``info().silence`` seconds has lost it."""

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
        super().__init__(endpoint, group)
        self._sock, shakes = subscriber(ctx, self, keys, [endpoint, *(also or ())])
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
                    raise self.refused(shakes)
            if not ready:
                raise self.silent(timeout)
            if self._sock in ready and self.first_tick(self._sock.recv_multipart()):
                return

    def next_event(self, timeout: float | None = None) -> Event | None:
        """The next event, or None if none came within ``timeout`` seconds."""
        if (event := self.pending()) is not None:
            return event
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            ms = None if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            if not self._sock.poll(ms):
                return None
            if (event := self.take(self._sock.recv_multipart())) is not None:
                return event

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
