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


@pytest.mark.slow
@pytest.mark.parametrize("partition", ["keep", "stop"])
def test_chaos(make_cluster, capsys, partition):
    c = make_cluster(workers=3, cluster={**FAST, "partition": partition}, calls=CALLS)
    stop = threading.Event()
    ops = collections.Counter()
    errors = collections.Counter()
    samples: dict[str, str] = {}  # one message per kind of error
    unclean: list[str] = []
    violations: list[str] = []
    lock = threading.Lock()

    def client_loop(seed: int) -> None:
        rnd = random.Random(seed)
        node = rnd.choice(c.node_names)
        client = Client(c.endpoint(node), timeout=TIMEOUT)
        try:
            while not stop.is_set():
                group, key, roll = rnd.choice(list(CALLS)), rnd.choice(KEYS), rnd.random()
                op = "call" if roll < 0.2 else "get" if roll < 0.55 else "find" if roll < 0.8 else "stop"
                began = time.monotonic()
                try:
                    if op == "call":
                        pid = int(client.call("chaos-talk", key, b"pid"))
                        answered(key, pid)
                    elif op == "get":
                        client.get(group, key)
                    elif op == "find":
                        client.find(group, key)
                    else:
                        client.stop(group, key)
                    with lock:
                        ops[op] += 1
                except ForsetiError as exc:
                    with lock:
                        kind = f"{op}: {type(exc).__name__}({exc.kind})"
                        errors[kind] += 1
                        samples.setdefault(kind, str(exc))
                    client.close()
                    client = Client(c.endpoint(rnd.choice(c.node_names)), timeout=1.0)
                except Exception as exc:  # anything else is a defect
                    with lock:
                        unclean.append(repr(exc))
                finally:
                    if op == "call" and time.monotonic() - began > TIMEOUT + 0.5:
                        with lock:
                            violations.append(f"a call to {key} kept its caller {time.monotonic() - began:.2f} s")
        finally:
            client.close()

    def answered(key: str, pid: int) -> None:
        """The process that answered a call is one of that key's (checked while it lives)."""
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = dict(v.split(b"=", 1) for v in f.read().split(b"\0") if b"=" in v)
        except OSError:
            return  # gone since it answered
        with lock:
            ops["call answered"] += 1
            if env.get(b"FORSETI_KEY") != key.encode() or env.get(b"FORSETI_GROUP") != b"chaos-talk":
                violations.append(f"a call to chaos-talk/{key} was answered by pid {pid} ({env.get(b'FORSETI_KEY')})")

    kills = collections.Counter()
    recoveries = collections.defaultdict(list)
    frozen: set[str] = set()  # nodes whose copies are excused: frozen, or back and not yet reconciled
    sampled = collections.Counter()

    def sampler() -> None:
        """No key has two live processes, at every sample; a duplicate counts only if
        its processes are all still alive when checked one after another after the scan
        (then they lived at the same moment: a process that exited just before its
        restart, both read in one scan, is no duplicate)."""
        while not stop.wait(0.05):
            with lock:
                excused = frozenset(frozen)
            live = live_processes(c)
            sampled["samples"] += 1
            for k, pids in duplicates(live, excused).items():
                if all(alive(pid) for pid in pids):
                    violations.append(f"{k[0]}/{k[1]}: pids {pids} on {[live[pid][2] for pid in pids]}")

    def reconciled(name: str) -> bool:
        """No key has a copy on ``name`` and another elsewhere (its duplicates stopped)."""
        live = live_processes(c)
        return not any(name in {live[pid][2] for pid in pids} for pids in duplicates(live).values())

    def kill_process(rnd) -> None:
        victims = sorted(pid for pid, (group, _, _) in live_processes(c).items() if group in RESTARTING)
        if victims:
            try:
                os.kill(rnd.choice(victims), signal.SIGKILL)
            except ProcessLookupError:  # it exited between the scan and the kill
                return
            kills["process-killed"] += 1

    def recovered(kind: str, since: float, check) -> None:
        wait_for(check, 15, 0.02, f"recovery after {kind}")
        recoveries[kind].append(time.monotonic() - since)

    def up(name):
        probe = Client(c.cluster["leader"], timeout=0.5)
        try:
            return any(n.name == name and n.state == "up" for n in probe.nodes())
        except ForsetiError:
            return False
        finally:
            probe.close()

    def chaos(seed: int) -> None:
        try:
            faults(seed)
        except BaseException as exc:  # a chaos that stopped early would pass for a calm run
            with lock:
                unclean.append(f"the chaos thread failed: {exc!r}")
            raise

    def faults(seed: int) -> None:
        rnd = random.Random(seed)  # the actions (the same ones every run)
        pick = random.Random(seed + 1)  # which process a kill-process hits (there may be none)
        while not stop.wait(rnd.uniform(0.5, 1.5)):
            action = rnd.choice(ACTIONS[partition])
            kills[action] += 1
            if action == "kill-process":  # one with a restart policy: it comes back by itself
                kill_process(pick)
                continue
            if action == "kill-leader":
                c.kill("leader", signal.SIGKILL)
                c.procs["leader"].wait(5)
                time.sleep(rnd.uniform(0.1, 0.8))
                t0 = time.monotonic()
                c.start("leader")
                recovered(action, t0, lambda: all(up(n) for n in c.node_names))
                continue
            name = rnd.choice(c.node_names)
            t0 = time.monotonic()
            if action == "kill-worker":
                c.kill(name, signal.SIGKILL)
                c.procs[name].wait(5)
                time.sleep(rnd.uniform(0.1, 0.8))
                c.start(name)
            else:
                if partition == "keep":  # (with "stop" its copies must be dead before any other starts)
                    with lock:
                        frozen.add(name)
                c.kill(name, signal.SIGSTOP)
                time.sleep(rnd.uniform(0.3, 1.2))
                c.kill(name, signal.SIGCONT)
            recovered(action, t0, lambda name=name: up(name))
            if action == "freeze-worker":  # its copies run on meanwhile ("keep"): until they are stopped
                wait_for(lambda name=name: reconciled(name), 15, 0.02, f"{name}'s duplicates stopped")
                with lock:
                    frozen.discard(name)

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(4)]
    threads.append(threading.Thread(target=chaos, args=(SEEDS[partition],)))
    threads.append(threading.Thread(target=sampler))
    t_start = time.monotonic()
    for t in threads:
        t.start()
    time.sleep(SECONDS)
    stop.set()
    for t in threads:
        t.join(30)
    elapsed = time.monotonic() - t_start

    # Let the cluster settle, then check every promise.
    c.wait_up()
    leader = Client(c.cluster["leader"], timeout=2.0)

    def consistent():
        listed = {(loc.group, loc.key): loc.pid for loc in leader.processes() if loc.group in CALLS}
        live = live_processes(c)
        return (
            not duplicates(live)  # at most one live process per key
            and set(listed.values()) == set(live)  # listed = alive, and nothing unlisted
            and all(live[pid][:2] == k for k, pid in listed.items())
        )

    settle0 = time.monotonic()
    wait_for(consistent, 10, 0.05, "the dictionary and the live processes to agree")
    settled = time.monotonic() - settle0
    leader.close()

    figures = {
        "partition": partition,
        "seconds": round(elapsed, 1),
        "operations": dict(ops),
        "operations_total": sum(ops.values()),
        "kills": dict(kills),
        "errors": dict(errors),
        "error_samples": samples,
        "recovery_ms_median": {k: round(statistics.median(v) * 1000) for k, v in recoveries.items()},
        "recovery_ms_max": {k: round(max(v) * 1000) for k, v in recoveries.items()},
        "settle_ms": round(settled * 1000),
        "live_processes_at_end": len(live_processes(c)),
        "samples": sampled["samples"],
        "restart_log_lines": c.log("leader").count("restarting "),
        "violations": len(violations),
    }
    with capsys.disabled():
        print("\nchaos run:", figures)
    assert not unclean, unclean
    assert not violations, violations
    assert sum(ops.values()) > 100 and sum(kills.values()) >= 3 and sampled["samples"] > 10, figures
    assert ops["call answered"] > 10, figures
    assert figures["restart_log_lines"] > 0 or not kills["process-killed"], figures
