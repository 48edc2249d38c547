"""The leader's decisions, with no sockets inside (sans-I/O).

``Leader.handle(peer, msg)`` takes one decoded message from a ROUTER peer (a client or
a worker) and returns what to do: a list of effects (``effects.py``), ``Reply`` to a
peer or ``Publish`` an event, for ``leader_io.py`` to carry out. Creation is
serialised per key: the first ``get`` of a new key sends one ``spawn`` to the chosen
worker and every later ``get`` of that key waits for its answer; different keys start
in parallel.

A leader that starts (``recovering``) places no new key until the workers of a
predecessor it may have had have said hello, with what they run and what they are
starting: a key whose start is under way on a worker that has not spoken yet must not
be started again elsewhere. ``get``s of new keys wait meanwhile (``starts.py`` says
how long).

A group with a restart policy (``restarts.py``) has its keys started again when their
process exits: the registry tells ``Restarts`` of every exit, and the restarts that are
due are placed at the end of every input and every ``expire``, like new keys.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from . import protocol as p
from .admin import Admin
from .client_requests import ClientRequests
from .crashloop import Suspensions
from .effects import LeaderOut, Note, Reply
from .event_log import EventLog
from .fences import Fences
from .groups import Groups
from .hello import Hellos
from .lease import lease_seconds
from .members import Members
from .placement import Placement
from .registry import Registry
from .restarts import Restarting, Restarts
from .starts import Starts
from .store import MemoryStore, Store
from .worker_reports import WorkerReports

Out = LeaderOut
FRESH_HEARTBEATS = 1.5  # with no sign of a predecessor by then, a starting leader has none


class Leader(Hellos, Restarting, Admin, ClientRequests, WorkerReports):
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
        recovering: bool = False,
        epoch: str | None = None,
        term: int = 0,
        expected: Iterable[str] = (),
        durable: bool = False,
        partition: str = "keep",
    ) -> None:
        self.wall = clock
        self.groups = Groups(calls)
        self.calls = self.groups.calls
        # What `info` answers (the daemon's name, role and events endpoint).
        self.about = about or p.InfoReply(node="", role="leader", events="", silence=heartbeat * liveness)
        self.store = store if store is not None else MemoryStore()
        self.placement = Placement(allowed_nodes)
        self.events = EventLog(clock, epoch)
        self.epoch = self.events.epoch
        self.about = msgspec.structs.replace(self.about, epoch=self.epoch)
        self.term = term  # of its election (backend "etcd"), told in every welcome
        self.durable = durable  # a successor reads its Records (backend "etcd")
        self.acks: dict[str, list[Reply]] = {}  # (admin.py)
        self.partition_stop = partition == "stop"  # a worker silent this long has killed all it ran
        self.expected = set(expected)  # the workers its predecessors knew (from etcd)
        self.unplaced: list[tuple[bytes, p.Get]] = []  # gets waiting for a joined worker's record
        self.monotonic = monotonic
        self.silence = heartbeat * liveness  # a worker silent this long may have its keys placed elsewhere
        # With "stop" a worker is down sooner, once silent longer than its lease can hold:
        # its processes are dead, and no answer names them; their keys stay fenced until
        # the silence has lasted self.silence (fences.py).
        self.down_after = lease_seconds(heartbeat, liveness) if self.partition_stop else self.silence
        self.fences = Fences(monotonic)
        self.suspensions = Suspensions(monotonic)
        self.members = Members(self.down_after, monotonic)
        self.node_of, self.peer_of = self.members.node_of, self.members.peer_of
        self.restarts = Restarts(monotonic)
        self.registry = Registry(self.store, self.placement, self.events, self.dropped)
        self.starts = Starts(self.placement)
        if recovering:
            now = monotonic()
            self.starts.recover(now + self.silence, fresh_by=now + FRESH_HEARTBEATS * heartbeat)
            if self.expected:
                self.starts.predecessor()
        self._ids = p.request_ids()

    # -- entry point --

    def handle(self, peer: bytes, msg: p.Msg) -> Out:
        if isinstance(msg, p.Request) and p.expired(msg.deadline, self.wall()):
            return []  # its caller gave up: it costs nothing more
        handler = self._handlers.get(type(msg))
        if handler is None:
            text = f"the leader does not accept '{p.tag(msg)}' messages"
            if isinstance(msg, p.Talk):
                text += ": calls and sends go to a worker's client endpoint (node.listen)"
            return [Reply(peer, _error(msg, p.BAD_MESSAGE, text))]
        if self.members.heard(peer) is None and isinstance(msg, _WORKERS_ONLY):
            self.starts.predecessor()  # a worker that some leader knew, and we do not
            if not isinstance(msg, p.Ping):
                text = f"'{p.tag(msg)}' is accepted only from a registered worker"
                return [Reply(peer, _error(msg, p.BAD_MESSAGE, text))]
        out = handler(self, peer, msg)
        return out + self.restart_due() if self.restarts.pending else out

    def next_deadline(self) -> float | None:
        """When ``expire`` has work besides the heartbeat's: the end of a recovery (the
        restarts wait for it), or the next restart; and the moment a worker may fall
        silent too long, so that it is down then, not up to a heartbeat later (with
        partition "stop" its processes are dead since its lease lapsed: answers that
        name them are wrong from then); and the end of a fence, whose gets wait."""
        end = self.starts.deadline()
        end = end if end is not None else self.restarts.next_due()
        times = [t for t in (end, self.members.next_silent, self.fences.deadline()) if t is not None]
        return min(times) if times else None

    def expire(self, caught_up: bool = True) -> Out:
        """Take every worker that has been silent too long for dead; end a recovery
        that has lasted long enough and place the keys it held; place the restarts due.
        Not ``caught_up`` (messages wait unread: a storm of hellos from a large cluster
        takes seconds to read), no worker is taken for dead: its word may be among them.
        Later is always safe; a live worker taken for dead is not (with "keep" its keys
        would start twice)."""
        out: Out = []
        for node in self.members.silent() if caught_up else ():
            # (with "stop": fenced until its silence has lasted self.silence)
            out += self.node_down(node, fence=self.members.last_seen[node] + self.silence)
        for peer, msg in self.fences.released():
            out += self._get(peer, msg)
        return out + self._place_held() + self.restart_due()

    def _place_held(self) -> Out:
        # Everyone who may be starting a key has spoken: the workers its predecessors
        # knew, or else every node of cluster.nodes.
        everyone_of = self.expected or set(self.placement.allowed or ())
        everyone = bool(everyone_of) and all(node in self.members.peer_of for node in everyone_of)
        recovering = self.starts.recovering_until is not None
        held = self.starts.recovered(self.monotonic(), everyone)
        out: Out = [Note(logging.INFO, f"placing new keys again ({len(held)} gets waited)")] if held else []
        if recovering and self.starts.recovering_until is None:
            out += self._missing()
        for peer, msg in held:
            out += self._get(peer, msg)
        return out

    def _missing(self) -> Out:
        """At the end of a recovery, the workers a predecessor knew that never said
        hello: shown down, and no longer waited for by a successor."""
        out: Out = []
        for node in sorted(self.expected - set(self.members.peer_of)):
            self.placement.join(node, 0)
            self.placement.down(node)
            out += [Note(logging.WARNING, f"worker {node} is down: it did not say hello to this leader")]
            out += self.record(f"members/{node}", None)
        return out

    def node_down(self, node: str, why: str | None = None, dead: bool = False, fence: float = 0.0) -> Out:
        """Its processes are reported exited ("node-down"); if it comes back, it is told
        to say hello again. ``why``: for the log (default: its silence). Its starts under
        way are placed again elsewhere when no copy of them can run there: the daemon is
        ``dead`` (its connection closed: its fork server killed all it started), or,
        with partition "stop", its silence outlasted its lease (its fork server killed
        all and starts nothing until a leader answers it); otherwise they fail. With
        "stop", the keys of its processes and starts are placed no sooner than ``fence``
        (monotonic)."""
        self.members.forget(node)
        self.placement.down(node)
        keys = [(loc.group, loc.key) for loc in self.store.on_node(node)] + [k for k, _ in self.starts.of_node(node)]
        fenced = self.partition_stop and not dead and fence > self.monotonic()
        if fenced:
            self.fences.fence(keys, fence)
        out = self.registry.keep_only(node, [], "node-down")
        worker = self.placement.workers.get(node)
        if worker is not None and worker.left:
            note = Note(logging.INFO, f"worker {node} has left")
        else:
            text = f"{why or f'no word for {self.down_after:g} s'}; {len(out)} of its processes reported exited"
            note = Note(logging.WARNING, f"worker {node} is down: {text}")
        out = [note, *out, *self._fail_pending(node, "went down", dead or self.partition_stop)]
        for k in keys if fenced else ():
            self.restarts.not_before(k, fence)  # (a restart their exits or failed starts scheduled)
        return out + self.record(f"members/{node}", None)

    def recorded(self, key: str) -> Out:
        """A record a successor reads is written (backend "etcd"): a worker so recorded
        may take processes now, and the gets that waited for it are placed; a group
        so recorded is answered ok."""
        if key.startswith("calls/"):
            return list(self.acks.pop(key, []))
        if not key.startswith("members/"):
            return []
        self.placement.hold(key.removeprefix("members/"), False)
        waiting, self.unplaced = self.unplaced, []
        out: Out = []
        for peer, msg in waiting:
            out += self._get(peer, msg)
        return out

    def abdicate(self) -> Out:
        """No longer the leader: everyone still waiting for an answer hears so, to ask
        the new one (a worker sends its requests again there)."""
        waiting = [w for _, wait in self.starts.pending.items() for w in wait.waiters]
        waiting += [(peer, msg.id) for peer, msg in self.starts.held + self.unplaced + self.fences.waiting]
        waiting += [w for waiters in self.registry.stopping.values() for w in waiters]
        waiting += [w for r in self.restarts.pending.values() for w in r.waiters]
        waiting += [(ok.peer, ok.msg.id) for oks in self.acks.values() for ok in oks]
        text = "this leader's term has ended; ask again"
        return [Reply(peer, p.Error(id=req, kind=p.NOT_LEADER, message=text)) for peer, req in waiting]

    # -- the get (the other client requests: client_requests.py; admin requests: admin.py) --

    def _get(self, peer: bytes, msg: p.Get) -> Out:
        if unknown := self.groups.unknown(msg, msg.group):
            return [Reply(peer, unknown)]
        call = self.calls[msg.group]
        k = (msg.group, msg.key)
        loc = self.store.get(*k)
        if loc is not None:
            return [Reply(peer, self.events.found(msg.id, loc))]
        pending = self.starts.get(k) or self.restarts.pending.get(k)  # a start, or a restart, on its way
        if pending is not None:
            pending.waiters.append((peer, msg.id))
            return []
        if self.starts.recovering_until is not None:
            self.starts.held.append((peer, msg))  # its start may be under way on a worker yet to say hello
            return []
        if self.fences.holds(peer, msg):
            return []  # its last process may be dying still (fences.py)
        if p.expired(msg.deadline, self.wall()):
            return []  # held, and its caller gave up meanwhile: nothing is started for it
        suspended = self.suspensions.nodes(msg.group)
        node = self.placement.choose(exclude=suspended)
        if node is None and self.placement.any_held():
            self.unplaced.append((peer, msg))  # a worker that just joined will take it once recorded
            return []
        if node is None:
            return [Reply(peer, self.no_place(msg.id, msg.group, suspended))]
        spawn = p.Spawn(id=next(self._ids), group=msg.group, key=msg.key, args=msg.args, call=call)
        self.starts.expect(k, node, spawn.id, spawn).waiters.append((peer, msg.id))
        return [Reply(self.peer_of[node], spawn)]

    # -- a worker's hello (its other reports: worker_reports.py) --

    def _hello(self, peer: bytes, msg: p.Hello) -> Out:
        out = self.welcome(peer, msg) + self._place_held()
        if self.restarts.pending:
            keys = [(x.group, x.key) for x in msg.processes] + [(x.group, x.key) for x in msg.starting]
            out += self.settle_restarts(keys)
        return out

    # -- helpers --

    _handlers: dict[type, Callable[[Leader, bytes, Any], Out]] = {
        p.Get: _get, p.Find: ClientRequests._find, p.Stop: ClientRequests._stop, p.List: ClientRequests._list,
        p.Nodes: ClientRequests._nodes, p.Calls: ClientRequests._calls, p.Info: ClientRequests._info,
        p.AddCall: Admin._add_call, p.RemoveCall: Admin._remove_call, p.Drain: Admin._drain,
        p.Undrain: Admin._undrain,
        p.Hello: _hello, p.Spawned: WorkerReports._spawned, p.SpawnFailed: WorkerReports._spawn_failed,
        p.Exited: WorkerReports._exited, p.Ping: WorkerReports._ping, p.Suspend: WorkerReports._suspend,
        p.Leaving: WorkerReports._leaving,
    }  # fmt: skip


_WORKERS_ONLY = (p.Ping, p.Spawned, p.SpawnFailed, p.Exited, p.Suspend, p.Leaving)  # a ping is answered all the same


def _error(msg: p.Msg, kind: str, message: str) -> p.Error:
    return p.Error(id=msg.id, kind=kind, message=message)
