"""The worker's lease, with ``cluster.partition = "stop"``: how long its processes may
live without word from a leader that still counts this worker as one of its own.

The fork server holds the lease (``spawner.py``: ``["lease", until]``) and kills every
process group when it ends unrenewed, so that it holds even when the daemon's own loop
is frozen or dead. This part decides when the lease is renewed, and until when.

A lease is renewed only by an answer that proves the leader heard this worker: a
``pong`` (``known``, from the leader it joined) to one of its pings, or the
``welcome`` to its hello. It then runs from the instant that ping or hello was *sent*,
not from when the answer came: the leader heard the worker at that instant or later,
and counts its own ``heartbeat`` x ``liveness`` from when it last heard it, so a lease
of ``lease_seconds()`` ends before the leader can take the worker for down however
long either message took on its way (docs/internals/partitions.md).
Other words from the leader (a start, a stop, an unasked pong) prove nothing of the
kind: they may have been sent long after the leader last heard this worker.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable

from .effects import Renew

ASKED_MAX = 64  # pings and hellos remembered while unanswered (a partition leaves them so)


def lease_seconds(heartbeat: float, liveness: int) -> float:
    """The lease: the leader's silence (heartbeat x liveness) less half a heartbeat, the
    margin for the fork server to be woken and its processes to die, and for the two
    machines' clocks to run at slightly different rates. Renewed once a heartbeat, it
    needs ``liveness >= 2`` (config.py says so) to outlast the wait for the next pong."""
    return heartbeat * liveness - heartbeat / 2


ETCD_SWEEP = 0.5  # seconds between etcd's looks for lapsed leases


def failover_seconds(heartbeat: float, lease: float, etcd_election: float) -> tuple[float, str]:
    """The longest a failover may leave the workers without a leader's answer, with
    etcd's raft leader lost along with the leader (the worst case), and how it adds up:
    etcd's members notice and elect a new raft leader within twice their election
    timeout; the new raft leader extends every lease by one election timeout as it takes
    office; the leader's lease then runs its TTL (whole seconds, and no less than etcd's
    minimum of 1.5 election timeouts); etcd's sweep finds it lapsed within half a second;
    a standby is elected at once, announces it, and each worker's hello is welcomed
    within a heartbeat."""
    ttl = max(1, math.ceil(lease), math.ceil(1.5 * etcd_election))
    parts = [(2 * etcd_election, "etcd's election"), (etcd_election, "its lease extension"), (ttl, "the lease's TTL"),
             (ETCD_SWEEP, "etcd's sweep"), (heartbeat, "the workers' move")]  # fmt: skip
    return sum(s for s, _ in parts), " + ".join(f"{s:g} s ({what})" for s, what in parts)


class Lease:
    def __init__(self, seconds: float, clock: Callable[[], float]) -> None:
        self.seconds, self.clock = seconds, clock
        self.asked: collections.deque[tuple[int, float]] = collections.deque(maxlen=ASKED_MAX)
        self.until = -math.inf  # none held before the first answer

    def sent(self, msg_id: int) -> None:
        """A ping or a hello goes to the leader now, under ``msg_id``."""
        self.asked.append((msg_id, self.clock()))

    def answered(self, msg_id: int) -> list[Renew]:
        """The leader answered ``msg_id`` as from one of its workers: the lease runs from
        when that was sent. (Ids grow: what was asked before it will not be answered.)"""
        asked = self.asked
        while asked and asked[0][0] <= msg_id:
            sent_id, at = asked.popleft()
            if sent_id == msg_id and at + self.seconds > self.until:
                self.until = at + self.seconds
                return [Renew(self.until)]
        return []

    def lapsed(self) -> bool:
        return self.clock() >= self.until

    def adrift(self) -> bool:
        """Lapsed after being held: the leader that renewed it fell silent (before the
        first answer, the worker has not joined yet: that is no sign of a split)."""
        return self.until != -math.inf and self.clock() >= self.until
