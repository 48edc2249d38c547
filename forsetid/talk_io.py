"""The sockets of calls and sends, for a worker's I/O part (``worker_io.py``): the
processes' mailbox (one ROUTER on an ``ipc://`` path in a folder only this user may
enter) and a DEALER to each other node's client endpoint (a CURVE client with
``security.curve``, as every socket between daemons). What comes in goes to the
worker's decisions (``Worker.on_process``, ``Worker.on_peer``: ``mailboxes.py``,
``talks.py``); what they return is carried out by the worker's part, which hands the
effects of this room here. Calls refused and requests dropped are logged, rate-limited,
and with ``node.metrics`` counted, with their latency."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable

import zmq

from . import protocol as p
from .effects import Dropped, Reply, ToPeer, ToProcess
from .loop import Loop, RateLimitedLog

log = logging.getLogger("forsetid")

REFUSED = (p.BUSY, p.TOO_LARGE, p.NO_MAILBOX)  # refusals of a call, logged as they are answered
UNANSWERED = 10_000  # calls counted that wait for their answer, at most (the rest: callers that gave up)


class TalkIO:
    def __init__(self, loop: Loop, node: str, max_payload: int) -> None:
        self.loop = loop
        self.dir = tempfile.mkdtemp(prefix=f"forseti-{node[:20]}-", dir="/tmp")  # (mode 0700)
        self.endpoint = f"ipc://{self.dir}/mailbox"  # FORSETI_MAILBOX
        self.mailbox = loop.ctx.socket(zmq.ROUTER)  # (no CURVE: it never leaves this machine)
        self.mailbox.setsockopt(zmq.LINGER, 0)
        self.mailbox.setsockopt(zmq.MAXMSGSIZE, max_payload + p.ENVELOPE)
        self.mailbox.setsockopt(zmq.ROUTER_MANDATORY, 1)
        loop.bind(self.mailbox, self.endpoint)
        self.peers: dict[str, zmq.Socket] = {}  # another node's client endpoint -> our socket to it
        self.log = RateLimitedLog()  # calls refused or dropped: one line in a while
        self.waiting: dict[tuple[bytes, int], tuple[str, str, float]] = {}  # (metrics) caller -> group, kind, began
        self.on_process: Callable[[bytes, list[bytes]], None] | None = None
        self.on_peer: Callable[[p.Msg], None] | None = None

    def attach(self, on_process: Callable[[bytes, list[bytes]], None], on_peer: Callable[[p.Msg], None]) -> None:
        """Where what processes and other nodes send goes (the worker's, carried out)."""
        self.on_process, self.on_peer = on_process, on_peer
        self.loop.watch(self.mailbox, self._from_processes)

    # -- effects --

    def to_peer(self, effect: ToPeer) -> None:
        sock = self.peers.get(effect.endpoint)
        if sock is None:
            sock = self.peers[effect.endpoint] = self.loop.socket(zmq.DEALER, self._from_peer)
            sock.connect(effect.endpoint)
        if not self.loop.send_one(sock, p.encode(effect.msg)):
            self.log.warning("node at %s is not keeping up: a call to it dropped", effect.endpoint)

    def to_process(self, effect: ToProcess) -> None:
        self.loop.unchecked.add(self.mailbox)
        try:
            self.mailbox.send_multipart([effect.peer, *effect.frames], zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # the process is gone (its exit answers its callers) or not reading
            log.debug("a request to a process dropped: %s", exc)

    def dropped(self, effect: Dropped) -> None:
        self.log.info("dropped: %s (its caller gave up)", effect.text)

    def answering(self, msg: p.Msg) -> None:
        """A reply on its way to a client: a refused call is logged."""
        if isinstance(msg, p.Error) and msg.kind in REFUSED:
            self.log.info("a call refused (%s): %s", msg.kind, msg.message)

    # -- metrics (node.metrics) --

    def began(self, client: bytes, msg: p.Talk) -> None:
        now = time.monotonic()
        if len(self.waiting) >= UNANSWERED:
            self.waiting = {k: v for k, v in self.waiting.items() if now - v[2] < 60.0}
        self.waiting[(client, msg.id)] = (msg.group, "send" if msg.one_way else "call", now)

    def answered(self, effect: Reply, metrics) -> None:
        began = self.waiting.pop((effect.peer, effect.msg.id), None) if self.waiting else None
        if began is not None:
            group, kind, at = began
            outcome = effect.msg.kind if isinstance(effect.msg, p.Error) else "ok"
            metrics.calls.labels(group, kind, outcome).inc()
            if outcome == "ok":
                metrics.call_seconds.labels(group, kind).observe(time.monotonic() - at)

    # -- input --

    def _from_processes(self, sock: zmq.Socket) -> None:
        for frames in self.loop.waiting(sock):
            self.on_process(frames[0], frames[1:])  # type: ignore[misc]

    def _from_peer(self, sock: zmq.Socket) -> None:
        for msg in self.loop.decoded(sock, "answer from another node"):
            self.on_peer(msg)  # type: ignore[misc]

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
