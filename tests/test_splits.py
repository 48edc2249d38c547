"""Real network splits: three machines (network namespaces on a bridge, tests/netns.py),
each with an etcd member and a daemon of role "both", every node a candidate. One
machine is cut off (both ways, or one way) while clients on every machine get every key
in a loop, then put back. A sampler records every live process all along.

Checked: with "stop" no key ever has two live processes and no process on the majority's
side is killed by the failover; after the heal every node answers every key with its one
live process. A process is dead once /proc says so; no answer names a process that was
dead when it was asked, from any node once the network is back, nor from the cut-off node
while it is cut off (in both modes); the majority names a cut-off worker's process less
than a heartbeat after its death (but where only the packets to it are lost). Measured
and printed: how long the majority waits before every key is served again (and, with the
leader's machine cut, where that time goes), and how long after the heal until every
node answers right."""

from __future__ import annotations

import collections
import datetime
import os
import signal
import threading
import time

import netns
import pytest
from cluster import managed, wait_for
from test_cluster import alive

from forsetictl import Client, ForsetiError
from forsetictl.client import Location

GROUP = "split"
CALLS = {
    GROUP: {"command": ["sleep", "600"], "stop_timeout": 1.0},
    # ready 2 s after it starts (a shell-written "R" line on the ready fd)
    "late": {"command": ["sh", "-c", "sleep 2; eval 'echo R >&'$FORSETI_READY_FD; exec sleep 600"], "ready": True},
}
KEYS = [f"k{i}" for i in range(9)]
SPLIT_SECONDS = 4.0  # the shortest split; longer while the majority is not served yet


@pytest.fixture
def net():
    why = netns.unusable()
    if why is not None:
        pytest.skip(why)
    machines = netns.Net(3)
    try:
        yield machines
    finally:
        machines.close()


@pytest.fixture
def split(net):
    made: list[netns.SplitCluster] = []

    def make(partition: str) -> netns.SplitCluster:
        made.append(netns.SplitCluster(net, partition, CALLS))
        return made[-1]

    yield make
    orphans = [pid for c in made for pid in c.close()]
    assert not orphans, f"processes outlived their cluster: {orphans}"


def live(c) -> dict[int, tuple[str, str]]:
    """pid -> (key, node) of every live process of the group."""
    return {
        pid: (env["FORSETI_KEY"], env["FORSETI_NODE"])
        for pid, env in managed(c).items()
        if env.get("FORSETI_GROUP") == GROUP
    }


class Watch:
    """A client on every machine getting every key in a loop, each answer kept with when
    it was asked; a sampler that notes when each process was first seen gone, and every
    sample in which a key had two live processes."""

    def __init__(self, c) -> None:
        self.c = c
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.answers: list[tuple[float, str, str, int]] = []  # (asked at, node, key, pid)
        self.errors: collections.Counter = collections.Counter()
        self.unclean: list[str] = []
        self.seen: set[int] = set()
        self.gone: dict[int, float] = {}  # pid -> when a sample first missed it
        self.doubled: list[tuple[float, dict]] = []
        self.samples = 0
        loops = [(self._client, (node,)) for node in c.node_names]
        self.threads = [threading.Thread(target=f, args=a) for f, a in [*loops, (self._sample, ())]]
        for t in self.threads:
            t.start()

    def _client(self, node: str) -> None:
        client = Client(self.c.endpoint(node), timeout=1.0)
        try:
            while not self.stop.is_set():
                for key in KEYS:
                    asked = time.monotonic()
                    try:
                        loc = client.get(GROUP, key)
                        with self.lock:
                            self.answers.append((asked, node, key, loc.pid))
                    except ForsetiError as exc:
                        with self.lock:
                            self.errors[exc.kind] += 1
                        client.close()
                        client = Client(self.c.endpoint(node), timeout=1.0)
                        self.stop.wait(0.05)
                    except Exception as exc:  # anything else is a defect
                        with self.lock:
                            self.unclean.append(repr(exc))
        finally:
            client.close()

    def _sample(self) -> None:
        born: dict[int, bytes] = {}  # pid -> its start time (a pid may be reused)
        while not self.stop.wait(0.02):
            at = time.monotonic()
            now = live(self.c)
            for pid in set(now) - self.seen:
                born[pid] = _started(pid)
            for pid in self.seen - set(now) - set(self.gone):
                # Missed by a scan of /proc: gone only if it really is (a scan can miss a
                # live process), and dead by the time that is checked: an answer asked
                # later named a process that was dead when it was asked.
                if _started(pid) != born[pid]:
                    self.gone[pid] = time.monotonic()
            self.seen |= set(now)
            self.samples += 1
            keys = collections.Counter(key for key, _ in now.values())
            twice = {k: n for k, n in keys.items() if n > 1}
            if twice:
                self.doubled.append((at, twice))

    def stale(self, since: float = 0.0, until: float = float("inf"), nodes=None) -> list:
        """Answers asked in [since, until) (through ``nodes``) with a process that was
        gone before the question."""
        with self.lock:
            return [
                (asked, node, key, pid)
                for asked, node, key, pid in self.answers
                if since <= asked < until and (nodes is None or node in nodes) and self.gone.get(pid, asked) < asked
            ]

    def end(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)


def _started(pid: int) -> bytes:
    """When ``pid`` started (b"" if it is gone or a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return b""
    return b"" if fields[0] == b"Z" else fields[19]


def served(c, nodes: list[str], probes: dict) -> bool:
    """Every node of ``nodes`` answers every key with its one live process on one of
    ``nodes``."""
    by_key = collections.defaultdict(list)
    for pid, (key, node) in live(c).items():
        if node in nodes:
            by_key[key].append(pid)
    try:
        return all(by_key[key] == [probes[n].get(GROUP, key).pid] for n in nodes for key in KEYS)
    except ForsetiError:
        return False


class LostStart:
    """A new key whose start is under way on the machine about to be cut off (it takes
    2 s to be ready), asked for through a node of the majority: with "stop" it is placed again
    on a live worker once the cut-off one is down, and the caller answered in time."""

    def __init__(self, c, cut_node: str, via: str) -> None:
        self.c, self.result = c, None
        mine = sorted(pid for pid, (_, node) in live(c).items() if node == cut_node)
        os.kill(mine[0], signal.SIGKILL)  # one less there: the least loaded, where the new key goes
        with Client(c.endpoint(via), timeout=1.0) as probe:
            counts = lambda: {n.name: n.processes for n in probe.nodes()}[cut_node] == len(mine) - 1  # noqa: E731
            wait_for(counts, 5, 0.02, "the leader to hear of the killed process's exit")
        self.began = time.monotonic()
        self.thread = threading.Thread(target=self._get, args=(via,))
        self.thread.start()
        wait_for(lambda: self._starting(cut_node), 5, 0.02, f"the start under way on {cut_node}")

    def _starting(self, node: str) -> bool:
        return any(
            env.get("FORSETI_KEY") == "fresh" and env["FORSETI_NODE"] == node for env in managed(self.c).values()
        )

    def _get(self, via: str) -> None:
        try:
            with Client(self.c.endpoint(via), timeout=20.0) as client:
                self.result = client.get("late", "fresh")
        except ForsetiError as exc:
            self.result = exc
        self.took = time.monotonic() - self.began

    def answered_by(self) -> str:
        self.thread.join(30)
        return self.result.node if isinstance(self.result, Location) else repr(self.result)

    def check(self) -> None:
        assert isinstance(self.result, Location), self.result
        copies = [pid for pid, env in managed(self.c).items() if env.get("FORSETI_KEY") == "fresh"]
        assert copies == [self.result.pid], copies


def change(c, probe: Client, majority: list[str]) -> list[int]:
    """What the majority does meanwhile, unseen by the cut-off machine: one process is
    stopped, one is killed (SIGKILL); the clients' gets start them again."""
    ours = sorted((key, pid) for pid, (key, node) in live(c).items() if node in majority)
    (stopped, stopped_pid), (_, killed_pid) = ours[0], ours[1]
    probe.stop(GROUP, stopped)
    os.kill(killed_pid, signal.SIGKILL)
    return [stopped_pid, killed_pid]


def logged(c, text: str, since: float) -> float | None:
    """When (monotonic) a daemon first logged a line holding ``text`` after ``since``
    (None: none did). The log's times are the wall clock's, to the millisecond."""
    shift = time.time() - time.monotonic()
    times = [
        datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp() - shift
        for node in c.node_names
        for line in c.log(node).splitlines()
        if text in line
    ]
    return min((t for t in times if t >= since - 0.002), default=None)


def until(predicate, timeout: float, what: str) -> float:
    """Poll ``predicate`` until true: when it was (monotonic), or fail naming ``what``."""
    wait_for(predicate, timeout, 0.02, what)
    return time.monotonic()


SCENARIOS = [
    ("stop", "leader", "both"),
    ("stop", "worker", "both"),
    ("keep", "leader", "both"),
    ("stop", "worker", "outgoing"),
    ("stop", "worker", "incoming"),
]


@pytest.mark.slow
@pytest.mark.parametrize("partition,victim,how", SCENARIOS, ids=["-".join(s) for s in SCENARIOS])
def test_a_real_split(split, net, capsys, partition, victim, how):
    c = split(partition)
    assert not any("a failover may stop" in c.log(n) for n in c.node_names)  # (the settings cover etcd's election)
    leader_at = c.first
    cut = leader_at if victim == "leader" else leader_at % 3 + 1
    cut_node = f"node{cut}"
    majority = [n for n in c.node_names if n != cut_node]
    for i, key in enumerate(KEYS):
        c.client(c.node_names[i % 3]).get(GROUP, key)
    probes = {n: Client(c.endpoint(n), timeout=1.0) for n in c.node_names}
    lost = LostStart(c, cut_node, majority[0]) if victim == "worker" else None
    before = live(c)
    assert len(before) == len(KEYS) - (lost is not None)
    watch = Watch(c)
    try:
        time.sleep(0.5)
        t_cut = time.monotonic()
        {"both": net.cut, "outgoing": net.cut_outgoing, "incoming": net.cut_incoming}[how](cut)
        try:
            t_served = until(lambda: served(c, majority, probes), 30, "the majority to serve every key")
            changed = change(c, probes[majority[0]], majority)
            time.sleep(max(0.5, t_cut + SPLIT_SECONDS - time.monotonic()))
            during = watch.stale(t_cut, time.monotonic(), [cut_node])
        finally:
            t_heal = time.monotonic()
            net.heal(cut)
        t_right = until(lambda: served(c, c.node_names, probes), 20, "every node to answer every key right")
        time.sleep(0.5)
    finally:
        watch.end()
        for probe in probes.values():
            probe.close()
    majority_dead = watch.stale(t_cut, t_heal, majority)
    after = watch.stale(t_heal)
    # The cut-off worker's processes named by the majority, and how long after their death.
    theirs = {pid for pid, (_, node) in before.items() if node == cut_node}
    named = [(asked - watch.gone[pid], node, key, pid) for asked, node, key, pid in majority_dead if pid in theirs]
    window = max((since for since, *_ in named), default=0.0)
    killed = [pid for pid, (_, node) in before.items() if node in majority and pid not in changed and not alive(pid)]
    report = (
        f"{partition}, {victim}'s machine cut ({how}): majority served {t_served - t_cut:.2f} s after the cut, "
        f"every node right {t_right - t_heal:.2f} s after the heal; answers {len(watch.answers)}, "
        f"dead ones: from the cut-off node during the split {len(during)}, after the heal {len(after)}, "
        f"from the majority during the split {len(majority_dead)} ({len(named)} of the cut-off worker's, "
        f"asked up to {window:.3f} s after their death); majority's processes killed {len(killed)}; "
        f"errors {dict(watch.errors)}; samples {watch.samples}, doubled {len(watch.doubled)}"
    )
    if victim == "leader":  # where the majority's wait went
        steps = {"the old leader stepped down": "stops leading", "a new one was elected": "elected in etcd",
                 "it placed new keys again": "placing new keys"}  # fmt: skip
        at = {what: logged(c, text, t_cut) for what, text in steps.items()}
        report += "; " + ", ".join(f"{what} {'?' if t is None else f'{t - t_cut:.2f} s'}" for what, t in at.items())
    if lost is not None:
        report += f"; a start lost to the split answered from {lost.answered_by()} {lost.took:.2f} s after the get"
    with capsys.disabled():
        print("\n" + report)
    assert not watch.unclean, watch.unclean
    # No node names a process that was dead when it was asked, once the network is back;
    # nor the cut-off node while it is cut off: the majority changes nothing before it
    # serves every key, S or more after the cut, and by then the cut-off node answers
    # no other node's process from its cache ("stop": its lease lapsed; "keep": it took
    # its leader for lost) and its own live ones only ("stop": none).
    assert changed and not during and not after, (during + after)[:5]
    if partition == "stop":
        assert not watch.doubled, watch.doubled[:5]
        assert not killed, f"the failover killed the majority's processes {killed}: {report}"
    if how != "incoming":
        # The leader stops naming a silent worker's processes once its lease cannot hold
        # (its last word + the lease), the lease having run from a ping sent up to a
        # heartbeat before (the answer to a later one may have been lost in the cut),
        # plus a round trip and an event's trip: half a heartbeat's room for those.
        assert window < 1.5 * netns.SPLIT["heartbeat"], named[:5]
    if lost is not None:
        lost.check()


def test_what_a_dead_run_left_is_swept_and_nothing_else():
    """Namespaces, bridges and veths named for a run whose process is gone are removed
    (whatever still runs in such a namespace is killed); a live run's are left alone."""
    why = netns.unusable()
    if why is not None:
        pytest.skip(why)
    dead = 4194304 + 7  # above any pid (pid_max is at most 2^22): no process has it
    mine = netns.Net(1)
    try:
        netns._ip("netns", "add", f"fzs{dead}a-1")
        netns._ip("link", "add", f"fzb{dead}a", "type", "bridge")
        netns.sweep()
        assert f"fzs{dead}a-1" not in netns._ip("netns", "list").stdout
        assert netns._ip("link", "show", f"fzb{dead}a", check=False).returncode != 0
        assert mine.ns(1) in netns._ip("netns", "list").stdout  # (this run's: alive)
    finally:
        netns._ip("netns", "del", f"fzs{dead}a-1", check=False)
        netns._ip("link", "del", f"fzb{dead}a", check=False)
        mine.close()
    assert mine.ns(1) not in netns._ip("netns", "list").stdout
