"""The client's side of CURVE (docs/guides/security.md) against a real CURVE handshake, without
forsetid: a small CURVE server here (a ROUTER and an XPUB, a ZAP handler that lets in
only the keys it is given) answers a few requests with protocol messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest
import zmq
import zmq.auth
from cluster import ROOT, wait_for

from forsetictl import AccessDenied, Client, KeyFileError, Timeout
from forsetictl.client import AUTHENTICATION, EventStream
from forsetictl.config import ConfigError, client_keys, load
from forsetictl.security import load_keys
from forsetid import protocol as p

ZAP = "inproc://zeromq.zap.01"


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """The server's pair; alice's (let in), eve's (in no list)."""
    root = tmp_path_factory.mktemp("keys")
    for name in ("server", "alice", "eve", "other"):
        zmq.auth.create_certificates(root, name)
    return root


def public(keys, name: str) -> bytes:
    return zmq.auth.load_certificate(keys / f"{name}.key")[0]


class FakeNode:
    """A stand-in for a forsetid node: ``info`` answered with an ``info-reply`` naming its
    XPUB, ``nodes`` with an empty list, ``find`` with no location, ``get`` with the error
    ``forbidden``; each new subscription to the XPUB with a tick. With ``curve``, both are
    CURVE servers and the ZAP handler lets in the keys of ``allowed`` (per socket: the
    ROUTER's domain is "router", the XPUB's "events"), answering 400 to any other."""

    def __init__(self, keys, allowed=("alice",), events_allowed=None, curve=True) -> None:
        self.ctx = zmq.Context()
        self.allowed = {b"router": {public(keys, n) for n in allowed}}
        self.allowed[b"events"] = {public(keys, n) for n in (allowed if events_allowed is None else events_allowed)}
        self.asked: list[bytes] = []  # the client keys the ZAP handler was asked about
        self.requests: list[p.Msg] = []
        self.sockets = []
        if curve:
            self.zap = self._socket(zmq.ROUTER)
            self.zap.bind(ZAP)  # before any CURVE socket, as libzmq asks
        server_public, server_secret = zmq.auth.load_certificate(keys / "server.key_secret")
        self.router, self.xpub = self._socket(zmq.ROUTER), self._socket(zmq.XPUB)
        for sock, domain in ((self.router, b"router"), (self.xpub, b"events")):
            if curve:
                sock.curve_server = True
                sock.curve_secretkey, sock.curve_publickey = server_secret, server_public
                sock.zap_domain = domain
        self.endpoint = f"tcp://127.0.0.1:{self.router.bind_to_random_port('tcp://127.0.0.1')}"
        self.events = f"tcp://127.0.0.1:{self.xpub.bind_to_random_port('tcp://127.0.0.1')}"
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _socket(self, kind: int) -> zmq.Socket:
        sock = self.ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        self.sockets.append(sock)
        return sock

    def _run(self) -> None:
        poller = zmq.Poller()
        for sock in self.sockets:
            poller.register(sock, zmq.POLLIN)
        while not self.stopping:
            for sock, _ in poller.poll(20):
                if sock is self.router:
                    self._request(*sock.recv_multipart())
                elif sock is self.xpub:
                    sub = sock.recv()
                    if sub[:1] == b"\x01":
                        sock.send_multipart([sub[1:], p.encode(p.Tick(seq=0, epoch="e1"))])
                else:
                    self._zap(sock.recv_multipart())

    def _zap(self, frames: list[bytes]) -> None:
        # [peer, b"", version, request id, domain, address, identity, mechanism, key]
        envelope, (version, request_id, domain, _, _, mechanism, *credentials) = frames[:2], frames[2:]
        key = zmq.utils.z85.encode(credentials[0]) if mechanism == b"CURVE" else b""
        self.asked.append(key)
        ok = key in self.allowed.get(domain, ())
        status = [b"200", b"OK", b"alice", b""] if ok else [b"400", b"not authorized", b"", b""]
        self.zap.send_multipart([*envelope, version, request_id, *status])

    def _request(self, peer: bytes, frame: bytes) -> None:
        msg = p.decode(frame)
        self.requests.append(msg)
        if isinstance(msg, p.Info):
            reply = p.InfoReply(node="fake", role="worker", events=self.events)
        elif isinstance(msg, p.Nodes):
            reply = p.NodeList(items=[])
        elif isinstance(msg, p.Find):
            reply = p.Found(location=None)
        else:
            reply = p.Error(kind=p.FORBIDDEN, message=f"readers may not send '{p.tag(msg)}'")
        reply.id = msg.id
        self.router.send_multipart([peer, p.encode(reply)])

    def close(self) -> None:
        self.stopping = True
        self.thread.join(5)
        for sock in self.sockets:
            sock.close()
        self.ctx.term()


@pytest.fixture
def make_node(keys):
    nodes = []

    def make(**kwargs) -> FakeNode:
        nodes.append(FakeNode(keys, **kwargs))
        return nodes[-1]

    yield make
    for node in nodes:
        node.close()


@pytest.fixture
def ctx():
    """The clients' context: every socket they opened is closed by the end of the test."""
    context = zmq.Context()
    yield context
    left = [s for s in list(context._sockets) if not s.closed]
    context.destroy(linger=0)
    assert not left, f"sockets left open: {left}"


def client(ctx, node, keys, who: str | None = "alice", timeout: float = 5.0, **kwargs) -> Client:
    creds = {} if who is None else {"key": keys / f"{who}.key_secret", "server_key": keys / "server.key"}
    return Client(node.endpoint, timeout=timeout, context=ctx, **creds, **kwargs)


# -- the library --


def test_an_allowed_key_is_answered_and_then_takes_the_fast_path(make_node, keys, ctx):
    node = make_node()
    with client(ctx, node, keys) as c:
        assert c.info().node == "fake"
        assert c._here().lines[node.endpoint]._poller is None  # the handshake succeeded: blocking recv from now on
        assert c.nodes() == [] and c.find("g", "k") is None
    assert public(keys, "alice") in node.asked


def test_a_key_in_no_list_is_refused_at_once_not_timed_out(make_node, keys, ctx):
    node = make_node()
    with client(ctx, node, keys, "eve", timeout=5.0) as c:
        start = time.monotonic()
        with pytest.raises(AccessDenied) as err:
            c.nodes()
        took = time.monotonic() - start
        assert took < 2.5, took  # well under the 5 s timeout (a loaded machine is slow)
        assert err.value.kind == AUTHENTICATION
        message = str(err.value)
        assert message.startswith(f"authentication failed at {node.endpoint}: ")
        assert "refused this client's key" in message and "400" in message
        with pytest.raises(AccessDenied):  # and again on a new socket, not a hang
            c.nodes()
    assert not node.requests  # nothing got through


def test_a_plain_client_of_a_curve_server_is_told_authentication_failed(make_node, keys, ctx):
    node = make_node()
    with client(ctx, node, keys, None, timeout=0.5) as c:
        start = time.monotonic()
        with pytest.raises(AccessDenied) as err:
            c.nodes()
        assert time.monotonic() - start < 1.5  # by the timeout
    assert err.value.kind == AUTHENTICATION and not isinstance(err.value, Timeout)
    assert f"authentication failed at {node.endpoint}" in str(err.value)
    assert "CURVE" in str(err.value) and "--key" in str(err.value)


def test_a_curve_client_of_a_plain_server_is_refused_at_once(make_node, keys, ctx):
    node = make_node(curve=False)
    with client(ctx, node, keys, timeout=5.0) as c:
        start = time.monotonic()
        with pytest.raises(AccessDenied) as err:
            c.nodes()
        assert time.monotonic() - start < 2.5  # well before its 5 s timeout (a loaded machine is slow)
    assert err.value.kind == AUTHENTICATION and "does not use CURVE" in str(err.value)


def test_a_wrong_server_key_is_told_once_two_handshakes_were_cut_short(make_node, keys, ctx):
    """A CURVE server closes the connection on a client that pinned another server key,
    without a reason; the second such handshake in a row is taken for a refusal."""
    node = make_node()
    c = Client(node.endpoint, timeout=10.0, context=ctx, key=keys / "alice.key_secret", server_key=keys / "other.key")
    start = time.monotonic()
    with c, pytest.raises(AccessDenied) as err:
        c.nodes()
    assert time.monotonic() - start < 2.5  # long before its 10 s timeout
    assert err.value.kind == AUTHENTICATION and "server key" in str(err.value)


def test_a_silent_endpoint_is_still_a_timeout(keys, ctx, tmp_path):
    for who in ("alice", None):
        creds = {} if who is None else {"key": keys / "alice.key_secret", "server_key": keys / "server.key"}
        with Client(f"ipc://{tmp_path}/nobody", timeout=0.2, context=ctx, **creds) as c, pytest.raises(Timeout):
            c.nodes()


def test_a_request_outside_the_role_is_forbidden(make_node, keys, ctx):
    node = make_node()
    with client(ctx, node, keys) as c:
        with pytest.raises(AccessDenied) as err:
            c.get("g", "k")
        assert err.value.kind == p.FORBIDDEN and str(err.value) == "readers may not send 'get'"
        assert c.find("g", "k") is None  # the same socket goes on


def test_events_with_keys_and_an_events_socket_that_refuses_them(make_node, keys, ctx):
    node = make_node(allowed=("alice", "other"), events_allowed=("other",))
    with client(ctx, node, keys) as c:
        start = time.monotonic()
        with pytest.raises(AccessDenied) as err:
            c.events()  # the info is answered; the events socket refuses alice
        assert time.monotonic() - start < 2.5  # well under its timeout
        assert err.value.kind == AUTHENTICATION and f"authentication failed at {node.events}" in str(err.value)
    with client(ctx, node, keys, "other") as c, c.events() as stream:
        assert stream.endpoint == node.events  # its first tick came: the stream is live
    with pytest.raises(AccessDenied):  # and a plain subscriber to a CURVE publisher
        EventStream(ctx, node.events, None, 0.5)


def test_the_near_cache_subscribes_with_the_keys(make_node, keys, ctx):
    node = make_node()
    with client(ctx, node, keys, cache=True) as c:
        c.find("g", "k")
        # its first tick, through CURVE
        wait_for(lambda: c.near.sync() or c.near.heard is not None, 5, 0.01, "the near cache's first tick")


def test_key_arguments_go_together_and_bad_files_are_named(keys, tmp_path, ctx):
    with pytest.raises(KeyFileError, match="needs server_key too"):
        Client("tcp://127.0.0.1:1", key=keys / "alice.key_secret")
    with pytest.raises(ValueError, match="needs key too"):
        Client("tcp://127.0.0.1:1", server_key=keys / "server.key")
    bad = tmp_path / "bad.key_secret"
    bad.write_text("hello\n")
    short = tmp_path / "short.key_secret"
    short.write_text('curve\n    public-key = "abc"\n    secret-key = "def"\n')
    cases = {
        tmp_path / "none.key_secret": "no such file",
        bad: "not a ZeroMQ key file (no public-key line)",
        short: "its public-key is not a CURVE key (40 Z85 characters)",
        keys / "alice.key": "holds no secret key (give the .key_secret file)",
    }
    for path, problem in cases.items():
        with pytest.raises(KeyFileError) as err:
            Client("tcp://127.0.0.1:1", key=path, server_key=keys / "server.key")
        assert str(err.value) == f"key {path}: {problem}"
    with pytest.raises(KeyFileError, match=f"server_key {tmp_path}/none.key: no such file"):
        load_keys(keys / "alice.key_secret", tmp_path / "none.key")


# -- the config file's [security] --


def write_config(path, security: str, listen: str = "tcp://127.0.0.1:7272"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'[node]\nrole = "worker"\nlisten = "{listen}"\n\n[security]\n{security}')
    return path


def test_relative_key_paths_are_the_config_files_folders(keys, tmp_path, monkeypatch):
    write_config(tmp_path / "etc" / "alice.toml", 'curve = true\nkey = "k/a.key_secret"\nserver_key = "s.key"\n')
    monkeypatch.chdir(tmp_path)
    cfg = load("etc/alice.toml")
    assert cfg.curve and cfg.key == str(tmp_path / "etc" / "k" / "a.key_secret")
    assert cfg.server_key == str(tmp_path / "etc" / "s.key")
    with pytest.raises(KeyFileError) as err:
        client_keys(cfg)
    assert str(err.value) == f"etc/alice.toml: security.key: {tmp_path}/etc/k/a.key_secret: no such file"
    assert load(str(write_config(tmp_path / "plain.toml", ""))).curve is False


def test_security_types_and_missing_keys_are_config_errors(tmp_path):
    for text, problem in (
        ('curve = "yes"\n', "security.curve: expected true or false"),
        ("curve = true\nkey = 3\n", "security.key: expected a string"),
    ):
        path = write_config(tmp_path / "c.toml", text)
        with pytest.raises(ConfigError) as err:
            load(str(path))
        assert str(err.value) == f"{path}: {problem}"
    path = write_config(tmp_path / "c.toml", 'curve = true\nserver_key = "s.key"\n')
    with pytest.raises(ConfigError) as err:
        Client.from_config(str(path))
    assert str(err.value) == f"{path}: security.key: needed with security.curve = true"


def test_from_config_takes_the_keys_unless_given(make_node, keys, tmp_path, ctx):
    node = make_node()
    text = f'curve = true\nkey = "{keys}/eve.key_secret"\nserver_key = "{keys}/server.key"\n'
    path = write_config(tmp_path / "eve.toml", text, listen=node.endpoint)
    with Client.from_config(str(path)) as c, pytest.raises(AccessDenied):
        c.nodes()  # eve's key, from the config
    with Client.from_config(str(path), key=keys / "alice.key_secret") as c:
        assert c.nodes() == []
    off = write_config(tmp_path / "off.toml", text.replace("true", "false"), listen=node.endpoint)
    with Client.from_config(str(off), timeout=0.3) as c, pytest.raises(AccessDenied, match="CURVE"):
        c.nodes()  # curve = false: the keys there are not used


# -- the command line --


def ctl(*args, cwd=None, env=None):
    full_env = {k: v for k, v in os.environ.items() if k not in ("FORSETI_KEY", "FORSETI_ENDPOINT")}
    full_env.update(PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run([sys.executable, "-m", "forsetictl", *args], capture_output=True, text=True,
                          timeout=30, env=full_env, cwd=cwd)  # fmt: skip


def test_cli_exit_5_for_a_refused_key_and_for_a_forbidden_request(make_node, keys):
    node = make_node()
    creds = ["--server-key", str(keys / "server.key")]
    r = ctl("--endpoint", node.endpoint, "--key", str(keys / "alice.key_secret"), *creds, "nodes")
    assert r.returncode == 0, r
    r = ctl("--endpoint", node.endpoint, "--key", str(keys / "eve.key_secret"), *creds, "--json", "nodes")
    assert r.returncode == 5, r
    assert json.loads(r.stdout)["error"] == "authentication"
    assert r.stderr.count("\n") == 1 and r.stderr.startswith(f"forsetictl: authentication failed at {node.endpoint}")
    r = ctl("--endpoint", node.endpoint, "--key", str(keys / "alice.key_secret"), *creds, "--json", "get", "g", "k")
    assert r.returncode == 5
    assert json.loads(r.stdout) == {"error": "forbidden", "message": "readers may not send 'get'"}
    assert r.stderr == "forsetictl: readers may not send 'get'\n"
    r = ctl("--endpoint", node.endpoint, "--timeout", "0.3", "nodes")  # no key at all
    assert r.returncode == 5 and "CURVE" in r.stderr and "--key" in r.stderr


def test_cli_key_precedence_option_environment_config(make_node, keys, tmp_path):
    node = make_node()
    alice, eve = str(keys / "alice.key_secret"), str(keys / "eve.key_secret")
    server = ["--server-key", str(keys / "server.key")]
    ep = ["--endpoint", node.endpoint]
    assert ctl(*ep, *server, "nodes", env={"FORSETI_KEY": alice}).returncode == 0
    assert ctl(*ep, *server, "nodes", env={"FORSETI_KEY": eve}).returncode == 5
    assert ctl(*ep, *server, "--key", alice, "nodes", env={"FORSETI_KEY": eve}).returncode == 0
    # In a process Forseti started, $FORSETI_KEY is that process's key (with $FORSETI_GROUP): not a file.
    r = ctl(*ep, "--timeout", "0.3", "nodes", env={"FORSETI_KEY": "k1", "FORSETI_GROUP": "users"})
    assert r.returncode == 5 and "CURVE" in r.stderr  # a plain client, not "$FORSETI_KEY k1: no such file"
    # The config's keys, relative to its folder (the command runs elsewhere).
    (tmp_path / "conf" / "keys").mkdir(parents=True)
    for name in ("eve.key_secret", "alice.key_secret", "server.key"):
        (tmp_path / "conf" / "keys" / name).write_bytes((keys / name).read_bytes())
    text = 'curve = true\nkey = "keys/eve.key_secret"\nserver_key = "keys/server.key"\n'
    config = str(write_config(tmp_path / "conf" / "eve.toml", text, listen=node.endpoint))
    assert ctl("--config", config, "nodes", cwd="/").returncode == 5  # eve's, from the config
    assert ctl("--config", config, "nodes", env={"FORSETI_KEY": alice}, cwd="/").returncode == 0
    assert ctl("--config", config, "--key", alice, "nodes", env={"FORSETI_KEY": eve}, cwd="/").returncode == 0
    # ./forseti.toml, found by itself, counts as the config too.
    write_config(tmp_path / "conf" / "forseti.toml", text.replace("eve", "alice"), listen=node.endpoint)
    assert ctl("nodes", cwd=tmp_path / "conf").returncode == 0


def test_cli_key_errors_exit_2(keys, tmp_path):
    r = ctl("--endpoint", "tcp://127.0.0.1:1", "--key", str(keys / "alice.key_secret"), "nodes")
    assert r.returncode == 2
    assert (
        r.stderr == f"forsetictl: --key {keys}/alice.key_secret needs --server-key too (the server's public key file)\n"
    )
    r = ctl("--endpoint", "tcp://127.0.0.1:1", "--server-key", str(keys / "server.key"), "--json", "nodes",
            env={"FORSETI_KEY": str(tmp_path / "nope")})  # fmt: skip
    assert r.returncode == 2
    assert json.loads(r.stdout) == {"error": "config", "message": f"$FORSETI_KEY {tmp_path}/nope: no such file"}


def test_a_plain_client_of_a_curve_server_is_told_well_before_its_timeout(make_node, keys, ctx):
    node = make_node()
    with client(ctx, node, keys, None, timeout=10.0) as c:
        start = time.monotonic()
        with pytest.raises(AccessDenied) as err:
            c.nodes()
        took = time.monotonic() - start
    assert err.value.kind == AUTHENTICATION and "CURVE" in str(err.value)
    assert took < 2.5, took  # long before its 10 s timeout: told as a refusal (two handshakes cut short, at most)


def test_an_async_client_is_refused_at_once_too(make_node, keys, ctx):
    import asyncio

    from forsetictl import AsyncClient

    node = make_node()
    creds = {"key": keys / "eve.key_secret", "server_key": keys / "server.key"}

    async def main():
        for who in (creds, {}):  # a key in no list; no key at all
            async with AsyncClient(node.endpoint, timeout=10.0, context=ctx, **who) as c:
                start = time.monotonic()
                with pytest.raises(AccessDenied) as err:
                    await c.nodes()
                assert time.monotonic() - start < 2.5  # long before its 10 s timeout (see above)
                assert err.value.kind == AUTHENTICATION
        async with AsyncClient(node.endpoint, timeout=5.0, context=ctx, key=keys / "alice.key_secret",
                               server_key=keys / "server.key") as c:  # fmt: skip
            assert await c.nodes() == []

    asyncio.run(main())
