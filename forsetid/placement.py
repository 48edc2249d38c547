"""Which worker gets the next new process: the least loaded one that may take it.

``choose()`` runs on every start, so it must not scan every worker: a thousand workers
would make each start cost a thousand comparisons. The candidates live in a heap of
``(load, name)`` entries; a change of load pushes a new entry and leaves the old one in
place, to be thrown away when it reaches the top (lazy deletion). An entry is current
when its worker is up, not full and still has that load. Stale entries are bounded by
rebuilding the heap when they outnumber the workers, so each change costs O(log n)
amortised and ``choose()`` looks at a handful of entries.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Literal


@dataclass
class WorkerLoad:
    name: str
    capacity: int = 0  # 0 = no limit
    load: int = 0  # registered processes plus starts under way
    up: bool = True
    draining: bool = False  # takes no new process (forsetictl drain)
    left: bool = False  # shut down cleanly: gone, and not down
    held: bool = False  # backend "etcd": joined, and not yet written down for a successor to wait for
    listen: str = ""  # its client endpoint, as its hello told (clients fail over to it, other nodes send calls)

    @property
    def full(self) -> bool:
        return self.capacity > 0 and self.load >= self.capacity

    @property
    def candidate(self) -> bool:
        return self.up and not (self.draining or self.left or self.full or self.held)

    @property
    def state(self) -> Literal["up", "draining", "down", "left"]:
        """As ``nodes`` shows it: up, draining, down or left."""
        return "left" if self.left else "down" if not self.up else "draining" if self.draining else "up"


class Placement:
    """Load per worker and the least-loaded choice (ties go to the lowest name)."""

    def __init__(self, allowed: list[str] | None = None) -> None:
        self.allowed = set(allowed or ())  # empty = any worker may join
        self.workers: dict[str, WorkerLoad] = {}
        self._heap: list[tuple[int, str]] = []

    def admits(self, name: str) -> bool:
        return not self.allowed or name in self.allowed

    def join(self, name: str, capacity: int, listen: str = "") -> WorkerLoad:
        w = self.workers.get(name)
        if w is None:
            w = self.workers[name] = WorkerLoad(name, capacity)
        w.capacity, w.up, w.left, w.listen = capacity, True, False, listen
        self._offer(w)
        return w

    def down(self, name: str) -> None:
        w = self.workers.get(name)
        if w is not None:
            w.up = False  # its heap entries are stale now

    def leave(self, name: str) -> None:
        w = self.workers.get(name)
        if w is not None:
            w.left = True

    def hold(self, name: str, held: bool) -> None:
        """Take no new process on ``name`` until released (``held`` False)."""
        w = self.workers.get(name)
        if w is not None:
            w.held = held
            if not held:
                self._offer(w)

    def any_held(self) -> bool:
        return any(w.held and w.up for w in self.workers.values())

    def drain(self, name: str, draining: bool) -> bool:
        """Take no new process there (or again); False: no such worker."""
        w = self.workers.get(name)
        if w is None:
            return False
        w.draining = draining
        self._offer(w)
        return True

    def add(self, name: str, delta: int) -> None:
        w = self.workers.get(name)
        if w is not None:
            w.load = max(0, w.load + delta)
            self._offer(w)

    def choose(self, exclude=()) -> str | None:
        """The least-loaded worker that is up, not full and not in ``exclude`` (names)."""
        heap = self._heap
        skipped = []  # current entries of excluded workers: they go back afterwards
        best = None
        while heap:
            load, name = heap[0]
            if not self._current(load, name):
                heapq.heappop(heap)
            elif name in exclude:
                skipped.append(heapq.heappop(heap))
            else:
                best = name
                break
        for entry in skipped:
            heapq.heappush(heap, entry)
        return best

    def _current(self, load: int, name: str) -> bool:
        w = self.workers.get(name)
        return w is not None and w.load == load and w.candidate

    def _offer(self, w: WorkerLoad) -> None:
        if not w.candidate:
            return  # a later change of load, a join or an undrain offers it again
        heapq.heappush(self._heap, (w.load, w.name))
        if len(self._heap) > 2 * len(self.workers) + 16:
            self._heap = [(x.load, x.name) for x in self.workers.values() if x.candidate]
            heapq.heapify(self._heap)
