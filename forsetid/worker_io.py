"""A worker's sockets and pipes: a DEALER to the leader, a SUB to its events, a ROUTER
for local clients (``node.listen``), the fork server's socket and the ready pipes of
processes being started. Everything that comes in is decided by ``worker.Worker``;
this part carries out what it returns."""

from __future__ import annotations

import logging
import os
import signal
import time

import zmq

from . import protocol as p
from .config import Config
from .const import READY_LINE_MAX
from .effects import (
    Dropped,
    Exit,
    Note,
    Reconnect,
    RefillSpare,
    Renew,
    Reply,
    Signal,
    Start,
    ToLeader,
    ToPeer,
    ToProcess,
)
from .lease import Lease, lease_seconds
from .loop import Loop, Part
from .spawner import Spawner, lease_clock
from .talk_io import TalkIO
from .worker import Worker

log = logging.getLogger("forsetid")

_KINDS = {cls: p.tag(cls) for cls in p.CLIENT_REQUESTS}  # Get -> "get"...


def _outcome(effects: list) -> str:
    """How a worker answered a client: from its cache, by forwarding, with an error, or
    by itself ("local": info)."""
    first = effects[0] if effects else None
    if isinstance(first, ToLeader):
        return "forwarded"
    if isinstance(first, Dropped):
        return "dropped"
    if isinstance(first, Reply):
        if isinstance(first.msg, p.Found):
            return "cache-hit"
        if isinstance(first.msg, p.Error):
            return "error"
    return "local"


def across_machines(sock: zmq.Socket, heartbeat: float, beat: bool) -> None:
    """A connection that a split left dead is found and replaced in heartbeats, not in
    TCP's retransmission backoff (seconds to minutes after the network is back): a
    connect gives up after a heartbeat and tries again, and with ``beat`` (the events)
    ZeroMQ's own heartbeats close a connection that answers none for two heartbeats, on
    both ends (``HEARTBEAT_TTL``: the publisher drops it too). Not on the DEALER to the
    leader: a connection closed there makes the leader take this worker for down at
    once (fast detection), which must mean that the daemon is gone, not the network;
    the worker's own silence rule replaces that socket (docs/internals/partitions.md)."""
    ms = max(100, round(heartbeat * 1000))
    sock.setsockopt(zmq.CONNECT_TIMEOUT, ms)
    if beat:
        sock.setsockopt(zmq.HEARTBEAT_IVL, ms)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 2 * ms)
        sock.setsockopt(zmq.HEARTBEAT_TTL, 2 * ms)


class WorkerIO(Part):
    def __init__(
        self, loop: Loop, config: Config, about: p.InfoReply, spawner: Spawner, leaders: list[tuple[str, str, str]]
    ) -> None:
        """``leaders``: (name, leader endpoint, events endpoint) of the one leader, or of
        every candidate (backend "etcd")."""
        node, cluster = config.node, config.cluster
        self.loop, self.spawner = loop, spawner
        # partition = "stop": the fork server (Spawner(lease=True)) holds the processes' lease.
        stop = cluster.partition == "stop"
        lease = Lease(lease_seconds(cluster.heartbeat, cluster.liveness), lease_clock) if stop else None
        self.talk_io = TalkIO(loop, node.name, cluster.max_payload)  # mailboxes and other nodes
        self.worker = Worker(
            node.name,
            node.capacity,
            config.calls,
            cluster.heartbeat,
            cluster.liveness,
            cluster.max_retries,
            cluster.max_time,
            about=about,
            leaders=[(name, endpoint) for name, endpoint, _ in leaders],
            election_lease=cluster.lease if cluster.backend == "etcd" else 0.0,
            lease=lease,
            mailbox=self.talk_io.endpoint,
            max_payload=cluster.max_payload,
        )
        self.processes = self.worker.processes  # where the fork server's reports go
        w = self.worker
        self.talk_io.attach(lambda *a: self.carry_out(w.on_process(*a)), lambda msg: self.carry_out(w.on_peer(msg)))
        self.ready_fds: dict[int, tuple[int, bytes]] = {}  # fd -> (token, bytes so far)
        self.metrics = loop.metrics
        self.began: dict[tuple[str, str], float] = {}  # (group, key) -> when its Start was carried out
        on_client = self._on_client if self.metrics is None else self._on_client_counted
        self.clients = loop.socket(zmq.ROUTER, on_client, cluster.max_payload + p.ENVELOPE, serves=True)
        self.clients.setsockopt(zmq.ROUTER_MANDATORY, 1)
        loop.bind(self.clients, node.listen)
        self.heartbeat = cluster.heartbeat
        self.sub = loop.socket(zmq.SUB, self._on_event)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        across_machines(self.sub, cluster.heartbeat, beat=True)
        for _, _, events in leaders:  # only the leader publishes; a new one says so at once
            self.sub.connect(events)
        self.dealer = self._connect()
        loop.watch(spawner.fileno(), self._on_spawner)
        self.carry = {
            Reply: self._reply, ToLeader: self._to_leader, Start: self._start, Signal: self._signal,
            Reconnect: self._reconnect, RefillSpare: self._refill, Note: self.note, Renew: self._renew,
            ToPeer: self.talk_io.to_peer, ToProcess: self.talk_io.to_process, Dropped: self.talk_io.dropped,
            Exit: self._exit,
        }  # fmt: skip
        if self.metrics is not None:  # (with metrics off, nothing of this is in the way)
            self.carry.update(
                {Start: self._start_counted, ToLeader: self._to_leader_counted, Reply: self._reply_counted}
            )
            self.metrics.mailboxes = self.worker.mailboxes
        if len(leaders) > 1:
            where = "one of the candidates " + ", ".join(name for name, _, _ in leaders)
        elif leaders[0][1].startswith("inproc://"):
            where = "in this daemon"
        else:
            where = f"at {leaders[0][1]}, events at {leaders[0][2]}"
        log.info("worker %s: clients at %s, leader %s", node.name, node.listen, where)
        self.carry_out([ToLeader(self.worker.hello())])

    # -- effects --

    def _reply(self, effect: Reply) -> None:
        self.talk_io.answering(effect.msg)
        self.loop.send(self.clients, effect.peer, effect.msg)

    def _to_leader(self, effect: ToLeader) -> None:
        if not self.loop.send_one(self.dealer, p.encode(effect.msg)):
            log.warning("the leader is not reachable: %s dropped", type(effect.msg).__name__)

    def _start(self, s: Start) -> None:
        try:
            fd, pid = self.spawner.spawn(s.token, s.entry, s.command, s.args, s.env, s.key, s.log)
        except ValueError as exc:
            self.carry_out(self.processes.on_spawn_failed(s.token, str(exc)))
            return
        if fd is not None:
            self.ready_fds[fd] = (s.token, b"")
            self.loop.watch(fd, self._on_ready)
        if pid is not None:  # a spare took it (and, with no ready pipe, runs the entry already)
            self.carry_out(self.processes.on_spawned(s.token, pid, running=fd is None))

    def _signal(self, effect: Signal) -> None:
        self.spawner.signal(effect.pid, effect.signum)

    def _reconnect(self, effect: Reconnect) -> None:
        log.debug("connecting to the leader at %s", effect.endpoint)
        self.loop.unwatch(self.dealer)
        self.dealer.close(linger=0)  # what was queued for the lost leader goes too
        self.dealer = self._connect()

    def _refill(self, _: RefillSpare) -> None:
        self.spawner.refill()

    def _renew(self, effect: Renew) -> None:
        self.spawner.lease(effect.until)

    def _exit(self, effect: Exit) -> None:
        self.loop.fail(effect.status, effect.why)

    # -- metrics (node.metrics) --

    def _on_client_counted(self, sock: zmq.Socket) -> None:
        count = self.metrics.request
        for client, msg in self.loop.receive(sock):
            if isinstance(msg, p.Talk):
                self.talk_io.began(client, msg)
            effects = self.worker.on_client(client, msg)
            count(_KINDS.get(type(msg), "other"), _outcome(effects))
            self.carry_out(effects)

    def _reply_counted(self, effect: Reply) -> None:
        self.talk_io.answered(effect, self.metrics)
        self._reply(effect)

    def _start_counted(self, s: Start) -> None:
        group = s.env["FORSETI_GROUP"]
        self.metrics.starts.labels(group).inc()
        self.began[(group, s.key)] = time.monotonic()
        self._start(s)

    def _to_leader_counted(self, effect: ToLeader) -> None:
        msg, m = effect.msg, self.metrics
        if isinstance(msg, p.Spawned):
            began = self.began.pop((msg.location.group, msg.location.key), None)
            if began is not None:  # (not a repeat of the answer for a process that runs)
                m.start_seconds.labels(msg.location.group).observe(time.monotonic() - began)
        elif isinstance(msg, p.SpawnFailed):
            self.began.pop((msg.group, msg.key), None)
            m.start_failures.labels(msg.group, m.failure_kind(msg.reason)).inc()
        elif isinstance(msg, p.Ping):  # a heartbeat: the epoch of the leader it joined
            m.worker_epoch = self.worker.leader_epoch or ""
        self._to_leader(effect)

    def _connect(self) -> zmq.Socket:
        dealer = self.loop.socket(zmq.DEALER, self._on_leader)
        across_machines(dealer, self.heartbeat, beat=False)
        dealer.connect(self.worker.endpoint)
        return dealer

    # -- input --

    def _on_client(self, sock: zmq.Socket) -> None:
        for client, msg in self.loop.receive(sock):
            self.carry_out(self.worker.on_client(client, msg))

    def _on_leader(self, sock: zmq.Socket) -> None:
        for msg in self.loop.decoded(sock, "message from the leader"):
            self.carry_out(self.worker.on_leader(msg))
            if sock is not self.dealer:  # it went to another leader: the rest went with the old socket
                break

    def _on_event(self, sock: zmq.Socket) -> None:
        for msg in self.loop.decoded(sock, "event"):
            if isinstance(msg, (p.Event, p.Tick, p.Elected)):
                self.carry_out(self.worker.on_event(msg))

    def _on_spawner(self, fd: int) -> None:
        try:
            reports = self.spawner.receive()
        except RuntimeError as exc:
            # Its children died with it (PDEATHSIG), but not their own children: kill
            # every group we know of. Exiting lets the leader see this worker go down and
            # start them elsewhere; a supervisor may restart it.
            self.loop.unwatch(fd)
            for pid in self.processes.by_pid:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass
            self.loop.fail(1, f"{exc}: exiting")
            return
        for kind, ident, value in reports:
            try:  # they are all read already: a bug must cost one report, not those after it
                self._on_report(kind, ident, value)
            except Exception:
                self.loop.faults.exception("internal error while handling a report from the fork server")

    def _on_report(self, kind: str, ident, value) -> None:
        if kind == "unimportable":  # at start: ident is the entry, value its error and the path searched
            groups = ", ".join(sorted(g for g, call in self.worker.calls.items() if call.entry == ident)) or "-"
            error, path = value
            log.error("group %s: entry %s cannot be imported: %s (searched: %s)", groups, ident, error, ", ".join(path))
        elif kind == "spawned":
            self.carry_out(self.processes.on_spawned(ident, value))
        elif kind == "failed":
            self._close_ready(ident)
            self.carry_out(self.processes.on_spawn_failed(ident, value))
        elif kind == "lapsed":  # the lease ended: value, the pids it killed (exits follow)
            self.carry_out(self.processes.lapsed(value))
        elif kind == "exited":
            proc = self.processes.by_pid.get(ident)
            if proc is not None:  # what it wrote before dying counts first
                self._close_ready(proc.token)
            self.carry_out(self.processes.on_exit(ident, value))

    def _on_ready(self, fd: int) -> None:
        token, data = self.ready_fds[fd]
        try:
            chunk = os.read(fd, READY_LINE_MAX)
        except BlockingIOError:
            return
        data += chunk
        if chunk and b"\n" not in data and len(data) < READY_LINE_MAX:
            self.ready_fds[fd] = (token, data)
            return
        self._forget_ready(fd)
        if data:
            self.carry_out(self.processes.on_ready(token, data.split(b"\n", 1)[0].decode(errors="replace")))

    def _close_ready(self, token: int) -> None:
        """Take what a process wrote on its ready pipe before it failed or exited."""
        for fd, (t, _) in list(self.ready_fds.items()):
            if t == token:
                self._on_ready(fd)  # reads what is there (the pipe is non-blocking)
                if fd in self.ready_fds:  # nothing, or half a line: no more will come
                    self._forget_ready(fd)

    def _forget_ready(self, fd: int) -> None:
        self.loop.unwatch(fd)
        del self.ready_fds[fd]
        os.close(fd)

    # -- the loop's part --

    def deadline(self) -> float:
        if self.spawner.outbox:  # the fork server's socket was full: try again soon
            return time.monotonic() + 0.001
        return self.worker.next_deadline()

    def turn(self) -> None:
        self.carry_out(self.worker.expire())
        self.spawner.flush()

    def begin_shutdown(self) -> float:
        self.carry_out(self.worker.shutdown())
        return self.processes.stop_timeout

    @property
    def idle(self) -> bool:
        return self.worker.idle

    def close(self) -> None:
        self.spawner.close()
        self.talk_io.close()
        for fd in self.ready_fds:
            os.close(fd)
        self.ready_fds.clear()
