"""Faults with real daemons and real signals: workers that die or freeze, a leader
that restarts, processes that must not outlive their worker."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time

import pytest
from cluster import ppid, wait_for
from test_cluster import alive

from forsetictl import Client, ForsetiError, Timeout

FAST = {"heartbeat": 0.2, "liveness": 3}  # a silent peer is dead after 0.6 s


def by_node(client, group="sleeper"):
    return {loc.key: loc for loc in client.processes(group)}


def test_killed_worker_is_marked_down_and_its_keys_start_elsewhere(make_cluster):
    c = make_cluster(workers=3, cluster=FAST)
    leader = c.leader()
    locs = [leader.get("sleeper", f"k{i}") for i in range(6)]
    victim = [l for l in locs if l.node == "node2"]
    assert len(victim) == 2
    with leader.events("sleeper") as events:
        t0 = time.monotonic()
        c.kill("node2", signal.SIGKILL)
        down = [events.next_event(5) for _ in victim]
        took = time.monotonic() - t0
    assert {(e.key, e.kind, e.reason) for e in down} == {(l.key, "exited", "node-down") for l in victim}
    assert took < 6 * FAST["heartbeat"] * FAST["liveness"], took
    states = {n.name: (n.state, n.processes) for n in leader.nodes()}
    assert states["node2"] == ("down", 0)
    assert all(not alive(l.pid) for l in victim)  # they died with their worker
    for l in victim:
        assert c.client("node1").find("sleeper", l.key) is None
        again = c.client("node3").get("sleeper", l.key)
        assert again.node in ("node1", "node3") and alive(again.pid)
    assert len(by_node(leader)) == 6


def test_frozen_worker_comes_back_and_duplicates_are_stopped(make_cluster):
    c = make_cluster(workers=2, cluster=FAST)
    leader = c.leader()
    frozen = [leader.get("sleeper", f"f{i}") for i in range(4)]
    on_node1 = [l for l in frozen if l.node == "node1"]
    c.kill("node1", signal.SIGSTOP)
    try:
        wait_for(lambda: {n.name: n.state for n in leader.nodes()}["node1"] == "down", 5, 0.05, "node1 down")
        elsewhere = {l.key: leader.get("sleeper", l.key) for l in on_node1}  # restarted on node2
        assert all(l.node == "node2" for l in elsewhere.values())
        with leader.events("sleeper") as events:
            c.kill("node1", signal.SIGCONT)
            resolved = [events.next_event(5) for _ in on_node1]
    finally:
        c.kill("node1", signal.SIGCONT)
    wait_for(lambda: {n.name: n.state for n in leader.nodes()}["node1"] == "up", 5, 0.05, "node1 back up")
    # node1's old copies were the duplicates: stopped with reason conflict.
    assert {(e.key, e.pid, e.reason) for e in resolved} == {(l.key, l.pid, "conflict") for l in on_node1}
    assert not any(alive(old.pid) for old in on_node1)
    current = by_node(leader)
    assert {k: l.pid for k, l in current.items() if k in elsewhere} == {k: l.pid for k, l in elsewhere.items()}
    assert len(current) == 4 and all(alive(l.pid) for l in current.values())
    assert sorted(c.processes()) == sorted(l.pid for l in current.values())


def test_leader_restart_loses_nothing(make_cluster):
    c = make_cluster(workers=2, cluster=FAST)
    w1 = c.client("node1", timeout=2)
    w1.add_call("late", entry="forsetid.examples:sleeper")
    before = {w1.get("late" if i % 2 else "sleeper", f"r{i}") for i in range(6)}
    c.kill("leader", signal.SIGKILL)
    c.procs["leader"].wait(5)
    # While no leader answers: cached lookups still work, the rest fails cleanly.
    cached = next(iter(before))
    assert w1.find(cached.group, cached.key) == cached
    with pytest.raises(Timeout):
        w1.get("sleeper", "new-while-down")
    c.start("leader")
    c.wait_up()
    leader = c.leader()
    wait_for(lambda: set(leader.processes()) == before, 5, 0.05, "the dictionary to be whole again")
    assert all(alive(l.pid) for l in before)
    assert sorted(c.processes()) == sorted(l.pid for l in before)  # nothing lost or doubled
    assert "late" in leader.calls()  # a group added at run time survived
    fresh = w1.get("late", "after-restart")  # the client recovered by itself
    assert fresh.group == "late" and alive(fresh.pid)


def test_requests_without_any_leader_time_out_and_never_hang(make_cluster):
    c = make_cluster(workers=1, cluster=FAST)
    c.kill("leader", signal.SIGKILL)
    client = c.client("node1", timeout=1.0)
    t0 = time.monotonic()
    for _ in range(3):
        with pytest.raises(Timeout):
            client.nodes()
    assert time.monotonic() - t0 < 4.0
    with pytest.raises(Timeout):
        Client(c.endpoint("leader"), timeout=0.3).find("sleeper", "x")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_clean_shutdown_reports_shutdown(make_cluster, sig):
    c = make_cluster(workers=2)
    leader = c.leader()
    locs = [leader.get("sleeper", f"s{i}") for i in range(4)]
    mine = [l for l in locs if l.node == "node2"]
    with leader.events() as events:
        c.kill("node2", sig)
        got = [events.next_event(5) for _ in mine]
    assert c.procs["node2"].wait(10) == 0
    assert {(e.key, e.reason) for e in got} == {(l.key, "shutdown") for l in mine}
    assert not any(alive(l.pid) for l in mine)


def test_killed_worker_takes_whole_process_groups_with_it(make_cluster):
    c = make_cluster(workers=1, calls={"nested": {"command": ["sh", "-c", "sleep 600 & sleep 600; wait"]}})
    c.client().get("nested", "a")
    wait_for(lambda: len(c.processes()) == 3, 5, what="sh and its two sleeps")
    c.kill("node1", signal.SIGKILL)
    wait_for(lambda: c.processes() == [], 3, 0.02, "the whole group to die with its worker")


def test_crash_loop_guard_suspends_a_group_on_a_node(make_cluster):
    c = make_cluster(
        workers=1, cluster={"max_retries": 2, "max_time": 1.5}, calls={"crasher": {"entry": "forsetid.examples:fail"}}
    )
    client = c.client()
    with client.events("crasher") as events:
        for i in range(3):  # each starts, then raises at once: an abnormal exit
            client.get("crasher", f"c{i}")
            assert events.next_event(5).kind == "started"
            exited = events.next_event(5)
            assert (exited.kind, exited.exit_code, exited.reason) == ("exited", 1, "exit")
    with pytest.raises(ForsetiError) as err:
        wait_for(lambda: client.get("crasher", "more") and False, 2, 0.05, "the guard to trip")
    assert err.value.kind == "suspended" and "crashing in a loop" in str(err.value)
    assert [n.suspended for n in client.nodes()] == [["crasher"]]
    r = subprocess.run(
        [sys.executable, "-m", "forsetictl", "--endpoint", c.endpoint("node1"), "get", "crasher", "x"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert r.returncode == 3 and "suspended on node1" in r.stderr
    assert client.get("sleeper", "others-still-start").node == "node1"  # only that group
    # After max_time the group may start again.
    wait_for(lambda: client.nodes()[0].suspended == [], 5, 0.1, "the suspension to end")
    assert client.get("crasher", "again").node == "node1"


def test_event_streams_say_when_they_missed_events(make_cluster):
    c = make_cluster(workers=1, cluster=FAST)
    client = c.client("node1")
    with client.events() as every, client.events("sleeper") as sleepers:
        client.get("sleeper", "before")
        assert every.next_event(5).key == "before" and sleepers.next_event(5).key == "before"
        c.kill("leader", signal.SIGKILL)
        c.procs["leader"].wait(5)
        c.start("leader")  # a new epoch: whatever happened in between is unknown
        for stream in (every, sleepers):
            missed = stream.next_event(5)
            assert (missed.kind, missed.missed) == ("missed", 0), missed
    # What a caller does then: read the state afresh (the worker re-registered it).
    wait_for(lambda: [l.key for l in client.processes("sleeper")] == ["before"], 5, 0.05, "re-registration")


def test_a_gap_in_the_sequence_is_reported_with_its_size():
    from forsetictl.client import EventStream
    from forsetid.protocol import Event, Location, Sequence, Tick

    loc = Location("g", "k", "n", 1)
    stream = EventStream.__new__(EventStream)  # (no socket: only its sequence is driven)
    stream.group, stream.events = None, Sequence()
    stream.events.epoch, stream.events.n = "e1", 5
    assert stream.check(Event(seq=6, epoch="e1", kind="started", location=loc)) is None
    gap = stream.check(Event(seq=9, epoch="e1", kind="exited", location=loc))
    assert (gap.kind, gap.missed, stream.events.n) == ("missed", 2, 9)
    assert stream.check(Tick(seq=9, epoch="e1")) is None
    assert stream.check(Tick(seq=11, epoch="e1")).missed == 2  # lost while idle
    stream.group, stream.events.n = "g", 3  # one group follows its own count
    assert stream.check(Event(seq=40, gseq=4, epoch="e1", kind="started", location=loc)) is None
    assert stream.check(Event(seq=41, gseq=6, epoch="e1", kind="started", location=loc)).missed == 1
    assert stream.check(Event(seq=1, gseq=1, epoch="e2", kind="started", location=loc)).missed == 0  # a new leader


def test_a_worker_whose_fork_server_dies_exits_and_is_replaced(make_cluster):
    c = make_cluster(
        workers=2, cluster=FAST, calls={"nested": {"command": ["sh", "-c", "sleep 600 & sleep 600; wait"]}}
    )
    leader = c.leader()
    locs = [leader.get("sleeper", f"z{i}") for i in range(4)]
    nested = [leader.get("nested", f"n{i}") for i in range(2)]
    daemon = c.procs["node1"].pid
    zygote = next(int(pid) for pid in os.listdir("/proc") if pid.isdigit() and ppid(pid) == daemon)
    os.kill(zygote, signal.SIGKILL)
    assert c.procs["node1"].wait(10) == 1  # it says why and exits, rather than limp on
    assert "the fork server died" in c.log("node1")
    # Not one of node1's processes is left, down to the children of its commands: what
    # still runs is node2's (a sleeper each, and sh with two sleeps for each command).
    on_node2 = sum(l.node == "node2" for l in locs) + 3 * sum(l.node == "node2" for l in nested)
    assert any(l.node == "node1" for l in nested)
    wait_for(lambda: len(c.processes()) == on_node2, 3, 0.02, "node1's process groups to be gone")
    wait_for(lambda: {n.name: n.state for n in leader.nodes()}["node1"] == "down", 5, 0.05, "node1 down")
    for l in locs:
        assert leader.get("sleeper", l.key).node == "node2"


def test_the_fork_servers_spare_is_replaced_and_dies_with_its_worker(make_cluster):
    c = make_cluster(workers=1)
    client = c.client()
    spare = wait_for(lambda: c.spares(), 5, 0.02, "a spare entry process")[0]
    first = client.get("sleeper", "a")  # the spare becomes this process...
    assert first.pid == spare and first.pid not in c.spares()
    spare = wait_for(lambda: c.spares(), 5, 0.02, "the next spare")[0]  # ...and a new one waits
    os.kill(spare, signal.SIGKILL)  # a spare that dies waiting costs nothing but speed
    wait_for(lambda: not alive(spare), 3, 0.01, "the spare to be dead")  # (killed in the very
    # instant it is handed a key, it would count as that process dying before it was ready)
    assert alive(client.get("sleeper", "b").pid)
    wait_for(lambda: c.spares(), 5, 0.02, "a spare again")
    c.kill("node1", signal.SIGKILL)
    wait_for(lambda: not c.spares() and not c.processes(), 3, 0.02, "spare and processes gone with the worker")


def test_bursts_of_starts_and_a_shutdown_of_hundreds_lose_nothing(make_cluster):
    """Hundreds of requests at once fill the socket to the fork server: they must wait
    their turn, neither fail nor block the daemon."""
    import zmq

    from forsetid import protocol as p

    c = make_cluster(workers=1)
    n = 400
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(c.endpoint("node1"))
    try:
        for i in range(n):
            sock.send(p.encode(p.Get(id=i + 1, group="sleeper", key=f"b{i}")))
        replies = []
        for _ in range(n):
            assert sock.poll(30_000), f"only {len(replies)} of {n} answers"
            replies.append(p.decode(sock.recv()))
    finally:
        sock.close()
    assert [type(r).__name__ for r in replies if not isinstance(r, p.Found)] == []
    assert len({r.location.pid for r in replies}) == n
    with c.leader().events("sleeper") as events:
        c.kill("node1", signal.SIGTERM)
        reasons = collections.Counter(events.next_event(10).reason for _ in range(n))
    assert reasons == {"shutdown": n}
    assert c.procs["node1"].wait(20) == 0
