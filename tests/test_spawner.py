"""The fork server and its spares, driven directly (no daemon): real forks, real kills."""

import os
import select
import signal
import time

import pytest
from cluster import wait_for

from forsetid.spawner import Spawner

SLEEPER = "forsetid.examples:sleeper"
SLOW_READY = "forsetid.examples:slow_ready"  # signals readiness itself


@pytest.fixture
def spawner():
    sp = Spawner([SLEEPER, SLOW_READY])
    yield sp
    sp.close()  # the fork server kills every process it started, spares included


def reports(sp: Spawner, until, timeout: float = 5.0) -> list:
    """Reports from the fork server until ``until(all so far)`` holds."""
    got: list = []
    deadline = time.monotonic() + timeout
    while not until(got):
        left = deadline - time.monotonic()
        assert left > 0, f"timed out; reports so far: {got}"
        select.select([sp], [], [], left)
        got += sp.receive()
    return got


def spawned_pid(sp: Spawner, token: int) -> int:
    """The pid that the fork server reports for the start ``token``."""
    got = reports(sp, lambda got: any(r[:2] == ["spawned", token] for r in got))
    return next(r[2] for r in got if r[:2] == ["spawned", token])


def spare_of(sp: Spawner) -> int:
    reports(sp, lambda _: sp.spares)
    return next(iter(sp.spares))


def ready_line(fd: int, timeout: float = 5.0) -> bytes:
    assert select.select([fd], [], [], timeout)[0], "no ready line"
    line = os.read(fd, 4096)
    os.close(fd)
    return line


def dead(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def test_an_entry_start_takes_the_spare_at_once_and_the_next_spare_follows(spawner):
    spare = spare_of(spawner)
    fd, pid = spawner.spawn(1, SLOW_READY, None, [0], {"FORSETI_KEY": "a", "FORSETI_READY_FD": ""}, "a")
    assert pid == spare  # known at once: no "spawned" report to wait for
    assert ready_line(fd) == b"R \n"
    assert not spawner.spares and not spawner.asked  # the daemon asks when the start is registered
    spawner.refill()
    following = spare_of(spawner)
    assert following != pid and not dead(pid)
    spawner.signal(pid, signal.SIGKILL)
    got = reports(spawner, lambda got: any(r[:2] == ["exited", pid] for r in got))
    assert ["exited", pid, -signal.SIGKILL] in got


def test_an_entry_the_fork_server_resolved_is_handed_over_without_a_ready_pipe(spawner):
    spare = spare_of(spawner)  # (the fork server's first word, before any spare, names what it resolved)
    assert spawner.preloaded == {SLEEPER, SLOW_READY}
    fd, pid = spawner.spawn(2, SLEEPER, None, [], {"FORSETI_KEY": "n"}, "n")
    assert (fd, pid) == (None, spare)  # started: nothing more to wait for
    assert not dead(pid)
    spawner.signal(pid, signal.SIGTERM)
    got = reports(spawner, lambda got: any(r[:2] == ["exited", pid] for r in got))
    assert ["exited", pid, -signal.SIGTERM] in got


def test_a_spare_given_an_entry_it_cannot_load_says_so_on_its_ready_pipe():
    sp = Spawner([SLEEPER, "forsetid.examples:no_such_function"])
    try:
        spare_of(sp)
        assert sp.preloaded == {SLEEPER}
        fd, pid = sp.spawn(5, "forsetid.examples:no_such_function", None, [], {}, "x")
        assert pid is not None and fd is not None  # not resolved ahead: the pipe tells
        assert ready_line(fd).startswith(b"E cannot load entry")
    finally:
        sp.close()


def test_a_spare_that_died_waiting_is_passed_over_and_the_fork_server_starts_it(spawner):
    spare = spare_of(spawner)
    os.kill(spare, signal.SIGKILL)
    wait_for(lambda: dead(spare), what="the spare dead")  # (its exit not reported yet: the daemon still holds it)
    fd, pid = spawner.spawn(7, SLEEPER, None, [], {"FORSETI_KEY": "b"}, "b")
    assert pid is None  # it went the slow way
    assert spawned_pid(spawner, 7) != spare
    assert ready_line(fd) == b"R \n"


def test_command_starts_never_take_a_spare(spawner):
    spare = spare_of(spawner)
    fd, pid = spawner.spawn(3, None, ["sleep", "30"], [], {}, "c")
    assert pid is None
    assert spawned_pid(spawner, 3) != spare
    assert spawner.spares == {spare: spawner.spares[spare]}
    os.close(fd)


def test_a_node_without_entry_groups_keeps_no_spare():
    sp = Spawner([])
    fd = None
    try:
        fd, _ = sp.spawn(4, None, ["sleep", "30"], [], {}, "c")
        spawned_pid(sp, 4)
        sp.refill()  # (the daemon calls it on every start of its node that is registered)
        assert not sp.asked and not sp.spares
    finally:
        if fd is not None:
            os.close(fd)
        sp.close()  # (the fork server kills what it started)


def test_a_start_too_large_to_send_is_refused_and_the_channel_goes_on(spawner):
    spare_of(spawner)
    with pytest.raises(ValueError, match="bytes"):
        spawner.spawn(6, SLEEPER, None, list(range(50_000)), {}, "huge")
    assert spawner.spares  # the spare is still there...
    fd, _ = spawner.spawn(8, None, ["sleep", "30"], [], {}, "small")
    spawner.signal(spawned_pid(spawner, 8), signal.SIGKILL)  # ...and so is the channel
    os.close(fd)


def test_the_fork_server_outlives_a_stop_signal_that_a_thread_of_an_entry_module_could_take():
    sp = Spawner(["threaded:run"])
    try:
        spare_of(sp)  # preloaded: the module's thread runs in the fork server
        os.kill(sp.pid, signal.SIGTERM)
        fd, _ = sp.spawn(9, None, ["sleep", "30"], [], {}, "after")
        sp.signal(spawned_pid(sp, 9), signal.SIGKILL)  # it still serves
        assert sp.proc.poll() is None
        os.close(fd)
    finally:
        sp.close()


def test_the_fork_server_leaves_no_zombie_behind():
    sp = Spawner([SLEEPER])
    try:
        spare = spare_of(sp)
        fd, _ = sp.spawn(10, None, ["sleep", "30"], [], {}, "z")
        started = spawned_pid(sp, 10)
        os.close(fd)
    finally:
        sp.close()  # it kills what it started and reaps it before it exits
    assert not os.path.exists(f"/proc/{spare}") and not os.path.exists(f"/proc/{started}")


def test_command_starts_overlap_and_each_is_told_before_its_exit(spawner):
    # The fork server does not wait for one command's exec before it forks the next:
    # each is told "spawned" (or "failed") when its exec is done, and before its exit.
    fds = [spawner.spawn(20 + i, None, ["true"] if i % 2 else ["no-such-command-here"], [], {}, f"t{i}")[0]
           for i in range(12)]  # fmt: skip
    got = reports(spawner, lambda got: sum(r[0] in ("spawned", "failed") for r in got) == 12)
    pids = {r[2] for r in got if r[0] == "spawned"}
    assert sorted(r[1] for r in got if r[0] == "failed") == list(range(20, 32, 2))  # (in any order)
    assert all("cannot run 'no-such-command-here'" in r[2] for r in got if r[0] == "failed")
    assert len(pids) == 6
    got += reports(spawner, lambda more: pids <= {r[1] for r in got + more if r[0] == "exited"})
    for pid in pids:  # ("true" exits at once: its exit may be reaped before its exec was told)
        spawned = next(i for i, r in enumerate(got) if r[0] == "spawned" and r[2] == pid)
        exited = next(i for i, r in enumerate(got) if r[0] == "exited" and r[1] == pid)
        assert spawned < exited
    for fd in fds:
        os.close(fd)
