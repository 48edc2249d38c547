"""A key is data: what a user types never becomes a command, on real daemons. The
shipped config runs hostile keys as data; a group that would paste a placeholder into a
shell's script is refused at start and by add-call; an endpoint keeps a hostile key in
its folder."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import msgspec
import pytest
import zmq
from cluster import ROOT, Cluster, free_port, wait_for
from test_cli import ctl

from forsetid import protocol as p

SHELL_FORMS = [
    ["sh", "-c", "echo {key}"],
    ["bash", "-c", "echo {key}"],
    ["/bin/sh", "-c", "echo {key}"],
    ["dash", "-lc", "echo {key}"],
    ["zsh", "-c", "echo {group} {key}"],
    ["env", "LANG=C", "sh", "-c", "echo {key}"],
    ["env", "-S", "sh -c 'echo {key}'"],
    ["python3", "-c", "print('{key}')"],
]


def hostile(canary_dir) -> list[str]:
    """Keys that would each create a file in ``canary_dir`` if a shell ran them."""
    d = canary_dir
    return [
        f"x; touch {d}/pwned1; echo",
        f"$(touch {d}/pwned2)",
        f"`touch {d}/pwned3`",
        f"x' ; touch {d}/pwned4 ; '",
        f'x" && touch {d}/pwned5 && "',
        f"x\ntouch {d}/pwned6",
        f"x | touch {d}/pwned7",
        f"-c 'touch {d}/pwned8'",
    ]


def test_the_shipped_config_runs_hostile_keys_as_data(tmp_path):
    """conf/forseti.toml as shipped (its ports moved): `forsetictl get jobs KEY` with keys
    full of shell syntax starts each job with its key as data, and no key runs."""
    text = (ROOT / "conf" / "forseti.toml").read_text()
    for port in sorted(set(re.findall(r"127\.0\.0\.1:(\d+)", text))):
        text = text.replace(f"127.0.0.1:{port}", f"127.0.0.1:{free_port()}")
    listen = re.search(r'listen = "(.*?)"', text)[1]
    c = Cluster(both=True, start=False)  # its folder, its clean-up and its checks
    try:
        c.configs["node1"].write_text(text)
        c.start("node1")
        c.cluster["leader"] = re.search(r'leader = "(.*?)"', text)[1]
        c.wait_up(1)
        keys = hostile(tmp_path)
        for key in keys:
            r = ctl("--json", "get", "jobs", key, endpoint=listen)
            assert r.returncode == 0, r
        # Each job has said its key (the shell ran); none of them ran the key.
        for key in keys:
            first_line = key.split("\n")[0]
            wait_for(lambda k=first_line: f"job {k}" in c.log("node1"), 5, 0.05, f"the output of job {key!r}")
        assert sorted(os.listdir(tmp_path)) == []
    finally:
        assert c.close() == []


@pytest.mark.parametrize("command", SHELL_FORMS, ids=" ".join)
def test_a_config_that_pastes_a_key_into_a_script_is_refused_at_start(tmp_path, command):
    config = tmp_path / "forseti.toml"
    config.write_text(
        f'[cluster]\nleader = "ipc://{tmp_path}/l"\nevents = "ipc://{tmp_path}/e"\n[node]\nname = "n1"\nlisten = "ipc://{tmp_path}/n"\n'
        f"[calls.evil]\ncommand = {msgspec.json.encode(command).decode()}\n"
    )
    r = subprocess.run(
        [sys.executable, "-m", "forsetid", "--config", str(config)], capture_output=True, text=True, timeout=20
    )
    assert r.returncode == 2, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "calls.evil" in lines[0] and "$FORSETI_" in lines[0] and "as code" in lines[0]
    assert not os.path.exists(tmp_path / "n")  # it bound nothing


@pytest.fixture
def one(make_cluster):
    return make_cluster(workers=1)


@pytest.mark.parametrize("command", SHELL_FORMS, ids=" ".join)
def test_add_call_refuses_a_key_pasted_into_a_script(one, command):
    r = ctl("--json", "add-call", "evil", "--command", *command, endpoint=one.endpoint("node1"))
    assert r.returncode == 2, r
    assert "evil" in r.stderr and "$FORSETI_" in r.stderr and "Traceback" not in r.stderr
    assert "evil" not in one.leader().calls()


def test_the_leader_refuses_such_a_group_sent_by_hand(one):
    """A peer that skips forsetictl's own check meets the leader's (the same rule)."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(one.cluster["leader"])
    try:
        call = {"command": ["bash", "-c", "echo {key}"]}
        sock.send(msgspec.msgpack.encode({"t": "add-call", "v": p.VERSION, "id": 7, "name": "evil", "call": call}))
        assert sock.poll(5000)
        reply = p.decode(sock.recv())
    finally:
        sock.close()
    assert isinstance(reply, p.Error) and reply.kind == p.BAD_MESSAGE and "FORSETI_KEY" in reply.message
    assert "evil" not in one.leader().calls()
    assert one.leader().get("sleeper", "still-serving").pid > 0


def test_an_endpoint_template_keeps_a_hostile_key_in_its_folder(make_cluster, tmp_path):
    folder = tmp_path / "eps"
    c = make_cluster(
        workers=1,
        calls={"svc": {"entry": "forsetid.examples:sleeper", "endpoint": f"ipc://{folder}/{{group}}/{{key}}"}},
    )
    client = c.client()
    for key, name in (
        ("../../../etc/x y", "%2E.%2F..%2F..%2Fetc%2Fx%20y"),
        ("a;tcp://1.2.3.4:5", "a%3Btcp%3A%2F%2F1.2.3.4%3A5"),
    ):
        assert client.get("svc", key).endpoint == f"ipc://{folder}/svc/{name}"
