"""The workers a leader knows: each one's ROUTER identity, its incarnation (one life
of its daemon) and when it was last heard. Any message is a heartbeat; a worker silent
for ``heartbeat`` x ``liveness`` seconds is down."""

from __future__ import annotations

from collections.abc import Callable


class Members:
    def __init__(self, silence: float, clock: Callable[[], float]) -> None:
        self.silence, self.clock = silence, clock
        self.peer_of: dict[str, bytes] = {}  # worker name -> ROUTER identity
        self.node_of: dict[bytes, str] = {}  # ROUTER identity -> worker name
        self.incarnation: dict[str, str] = {}
        self.last_seen: dict[str, float] = {}
        self.next_silent: float | None = None  # the soonest a worker may be down, as of the last look

    def heard(self, peer: bytes) -> str | None:
        """The worker behind ``peer``, now heard from (None: not a registered worker)."""
        node = self.node_of.get(peer)
        if node is not None:
            self.last_seen[node] = self.clock()
        return node

    def silent(self) -> list[str]:
        """The workers silent too long; ``next_silent`` is then when the next may be."""
        limit = self.clock() - self.silence
        heard = [seen for seen in self.last_seen.values() if seen >= limit]
        self.next_silent = min(heard) + self.silence if heard else None
        return [node for node, seen in self.last_seen.items() if seen < limit]

    def restarted(self, node: str, incarnation: str) -> bool:
        """Whether this is a new life of a daemon already known under that name."""
        return self.incarnation.get(node) not in (None, incarnation)

    def taken(self, node: str, incarnation: str, peer: bytes) -> bool:
        """Whether another daemon of that name is up: one that spoke within the silence
        from another socket. The newcomer must wait until that one falls silent."""
        recent = self.last_seen.get(node, float("-inf")) > self.clock() - self.silence
        return self.restarted(node, incarnation) and self.peer_of.get(node) != peer and recent

    def join(self, node: str, incarnation: str, peer: bytes) -> None:
        old = self.peer_of.get(node)
        if old is not None and old != peer:
            self.node_of.pop(old, None)  # a worker that reconnected: its old socket is gone
        self.peer_of[node], self.node_of[peer] = peer, node
        self.incarnation[node] = incarnation
        self.last_seen[node] = self.clock()

    def forget(self, node: str) -> None:
        """Down: if it comes back, it is a stranger that must say hello again."""
        self.last_seen.pop(node, None)
        self.node_of.pop(self.peer_of.pop(node, b""), None)
