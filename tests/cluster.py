"""Real clusters for the tests: forsetid daemons on ipc:// endpoints in a private
directory, started as subprocesses and always torn down, leftovers included."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from forsetictl import Client
from forsetid.spawner import SPARE_NAME

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# Groups every test cluster knows; tests add their own with `calls=`.
BASE_CALLS = {
    "default": {"entry": "forsetid.examples:echo"},
    "sleeper": {"entry": "forsetid.examples:sleeper"},
    "slow": {"entry": "forsetid.examples:slow_ready", "args": [2.0], "ready": True, "start_timeout": 10.0},
}


def wait_for(predicate, timeout: float = 5.0, interval: float = 0.01, what: str = "condition"):
    """Poll until predicate() is truthy; return its value, or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    """A free port below the ephemeral range: a port 0 bind hands out ports that the
    daemons' own outgoing connections may take before the daemon that was to listen
    there binds it."""
    low = 20000
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        high = min(int(f.read().split()[0]), 32768)
    for _ in range(100):
        port = random.randrange(low, high)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return repr(v)


def toml(sections: dict) -> str:
    lines = []
    for name, table in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
        lines.append("")
    return "\n".join(lines)


class Cluster:
    """A leader and ``workers`` worker daemons (or one daemon of role "both")."""

    def __init__(self, workers: int = 3, calls: dict | None = None, both: bool = False,
                 cluster: dict | None = None, node: dict | None = None, tcp: bool = False,
                 start: bool = True) -> None:  # fmt: skip
        self.dir = Path(tempfile.mkdtemp(prefix="fz", dir="/tmp"))
        self.tag = self.dir.name
        self.tcp = tcp
        self.calls = {**BASE_CALLS, **(calls or {})}
        self.listen: dict[str, str] = {}
        self.cluster = {
            "name": self.tag,
            "leader": self._endpoint("leader"),
            "events": self._endpoint("events"),
            "heartbeat": 0.5,
            **(cluster or {}),
        }
        self.procs: dict[str, subprocess.Popen] = {}
        self.configs: dict[str, Path] = {}
        self.node_names: list[str] = []
        self._clients: list[Client] = []
        self.extra_node = node or {}
        if both:
            self.leader_name = self.add("node1", role="both", start=start)
        else:
            self.leader_name = self.add("leader", role="leader", start=start)
            for i in range(1, workers + 1):
                self.add(f"node{i}", role="worker", start=start)

    def add(self, name: str, role: str = "worker", start: bool = True, **node) -> str:
        config = {
            "cluster": self.cluster,
            "node": {"name": name, "role": role, "listen": self._endpoint(name), **self.extra_node, **node},
        }
        for group, call in self.calls.items():
            config[f"calls.{group}"] = call
        path = self.dir / f"{name}.toml"
        path.write_text(toml(config))
        self.configs[name] = path
        if role != "leader":
            self.node_names.append(name)
        if start:
            self.start(name)
        return name

    def start(self, name: str) -> subprocess.Popen:
        env = {**os.environ, "FORSETI_TEST_CLUSTER": self.tag, "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT), os.environ.get("PYTHONPATH", "")])}
        log = open(self.dir / f"{name}.log", "ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "forsetid", "--config", str(self.configs[name]), "--log-level", "DEBUG"],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip
        log.close()
        self.procs[name] = proc
        return proc

    def _endpoint(self, name: str) -> str:
        if name not in self.listen:
            self.listen[name] = f"tcp://127.0.0.1:{free_port()}" if self.tcp else f"ipc://{self.dir}/{name}"
        return self.listen[name]

    def endpoint(self, name: str) -> str:
        """Where a client of ``name`` connects (the leader's ROUTER for "leader")."""
        return self._endpoint(name)

    def client(self, name: str | None = None, timeout: float = 5.0) -> Client:
        c = Client(self.endpoint(name or self.node_names[0]), timeout=timeout)
        self._clients.append(c)
        return c

    def leader(self, timeout: float = 5.0) -> Client:
        return self.client(self.leader_name, timeout)

    def wait_up(self, count: int | None = None, timeout: float = 10.0) -> None:
        """Until the leader lists ``count`` (default: all) workers as up."""
        count = len(self.node_names) if count is None else count
        probe = Client(self.cluster["leader"], timeout=1.0)
        self._clients.append(probe)

        def up():
            try:
                return sum(n.state == "up" for n in probe.nodes()) >= count
            except Exception:
                return False

        wait_for(up, timeout, 0.05, f"{count} workers up")

    def log(self, name: str) -> str:
        return (self.dir / f"{name}.log").read_text(errors="replace")

    def processes(self) -> list[int]:
        """PIDs of live processes this cluster started: everything that inherited its
        mark, less the daemons and their fork servers."""
        daemons = {p.pid for p in self.procs.values()}
        mark = f"FORSETI_TEST_CLUSTER={self.tag}".encode()
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) in daemons:
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if mark not in f.read().split(b"\0"):
                        continue
                with open(f"/proc/{entry}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            state, ppid = fields[0], int(fields[1])
            if state != b"Z" and ppid not in daemons and not _is_spare(entry):
                found.append(int(entry))
        return found

    def spares(self) -> list[int]:
        """The fork servers' spares: entry processes forked ahead, waiting for a key."""
        daemons = {p.pid for p in self.procs.values()}
        return [int(e) for e in os.listdir("/proc")
                if e.isdigit() and _is_spare(e) and _marked(e, self.tag) and ppid(e) not in daemons]  # fmt: skip

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        self.procs[name].send_signal(sig)

    def stop(self, name: str, timeout: float = 15.0) -> int:
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()

    def close(self) -> list[int]:
        """Stop everything; returns the PIDs of processes that had to be killed as orphans."""
        for c in self._clients:
            c.close()
        for name in list(self.procs):
            self.stop(name)
        orphans = []
        deadline = time.monotonic() + 3.0
        while (left := self.processes() + self.spares()) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in left:
            orphans.append(pid)
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)
        return orphans



def _is_spare(pid: str) -> bool:
    try:
        with open(f"/proc/{pid}/comm", "rb") as f:
            return f.read().strip() == SPARE_NAME
    except OSError:
        return False


def _marked(pid: str, tag: str) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f"FORSETI_TEST_CLUSTER={tag}".encode() in f.read().split(b"\0")
    except OSError:
        return False


def ppid(pid) -> int:
    """(A fork server names itself like a spare for the instant of forking one.)"""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[1])
    except OSError:
        return -1
