"""Restart policies with real daemons (docs/guides/restarts.md, restarts.py): "always" brings a key
back after any exit, "on-failure" after a failure only, a stop ends it for good, and a
node that goes down, shuts down or is drained with --stop has its processes started
elsewhere. Each waits for events, never for a time; a thing that must not happen is
checked behind one that must, which the same worker and leader carry out after it."""

from __future__ import annotations

import os
import signal

from cluster import wait_for
from test_cluster import alive
from test_drain import ctl

FAST = {"heartbeat": 0.2, "liveness": 3}
# ready: a get (and a started event) comes once the process listens for SIGUSR1 and SIGUSR2
CALLS = {
    "always": {"entry": "apps:until_signalled", "ready": True, "restart": "always", "stop_timeout": 1.0},
    "onfail": {"entry": "apps:until_signalled", "ready": True, "restart": "on-failure", "stop_timeout": 1.0},
}


def collect(stream, done, what: str, most: int = 40) -> list:
    """Events of ``stream`` until ``done(events)``; fail naming ``what`` if they stop."""
    got: list = []
    while not done(got):
        event = stream.next_event(10)
        assert event is not None and len(got) < most, f"no more events while waiting for {what}: {got}"
        got.append(event)
    return got


def started(events, key=None) -> list:
    return [e for e in events if e.kind == "started" and key in (None, e.key)]


def test_always_restarts_after_a_clean_exit_and_after_a_kill(make_cluster):
    c = make_cluster(workers=1, cluster=FAST, calls=CALLS)
    leader = c.leader()
    first = leader.get("always", "k")
    with leader.events("always") as stream:
        os.kill(first.pid, signal.SIGUSR1)  # exits 0
        gone, back = stream.next_event(10), stream.next_event(10)
        assert (gone.kind, gone.key, gone.pid, gone.exit_code, gone.reason) == ("exited", "k", first.pid, 0, "exit")
        assert (back.kind, back.key) == ("started", "k") and back.pid != first.pid and alive(back.pid)
        assert leader.find("always", "k").pid == back.pid
        os.kill(back.pid, signal.SIGKILL)  # the second restart of a run: after its backoff
        gone, again = stream.next_event(10), stream.next_event(10)
    assert (gone.kind, gone.pid, gone.signal) == ("exited", back.pid, signal.SIGKILL)
    assert (again.kind, again.key) == ("started", "k") and again.pid not in (first.pid, back.pid)
    assert [(loc.key, loc.pid) for loc in leader.processes("always")] == [("k", again.pid)] and alive(again.pid)
    log = c.log("leader")
    assert "restarting always/k on node1 (exited with code 0; restart 1 of a run)" in log
    assert "restarting always/k on node1 (killed by SIGKILL; restart 2 of a run, after 1 s)" in log


def test_on_failure_restarts_a_failure_or_a_kill_but_not_a_clean_exit(make_cluster):
    c = make_cluster(workers=1, cluster=FAST, calls=CALLS)
    leader = c.leader()
    clean, crash, killed = (leader.get("onfail", key) for key in ("clean", "crash", "killed"))
    with leader.events("onfail") as stream:
        os.kill(clean.pid, signal.SIGUSR1)
        gone = stream.next_event(10)
        assert (gone.kind, gone.key, gone.exit_code) == ("exited", "clean", 0)
        os.kill(crash.pid, signal.SIGUSR2)  # exits 3
        os.kill(killed.pid, signal.SIGKILL)
        # Had the clean exit been restarted, its start would have come first (one worker).
        events = collect(stream, lambda got: {e.key for e in started(got)} >= {"crash", "killed"}, "two restarts")
    assert {(e.key, e.exit_code, e.signal) for e in events if e.kind == "exited"} == {
        ("crash", 3, None),
        ("killed", None, signal.SIGKILL),
    }
    assert started(events, "clean") == []
    now = {loc.key: loc.pid for loc in leader.processes("onfail")}
    assert sorted(now) == ["crash", "killed"] and all(alive(pid) for pid in now.values())
    assert now["crash"] != crash.pid and now["killed"] != killed.pid
    assert leader.find("onfail", "clean") is None


def test_a_stop_ends_it_for_good(make_cluster):
    c = make_cluster(workers=1, cluster=FAST, calls=CALLS)
    leader = c.leader()
    a, b = leader.get("always", "a"), leader.get("always", "b")
    with leader.events("always") as stream:
        assert leader.stop("always", "a") is True
        gone = stream.next_event(10)
        assert (gone.kind, gone.key, gone.reason) == ("exited", "a", "stopped")
        os.kill(b.pid, signal.SIGKILL)  # one that is restarted, behind the stop
        events = collect(stream, lambda got: started(got, "b"), "b's restart")
    assert started(events, "a") == [] and not alive(a.pid)
    assert leader.find("always", "a") is None
    assert [loc.key for loc in leader.processes("always")] == ["b"]


def test_a_get_waits_for_a_pending_restart_and_starts_no_other(make_cluster):
    c = make_cluster(workers=1, cluster=FAST, calls=CALLS)
    leader = c.leader()
    first = leader.get("onfail", "k")
    with leader.events("onfail") as stream:
        os.kill(first.pid, signal.SIGKILL)
        back = collect(stream, started, "the first restart")[-1]
        os.kill(back.pid, signal.SIGKILL)  # the next restart waits 1 s
        assert stream.next_event(10).kind == "exited"
        got = c.client("node1").get("onfail", "k")  # while it waits, or once it is done: the same one
        again = stream.next_event(10)
    assert (again.kind, again.pid) == ("started", got.pid) and got.pid not in (first.pid, back.pid)
    assert [loc.pid for loc in leader.processes("onfail")] == [got.pid] and alive(got.pid)


def test_a_node_going_down_restarts_its_processes_elsewhere(make_cluster):
    c = make_cluster(workers=2, cluster=FAST, calls=CALLS)
    leader = c.leader()
    locs = [leader.get("onfail", f"k{i}") for i in range(4)]
    plain = leader.get("sleeper", "plain")  # no restart policy
    victims = {loc.key for loc in locs if loc.node == "node1"}
    assert len(victims) == 2 and plain.node == "node1"
    with leader.events() as stream:
        c.kill("node1", signal.SIGKILL)
        events = collect(stream, lambda got: {e.key for e in started(got)} >= victims, "the restarts on node2")
    assert {(e.key, e.reason) for e in events if e.kind == "exited"} == {(k, "node-down") for k in victims | {"plain"}}
    assert {(e.key, e.node) for e in started(events)} == {(k, "node2") for k in victims}
    now = {loc.key: loc for loc in leader.processes()}
    assert sorted(now) == ["k0", "k1", "k2", "k3"]  # plain is not restarted
    assert all(loc.node == "node2" and alive(loc.pid) for loc in now.values())
    assert "(its node went down)" in c.log("leader")


def test_drain_with_stop_restarts_elsewhere(make_cluster):
    c = make_cluster(workers=2, cluster=FAST, calls=CALLS)
    leader = c.leader()
    locs = [leader.get("always", f"a{i}") for i in range(4)]
    plain = leader.get("sleeper", "plain")
    on_node1 = [loc for loc in locs if loc.node == "node1"]
    assert len(on_node1) == 2 and plain.node == "node1"
    with leader.events() as stream:
        done = ctl(c, "drain", "node1", "--stop")
        assert done.returncode == 0, done.stderr
        want = {loc.key for loc in on_node1}

        def restarted_and_exited(got) -> bool:  # (plain's exit may come after the restarts)
            exited = {e.key for e in got if e.kind == "exited"}
            return {e.key for e in started(got)} >= want and exited >= want | {"plain"}

        events = collect(stream, restarted_and_exited, "the restarts on node2 and every exit")
    exits = {(e.key, e.reason) for e in events if e.kind == "exited"}
    assert exits == {(k, "stopped") for k in want | {"plain"}}  # stopped, as a drain says
    assert {(e.key, e.node) for e in started(events)} == {(k, "node2") for k in want}
    wait_for(lambda: not any(alive(loc.pid) for loc in [*on_node1, plain]), 5, 0.05, "node1's processes gone")
    now = {loc.key: loc for loc in leader.processes()}
    assert sorted(now) == ["a0", "a1", "a2", "a3"] and {loc.node for loc in now.values()} == {"node2"}
    assert {n.name: n.state for n in leader.nodes()} == {"node1": "draining", "node2": "up"}


def test_a_worker_shut_down_cleanly_has_its_processes_started_elsewhere(make_cluster):
    c = make_cluster(workers=2, cluster=FAST, calls=CALLS)
    leader = c.leader()
    loc = leader.get("onfail", "k")
    assert loc.node == "node1"
    with leader.events("onfail") as stream:
        c.kill("node1", signal.SIGTERM)
        assert c.procs["node1"].wait(10) == 0
        events = collect(stream, started, "the restart on node2")
    assert [(e.kind, e.key, e.reason) for e in events] == [("exited", "k", "shutdown"), ("started", "k", None)]
    assert events[1].node == "node2" and alive(events[1].pid)
    assert leader.find("onfail", "k").pid == events[1].pid
