"""What admins ask of the leader (role ``admins`` with ``security.curve``): groups added,
replaced and removed at run time, told to every worker (a new leader learns them back
from their hellos, and with backend "etcd" from its predecessor's records), and nodes
drained and undrained. Part of ``leader.Leader`` (a base class of it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import msgspec

from . import protocol as p
from .effects import LeaderOut, Note, Record, Reply
from .groups import Groups
from .placement import Placement
from .store import Store

Out = LeaderOut


class Admin:
    # The leader's parts this uses (``leader.Leader.__init__`` makes them).
    groups: Groups
    placement: Placement
    store: Store
    peer_of: dict[str, bytes]
    record: Callable[[str, bytes | None], list[Record]]
    acks: dict[str, list[Reply]]  # oks held until their record is written (backend "etcd")

    def _add_call(self, peer: bytes, msg: p.AddCall) -> Out:
        what = self.groups.add(msg)
        if isinstance(what, p.Error):
            return [Reply(peer, what)]
        # Workers keep it too: after a leader restart, their hellos bring it back. They
        # are told before the caller's ok (which a worker forwarded, on the same socket),
        # and with backend "etcd" the ok waits for the record a successor reads
        # (``Leader.recorded``): a failover just after it loses nothing.
        news = self._tell_workers(p.AddCall(name=msg.name, call=msg.call, replace=True))
        record = self.record(f"calls/{msg.name}", msgspec.json.encode(msg.call))
        ok = Reply(peer, p.Ok(id=msg.id))
        if record:
            self.acks.setdefault(f"calls/{msg.name}", []).append(ok)
        return [*news, *record, *([] if record else [ok]), Note(logging.INFO, f"group {msg.name} {what}")]

    def _remove_call(self, peer: bytes, msg: p.RemoveCall) -> Out:
        if error := self.groups.remove(msg):
            return [Reply(peer, error)]
        return [*self._tell_workers(p.RemoveCall(name=msg.name)), *self.record(f"calls/{msg.name}", None),
                Reply(peer, p.Ok(id=msg.id)), Note(logging.INFO, f"group {msg.name} removed")]  # fmt: skip

    def _drain(self, peer: bytes, msg: p.Drain) -> Out:
        if not self.placement.drain(msg.node, True):
            return [Reply(peer, self._unknown_node(msg, msg.node))]
        out: Out = [Reply(peer, p.Ok(id=msg.id)), Note(logging.INFO, f"worker {msg.node} is draining")]
        host = self.peer_of.get(msg.node)
        if msg.stop and host is not None:  # each exits with reason "stopped", within its stop_timeout
            # (and, not being a user's stop, is restarted elsewhere if its group has a restart policy)
            kills = [p.Kill(location=loc, reason="stopped", drain=True) for loc in self.store.on_node(msg.node)]
            out += [Reply(host, kill) for kill in kills]
        return out

    def _undrain(self, peer: bytes, msg: p.Undrain) -> Out:
        if not self.placement.drain(msg.node, False):
            return [Reply(peer, self._unknown_node(msg, msg.node))]
        return [Reply(peer, p.Ok(id=msg.id)), Note(logging.INFO, f"worker {msg.node} takes new processes again")]

    def _unknown_node(self, msg: p.Msg, node: str) -> p.Error:
        known = ", ".join(sorted(self.placement.workers)) or "none"
        return p.Error(id=msg.id, kind=p.UNKNOWN_NODE, message=f"unknown node '{node}' (known: {known})")

    def _tell_workers(self, msg: p.Msg) -> Out:
        return [Reply(w, msg) for w in self.peer_of.values()]
