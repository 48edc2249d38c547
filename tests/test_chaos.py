"""A short chaos run: clients get/find/stop in a loop while workers and the leader are
killed, frozen and restarted at random. At the end every key has at most one live
process, every process the dictionary lists is alive, none is orphaned, and every error
a client saw was a clean ForsetiError. It runs twice: with ``cluster.partition =
"keep"`` (a frozen worker's processes go on, and a duplicate is resolved when it
returns), and with ``"stop"``, where the live processes, sampled all along, never show
a key twice. Prints its figures (run with -s to see them live; they are printed in any
case)."""

from __future__ import annotations

import collections
import os
import random
import signal
import statistics
import threading
import time

import pytest
from cluster import wait_for

from forsetictl import Client, ForsetiError

SECONDS = float(os.environ.get("FORSETI_CHAOS_SECONDS", "20")) * 0.6  # per partition mode
KEYS = [f"k{i}" for i in range(24)]
FAST = {"heartbeat": 0.2, "liveness": 3}
# With "stop", freezes past the lease are what the sampling is most about.
ACTIONS = {
    "keep": ["kill-worker", "kill-worker", "freeze-worker", "kill-leader"],
    "stop": ["kill-worker", "freeze-worker", "freeze-worker", "kill-leader"],
}
SEEDS = {"keep": 1234, "stop": 7}


def live_processes(cluster) -> dict[int, str]:
    """pid -> key of every live process of the "chaos" group (its env says which)."""
    found = {}
    for pid in cluster.processes():
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = dict(v.split(b"=", 1) for v in f.read().split(b"\0") if b"=" in v)
        except OSError:
            continue
        if env.get(b"FORSETI_GROUP") == b"chaos":
            found[pid] = env[b"FORSETI_KEY"].decode()
    return found


@pytest.mark.slow
@pytest.mark.parametrize("partition", ["keep", "stop"])
def test_chaos(make_cluster, capsys, partition):
    c = make_cluster(
        workers=3,
        cluster={**FAST, "partition": partition},
        calls={"chaos": {"command": ["sleep", "600"], "stop_timeout": 1.0}},
    )
    stop = threading.Event()
    ops = collections.Counter()
    errors = collections.Counter()
    samples: dict[str, str] = {}  # one message per kind of error
    unclean: list[str] = []
    lock = threading.Lock()

    def client_loop(seed: int) -> None:
        rnd = random.Random(seed)
        node = rnd.choice(c.node_names)
        client = Client(c.endpoint(node), timeout=1.0)
        try:
            while not stop.is_set():
                key, roll = rnd.choice(KEYS), rnd.random()
                op = "get" if roll < 0.5 else "find" if roll < 0.8 else "stop"
                try:
                    if op == "get":
                        client.get("chaos", key)
                    elif op == "find":
                        client.find("chaos", key)
                    else:
                        client.stop("chaos", key)
                    with lock:
                        ops[op] += 1
                except ForsetiError as exc:
                    with lock:
                        kind = f"{type(exc).__name__}({exc.kind})"
                        errors[kind] += 1
                        samples.setdefault(kind, str(exc))
                    client.close()
                    client = Client(c.endpoint(rnd.choice(c.node_names)), timeout=1.0)
                except Exception as exc:  # anything else is a defect
                    with lock:
                        unclean.append(repr(exc))
        finally:
            client.close()

    kills = collections.Counter()
    recoveries = collections.defaultdict(list)

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
        rnd = random.Random(seed)
        while not stop.wait(rnd.uniform(0.5, 1.5)):
            action = rnd.choice(ACTIONS[partition])
            kills[action] += 1
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
                c.kill(name, signal.SIGSTOP)
                time.sleep(rnd.uniform(0.3, 1.2))
                c.kill(name, signal.SIGCONT)
            recovered(action, t0, lambda name=name: up(name))

    sampled = collections.Counter()
    doubled: list[dict[str, int]] = []  # the samples in which some key had two live processes

    def sample() -> None:
        while not stop.is_set():
            live = live_processes(c)
            twice = {k: n for k, n in collections.Counter(live.values()).items() if n > 1}
            sampled["taken"] += 1
            if twice:
                doubled.append(twice)

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(4)]
    threads += [threading.Thread(target=chaos, args=(SEEDS[partition],)), threading.Thread(target=sample)]
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
        listed = {loc.key: loc.pid for loc in leader.processes("chaos")}
        live = live_processes(c)
        per_key = collections.Counter(live.values())
        return (
            all(n == 1 for n in per_key.values())  # at most one live process per key
            and set(listed.values()) == set(live)  # listed = alive, and nothing unlisted
            and all(live[pid] == key for key, pid in listed.items())
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
        "samples": sampled["taken"],
        "samples_with_a_key_twice": len(doubled),
    }
    with capsys.disabled():
        print("\nchaos run:", figures)
    assert not unclean, unclean
    assert sum(ops.values()) > 100 and sum(kills.values()) >= 3, figures
    assert sampled["taken"] > 50, figures
    if partition == "stop":  # no key ever has two live processes
        assert not doubled, doubled[:5]
