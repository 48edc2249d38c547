"""What the daemons' logs say, read from real daemons: what each binds and connects to,
a worker going down and coming back, a failed start with its group, key and reason, a
managed process's traceback with its group, key and pid, and an exit nobody asked for."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from cluster import wait_for

from forsetictl import ForsetiError

FAST = {"heartbeat": 0.2, "liveness": 3}


def test_first_lines_say_what_each_daemon_binds_and_connects_to(make_cluster):
    c = make_cluster(workers=1)
    assert f"workers and clients at {c.endpoint('leader')}, events at {c.cluster['events']}" in c.log("leader")
    assert f"worker node1: clients at {c.endpoint('node1')}, leader at {c.endpoint('leader')}" in c.log("node1")
    # (the leader lists it up as it sends the welcome: the worker's word may come a moment later)
    wait_for(lambda: "node1 joined the leader (epoch" in c.log("node1"), 5, 0.02, "the worker's word on its welcome")
    assert "worker node1 joined (0 running, 0 starting" in c.log("leader")


def test_a_worker_going_down_and_coming_back_is_told_once(make_cluster):
    c = make_cluster(workers=2, cluster=FAST)
    c.leader().get("sleeper", "a")  # on node1
    c.kill("node1", signal.SIGKILL)
    c.procs["node1"].wait(5)
    wait_for(lambda: "worker node1 is down" in c.log("leader"), 5, 0.05, "the leader to say node1 is down")
    assert "1 of its processes reported exited" in c.log("leader")
    c.start("node1")
    wait_for(lambda: "worker node1 restarted" in c.log("leader"), 5, 0.05, "the leader to say node1 is back")
    assert c.log("leader").count("worker node1 is down") == 1


def test_a_failed_start_names_group_key_and_reason(make_cluster):
    c = make_cluster(workers=1, calls={"nope": {"command": ["/no/such/program"]}})
    with pytest.raises(ForsetiError):
        c.leader().get("nope", "k1")
    wait_for(lambda: "start of nope/k1 failed: cannot run '/no/such/program'" in c.log("node1"), 5, 0.05, "it")


def test_a_processs_traceback_names_its_group_key_and_pid(make_cluster):
    c = make_cluster(workers=1, calls={"crash": {"entry": "forsetid.examples:fail"}})
    loc = c.leader().get("crash", "k1")
    wait_for(lambda: f"crash/k1 (pid {loc.pid}) raised:" in c.log("node1"), 5, 0.05, "the traceback")
    assert "RuntimeError: k1: failing on purpose" in c.log("node1")


def test_ps_shows_an_entry_process_as_its_group_and_key(make_cluster):
    c = make_cluster(workers=1)
    for key in ("k1", "k2"):  # the first one is the spare's, the second forked while it ran
        loc = c.leader().get("sleeper", key)  # (answered once it has its key: the title follows)
        wait_for(lambda loc=loc, key=key: _cmdline(loc.pid) == f"forseti: sleeper/{key}", 5, 0.01, "its title")
    # The next spare is forked once the last start is registered, and names itself (comm)
    # before it writes its title over its argv: wait for both.
    wait_for(lambda: (spares := c.spares()) and all(_cmdline(pid) == "forseti-spare" for pid in spares), 5, 0.01,
             "the next spare and its title")  # fmt: skip


def _cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().split(b"\0")[0].decode()


def test_an_entry_that_cannot_be_imported_at_start_is_logged_with_group_module_and_path(make_cluster):
    c = make_cluster(workers=1, calls={"broken": {"entry": "no_such_module_here:run"}})
    line = wait_for(lambda: next((ln for ln in c.log("node1").splitlines() if "cannot be imported" in ln), None),
                    5, 0.05, "the import error")  # fmt: skip
    assert "ERROR group broken: entry no_such_module_here:run cannot be imported: ModuleNotFoundError" in line
    assert "(searched: " in line and str(c.dir) not in line.split("(searched: ")[0]


def test_entry_modules_are_imported_from_node_python_path(make_cluster):
    c = make_cluster(workers=1, node={"python_path": ["mods"]}, calls={"mine": {"entry": "my_app_mod:run"}},
                     start=False, wait=False)  # fmt: skip
    (c.dir / "mods").mkdir()
    (c.dir / "mods" / "my_app_mod.py").write_text("import time\n\ndef run(key, *args):\n    time.sleep(3600)\n")
    for name in ("leader", "node1"):
        c.start(name)
    c.wait_up()
    loc = c.leader().get("mine", "k")  # relative to the config file, not the cwd
    wait_for(lambda: loc.pid in c.processes(), 2, 0.01, "it to run (a spare renames itself once it has its key)")
    assert "cannot be imported" not in c.log("node1")


def test_a_group_with_a_log_file_sends_each_keys_output_there(make_cluster):
    calls = {
        "chatty": {"entry": "forsetid.examples:echo", "log": "out/{group}/{key}.log"},
        "shell": {
            "command": ["sh", "-c", 'echo shell "$FORSETI_KEY"; echo oops >&2; exec sleep 600'],
            "log": "out/{key}.log",
        },
    }
    c = make_cluster(workers=1, calls=calls)
    for group, key in (("chatty", "k1"), ("chatty", "k1"), ("shell", "s1")):
        c.leader().get(group, key)
    chatty, shell = c.dir / "out" / "chatty" / "k1.log", c.dir / "out" / "s1.log"  # relative to the config file
    wait_for(lambda: chatty.exists() and "k1: hello from pid" in chatty.read_text(), 5, 0.05, "the entry's output")
    wait_for(lambda: shell.exists() and shell.read_text() == "shell s1\noops\n", 5, 0.05, "the command's output")
    assert "hello from pid" not in c.log("node1")  # not in the daemon's log any more


def test_a_log_file_that_cannot_be_opened_fails_the_start(make_cluster):
    calls = {"nolog": {"entry": "forsetid.examples:sleeper", "log": "/proc/forseti/{key}.log"}}
    c = make_cluster(workers=1, calls=calls)
    with pytest.raises(ForsetiError, match="cannot open its log file /proc/forseti/k1.log"):
        c.leader().get("nolog", "k1")
    assert c.processes() == []


SIGNALLED = {"signalled": {"entry": "apps:until_signalled", "ready": True}}


def _info_lines(log: str, text: str) -> list[str]:
    return [line for line in log.splitlines() if text in line and " INFO " in line]


def test_an_exit_nobody_asked_for_is_told_once_by_its_worker_and_a_stop_is_not(make_cluster):
    c = make_cluster(workers=1, calls=SIGNALLED)
    leader = c.leader()
    killed, failed, stopped = (leader.get(group, key) for group, key in (("sleeper", "a"), ("signalled", "b"),
                                                                          ("sleeper", "c")))  # fmt: skip
    os.kill(killed.pid, signal.SIGKILL)  # from outside
    os.kill(failed.pid, signal.SIGUSR2)  # it exits with code 3
    cli = [sys.executable, "-m", "forsetictl", "--endpoint", c.endpoint("node1"), "stop", "sleeper", "c"]
    assert subprocess.run(cli, capture_output=True, timeout=30).returncode == 0
    a = f"sleeper/a (pid {killed.pid}) on node1 ended: killed by SIGKILL"
    b = f"signalled/b (pid {failed.pid}) on node1 ended: exited with code 3"
    wait_for(lambda: _info_lines(c.log("node1"), a) and _info_lines(c.log("node1"), b), 5, 0.05, "the two lines")
    wait_for(lambda: leader.processes() == [], 5, 0.05, "every exit registered")
    log = c.log("node1")
    assert len(_info_lines(log, a)) == 1 and len(_info_lines(log, b)) == 1
    assert f"(pid {stopped.pid})" not in log and a not in c.log("leader")


@pytest.mark.slow
def test_a_group_that_exits_in_a_loop_is_told_a_few_times_then_counted(make_cluster):
    from forsetid.exit_notes import EVERY, LINES

    c = make_cluster(workers=1, calls=SIGNALLED)
    leader = c.leader()
    locs = [leader.get("signalled", f"k{i}") for i in range(LINES + 7)]
    for loc in locs:
        os.kill(loc.pid, signal.SIGUSR2)
    summary = "and 7 more exits of group signalled in the last"
    wait_for(lambda: summary in c.log("node1"), EVERY + 5, 0.1, "the summary")
    assert len(_info_lines(c.log("node1"), "ended: exited with code 3")) == LINES
