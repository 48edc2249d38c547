"""What a client raises: one exception per thing that can go wrong, and the table from
an ``error`` reply's kind to its exception (both clients raise the same ones)."""

from __future__ import annotations

from forsetid import protocol as p


class ForsetiError(Exception):
    """The cluster answered with an error (or did not answer: see subclasses).

    ``kind``: what went wrong, as the wire's error kinds spell it (``"spawn-failed"``,
    ``"no-worker"``...), or the client's own (``"timeout"``, ``"authentication"``,
    ``"bad-request"``, ``"bad-call"``); the message says it for a person."""

    kind = "error"

    def __init__(self, message: str, kind: str | None = None) -> None:
        super().__init__(message)
        if kind is not None:
            self.kind = kind


class SpawnError(ForsetiError):
    """The process could not be started (the message says why)."""

    kind = p.SPAWN_FAILED


class UnknownGroup(ForsetiError):
    """The cluster has no group of that name (``add_call`` adds one)."""

    kind = p.UNKNOWN_GROUP


class NoWorker(ForsetiError):
    """No worker is up with room for one more process."""

    kind = p.NO_WORKER


class Timeout(ForsetiError):
    """No answer within the client's timeout."""

    kind = "timeout"


class Unreachable(Timeout):
    """Nothing listens at the endpoint (the connection was refused): told within about
    a second, not after the whole timeout. Its kind stays ``"timeout"``: no answer."""


class AccessDenied(ForsetiError):
    """The request is outside the sender's role (kind ``"forbidden"``), or the server
    refused this client at the handshake (kind ``"authentication"``: a key in no role
    folder, no key for a CURVE server, a key for a server without CURVE)."""

    kind = p.FORBIDDEN


class NotFound(ForsetiError):
    """A call or send with ``create=False`` to a key that runs nowhere."""

    kind = p.NOT_FOUND


class Gone(ForsetiError):
    """The process ended, or its node was lost, before it answered (the message says how)."""

    kind = p.GONE


class Busy(ForsetiError):
    """The process's mailbox is full (``calls.NAME.mailbox`` requests unanswered)."""

    kind = p.BUSY


class BadRequest(ForsetiError, ValueError):
    """A request that breaks a rule of the protocol (a group name, a key, the size of a
    request), refused before it is sent; the message names the rule."""

    kind = "bad-request"


class BadEndpoint(ValueError):
    """An endpoint a client cannot use (no scheme, say): the message names it."""


AUTHENTICATION = "authentication"  # the kind of an AccessDenied raised for a refused handshake

_ERRORS: dict[str, type[ForsetiError]] = {
    cls.kind: cls for cls in (SpawnError, UnknownGroup, NoWorker, AccessDenied, NotFound, Gone, Busy, Timeout)
}
_ERRORS[p.NO_LEADER] = Timeout  # the node answered at once that no leader does


def raised(reply: p.Error) -> ForsetiError:
    """The exception an ``error`` reply means."""
    return _ERRORS.get(reply.kind, ForsetiError)(reply.message, reply.kind)
