"""The crash-loop guard: more than ``max_retries`` abnormal exits (or failed starts) of
one group on one node within ``max_time`` seconds suspend that group there for
``max_time`` seconds. The worker counts (:class:`CrashGuard`); the leader remembers
where a group is suspended, so as to place it elsewhere (:class:`Suspensions`)."""

from __future__ import annotations

import collections
from collections.abc import Callable


class CrashGuard:
    """One node's count of abnormal exits, by group, in a sliding window."""

    def __init__(self, max_retries: int, max_time: float, clock: Callable[[], float]) -> None:
        self.max_retries, self.max_time, self.clock = max_retries, max_time, clock
        self.crashes: dict[str, collections.deque] = {}  # group -> times of abnormal exits
        self.until: dict[str, float] = {}  # group -> suspended until (clock)

    def crashed(self, group: str) -> bool:
        """Count one; True if that suspends the group (for ``max_time`` seconds)."""
        now = self.clock()
        times = self.crashes.setdefault(group, collections.deque())
        times.append(now)
        while times and times[0] < now - self.max_time:
            times.popleft()
        if len(times) <= self.max_retries or self.suspended(group):
            return False
        self.until[group] = now + self.max_time
        times.clear()
        return True

    def suspended(self, group: str) -> bool:
        return self.until.get(group, 0) > self.clock()

    def left(self) -> dict[str, float]:
        """Seconds left of each suspension: a new leader is told them in the hello."""
        now = self.clock()
        return {group: until - now for group, until in self.until.items() if until > now}


class Suspensions:
    """The leader's view: where each group is suspended, and until when."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.until: dict[tuple[str, str], float] = {}  # (node, group) -> until (clock)

    def suspend(self, node: str, group: str, seconds: float) -> None:
        self.until[(node, group)] = self.clock() + seconds

    def nodes(self, group: str) -> set[str]:
        """The nodes where ``group`` is suspended now."""
        if not self.until:
            return set()
        now = self.clock()
        for k in [k for k, until in self.until.items() if until <= now]:
            del self.until[k]
        return {n for (n, g) in self.until if g == group}

    def seconds_left(self, group: str) -> float:
        """Until ``group`` may start again somewhere (call only where ``nodes`` is not empty)."""
        now = self.clock()
        return min(until - now for (n, g), until in self.until.items() if g == group)

    def groups(self, node: str) -> list[str]:
        """The groups suspended on ``node`` now, sorted."""
        now = self.clock()
        return sorted(g for (n, g), until in self.until.items() if n == node and until > now)
