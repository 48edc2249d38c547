"""Real clusters for the tests: forsetictl's LocalCluster (forsetid daemons on ipc://
endpoints in a private directory, always torn down, leftovers included) with the tests'
groups, a fast heartbeat, DEBUG logs, and tests/ importable by the daemons."""

from __future__ import annotations

import os
import re
import select
import shutil
import time
from pathlib import Path

from forsetictl.localcluster import LocalCluster, free_port, ppid

__all__ = ["BASE_CALLS", "HERE", "ROOT", "Cluster", "free_port", "managed", "ppid", "shipped", "wait_for"]

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# Groups every test cluster knows; tests add their own with `calls=`.
BASE_CALLS = {
    "default": {"entry": "forsetid.examples:echo"},
    "sleeper": {"entry": "forsetid.examples:sleeper"},
    "slow": {"entry": "forsetid.examples:slow_ready", "args": [2.0], "ready": True, "start_timeout": 10.0},
}


def line_within(stream, seconds: float = 10.0) -> str:
    """The next line of a child's text pipe, or fail once ``seconds`` pass: a readline
    alone would hang the run if the line never came."""
    if not select.select([stream], [], [], seconds)[0]:
        raise AssertionError(f"no line within {seconds} s")
    return stream.readline()


def shipped(name: str, into: Path, replace: dict[str, str] | None = None) -> Path:
    """A copy of ``conf/NAME`` in ``into``, each loopback port of its config files moved
    to a free one and each text of ``replace`` replaced (and not moved), so that it runs
    beside others."""
    conf = into / name
    shutil.copytree(ROOT / "conf" / name, conf)
    marks = {f"\0{i}\0": new for i, new in enumerate((replace or {}).values())}
    texts = {f: f.read_text() for f in conf.glob("*.toml")}
    for old, mark in zip(replace or {}, marks, strict=True):
        texts = {f: t.replace(old, mark) for f, t in texts.items()}
    ports = sorted({int(m) for t in texts.values() for m in re.findall(r"127\.0\.0\.1:(\d+)", t)})
    moved = {port: free_port() for port in ports}
    for f, text in texts.items():
        for old_port, new_port in moved.items():
            text = text.replace(f"127.0.0.1:{old_port}", f"127.0.0.1:{new_port}")
        for mark, new in marks.items():
            text = text.replace(mark, new)
        f.write_text(text)
    return conf


def managed(cluster) -> dict[int, dict[str, str]]:
    """pid -> the FORSETI_* environment of every live process the cluster started (which
    group, key and node each is for)."""
    found = {}
    for pid in cluster.processes():
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                pairs = [v.decode(errors="replace").split("=", 1) for v in f.read().split(b"\0") if b"=" in v]
        except OSError:
            continue  # gone meanwhile
        found[pid] = {k: v for k, v in pairs if k.startswith("FORSETI_")}
    return found


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


class Cluster(LocalCluster):
    """A leader and ``workers`` worker daemons (or one daemon of role "both")."""

    MARK = "FORSETI_TEST_CLUSTER"  # (tests/apps.py leaves it out of the environment it records)

    def __init__(self, workers: int = 3, calls: dict | None = None, cluster: dict | None = None, **options) -> None:
        """``options``: as LocalCluster's (both, node, tcp, start, security, client_keys)."""
        pythonpath = os.pathsep.join([str(HERE), str(ROOT), os.environ.get("PYTHONPATH", "")])
        super().__init__(
            workers,
            calls={**BASE_CALLS, **(calls or {})},
            cluster={"heartbeat": 0.5, **(cluster or {})},
            log_level="DEBUG",
            env={"PYTHONPATH": pythonpath},
            prefix="fz",
            **options,
        )
