"""What workers report to the leader besides their hello (``hello.Hellos``): a start
done or failed, an exit, a ping, a group suspended by the crash-loop guard, a clean
leave. Part of ``leader.Leader`` (a base class of it). A worker speaks only for itself:
a report that names another node is ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from . import protocol as p
from .crashloop import Suspensions
from .effects import LeaderOut, Note, Publish, Reply
from .event_log import EventLog
from .placement import Placement
from .registry import Registry
from .restarts import Restarts
from .starts import Pending, Starts
from .store import Store

Out = LeaderOut


class WorkerReports:
    # The leader's parts this uses (``leader.Leader.__init__`` makes them).
    node_of: dict[bytes, str]
    epoch: str
    starts: Starts
    registry: Registry
    store: Store
    events: EventLog
    restarts: Restarts
    placement: Placement
    suspensions: Suspensions

    restart_started: Callable[[tuple[str, str], Pending, p.Location | None], Out]  # (restarts.Restarting's)

    def _suspend(self, peer: bytes, msg: p.Suspend) -> Out:
        self.suspensions.suspend(self.node_of[peer], msg.group, msg.seconds)
        return []

    def _leaving(self, peer: bytes, msg: p.Leaving) -> Out:
        node = self.node_of[peer]
        self.placement.leave(node)
        return [Note(logging.INFO, f"worker {node} is leaving (shut down cleanly)")]

    def _ping(self, peer: bytes, msg: p.Ping) -> Out:
        return [Reply(peer, p.Pong(id=msg.id, epoch=self.epoch, known=peer in self.node_of))]

    def _spawned(self, peer: bytes, msg: p.Spawned) -> Out:
        loc = msg.location
        if loc.node != self.node_of[peer]:
            return []  # a worker speaks only for itself
        k = (loc.group, loc.key)
        wait = self.starts.answered(loc.node, msg.id, k)
        adopted = self.registry.adopt(peer, loc)  # the started event (or the kill of a duplicate)
        if wait is None:
            return adopted
        current = self.store.get(loc.group, loc.key)
        adopted += self.restart_started(k, wait, current)
        # The waiting callers first: they wait for this answer, the subscribers do not.
        found = [Reply(waiter, self.events.found(req, current)) for waiter, req in wait.waiters]
        return found + adopted

    def _spawn_failed(self, peer: bytes, msg: p.SpawnFailed) -> Out:
        wait = self.starts.answered(self.node_of[peer], msg.id, (msg.group, msg.key))
        if wait is None:
            return []
        group, key = msg.group, msg.key
        text = f"cannot start {group}/{key} on {wait.node}: {msg.reason}"
        out: Out = [Reply(waiter, p.Error(id=req, kind=p.SPAWN_FAILED, message=text)) for waiter, req in wait.waiters]
        stops = self.restarts.failed((group, key), False, msg.reason)  # a restart is tried again
        return out + [Reply(w, p.Stopped(id=req, found=True)) for w, req in stops]

    def _exited(self, peer: bytes, msg: p.Exited) -> Out:
        loc = msg.location
        if loc.node != self.node_of[peer]:
            return []  # a worker speaks only for itself
        current = self.store.get(loc.group, loc.key)
        if current is not None and current.pid == loc.pid and current.node == loc.node:
            return self.registry.drop(current, msg.exit_code, msg.signal, msg.reason, msg.at, msg.drain)
        if msg.reason == "conflict":  # a duplicate we had stopped: say so, change nothing
            return [Publish(self.events.event("exited", loc, msg.exit_code, msg.signal, msg.reason, msg.at))]
        return []  # a stale report: that process is not the registered one
