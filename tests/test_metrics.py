"""``node.metrics``: Prometheus text on /metrics, scraped from real daemons."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.request

import msgspec
import pytest
import zmq
from cluster import ROOT, free_port, wait_for
from prometheus_client.parser import text_string_to_metric_families

from forsetictl import SpawnError
from forsetid import protocol as p
from forsetid.config import ConfigError, parse


def scrape(address: str) -> dict:
    """(sample name, labels) -> value; labels as a sorted tuple of pairs."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(addresses, name: str, **labels) -> float:
    return sum(value(scrape(a), name, **labels) for a in addresses)


def test_a_cluster_counts_its_starts_exits_requests_and_refusals(make_cluster):
    m = {name: f"127.0.0.1:{free_port()}" for name in ("leader", "node1", "node2")}
    calls = {
        "nocommand": {"command": ["/nonexistent/forseti-test-binary", "{key}"]},
        "exits": {"entry": "apps:exit_before_ready", "ready": True},
    }
    c = make_cluster(workers=0, calls=calls, node={"metrics": m["leader"]}, wait=False)
    for name in ("node1", "node2"):
        c.add(name, metrics=m[name])
    c.wait_up()
    workers = (m["node1"], m["node2"])
    client = c.client("node1")

    locs = [client.get("sleeper", f"k{i}") for i in range(4)]
    assert {loc.node for loc in locs} == {"node1", "node2"}
    assert client.find("sleeper", "k0") == locs[0]  # from node1's cache
    for group in ("nocommand", "exits"):
        with pytest.raises(SpawnError):
            client.get(group, "k")
    assert client.stop("sleeper", "k0")
    os.kill(locs[1].pid, signal.SIGKILL)
    wait_for(lambda: client.find("sleeper", "k1") is None, 3.0, what="the killed process seen exited")

    ctx = zmq.Context.instance()
    raw = ctx.socket(zmq.DEALER)
    raw.setsockopt(zmq.LINGER, 0)
    raw.connect(c.endpoint("node1"))
    raw.send(b"\xc1\xc1")
    assert raw.poll(3000) and p.decode(raw.recv()).kind == p.BAD_MESSAGE
    raw.send(msgspec.msgpack.encode({"t": "launch", "v": 1, "id": 6}))
    assert raw.poll(3000) and p.decode(raw.recv()).kind == p.BAD_MESSAGE
    raw.close()

    # The workers: starts, failures by reason kind, latency, requests, refusals.
    assert total(workers, "forseti_starts_total", group="sleeper") == 4
    assert total(workers, "forseti_starts_total", group="exits") == 1
    assert total(workers, "forseti_start_failures_total", group="nocommand", reason="cannot-start") == 1
    assert total(workers, "forseti_start_failures_total", group="exits", reason="exited") == 1
    assert total(workers, "forseti_start_seconds_count", group="sleeper") == 4
    assert 0 < total(workers, "forseti_start_seconds_sum", group="sleeper") < 4 * 1.0
    n1 = scrape(m["node1"])
    assert value(n1, "forseti_requests_total", kind="get", outcome="forwarded") == 6
    assert value(n1, "forseti_requests_total", kind="find", outcome="cache-hit") >= 1
    assert value(n1, "forseti_requests_total", kind="stop", outcome="forwarded") == 1
    assert value(n1, "forseti_refused_total", why="bad-message") == 2
    assert value(n1, "forseti_refused_total", why="forbidden") == 0

    # The leader: exits by reason, the dictionary by group and node, workers, epoch.
    def leader() -> dict:
        return scrape(m["leader"])

    lead = leader()
    assert value(lead, "forseti_exits_total", group="sleeper", reason="stopped") == 1
    assert value(lead, "forseti_exits_total", group="sleeper", reason="exit") == 1
    assert value(lead, "forseti_leader_elections_total") == 1
    (epoch,) = [dict(labels)["epoch"] for name, labels in lead if name == "forseti_epoch_info"]
    assert wait_for(lambda: value(scrape(m["node1"]), "forseti_epoch_info", epoch=epoch), 3.0, what="node1's epoch")
    left = {(loc.group, loc.node) for loc in locs[2:]}

    def processes_as_registered():
        got = {(dict(lb)["group"], dict(lb)["node"]): v for (n, lb), v in leader().items() if n == "forseti_processes"}
        want = {k: sum(1 for loc in locs[2:] if (loc.group, loc.node) == k) for k in left}
        return got == want

    wait_for(processes_as_registered, 3.0, what="forseti_processes to match the dictionary")
    assert value(leader(), "forseti_workers", state="up") == 2

    # A worker killed: its processes exit with node-down, and it counts as down.
    on_node2 = sum(1 for loc in locs[2:] if loc.node == "node2")
    c.kill("node2")

    def node2_down():
        lead = leader()
        return value(lead, "forseti_workers", state="down") == 1 and value(lead, "forseti_workers", state="up") == 1

    wait_for(node2_down, 5.0, what="node2 counted down")
    assert value(leader(), "forseti_exits_total", group="sleeper", reason="node-down") == on_node2


def listening_ports(pid: int) -> set[int]:
    """The TCP ports process ``pid`` listens on (its fds' inodes in /proc/net/tcp*)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def test_metrics_are_off_by_default(make_cluster):
    c = make_cluster(both=True)
    assert c.client().get("sleeper", "k").pid > 0
    assert listening_ports(c.procs["node1"].pid) == set()  # ipc:// endpoints, and no metrics


def daemon(tmp_path, node: str, security: str = "") -> subprocess.CompletedProcess:
    path = tmp_path / "forseti.toml"
    text = f'[node]\nname = "n"\nrole = "worker"\nlisten = "ipc://{tmp_path}/n"\n{node}\n{security}'
    path.write_text(text)
    return subprocess.run([sys.executable, "-m", "forsetid", "--config", str(path)], capture_output=True,
                          text=True, timeout=30, cwd=ROOT)  # fmt: skip


def test_protected_mode_covers_the_metrics_bind(tmp_path):
    done = daemon(tmp_path, f'metrics = "0.0.0.0:{free_port()}"')
    assert done.returncode == 2
    assert "node.metrics" in done.stderr and "security.curve" in done.stderr and "security.insecure" in done.stderr


def test_a_metrics_port_in_use_is_a_config_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        done = daemon(tmp_path, f'metrics = "127.0.0.1:{s.getsockname()[1]}"')
    assert done.returncode == 2
    assert "node.metrics" in done.stderr and "in use" in done.stderr


@pytest.mark.parametrize("address", ["9464", "127.0.0.1", "127.0.0.1:port", "127.0.0.1:0", ":9464", "h:70000"])
def test_a_bad_metrics_address_names_the_key(address):
    with pytest.raises(ConfigError, match="node.metrics: .* is not HOST:PORT"):
        parse({"node": {"metrics": address}})


def test_metrics_addresses_that_parse():
    for address in ("127.0.0.1:9464", "[::1]:9464", "localhost:9464"):
        assert parse({"node": {"metrics": address}}).node.metrics == address


def test_a_start_on_a_worker_that_goes_down_fails_with_node_down(make_cluster):
    address = f"127.0.0.1:{free_port()}"
    c = make_cluster(workers=0, node={"metrics": address}, wait=False)
    c.add("node1", metrics="")
    c.wait_up()
    failed = []

    def get():
        try:
            c.leader(timeout=10).get("slow", "k")  # ready after 2 s
        except SpawnError as exc:
            failed.append(str(exc))

    t = threading.Thread(target=get)
    t.start()
    wait_for(c.processes, 3.0, what="the start under way")
    c.kill("node1")
    t.join(10)
    assert failed and "went down" in failed[0]
    assert value(scrape(address), "forseti_start_failures_total", group="slow", reason="node-down") == 1


def test_the_snapshot_is_what_a_scrape_reads_and_a_scrape_asks_for_the_next():
    from forsetid.metrics import Metrics

    m = Metrics(f"127.0.0.1:{free_port()}")
    try:
        locs = [p.Location("g", "a", "n1", 1), p.Location("g", "b", "n1", 2), p.Location("h", "c", "n2", 3)]
        m.set_leader("e1", locs, ["up", "up", "down", "left"])
        assert not m.wanted
        got = scrape(m.address)
        assert m.wanted  # the leader takes the next snapshot however large its dictionary
        assert value(got, "forseti_processes", group="g", node="n1") == 2
        assert value(got, "forseti_processes", group="h", node="n2") == 1
        assert value(got, "forseti_workers", state="up") == 2 and value(got, "forseti_workers", state="down") == 1
        assert value(got, "forseti_workers", state="left") == 1 and value(got, "forseti_workers", state="draining") == 0
        assert value(got, "forseti_epoch_info", epoch="e1") == 1
    finally:
        m.close()


@pytest.mark.parametrize(
    "reason, kind",
    [
        ("not ready within start_timeout (0.5 s)", "timeout"),
        ("the process exited with code 7 before it was ready", "exited"),
        ("the process reported a start failure", "exited"),
        ("No module named 'x'", "cannot-start"),
        ("cannot run '/nonexistent': No such file or directory", "cannot-start"),
        ("group g is suspended here after crashing in a loop", "suspended"),
        ("the node is shutting down", "shutdown"),
        ("it is already starting or stopping here", "other"),
    ],
)
def test_start_failure_reasons_come_in_a_few_kinds(reason, kind):
    from forsetid.metrics import failure_kind

    assert failure_kind(reason) == kind


def test_calls_are_counted_by_outcome_with_their_latency_and_the_mailbox_depth(make_cluster, tmp_path):
    address = f"127.0.0.1:{free_port()}"
    calls = {"talk": {"entry": "apps:talker"}, "small": {"entry": "apps:talker", "mailbox": 1}}
    c = make_cluster(workers=0, calls=calls, wait=False)
    c.add("node1", metrics=address)
    c.wait_up()
    client = c.client("node1")
    for i in range(3):
        assert client.call("talk", "k", b"%d" % i) == b"k:%d" % i
    client.send("talk", "k", b"one way")
    with pytest.raises(Exception, match="exited with code 4"):
        client.call("talk", "dies", b"exit 4")
    held = tmp_path / "held"
    waiter = threading.Thread(
        target=c.client("node1", timeout=20).call, args=("small", "s", b"hold %s 2" % bytes(held))
    )
    waiter.start()
    wait_for(held.exists, 5, 0.01, "the call to be taken")
    samples = scrape(address)
    assert value(samples, "forseti_mailbox_depth") == 1  # the call being answered
    with pytest.raises(Exception, match="full"):
        client.send("small", "s", b"more")
    waiter.join(10)
    samples = scrape(address)
    assert value(samples, "forseti_calls_total", group="talk", kind="call", outcome="ok") == 3
    assert value(samples, "forseti_calls_total", group="talk", kind="send", outcome="ok") == 1
    assert value(samples, "forseti_calls_total", group="talk", kind="call", outcome="gone") == 1
    assert value(samples, "forseti_calls_total", group="small", kind="send", outcome="busy") == 1
    assert value(samples, "forseti_call_seconds_count", group="talk", kind="call") == 3
    assert value(samples, "forseti_mailbox_depth") == 0
    assert "a call refused (busy)" in c.log("node1")
