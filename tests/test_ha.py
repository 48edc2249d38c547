"""A highly available leader on a real etcd (SPEC section 7, guarantee 9): candidates
elected in etcd, failover when the leader is killed, frozen or stopped, nothing lost or
doubled; the candidates' and workers' view of who leads."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from cluster import ROOT, wait_for
from test_cluster import alive

from forsetictl.client import ForsetiError
from forsetictl.localetcd import LocalEtcd

FAST = {"heartbeat": 0.3, "liveness": 4}


@pytest.fixture(scope="module")
def etcd():
    with LocalEtcd() as server:
        yield server


@pytest.fixture
def ha(make_cluster, etcd):
    """``ha(candidates=2, workers=2, **options)``: a cluster of leader candidates on the
    module's etcd, waited for until a worker reaches the leader."""

    def make(candidates: int = 2, workers: int = 2, cluster: dict | None = None, **options):
        return make_cluster(
            workers=workers, candidates=candidates, etcd=etcd.url, cluster={**FAST, **(cluster or {})}, **options
        )

    return make


def ctl(c, *args, at: str = "node1") -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "forsetictl", "--endpoint", c.endpoint(at), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd=ROOT)


def test_one_candidate_leads_the_other_stands_by_and_workers_reach_the_leader(ha):
    c = ha()
    leader = c.wait_leader()
    standby = next(n for n in c.candidate_names if n != leader)
    info = c.client(f"{standby}-leader").info()
    assert info.state == "standby" and info.leader == leader
    loc = c.client("node1").get("sleeper", "k1")
    assert c.client("node2").get("sleeper", "k1") == loc and alive(loc.pid)
    # A standby refuses to decide, naming the leader.
    with pytest.raises(ForsetiError) as refused:
        c.client(f"{standby}-leader").get("sleeper", "k2")
    assert refused.value.kind == "not-leader" and leader in str(refused.value)
    worker = c.client("node1").info()
    assert worker.leader == leader and worker.term > 0 and {s.name for s in worker.candidates} == {"leader1", "leader2"}


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_the_loss_of_the_leader_loses_nothing(ha, how):
    c = ha()
    first = c.wait_leader()
    term = c.client("node1").info().term
    locs = [c.client(f"node{1 + i % 2}").get("sleeper", f"k{i}") for i in range(6)]
    c.kill(first, how)
    second = c.wait_leader(other_than=first)
    # Every worker goes to the new leader, which rebuilds the dictionary from their hellos.
    wait_for(lambda: c.client("node2").info().term > term, timeout=10, what="node2 to join the new leader")
    assert wait_for(lambda: c.client("node1").processes() == sorted(locs, key=lambda x: x.key), timeout=10, what="ls")
    assert [c.client("node2").get("sleeper", f"k{i}") for i in range(6)] == locs  # none doubled
    assert all(alive(loc.pid) for loc in locs)
    fresh = c.client("node2").get("sleeper", "new")  # and new keys start again
    assert alive(fresh.pid) and c.client("node1").get("sleeper", "new") == fresh
    assert second in c.client("node1").info().leader


def test_a_frozen_leader_loses_office_and_changes_nothing_when_it_wakes(ha):
    c = ha()
    first = c.wait_leader()
    loc = c.client("node1").get("sleeper", "before")
    c.kill(first, signal.SIGSTOP)
    try:
        c.wait_leader(other_than=first, timeout=15)
        after = c.client("node1").get("sleeper", "after")
    finally:
        c.kill(first, signal.SIGCONT)
    # Awake, the old leader stands by: it answers not-leader and has started nothing.
    wait_for(
        lambda: c.client(f"{first}-leader").info().state == "standby", timeout=10, what="the old leader to stand by"
    )
    time.sleep(0.5)
    assert c.client("node2").processes() == sorted([loc, after], key=lambda x: x.key)
    assert alive(loc.pid) and alive(after.pid)
