"""``forsetid``: the socket loop around the leader's and the worker's decisions.

One thread, one ``select.poll`` over plain file descriptors: the ZeroMQ sockets' own
(``ZMQ_FD``) next to pipes and the fork server's socket. The leader part owns a ROUTER
(workers and clients) and an XPUB (events); the worker part owns a DEALER to the
leader, a SUB to its events, a ROUTER for local clients, the fork server's socket and
the ready pipes of processes being started. In role "both" the worker reaches its
leader over ``inproc://``.
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import signal
import sys
import time
import uuid

import zmq

from . import protocol as p
from .config import Config, ConfigError, load
from .leader import PUBLISH, Leader
from .spawner import Spawner
from .worker import Proc, Worker, substitute

log = logging.getLogger("forsetid")

BATCH = 256  # messages taken from one socket before looking at the others
NOBLOCK, MORE_NOBLOCK, EVENTS = zmq.NOBLOCK, zmq.SNDMORE | zmq.NOBLOCK, zmq.EVENTS
POLLIN = int(zmq.POLLIN)  # a plain int: `events & zmq.POLLIN` builds an enum each time (~1 us)


GRACE = 1.0  # seconds beyond the longest stop_timeout that a shutdown may take


class RateLimitedLog:
    """At most one line per ``every`` seconds, saying how many were held back: a flood of
    junk must not flood the log (or cost the loop its time)."""

    def __init__(self, every: float = 5.0) -> None:
        self.every = every
        self.next = 0.0
        self.held = 0

    def warning(self, fmt: str, *args) -> None:
        self._log(log.warning, fmt, args)

    def exception(self, fmt: str, *args) -> None:
        self._log(log.exception, fmt, args)

    def _log(self, method, fmt: str, args) -> None:
        now = time.monotonic()
        if now < self.next:
            self.held += 1
            return
        if self.held:
            fmt += f" (and {self.held} more like it)"
        method(fmt, *args)
        self.next, self.held = now + self.every, 0


class Daemon:
    def __init__(self, config: Config) -> None:
        self.config = config
        role = config.node.role
        self.is_leader = role in ("leader", "both")
        self.is_worker = role in ("worker", "both")
        # The fork server starts first: its preloading overlaps the daemon's own start.
        entries = sorted({c.entry for c in config.calls.values() if c.entry})
        self.spawner = Spawner(entries) if self.is_worker else None
        self.ctx = zmq.Context()
        self.poller = select.poll()
        self.handlers: dict[int, tuple] = {}  # fd -> (what to call when readable, socket or fd)
        # ZeroMQ sockets used since their last ZMQ_EVENTS check: a send or recv may have
        # taken in the signal of a message that their ZMQ_FD will then not announce.
        self.unchecked: set[zmq.Socket] = set()
        self.fds: dict[zmq.Socket, int] = {}
        self.ready_fds: dict[int, tuple[int, bytes]] = {}  # fd -> (token, bytes so far)
        self.stopping = False
        self.fatal: str | None = None  # set when the daemon cannot go on
        self.junk = RateLimitedLog()
        self.faults = RateLimitedLog()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        os.set_blocking(self._wake_r, False)
        self._watch(self._wake_r, self._on_signal)
        try:
            self._open_sockets()
        except BaseException:
            self.close()
            raise

    def _open_sockets(self) -> None:
        config = self.config
        inproc = f"inproc://forseti-{uuid.uuid4().hex}"
        cluster = config.cluster
        if self.is_leader:
            self.leader = Leader(config.calls, cluster.nodes, heartbeat=cluster.heartbeat, liveness=cluster.liveness)
            # Workers' hellos list all they run: the leader's limit is the larger one.
            self.router = self._socket(zmq.ROUTER, self._on_router, p.MAX_PEER_MESSAGE)
            self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
            self.router.setsockopt(zmq.ROUTER_HANDOVER, 1)
            self._bind(self.router, cluster.leader, inproc + "-leader")
            self.pub = self._socket(zmq.XPUB, self._on_subscribe, p.MAX_MESSAGE)
            self.pub.setsockopt(zmq.XPUB_VERBOSE, 1)
            self._bind(self.pub, cluster.events, inproc + "-events")
            self.next_tick = time.monotonic() + cluster.heartbeat
        if self.is_worker:
            node = config.node
            self.worker = Worker(node.name, node.capacity, config.calls, cluster.heartbeat, cluster.liveness,
                                 cluster.max_retries, cluster.max_time)  # fmt: skip
            self.clients = self._socket(zmq.ROUTER, self._on_client, p.MAX_MESSAGE)
            self.clients.setsockopt(zmq.ROUTER_MANDATORY, 1)
            self._bind(self.clients, config.node.listen)
            self.sub = self._socket(zmq.SUB, self._on_event)
            self.sub.setsockopt(zmq.SUBSCRIBE, b"")
            self.dealer = self._socket(zmq.DEALER, self._on_leader)
            local = self.is_leader
            self.sub.connect(inproc + "-events" if local else cluster.events)
            self.leader_endpoint = inproc + "-leader" if local else cluster.leader
            self.dealer.connect(self.leader_endpoint)
            self._watch(self.spawner.fileno(), self._on_spawner)
            self._to_leader(self.worker.hello())

    # -- set-up --

    def _socket(self, kind: int, handler, max_message: int = -1) -> zmq.Socket:
        sock = self.ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 500)
        sock.setsockopt(zmq.MAXMSGSIZE, max_message)
        self._watch(sock, handler)
        return sock

    def _bind(self, sock: zmq.Socket, *endpoints: str) -> None:
        for endpoint in endpoints:
            try:
                sock.bind(endpoint)
            except zmq.ZMQError as exc:
                raise ConfigError(f"{self.config.path}: cannot bind {endpoint}: {exc}") from None

    def _watch(self, sock_or_fd, handler) -> None:
        fd = sock_or_fd
        if isinstance(sock_or_fd, zmq.Socket):
            fd = self.fds[sock_or_fd] = sock_or_fd.getsockopt(zmq.FD)
            self.unchecked.add(sock_or_fd)
        self.handlers[fd] = (handler, sock_or_fd)
        self.poller.register(fd, select.POLLIN)

    def _unwatch(self, sock_or_fd) -> None:
        fd = sock_or_fd
        if isinstance(sock_or_fd, zmq.Socket):
            fd = self.fds.pop(sock_or_fd)
            self.unchecked.discard(sock_or_fd)
        self.handlers.pop(fd, None)
        self.poller.unregister(fd)

    def _waiting(self, sock: zmq.Socket):
        """The messages waiting on ``sock`` (at most BATCH), each a list of frames, for as
        long as ZMQ_EVENTS says there is one. A ZMQ_FD is a signal, not a level: after
        the last check, sending on the socket makes it unchecked again."""
        for _ in range(BATCH):
            if not sock.getsockopt(EVENTS) & POLLIN:
                self.unchecked.discard(sock)
                return
            yield sock.recv_multipart(NOBLOCK)
        self.unchecked.add(sock)  # more may wait: look again before sleeping

    # -- the loop --

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: None)
        signal.set_wakeup_fd(self._wake_w)
        log.info("%s up: role %s, pid %d", self.config.node.name, self.config.node.role, os.getpid())
        deadline = None
        try:
            while True:
                if self.is_worker and self.worker.refused:
                    log.error("the leader refused this node: %s", self.worker.refused)
                    return 2
                if self.fatal:
                    log.error("%s: exiting", self.fatal)
                    return 1
                if self.stopping:
                    if deadline is None:
                        deadline = self._begin_shutdown()
                    if not self.is_worker or self.worker.idle or time.monotonic() > deadline:
                        self._drain(0.05)  # let the last exit reports reach the leader
                        return 0
                self._poll_once(self._timeout())
        finally:
            self.close()

    def _poll_once(self, timeout_ms: int) -> None:
        # One poll() and a ZMQ_EVENTS check of only the sockets that need one: zmq_poll
        # would check every socket twice and poll twice, each a system call.
        due = [self.fds[sock] for sock in self.unchecked if sock.getsockopt(EVENTS) & POLLIN]
        self.unchecked.clear()
        ready = self.poller.poll(0 if due else timeout_ms)
        for fd in due + [fd for fd, _ in ready if fd not in due]:
            entry = self.handlers.get(fd)  # (gone if a handler before it closed it)
            if entry is not None:
                try:
                    entry[0](entry[1])
                except Exception:  # a bug must cost one message, not the daemon
                    self.faults.exception("internal error while handling input")
                    if entry[1] in self.fds:  # a socket still watched: what waits behind that message is due
                        self.unchecked.add(entry[1])
        now = time.monotonic()
        if self.is_worker:
            self._carry_out(self.worker.expire())
            self.spawner.flush()
        if self.is_leader and now >= self.next_tick:
            self.next_tick = now + self.config.cluster.heartbeat
            self._publish(b"", self.leader.tick())
            self._carry_out_leader(self.leader.expire())

    def _drain(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self._poll_once(int(left * 1000) + 1)

    def _timeout(self) -> int:
        deadlines = [time.monotonic() + 1.0]
        if self.is_leader:
            deadlines.append(self.next_tick)
        if self.is_worker:
            deadlines.append(self.worker.next_deadline())
            if self.spawner.outbox:  # the fork server's socket was full: try again soon
                deadlines.append(time.monotonic() + 0.001)
        return max(0, int((min(deadlines) - time.monotonic()) * 1000) + 1)

    def _on_signal(self, fd: int) -> None:
        try:
            while os.read(fd, 512):
                pass
        except BlockingIOError:
            pass
        self.stopping = True

    def _begin_shutdown(self) -> float:
        log.info("shutting down")
        if not self.is_worker:
            return time.monotonic()
        self._carry_out(self.worker.shutdown())
        longest = max((pr.call.stop_timeout for pr in self.worker.procs.values()), default=0.0)
        return time.monotonic() + longest + GRACE

    def close(self) -> None:
        signal.set_wakeup_fd(-1)
        if self.spawner is not None:
            self.spawner.close()
        for fd in [*self.ready_fds, self._wake_r, self._wake_w]:
            os.close(fd)
        self.ready_fds.clear()
        self.ctx.destroy(linger=500)

    # -- leader sockets --

    def _on_router(self, sock: zmq.Socket) -> None:
        for peer, msg in self._receive(sock):
            if isinstance(msg, p.Info):
                self._send(sock, peer, self._info(msg))
                continue
            self._carry_out_leader(self.leader.handle(peer, msg))

    def _carry_out_leader(self, out) -> None:
        for dest, msg in out:
            if dest is PUBLISH:
                self._publish(p.topic(msg.location.group), msg)
            else:
                self._send(self.router, dest, msg)

    def _on_subscribe(self, sock: zmq.Socket) -> None:
        # A new subscription gets a tick on its own topic at once: the subscriber then
        # knows that it is live and where the sequence stands.
        for frame, *_ in self._waiting(sock):
            if frame[:1] == b"\x01":
                topic = frame[1:]
                group = topic[:-1].decode(errors="replace") if topic.endswith(b"\0") else None
                self._publish(topic, self.leader.tick(group))

    def _publish(self, topic: bytes, msg: p.Msg) -> None:
        self.unchecked.add(self.pub)
        try:
            self.pub.send(topic, MORE_NOBLOCK)
            self.pub.send(p.encode(msg), NOBLOCK)
        except zmq.Again:
            pass  # no subscriber keeps up: the sequence gap tells it

    # -- worker sockets --

    def _on_client(self, sock: zmq.Socket) -> None:
        for client, msg in self._receive(sock):
            if isinstance(msg, p.Info):
                self._send(sock, client, self._info(msg))
            else:
                self._carry_out(self.worker.on_client(client, msg))

    def _on_leader(self, sock: zmq.Socket) -> None:
        for frames in self._waiting(sock):
            try:
                msg = p.decode(frames[-1])
            except p.BadMessage as exc:
                self.junk.warning("bad message from the leader: %s", exc)
                continue
            self._carry_out(self.worker.on_leader(msg))

    def _on_event(self, sock: zmq.Socket) -> None:
        for frames in self._waiting(sock):
            try:
                msg = p.decode(frames[-1])
            except p.BadMessage as exc:
                self.junk.warning("bad event: %s", exc)
                continue
            if isinstance(msg, (p.Event, p.Tick)):
                self.worker.on_event(msg)
                if isinstance(msg, p.Event) and msg.kind == "started" and msg.location.node == self.worker.node:
                    self.spawner.refill()  # one of ours is registered: now fork the next spare

    def _on_spawner(self, fd: int) -> None:
        try:
            reports = self.spawner.receive()
        except RuntimeError as exc:
            # Its children died with it (PDEATHSIG), but not their own children: kill
            # every group we know of. Exiting lets the leader see this worker go down and
            # start them elsewhere; a supervisor may restart it.
            self._unwatch(fd)
            for pid in self.worker.by_pid:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass
            self.fatal = str(exc)
            return
        for report in reports:
            try:  # they are all read already: a bug must cost one report, not those after it
                self._on_report(*report)
            except Exception:
                self.faults.exception("internal error while handling a report from the fork server")

    def _on_report(self, kind: str, ident: int, value) -> None:
        if kind == "spawned":
            self._carry_out(self.worker.on_spawned(ident, value))
        elif kind == "failed":
            self._close_ready(ident)
            self._carry_out(self.worker.on_spawn_failed(ident, value))
        elif kind == "exited":
            proc = self.worker.by_pid.get(ident)
            if proc is not None:  # what it wrote before dying counts first
                self._close_ready(proc.token)
            self._carry_out(self.worker.on_exit(ident, value))

    def _on_ready(self, fd: int) -> None:
        token, data = self.ready_fds[fd]
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            return
        data += chunk
        if chunk and b"\n" not in data and len(data) < 4096:
            self.ready_fds[fd] = (token, data)
            return
        self._forget_ready(fd)
        if data:
            self._carry_out(self.worker.on_ready(token, data.split(b"\n", 1)[0].decode(errors="replace")))

    def _close_ready(self, token: int) -> None:
        """Take what a process wrote on its ready pipe before it failed or exited."""
        for fd, (t, _) in list(self.ready_fds.items()):
            if t == token:
                self._on_ready(fd)  # reads what is there (the pipe is non-blocking)
                if fd in self.ready_fds:  # nothing, or half a line: no more will come
                    self._forget_ready(fd)

    def _forget_ready(self, fd: int) -> None:
        self._unwatch(fd)
        del self.ready_fds[fd]
        os.close(fd)

    # -- carrying out the worker's effects --

    def _carry_out(self, effects: list) -> None:
        for effect in effects:
            kind = effect[0]
            if kind == "leader":
                self._to_leader(effect[1])
            elif kind == "client":
                self._send(self.clients, effect[1], effect[2])
            elif kind == "spawn":
                self._spawn(effect[1])
            elif kind == "signal":
                self.spawner.signal(effect[1], effect[2])
            elif kind == "reconnect":
                log.warning("no word from the leader: reconnecting (next try in %.1f s)", self.worker.patience)
                self._unwatch(self.dealer)
                self.dealer.close(linger=0)  # what was queued for the lost leader goes too
                self.dealer = self._socket(zmq.DEALER, self._on_leader)
                self.dealer.connect(self.leader_endpoint)

    def _spawn(self, proc: Proc) -> None:
        call, node = proc.call, self.config.node.name
        command = None
        if call.command is not None:
            command = [substitute(a, proc.group, proc.key, node) for a in call.command]
        args = [*call.args, *proc.args]
        try:
            fd, pid = self.spawner.spawn(proc.token, call.entry, command, args, self.worker.env(proc), proc.key)
        except ValueError as exc:
            self._carry_out(self.worker.on_spawn_failed(proc.token, str(exc)))
            return
        if fd is not None:
            self.ready_fds[fd] = (proc.token, b"")
            self._watch(fd, self._on_ready)
        if pid is not None:  # a spare took it (and, with no ready pipe, runs the entry already)
            self._carry_out(self.worker.on_spawned(proc.token, pid, running=fd is None))

    def _to_leader(self, msg: p.Msg) -> None:
        self.unchecked.add(self.dealer)
        try:
            self.dealer.send(p.encode(msg), NOBLOCK)
        except zmq.Again:
            log.warning("the leader is not reachable: %s dropped", type(msg).__name__)

    # -- shared --

    def _receive(self, sock: zmq.Socket):
        """Decoded (peer, message) pairs from a ROUTER; bad input is answered here."""
        for frames in self._waiting(sock):
            peer = frames[0]
            if len(frames) != 2:
                error = p.Error(kind=p.BAD_MESSAGE, message=f"expected 1 frame, got {len(frames) - 1}")
                self.junk.warning("bad message from a peer: %s", error.message)
                self._send(sock, peer, error)
                continue
            try:
                yield peer, p.decode(frames[1])
            except p.BadMessage as exc:
                self.junk.warning("bad message from a peer: %s", exc)
                self._send(sock, peer, exc.reply)

    def _send(self, sock: zmq.Socket, peer: bytes, msg: p.Msg) -> None:
        self.unchecked.add(sock)
        try:
            sock.send(peer, MORE_NOBLOCK)  # two sends: cheaper than send_multipart
            sock.send(p.encode(msg), NOBLOCK)
        except zmq.ZMQError as exc:  # gone (EHOSTUNREACH) or not keeping up (EAGAIN)
            log.debug("reply to a peer dropped: %s", exc)

    def _info(self, msg: p.Info) -> p.InfoReply:
        c = self.config
        return p.InfoReply(id=msg.id, node=c.node.name, role=c.node.role, events=c.cluster.events,
                           silence=c.cluster.heartbeat * c.cluster.liveness)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="forsetid", description="The Forseti daemon.")
    parser.add_argument("--config", required=True, help="path to forseti.toml")
    parser.add_argument("--role", choices=["leader", "worker", "both"], help="overrides node.role")
    parser.add_argument("--name", help="overrides node.name")
    parser.add_argument("--log-level", default="INFO", type=str.upper,
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s[%(process)d] %(levelname)s %(message)s")
    try:
        config = load(args.config)
        if args.role:
            config.node.role = args.role
        if args.name:
            config.node.name = args.name
        daemon = Daemon(config)
    except ConfigError as exc:
        print(f"forsetid: {exc}", file=sys.stderr)
        return 2
    return daemon.run()


if __name__ == "__main__":
    sys.exit(main())
