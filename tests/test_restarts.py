"""Unit tests of the restart policies (forsetid/restarts.py): which exits restart, the
backoff, and the leader placing, holding and ending restarts, with fake clocks."""

import pytest
from test_leader import CLIENT, NOTES, PUBLISH, Leader, events, hello, loc, node_info, peer, replies, spawn_of

from forsetid import protocol as p
from forsetid.restarts import Restarts, restarts

CALLS = {
    "always": p.Call(command=["sleep", "600"], restart="always"),
    "fails": p.Call(command=["sleep", "600"], restart="on-failure"),
    "never": p.Call(command=["sleep", "600"]),
}


class Clocks:
    """The leader's wall clock (event times) and monotonic clock (backoff), moved by hand."""

    def __init__(self) -> None:
        self.wall, self.mono = 1000.0, 50.0

    def pass_(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


def make(nodes=("node1", "node2"), **kwargs):
    t = Clocks()
    leader = Leader(CALLS, heartbeat=1.0, liveness=3, clock=lambda: t.wall, monotonic=lambda: t.mono, **kwargs)
    for node in nodes:
        hello(leader, node)
    return leader, t


def keep_up(leader, t):
    """Every worker has just been heard from (time passes in these tests)."""
    for node in leader.members.last_seen:
        leader.members.last_seen[node] = t.mono


def run(leader, t, key, group="always", client=CLIENT, id=1, args=()):
    """get -> spawn -> spawned: the location, started at the wall clock's now."""
    out = leader.handle(client, p.Get(id=id, group=group, key=key, args=list(args)))
    node, spawn = spawn_of(out)
    location = p.Location(group, key, node, 4000 + id, None, t.wall)
    leader.handle(peer(node), p.Spawned(id=spawn.id, location=location))
    return location


def exited(leader, location, code=None, sig=None, reason="exit", at=None, drain=False):
    msg = p.Exited(location=location, exit_code=code, signal=sig, reason=reason, at=at or 0.0, drain=drain)
    return leader.handle(peer(location.node), msg)


def spawns(out):
    return [(to.removeprefix(b"peer-").decode(), m) for to, m in out if isinstance(m, p.Spawn)]


def answer(leader, out, pid, t):
    """The one spawn in ``out`` succeeds: its Location and what the leader does then."""
    node, spawn = spawn_of(out)
    location = p.Location(spawn.group, spawn.key, node, pid, None, t.wall)
    return location, leader.handle(peer(node), p.Spawned(id=spawn.id, location=location))


# -- which exits restart --


@pytest.mark.parametrize(
    "policy, reason, code, sig, drain, stopped, expected",
    [
        ("never", "exit", 1, None, False, False, None),
        ("never", "node-down", None, None, False, False, None),
        ("on-failure", "exit", 0, None, False, False, None),  # a clean exit
        ("on-failure", "exit", 3, None, False, False, "failed"),
        ("on-failure", "exit", None, 9, False, False, "failed"),  # a signal
        ("on-failure", "exit", None, None, False, False, "failed"),  # its report was lost
        ("on-failure", "node-down", None, None, False, False, "moved"),
        ("on-failure", "shutdown", None, 15, False, False, "moved"),  # its node left cleanly
        ("on-failure", "stopped", None, 15, True, False, "moved"),  # drain --stop
        ("on-failure", "stopped", None, 15, False, False, None),  # a user's stop
        ("always", "exit", 0, None, False, False, "failed"),
        ("always", "stopped", None, 15, False, False, None),
        ("always", "stopped", None, 15, True, False, "moved"),
        ("always", "conflict", None, 15, False, False, None),  # a duplicate: the key runs on
        ("always", "exit", 1, None, False, True, None),  # a user's stop waited for it: it ends for good
        ("always", "node-down", None, None, False, True, None),
        ("always", "stopped", None, 15, True, True, None),  # a user's stop during a drain wins
    ],
)
def test_which_exits_restart(policy, reason, code, sig, drain, stopped, expected):
    assert restarts(policy, reason, code, sig, drain, stopped) == expected


def test_backoff_is_at_once_then_doubling_up_to_ten_seconds_and_a_long_run_resets_it():
    now = [0.0]
    r = Restarts(lambda: now[0])
    k = loc("node1", "k", group="always")  # started_at 1.0
    waits = []
    for _ in range(7):
        restart = r.exited("always", k, "exit", 1, None, at=2.0)
        waits.append(restart.due - now[0])
        assert r.due(now[0] + 100) == [restart]
    assert waits == [0.0, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert r.exited("always", k, "exit", 1, None, at=61.0).due == now[0]  # it had run 60 s: at once again
    r.due(100)
    assert r.exited("always", k, "exit", 1, None, at=2.0).due == 1.0  # and the run goes on from there
    r.due(100)
    assert r.exited("always", k, "node-down", at=2.0).due == 0.0  # its node went away: at once, not counted
    r.due(100)
    assert r.exited("always", k, "exit", 1, None, at=2.0).due == 2.0
    r.due(100)
    assert r.exited("always", k, "stopped", at=2.0) is None and r.runs == {}  # ended: a later run begins afresh


# -- the leader: restarting --


def test_always_restarts_at_once_after_the_exit_event_with_the_same_arguments():
    leader, t = make()
    first = run(leader, t, "k", args=["x", 1])
    out = exited(leader, first, code=0, at=t.wall + 5)
    assert [to for to, _ in out if to is PUBLISH] == [PUBLISH]
    assert events(out)[0].kind == "exited" and out[0][0] is PUBLISH  # the exit first, then the new start
    ((node, spawn),) = spawns(out)
    assert (spawn.group, spawn.key, spawn.args) == ("always", "k", ["x", 1])
    assert NOTES == ["restarting always/k on node1 (exited with code 0; restart 1 of a run)"]  # placed as a new key
    assert replies(leader.handle(CLIENT, p.Find(id=5, group="always", key="k")))[0].location is None
    assert leader.handle(CLIENT, p.Get(id=6, group="always", key="k")) == []  # waits for the restart under way
    second, out = answer(leader, out, 4100, t)
    assert [e.kind for e in events(out)] == ["started"] and events(out)[0].location == second
    assert replies(out) == [p.Found(id=6, location=second, seq=leader.events.seq, epoch=leader.epoch)]


def test_on_failure_restarts_a_crash_and_a_signal_but_not_a_clean_exit():
    leader, t = make()
    clean = run(leader, t, "clean", group="fails", id=1)
    assert spawns(exited(leader, clean, code=0)) == [] and leader.restarts.pending == {}
    crashed = run(leader, t, "crashed", group="fails", id=2)
    assert spawns(exited(leader, crashed, code=2))[0][1].key == "crashed"
    killed = run(leader, t, "killed", group="fails", id=3)
    assert spawns(exited(leader, killed, sig=9))[0][1].key == "killed"
    plain = run(leader, t, "plain", group="never", id=4)
    assert spawns(exited(leader, plain, sig=9)) == []


def test_a_quick_second_crash_waits_its_backoff_and_meanwhile_find_and_ls_say_nothing_and_get_waits():
    leader, t = make()
    first = run(leader, t, "k", group="fails")
    second, _ = answer(leader, exited(leader, first, code=1, at=t.wall + 1), 4100, t)
    t.pass_(2)
    assert spawns(exited(leader, second, code=1, at=t.wall)) == []  # ran 2 s: the second restart waits 1 s
    assert leader.next_deadline() == t.mono + 1.0
    assert replies(leader.handle(CLIENT, p.Find(id=5, group="fails", key="k")))[0].location is None
    assert replies(leader.handle(CLIENT, p.List(id=6)))[0].items == []
    assert leader.handle(CLIENT, p.Get(id=7, group="fails", key="k")) == []  # waits for it
    assert leader.handle(b"client-2", p.Get(id=8, group="fails", key="k")) == []  # both: one start
    t.pass_(0.5)
    keep_up(leader, t)
    assert leader.expire() == []
    t.pass_(0.5)
    keep_up(leader, t)
    out = leader.expire()
    assert len(spawns(out)) == 1
    assert NOTES == ["restarting fails/k on node1 (exited with code 1; restart 2 of a run, after 1 s)"]
    third, out = answer(leader, out, 4200, t)
    assert replies(out) + replies(out, b"client-2") == [
        p.Found(id=7, location=third, seq=leader.events.seq, epoch=leader.epoch),
        p.Found(id=8, location=third, seq=leader.events.seq, epoch=leader.epoch),
    ]


def test_a_stop_ends_it_for_good():
    leader, t = make()
    running = run(leader, t, "k")
    (kill,) = replies(leader.handle(CLIENT, p.Stop(id=3, group="always", key="k")), peer(running.node))
    assert kill == p.Kill(location=running, reason="stopped")
    out = exited(leader, running, sig=15, reason="stopped")
    assert replies(out) == [p.Stopped(id=3, found=True)] and spawns(out) == []
    assert leader.restarts.pending == {} and leader.restarts.runs == {}


def test_a_stop_that_races_a_crash_still_ends_it():
    leader, t = make()
    running = run(leader, t, "k")
    leader.handle(CLIENT, p.Stop(id=3, group="always", key="k"))
    out = exited(leader, running, code=1)  # it crashed before the kill reached it
    assert replies(out) == [p.Stopped(id=3, found=True)] and spawns(out) == []


def test_a_stop_cancels_a_pending_restart_and_its_waiting_gets_hear_why():
    leader, t = make()
    first = run(leader, t, "k")
    second, _ = answer(leader, exited(leader, first, code=1, at=t.wall), 4100, t)
    exited(leader, second, code=1, at=t.wall)  # waits 1 s
    assert leader.handle(b"client-2", p.Get(id=4, group="always", key="k")) == []
    out = leader.handle(CLIENT, p.Stop(id=5, group="always", key="k"))
    assert replies(out) == [p.Stopped(id=5, found=True)]
    (err,) = replies(out, b"client-2")
    assert err.kind == p.SPAWN_FAILED and err.id == 4 and "stopped while it waited for its restart" in err.message
    t.pass_(20)
    keep_up(leader, t)
    assert spawns(leader.expire()) == [] and leader.restarts.next_due() is None
    assert replies(leader.handle(CLIENT, p.Stop(id=6, group="always", key="k"))) == [p.Stopped(id=6, found=False)]


def test_a_stop_of_a_restart_under_way_stops_it_once_started():
    leader, t = make()
    first = run(leader, t, "k")
    out = exited(leader, first, code=1)
    assert leader.handle(CLIENT, p.Stop(id=5, group="always", key="k")) == []  # answered with its exit
    second, out = answer(leader, out, 4100, t)
    assert replies(out, peer(second.node)) == [p.Kill(location=second, reason="stopped")]
    out = exited(leader, second, sig=15, reason="stopped")
    assert replies(out) == [p.Stopped(id=5, found=True)] and spawns(out) == []


def test_a_node_going_down_restarts_its_processes_elsewhere_at_once():
    leader, t = make(("node1", "node2", "node3"))
    on = {run(leader, t, f"k{i}", id=i).node: i for i in range(3)}
    plain = run(leader, t, "plain", group="never", id=9)  # on node1 again
    assert plain.node == "node1" and on["node1"] == 0
    t.pass_(2)
    leader.handle(peer("node2"), p.Ping())
    leader.handle(peer("node3"), p.Ping())
    t.pass_(1.5)
    out = leader.expire()  # node1 is silent past heartbeat x liveness
    assert [(e.location.key, e.reason) for e in events(out)] == [("k0", "node-down"), ("plain", "node-down")]
    assert [(node, s.key) for node, s in spawns(out)] == [("node2", "k0")]
    assert "restarting always/k0 on node2 (its node went down)" in NOTES


def test_drain_with_stop_restarts_elsewhere_but_a_users_stop_does_not():
    leader, t = make()
    a = run(leader, t, "a", id=1)
    run(leader, t, "b", id=2)
    c = run(leader, t, "c", id=3)
    assert a.node == c.node == "node1"
    kills = replies(leader.handle(CLIENT, p.Drain(id=4, node="node1", stop=True)), peer("node1"))
    assert kills == [p.Kill(location=a, reason="stopped", drain=True), p.Kill(location=c, reason="stopped", drain=True)]
    leader.handle(CLIENT, p.Stop(id=5, group="always", key="c"))  # a user's stop as well: it ends
    out = exited(leader, a, sig=15, reason="stopped", drain=True)
    assert [(node, s.key) for node, s in spawns(out)] == [("node2", "a")]  # not on the draining node
    assert "restarting always/a on node2 (its node was drained)" in NOTES
    out = exited(leader, c, sig=15, reason="stopped", drain=True)
    assert spawns(out) == [] and replies(out) == [p.Stopped(id=5, found=True)]


def test_a_node_shutting_down_cleanly_has_its_processes_restarted_elsewhere():
    leader, t = make()
    running = run(leader, t, "k", group="fails")
    leader.handle(peer("node1"), p.Leaving())
    out = exited(leader, running, sig=15, reason="shutdown")
    assert [(node, s.key) for node, s in spawns(out)] == [("node2", "k")]


def test_a_restart_with_no_worker_is_kept_and_tried_again_with_backoff():
    leader, t = make(("node1",))
    running = run(leader, t, "k")
    t.pass_(3.5)
    out = leader.expire()  # node1 went down: nowhere to go
    assert spawns(out) == [] and ("always", "k") in leader.restarts.pending
    assert NOTES[-1].startswith("cannot restart always/k (no worker can take a new process") and "in 1 s" in NOTES[-1]
    assert leader.handle(CLIENT, p.Get(id=7, group="always", key="k")) == []  # waits for it
    t.pass_(1)
    (err,) = replies(leader.expire())  # still nowhere: told why, and tried again in 2 s
    assert err.kind == p.NO_WORKER and err.id == 7
    assert leader.restarts.pending[("always", "k")].due == t.mono + 2
    hello(leader, "node2")
    assert spawns(leader.expire()) == []
    t.pass_(2)
    keep_up(leader, t)
    assert [(node, s.key) for node, s in spawns(leader.expire())] == [("node2", "k")]
    assert running.node == "node1"


def test_a_restart_avoids_a_node_where_its_group_is_suspended():
    leader, t = make()
    running = run(leader, t, "k")
    assert running.node == "node1"
    leader.handle(peer("node2"), p.Suspend(group="always", seconds=10))
    assert [node for node, _ in spawns(exited(leader, running, code=1))] == ["node1"]


def test_a_restart_whose_start_fails_is_tried_again_as_one_more_failure():
    leader, t = make()
    running = run(leader, t, "k")
    ((node, spawn),) = spawns(exited(leader, running, code=1))
    out = leader.handle(peer(node), p.SpawnFailed(id=spawn.id, group="always", key="k", reason="command not found"))
    assert spawns(out) == []
    r = leader.restarts.pending[("always", "k")]
    assert r.due == t.mono + 1 and "its start failed: command not found" in r.why
    t.pass_(1)
    keep_up(leader, t)
    assert len(spawns(leader.expire())) == 1


def test_a_restart_whose_node_goes_down_during_its_start_goes_elsewhere_at_once():
    leader, t = make()
    running = run(leader, t, "k")
    ((node, _),) = spawns(exited(leader, running, code=1))
    assert node == "node1"
    t.pass_(2)
    leader.handle(peer("node2"), p.Ping())
    t.pass_(1.5)
    out = leader.expire()  # node1 is silent: the start there will never be answered
    assert [(node, s.key) for node, s in spawns(out)] == [("node2", "k")]
    assert "its start failed: node node1 went down" in NOTES[-1]


def test_a_worker_that_comes_back_with_the_process_settles_its_pending_restart():
    leader, t = make(("node1",))
    running = run(leader, t, "k")
    t.pass_(3.5)
    leader.expire()  # node1 taken for down (a freeze): the restart has nowhere to go
    assert leader.handle(CLIENT, p.Get(id=7, group="always", key="k")) == []
    out = hello(leader, "node1", processes=[running])  # it thaws: the process ran all along
    assert replies(out) == [p.Found(id=7, location=running, seq=leader.events.seq, epoch=leader.epoch)]
    assert leader.restarts.pending == {} and spawns(out) == []


def test_a_recovering_leader_places_no_restart_until_it_has_recovered():
    t = Clocks()
    leader = Leader(CALLS, heartbeat=1.0, liveness=3, clock=lambda: t.wall, monotonic=lambda: t.mono, recovering=True)
    hello(leader, "node1")
    running = loc("node1", "k", group="always")
    hello(leader, "node1", processes=[running])
    assert spawns(exited(leader, running, code=1)) == []  # a predecessor's worker may be starting it
    assert leader.next_deadline() == 51.5  # the recovery's end, not the (past) restart
    t.pass_(1.5)
    keep_up(leader, t)
    assert [(node, s.key) for node, s in spawns(leader.expire())] == [("node1", "k")]


def test_a_group_removed_meanwhile_restarts_nothing():
    leader, t = make()
    a = run(leader, t, "a", id=1)
    b = run(leader, t, "b", id=2)
    second, _ = answer(leader, exited(leader, b, code=1, at=t.wall), 4100, t)
    exited(leader, second, code=1, at=t.wall)  # waits 1 s
    assert leader.handle(b"client-2", p.Get(id=3, group="always", key="b")) == []
    leader.handle(CLIENT, p.RemoveCall(id=4, name="always"))
    assert spawns(exited(leader, a, code=1)) == []
    t.pass_(1)
    keep_up(leader, t)
    out = leader.expire()
    (err,) = replies(out, b"client-2")
    assert spawns(out) == [] and err.kind == p.UNKNOWN_GROUP and "removed" in err.message


def test_a_conflict_is_not_restarted_and_the_key_runs_on():
    leader, t = make()
    running = run(leader, t, "k")
    duplicate = loc("node2", "k", group="always")
    out = hello(leader, "node2", processes=[duplicate])
    assert replies(out, peer("node2"))[-1] == p.Kill(location=duplicate, reason="conflict")
    out = exited(leader, duplicate, sig=15, reason="conflict")
    assert spawns(out) == [] and leader.store.get("always", "k") == running
    assert node_info(leader)["node1"].processes == 1
