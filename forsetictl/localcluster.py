"""A throw-away cluster on this machine: forsetid daemons as subprocesses, for the
benchmark and the tests. ``close()`` leaves nothing behind, processes and files."""

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

from forsetid.const import SPARE_NAME

from .client import Client, ForsetiError


def marked(mark: bytes) -> list[int]:
    """The live processes whose environment holds ``mark`` (``NAME=VALUE``)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if mark in f.read().split(b"\0"):
                        found.append(int(entry))
            except OSError:
                pass
    return found


class ClusterError(Exception):
    """The cluster did not come up (the message says where its logs are)."""


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
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + "}"
    return repr(v)


def toml(sections: dict) -> str:
    lines = []
    for name, table in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
        lines.append("")
    return "\n".join(lines)


class LocalCluster:
    """A leader and ``workers`` worker daemons (or, ``both``, one daemon of role "both"),
    on ipc:// in a private (0700) directory or, ``tcp``, on loopback ports.

    ``calls``: the groups, as TOML tables; ``cluster``/``node``: more settings for every
    config file; ``security``: a daemon's name -> its ``[security]`` table (None: none),
    and ``client_keys`` what every client it makes is given (``key``, ``server_key``);
    ``env``: more environment for the daemons; ``profile_dir``: run each
    daemon under cProfile, one ``NAME.prof`` there (written when it exits on SIGTERM).
    Every process started carries ``MARK=<tag>`` in its environment, inherited by all
    it starts, so that whatever outlives the daemons can be found and killed.

    ``candidates`` > 0: backend "etcd" on ``etcd`` (an endpoint URL) with that many
    leader candidates, ``leader1``... of role "leader", or, ``both``, the first nodes of
    role "both" (``node1``...), each a candidate, with lease ``lease``."""

    MARK = "FORSETI_LOCAL_CLUSTER"

    def __init__(
        self,
        workers: int = 3,
        calls: dict | None = None,
        both: bool = False,
        cluster: dict | None = None,
        node: dict | None = None,
        tcp: bool = False,
        start: bool = True,
        log_level: str = "WARNING",
        env: dict | None = None,
        profile_dir: str | None = None,
        prefix: str = "forseti-",
        security=None,
        client_keys: dict | None = None,
        candidates: int = 0,
        etcd: str | None = None,
        lease: float = 2.0,
    ) -> None:
        # In /tmp, not $TMPDIR: an ipc:// path must fit in a socket address (107 bytes).
        self.dir = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))  # mkdtemp makes it 0700
        self.tag = self.dir.name
        self.tcp = tcp
        self.calls = dict(calls or {})
        self.log_level = log_level
        self.env = env or {}
        self.profile_dir = profile_dir
        self.listen: dict[str, str] = {}
        if candidates:
            if etcd is None:
                raise ValueError("candidates need an etcd endpoint")
            self.candidate_names = [f"node{i}" if both else f"leader{i}" for i in range(1, candidates + 1)]
            seats = [
                {"name": n, "leader": self._endpoint(f"{n}-leader"), "events": self._endpoint(f"{n}-events")}
                for n in self.candidate_names
            ]
            where = {"backend": "etcd", "etcd": [etcd], "lease": lease, "candidates": seats}
        else:
            self.candidate_names = []
            where = {"leader": self._endpoint("leader"), "events": self._endpoint("events")}
        self.cluster = {"name": self.tag, **where, **(cluster or {})}
        self.procs: dict[str, subprocess.Popen] = {}
        self.configs: dict[str, Path] = {}
        self.node_names: list[str] = []  # the workers (and a "both" daemon)
        self._clients: list[Client] = []
        self.extra_node = node or {}
        self.security = security
        self.client_keys = client_keys or {}
        try:
            if candidates and both:
                for i in range(1, max(workers, candidates) + 1):
                    self.add(f"node{i}", role="both" if i <= candidates else "worker", start=start)
                self.leader_name = "node1"
            elif candidates:
                for name in self.candidate_names:
                    self.add(name, role="leader", start=start)
                for i in range(1, workers + 1):
                    self.add(f"node{i}", role="worker", start=start)
                self.leader_name = "leader1"
            elif both:
                self.leader_name = self.add("node1", role="both", start=start)
            else:
                self.leader_name = self.add("leader", role="leader", start=start)
                for i in range(1, workers + 1):
                    self.add(f"node{i}", role="worker", start=start)
        except BaseException:
            self.close()
            raise

    def add(self, name: str, role: str = "worker", start: bool = True, **node) -> str:
        """Write the config of one more daemon (and start it)."""
        config = {
            "cluster": self.cluster,
            "node": {"name": name, "role": role, "listen": self._endpoint(name), **self.extra_node, **node},
        }
        if self.security is not None:
            config["security"] = self.security(name)
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
        run = ["-m", "forsetid"]
        if self.profile_dir:
            run = ["-m", "cProfile", "-o", os.path.join(self.profile_dir, f"{name}.prof"), *run]
        cmd = self.wrap(
            name, [sys.executable, *run, "--config", str(self.configs[name]), "--log-level", self.log_level]
        )
        env = {**os.environ, **self.env, self.MARK: self.tag}
        with open(self.dir / f"{name}.log", "ab") as log:
            # A session of its own: the daemon and its fork server are one process group.
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.procs[name] = proc
        return proc

    def wrap(self, name: str, cmd: list[str]) -> list[str]:
        """How daemon ``name`` is run (e.g. in a network namespace of its own: the tests)."""
        return cmd

    def _endpoint(self, name: str) -> str:
        if name not in self.listen:
            self.listen[name] = f"tcp://127.0.0.1:{free_port()}" if self.tcp else f"ipc://{self.dir}/{name}"
        return self.listen[name]

    def endpoint(self, name: str) -> str:
        """Where a client of ``name`` connects (the leader's ROUTER for "leader"; with
        candidates, a candidate's ROUTER for "NAME-leader")."""
        return self._endpoint(name)

    def current_leader(self, timeout: float = 0.5) -> str | None:
        """The candidate that says it leads (backend "etcd"), if one does."""
        for name in self.candidate_names:
            if self.procs.get(name) is None or self.procs[name].poll() is not None:
                continue
            try:
                with Client(self.endpoint(f"{name}-leader"), timeout=timeout, **self.client_keys) as probe:
                    if probe.info().state == "leader":
                        return name
            except ForsetiError:
                pass
        return None

    def wait_leader(self, timeout: float = 15.0, other_than: str | None = None) -> str:
        """Until a candidate (not ``other_than``) leads: its name."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            name = self.current_leader()
            if name is not None and name != other_than:
                return name
            time.sleep(0.05)
        raise ClusterError(f"no candidate leads within {timeout:g} s (logs in {self.dir})")

    def client(self, name: str | None = None, timeout: float = 5.0) -> Client:
        """A client of ``name`` (default: the first worker), closed with the cluster."""
        c = Client(self.endpoint(name or self.node_names[0]), timeout=timeout, **self.client_keys)
        self._clients.append(c)
        return c

    def leader(self, timeout: float = 5.0) -> Client:
        if self.candidate_names:
            c = Client(self.endpoint(f"{self.wait_leader()}-leader"), timeout=timeout, **self.client_keys)
            self._clients.append(c)
            return c
        return self.client(self.leader_name, timeout)

    def wait_up(self, count: int | None = None, timeout: float = 10.0) -> None:
        """Until the leader lists ``count`` (default: all) workers as up (with
        candidates: as a worker hears it from whichever leads)."""
        count = len(self.node_names) if count is None else count
        deadline = time.monotonic() + timeout
        probe_at = self.endpoint(self.node_names[0]) if self.candidate_names else self.cluster["leader"]
        with Client(probe_at, timeout=1.0, **self.client_keys) as probe:
            while True:
                try:
                    if sum(n.state == "up" for n in probe.nodes()) >= count:
                        return
                except ForsetiError:
                    pass
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        exited = [name for name, proc in self.procs.items() if proc.poll() is not None]
        why = f"; exited: {', '.join(exited)}" if exited else ""
        raise ClusterError(f"{count} workers not up within {timeout:g} s{why} (logs in {self.dir})")

    def log(self, name: str) -> str:
        return (self.dir / f"{name}.log").read_text(errors="replace")

    def processes(self) -> list[int]:
        """PIDs of live processes this cluster started: everything that inherited its
        mark, less the daemons, their fork servers and spares."""
        daemons = {p.pid for p in self.procs.values()}
        return [
            pid
            for pid in self._marked()
            if pid not in daemons
            and _state(pid) not in (None, b"Z")
            and ppid(pid) not in daemons
            and not _is_spare(pid)
        ]

    def spares(self) -> list[int]:
        """The fork servers' spares: entry processes forked ahead, waiting for a key."""
        daemons = {p.pid for p in self.procs.values()}
        # (A fork server names itself like a spare for the instant of forking one.)
        return [pid for pid in self._marked() if _is_spare(pid) and ppid(pid) not in daemons]

    def _marked(self) -> list[int]:
        return marked(f"{self.MARK}={self.tag}".encode())

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        self.procs[name].send_signal(sig)

    def stop(self, name: str, timeout: float = 15.0) -> int:
        """SIGTERM (the daemon stops its processes), then SIGKILL after ``timeout``."""
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            # Not reaped yet, so its process group is still ours: the daemon and its fork
            # server; the processes die with the fork server (PDEATHSIG).
            os.killpg(proc.pid, signal.SIGKILL)
            return proc.wait()

    def close(self) -> list[int]:
        """Stop everything; returns the PIDs of processes that had to be killed as orphans."""
        for c in self._clients:
            c.close()
        for proc in self.procs.values():  # all at once: each takes its time to stop its processes
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
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


def _is_spare(pid: int | str) -> bool:
    try:
        with open(f"/proc/{pid}/comm", "rb") as f:
            return f.read().strip() == SPARE_NAME
    except OSError:
        return False


def _stat(pid: int | str) -> list[bytes] | None:
    """/proc/PID/stat after the command name: state, ppid, ... (None: gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None


def _state(pid: int | str) -> bytes | None:
    fields = _stat(pid)
    return fields[0] if fields else None


def ppid(pid: int | str) -> int:
    """The parent of ``pid``; -1 if it is gone."""
    fields = _stat(pid)
    return int(fields[1]) if fields else -1
