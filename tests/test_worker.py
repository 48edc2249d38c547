"""Unit tests of forsetid.worker.Worker, with a fake clock and no processes."""

import logging
import signal

from forsetid import protocol as p
from forsetid.effects import Dropped, Exit, Note, RefillSpare, Reply, Signal, Start, ToLeader
from forsetid.processes import Proc
from forsetid.worker import Worker

ENTRY = p.Call(entry="pkg.mod:func", start_timeout=5.0, stop_timeout=2.0)
READY = p.Call(command=["server", "{key}"], ready=True, start_timeout=5.0, endpoint="ipc:///run/{group}/{key}.sock")
PLAIN = p.Call(command=["sleep", "600"])
WALL = 1700000000.0


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(**kwargs):
    clock = Clock()
    worker = Worker("node1", clock=clock, wall=lambda: WALL, **kwargs)
    worker.on_leader(p.Welcome(id=worker.hello().id, epoch="e1"))
    return worker, clock


def to_leader(effects):
    return [e.msg for e in effects if isinstance(e, ToLeader) and not isinstance(e.msg, (p.Ping, p.Hello))]


def signals(effects):
    return [(e.pid, e.signum) for e in effects if isinstance(e, Signal)]


def spawn(worker, key="k", call=ENTRY, group="users", spawn_id=50) -> Proc:
    (start,) = worker.on_leader(p.Spawn(id=spawn_id, group=group, key=key, call=call))
    assert isinstance(start, Start)
    return worker.processes.procs[start.token]


def started(worker, key="k", call=ENTRY, pid=4242, group="users", spawn_id=50):
    """A process brought up to ready; returns it and its Spawned message."""
    proc = spawn(worker, key, call, group, spawn_id)
    out = worker.processes.on_spawned(proc.token, pid)
    if not out:
        out = worker.processes.on_ready(proc.token, "R ")
    (msg,) = to_leader(out)
    assert isinstance(msg, p.Spawned)
    return proc, msg


# -- clients --


def test_cache_hit_answers_without_leader():
    worker, _ = make()
    loc = p.Location("users", "k", "node2", 77)
    worker.on_event(p.Event(seq=1, epoch="e1", kind="started", location=loc))
    for req in (p.Get(id=9, group="users", key="k"), p.Find(id=10, group="users", key="k")):
        assert worker.on_client(b"cli", req) == [Reply(b"cli", p.Found(id=req.id, location=loc, seq=1, epoch="e1"))]
    assert worker.forwards == {}


def test_a_cache_behind_the_askers_events_asks_the_leader():
    """A client that has seen an exit event must not hear of that process from a worker
    whose own event stream lags: such a worker forwards instead of answering."""
    worker, _ = make()
    loc = p.Location("users", "k", "node2", 77)
    worker.on_event(p.Event(seq=1, epoch="e1", kind="started", location=loc))
    for seq, epoch, answers in ((0, "", True), (1, "e1", True), (2, "e1", False), (1, "e0", False)):
        (effect,) = worker.on_client(b"cli", p.Find(id=4, group="users", key="k", seq=seq, epoch=epoch))
        assert isinstance(effect, Reply) == answers, (seq, epoch)
        if not answers:
            assert isinstance(effect.msg, p.Find) and (effect.msg.seq, effect.msg.epoch) == (seq, epoch)


def test_miss_is_forwarded_and_reply_routed_back():
    worker, _ = make()
    worker.on_event(p.Tick(seq=0, epoch="e1"))
    (effect,) = worker.on_client(b"cli", p.Get(id=9, group="users", key="k"))
    msg = effect.msg
    assert isinstance(effect, ToLeader) and isinstance(msg, p.Get) and (msg.group, msg.key) == ("users", "k")
    assert msg.id != 9 and msg.id in worker.forwards
    (other,) = worker.on_client(b"cli2", p.Get(id=9, group="users", key="j"))
    assert other.msg.id != msg.id
    loc = p.Location("users", "k", "node2", 77)
    out = worker.on_leader(p.Found(id=msg.id, location=loc, seq=0, epoch="e1"))
    assert out == [Reply(b"cli", p.Found(id=9, location=loc, seq=0, epoch="e1"))]
    assert worker.on_leader(p.Found(id=msg.id, location=loc, seq=0, epoch="e1")) == []  # answered once
    # ... and the location is cached for the next client
    assert worker.on_client(b"cli3", p.Find(id=3, group="users", key="k"))[0].msg.location == loc


def test_forwarded_error_and_other_requests_are_routed_back():
    worker, _ = make()
    (effect,) = worker.on_client(b"cli", p.Nodes(id=4))
    fwd = effect.msg
    assert isinstance(effect, ToLeader) and isinstance(fwd, p.Nodes)
    err = p.Error(id=fwd.id, kind=p.UNKNOWN_GROUP, message="unknown group 'x'")
    assert worker.on_leader(err) == [Reply(b"cli", p.Error(id=4, kind=p.UNKNOWN_GROUP, message="unknown group 'x'"))]


def test_non_request_from_client_is_refused():
    worker, _ = make()
    (reply,) = worker.on_client(b"cli", p.Spawned(id=3, location=p.Location("g", "k", "n", 1)))
    err = reply.msg
    assert (reply.peer, err.id, err.kind) == (b"cli", 3, p.BAD_MESSAGE) and "'spawned'" in err.message


# -- starting --


def test_spawn_effect_and_env():
    worker, _ = make()
    proc = spawn(worker, "alice", READY, spawn_id=7)
    assert (proc.group, proc.key, proc.spawn_id, proc.call) == ("users", "alice", 7, READY)
    env = worker.processes.env(proc)
    assert env["FORSETI_GROUP"] == "users" and env["FORSETI_KEY"] == "alice" and env["FORSETI_NODE"] == "node1"
    assert env["FORSETI_ENDPOINT"] == "ipc:///run/users/alice.sock"
    assert "FORSETI_ENDPOINT" not in worker.processes.env(spawn(worker, "bob", ENTRY))


def test_ready_line_with_endpoint():
    worker, _ = make()
    proc = spawn(worker, "k", READY, spawn_id=7)
    assert worker.processes.on_spawned(proc.token, 4242) == []  # not ready yet
    (msg,) = to_leader(worker.processes.on_ready(proc.token, "R tcp://10.0.0.1:5555"))
    assert msg == p.Spawned(id=7, location=p.Location("users", "k", "node1", 4242, "tcp://10.0.0.1:5555", WALL))
    assert worker.cache.get("users", "k") == msg.location


def test_ready_line_without_endpoint_uses_template():
    worker, _ = make()
    _, msg = started(worker, "k", READY)
    assert msg.location.endpoint == "ipc:///run/users/k.sock"
    _, msg = started(worker, "j", ENTRY, pid=4243, spawn_id=51)
    assert msg.location.endpoint is None and msg.location.pid == 4243


def test_ready_before_spawned_answer():
    worker, _ = make()
    proc = spawn(worker, "k", ENTRY)
    assert worker.processes.on_ready(proc.token, "R ") == []
    (msg,) = to_leader(worker.processes.on_spawned(proc.token, 4242))
    assert isinstance(msg, p.Spawned) and msg.location.pid == 4242


def test_an_entry_a_spare_had_resolved_counts_as_started_when_handed_over():
    worker, _ = make()
    proc = spawn(worker, "k", ENTRY, spawn_id=10)
    (msg,) = to_leader(worker.processes.on_spawned(proc.token, 4242, running=True))
    assert msg == p.Spawned(id=10, location=p.Location("users", "k", "node1", 4242, None, WALL))
    ready = spawn(worker, "r", READY, spawn_id=11)  # one that signals readiness still must
    assert worker.processes.on_spawned(ready.token, 4243, running=True) == []


def test_command_without_ready_counts_on_spawned():
    worker, _ = make()
    proc = spawn(worker, "k", PLAIN, spawn_id=8)
    (msg,) = to_leader(worker.processes.on_spawned(proc.token, 4242))
    assert msg == p.Spawned(id=8, location=p.Location("users", "k", "node1", 4242, None, WALL))


def test_error_line_fails_and_kills():
    worker, _ = make()
    proc = spawn(worker, "k", ENTRY, spawn_id=9)
    worker.processes.on_spawned(proc.token, 4242)
    out = worker.processes.on_ready(proc.token, "E cannot load entry 'pkg.mod:func': ImportError")
    assert to_leader(out) == [
        p.SpawnFailed(id=9, group="users", key="k", reason="cannot load entry 'pkg.mod:func': ImportError")
    ]
    assert signals(out) == [(4242, signal.SIGKILL)]
    assert worker.processes.on_exit(4242, -9) == []  # its exit is expected and reported to no one
    assert worker.idle and worker.cache.get("users", "k") is None


def test_spawn_failed_from_fork_server():
    worker, _ = make()
    proc = spawn(worker, "k", PLAIN, spawn_id=9)
    out = worker.processes.on_spawn_failed(proc.token, "command not found: sleep")
    assert out == [
        ToLeader(p.SpawnFailed(id=9, group="users", key="k", reason="command not found: sleep")),
        Note(logging.WARNING, "start of users/k failed: command not found: sleep"),  # named in the log too
    ]
    assert worker.idle
    spawn(worker, "k", PLAIN)  # may be tried again


def test_start_timeout():
    worker, clock = make()
    proc = spawn(worker, "k", READY, spawn_id=11)
    worker.processes.on_spawned(proc.token, 4242)
    clock.now += 4.9
    assert to_leader(worker.expire()) == [] and signals(worker.expire()) == []
    clock.now += 0.2
    out = worker.expire()
    (failed,) = to_leader(out)
    assert isinstance(failed, p.SpawnFailed) and failed.id == 11 and "start_timeout" in failed.reason
    assert signals(out) == [(4242, signal.SIGKILL)]
    assert worker.processes.on_ready(proc.token, "R ") == []  # too late
    assert worker.processes.on_exit(4242, -9) == [] and worker.idle


def test_start_timeout_before_fork_server_answers():
    worker, clock = make()
    proc = spawn(worker, "k", ENTRY)
    clock.now += 6
    assert isinstance(to_leader(worker.expire())[0], p.SpawnFailed)
    assert worker.processes.on_spawned(proc.token, 4242) == [Signal(4242, signal.SIGKILL)]


def test_exit_before_ready_is_a_start_failure():
    worker, _ = make()
    proc = spawn(worker, "k", READY, spawn_id=12)
    worker.processes.on_spawned(proc.token, 4242)
    (failed,) = to_leader(worker.processes.on_exit(4242, 3))
    assert failed.id == 12 and "exited with code 3" in failed.reason and "before it was ready" in failed.reason
    proc = spawn(worker, "j", READY, spawn_id=13)
    worker.processes.on_spawned(proc.token, 4243)
    (failed,) = to_leader(worker.processes.on_exit(4243, -11))
    assert "killed by SIGSEGV" in failed.reason
    assert worker.idle


# -- exits and stopping --


def test_exit_after_start():
    worker, _ = make()
    _, msg = started(worker, "k", pid=4242)
    out = worker.processes.on_exit(4242, 0)
    assert to_leader(out) == [p.Exited(location=msg.location, exit_code=0, signal=None, reason="exit", at=WALL)]
    assert worker.cache.get("users", "k") is None and worker.idle
    assert worker.processes.on_exit(4242, 0) == []  # never reported twice


def test_exit_by_signal():
    worker, _ = make()
    _, msg = started(worker, "k", pid=4242)
    (exited,) = to_leader(worker.processes.on_exit(4242, -signal.SIGSEGV))
    assert (exited.exit_code, exited.signal, exited.reason) == (None, signal.SIGSEGV, "exit")


def notes(effects):
    return [e.text for e in effects if isinstance(e, Note)]


def test_an_exit_nobody_asked_for_is_said_once_with_group_key_pid_and_code_or_signal():
    worker, _ = make()
    started(worker, "a", pid=1001, spawn_id=1)
    started(worker, "b", pid=1002, spawn_id=2)
    _, c = started(worker, "c", pid=1003, spawn_id=3)
    assert notes(worker.processes.on_exit(1001, -signal.SIGKILL)) == [
        "users/a (pid 1001) on node1 ended: killed by SIGKILL"
    ]
    assert notes(worker.processes.on_exit(1002, 3)) == ["users/b (pid 1002) on node1 ended: exited with code 3"]
    worker.on_leader(p.Kill(location=c.location, reason="stopped"))  # asked for: not said
    assert notes(worker.processes.on_exit(1003, -signal.SIGTERM)) == []
    assert worker.processes.on_exit(1001, -signal.SIGKILL) == []  # (once)


def test_a_group_exiting_in_a_loop_is_said_at_most_five_times_in_ten_seconds_then_counted():
    worker, clock = make(max_retries=1000)
    said = []
    for i in range(12):
        started(worker, f"k{i}", pid=2000 + i, spawn_id=10 + i)
        said += notes(worker.processes.on_exit(2000 + i, 1))
        clock.now += 0.5
    started(worker, "k", pid=3000, group="jobs", spawn_id=99)
    said += notes(worker.processes.on_exit(3000, 0))  # another group's: counted apart
    assert said == [f"users/k{i} (pid {2000 + i}) on node1 ended: exited with code 1" for i in range(5)] + [
        "jobs/k (pid 3000) on node1 ended: exited with code 0"
    ]
    clock.now = 110.0  # ten seconds after the first
    summary = notes(worker.timers.expire())  # (the leader is silent here: its timers alone)
    assert summary == ["and 7 more exits of group users in the last 10 s"]
    started(worker, "again", pid=4000, spawn_id=100)
    assert len(notes(worker.processes.on_exit(4000, 1))) == 1  # a new interval
    clock.now += 10.0
    assert notes(worker.timers.expire()) == []  # nothing held back in it: no summary


def test_kill_terms_then_kills_after_stop_timeout():
    worker, clock = make()
    _, msg = started(worker, "k", pid=4242)
    out = worker.on_leader(p.Kill(location=msg.location, reason="stopped"))
    assert out == [Signal(4242, signal.SIGTERM)]
    assert worker.on_leader(p.Kill(location=msg.location)) == []  # already stopping
    clock.now += 1.9
    assert signals(worker.expire()) == []
    clock.now += 0.2
    assert signals(worker.expire()) == [(4242, signal.SIGKILL)]
    (exited,) = to_leader(worker.processes.on_exit(4242, -9))
    assert (exited.location, exited.reason, exited.signal) == (msg.location, "stopped", 9)


def test_a_drains_kill_is_told_apart_from_a_users_in_the_exit():
    """Both say reason "stopped"; the leader restarts only a drained one (restarts.py)."""
    worker, _ = make()
    _, a = started(worker, "a", pid=1001, spawn_id=1)
    _, b = started(worker, "b", pid=1002, spawn_id=2)
    assert signals(worker.on_leader(p.Kill(location=a.location, reason="stopped", drain=True))) == [(1001, 15)]
    assert signals(worker.on_leader(p.Kill(location=b.location, reason="stopped"))) == [(1002, 15)]
    exits = to_leader(worker.processes.on_exit(1001, -15) + worker.processes.on_exit(1002, -15))
    assert [(e.location, e.reason, e.drain) for e in exits] == [
        (a.location, "stopped", True),
        (b.location, "stopped", False),
    ]
    gone = p.Location("users", "absent", "node1", 1)
    (echo,) = to_leader(worker.on_leader(p.Kill(location=gone, drain=True)))
    assert (echo.reason, echo.drain) == ("stopped", True)


def test_kill_of_unknown_pid_answers_at_once():
    worker, _ = make()
    _, msg = started(worker, "k", pid=4242)
    other = p.Location("users", "k", "node1", 999)
    out = worker.on_leader(p.Kill(location=other, reason="conflict"))
    assert out == [ToLeader(p.Exited(location=other, exit_code=None, signal=None, reason="conflict", at=WALL))]
    gone = p.Location("users", "absent", "node1", 1)
    assert to_leader(worker.on_leader(p.Kill(location=gone)))[0].reason == "stopped"
    assert worker.processes.by_pid[4242].stopping is None


def test_shutdown_stops_everything():
    worker, _ = make()
    _, a = started(worker, "a", pid=1001, spawn_id=1)
    _, b = started(worker, "b", pid=1002, spawn_id=2)
    starting = spawn(worker, "c", READY, spawn_id=3)
    worker.processes.on_spawned(starting.token, 1003)
    out = worker.processes.shutdown()
    assert sorted(signals(out)) == [(1001, signal.SIGTERM), (1002, signal.SIGTERM), (1003, signal.SIGKILL)]
    (failed,) = to_leader(out)
    assert failed.id == 3 and "shutting down" in failed.reason
    assert not worker.idle
    exits = to_leader(
        worker.processes.on_exit(1001, -15) + worker.processes.on_exit(1002, 0) + worker.processes.on_exit(1003, -9)
    )
    assert [(e.location, e.reason) for e in exits] == [(a.location, "shutdown"), (b.location, "shutdown")]
    assert worker.idle
    (refused,) = to_leader(worker.on_leader(p.Spawn(id=4, group="users", key="d", call=ENTRY)))
    assert isinstance(refused, p.SpawnFailed) and "shutting down" in refused.reason


def test_spawn_of_a_running_key_answers_with_it():
    worker, _ = make()
    _, msg = started(worker, "k", pid=4242)
    assert worker.on_leader(p.Spawn(id=60, group="users", key="k", call=ENTRY)) == [
        ToLeader(p.Spawned(id=60, location=msg.location))
    ]


def test_hello_reports_running_processes():
    worker, _ = make(capacity=3)
    _, msg = started(worker, "k", pid=4242)
    spawn(worker, "j", READY, spawn_id=51)
    hello = worker.hello()
    assert (hello.node, hello.capacity, hello.processes) == ("node1", 3, [msg.location])
    assert hello.calls["users"] == ENTRY


def test_crash_loop_suspends_group():
    worker, _ = make(max_retries=2, max_time=10.0)
    for i in range(2):
        started(worker, f"k{i}", pid=100 + i, spawn_id=i)
        assert not any(isinstance(m, p.Suspend) for m in to_leader(worker.processes.on_exit(100 + i, 1)))
    started(worker, "k2", pid=102, spawn_id=2)
    assert p.Suspend(group="users", seconds=10.0) in to_leader(worker.processes.on_exit(102, 1))
    (refused,) = to_leader(worker.on_leader(p.Spawn(id=9, group="users", key="x", call=ENTRY)))
    assert isinstance(refused, p.SpawnFailed) and "suspended" in refused.reason


def test_a_repeated_spawn_of_a_starting_key_is_adopted():
    w, clock = make()
    (start,) = w.on_leader(p.Spawn(id=1, group="g", key="k", call=p.Call(entry="m:f")))
    assert w.on_leader(p.Spawn(id=2, group="g", key="k", call=p.Call(entry="m:f"))) == []
    w.processes.on_spawned(start.token, 4242)
    (effect,) = w.processes.on_ready(start.token, "R ")
    assert isinstance(effect, ToLeader) and isinstance(effect.msg, p.Spawned) and effect.msg.id == 2


# -- what the decisions say that the loop used to decide --


def test_a_start_carries_its_argv_args_and_environment():
    worker, _ = make()
    call = p.Call(
        command=["serve", "--key", "{key}", "{group}@{node}"], args=["-v", 2], ready=True, endpoint="ipc:///run/{key}"
    )
    (start,) = worker.on_leader(p.Spawn(id=5, group="users", key="alice", call=call, args=["x"]))
    assert isinstance(start, Start)
    assert (start.entry, start.command, start.args, start.key) == (
        None,
        ["serve", "--key", "alice", "users@node1"],
        ["-v", 2, "x"],
        "alice",
    )
    assert start.env == {
        "FORSETI_GROUP": "users",
        "FORSETI_KEY": "alice",
        "FORSETI_NODE": "node1",
        "FORSETI_ENDPOINT": "ipc:///run/alice",
        "FORSETI_READY_FD": "",
    }
    (entry,) = worker.on_leader(p.Spawn(id=6, group="users", key="bob", call=ENTRY))
    assert (entry.entry, entry.command, entry.args) == ("pkg.mod:func", None, [])


def test_a_spare_is_refilled_once_one_of_our_starts_is_registered():
    worker, _ = make()
    mine = p.Location("users", "k", "node1", 77)
    theirs = p.Location("users", "j", "node2", 78)
    assert worker.on_event(p.Event(seq=1, epoch="e1", kind="started", location=theirs)) == []
    assert worker.on_event(p.Event(seq=2, epoch="e1", kind="started", location=mine)) == [RefillSpare()]
    assert worker.on_event(p.Event(seq=3, epoch="e1", kind="exited", location=mine)) == []


def test_info_is_answered_by_the_worker():
    about = p.InfoReply(node="node1", role="both", events="ipc:///x/events", silence=1.5)
    worker = Worker("node1", about=about)
    assert worker.on_client(b"cli", p.Info(id=7)) == [
        Reply(b"cli", p.InfoReply(id=7, node="node1", role="both", events="ipc:///x/events", silence=1.5))
    ]


def test_hello_lists_the_starts_under_way_with_the_id_they_answer():
    worker, _ = make()
    _, running = started(worker, "k", pid=4242, spawn_id=50)
    spawn(worker, "j", READY, spawn_id=51)
    failing = spawn(worker, "f", READY, spawn_id=52)
    worker.processes.on_spawn_failed(failing.token, "no such program")
    hello = worker.hello()
    assert hello.processes == [running.location]
    assert hello.starting == [p.Starting(51, "users", "j")]
    assert hello.welcomed_by == "e1"  # the leader that welcomed it
    assert Worker("node9").hello().welcomed_by == ""


def test_a_key_cannot_put_its_log_file_outside_the_groups_folder():
    worker, _ = make()
    call = p.Call(entry="pkg.mod:func", log="/var/log/forseti/{group}/{key}.log")
    for key, name in (("../../etc/x", "%2E.%2F..%2Fetc%2Fx"), ("a/b", "a%2Fb"), ("..", "%2E."), ("50%", "50%25")):
        (start,) = worker.on_leader(p.Spawn(id=1, group="users", key=key, call=call))
        assert start.log == f"/var/log/forseti/users/{name}.log"
    endpoint = p.Call(entry="pkg.mod:func", endpoint="ipc:///run/forseti/{group}/{key}.sock")
    (start,) = worker.on_leader(p.Spawn(id=2, group="users", key="../../../etc/x y", call=endpoint))
    assert start.env["FORSETI_ENDPOINT"] == "ipc:///run/forseti/users/%2E.%2F..%2F..%2Fetc%2Fx%20y.sock"
    assert start.env["FORSETI_KEY"] == "../../../etc/x y"  # the key itself, unchanged


def test_a_clean_shutdown_tells_the_leader_first():
    worker, _ = make()
    started(worker, "a", pid=1001)
    out = worker.shutdown()
    assert out[0] == ToLeader(p.Leaving()) and signals(out) == [(1001, signal.SIGTERM)]


def test_a_client_request_past_its_deadline_is_dropped_and_not_sent_again_to_a_new_leader():
    worker, _ = make()
    wall = [1000.0]
    worker.wall = lambda: wall[0]
    (dropped,) = worker.on_client(b"cli", p.Get(id=1, group="users", key="k", deadline=998.0))
    assert isinstance(dropped, Dropped)  # not answered: logged (rate-limited), and no more
    (sent,) = worker.on_client(b"cli", p.Get(id=2, group="users", key="j", deadline=1001.0))
    assert isinstance(sent, ToLeader) and sent.msg.deadline == 1001.0
    wall[0] = 1002.0  # its caller gave up; then the worker goes to another leader
    assert not any(isinstance(e, ToLeader) and isinstance(e.msg, p.Get) for e in worker._switch(0, "test"))


# -- a hello refused --


def refuse(worker, kind, message="no"):
    return worker.on_leader(p.Error(id=worker.hello().id, kind=kind, message=message))


def test_a_name_taken_is_tried_again_then_ends_the_daemon_with_one_line():
    clock = Clock()
    worker = Worker("node1", clock=clock, heartbeat=0.5, liveness=4, leaders=[("", "tcp://10.0.0.1:7070")])
    assert worker.name_wait == 0.5 * (4 + 2) + 1.0  # the leader's silence, a heartbeat to see it, one to say hello
    (note,) = refuse(worker, p.NAME_TAKEN)
    assert note.level == logging.WARNING and "another daemon named node1 is up; trying again for 4 s" in note.text
    for _ in range(7):  # a hello at each heartbeat, each refused: nothing more said
        clock.now += 0.5
        assert refuse(worker, p.NAME_TAKEN) == []
    clock.now += 0.5
    (end,) = refuse(worker, p.NAME_TAKEN)
    assert isinstance(end, Exit) and end.status == 2
    assert end.why.startswith("node1: another live daemon has the name node1 at the leader at tcp://10.0.0.1:7070")
    assert "refused for 4.0 s" in end.why and "\n" not in end.why


def test_a_welcome_within_the_wait_ends_it_and_a_later_clash_waits_afresh():
    worker, clock = make(heartbeat=1.0, liveness=3)  # (welcomed once)
    refuse(worker, p.NAME_TAKEN)
    clock.now += 3.0  # the old daemon is taken for gone: a welcome
    worker.on_leader(p.Welcome(id=worker.hello().id, epoch="e1"))
    clock.now += 10.0
    (note,) = refuse(worker, p.NAME_TAKEN)  # (a woken old daemon whose name went to another)
    assert isinstance(note, Note)
    clock.now += worker.name_wait
    assert isinstance(refuse(worker, p.NAME_TAKEN)[0], Exit)


def test_a_node_not_allowed_ends_the_daemon_at_once_naming_the_candidate():
    worker = Worker("node1", leaders=[("leader2", "tcp://10.0.0.2:7070")])
    (end,) = refuse(worker, p.NOT_ALLOWED, "node 'node1' is not in cluster.nodes")
    why = "the leader leader2 at tcp://10.0.0.2:7070 refused this node: node 'node1' is not in cluster.nodes"
    assert end == Exit(2, why)
    (note,) = refuse(worker, p.BAD_MESSAGE)  # anything else: said, not fatal
    assert isinstance(note, Note)


def test_a_welcome_empties_the_cache_but_for_the_workers_own_processes():
    """A welcome follows a silence, a reconnect or a new leader: what the events said
    before may have changed unheard (events stuck on a connection in TCP backoff)."""
    worker, _ = make()
    proc, _ = started(worker, key="mine", pid=4242)
    other = p.Location("users", "theirs", "node2", 77)
    worker.on_event(p.Event(seq=1, epoch="e1", kind="started", location=other))
    assert worker.cache.get("users", "theirs") == other
    worker.on_leader(p.Welcome(id=worker.hello().id, epoch="e1"))  # the same leader, after a silence
    assert worker.cache.get("users", "theirs") is None
    assert worker.cache.get("users", "mine") == proc.location
    (forwarded,) = worker.on_client(b"cli", p.Get(id=3, group="users", key="theirs"))
    assert isinstance(forwarded, ToLeader)  # the leader says where it runs now
