"""The leader's decisions, with no sockets inside (sans-I/O).

``Leader.handle(peer, msg)`` takes one decoded message from a ROUTER peer (a client or
a worker) and returns what to do: a list of effects (``effects.py``), ``Reply`` to a
peer or ``Publish`` an event, for ``leader_io.py`` to carry out. Creation is
serialised per key: the first ``get`` of a new key sends one ``spawn`` to the chosen
worker and every later ``get`` of that key waits for its answer; different keys start
in parallel.

A leader that learns it has a predecessor (a worker's hello says another leader
welcomed it) places no new key for ``heartbeat`` x ``liveness`` seconds: every live
worker says hello within that time, with what it runs and what it is starting, and a
key whose start is under way on a worker that has not spoken yet must not be started
again elsewhere. ``get``s of new keys wait meanwhile.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import msgspec

from . import protocol as p
from .effects import Publish, Reply
from .placement import Placement
from .store import MemoryStore, Store

Out = list[Reply | Publish]


@dataclass
class Pending:
    """A start under way: who waits for it."""

    node: str
    spawn_id: int  # the id its worker will answer with
    spawn: p.Spawn | None  # kept to send again if the worker reconnects (None: a start it told us of)
    waiters: list[tuple[bytes, int]] = field(default_factory=list)


class Leader:
    def __init__(
        self,
        calls: dict[str, p.Call],
        allowed_nodes: list[str] | None = None,
        store: Store | None = None,
        heartbeat: float = 1.0,
        liveness: int = 3,
        clock=time.time,
        monotonic=time.monotonic,
        about: p.InfoReply | None = None,
    ) -> None:
        self.calls = dict(calls)
        # What `info` answers (the daemon's name, role and events endpoint).
        self.about = about or p.InfoReply(node="", role="leader", events="", silence=heartbeat * liveness)
        self.store = store if store is not None else MemoryStore()
        self.placement = Placement(allowed_nodes)
        self.epoch = uuid.uuid4().hex[:12]
        self.seq = 0
        self.gseq: dict[str, int] = {}  # per-group event counts
        self.clock, self.monotonic = clock, monotonic
        self.silence = heartbeat * liveness  # a worker silent this long is down
        self.last_seen: dict[str, float] = {}
        self.suspended: dict[tuple[str, str], float] = {}  # (node, group) -> until (monotonic)
        self.peer_of: dict[str, bytes] = {}  # worker name -> ROUTER identity
        self.node_of: dict[bytes, str] = {}  # ROUTER identity -> worker name
        self.incarnation: dict[str, str] = {}
        self.pending: dict[tuple[str, str], Pending] = {}
        self.spawns: dict[int, tuple[str, str]] = {}  # spawn id -> key
        self.stopping: dict[tuple[str, str], list[tuple[bytes, int]]] = {}
        self.had_predecessor = False
        self.recovering_until: float | None = None  # (monotonic) while set, no new key is placed
        self.held: list[tuple[bytes, p.Get]] = []  # gets of new keys waiting for that
        self._ids = p.request_ids()

    # -- entry point --

    def handle(self, peer: bytes, msg: p.Msg) -> Out:
        handler = self._handlers.get(type(msg))
        if handler is None:
            return [Reply(peer, _error(msg, p.BAD_MESSAGE, f"the leader does not accept '{p.tag(msg)}' messages"))]
        node = self.node_of.get(peer)
        if node is not None:
            self.last_seen[node] = self.monotonic()  # any message is a heartbeat
        elif isinstance(msg, _FROM_WORKERS):
            return [Reply(peer, _error(msg, p.BAD_MESSAGE, f"'{p.tag(msg)}' is accepted only from a registered worker"))]
        return handler(self, peer, msg)

    def next_deadline(self) -> float | None:
        """When ``expire`` has work besides the heartbeat's: the end of a recovery."""
        return self.recovering_until

    def expire(self) -> Out:
        """Take every worker that has been silent too long for dead; end a recovery
        that has lasted long enough and place the keys it held."""
        out: Out = []
        now = self.monotonic()
        limit = now - self.silence
        for node, seen in list(self.last_seen.items()):
            if seen < limit:
                out += self.node_down(node)
        if self.recovering_until is not None and now >= self.recovering_until:
            self.recovering_until = None
            held, self.held = self.held, []
            for peer, msg in held:
                out += self._get(peer, msg)
        return out

    def node_down(self, node: str) -> Out:
        """Its processes are reported exited ("node-down") and its starts fail; if it
        comes back, it is told to say hello again."""
        self.last_seen.pop(node, None)
        self.node_of.pop(self.peer_of.pop(node, b""), None)
        self.placement.down(node)
        out: Out = []
        for loc in self.store.on_node(node):
            out += self._drop(loc, None, None, "node-down")
        return out + self._fail_pending(node, "went down")

    def _fail_pending(self, node: str, what: str) -> Out:
        """Answer the starts under way on ``node``: they will never finish."""
        out: Out = []
        for k, wait in list(self.pending.items()):
            if wait.node == node:
                del self.pending[k], self.spawns[wait.spawn_id]
                self.placement.add(node, -1)
                text = f"cannot start {k[0]}/{k[1]}: node {node} {what}"
                out += [Reply(waiter, p.Error(id=req, kind=p.SPAWN_FAILED, message=text)) for waiter, req in wait.waiters]
        return out

    def tick(self, group: str | None = None) -> p.Tick:
        gseq = self.gseq.get(group, 0) if group else 0
        return p.Tick(seq=self.seq, epoch=self.epoch, gseq=gseq)

    # -- client requests --

    def _get(self, peer: bytes, msg: p.Get) -> Out:
        call = self.calls.get(msg.group)
        if call is None:
            return [Reply(peer, self._unknown_group(msg, msg.group))]
        k = (msg.group, msg.key)
        loc = self.store.get(*k)
        if loc is not None:
            return [Reply(peer, p.Found(id=msg.id, location=loc, seq=self.seq, epoch=self.epoch))]
        pending = self.pending.get(k)
        if pending is not None:
            pending.waiters.append((peer, msg.id))
            return []
        if self.recovering_until is not None:
            self.held.append((peer, msg))  # its start may be under way on a worker yet to say hello
            return []
        suspended = self._suspended_nodes(msg.group)
        node = self.placement.choose(exclude=suspended)
        if node is None and suspended:
            text = (f"group '{msg.group}' is suspended on {', '.join(sorted(suspended))} after crashing in a loop, "
                    f"and no other worker can take it; try again in {self._suspension_left(msg.group):.0f} s")  # fmt: skip
            return [Reply(peer, _error(msg, p.SUSPENDED, text))]
        if node is None:
            text = "no worker can take a new process: none is up, or all are at capacity"
            return [Reply(peer, _error(msg, p.NO_WORKER, text))]
        spawn = p.Spawn(id=next(self._ids), group=msg.group, key=msg.key, args=msg.args, call=call)
        self._expect(k, node, spawn.id, spawn).waiters.append((peer, msg.id))
        return [Reply(self.peer_of[node], spawn)]

    def _expect(self, k: tuple[str, str], node: str, spawn_id: int, spawn: p.Spawn | None) -> Pending:
        """A start under way on ``node``: its load counts, and every get of ``k`` waits for it."""
        wait = self.pending[k] = Pending(node, spawn_id, spawn)
        self.spawns[spawn_id] = k
        self.placement.add(node, +1)
        return wait

    def _find(self, peer: bytes, msg: p.Find) -> Out:
        if msg.group not in self.calls:
            return [Reply(peer, self._unknown_group(msg, msg.group))]
        found = p.Found(id=msg.id, location=self.store.get(msg.group, msg.key), seq=self.seq, epoch=self.epoch)
        return [Reply(peer, found)]

    def _stop(self, peer: bytes, msg: p.Stop) -> Out:
        if msg.group not in self.calls:
            return [Reply(peer, self._unknown_group(msg, msg.group))]
        k = (msg.group, msg.key)
        loc = self.store.get(*k)
        if loc is None:
            return [Reply(peer, p.Stopped(id=msg.id, found=False))]
        self.stopping.setdefault(k, []).append((peer, msg.id))
        host = self.peer_of.get(loc.node)
        if host is None:  # its node is gone: so is the process
            return self._drop(loc, None, None, "node-down")
        # Sent again on every stop: a repeat is harmless, and a lost one is made good.
        return [Reply(host, p.Kill(location=loc, reason="stopped"))]

    def _list(self, peer: bytes, msg: p.List) -> Out:
        items = sorted(self.store.items(msg.group), key=lambda l: (l.group, l.key))
        return [Reply(peer, p.Locations(id=msg.id, items=items))]

    def _nodes(self, peer: bytes, msg: p.Nodes) -> Out:
        now = self.monotonic()
        items = [
            p.NodeInfo(name=w.name, state="up" if w.up else "down", processes=self.store.count(w.name),
                       capacity=w.capacity, suspended=sorted(g for (n, g), t in self.suspended.items() if n == w.name and t > now))
            for w in sorted(self.placement.workers.values(), key=lambda w: w.name)
        ]  # fmt: skip
        return [Reply(peer, p.NodeList(id=msg.id, items=items))]

    def _calls(self, peer: bytes, msg: p.Calls) -> Out:
        return [Reply(peer, p.CallList(id=msg.id, items=dict(sorted(self.calls.items()))))]

    def _info(self, peer: bytes, msg: p.Info) -> Out:
        return [Reply(peer, msgspec.structs.replace(self.about, id=msg.id))]

    def _suspend(self, peer: bytes, msg: p.Suspend) -> Out:
        self.suspended[(self.node_of[peer], msg.group)] = self.monotonic() + msg.seconds
        return []

    def _suspended_nodes(self, group: str) -> set[str]:
        if not self.suspended:
            return set()
        now = self.monotonic()
        for k in [k for k, until in self.suspended.items() if until <= now]:
            del self.suspended[k]
        return {n for (n, g) in self.suspended if g == group}

    def _suspension_left(self, group: str) -> float:
        now = self.monotonic()
        return min(until - now for (n, g), until in self.suspended.items() if g == group)

    def _add_call(self, peer: bytes, msg: p.AddCall) -> Out:
        self.calls[msg.name] = msg.call
        # Workers keep it too: after a leader restart, their hellos bring it back.
        news = [Reply(w, p.AddCall(name=msg.name, call=msg.call)) for w in self.peer_of.values()]
        return [Reply(peer, p.Ok(id=msg.id)), *news]

    def _ping(self, peer: bytes, msg: p.Ping) -> Out:
        return [Reply(peer, p.Pong(id=msg.id, epoch=self.epoch, known=peer in self.node_of))]

    # -- workers --

    def _hello(self, peer: bytes, msg: p.Hello) -> Out:
        if not self.placement.admits(msg.node):
            return [Reply(peer, _error(msg, p.NOT_ALLOWED, f"node '{msg.node}' is not in cluster.nodes"))]
        old_peer = self.peer_of.get(msg.node)
        restarted = self.incarnation.get(msg.node) not in (None, msg.incarnation)
        if restarted and old_peer != peer and self.last_seen.get(msg.node, -1e18) > self.monotonic() - self.silence:
            text = f"another daemon named '{msg.node}' is up; this one is refused until that one falls silent"
            return [Reply(peer, _error(msg, p.NAME_TAKEN, text))]
        if msg.welcomed_by not in ("", self.epoch) and not self.had_predecessor:
            # A worker that another leader welcomed: we have a predecessor, whose other
            # workers may be starting keys that nobody here knows of yet.
            self.had_predecessor = True
            self.recovering_until = self.monotonic() + self.silence
        out: Out = []
        if old_peer is not None and old_peer != peer:
            self.node_of.pop(old_peer, None)
        processes = [loc for loc in msg.processes if loc.node == msg.node]  # a worker speaks for itself
        live = {(l.group, l.key, l.pid) for l in processes}
        for loc in self.store.on_node(msg.node):
            # What it no longer runs died with the old daemon, or exited while its report was lost.
            if (loc.group, loc.key, loc.pid) not in live:
                out += self._drop(loc, None, None, "node-down" if restarted else "exit")
        if restarted:
            out += self._fail_pending(msg.node, "restarted")
        self.peer_of[msg.node] = peer
        self.node_of[peer] = msg.node
        self.incarnation[msg.node] = msg.incarnation
        self.last_seen[msg.node] = self.monotonic()
        self.placement.join(msg.node, msg.capacity)
        for name, call in msg.calls.items():
            self.calls.setdefault(name, call)  # groups added at run time outlive a leader
        for group, seconds in msg.suspended.items():
            self.suspended[(msg.node, group)] = self.monotonic() + seconds
        out.append(Reply(peer, p.Welcome(id=msg.id, epoch=self.epoch, calls=self.calls)))
        for loc in processes:
            out += self._adopt(peer, loc)
        for start in msg.starting:
            # A start under way there (ordered by another leader, or by us before a lost
            # answer): every get of its key waits for it, as for one of our own.
            k = (start.group, start.key)
            if k not in self.pending and self.store.get(*k) is None and start.id not in self.spawns:
                self._expect(k, msg.node, start.id, None)
        # Starts it may never have received (or whose answer was lost): the worker
        # answers a repeat of one it runs or is starting, so sending again is safe.
        out += [Reply(peer, wait.spawn) for wait in self.pending.values() if wait.node == msg.node and wait.spawn]
        return out

    def _spawned(self, peer: bytes, msg: p.Spawned) -> Out:
        loc = msg.location
        if loc.node != self.node_of[peer]:
            return []  # a worker speaks only for itself
        wait = self._take_pending(peer, msg.id, (loc.group, loc.key))
        if wait is not None:
            self.placement.add(wait.node, -1)  # registered (or killed) below instead
        adopted = self._adopt(peer, loc)  # the started event (or the kill of a duplicate)
        if wait is None:
            return adopted
        current = self.store.get(loc.group, loc.key)
        # The waiting callers first: they wait for this answer, the subscribers do not.
        found = [Reply(waiter, p.Found(id=req, location=current, seq=self.seq, epoch=self.epoch))
                 for waiter, req in wait.waiters]  # fmt: skip
        return found + adopted

    def _adopt(self, peer: bytes, loc: p.Location) -> Out:
        """A live process a worker reports: registered if its key is free; if another
        process is registered for the key, this one is the duplicate and is stopped."""
        current = self.store.get(loc.group, loc.key)
        if current is None:
            return self._register(loc)
        if current != loc:
            return [Reply(peer, p.Kill(location=loc, reason="conflict"))]
        return []

    def _spawn_failed(self, peer: bytes, msg: p.SpawnFailed) -> Out:
        wait = self._take_pending(peer, msg.id, (msg.group, msg.key))
        if wait is None:
            return []
        group, key = msg.group, msg.key
        self.placement.add(wait.node, -1)
        text = f"cannot start {group}/{key} on {wait.node}: {msg.reason}"
        return [Reply(waiter, p.Error(id=req, kind=p.SPAWN_FAILED, message=text)) for waiter, req in wait.waiters]

    def _exited(self, peer: bytes, msg: p.Exited) -> Out:
        loc = msg.location
        if loc.node != self.node_of[peer]:
            return []  # a worker speaks only for itself
        current = self.store.get(loc.group, loc.key)
        if current is not None and current.pid == loc.pid and current.node == loc.node:
            return self._drop(current, msg.exit_code, msg.signal, msg.reason, msg.at)
        if msg.reason == "conflict":  # a duplicate we had stopped: say so, change nothing
            return [Publish(self._event("exited", loc, msg.exit_code, msg.signal, msg.reason, msg.at))]
        return []  # a stale report: that process is not the registered one

    # -- helpers --

    def _register(self, loc: p.Location) -> Out:
        self.store.put(loc)
        self.placement.add(loc.node, +1)
        return [Publish(self._event("started", loc, at=loc.started_at))]

    def _drop(self, loc: p.Location, exit_code, signal, reason, at: float | None = None) -> Out:
        self.store.delete(loc.group, loc.key)
        self.placement.add(loc.node, -1)
        out: Out = [Publish(self._event("exited", loc, exit_code, signal, reason, at))]
        for waiter, req in self.stopping.pop((loc.group, loc.key), ()):
            out.append(Reply(waiter, p.Stopped(id=req, found=True)))
        return out

    def _event(self, kind, loc, exit_code=None, signal=None, reason=None, at=None) -> p.Event:
        self.seq += 1
        gseq = self.gseq[loc.group] = self.gseq.get(loc.group, 0) + 1
        return p.Event(
            seq=self.seq, epoch=self.epoch, kind=kind, location=loc, exit_code=exit_code,
            signal=signal, reason=reason, at=at or self.clock(), gseq=gseq,
        )  # fmt: skip

    def _take_pending(self, peer: bytes, spawn_id: int, k: tuple[str, str]) -> Pending | None:
        """The start this answers, if it is the one under way for ``k`` on that worker."""
        if self.spawns.get(spawn_id) != k or self.node_of.get(peer) != self.pending[k].node:
            return None
        del self.spawns[spawn_id]
        return self.pending.pop(k)

    def _unknown_group(self, msg: p.Msg, group: str) -> p.Error:
        known = ", ".join(sorted(self.calls)) or "none"
        return _error(msg, p.UNKNOWN_GROUP, f"unknown group '{group}' (known: {known})")

    _handlers: dict[type, Callable[[Leader, bytes, Any], Out]] = {
        p.Get: _get, p.Find: _find, p.Stop: _stop, p.List: _list, p.Nodes: _nodes,
        p.Calls: _calls, p.AddCall: _add_call, p.Info: _info, p.Hello: _hello, p.Spawned: _spawned,
        p.SpawnFailed: _spawn_failed, p.Exited: _exited, p.Ping: _ping,
        p.Suspend: _suspend,
    }  # fmt: skip


_FROM_WORKERS = (p.Spawned, p.SpawnFailed, p.Exited, p.Suspend)


def _error(msg: p.Msg, kind: str, message: str) -> p.Error:
    return p.Error(id=msg.id, kind=kind, message=message)
