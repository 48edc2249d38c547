"""``forsetictl keygen NAME [--dir DIR]``: a CURVE key pair, the secret readable by its
owner only, never over an existing file, and no cluster needed."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest
import zmq.auth
from cluster import ROOT

from forsetictl import KeyFileError, keygen


def ctl(*args, cwd, env=None):
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "forsetictl", *args], capture_output=True, text=True,
                          timeout=30, env=full_env, cwd=cwd)  # fmt: skip


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_keygen_writes_a_pair_zmq_reads_with_the_secret_0600_whatever_the_umask(tmp_path):
    old = os.umask(0)  # what zmq.auth.create_certificates would leave world-readable
    try:
        public_path, secret_path = keygen("alice", tmp_path / "keys")
    finally:
        os.umask(old)
    assert (public_path, secret_path) == (
        str(tmp_path / "keys" / "alice.key"),
        str(tmp_path / "keys" / "alice.key_secret"),
    )
    assert mode(secret_path) == 0o600 and mode(public_path) == 0o644
    assert mode(tmp_path / "keys") == 0o700  # the folder it made
    public, secret = zmq.auth.load_certificate(secret_path)
    assert zmq.auth.load_certificate(public_path) == (public, None)
    assert len(public) == len(secret) == 40 and zmq.curve_public(secret) == public


def test_keygen_command_prints_the_paths_and_needs_no_cluster(tmp_path):
    # Neither a config file that cannot be read nor an endpoint nobody serves matters to it.
    (tmp_path / "forseti.toml").write_text("not toml [")
    env = {"FORSETI_ENDPOINT": "tcp://127.0.0.1:1"}
    r = ctl("keygen", "node1", cwd=tmp_path, env=env)
    assert r.returncode == 0, r
    assert r.stdout == "public key: ./node1.key\nsecret key: ./node1.key_secret (mode 0600)\n"
    r = ctl("--json", "keygen", "node2", "--dir", str(tmp_path / "k"), cwd=tmp_path, env=env)
    assert r.returncode == 0, r
    assert json.loads(r.stdout) == {"public": f"{tmp_path}/k/node2.key", "secret": f"{tmp_path}/k/node2.key_secret"}
    assert mode(tmp_path / "k" / "node2.key_secret") == 0o600 and mode(tmp_path / "node1.key_secret") == 0o600


@pytest.mark.parametrize("existing", ["alice.key", "alice.key_secret"])
def test_keygen_refuses_to_overwrite_either_file(tmp_path, existing):
    (tmp_path / existing).write_text("keep me\n")
    r = ctl("--json", "keygen", "alice", "--dir", str(tmp_path), cwd=tmp_path)
    assert r.returncode == 2
    message = f"keygen: {tmp_path}/{existing} exists already: not overwritten"
    assert json.loads(r.stdout) == {"error": "usage", "message": message}
    assert r.stderr == f"forsetictl: {message}\n"
    assert sorted(os.listdir(tmp_path)) == [existing] and (tmp_path / existing).read_text() == "keep me\n"


def test_keygen_takes_a_name_not_a_path(tmp_path):
    for name in ("", "a/b", ".."):
        with pytest.raises(KeyFileError, match="is not a key name"):
            keygen(name, tmp_path)
    r = ctl("keygen", "sub/alice", cwd=tmp_path)
    assert r.returncode == 2 and "is not a key name" in r.stderr
    assert os.listdir(tmp_path) == []
