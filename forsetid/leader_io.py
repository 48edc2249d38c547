"""The leader's sockets: a ROUTER for workers and clients, an XPUB for events, and the
ROUTER's monitor, which tells when a worker's connection closes (``closes.py``).
Messages are decided by ``leader.Leader``; this part carries out what it returns.

With backend "etcd" it is a candidate, which leads only while etcd's election says so
(``candidacy.py``)."""

from __future__ import annotations

import logging
import time

import msgspec
import zmq
from zmq.utils.monitor import parse_monitor_message

from . import protocol as p
from .candidacy import Candidacy
from .closes import GRACE, Closes
from .config import Config
from .effects import Note, Publish, Record, Reply
from .election import Campaign, Office
from .etcd import Etcd
from .leader import Leader
from .loop import Loop, Part
from .store import open_store

log = logging.getLogger("forsetid")


class LeaderIO(Candidacy, Part):
    def __init__(self, loop: Loop, config: Config, about: p.InfoReply, inproc: str) -> None:
        cluster = config.cluster
        self.loop, self.config = loop, config
        self.heartbeat = cluster.heartbeat
        me = config.candidate()
        leader_at, events_at = (me.leader, me.events) if me is not None else (cluster.leader, cluster.events)
        self.about = msgspec.structs.replace(about, events=events_at)
        # Workers' hellos list all they run: the leader's limit is the larger one.
        self.router = loop.socket(zmq.ROUTER, self._on_router, p.MAX_PEER_MESSAGE, serves=True)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.router.setsockopt(zmq.ROUTER_HANDOVER, 1)
        loop.bind(self.router, leader_at, inproc + "-leader")
        # Fast detection: a worker whose connection closes is looked at GRACE later.
        self.closes = Closes(min(GRACE, cluster.heartbeat * cluster.liveness / 2), time.monotonic)
        loop.sources.add(self.router)  # (ZMQ_SRCFD: which connection a hello came on)
        self.monitor = self.router.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        loop.watch(self.monitor, self._on_monitor)
        self.pub = loop.socket(zmq.XPUB, self._on_subscribe, p.MAX_MESSAGE, serves=True)
        self.pub.setsockopt(zmq.XPUB_VERBOSE, 1)
        loop.bind(self.pub, events_at, inproc + "-events")
        self.next_tick = time.monotonic() + cluster.heartbeat
        self.groups: set[str] = set()  # the groups someone follows on their own: each gets its ticks
        self.carry = {Reply: self._reply, Publish: self._publish_event, Note: self.note, Record: self._record}
        self.metrics = loop.metrics
        if self.metrics is not None:  # (with metrics off, nothing of this is in the way)
            self.carry[Publish] = self._publish_counted
        self.leader: Leader | None = None
        self.office: Office | None = None
        self.campaign: Campaign | None = None
        self.known_leader: str | None = None  # a standby's: who leads, as etcd said last
        self.resigned = False
        if cluster.backend == "etcd":
            self.office = Office(cluster.lease)
            etcd = Etcd(cluster.etcd, timeout=min(1.0, cluster.lease / 4))
            self.campaign = Campaign(etcd, cluster.name, config.node.name, cluster.lease)
            loop.watch(self.campaign.fd, self._on_campaign)
            self.campaign.start()
            log.info("candidate %s: workers and clients at %s, events at %s; etcd at %s", config.node.name,
                     leader_at, events_at, ", ".join(cluster.etcd))  # fmt: skip
        else:
            # It may have had a predecessor whose workers run and start what it does not know of yet.
            self._lead(config.calls)
            log.info("leading (epoch %s): workers and clients at %s, events at %s", self.leader.epoch, leader_at,
                     events_at)  # fmt: skip

    def _lead(self, calls: dict[str, p.Call], term: int = 0, expected: list[str] | None = None) -> Leader:
        cluster = self.config.cluster
        self.closes = Closes(self.closes.grace, time.monotonic)  # (the connections a former term knew: none)
        about = msgspec.structs.replace(self.about, state="leader", leader=self.config.node.name, term=term)
        self.leader = Leader(
            calls, cluster.nodes, open_store(cluster.backend), cluster.heartbeat, cluster.liveness, about=about,
            recovering=True, epoch=str(term) if term else None, term=term, expected=expected or (),
            durable=self.campaign is not None, partition=cluster.partition,
        )  # fmt: skip
        if self.metrics is not None:
            self.metrics.elections.inc()
            self._snapshot()
        return self.leader

    def _reply(self, effect: Reply) -> None:
        self.loop.send(self.router, effect.peer, effect.msg)

    def _publish_event(self, effect: Publish) -> None:
        self._publish(p.topic(effect.event.location.group), effect.event)

    # -- metrics (node.metrics) --

    def _publish_counted(self, effect: Publish) -> None:
        event = effect.event
        if event.kind == "exited":
            self.metrics.exits.labels(event.location.group, event.reason or "exit").inc()
        self._publish_event(effect)

    def _snapshot(self) -> None:
        leader = self.leader
        if leader is None:
            return
        workers = [w.state for w in leader.placement.workers.values()]
        self.metrics.set_leader(leader.epoch, leader.store.items(), workers)

    def _publish(self, topic: bytes, msg: p.Msg) -> None:
        # A subscriber that does not keep up loses it: the sequence gap tells it.
        self.loop.send_one(self.pub, p.encode(msg), topic)

    # -- input --

    def _on_router(self, sock: zmq.Socket) -> None:
        for peer, msg in self.loop.receive(sock):
            leader = self.leader
            # (with an election, asked of each message: a batch may outlast the lease)
            if self.office is not None and (leader is None or not self._leading()):
                self._not_leader(peer, msg)
                continue
            assert leader is not None
            effects = leader.handle(peer, msg)
            if isinstance(msg, p.Hello) and leader.peer_of.get(msg.node) == peer:  # welcomed
                self.closes.joined(msg.node, self.loop.source_fd())
            self.carry_out(effects)

    def _on_monitor(self, sock: zmq.Socket) -> None:
        for frames in self.loop.waiting(sock):
            try:
                event = parse_monitor_message(frames)
            except (zmq.ZMQError, ValueError, IndexError):
                continue
            if event["event"] == zmq.EVENT_DISCONNECTED:
                node = self.closes.node_at.get(int(event["value"]))
                if node is not None:
                    log.debug("the connection worker %s said hello on closed: looking in %g s", node, self.closes.grace)
                self.closes.closed(int(event["value"]))

    def _look(self, node: str) -> None:
        """Is the connection ``node`` registered on still there? An unasked pong tells
        (a worker takes it for the heartbeat answer it is), ROUTER_MANDATORY refusing it if not."""
        peer = self.leader.peer_of.get(node)
        if peer is None:
            return  # down already, or left
        try:
            self.router.send(peer, zmq.SNDMORE | zmq.NOBLOCK)
            self.router.send(p.encode(p.Pong(epoch=self.leader.epoch, known=True)), zmq.NOBLOCK)
            log.debug("worker %s is still connected", node)
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EHOSTUNREACH:
                return  # there, but not keeping up: heartbeats judge it
            if self.metrics is not None:
                for (group, _), _ in self.leader.starts.of_node(node):
                    self.metrics.start_failures.labels(group, "node-down").inc()
            self.closes.forget(node)
            self.carry_out(self.leader.node_down(node, "its connection closed", dead=True))
        finally:
            self.loop.unchecked.add(self.router)

    def _on_subscribe(self, sock: zmq.Socket) -> None:
        # A new subscription gets a tick on its own topic at once: the subscriber then
        # knows that it is live and where the sequence stands.
        # XPUB_VERBOSE passes every subscription, and an unsubscription once its last
        # subscriber is gone.
        for frame, *_ in self.loop.waiting(sock):
            topic = frame[1:]
            group = topic[:-1].decode(errors="replace") if topic.endswith(b"\0") else None
            if frame[:1] == b"\x01":
                if group:
                    self.groups.add(group)
                if self.leader is None or not self._leading():
                    continue  # (a standby publishes nothing: it would confuse the followers' sequence)
                self._publish(topic, self.leader.events.tick(group))
                if not topic and self.office is not None:  # a worker, maybe: tell it who leads
                    self._announce(topic)
            elif frame[:1] == b"\x00" and group:
                self.groups.discard(group)

    # -- the loop's part --

    def deadline(self) -> float:
        soonest = self.next_tick
        if self.campaign is not None:  # turns often enough for the election thread to see it alive
            soonest = min(soonest, time.monotonic() + self.campaign.every, self.office.until or soonest)
        if self.leader is not None:
            for end in (self.leader.next_deadline(), self.closes.deadline()):
                soonest = soonest if end is None else min(soonest, end)
        return soonest

    def turn(self) -> None:
        now = time.monotonic()
        if self.campaign is not None:
            if not self.campaign.is_alive() and not self.loop.stopping:
                self.loop.fail(1, "the election thread has ended: this candidate can neither lead nor stand by")
                return
            self.campaign.alive(now)
            if self.leader is None or not self._leading():
                return
        assert self.leader is not None
        if self.closes.due:
            for node in self.closes.take_due():
                self._look(node)
        if now >= self.next_tick:
            self.next_tick = now + self.heartbeat
            self._publish(b"", self.leader.events.tick())
            if self.office is not None:
                self._announce(b"")
            for group in self.groups:  # a follower of one group hears no other topic's ticks
                self._publish(p.topic(group), self.leader.events.tick(group))
            if self.metrics is not None and (self.metrics.wanted or len(self.leader.store) <= self.metrics.small):
                self._snapshot()
        elif now < (self.leader.next_deadline() or float("inf")):
            return
        caught_up = self.router not in self.loop.behind  # (silence it has not read yet is no silence)
        if self.metrics is not None and caught_up:  # the starts under way on the workers about to be taken for down
            for node in self.leader.members.silent():
                for (group, _), _ in self.leader.starts.of_node(node):
                    self.metrics.start_failures.labels(group, "node-down").inc()
        self.carry_out(self.leader.expire(caught_up))
