"""cluster.partition = "stop" with real daemons: a worker's processes are dead before the
leader can place their keys elsewhere, whether the worker daemon is frozen (SIGSTOP),
dead (SIGKILL) or cut off from a leader that is frozen. A sampler watches the live
processes all along: no key has two at any instant."""

from __future__ import annotations

import collections
import os
import signal
import threading
import time

import pytest
from cluster import wait_for
from test_chaos import live_processes
from test_cluster import alive

from forsetictl import ForsetiError

STOP = {"heartbeat": 0.25, "liveness": 4, "partition": "stop"}  # silence 1 s, lease 0.875 s
GROUP = {"chaos": {"command": ["sleep", "600"], "stop_timeout": 1.0}}  # (test_chaos's live_processes reads it)


class Sampler:
    """Every live process of the group "chaos", sampled in a thread: ``doubled`` holds
    every sample in which a key had two."""

    def __init__(self, cluster) -> None:
        self.cluster, self.samples, self.doubled = cluster, 0, []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run)
        self.thread.start()

    def run(self) -> None:
        while not self.stop.is_set():
            live = live_processes(self.cluster)
            twice = {k: n for k, n in collections.Counter(live.values()).items() if n > 1}
            self.samples += 1
            if twice:
                self.doubled.append(twice)

    def __enter__(self):
        return self

    def __exit__(self, *_) -> None:
        self.stop.set()
        self.thread.join(10)


def answers(request):
    """What ``request()`` returns, or None while the worker has no leader."""
    try:
        return request()
    except ForsetiError:
        return None


def moved(cluster, old, via: str, seconds: float = 10.0):
    """``get`` the key of ``old`` through ``via`` until it runs on another node; at
    that instant the old process must be dead already."""
    client = cluster.client(via, timeout=2.0)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            loc = client.get(old.group, old.key)
        except ForsetiError:  # (its pending start failed with the node going down)
            continue
        if loc.node != old.node:
            assert not alive(old.pid), f"{old.key} runs on {loc.node} while pid {old.pid} lives on {old.node}"
            return loc
        time.sleep(0.01)
    raise AssertionError(f"{old.key} did not move off {old.node} within {seconds} s")


@pytest.mark.parametrize("sig", [signal.SIGSTOP, signal.SIGKILL], ids=["frozen", "killed"])
def test_stop_a_lost_workers_processes_die_before_their_keys_start_elsewhere(make_cluster, sig):
    c = make_cluster(workers=2, cluster=STOP, calls=GROUP)
    leader = c.leader()
    mine = [loc for loc in (leader.get("chaos", f"p{i}") for i in range(4)) if loc.node == "node1"]
    assert len(mine) == 2
    with Sampler(c) as sampler, leader.events("chaos") as events:
        c.kill("node1", sig)
        try:
            again = {old.key: moved(c, old, "node2") for old in mine}
            gone = [events.next_event(5) for _ in mine]
        finally:
            if sig == signal.SIGSTOP:
                c.kill("node1", signal.SIGCONT)
    assert sampler.samples > 10 and not sampler.doubled, sampler.doubled
    assert {(e.key, e.kind, e.reason) for e in gone} == {(old.key, "exited", "node-down") for old in mine}
    assert all(loc.node == "node2" and alive(loc.pid) for loc in again.values())
    if sig == signal.SIGSTOP:  # it thaws: its hello lists nothing of its old processes
        lapsed = 'the lease lapsed: 2 processes killed (partition = "stop")'
        wait_for(lambda: lapsed in c.log("node1"), 5, 0.05, "the thawed worker to tell of the lapse")
        wait_for(lambda: {n.name: n.state for n in leader.nodes()}["node1"] == "up", 5, 0.05, "node1 back")
        here = c.client("node1")  # its cache forgot its own dead processes: it says where they run now
        wait_for(lambda: all(here.find("chaos", k) == loc for k, loc in again.items()), 5, 0.05, "node1's cache")
    assert sorted(leader.processes("chaos"), key=lambda loc: loc.key) == sorted(
        [loc for loc in (leader.get("chaos", f"p{i}") for i in range(4))], key=lambda loc: loc.key
    )
    assert len(live_processes(c)) == 4


def test_stop_a_worker_that_loses_its_leader_kills_its_processes_and_says_why(make_cluster):
    """The leader frozen past the worker's lease (its own silence being longer here, so
    that it does not take the worker for down as it thaws): the worker's processes are
    killed, and the leader hears their exits with reason "partition" once it wakes."""
    c = make_cluster(workers=1, cluster={**STOP, "liveness": 12}, calls=GROUP, start=False, wait=False)
    worker = c.configs["node1"]  # the leader's silence: 3 s; the worker's lease: 0.625 s
    worker.write_text(worker.read_text().replace("liveness = 12", "liveness = 3"))
    c.start("leader")
    c.start("node1")
    c.wait_up()
    leader = c.leader()
    locs = [leader.get("chaos", f"q{i}") for i in range(2)]
    with leader.events("chaos") as events:
        c.kill("leader", signal.SIGSTOP)
        try:
            wait_for(lambda: not any(alive(loc.pid) for loc in locs), 5, 0.02, "the lease to lapse")
            wait_for(lambda: "lost the leader" in c.log("node1"), 5, 0.05, "the worker to give up on its socket")
        finally:
            c.kill("leader", signal.SIGCONT)
        gone = [events.next_event(5) for _ in locs]
    assert {(e.key, e.kind, e.reason, e.signal) for e in gone} == {
        (loc.key, "exited", "partition", signal.SIGKILL) for loc in locs
    }
    wait_for(lambda: leader.processes("chaos") == [], 5, 0.05, "the dictionary to forget them")
    here = c.client("node1")
    wait_for(lambda: answers(lambda: here.get("chaos", "q0")), 5, 0.05, "the worker to be welcomed again")
    fresh = here.find("chaos", "q0")  # welcomed again: a new lease, new starts
    assert alive(fresh.pid) and fresh.pid not in {loc.pid for loc in locs}


# -- the parts, without daemons --


def test_partition_is_keep_or_stop_and_stop_needs_liveness_two(tmp_path):
    from test_config import error, write

    from forsetid import config

    assert config.load(write(tmp_path, "")).cluster.partition == "keep"
    assert config.load(write(tmp_path, '[cluster]\npartition = "stop"\n')).cluster.partition == "stop"
    message = error(tmp_path, '[cluster]\npartition = "halt"\n')
    assert "cluster.partition" in message and "'keep', 'stop'" in message, message
    message = error(tmp_path, '[cluster]\npartition = "stop"\nliveness = 1\n')
    assert "cluster.partition" in message and "cluster.liveness >= 2" in message, message


def test_the_lease_runs_from_when_the_answered_ping_was_sent():
    from forsetid.effects import Renew
    from forsetid.lease import Lease, lease_seconds

    assert lease_seconds(1.0, 3) == 2.5 and lease_seconds(0.2, 3) == pytest.approx(0.5)
    now = [10.0]
    lease = Lease(2.5, lambda: now[0])
    assert lease.lapsed()  # none before the first answer
    lease.sent(5)
    now[0] = 11.0
    lease.sent(6)
    now[0] = 14.0  # a late answer to the first: the lease counts from 10, not from now
    assert lease.answered(5) == [Renew(12.5)] and lease.lapsed()
    assert lease.answered(0) == []  # never asked: the leader's unasked pong
    assert lease.answered(6) == [Renew(13.5)]
    assert lease.answered(6) == []  # once
    lease.sent(7)
    lease.sent(8)
    assert lease.answered(8) == [Renew(16.5)] and not lease.lapsed()
    assert lease.answered(7) == []  # older than one answered already


def test_a_worker_renews_only_on_the_leaders_answers_and_tells_partition_exits_again():
    from test_worker import WALL, Clock, started, to_leader

    from forsetid import protocol as p
    from forsetid.effects import Renew, ToLeader
    from forsetid.lease import Lease
    from forsetid.worker import Worker

    clock, lease_clock = Clock(), Clock()
    worker = Worker("node1", clock=clock, wall=lambda: WALL, lease=Lease(2.5, lease_clock))
    hello = worker.hello()
    assert [type(e) for e in worker.on_leader(p.Welcome(id=hello.id, epoch="e1"))][0] is Renew
    proc, _ = started(worker, pid=4242)
    lease_clock.now = clock.now = 101.0
    (ping,) = [e.msg for e in worker.expire() if isinstance(e, ToLeader) and isinstance(e.msg, p.Ping)]
    assert ping.id != 0
    lease_clock.now = 105.0
    assert worker.on_leader(p.Pong(id=ping.id, epoch="e1", known=True)) == [Renew(103.5)]
    assert worker.on_leader(p.Pong(id=0, epoch="e1", known=True)) == []  # unasked: proves nothing
    assert worker.on_leader(p.Spawn(id=9, group="users", key="x", call=proc.call)) != []  # no Renew in it
    # The fork server killed it when the lease lapsed: its exit says "partition".
    worker.processes.lapsed([4242])
    (exited,) = to_leader(worker.processes.on_exit(4242, -9))
    assert (exited.reason, exited.signal) == ("partition", 9)
    assert worker.cache.get("users", "k") is None  # its own cache forgets it
    again = worker.hello()
    assert again.exited == [exited]  # told again: the leader may not have heard it
    worker.on_leader(p.Welcome(id=again.id, epoch="e1"))
    assert worker.hello().exited == []


def test_a_hello_drops_what_the_worker_killed_at_its_lease_lapse_with_that_reason():
    from test_leader import PUBLISH, hello, make, peer

    from forsetid import protocol as p

    leader = make(nodes=["node1"])
    ((_, spawn),) = [(w, m) for w, m in leader.handle(b"c", p.Get(id=1, group="users", key="k")) if w != PUBLISH]
    loc = p.Location("users", "k", "node1", 777)
    leader.handle(peer("node1"), p.Spawned(id=spawn.id, location=loc))
    gone = p.Exited(location=loc, exit_code=None, signal=9, reason="partition", at=1.0)
    stale = p.Exited(location=p.Location("users", "k", "node1", 1), exit_code=None, signal=9, reason="partition", at=1)
    out = leader.handle(peer("node1"), p.Hello(id=2, node="node1", incarnation="inc-1", exited=[stale, gone]))
    events = [m for w, m in out if w == PUBLISH]
    assert [(e.kind, e.location.pid, e.reason, e.signal) for e in events] == [("exited", 777, "partition", 9)]
    assert leader.store.get("users", "k") is None
    assert hello(leader, "node1") == [(peer("node1"), p.Welcome(id=1, epoch=leader.epoch, calls=leader.calls))]


def test_the_fork_server_kills_everything_when_its_lease_ends_unrenewed():
    from test_spawner import SLEEPER, dead, reports, spawned_pid

    from forsetid.spawner import Spawner, lease_clock

    sp = Spawner([SLEEPER], lease=True)
    try:
        r, _ = sp.spawn(1, None, ["sleep", "600"], [], {}, "a")
        got = reports(sp, lambda got: any(x[:2] == ["failed", 1] for x in got))  # no lease held yet
        assert "lease has lapsed" in next(x[2] for x in got if x[:2] == ["failed", 1])
        os.close(r)
        sp.lease(lease_clock() + 0.6)
        r, _ = sp.spawn(2, None, ["sleep", "600"], [], {}, "b")
        pid = spawned_pid(sp, 2)
        os.close(r)
        time.sleep(0.4)
        sp.lease(lease_clock() + 0.6)  # renewed: it outlives the first lease
        time.sleep(0.4)
        assert not dead(pid)
        got = reports(sp, lambda got: any(x[:2] == ["exited", pid] for x in got), timeout=2.0)
        assert ["lapsed", None, [pid]] in got and ["exited", pid, -signal.SIGKILL] in got
        assert got.index(["lapsed", None, [pid]]) < got.index(["exited", pid, -signal.SIGKILL])
        r, _ = sp.spawn(3, None, ["sleep", "600"], [], {}, "c")  # lapsed: nothing starts until renewed
        assert any(x[:2] == ["failed", 3] for x in reports(sp, lambda got: any(x[:2] == ["failed", 3] for x in got)))
        os.close(r)
    finally:
        sp.close()


def test_stop_a_worker_whose_lease_lapsed_answers_no_leader_instead_of_from_its_cache():
    """Its processes are dead and what it knows of others' may be stale by as long: it
    says "no leader" at once (neither a guess nor a forward that hangs) until a leader
    answers it again. Before its first welcome, a lapsed lease is no sign of a split."""
    from test_worker import WALL, Clock

    from forsetid import protocol as p
    from forsetid.effects import Reply, ToLeader
    from forsetid.lease import Lease
    from forsetid.worker import Worker

    clock, lease_clock = Clock(), Clock()
    worker = Worker("node1", clock=clock, wall=lambda: WALL, lease=Lease(2.5, lease_clock))
    assert not worker.lease.adrift()
    (early,) = worker.on_client(b"cli", p.Nodes(id=1))
    assert isinstance(early, ToLeader)  # forwarded: answered once welcomed
    worker.on_leader(p.Welcome(id=worker.hello().id, epoch="e1"))
    loc = p.Location("users", "k", "node2", 77)
    worker.on_event(p.Event(seq=1, epoch="e1", kind="started", location=loc))
    get = p.Get(id=2, group="users", key="k")
    assert worker.on_client(b"cli", get) == [Reply(b"cli", p.Found(id=2, location=loc, seq=1, epoch="e1"))]
    (waiting,) = worker.on_client(b"cli", p.Get(id=5, group="users", key="asked-before"))
    assert isinstance(waiting, ToLeader)
    lease_clock.now += 2.5  # no pong answered since: lapsed
    assert worker.lease.adrift()
    clock.now += 1.0  # its next ping: what it forwarded is answered at once, not at the client's timeout
    answers = [e.msg for e in worker.expire() if isinstance(e, Reply)]  # (the early nodes too)
    assert {(m.id, m.kind) for m in answers} == {(1, p.NO_LEADER), (5, p.NO_LEADER)} and worker.forwards == {}
    for request in (get, p.Get(id=2, group="users", key="new"), p.Nodes(id=2)):
        ((reply,),) = [worker.on_client(b"cli", request)]
        assert isinstance(reply, Reply) and reply.msg.kind == p.NO_LEADER, reply
    worker.on_leader(p.Welcome(id=worker.hello().id, epoch="e1"))  # answered again: renewed
    assert not worker.lease.adrift()
    assert isinstance(worker.on_client(b"cli", get)[0], ToLeader)  # (the welcome emptied the cache)


def test_keep_a_worker_that_lost_its_leader_answers_only_its_own_processes_from_its_cache():
    """With "keep", once a worker takes its leader for lost, what its cache knows of
    other nodes' processes is as old as its silence (and in a split out of reach): it
    answers "no leader" for them, and its own live processes from its cache. When the
    leader it rejoins stops its copy of a key as a duplicate, that copy is not named
    again, not even before it has exited."""
    from test_worker import make, started

    from forsetid import protocol as p
    from forsetid.effects import Reply

    worker, clock = make()
    mine, _ = started(worker, key="mine", pid=4242)
    theirs = p.Location("users", "theirs", "node2", 77)
    worker.on_event(p.Event(seq=1, epoch="e1", kind="started", location=theirs))

    def answer(key: str) -> p.Msg:
        (reply,) = worker.on_client(b"cli", p.Find(id=3, group="users", key=key))
        assert isinstance(reply, Reply)
        return reply.msg

    assert answer("theirs").location == theirs and answer("mine").location == mine.location
    clock.now += worker.patience + 0.1
    worker.expire()  # no word for heartbeat x liveness: the leader is lost
    assert answer("theirs").kind == p.NO_LEADER and answer("mine").location == mine.location
    worker.on_leader(p.Welcome(id=worker.hello().id, epoch="e2"))
    worker.on_leader(p.Kill(location=mine.location, reason="conflict"))
    assert worker.cache.get("users", "mine") is None and worker.cache.get("users", "theirs") is None


@pytest.mark.parametrize("partition", ["stop", "keep"])
def test_a_silent_workers_keys_wait_out_its_silence_and_a_start_lost_there_goes_elsewhere(partition):
    """With "stop", a worker silent for longer than its lease can hold (heartbeat x
    liveness - heartbeat/2) is down at once: its fork server has killed all it ran and
    starts nothing, so no answer names its processes any more. Their keys, and a start
    under way there, are placed on another worker only once the silence has lasted
    heartbeat x liveness (the lease's margin is for the kill and the clocks): a get
    waits until then, and so does a restart. With "keep" the worker is down at heartbeat
    x liveness, and its start fails (it may still run there)."""
    from test_leader import CLIENT, Leader, answer, events, get, hello, loc, peer, replies, spawn_of

    from forsetid import protocol as p

    now = [0.0]
    calls = {"users": p.Call(command=["sleep", "600"]), "always": p.Call(command=["sleep", "600"], restart="always")}
    leader = Leader(calls, heartbeat=1.0, liveness=3, clock=lambda: 1.0, monotonic=lambda: now[0], partition=partition)
    ran, kept = loc("node1", "r"), loc("node1", "a", group="always")
    hello(leader, "node1", processes=[ran, kept])
    hello(leader, "node2", processes=[loc("node2", "x"), loc("node2", "y")])
    node, _ = spawn_of(get(leader, "k", id=7))
    assert node == "node1"
    now[0] = 2.0
    leader.handle(peer("node2"), p.Ping())
    now[0] = 2.6  # node1 silent 2.6 s: longer than its lease (2.5 s) could hold
    out = leader.expire()
    if partition == "keep":
        assert out == [] and leader.next_deadline() == 3.0
        now[0] = 3.5
        (err,) = replies(leader.expire())
        assert err.kind == p.SPAWN_FAILED and err.id == 7 and "node node1 went down" in err.message
        return
    assert {(e.location.key, e.kind, e.reason) for e in events(out)} == {
        (ran.key, "exited", "node-down"),
        (kept.key, "exited", "node-down"),
    }
    assert replies(out) == [] and not [m for _, m in out if isinstance(m, p.Spawn)]  # nothing placed yet
    assert replies(leader.handle(CLIENT, p.Find(id=8, group="users", key="r")))[0].location is None
    assert replies(get(leader, "r", id=9)) == []  # waits for the end of the fence
    assert leader.next_deadline() == 3.0
    now[0] = 3.0  # node1 silent for heartbeat x liveness: its keys go elsewhere
    out = leader.expire()
    spawns = sorted((m.key, to) for to, m in out if isinstance(m, p.Spawn))
    assert spawns == [("a", peer("node2")), ("k", peer("node2")), ("r", peer("node2"))]
    again, started = answer(leader, [(to, m) for to, m in out if isinstance(m, p.Spawn) and m.key == "k"])
    assert replies(again) == [p.Found(id=7, location=started, seq=leader.events.seq, epoch=leader.epoch)]
    assert CLIENT not in {to for to, m in out if isinstance(m, p.Error)}


def test_a_start_lost_with_a_dead_daemon_goes_elsewhere_and_fails_when_none_can_take_it():
    from test_leader import Leader, answer, get, hello, pairs, replies, spawn_of

    from forsetid import protocol as p

    leader = Leader({"users": p.Call(command=["sleep", "600"])})
    hello(leader, "node1")
    hello(leader, "node2")
    assert spawn_of(get(leader, "k", id=7))[0] == "node1"
    out = pairs(leader.node_down("node1", "its connection closed", dead=True))
    _, loc = answer(leader, out)
    assert loc.node == "node2"
    assert spawn_of(get(leader, "j", id=9))[0] == "node2"
    (err,) = replies(pairs(leader.node_down("node2", "its connection closed", dead=True)))
    assert err.kind == p.SPAWN_FAILED and err.id == 9 and "node node2 went down" in err.message  # none left
