"""A managed process's side of ``call`` and ``send``: its mailbox.

Inside a process that Forseti started for a group with a mailbox::

    for request in forsetictl.mailbox():     # blocks; Request(payload, one_way)
        request.reply(b"...")                 # a one-way request ignores its reply

or ``forsetictl.serve(handler)`` with ``handler(payload) -> bytes | None``; and in
asyncio, ``async for request in forsetictl.amailbox()`` and ``await
forsetictl.aserve(handler)`` (the handler may be a coroutine function).

An exception in a handler ends the process (and each caller waiting on it hears
``gone``, naming the exit): as in Erlang, a process that cannot answer should crash,
and its group's restart policy decides what comes next.

A process in another language does the same with a ZeroMQ DEALER: connect it to
``$FORSETI_MAILBOX``, send ``[b"hello", $FORSETI_MAILBOX_ID]``, then answer each
``[b"call" | b"send", N, PAYLOAD]`` with ``[b"reply", N, PAYLOAD]`` (a one-way one as
soon as it is taken).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import AsyncIterator, Callable, Iterator

import zmq

from forsetid.const import MAILBOX_ENV, MAILBOX_ID_ENV


class NoMailbox(RuntimeError):
    """Not run by Forseti, or run for a group without a mailbox (``mailbox = 0``)."""


class Request:
    """One request: ``payload`` (bytes), ``one_way`` (a send: its reply is not used)."""

    __slots__ = ("_number", "_send", "one_way", "payload", "replied")

    def __init__(self, number: bytes, one_way: bool, payload: bytes, send) -> None:
        self._number, self.one_way, self.payload, self._send = number, one_way, payload, send
        self.replied = one_way  # a one-way request was answered as it was taken

    def reply(self, payload: bytes = b"") -> None:
        """Answer it (once; a one-way request's reply is dropped)."""
        if self.replied:
            return
        self.replied = True
        self._send([b"reply", self._number, bytes(payload)])

    def __repr__(self) -> str:
        return f"Request(payload={self.payload[:40]!r}, one_way={self.one_way})"


def _endpoint() -> tuple[str, bytes]:
    endpoint, ident = os.environ.get(MAILBOX_ENV), os.environ.get(MAILBOX_ID_ENV)
    if not endpoint or not ident:
        raise NoMailbox(f"no mailbox: ${MAILBOX_ENV} is not set (not run by Forseti, or its group has mailbox = 0)")
    return endpoint, ident.encode()


def _open(ctx: zmq.Context) -> zmq.Socket:
    endpoint, ident = _endpoint()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 1000)  # (the last replies still go out as the process ends)
    sock.connect(endpoint)
    sock.send_multipart([b"hello", ident])
    return sock


def _request(frames: list[bytes], send) -> Request | None:
    if len(frames) != 3 or frames[0] not in (b"call", b"send"):
        return None  # nothing a worker sends: skipped
    request = Request(frames[1], frames[0] == b"send", frames[2], send)
    if request.one_way:
        send([b"reply", frames[1], b""])  # taken: its place in the mailbox is free again
    return request


def mailbox() -> Iterator[Request]:
    """The requests for this process, as they come (blocks); raises NoMailbox if there is none."""
    sock = _open(zmq.Context())
    try:
        while True:
            request = _request(sock.recv_multipart(), sock.send_multipart)
            if request is not None:
                yield request
    finally:
        sock.close()


def serve(handler: Callable[[bytes], bytes | None]) -> None:
    """Answer every request with ``handler(payload)`` (None: an empty reply), for ever."""
    for request in mailbox():
        out = handler(request.payload)
        request.reply(b"" if out is None else out)


async def amailbox() -> AsyncIterator[Request]:
    """:func:`mailbox` for asyncio."""
    import zmq.asyncio

    sock = _open(zmq.asyncio.Context())
    try:
        while True:
            request = _request(await sock.recv_multipart(), sock.send_multipart)
            if request is not None:
                yield request
    finally:
        sock.close()


async def aserve(handler) -> None:
    """:func:`serve` for asyncio; ``handler`` may be a coroutine function."""
    async for request in amailbox():
        out = handler(request.payload)
        if inspect.isawaitable(out):
            out = await out
        request.reply(b"" if out is None else out)
