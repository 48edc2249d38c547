"""What the leader believes of a worker's reports, with real daemons: a start under way
survives a leader restart without a second process (guarantee 7), and a worker's
started, exited and hello reports change nothing registered on another node
(guarantee 8), which a rogue worker made of a bare DEALER tries to do."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time

import pytest
import zmq
from cluster import wait_for
from test_cluster import alive

from forsetictl import Client
from forsetid import protocol as p

FAST = {"heartbeat": 0.2, "liveness": 3}  # a silent peer is dead after 0.6 s

# A command, not an entry: an exec'd process has FORSETI_KEY in /proc/PID/environ (an
# entry process only sets os.environ), so every process of a key can be told apart.
# It takes DELAY s to be ready: long enough for the leader to die and come back first.
DELAY = 4.0
SLOW = {
    "command": [sys.executable, "-c", "import sys, time, forsetictl; time.sleep(float(sys.argv[1])); "
                "forsetictl.ready(); time.sleep(3600)", str(DELAY)],
    "ready": True,
    "start_timeout": 20.0,
}  # fmt: skip


# -- guarantee 7: a start under way is never started twice --


def pids_of_key(c, key: str) -> set[int]:
    """Live processes of this cluster whose environment says FORSETI_KEY=key."""
    mark = f"FORSETI_TEST_CLUSTER={c.tag}".encode()
    want = f"FORSETI_KEY={key}".encode()
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if mark in env and want in env and alive(int(entry)):
            found.add(int(entry))
    return found


class KeyWatch:
    """Samples the live processes of one key in a thread, from start to exit, and keeps
    the largest set seen: a duplicate that lives even briefly shows up there."""

    def __init__(self, c, key: str) -> None:
        self.c, self.key = c, key
        self.most: set[int] = set()
        self.nodes: dict[int, str | None] = {}  # pid -> its node, read when first seen
        self.samples = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._done.is_set():
            seen = pids_of_key(self.c, self.key)
            self.samples += 1
            for pid in seen - self.nodes.keys():
                self.nodes[pid] = node_of(pid)
            if len(seen) > len(self.most):
                self.most = seen
            self._done.wait(0.005)

    def __enter__(self) -> KeyWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join(5)


def node_of(pid: int) -> str | None:
    """The node that started it, by its FORSETI_NODE (None if it is gone)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read().split(b"\0")
    except OSError:
        return None
    return next((v.split(b"=", 1)[1].decode() for v in env if v.startswith(b"FORSETI_NODE=")), None)


def up_seen_through(client: Client) -> set[str]:
    """The workers up, as the leader says through ``client``'s worker (none on error)."""
    try:
        return {n.name for n in client.nodes() if n.state == "up"}
    except Exception:
        return set()


def get_all_at_once(clients: list[Client], group: str, key: str) -> list:
    """``get`` from every client at the same instant; each result or exception."""
    results: list = [None] * len(clients)
    go = threading.Barrier(len(clients))

    def get(i: int) -> None:
        go.wait()
        try:
            results[i] = clients[i].get(group, key)
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=get, args=(i,)) for i in range(len(clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


@pytest.mark.slow
def test_a_start_under_way_survives_a_leader_restart_without_a_second_process(make_cluster):
    c = make_cluster(workers=3, cluster=FAST, calls={"slowcmd": SLOW})
    leader = c.leader()
    # One sleeper each, so the slow start goes to node1 (a tie goes to the lowest name)...
    sleepers = {l.node: l for l in (leader.get("sleeper", f"s{i}") for i in range(3))}
    assert sorted(sleepers) == ["node1", "node2", "node3"]
    # ...fired without waiting: its answer will be lost with the leader.
    trigger = zmq.Context.instance().socket(zmq.DEALER)
    trigger.setsockopt(zmq.LINGER, 0)
    trigger.connect(c.endpoint("node1"))
    try:
        trigger.send(p.encode(p.Get(id=1, group="slowcmd", key="k")))
        (slow_pid,) = wait_for(lambda: pids_of_key(c, "k"), 5, 0.01, "the slow start's process")
        assert node_of(slow_pid) == "node1"
        # node1 is now the busiest: a leader that does not know of its start under way
        # would place the key on node2 (loads 1, 0, 0), never back on node1.
        for node in ("node2", "node3"):
            assert leader.stop("sleeper", sleepers[node].key)
        with KeyWatch(c, "k") as watch:
            c.kill("leader", signal.SIGKILL)
            c.procs["leader"].wait(5)
            c.start("leader")
            others = [c.client(n, timeout=2 * DELAY) for n in ("node2", "node3") for _ in range(2)]
            # Asked before those workers are welcomed again, a get is answered "no
            # leader" by the worker itself; node1 need not have said hello yet.
            for probe in (others[0], others[2]):
                wait_for(
                    lambda probe=probe: {"node2", "node3"} <= up_seen_through(probe),
                    5,
                    0.05,
                    "node2 and node3 welcomed",
                )
            assert alive(slow_pid), "the start under way died with the leader"
            results = get_all_at_once(others, "slowcmd", "k")
            listed = [l for l in c.leader().processes("slowcmd") if l.key == "k"]
            left = pids_of_key(c, "k")
    finally:
        trigger.close()
    twice = {pid: watch.nodes.get(pid) for pid in sorted(watch.most)}
    assert len(twice) == 1, f"two live processes for one key at once (pid: node): {twice} ({watch.samples} samples)"
    assert not [r for r in results if not isinstance(r, p.Location)], f"gets failed: {results}"
    assert len(set(results)) == 1, f"the gets disagree: {results}"
    assert (results[0].node, results[0].pid) == ("node1", slow_pid), (
        f"answered {results[0]}, not the start under way (pid {slow_pid} on node1)"
    )
    assert left == {slow_pid}
    assert [(l.node, l.pid) for l in listed] == [("node1", slow_pid)]


# -- guarantee 8: workers speak only for themselves --


class Rogue:
    """A worker named "rogue" that sends reports about other nodes. ``answer``: what
    the leader said to its hello (a welcome, unless it was refused)."""

    def __init__(self, sock: zmq.Socket, hello: p.Hello) -> None:
        self.sock = sock
        self._ids = hello.id
        self.answer = self.ask(hello)

    def ask(self, msg: p.Msg, timeout: float = 5.0) -> p.Msg:
        """Send ``msg``; its reply (messages meant for a worker are passed over)."""
        self.sock.send(p.encode(msg))
        while True:
            assert self.sock.poll(int(timeout * 1000)), f"no answer to '{p.tag(msg)}'"
            reply = p.decode(self.sock.recv())
            if reply.id == msg.id:
                return reply

    def report(self, msg: p.Msg) -> None:
        """Send a report, and return once the leader has acted on it: it handles one
        peer's messages in order, so the answer to an ``ls`` sent next comes after."""
        self.sock.send(p.encode(msg))
        self._ids += 1
        assert isinstance(self.ask(p.List(id=self._ids)), p.Locations)


@contextlib.contextmanager
def rogue_worker(c, leader: Client, **hello):
    """A rogue worker that said hello to the leader (``hello`` adds to its hello). On
    the way out it falls silent and is waited for until the leader no longer takes it
    for up: with nothing registered it would be the least-loaded worker, and a new key
    could be sent to it."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(c.cluster["leader"])
    try:
        yield Rogue(sock, p.Hello(id=1, node="rogue", incarnation="x", **hello))
    finally:
        sock.close()
    wait_for(lambda: loads(leader).get("rogue", ("down",))[0] == "down", 5, 0.05, "the rogue to be down")


def loads(leader: Client) -> dict[str, tuple[str, int]]:
    """Each worker's state and number of registered processes, by name."""
    return {n.name: (n.state, n.processes) for n in leader.nodes()}


def busy_node1(leader: Client) -> p.Location:
    """A sleeper on node1, which is left the busiest (loads 2, 0): were that sleeper
    dropped, a new start of its key would go to node2, not back to node1."""
    victim, other, third = (leader.get("sleeper", k) for k in ("victim", "other", "third"))
    assert (victim.node, other.node, third.node) == ("node1", "node2", "node1")
    assert leader.stop("sleeper", "other")
    return victim


def registered_pids(leader: Client) -> list[int]:
    return sorted(l.pid for l in leader.processes())


def only_registered_processes_live(c, leader: Client) -> list[int]:
    """Wait until the live processes are exactly those registered, and return them. (A
    spare counts as started once it has its key, a moment before it drops its spare's
    name, so Cluster.processes() may miss a process that has just started.)"""
    return wait_for(lambda: sorted(c.processes()) == registered_pids(leader) and registered_pids(leader), 2, 0.01,
                    "the live processes to be exactly the registered ones")  # fmt: skip


def events_before(events, key: str) -> list:
    """The events that come before the started event of ``key``."""
    seen = []
    while (event := events.next_event(5)) is not None and (event.kind, event.key) != ("started", key):
        seen.append(event)
    assert event is not None, f"no started event for {key} (before it: {seen})"
    return seen


# Whatever reason the report gives: one that only "exit" reports were checked for
# would still let a worker drop another node's process by calling it a conflict.
@pytest.mark.parametrize("reason", ["exit", "conflict"])
def test_a_worker_cannot_report_another_nodes_process_exited(make_cluster, reason):
    c = make_cluster(workers=2, cluster=FAST)
    leader = c.leader()
    victim = busy_node1(leader)
    with leader.events("sleeper") as events, rogue_worker(c, leader) as rogue:
        assert isinstance(rogue.answer, p.Welcome), rogue.answer  # a registered worker
        rogue.report(p.Exited(location=victim, exit_code=0, signal=None, reason=reason, at=time.time()))
        assert leader.find("sleeper", "victim") == victim, "the leader dropped node1's process on another worker's word"
        assert victim in leader.processes("sleeper")
        marker = leader.get("sleeper", "marker")  # its started event follows any the report caused
        told = events_before(events, "marker")
        assert told == [], f"the leader published {told} on another worker's word"
    for node in ("node1", "node2"):
        again = c.client(node).get("sleeper", "victim")
        assert again.pid == victim.pid, f"a get through {node} started {again}, a second process for {victim}"
    assert alive(victim.pid)
    third = leader.find("sleeper", "third")
    assert only_registered_processes_live(c, leader) == sorted([victim.pid, third.pid, marker.pid])


def test_a_worker_cannot_report_a_start_on_another_node(make_cluster):
    c = make_cluster(workers=2, cluster=FAST)
    leader = c.leader()
    fake = p.Location("sleeper", "nobody", "node1", os.getpid(), None, time.time())  # a live pid, but ours
    with rogue_worker(c, leader) as rogue:
        assert isinstance(rogue.answer, p.Welcome), rogue.answer
        rogue.report(p.Spawned(id=12345, location=fake))
        assert leader.find("sleeper", "nobody") is None, "the leader registered a start another worker claimed on node1"
        assert leader.processes() == []
        assert [n for n, (_, count) in loads(leader).items() if count] == []
    real = c.client("node2").get("sleeper", "nobody")
    assert real.pid != os.getpid() and alive(real.pid), f"a get returned the rogue's claim {real}"
    assert real.node == "node1"  # the least loaded: nothing was counted on node1 either
    assert only_registered_processes_live(c, leader) == [real.pid]


def test_a_workers_hello_registers_nothing_on_another_node(make_cluster):
    c = make_cluster(workers=2, cluster=FAST)
    leader = c.leader()
    victim = busy_node1(leader)
    before = leader.processes()
    ghost = p.Location("sleeper", "ghost", "node1", os.getpid(), None, time.time())  # a key nobody started
    impostor = p.Location("sleeper", "victim", "node1", os.getpid(), None, time.time())  # a registered one, another pid
    with rogue_worker(c, leader, processes=[ghost, impostor]):  # (refusing the hello would do too)
        assert leader.find("sleeper", "ghost") is None, "a hello registered a process on another node"
        assert leader.processes() == before
        counts = {n: count for n, (_, count) in loads(leader).items()}
        assert counts == {"node1": 2, "node2": 0, **({"rogue": 0} if "rogue" in counts else {})}
    assert alive(victim.pid) and leader.find("sleeper", "victim") == victim
    real = c.client("node1").get("sleeper", "ghost")
    assert real.pid != os.getpid() and real.node == "node2" and alive(real.pid)
    third = leader.find("sleeper", "third")
    assert only_registered_processes_live(c, leader) == sorted([victim.pid, third.pid, real.pid])
