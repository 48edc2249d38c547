"""Keys that may not be placed yet, with ``cluster.partition = "stop"``.

A worker silent for longer than its lease can hold is down at once: its fork server
killed its processes when the lease ended, by the worker's clock, so no answer may name
them any more. But their keys are placed again only once the silence has lasted
``heartbeat`` x ``liveness``: the lease's margin (half a heartbeat) is for the kill to
be carried out and for the two machines' clocks, and a copy started elsewhere within it
might live beside the old one (docs/internals/partitions.md). Until then
each of those keys is fenced: a ``get`` of it waits here, and is placed as if it came
then; a restart of it is put off to then (``Restarts.not_before``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from . import protocol as p

Key = tuple[str, str]


class Fences:
    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.until: dict[Key, float] = {}
        self.waiting: list[tuple[bytes, p.Get]] = []

    def fence(self, keys: Iterable[Key], until: float) -> None:
        for k in keys:
            self.until[k] = max(self.until.get(k, until), until)

    def holds(self, peer: bytes, msg: p.Get) -> bool:
        """Whether ``msg`` must wait (it is kept, to be placed at the fence's end)."""
        end = self.until.get((msg.group, msg.key))
        if end is None or end <= self.clock():
            return False
        self.waiting.append((peer, msg))
        return True

    def deadline(self) -> float | None:
        return min(self.until.values()) if self.until else None

    def released(self) -> list[tuple[bytes, p.Get]]:
        """The gets whose key's fence has ended, taken out to be placed now."""
        now = self.clock()
        self.until = {k: end for k, end in self.until.items() if end > now}
        free = [(peer, msg) for peer, msg in self.waiting if (msg.group, msg.key) not in self.until]
        self.waiting = [(peer, msg) for peer, msg in self.waiting if (msg.group, msg.key) in self.until]
        return free
