"""The cluster end to end: real daemons on ipc://, real processes, real signals.

The original Forseti's own suite (basic, args, load, lock, start errors) ported with
tighter bounds, plus the guarantees of docs/concepts.md."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cluster import wait_for

from forsetictl import Client, SpawnError, UnknownGroup


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def test_basic_get_find_and_exit_seen_everywhere_within_500ms(cluster):
    c1, c2, c3 = (cluster.client(n) for n in cluster.node_names)
    assert c1.find("sleeper", "k1") is None
    loc = c1.get("sleeper", "k1")
    assert loc.group == "sleeper" and loc.key == "k1" and loc.node in cluster.node_names
    assert alive(loc.pid)
    for c in (c1, c2, c3):
        assert wait_for(lambda c=c: c.find("sleeper", "k1"), 1.0, what="find on every node") == loc
    assert c2.get("sleeper", "k1") == loc  # get of a live key returns it, starts nothing
    os.kill(loc.pid, signal.SIGKILL)
    t0 = time.monotonic()
    for c in (c1, c2, c3):
        wait_for(lambda c=c: c.find("sleeper", "k1") is None, 0.5, 0.005, "find to forget the exited process")
    assert time.monotonic() - t0 < 0.5
    assert cluster.processes() == []


def test_args_reach_the_entry_function(make_cluster, tmp_path):
    out = tmp_path / "called.json"
    c = make_cluster(workers=3, calls={"default": {"entry": "apps:record", "args": [str(out)]}})
    client = c.client()
    loc = client.get_key("k1", ["a1", 2, True])
    got = wait_for(lambda: out.exists() and out.stat().st_size and json.loads(out.read_text()), what="record")
    assert got["key"] == "k1" and got["args"] == ["a1", 2, True] and got["pid"] == loc.pid
    mailbox, mailbox_id = got["env"].pop("FORSETI_MAILBOX"), got["env"].pop("FORSETI_MAILBOX_ID")
    assert got["env"] == {"FORSETI_GROUP": "default", "FORSETI_KEY": "k1", "FORSETI_NODE": loc.node}
    assert mailbox.startswith("ipc:///tmp/forseti-") and mailbox_id.isdigit()
    assert oct(os.stat(mailbox[len("ipc://") :].rpartition("/")[0]).st_mode & 0o777) == "0o700"
    assert client.search_key("k1") == loc
    assert client.stop("default", "k1") is True
    assert client.search_key("k1") is None
    wait_for(lambda: not alive(loc.pid), 2.0, what="the process to be gone")


def test_even_placement_and_counts_back_to_zero_on_another_node(cluster):
    n = 20
    first = cluster.client("node1")
    locs = [first.get("sleeper", f"key{i}") for i in range(3 * n)]
    per_node = {name: sum(l.node == name for l in locs) for name in cluster.node_names}
    assert per_node == {name: n for name in cluster.node_names}
    other = cluster.client("node3")
    assert {(i.name, i.processes) for i in other.nodes()} == {(name, n) for name in cluster.node_names}
    for i in (5, 25, 45):
        assert other.find("sleeper", f"key{i}") == locs[i]
    for loc in locs:
        os.kill(loc.pid, signal.SIGKILL)
    wait_for(lambda: all(i.processes == 0 for i in other.nodes()), 1.0, what="counts back to 0")
    assert sorted(i.name for i in other.nodes()) == cluster.node_names  # still listed
    assert other.processes() == []


def test_slow_starts_block_neither_lookups_nor_other_starts(cluster):
    c = cluster.client("node2")
    existing = c.get("sleeper", "existing")
    slow_results = {}

    def start_slow(key):
        with Client(cluster.endpoint("node1"), timeout=10) as own:
            t0 = time.monotonic()
            slow_results[key] = (own.get("slow", key), time.monotonic() - t0)

    threads = [threading.Thread(target=start_slow, args=(f"delay{i}",)) for i in range(1, 4)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    # The slow starts are under way once their three processes run (beside "existing").
    wait_for(lambda: len(cluster.processes()) == 4, 1.0, 0.01, "three slow starts under way")
    for _ in range(10):
        assert c.get("sleeper", "existing") == existing
    assert c.find("slow", "delay4") is None
    fresh = c.get("sleeper", "fresh")  # a new key starts while three slow ones are pending
    assert time.monotonic() - t0 < 1.5, "lookups or a new start waited for the slow starts"
    assert fresh.node in cluster.node_names and not slow_results
    for t in threads:
        t.join(15)
    assert sorted(slow_results) == ["delay1", "delay2", "delay3"]
    # The three 2-second starts ran in parallel, not one after another.
    assert time.monotonic() - t0 < 4.0, {k: round(v[1], 2) for k, v in slow_results.items()}


def test_start_errors_reach_the_caller_and_leave_nothing(make_cluster):
    c = make_cluster(
        workers=2,
        calls={
            "noimport": {"entry": "no_such_module_xyz:main"},
            "raises": {"entry": "forsetid.examples:fail", "ready": True},
            "exits": {"entry": "apps:exit_before_ready", "ready": True},
            "timeout": {"entry": "forsetid.examples:slow_ready", "args": [30], "ready": True, "start_timeout": 0.5},
            "nocommand": {"command": ["/nonexistent/forseti-test-binary", "{key}"]},
        },
    )
    client = c.client()
    expected = {
        "noimport": "No module named 'no_such_module_xyz'",
        "raises": "exited with code 1 before it was ready",
        "exits": "exited with code 7 before it was ready",
        "timeout": "not ready within start_timeout (0.5 s)",
        "nocommand": "cannot run '/nonexistent/forseti-test-binary'",
    }
    for group, reason in expected.items():
        with pytest.raises(SpawnError) as err:
            client.get(group, "k")
        assert reason in str(err.value), (group, str(err.value))
        assert client.find(group, "k") is None
    assert client.processes() == []
    assert all(n.processes == 0 for n in client.nodes())
    wait_for(lambda: c.processes() == [], 2.0, what="no process left running")
    with pytest.raises(UnknownGroup, match="unknown group 'nope'"):
        client.get("nope", "k")
    assert client.get("sleeper", "after-errors").pid > 0  # the cluster still works


def test_thirty_concurrent_gets_of_one_new_key_from_three_nodes_start_one_process(make_cluster):
    c = make_cluster(workers=3, calls={"room": {"entry": "forsetid.examples:slow_ready", "args": [0.3], "ready": True}})
    barrier = threading.Barrier(30)

    def get(i):
        with Client(c.endpoint(c.node_names[i % 3]), timeout=10) as client:
            barrier.wait()
            return client.get("room", "lobby")

    for _ in range(3):
        with ThreadPoolExecutor(30) as pool:
            locs = list(pool.map(get, range(30)))
        assert len(set(locs)) == 1, set(locs)
        assert [l.key for l in c.client().processes("room")] == ["lobby"]
        assert len([p for p in c.processes() if p == locs[0].pid]) == 1
        assert c.client().stop("room", "lobby")


def test_stop_terminates_and_reports(cluster):
    c = cluster.client("node1")
    loc = c.get("sleeper", "victim")
    with c.events("sleeper") as events:
        assert c.stop("sleeper", "victim") is True
        event = events.next_event(timeout=5)
    assert (event.kind, event.key, event.pid, event.reason) == ("exited", "victim", loc.pid, "stopped")
    assert event.signal == signal.SIGTERM
    assert not alive(loc.pid)
    assert c.find("sleeper", "victim") is None
    assert c.stop("sleeper", "victim") is False


def test_stop_escalates_to_sigkill_after_stop_timeout(make_cluster):
    c = make_cluster(
        workers=1,
        calls={
            # Ready only once the trap is set (a shell-written "R" line on the ready fd).
            "stubborn": {
                "command": [
                    "sh",
                    "-c",
                    "trap '' TERM; eval 'echo R >&'$FORSETI_READY_FD; while true; do sleep 0.05; done",
                ],
                "stop_timeout": 0.3,
                "ready": True,
            },
        },
    )
    client = c.client()
    loc = client.get("stubborn", "s")
    t0 = time.monotonic()
    assert client.stop("stubborn", "s") is True
    assert time.monotonic() - t0 >= 0.3
    assert not alive(loc.pid)
    wait_for(lambda: c.processes() == [], 2.0, what="the whole process group to be gone")


def test_command_group_substitutes_and_sets_environment(make_cluster, tmp_path):
    out = tmp_path / "env.txt"
    script = f'echo "$1 $FORSETI_GROUP $FORSETI_KEY $FORSETI_NODE $FORSETI_ENDPOINT" > {out}; exec sleep 600'
    c = make_cluster(
        workers=1,
        calls={
            "jobs": {
                "command": ["sh", "-c", script, "sh", "{group}:{key}@{node}"],
                "endpoint": "ipc:///tmp/{group}-{key}",
            },
        },
    )
    loc = c.client().get("jobs", "j1", ["extra"])
    assert loc.endpoint == "ipc:///tmp/jobs-j1"
    text = wait_for(lambda: out.exists() and out.read_text().strip(), what="the command's output")
    assert text == "jobs:j1@node1 jobs j1 node1 ipc:///tmp/jobs-j1"


def test_ready_reports_the_endpoint_the_process_bound(make_cluster):
    c = make_cluster(workers=1, calls={"svc": {"entry": "apps:ready_with_endpoint", "ready": True}})
    assert c.client().get("svc", "a").endpoint == "tcp://127.0.0.1:9/a"


def test_add_call_at_run_time(cluster):
    c = cluster.client("node2")
    with pytest.raises(UnknownGroup):
        c.get("late", "k")
    c.add_call("late", entry="forsetid.examples:sleeper", args=[600])
    assert "late" in cluster.client("node3").calls()
    loc = c.get("late", "k")
    assert cluster.client("node1").find("late", "k") == loc


def test_events_follow_starts_and_exits_filtered_by_group(cluster):
    c = cluster.client("node1")
    with c.events() as every, c.events("sleeper") as sleepers:
        a = c.get("default", "a")
        b = c.get("sleeper", "b")
        os.kill(b.pid, signal.SIGKILL)
        got = [every.next_event(5) for _ in range(3)]
        assert [(e.kind, e.group, e.key) for e in got] == [
            ("started", "default", "a"),
            ("started", "sleeper", "b"),
            ("exited", "sleeper", "b"),
        ]
        assert got[0].pid == a.pid and got[2].signal == signal.SIGKILL and got[2].reason == "exit"
        assert got[1].seq < got[2].seq
        mine = [sleepers.next_event(5) for _ in range(2)]
        assert [(e.kind, e.key) for e in mine] == [("started", "b"), ("exited", "b")]
        assert sleepers.next_event(0.2) is None


def test_role_both_single_daemon(make_cluster):
    c = make_cluster(both=True)
    client = c.client()
    loc = client.get("sleeper", "solo")
    assert loc.node == "node1"
    assert [(n.name, n.state, n.processes) for n in client.nodes()] == [("node1", "up", 1)]


def test_clean_shutdown_stops_processes_and_reports_them(make_cluster):
    c = make_cluster(workers=2)
    leader = c.leader()
    locs = [leader.get("sleeper", f"k{i}") for i in range(4)]
    on_node1 = [l for l in locs if l.node == "node1"]
    with leader.events() as events:
        assert c.stop("node1") == 0
        got = [events.next_event(5) for _ in on_node1]
    assert {(e.key, e.reason) for e in got} == {(l.key, "shutdown") for l in on_node1}
    assert all(not alive(l.pid) for l in on_node1)
    assert all(alive(l.pid) for l in locs if l.node == "node2")


def test_sigkilled_worker_takes_its_processes_with_it(make_cluster):
    c = make_cluster(workers=1, calls={"jobs": {"command": ["sleep", "600"]}})
    client = c.client()
    pids = [client.get("sleeper", "a").pid, client.get("jobs", "b").pid]
    c.kill("node1", signal.SIGKILL)
    wait_for(lambda: not any(alive(p) for p in pids), 2.0, what="the children to die with their worker")


def test_over_tcp_like_separate_machines(make_cluster):
    c = make_cluster(workers=2, tcp=True)
    assert c.cluster["leader"].startswith("tcp://127.0.0.1:")
    loc = c.client("node1").get("sleeper", "t1")
    assert wait_for(lambda: c.client("node2").find("sleeper", "t1"), 1.0, what="find on the other node") == loc
    os.kill(loc.pid, signal.SIGKILL)
    wait_for(lambda: c.client("node2").find("sleeper", "t1") is None, 1.0, what="the exit to reach node2")


def test_daemon_refuses_a_bad_config_with_exit_status_2(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[node]\nrole = "boss"\n')
    r = subprocess.run(
        [sys.executable, "-m", "forsetid", "--config", str(bad)], capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 2
    assert (
        f"{bad}: node.role: Invalid enum value 'boss' (expected one of: 'leader', 'worker', 'both')" in r.stderr
        and "boss" not in r.stdout
    )


def test_a_node_outside_the_allow_list_is_refused(make_cluster):
    c = make_cluster(workers=1, cluster={"nodes": ["node1"]})
    c.add("intruder")
    assert c.procs["intruder"].wait(10) == 2
    assert "not in cluster.nodes" in c.log("intruder")
    assert [n.name for n in c.leader().nodes()] == ["node1"]


def test_the_shipped_three_node_config_works(tmp_path):
    """conf/cluster/ as shipped, with its ports moved to free ones."""
    from cluster import Cluster, free_port

    texts = {f.stem: f.read_text() for f in sorted((Path(__file__).parent.parent / "conf" / "cluster").glob("*.toml"))}
    ports = sorted({int(m) for t in texts.values() for m in re.findall(r"127\.0\.0\.1:(\d+)", t)})
    moved = {port: free_port() for port in ports}
    c = Cluster(workers=3, start=False)  # only for its directory, clean-up and checks
    try:
        for name, text in texts.items():
            for old, new in moved.items():
                text = text.replace(f"127.0.0.1:{old}", f"127.0.0.1:{new}")
            c.configs[name].write_text(text)
            c.start(name)
        c.cluster["leader"] = re.search(r'leader = "(.*)"', c.configs["leader"].read_text())[1]
        c.wait_up(3)
        client = Client.from_config(str(c.configs["node1"]))
        locs = [client.get("sessions", f"user{i}") for i in range(6)]
        assert sorted(l.node for l in locs) == ["node1", "node1", "node2", "node2", "node3", "node3"]
        client.close()
    finally:
        assert c.close() == []
