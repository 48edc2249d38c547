"""A client's near cache: the locations it was answered with, kept true by the leader's
events on a SUB socket of its own (``Client(..., cache=True)``)."""

from __future__ import annotations

import select
import time

import zmq

from forsetid import protocol as p
from forsetid.protocol import Location, Sequence

from .security import CurveKeys


class NearCache:
    """A client's own cache of the locations it was answered with.

    It follows the leader's events on a SUB socket (every group, so that ``seq`` tells
    any gap) by the worker cache's rules: an exit drops the location, a gap in ``seq``
    or a new leader epoch empties the cache, and a reply is learnt only if no later
    event was applied meanwhile. Unlike a worker's cache it keeps only the keys it was
    asked about, not every process that starts in the cluster.

    Before it answers, it applies every event that has reached its socket, so a location
    is never returned after its exit event has arrived. Checking costs one ``poll(0)``
    of the socket's ZMQ_FD, which libzmq signals whenever the socket's state changes,
    about 1 µs; ``zmq.EVENTS`` alone costs more than twice that. The cache answers only
    while the event stream is live: from its first tick, and until it has been silent
    for ``silence`` seconds (the leader ticks every heartbeat; a leader that died cannot
    publish exits, so a silent stream must not be trusted)."""

    max_size = 100_000  # locations kept at most; beyond, lookups go to the node

    def __init__(
        self, ctx: zmq.Context, endpoints: str | list[str], silence: float = 3.0, keys: CurveKeys | None = None
    ) -> None:
        """``endpoints``: the leader's events socket, or every candidate's (backend "etcd"):
        only the leader publishes, and a new leader's first tick (a new epoch) empties
        the cache and makes it live again, so it goes on across a failover."""
        self.silence = silence  # seconds without a tick or event after which nothing is answered
        self.locations: dict[tuple[str, str], Location] = {}
        self.events = Sequence()  # how far the applied events go
        self.heard: float | None = None  # when the stream last spoke; None = not live
        self._sub = ctx.socket(zmq.SUB)
        self._sub.setsockopt(zmq.LINGER, 0)
        self._sub.setsockopt(zmq.SUBSCRIBE, b"")
        if keys is not None:  # a refused handshake leaves the cache never live: lookups go to the node
            keys.apply(self._sub)
        for endpoint in [endpoints] if isinstance(endpoints, str) else endpoints:
            self._sub.connect(endpoint)
        self._signal = select.poll()
        self._signal.register(self._sub.getsockopt(zmq.FD), select.POLLIN)
        self.hits = 0
        # The keys of the requests in flight (an AsyncClient has many at once): how many
        # ask each, and that key's exits applied since the first of them was sent.
        self._asked: dict[tuple[str, str], int] = {}
        self._exited: dict[tuple[str, str], list[Location]] = {}

    def lookup(self, group: str, key: str) -> Location | None:
        """The cached location, or None: ask the node."""
        if self._signal.poll(0):
            self.sync()
        if self.heard is None:
            return None
        if time.monotonic() - self.heard > self.silence:
            self.heard = None
            self.locations.clear()
            return None
        loc = self.locations.get((group, key))
        if loc is not None:
            self.hits += 1
        return loc

    def asking(self, group: str, key: str) -> tuple[int, str]:
        """Before asking the node for (group, key): the events applied so far, as (seq,
        epoch), for the node not to answer from a cache that is behind them (it might
        tell of a process whose exit is known here); and from now on, note that key's exits."""
        self.sync()
        k = (group, key)
        self._asked[k] = self._asked.get(k, 0) + 1
        self._exited.setdefault(k, [])
        return self.events.n, self.events.epoch or ""

    def learn(self, loc: Location, seq: int, epoch: str) -> bool:
        """The node's answer about the key asked for; False if that process's exit has
        arrived meanwhile (then it is not kept, nor to be told)."""
        self.sync()  # events that overtook the reply count first
        if loc in self._exited.get((loc.group, loc.key), ()):
            return False
        live = self.heard is not None and len(self.locations) < self.max_size
        if live and self.events.not_behind(seq, epoch):
            self.locations[(loc.group, loc.key)] = loc
        return True

    def asked(self, group: str, key: str) -> None:
        """The request is over (answered or not): stop noting that key's exits."""
        k = (group, key)
        left = self._asked.pop(k, 1) - 1
        if left > 0:
            self._asked[k] = left
        else:
            self._exited.pop(k, None)

    def drop(self, group: str, key: str) -> None:
        self.locations.pop((group, key), None)

    def sync(self) -> None:
        """Apply every event that has reached the socket."""
        for frames in p.waiting(self._sub):  # (which re-arms the ZMQ_FD signal, too)
            try:
                msg = p.decode(frames[-1])
            except p.BadMessage:
                continue
            if isinstance(msg, (p.Event, p.Tick)):
                self.apply(msg)

    def apply(self, msg: p.Event | p.Tick) -> None:
        is_event = isinstance(msg, p.Event)
        missed = self.events.follow(msg.epoch, msg.seq, is_event)
        self.heard = time.monotonic()
        if missed:  # events lost, or a new leader: nothing cached can be trusted
            self.locations.clear()
        if is_event and missed is not None:
            self._follow(msg)
        if (
            is_event
            and msg.kind == "exited"
            and (exits := self._exited.get((msg.location.group, msg.location.key))) is not None
        ):
            exits.append(msg.location)

    def _follow(self, event: p.Event) -> None:
        loc = event.location
        k = (loc.group, loc.key)
        if event.kind == "exited":
            if self.locations.get(k) == loc:
                del self.locations[k]
        elif k in self.locations:  # a key we follow moved: follow it
            self.locations[k] = loc

    def close(self) -> None:
        self._sub.close()
