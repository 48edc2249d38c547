"""A quick smoke run of `forsetictl bench --json` with tiny counts: the shape of its
JSON, positive ratios, and nothing left running afterwards. No timing thresholds: the
numbers belong to the benchmark, not to the tests."""

import json
import os
import subprocess
import sys
import uuid

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
