"""Garbage on the wire gets an error reply naming the problem and breaks nothing."""

from __future__ import annotations

import msgspec
import pytest
import zmq

from forsetid import protocol as p


@pytest.fixture
def raw(cluster):
    ctx = zmq.Context.instance()
    socks = []

    def connect(endpoint):
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(endpoint)
        socks.append(s)
        return s

    yield connect
    for s in socks:
        s.close()


def ask(sock, *frames, timeout=3.0):
    sock.send_multipart(list(frames))
    assert sock.poll(int(timeout * 1000)), "no reply"
    return p.decode(sock.recv())


GARBAGE = {
    b"": "empty frame",
    b"\xc1\xc1\xc1": "not MessagePack",
    msgspec.msgpack.encode({"t": "get", "v": 1, "id": 5, "group": "sleeper"})[:-3]: "malformed",
    msgspec.msgpack.encode({"t": "launch", "v": 1, "id": 6}): "Invalid value 'launch'",
    msgspec.msgpack.encode({"t": "get", "v": 1, "id": 7, "group": "sleeper", "key": 12}): "Expected `str`, got `int`",
    msgspec.msgpack.encode({"t": "get", "v": 1, "id": 8, "group": "sleeper", "key": ""}): "length >= 1",
    msgspec.msgpack.encode({"t": "get", "v": 1, "id": 9, "group": "sleeper", "key": "k" * 5000}): "length <= 1024",
    msgspec.msgpack.encode({"t": "get", "v": 1, "id": 10, "group": "bad group", "key": "k"}): "matching regex",
    msgspec.msgpack.encode([1, 2, 3]): "Expected `object`",
    msgspec.msgpack.encode({"t": "get", "v": 1, "id": 11, "group": "sleeper", "key": "a\0b"}): "matching regex",
}


@pytest.mark.parametrize("where", ["leader", "worker"])
def test_bad_frames_get_errors_and_the_cluster_keeps_serving(cluster, raw, where):
    client = cluster.client("node1")
    before = client.get("sleeper", "keep-me")
    sock = raw(cluster.cluster["leader"] if where == "leader" else cluster.endpoint("node1"))
    for frame, expected in GARBAGE.items():
        reply = ask(sock, frame)
        assert isinstance(reply, p.Error) and reply.kind == "bad-message", (frame, reply)
        assert expected in reply.message, (expected, reply.message)
    reply = ask(sock, msgspec.msgpack.encode({"t": "find", "v": 2, "id": 11, "group": "g", "key": "k"}))
    assert (reply.kind, reply.id) == ("version", 11) and "version 2 is not supported" in reply.message
    reply = ask(sock, b"one", b"two")
    assert reply.kind == "bad-message" and "expected 1 frame, got 2" in reply.message
    reply = ask(sock, p.encode(p.Spawned(id=1, location=before)))
    assert reply.kind == "bad-message"  # not a client's message to send
    for _ in range(4):  # bursts of junk (of 500: the replies fit within the high-water marks)
        for _ in range(500):
            sock.send(b"\x00junk")
        for _ in range(500):
            assert sock.poll(5000)
            assert p.decode(sock.recv()).kind == "bad-message"
    assert client.find("sleeper", "keep-me") == before
    log = cluster.log("leader" if where == "leader" else "node1")
    assert 1 <= log.count("bad message from a peer") <= 2  # logged, but rate-limited
    assert cluster.client("node2").get("sleeper", "after") is not None
    assert [l.key for l in client.processes("sleeper")] == ["after", "keep-me"]


def test_oversized_message_is_dropped_and_the_daemon_lives(cluster, raw):
    sock = raw(cluster.endpoint("node1"))
    sock.send(b"x" * (p.MAX_MESSAGE + 1))
    assert not sock.poll(300)  # ZeroMQ drops the peer; there is no one to answer
    assert cluster.client("node1").get("sleeper", "still-here").pid > 0


def test_start_arguments_too_large_for_a_start_fail_that_start_only(cluster):
    from forsetictl import SpawnError

    client = cluster.client("node1")
    with pytest.raises(SpawnError, match="bytes; a start takes at most"):
        client.get("sleeper", "huge", args=["x" * 70_000])  # fits in a message, not in a start
    assert client.find("sleeper", "huge") is None
    assert client.get("sleeper", "small").pid > 0
