"""The leader's starts under way: one per key at most, each on one worker, with the
callers that wait for it. A start counts in its worker's load from the moment it is
ordered (or learnt of, from a worker's hello) until it is answered or given up.

Also the gets of new keys that a recovering leader holds back (``leader.py`` says
when): they are placed once it has heard from every worker that may be starting them.
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
        self.recovered_once = False
        self.held: list[tuple[bytes, p.Get]] = []  # the gets of new keys that wait for that

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

    def recover(self, until: float) -> None:
        """Place no new key until ``until``; once in a leader's life, as it learns that it
        has a predecessor (after that, every live worker has said hello)."""
        if not self.recovered_once:
            self.recovered_once, self.recovering_until = True, until

    def recovered(self, now: float) -> list[tuple[bytes, p.Get]]:
        """The gets held back, once the recovery is over (none before)."""
        if self.recovering_until is None or now < self.recovering_until:
            return []
        self.recovering_until = None
        held, self.held = self.held, []
        return held
