"""Which worker gets the next new process: the least loaded one that may take it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class WorkerLoad:
    name: str
    capacity: int = 0  # 0 = no limit
    load: int = 0  # registered processes plus starts under way
    up: bool = True

    @property
    def full(self) -> bool:
        return self.capacity > 0 and self.load >= self.capacity


class Placement:
    """Load per worker and the least-loaded choice (ties go to the lowest name)."""

    def __init__(self, allowed: list[str] | None = None) -> None:
        self.allowed = set(allowed or ())  # empty = any worker may join
        self.workers: dict[str, WorkerLoad] = {}

    def admits(self, name: str) -> bool:
        return not self.allowed or name in self.allowed

    def join(self, name: str, capacity: int) -> WorkerLoad:
        w = self.workers.get(name)
        if w is None:
            w = self.workers[name] = WorkerLoad(name, capacity)
        w.capacity, w.up = capacity, True
        return w

    def down(self, name: str) -> None:
        w = self.workers.get(name)
        if w is not None:
            w.up = False

    def add(self, name: str, delta: int) -> None:
        w = self.workers.get(name)
        if w is not None:
            w.load = max(0, w.load + delta)

    def choose(self, exclude=()) -> str | None:
        """The least-loaded worker that is up, not full and not in ``exclude`` (names)."""
        best = None
        for w in self.workers.values():
            if w.up and not w.full and w.name not in exclude and (best is None or (w.load, w.name) < (best.load, best.name)):
                best = w
        return best.name if best else None
