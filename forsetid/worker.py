"""A worker's decisions, with no sockets inside (sans-I/O).

Each ``on_*`` method takes one input (a client request, a message from the leader, an
event, a report about a process) and returns a list of effects (``effects.py``) for
``worker_io.py`` to carry out: ``Reply`` to a client of ``node.listen``, ``ToLeader``,
``Start`` a process (its argv, arguments and environment decided here), ``Signal`` a
process's group, ``Reconnect`` to a leader that fell silent, ``RefillSpare``, and with
``cluster.partition = "stop"`` ``Renew`` the processes' lease (``lease.py``).

Clients are answered from the cache when it can; everything else is forwarded to the
leader under a request id of the worker's own, and the reply is routed back.
"""

from __future__ import annotations

import logging
import time
import uuid

import msgspec

from . import protocol as p
from .cache import LocationCache
from .crashloop import CrashGuard
from .effects import Dropped, Note, RefillSpare, Reply, ToLeader
from .exit_notes import how_it_ended
from .following import Following, name_wait
from .lease import Lease
from .mailboxes import Mailboxes
from .processes import Processes
from .talks import TALK, Talks
from .timers import Timers

FORWARD_TTL = 60.0  # seconds a forwarded request is remembered; clients give up sooner
_ORDERS = (p.Spawn, p.Kill, p.AddCall, p.RemoveCall)  # obeyed only from the leader that welcomed us


class Worker(Following):
    def __init__(
        self,
        node: str,
        capacity: int = 0,
        calls: dict[str, p.Call] | None = None,
        heartbeat: float = 1.0,
        liveness: int = 3,
        max_retries: int = 20,
        max_time: float = 10.0,
        clock=time.monotonic,
        wall=time.time,
        about: p.InfoReply | None = None,
        leaders: list[tuple[str, str]] | None = None,
        election_lease: float = 0.0,
        lease: Lease | None = None,
        mailbox: str = "",
        max_payload: int = p.MAX_PAYLOAD,
    ) -> None:
        """``mailbox``: the endpoint of its processes' mailboxes ("": none)."""
        self.node = node
        self.wall = wall
        self.follow(leaders or [("", "")])
        # What `info` answers (the daemon's name, role and events endpoint).
        self.about = about or p.InfoReply(node=node, role="worker", events="", silence=heartbeat * liveness)
        self.capacity = capacity
        self.calls = dict(calls or {})  # every group known: a restarted leader gets them back
        self.incarnation = uuid.uuid4().hex[:12]
        self.cache = LocationCache()
        self.clock = clock
        self.heartbeat = heartbeat
        # A leader silent this long is lost; with an election, not before a standby can
        # have taken over (the lease's lapse) and said so.
        self.silence = max(heartbeat * liveness, election_lease + 2 * heartbeat if election_lease else 0.0)
        self.patience = self.silence  # grows while the leader stays lost: fewer reconnects
        self.last_heard = self.next_ping = self.switched_at = clock()
        self.leader_epoch: str | None = None
        self.leader_lost = False  # until a new welcome: forwards fail at once
        self.timers = Timers(clock)
        self._ids = p.request_ids()
        self.guard = CrashGuard(max_retries, max_time, clock)
        self.mailboxes = Mailboxes(wall, self._ids)
        self.processes = Processes(node, self.cache, self.guard, self.timers, self._ids, wall, self.mailboxes, mailbox)
        self.talks = Talks(node, self.cache, self.processes, self.mailboxes, self.calls, self._ask, wall, max_payload)
        self.forwards: dict[int, tuple[bytes, int, p.Msg]] = {}
        self.hello_id = 0
        self.welcomed = False
        self.name_wait = name_wait(heartbeat, liveness)
        self.taken_since: float | None = None
        self.leaving = False  # shutting down cleanly
        self.lease = lease  # cluster.partition = "stop": renewed by the leader's answers (lease.py)
        self.hello_exits = 0  # how many of processes.unreported the last hello carried

    # -- the leader --

    def hello(self) -> p.Hello:
        """All this worker runs and is starting (a new leader must not start those keys
        again elsewhere), the groups it knows and where its crash-loop guard stands."""
        self.hello_id = next(self._ids)
        procs = self.processes
        if self.lease is not None:
            self.lease.sent(self.hello_id)
        self.hello_exits = len(procs.unreported)
        return p.Hello(
            id=self.hello_id,
            node=self.node,
            incarnation=self.incarnation,
            capacity=self.capacity,
            processes=procs.running(),
            starting=procs.starting(),
            calls=self.calls,
            suspended=self.guard.left(),
            welcomed_by=self.leader_epoch or "",
            exited=list(procs.unreported),
            listen=self.about.listen,
        )

    def on_leader(self, msg: p.Msg) -> list:
        if isinstance(msg, p.Error) and msg.kind == p.NOT_LEADER:
            return self._not_leader(msg)
        self.last_heard = self.clock()
        if isinstance(msg, _ORDERS) and not self.welcomed:
            return []  # from a leader that has not welcomed us (or was refused): not obeyed
        if isinstance(msg, p.Spawn):
            self.calls.setdefault(msg.group, msg.call)
            return self.processes.spawn(msg)
        if isinstance(msg, p.Kill):
            if msg.reason == "conflict":  # the leader names the other copy: this one is not named again
                self.cache.forget(msg.location)
            return self.processes.kill(msg)
        if isinstance(msg, p.Pong):
            if msg.known and msg.epoch == self.leader_epoch:
                return [] if self.lease is None else self.lease.answered(msg.id)
            return [ToLeader(self.hello())]  # a new leader, or one that took us for dead
        if isinstance(msg, p.Welcome):
            if msg.id != self.hello_id:
                return []
            if msg.term < self.term:  # a leader whose term has passed, not knowing it yet
                text = f"{self.node} refused a welcome of term {msg.term} (it was welcomed in term {self.term})"
                return [Note(logging.WARNING, text), *self._switch(self._next(), "look further")]
            news = "joined the leader" if self.leader_epoch in (None, msg.epoch) else "joined a new leader"
            self.welcomed, self.leader_lost, self.leader_epoch = True, False, msg.epoch
            self.term, self.leader_name, self.unwelcomed = msg.term, msg.leader, 0
            self.patience, self.taken_since = self.silence, None
            self.calls.update(msg.calls)
            del self.processes.unreported[: self.hello_exits]  # that leader has them now
            self._forget_hearsay()
            renewed = [] if self.lease is None else self.lease.answered(msg.id)
            which = f"{msg.leader} (term {msg.term})" if msg.term else f"(epoch {msg.epoch})"
            return [*renewed, Note(logging.INFO, f"{self.node} {news} {which}")]
        if isinstance(msg, p.AddCall):
            self.calls[msg.name] = msg.call
            return []
        if isinstance(msg, p.RemoveCall):
            self.calls.pop(msg.name, None)
            return []
        forward = self.forwards.pop(msg.id, None)
        if forward is None:
            return self._refused(msg) if isinstance(msg, p.Error) and msg.id == self.hello_id else []
        client, client_id, request = forward
        if isinstance(msg, p.Found) and msg.location is not None:
            self.cache.learn(msg.location, msg.seq, msg.epoch)
        return self._answer(client, client_id, msg)

    def _answer(self, client: bytes, client_id: int, msg: p.Msg) -> list:
        """The leader's answer (or an error in its place) to a request we forwarded."""
        if client == TALK:  # a lookup of our own, for calls and sends
            return self.talks.resolved(client_id, msg)
        return [Reply(client, msgspec.structs.replace(msg, id=client_id))]

    def on_event(self, msg: p.Event | p.Tick | p.Elected) -> list:
        if isinstance(msg, p.Elected):
            return self._elected(msg)
        if self.by_election and msg.epoch != self.leader_epoch:
            return []  # late words of a former leader, or a new one's before its welcome
        resets = self.cache.resets
        self.cache.apply(msg)
        if self.cache.resets != resets:  # emptied: our own processes are known anyway
            self._learn_own()
        if isinstance(msg, p.Event) and msg.kind == "exited" and msg.location.node != self.node:
            return self.talks.exited(msg.location, how_it_ended(msg.exit_code, msg.signal, msg.reason or "exit"))
        if isinstance(msg, p.Event) and msg.kind == "started" and msg.location.node == self.node:
            # One of ours is registered (its caller has its answer): only now may the next
            # spare's fork take the CPU. The fork server replaces only a spare it handed out.
            return [RefillSpare()]
        return []

    def _forget_hearsay(self) -> None:
        """A welcome comes after a hello, and a hello after a silence, a reconnect or a new
        leader: whatever the events said before may have changed unheard meanwhile (they
        may be stuck on a connection that has not noticed the network is back). Only this
        worker's own processes are known first hand."""
        self.cache.clear()
        self._learn_own()

    def _learn_own(self) -> None:
        for loc in self.processes.running():
            self.cache.learn(loc, self.cache.seq)

    def _cached(self, group: str, key: str) -> p.Location | None:
        """What the cache may answer: nothing while adrift (below); with the leader lost
        (``cluster.partition = "keep"``), only this worker's own processes, known first
        hand and alive: what it knows of other nodes' is as old as its silence (and in a
        split they are out of reach anyway), and may have exited unheard meanwhile."""
        loc = self.cache.get(group, key)
        if loc is None or self._adrift() or (self.leader_lost and loc.node != self.node):
            return None
        return loc

    # -- clients --

    def on_client(self, client: bytes, msg: p.Msg) -> list:
        if isinstance(msg, p.Request) and p.expired(msg.deadline, self.wall()):
            return [Dropped(f"'{p.tag(msg)}' past its deadline")]  # its caller gave up: it costs nothing more
        if isinstance(msg, (p.Get, p.Find)):
            loc = self._cached(msg.group, msg.key)
            if loc is not None and self.cache.has_seen(msg.seq, msg.epoch):
                return [
                    Reply(client, p.Found(id=msg.id, location=loc, seq=self.cache.seq, epoch=self.cache.epoch or ""))
                ]
        elif isinstance(msg, p.Talk):
            return self.talks.on_client(client, msg)
        elif isinstance(msg, p.Info):
            return [Reply(client, self._info(msg.id))]
        elif not isinstance(msg, p.CLIENT_REQUESTS):
            error = p.Error(id=msg.id, kind=p.BAD_MESSAGE, message=f"'{p.tag(msg)}' is not a client request")
            return [Reply(client, error)]
        if self.leader_lost or self._adrift():
            return [Reply(client, self._no_leader(msg.id))]
        fid = next(self._ids)
        self.forwards[fid] = (client, msg.id, msg)
        self.timers.after(FORWARD_TTL, self._forget_forward, fid)
        return [ToLeader(msgspec.structs.replace(msg, id=fid))]

    def on_peer(self, msg: p.Msg) -> list:
        """Another node's answer to a call or send we sent it."""
        return self.talks.on_peer(msg)

    def on_process(self, peer: bytes, frames: list[bytes]) -> list:
        """What a process sent on the mailbox socket."""
        return self.mailboxes.on_process(peer, frames)

    def _ask(self, lookup: p.Msg) -> list:
        """Send the leader a lookup of our own (``talks.py``), its answer to come back there."""
        if self.leader_lost:
            return self.talks.resolved(lookup.id, self._no_leader(lookup.id))
        self.forwards[lookup.id] = (TALK, lookup.id, lookup)
        self.timers.after(FORWARD_TTL, self._forget_forward, lookup.id)
        return [ToLeader(lookup)]

    def _forget_forward(self, fid: int) -> list:
        forward = self.forwards.pop(fid, None)
        if forward is None or forward[0] != TALK:
            return []  # (its client gave up long ago)
        text = f"node {self.node}: the leader did not answer in {FORWARD_TTL:g} s"
        return self.talks.resolved(fid, p.Error(id=fid, kind="timeout", message=text))  # what waits behind it goes on

    @property
    def idle(self) -> bool:
        return self.processes.idle

    def shutdown(self) -> list:
        """A clean shutdown: the leader places nothing more here, and every process stops
        (its exit reported with reason "shutdown"); the daemon waits for ``idle``."""
        self.leaving = True
        return [ToLeader(p.Leaving()), *self.processes.shutdown()]

    # -- time --

    def next_deadline(self) -> float:
        soonest = min(self.next_ping, self.last_heard + self.patience)
        timer = self.timers.soonest()
        return soonest if timer is None else min(soonest, timer)

    def expire(self) -> list:
        out: list = []
        now = self.clock()
        if now >= self.next_ping:
            self.next_ping = now + self.heartbeat
            ping = p.Ping(id=next(self._ids))  # the pong answers it by id: the lease runs from now
            if self.lease is not None:
                self.lease.sent(ping.id)
            out.append(ToLeader(ping))
            self.talks.expire()
        if self.forwards and self._adrift():  # (looked at once a heartbeat, with the ping)
            out += self._no_leader_for_all()
        if now - self.last_heard > self.patience:
            out += self._lose_leader(now)
        elif self.by_election and not self.welcomed and now - self.switched_at >= self._search_gap():
            self.unwelcomed += 1
            out += self._switch(self._next(), "no welcome")  # a candidate that is down or knows no leader
        return out + self.timers.expire()

    def _no_leader(self, req_id: int) -> p.Error:
        return p.Error(id=req_id, kind=p.NO_LEADER, message=f"node {self.node} has no leader at the moment; try again")
