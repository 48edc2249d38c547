"""call and send through a real cluster: get-or-create then deliver, on the caller's node
and on another; every failure answered (gone, busy, no-mailbox, not-found, too large);
order; a process in any language; deadlines."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from cluster import HERE, ROOT, wait_for
from test_cli import ctl

from forsetictl import Busy, Client, ForsetiError, Gone, NotFound, Timeout, UnknownGroup

CALLS = {
    "talk": {"entry": "apps:talker"},
    "journal": {"entry": "apps:journal"},
    "small": {"entry": "apps:talker", "mailbox": 2},
    "mute": {"entry": "forsetid.examples:sleeper", "mailbox": 0},
    "aio": {"entry": "apps:async_talker"},
    "raw": {"command": [sys.executable, str(HERE / "dealer_process.py")]},
}


@pytest.fixture
def three(make_cluster):
    return make_cluster(workers=3, calls=CALLS)


def test_call_starts_the_key_then_answers_and_send_is_one_way(three):
    client = three.client("node1")
    assert client.call("talk", "alice", b"hello") == b"alice:hello"
    loc = client.find("talk", "alice")
    assert loc is not None
    assert client.call("talk", "alice", b"pid") == b"%d" % loc.pid  # the one process of the key
    client.send("journal", "j", b"a")
    client.send("journal", "j", b"b")
    assert client.call("journal", "j", b"?") == b"a,b"


def test_a_call_reaches_the_key_on_whichever_node_it_runs(three):
    """Through each node, to a process that runs on one of them: the same process answers."""
    locs = [three.client("node1").get("talk", f"k{i}") for i in range(3)]
    assert sorted(loc.node for loc in locs) == ["node1", "node2", "node3"]
    for via in ("node1", "node2", "node3"):
        client = three.client(via)
        for loc in locs:
            assert client.call("talk", loc.key, b"pid") == b"%d" % loc.pid


def test_order_from_one_client_to_one_key(three):
    """Sends and calls from one client arrive in the order sent, from another node too."""
    here, there = three.client("node1"), three.client("node2")
    loc = here.get("journal", "ordered")
    client = there if loc.node == "node1" else here  # (one of them is another node than the key's)
    payloads = [b"%d" % i for i in range(200)]
    for payload in payloads:
        client.send("journal", "ordered", payload)
    assert client.call("journal", "ordered", b"?") == b",".join(payloads)


def test_create_false_is_not_found_and_starts_nothing(three):
    client = three.client("node2")
    with pytest.raises(NotFound):
        client.call("talk", "nobody", b"x", create=False)
    with pytest.raises(NotFound):
        client.send("talk", "nobody", b"x", create=False)
    assert client.find("talk", "nobody") is None
    with pytest.raises(UnknownGroup):
        client.call("nope", "k", b"x")


def test_a_process_that_exits_answers_its_callers_gone(three, tmp_path):
    client = three.client("node1")
    loc = client.get("talk", "crash")
    other = three.client(next(n for n in ("node1", "node2", "node3") if n != loc.node))
    results = {}

    def waiter():
        try:
            other.call("talk", "crash", b"hold %s 30" % bytes(taken), timeout=20)
        except ForsetiError as exc:
            results["error"] = exc
            results["at"] = time.monotonic()

    taken = tmp_path / "taken"
    t = threading.Thread(target=waiter)
    t.start()
    wait_for(taken.exists, 10, 0.01, "the process to take the call (it will not answer it)")
    began = time.monotonic()
    os.kill(loc.pid, signal.SIGKILL)
    t.join(10)
    assert isinstance(results.get("error"), Gone), results
    assert "killed by SIGKILL" in str(results["error"]) and results["at"] - began < 2.0
    with pytest.raises(Gone, match="exited with code 7"):
        client.call("talk", "crash2", b"exit 7")


def test_a_full_mailbox_is_busy_and_a_group_without_one_refuses(three, tmp_path):
    """Mailbox 2: a call being answered and a send not yet taken fill it."""
    client = three.client("node1")
    client.get("small", "k")
    held = tmp_path / "held"
    other = three.client("node1", timeout=20)
    t = threading.Thread(target=other.call, args=("small", "k", b"hold %s 2" % bytes(held)))
    t.start()
    wait_for(held.exists, 5, 0.01, "the process to take the first call")
    client.send("small", "k", b"waits its turn")
    with pytest.raises(Busy, match="full"):
        client.send("small", "k", b"one more")
    with pytest.raises(Busy):
        client.call("small", "k", b"one more")
    t.join(10)
    assert client.call("small", "k", b"again") == b"k:again"  # room again
    with pytest.raises(ForsetiError) as info:
        client.call("mute", "k", b"x")
    assert info.value.kind == "no-mailbox"


def test_a_payload_over_the_limit_is_refused_before_it_leaves(three):
    client = three.client("node1")
    with pytest.raises(ForsetiError) as info:
        client.call("talk", "big", b"x" * (client.max_payload + 1))
    assert info.value.kind == "too-large"
    assert client.find("talk", "big") is None
    assert client.call("talk", "big", b"x" * 100_000) == b"big:" + b"x" * 100_000


def test_asyncio_and_a_process_in_any_language(three):
    client = three.client("node3")
    assert client.call("aio", "a", b"hi") == b"async hi"
    assert client.call("raw", "r", b"hi") == b"raw call hi"
    client.send("raw", "r", b"one way")  # (its reply is dropped)
    assert client.call("raw", "r", b"again") == b"raw call again"


def test_the_cli_calls_and_sends(three):
    ep = three.endpoint("node1")
    r = ctl("call", "talk", "cli", "hello", endpoint=ep)
    assert r.returncode == 0 and r.stdout == "cli:hello\n", r
    cmd = [sys.executable, "-m", "forsetictl", "--endpoint", ep, "send", "journal", "cli", "-"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run(cmd, input="from stdin", capture_output=True, text=True, timeout=20, env=env)
    assert r.returncode == 0 and r.stdout == "", r
    r = ctl("call", "journal", "cli", "?", endpoint=ep)
    assert r.stdout == "from stdin\n", r
    r = ctl("call", "talk", "nobody", "x", "--no-create", endpoint=ep)
    assert r.returncode == 1 and "no process" in r.stderr, r
    r = ctl("--json", "call", "talk", "gone", "exit 3", endpoint=ep)
    assert r.returncode == 3 and '"gone"' in r.stdout, r
    r = ctl("add-call", "quiet", "--entry", "apps:talker", "--mailbox", "0", endpoint=ep)
    assert r.returncode == 0, r
    r = ctl("call", "quiet", "k", "x", endpoint=ep)
    assert r.returncode == 3 and "takes no messages" in r.stderr, r


def test_an_async_client_calls_and_sends(three):
    import asyncio

    from forsetictl import AsyncClient

    async def main():
        async with AsyncClient(three.endpoint("node2")) as client:
            replies = await asyncio.gather(*(client.call("talk", f"a{i % 3}", b"%d" % i) for i in range(30)))
            assert replies == [b"a%d:%d" % (i % 3, i) for i in range(30)]
            await client.send("journal", "aj", b"x")
            assert await client.call("journal", "aj", b"?") == b"x"
            with pytest.raises(NotFound):
                await client.call("talk", "nobody", b"x", create=False)

    asyncio.run(main())


@pytest.mark.slow
def test_a_call_is_sent_again_through_another_node_only_with_retry(make_cluster):
    """A call whose node dies under it is delivered at most once: it fails, unless the
    caller said the payload is safe to repeat (retry=True)."""
    c = make_cluster(workers=2, calls=CALLS)
    with Client([c.endpoint("node1"), c.endpoint("node2")], timeout=5.0) as client:
        loc = next(loc for loc in (client.get("talk", f"r{i}") for i in range(6)) if loc.node == "node2")
        assert client.call("talk", loc.key, b"pid") == b"%d" % loc.pid
        wait_for(lambda: len(client.endpoints.all) == 2, what="node2's endpoint learnt")
        c.kill("node1")
        with pytest.raises(Timeout):
            client.call("talk", loc.key, b"once")
        assert client.call("talk", loc.key, b"twice is fine", retry=True) == loc.key.encode() + b":twice is fine"
