"""A worker's cache of locations, kept true by the leader's events.

Events carry the leader's epoch and a sequence number. The cache applies them in
order; a gap (events lost at the high-water mark or across a reconnect) or a new epoch
(a new leader) empties it, so it never answers from a picture with holes in it. A
location learnt from a reply is kept only if no later event was applied yet: the
reply and the events travel on different sockets, and an exit event that overtook the
reply must not be undone by it.

A client's near cache uses the same class with ``adopt=False``: it keeps only the
locations it asked for, not every process that starts in the cluster.
"""

from __future__ import annotations

from .protocol import Event, Location, Tick


class LocationCache:
    def __init__(self, adopt: bool = True) -> None:
        self._d: dict[tuple[str, str], Location] = {}
        self.adopt = adopt  # keep the location of every started event, not only learnt ones
        self.epoch: str | None = None
        self.seq = 0
        self.resets = 0  # how often a gap or a new leader emptied it

    def get(self, group: str, key: str) -> Location | None:
        return self._d.get((group, key))

    def __len__(self) -> int:
        return len(self._d)

    def has_seen(self, seq: int, epoch: str) -> bool:
        """Whether the events up to ``seq`` of ``epoch`` ("": none) are applied here."""
        return not epoch or (epoch == self.epoch and seq <= self.seq)

    def learn(self, loc: Location, seq: int, epoch: str | None = None) -> None:
        """A location the leader answered with while at event ``seq`` of ``epoch`` (None:
        known first hand). An answer from another leader's life is not kept."""
        if seq >= self.seq and (epoch is None or epoch == self.epoch):
            self._d[(loc.group, loc.key)] = loc

    def forget(self, loc: Location) -> None:
        if self._d.get((loc.group, loc.key)) == loc:
            del self._d[(loc.group, loc.key)]

    def apply(self, msg: Event | Tick) -> bool:
        """Apply an event or tick; False if it revealed a gap (the cache was emptied)."""
        step = 1 if isinstance(msg, Event) else 0
        in_order = True
        if msg.epoch != self.epoch:
            self.clear()  # first contact or a new leader: start from nothing
            self.epoch = msg.epoch
        elif msg.seq < self.seq + step:
            return True  # a duplicate or a tick already seen
        elif msg.seq > self.seq + step:
            self.clear()
            in_order = False
        self.seq = msg.seq
        if step:
            loc = msg.location
            if msg.kind == "started":
                k = (loc.group, loc.key)
                if self.adopt or k in self._d:  # a key we follow moved: follow it
                    self._d[k] = loc
            else:
                self.forget(loc)
        return in_order

    def clear(self) -> None:
        if self._d:
            self.resets += 1
        self._d.clear()
