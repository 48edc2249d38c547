"""The one thread of a daemon: a ``select.poll`` over plain file descriptors, and the
sending and receiving that every part shares.

The ZeroMQ sockets are polled through their own ``ZMQ_FD`` next to pipes and the fork
server's socket: zmq_poll would check every socket twice and poll twice per turn, each
a system call. A ``ZMQ_FD`` signals a change, not a level: a socket that was sent or
received on since ZMQ_EVENTS was last asked may hold a message its fd will not announce,
so such sockets are kept in ``unchecked`` and asked before the loop sleeps.

The parts (``leader_io.LeaderIO``, ``worker_io.WorkerIO``) open their sockets here, say
what to call when one is readable, and are given a turn after every poll for their
timers. Every message a peer sends comes in through :meth:`Loop.receive`: decoding,
the answer to bad input and, with ``security.curve``, the check of who sent it live
there. The loop also answers ZeroMQ's authentication requests (ZAP, RFC 27) for every
CURVE handshake of its sockets: libzmq would let any key in if no one answered.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import zmq

from . import gate
from . import protocol as p
from .config import ConfigError
from .effects import Note
from .gate import Gate
from .keys import CurveKeys
from .roles import Peer

if TYPE_CHECKING:
    from .metrics import Metrics

log = logging.getLogger("forsetid")

BATCH = 256  # messages taken from one socket before looking at the others
NOBLOCK, MORE_NOBLOCK, EVENTS = zmq.NOBLOCK, zmq.SNDMORE | zmq.NOBLOCK, zmq.EVENTS
POLLIN = int(zmq.POLLIN)  # a plain int: `events & zmq.POLLIN` builds an enum each time (~1 us)
GRACE = 1.0  # seconds beyond the parts' own that a shutdown may take
LAST_WORDS = 0.05  # seconds the loop still turns after a shutdown, for the last reports to leave


class Part:
    """One role's half of a daemon, as the loop sees it. ``carry`` maps each type of
    effect its decisions return to the method that carries it out."""

    carry: dict[type, Callable]

    def carry_out(self, effects: list) -> None:
        carry = self.carry
        for effect in effects:
            carry[type(effect)](effect)

    def note(self, effect: Note) -> None:
        log.log(effect.level, "%s", effect.text)

    def deadline(self) -> float:
        """When it next needs a turn (monotonic)."""
        return float("inf")

    def turn(self) -> None:
        """After every poll: timers and whatever waits for the clock."""

    def begin_shutdown(self) -> float:
        """Start stopping; returns how many seconds that may take."""
        return 0.0

    @property
    def idle(self) -> bool:
        """Nothing left to wait for before exiting."""
        return True

    def close(self) -> None:
        """Release what the loop's context does not (its sockets go with it)."""


class RateLimitedLog:
    """At most one line per ``every`` seconds, saying how many were held back: a flood of
    junk must not flood the log (or cost the loop its time)."""

    def __init__(self, every: float = 5.0) -> None:
        self.every = every
        self.next = 0.0
        self.held = 0

    def warning(self, fmt: str, *args) -> None:
        self._log(log.warning, fmt, args)

    def info(self, fmt: str, *args) -> None:
        self._log(log.info, fmt, args)

    def exception(self, fmt: str, *args) -> None:
        self._log(log.exception, fmt, args)

    def _log(self, method, fmt: str, args) -> None:
        now = time.monotonic()
        if now < self.next:
            self.held += 1
            return
        if self.held:
            fmt += f" (and {self.held} more like it)"
        method(fmt, *args)
        self.next, self.held = now + self.every, 0


def _bind(sock: zmq.Socket, endpoint: str) -> None:
    scheme, _, path = endpoint.partition("://")
    folder = os.path.dirname(path)
    if scheme == "ipc" and folder and not os.path.isdir(folder):
        os.makedirs(folder, mode=0o700)  # who may connect is who may enter it
    if scheme == "ipc" and _listening(path):
        raise OSError("another process listens there (this daemon running already?)")
    sock.bind(endpoint)


def _listening(path: str) -> bool:
    """Whether a process accepts connections on the unix socket ``path``: libzmq would
    put its own in that file's place (and remove it on close), cutting that process off
    as a tcp bind could not. A file left by a daemon that died refuses: it is replaced."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.setblocking(False)
        try:
            probe.connect(path)
        except BlockingIOError:
            return True  # its backlog is full (a frozen process): someone listens all the same
        except OSError:
            return False
    return True


class Loop:
    """``keys``: the CURVE keys of ``security.curve`` (None: no CURVE); ``authorize``
    reads the table of authorized keys (at start, and again on SIGHUP)."""

    def __init__(
        self,
        config_path: str = "<config>",
        keys: CurveKeys | None = None,
        authorize: Callable[[], dict[bytes, Peer]] | None = None,
    ) -> None:
        self.config_path = config_path
        self.keys = keys
        self.ctx = zmq.Context()
        self.poller = select.poll()
        self.handlers: dict[int, tuple] = {}  # fd -> (what to call when readable, socket or fd)
        self.unchecked: set[zmq.Socket] = set()
        self.behind: set[zmq.Socket] = set()  # whose last read took a whole batch: more may wait unread
        self.fds: dict[zmq.Socket, int] = {}
        self.parts: list[Part] = []  # the roles' parts, in the order they take their turns
        self.stopping = False
        self.exit: tuple[int, str] | None = None  # (status, why) when the daemon cannot go on
        self.junk = RateLimitedLog()
        self.faults = RateLimitedLog()
        self.gate = Gate(authorize, self.junk) if authorize is not None else None
        self.metrics: Metrics | None = None  # node.metrics (None: off)
        self.sources: set[zmq.Socket] = set()  # received uncopied, so that source_fd() can tell
        self.source: zmq.Frame | None = None  # the last frame of the message received last
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        os.set_blocking(self._wake_r, False)
        self.watch(self._wake_r, self._on_signal)
        if self.gate is not None:  # bound before any CURVE socket, so that no handshake goes unasked
            self.zap = self.ctx.socket(zmq.ROUTER)
            self.zap.setsockopt(zmq.LINGER, 0)
            self.zap.bind(gate.ENDPOINT)
            self.watch(self.zap, self._on_zap)

    # -- set-up --

    def socket(self, kind: int, handler, max_message: int = -1, serves: bool = False) -> zmq.Socket:
        """A socket watched by the loop. With CURVE, one that ``serves`` is a CURVE server
        (peers show their keys to it); any other reaches a daemon as a CURVE client,
        pinning the cluster's server key. Inproc connections skip CURVE: they never
        leave this process."""
        sock = self.ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 500)
        sock.setsockopt(zmq.MAXMSGSIZE, max_message)
        if self.keys is not None:
            self.keys.apply(sock, serves, gate.DOMAIN)
        self.watch(sock, handler)
        return sock

    def bind(self, sock: zmq.Socket, *endpoints: str) -> None:
        for endpoint in endpoints:
            try:
                _bind(sock, endpoint)
            except (zmq.ZMQError, OSError) as exc:
                raise ConfigError(f"{self.config_path}: cannot bind {endpoint}: {exc}") from None

    def watch(self, sock_or_fd, handler) -> None:
        fd = sock_or_fd
        if isinstance(sock_or_fd, zmq.Socket):
            fd = self.fds[sock_or_fd] = sock_or_fd.getsockopt(zmq.FD)
            self.unchecked.add(sock_or_fd)
        self.handlers[fd] = (handler, sock_or_fd)
        self.poller.register(fd, select.POLLIN)

    def unwatch(self, sock_or_fd) -> None:
        fd = sock_or_fd
        if isinstance(sock_or_fd, zmq.Socket):
            fd = self.fds.pop(sock_or_fd)
            self.unchecked.discard(sock_or_fd)
            self.behind.discard(sock_or_fd)
        self.handlers.pop(fd, None)
        self.poller.unregister(fd)

    def fail(self, status: int, why: str) -> None:
        """The daemon cannot go on: exit with ``status`` after this turn."""
        if self.exit is None:
            self.exit = (status, why)

    # -- messages --

    def waiting(self, sock: zmq.Socket, copy: bool = True):
        """The messages waiting on ``sock`` (at most BATCH), each a list of frames."""
        n = 0
        for frames in p.waiting(sock, BATCH, copy):
            n += 1
            yield frames
        if n == BATCH:
            self.unchecked.add(sock)  # more may wait: look again before sleeping
            self.behind.add(sock)
        else:
            self.unchecked.discard(sock)  # ZMQ_EVENTS said "nothing": its fd is armed again
            self.behind.discard(sock)

    def receive(self, sock: zmq.Socket):
        """Decoded (peer, message) pairs from a ROUTER; bad input, and with CURVE a
        message outside its sender's role, is answered here."""
        checks = self.gate
        uncopied = checks is not None or sock in self.sources
        for frames in self.waiting(sock, copy=not uncopied):
            last = frames[-1]
            if uncopied:
                frames = [frame.bytes for frame in frames]
                self.source = last
            peer = frames[0]
            if len(frames) != 2:
                error = p.Error(kind=p.BAD_MESSAGE, message=f"expected 1 frame, got {len(frames) - 1}")
                self.junk.warning("bad message from a peer: %s", error.message)
                self._refused(p.BAD_MESSAGE)
                self.send(sock, peer, error)
                continue
            try:
                msg = p.decode(frames[1])
            except p.BadMessage as exc:
                self.junk.warning("bad message from a peer: %s", exc)
                self._refused(p.BAD_MESSAGE)
                self.send(sock, peer, exc.reply)
                continue
            why = checks.check(last, msg) if checks is not None else None
            if why is not None:
                self.junk.warning("refused: %s", why)
                self._refused(p.FORBIDDEN)
                self.send(sock, peer, p.Error(id=msg.id, kind=p.FORBIDDEN, message=why))
                continue
            yield peer, msg

    def source_fd(self) -> int:
        """The file descriptor of the connection that the message received last came on
        (``ZMQ_SRCFD``), for a socket in ``sources``; -1 for one with none (inproc)."""
        try:
            return self.source.get(zmq.SRCFD) if self.source is not None else -1
        except zmq.ZMQError:
            return -1

    def _refused(self, why: str) -> None:
        if self.metrics is not None:
            self.metrics.refuse(why)

    def _on_zap(self, sock: zmq.Socket) -> None:
        for frames in self.waiting(sock):
            reply = self.gate.answer(frames) if self.gate is not None else None
            if reply is not None:
                sock.send_multipart(reply)

    def decoded(self, sock: zmq.Socket, what: str):
        """Decoded messages from a DEALER or SUB (the last frame of each); bad ones are logged."""
        for frames in self.waiting(sock):
            try:
                yield p.decode(frames[-1])
            except p.BadMessage as exc:
                self.junk.warning("bad %s: %s", what, exc)

    def send(self, sock: zmq.Socket, peer: bytes, msg: p.Msg) -> None:
        """To one peer of a ROUTER; a peer that is gone or not keeping up loses it."""
        self.unchecked.add(sock)
        try:
            sock.send(peer, MORE_NOBLOCK)  # two sends: cheaper than send_multipart
            sock.send(p.encode(msg), NOBLOCK)
        except zmq.ZMQError as exc:  # gone (EHOSTUNREACH) or not keeping up (EAGAIN)
            log.debug("reply to a peer dropped: %s", exc)

    def send_one(self, sock: zmq.Socket, frame: bytes, topic: bytes | None = None) -> bool:
        """On a DEALER (or, with a topic, a PUB); False if it would have blocked."""
        self.unchecked.add(sock)
        try:
            if topic is not None:
                sock.send(topic, MORE_NOBLOCK)
            sock.send(frame, NOBLOCK)
        except zmq.Again:
            return False
        return True

    # -- running --

    def run(self) -> int:
        parts = self.parts
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, lambda *_: None)
        signal.set_wakeup_fd(self._wake_w)
        deadline = None
        try:
            while True:
                if self.exit is not None:
                    log.error("%s", self.exit[1])
                    return self.exit[0]
                if self.stopping:
                    if deadline is None:
                        log.info("shutting down")
                        deadline = time.monotonic() + max(part.begin_shutdown() for part in parts) + GRACE
                    if all(part.idle for part in parts) or time.monotonic() > deadline:
                        self.drain(LAST_WORDS)
                        return 0
                self.poll_once(self._timeout())
        finally:
            self.close()

    def poll_once(self, timeout_ms: int) -> None:
        due = [self.fds[sock] for sock in self.unchecked if sock.getsockopt(EVENTS) & POLLIN]
        self.unchecked.clear()
        ready = self.poller.poll(0 if due else timeout_ms)
        for fd in due + [fd for fd, _ in ready if fd not in due]:
            entry = self.handlers.get(fd)  # (gone if a handler before it closed it)
            if entry is not None:
                try:
                    entry[0](entry[1])
                except Exception:  # a bug must cost one message, not the daemon
                    self.faults.exception("internal error while handling input")
                    if entry[1] in self.fds:  # a socket still watched: what waits behind that message is due
                        self.unchecked.add(entry[1])
        for part in self.parts:
            part.turn()

    def drain(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.poll_once(int(left * 1000) + 1)

    def _timeout(self) -> int:
        now = time.monotonic()
        soonest = min([now + 1.0, *(part.deadline() for part in self.parts)])
        return max(0, int((soonest - now) * 1000) + 1)

    def _on_signal(self, fd: int) -> None:
        signums = b""
        try:
            while chunk := os.read(fd, 512):
                signums += chunk
        except BlockingIOError:
            pass
        if any(n != signal.SIGHUP for n in signums):
            self.stopping = True
        if signal.SIGHUP in signums:
            self.reload()

    def reload(self) -> None:
        if self.gate is None:
            log.info("SIGHUP: nothing to re-read (security.curve is off)")
        else:
            self.gate.reload()

    def close(self) -> None:
        signal.set_wakeup_fd(-1)
        for part in self.parts:
            part.close()
        self.parts = []
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None
        self.ctx.destroy(linger=500)
