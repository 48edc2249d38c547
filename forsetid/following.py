"""How a worker finds and keeps its leader: the one leader of backend "memory", or the
candidate that etcd elected (backend "etcd"), found without etcd. A worker connects to
one candidate at a time and goes where it is told: to a candidate that announces it was
elected (``Elected``, on the events of every candidate it follows), or to the one a
standby names in its ``not-leader`` answer; with no welcome, it tries the next
candidate after a heartbeat, more slowly after each round. Whenever it goes elsewhere it
says hello and sends again the requests still waiting where that is safe. A hello the
leader refuses ends the daemon: at once when the node may not join, after
:func:`name_wait` when another live daemon has its name. Part of ``worker.Worker`` (a
base class of it), as ``hello.py`` is of the leader.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import msgspec

from . import protocol as p
from .effects import Exit, Note, Reconnect, Reply, ToLeader
from .lease import Lease

NAME_MARGIN = 1.0  # seconds beyond the leader's silence and two heartbeats (a loaded machine's delays)


def name_wait(heartbeat: float, liveness: int) -> float:
    """How long a worker whose name the leader says is taken tries again before it
    exits. Long enough for a restart of the same node to join: a leader takes a daemon
    that died for down when its connection closes (about 0.2 s), one whose machine
    vanished (or that is frozen) after ``heartbeat`` x ``liveness`` of silence, noticed
    within a heartbeat, and the newcomer says hello again at its next heartbeat. A
    daemon that goes on speaking keeps its name: the newcomer gives up."""
    return heartbeat * (liveness + 2) + NAME_MARGIN


class Following:
    # The worker's parts this uses (``worker.Worker.__init__`` makes them).
    node: str
    clock: Callable[[], float]
    wall: Callable[[], float]
    heartbeat: float
    silence: float
    patience: float
    last_heard: float
    switched_at: float
    welcomed: bool
    leader_lost: bool
    leaving: bool
    hello_id: int
    name_wait: float  # (name_wait())
    taken_since: float | None  # when the leader first said this node's name is taken (None: it did not)
    forwards: dict[int, tuple[bytes, int, p.Msg]]
    about: p.InfoReply
    leader_epoch: str | None
    lease: Lease | None

    hello: Callable[[], p.Hello]
    _no_leader: Callable[[int], p.Error]
    _answer: Callable[[bytes, int, p.Msg], list]

    def follow(self, leaders: list[tuple[str, str]]) -> None:
        """Where a leader may be, (name, endpoint): the one leader, or every candidate
        (backend "etcd"). The DEALER is connected to one of them, ``target``."""
        self.leaders = leaders
        self.names = [name for name, _ in leaders]
        self.by_election = self.names != [""]  # backend "etcd": candidates, one of them elected
        self.target = self.names.index(self.node) if self.node in self.names else 0  # (role "both": its own first)
        self.term = 0  # the newest term that welcomed it: a leader of an older one is not obeyed
        self.elected_term = 0  # the newest term it heard elected, whose leader it went to
        self.unwelcomed = 0  # candidates tried in a row without a welcome: the search slows
        self.hinted_at = float("-inf")  # when it last went where a standby said the leader is
        self.leader_name = ""

    @property
    def endpoint(self) -> str:
        return self.leaders[self.target][1]

    def _lose_leader(self, now: float) -> list:
        """Start again on a new socket; until a welcome, clients hear "no leader" at once
        (but for lookups of this worker's own processes: ``Worker._cached``)."""
        out: list = []
        if not self.leader_lost:
            text = f"{self.node} lost the leader: no word for {now - self.last_heard:.1f} s; only lookups of its own"
            out.append(Note(logging.WARNING, text + " processes are answered until it is back"))
        self.leader_lost, self.welcomed, self.last_heard = True, False, now
        self.patience = min(2 * self.patience, max(10.0, self.silence))
        out += self._no_leader_for_all()
        # Any leader of an older term has lost its lease by now (silence > lease): a
        # rebuilt etcd, whose terms start again, is followed too.
        self.term = self.elected_term = 0
        return out + self._switch(self._next() if self.by_election else self.target, "")

    def _no_leader_for_all(self) -> list:
        """Every request waiting for the leader is answered no-leader (and forgotten)."""
        forwards, self.forwards = self.forwards, {}
        return [
            e
            for client, client_id, _ in forwards.values()
            for e in self._answer(client, client_id, self._no_leader(client_id))
        ]

    def _next(self) -> int:
        return (self.target + 1) % len(self.leaders)

    def _search_gap(self) -> float:
        """A heartbeat per candidate, then longer after each round that found no leader."""
        rounds = self.unwelcomed // len(self.leaders)
        return min(self.heartbeat * (1 + rounds), max(self.heartbeat, self.silence))

    def _switch(self, target: int, why: str) -> list:
        """A new socket to ``leaders[target]``, a hello, and the requests still waiting
        for an answer sent again where that is safe: a get, stop or lookup asked twice
        of a leader is answered as once; an add-call or remove-call may have been done."""
        self.target, self.welcomed, self.switched_at = target, False, self.clock()
        name, endpoint = self.leaders[target]
        out: list = [Note(logging.INFO, f"{self.node} goes to leader candidate {name}: {why}")] if why else []
        out += [Reconnect(endpoint), ToLeader(self.hello())]
        if self.leaving:  # (a new leader must know it too, not take it for down)
            out.append(ToLeader(p.Leaving()))
        for fid, (client, client_id, request) in list(self.forwards.items()):
            if isinstance(request, p.Request) and p.expired(request.deadline, self.wall()):
                del self.forwards[fid]  # its caller gave up: not sent again (nor started later)
                out += self._answer(client, client_id, self._no_leader(client_id))  # (what waits behind it)
            elif isinstance(request, (p.AddCall, p.RemoveCall)):
                del self.forwards[fid]
                text = (
                    f"the leader changed before it answered '{p.tag(request)}': see `forsetictl calls`, and try again"
                )
                out.append(Reply(client, p.Error(id=client_id, kind=p.NO_LEADER, message=text)))
            else:
                out.append(ToLeader(msgspec.structs.replace(request, id=fid)))
        return out

    def _not_leader(self, msg: p.Error) -> list:
        """A candidate that does not lead: go where it says the leader is. A request it
        refused stays waiting, to go again to the leader."""
        if msg.id == self.hello_id or self.welcomed:
            self.welcomed = False  # (a leader whose term ended)
        names = self.names
        hint = names.index(msg.leader) if msg.leader in names else None
        now = self.clock()
        if hint is None or hint == self.target or now - self.hinted_at < self.heartbeat / 10:
            return []  # (no hint, or hints chasing each other: the next try goes elsewhere in a heartbeat)
        self.hinted_at = now
        return self._switch(hint, f"{names[self.target]} says {msg.leader} leads")

    def _refused(self, msg: p.Error) -> list:
        """The leader refused this node's hello: not allowed (not in ``cluster.nodes``, or
        a key of another node), the daemon exits at once; its name taken, it says hello
        again at each heartbeat (on the leader's pong) and exits after ``name_wait``."""
        where = self._leader_where()
        if msg.kind in (p.NOT_ALLOWED, p.FORBIDDEN):
            return [Exit(2, f"{where} refused this node: {msg.message}")]
        if msg.kind != p.NAME_TAKEN:
            return [Note(logging.WARNING, f"{where} refused this node's hello: {msg.message}")]
        now = self.clock()
        if self.taken_since is None:
            self.taken_since = now
            text = f"{self.node}: {where} says another daemon named {self.node} is up; trying again for"
            return [Note(logging.WARNING, f"{text} {self.name_wait:g} s, until the leader takes it for gone")]
        if now - self.taken_since < self.name_wait:
            return []
        return [
            Exit(
                2,
                f"{self.node}: another live daemon has the name {self.node} at {where} (refused for "
                f"{now - self.taken_since:.1f} s, longer than one that died or vanished takes to be seen gone); "
                "stop that one, or start this one under another name (--name)",
            )
        ]

    def _leader_where(self) -> str:
        name, endpoint = self.leaders[self.target]
        if endpoint.startswith("inproc://"):
            return "the leader in this daemon"
        return f"the leader {name} at {endpoint}" if name else f"the leader at {endpoint}"

    def _elected(self, msg: p.Elected) -> list:
        if msg.term <= max(self.term, self.elected_term) or msg.node not in self.names:
            return []  # (old news, or on its way there already)
        self.elected_term = msg.term
        return self._switch(self.names.index(msg.node), f"elected in term {msg.term}")

    def _adrift(self) -> bool:
        """With partition "stop", a lease held once and lapsed: no leader has vouched for
        this worker in time, its processes are dead, and what its cache knows of others'
        may be stale by as long; it answers "no leader" until a leader answers it again."""
        return self.lease is not None and self.lease.adrift()

    def _info(self, req_id: int) -> p.InfoReply:
        """This node, and the leader it has joined (none while it has not)."""
        about, joined = self.about, self.welcomed
        events = about.events
        if self.by_election:  # the events endpoint of the candidate that leads
            seat = next((s for s in about.candidates if s.name == self.leader_name), None)
            events = seat.events if seat is not None and joined else ""
        return msgspec.structs.replace(
            about, id=req_id, events=events, leader=self.leader_name if joined else "", term=self.term,
            epoch=self.leader_epoch or "" if joined else "",
        )  # fmt: skip
