"""A worker's sockets and pipes: a DEALER to the leader, a SUB to its events, a ROUTER
for local clients (``node.listen``), the fork server's socket and the ready pipes of
processes being started. Everything that comes in is decided by ``worker.Worker``;
this part carries out what it returns."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import tempfile
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
from .loop import Loop, Part, RateLimitedLog
from .spawner import Spawner, lease_clock
from .worker import Worker

log = logging.getLogger("forsetid")

_KINDS = {cls: p.tag(cls) for cls in p.CLIENT_REQUESTS}  # Get -> "get"...
_REFUSED_CALLS = (p.BUSY, p.TOO_LARGE, p.NO_MAILBOX)  # logged (rate-limited) as they are answered


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
        # The processes' mailboxes: one socket, in a folder only this user may enter.
        self.mailbox_dir = tempfile.mkdtemp(prefix=f"forseti-{node.name[:20]}-", dir="/tmp")
        self.mailbox = self._mailbox_socket(f"ipc://{self.mailbox_dir}/mailbox", cluster.max_payload)
        self.peers: dict[str, zmq.Socket] = {}  # another node's client endpoint -> our socket to it
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
            listen=node.listen,
            mailbox=f"ipc://{self.mailbox_dir}/mailbox",
            max_payload=cluster.max_payload,
        )
        self.processes = self.worker.processes  # where the fork server's reports go
        self.ready_fds: dict[int, tuple[int, bytes]] = {}  # fd -> (token, bytes so far)
        self.metrics = loop.metrics
        self.began: dict[tuple[str, str], float] = {}  # (group, key) -> when its Start was carried out
        on_client = self._on_client if self.metrics is None else self._on_client_counted
        self.clients = loop.socket(zmq.ROUTER, on_client, cluster.max_payload + p.ENVELOPE, serves=True)
        self.clients.setsockopt(zmq.ROUTER_MANDATORY, 1)
        loop.bind(self.clients, node.listen)
        self.sub = loop.socket(zmq.SUB, self._on_event)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        for _, _, events in leaders:  # only the leader publishes; a new one says so at once
            self.sub.connect(events)
        self.dealer = self._connect()
        loop.watch(spawner.fileno(), self._on_spawner)
        self.carry = {
            Reply: self._reply, ToLeader: self._to_leader, Start: self._start, Signal: self._signal,
            Reconnect: self._reconnect, RefillSpare: self._refill, Note: self.note, Renew: self._renew,
            ToPeer: self._to_peer, ToProcess: self._to_process, Dropped: self._dropped,
            Exit: self._exit,
        }  # fmt: skip
        self.call_log = RateLimitedLog()  # calls refused or dropped: one line in a while
        if self.metrics is not None:  # (with metrics off, nothing of this is in the way)
            self.carry.update(
                {Start: self._start_counted, ToLeader: self._to_leader_counted, Reply: self._reply_counted}
            )
            self.talks: dict[tuple[bytes, int], tuple[str, str, float]] = {}  # a call's caller -> group, kind, began
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
        msg = effect.msg
        if isinstance(msg, p.Error) and msg.kind in _REFUSED_CALLS:
            self.call_log.info("a call refused (%s): %s", msg.kind, msg.message)
        self.loop.send(self.clients, effect.peer, msg)

    def _dropped(self, effect: Dropped) -> None:
        self.call_log.info("dropped: %s (its caller gave up)", effect.text)

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

    def _to_peer(self, effect: ToPeer) -> None:
        sock = self.peers.get(effect.endpoint)
        if sock is None:
            sock = self.peers[effect.endpoint] = self.loop.socket(zmq.DEALER, self._on_peer)
            sock.connect(effect.endpoint)
        if not self.loop.send_one(sock, p.encode(effect.msg)):
            log.warning("node at %s is not keeping up: a call to it dropped", effect.endpoint)

    def _to_process(self, effect: ToProcess) -> None:
        self.loop.unchecked.add(self.mailbox)
        try:
            self.mailbox.send_multipart([effect.peer, *effect.frames], zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # the process is gone (its exit answers its callers) or not reading
            log.debug("a request to a process dropped: %s", exc)

    def _mailbox_socket(self, endpoint: str, max_payload: int) -> zmq.Socket:
        sock = self.loop.ctx.socket(zmq.ROUTER)  # (no CURVE: it never leaves this machine)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, max_payload + p.ENVELOPE)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.loop.bind(sock, endpoint)
        self.loop.watch(sock, self._on_mailbox)
        return sock

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
                self._talk_began(client, msg)
            effects = self.worker.on_client(client, msg)
            count(_KINDS.get(type(msg), "other"), _outcome(effects))
            self.carry_out(effects)

    def _talk_began(self, client: bytes, msg: p.Talk) -> None:
        now = time.monotonic()
        if len(self.talks) >= 10_000:  # (those never answered: their callers gave up)
            self.talks = {k: v for k, v in self.talks.items() if now - v[2] < 60.0}
        self.talks[(client, msg.id)] = (msg.group, "send" if msg.one_way else "call", now)

    def _reply_counted(self, effect: Reply) -> None:
        began = self.talks.pop((effect.peer, effect.msg.id), None) if self.talks else None
        if began is not None:
            group, kind, at = began
            msg = effect.msg
            outcome = msg.kind if isinstance(msg, p.Error) else "ok"
            self.metrics.calls.labels(group, kind, outcome).inc()
            if outcome == "ok":
                self.metrics.call_seconds.labels(group, kind).observe(time.monotonic() - at)
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

    def _on_peer(self, sock: zmq.Socket) -> None:
        for msg in self.loop.decoded(sock, "answer from another node"):
            self.carry_out(self.worker.on_peer(msg))

    def _on_mailbox(self, sock: zmq.Socket) -> None:
        for frames in self.loop.waiting(sock):
            self.carry_out(self.worker.on_process(frames[0], frames[1:]))

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
        shutil.rmtree(self.mailbox_dir, ignore_errors=True)
        for fd in self.ready_fds:
            os.close(fd)
        self.ready_fds.clear()
