"""The daemon's socket loop, driven in this process one turn at a time: a bug in a
handler costs the message it was handling, and nothing queued behind it."""

from __future__ import annotations

import time

import pytest
import zmq

from forsetid import protocol as p
from forsetid.config import parse
from forsetid.daemon import build
from forsetid.loop import Loop


@pytest.fixture
def loop(tmp_path):
    config = parse(
        {
            "cluster": {"leader": f"ipc://{tmp_path}/leader", "events": f"ipc://{tmp_path}/events", "heartbeat": 0.1},
            "node": {"name": "n1", "role": "both", "listen": f"ipc://{tmp_path}/n1"},
            "calls": {"default": {"entry": "forsetid.examples:echo"}},
        }
    )
    loop = build(config)
    yield loop
    loop.close()  # the fork server goes with it


def worker_of(loop: Loop):
    (part,) = [part for part in loop.parts if hasattr(part, "worker")]
    return part.worker


def turn_until(loop: Loop, done, seconds: float = 3.0) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, "timed out"
        loop.poll_once(20)


def test_a_handler_that_raises_costs_one_request_not_those_behind_it(loop, tmp_path):
    worker = worker_of(loop)
    turn_until(loop, lambda: worker.welcomed)
    on_client = worker.on_client

    def buggy(client, msg):
        if isinstance(msg, p.Find) and msg.key == "boom":
            raise RuntimeError("a bug")
        return on_client(client, msg)

    worker.on_client = buggy
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(f"ipc://{tmp_path}/n1")
        sock.send(p.encode(p.Find(id=1, group="default", key="boom")))
        sock.send(p.encode(p.Info(id=2)))
        sock.send(p.encode(p.Info(id=3)))
        answered = []

        def replies():
            while sock.poll(0):
                answered.append(p.decode(sock.recv()).id)
            return answered == [2, 3]

        turn_until(loop, replies)
    finally:
        sock.close()


def test_an_event_handler_that_raises_once_does_not_stop_the_event_stream(loop):
    worker = worker_of(loop)
    turn_until(loop, lambda: worker.welcomed)
    on_event = worker.on_event
    seen = []

    def buggy(msg):
        seen.append(msg)
        if len(seen) == 1:
            raise RuntimeError("a bug")
        return on_event(msg)

    worker.on_event = buggy
    turn_until(loop, lambda: len(seen) >= 5)  # ticks every 0.1 s keep coming in


def test_a_socket_read_a_whole_batch_at_a_time_counts_as_behind_until_it_is_drained(loop, tmp_path):
    """What the leader looks at before it takes a silent worker for down: messages may
    still wait unread on its socket (``Loop.behind``)."""
    from forsetid.loop import BATCH

    (leader_io,) = [part for part in loop.parts if hasattr(part, "router")]
    turn_until(loop, lambda: worker_of(loop).welcomed)
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(f"ipc://{tmp_path}/leader")
        for i in range(4 * BATCH):  # (at least one read takes a whole batch, however they arrive)
            sock.send(p.encode(p.Info(id=i + 1)))
        seen: list[bool] = []

        def drained():
            seen.append(leader_io.router in loop.behind)
            while sock.poll(0):
                sock.recv()
            return not seen[-1] and True in seen

        turn_until(loop, drained)  # behind after a full batch, caught up once the rest is read
    finally:
        sock.close()
