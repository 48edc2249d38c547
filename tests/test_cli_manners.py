"""The command line's manners, through the real CLI against a real daemon: add-call
--replace and remove-call, the global options after the command, --version, plain output
for people (no None, a command's quoting kept, one date format), --json complete, help
on every argument, usage mistakes exit 2, a silent endpoint named with its origin, and
an event stream that says when it goes quiet."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from importlib import metadata
from unittest import mock

import pytest
from cluster import ROOT, line_within, wait_for
from test_cli import ctl, solo  # noqa: F401 (solo: the fixture, a daemon of role "both")

from forsetictl import cli
from forsetictl.client import Event

DATE = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"


def bare(*args, cwd=None, env=None, timeout=20):
    """forsetictl with no endpoint from the test's environment (for the origins)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("FORSETI_")}
    full_env.update(PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "forsetictl", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=cwd,
    )


def test_add_call_replace_and_remove_call(solo):  # noqa: F811
    ep = solo.endpoint("node1")
    assert ctl("add-call", "jobs", "--entry", "forsetid.examples:sleeper", endpoint=ep).returncode == 0
    r = ctl("--json", "add-call", "jobs", "--entry", "forsetid.examples:echo", endpoint=ep)
    assert r.returncode == 3 and json.loads(r.stdout)["error"] == "group-exists", r
    assert r.stderr.count("\n") == 1 and "jobs" in r.stderr
    r = ctl("add-call", "jobs", "--replace", "--entry", "forsetid.examples:sleeper", "--arg", "x", endpoint=ep)
    assert (r.returncode, r.stdout) == (0, "added jobs\n"), r
    calls = {json.loads(x)["name"]: json.loads(x) for x in ctl("--json", "calls", endpoint=ep).stdout.splitlines()}
    assert calls["jobs"]["args"] == ["x"]
    assert ctl("get", "jobs", "k", endpoint=ep).returncode == 0
    r = ctl("--json", "remove-call", "jobs", endpoint=ep)
    assert (r.returncode, json.loads(r.stdout)) == (0, {"removed": "jobs"}), r
    r = ctl("--json", "get", "jobs", "k2", endpoint=ep)
    assert r.returncode == 3 and json.loads(r.stdout)["error"] == "unknown-group"
    r = ctl("remove-call", "jobs", endpoint=ep)
    assert r.returncode == 3 and "jobs" in r.stderr
    assert "jobs" not in ctl("calls", endpoint=ep).stdout


def test_add_call_options_after_the_command_words_and_the_dashes_form(solo):  # noqa: F811
    ep = solo.endpoint("node1")
    assert ctl("add-call", "temp", "--command", "sleep", "30", endpoint=ep).returncode == 0  # the tour's form
    r = ctl("add-call", "temp", "--command", "sleep", "3601", endpoint=ep)
    assert r.returncode == 3 and "(forsetictl add-call temp --replace --command ..., the option anywhere" in r.stderr
    r = ctl("add-call", "temp", "--command", "sleep", "3601", "--replace", "--restart", "always", "--arg", "7",
            "--json", endpoint=ep)  # fmt: skip
    assert (r.returncode, json.loads(r.stdout)) == (0, {"added": "temp", "replace": True}), r
    r = ctl("add-call", "dashes", "--replace", "--", "grep", "-v", "--replace", "{key}", endpoint=ep)
    assert (r.returncode, r.stdout) == (0, "added dashes\n"), r
    r = ctl("add-call", "mixed", "--command", "ls", "--arg", "-x", "--ready", "--", "-l", "--json", endpoint=ep)
    assert (r.returncode, r.stdout) == (0, "added mixed\n"), r
    r = ctl("add-call", "odd", "--command", "--", "-program", "-h", endpoint=ep)  # a first word with '-'
    assert r.returncode == 0, r
    calls = {json.loads(x)["name"]: json.loads(x) for x in ctl("--json", "calls", endpoint=ep).stdout.splitlines()}
    assert (calls["temp"]["command"], calls["temp"]["restart"], calls["temp"]["args"]) == (
        ["sleep", "3601"], "always", ["7"],
    )  # fmt: skip
    assert calls["dashes"]["command"] == ["grep", "-v", "--replace", "{key}"]
    assert (calls["mixed"]["command"], calls["mixed"]["args"], calls["mixed"]["ready"]) == (
        ["ls", "-l", "--json"], ["-x"], True,
    )  # fmt: skip
    assert calls["odd"]["command"] == ["-program", "-h"]
    r = ctl("--json", "get", "temp", "t", endpoint=ep)  # the command runs as it was given
    pid = json.loads(r.stdout)["pid"]
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert f.read().split(b"\0")[:3] == [b"sleep", b"3601", b"7"]


def test_an_unknown_placeholder_is_a_usage_error_the_request_never_left(solo):  # noqa: F811
    ep = solo.endpoint("node1")
    r = ctl("--json", "add-call", "bad", "--command", "echo", "{nope}", endpoint=ep)
    assert r.returncode == 2, r
    assert json.loads(r.stdout)["error"] == "bad-call" and "{nope}" in r.stderr
    r = ctl("add-call", "bad", "--process-endpoint", "ipc:///tmp/{kee}.sock", "--entry", "m:f", endpoint=ep)
    assert r.returncode == 2 and "{kee}" in r.stderr
    r = ctl("add-call", "bad", "--log", "/tmp/{grp}.log", "--entry", "m:f", endpoint=ep)
    assert r.returncode == 2 and "{grp}" in r.stderr
    r = ctl(
        "add-call", "fine", "--command", "sh", "-c", 'echo "${HOME}" "$1"', "sh", "{key}", endpoint=ep
    )  # ${HOME}: the shell's
    assert r.returncode == 0, r
    assert "bad" not in ctl("calls", endpoint=ep).stdout


def test_global_options_after_the_command_the_later_one_wins(solo, tmp_path):  # noqa: F811
    ep = solo.endpoint("node1")
    r = bare("get", "sleeper", "k", "--timeout", "2", "--endpoint", ep, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["key"] == "k", r
    r = bare("ls", "--json", "--endpoint", ep)
    assert [json.loads(x)["key"] for x in r.stdout.splitlines()] == ["k"]
    nobody = f"ipc://{tmp_path}/nobody"
    assert bare("--endpoint", nobody, "nodes", "--endpoint", ep).returncode == 0  # the later one
    r = bare("--endpoint", ep, "--timeout", "0.3", "nodes", "--endpoint", nobody)
    assert r.returncode == 4 and nobody in r.stderr
    import zmq

    silent = zmq.Context.instance().socket(zmq.ROUTER)  # it listens, and answers nothing
    try:
        silent.bind(f"ipc://{tmp_path}/silent")
        start = time.monotonic()
        r = bare(
            "--timeout", "20", "find", "default", "k", "--timeout", "0.3", "--endpoint", f"ipc://{tmp_path}/silent"
        )
        assert r.returncode == 4 and "within 0.3 s" in r.stderr and time.monotonic() - start < 10
    finally:
        silent.close(0)
    r = bare("--json", "nodes", "--endpoint", ep)  # one before, none after: it stands
    assert json.loads(r.stdout.splitlines()[0])["name"] == "node1"
    # --config before and --endpoint after (or the other way round): one or the other.
    r = bare("--config", str(solo.configs["node1"]), "nodes", "--endpoint", ep)
    assert r.returncode == 2 and "one or the other" in r.stderr
    # After --command's words, forsetictl's options are still forsetictl's; after --, the command's.
    r = bare("add-call", "argv", "--endpoint", ep, "--command", "printf", "%s", "--json", "--timeout", "1")
    assert (r.returncode, json.loads(r.stdout)) == (0, {"added": "argv", "replace": False}), r
    r = bare("add-call", "argv2", "--endpoint", ep, "--command", "printf", "%s", "--", "--json", "--timeout", "1")
    assert (r.returncode, r.stdout) == (0, "added argv2\n"), r
    calls = {c["name"]: c for c in map(json.loads, bare("calls", "--endpoint", ep, "--json").stdout.splitlines())}
    assert calls["argv"]["command"] == ["printf", "%s"]
    assert calls["argv2"]["command"] == ["printf", "%s", "--json", "--timeout", "1"]


def test_version():
    r = bare("--version")
    assert (r.returncode, r.stdout) == (0, f"forsetictl {metadata.version('forseti')}\n")
    assert cli.version() == metadata.version("forseti")
    import forsetid

    with mock.patch.object(metadata, "version", side_effect=metadata.PackageNotFoundError("forseti")):
        assert cli.version() == forsetid.__version__


def test_plain_output_for_people(solo, tmp_path):  # noqa: F811
    ep = solo.endpoint("node1")
    log = f"{tmp_path}/{{key}}.log"
    r = ctl(
        "add-call", "quoted", "--arg", "x y", "--log", log, "--restart", "on-failure", "--command", "sh", "-c",
        'exec sleep 600 "$0"', endpoint=ep,
    )  # fmt: skip
    assert r.returncode == 0, r
    r = ctl("get", "sleeper", "k1", endpoint=ep)
    assert re.fullmatch(rf"sleeper/k1 node=node1 pid=\d+ endpoint=- started={DATE}\n", r.stdout), r.stdout
    ls = ctl("ls", endpoint=ep).stdout
    row = ls.splitlines()[1]
    assert re.fullmatch(rf"sleeper +k1 +node1 +\d+ +- +{DATE}", row), ls
    calls = ctl("calls", endpoint=ep).stdout
    header, *rows = calls.splitlines()
    assert header.split() == [
        "NAME",
        "READY",
        "START_TIMEOUT",
        "STOP_TIMEOUT",
        "RESTART",
        "ENDPOINT",
        "LOG",
        "SUSPENDED_ON",
        "ARGS",
        "HOW",
    ]
    quoted = next(line for line in rows if line.startswith("quoted "))
    assert quoted.split(None, 8) == [
        "quoted",
        "no",
        "10",
        "5",
        "on-failure",
        "-",
        f"{tmp_path}/{{key}}.log",
        "-",
        """["x y"]  command sh -c 'exec sleep 600 "$0"'""",
    ]
    assert re.search(r"^sleeper +no +10 +5 +never +- +- +- +- +entry forsetid.examples:sleeper$", calls, re.M), calls
    slow = next(line for line in rows if line.startswith("slow "))
    assert slow.split()[:2] == ["slow", "yes"] and "[2.0]" in slow
    for args in (("find", "sleeper", "k1"), ("ls",), ("nodes",), ("calls",)):
        out = ctl(*args, endpoint=ep).stdout
        assert "None" not in out and out, (args, out)


def test_json_is_complete_one_object_per_line(solo):  # noqa: F811
    ep = solo.endpoint("node1")
    assert ctl("add-call", "bare", "--entry", "forsetid.examples:sleeper", endpoint=ep).returncode == 0
    calls = {json.loads(x)["name"]: json.loads(x) for x in ctl("--json", "calls", endpoint=ep).stdout.splitlines()}
    assert calls["bare"] == {
        "name": "bare",
        "entry": "forsetid.examples:sleeper",
        "command": None,
        "args": [],
        "ready": False,
        "start_timeout": 10.0,
        "stop_timeout": 5.0,
        "endpoint": None,
        "log": None,
        "restart": "never",
        "mailbox": 1000,
        "suspended_on": [],
    }
    assert calls["late_cmd"]["command"] == ["true"] and calls["late_cmd"]["entry"] is None
    r = ctl("--json", "add-call", "more", "--entry", "forsetid.examples:sleeper", endpoint=ep)
    assert json.loads(r.stdout) == {"added": "more", "replace": False}
    r = ctl("--json", "stop", "sleeper", "nothing-here", endpoint=ep)
    assert r.returncode == 1 and json.loads(r.stdout) == {
        "error": "not-found",
        "message": "no process for sleeper/nothing-here",
    }


def test_events_plain_lines(solo):  # noqa: F811
    ep = solo.endpoint("node1")
    follower = subprocess.Popen(
        [sys.executable, "-m", "forsetictl", "events", "--endpoint", ep, "--count", "4"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert "following events" in line_within(follower.stderr)
        assert ctl("get", "late_cmd", "once", endpoint=ep).returncode == 0  # `true`: exits 0 at once
        loc = solo.client().get("sleeper", "ev")
        os.kill(loc.pid, signal.SIGKILL)
        out, err = follower.communicate(timeout=10)
    finally:
        follower.kill()
    assert follower.returncode == 0, err
    lines = out.splitlines()
    assert len(lines) == 4 and all(re.match(rf"{DATE} \d+ (started|exited) ", line) for line in lines), out
    exits = [line.split(" ", 3)[3] for line in lines if " exited " in line]
    assert any(re.fullmatch(r"exited late_cmd/once node=node1 pid=\d+ reason=exit code=0", x) for x in exits), out
    assert f"exited sleeper/ev node=node1 pid={loc.pid} reason=exit signal=9" in exits, out
    assert "None" not in out


def test_event_lines_without_none_and_the_leader_changed(capsys):
    out = cli.Output(False)
    at = time.mktime((2026, 12, 1, 9, 14, 4, 0, 0, -1))
    out.event(Event(7, "exited", "g", "k", "n1", 42, None, None, "node-down", at))
    out.event(Event(8, "missed", "", "", "", 0, None, None, None, at, missed=0))
    out.event(Event(9, "missed", "", "", "", 0, None, None, None, at, missed=3))
    assert capsys.readouterr().out.splitlines() == [
        "2026-12-01 09:14:04 7 exited g/k node=n1 pid=42 reason=node-down",
        "2026-12-01 09:14:04 8 the leader changed: what you know may be out of date",
        "2026-12-01 09:14:04 9 3 events were missed: what you know may be out of date",
    ]


def _actions(ap: argparse.ArgumentParser, name="forsetictl"):
    for action in ap._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, p in action.choices.items():
                yield from _actions(p, f"{name} {sub}")
        yield name, action


def test_help_on_every_argument():
    missing = [(where, a.dest) for where, a in _actions(cli.parser()) if not a.help or a.help == argparse.SUPPRESS]
    assert missing == []
    for command in ("get", "add-call", "events", "remove-call", "ls"):
        r = bare(command, "--help")
        assert r.returncode == 0 and "--timeout S" in r.stdout and "the later one wins" in r.stdout, r
    assert "the words after -- are the command's" in bare("--help").stdout
    r = bare("add-call", "--help")
    assert "up to the next\nadd-call option" in r.stdout and "add-call temp --replace -- sleep 3601" in r.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["frobnicate"],
        [],
        ["get", "g"],
        ["get", "a b", "k"],
        ["--timeout", "soon", "ls"],
        ["ls", "--timeout", "0"],
        ["events", "--count", "0"],
        ["events", "--count", "many"],
        ["add-call", "g"],
        ["add-call", "g", "--entry", "m:f", "--command", "true"],
        ["add-call", "g", "--command"],
        ["add-call", "g", "--command", "--replace"],
        ["add-call", "g", "--replace", "--"],
        ["add-call", "g", "--entry", "m:f", "--", "true"],
        ["add-call", "g", "--entry", "m:f", "--start-timeout", "-1"],
        ["add-call", "g", "--entry", "m:f", "--restart", "sometimes"],
        ["remove-call"],
        ["--endpoint", "tcp://127.0.0.1:1", "--config", "x.toml", "ls"],
    ],
)
def test_usage_mistakes_exit_2(args, tmp_path):
    nobody = f"ipc://{tmp_path}/nobody"  # were one of them sent, it would exit 4
    r = bare("--json", "--timeout", "0.3", *args, env={"FORSETI_ENDPOINT": nobody})
    assert r.returncode == 2, r
    assert r.stderr.splitlines()[-1].startswith("forsetictl"), r.stderr
    assert json.loads(r.stdout)["error"] in ("usage", "bad-call"), r.stdout


def test_nothing_listening_names_the_endpoint_and_where_it_came_from(tmp_path):
    nobody = f"ipc://{tmp_path}/nobody"
    ask = ("--timeout", "5", "nodes")  # refused: told within about a second, not after 5 s
    ending = ": is forsetid running there?\n"
    start = time.monotonic()
    r = bare("--endpoint", nobody, *ask)
    assert time.monotonic() - start < 4.0  # the interpreter's start, and well under the 5 s timeout
    assert (r.returncode, r.stderr) == (4, f"forsetictl: nothing listens at {nobody} (from --endpoint){ending}")
    r = bare(*ask, env={"FORSETI_ENDPOINT": nobody})
    assert r.stderr == f"forsetictl: nothing listens at {nobody} (from $FORSETI_ENDPOINT){ending}"
    conf = tmp_path / "conf.toml"
    conf.write_text(f'[node]\nlisten = "{nobody}"\n')
    r = bare("--config", str(conf), *ask)
    assert r.stderr == f"forsetictl: nothing listens at {nobody} (the node of --config {conf}){ending}"
    (tmp_path / "forseti.toml").write_text(f'[node]\nlisten = "{nobody}"\n')
    r = bare("--json", *ask, cwd=tmp_path)
    assert r.returncode == 4 and json.loads(r.stdout) == {
        "error": "timeout",
        "message": f"nothing listens at {nobody} (the node of ./forseti.toml){ending}".rstrip("\n"),
    }
    empty = tmp_path / "empty"
    empty.mkdir()
    r = bare(*ask, cwd=empty)
    assert r.returncode == 4, r
    assert r.stderr == f"forsetictl: nothing listens at tcp://127.0.0.1:7072 (the default endpoint){ending}"


def test_events_says_when_the_stream_goes_silent_and_when_it_flows_again(solo):  # noqa: F811
    ep = solo.endpoint("node1")
    silence = solo.client().info().silence  # heartbeat x liveness: 1.5 s here
    follower = subprocess.Popen(
        [sys.executable, "-m", "forsetictl", "events", "--endpoint", ep],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    stopped = False
    try:
        assert "following events" in line_within(follower.stderr)
        time.sleep(silence * 2)  # ticks flow: nothing to say
        solo.kill("node1", signal.SIGSTOP)
        stopped = True
        line = line_within(follower.stderr)
        assert re.fullmatch(rf"forsetictl: no events or ticks from \S+ for {silence:g} s: is the leader up\?\n", line)
        solo.kill("node1", signal.SIGCONT)
        stopped = False
        assert line_within(follower.stderr) == "forsetictl: events are flowing again\n"
        follower.send_signal(signal.SIGINT)
        out, err = follower.communicate(timeout=10)
    finally:
        if stopped:
            solo.kill("node1", signal.SIGCONT)
        follower.kill()
    assert follower.returncode == 0 and out == "" and err == "", (out, err)


def _follow(c, *args):
    cmd = [sys.executable, "-m", "forsetictl", "--endpoint", c.endpoint("node1"), "events", *args]
    follower = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    assert "following events" in line_within(follower.stderr)  # it is live now
    return follower


def _output(follower, timeout: float = 20) -> list[str]:
    try:
        out, _ = follower.communicate(timeout=timeout)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.communicate()
    return out.splitlines()


def test_events_say_when_the_leader_changed(make_cluster):
    c = make_cluster(workers=1, cluster={"heartbeat": 0.2, "liveness": 3})
    follower = _follow(c, "sleeper", "--count", "1")
    c.kill("leader", signal.SIGKILL)
    c.procs["leader"].wait(5)
    c.start("leader")
    (line,) = _output(follower)  # (the new leader's first tick on that group's topic tells it)
    assert "the leader changed: what you know may be out of date" in line


def test_a_process_a_returning_worker_still_runs_is_shown_running_not_started(make_cluster):
    """node1 freezes until the leader takes it for down (its process: exited, node-down),
    then thaws and says hello with that process: the leader adopts it, and the stream
    shows it as running, not as a new start."""
    c = make_cluster(workers=1, cluster={"heartbeat": 0.2, "liveness": 3})
    loc = c.leader().get("sleeper", "old")
    follower = _follow(c, "sleeper", "--count", "2")
    c.kill("node1", signal.SIGSTOP)
    try:
        wait_for(lambda: c.leader().nodes()[0].state == "down", 5, 0.05, "node1 down")
    finally:
        c.kill("node1", signal.SIGCONT)
    lines = _output(follower)
    assert f" exited sleeper/old node=node1 pid={loc.pid} reason=node-down" in lines[0], lines
    assert f" running sleeper/old node=node1 pid={loc.pid}" in lines[1], lines


def test_inside_a_managed_process_forseti_endpoint_and_key_are_not_forsetictls(monkeypatch, tmp_path):
    """forsetid gives a process FORSETI_ENDPOINT (its own endpoint) and FORSETI_KEY (its
    key in its group): forsetictl run there must not take them for its target and key."""
    from forsetictl.config import from_env, resolve

    monkeypatch.chdir(tmp_path)
    (tmp_path / "forseti.toml").write_text('[node]\nlisten = "tcp://127.0.0.1:7999"\n')
    monkeypatch.setenv("FORSETI_ENDPOINT", "tcp://127.0.0.1:1")
    monkeypatch.setenv("FORSETI_KEY", "k1")
    assert resolve()[0] == "tcp://127.0.0.1:1" and from_env("FORSETI_KEY") == "k1"  # a user's shell
    monkeypatch.setenv("FORSETI_GROUP", "users")
    assert resolve()[0] == "tcp://127.0.0.1:7999" and from_env("FORSETI_KEY") is None  # a managed process


def test_an_endpoint_without_a_scheme_is_a_usage_error_in_one_line():
    for args in (("--endpoint", "127.0.0.1:7072", "ls"), ("--endpoint", "tcp://127.0.0.1:1,127.0.0.1:2", "ls")):
        r = bare(*args)
        assert r.returncode == 2, r
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
        assert "has no known scheme" in r.stderr and "127.0.0.1:" in r.stderr
    r = bare("--endpoint", "127.0.0.1:7072", "ls")
    assert "write tcp://127.0.0.1:7072" in r.stderr
