"""What a worker's hello changes at the leader: what the worker says it runs and is
starting is reconciled with what the leader had registered on that node. This is where
a restarted leader rebuilds its dictionary, where a worker that comes back is believed
about itself (and only about itself), and where starts whose answer was lost are
settled. Part of ``leader.Leader`` (a base class of it), kept in a file of its own
because this is the rule a reader most often looks for."""

from __future__ import annotations

import logging
from collections.abc import Callable

from . import protocol as p
from .crashloop import Suspensions
from .effects import LeaderOut, Note, Record, Reply
from .event_log import EventLog
from .groups import Groups
from .members import Members
from .placement import Placement
from .registry import Registry
from .restarts import Restarts
from .starts import Pending, Starts
from .store import Store

Out = LeaderOut


class Hellos:
    # The leader's parts this uses (``leader.Leader.__init__`` makes them).
    placement: Placement
    members: Members
    starts: Starts
    registry: Registry
    groups: Groups
    suspensions: Suspensions
    restarts: Restarts
    store: Store
    events: EventLog
    epoch: str
    term: int
    about: p.InfoReply
    calls: dict[str, p.Call]
    restart_started: Callable[[tuple[str, str], Pending, p.Location | None], Out]  # (restarts.Restarting)
    _get: Callable[[bytes, p.Get], Out]  # (leader.Leader)

    durable: bool

    def record(self, key: str, value: bytes | None) -> list[Record]:
        """What a successor must know, written down (backend "etcd") or not."""
        return [Record(key, value)] if self.durable else []

    def welcome(self, peer: bytes, msg: p.Hello) -> Out:
        if not self.placement.admits(msg.node):
            return [
                Reply(
                    peer, p.Error(id=msg.id, kind=p.NOT_ALLOWED, message=f"node '{msg.node}' is not in cluster.nodes")
                )
            ]
        if self.members.taken(msg.node, msg.incarnation, peer):
            text = f"another daemon named '{msg.node}' is up; this one is refused until that one falls silent"
            return [Reply(peer, p.Error(id=msg.id, kind=p.NAME_TAKEN, message=text))]
        if msg.welcomed_by not in ("", self.epoch):
            # Another leader welcomed it: we have a predecessor, whose other workers may
            # be starting keys that nobody here knows of yet.
            self.starts.predecessor()
        restarted = self.members.restarted(msg.node, msg.incarnation)
        news: Out = [*self._joined(msg, restarted)]
        if news:  # a worker new to this leader: a successor must wait for it too
            news += self.record(f"members/{msg.node}", b"")
        processes = [loc for loc in msg.processes if loc.node == msg.node]  # a worker speaks for itself
        out = self._lost_reports(msg)
        # What it no longer runs died with the old daemon, or exited while its report was lost.
        out += self.registry.keep_only(msg.node, processes, "node-down" if restarted else "exit")
        if restarted:
            out += self._fail_pending(msg.node, "restarted")
        self.members.join(msg.node, msg.incarnation, peer)
        self.placement.join(msg.node, msg.capacity, msg.listen)
        if news and self.durable:  # nothing placed there before a successor would wait for it
            self.placement.hold(msg.node, True)
        self.groups.learn(msg.calls)  # groups added at run time outlive a leader
        for group, seconds in msg.suspended.items():
            self.suspensions.suspend(msg.node, group, seconds)
        welcome = p.Welcome(id=msg.id, epoch=self.epoch, calls=self.calls, term=self.term, leader=self.about.node)
        out.append(Reply(peer, welcome))
        for loc in processes:
            out += self.registry.adopt(peer, loc, running=True)
        self.starts.told(msg.node, msg.starting, self.store.get)
        out += self._settle(msg.node, processes, msg.starting)
        # Starts it may never have received (or whose answer was lost): the worker
        # answers a repeat of one it runs or is starting, so sending again is safe.
        return [*news, *out, *[Reply(peer, spawn) for spawn in self.starts.ordered(msg.node)]]

    def _lost_reports(self, msg: p.Hello) -> Out:
        """The exits a worker tells again (its lease lapsed, ``cluster.partition =
        "stop"``): those still registered are dropped with their own reason."""
        out: Out = []
        for gone in msg.exited:
            loc = gone.location
            current = self.store.get(loc.group, loc.key)
            if loc.node == msg.node and current is not None and (current.node, current.pid) == (loc.node, loc.pid):
                out += self.registry.drop(current, gone.exit_code, gone.signal, gone.reason, gone.at)
        return out

    def _joined(self, msg: p.Hello, restarted: bool) -> list[Note]:
        """What a hello means for the cluster, said before the hello changes it."""
        known, up = msg.node in self.members.incarnation, msg.node in self.members.peer_of
        if known and up and not restarted:
            return []  # a worker that took us for lost, or reconnected: nothing changed
        what = "restarted" if restarted else "is back" if known else "joined"
        counts = f"{len(msg.processes)} running, {len(msg.starting)} starting, capacity {msg.capacity or 'any'}"
        return [Note(logging.INFO, f"worker {msg.node} {what} ({counts})")]

    def _settle(self, node: str, running: list[p.Location], starting: list[p.Starting]) -> Out:
        """A hello answers the starts under way there whose answer was lost (on a socket
        the worker dropped): one it runs has started; one it told us of and lists no
        more is gone (the starts we ordered are sent again instead)."""
        runs = {(loc.group, loc.key) for loc in running}
        listed = runs | {(s.group, s.key) for s in starting}
        out: Out = []
        for k, wait in self.starts.of_node(node):
            if k in runs:
                self.starts.answered(node, wait.spawn_id, k)
                current = self.store.get(*k)
                out += [Reply(waiter, self.events.found(req, current)) for waiter, req in wait.waiters]
                out += self.restart_started(k, wait, current)
            elif wait.spawn is None and k not in listed:
                self.starts.answered(node, wait.spawn_id, k)
                error = f"cannot start {k[0]}/{k[1]}: the start on {node} ended without an answer"
                out += [Reply(w, p.Error(id=req, kind=p.SPAWN_FAILED, message=error)) for w, req in wait.waiters]
        return out

    def _fail_pending(self, node: str, what: str, again: bool = False) -> Out:
        """Answer the starts under way on ``node``: they will never finish. ``again``: no
        copy of them can run there (see ``Leader.node_down``), so each of their gets is
        placed again, elsewhere, as if it came now, if another worker can take it; else
        they fail."""
        out: Out = []
        for k, wait in self.starts.drop_node(node):
            stops = self.restarts.failed(k, True, f"node {node} {what}")  # a restart goes elsewhere at once
            out += [Reply(waiter, p.Stopped(id=req, found=True)) for waiter, req in stops]
            elsewhere = again and self.placement.choose(exclude=self.suspensions.nodes(k[0])) is not None
            if elsewhere and wait.spawn is not None and not stops:
                args = wait.spawn.args
                for waiter, req in wait.waiters:
                    out += self._get(waiter, p.Get(id=req, group=k[0], key=k[1], args=args))
                continue
            text = f"cannot start {k[0]}/{k[1]}: node {node} {what}"
            out += [Reply(waiter, p.Error(id=req, kind=p.SPAWN_FAILED, message=text)) for waiter, req in wait.waiters]
        return out
