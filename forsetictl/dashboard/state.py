"""What the dashboard shows, built from the client's answers and the cluster's events:
a pure model (no sockets, no threads, no clock of its own: every time is given).

The processes are kept as the near cache keeps them: one ``processes()`` answer, then
each event applied (a start adds, an exit removes); a ``missed`` event says the picture
may be out of date, and the server asks again (``stale``). A page of them is cut here,
so that a page shows 50 rows of 100,000 and nothing sends the whole dictionary."""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque

import msgspec

WINDOW = 300  # seconds of starts/exits/failures per second kept for the chart
RECENT = 200  # the last events, for a page that opens
PAGE = 50  # processes in a page unless asked otherwise
PAGE_MAX = 500

# Exits that are failures: a process that ended badly, or lost with its node.
_LOST = {"node-down", "partition", "conflict"}


def failed(event) -> bool:
    """An exit not asked for: a non-zero code, a signal, or a process lost with its node."""
    if event.kind != "exited":
        return False
    if event.reason == "exit":
        return bool(event.exit_code) or event.signal is not None
    return event.reason in _LOST


def plain(obj) -> dict:
    """A Location, NodeInfo or Event as the page reads it (JSON-ready)."""
    return msgspec.to_builtins(obj)


class Rates:
    """Starts, exits and failures per second over the last ``window`` seconds."""

    def __init__(self, window: int = WINDOW) -> None:
        self.window = window
        self.seconds: dict[int, list[int]] = {}  # second -> [starts, exits, failures]

    def count(self, event) -> None:
        if event.kind not in ("started", "exited") or getattr(event, "adopted", False):
            return  # (an adopted process ran already: not a start)
        counts = self.seconds.setdefault(int(event.at), [0, 0, 0])
        if event.kind == "started":
            counts[0] += 1
        else:
            counts[1] += 1
            counts[2] += failed(event)

    def series(self, now: float) -> list[list[int]]:
        """``[second, starts, exits, failures]`` of each second with any, oldest first."""
        first = int(now) - self.window
        for second in [s for s in self.seconds if s <= first]:
            del self.seconds[second]
        return [[s, *self.seconds[s]] for s in sorted(self.seconds)]


class Loads:
    """Each node's processes over the last ``window`` seconds: one sample a second at
    most (the last of that second), taken when the nodes' answer changes."""

    def __init__(self, window: int = WINDOW) -> None:
        self.window = window
        self.samples: deque[list] = deque()  # [second, {node: processes}], oldest first

    def sample(self, nodes: list[dict], now: float) -> None:
        counts = {n["name"]: n["processes"] for n in nodes}
        if self.samples and self.samples[-1][0] == int(now):
            self.samples[-1][1] = counts
        else:
            self.samples.append([int(now), counts])
        while len(self.samples) > 1 and self.samples[1][0] <= now - self.window:
            self.samples.popleft()  # (the one before the window stays: where the lines start)

    def series(self) -> list[list]:
        return list(self.samples)


class Board:
    """The dashboard's picture of the cluster."""

    def __init__(self) -> None:
        self.nodes: list[dict] = []
        self.leader: dict | None = None  # Client.leader()'s answer
        self.problem: str | None = None  # the last failure to hear from the cluster
        self.may = {"stop": False, "drain": False}  # what this dashboard's key is allowed
        self.role = "unknown"
        self.processes: dict[tuple[str, str], dict] = {}
        self.stale = True  # processes to be asked for again (at start, after missed events)
        self.recent: deque[dict] = deque(maxlen=RECENT)
        self.rates = Rates()
        self.loads = Loads()
        self._keys: list[tuple[str, str]] = []  # the processes' (group, key) in order, kept so

    # -- what the cluster said --

    def set_nodes(self, nodes, leader: dict | None, now: float) -> bool:
        """The answers of ``nodes()`` and ``leader()`` at ``now``; True if the picture changed."""
        shown = sorted((plain(n) for n in nodes), key=lambda n: n["name"])
        changed = (shown, leader, None) != (self.nodes, self.leader, self.problem)
        if shown != self.nodes or not self.loads.samples:
            self.loads.sample(shown, now)
        self.nodes, self.leader, self.problem = shown, leader, None
        return changed

    def unreachable(self, message: str) -> bool:
        """No answer (or an error) instead of nodes: True if that is news."""
        changed = self.problem != message
        self.problem = message
        return changed

    def set_role(self, role: str) -> None:
        """``"admin"``, ``"client"`` or ``"reader"``: which buttons the page shows."""
        self.role = role
        self.may = {"stop": role in ("admin", "client"), "drain": role == "admin"}

    def set_processes(self, locations) -> None:
        self.processes = {(loc.group, loc.key): plain(loc) for loc in locations}
        self._keys = sorted(self.processes)
        self.stale = False

    def apply(self, event) -> dict:
        """One event from the stream: the processes and rates follow it; returns it as
        the page reads it."""
        shown = {**plain(event), "failed": failed(event)}
        if event.kind == "missed":
            self.stale = True
        elif event.kind == "started":
            where = {f: shown[f] for f in ("group", "key", "node", "pid", "endpoint")}
            if (event.group, event.key) not in self.processes:
                insort(self._keys, (event.group, event.key))
            self.processes[(event.group, event.key)] = {**where, "started_at": event.at}
        elif event.kind == "exited":
            here = self.processes.get((event.group, event.key))
            if here is not None and here["pid"] == event.pid:
                del self.processes[(event.group, event.key)]
                del self._keys[bisect_left(self._keys, (event.group, event.key))]
        self.rates.count(event)
        self.recent.append(shown)
        return shown

    # -- what the page is sent --

    def overview(self, now: float) -> dict:
        """Everything but the processes: sent when a page connects."""
        return {
            **self.summary(),
            "events": list(self.recent),
            "rates": self.rates.series(now),
            "loads": self.loads.series(),
            "window": self.rates.window,
        }

    def summary(self) -> dict:
        """The nodes, the leader and what this dashboard may do: sent on every change."""
        return {
            "nodes": self.nodes,
            "leader": self.leader,
            "problem": self.problem,
            "role": self.role,
            "may": self.may,
            "processes": len(self.processes),
        }

    def page(self, group: str = "", key: str = "", offset: int = 0, limit: int = PAGE) -> dict:
        """The processes of ``group`` (all: "") whose key contains ``key``, in (group,
        key) order, ``limit`` of them from ``offset``, and how many match. A group is a
        range of the sorted keys (found by bisection); only a key's part is searched for
        one by one."""
        keys, lo, hi = self._keys, 0, len(self._keys)
        if group:  # (group + "\0": the least text after group and all its keys)
            lo, hi = bisect_left(keys, (group, "")), bisect_left(keys, (group + "\0", ""))
        offset = max(0, offset)
        limit = max(1, min(limit, PAGE_MAX))
        if key:
            found = [k for k in keys[lo:hi] if key in k[1]]
            total, shown = len(found), found[offset : offset + limit]
        else:  # (no copy of the range: 100,000 keys cost nothing more than 50)
            total, shown = hi - lo, keys[lo + offset : min(hi, lo + offset + limit)]
        return {"total": total, "offset": offset, "items": [self.processes[k] for k in shown]}
