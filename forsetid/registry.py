"""Every change of the process dictionary, (group, key) -> location, in one place: a
process registered or dropped is also counted in its worker's load, told as an event,
and answered to whoever waits for its stop, so that the store, the load and the event
stream never disagree; every drop is told to ``on_drop`` (the leader's restart policies,
``restarts.py``). Decisions only: each change returns the effects it causes."""

from __future__ import annotations

import logging
from collections.abc import Callable

from . import protocol as p
from .effects import LeaderOut, Note, Publish, Reply
from .event_log import EventLog
from .placement import Placement
from .store import Store

Out = LeaderOut
# (location, reason, exit code, signal, at, drain: a drain's kill, stopped: a user's stop waited for it)
OnDrop = Callable[[p.Location, p.Reason, "int | None", "int | None", float, bool, bool], object]


class Registry:
    def __init__(self, store: Store, placement: Placement, events: EventLog, on_drop: OnDrop | None = None) -> None:
        self.store, self.placement, self.events, self.on_drop = store, placement, events, on_drop
        self.stopping: dict[tuple[str, str], list[tuple[bytes, int]]] = {}  # key -> (peer, request id)

    def register(self, loc: p.Location, adopted: bool = False) -> Out:
        self.store.put(loc)
        self.placement.add(loc.node, +1)
        return [Publish(self.events.event("started", loc, at=loc.started_at, adopted=adopted))]

    def drop(
        self, loc: p.Location, exit_code=None, signal=None, reason: p.Reason = "exit", at=None, drain=False
    ) -> Out:
        """``drain``: it was stopped by a drain (``protocol.Kill``), not by a user's stop."""
        self.store.delete(loc.group, loc.key)
        self.placement.add(loc.node, -1)
        event = self.events.event("exited", loc, exit_code, signal, reason, at)
        out: Out = [Publish(event)]
        stops = self.stopping.pop((loc.group, loc.key), [])
        for waiter, req in stops:
            out.append(Reply(waiter, p.Stopped(id=req, found=True)))
        if self.on_drop is not None:
            self.on_drop(loc, reason, exit_code, signal, event.at, drain, bool(stops))
        return out

    def adopt(self, peer: bytes, loc: p.Location, running: bool = False) -> Out:
        """A live process a worker reports (``running``: in a hello, so not a new start):
        registered if its key is free; if another process is registered for the key,
        this one is the duplicate and is stopped."""
        current = self.store.get(loc.group, loc.key)
        if current is None:
            return self.register(loc, adopted=running)
        if current != loc:
            text = (f"{loc.group}/{loc.key} runs twice: keeping pid {current.pid} on {current.node}, "
                    f"stopping pid {loc.pid} on {loc.node}")  # fmt: skip
            return [Reply(peer, p.Kill(location=loc, reason="conflict")), Note(logging.WARNING, text)]
        return []

    def keep_only(self, node: str, live: list[p.Location], reason: p.Reason) -> Out:
        """Drop what is registered on ``node`` and not in ``live`` (all of it: ``[]``)."""
        alive = {(loc.group, loc.key, loc.pid) for loc in live}
        out: Out = []
        for loc in self.store.on_node(node):
            if (loc.group, loc.key, loc.pid) not in alive:
                out += self.drop(loc, reason=reason)
        return out
