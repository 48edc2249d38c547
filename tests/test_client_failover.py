"""Clients that programs can lean on, against real daemons: a Client shared by threads,
a client with several endpoints whose node is SIGKILLed, the endpoints it learns from
the cluster, and what is refused before anything is sent, fast."""

from __future__ import annotations

import threading
import time

import pytest
from cluster import wait_for

from forsetictl import BadEndpoint, BadRequest, Client, Timeout, Unreachable
from forsetictl.config import ConfigError, load
from forsetid import protocol as p


def test_threads_share_one_client_each_on_a_socket_of_its_own(make_cluster):
    c = make_cluster(workers=2)
    client = Client(c.endpoint("node1"), timeout=5.0)
    locs = [client.get("sleeper", f"t{i}") for i in range(4)]
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(200):
                loc = locs[(n + i) % 4]
                assert client.find("sleeper", loc.key) == loc
        except BaseException as exc:  # (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    sockets = [line.sock for here in client._threads for line in here.lines.values()]
    assert len(client._threads) == 9 and len(sockets) >= 9  # this thread's and each worker thread's
    client.close()
    assert all(s.closed for s in sockets)


def on_node(client: Client, node: str, prefix: str):
    """A key whose process runs on ``node``."""
    for i in range(20):
        loc = client.get("sleeper", f"{prefix}{i}")
        if loc.node == node:
            return loc
    raise AssertionError(f"no key placed on {node}")


@pytest.mark.slow
def test_a_client_moves_to_another_node_when_its_own_is_killed(make_cluster):
    c = make_cluster(workers=2)
    with Client([c.endpoint("node1"), c.endpoint("node2")], timeout=5.0) as client:
        loc = on_node(client, "node2", "f")
        assert client.endpoint == c.endpoint("node1")
        c.kill("node1")
        start = time.monotonic()
        assert client.find("sleeper", loc.key) == loc  # sent again through node2
        assert time.monotonic() - start < 2.0
        assert client.endpoint == c.endpoint("node2")
        assert client.find("sleeper", loc.key) == loc


@pytest.mark.slow
def test_a_request_not_safe_to_repeat_is_not_sent_again(make_cluster):
    c = make_cluster(workers=2)
    with Client(f"{c.endpoint('node1')},{c.endpoint('node2')}", timeout=5.0) as client:
        assert client.calls()
        c.kill("node1")
        start = time.monotonic()
        with pytest.raises(Timeout):
            client.add_call("late", command=["sleep", "60"])
        assert time.monotonic() - start < 2.0  # the connection's loss is told at once
        assert "late" not in client.calls()  # (through node2 now)
        assert client.endpoint == c.endpoint("node2")


@pytest.mark.slow
def test_a_client_learns_the_other_nodes_from_the_first_that_answers(make_cluster):
    c = make_cluster(workers=2)
    with Client(c.endpoint("node1"), timeout=5.0) as client:
        loc = on_node(client, "node2", "l")
        wait_for(lambda: client.info() and len(client.endpoints.all) == 2, what="node2's endpoint learnt")
        assert client.endpoints.all == [c.endpoint("node1"), c.endpoint("node2")]
        c.kill("node1")
        assert client.find("sleeper", loc.key) == loc


def test_fail_fast(tmp_path):
    nobody = f"ipc://{tmp_path}/nobody"
    with Client(nobody, timeout=5.0) as client:
        start = time.monotonic()
        with pytest.raises(Unreachable, match=f"nothing listens at {nobody}"):
            client.nodes()
        assert time.monotonic() - start < 2.0
        with pytest.raises(BadRequest, match="a key is 1-1024 characters"):
            client.get("default", "x" * 10240)
        with pytest.raises(BadRequest, match="a group name is 1-128"):
            client.find("no spaces", "k")
        with pytest.raises(BadRequest, match=f"over the limit of {p.MAX_MESSAGE} bytes"):
            client.get("default", "k", args=["x" * p.MAX_MESSAGE])
        assert client.requests == 1  # none of those was sent
    for bad in ("127.0.0.1:7072", ["tcp://127.0.0.1:1", "localhost:2"], ""):
        with pytest.raises(BadEndpoint):
            Client(bad)
    with pytest.raises(ValueError, match="write tcp://127.0.0.1:7072"):  # (a ValueError)
        Client("127.0.0.1:7072")


def test_client_endpoints_in_the_config_file(tmp_path):
    conf = tmp_path / "forseti.toml"
    conf.write_text('[node]\nlisten = "tcp://127.0.0.1:1"\n[client]\nendpoints = ["tcp://a:1", "tcp://b:2"]\n')
    assert load(str(conf)).all_endpoints == ["tcp://a:1", "tcp://b:2"]
    client = Client.from_config(str(conf))
    assert client.endpoints.all == ["tcp://a:1", "tcp://b:2"] and client.endpoint == "tcp://a:1"
    conf.write_text('[client]\nendpoints = "tcp://a:1"\n')
    with pytest.raises(ConfigError, match="client.endpoints: expected a list"):
        load(str(conf))
    from forsetid.config import load as daemon_load

    conf.write_text('[client]\nendpoints = ["tcp://a:1"]\n[calls.x]\ncommand = ["true"]\n')
    daemon_load(str(conf))  # the daemon reads the same file


def test_a_node_that_starts_listening_within_half_a_second_is_answered(tmp_path):
    import zmq

    from forsetid import protocol as p

    endpoint = f"ipc://{tmp_path}/late"
    ctx = zmq.Context()
    done = threading.Event()

    def late_node() -> None:
        time.sleep(0.2)  # (what is measured: a node that binds a moment after the client asks)
        router = ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        router.bind(endpoint)
        try:
            while not done.is_set():  # (open until the client has its answer: a close drops what is unsent)
                if router.poll(50):
                    peer, frame = router.recv_multipart()
                    router.send_multipart([peer, p.encode(p.NodeList(id=p.decode(frame).id, items=[]))])
        finally:
            router.close()

    node = threading.Thread(target=late_node)
    node.start()
    try:
        with Client(endpoint, timeout=5.0) as client:
            assert client.nodes() == []  # not "nothing listens": it came within the grace
    finally:
        done.set()
        node.join()
        ctx.term()
