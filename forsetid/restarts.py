"""Restart policies (``calls.NAME.restart``): which exits bring a key back, when, and the
restarts that wait for their time (:class:`Restarts`), and how the leader places them
(:class:`Restarting`, a base class of ``leader.Leader``). Decisions only: the leader sees
every exit (``registry.Registry.drop`` tells it) and places a restart that is due as it
places a new key, least loaded first, never on a node where the group is suspended (the
crash-loop guard), with the start arguments of the process it replaces.

Which exits restart (nothing restarts with ``"never"``, the default):

* a user's ``stop`` ends it for good, whatever the exit says (even one that raced it), and
  so does an exit whose kill said reason "stopped" without ``drain``; a ``conflict`` is a
  duplicate stopped while the key runs on, so nothing is missing;
* its node went away: down or restarted (reason "node-down"), shut down cleanly
  ("shutdown"), cut off from its leader (``partition = "stop"``: "partition"), or
  drained with ``--stop`` (a ``Kill`` with ``drain``, which its ``Exited`` carries back):
  both policies restart it, at once, and the run of failures is not longer for it, for
  the process did not fail;
* an exit of its own (reason "exit"): ``"always"`` restarts it; ``"on-failure"`` unless it
  was clean (code 0, no signal). An exit whose report was lost (no code, no signal: a
  hello no longer lists it) counts as a failure.

Backoff, per key: the first restart of a run at once, the next after ``first`` (1 s), then
doubling up to ``most`` (10 s). A process that ran ``reset`` seconds (60) or more before it
exited begins a new run. A restart whose start fails is one more of the run. A restart
that finds no worker for it (none up, all full, the group suspended everywhere) waits and
tries again with its own doubling up to ``most``: it is never dropped, only a stop, the
group's removal or the key's process showing up (a worker that comes back with it) ends
it. While a restart waits, the key is in no dictionary (``find`` and ``ls`` say nothing)
and every ``get`` of it waits for it (its waiters), as for a start under way.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from . import protocol as p
from .crashloop import Suspensions
from .effects import LeaderOut, Note, Reply
from .event_log import EventLog
from .exit_notes import how_it_ended as _how
from .members import Members
from .placement import Placement
from .registry import Registry
from .starts import Pending, Starts
from .store import Store

Out = LeaderOut
Key = tuple[str, str]
Waiter = tuple[bytes, int]  # (peer, request id)

FIRST = 1.0  # seconds before the second restart of a run (the first is at once)
MOST = 10.0  # the longest wait between restarts
RESET = 60.0  # seconds of running after which an exit begins a new run


@dataclass
class Restart:
    """A restart that waits for its time (``due``, on the leader's monotonic clock)."""

    group: str
    key: str
    due: float
    why: str  # for the log: what ended the last process, and the wait
    args: list = field(default_factory=list)  # the extra start arguments of the process it replaces
    waiters: list[Waiter] = field(default_factory=list)  # gets that wait for it
    tries: int = 0  # placements that found no worker
    seq: int = 0  # its entry in the heap (a cancelled or moved restart leaves a stale one)


def restarts(
    policy: p.Restart, reason: p.Reason, exit_code: int | None, signal: int | None, drain: bool, stopped: bool
) -> str | None:
    """Whether an exit brings its key back: None (no), "moved" (its node went away: at
    once) or "failed" (with backoff). ``stopped``: a user's stop waits for this exit."""
    if policy == "never" or stopped or reason == "conflict" or (reason == "stopped" and not drain):
        return None
    if drain or reason in ("node-down", "shutdown", "partition"):
        return "moved"
    if policy == "on-failure" and exit_code == 0 and signal is None:
        return None  # a clean exit
    return "failed"


class Restarts:
    def __init__(
        self, clock: Callable[[], float], first: float = FIRST, most: float = MOST, reset: float = RESET
    ) -> None:
        self.clock, self.first, self.most, self.reset = clock, first, most, reset
        self.pending: dict[Key, Restart] = {}  # waiting for their time (or for a worker)
        self.under_way: dict[Key, Restart] = {}  # ordered from a worker, not answered yet
        self.stops: dict[Key, list[Waiter]] = {}  # stops of a restart under way: killed once started
        self.runs: dict[Key, int] = {}  # restarts in the current run of failures
        self.args: dict[Key, list] = {}  # the extra start arguments of a running process with a policy
        self._heap: list[tuple[float, int, Key]] = []
        self._seq = itertools.count(1)

    def delay(self, n: int) -> float:
        """The wait before the ``n``-th restart of a run (from 0)."""
        return 0.0 if n <= 0 else min(self.most, self.first * 2 ** (n - 1))

    # -- exits --

    def exited(
        self,
        policy: p.Restart,
        loc: p.Location,
        reason: p.Reason,
        exit_code: int | None = None,
        signal: int | None = None,
        at: float | None = None,
        drain: bool = False,
        stopped: bool = False,
    ) -> Restart | None:
        """A process left the dictionary (``at``: when, on the clock of its
        ``started_at``): the restart this schedules, if its policy says so."""
        k = (loc.group, loc.key)
        args = self.args.pop(k, [])
        kind = restarts(policy, reason, exit_code, signal, drain, stopped)
        if kind is None:
            self.runs.pop(k, None)  # ended for good (or cleanly): a later start begins afresh
            return None
        if k in self.pending:
            return self.pending[k]
        if at is not None and loc.started_at and at - loc.started_at >= self.reset:
            self.runs.pop(k, None)  # it ran long enough: a new run
        how = _how(exit_code, signal, reason, drain)
        if kind == "moved":
            return self._schedule(k, 0.0, how, args)
        n = self.runs.get(k, 0)
        self.runs[k] = n + 1
        wait = self.delay(n)
        return self._schedule(
            k, wait, f"{how}; restart {n + 1} of a run" + (f", after {wait:g} s" if wait else ""), args
        )

    def _schedule(self, k: Key, wait: float, why: str, args: list, waiters: list[Waiter] | None = None) -> Restart:
        r = Restart(k[0], k[1], self.clock() + wait, why, args, waiters or [], seq=next(self._seq))
        self.pending[k] = r
        heapq.heappush(self._heap, (r.due, r.seq, k))
        return r

    # -- time --

    def next_due(self) -> float | None:
        heap = self._heap
        while heap and not self._current(*heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def due(self, now: float) -> list[Restart]:
        """The restarts whose time has come, taken out of ``pending``, oldest first."""
        out = []
        while (soonest := self.next_due()) is not None and soonest <= now:
            _, _, k = heapq.heappop(self._heap)
            out.append(self.pending.pop(k))
        return out

    def _current(self, due: float, seq: int, k: Key) -> bool:
        r = self.pending.get(k)
        return r is not None and r.seq == seq

    # -- placing them --

    def retry(self, r: Restart) -> float:
        """No worker could take it: again later (doubling up to ``most``); its waiters
        have had their answer. Returns the wait."""
        wait = min(self.most, self.first * 2**r.tries)
        r.tries += 1
        r.due, r.seq, r.waiters = self.clock() + wait, next(self._seq), []
        self.pending[(r.group, r.key)] = r
        heapq.heappush(self._heap, (r.due, r.seq, (r.group, r.key)))
        return wait

    def not_before(self, k: Key, when: float) -> None:
        """A restart of ``k`` waiting now is placed no sooner than ``when``."""
        r = self.pending.get(k)
        if r is not None and r.due < when:
            r.due, r.seq = when, next(self._seq)
            heapq.heappush(self._heap, (r.due, r.seq, k))

    def ordered(self, r: Restart) -> None:
        """Its start went to a worker: if that fails, it is tried again."""
        self.under_way[(r.group, r.key)] = r

    def started(self, k: Key, args: list | None = None) -> list[Waiter]:
        """A start of ``k`` was answered with a process (``args``: its extra start
        arguments, kept for its own restart). The stops that came while it was a restart
        under way: the process must be stopped, and they answered once it has exited."""
        if args:
            self.args[k] = args
        else:
            self.args.pop(k, None)
        if self.under_way.pop(k, None) is None:
            return []
        return self.stops.pop(k, [])

    def failed(self, k: Key, moved: bool, why: str) -> list[Waiter]:
        """A start of ``k`` failed (``moved``: its node went away meanwhile). If it was a
        restart it is scheduled again: at once if ``moved``, else as one more failure of
        its run. Returns the stops to answer if a stop had ended it meanwhile."""
        r = self.under_way.pop(k, None)
        if r is None:
            return []
        stops = self.stops.pop(k, None)
        if stops is not None:
            self.runs.pop(k, None)
            return stops
        if moved:
            self._schedule(k, 0.0, f"its start failed: {why}", r.args)
        else:
            n = self.runs.get(k, 0)
            self.runs[k] = n + 1
            wait = self.delay(n)
            self._schedule(k, wait, f"its start failed: {why}; restart {n + 1} of a run, after {wait:g} s", r.args)
        return []

    # -- ending them --

    def stop(self, k: Key, waiter: Waiter) -> Restart | bool:
        """A user's stop of a key that is not running: a waiting restart is cancelled
        (returned, for its waiters to be answered); a restart under way is stopped as soon
        as it has started (True: ``waiter`` is answered then); False: there is none."""
        self.runs.pop(k, None)
        r = self.pending.pop(k, None)
        if r is not None:
            self.args.pop(k, None)
            return r
        if k in self.under_way:
            self.stops.setdefault(k, []).append(waiter)
            return True
        return False


class Restarting:
    """How the leader places restarts and settles them: part of ``leader.Leader`` (a base
    class of it, as ``hello.Hellos`` is), kept beside the policy it carries out."""

    # The leader's parts this uses (``leader.Leader.__init__`` makes them).
    restarts: Restarts
    calls: dict[str, p.Call]
    store: Store
    starts: Starts
    placement: Placement
    suspensions: Suspensions
    members: Members
    registry: Registry
    events: EventLog
    monotonic: Callable[[], float]
    _ids: Iterator[int]

    def dropped(
        self, loc: p.Location, reason: p.Reason, exit_code: int | None, signal: int | None, at: float,
        drain: bool, stopped: bool,
    ) -> None:  # fmt: skip
        """The registry's ``on_drop``: a process left the dictionary."""
        call = self.calls.get(loc.group)  # a group removed meanwhile restarts nothing
        policy: p.Restart = "never" if call is None else call.restart
        self.restarts.exited(policy, loc, reason, exit_code, signal, at, drain, stopped)

    def no_place(self, req: int, group: str, suspended: set[str]) -> p.Error:
        """The answer when no worker can take a process of ``group`` (``suspended``: the
        nodes where its crash-loop guard tripped)."""
        if suspended:
            text = (
                f"group '{group}' is suspended on {', '.join(sorted(suspended))} after crashing in a loop, "
                f"and no other worker can take it; try again in {self.suspensions.seconds_left(group):.0f} s"
            )
            return p.Error(id=req, kind=p.SUSPENDED, message=text)
        text = "no worker can take a new process: none is up, or all are at capacity"
        return p.Error(id=req, kind=p.NO_WORKER, message=text)

    def restart_due(self) -> Out:
        """Place the restarts whose time has come (none while the leader recovers: a
        predecessor's worker may be starting the key); one line in the log for them all."""
        if self.starts.recovering_until is not None:
            return []
        out: Out = []
        placed: list[str] = []
        waiting: list[str] = []
        for r in self.restarts.due(self.monotonic()):
            out += self._restart(r, placed, waiting)
        if placed:
            out.append(Note(logging.INFO, f"restarting {_some(placed)}"))
        if waiting:
            out.append(Note(logging.WARNING, f"cannot restart {_some(waiting)}"))
        return out

    def _restart(self, r: Restart, placed: list[str], waiting: list[str]) -> Out:
        k, name = (r.group, r.key), f"{r.group}/{r.key}"
        call = self.calls.get(r.group)
        if call is None:
            text = f"unknown group '{r.group}': it was removed while {name} waited for its restart"
            return [Reply(w, p.Error(id=req, kind=p.UNKNOWN_GROUP, message=text)) for w, req in r.waiters]
        loc = self.store.get(*k)
        if loc is not None:  # its worker came back with it (a hello): nothing is missing
            return [Reply(w, self.events.found(req, loc)) for w, req in r.waiters]
        pending = self.starts.get(k)
        if pending is not None:  # a start of it is under way already (a hello told of it)
            pending.waiters += r.waiters
            return []
        suspended = self.suspensions.nodes(r.group)
        node = self.placement.choose(exclude=suspended)
        if node is None:  # kept, and tried again: its waiters hear why now
            out: Out = [Reply(w, self.no_place(req, r.group, suspended)) for w, req in r.waiters]
            wait = self.restarts.retry(r)
            waiting.append(f"{name} ({self.no_place(0, r.group, suspended).message}; again in {wait:g} s)")
            return out
        spawn = p.Spawn(id=next(self._ids), group=r.group, key=r.key, args=r.args, call=call)
        self.starts.expect(k, node, spawn.id, spawn).waiters.extend(r.waiters)
        self.restarts.ordered(r)
        placed.append(f"{name} on {node} ({r.why})")
        return [Reply(self.members.peer_of[node], spawn)]

    def settle_restarts(self, keys: list[Key]) -> Out:
        """A hello brought keys (running or starting) whose restart waits: they need none."""
        out: Out = []
        for k in keys:
            if k in self.restarts.pending and (self.store.get(*k) is not None or self.starts.get(k) is not None):
                out += self._restart(self.restarts.pending.pop(k), [], [])
        return out

    def restart_started(self, k: Key, wait: Pending, current: p.Location | None) -> Out:
        """A start of ``k`` has been answered with a process (``current`` is what is
        registered for ``k`` now): its start arguments are kept for its restarts, and a
        restart that a user's stop ended while it was under way is stopped now (that stop
        is answered with its exit)."""
        call = self.calls.get(k[0])
        policy = call is not None and call.restart != "never"
        stops = self.restarts.started(k, wait.spawn.args if policy and wait.spawn is not None else None)
        if not stops:
            return []
        if current is None:
            return [Reply(waiter, p.Stopped(id=req, found=True)) for waiter, req in stops]
        self.registry.stopping.setdefault(k, []).extend(stops)
        host = self.members.peer_of.get(current.node)
        if host is None:  # (its node is gone: so is the process)
            return self.registry.drop(current, reason="node-down")
        return [Reply(host, p.Kill(location=current, reason="stopped"))]


def _some(items: list[str], most: int = 5) -> str:
    """A list for the log, cut short: "a, b, c and 7 more"."""
    shown = ", ".join(items[:most])
    return shown if len(items) <= most else f"{shown} and {len(items) - most} more"
