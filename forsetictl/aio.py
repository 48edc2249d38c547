"""The asyncio client: :class:`AsyncClient`, the same core as ``Client`` (``core.py``)
in a shell that waits by awaiting.

Many requests may be in flight at once on one DEALER (the coroutines of one event loop
share a client). The loop watches the socket's ZMQ_FD: what is waiting is handed to the
future of its request's id by plain non-blocking calls, and a reply whose request was
cancelled (or given up) finds no future and is dropped. The loop watches the socket's
monitor too: a refused connection, a lost one or a refused handshake fails every
request waiting on it at once. The event stream (:class:`AsyncEventStream`) is a
``zmq.asyncio`` SUB socket.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import zmq
import zmq.asyncio

from forsetid import protocol as p

from .core import SILENT, Attempt, Core, Failure, Op, judged
from .events import Event, Follower, subscriber
from .near_cache import NearCache
from .security import CONNECTION_EVENTS, CurveKeys, Handshakes, monitored

BATCH = 16  # replies handed over per turn of the loop
SWEEP = 0.02  # seconds between looks for requests out of time (while any waits)
NOBODY = (None, 0.0)


class AsyncLine:
    """One DEALER to one endpoint, shared by the coroutines of one loop. The loop watches
    the socket's ZMQ_FD (and its monitor's): what is waiting is handed over by plain
    non-blocking calls, at most BATCH replies a turn, so that the loop's other tasks
    keep their turns (a ticker stays on time with a thousand requests in flight)."""

    def __init__(self, ctx: zmq.Context, endpoint: str, keys: CurveKeys | None, stray) -> None:
        self.endpoint = endpoint
        self._stray = stray
        self._loop = asyncio.get_running_loop()
        self.sock = sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 0)  # as many in flight as the coroutines ask for
        if keys is not None:
            keys.apply(sock)
        self.waiting: dict[int, tuple[asyncio.Future, Attempt]] = {}  # id -> its future, its attempt
        self._sweeping = False  # a sweep of the requests out of time is scheduled
        self.failure: Failure | None = None  # what the monitor said: every request here fails so
        self.watch = Handshakes(sock, curve=keys is not None, events=CONNECTION_EVENTS) if monitored(endpoint) else None
        sock.connect(endpoint)
        self._due = False  # a drain is scheduled
        self._outbox: list[bytes] | None = None  # frames to send at the end of this turn
        self._fds = [sock.getsockopt(zmq.FD)]
        self._loop.add_reader(self._fds[0], self._drain)
        if self.watch is not None:
            self._fds.append(self.watch.monitor.getsockopt(zmq.FD))
            self._loop.add_reader(self._fds[1], self._watched)
            # ZMQ_FD signals nothing until the socket was found empty once: look now.
            self._loop.call_soon(self._watched)

    def post(self, frame: bytes) -> None:
        try:
            self.sock.send(frame, zmq.NOBLOCK)
        except zmq.Again:  # no pipe (a refused handshake): the next request will tell
            pass
        self._soon()

    def request(self, a: Attempt) -> asyncio.Future | Failure:
        """Send the attempt's frame: the future of its reply (the caller awaits it, then
        calls ``done(a.id)``), or at once what keeps it from being sent."""
        if self.failure is not None and judged(self.failure, a) is not None:
            return self.failure
        if self._outbox is None and not self.waiting:  # alone: sent at once
            try:
                self.sock.send(a.frame, zmq.NOBLOCK)
            except zmq.Again:  # no pipe: a refused handshake
                return self._verdict(a, final=True) or SILENT
            self._soon()  # (a send may take in the signal of a reply that came meanwhile)
        else:  # with others: sent together at the end of this turn of the loop
            if self._outbox is None:
                self._outbox = []
                self._loop.call_soon(self._flush)
            self._outbox.append(a.frame)
        fut = self._loop.create_future()
        self.waiting[a.id] = (fut, a)
        if not self._sweeping:
            self._sweeping = True
            self._loop.call_later(SWEEP, self._sweep)
        return fut

    def _flush(self) -> None:
        """Send what this turn's requests left: one wake-up of ZeroMQ's I/O thread for
        them all, not one each (which costs more than the rest of a request here)."""
        out, self._outbox = self._outbox or [], None
        if self.sock.closed:
            return
        for frame in out:
            try:
                self.sock.send(frame, zmq.NOBLOCK)
            except zmq.Again:  # no pipe (a refused handshake): the monitor tells the waiting
                break
        self._soon()

    def _verdict(self, a: Attempt | None, final: bool = False) -> Failure | None:
        """What the monitor says, for attempt ``a`` (None: for the line itself)."""
        verdict = self.watch.verdict(final) if self.watch is not None else None
        if verdict is None or a is None:
            return None if verdict is None else Failure(*verdict)
        return judged(verdict, a, final)

    def _sweep(self) -> None:
        """Give up on the requests out of time (one timer for all, not one a request)."""
        now = time.monotonic()
        for fut, a in list(self.waiting.values()):
            if fut.done():
                continue
            if a.until <= now:
                fut.set_result(self._verdict(a, final=True) or SILENT)
            elif self.failure is not None and (failure := judged(self.failure, a)) is not None:
                fut.set_result(failure)  # (refused, and its grace is over)
        self._sweeping = bool(self.waiting) and not self.sock.closed
        if self._sweeping:
            self._loop.call_later(SWEEP, self._sweep)

    def _soon(self) -> None:
        """Drain on the loop's next turn if a reply waits (ZMQ_FD tells only of changes)."""
        if not self._due and self.sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            self._due = True
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        self._due = False
        if self.sock.closed:
            return
        waiting = self.waiting
        for frames in p.waiting(self.sock, BATCH):
            try:
                msg = p.decode(frames[-1])
            except p.BadMessage:
                continue  # (no id to match it by)
            fut = waiting.get(msg.id, NOBODY)[0]
            if fut is not None and not fut.done():
                fut.set_result(msg)
            else:
                self._stray(msg)
        self._soon()  # more than BATCH: the rest on the next turn

    def _watched(self) -> None:
        if self.watch is None:  # (closed meanwhile)
            return
        self.watch.read()
        self.failure = failure = self._verdict(None)  # (None again once a new connection's handshake succeeded)
        if failure is not None:
            for fut, a in self.waiting.values():
                if not fut.done() and judged(failure, a) is not None:
                    fut.set_result(failure)

    def close(self) -> None:
        for fd in self._fds:
            self._loop.remove_reader(fd)
        if self.watch is not None:
            self.watch.close(self.sock)
            self.watch = None
        self.sock.close()


class _Loop:
    near: NearCache | None = None


class _Ready:
    """An awaitable of a value at hand (a near-cache hit): no coroutine, no task."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __await__(self):
        return self.value
        yield  # (a generator: awaiting it returns at once)


class AsyncClient(Core):
    """Everything :class:`Client` does, as coroutines: ``await client.get(...)``,
    ``async with AsyncClient(...) as client``, ``async for event in client.events()``.
    For the coroutines of one event loop (made inside it: it starts its tasks there)."""

    def _setup(self) -> None:
        self._lines: dict[str, AsyncLine] = {}
        self._loop = _Loop()

    def events(self, group: str | None = None) -> AsyncEventStream:
        """An async iterator of started/exited events (of one group, or all); ``await
        stream.start()`` (or the first event) makes it live."""
        return AsyncEventStream(self, group)

    # -- how an Op is carried out: by awaiting --

    def _here(self) -> _Loop:
        return self._loop

    _now = _Ready

    async def _run(self, op: Op[Any]) -> Any:
        sent: Any = None
        try:
            while True:
                cmd = op.send(sent)
                if isinstance(cmd, Attempt):
                    sent = await self._attempt(cmd)
                else:
                    self._line(cmd.endpoint).post(cmd.frame)
                    sent = None
        except StopIteration as done:
            return done.value
        finally:
            op.close()  # (cancelled: its cleanup runs now)

    def _attempt(self, a: Attempt):
        """The reply, or a Failure (an awaitable of it: the future of the line's reply,
        no coroutine of its own: a thousand in flight are fewer objects to keep)."""
        line = AsyncLine(self._ctx, a.endpoint, self._keys, self.stray) if a.pinned else self._line(a.endpoint)
        out = line.request(a)
        if isinstance(out, Failure):
            self._drop(a, line)
            return _Ready(out)
        out.add_done_callback(lambda fut: self._done(a, line, fut))
        return out

    def _done(self, a: Attempt, line: AsyncLine, fut: asyncio.Future) -> None:
        """Answered, given up, or cancelled (then a late reply is dropped)."""
        line.waiting.pop(a.id, None)
        if a.pinned or (not fut.cancelled() and isinstance(fut.result(), Failure)):
            self._drop(a, line)

    def _drop(self, a: Attempt, line: AsyncLine) -> None:
        if a.pinned:
            line.close()
        elif self._lines.get(a.endpoint) is line and not line.waiting:
            del self._lines[a.endpoint]  # a new socket next time, not one that retries a dead peer
            line.close()

    def _line(self, endpoint: str) -> AsyncLine:
        line = self._lines.get(endpoint)
        if line is None:
            line = self._lines[endpoint] = AsyncLine(self._ctx, endpoint, self._keys, self.stray)
        return line

    def close(self) -> None:
        for line in self._lines.values():
            line.close()
        self._lines.clear()
        if self._loop.near is not None:
            self._loop.near.close()
            self._loop.near = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc) -> None:
        self.close()


class AsyncEventStream(Follower):
    """``async for event in stream``; ``await stream.next_event(timeout)`` (None if none
    came within it). Live once ``start()`` has returned (the first event starts it)."""

    def __init__(self, client: AsyncClient, group: str | None) -> None:
        super().__init__("", group)
        self._client = client
        self._sock: zmq.asyncio.Socket | None = None

    async def start(self) -> AsyncEventStream:
        if self._sock is not None:
            return self
        c = self._client
        publishers = await c._run(c._learn_publishers()) or [""]
        self.endpoint = publishers[0]
        self._sock, shakes = subscriber(zmq.asyncio.Context.shadow(c._ctx.underlying), self, c._keys, publishers)
        try:
            await self._first_tick(c.timeout, shakes)
        except BaseException:
            self.close()
            raise
        finally:
            if shakes is not None:
                shakes.close(self._sock)
        return self

    async def _first_tick(self, timeout: float, shakes: Handshakes | None) -> None:
        assert self._sock is not None
        deadline = time.monotonic() + timeout
        frames = asyncio.ensure_future(self._sock.recv_multipart())
        watch = asyncio.ensure_future(shakes.monitor.recv_multipart()) if shakes is not None else None
        try:
            while True:
                waits = [f for f in (frames, watch) if f is not None]
                await asyncio.wait(waits, timeout=deadline - time.monotonic(), return_when=asyncio.FIRST_COMPLETED)
                if watch is not None and watch.done():
                    shakes.take(watch.result())  # type: ignore[union-attr]
                    watch = asyncio.ensure_future(shakes.monitor.recv_multipart())  # type: ignore[union-attr]
                    if shakes.refused:  # type: ignore[union-attr]
                        raise self.refused(shakes)  # type: ignore[arg-type]
                if frames.done():
                    if self.first_tick(frames.result()):
                        return
                    frames = asyncio.ensure_future(self._sock.recv_multipart())
                elif time.monotonic() >= deadline:
                    if shakes is not None and shakes.failure is not None:
                        raise self.refused(shakes)
                    raise self.silent(timeout)
        finally:
            for f in (frames, watch):
                if f is not None:
                    f.cancel()

    async def next_event(self, timeout: float | None = None) -> Event | None:
        """The next event, or None if none came within ``timeout`` seconds."""
        await self.start()
        if (event := self.pending()) is not None:
            return event
        assert self._sock is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                frames = await asyncio.wait_for(self._sock.recv_multipart(), left)
            except asyncio.TimeoutError:
                return None
            if (event := self.take(frames)) is not None:
                return event

    def __aiter__(self) -> AsyncEventStream:
        return self

    async def __anext__(self) -> Event:
        event = await self.next_event()
        assert event is not None
        return event

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()

    async def __aenter__(self) -> AsyncEventStream:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        self.close()
