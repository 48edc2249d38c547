"""``forsetictl bench --curve``: what CURVE costs a cached find and a new entry start.

Two throw-away clusters run side by side, one plain and one with CURVE on every socket
(keys made in its private directory: the server's pair, one per worker, one client
filed under clients/), with a raw pyzmq echo next to each: a plain ROUTER and a CURVE
server, its client a CURVE DEALER. Side by side rather than one after the other: an
idle cluster costs nothing measurable (its daemons sleep in poll), and only then can
the measurements alternate in chunks, so that both see the same machine. The order
within a round is reversed every other round, so that neither side always follows
the other's background work (a fork server forking a spare ahead).

With two CPUs or more, the bench runs on one and everything it starts (daemons, their
fork servers and processes, the echo servers) on another: a round trip between two
processes on one CPU takes about half as long as one between two CPUs (on a small
VM), and where the scheduler happens to put each process would otherwise weigh more
than CURVE does, differently for each side.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import msgspec
import zmq
import zmq.auth

from ..client import Client
from ..localcluster import LocalCluster
from ..security import load_keys
from .baselines import EchoServer, raw_round_trips
from .measure import ENTRY_GROUP, GROUPS, find_frame
from .report import Progress, Report, stats
from .timing import PHASE_SECONDS, alternate, cpus_apart, dealer, new_keys, pin, sequential

PHASES = 3
# Samples per chunk: small, so that the sides take turns often (a chunk of round trips
# lasts a few milliseconds, one of starts some tens), and large enough that switching
# sides is a small part of each.
ROUND_TRIP_CHUNK, START_CHUNK = 50, 10
CLIENT = "bench"  # the client key's name, filed under authorized/clients/


def curve_bench(args, progress: Progress) -> Report:
    clusters: list[LocalCluster] = []
    echoes: list[EchoServer] = []
    clients: list[Client] = []
    cpus = cpus_apart()
    try:
        progress("starting a plain and a CURVE cluster")
        # Every process started from here on inherits this thread's CPU: the servers' CPU.
        pinned = cpus is not None and pin({cpus[1]}, threads=False)
        plain = _cluster(args, clusters, secure=False)
        secure = _cluster(args, clusters, secure=True)
        keys = secure.client_keys
        echoes.append(EchoServer(args.transport, lifetime=PHASE_SECONDS * 4))
        server_secret = str(secure.dir / "keys" / "server.key_secret")
        echoes.append(EchoServer(args.transport, lifetime=PHASE_SECONDS * 4, curve_key=server_secret))
        for c in clusters:
            c.wait_up(timeout=20.0)
        if pinned:
            pinned = pin({cpus[0]})  # this process, all its threads (libzmq's I/O threads too): the client's
        plain_client = Client(plain.endpoint(plain.node_names[0]), timeout=args.timeout)
        clients.append(plain_client)
        secure_client = Client(secure.endpoint(secure.node_names[0]), timeout=args.timeout, **keys)
        clients.append(secure_client)
        report = Report()
        report.info = {
            "cluster": "own, plain and CURVE side by side",
            "workers": args.workers,
            "transport": args.transport,
            "cpus": os.cpu_count(),
            "pinned": f"bench on cpu {cpus[0]}, daemons and echo servers on cpu {cpus[1]}" if pinned else "no",
        }
        curve_keys = load_keys(keys["key"], keys["server_key"])
        _round_trips(args, report, progress, plain_client, secure_client, curve_keys, echoes)
        _starts(args, report, progress, plain_client, secure_client)
        return report
    finally:
        for c in clients:
            c.close()
        for e in echoes:
            e.close()
        for c in clusters:
            c.close()
        if cpus is not None:
            pin(set(cpus))


def _cluster(args, clusters: list, secure: bool) -> LocalCluster:
    """A cluster, started; with ``secure``, CURVE on (its keys made before its daemons
    start: the key paths in the configs are relative to them, in the same directory)."""
    security = None
    if secure:

        def security(name: str) -> dict:
            table = {"curve": True, "server_key": "keys/server.key", "authorized": "keys/authorized"}
            if name != "leader":
                table["key"] = f"keys/{name}.key_secret"
            return table

    profile = None
    if args.profile:  # the two clusters' daemons have the same names: a folder each
        profile = os.path.join(args.profile, "curve" if secure else "plain")
        os.makedirs(profile, exist_ok=True)
    cluster = LocalCluster(
        args.workers,
        calls={ENTRY_GROUP: msgspec.to_builtins(GROUPS[ENTRY_GROUP])},
        cluster={"name": "bench-curve" if secure else "bench"},
        tcp=args.transport == "tcp",
        profile_dir=profile,
        prefix="forseti-bench-curve-" if secure else "forseti-bench-",
        security=security,
        start=False,
    )
    clusters.append(cluster)
    if secure:
        cluster.client_keys = _make_keys(cluster.dir / "keys", cluster.node_names)
    for name in [cluster.leader_name, *cluster.node_names]:
        cluster.start(name)
    return cluster


def _make_keys(keys: Path, workers: list[str]) -> dict:
    """The server's pair, one per worker and one client's, public halves filed by role;
    returns the client's ``key``/``server_key`` paths."""
    for role in ("workers", "clients"):
        (keys / "authorized" / role).mkdir(parents=True)
    zmq.auth.create_certificates(keys, "server")
    for name, role in [*((w, "workers") for w in workers), (CLIENT, "clients")]:
        public, _ = zmq.auth.create_certificates(keys, name)
        shutil.copy(public, keys / "authorized" / role / f"{name}.key")
    return {"key": str(keys / f"{CLIENT}.key_secret"), "server_key": str(keys / "server.key")}


def _round_trips(args, report, progress, plain, secure, curve_keys, echoes) -> None:
    progress("round trips: raw echo, raw CURVE echo, cached find plain and with CURVE, alternating")
    timeout = args.timeout
    ctx = zmq.Context.instance()
    locs = [c.get(ENTRY_GROUP, f"cached-{os.getpid()}") for c in (plain, secure)]
    raw = dealer(ctx, echoes[0].endpoint)
    raw_curve = dealer(ctx, echoes[1].endpoint, curve_keys)
    frame = find_frame(ENTRY_GROUP, locs[0].key)
    try:
        measures = {
            "raw": lambda n, d: raw_round_trips(raw, frame, n, timeout, d),
            "raw CURVE": lambda n, d: raw_round_trips(raw_curve, frame, n, timeout, d),
            "find": lambda n, d: sequential(lambda i: plain.find(ENTRY_GROUP, locs[0].key), n, d),
            "find CURVE": lambda n, d: sequential(lambda i: secure.find(ENTRY_GROUP, locs[1].key), n, d),
        }
        for fn in measures.values():  # connect (and shake hands), and warm up
            fn(50, time.monotonic() + PHASE_SECONDS)
        s = alternate(measures, args.count, ROUND_TRIP_CHUNK, time.monotonic() + PHASE_SECONDS)
    finally:
        raw.close()
        raw_curve.close()
    for name, label in (
        ("raw", "raw round trip"),
        ("raw CURVE", "raw CURVE round trip"),
        ("find", "cached find without CURVE"),
    ):
        report.baseline(label, stats(s[name]))
    report.latency("raw CURVE round trip", stats(s["raw CURVE"]), "raw round trip")
    report.latency("cached find without CURVE", stats(s["find"]), "raw round trip")
    st = stats(s["find CURVE"])
    report.latency("cached find with CURVE", st, "raw CURVE round trip", ("x<=", 1.15))
    report.latency("cached find with CURVE, vs without", st, "cached find without CURVE", ("x<=", 1.25))


def _starts(args, report, progress, plain, secure) -> None:
    progress("new entry starts (get, sequential), plain and with CURVE, alternating")
    measures = {
        "plain": new_keys(lambda key: plain.get(ENTRY_GROUP, key), "start"),
        "CURVE": new_keys(lambda key: secure.get(ENTRY_GROUP, key), "start-curve"),
    }
    for fn in measures.values():  # the first starts of a fork server cost more
        fn(5, time.monotonic() + PHASE_SECONDS)
    s = alternate(measures, args.starts, START_CHUNK, time.monotonic() + PHASE_SECONDS)
    report.baseline("new entry: get without CURVE", stats(s["plain"]))
    st = stats(s["CURVE"])
    report.latency("new entry with CURVE: get, sequential", st, "new entry: get without CURVE", ("x<=", 1.1))
