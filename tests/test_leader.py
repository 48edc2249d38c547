"""Unit tests of forsetid.leader.Leader, driven with fake peers (bytes) and messages."""

import itertools

import msgspec
import pytest

from forsetid import leader as decisions
from forsetid import protocol as p
from forsetid.effects import Note, Publish, Record, Reply

PUBLISH = None  # the "peer" of a published event in the pairs below


NOTES: list[str] = []  # the log lines of the last call, for the tests that read them


def pairs(effects) -> list:
    """The leader's effects as (peer, message) pairs, PUBLISH the peer of an event:
    what every test here asserts about, said shortly; its log lines go to NOTES.
    Nothing else may come out."""
    out = []
    NOTES.clear()
    for e in effects:
        assert type(e) in (Reply, Publish, Note), e
        if isinstance(e, Note):
            NOTES.append(e.text)
        else:
            out.append((e.peer, e.msg) if isinstance(e, Reply) else (PUBLISH, e.event))
    return out


class Leader(decisions.Leader):
    def handle(self, peer, msg):
        return pairs(super().handle(peer, msg))

    def expire(self, caught_up: bool = True):
        return pairs(super().expire(caught_up))


CALLS = {"users": p.Call(command=["true", "{key}"]), "other": p.Call(entry="pkg.mod:func")}
CLIENT = b"client-1"
_pids = itertools.count(1000)


def make(nodes=None, allowed=None, capacity=0) -> Leader:
    leader = Leader(CALLS, allowed_nodes=allowed, clock=lambda: 1234.0, monotonic=lambda: 50.0)
    for name in nodes or ():
        hello(leader, name, capacity=capacity)
    return leader


def peer(node: str) -> bytes:
    return b"peer-" + node.encode()


def hello(leader, node, capacity=0, processes=(), incarnation="inc-1", id=1):
    return leader.handle(
        peer(node), p.Hello(id=id, node=node, incarnation=incarnation, capacity=capacity, processes=list(processes))
    )


def get(leader, key, group="users", client=CLIENT, id=1):
    return leader.handle(client, p.Get(id=id, group=group, key=key))


def loc(node, key, pid=None, group="users"):
    return p.Location(group, key, node, next(_pids) if pid is None else pid, None, 1.0)


def only(out):
    assert len(out) == 1, out
    return out[0]


def spawn_of(out) -> tuple[str, p.Spawn]:
    """The one Spawn in ``out`` and the node it went to."""
    ((to, msg),) = [(to, m) for to, m in out if isinstance(m, p.Spawn)]
    return to.removeprefix(b"peer-").decode(), msg


def answer(leader, spawn_out, pid=None):
    """The worker the spawn went to reports success; returns (out, location)."""
    node, spawn = spawn_of(spawn_out)
    location = loc(node, spawn.key, pid, spawn.group)
    return leader.handle(peer(node), p.Spawned(id=spawn.id, location=location)), location


def start(leader, key, group="users"):
    return answer(leader, get(leader, key, group))[1]


def events(out):
    return [m for to, m in out if to is PUBLISH]


def replies(out, to=CLIENT):
    return [m for t, m in out if t == to]


def node_info(leader):
    return {n.name: n for n in only(leader.handle(CLIENT, p.Nodes(id=9)))[1].items}


def loads(leader):
    return {w.name: w.load for w in leader.placement.workers.values()}


# -- joining --


def test_hello_registers_worker_with_welcome():
    leader = make()
    to, welcome = only(hello(leader, "node1", capacity=4, id=7))
    assert to == peer("node1")
    assert isinstance(welcome, p.Welcome) and welcome.id == 7 and welcome.epoch == leader.epoch
    assert welcome.calls == CALLS
    info = node_info(leader)["node1"]
    assert (info.state, info.processes, info.capacity) == ("up", 0, 4)


def test_hello_brings_groups_the_leader_lacks():
    leader = make()
    extra = p.Call(entry="a.b:c")
    leader.handle(peer("n1"), p.Hello(id=1, node="n1", incarnation="i", calls={"extra": extra, "users": extra}))
    assert leader.calls["extra"] == extra
    assert leader.calls["users"] == CALLS["users"]  # the leader's own definition wins


def test_allow_list_refuses_other_nodes():
    leader = make(allowed=["node1"])
    to, err = only(hello(leader, "intruder", id=3))
    assert to == peer("intruder")
    assert isinstance(err, p.Error) and err.kind == p.NOT_ALLOWED and err.id == 3
    assert "intruder" in err.message and "cluster.nodes" in err.message
    assert node_info(leader) == {}
    assert only(get(leader, "k"))[1].kind == p.NO_WORKER
    assert isinstance(only(hello(leader, "node1"))[1], p.Welcome)


def test_worker_messages_from_unregistered_peer_are_refused():
    leader = make(["node1"])
    out = get(leader, "k")
    _, spawn = spawn_of(out)
    to, err = only(leader.handle(b"stranger", p.Spawned(id=spawn.id, location=loc("node1", "k"))))
    assert to == b"stranger" and err.kind == p.BAD_MESSAGE and "registered worker" in err.message
    assert ("users", "k") in leader.starts.pending


def test_reply_kinds_are_refused():
    to, err = only(make().handle(CLIENT, p.Ok(id=4)))
    assert to == CLIENT and err.kind == p.BAD_MESSAGE and err.id == 4 and "'ok'" in err.message


# -- get --


def test_get_unknown_group():
    to, err = only(make(["node1"]).handle(CLIENT, p.Get(id=5, group="nope", key="k")))
    assert to == CLIENT and err.kind == p.UNKNOWN_GROUP and err.id == 5
    assert "nope" in err.message and "users" in err.message


def test_find_and_stop_of_unknown_group():
    leader = make(["node1"])
    assert only(leader.handle(CLIENT, p.Find(id=1, group="nope", key="k")))[1].kind == p.UNKNOWN_GROUP
    assert only(leader.handle(CLIENT, p.Stop(id=1, group="nope", key="k")))[1].kind == p.UNKNOWN_GROUP


def test_get_with_no_worker():
    leader = make()
    to, err = only(get(leader, "k", id=6))
    assert to == CLIENT and err.kind == p.NO_WORKER and err.id == 6
    assert leader.starts.pending == {}


def test_one_spawn_for_many_gets_and_all_waiters_answered():
    leader = make(["node1"])
    first = get(leader, "k", id=1)
    node, spawn = spawn_of(first)
    assert len(first) == 1 and node == "node1"
    assert (spawn.group, spawn.key, spawn.call) == ("users", "k", CALLS["users"])
    clients = [(f"c{i}".encode(), 100 + i) for i in range(5)]
    for client, req in clients:
        assert get(leader, "k", client=client, id=req) == []
    assert loads(leader) == {"node1": 1}

    out, location = answer(leader, first, pid=4242)
    started = events(out)
    assert len(started) == 1
    assert started[0].kind == "started" and started[0].location == location and started[0].reason is None
    found = [(to, m) for to, m in out if to is not PUBLISH]
    assert sorted((to, m.id) for to, m in found) == sorted([(CLIENT, 1), *clients])
    assert all(isinstance(m, p.Found) and m.location == location and m.seq == leader.events.seq for _, m in found)
    assert leader.starts.pending == {} and leader.starts.spawns == {}

    # Once registered, a get answers at once from the dictionary.
    to, again = only(get(leader, "k", id=50))
    assert to == CLIENT and again.location == location and again.id == 50
    assert loads(leader) == {"node1": 1}


def test_find_never_creates():
    leader = make(["node1"])
    to, found = only(leader.handle(CLIENT, p.Find(id=3, group="users", key="k")))
    assert found == p.Found(id=3, location=None, seq=0, epoch=leader.epoch)
    location = start(leader, "k")
    assert only(leader.handle(CLIENT, p.Find(id=4, group="users", key="k")))[1].location == location


def test_different_keys_spawn_in_parallel():
    leader = make(["node1", "node2"])
    out_a, out_b = get(leader, "a"), get(leader, "b")
    (node_a, spawn_a), (node_b, spawn_b) = spawn_of(out_a), spawn_of(out_b)
    assert spawn_a.id != spawn_b.id
    assert {node_a, node_b} == {"node1", "node2"}  # the first start counts as load already
    assert set(leader.starts.pending) == {("users", "a"), ("users", "b")}
    out, loc_b = answer(leader, out_b)  # answers may come back in any order
    assert [m.location for m in replies(out)] == [loc_b]
    assert ("users", "a") in leader.starts.pending


@pytest.mark.parametrize("n", [1, 4])
def test_least_loaded_placement_is_even(n):
    leader = make(["node1", "node2", "node3"])
    for i in range(3 * n):
        start(leader, f"k{i}", group=("users", "other")[i % 2])
    assert {name: info.processes for name, info in node_info(leader).items()} == {"node1": n, "node2": n, "node3": n}
    assert loads(leader) == {"node1": n, "node2": n, "node3": n}


def test_worker_at_capacity_is_never_chosen():
    leader = make()
    hello(leader, "small", capacity=1)
    hello(leader, "big", capacity=0)
    placed = [start(leader, f"k{i}").node for i in range(6)]
    assert placed.count("small") == 1 and placed.count("big") == 5


def test_all_workers_full_gives_no_worker():
    leader = make(["node1"], capacity=2)
    start(leader, "a")
    spawn_of(get(leader, "b"))  # a start under way counts against capacity too
    to, err = only(get(leader, "c"))
    assert err.kind == p.NO_WORKER and "capacity" in err.message


def test_spawn_failed_answers_all_waiters_and_leaves_nothing():
    leader = make(["node1"])
    out = get(leader, "k", id=1)
    get(leader, "k", client=b"c2", id=2)
    node, spawn = spawn_of(out)
    failed = leader.handle(peer(node), p.SpawnFailed(id=spawn.id, group="users", key="k", reason="command not found"))
    assert {(to, m.id) for to, m in failed} == {(CLIENT, 1), (b"c2", 2)} and len(failed) == 2
    for _, err in failed:
        assert isinstance(err, p.Error) and err.kind == p.SPAWN_FAILED
        assert "command not found" in err.message and "users/k" in err.message
    assert events(failed) == []
    assert leader.starts.pending == {} and leader.starts.spawns == {} and len(leader.store) == 0
    assert loads(leader) == {"node1": 0} and node_info(leader)["node1"].processes == 0
    assert spawn_of(get(leader, "k"))[0] == "node1"  # a later get tries again


def test_spawned_from_wrong_peer_or_unknown_id_answers_no_waiter():
    leader = make(["node1", "node2"])
    out = get(leader, "k")
    node, spawn = spawn_of(out)
    other = "node2" if node == "node1" else "node1"
    assert leader.handle(peer(other), p.SpawnFailed(id=spawn.id, group="users", key="k", reason="x")) == []
    assert leader.handle(peer(node), p.SpawnFailed(id=spawn.id, group="users", key="other", reason="x")) == []
    assert leader.handle(peer(node), p.Spawned(id=spawn.id, location=loc(other, "k"))) == []  # not its own
    # A live process reported under a wrong id still exists: it is registered, but it
    # answers no waiter; the start under way then turns out to be the duplicate.
    stray = loc(other, "k")
    out2 = leader.handle(peer(other), p.Spawned(id=spawn.id + 99, location=stray))
    assert [e.location for e in events(out2)] == [stray] and replies(out2) == []
    assert ("users", "k") in leader.starts.pending
    done, location = answer(leader, out)
    assert (peer(node), p.Kill(location=location, reason="conflict")) in done
    assert [m.location for m in replies(done)] == [stray]
    assert leader.store.get("users", "k") == stray and loads(leader)[other] == 1 and loads(leader)[node] == 0


# -- exits and stop --


def test_exited_drops_and_publishes():
    leader = make(["node1"])
    location = start(leader, "k")
    out = leader.handle(peer("node1"), p.Exited(location=location, exit_code=3, signal=None, reason="exit", at=99.0))
    (event,) = events(out)
    assert (event.kind, event.location, event.exit_code, event.signal, event.reason, event.at) == (
        "exited",
        location,
        3,
        None,
        "exit",
        99.0,
    )
    assert len(out) == 1
    assert only(leader.handle(CLIENT, p.Find(id=1, group="users", key="k")))[1].location is None
    assert loads(leader) == {"node1": 0} and node_info(leader)["node1"].processes == 0


def test_exited_with_stale_pid_changes_nothing():
    leader = make(["node1"])
    location = start(leader, "k")
    seq = leader.events.seq
    stale = p.Location("users", "k", "node1", location.pid + 1)
    assert leader.handle(peer("node1"), p.Exited(location=stale, exit_code=0, signal=None, reason="exit", at=1.0)) == []
    assert leader.store.get("users", "k") == location and leader.events.seq == seq and loads(leader) == {"node1": 1}


def test_stop_absent_key():
    leader = make(["node1"])
    assert only(leader.handle(CLIENT, p.Stop(id=8, group="users", key="k"))) == (CLIENT, p.Stopped(id=8, found=False))


def test_stop_kills_then_answers_on_exit():
    leader = make(["node1", "node2"])
    start(leader, "a")
    location = start(leader, "k")
    to, kill = only(leader.handle(CLIENT, p.Stop(id=8, group="users", key="k")))
    assert to == peer(location.node) and kill == p.Kill(location=location, reason="stopped")
    assert leader.handle(b"c2", p.Stop(id=9, group="users", key="k")) == [(to, kill)]  # again: a kill may be lost
    out = leader.handle(to, p.Exited(location=location, exit_code=None, signal=15, reason="stopped", at=2.0))
    assert events(out)[0].reason == "stopped" and events(out)[0].signal == 15
    assert sorted((t, m) for t, m in out if t is not PUBLISH) == [
        (b"c2", p.Stopped(id=9, found=True)),
        (CLIENT, p.Stopped(id=8, found=True)),
    ]
    assert leader.store.get("users", "k") is None and leader.registry.stopping == {}


# -- listing --


def test_add_call_then_calls():
    leader = make(["node1", "node2"])
    call = p.Call(command=["sleep", "60"], ready=True)
    out = leader.handle(peer("node1"), p.AddCall(id=4, name="sleepers", call=call))
    assert (peer("node1"), p.Ok(id=4)) in out
    told = {to for to, m in out if isinstance(m, p.AddCall) and m.name == "sleepers"}
    assert told == {peer("node1"), peer("node2")} and len(out) == 3  # every worker keeps it
    to, calls = only(leader.handle(CLIENT, p.Calls(id=5)))
    assert calls.id == 5 and calls.items == {**CALLS, "sleepers": call}
    assert list(calls.items) == sorted(calls.items)
    assert spawn_of(get(leader, "x", group="sleepers"))[1].call == call


def test_list_filters_by_group():
    leader = make(["node1"])
    u2, u1, o1 = start(leader, "u2"), start(leader, "u1"), start(leader, "o1", group="other")
    assert only(leader.handle(CLIENT, p.List(id=1)))[1].items == [o1, u1, u2]
    assert only(leader.handle(CLIENT, p.List(id=2, group="users")))[1].items == [u1, u2]
    assert only(leader.handle(CLIENT, p.List(id=3, group="other")))[1].items == [o1]


def test_event_seq_counts_by_one():
    leader = make(["node1"])
    seen = []
    for key in ("a", "b", "c"):
        out, location = answer(leader, get(leader, key))
        seen += events(out)
        seen += events(
            leader.handle(peer("node1"), p.Exited(location=location, exit_code=0, signal=None, reason="exit", at=1.0))
        )
    assert [e.seq for e in seen] == list(range(1, 7))
    assert [e.gseq for e in seen] == list(range(1, 7))
    assert {e.epoch for e in seen} == {leader.epoch}
    assert [e.kind for e in seen] == ["started", "exited"] * 3
    assert leader.events.tick() == p.Tick(seq=6, epoch=leader.epoch) and leader.events.tick("users").gseq == 6


def test_ping_pong():
    leader = make(["node1"])
    assert only(leader.handle(peer("node1"), p.Ping(id=3))) == (
        peer("node1"),
        p.Pong(id=3, epoch=leader.epoch, known=True),
    )
    assert only(leader.handle(b"x", p.Ping(id=4)))[1].known is False


# -- worker restarts and leader restarts --


def test_rehello_with_new_incarnation_drops_what_died():
    leader = make(["node1"])
    kept, lost = start(leader, "kept"), start(leader, "lost")
    out = hello(leader, "node1", processes=[kept], incarnation="inc-2")
    dropped = events(out)
    assert [(e.kind, e.location, e.reason) for e in dropped] == [("exited", lost, "node-down")]
    assert any(isinstance(m, p.Welcome) for _, m in out)
    assert leader.store.get("users", "kept") == kept and leader.store.get("users", "lost") is None
    assert loads(leader) == {"node1": 1} and node_info(leader)["node1"].processes == 1


def test_rehello_with_same_incarnation_keeps_everything():
    leader = make(["node1"])
    location = start(leader, "k")
    out = leader.handle(b"new-socket", p.Hello(id=2, node="node1", incarnation="inc-1", processes=[location]))
    assert events(out) == [] and leader.store.get("users", "k") == location
    assert leader.peer_of["node1"] == b"new-socket" and peer("node1") not in leader.node_of
    assert loads(leader) == {"node1": 1}


def test_rehello_with_new_incarnation_fails_its_pending_starts():
    # The restarted worker never heard of the old spawn: its waiters must not wait forever,
    # and the key must not stay stuck behind a start that will never be answered.
    leader = make(["node1"])
    node, spawn = spawn_of(get(leader, "k", id=1))
    out = hello(leader, node, incarnation="inc-2")
    errors = [m for to, m in out if to == CLIENT]
    assert len(errors) == 1 and errors[0].kind == p.SPAWN_FAILED and errors[0].id == 1
    assert leader.starts.pending == {} and loads(leader) == {"node1": 0}
    assert get(leader, "k", id=2) != []  # not queued behind the dead start


def test_hello_registers_reported_processes():
    leader = make()
    location = loc("node1", "k")
    out = hello(leader, "node1", processes=[location])
    assert [(e.kind, e.location) for e in events(out)] == [("started", location)]
    assert leader.store.get("users", "k") == location and loads(leader) == {"node1": 1}


def test_hello_with_duplicate_gets_conflict_kill():
    leader = make(["node1"])
    registered = start(leader, "k")
    duplicate = loc("node2", "k")
    out = hello(leader, "node2", processes=[duplicate])
    assert (peer("node2"), p.Kill(location=duplicate, reason="conflict")) in out
    assert events(out) == [] and leader.store.get("users", "k") == registered
    # Its exit report is published but leaves the registered one alone.
    out = leader.handle(
        peer("node2"), p.Exited(location=duplicate, exit_code=None, signal=15, reason="conflict", at=1.0)
    )
    assert [(e.kind, e.reason, e.location) for e in events(out)] == [("exited", "conflict", duplicate)]
    assert leader.store.get("users", "k") == registered and loads(leader) == {"node1": 1, "node2": 0}


# -- heartbeats --


def test_silent_worker_is_dropped_with_node_down():
    now = [0.0]
    leader = Leader(CALLS, heartbeat=1.0, liveness=3, clock=lambda: 1.0, monotonic=lambda: now[0])
    hello(leader, "node1")
    hello(leader, "node2")
    a, b = start(leader, "a"), start(leader, "b")
    assert (a.node, b.node) == ("node1", "node2")
    assert spawn_of(get(leader, "c", id=7))[0] == "node1"
    now[0] = 2.0
    leader.handle(peer("node2"), p.Ping())
    now[0] = 3.5
    out = leader.expire()
    assert [(e.kind, e.location, e.reason) for e in events(out)] == [("exited", a, "node-down")]
    (err,) = replies(out)
    assert err.kind == p.SPAWN_FAILED and err.id == 7 and "node1" in err.message
    assert {n: i.state for n, i in node_info(leader).items()} == {"node1": "down", "node2": "up"}
    assert spawn_of(get(leader, "c"))[0] == "node2"
    assert only(leader.handle(peer("node1"), p.Ping(id=1)))[1].known is False


def test_a_leader_behind_on_its_input_takes_no_worker_for_down():
    """Messages waiting unread (a storm of hellos from a large cluster) may hold a silent
    worker's ping: it is taken for down only once the leader has caught up."""
    now = [0.0]
    leader = Leader(CALLS, heartbeat=1.0, liveness=3, clock=lambda: 1.0, monotonic=lambda: now[0])
    hello(leader, "node1")
    a = start(leader, "a")
    now[0] = 10.0
    assert leader.expire(caught_up=False) == []
    assert {n: i.state for n, i in node_info(leader).items()} == {"node1": "up"}
    leader.handle(peer("node1"), p.Ping())  # its word, read at last
    assert (
        leader.expire(caught_up=True) == []
        and only(leader.handle(CLIENT, p.Find(id=2, group="users", key="a")))[1].location == a
    )
    now[0] = 13.5
    assert [(e.kind, e.location, e.reason) for e in events(leader.expire())] == [("exited", a, "node-down")]


# -- reconciling what workers report (found in review) --


def test_a_spawn_answer_for_another_key_is_not_taken_for_this_one():
    # After a leader restart, a worker may answer a start of the old leader whose id
    # happens to equal a new one: the key must match as well.
    leader = make(["node1"])
    out = get(leader, "y")
    _, spawn = spawn_of(out)
    old = loc("node1", "x")
    done = leader.handle(peer("node1"), p.Spawned(id=spawn.id, location=old))
    assert replies(done) == [] and leader.store.get("users", "x") == old  # x registered, y still pending
    assert ("users", "y") in leader.starts.pending
    assert next(Leader(CALLS)._ids) != next(Leader(CALLS)._ids)  # ids differ between leader lives


def test_hello_of_a_key_pending_elsewhere_keeps_one_and_the_load_true():
    leader = make(["node1", "node2"])
    out = get(leader, "k")
    node, spawn = spawn_of(out)
    other = "node2" if node == "node1" else "node1"
    survivor = loc(other, "k")
    hello(leader, other, processes=[survivor], id=7)  # came back with a copy of k
    done, late = answer(leader, out)
    assert (peer(node), p.Kill(location=late, reason="conflict")) in done
    assert [m.location for m in replies(done)] == [survivor]
    assert leader.store.get("users", "k") == survivor
    assert loads(leader) == {other: 1, node: 0}


def test_pending_starts_are_sent_again_when_the_worker_reconnects():
    leader = make(["node1"])
    _, spawn = spawn_of(get(leader, "k"))
    out = leader.handle(b"new-socket", p.Hello(id=5, node="node1", incarnation="inc-1"))
    assert (b"new-socket", spawn) in out


def test_hello_drops_what_the_worker_no_longer_runs():
    leader = make(["node1"])
    gone, kept = start(leader, "gone"), start(leader, "kept")
    out = hello(leader, "node1", processes=[kept], id=9)  # same incarnation: an exit report was lost
    assert [(e.location, e.reason) for e in events(out)] == [(gone, "exit")]
    assert leader.store.get("users", "gone") is None and leader.store.get("users", "kept") == kept
    assert loads(leader) == {"node1": 1}


def test_a_hello_speaks_only_for_its_own_node():
    leader = make(["node1"])
    out = hello(leader, "node1", processes=[loc("ghost", "k")], id=3)
    assert events(out) == [] and len(leader.store) == 0


def test_a_second_live_daemon_with_the_same_name_is_refused():
    leader = make(["node1"])
    out = leader.handle(b"impostor", p.Hello(id=4, node="node1", incarnation="inc-other"))
    to, err = only(out)
    assert (to, err.kind) == (b"impostor", p.NAME_TAKEN) and leader.peer_of["node1"] == peer("node1")


def test_stop_of_a_process_on_an_unknown_node_drops_it():
    leader = make(["node1"])
    location = start(leader, "k")
    leader.node_down("node1")
    leader.store.put(location)  # as if it had been registered without a live node
    out = leader.handle(CLIENT, p.Stop(id=3, group="users", key="k"))
    assert p.Stopped(id=3, found=True) in replies(out) and leader.store.get("users", "k") is None


# -- guarantees 7 and 8 --


def test_info_is_answered_by_the_leader():
    about = p.InfoReply(node="lead", role="leader", events="ipc:///x/events", silence=3.0)
    leader = Leader(CALLS, about=about)
    assert only(leader.handle(CLIENT, p.Info(id=4))) == (
        CLIENT,
        p.InfoReply(id=4, node="lead", role="leader", events="ipc:///x/events", silence=3.0, epoch=leader.epoch),
    )


def test_a_worker_reports_exits_and_starts_only_of_its_own_node():
    leader = make(["node1", "node2"])
    mine = start(leader, "k")
    assert mine.node == "node1"
    forged = p.Exited(location=mine, exit_code=0, signal=None, reason="exit", at=1.0)
    assert leader.handle(peer("node2"), forged) == []
    assert leader.store.get("users", "k") == mine
    fake = loc("node1", "new")
    assert leader.handle(peer("node2"), p.Spawned(id=1, location=fake)) == []
    assert leader.store.get("users", "new") is None
    assert events(leader.handle(peer("node1"), forged)) and leader.store.get("users", "k") is None


def test_a_start_under_way_in_a_hello_makes_every_get_wait_for_it():
    leader = make(["node2"])
    out = hello(leader, "node1", incarnation="i1")
    out = leader.handle(
        peer("node1"), p.Hello(id=2, node="node1", incarnation="i1", starting=[p.Starting(777, "users", "k")])
    )
    assert not any(isinstance(m, p.Spawn) for _, m in out)  # nothing to send again: it is theirs
    assert loads(leader) == {"node1": 1, "node2": 0}
    assert get(leader, "k", id=5) == [] and get(leader, "k", client=b"other", id=6) == []  # no second start
    location = loc("node1", "k")
    out = leader.handle(peer("node1"), p.Spawned(id=777, location=location))
    assert replies(out) == [p.Found(id=5, location=location, seq=1, epoch=leader.epoch)]
    assert replies(out, b"other") == [p.Found(id=6, location=location, seq=1, epoch=leader.epoch)]
    assert loads(leader) == {"node1": 1, "node2": 0}


def test_a_start_under_way_elsewhere_or_registered_already_is_not_adopted_twice():
    leader = make(["node1", "node2"])
    running = start(leader, "k")  # on node1
    spawn_out = get(leader, "j")  # pending on node2
    starting = [p.Starting(1, "users", "k"), p.Starting(2, "users", "j")]
    leader.handle(
        peer("node1"), p.Hello(id=3, node="node1", incarnation="inc-1", processes=[running], starting=starting)
    )
    assert leader.starts.pending[("users", "j")].node == spawn_of(spawn_out)[0] == "node2"
    assert ("users", "k") not in leader.starts.pending


def recovering(now, nodes=None) -> Leader:
    """A leader as a daemon starts one: it may have had a predecessor."""
    return Leader(CALLS, allowed_nodes=nodes, heartbeat=1.0, liveness=3, clock=lambda: 1.0,
                  monotonic=lambda: now[0], recovering=True)  # fmt: skip


def test_a_leader_with_a_predecessor_places_no_new_key_until_its_workers_said_hello():
    now = [50.0]
    leader = recovering(now)
    leader.handle(peer("node1"), p.Hello(id=1, node="node1", incarnation="i", welcomed_by="old-epoch"))
    assert get(leader, "k", id=5) == []  # held: node2 may be starting it
    now[0] = 51.6  # past the fresh cluster's wait: but this one has a predecessor
    assert get(leader, "j", id=6) == []
    starting = [p.Starting(9, "users", "k")]
    leader.handle(
        peer("node2"), p.Hello(id=1, node="node2", incarnation="i", welcomed_by="old-epoch", starting=starting)
    )
    assert leader.expire() == []
    now[0] = 53.0  # heartbeat x liveness after the start (both kept in touch meanwhile)
    leader.members.last_seen.update(node1=53.0, node2=53.0)
    out = leader.expire()
    assert leader.starts.recovering_until is None
    assert leader.starts.pending[("users", "k")].waiters == [(CLIENT, 5)]  # waits for node2's start, not a new one
    assert [m.key for to, m in out if isinstance(m, p.Spawn)] == ["j"]  # the other held get is placed now
    ((to, spawn),) = get(leader, "x", id=7)  # once recovered, new keys are placed at once
    assert isinstance(spawn, p.Spawn)


def test_a_get_forwarded_before_any_hello_waits_for_the_predecessors_workers():
    """A restarted role-both daemon: its own fresh worker says hello first, and a get
    that another worker queued during the outage arrives before that worker's hello."""
    now = [50.0]
    leader = recovering(now)
    hello(leader, "local")
    assert get(leader, "k", id=5) == []  # not placed on "local" at once
    leader.handle(peer("node1"), p.Ping(id=1))  # node1 knew a leader before us
    leader.handle(peer("node1"), p.Hello(id=1, node="node1", incarnation="i", welcomed_by="old-epoch",
                                         starting=[p.Starting(9, "users", "k")]))  # fmt: skip
    now[0] = 53.0
    leader.members.last_seen.update(local=53.0, node1=53.0)
    assert not any(isinstance(m, p.Spawn) for _, m in leader.expire())
    assert leader.starts.pending[("users", "k")].node == "node1"


def test_a_fresh_cluster_waits_about_one_heartbeat_or_for_its_allow_list():
    now = [50.0]
    leader = recovering(now)
    hello(leader, "node1")
    assert get(leader, "k", id=5) == []
    now[0] = 51.5  # one and a half heartbeats with no sign of a predecessor
    assert [m.key for _, m in leader.expire() if isinstance(m, p.Spawn)] == ["k"]
    listed = recovering([50.0], nodes=["node1", "node2"])
    hello(listed, "node1")
    assert get(listed, "k", id=5) == []
    out = hello(listed, "node2")  # everyone the allow-list names is here: no reason to wait
    assert [m.key for _, m in out if isinstance(m, p.Spawn)] == ["k"]


def told(leader):
    """node1's hello tells of a start of users/k under way (ordered by another leader)."""
    hello(leader, "node1", incarnation="inc-1", id=2)
    leader.handle(
        peer("node1"), p.Hello(id=2, node="node1", incarnation="inc-1", starting=[p.Starting(777, "users", "k")])
    )


def test_a_start_told_of_whose_answer_was_lost_is_settled_by_the_next_hello():
    leader = make(["node2"])
    told(leader)
    assert get(leader, "k", id=5) == []
    running = loc("node1", "k")
    out = leader.handle(b"new-socket", p.Hello(id=3, node="node1", incarnation="inc-1", processes=[running]))
    assert replies(out) == [p.Found(id=5, location=running, seq=1, epoch=leader.epoch)]
    assert ("users", "k") not in leader.starts.pending and loads(leader) == {"node1": 1, "node2": 0}
    leader.handle(b"new-socket", p.Exited(location=running, exit_code=0, signal=None, reason="exit", at=1.0))
    assert any(isinstance(m, p.Spawn) for _, m in get(leader, "k", id=9))  # not wedged: started anew


def test_a_start_told_of_that_the_next_hello_no_longer_lists_is_given_up():
    leader = make()
    told(leader)
    get(leader, "k", id=5)
    out = leader.handle(b"new-socket", p.Hello(id=3, node="node1", incarnation="inc-1"))
    (err,) = replies(out)
    assert err.kind == p.SPAWN_FAILED and "without an answer" in err.message
    assert ("users", "k") not in leader.starts.pending and loads(leader) == {"node1": 0}


def test_a_leader_that_may_have_no_predecessor_places_at_once():
    leader = make()  # (the pure logic's default: only a starting daemon recovers)
    hello(leader, "node1")
    assert leader.starts.recovering_until is None
    assert isinstance(only(get(leader, "k"))[1], p.Spawn)


# -- what the leader says in its log --


def test_the_log_tells_of_workers_joining_going_down_coming_back_and_conflicts():
    now = [50.0]
    leader = Leader(CALLS, heartbeat=1.0, liveness=3, clock=lambda: 1.0, monotonic=lambda: now[0])
    hello(leader, "node1")
    assert NOTES == ["worker node1 joined (0 running, 0 starting, capacity any)"]
    hello(leader, "node2", capacity=4)
    location = start(leader, "k")
    now[0] = 54.0
    leader.members.last_seen["node2"] = 54.0
    leader.expire()
    assert NOTES == ["worker node1 is down: no word for 3 s; 1 of its processes reported exited"]
    hello(leader, "node1", processes=[location])
    assert NOTES == ["worker node1 is back (1 running, 0 starting, capacity any)"]
    hello(leader, "node2", capacity=4, incarnation="inc-2", processes=[loc("node2", "k")])
    assert NOTES[0] == "worker node2 restarted (1 running, 0 starting, capacity 4)"
    assert NOTES[1].startswith("users/k runs twice: keeping pid") and "on node1" in NOTES[1]
    hello(leader, "node2", capacity=4, incarnation="inc-2")  # a reconnect: nothing changed
    assert NOTES == []


def test_add_call_replaces_a_group_only_when_told_to_and_remove_call_removes_it():
    leader = make(["node1"])
    new = p.Call(command=["sleep", "9"])
    ((to, err),) = leader.handle(CLIENT, p.AddCall(id=3, name="users", call=new))
    assert err.kind == p.GROUP_EXISTS and "--replace" in err.message and leader.calls["users"] == CALLS["users"]
    out = leader.handle(CLIENT, p.AddCall(id=4, name="users", call=new, replace=True))
    assert replies(out) == [p.Ok(id=4)] and leader.calls["users"] == new and NOTES == ["group users replaced"]
    assert replies(out, peer("node1")) == [p.AddCall(name="users", call=new, replace=True)]  # workers keep it
    running = start(leader, "k")
    out = leader.handle(CLIENT, p.RemoveCall(id=5, name="users"))
    assert replies(out) == [p.Ok(id=5)] and replies(out, peer("node1")) == [p.RemoveCall(name="users")]
    assert leader.store.get("users", "k") == running  # what runs goes on until it exits
    ((_, err),) = get(leader, "j")
    assert err.kind == p.UNKNOWN_GROUP
    ((_, err),) = leader.handle(CLIENT, p.RemoveCall(id=6, name="users"))
    assert err.kind == p.UNKNOWN_GROUP


def test_processes_a_hello_brings_are_told_as_adopted_not_as_new_starts():
    leader = make(["node1"])
    running = loc("node1", "old")
    (event,) = events(hello(leader, "node1", processes=[running]))  # (the same incarnation: a reconnect)
    assert (event.kind, event.location, event.adopted) == ("started", running, True)
    out, _ = answer(leader, get(leader, "new"))
    (event,) = events(out)
    assert event.adopted is False


# -- drain, undrain, left --


def test_a_draining_worker_takes_no_new_process_and_undrain_ends_it():
    leader = make(["node1", "node2"])
    assert replies(leader.handle(CLIENT, p.Drain(id=3, node="node1"))) == [p.Ok(id=3)]
    assert NOTES == ["worker node1 is draining"]
    assert {spawn_of(get(leader, f"k{i}", id=10 + i))[0] for i in range(3)} == {"node2"}
    assert node_info(leader)["node1"].state == "draining"
    assert replies(leader.handle(CLIENT, p.Undrain(id=4, node="node1"))) == [p.Ok(id=4)]
    assert spawn_of(get(leader, "j", id=20))[0] == "node1" and node_info(leader)["node1"].state == "up"
    (err,) = replies(leader.handle(CLIENT, p.Drain(id=5, node="nodeX")))
    assert err.kind == p.UNKNOWN_NODE and "node1, node2" in err.message


def test_drain_with_stop_stops_every_process_of_the_node():
    leader = make(["node1"])
    running = [start(leader, f"k{i}") for i in range(2)]
    out = leader.handle(CLIENT, p.Drain(id=3, node="node1", stop=True))
    kills = replies(out, peer("node1"))
    assert sorted(k.location.key for k in kills) == ["k0", "k1"] and {k.reason for k in kills} == {"stopped"}
    assert all(leader.store.get("users", loc.key) == loc for loc in running)  # dropped as their exits come


def test_a_worker_that_leaves_is_left_not_down():
    now = [50.0]
    leader = Leader(CALLS, heartbeat=1.0, liveness=3, clock=lambda: 1.0, monotonic=lambda: now[0])
    hello(leader, "node1")
    hello(leader, "node2")
    leader.handle(peer("node1"), p.Leaving())
    assert NOTES == ["worker node1 is leaving (shut down cleanly)"]
    assert spawn_of(get(leader, "k"))[0] == "node2"  # nothing more is placed there
    now[0] = 54.0
    leader.members.last_seen["node2"] = 54.0
    leader.expire()
    assert node_info(leader)["node1"].state == "left"
    hello(leader, "node1", incarnation="inc-2")
    assert node_info(leader)["node1"].state == "up"


# -- a leader elected in etcd (backend "etcd") --


def elected(now, expected=("node1", "node2")) -> decisions.Leader:
    """A leader as a won election starts one: the workers its predecessors knew, from etcd."""
    return decisions.Leader(CALLS, heartbeat=1.0, liveness=3, monotonic=lambda: now[0], recovering=True,
                            epoch="12", term=12, expected=expected, durable=True)  # fmt: skip


def records(effects) -> list[tuple[str, bytes | None]]:
    return [(e.key, e.value) for e in effects if isinstance(e, Record)]


def test_an_elected_leader_places_new_keys_once_every_worker_etcd_knew_said_hello():
    now = [50.0]
    leader = elected(now)
    out = leader.handle(peer("node1"), p.Hello(id=1, node="node1", incarnation="i"))
    welcome = next(e.msg for e in out if isinstance(e, Reply) and isinstance(e.msg, p.Welcome))
    assert (welcome.term, welcome.epoch) == (12, "12")
    assert records(out) == [("members/node1", b"")]  # for its successor
    assert leader.handle(CLIENT, p.Get(id=5, group="users", key="k")) == []  # node2 may be starting it
    now[0] = 51.6  # no fresh cluster's shortcut: etcd says there were workers
    assert not [e for e in leader.expire() if isinstance(e, Reply)]
    out = leader.handle(peer("node2"), p.Hello(id=1, node="node2", incarnation="i"))
    assert not [e for e in out if isinstance(e, Reply) and isinstance(e.msg, p.Spawn)]  # none is recorded yet
    out = leader.recorded("members/node2")  # a successor would wait for node2 now: it takes processes
    assert [(e.peer, e.msg.key) for e in out if isinstance(e, Reply) and isinstance(e.msg, p.Spawn)] == [
        (peer("node2"), "k")
    ]


def test_a_new_worker_takes_no_process_before_its_record_is_written():
    now = [50.0]
    leader = elected(now, expected=())
    leader.handle(peer("node1"), p.Hello(id=1, node="node1", incarnation="i"))
    now[0] = 52.0
    leader.expire()  # a fresh cluster's recovery is over
    assert leader.handle(CLIENT, p.Get(id=5, group="users", key="k")) == []  # waits: node1 is not recorded
    assert leader.recorded("calls/x") == []  # (another record frees no one)
    ((to, spawn),) = [(e.peer, e.msg) for e in leader.recorded("members/node1")]
    assert to == peer("node1") and isinstance(spawn, p.Spawn) and spawn.key == "k"
    # With backend memory there is no successor to wait for it: placed at once.
    ((to, spawn),) = get(make(["node1"]), "k")
    assert isinstance(spawn, p.Spawn)


def test_a_worker_etcd_knew_that_stays_silent_is_waited_for_then_shown_down_and_forgotten():
    now = [50.0]
    leader = elected(now)
    leader.handle(peer("node1"), p.Hello(id=1, node="node1", incarnation="i"))
    leader.recorded("members/node1")
    assert leader.handle(CLIENT, p.Get(id=5, group="users", key="k")) == []
    now[0] = 53.1  # heartbeat x liveness: node2 is dead (or slow, and then it is on its own)
    leader.members.last_seen["node1"] = 53.0
    out = leader.expire()
    assert [e.msg.key for e in out if isinstance(e, Reply) and isinstance(e.msg, p.Spawn)] == ["k"]
    assert records(out) == [("members/node2", None)]  # a successor will not wait for it again
    (reply,) = leader.handle(CLIENT, p.Nodes(id=6))
    assert {n.name: n.state for n in reply.msg.items} == {
        "node1": "up",
        "node2": "down",
    }


def test_an_elected_leader_records_run_time_groups_and_answers_its_waiters_when_its_term_ends():
    now = [50.0]
    leader = elected(now, expected=())
    leader.handle(peer("node1"), p.Hello(id=1, node="node1", incarnation="i"))
    now[0] = 52.0
    leader.expire()
    add = leader.handle(CLIENT, p.AddCall(id=2, name="extra", call=p.Call(command=["sleep", "9"])))
    assert records(add) == [("calls/extra", msgspec.json.encode(p.Call(command=["sleep", "9"])))]
    assert not [
        e for e in add if isinstance(e, Reply) and e.peer == CLIENT
    ]  # the ok waits for the record a successor reads
    assert leader.recorded("calls/extra") == [Reply(CLIENT, p.Ok(id=2))]
    assert records(leader.handle(CLIENT, p.RemoveCall(id=3, name="extra"))) == [("calls/extra", None)]
    leader.handle(CLIENT, p.AddCall(id=5, name="more", call=p.Call(command=["sleep", "9"])))  # not recorded yet
    leader.handle(CLIENT, p.Get(id=4, group="users", key="k"))  # its start is under way on node1
    answered = sorted((e.peer, e.msg.id, e.msg.kind) for e in leader.abdicate())
    assert answered == [(CLIENT, 4, p.NOT_LEADER), (CLIENT, 5, p.NOT_LEADER)]
    # With backend memory nothing is recorded.
    assert records(make(["node1"]).handle(CLIENT, p.AddCall(id=2, name="x", call=p.Call(command=["true"])))) == []


# -- deadlines: a request whose caller gave up costs nothing --


def test_a_request_past_its_deadline_is_dropped_and_a_held_get_starts_nothing_once_given_up():
    now, wall = [50.0], [1000.0]
    leader = Leader(CALLS, heartbeat=1.0, liveness=3, clock=lambda: wall[0], monotonic=lambda: now[0],
                    recovering=True)  # fmt: skip
    hello(leader, "node1")
    late = p.Get(id=3, group="users", key="late", deadline=wall[0] - 1.0)
    assert leader.handle(CLIENT, late) == []  # not answered: its caller no longer listens
    for key, id in (("given-up", 4), ("wanted", 5)):
        leader.handle(CLIENT, p.Get(id=id, group="users", key=key, deadline=wall[0] + (1.0 if id == 4 else 60.0)))
    now[0], wall[0] = 60.0, 1010.0  # the recovery is over: the first caller gave up meanwhile
    leader.members.last_seen.update(node1=60.0)
    assert [m.key for _, m in leader.expire() if isinstance(m, p.Spawn)] == ["wanted"]
    assert p.expired(1009.0, 1010.0) and not p.expired(1009.9, 1010.0) and not p.expired(0.0, 1010.0)


def test_a_call_sent_to_the_leader_is_told_where_calls_go():
    leader = make(["node1"])
    ((to, err),) = leader.handle(CLIENT, p.Talk(id=4, group="users", key="k", payload=b"x"))
    assert to == CLIENT and err.kind == p.BAD_MESSAGE and "node.listen" in err.message


def test_a_silent_worker_is_down_at_the_end_of_its_silence_not_at_the_next_heartbeat():
    """(With partition "stop" its processes died half a heartbeat before: every moment
    later is a moment of answers naming dead processes.)"""
    now = [0.0]
    leader = Leader(CALLS, heartbeat=1.0, liveness=3, clock=lambda: 1.0, monotonic=lambda: now[0])
    hello(leader, "node1")
    now[0] = 0.4
    hello(leader, "node2", id=2)
    now[0] = 1.0
    leader.expire()
    assert leader.next_deadline() == 3.0  # node1, last heard at 0
    now[0] = 3.01
    leader.expire()
    assert {n: i.state for n, i in node_info(leader).items()} == {"node1": "down", "node2": "up"}
    assert leader.next_deadline() == pytest.approx(3.4)  # node2's
