"""How soon a lost worker is taken for down, as a client on another node sees it: a
worker daemon SIGKILLed (its connection closes: the leader's fast path, ``closes.py``)
and, as the baseline, one SIGSTOPped (nothing closes: heartbeats alone, after
heartbeat x liveness), each from the signal until ``find`` on another node returns
nothing for the key it ran. Only with the bench's own cluster, of two workers or more:
it kills, freezes and restarts its daemons."""

from __future__ import annotations

import os
import signal
import time

from ..client import Client
from ..localcluster import LocalCluster
from .measure import ENTRY_GROUP, Bench
from .report import BenchError, stats
from .timing import clock

KILLED = "worker SIGKILL -> find is None on another node"
FROZEN = "worker SIGSTOP -> find is None (heartbeats)"
TARGET = 500_000  # us: the median


def detection(bench: Bench, cluster: LocalCluster | None, rounds: int) -> None:
    r = bench.report
    if cluster is None or len(cluster.node_names) < 2:
        r.info["worker loss"] = "skipped: it needs the bench's own cluster, of two workers or more"
        return
    bench.progress(f"worker loss: {rounds} killed, {max(1, rounds // 5)} frozen")
    loss = _Loss(bench, cluster)
    try:
        frozen = [loss.round(signal.SIGSTOP, i) for i in range(max(1, rounds // 5))]
        killed = [loss.round(signal.SIGKILL, i) for i in range(rounds)]
    finally:
        loss.close()
    r.baseline(FROZEN, stats(frozen))
    r.latency(KILLED, stats(killed), FROZEN, median_target=("<=", TARGET))
    r.info["worker loss silence"] = f"heartbeat x liveness = {loss.silence:g} s"


class _Loss:
    def __init__(self, bench: Bench, cluster: LocalCluster) -> None:
        self.bench, self.cluster = bench, cluster
        self.victim = cluster.node_names[-1]  # not workers[0], through which the bench talks
        self.watcher = Client(cluster.endpoint(cluster.node_names[0]), timeout=bench.timeout)
        self.silence = self.watcher.info().silence

    def round(self, sig: int, i: int) -> float:
        """Seconds from ``sig`` to the victim's key being unknown on another node; the
        victim is back up (restarted, or thawed) when it returns."""
        bench, cluster = self.bench, self.cluster
        loc = self.place(f"loss-{sig}-{i}")
        proc = cluster.procs[self.victim]
        t0 = clock()
        os.kill(proc.pid, sig)
        try:
            while self.watcher.find(ENTRY_GROUP, loc.key) is not None:
                if clock() - t0 > self.silence + 10.0:
                    raise BenchError(f"{self.victim} was not taken for down within {self.silence + 10:g} s")
                time.sleep(0.001)
            took = clock() - t0
        finally:
            if sig == signal.SIGSTOP:
                os.kill(proc.pid, signal.SIGCONT)  # it comes back with its process (partition "keep")
        if sig == signal.SIGKILL:
            bench.started.remove((ENTRY_GROUP, loc.key))  # gone with its worker
            proc.wait(10)
            cluster.start(self.victim)
        cluster.wait_up(timeout=20.0)
        return took

    def place(self, what: str):
        """A new key that runs on the victim, known on the watcher's node."""
        bench = self.bench
        for n in range(20):  # least-loaded placement: one of the next few lands there
            loc = bench.get(ENTRY_GROUP, bench.key(what, n))
            if loc.node == self.victim:
                break
        else:
            raise BenchError(f"no new key was placed on {self.victim}")
        deadline = time.monotonic() + 5.0
        while self.watcher.find(ENTRY_GROUP, loc.key) != loc:
            if time.monotonic() > deadline:
                raise BenchError(f"{loc.key} never became known on {self.cluster.node_names[0]}")
            time.sleep(0.001)
        return loc

    def close(self) -> None:
        self.watcher.close()
