"""The mailboxes of one worker's processes: decisions only (sans-I/O), as ``Processes``.

Each process of a group with a mailbox (``calls.NAME.mailbox`` > 0) finds
``FORSETI_MAILBOX`` (the worker's mailbox endpoint, an ``ipc://`` path in a folder of
mode 0700) and ``FORSETI_MAILBOX_ID`` in its environment. It connects a ZeroMQ DEALER
there and says hello with its id; from then on the worker pushes it every request for
its key and it answers each one (``protocol.mailbox_frames`` has the frames).

A request waits here until the process has said hello, then counts as *open* until the
process answers it: a one-way request (``send``) is answered as the process takes it,
a call with its reply. At most ``mailbox`` requests wait or are open; one more is
refused with ``busy``. When the process exits, every caller still waiting for a reply
hears ``gone``, naming the exit. A request whose caller's deadline has passed is
dropped, not delivered.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from . import protocol as p
from .effects import Dropped, Reply, ToProcess


@dataclass(slots=True)
class Letter:
    """One request: who waits for its answer, and what to deliver."""

    caller: bytes  # the peer on node.listen that sent it (a client, or another node)
    caller_id: int  # the id its answer carries
    one_way: bool
    payload: bytes
    deadline: float


@dataclass
class Box:
    token: int  # the process's, in Processes
    name: str  # "group/key (pid N)", for errors
    limit: int
    peer: bytes | None = None  # the process's DEALER, once it has said hello
    queue: deque[Letter] = field(default_factory=deque)  # until it says hello
    open: dict[int, Letter] = field(default_factory=dict)  # delivered, not answered: request number -> letter

    @property
    def depth(self) -> int:
        return len(self.queue) + len(self.open)


class Mailboxes:
    def __init__(self, wall: Callable[[], float], numbers) -> None:
        self.wall = wall
        self.numbers = numbers  # an iterator of request numbers (the worker's ids)
        self.boxes: dict[int, Box] = {}  # token -> box
        self.by_peer: dict[bytes, Box] = {}
        self.held = 0  # requests in every mailbox, waiting or unanswered (a metric reads it)

    def open_box(self, token: int, name: str, limit: int) -> None:
        """A process is being started with a mailbox of ``limit`` requests."""
        self.boxes[token] = Box(token, name, limit)

    def rename(self, token: int, name: str) -> None:
        box = self.boxes.get(token)
        if box is not None:
            box.name = name

    def deliver(self, token: int, caller: bytes, msg: p.Talk) -> list:
        """A call or send for the process ``token``: to it, into its queue, or refused."""
        box = self.boxes.get(token)
        if box is None:
            return [Reply(caller, p.Error(id=msg.id, kind=p.NO_MAILBOX, message=f"{msg.group} takes no messages"))]
        if box.depth >= box.limit:
            text = f"the mailbox of {box.name} is full ({box.limit} requests unanswered)"
            return [Reply(caller, p.Error(id=msg.id, kind=p.BUSY, message=text))]
        letter = Letter(caller, msg.id, msg.one_way, msg.payload, msg.deadline)
        self.held += 1
        out: list = [Reply(caller, p.Ok(id=msg.id))] if msg.one_way else []  # a send: in the mailbox
        if box.peer is None:
            box.queue.append(letter)
            return out
        return out + self._push(box, letter)

    def on_process(self, peer: bytes, frames: list[bytes]) -> list:
        """What a process sent on the mailbox socket."""
        said = p.mailbox_frame(frames)
        if isinstance(said, p.MailboxHello):
            box = self.boxes.get(said.id)
            if box is None or box.peer is not None:
                return []  # not a process of ours, or one that said hello already
            box.peer = peer
            self.by_peer[peer] = box
            out: list = []
            while box.queue:
                out += self._push(box, box.queue.popleft())
            return out
        box = self.by_peer.get(peer)
        if box is None or said is None:
            return []
        letter = box.open.pop(said.number, None)
        self.held -= letter is not None
        if letter is None or letter.one_way:
            return []  # (a one-way request's caller had its answer when it was queued)
        return [Reply(letter.caller, p.Answer(id=letter.caller_id, payload=said.payload))]

    def close_box(self, token: int, how: str) -> list:
        """The process ended (``how``: "exited with code 1", "killed by signal 9"): every
        caller that waits for its reply hears ``gone``."""
        box = self.boxes.pop(token, None)
        if box is None:
            return []
        if box.peer is not None:
            self.by_peer.pop(box.peer, None)
        self.held -= box.depth
        text = f"{box.name} ended before it answered: {how}"
        waiting = [*box.queue, *box.open.values()]
        return [Reply(w.caller, p.Error(id=w.caller_id, kind=p.GONE, message=text)) for w in waiting if not w.one_way]

    def _push(self, box: Box, letter: Letter) -> list:
        if p.expired(letter.deadline, self.wall()):
            self.held -= 1
            return [Dropped(f"a call to {box.name} past its deadline, not delivered")]  # its caller gave up
        number = next(self.numbers)
        box.open[number] = letter
        return [ToProcess(box.peer or b"", p.mailbox_request(number, letter.one_way, letter.payload))]
