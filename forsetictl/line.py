"""A sync client's socket plumbing: one DEALER to one endpoint, for one thread, and its
monitor, which tells a refused connection, a lost one and a refused handshake as soon
as libzmq knows, not after the request's whole timeout."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import zmq

from forsetid import protocol as p

from .core import SILENT, Attempt, Failure, judged
from .security import CONNECTION_EVENTS, CurveKeys, Handshakes, monitored

SLICE_MS = 50  # a blocking recv waits this long at most before it looks at the monitor (a lost node)


class Line:
    def __init__(self, ctx: zmq.Context, endpoint: str, keys: CurveKeys | None, stray: Callable[[p.Msg], None]) -> None:
        self.endpoint = endpoint
        self._stray = stray
        self.sock = sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        self._wait_ms: int | None = None  # the socket's RCVTIMEO
        if keys is not None:
            keys.apply(sock)
        self.watch: Handshakes | None = None
        self._poller: zmq.Poller | None = None  # the socket and its monitor, until a handshake succeeds
        if monitored(endpoint):
            self.watch = Handshakes(sock, curve=keys is not None, events=CONNECTION_EVENTS)
            self._poller = zmq.Poller()
            self._poller.register(sock, zmq.POLLIN)
            self._poller.register(self.watch.monitor, zmq.POLLIN)
        sock.connect(endpoint)

    def post(self, frame: bytes) -> None:
        try:
            self.sock.send(frame, zmq.NOBLOCK)
        except zmq.Again:  # no pipe (a refused handshake): the next request will tell
            pass

    def exchange(self, a: Attempt) -> p.Msg | Failure:
        """Send the attempt's frame and wait for the reply with its id."""
        try:
            self.sock.send(a.frame, zmq.NOBLOCK)
        except zmq.Again:
            return self.trouble(a, final=True) or SILENT
        while True:
            frame = self._recv_watching(a) if self._poller is not None else self._recv(a)
            if isinstance(frame, Failure):
                return frame
            try:
                msg = p.decode(frame)
            except p.BadMessage as exc:
                return Failure("malformed", str(exc))
            if msg.id == a.id:
                return msg
            self._stray(msg)

    def _recv(self, a: Attempt) -> bytes | Failure:
        """A blocking recv bounded by RCVTIMEO, in slices with a look at the monitor
        between them: a poll() per request would cost more than the rest of the client's
        work (pyzmq builds a Poller each time)."""
        until = a.until
        while True:
            wait_ms = max(1, min(SLICE_MS, math.ceil((until - time.monotonic()) * 1000)))
            if wait_ms != self._wait_ms:
                self.sock.setsockopt(zmq.RCVTIMEO, wait_ms)
                self._wait_ms = wait_ms
            try:
                return self.sock.recv()
            except zmq.Again:
                over = time.monotonic() >= until
                if (trouble := self.trouble(a, final=over)) is not None:
                    return trouble
                if over:
                    return SILENT

    def _recv_watching(self, a: Attempt) -> bytes | Failure:
        """The next frame, waiting on the socket and its monitor together (no handshake
        has succeeded yet): a refused connection or handshake is told at once."""
        assert self._poller is not None and self.watch is not None
        while True:
            left = a.until - time.monotonic()
            if left <= 0:
                return self.trouble(a, final=True) or SILENT
            # (the monitor tells of each retry of a refused connection, every 100 ms)
            ready = dict(self._poller.poll(max(1, math.ceil(left * 1000))))
            if self.watch.monitor in ready and (trouble := self.trouble(a)) is not None:
                return trouble
            if self.sock in ready:
                frame = self.sock.recv()
                self.watch.read()  # the success that came with it, most likely
                if self.watch.succeeded:  # from now on, the blocking recv in slices
                    self._poller = None
                return frame

    def trouble(self, a: Attempt, final: bool = False) -> Failure | None:
        """What the monitor tells of the connection (see ``Handshakes.verdict``); a
        refused connection only from the attempt's ``refused_at`` on."""
        if self.watch is None:
            return None
        self.watch.read()
        return judged(self.watch.verdict(final), a, final)

    def close(self) -> None:
        if self.watch is not None:
            self.watch.close(self.sock)
            self.watch = None
        self.sock.close()
