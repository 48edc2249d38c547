"""Fast failure detection at the leader: a worker whose connection closes is taken for
down at once, rather than after ``heartbeat`` x ``liveness`` of silence.

ZeroMQ's socket monitor tells of a closed connection by its file descriptor only
(``EVENT_DISCONNECTED``), not by the ROUTER identity of the peer; the leader learns
which descriptor a worker registered on from its hello (``ZMQ_SRCFD`` of the hello's
frame). Descriptors are reused, and a worker that reconnects on purpose (it lost its
leader) closes its old connection and says hello on a new one, whose hello may come
before or after the old one's close is told. So a close is only a reason to look:
``grace`` seconds later the leader tries to send the worker (under the identity it
registered with last) an unasked pong, and ``ROUTER_MANDATORY`` says whether that
connection still exists. A worker that said hello again meanwhile is reachable under
its new identity and is left alone; one whose connection is gone is down. Heartbeats
still catch a machine that vanishes without closing anything.

Decisions only (the loop's part, ``leader_io.py``, reads the events and sends the
probe): which node to look at, and when.
"""

from __future__ import annotations

from collections.abc import Callable

GRACE = 0.2  # seconds from a close to the look: a reconnecting worker's hello comes well within it


class Closes:
    def __init__(self, grace: float, clock: Callable[[], float]) -> None:
        self.grace, self.clock = grace, clock
        self.fd_of: dict[str, int] = {}  # node -> the descriptor of the connection it said hello on
        self.node_at: dict[int, str] = {}  # descriptor -> node
        self.due: dict[str, float] = {}  # node -> when to look whether it is still connected

    def joined(self, node: str, fd: int) -> None:
        """``node`` was welcomed on the connection ``fd`` (-1: one with no descriptor,
        inproc: it cannot close without the leader's own daemon)."""
        old = self.fd_of.pop(node, None)
        if old is not None and self.node_at.get(old) == node:
            del self.node_at[old]
        if fd < 0:
            return
        other = self.node_at.get(fd)
        if other is not None and other != node:  # that node's connection is gone: the fd was reused
            self.fd_of.pop(other, None)
        self.fd_of[node], self.node_at[fd] = fd, node

    def closed(self, fd: int) -> None:
        """The connection with descriptor ``fd`` closed. (The mapping stays: the number
        may be reused at once by the same worker's new connection, whose hello may have
        been read before this close; a look at the wrong node costs one message.)"""
        node = self.node_at.get(fd)
        if node is not None and node not in self.due:
            self.due[node] = self.clock() + self.grace

    def deadline(self) -> float | None:
        return min(self.due.values(), default=None)

    def take_due(self) -> list[str]:
        """The nodes to look at now."""
        now = self.clock()
        due = [node for node, at in self.due.items() if at <= now]
        for node in due:
            del self.due[node]
        return due

    def forget(self, node: str) -> None:
        """Down (by heartbeats or by a close): nothing more to look at."""
        self.due.pop(node, None)
        fd = self.fd_of.pop(node, None)
        if fd is not None and self.node_at.get(fd) == node:
            del self.node_at[fd]
