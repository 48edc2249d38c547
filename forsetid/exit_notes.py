"""What a worker says of the exits nobody asked for: a process that exited by itself or
was killed from outside (no stop, kill, drain, shutdown or partition ordered it) is
logged once, at INFO, by the worker that saw it, with its group, key, pid and code or
signal. A group that crashes in a loop must not flood the log: at most ``LINES`` lines
per group in ``EVERY`` seconds, then one line at the end of those seconds that counts
the rest.

This is not the crash-loop guard's count (``crashloop.py``): that one counts abnormal
exits and failed starts in a sliding window to suspend a group; this one counts every
exit it would log, clean ones too, and says how many it held back."""

from __future__ import annotations

import itertools
import logging
import signal

from .effects import Note
from .timers import Timers

LINES = 5  # lines per group...
EVERY = 10.0  # ...in this many seconds (from the first of them)


def ended(exit_code: int | None, signum: int | None) -> str:
    """How a process ended: "exited with code 3", "killed by SIGKILL"."""
    if signum is None:
        return f"exited with code {exit_code}"
    try:
        return f"killed by {signal.Signals(signum).name}"
    except ValueError:
        return f"killed by signal {signum}"


def how_it_ended(exit_code: int | None, signal: int | None, reason: str = "exit", drain: bool = False) -> str:
    """How a process ended, in words: its code or signal, or what became of its node."""
    if drain:
        return "its node was drained"
    if reason == "node-down":
        return "its node went down"
    if reason == "shutdown":
        return "its node shut down"
    if reason == "partition":
        return "its node lost the leader (partition stop)"
    if signal is None and exit_code is None:
        return "its exit went unreported"
    return ended(exit_code, signal)


class ExitNotes:
    def __init__(self, timers: Timers, lines: int = LINES, every: float = EVERY) -> None:
        self.timers, self.lines, self.every = timers, lines, every
        self.said: dict[str, int] = {}  # group -> lines in its current interval
        self.held: dict[str, int] = {}  # group -> exits not said in it
        self.interval_of: dict[int, str] = {}  # timer ident -> group
        self._ids = itertools.count()

    def exited(self, group: str, key: str, node: str, pid: int, exit_code: int | None, signum: int | None) -> list:
        said = self.said.get(group)
        if said is None:  # the first exit of an interval
            ident = next(self._ids)
            self.interval_of[ident] = group
            self.timers.after(self.every, self._end, ident)
            said = 0
        if said >= self.lines:
            self.held[group] = self.held.get(group, 0) + 1
            return []
        self.said[group] = said + 1
        return [Note(logging.INFO, f"{group}/{key} (pid {pid}) on {node} ended: {ended(exit_code, signum)}")]

    def _end(self, ident: int) -> list:
        group = self.interval_of.pop(ident)
        del self.said[group]
        held = self.held.pop(group, 0)
        if not held:
            return []
        return [Note(logging.INFO, f"and {held} more exits of group {group} in the last {self.every:g} s")]
