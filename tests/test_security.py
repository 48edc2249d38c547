"""Security with real daemons and real CURVE handshakes (docs/guides/security.md): roles by key
folder, keys refused at the handshake, a worker key that joins only as its own node,
traffic a relay cannot read, protected mode, and keys taken out with SIGHUP."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading

import pytest
import zmq
import zmq.auth
from cluster import ROOT, free_port, shipped, wait_for
from conftest import ROLES

from forsetictl import AccessDenied, Client
from forsetid import protocol as p


def security(keys, name: str) -> dict:
    table = {"curve": True, "server_key": str(keys / "server.key"), "authorized": str(keys / "authorized")}
    if name.startswith("node"):
        table["key"] = str(keys / f"{name}.key_secret")
    return table


@pytest.fixture
def secure(make_cluster, keys):
    """A leader and two workers over loopback tcp, CURVE on every socket."""
    c = make_cluster(workers=2, tcp=True, wait=False, security=lambda name: security(keys, name))
    wait_for(lambda: ask(keys, c.endpoint("leader"), p.Nodes(), "admin"), 10, 0.1, "the secure cluster up")
    wait_for(lambda: len(ask(keys, c.endpoint("leader"), p.Nodes(), "admin").items) == 2, 10, 0.05, "both workers")
    return c


def dealer(keys, endpoint: str, who: str | None) -> zmq.Socket:
    """A DEALER to ``endpoint``: a CURVE client with ``who``'s key, or plain (None)."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if who is not None:
        sock.curve_publickey, sock.curve_secretkey = zmq.auth.load_certificate(keys / f"{who}.key_secret")
        sock.curve_serverkey, _ = zmq.auth.load_certificate(keys / "server.key")
    sock.connect(endpoint)
    return sock


def ask(keys, endpoint: str, msg: p.Msg, who: str | None, timeout: float = 2.0):
    """One request; the decoded reply, or None if none came within ``timeout``."""
    sock = dealer(keys, endpoint, who)
    try:
        msg.id = 7
        sock.send(p.encode(msg))
        return p.decode(sock.recv()) if sock.poll(int(timeout * 1000)) else None
    finally:
        sock.close()


def kind(reply) -> str:
    return "no answer" if reply is None else reply.kind if isinstance(reply, p.Error) else "ok"


# -- roles --


REQUESTS = {
    "find": p.Find(group="sleeper", key="k"),
    "ls": p.List(),
    "nodes": p.Nodes(),
    "calls": p.Calls(),
    "get": p.Get(group="sleeper", key="r1"),
    "stop": p.Stop(group="sleeper", key="nothing"),
    "add-call": p.AddCall(name="late", call=p.Call(command=["true"])),
}
MAY = {
    "reader": {"find", "ls", "nodes", "calls"},
    "alice": {"find", "ls", "nodes", "calls", "get", "stop"},
    "admin": set(REQUESTS),
}


@pytest.mark.parametrize("where", ["node1", "leader"])
def test_each_role_may_send_what_its_folder_allows_and_no_more(secure, keys, where):
    for who, allowed in MAY.items():
        for name, msg in REQUESTS.items():
            reply = ask(keys, secure.endpoint(where), msg, who)
            expected = "ok" if name in allowed else p.FORBIDDEN
            assert kind(reply) == expected, (where, who, name, reply)
            if expected == p.FORBIDDEN:
                assert ROLES[who] in reply.message and f"'{name}'" in reply.message  # names the role and the request


def test_a_key_in_no_folder_and_a_plain_client_are_refused_at_the_handshake(secure, keys):
    for endpoint in (secure.endpoint("node1"), secure.endpoint("leader")):  # (a reader is answered in ms)
        assert ask(keys, endpoint, p.Nodes(), "eve", timeout=1.0) is None
        assert ask(keys, endpoint, p.Nodes(), None, timeout=1.0) is None
    assert "refused a key at the handshake" in secure.log("node1")
    assert kind(ask(keys, secure.endpoint("node1"), p.Nodes(), "reader")) == "ok"  # and the rest still served


def test_a_worker_key_joins_only_as_its_own_node(secure, keys):
    # node9 shows node1's key: the leader refuses its hello, and it exits with status 2.
    secure.add("node9", start=False)
    config = secure.configs["node9"]
    config.write_text(config.read_text().replace(str(keys / "node9.key_secret"), str(keys / "node1.key_secret")))
    secure.start("node9")
    assert secure.procs["node9"].wait(10) == 2
    assert "joins only as node1, not as node9" in secure.log("node9")
    names = {n.name for n in ask(keys, secure.endpoint("leader"), p.Nodes(), "admin").items}
    assert names == {"node1", "node2"}


def test_the_client_and_the_cli_say_access_denied(secure, keys):
    import time

    from forsetictl import AccessDenied, Client

    server = str(keys / "server.key")
    with Client(secure.endpoint("node1"), timeout=3.0, key=str(keys / "eve.key_secret"), server_key=server) as eve:
        t0 = time.monotonic()
        with pytest.raises(AccessDenied, match="authentication failed") as refused:
            eve.nodes()
        assert refused.value.kind == "authentication" and time.monotonic() - t0 < 3.0
    with Client(secure.endpoint("node1"), key=str(keys / "reader.key_secret"), server_key=server) as reader:
        assert len(reader.nodes()) == 2
        with pytest.raises(AccessDenied, match="readers") as refused:
            reader.get("sleeper", "x")
        assert refused.value.kind == p.FORBIDDEN
    for who, command in (("eve", ["nodes"]), ("reader", ["get", "sleeper", "x"])):
        done = subprocess.run(
            [sys.executable, "-m", "forsetictl", "--endpoint", secure.endpoint("node1"), "--timeout", "3",
             "--key", str(keys / f"{who}.key_secret"), "--server-key", server, *command],
            capture_output=True, text=True, timeout=30, cwd=ROOT,
        )  # fmt: skip
        assert done.returncode == 5, (who, done.stderr)
        assert (
            "authentication failed" if who == "eve" else "forbidden"
        ) in done.stderr.lower() or "readers" in done.stderr


# -- what crosses the network --


class Relay:
    """A TCP relay from a port of its own to ``target``, keeping every byte it carries."""

    def __init__(self, target: str) -> None:
        host, port = target.removeprefix("tcp://").rsplit(":", 1)
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"tcp://127.0.0.1:{self.listener.getsockname()[1]}"
        self.seen = bytearray()
        self.stopping = False
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        self.listener.settimeout(0.1)
        while not self.stopping:
            try:
                inside, _ = self.listener.accept()
            except OSError:
                continue
            outside = socket.create_connection(self.target)
            for a, b in ((inside, outside), (outside, inside)):
                t = threading.Thread(target=self._pump, args=(a, b), daemon=True)
                t.start()
                self.threads.append(t)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        src.settimeout(0.1)
        while not self.stopping:
            try:
                data = src.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            self.seen += data
            try:
                dst.sendall(data)
            except OSError:
                break
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self.stopping = True
        for t in self.threads:
            t.join(2)
        self.listener.close()


def test_a_relay_between_a_client_and_a_worker_sees_no_group_or_key(secure, keys, make_cluster):
    secret = "tenant-7f3a9c-private"
    relay = Relay(secure.endpoint("node1"))
    try:
        reply = ask(keys, relay.endpoint, p.Get(group="sleeper", key=secret), "alice")
        assert isinstance(reply, p.Found) and reply.location.key == secret
    finally:
        relay.close()
    assert len(relay.seen) > 200 and secret.encode() not in relay.seen and b"sleeper" not in relay.seen
    # The same relay in front of a cluster without CURVE reads it all: the check above can fail.
    plain = make_cluster(workers=1, tcp=True)
    relay = Relay(plain.endpoint("node1"))
    try:
        assert isinstance(ask(keys, relay.endpoint, p.Get(group="sleeper", key=secret), None), p.Found)
    finally:
        relay.close()
    assert secret.encode() in relay.seen


# -- protected mode --


def daemon(tmp_path, text: str) -> subprocess.CompletedProcess:
    path = tmp_path / "forseti.toml"
    path.write_text(text)
    return subprocess.run([sys.executable, "-m", "forsetid", "--config", str(path)], capture_output=True,
                          text=True, timeout=30, cwd=ROOT)  # fmt: skip


def test_protected_mode_refuses_an_open_bind_without_curve(tmp_path):
    for host in ("0.0.0.0", "*"):
        done = daemon(tmp_path, f'[node]\nname = "n"\nrole = "worker"\nlisten = "tcp://{host}:{free_port()}"\n')
        assert done.returncode == 2
        assert "node.listen" in done.stderr and "security.curve" in done.stderr and "security.insecure" in done.stderr


def test_insecure_allows_an_open_bind(make_cluster):
    c = make_cluster(workers=1, node={"listen": f"tcp://0.0.0.0:{free_port()}"}, wait=False,
                     security=lambda name: {"insecure": True})  # fmt: skip
    c.wait_up()
    assert "up: role worker" in c.log("node1")


def test_an_ipc_endpoints_folder_is_created_private(make_cluster):
    c = make_cluster(workers=1, start=False, wait=False)
    folder = c.dir / "private" / "sockets"
    c.configs["node1"].write_text(c.configs["node1"].read_text().replace(
        f'listen = "{c.endpoint("node1")}"', f'listen = "ipc://{folder}/node1"'))  # fmt: skip
    for name in ("leader", "node1"):
        c.start(name)
    c.listen["node1"] = f"ipc://{folder}/node1"
    c.wait_up()
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700


# -- keys change --


def test_a_key_taken_out_is_refused_after_sighup(secure, keys, tmp_path):
    sock = dealer(keys, secure.endpoint("node1"), "alice")
    try:

        def request(n: int):
            sock.send(p.encode(p.Find(id=n, group="sleeper", key="k")))
            return p.decode(sock.recv()) if sock.poll(2000) else None

        assert kind(request(1)) == "ok"
        filed = keys / "authorized" / "clients" / "alice.key"
        moved = tmp_path / "alice.key"
        shutil.move(filed, moved)
        try:
            secure.kill("node1", signal.SIGHUP)
            wait_for(lambda: "re-read security.authorized" in secure.log("node1"), 5, 0.05, "the keys re-read")
            refused = request(2)  # the same connection: refused from its next message on
            assert kind(refused) == p.FORBIDDEN and "no longer authorized" in refused.message
            assert ask(keys, secure.endpoint("node1"), p.Nodes(), "alice") is None  # and at a new handshake
            assert kind(ask(keys, secure.endpoint("node1"), p.Nodes(), "reader")) == "ok"
        finally:
            shutil.move(moved, filed)
    finally:
        sock.close()
    secure.kill("node1", signal.SIGHUP)
    wait_for(lambda: kind(ask(keys, secure.endpoint("node1"), p.Nodes(), "alice")) == "ok", 5, 0.1, "alice back")
    assert secure.procs["node1"].poll() is None  # SIGHUP re-reads; it does not stop the daemon


# -- the shipped example --


def test_the_shipped_secure_example_works(make_cluster, tmp_path):
    """conf/secure/ as shipped, its keys made by its own script, its ports moved to free ones."""
    from forsetictl import AccessDenied, Client

    conf = shipped("secure", tmp_path)
    env = {**os.environ, "FORSETICTL": f"{sys.executable} -m forsetictl"}
    subprocess.run(["sh", str(conf / "make-keys.sh")], check=True, env=env, capture_output=True, timeout=60)
    c = make_cluster(workers=2, start=False, wait=False)  # only for its directory, clean-up and checks
    for name in ("leader", "node1", "node2"):
        c.configs[name] = conf / f"{name}.toml"
        c.start(name)
    with Client.from_config(str(conf / "admin.toml"), timeout=2.0) as admin:
        wait_for(lambda: _up(admin) == 2, 10, 0.1, "both workers up")
    with Client.from_config(str(conf / "alice.toml")) as alice:
        locs = [alice.get("sessions", f"user{i}") for i in range(4)]
        assert sorted(loc.node for loc in locs) == ["node1", "node1", "node2", "node2"]
    with Client.from_config(str(conf / "reader.toml")) as reader:
        assert len(reader.processes("sessions")) == 4
        with pytest.raises(AccessDenied):
            reader.get("sessions", "user9")


def _up(client) -> int:
    try:
        return sum(n.state == "up" for n in client.nodes())
    except Exception:
        return 0


def test_calls_cross_nodes_over_curve_and_a_reader_may_not_call(make_cluster, keys):
    """A call through one node to a process on the other: the hop between the nodes is a
    CURVE connection too (a worker's key), and the reader role may not call or send."""
    c = make_cluster(
        workers=2, tcp=True, wait=False, calls={"talk": {"entry": "apps:talker"}},
        security=lambda name: security(keys, name),
    )  # fmt: skip
    wait_for(lambda: ask(keys, c.endpoint("leader"), p.Nodes(), "admin"), 10, 0.1, "the secure cluster up")
    wait_for(lambda: len(ask(keys, c.endpoint("leader"), p.Nodes(), "admin").items) == 2, 10, 0.05, "both workers")
    alice = {"key": keys / "alice.key_secret", "server_key": keys / "server.key"}
    with Client(c.endpoint("node1"), **alice) as one, Client(c.endpoint("node2"), **alice) as two:
        locs = [one.get("talk", f"k{i}") for i in range(2)]
        assert {loc.node for loc in locs} == {"node1", "node2"}
        for client in (one, two):
            for loc in locs:
                assert client.call("talk", loc.key, b"pid") == b"%d" % loc.pid
    reader = {"key": keys / "reader.key_secret", "server_key": keys / "server.key"}
    with Client(c.endpoint("node1"), **reader) as r, pytest.raises(AccessDenied):
        r.call("talk", "k0", b"x")


@pytest.mark.slow
def test_a_curve_client_learns_the_nodes_and_moves_when_its_own_is_killed(secure, keys):
    from forsetictl import AsyncClient, Client

    creds = {"key": str(keys / "alice.key_secret"), "server_key": str(keys / "server.key")}
    with Client(secure.endpoint("node1"), timeout=5.0, **creds) as client:
        locs = [client.get("sleeper", f"curve{i}") for i in range(6)]
        loc = next(x for x in locs if x.node == "node2")
        wait_for(lambda: client.info() and len(client.endpoints.all) == 2, what="node2's endpoint learnt")
        secure.kill("node1")
        assert client.find("sleeper", loc.key) == loc  # through node2, over CURVE

    async def main():
        async with AsyncClient(secure.endpoint("node2"), timeout=5.0, **creds) as aclient:
            assert await aclient.find("sleeper", loc.key) == loc

    import asyncio

    asyncio.run(main())
