"""Real network splits for the tests: machines as Linux network namespaces on a bridge of
their own, each with an etcd member (one etcd cluster of three) and a forsetid daemon of
role "both" (every node a leader candidate), and the means to cut a machine off and to
heal it.

* Both ways: the machine's cable is pulled (its veth leaves the bridge): packets either
  way are lost without a word, and TCP connections sit in retransmission until the heal.
* One way: the machine's packets to the others (or theirs to it) go to a hardware
  address no one has (a permanent neighbour entry): lost, while the other way works.
  Only iproute2 is needed (no nft, iptables or tc actions: the kernels here lack them).

Names start with ``fz`` and carry the pid of the run that made them, so that parallel
runs do not collide and a run that died (SIGKILL) is swept up by the next one. Clients
of a machine reach its daemon over ``ipc://`` (a path in the file system, which every
network namespace shares), as a program on that machine would."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from cluster import Cluster, wait_for

from forsetictl import Client, ForsetiError
from forsetictl.localetcd import etcd_binary, member_args

SUBNET = "10.77.0."  # (each run has a bridge of its own: the same addresses do not collide)
NOWHERE = "02:00:00:00:00:01"  # a hardware address no machine has: one-way cuts send there
ETCD_TUNED = (50, 500)  # etcd's heartbeat and election timeout, ms
_LEFT = re.compile(r"^fz[bsv](\d+)[a-z]")
_runs = itertools.count()


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


def unusable() -> str | None:
    """Why namespaces cannot be made here (None: they can)."""
    if shutil.which("ip") is None:
        return "real splits need iproute2 (`ip`)"
    if os.geteuid() != 0:
        return "real splits need root (network namespaces, veth pairs, a bridge)"
    probe = f"fzs{os.getpid()}z-probe"
    if _ip("netns", "add", probe, check=False).returncode != 0:
        return "network namespaces cannot be made here (`ip netns add` failed)"
    _ip("netns", "del", probe, check=False)
    return None


def _dead(pid: int) -> bool:
    return not os.path.exists(f"/proc/{pid}")


def sweep() -> None:
    """Remove what runs that are gone left: their namespaces (and whatever still runs in
    them), bridges and veths."""
    for name in _ip("netns", "list").stdout.split():
        m = _LEFT.match(name)
        if m and _dead(int(m.group(1))):
            _remove_namespace(name)
    for line in _ip("-o", "link").stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        m = _LEFT.match(name)
        if m and _dead(int(m.group(1))):
            _ip("link", "del", name, check=False)


def _remove_namespace(name: str) -> None:
    pids = _ip("netns", "pids", name, check=False).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except OSError:
            pass
    _ip("netns", "del", name, check=False)


class Net:
    """``n`` machines, 1..n, at ``SUBNET + i``, on one bridge."""

    def __init__(self, n: int = 3) -> None:
        sweep()
        self.run = f"{os.getpid()}{'abcdefghijklmnopqrstuvwxy'[next(_runs) % 25]}"
        self.n = n
        self.bridge = f"fzb{self.run}"
        self.made: list[str] = []
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("link", "set", self.bridge, "up")
            for i in range(1, n + 1):
                self._machine(i)
        except BaseException:
            self.close()
            raise

    def ns(self, i: int) -> str:
        return f"fzs{self.run}-{i}"

    def cable(self, i: int) -> str:
        return f"fzv{self.run}-{i}"

    @staticmethod
    def addr(i: int) -> str:
        return f"{SUBNET}{i}"

    def _machine(self, i: int) -> None:
        ns, cable = self.ns(i), self.cable(i)
        _ip("netns", "add", ns)
        self.made.append(ns)
        _ip("link", "add", cable, "type", "veth", "peer", "name", f"fzp{self.run}-{i}")
        _ip("link", "set", f"fzp{self.run}-{i}", "netns", ns)
        _ip("-n", ns, "link", "set", f"fzp{self.run}-{i}", "name", "eth0")
        _ip("-n", ns, "addr", "add", f"{self.addr(i)}/24", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("link", "set", cable, "master", self.bridge, "up")

    def exec(self, i: int, cmd: list[str]) -> list[str]:
        """``cmd`` run on machine ``i`` (``ip netns exec`` execs it: the pid is the command's)."""
        return ["ip", "netns", "exec", self.ns(i), *cmd]

    def cut(self, i: int) -> None:
        """Both ways: machine ``i`` leaves the bridge."""
        _ip("link", "set", self.cable(i), "nomaster")

    def cut_outgoing(self, i: int) -> None:
        """One way: what machine ``i`` sends to the others is lost; it still hears them."""
        for j in self._others(i):
            self._misroute(i, j)

    def cut_incoming(self, i: int) -> None:
        """One way: what the others send to machine ``i`` is lost; they still hear it."""
        for j in self._others(i):
            self._misroute(j, i)

    def _misroute(self, i: int, j: int) -> None:
        """Machine ``i`` sends what it means for ``j`` to a hardware address no one has."""
        _ip("-n", self.ns(i), "neigh", "replace", self.addr(j), "lladdr", NOWHERE, "nud", "permanent", "dev", "eth0")

    def heal(self, i: int) -> None:
        _ip("link", "set", self.cable(i), "master", self.bridge)
        for j in range(1, self.n + 1):
            _ip("-n", self.ns(j), "neigh", "flush", "nud", "permanent", check=False)

    def _others(self, i: int) -> list[int]:
        return [j for j in range(1, self.n + 1) if j != i]

    def close(self) -> None:
        for i in range(1, self.n + 1):
            _ip("link", "del", self.cable(i), check=False)  # (its peer goes with it)
        _ip("link", "del", self.bridge, check=False)
        for ns in self.made:
            _remove_namespace(ns)


SPLIT = {"heartbeat": 0.25, "liveness": 15, "etcd_election": ETCD_TUNED[1] / 1000}
LEASE = 1.0


class SplitCluster(Cluster):
    """Three machines of ``net``, each an etcd member and a daemon of role "both", every
    one a candidate (leader and events on tcp at the machine's address, insecure: this is
    a test bed), clients at ``ipc://``. The daemon of the machine whose etcd member leads
    etcd starts first, and so leads too (``first``): its machine cut off is the longest
    failover."""

    def __init__(self, net: Net, partition: str, calls: dict) -> None:
        self.net = net
        self.etcds: list[subprocess.Popen] = []
        self.etcd_dir = Path(tempfile.mkdtemp(prefix="fz-etcd-", dir="/tmp"))
        urls = [f"http://{net.addr(i)}:2379" for i in range(1, 4)]
        try:
            self._start_etcd()
            self.first = first = self._wait_etcd_leader()
            super().__init__(
                workers=3, candidates=3, both=True, etcd=urls[0], lease=LEASE, calls=calls, start=False,
                cluster={**SPLIT, "partition": partition, "etcd": urls}, security=lambda name: {"insecure": True},
            )  # fmt: skip
            self.start(f"node{first}")
            self.wait_leader_seen(f"node{first}", timeout=30)
            for i in range(1, 4):
                if i != first:
                    self.start(f"node{i}")
            self.wait_up(timeout=20)
        except BaseException:
            self.close()
            raise

    def _start_etcd(self) -> None:
        net, binary = self.net, etcd_binary()
        peers = ",".join(f"e{i}=http://{net.addr(i)}:2380" for i in range(1, 4))
        for i in range(1, 4):
            at = f"http://{net.addr(i)}"
            args = member_args(f"e{i}", f"{at}:2379", f"{at}:2380", peers, self.etcd_dir / f"e{i}", ETCD_TUNED)
            with open(self.etcd_dir / f"e{i}.log", "ab") as log:
                self.etcds.append(subprocess.Popen(net.exec(i, [binary, *args]), stdout=log, stderr=subprocess.STDOUT))

    def _wait_etcd_leader(self, timeout: float = 20.0) -> int:
        return wait_for(self.etcd_leader, timeout, 0.1, f"etcd to elect a leader (logs in {self.etcd_dir})")

    def etcd_leader(self) -> int | None:
        """The machine whose etcd member is etcd's raft leader, as machine 1..3 sees it."""
        code = (
            "import json,sys,urllib.request as u\n"
            "for i in (1,2,3):\n"
            f" a='http://{SUBNET}%d:2379/v3/maintenance/status'%i\n"
            " try: s=json.load(u.urlopen(u.Request(a,data=b'{}'),timeout=0.5))\n"
            " except Exception: continue\n"
            " if s['header']['member_id']==s.get('leader'): print(i); break\n"
        )
        for i in range(1, 4):
            done = subprocess.run(self.net.exec(i, [sys.executable, "-c", code]), capture_output=True, text=True)
            if done.stdout.strip():
                return int(done.stdout.strip())
        return None

    def _endpoint(self, name: str) -> str:
        node, _, kind = name.partition("-")
        if kind in ("leader", "events") and node.startswith("node"):
            return f"tcp://{self.net.addr(int(node[4:]))}:{7070 if kind == 'leader' else 7071}"
        return super()._endpoint(name)

    def wrap(self, name: str, cmd: list[str]) -> list[str]:
        return self.net.exec(int(name[4:]), cmd)

    def seen_leader(self, name: str) -> tuple[str, int]:
        """Who leads, and in which term, as the worker of daemon ``name`` has joined it
        ("" while it has not)."""
        try:
            with Client(self.endpoint(name), timeout=0.5) as probe:
                info = probe.info()
            return info.leader, info.term
        except ForsetiError:
            return "", 0

    def wait_leader_seen(self, name: str, timeout: float = 15.0, by: str | None = None) -> str:
        def seen() -> bool:
            return self.seen_leader(by or name)[0] == name

        wait_for(seen, timeout, 0.05, f"{name} seen leading (logs in {self.dir})")
        return name

    def close(self) -> list[int]:
        orphans = super().close() if hasattr(self, "procs") else []
        for proc in self.etcds:  # killed: their data goes too (SIGTERM took 6 s, as members hand over)
            if proc.poll() is None:
                proc.kill()
        for proc in self.etcds:
            proc.wait()
        shutil.rmtree(self.etcd_dir, ignore_errors=True)
        return orphans


def status(c: SplitCluster) -> str:
    """One line on who leads, for a test's report."""
    return json.dumps({n: c.seen_leader(n) for n in c.node_names})
