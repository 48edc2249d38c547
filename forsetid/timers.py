"""Work due at a time: ``after(delay, action, ident)`` calls ``action(ident)``, which
returns effects, once ``delay`` seconds have passed. One heap for a whole part, so that
the loop sleeps exactly until the soonest."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable


class Timers:
    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._heap: list[tuple[float, int, Callable[[int], list], int]] = []
        self._n = itertools.count()  # keeps equal times in order (actions do not compare)

    def after(self, delay: float, action: Callable[[int], list], ident: int) -> None:
        heapq.heappush(self._heap, (self.clock() + delay, next(self._n), action, ident))

    def soonest(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def expire(self) -> list:
        """The effects of every action that is due."""
        out: list = []
        now = self.clock()
        while self._heap and self._heap[0][0] <= now:
            _, _, action, ident = heapq.heappop(self._heap)
            out += action(ident)
        return out
