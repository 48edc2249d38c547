"""The Forseti client library and command line: ``from forsetictl import Client``.

Everything but ``ready`` is loaded on first use, so that a managed process which only
calls ``forsetictl.ready()`` does not import ZeroMQ (and its fork server stays small)."""

from .ready import ready as ready  # (the one name loaded at once)

_FROM_PROTOCOL = {"Call", "Location", "NodeInfo"}
_FROM_CLIENT = {
    "AccessDenied",
    "BadEndpoint",
    "BadRequest",
    "Busy",
    "Client",
    "Event",
    "EventStream",
    "ForsetiError",
    "Gone",
    "NotFound",
    "NoWorker",
    "SpawnError",
    "Timeout",
    "UnknownGroup",
    "Unreachable",
}
_FROM_SECURITY = {"KeyFileError", "keygen"}
_FROM_MAILBOX = {"NoMailbox", "Request", "aserve", "amailbox", "mailbox", "serve"}

__all__ = sorted(_FROM_PROTOCOL | _FROM_CLIENT | _FROM_SECURITY | _FROM_MAILBOX | {"ready", "AsyncClient"})


def __getattr__(name: str):
    if name in _FROM_PROTOCOL:
        from forsetid import protocol

        return getattr(protocol, name)
    if name in _FROM_CLIENT:
        from . import client

        return getattr(client, name)
    if name == "AsyncClient":
        from .aio import AsyncClient

        return AsyncClient
    if name in _FROM_SECURITY:
        from . import security

        return getattr(security, name)
    if name in _FROM_MAILBOX:
        from . import inbox

        return getattr(inbox, name)
    raise AttributeError(f"module 'forsetictl' has no attribute {name!r}")
