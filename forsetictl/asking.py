"""How a client asks: a request's frame (checked by the protocol's own types before it
is sent), its attempts on the wire, which node it goes to and when it moves to another,
which requests are sent again there, and what a failure raises. No I/O: the shells carry
out the attempts (``core.py`` says how)."""

from __future__ import annotations

import re
import time
from collections.abc import Generator
from typing import Any, NamedTuple, TypeVar

from forsetid import protocol as p

from .errors import AUTHENTICATION, AccessDenied, BadEndpoint, BadRequest, ForsetiError, Timeout, Unreachable, raised

# Requests that may be sent again to another node when theirs stopped answering: each
# has the same effect done twice as once (a get of a key that started meanwhile finds
# it; a second stop finds nothing to stop). Changes to the cluster's groups and nodes
# are not repeated: their answer would be the second one's.
SAFE_TO_REPEAT = frozenset((p.Get, p.Find, p.Stop, p.List, p.Nodes, p.Calls, p.Info))
PATIENCE = 1.0  # seconds an attempt waits at least before a safe request moves to another node
REFUSED_GRACE = 0.5  # seconds a refused connection is given (a daemon starting) when there is nowhere else to go
_SCHEME = re.compile(r"^(tcp|ipc|inproc|ws|wss|tipc|vmci)://.+")
_ANY_HOST = re.compile(r"^tcp://(\*|0\.0\.0\.0|\[::\]|::):")  # a bind to every interface: no address to connect to

T = TypeVar("T")
Op = Generator[Any, Any, T]  # what the shells run


class Attempt(NamedTuple):
    endpoint: str
    id: int
    frame: bytes
    until: float  # time.monotonic() after which the shell gives up waiting
    pinned: bool = False  # a probe of this one endpoint (leader()): a line of its own, closed after
    refused_at: float = 0.0  # from when a refused connection counts (before: it may be starting)


class Post(NamedTuple):
    endpoint: str
    frame: bytes


class Failure(NamedTuple):
    """What a shell sends back when no reply came: ``kind`` "silent" (nothing within the
    time), "refused" (nothing listens), "lost" (the connection broke), "denied" (the
    handshake was refused), "malformed" (a frame that does not decode)."""

    kind: str
    why: str = ""


SILENT = Failure("silent")


def judged(verdict: tuple[str, str] | None, a: Attempt, final: bool = False) -> Failure | None:
    """What a socket's monitor says (``Handshakes.verdict``) means for attempt ``a``: a
    refused connection counts only from ``a.refused_at`` (or once the wait is over)."""
    if verdict is None or (verdict[0] == "refused" and not final and time.monotonic() < a.refused_at):
        return None
    return Failure(*verdict)


def endpoints(spec: str | list[str] | tuple[str, ...]) -> list[str]:
    """The endpoints a client was given: one, a list, or comma-separated; each must have
    a scheme (``tcp://HOST:PORT``, ``ipc://PATH``): BadEndpoint names one that has not."""
    given = [spec] if isinstance(spec, str) else list(spec)
    out = [e.strip() for part in given for e in str(part).split(",") if e.strip()]
    if not out:
        raise BadEndpoint("no endpoint given (e.g. tcp://127.0.0.1:7072)")
    for e in out:
        if not _SCHEME.match(e):
            hint = f": write tcp://{e}" if "://" not in e else ""
            raise BadEndpoint(f"endpoint {e!r} has no known scheme (tcp://, ipc://, inproc://){hint}")
    return list(dict.fromkeys(out))


class Endpoints:
    """Which node a client talks to: the ones it was given, then the ones it learnt from
    the cluster (the nodes' ``listen``). It stays with one until that one fails."""

    def __init__(self, given: list[str]) -> None:
        self.all = list(given)
        self.current = given[0]
        self.asked: set[str] = set()  # nodes already asked for the others' endpoints

    def learn(self, listens: list[str]) -> None:
        for e in listens:
            if e and e not in self.all and _SCHEME.match(e) and not _ANY_HOST.match(e):
                self.all.append(e)

    def others(self, tried: list[str]) -> bool:
        return len(self.all) > 1 and any(e not in tried for e in self.all)

    def move(self, tried: list[str]) -> str | None:
        """The next endpoint after the current one not tried yet (now the current one), or None."""
        i = self.all.index(self.current) if self.current in self.all else -1
        for e in self.all[i + 1 :] + self.all[: i + 1]:
            if e not in tried:
                self.current = e
                return e
        return None


class Asking:
    """The requests of one client (``Core`` holds its state: endpoints, timeout, ids)."""

    endpoints: Endpoints
    timeout: float
    requests: int
    _ids: Any
    _learning: dict[int, str]

    # -- one request: its frame, its attempts, its answer --

    def _ask(
        self, msg: p.Msg, at: str | None = None, timeout: float | None = None, repeat: bool | None = None
    ) -> Op[Any]:
        """Send ``msg`` and return its reply; ``at``: to that endpoint alone; ``timeout``:
        this request's own (default the client's). A request safe to repeat (``repeat``,
        by default its kind's: SAFE_TO_REPEAT) moves to another node when its own stops
        answering, within the timeout; another raises at once what became of it."""
        timeout = self.timeout if timeout is None else timeout
        msg.id = next(self._ids)
        if isinstance(msg, p.Request):  # when its caller stops waiting: a daemon drops it after that
            msg.deadline = time.time() + timeout
        try:
            frame = p.checked(msg)
        except p.Refused as exc:
            raise BadRequest(f"refused before sending: {exc}") from None
        self.requests += 1
        deadline = time.monotonic() + timeout
        repeat = at is None and (type(msg) in SAFE_TO_REPEAT if repeat is None else repeat)
        tried: list[str] = []
        while True:
            endpoint = at or self.endpoints.current
            tried.append(endpoint)
            now = until = refused_at = time.monotonic()
            if repeat and self.endpoints.others(tried):
                until = min(deadline, now + max(PATIENCE, timeout / 2))
            else:  # nowhere else to go: a node that is just starting may yet listen
                until, refused_at = deadline, min(deadline, now + REFUSED_GRACE)
            out = yield Attempt(endpoint, msg.id, frame, until, at is not None, refused_at)
            if not isinstance(out, Failure):
                if at is None and endpoint not in self.endpoints.asked:
                    yield self._ask_for_others(endpoint)
                if isinstance(out, p.Error):
                    raise raised(out)
                return out
            moved = at is None and out.kind != "malformed" and self.endpoints.move(tried)
            if not (repeat and moved) or out.kind == "denied" or time.monotonic() >= deadline:
                raise self._failed(out, endpoint, timeout)

    def _ask_for_others(self, endpoint: str) -> Post:
        """A `nodes` request posted to a node that answered: its reply (read whenever
        it comes) tells the other nodes' client endpoints."""
        self.endpoints.asked.add(endpoint)
        msg = p.Nodes(id=next(self._ids))
        self._learning[msg.id] = endpoint
        return Post(endpoint, p.encode(msg))

    def stray(self, msg: p.Msg) -> None:
        """A reply that no request waits for: the answer to a posted `nodes`, or one
        that came too late (dropped)."""
        if self._learning.pop(msg.id, None) is not None and isinstance(msg, p.NodeList):
            self.endpoints.learn([n.listen for n in msg.items if n.state in ("up", "draining")])

    def _failed(self, out: Failure, endpoint: str, timeout: float) -> ForsetiError:
        if out.kind == "denied":
            return AccessDenied(f"authentication failed at {endpoint}: {out.why}", AUTHENTICATION)
        if out.kind == "refused":
            return Unreachable(f"nothing listens at {endpoint} (connection refused): is forsetid running there?")
        if out.kind == "malformed":
            return ForsetiError(f"malformed reply from {endpoint}: {out.why}", p.BAD_MESSAGE)
        if out.kind == "lost":
            return Timeout(f"no answer from {endpoint}: the connection was lost")
        return Timeout(f"no answer from {endpoint} within {timeout:g} s")
