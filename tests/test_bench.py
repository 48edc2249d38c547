"""A quick smoke run of `forsetictl bench --json` with tiny counts: the shape of its
JSON, positive ratios, and nothing left running afterwards. No timing thresholds: the
numbers belong to the benchmark, not to the tests."""

import json
import os
import subprocess
import sys
import uuid

import pytest
from cluster import ROOT

from forsetictl.localcluster import marked


def bench(*args: str) -> subprocess.CompletedProcess:
    """``forsetictl --json bench ARGS``, which must succeed and leave nothing running:
    every process it started carries a mark, looked for once it is done."""
    mark = f"FORSETI_BENCH_TEST={uuid.uuid4().hex}"
    env = {**os.environ, mark.split("=")[0]: mark.split("=")[1]}
    cmd = [sys.executable, "-m", "forsetictl", "--json", "bench", *args]
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=120, env=env, cwd=ROOT)
    finally:
        leftovers = marked(mark.encode())
        for pid in leftovers:
            os.kill(pid, 9)
    assert not leftovers, f"the bench left processes behind: {leftovers}"
    assert done.returncode == 0, done.stderr.decode()
    return done


def test_bench_json_smoke():
    done = bench("--workers", "2", "--count", "20", "--window", "4", "--seconds", "0.1", "--forks", "10",
                 "--starts", "3", "--concurrency", "2", "--exits", "2", "--losses", "1")  # fmt: skip
    assert done.stderr == b""  # no progress display with --json
    report = json.loads(done.stdout)
    assert set(report) == {"info", "baselines", "results"}
    for name in ("raw round trip median", "raw pipelined echo/s", "fork+exit+reap median",
                 "worker SIGSTOP -> find is None (heartbeats) median"):  # fmt: skip
        assert report["baselines"][name]["value"] > 0
    names = [r["name"] for r in report["results"]]
    for expected in (
        "cached find (Client, sequential) median",
        "cached find, 4 in flight (1 DEALER)",
        "near-cache find (Client(cache=True))",
        "miss: find via worker -> leader p99",
        "new entry: get, sequential median",
        "new command: starts/s, 2 concurrent",
        "exit -> event at a subscriber p99",
        "exit -> find is None on another node p99",
        "worker SIGKILL -> find is None on another node median",
        "worker SIGKILL -> find is None on another node p99",
        "call, key on the caller's node median",
        "call, key on another node p99",
        "calls, 4 in flight (1 DEALER)",
        "sends taken by the process, 4 in flight",
        "process SIGKILL -> gone at a waiting caller median",
        "worker SIGKILL -> gone at a waiting caller median",
        "cached find (AsyncClient, sequential) median",
        "cached find (AsyncClient), vs raw zmq.asyncio median",
        "gets of a live key, 1000 awaited at once (AsyncClient)",
        "event-loop lag, 10 ms ticker, 1000 in flight p99",
        "client failover: SIGKILL of its node -> next answered find median",
    ):
        assert expected in names
    for r in report["results"]:
        assert set(r) >= {"name", "value", "unit", "baseline", "baseline_value", "ratio", "target", "ok"}
        assert isinstance(r["ratio"], float) and r["ratio"] > 0, r
        assert r["baseline"] in report["baselines"]


def test_bench_curve_json_smoke():
    done = bench("--curve", "--workers", "1", "--count", "20", "--starts", "3")
    assert done.stderr == b""
    report = json.loads(done.stdout)
    assert set(report) == {"info", "baselines", "results"}
    for name in (
        "raw round trip median",
        "raw CURVE round trip median",
        "cached find without CURVE median",
        "new entry: get without CURVE median",
    ):
        assert report["baselines"][name]["value"] > 0
    rows = {(r["name"], r["baseline"]): r for r in report["results"]}
    for row, target in (
        (("raw CURVE round trip median", "raw round trip median"), None),
        (("cached find with CURVE median", "raw CURVE round trip median"), "<= 1.15x"),
        (("cached find with CURVE, vs without median", "cached find without CURVE median"), "<= 1.25x"),
        (("new entry with CURVE: get, sequential median", "new entry: get without CURVE median"), "<= 1.1x"),
    ):
        assert rows[row]["target"] == target, rows[row]
    for r in report["results"]:
        assert set(r) >= {"name", "value", "unit", "baseline", "baseline_value", "ratio", "target", "ok"}
        assert isinstance(r["ratio"], float) and r["ratio"] > 0, r
        assert r["baseline"] in report["baselines"]


def test_bench_curve_refuses_a_cluster_of_someone_else():
    for other in (["--endpoint", "ipc:///nonexistent/forseti"], ["--config", "/nonexistent.toml"]):
        cmd = [sys.executable, "-m", "forsetictl", "--json", *other, "bench", "--curve"]
        done = subprocess.run(cmd, capture_output=True, timeout=30, cwd=ROOT)
        assert done.returncode == 2, done.stderr.decode()
        assert json.loads(done.stdout)["error"] == "usage"
        assert b"--curve" in done.stderr and b"--config/--endpoint" in done.stderr


def test_simulate_json_smoke():
    cmd = [
        sys.executable,
        "-m",
        "forsetictl",
        "--json",
        "bench",
        "--simulate",
        "--sim-workers",
        "3,30",
        "--sim-keys",
        "300,3000",
        "--sim-ops",
        "200",
    ]
    done = subprocess.run(cmd, capture_output=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr.decode()
    rows = json.loads(done.stdout)["simulation"]
    assert [(r["workers"], r["keys"]) for r in rows] == [(3, 300), (30, 300), (30, 3000)]
    for r in rows:
        assert all(r[k] > 0 for k in ("get_new_us", "choose_us", "scan_us", "find_us"))


@pytest.mark.slow
def test_bench_failover_json_smoke(tmp_path):
    """One round of each signal in each setting, on etcds and clusters of its own: every
    row there, with its target where the issue set one, the logs kept with a journal of
    the signals and of the leader's key in etcd, and nothing left running (etcd
    included: it carries the mark too)."""
    done = bench("--failover", "--rounds", "1", "--workers", "1", "--candidates", "2", "--count", "20",
                 "--starts", "3", "--logs", str(tmp_path))  # fmt: skip
    assert done.stderr == b""
    report = json.loads(done.stdout)
    assert set(report) == {"info", "baselines", "results", "samples"}
    assert report["info"]["etcd"].startswith("etcd ")
    for name in (
        "cached find, backend memory median",
        "new entry: get, backend memory median",
        "etcd request (HTTP gateway), etcd defaults",
        "etcd lease lapse (TTL 2 s), etcd defaults",
        "etcd request (HTTP gateway), tuned etcd 50/500 ms",
        "etcd lease lapse (TTL 1 s), tuned etcd 50/500 ms",
    ):
        assert report["baselines"][name]["value"] > 0, name
    rows = {(r["name"], r["baseline"]): r for r in report["results"]}
    defaults, tuned = "etcd defaults", "tuned etcd 50/500 ms"
    for row, target in (
        (("cached find, backend etcd median", "cached find, backend memory median"), "<= 1.1x"),
        (("new entry: get, backend etcd median", "new entry: get, backend memory median"), "<= 1.1x"),
        ((f"failover after SIGKILL, {defaults}, lease 2 s: median", f"etcd lease lapse (TTL 2 s), {defaults}"),
         "<= 2.50 s"),
        ((f"failover after SIGKILL, {defaults}, lease 2 s: max", f"etcd lease lapse (TTL 2 s), {defaults}"),
         "<= 3.50 s"),
        ((f"failover after SIGTERM, {defaults}, lease 2 s: median", f"etcd request (HTTP gateway), {defaults}"),
         "<= 300.0 ms"),
        ((f"failover after SIGTERM, {defaults}, lease 2 s: max", f"etcd request (HTTP gateway), {defaults}"), None),
        ((f"failover after SIGKILL, {tuned}, lease 1 s: median", f"etcd lease lapse (TTL 1 s), {tuned}"), None),
        ((f"failover after SIGTERM, {tuned}, lease 1 s: max", f"etcd request (HTTP gateway), {tuned}"), None),
    ):  # fmt: skip
        assert rows[row]["target"] == target, rows[row]
    for r in report["results"]:
        assert set(r) >= {"name", "value", "unit", "baseline", "baseline_value", "ratio", "target", "ok"}
        assert isinstance(r["ratio"], float) and r["ratio"] > 0, r
        assert r["baseline"] in report["baselines"]
    samples, by_name = report["samples"], {r["name"]: r for r in report["results"]}
    for how in ("SIGKILL", "SIGTERM"):
        for setting in (f"{defaults}, lease 2 s", f"{tuned}, lease 1 s"):
            values = samples[f"failover after {how}, {setting}"]["values"]
            assert len(values) == 1 and values[0] > 0  # one round: its median and max are that sample
            assert by_name[f"failover after {how}, {setting}: max"]["value"] == values[0]
            assert by_name[f"failover after {how}, {setting}: median"]["value"] == values[0]
    assert len(samples[f"etcd lease lapse (TTL 2 s), {defaults}"]["values"]) == 5
    for setting in ("defaults", "tuned"):
        kept = tmp_path / setting
        assert {p.name for p in kept.iterdir()} == {"bench.log", "etcd.log", "leader1.log", "leader2.log", "node1.log"}
        journal = (kept / "bench.log").read_text()
        for line in ("SIGKILL to leader", "SIGTERM to leader", "succeeded after", "etcd: the leader's key deleted",
                     "etcd: the leader's key created by leader"):  # fmt: skip
            assert line in journal, journal
        assert " leads (term " in (kept / "leader1.log").read_text() + (kept / "leader2.log").read_text()


def test_bench_failover_refuses_a_cluster_of_someone_else_and_another_mode():
    for other, named in (
        (["--endpoint", "ipc:///nonexistent/forseti"], b"--config/--endpoint"),
        (["bench", "--simulate"], b"--simulate"),
        (["bench", "--curve"], b"--failover"),
    ):
        args = other if other[0] == "bench" else [*other, "bench"]
        cmd = [sys.executable, "-m", "forsetictl", "--json", *args, "--failover"]
        done = subprocess.run(cmd, capture_output=True, timeout=30, cwd=ROOT)
        assert done.returncode == 2, done.stderr.decode()
        assert json.loads(done.stdout)["error"] == "usage"
        assert named in done.stderr, done.stderr


def test_bench_saturation_json_smoke():
    # A leader of its own and stand-in workers, at a tiny size: the rows are there and
    # sane; how fast is for the benchmark to say.
    done = bench("--saturation", "--sat-workers", "2,3", "--sat-keys", "20,40", "--seconds", "0.05")
    assert done.stderr == b""
    report = json.loads(done.stdout)
    assert set(report) == {"info", "baselines", "results"}
    assert report["info"]["workers"].startswith("protocol-speaking stand-ins")
    assert report["baselines"]["raw pipelined echo/s"]["value"] > 0
    names = [r["name"] for r in report["results"]]
    for size in ("2 workers, 20 keys", "3 workers, 20 keys", "3 workers, 40 keys"):  # workers, then keys
        for name in ("misses/s at saturation", "leader CPU per miss", "misses/s one leader core takes",
                     "starts/s at saturation", "leader CPU per start", "starts/s one leader core takes"):  # fmt: skip
            assert f"{name}, {size}" in names
    for r in report["results"]:
        assert r["value"] > 0 and r["ratio"] > 0 and r["ok"] in (True, False), r
        assert r["baseline"] in report["baselines"]
    assert report["baselines"]["leader CPU per start (2 workers, 20 keys)"]["value"] > 0


def test_bench_saturation_refuses_a_hello_too_large():
    cmd = [sys.executable, "-m", "forsetictl", "bench", "--saturation", "--sat-workers", "1", "--sat-keys", "20000"]
    done = subprocess.run(cmd, capture_output=True, timeout=60, cwd=ROOT)
    assert done.returncode == 3
    assert done.stderr.decode().strip().splitlines() == [
        "forsetictl: bench: 20,000 keys over 1 workers: at most 10,000 a worker (its hello must fit in one message); "
        "give more workers"
    ]
