"""The leader's starts under way: one per key at most, each on one worker, with the
callers that wait for it. A start counts in its worker's load from the moment it is
ordered (or learnt of, from a worker's hello) until it is answered or given up.

Also the gets of new keys that a leader holds back while it recovers: a leader that
starts may have had a predecessor (a restart), whose workers may be starting keys it
has not heard of. Every live worker pings each heartbeat, and one that a predecessor
knew says so (a ping from a stranger, or a hello naming another leader); so new keys
wait ``heartbeat`` x ``liveness`` when such a sign comes, and only about one heartbeat
when none does (a fresh cluster), or until every node of ``cluster.nodes`` has said
hello. Held gets are placed then, in the order they came.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from . import protocol as p
from .placement import Placement

Key = tuple[str, str]


@dataclass
class Pending:
    """A start under way: who waits for it."""

    node: str
    spawn_id: int  # the id its worker will answer with
    spawn: p.Spawn | None  # kept to send again if the worker reconnects (None: a start it told us of)
    waiters: list[tuple[bytes, int]] = field(default_factory=list)  # (peer, request id)


class Starts:
    def __init__(self, placement: Placement) -> None:
        self.placement = placement
        self.pending: dict[Key, Pending] = {}
        self.spawns: dict[int, Key] = {}  # spawn id -> key
        self.recovering_until: float | None = None  # while set, no new key is placed
        self.fresh_by: float | None = None  # ... or only until then, if no predecessor shows
        self.held: list[tuple[bytes, p.Get]] = []  # the gets of new keys that wait meanwhile

    def get(self, k: Key) -> Pending | None:
        return self.pending.get(k)

    def expect(self, k: Key, node: str, spawn_id: int, spawn: p.Spawn | None = None) -> Pending:
        """A start of ``k`` under way on ``node``: every get of ``k`` waits for it."""
        wait = self.pending[k] = Pending(node, spawn_id, spawn)
        self.spawns[spawn_id] = k
        self.placement.add(node, +1)
        return wait

    def told(self, node: str, starting: list[p.Starting], registered: Callable[[str, str], object]) -> None:
        """Starts under way on ``node`` that its hello lists (ordered by another leader,
        or by us before a lost answer): every get of their keys waits for them, as for
        our own; not a key registered already or being started elsewhere."""
        for start in starting:
            k = (start.group, start.key)
            if k not in self.pending and registered(*k) is None and start.id not in self.spawns:
                self.expect(k, node, start.id)

    def ordered(self, node: str) -> list[p.Spawn]:
        """The starts this leader ordered from ``node`` and that are still under way."""
        return [wait.spawn for wait in self.pending.values() if wait.node == node and wait.spawn is not None]

    def answered(self, node: str, spawn_id: int, k: Key) -> Pending | None:
        """The start that ``node``'s answer about ``k`` ends, if it is the one under way
        there; it no longer counts in the load (what it started is counted as it runs)."""
        if self.spawns.get(spawn_id) != k or self.pending[k].node != node:
            return None
        del self.spawns[spawn_id]
        self.placement.add(node, -1)
        return self.pending.pop(k)

    def of_node(self, node: str) -> list[tuple[Key, Pending]]:
        return [(k, wait) for k, wait in self.pending.items() if wait.node == node]

    def drop_node(self, node: str) -> list[tuple[Key, Pending]]:
        """Give up every start under way on ``node``: they will never finish."""
        gone = self.of_node(node)
        for k, wait in gone:
            del self.pending[k], self.spawns[wait.spawn_id]
            self.placement.add(node, -1)
        return gone

    def recover(self, until: float, fresh_by: float) -> None:
        """A leader's start: place no new key until ``until``, or only until ``fresh_by``
        if no sign of a predecessor comes before then."""
        self.recovering_until, self.fresh_by = until, fresh_by

    def predecessor(self) -> None:
        """A worker that another leader knew has spoken: wait the whole time."""
        self.fresh_by = None

    def deadline(self) -> float | None:
        if self.recovering_until is None or self.fresh_by is None:
            return self.recovering_until
        return min(self.recovering_until, self.fresh_by)

    def recovered(self, now: float, everyone_here: bool = False) -> list[tuple[bytes, p.Get]]:
        """The gets held back, once the recovery is over (none before); it is over at
        once when every worker that may exist (``cluster.nodes``) has said hello."""
        end = self.deadline()
        if end is None or (now < end and not everyone_here):
            return []
        self.recovering_until = self.fresh_by = None
        held, self.held = self.held, []
        return held
