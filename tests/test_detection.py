"""Fast failure detection with real daemons: a worker daemon that dies is taken for
down when its connection closes, well before heartbeat x liveness of silence; one that
reconnects on purpose is not; heartbeats still catch one that only falls silent."""

from __future__ import annotations

import signal
import time

import pytest
from cluster import wait_for
from test_cluster import alive

from forsetid.closes import GRACE

SLOW = {"heartbeat": 1.0, "liveness": 5}  # silence: 5 s


def states(client) -> dict[str, str]:
    return {n.name: n.state for n in client.nodes()}


@pytest.mark.parametrize("tcp", [False, True], ids=["ipc", "tcp"])
def test_a_killed_worker_is_down_when_its_connection_closes_long_before_its_silence(make_cluster, tcp):
    c = make_cluster(workers=2, cluster=SLOW, tcp=tcp)
    leader = c.leader()
    locs = [leader.get("sleeper", f"d{i}") for i in range(4)]
    victims = [loc for loc in locs if loc.node == "node2"]
    assert len(victims) == 2
    with leader.events("sleeper") as events:
        t0 = time.monotonic()
        c.kill("node2", signal.SIGKILL)
        down = [events.next_event(5) for _ in victims]
        took = time.monotonic() - t0
    assert {(e.key, e.kind, e.reason) for e in down} == {(v.key, "exited", "node-down") for v in victims}
    assert took < 2.5, f"{took:.2f} s: not the connection's close (the silence is 5 s)"
    assert states(leader)["node2"] == "down"
    assert not any(alive(v.pid) for v in victims)  # the fork server killed them as the daemon died
    assert "worker node2 is down: its connection closed" in c.log("leader")
    for v in victims:  # placed elsewhere at once
        assert c.client("node1").get("sleeper", v.key).node == "node1"


def test_a_worker_that_reconnects_on_purpose_keeps_its_processes(make_cluster):
    """A worker that hears nothing from its leader for its heartbeat x liveness closes
    its socket and says hello on a new one (here: it was frozen past its own silence,
    the leader's being longer). The leader sees the old connection close and the hello,
    in either order: the worker is not taken for down, nothing is reported exited."""
    c = make_cluster(workers=1, cluster={"heartbeat": 0.2, "liveness": 10})  # the leader's silence: 2 s
    c.cluster["liveness"] = 2  # node2's own: 0.4 s
    c.add("node2")
    c.wait_up()
    leader = c.leader()
    loc = next(loc for loc in (leader.get("sleeper", f"s{i}") for i in range(2)) if loc.node == "node2")
    with leader.events("sleeper") as events:
        c.kill("node2", signal.SIGSTOP)
        try:
            time.sleep(0.8)
        finally:
            c.kill("node2", signal.SIGCONT)
        wait_for(lambda: "lost the leader" in c.log("node2"), 5, 0.05, "the worker to reconnect")
        wait_for(lambda: c.log("node2").count("node2 joined the leader") >= 2, 5, 0.05, "its hello on the new socket")
        time.sleep(2 * GRACE)
        # Either order: the close told before the new hello, and the leader looks and finds
        # it connected; or after it, and that descriptor is no longer node2's to look at.
        if "node2 said hello on closed" in c.log("leader"):
            wait_for(lambda: "node2 is still connected" in c.log("leader"), 5, 0.05, "the leader to look")
        assert events.next_event(0.5) is None  # no exit, no node-down
    assert states(leader) == {"node1": "up", "node2": "up"}
    assert loc in leader.processes("sleeper") and alive(loc.pid)
    assert "is down" not in c.log("leader")


def test_a_frozen_worker_keeps_its_connection_and_is_caught_by_heartbeats(make_cluster):
    c = make_cluster(workers=2, cluster={"heartbeat": 0.2, "liveness": 5})  # silence: 1 s
    leader = c.leader()
    mine = [loc for loc in (leader.get("sleeper", f"h{i}") for i in range(2)) if loc.node == "node1"]
    with leader.events("sleeper") as events:
        t0 = time.monotonic()
        c.kill("node1", signal.SIGSTOP)
        try:
            got = [events.next_event(5) for _ in mine]
            took = time.monotonic() - t0
        finally:
            c.kill("node1", signal.SIGCONT)
    assert {(e.key, e.reason) for e in got} == {(loc.key, "node-down") for loc in mine}
    assert took >= 1.0 - 0.2, took  # not before its silence (counted from its last ping): nothing closed
    assert "no word for 1 s" in c.log("leader")


def test_which_worker_a_closed_descriptor_was_and_when_to_look():
    from forsetid.closes import Closes

    now = [0.0]
    closes = Closes(0.2, lambda: now[0])
    closes.joined("a", 7)
    closes.joined("b", 8)
    closes.joined("c", -1)  # inproc: no descriptor, nothing to watch
    closes.closed(9)  # a client's
    closes.closed(-1)
    assert closes.due == {} and closes.deadline() is None
    closes.closed(7)
    now[0] = 0.1
    closes.closed(7)  # told twice: the first counts
    assert closes.deadline() == 0.2 and closes.take_due() == []
    now[0] = 0.2
    assert closes.take_due() == ["a"] and closes.deadline() is None
    closes.joined("a", 8)  # a's new connection got the number b's had: b's is gone
    assert closes.fd_of == {"a": 8} and closes.node_at == {8: "a"}
    closes.closed(7)
    assert closes.due == {}
    closes.forget("a")
    closes.closed(8)
    assert closes.due == {} and closes.node_at == {}
