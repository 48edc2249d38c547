"""The Forseti client library and command line: ``from forsetictl import Client``."""

from forsetid.protocol import Call, Location, NodeInfo

from .client import (
    Client,
    Event,
    EventStream,
    ForsetiError,
    NoWorker,
    SpawnError,
    Timeout,
    UnknownGroup,
    ready,
)

__all__ = [
    "Call", "Client", "Event", "EventStream", "ForsetiError", "Location", "NodeInfo",
    "NoWorker", "SpawnError", "Timeout", "UnknownGroup", "ready",
]  # fmt: skip
