"""A node's name is one live daemon's, with real daemons: a second daemon with a name
that is up exits with status 2 and one line after a bounded wait, leaving the first and
its processes alone; a worker SIGKILLed and restarted at once joins again; one whose
old daemon is frozen joins once the leader takes that one for down, and the old one,
woken, is the one that exits. A daemon cannot take over another's ipc:// endpoint."""

from __future__ import annotations

import signal
import time

import pytest
from cluster import wait_for
from test_cluster import alive

from forsetid.following import name_wait

FAST = {"heartbeat": 0.2, "liveness": 3}  # the leader's silence: 0.6 s
WAIT = name_wait(FAST["heartbeat"], FAST["liveness"])  # 2 s
SLACK = 4.0  # seconds for a daemon's start and a loaded machine
STEADY = {"heartbeat": 0.25, "liveness": 6}  # a silence (1.5 s) that load does not end by mistake


def twin(c, of: str = "node1") -> str:
    """A second daemon named ``of`` (its own config file and client endpoint, as on
    another machine), not started: the name it is known by in ``c``."""
    name = c.add(f"{of}-twin", start=False)
    c.node_names.remove(name)
    config = c.configs[name]
    config.write_text(config.read_text().replace(f'name = "{name}"', f'name = "{of}"'))
    return name


def states(client) -> dict[str, str]:
    return {n.name: n.state for n in client.nodes()}


def test_a_second_live_daemon_with_a_name_that_is_up_exits_2_with_one_line(make_cluster):
    c = make_cluster(workers=2, cluster=STEADY)
    wait = name_wait(STEADY["heartbeat"], STEADY["liveness"])  # 3 s
    leader = c.leader()
    mine = [loc for loc in (leader.get("sleeper", f"t{i}") for i in range(4)) if loc.node == "node1"]
    assert mine
    name = twin(c)
    t0 = time.monotonic()
    assert c.start(name).wait(wait + SLACK) == 2
    took = time.monotonic() - t0
    assert took >= wait, f"{took:.2f} s: it gave up before a restart could have joined"
    log = c.log(name)
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert errors == [line for line in errors if "another live daemon has the name node1" in line] and len(errors) == 1
    assert f"at the leader at {c.cluster['leader']}" in errors[0] and "--name" in errors[0]
    assert log.count("another daemon named node1 is up") == 1  # said once, not at each try
    assert "Traceback" not in log
    # The first daemon and its processes are as they were.
    assert c.procs["node1"].poll() is None and states(leader) == {"node1": "up", "node2": "up"}
    assert all(alive(loc.pid) for loc in mine)
    assert all(c.client("node1").find("sleeper", loc.key) == loc for loc in mine)
    assert "lost the leader" not in c.log("node1") and "is down" not in c.log("leader")


@pytest.mark.slow
@pytest.mark.parametrize("tcp", [False, True], ids=["ipc", "tcp"])
def test_a_worker_sigkilled_and_restarted_at_once_joins_again(make_cluster, tcp):
    c = make_cluster(workers=2, cluster=FAST, tcp=tcp)
    leader = c.leader()
    for n in range(3):
        c.kill("node1", signal.SIGKILL)
        c.procs["node1"].wait(5)
        c.start("node1")  # at once: the leader may not have seen the old connection close yet
        wait_for(lambda n=n: c.log("leader").count("worker node1 restarted") > n, 10, 0.02, "node1 back")
        wait_for(lambda: states(leader)["node1"] == "up", 5, 0.02, "node1 up")
        assert leader.get("sleeper", f"r{n}").pid
    time.sleep(WAIT)  # past the time a clash would have ended it
    assert c.procs["node1"].poll() is None and "another live daemon" not in c.log("node1")


@pytest.mark.slow
def test_a_frozen_daemons_name_goes_to_a_newcomer_and_the_old_one_exits_when_it_wakes(make_cluster):
    """A machine that vanished: its daemon frozen (its connection stays open, so only
    its silence tells). A newcomer of that name joins once the leader has taken the old
    one for down (within the wait); the old one, woken, is refused in its turn and
    exits, taking its processes (reported exited already) with it."""
    c = make_cluster(workers=2, cluster=FAST)
    leader = c.leader()
    old = [loc for loc in (leader.get("sleeper", f"v{i}") for i in range(4)) if loc.node == "node1"]
    name = twin(c)
    c.kill("node1", signal.SIGSTOP)
    try:
        c.start(name)  # (joined within its wait, or it would have exited)
        wait_for(lambda: "node1 joined the leader" in c.log(name), WAIT + SLACK, 0.02, "the newcomer to join")
    finally:
        c.kill("node1", signal.SIGCONT)
    assert c.procs["node1"].wait(WAIT + SLACK) == 2
    assert "another live daemon has the name node1" in c.log("node1")
    assert not any(alive(loc.pid) for loc in old)
    assert c.procs[name].poll() is None and states(leader)["node1"] == "up"
    assert leader.get("sleeper", "after").pid


def test_a_daemon_does_not_take_over_the_ipc_endpoint_another_listens_on(make_cluster):
    c = make_cluster(workers=1, cluster=FAST)
    c.add("copy", start=False)
    c.node_names.remove("copy")
    config = c.configs["copy"]
    config.write_text(config.read_text().replace(c.endpoint("copy"), c.endpoint("node1")))
    assert c.start("copy").wait(10) == 2
    assert f"cannot bind {c.endpoint('node1')}: another process listens there" in c.log("copy")
    assert c.client("node1").get("sleeper", "k").node == "node1"  # node1's endpoint still works
