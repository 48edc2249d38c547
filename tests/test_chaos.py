"""A short chaos run: clients get/find/stop in a loop while workers and the leader are
killed, frozen and restarted at random, and managed processes are killed. Three groups:
one without a restart policy, one "always", one "on-failure", so that restarts race
everything else. It runs twice, with cluster.partition "keep" and "stop". A sampler
checks all along that no key has two live processes: with "stop" at every sample, with
"keep" a frozen worker's copies excepted until it is back and its duplicates are
stopped (they go on running meanwhile, as "keep" allows). Clients also call the processes
of a fourth group: every answer must come from a process of the key called, and no call
may keep its caller waiting past its timeout. At the end every
key has at most one live process, every process the dictionary lists is alive, none is
orphaned, and every error a client saw was a clean ForsetiError. Prints its figures (run
with -s to see them live; they are printed in any case)."""

from __future__ import annotations

import collections
import os
import random
import signal
import statistics
import sys
import threading
import time

import pytest
from cluster import HERE, managed, wait_for
from test_cluster import alive

from forsetictl import Client, ForsetiError

SECONDS = float(os.environ.get("FORSETI_CHAOS_SECONDS", "20")) * 0.6  # per partition mode
KEYS = [f"k{i}" for i in range(24)]
FAST = {"heartbeat": 0.2, "liveness": 3}
SLEEP = {"command": ["sleep", "600"], "stop_timeout": 1.0}
CALLS = {
    "chaos": SLEEP,
    "chaos-always": {**SLEEP, "restart": "always"},
    "chaos-fail": {**SLEEP, "restart": "on-failure"},
    # Answers each call with its pid (a command: its environment, in /proc, says its key).
    "chaos-talk": {
        "command": [sys.executable, str(HERE / "pid_process.py")],
        "restart": "on-failure",
        "stop_timeout": 1.0,
    },
}
RESTARTING = ("chaos-always", "chaos-fail", "chaos-talk")
TIMEOUT = 1.0  # each client's; no call may keep its caller waiting longer (a little slack for a loaded machine)
# With "stop", freezes past the processes' lease are what the sampling is most about.
ACTIONS = {
    "keep": ["kill-worker", "kill-worker", "freeze-worker", "kill-leader", "kill-process"],
    "stop": ["kill-worker", "freeze-worker", "freeze-worker", "kill-leader", "kill-process"],
}
SEEDS = {"keep": 1235, "stop": 7}  # ("keep": its first actions are kills, then two freezes)


def live_processes(cluster) -> dict[int, tuple[str, str, str]]:
    """pid -> (group, key, node) of every live process of the chaos groups."""
    return {
        pid: (env["FORSETI_GROUP"], env["FORSETI_KEY"], env["FORSETI_NODE"])
        for pid, env in managed(cluster).items()
        if env.get("FORSETI_GROUP") in CALLS
    }


def duplicates(live: dict[int, tuple[str, str, str]], excused=frozenset()) -> dict[tuple[str, str], list[int]]:
    """Keys with more than one live process outside the ``excused`` nodes (each of those
    may hold one more copy): (group, key) -> pids."""
    by_key: dict[tuple[str, str], list[int]] = collections.defaultdict(list)
    for pid, (group, key, _) in live.items():
        by_key[(group, key)].append(pid)
    return {
        k: pids for k, pids in by_key.items() if len(pids) > 1 and sum(live[pid][2] not in excused for pid in pids) > 1
    }


class ChaosRun:
    """One chaos run on cluster ``c``: four clients, the faults, the sampler (each a
    thread), and what they counted and saw go wrong."""

    def __init__(self, c, partition: str) -> None:
        self.c, self.partition = c, partition
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.ops: collections.Counter = collections.Counter()
        self.errors: collections.Counter = collections.Counter()
        self.samples: dict[str, str] = {}  # one message per kind of error
        self.unclean: list[str] = []
        self.violations: list[str] = []
        self.kills: collections.Counter = collections.Counter()
        self.recoveries: dict[str, list[float]] = collections.defaultdict(list)
        self.frozen: set[str] = set()  # nodes whose copies are excused: frozen, or back and not yet reconciled
        self.sampled: collections.Counter = collections.Counter()

    def run(self, seconds: float) -> float:
        """Run for ``seconds``; the time it took, threads joined."""
        threads = [threading.Thread(target=self.client_loop, args=(i,)) for i in range(4)]
        threads.append(threading.Thread(target=self.chaos, args=(SEEDS[self.partition],)))
        threads.append(threading.Thread(target=self.sampler))
        t_start = time.monotonic()
        for t in threads:
            t.start()
        time.sleep(seconds)
        self.stop.set()
        for t in threads:
            t.join(30)
        return time.monotonic() - t_start

    # -- the clients --

    def client_loop(self, seed: int) -> None:
        rnd = random.Random(seed)
        client = Client(self.c.endpoint(rnd.choice(self.c.node_names)), timeout=TIMEOUT)
        try:
            while not self.stop.is_set():
                group, key, roll = rnd.choice(list(CALLS)), rnd.choice(KEYS), rnd.random()
                op = "call" if roll < 0.2 else "get" if roll < 0.55 else "find" if roll < 0.8 else "stop"
                if not self.one(client, op, group, key):
                    client.close()
                    client = Client(self.c.endpoint(rnd.choice(self.c.node_names)), timeout=1.0)
        finally:
            client.close()

    def one(self, client: Client, op: str, group: str, key: str) -> bool:
        """One request; False when it failed cleanly (the caller takes another node)."""
        began = time.monotonic()
        try:
            if op == "call":
                self.answered(key, int(client.call("chaos-talk", key, b"pid")))
            elif op == "get":
                client.get(group, key)
            elif op == "find":
                client.find(group, key)
            else:
                client.stop(group, key)
            with self.lock:
                self.ops[op] += 1
        except ForsetiError as exc:
            with self.lock:
                kind = f"{op}: {type(exc).__name__}({exc.kind})"
                self.errors[kind] += 1
                self.samples.setdefault(kind, str(exc))
            return False
        except Exception as exc:  # anything else is a defect
            with self.lock:
                self.unclean.append(repr(exc))
        finally:
            if op == "call" and time.monotonic() - began > TIMEOUT + 0.5:
                with self.lock:
                    self.violations.append(f"a call to {key} kept its caller {time.monotonic() - began:.2f} s")
        return True

    def answered(self, key: str, pid: int) -> None:
        """The process that answered a call is one of that key's (checked while it lives)."""
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = dict(v.split(b"=", 1) for v in f.read().split(b"\0") if b"=" in v)
        except OSError:
            return  # gone since it answered
        with self.lock:
            self.ops["call answered"] += 1
            if env.get(b"FORSETI_KEY") != key.encode() or env.get(b"FORSETI_GROUP") != b"chaos-talk":
                who = env.get(b"FORSETI_KEY")
                self.violations.append(f"a call to chaos-talk/{key} was answered by pid {pid} ({who})")

    # -- the sampler --

    def sampler(self) -> None:
        """No key has two live processes, at every sample; a duplicate counts only if
        its processes are all still alive when checked one after another after the scan
        (then they lived at the same moment: a process that exited just before its
        restart, both read in one scan, is no duplicate)."""
        while not self.stop.wait(0.05):
            with self.lock:
                excused = frozenset(self.frozen)
            live = live_processes(self.c)
            self.sampled["samples"] += 1
            for k, pids in duplicates(live, excused).items():
                if all(alive(pid) for pid in pids):
                    self.violations.append(f"{k[0]}/{k[1]}: pids {pids} on {[live[pid][2] for pid in pids]}")

    def reconciled(self, name: str) -> bool:
        """No key has a copy on ``name`` and another elsewhere (its duplicates stopped)."""
        live = live_processes(self.c)
        return not any(name in {live[pid][2] for pid in pids} for pids in duplicates(live).values())

    # -- the faults --

    def chaos(self, seed: int) -> None:
        try:
            self.faults(seed)
        except BaseException as exc:  # a chaos that stopped early would pass for a calm run
            with self.lock:
                self.unclean.append(f"the chaos thread failed: {exc!r}")
            raise

    def faults(self, seed: int) -> None:
        rnd = random.Random(seed)  # the actions (the same ones every run)
        pick = random.Random(seed + 1)  # which process a kill-process hits (there may be none)
        while not self.stop.wait(rnd.uniform(0.5, 1.5)):
            action = rnd.choice(ACTIONS[self.partition])
            self.kills[action] += 1
            if action == "kill-process":  # one with a restart policy: it comes back by itself
                self.kill_process(pick)
            elif action == "kill-leader":
                back = self.restart("leader", rnd, signal.SIGKILL)
                self.recovered(action, back, lambda: all(self.up(n) for n in self.c.node_names))
            else:
                self.hit_worker(action, rnd.choice(self.c.node_names), rnd)

    def hit_worker(self, action: str, name: str, rnd: random.Random) -> None:
        t0 = time.monotonic()
        if action == "kill-worker":
            self.restart(name, rnd, signal.SIGKILL)
        else:
            if self.partition == "keep":  # (with "stop" its copies must be dead before any other starts)
                with self.lock:
                    self.frozen.add(name)
            self.c.kill(name, signal.SIGSTOP)
            time.sleep(rnd.uniform(0.3, 1.2))
            self.c.kill(name, signal.SIGCONT)
        self.recovered(action, t0, lambda: self.up(name))
        if action == "freeze-worker":  # its copies run on meanwhile ("keep"): until they are stopped
            wait_for(lambda: self.reconciled(name), 15, 0.02, f"{name}'s duplicates stopped")
            with self.lock:
                self.frozen.discard(name)

    def restart(self, name: str, rnd: random.Random, sig: int) -> float:
        """Kill it, wait a moment, start it again; when it was started."""
        self.c.kill(name, sig)
        self.c.procs[name].wait(5)
        time.sleep(rnd.uniform(0.1, 0.8))
        back = time.monotonic()
        self.c.start(name)
        return back

    def kill_process(self, rnd: random.Random) -> None:
        victims = sorted(pid for pid, (group, _, _) in live_processes(self.c).items() if group in RESTARTING)
        if victims:
            try:
                os.kill(rnd.choice(victims), signal.SIGKILL)
            except ProcessLookupError:  # it exited between the scan and the kill
                return
            self.kills["process-killed"] += 1

    def recovered(self, kind: str, since: float, check) -> None:
        wait_for(check, 15, 0.02, f"recovery after {kind}")
        self.recoveries[kind].append(time.monotonic() - since)

    def up(self, name: str) -> bool:
        probe = Client(self.c.cluster["leader"], timeout=0.5)
        try:
            return any(n.name == name and n.state == "up" for n in probe.nodes())
        except ForsetiError:
            return False
        finally:
            probe.close()

    # -- the end --

    def settle(self) -> float:
        """Wait until the dictionary and the live processes agree; how long it took."""
        self.c.wait_up()
        leader = Client(self.c.cluster["leader"], timeout=2.0)

        def consistent():
            listed = {(loc.group, loc.key): loc.pid for loc in leader.processes() if loc.group in CALLS}
            live = live_processes(self.c)
            return (
                not duplicates(live)  # at most one live process per key
                and set(listed.values()) == set(live)  # listed = alive, and nothing unlisted
                and all(live[pid][:2] == k for k, pid in listed.items())
            )

        settle0 = time.monotonic()
        try:
            wait_for(consistent, 10, 0.05, "the dictionary and the live processes to agree")
        finally:
            leader.close()
        return time.monotonic() - settle0

    def figures(self, elapsed: float, settled: float) -> dict:
        return {
            "partition": self.partition,
            "seconds": round(elapsed, 1),
            "operations": dict(self.ops),
            "operations_total": sum(self.ops.values()),
            "kills": dict(self.kills),
            "errors": dict(self.errors),
            "error_samples": self.samples,
            "recovery_ms_median": {k: round(statistics.median(v) * 1000) for k, v in self.recoveries.items()},
            "recovery_ms_max": {k: round(max(v) * 1000) for k, v in self.recoveries.items()},
            "settle_ms": round(settled * 1000),
            "live_processes_at_end": len(live_processes(self.c)),
            "samples": self.sampled["samples"],
            "restart_log_lines": self.c.log("leader").count("restarting "),
            "violations": len(self.violations),
        }


@pytest.mark.slow
@pytest.mark.parametrize("partition", ["keep", "stop"])
def test_chaos(make_cluster, capsys, partition):
    c = make_cluster(workers=3, cluster={**FAST, "partition": partition}, calls=CALLS)
    run = ChaosRun(c, partition)
    elapsed = run.run(SECONDS)
    figures = run.figures(elapsed, run.settle())  # (then every promise is checked)
    with capsys.disabled():
        print("\nchaos run:", figures)
    assert not run.unclean, run.unclean
    assert not run.violations, run.violations
    ops, kills = run.ops, run.kills
    assert sum(ops.values()) > 100 and sum(kills.values()) >= 3 and run.sampled["samples"] > 10, figures
    assert ops["call answered"] > 10, figures
    assert figures["restart_log_lines"] > 0 or not kills["process-killed"], figures
