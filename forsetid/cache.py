"""A worker's cache of locations, kept true by the leader's events.

Events carry the leader's epoch and a sequence number (:class:`protocol.Sequence`
follows them). The cache applies them in order; a gap (events lost at the high-water
mark or across a reconnect) or a new epoch (a new leader) empties it, so it never
answers from a picture with holes in it. A location learnt from a reply is kept only
if no later event was applied yet: the reply and the events travel on different
sockets, and an exit event that overtook the reply must not be undone by it.
"""

from __future__ import annotations

from .protocol import Event, Location, Sequence, Tick


class LocationCache:
    def __init__(self) -> None:
        self._d: dict[tuple[str, str], Location] = {}
        self.events = Sequence()
        self.resets = 0  # how often a gap or a new leader emptied it

    @property
    def seq(self) -> int:
        return self.events.n

    @property
    def epoch(self) -> str | None:
        return self.events.epoch

    def get(self, group: str, key: str) -> Location | None:
        return self._d.get((group, key))

    def __len__(self) -> int:
        return len(self._d)

    def has_seen(self, seq: int, epoch: str) -> bool:
        return self.events.has_seen(seq, epoch)

    def learn(self, loc: Location, seq: int, epoch: str | None = None) -> None:
        """A location the leader answered with while at event ``seq`` of ``epoch`` (None:
        known first hand). An answer from another leader's life is not kept."""
        if self.events.not_behind(seq, epoch):
            self._d[(loc.group, loc.key)] = loc

    def forget(self, loc: Location) -> None:
        if self._d.get((loc.group, loc.key)) == loc:
            del self._d[(loc.group, loc.key)]

    def apply(self, msg: Event | Tick) -> bool:
        """Apply an event or tick; False if it revealed a gap (a gap or a new leader
        empties the cache first)."""
        missed = self.events.follow(msg.epoch, msg.seq, isinstance(msg, Event))
        if missed is None:
            return True  # a duplicate, or a tick already seen
        if missed:
            self.clear()
        if isinstance(msg, Event):
            loc = msg.location
            if msg.kind == "started":
                self._d[(loc.group, loc.key)] = loc
            else:
                self.forget(loc)
        return missed <= 0

    def clear(self) -> None:
        if self._d:
            self.resets += 1
        self._d.clear()
