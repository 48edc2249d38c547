"""The sync client: :class:`Client`, a thin shell around the core (``core.py``) that
waits by blocking. Each thread that uses a Client has sockets of its own (``line.py``),
all closed by ``close()``.

With ``cache=True`` it also keeps a *near cache* (per thread): the locations it has been
answered with, kept true by the leader's events on a SUB socket of its own, so that a
repeated ``find``/``get`` of a live key costs no round trip at all (``near_cache.py``).

With ``key`` and ``server_key`` every socket it opens is a CURVE client; a monitor on
each request socket tells a handshake the server refused, a connection refused and a
connection lost, so that each is told at once, not as a timeout.
"""

from __future__ import annotations

import threading
from typing import Any

from forsetid.protocol import Location as Location
from forsetid.protocol import NodeInfo as NodeInfo

from .core import DEFAULT_ENDPOINT as DEFAULT_ENDPOINT
from .core import Attempt, Core, Failure, Op, Post
from .errors import AUTHENTICATION as AUTHENTICATION
from .errors import AccessDenied as AccessDenied
from .errors import BadEndpoint as BadEndpoint
from .errors import BadRequest as BadRequest
from .errors import Busy as Busy
from .errors import ForsetiError as ForsetiError
from .errors import Gone as Gone
from .errors import NotFound as NotFound
from .errors import NoWorker as NoWorker
from .errors import SpawnError as SpawnError
from .errors import Timeout as Timeout
from .errors import UnknownGroup as UnknownGroup
from .errors import Unreachable as Unreachable
from .events import Event as Event
from .events import EventStream
from .line import Line
from .near_cache import NearCache


class _Here(threading.local):
    """One thread's share of a Client: its sockets, its near cache (made on each
    thread's first use, and listed then for close())."""

    def __init__(self, threads: list[_Here], lock: threading.Lock) -> None:
        self.lines: dict[str, Line] = {}
        self.near: NearCache | None = None
        with lock:
            threads.append(self)


class Client(Core):
    """Talks to a node (a worker's ``node.listen``, or the leader), or to any of several:
    ``endpoint`` is one, a list, or comma-separated. From the first node that answers
    it learns the others' client endpoints; when its node stops answering, a request
    safe to repeat moves to another within its timeout. May be shared by threads.

    ``cache=True``: answer ``find``/``get`` of a key seen before from memory (see
    :class:`NearCache`).

    ``key``: the path of this client's own ``.key_secret`` file, and ``server_key``: the
    path of the cluster's public key file (``server.key``); both or neither. With them
    every socket is a CURVE client; a request outside the key's role raises
    :class:`AccessDenied` (kind ``"forbidden"``), a handshake the server refused raises it
    with kind ``"authentication"``, at once. A file that cannot be used raises
    ``KeyFileError`` (a ValueError) naming it; an endpoint without a scheme,
    ``BadEndpoint`` (a ValueError)."""

    def _setup(self) -> None:
        self._threads: list[_Here] = []  # every thread's share, for close()
        self._local = _Here(self._threads, threading.Lock())

    def events(self, group: str | None = None) -> EventStream:
        """Follow started/exited events (of one group, or all). The stream is live when
        this returns: nothing published afterwards is missed for want of a subscription."""
        first, *others = self._run(self._learn_publishers()) or [""]
        return EventStream(self._ctx, first, group, self.timeout, self._keys, others)

    # -- how an Op is carried out: by blocking --

    def _here(self) -> _Here:
        return self._local

    @staticmethod
    def _now(value: Any) -> Any:
        return value

    def _run(self, op: Op[Any]) -> Any:
        sent: Any = None
        try:
            while True:
                cmd = op.send(sent)
                sent = self._attempt(cmd) if isinstance(cmd, Attempt) else self._post(cmd)
        except StopIteration as done:
            return done.value

    def _attempt(self, a: Attempt):
        lines = self._local.lines
        line = lines.get(a.endpoint) if not a.pinned else None
        if line is None:
            line = Line(self._ctx, a.endpoint, self._keys, self.stray)
            if not a.pinned:
                lines[a.endpoint] = line
        out = line.exchange(a)
        if isinstance(out, Failure) or a.pinned:
            # A late answer, or a request still queued for a peer that is not there, must
            # not surface later, nor a socket go on retrying a refused handshake.
            if lines.get(a.endpoint) is line:
                del lines[a.endpoint]
            line.close()
        return out

    def _post(self, post: Post) -> None:
        lines = self._local.lines
        line = lines.get(post.endpoint)
        if line is None:
            line = lines[post.endpoint] = Line(self._ctx, post.endpoint, self._keys, self.stray)
        line.post(post.frame)

    def close(self) -> None:
        """Close every thread's sockets (call it when no thread is in a request)."""
        for here in list(self._threads):
            for line in here.lines.values():
                line.close()
            here.lines.clear()
            if here.near is not None:
                here.near.close()
                here.near = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
