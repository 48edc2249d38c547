"""What the decisions ask the socket loops to do: small typed values, no I/O.

``Leader`` and ``Worker`` (``leader.py``, ``worker.py``) take one input and return a
list of these; ``leader_io.py`` and ``worker_io.py`` carry each out through one table
keyed by its type, as the decisions dispatch messages by theirs.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import protocol as p


@dataclass(slots=True)
class Reply:
    """Send ``msg`` to ``peer`` on the socket the input came in on (a ROUTER): the
    leader's for a leader, the worker's client socket for a worker."""

    peer: bytes
    msg: p.Msg


@dataclass(slots=True)
class Publish:
    """Broadcast an event on the leader's events socket, under its group's topic."""

    event: p.Event


@dataclass(slots=True)
class ToLeader:
    """Send ``msg`` to the leader (a worker's DEALER)."""

    msg: p.Msg


@dataclass(slots=True)
class ToPeer:
    """Send ``msg`` to another node's client endpoint (a call to a process it hosts)."""

    endpoint: str
    msg: p.Msg


@dataclass(slots=True)
class ToProcess:
    """Send ``frames`` to a process on the mailbox socket (``peer``: its DEALER)."""

    peer: bytes
    frames: list[bytes]


@dataclass(slots=True)
class Start:
    """Start a process through the fork server: everything it needs, decided already
    (the command with its placeholders filled, the arguments, the environment)."""

    token: int  # the worker's name for this start, in the fork server's reports
    entry: str | None
    command: list[str] | None
    args: list
    env: dict[str, str]
    key: str
    log: str | None = None  # the file its output goes to (None: the daemon's log)


@dataclass(slots=True)
class Record:
    """Write down what a successor must know (backend "etcd"): ``members/NODE``, the
    workers this leader knows, and ``calls/NAME``, the groups added at run time. None
    deletes it. With backend "memory" there is no successor to tell: nothing is done."""

    key: str
    value: bytes | None


@dataclass(slots=True)
class Signal:
    """Send ``signum`` to a process's whole process group."""

    pid: int
    signum: int


@dataclass(slots=True)
class Reconnect:
    """Drop the socket to the leader (silent too long, or no longer the leader) and open
    a new one to ``endpoint``."""

    endpoint: str


@dataclass(slots=True)
class Renew:
    """``cluster.partition = "stop"``: the worker's processes may live until ``until``
    (the fork server's lease clock), unless renewed again (``lease.py``)."""

    until: float


@dataclass(slots=True)
class RefillSpare:
    """A start that took the fork server's spare is registered: fork the next spare."""


@dataclass(slots=True)
class Dropped:
    """A request dropped because its caller gave up (its deadline passed): logged
    rate-limited, never answered."""

    text: str


@dataclass(slots=True)
class Exit:
    """The daemon cannot go on: it exits with ``status`` after this turn, ``why`` its
    last line (a worker refused by its leader: not allowed, or its name taken)."""

    status: int
    why: str


@dataclass(slots=True)
class Note:
    """A line for the daemon's log: the decisions say what changed, once, as they see it."""

    level: int  # logging.INFO, logging.WARNING...
    text: str


# What the leader's decisions return (``leader.py``, ``hello.py``, ``registry.py``).
LeaderOut = list[Reply | Publish | Note | Record]
