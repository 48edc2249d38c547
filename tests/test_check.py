"""``forsetid --check``: every shipped config is valid and says what its daemon would
bind, connect to and start, with nothing bound (its ports may be taken meanwhile); a
bad one exits 2 with one line; entry modules are found without running their code."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from cluster import ROOT, shipped

from forsetid.config import load

DAEMONS = ["forseti.toml", "cluster/leader.toml", "cluster/node1.toml", "cluster/node2.toml", "cluster/node3.toml",
           "ha/node1.toml", "ha/node2.toml", "ha/node3.toml", "secure/leader.toml", "secure/node1.toml",
           "secure/node2.toml"]  # fmt: skip


def check(config: Path | str, *more: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "forsetid", "--check", "--config", str(config), *more]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd="/")


@pytest.fixture(scope="module")
def conf(tmp_path_factory) -> Path:
    """A copy of conf/ with its ports moved (and taken by no one) and the secure example's keys made."""
    into = tmp_path_factory.mktemp("conf")
    (into / "forseti.toml").write_text((ROOT / "conf" / "forseti.toml").read_text())
    for name in ("cluster", "ha", "secure"):
        shipped(name, into)
    env = {**os.environ, "FORSETICTL": f"{sys.executable} -m forsetictl"}
    subprocess.run(["sh", str(into / "secure" / "make-keys.sh")], env=env, check=True, capture_output=True)
    return into


def test_every_shipped_daemon_config_is_valid_and_says_what_it_binds(conf):
    taken = socket.socket()  # a port of conf/forseti.toml held meanwhile: --check binds nothing
    with contextlib.suppress(OSError):  # (or someone else holds it: as good)
        taken.bind(("127.0.0.1", 7072))
        taken.listen()
    try:
        for name in DAEMONS:
            config = load(str(conf / name))
            r = check(conf / name)
            assert (r.returncode, r.stderr) == (0, ""), name
            lines = r.stdout.splitlines()
            assert lines[0] == f"{conf / name}: valid: node {config.node.name}, role {config.node.role}, " + (
                f"cluster {config.cluster.name}, backend {config.cluster.backend}"
            )
            for where, endpoint in config.binds().items():  # (none has node.metrics)
                assert any(line.startswith(f"  {where} = {endpoint}") for line in lines), (name, where)
            for group in config.calls:
                assert any(line.startswith(f"  {group}: ") for line in lines), (name, group)
    finally:
        taken.close()


def test_what_it_connects_to_and_the_key_files_it_uses(conf):
    worker = check(conf / "secure" / "node1.toml").stdout
    keys = conf / "secure" / "keys"
    assert f"(CURVE: secret key {keys}/server.key_secret; peers' keys in {keys}/authorized)" in worker
    assert f"(CURVE: pinning {keys}/server.key, as {keys}/node1.key_secret)" in worker
    ha = load(str(conf / "ha" / "node1.toml")).cluster
    out = check(conf / "ha" / "node1.toml").stdout  # (no etcd runs for it: none is asked)
    assert "  leader candidate node1 in this daemon (inproc)" in out
    assert f"  leader candidate node2 at {ha.candidates[1].leader}, events at {ha.candidates[1].events}" in out
    assert f"  etcd at {ha.etcd[0]} (election of forseti-ha, lease 2 s)" in out
    assert "module at " + str(ROOT / "forsetid" / "examples.py") in out


def test_metrics_are_shown_as_the_address_a_scraper_asks(tmp_path):
    (tmp_path / "m.toml").write_text("[node]\nmetrics = '127.0.0.1:9464'\n")
    assert (
        "  node.metrics = http://127.0.0.1:9464/metrics (Prometheus text, plain HTTP)"
        in check(tmp_path / "m.toml").stdout
    )


def test_role_and_name_are_honoured(conf):
    r = check(conf / "ha" / "node1.toml", "--name", "node7")
    assert r.returncode == 2 and "'node7' has role 'both' but is not in cluster.candidates" in r.stderr
    r = check(conf / "ha" / "node1.toml", "--name", "node7", "--role", "worker")
    assert r.returncode == 0 and "valid: node node7, role worker" in r.stdout and "cluster.candidates[" not in r.stdout


BAD = {
    "unknown key": ("[node]\nnmae = 'x'\n", "node.nmae: unknown key"),
    "open bind": ("[node]\nrole = 'worker'\nlisten = 'tcp://0.0.0.0:7999'\n", "node.listen: tcp://0.0.0.0:7999 is"),
    "no entry": ("[node]\nrole = 'worker'\n[calls.x]\nentry = 'no_such_mod_zz.sub:run'\n",
                 "calls.x.entry: module 'no_such_mod_zz.sub' not found (searched: "),
    "no keys": ("[node]\nrole = 'worker'\n[security]\ncurve = true\nserver_key = 'nokeys/server.key'\n"
                "authorized = 'nokeys'\nkey = 'nokeys/n.key_secret'\n", "security.server_key: "),
    "placeholder": ("[calls.x]\ncommand = ['run', '{kye}']\n", "unknown placeholder {kye}"),
}  # fmt: skip


@pytest.mark.parametrize("text,says", BAD.values(), ids=BAD.keys())
def test_a_bad_config_exits_2_with_one_line(tmp_path, text, says):
    (tmp_path / "bad.toml").write_text(text)
    r = check(tmp_path / "bad.toml")
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr.startswith(f"forsetid: {tmp_path / 'bad.toml'}: ") and r.stderr.count("\n") == 1, r.stderr
    assert says in r.stderr and "Traceback" not in r.stderr


def test_entry_modules_are_found_without_running_them(tmp_path):
    mods = tmp_path / "mods"
    (mods / "pkg").mkdir(parents=True)
    ran = tmp_path / "ran"
    code = f"open({str(ran)!r}, 'a').write(__name__ + ' ')\n\ndef run(key):\n    pass\n"
    for f in ("noisy.py", "pkg/__init__.py", "pkg/sub.py"):
        (mods / f).write_text(code)
    calls = "[calls.a]\nentry = 'noisy:run'\n[calls.b]\nentry = 'pkg.sub:run'\n[calls.c]\nentry = 'os:getcwd'\n"
    (tmp_path / "f.toml").write_text(f"[node]\npython_path = ['mods']\n{calls}")
    r = check(tmp_path / "f.toml")
    assert r.returncode == 0, r.stderr
    assert f"  a: entry noisy:run (module at {mods / 'noisy.py'})" in r.stdout
    assert f"  b: entry pkg.sub:run (module at {mods / 'pkg' / 'sub.py'})" in r.stdout
    assert not ran.exists()  # no module's code ran
    # A leader imports no entry: not looked up there.
    (tmp_path / "l.toml").write_text("[node]\nrole = 'leader'\n[calls.x]\nentry = 'no_such_mod_zz:run'\n")
    r = check(tmp_path / "l.toml")
    assert r.returncode == 0 and "a leader imports no entry" in r.stdout
