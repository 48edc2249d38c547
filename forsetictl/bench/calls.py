"""Talking to processes: a call's round trip to a key on the caller's node and on
another, pipelined calls and sends, and how soon a waiting caller hears ``gone`` when
the process is SIGKILLed, or (own cluster, two workers or more) its worker daemon."""

from __future__ import annotations

import os
import signal
import threading
import time

from forsetid import protocol as p

from ..client import Client, ForsetiError, Gone
from ..localcluster import LocalCluster
from .measure import TALK_GROUP, Bench, _kill_if_ours
from .report import BenchError, stats
from .timing import PHASE_SECONDS, clock, dealer, pipeline, sequential

PAYLOAD = b"x" * 64


def talks(bench: Bench, cluster: LocalCluster | None, rounds: int = 5) -> None:
    a, r = bench.args, bench.report
    here = bench.names[bench.workers[0]]
    others = sorted(set(bench.names.values()) - {here})
    bench.progress("calls: round trips to a key here and on another node")
    local = _place(bench, here)
    client = bench.client
    for _ in range(2):  # (the process connects its mailbox on its first request)
        client.call(TALK_GROUP, local.key, PAYLOAD)
    st = stats(sequential(lambda i: client.call(TALK_GROUP, local.key, PAYLOAD), a.count))
    r.latency("call, key on the caller's node", st, "raw round trip", median_target=("x<=", 2.5))
    if others:
        remote = _place(bench, others[0])
        client.call(TALK_GROUP, remote.key, PAYLOAD)
        st = stats(sequential(lambda i: client.call(TALK_GROUP, remote.key, PAYLOAD), a.count))
        r.latency("call, key on another node", st, "raw round trip", median_target=("x<=", 3.5))
    bench.progress(f"calls: {a.window} in flight, and sends")
    r.row(f"calls, {a.window} in flight (1 DEALER)", _pipelined(bench, local.key, False, a.count * 20), "/s",
          "raw pipelined echo/s", ("x>=", 0.5))  # fmt: skip
    # Sends are answered once in the mailbox: a burst that fits it (its default 1000), then a
    # call, answered once the process has taken every send before it (one client's order).
    sends = min(a.count * 5, 900)
    r.row(f"sends taken by the process, {a.window} in flight", _pipelined(bench, local.key, True, sends), "/s",
          "raw pipelined echo/s")  # fmt: skip
    bench.progress("calls: gone after a SIGKILL of the process")
    gone = [_gone_after(bench, lambda loc: _kill_if_ours(loc), here, i) for i in range(rounds)]
    if all(g is not None for g in gone):
        r.latency("process SIGKILL -> gone at a waiting caller", stats(gone), "raw round trip",
                  median_target=("<=", 50_000))  # fmt: skip
    if cluster is not None and others:
        bench.progress("calls: gone after a SIGKILL of the worker")
        victim, took = others[-1], []
        for i in range(max(1, rounds // 2)):
            took.append(_gone_after(bench, lambda loc: _kill(cluster, victim), victim, i))
            cluster.procs[victim].wait(10)
            cluster.start(victim)
            cluster.wait_up(timeout=20.0)
        r.latency("worker SIGKILL -> gone at a waiting caller", stats([t for t in took if t is not None]),
                  "raw round trip", median_target=("<=", 500_000))  # fmt: skip


def _pipelined(bench: Bench, key: str, one_way: bool, total: int) -> float:
    """Requests answered per second, ``window`` in flight on one DEALER; sends are
    followed by one call, so that their rate counts until the process has taken them."""
    a = bench.args
    sock = dealer(bench.ctx, bench.workers[0])

    def make(i):
        last = one_way and i == total  # (the call after the sends)
        msg = p.Talk(id=i + 1, group=TALK_GROUP, key=key, payload=PAYLOAD, one_way=one_way and not last)
        return (i + 1, p.encode(msg))

    try:
        t = clock()
        seconds = PHASE_SECONDS if one_way else a.seconds  # (all the sends, for the call after them)
        done, _, _ = pipeline(sock, make, total + one_way, a.window, seconds, bench.timeout)
        return done / (clock() - t)
    finally:
        sock.close()


def _place(bench: Bench, node: str) -> p.Location:
    """A new key of the talk group that runs on ``node``."""
    for n in range(30):  # least-loaded placement: one of the next few lands there
        loc = bench.get(TALK_GROUP, bench.key(f"talk-{node}", n))
        if loc.node == node:
            return loc
    raise BenchError(f"no new key was placed on {node}")


def _gone_after(bench: Bench, kill, node: str, i: int) -> float | None:
    """Seconds from ``kill(location)`` to ``gone`` at a caller waiting for the process
    (a call it never answers); None if the process is not on this machine."""
    loc = _place(bench, node)
    heard: dict[str, float] = {}
    caller = Client(bench.workers[0], timeout=bench.timeout + 5)

    def wait() -> None:
        try:
            caller.call(TALK_GROUP, loc.key, b"hang")
        except Gone:
            heard["gone"] = clock()
        except ForsetiError as exc:
            heard["error"] = clock()
            heard[str(exc)] = 0.0

    try:
        caller.call(TALK_GROUP, loc.key, PAYLOAD)  # its mailbox is connected
        t = threading.Thread(target=wait)
        t.start()
        time.sleep(0.05)  # (the hanging call is in its mailbox by then: a round trip is ~0.2 ms)
        t0 = clock()
        if not kill(loc):
            t.join(bench.timeout + 10)
            return None
        t.join(bench.timeout + 10)
    finally:
        caller.close()
    if "gone" not in heard:
        raise BenchError(f"a caller waiting on {loc.key} did not hear gone: {heard}")
    bench.started = [s for s in bench.started if s != (TALK_GROUP, loc.key)]
    return heard["gone"] - t0


def _kill(cluster: LocalCluster, name: str) -> bool:
    os.kill(cluster.procs[name].pid, signal.SIGKILL)
    return True


PHASES = 4
