"""What clients ask of the leader besides ``get`` (which ``leader.Leader`` decides
itself): ``find``, ``stop``, ``ls``, ``nodes``, ``calls`` and ``info``. Part of
``leader.Leader`` (a base class of it, as ``admin.Admin`` is for what admins ask).
"""

from __future__ import annotations

import logging

import msgspec

from . import protocol as p
from .crashloop import Suspensions
from .effects import LeaderOut, Note, Reply
from .event_log import EventLog
from .groups import Groups
from .placement import Placement
from .registry import Registry
from .restarts import Restarts
from .store import Store

Out = LeaderOut


class ClientRequests:
    # The leader's parts this uses (``leader.Leader.__init__`` makes them).
    groups: Groups
    store: Store
    events: EventLog
    restarts: Restarts
    registry: Registry
    placement: Placement
    suspensions: Suspensions
    peer_of: dict[str, bytes]
    about: p.InfoReply

    def _find(self, peer: bytes, msg: p.Find) -> Out:
        if unknown := self.groups.unknown(msg, msg.group):
            return [Reply(peer, unknown)]
        return [Reply(peer, self.events.found(msg.id, self.store.get(msg.group, msg.key)))]

    def _stop(self, peer: bytes, msg: p.Stop) -> Out:
        if unknown := self.groups.unknown(msg, msg.group):
            return [Reply(peer, unknown)]
        k = (msg.group, msg.key)
        loc = self.store.get(*k)
        if loc is None:  # not running: but it may be on its way back (a restart), which this ends
            restart = self.restarts.stop(k, (peer, msg.id))
            if restart is True:
                return []  # under way: stopped as soon as it has started, and answered then
            if not restart:
                return [Reply(peer, p.Stopped(id=msg.id, found=False))]
            text = f"{msg.group}/{msg.key} was stopped while it waited for its restart"
            out: Out = [Reply(w, p.Error(id=req, kind=p.SPAWN_FAILED, message=text)) for w, req in restart.waiters]
            return [Reply(peer, p.Stopped(id=msg.id, found=True)), *out, Note(logging.INFO, f"{text}: not restarted")]
        self.registry.stopping.setdefault(k, []).append((peer, msg.id))
        host = self.peer_of.get(loc.node)
        if host is None:  # its node is gone: so is the process
            return self.registry.drop(loc, reason="node-down")
        # Sent again on every stop: a repeat is harmless, and a lost one is made good.
        return [Reply(host, p.Kill(location=loc, reason="stopped"))]

    def _list(self, peer: bytes, msg: p.List) -> Out:
        items = sorted(self.store.items(msg.group), key=lambda loc: (loc.group, loc.key))
        return [Reply(peer, p.Locations(id=msg.id, items=items))]

    def _nodes(self, peer: bytes, msg: p.Nodes) -> Out:
        items = [
            p.NodeInfo(
                name=w.name,
                state=w.state,
                processes=self.store.count(w.name),
                capacity=w.capacity,
                suspended=self.suspensions.groups(w.name),
                listen=w.listen,
            )
            for w in sorted(self.placement.workers.values(), key=lambda w: w.name)
        ]
        return [Reply(peer, p.NodeList(id=msg.id, items=items))]

    def _calls(self, peer: bytes, msg: p.Calls) -> Out:
        return [Reply(peer, p.CallList(id=msg.id, items=self.groups.listing()))]

    def _info(self, peer: bytes, msg: p.Info) -> Out:
        return [Reply(peer, msgspec.structs.replace(self.about, id=msg.id))]
