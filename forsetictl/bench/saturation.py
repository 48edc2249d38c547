"""``forsetictl bench --saturation``: how many misses and starts one leader takes on
the wire before its throughput stops growing, and what each costs it in CPU.

The leader is a real ``forsetid`` daemon (role "leader", a cluster of its own); the
workers are *stand-ins*: DEALERs in this one process that speak the worker's side of
the protocol (``forsetid/protocol.py``) to it. Each says hello with its share of the
registered keys, pings every heartbeat, answers every ``spawn`` with ``spawned`` (a
made-up pid: nothing is forked) and every ``kill`` with ``exited``. Real workers
cannot be had by the thousand on one machine, and on 2 cores a few real ones would
take the CPU the leader is measured by.

A *miss* is what a worker forwards when its cache cannot answer: a ``find`` of a
registered key, sent to the leader by a stand-in. A *start* is a ``get`` of a new key:
the leader chooses a stand-in, which answers the ``spawn``, and the leader answers the
get. Each is driven with 1, 4, 16, 64 and 256 requests in flight (misses after a
warm-up); the best rate is the rate at saturation. The leader's CPU time (every
thread, ``/proc/PID/task/*/schedstat``) over the run at 256, divided by the requests
answered, less what it spends at rest (its heartbeats, measured just before), is its
CPU per miss or per start; 1 s over it is what one core of the leader could take,
whether or not this process (the driver, which shares the machine) kept up.
"""

from __future__ import annotations

import os
import random
import select
import time

import zmq

from forsetid import protocol as p
from forsetid.const import scale_sizes

from ..localcluster import LocalCluster
from .baselines import EchoServer, raw_round_trips
from .report import BenchError, Progress, Report, stats
from .timing import PHASE_SECONDS, clock, dealer, pipeline

GROUP = "bench-sat"
RAMP = (1, 4, 16, 64, 256)  # requests in flight: the rate stops growing on the way
REQUESTERS = 16  # the stand-ins that forward the requests (every one answers spawns)
MISS_TARGET, START_TARGET = 20_000, 5_000  # per second, one leader on one core
# Hellos go in waves, each welcomed before the next: all at once, 1,000 of 1,000 keys
# took a leader 11 s of CPU (11 us a key), and the pings of the first welcomed waited
# behind the others' hellos longer than heartbeat x liveness: it took them for down.
HELLO_WAVE = 20
MAX_PER_WORKER = 10_000  # keys a stand-in registers in its hello (~70 B each)
FLAT = 1.5  # CPU per request at any size, x that at the smallest: "flat"


def phases(args) -> int:
    return 1 + 2 * len(scale_sizes(args.sat_workers, args.sat_keys))


def saturation_bench(args, progress: Progress) -> Report:
    for workers, keys in scale_sizes(args.sat_workers, args.sat_keys):
        if keys // workers > MAX_PER_WORKER:
            raise BenchError(
                f"{keys:,} keys over {workers:,} workers: at most {MAX_PER_WORKER:,} a worker (its hello must fit in "
                "one message); give more workers"
            )
    report = Report()
    report.info = {
        "leader": "a forsetid daemon of its own (role leader)",
        "workers": "protocol-speaking stand-ins in this process (nothing is forked)",
        "cpus": os.cpu_count(),
    }
    _baseline(args, report, progress)
    for workers, keys in scale_sizes(args.sat_workers, args.sat_keys):
        _one_size(args, report, progress, workers, keys)
    return report


def _baseline(args, report: Report, progress: Progress) -> None:
    """What this process pushes through a trivial echo server: the driver's own ceiling."""
    progress("baseline: raw echo, pipelined")
    echo = EchoServer(args.transport, lifetime=PHASE_SECONDS)
    sock = dealer(zmq.Context.instance(), echo.endpoint)

    def find(i: int) -> tuple[int, bytes]:
        return i + 1, p.encode(p.Find(id=i + 1, group=GROUP, key="k0-0"))

    try:
        st = stats(raw_round_trips(sock, find(0)[1], 200, args.timeout))
        done, elapsed, _ = pipeline(sock, find, 10**9, 64, args.seconds, args.timeout)
    finally:
        sock.close()
        echo.close()
    report.baseline("raw round trip", st)
    report.baselines["raw pipelined echo/s"] = (done / elapsed, "/s")


def _one_size(args, report: Report, progress: Progress, workers: int, keys: int) -> None:
    size = f"{workers:,} workers, {keys:,} keys"
    progress(f"leader at saturation, {size}: misses")
    cluster = LocalCluster(
        0,
        calls={GROUP: {"entry": "forsetid.examples:sleeper"}},
        cluster={"name": "bench-sat", "heartbeat": 1.0},
        tcp=args.transport == "tcp",
        profile_dir=args.profile,
        prefix="forseti-bench-sat-",
    )
    stand = None
    try:
        pid = cluster.procs[cluster.leader_name].pid
        stand = StandIns(zmq.Context.instance(), cluster.endpoint(cluster.leader_name), workers, keys, args.timeout)
        per = max(1, keys // workers)

        def miss(rid: int) -> bytes:
            key = f"k{random.randrange(workers)}-{random.randrange(per)}"
            return p.encode(p.Find(id=rid, group=GROUP, key=key))

        def start(rid: int) -> bytes:
            return p.encode(p.Get(id=rid, group=GROUP, key=f"new-{rid}"))

        report.info[f"hellos, {size}"] = f"welcomed in {stand.hello_seconds:.1f} s"
        stand.wait_placing(start(0), args.timeout)
        stand.drive(miss, RAMP[-1], args.seconds, args.timeout)  # a warm-up: what the hellos left (a collection)
        cpu, t = leader_cpu(pid), clock()
        stand.rest(args.seconds)
        rest = (leader_cpu(pid) - cpu) / (clock() - t)  # cores: the heartbeats of every stand-in
        misses = saturate(stand, miss, pid, args.seconds, args.timeout, rest)
        progress(f"leader at saturation, {size}: starts")
        starts = saturate(stand, start, pid, args.seconds, args.timeout, rest)
    except BenchError as exc:
        raise BenchError(f"{size}: {exc}") from None
    finally:
        if stand is not None:
            stand.close()
        cluster.close()
    for what, point, target in (("miss", misses, MISS_TARGET), ("start", starts, START_TARGET)):
        rate, cpu_us, cores, window = point
        whats = what + ("es" if what == "miss" else "s")
        first = f"leader CPU per {what} ({args.sat_workers[0]:,} workers, {args.sat_keys[0]:,} keys)"
        if first not in report.baselines:
            report.baselines[first] = (cpu_us, "us")
        report.row(f"{whats}/s at saturation, {size}", rate, "/s", "raw pipelined echo/s", (">=", target))
        report.row(f"leader CPU per {what}, {size}", cpu_us, "us", first, ("x<=", FLAT))
        report.row(f"{whats}/s one leader core takes, {size}", 1e6 / cpu_us, "/s", "raw pipelined echo/s",
                   (">=", target))  # fmt: skip
        busy = f"at {RAMP[-1]}, the leader busy {cores:.2f} cores ({rest:.3f} at rest)"
        report.info[f"{whats}, {size}"] = f"best at {window} in flight; {busy}"


def saturate(
    stand: StandIns, make, pid: int, seconds: float, timeout: float, rest: float
) -> tuple[float, float, float, int]:
    """(rate, leader CPU us per request, leader cores busy, window): the best rate of
    every window in RAMP, the rate at saturation (every window runs: on a shared
    machine, one step that did not grow may be noise); the CPU and the cores at the
    largest window, where the leader takes its messages in the largest batches, as
    it does when saturated (a lone message costs it more: its own wake-up). The CPU
    per request leaves out what the leader spends at ``rest`` (cores: the heartbeats),
    which would otherwise weigh more the fewer requests this process manages to send."""
    points = []
    for window in RAMP:
        cpu = leader_cpu(pid)
        done, elapsed = stand.drive(make, window, seconds, timeout)
        cpu = leader_cpu(pid) - cpu
        net = max(cpu - rest * elapsed, cpu / 2)  # (at most half: a rest measured on a busy machine is noisy)
        points.append((done / elapsed, net / done * 1e6, cpu / elapsed, window))
    rate, _, _, window = max(points)
    return rate, points[-1][1], points[-1][2], window


def leader_cpu(pid: int) -> float:
    """CPU seconds of process ``pid``, every thread (ZeroMQ's I/O thread included)."""
    total = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                    total += int(f.read().split()[0])
            except FileNotFoundError:  # a thread that ended meanwhile
                pass
    except OSError as exc:
        raise BenchError(f"cannot read the leader's CPU time (/proc/{pid}): {exc}") from None
    return total / 1e9


class StandIns:
    """``workers`` stand-in workers, each a DEALER to the leader at ``endpoint``: hello
    with its share of ``keys`` registered processes, a ping every heartbeat, a
    ``spawned`` for every ``spawn`` and an ``exited`` for every ``kill``."""

    def __init__(self, ctx: zmq.Context, endpoint: str, workers: int, keys: int, timeout: float) -> None:
        self.socks: list[zmq.Socket] = []
        self.names: list[str] = []
        self.index: dict[zmq.Socket, int] = {}
        # epoll on the sockets' ZMQ_FDs, as the daemon's loop polls them: a zmq.Poller of
        # 1,000 sockets takes some 5 ms a poll, which would make this process the limit.
        self.epoll = select.epoll()
        self.by_fd: dict[int, zmq.Socket] = {}
        self.unchecked: set[zmq.Socket] = set()  # sent on, or not yet drained: ZMQ_FD may not signal
        self.pids = iter(range(10_000_000, 1 << 30))
        self.rid = 0
        for w in range(workers):
            sock, name = dealer(ctx, endpoint), f"sat{w:04d}"
            sock.setsockopt(zmq.SNDHWM, 0)  # (bursts of answers must not be dropped)
            self.index[sock] = w
            self.socks.append(sock)
            self.names.append(name)
            fd = sock.getsockopt(zmq.FD)
            self.by_fd[fd] = sock
            self.epoll.register(fd, select.EPOLLIN)
            self.unchecked.add(sock)
        self.next_ping = time.monotonic() + 1.0
        self.welcomed: list[zmq.Socket] = []  # (a ping before the welcome would look like a predecessor's worker)
        t = clock()
        per = max(1, keys // workers)
        for first in range(0, workers, HELLO_WAVE):
            self._hello(range(first, min(first + HELLO_WAVE, workers)), per, timeout + per * HELLO_WAVE / 20_000)
        self.hello_seconds = clock() - t

    def _hello(self, wave: range, per: int, timeout: float) -> None:
        """Hellos from the stand-ins of ``wave``, each with ``per`` processes, until welcomed."""
        now = time.time()
        for w in wave:
            locs = [p.Location(GROUP, f"k{w}-{j}", self.names[w], next(self.pids), None, now) for j in range(per)]
            self.send(self.socks[w], p.Hello(id=w + 1, node=self.names[w], incarnation="bench", processes=locs))
        waiting, deadline = set(wave), time.monotonic() + timeout
        while waiting:
            if time.monotonic() > deadline:
                raise BenchError(f"{len(waiting)} stand-in workers not welcomed within {timeout:g} s")
            for w, msg in self.pump(100):
                if isinstance(msg, p.Welcome):
                    waiting.discard(w)
                    self.welcomed.append(self.socks[w])
                elif isinstance(msg, p.Error):
                    raise BenchError(f"the leader refused a stand-in worker: {msg.message}")

    def wait_placing(self, frame: bytes, timeout: float) -> None:
        """Until the leader places new keys (a fresh one waits about a heartbeat first)."""
        self.send(self.socks[0], frame)
        deadline = time.monotonic() + timeout + 3.0
        while time.monotonic() < deadline:
            for _, msg in self.pump(100):
                if isinstance(msg, p.Found):
                    return
                if isinstance(msg, p.Error):
                    raise BenchError(f"the leader answered a get with an error: {msg.message}")
        raise BenchError("the leader placed no new key in time")

    def pump(self, timeout_ms: int) -> list[tuple[int, p.Msg]]:
        """Answer what the leader asks of the stand-ins; the rest (answers to their
        requests, welcomes, errors) is returned as (stand-in, message)."""
        out = []
        due, self.unchecked = self.unchecked, set()
        due.update(self.by_fd[fd] for fd, _ in self.epoll.poll(0 if due else timeout_ms / 1000))
        for sock in due:
            w = self.index[sock]
            for (frame,) in p.waiting(sock):  # (until ZMQ_EVENTS says none: that re-arms ZMQ_FD)
                msg = p.decode(frame)
                if isinstance(msg, p.Spawn):
                    loc = p.Location(msg.group, msg.key, self.names[w], next(self.pids), None, time.time())
                    self.send(sock, p.Spawned(id=msg.id, location=loc))
                elif isinstance(msg, p.Kill):
                    gone = p.Exited(location=msg.location, exit_code=None, signal=15, reason=msg.reason, at=time.time())
                    self.send(sock, gone)
                elif not isinstance(msg, p.Pong):
                    out.append((w, msg))
        if time.monotonic() >= self.next_ping:  # every stand-in's heartbeat, as a worker's
            self.next_ping = time.monotonic() + 1.0
            for sock in self.welcomed:
                self.send(sock, p.Ping(id=0))
        return out

    def send(self, sock: zmq.Socket, msg: p.Msg | bytes) -> None:
        sock.send(msg if isinstance(msg, bytes) else p.encode(msg))
        self.unchecked.add(sock)

    def rest(self, seconds: float) -> None:
        """Nothing asked for ``seconds``: the stand-ins only ping and answer."""
        end = clock() + seconds
        while clock() < end:
            self.pump(max(1, int((end - clock()) * 1000)))

    def drive(self, make, window: int, seconds: float, timeout: float) -> tuple[int, float]:
        """Keep ``window`` requests (``make(id)``: a frame) in flight from the first
        REQUESTERS stand-ins for ``seconds``: (answered, elapsed)."""
        senders = self.socks[: min(REQUESTERS, len(self.socks))]
        pending: set[int] = set()

        def send(n: int) -> None:
            self.rid += 1
            pending.add(self.rid)
            self.send(senders[n % len(senders)], make(self.rid))

        for n in range(window):
            send(n)
        done, start = 0, clock()
        stop_at, give_up = start + seconds, start + seconds + timeout
        while pending:
            for w, msg in self.pump(100):
                if isinstance(msg, p.Error):
                    raise BenchError(f"the leader answered with an error: {msg.message}")
                if msg.id in pending:
                    pending.discard(msg.id)
                    done += 1
                    if clock() < stop_at:
                        send(w)
            if clock() > give_up:
                raise BenchError(f"{len(pending)} requests unanswered after {timeout:g} s")
        return done, clock() - start

    def close(self) -> None:
        self.epoll.close()
        for sock in self.socks:
            sock.close(linger=0)
