"""A worker's decisions, with no sockets inside (sans-I/O).

Each ``on_*`` method takes one input (a client request, a message from the leader, an
event, a report about a process) and returns a list of effects (``effects.py``) for
``worker_io.py`` to carry out: ``Reply`` to a client of ``node.listen``, ``ToLeader``,
``Start`` a process (its argv, arguments and environment decided here), ``Signal`` a
process's group, ``Reconnect`` to a leader that fell silent, ``RefillSpare``.

Clients are answered from the cache when it can; everything else is forwarded to the
leader under a request id of the worker's own, and the reply is routed back.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import signal
import time
import uuid
from dataclasses import dataclass
from typing import Callable

import msgspec

from . import protocol as p
from .cache import LocationCache
from .const import NOT_READY, READY, READY_FD_ENV
from .effects import Reconnect, RefillSpare, Reply, Signal, Start, ToLeader

FORWARD_TTL = 60.0  # seconds a forwarded request is remembered; clients give up sooner


@dataclass
class Proc:
    token: int
    spawn_id: int  # the leader's request to answer
    group: str
    key: str
    call: p.Call
    args: list
    pid: int | None = None
    ready_line: str | None = None  # "R <endpoint>" or "E <reason>", once read
    running: bool = False  # runs its own code: a command has exec'd, or a spare had the entry resolved
    location: p.Location | None = None  # set once started
    failed: bool = False  # a start failure was reported; waiting only for its exit
    stopping: p.Reason | None = None


class Worker:
    def __init__(self, node: str, capacity: int = 0, calls: dict[str, p.Call] | None = None,
                 heartbeat: float = 1.0, liveness: int = 3, max_retries: int = 20, max_time: float = 10.0,
                 clock=time.monotonic, wall=time.time, about: p.InfoReply | None = None) -> None:  # fmt: skip
        self.node = node
        # What `info` answers (the daemon's name, role and events endpoint).
        self.about = about or p.InfoReply(node=node, role="worker", events="", silence=heartbeat * liveness)
        self.capacity = capacity
        self.calls = dict(calls or {})  # every group known: a restarted leader gets them back
        self.incarnation = uuid.uuid4().hex[:12]
        self.cache = LocationCache()
        self.clock, self.wall = clock, wall
        self.heartbeat = heartbeat
        self.silence = heartbeat * liveness  # a leader silent this long is lost
        self.patience = self.silence  # grows while the leader stays lost: fewer reconnects
        self.last_heard = self.next_ping = clock()
        self.leader_epoch: str | None = None
        self.leader_lost = False  # until a new welcome: forwards fail at once
        self.max_retries, self.max_time = max_retries, max_time
        self.crashes: dict[str, collections.deque] = {}  # group -> times of abnormal exits
        self.suspended: dict[str, float] = {}  # group -> until (clock)
        self.procs: dict[int, Proc] = {}  # token -> process
        self.by_pid: dict[int, Proc] = {}
        self.by_key: dict[tuple[str, str], Proc] = {}
        self.forwards: dict[int, tuple[bytes, int, p.Msg]] = {}
        # (when, n, what to call with ident, ident): n keeps equal times in order.
        self.timers: list[tuple[float, int, Callable[[int], list], int]] = []
        self._timer_n = itertools.count()
        self.hello_id = 0
        self.welcomed = False
        self.refused: str | None = None  # the leader's reason for refusing this node
        self.shutting_down = False
        self._ids = p.request_ids()

    # -- the leader --

    def hello(self) -> p.Hello:
        """All this worker runs and is starting (a new leader must not start those keys
        again elsewhere), the groups it knows and where its crash-loop guard stands."""
        self.hello_id = next(self._ids)
        running, starting = [], []
        for proc in self.procs.values():
            if proc.location is not None:
                running.append(proc.location)
            elif not proc.failed and proc.stopping is None:
                starting.append(p.Starting(proc.spawn_id, proc.group, proc.key))
        now = self.clock()
        suspended = {g: until - now for g, until in self.suspended.items() if until > now}
        return p.Hello(id=self.hello_id, node=self.node, incarnation=self.incarnation, capacity=self.capacity,
                       processes=running, starting=starting, calls=self.calls, suspended=suspended,
                       welcomed_by=self.leader_epoch or "")  # fmt: skip

    def on_leader(self, msg: p.Msg) -> list:
        self.last_heard = self.clock()
        if isinstance(msg, p.Spawn):
            self.calls.setdefault(msg.group, msg.call)
            return self._spawn(msg)
        if isinstance(msg, p.Kill):
            return self._kill(msg)
        if isinstance(msg, p.Pong):
            if msg.known and msg.epoch == self.leader_epoch:
                return []
            return [ToLeader(self.hello())]  # a new leader, or one that took us for dead
        if isinstance(msg, p.Welcome):
            if msg.id == self.hello_id:
                self.welcomed, self.leader_lost, self.leader_epoch = True, False, msg.epoch
                self.patience = self.silence
                self.calls.update(msg.calls)
            return []
        if isinstance(msg, p.AddCall):
            self.calls[msg.name] = msg.call
            return []
        forward = self.forwards.pop(msg.id, None)
        if forward is None:
            if isinstance(msg, p.Error) and msg.id == self.hello_id and msg.kind == p.NOT_ALLOWED:
                self.refused = msg.message  # fatal; other refusals are retried at the next pong
            return []
        client, client_id, request = forward
        if isinstance(msg, p.Found) and msg.location is not None:
            self.cache.learn(msg.location, msg.seq, msg.epoch)
        return [Reply(client, msgspec.structs.replace(msg, id=client_id))]

    def on_event(self, msg: p.Event | p.Tick) -> list:
        resets = self.cache.resets
        self.cache.apply(msg)
        if self.cache.resets != resets:  # emptied: our own processes are known anyway
            for proc in self.by_key.values():
                if proc.location is not None:
                    self.cache.learn(proc.location, self.cache.seq)
        if isinstance(msg, p.Event) and msg.kind == "started" and msg.location.node == self.node:
            # One of ours is registered (its caller has its answer): only now may the next
            # spare's fork take the CPU. The fork server replaces only a spare it handed out.
            return [RefillSpare()]
        return []

    # -- clients --

    def on_client(self, client: bytes, msg: p.Msg) -> list:
        if isinstance(msg, (p.Get, p.Find)):
            loc = self.cache.get(msg.group, msg.key)
            if loc is not None and self.cache.has_seen(msg.seq, msg.epoch):
                return [Reply(client, p.Found(id=msg.id, location=loc, seq=self.cache.seq, epoch=self.cache.epoch or ""))]
        elif isinstance(msg, p.Info):
            return [Reply(client, msgspec.structs.replace(self.about, id=msg.id))]
        elif not isinstance(msg, p.CLIENT_REQUESTS):
            error = p.Error(id=msg.id, kind=p.BAD_MESSAGE, message=f"'{p.tag(msg)}' is not a client request")
            return [Reply(client, error)]
        if self.leader_lost:
            return [Reply(client, self._no_leader(msg.id))]
        fid = next(self._ids)
        self.forwards[fid] = (client, msg.id, msg)
        self._timer(FORWARD_TTL, self._forget_forward, fid)
        return [ToLeader(msgspec.structs.replace(msg, id=fid))]

    def _forget_forward(self, fid: int) -> list:
        self.forwards.pop(fid, None)
        return []

    # -- processes --

    def _spawn(self, msg: p.Spawn) -> list:
        k = (msg.group, msg.key)
        existing = self.by_key.get(k)
        if existing is not None and not existing.stopping and not existing.failed:
            if existing.location is not None:
                return [ToLeader(p.Spawned(id=msg.id, location=existing.location))]
            existing.spawn_id = msg.id  # the leader asked again: answer this request when ready
            return []
        if self.suspended.get(msg.group, 0) > self.clock():
            why = f"group {msg.group} is suspended here after crashing in a loop"
            return [ToLeader(p.SpawnFailed(id=msg.id, group=msg.group, key=msg.key, reason=why))]
        if self.shutting_down or existing is not None:
            why = "the node is shutting down" if self.shutting_down else "it is already starting or stopping here"
            return [ToLeader(p.SpawnFailed(id=msg.id, group=msg.group, key=msg.key, reason=why))]
        proc = Proc(next(self._ids), msg.id, msg.group, msg.key, msg.call, msg.args)
        self.procs[proc.token] = proc
        self.by_key[k] = proc
        self._timer(msg.call.start_timeout, self._start_timed_out, proc.token)
        return [self._start(proc)]

    def _start(self, proc: Proc) -> Start:
        call = proc.call
        command = None if call.command is None else [self._fill(a, proc) for a in call.command]
        return Start(proc.token, call.entry, command, [*call.args, *proc.args], self.env(proc), proc.key)

    def env(self, proc: Proc) -> dict[str, str]:
        env = {"FORSETI_GROUP": proc.group, "FORSETI_KEY": proc.key, "FORSETI_NODE": self.node}
        endpoint = self.endpoint(proc)
        if endpoint is not None:
            env["FORSETI_ENDPOINT"] = endpoint
        if proc.call.ready:
            env[READY_FD_ENV] = ""  # the fork server puts the fd's number there
        return env

    def endpoint(self, proc: Proc) -> str | None:
        return None if proc.call.endpoint is None else self._fill(proc.call.endpoint, proc)

    def _fill(self, template: str, proc: Proc) -> str:
        return substitute(template, proc.group, proc.key, self.node)

    def on_spawned(self, token: int, pid: int, running: bool = False) -> list:
        """The process exists; ``running``: an entry's function is imported already
        (a spare that had resolved it), so it has started as far as it must."""
        proc = self.procs.get(token)
        if proc is None:
            return []
        proc.pid, proc.running = pid, running or proc.call.command is not None
        self.by_pid[pid] = proc
        if proc.failed:  # it timed out before the fork server answered
            return [Signal(pid, signal.SIGKILL)]
        return self._progress(proc)

    def on_spawn_failed(self, token: int, reason: str) -> list:
        proc = self.procs.pop(token, None)
        if proc is None or proc.failed:
            return []
        self.by_key.pop((proc.group, proc.key), None)
        return [ToLeader(self._failure(proc, reason))]

    def on_ready(self, token: int, line: str) -> list:
        """The line a process wrote on its ready pipe (``const.ready_line``)."""
        proc = self.procs.get(token)
        if proc is None or proc.ready_line is not None:
            return []
        proc.ready_line = line
        return self._progress(proc)

    def _progress(self, proc: Proc) -> list:
        if proc.location is not None or proc.failed or proc.pid is None:
            return []
        line = proc.ready_line
        if line is not None and line.startswith(NOT_READY):
            return self._fail(proc, line[1:].strip() or "the process reported a start failure")
        if line is not None and line.startswith(READY):
            endpoint = line[1:].strip() or self.endpoint(proc)
        elif proc.running and not proc.call.ready:
            endpoint = self.endpoint(proc)
        else:
            return []
        proc.location = p.Location(proc.group, proc.key, self.node, proc.pid, endpoint, self.wall())
        self.cache.learn(proc.location, self.cache.seq)
        return [ToLeader(p.Spawned(id=proc.spawn_id, location=proc.location))]

    def _fail(self, proc: Proc, reason: str, crash: bool = True) -> list:
        proc.failed = True
        self.by_key.pop((proc.group, proc.key), None)
        out: list = [ToLeader(self._failure(proc, reason)), *(self._crashed(proc.group) if crash else ())]
        if proc.pid is not None:
            out.append(Signal(proc.pid, signal.SIGKILL))
        return out

    def _failure(self, proc: Proc, reason: str) -> p.SpawnFailed:
        return p.SpawnFailed(id=proc.spawn_id, group=proc.group, key=proc.key, reason=reason)

    def on_exit(self, pid: int, returncode: int) -> list:
        proc = self.by_pid.pop(pid, None)
        if proc is None:
            return []
        self.procs.pop(proc.token, None)
        if self.by_key.get((proc.group, proc.key)) is proc:  # (the key may be starting anew)
            del self.by_key[(proc.group, proc.key)]
        code, sig = (None, -returncode) if returncode < 0 else (returncode, None)
        if proc.location is None:
            if proc.failed:
                return []
            how = f"killed by signal {sig}" if sig else f"exited with code {code}"
            failure = self._failure(proc, f"the process {how} before it was ready")
            return [ToLeader(failure), *self._crashed(proc.group)]
        self.cache.forget(proc.location)
        reason = proc.stopping or "exit"
        out = [ToLeader(p.Exited(location=proc.location, exit_code=code, signal=sig, reason=reason, at=self.wall()))]
        if reason == "exit" and returncode != 0:
            out += self._crashed(proc.group)
        return out

    def _crashed(self, group: str) -> list:
        """Count an abnormal exit; too many within max_time suspend the group here."""
        now = self.clock()
        times = self.crashes.setdefault(group, collections.deque())
        times.append(now)
        while times and times[0] < now - self.max_time:
            times.popleft()
        if len(times) <= self.max_retries or self.suspended.get(group, 0) > now:
            return []
        self.suspended[group] = now + self.max_time
        times.clear()
        return [ToLeader(p.Suspend(group=group, seconds=self.max_time))]

    def _kill(self, msg: p.Kill) -> list:
        loc = msg.location
        proc = self.by_key.get((loc.group, loc.key))
        if proc is None or proc.pid != loc.pid:
            # Not here (any more): tell the leader so that it forgets it.
            return [ToLeader(p.Exited(location=loc, exit_code=None, signal=None, reason=msg.reason, at=self.wall()))]
        return self._stop(proc, msg.reason)

    def _stop(self, proc: Proc, reason: p.Reason) -> list:
        if proc.stopping is not None or proc.pid is None:
            return []
        proc.stopping = reason
        self._timer(proc.call.stop_timeout, self._stop_timed_out, proc.token)
        return [Signal(proc.pid, signal.SIGTERM)]

    def shutdown(self) -> list:
        """Stop every process (reason "shutdown"); the daemon waits for ``idle``."""
        self.shutting_down = True
        out: list = []
        for proc in list(self.procs.values()):
            if proc.location is not None:
                out += self._stop(proc, "shutdown")
            elif not proc.failed:
                out += self._fail(proc, "the node is shutting down", crash=False)
        return out

    @property
    def idle(self) -> bool:
        return not self.procs

    @property
    def stop_timeout(self) -> float:
        """The longest a process of this worker may take to stop."""
        return max((proc.call.stop_timeout for proc in self.procs.values()), default=0.0)

    # -- time --

    def next_deadline(self) -> float:
        soonest = min(self.next_ping, self.last_heard + self.patience)
        return min(soonest, self.timers[0][0]) if self.timers else soonest

    def expire(self) -> list:
        out: list = []
        now = self.clock()
        if now >= self.next_ping:
            self.next_ping = now + self.heartbeat
            out.append(ToLeader(p.Ping()))
        if now - self.last_heard > self.patience:
            out += self._lose_leader(now)
        while self.timers and self.timers[0][0] <= now:
            _, _, action, ident = heapq.heappop(self.timers)
            out += action(ident)
        return out

    def _start_timed_out(self, token: int) -> list:
        proc = self.procs.get(token)
        if proc is None or proc.location is not None or proc.failed:
            return []
        return self._fail(proc, f"not ready within start_timeout ({proc.call.start_timeout:g} s)")

    def _stop_timed_out(self, token: int) -> list:
        proc = self.procs.get(token)
        return [] if proc is None or proc.pid is None else [Signal(proc.pid, signal.SIGKILL)]

    def _lose_leader(self, now: float) -> list:
        """Start again on a new socket; until a welcome, clients hear "no leader" at once."""
        self.leader_lost, self.welcomed, self.last_heard = True, False, now
        self.patience = min(2 * self.patience, max(10.0, self.silence))
        out: list = [Reconnect(), ToLeader(self.hello())]
        for client, client_id, _ in self.forwards.values():
            out.append(Reply(client, self._no_leader(client_id)))
        self.forwards.clear()
        return out

    def _no_leader(self, req_id: int) -> p.Error:
        return p.Error(id=req_id, kind=p.NO_LEADER, message=f"node {self.node} has no leader at the moment; try again")

    def _timer(self, delay: float, action: Callable[[int], list], ident: int) -> None:
        """Call ``action(ident)`` (it returns effects) ``delay`` seconds from now."""
        heapq.heappush(self.timers, (self.clock() + delay, next(self._timer_n), action, ident))


def substitute(template: str, group: str, key: str, node: str) -> str:
    """Fill ``{key}``, ``{group}`` and ``{node}``; other braces are left as they are."""
    return template.replace("{key}", key).replace("{group}", group).replace("{node}", node)
