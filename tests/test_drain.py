"""Draining a node and a node that leaves, with real daemons (docs/guides/restarts.md): a draining
node takes no new process while lookups through it go on; with --stop its processes stop;
a worker shut down cleanly shows as left, not down."""

from __future__ import annotations

import signal
import subprocess
import sys

from cluster import ROOT, wait_for
from test_cluster import alive

FAST = {"heartbeat": 0.2, "liveness": 3}


def ctl(c, *args) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "forsetictl", "--endpoint", c.endpoint("node1"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd=ROOT)


def states(c) -> dict[str, str]:
    return {n.name: n.state for n in c.leader().nodes()}


def test_a_draining_node_takes_no_new_process_and_still_answers(make_cluster):
    c = make_cluster(workers=2)
    old = c.leader().get("sleeper", "old")  # on node1 (a tie goes to the lowest name)
    assert old.node == "node1"
    done = ctl(c, "drain", "node1")
    assert done.returncode == 0 and "draining node1" in done.stdout, done.stderr
    assert states(c) == {"node1": "draining", "node2": "up"}
    assert {c.leader().get("sleeper", f"new{i}").node for i in range(3)} == {"node2"}
    assert c.client("node1").find("sleeper", "old") == old and alive(old.pid)  # lookups through it go on
    assert ctl(c, "undrain", "node1").returncode == 0
    assert states(c) == {"node1": "up", "node2": "up"}
    assert c.leader().get("sleeper", "again").node == "node1"  # the least loaded again
    unknown = ctl(c, "drain", "nodeX")
    assert unknown.returncode == 3 and "unknown node 'nodeX'" in unknown.stderr


def test_drain_with_stop_stops_its_processes(make_cluster):
    c = make_cluster(workers=2)
    on_node1 = [c.leader().get("sleeper", f"k{i}") for i in range(4)]
    on_node1 = [loc for loc in on_node1 if loc.node == "node1"]
    with c.leader().events("sleeper") as stream:
        assert ctl(c, "drain", "node1", "--stop").returncode == 0
        exits = [stream.next_event(5) for _ in on_node1]
    assert {(e.key, e.reason) for e in exits} == {(loc.key, "stopped") for loc in on_node1}
    wait_for(lambda: not any(alive(loc.pid) for loc in on_node1), 5, 0.05, "node1's processes gone")
    assert [loc.node for loc in c.leader().processes("sleeper")] == ["node2", "node2"]


def test_a_worker_shut_down_cleanly_has_left_and_its_exits_say_shutdown(make_cluster):
    c = make_cluster(workers=2, cluster=FAST)
    loc = c.leader().get("sleeper", "k")
    assert loc.node == "node1"
    with c.leader().events("sleeper") as stream:
        c.kill("node1", signal.SIGTERM)
        assert c.procs["node1"].wait(10) == 0
        exited = stream.next_event(5)
    assert (exited.kind, exited.key, exited.reason) == ("exited", "k", "shutdown")
    wait_for(lambda: states(c)["node1"] == "left", 5, 0.05, "node1 left")
    assert "worker node1 is leaving" in c.log("leader")
    wait_for(lambda: "worker node1 has left" in c.log("leader"), 5, 0.05, "its silence noticed")
    assert states(c)["node1"] == "left" and "worker node1 is down" not in c.log("leader")  # left, not down
