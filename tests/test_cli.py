"""forsetictl as a user runs it: every command, --json, and the exit statuses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from cluster import ROOT, line_within


def ctl(*args, endpoint=None, config=None, timeout=20, env=None):
    where = ["--endpoint", endpoint] if endpoint else ["--config", str(config)] if config else []
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "forsetictl", *where, *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


@pytest.fixture
def solo(make_cluster):
    return make_cluster(both=True, calls={"late_cmd": {"command": ["true"]}})


def test_get_find_stop_and_exit_statuses(solo):
    ep = solo.endpoint("node1")
    r = ctl("get", "sleeper", "k1", endpoint=ep)
    assert r.returncode == 0 and r.stdout.startswith("sleeper/k1 node=node1 pid="), r
    r = ctl("--json", "find", "sleeper", "k1", endpoint=ep)
    loc = json.loads(r.stdout)
    assert r.returncode == 0
    assert set(loc) == {"group", "key", "node", "pid", "endpoint", "started_at"}
    assert (loc["group"], loc["key"], loc["node"], loc["endpoint"]) == ("sleeper", "k1", "node1", None)
    assert abs(loc["started_at"] - time.time()) < 60
    r = ctl("stop", "sleeper", "k1", endpoint=ep)
    assert r.returncode == 0 and "stopped sleeper/k1" in r.stdout
    for args in (("find", "sleeper", "k1"), ("stop", "sleeper", "k1")):
        r = ctl("--json", *args, endpoint=ep)
        assert r.returncode == 1
        assert json.loads(r.stdout)["error"] == "not-found"
        assert r.stderr.count("\n") == 1 and "no process for sleeper/k1" in r.stderr


def test_cluster_errors_exit_3_with_a_json_error(solo):
    r = ctl("--json", "get", "nope", "k", endpoint=solo.endpoint("node1"))
    assert r.returncode == 3
    assert json.loads(r.stdout) == {
        "error": "unknown-group",
        "message": "unknown group 'nope' (known: default, late_cmd, sleeper, slow)",
    }
    r = ctl("add-call", "broken", "--entry", "no_module_here:f", endpoint=solo.endpoint("node1"))
    assert r.returncode == 0
    r = ctl("get", "broken", "k", endpoint=solo.endpoint("node1"))
    assert r.returncode == 3 and "No module named 'no_module_here'" in r.stderr


def test_no_answer_exits_4(tmp_path):
    r = ctl("--timeout", "0.3", "find", "default", "k", endpoint=f"ipc://{tmp_path}/nobody")
    assert r.returncode == 4 and "nothing listens at" in r.stderr
    r = ctl("--json", "--timeout", "0.3", "nodes", endpoint=f"ipc://{tmp_path}/nobody")
    assert r.returncode == 4 and json.loads(r.stdout)["error"] == "timeout"


def test_usage_and_config_errors_exit_2(tmp_path):
    assert ctl("frobnicate").returncode == 2
    assert ctl("get", "only-group").returncode == 2
    bad = tmp_path / "bad.toml"
    bad.write_text("[node]\nlisten = 7072\n")
    r = ctl("nodes", config=bad)
    assert r.returncode == 2
    assert r.stderr == f"forsetictl: {bad}: node.listen: expected a string\n"
    bad.write_text('[node]\nrole = "boss"\n')
    r = ctl("--json", "nodes", config=bad)
    assert r.returncode == 2 and json.loads(r.stdout)["error"] == "config"
    assert f"{bad}: node.role: expected one of 'leader', 'worker', 'both', got 'boss'" in r.stderr
    r = ctl("nodes", config=tmp_path / "absent.toml")
    assert r.returncode == 2 and "absent.toml: cannot read" in r.stderr


def test_ls_nodes_calls_and_add_call(solo):
    ep = solo.endpoint("node1")
    for key in ("b", "a"):
        assert ctl("get", "sleeper", key, endpoint=ep).returncode == 0
    r = ctl("--json", "ls", endpoint=ep)
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [(x["group"], x["key"]) for x in rows] == [("sleeper", "a"), ("sleeper", "b")]
    assert ctl("--json", "ls", "default", endpoint=ep).stdout == ""
    r = ctl("ls", endpoint=ep)
    assert r.stdout.splitlines()[0].split() == ["GROUP", "KEY", "NODE", "PID", "ENDPOINT", "STARTED_AT"]
    r = ctl("--json", "nodes", endpoint=ep)
    assert [json.loads(x) for x in r.stdout.splitlines()] == [
        {"name": "node1", "state": "up", "processes": 2, "capacity": 0, "suspended": [], "listen": ep}
    ]
    r = ctl("add-call", "jobs", "--arg", "x", "--command", "sh", "-c", 'exec sleep 600 "$0"', endpoint=ep)
    assert r.returncode == 0, r.stderr
    calls = {json.loads(x)["name"]: json.loads(x) for x in ctl("--json", "calls", endpoint=ep).stdout.splitlines()}
    assert calls["jobs"]["command"] == ["sh", "-c", 'exec sleep 600 "$0"'] and calls["jobs"]["args"] == ["x"]
    assert calls["sleeper"]["entry"] == "forsetid.examples:sleeper"
    r = ctl("--json", "get", "jobs", "j", endpoint=ep)
    assert r.returncode == 0 and json.loads(r.stdout)["key"] == "j"


def test_events_command_prints_json_lines(solo):
    ep = solo.endpoint("node1")
    full_env = {**os.environ, "PYTHONPATH": str(ROOT)}
    follower = subprocess.Popen(
        [sys.executable, "-m", "forsetictl", "--endpoint", ep, "--json", "events", "sleeper", "--count", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full_env,
    )
    try:
        assert "following events" in line_within(follower.stderr)  # it is live now
        loc = solo.client().get("sleeper", "ev")
        os.kill(loc.pid, signal.SIGKILL)
        out, err = follower.communicate(timeout=10)
    finally:
        follower.kill()
    events = [json.loads(x) for x in out.splitlines()]
    assert follower.returncode == 0, err
    assert [(e["kind"], e["key"], e["pid"]) for e in events] == [("started", "ev", loc.pid), ("exited", "ev", loc.pid)]
    assert set(events[0]) == {"seq", "kind", "group", "key", "node", "pid", "exit_code", "signal", "reason", "at"}
    assert events[1]["reason"] == "exit" and events[1]["signal"] == signal.SIGKILL and events[1]["exit_code"] is None


def test_endpoint_from_environment_and_config(solo):
    r = ctl("nodes", env={"FORSETI_ENDPOINT": solo.endpoint("node1")})
    assert r.returncode == 0 and "node1" in r.stdout
    r = ctl("nodes", config=solo.configs["node1"])
    assert r.returncode == 0 and "node1" in r.stdout
