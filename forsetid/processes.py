"""The processes of one worker, from the leader's ``spawn`` to their exit: what a
start needs, when it counts as started, what its exit means. Decisions only: each
method returns effects (``effects.py``), as ``worker.Worker`` does, for the worker's
part to carry out; ``Worker`` hands this class what concerns processes.

A process counts as started (and is reported ``spawned``) once it exists and, if its
group has ``ready = true``, once it has said so on its ready pipe; an ``entry`` taken
by a spare that had resolved that function counts at once. A start fails when the
fork server cannot start it, when it says it cannot start (``E`` on the ready pipe),
exits before it is ready, or is not ready within ``start_timeout``.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass

from . import protocol as p
from .cache import LocationCache
from .const import MAILBOX_ENV, MAILBOX_ID_ENV, NOT_READY, READY, READY_FD_ENV
from .crashloop import CrashGuard
from .effects import Note, Signal, Start, ToLeader
from .exit_notes import ExitNotes, ended
from .mailboxes import Mailboxes
from .templates import fill
from .timers import Timers


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
    drain: bool = False  # stopped by a drain, not by a user's stop (protocol.Kill): said in its Exited


class Processes:
    def __init__(
        self,
        node: str,
        cache: LocationCache,
        guard: CrashGuard,
        timers: Timers,
        tokens,
        wall: Callable[[], float],
        mailboxes: Mailboxes | None = None,
        mailbox: str = "",
    ) -> None:
        """``mailbox``: the endpoint where processes find their mailboxes ("": none)."""
        self.node = node
        self.mailboxes = mailboxes if mailboxes is not None else Mailboxes(wall, tokens)
        self.mailbox = mailbox
        self.cache = cache  # a worker knows its own processes first hand
        self.guard = guard
        self.timers = timers
        self.tokens = tokens  # an iterator of ids, shared with the worker's requests
        self.wall = wall
        self.notes = ExitNotes(timers)  # the exits nobody asked for, said (not too often)
        self.procs: dict[int, Proc] = {}  # token -> process
        self.by_pid: dict[int, Proc] = {}
        self.by_key: dict[tuple[str, str], Proc] = {}
        self.shutting_down = False
        # The exits of processes killed when the lease lapsed (cluster.partition = "stop"),
        # told again in the next hello: the leader may not have heard them.
        self.unreported: list[p.Exited] = []

    def running(self) -> list[p.Location]:
        return [proc.location for proc in self.procs.values() if proc.location is not None]

    def starting(self) -> list[p.Starting]:
        """Starts under way, with the id of the spawn each will answer."""
        return [
            p.Starting(proc.spawn_id, proc.group, proc.key)
            for proc in self.procs.values()
            if proc.location is None and not proc.failed
        ]

    @property
    def idle(self) -> bool:
        return not self.procs

    @property
    def stop_timeout(self) -> float:
        """The longest a process of this worker may take to stop."""
        return max((proc.call.stop_timeout for proc in self.procs.values()), default=0.0)

    # -- orders from the leader --

    def spawn(self, msg: p.Spawn) -> list:
        k = (msg.group, msg.key)
        existing = self.by_key.get(k)
        if existing is not None and not existing.stopping and not existing.failed:
            if existing.location is not None:
                return [ToLeader(p.Spawned(id=msg.id, location=existing.location))]
            existing.spawn_id = msg.id  # the leader asked again: answer this request when ready
            return []
        if self.guard.suspended(msg.group):
            why = f"group {msg.group} is suspended here after crashing in a loop"
            return [ToLeader(p.SpawnFailed(id=msg.id, group=msg.group, key=msg.key, reason=why))]
        if self.shutting_down or existing is not None:
            why = "the node is shutting down" if self.shutting_down else "it is already starting or stopping here"
            return [ToLeader(p.SpawnFailed(id=msg.id, group=msg.group, key=msg.key, reason=why))]
        proc = Proc(next(self.tokens), msg.id, msg.group, msg.key, msg.call, msg.args)
        if self.mailbox and msg.call.mailbox:
            self.mailboxes.open_box(proc.token, f"{msg.group}/{msg.key}", msg.call.mailbox)
        self.procs[proc.token] = proc
        self.by_key[k] = proc
        self.timers.after(msg.call.start_timeout, self._start_timed_out, proc.token)
        return [self._start(proc)]

    def kill(self, msg: p.Kill) -> list:
        loc = msg.location
        proc = self.by_key.get((loc.group, loc.key))
        if proc is None or proc.pid != loc.pid:
            # Not here (any more): tell the leader so that it forgets it.
            gone = p.Exited(
                location=loc, exit_code=None, signal=None, reason=msg.reason, at=self.wall(), drain=msg.drain
            )
            return [ToLeader(gone)]
        return self._stop(proc, msg.reason, msg.drain)

    def lapsed(self, pids: list[int]) -> list:
        """The fork server killed these when the lease lapsed (``cluster.partition =
        "stop"``): their exits, which follow, are told with reason "partition"."""
        killed = 0
        for pid in pids:
            proc = self.by_pid.get(pid)
            if proc is not None and proc.location is not None and proc.stopping is None:
                proc.stopping = "partition"
                killed += 1
        text = f"{self.node}: no answer from the leader in time, the lease lapsed: {killed} processes killed"
        return [Note(logging.WARNING, text + ' (partition = "stop")')]

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

    # -- what a start needs --

    def _start(self, proc: Proc) -> Start:
        call = proc.call
        command = None if call.command is None else [fill(a, proc.group, proc.key, self.node) for a in call.command]
        log = None if call.log is None else fill(call.log, proc.group, proc.key, self.node, escape=True)
        return Start(proc.token, call.entry, command, [*call.args, *proc.args], self.env(proc), proc.key, log)

    def env(self, proc: Proc) -> dict[str, str]:
        env = {"FORSETI_GROUP": proc.group, "FORSETI_KEY": proc.key, "FORSETI_NODE": self.node}
        endpoint = self.endpoint(proc)
        if endpoint is not None:
            env["FORSETI_ENDPOINT"] = endpoint
        if proc.token in self.mailboxes.boxes:
            env[MAILBOX_ENV], env[MAILBOX_ID_ENV] = self.mailbox, str(proc.token)
        if proc.call.ready:
            env[READY_FD_ENV] = ""  # the fork server puts the fd's number there
        return env

    def endpoint(self, proc: Proc) -> str | None:
        """The group's endpoint template, filled: escaped, as a log file's name is."""
        return None if proc.call.endpoint is None else fill(proc.call.endpoint, proc.group, proc.key, self.node, True)

    # -- reports from the fork server and the ready pipes --

    def on_spawned(self, token: int, pid: int, running: bool = False) -> list:
        """The process exists; ``running``: an entry's function is imported already
        (a spare that had resolved it), so it has started as far as it must."""
        proc = self.procs.get(token)
        if proc is None:
            return []
        proc.pid, proc.running = pid, running or proc.call.command is not None
        self.by_pid[pid] = proc
        self.mailboxes.rename(token, f"{proc.group}/{proc.key} (pid {pid})")
        if proc.failed:  # it timed out before the fork server answered
            return [Signal(pid, signal.SIGKILL)]
        return self._progress(proc)

    def on_spawn_failed(self, token: int, reason: str) -> list:
        proc = self.procs.pop(token, None)
        if proc is None or proc.failed:
            return []
        self.by_key.pop((proc.group, proc.key), None)
        return self._failure(proc, reason) + self.mailboxes.close_box(token, "could not start")

    def on_ready(self, token: int, line: str) -> list:
        """The line a process wrote on its ready pipe (``const.ready_line``)."""
        proc = self.procs.get(token)
        if proc is None or proc.ready_line is not None:
            return []
        proc.ready_line = line
        return self._progress(proc)

    def on_exit(self, pid: int, returncode: int) -> list:
        proc = self.by_pid.pop(pid, None)
        if proc is None:
            return []
        self.procs.pop(proc.token, None)
        if self.by_key.get((proc.group, proc.key)) is proc:  # (the key may be starting anew)
            del self.by_key[(proc.group, proc.key)]
        code, sig = (None, -returncode) if returncode < 0 else (returncode, None)
        gone = self.mailboxes.close_box(proc.token, ended(code, sig))
        if proc.location is None:
            if proc.failed:
                return gone
            how = f"the process {ended(code, sig)} before it was ready"
            return [*self._failure(proc, how), *self._crashed(proc.group), *gone]
        self.cache.forget(proc.location)
        reason = proc.stopping or "exit"
        at, drain = self.wall(), proc.drain
        exited = p.Exited(location=proc.location, exit_code=code, signal=sig, reason=reason, at=at, drain=drain)
        if reason == "partition":
            self.unreported.append(exited)
        out = [*gone, ToLeader(exited)]
        if reason == "exit":  # nobody asked for it: said, and a crash counted
            out += self.notes.exited(proc.group, proc.key, self.node, pid, code, sig)
            if returncode != 0:
                out += self._crashed(proc.group)
        return out

    # -- the life cycle --

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
        out: list = [*self._failure(proc, reason), *(self._crashed(proc.group) if crash else ())]
        if proc.pid is not None:
            out.append(Signal(proc.pid, signal.SIGKILL))
        return out

    def _failure(self, proc: Proc, reason: str) -> list:
        failed = p.SpawnFailed(id=proc.spawn_id, group=proc.group, key=proc.key, reason=reason)
        return [ToLeader(failed), Note(logging.WARNING, f"start of {proc.group}/{proc.key} failed: {reason}")]

    def _crashed(self, group: str) -> list:
        if not self.guard.crashed(group):
            return []
        g = self.guard
        text = f"group {group} crashed more than {g.max_retries} times in {g.max_time:g} s: suspended here"
        return [ToLeader(p.Suspend(group=group, seconds=g.max_time)), Note(logging.WARNING, text)]

    def _stop(self, proc: Proc, reason: p.Reason, drain: bool = False) -> list:
        if proc.stopping is not None or proc.pid is None:
            return []
        proc.stopping, proc.drain = reason, drain
        self.timers.after(proc.call.stop_timeout, self._stop_timed_out, proc.token)
        return [Signal(proc.pid, signal.SIGTERM)]

    def _start_timed_out(self, token: int) -> list:
        proc = self.procs.get(token)
        if proc is None or proc.location is not None or proc.failed:
            return []
        return self._fail(proc, f"not ready within start_timeout ({proc.call.start_timeout:g} s)")

    def _stop_timed_out(self, token: int) -> list:
        proc = self.procs.get(token)
        return [] if proc is None or proc.pid is None else [Signal(proc.pid, signal.SIGKILL)]
