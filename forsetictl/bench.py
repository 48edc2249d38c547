"""``forsetictl bench``: what a lookup, a start and an exit cost, next to what the
machine itself costs (a raw pyzmq round trip, a bare fork), measured in the same run.

By default it starts a throw-away cluster of its own (a leader and ``--workers``
workers on ipc:// in a private directory) and always tears it down, processes and
all. With ``--config``/``--endpoint`` it measures a running cluster instead, adding two
groups (``bench-entry``, ``bench-command``) if they are missing and stopping every
process it started. ``--simulate`` measures the leader's decisions alone, in process.

Every loop is bounded by a count and by a deadline; nothing here waits forever.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import msgspec
import zmq

from forsetid import protocol as p

from .client import Client, EventStream, ForsetiError

ENTRY_GROUP, COMMAND_GROUP = "bench-entry", "bench-command"
GROUPS = {
    ENTRY_GROUP: p.Call(entry="forsetid.examples:sleeper"),
    COMMAND_GROUP: p.Call(command=["sleep", "600"], stop_timeout=2.0),
}
PHASE_SECONDS = 20.0  # no measurement runs longer than this
clock = time.perf_counter


class BenchError(Exception):
    pass


# -- figures ------------------------------------------------------------------


def stats(samples: list[float]) -> dict:
    """Median and p99 in microseconds."""
    if not samples:
        raise BenchError("no samples: the phase ended before its first measurement")
    s = sorted(samples)
    return {"median": statistics.median(s) * 1e6, "p99": s[min(len(s) - 1, int(len(s) * 0.99))] * 1e6, "n": len(s)}


@dataclass
class Report:
    """Baselines and results; ratios are worked out at the end, against the baselines
    as they stand then (the fork baseline is taken in two halves)."""

    baselines: dict = field(default_factory=dict)  # name -> (value, unit)
    rows: list = field(default_factory=list)
    info: dict = field(default_factory=dict)

    def row(self, name: str, value: float, unit: str, baseline: str, target: tuple | None = None) -> None:
        """``target``: ("x<=", r) or ("x>=", r) against the baseline, or ("<=", v) / (">=", v) absolute."""
        self.rows.append({"name": name, "value": value, "unit": unit, "baseline": baseline, "target": target})

    def latency(self, name: str, st: dict, base: str, median_target: tuple | None = None,
                p99_target: tuple | None = None) -> None:  # fmt: skip
        """Two rows, median and p99, against the baseline's median and p99."""
        self.row(f"{name} median", st["median"], "us", base + " median", median_target)
        self.row(f"{name} p99", st["p99"], "us", base + " p99", p99_target)

    def results(self) -> list[dict]:
        out = []
        for r in self.rows:
            base = self.baselines[r["baseline"]][0]
            ratio = r["value"] / base
            target, ok = r["target"], None
            if target:
                op, limit = target
                subject = ratio if op.startswith("x") else r["value"]
                ok = subject <= limit if op.endswith("<=") else subject >= limit
                target = f"{op[-2:]} {limit:g}x" if op.startswith("x") else f"{op} {_fmt(limit, r['unit'])}"
            out.append({**r, "baseline_value": base, "ratio": ratio, "target": target, "ok": ok})
        return out

    def json(self) -> dict:
        return {"info": self.info, "baselines": {k: {"value": v, "unit": u} for k, (v, u) in self.baselines.items()},
                "results": self.results()}  # fmt: skip

    def table(self) -> str:
        lines = [f"forsetictl bench: {', '.join(f'{k} {v}' for k, v in self.info.items())}", "", "baselines (this run)"]
        for name, (value, unit) in self.baselines.items():
            lines.append(f"  {name:<34} {_fmt(value, unit):>14}")
        lines += ["", f"  {'measurement':<42} {'value':>14} {'x base':>8}  {'baseline':<30} target"]
        for r in self.results():
            mark = "" if r["ok"] is None else ("  ok" if r["ok"] else "  MISSED")
            target = (r["target"] or "") + mark
            lines.append(f"  {r['name']:<42} {_fmt(r['value'], r['unit']):>14} {r['ratio']:>7.2f}x  {r['baseline']:<30} {target}".rstrip())
        return "\n".join(lines)


def _fmt(value: float, unit: str) -> str:
    if unit == "us":
        return f"{value / 1000:.2f} ms" if value >= 10_000 else f"{value:.0f} us"
    if unit == "B":
        return f"{value:.0f} B"
    return f"{value:,.0f} {unit}"


class Progress:
    """One line on a terminal's stderr, rewritten per phase; silent otherwise."""

    def __init__(self, enabled: bool, phases: int) -> None:
        self.enabled, self.phases, self.n = enabled and sys.stderr.isatty(), phases, 0

    def __call__(self, what: str) -> None:
        self.n += 1
        if self.enabled:
            sys.stderr.write(f"\r\033[K[{self.n}/{self.phases}] {what}...")
            sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


# -- a throw-away cluster ------------------------------------------------------


class LocalCluster:
    """A leader and ``workers`` workers as subprocesses, on ipc:// in a private (0700)
    directory or on loopback tcp. ``close()`` always leaves nothing behind: SIGTERM
    (the daemons stop their processes), then SIGKILL to whatever is left of the
    daemons' process groups."""

    def __init__(self, workers: int, transport: str = "ipc", profile_dir: str | None = None) -> None:
        self.dir = tempfile.mkdtemp(prefix="forseti-bench-")  # mkdtemp makes it 0700
        self.transport = transport
        self.procs: list[subprocess.Popen] = []
        self.profile_dir = profile_dir
        self.leader = self._endpoint("leader")
        self.events = self._endpoint("events")
        self.workers = [self._endpoint(f"node{i}") for i in range(1, workers + 1)]
        try:
            self._start("leader", "leader", self.leader)
            for i, listen in enumerate(self.workers, 1):
                self._start(f"node{i}", "worker", listen)
            self._wait_up(workers)
        except BaseException:
            self.close()
            raise

    def _endpoint(self, name: str) -> str:
        if self.transport == "tcp":
            import socket

            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                return f"tcp://127.0.0.1:{s.getsockname()[1]}"
        return f"ipc://{self.dir}/{name}"

    def _start(self, name: str, role: str, listen: str) -> None:
        calls = "".join(f"[calls.{g}]\n{_toml_call(c)}\n" for g, c in GROUPS.items())
        path = os.path.join(self.dir, f"{name}.toml")
        with open(path, "w") as f:
            # The exit measurement SIGKILLs processes on purpose: no crash-loop guard here.
            f.write(f'[cluster]\nname = "bench"\nleader = "{self.leader}"\nevents = "{self.events}"\n'
                    f'max_retries = 1000000\n\n'
                    f'[node]\nname = "{name}"\nrole = "{role}"\nlisten = "{listen}"\n\n{calls}')  # fmt: skip
        cmd = [sys.executable, "-m", "forsetid", "--config", path, "--log-level", "WARNING"]
        if self.profile_dir:  # cProfile writes its file when the daemon exits on SIGTERM
            cmd[1:3] = ["-m", "cProfile", "-o", os.path.join(self.profile_dir, f"{name}.prof"), "-m", "forsetid"]
        with open(os.path.join(self.dir, f"{name}.log"), "ab") as log:
            self.procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))

    def _wait_up(self, count: int) -> None:
        deadline = time.monotonic() + 20.0
        with Client(self.leader, timeout=1.0) as probe:
            while time.monotonic() < deadline:
                for proc in self.procs:
                    if proc.poll() is not None:
                        raise BenchError(f"a daemon exited at start ({proc.args[-3]}): see {self.dir}")
                try:
                    if sum(n.state == "up" for n in probe.nodes()) >= count:
                        return
                except ForsetiError:
                    pass
                time.sleep(0.05)
        raise BenchError(f"the bench cluster did not come up within 20 s (logs in {self.dir})")

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10.0
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                # Not reaped yet, so its process group is still ours: the daemon and its
                # fork server; the processes die with the fork server (PDEATHSIG).
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def _toml_call(call: p.Call) -> str:
    return "".join(f"{k} = {json.dumps(v)}\n" for k, v in msgspec.to_builtins(call).items())


# -- baselines -------------------------------------------------------------------

# The raw echo server: a ROUTER that sends back what it receives; it ends by itself.
ECHO = """
import sys, time, zmq
ctx = zmq.Context()
s = ctx.socket(zmq.ROUTER)
s.setsockopt(zmq.LINGER, 0)
s.setsockopt(zmq.RCVTIMEO, 200)
s.bind(sys.argv[1])
print(s.getsockopt_string(zmq.LAST_ENDPOINT), flush=True)
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    try:
        s.send_multipart(s.recv_multipart())
    except zmq.Again:
        pass
"""


class EchoServer:
    def __init__(self, transport: str, lifetime: float) -> None:
        self.dir = tempfile.mkdtemp(prefix="forseti-echo-")
        bind = "tcp://127.0.0.1:*" if transport == "tcp" else f"ipc://{self.dir}/echo"
        self.proc = subprocess.Popen([sys.executable, "-c", ECHO, bind, str(lifetime)], stdout=subprocess.PIPE,
                                     start_new_session=True)  # fmt: skip
        self.endpoint = self.proc.stdout.readline().decode().strip()
        if not self.endpoint:
            self.close()
            raise BenchError("the echo server did not start")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def dealer(ctx: zmq.Context, endpoint: str) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    return sock


def raw_round_trips(sock: zmq.Socket, frame: bytes, count: int, timeout: float) -> list[float]:
    samples, deadline = [], time.monotonic() + PHASE_SECONDS
    for _ in range(count):
        t = clock()
        sock.send(frame)
        if not sock.poll(int(timeout * 1000)):
            raise BenchError("no echo within the timeout")
        sock.recv()
        samples.append(clock() - t)
        if time.monotonic() > deadline:
            break
    return samples


def pipeline(sock: zmq.Socket, make, total: int, window: int, seconds: float, timeout: float):
    """Keep ``window`` requests in flight until ``total`` were answered or ``seconds``
    passed. ``make(i)`` gives request i as ``(id, frame)``; replies are decoded (as a
    real client would) and matched by id. Returns (answered, elapsed, latencies)."""
    sent_at, latencies = {}, []
    sent = done = 0
    start = clock()
    stop_at = start + min(seconds, PHASE_SECONDS)

    def send():
        nonlocal sent
        rid, frame = make(sent)
        sent_at[rid] = clock()
        sock.send(frame)
        sent += 1

    while sent < min(window, total):
        send()
    while done < sent:
        if not sock.poll(int(timeout * 1000)):
            raise BenchError(f"{sent - done} requests unanswered after {timeout:g} s")
        msg = p.decode(sock.recv())
        now = clock()
        if isinstance(msg, p.Error):
            raise BenchError(f"the cluster answered with an error: {msg.message}")
        latencies.append(now - sent_at.pop(msg.id))
        done += 1
        if sent < total and now < stop_at:
            send()
    return done, clock() - start, latencies


# The bare fork baseline runs in a fresh interpreter that imports nothing more: the
# cheapest fork this machine offers (a process that imported zmq forks at twice the cost).
FORKS = """
import os, sys, time
out = []
end = time.monotonic() + float(sys.argv[2])
for _ in range(int(sys.argv[1])):
    t = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    out.append(time.perf_counter() - t)
    if time.monotonic() > end:
        break
print(" ".join(map(repr, out)))
"""


def bare_forks(count: int) -> list[float]:
    try:
        done = subprocess.run([sys.executable, "-c", FORKS, str(count), str(PHASE_SECONDS)], capture_output=True,
                              timeout=PHASE_SECONDS * 2, check=True)  # fmt: skip
    except (subprocess.SubprocessError, OSError) as exc:
        raise BenchError(f"the fork baseline failed: {exc}") from None
    return [float(x) for x in done.stdout.split()]


# -- the cluster measurements ----------------------------------------------------------


def sequential(fn, count: int) -> list[float]:
    samples, deadline = [], time.monotonic() + PHASE_SECONDS
    for i in range(count):
        t = clock()
        fn(i)
        samples.append(clock() - t)
        if time.monotonic() > deadline:
            break
    return samples


def find_frame(group: str, key: str, rid: int = 1) -> bytes:
    return p.encode(p.Find(id=rid, group=group, key=key))


class Bench:
    def __init__(self, args, workers: list[str], transport: str, progress: Progress) -> None:
        self.args, self.workers, self.transport, self.progress = args, workers, transport, progress
        self.ctx = zmq.Context.instance()
        self.timeout = args.timeout
        self.report = Report()
        self.run_id = f"{os.getpid()}-{int(time.time())}"
        self.client = Client(workers[0], timeout=self.timeout)
        self.started: list[tuple[str, str]] = []  # every key this run created, to stop at the end
        self.names = {}  # worker endpoint -> node name
        for ep in workers:
            with Client(ep, timeout=self.timeout) as c:
                self.names[ep] = c.info().node

    def key(self, what: str, i: int) -> str:
        return f"{what}-{self.run_id}-{i}"

    def ensure_groups(self) -> None:
        known = self.client.calls()
        for group, call in GROUPS.items():
            if group not in known:
                self.client.add_call(group, entry=call.entry, command=call.command, stop_timeout=call.stop_timeout)

    # round trips: the raw baseline and the cluster in alternating chunks, so that both
    # see the same machine (a shared machine's load comes and goes)

    def round_trips(self) -> None:
        a, r, b = self.args, self.report, self.report.baselines
        loc = self.get(ENTRY_GROUP, self.key("cached", 0))
        self.progress("round trips: raw echo and cached find, alternating")
        echo = EchoServer(self.transport, lifetime=PHASE_SECONDS * 4)
        raw, cached = dealer(self.ctx, echo.endpoint), dealer(self.ctx, self.workers[0])
        find = lambda rid: find_frame(ENTRY_GROUP, loc.key, rid)  # noqa: E731 - the same bytes to both
        try:
            raw_round_trips(raw, find(1), 50, self.timeout)  # connect and warm up
            sequential(lambda i: self.client.find(ENTRY_GROUP, loc.key), 50)
            raw_lat, find_lat = [], []
            chunk = max(1, a.count // 10)
            for _ in range(10):
                raw_lat += raw_round_trips(raw, find(1), chunk, self.timeout)
                find_lat += sequential(lambda i: self.client.find(ENTRY_GROUP, loc.key), chunk)
            st = stats(raw_lat)
            b["raw round trip median"], b["raw round trip p99"] = (st["median"], "us"), (st["p99"], "us")
            b["raw round trips/s (sequential)"] = (1e6 / st["median"], "/s")
            self.progress("throughput: raw echo and cached find, alternating")
            best_raw = best_find = 0.0
            for _ in range(3):  # the best of three runs each
                for sock, is_raw in ((raw, True), (cached, False)):
                    done, elapsed, _ = pipeline(sock, lambda i: (i + 1, find(i + 1)), a.count * 20, a.window,
                                                a.seconds / 3, self.timeout)  # fmt: skip
                    if is_raw:
                        best_raw = max(best_raw, done / elapsed)
                    else:
                        best_find = max(best_find, done / elapsed)
            b["raw pipelined echo/s"] = (best_raw, "/s")
        finally:
            raw.close()
            cached.close()
            echo.close()
        r.latency("cached find (Client, sequential)", stats(find_lat), "raw round trip", ("x<=", 1.3))
        r.row(f"cached find, {a.window} in flight (1 DEALER)", best_find, "/s", "raw pipelined echo/s", ("x>=", 0.5))
        self.near_cache(loc)
        self.misses()

    def forks(self, count: int) -> None:
        """The bare fork baseline, taken in two halves (before and after the starts)."""
        self.progress("baseline: bare fork()+exit+reap")
        self._forks = getattr(self, "_forks", []) + bare_forks(count)
        st, b = stats(self._forks), self.report.baselines
        b["fork+exit+reap median"], b["fork+exit+reap p99"] = (st["median"], "us"), (st["p99"], "us")
        b["forks/s (sequential)"] = (1e6 / st["median"], "/s")

    def near_cache(self, loc: p.Location) -> None:
        a, r = self.args, self.report
        self.progress("near-cache find")
        with Client(self.workers[0], timeout=self.timeout, cache=True) as near:
            deadline = time.monotonic() + 5.0
            while near.near is None or near.near.hits == 0:  # until the near cache answers
                near.find(ENTRY_GROUP, loc.key)
                if time.monotonic() > deadline:
                    raise BenchError("the near cache did not go live within 5 s")
                time.sleep(0.001)
            n, find = a.count * 100, near.find
            t = clock()
            for _ in range(n):
                find(ENTRY_GROUP, loc.key)
            rate = n / (clock() - t)
        r.row("near-cache find (Client(cache=True))", rate, "/s", "raw round trips/s (sequential)", (">=", 300_000))

    def misses(self) -> None:
        a, r, client = self.args, self.report, self.client
        self.progress("miss path")
        st = stats(sequential(lambda i: client.find(ENTRY_GROUP, self.key("absent", i)), a.count))
        r.latency("miss: find via worker -> leader", st, "raw round trip")

    # starts

    def starts(self, group: str, label: str) -> None:
        a, r = self.args, self.report
        self.progress(f"get-or-create, {label}, sequential")
        t = clock()
        st = stats(sequential(lambda i: self.get(group, self.key(label, i)), a.starts))
        rate = st["n"] / (clock() - t)
        r.latency(f"new {label}: get, sequential", st, "fork+exit+reap", ("x<=", 3.0) if group == ENTRY_GROUP else None)
        r.row(f"new {label}: starts/s, sequential", rate, "/s", "forks/s (sequential)")
        self.stop_all()
        self.progress(f"get-or-create, {label}, {a.concurrency} concurrent")
        sock = dealer(self.ctx, self.workers[0])
        keys = [self.key(label + "-c", i) for i in range(a.starts)]
        self.started += [(group, k) for k in keys]
        make = lambda i: (i + 1, p.encode(p.Get(id=i + 1, group=group, key=keys[i])))  # noqa: E731
        done, elapsed, lat = pipeline(sock, make, len(keys), a.concurrency, PHASE_SECONDS, self.timeout * 4)
        sock.close()
        r.latency(f"new {label}: get, {a.concurrency} concurrent", stats(lat), "fork+exit+reap")
        r.row(f"new {label}: starts/s, {a.concurrency} concurrent", done / elapsed, "/s", "forks/s (sequential)")
        self.stop_all()

    def get(self, group: str, key: str) -> p.Location:
        self.started.append((group, key))
        return self.client.get(group, key)

    def stop_all(self) -> None:
        """Stop every process this run started (a few in flight at a time)."""
        if not self.started:
            return
        sock = dealer(self.ctx, self.workers[0])
        todo, self.started = self.started, []
        make = lambda i: (i + 1, p.encode(p.Stop(id=i + 1, group=todo[i][0], key=todo[i][1])))  # noqa: E731
        try:
            pipeline(sock, make, len(todo), 16, PHASE_SECONDS * 3, self.timeout * 2)
        finally:
            sock.close()

    # exits

    def exits(self) -> None:
        a, r = self.args, self.report
        self.progress("exit propagation")
        to_event, to_find, other_nodes = [], [], set()
        with EventStream(self.ctx, self.client.info().events, ENTRY_GROUP, self.timeout) as stream:
            for i in range(a.exits):
                loc = self.get(ENTRY_GROUP, self.key("exit", i))
                others = [ep for ep in self.workers if self.names[ep] != loc.node] or self.workers
                with Client(others[0], timeout=self.timeout) as other:
                    other_nodes.add(self.names[others[0]])
                    deadline = time.monotonic() + 5.0
                    while other.find(ENTRY_GROUP, loc.key) != loc:  # until that node knows it
                        if time.monotonic() > deadline:
                            raise BenchError(f"{loc.key} never became known on {self.names[others[0]]}")
                    if not _kill_if_ours(loc):
                        r.info["exit propagation"] = "skipped: the processes are not on this machine"
                        return
                    t0 = clock()
                    t_event = t_find = None
                    while t_event is None or t_find is None:
                        if clock() - t0 > 5.0:
                            raise BenchError(f"the exit of {loc.key} did not propagate within 5 s")
                        if t_event is None:
                            ev = stream.next_event(0 if t_find is None else 1.0)
                            if ev is not None and ev.kind == "exited" and ev.key == loc.key:
                                t_event = clock()
                        if t_find is None and other.find(ENTRY_GROUP, loc.key) is None:
                            t_find = clock()
                    to_event.append(t_event - t0)
                    to_find.append(t_find - t0)
                self.started.remove((ENTRY_GROUP, loc.key))
        r.latency("exit -> event at a subscriber", stats(to_event), "raw round trip")
        r.latency("exit -> find is None on another node", stats(to_find), "raw round trip", p99_target=("<=", 20_000))
        r.info["exit checked on"] = ",".join(sorted(other_nodes))

    def close(self) -> None:
        try:
            self.stop_all()
        finally:
            self.client.close()


def _kill_if_ours(loc: p.Location) -> bool:
    """SIGKILL the process of ``loc`` if it runs here: its parent (the fork server) must
    be the child of a forsetid daemon, so that a pid from another machine never hits
    an unrelated process of ours."""
    try:
        zygote = _ppid(loc.pid)
        with open(f"/proc/{_ppid(zygote)}/cmdline", "rb") as f:
            if b"forsetid" not in f.read():
                return False
    except (OSError, ValueError, IndexError):
        return False
    os.kill(loc.pid, signal.SIGKILL)
    return True


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as f:
        return int(f.read().rsplit(b")", 1)[1].split()[1])


# -- simulation: the leader's decisions at scale, in one process ------------------------


def simulate(args) -> int:
    """Drive the leader's decision logic with simulated workers and registered keys;
    each size runs in a forked child, so that its memory is measured from a clean start."""
    sizes = [(w, args.sim_keys[0]) for w in args.sim_workers]
    sizes += [(args.sim_workers[-1], k) for k in args.sim_keys[1:]]
    progress = Progress(not args.json, phases=len(sizes))
    rows = []
    try:
        for workers, keys in sizes:
            progress(f"simulating {workers} workers, {keys} keys")
            rows.append(_in_child(_simulate_one, workers, keys, args.sim_ops))
    except BenchError as exc:
        progress.done()
        print(f"forsetictl: bench: {exc}", file=sys.stderr)
        return 3
    progress.done()
    if args.json:
        print(json.dumps({"simulation": rows}))
        return 0
    cols = [("workers", "workers", "{:,}"), ("keys", "keys", "{:,}"), ("bytes_per_process", "B/process", "{:,.0f}"),
            ("get_new_us", "get new key us", "{:.2f}"), ("choose_us", "choose+update us", "{:.2f}"),
            ("scan_us", "old scan us", "{:.2f}"), ("find_us", "find us", "{:.2f}"), ("fill_s", "fill s", "{:.1f}")]  # fmt: skip
    print("  ".join(f"{title:>16}" for _, title, _ in cols))
    for row in rows:
        print("  ".join(f"{fmt.format(row[k]):>16}" for k, _, fmt in cols))
    return 0


def _simulate_one(workers: int, keys: int, ops: int) -> dict:
    import random

    from forsetid.leader import Leader

    leader = Leader({"sim": p.Call(entry="sim:run")})
    random.seed(1)
    per = max(1, keys // workers)
    now = time.time()
    before = _rss()
    t = clock()
    for w in range(workers):  # each worker says hello with its share of the keys
        name = f"w{w:05d}"
        locs = [p.Location("sim", f"k{w}-{j}", name, 1000 + j, None, now) for j in range(per)]
        leader.handle(name.encode(), p.Hello(node=name, incarnation="1", processes=locs))
        del locs
    fill = clock() - t
    per_process = (_rss() - before) / (per * workers)

    gets = [p.Get(id=i, group="sim", key=f"new-{i}") for i in range(ops)]
    elapsed = 0.0
    for msg in gets:  # a placement decision: a get of a new key, then its start reported
        t = clock()
        (reply,) = leader.handle(b"client", msg)
        peer, spawn = reply.peer, reply.msg
        elapsed += clock() - t
        loc = p.Location("sim", spawn.key, leader.node_of[peer], 1, None, now)
        leader.handle(peer, p.Spawned(id=spawn.id, location=loc))
    get_new = elapsed / ops

    placement = leader.placement
    t = clock()
    for _ in range(ops):
        placement.add(placement.choose(), +1)
    choose = (clock() - t) / ops
    scans = max(10, ops // workers)  # the linear scan that choose() was before, for comparison
    t = clock()
    for _ in range(scans):
        min((w.load, w.name) for w in placement.workers.values() if w.up and not w.full)
    scan = (clock() - t) / scans

    finds = [p.Find(id=i, group="sim", key=f"k{random.randrange(workers)}-{random.randrange(per)}") for i in range(ops)]
    t = clock()
    for msg in finds:
        leader.handle(b"client", msg)
    find = (clock() - t) / ops
    return {"workers": workers, "keys": per * workers, "bytes_per_process": per_process, "get_new_us": get_new * 1e6,
            "choose_us": choose * 1e6, "scan_us": scan * 1e6, "find_us": find * 1e6, "fill_s": fill}  # fmt: skip


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _in_child(fn, *args) -> dict:
    """``fn(*args)`` in a forked child (at most 10 minutes); its result comes back as JSON."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(r)
            signal.alarm(600)
            data = json.dumps(fn(*args)).encode()
            os.write(w, data)  # a few hundred bytes: one write
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    try:
        while chunk := os.read(r, 65536):
            chunks.append(chunk)
    except BaseException:  # interrupted: the child goes too
        os.kill(pid, signal.SIGKILL)
        raise
    finally:
        os.close(r)
        _, status = os.waitpid(pid, 0)
    if status != 0 or not chunks:
        raise BenchError(f"the simulation of {args} failed (status {status})")
    return json.loads(b"".join(chunks))


# -- the entry point ---------------------------------------------------------------------


def run(args) -> int:
    """``forsetictl bench``; returns the exit status."""
    if args.simulate:
        return simulate(args)
    own = not (args.config or args.endpoint)
    progress = Progress(not args.json, phases=12 + own)
    cluster = None
    bench = None
    try:
        if not own:
            from .cli import endpoint_of

            endpoint = endpoint_of(args)
            with Client(endpoint, timeout=args.timeout) as c:
                if c.info().role == "leader":
                    raise BenchError(f"{endpoint} is the leader; give a worker's endpoint (node.listen)")
            workers, transport = [endpoint], endpoint.partition("://")[0]
            transport = "tcp" if transport == "tcp" else "ipc"
        else:
            progress("starting a local cluster")
            cluster = LocalCluster(args.workers, args.transport, args.profile)
            workers, transport = cluster.workers, args.transport
        bench = Bench(args, workers, transport, progress)
        bench.report.info = {"cluster": "own" if cluster else workers[0], "workers": len(bench.names) if not cluster
                             else args.workers, "transport": transport, "cpus": os.cpu_count()}  # fmt: skip
        bench.ensure_groups()
        bench.round_trips()
        bench.forks(args.forks // 2)
        bench.starts(ENTRY_GROUP, "entry")
        bench.starts(COMMAND_GROUP, "command")
        bench.forks(args.forks - args.forks // 2)
        bench.exits()
    except (BenchError, ForsetiError) as exc:
        progress.done()
        if args.json:
            print(json.dumps({"error": "bench", "message": str(exc)}))
        print(f"forsetictl: bench: {exc}", file=sys.stderr)
        return 3
    finally:
        try:
            if bench is not None:
                bench.close()
        except (BenchError, ForsetiError):
            pass
        finally:
            if cluster is not None:
                cluster.close()
    progress.done()
    report = bench.report
    print(json.dumps(report.json()) if args.json else report.table())
    return 0
