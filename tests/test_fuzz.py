"""Many thousands of generated messages thrown at live daemons: every socket keeps
serving and nothing registered is lost."""

from __future__ import annotations

import os
import random
import sys

import msgspec
import pytest
import zmq
from cluster import Cluster, wait_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_cluster import alive

from forsetid import protocol as p
from forsetid.templates import escaped

TAGS = [cls.__struct_config__.tag for cls in p.Message.__args__] + ["", "nope", "GET"]
FIELDS = [
    "group",
    "key",
    "args",
    "location",
    "name",
    "call",
    "node",
    "incarnation",
    "processes",
    "items",
    "found",
    "kind",
    "message",
    "seq",
    "epoch",
    "pid",
    "reason",
    "capacity",
    "known",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.binary(max_size=20),
    st.just("k" * 2000),
    st.just(""),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(FIELDS), inner, max_size=3),
    max_leaves=6,
)
maps = st.fixed_dictionaries(
    {"t": st.sampled_from(TAGS)},
    optional={
        "v": st.one_of(st.just(1), st.integers(-5, 2**40), values),
        "id": st.one_of(st.integers(-10, 2**64 - 1), values),
        **{f: values for f in FIELDS},
    },
)
frames = st.one_of(
    st.binary(max_size=100),
    maps.map(msgspec.msgpack.encode),
    maps.map(msgspec.msgpack.encode).map(lambda b: b[: len(b) // 2]),  # truncated
    values.map(msgspec.msgpack.encode),
)
# Mostly one frame a message; now and then two or none.
messages = st.one_of(st.lists(frames, min_size=1, max_size=1), st.lists(frames, min_size=0, max_size=3))
EXAMPLES = 800
VARIANTS = 4  # cheap mutations of each generated message: flipped bytes, cut short


@pytest.fixture(scope="module")
def fuzzed():
    from cluster import Cluster

    c = Cluster(workers=2, cluster={"nodes": ["node1", "node2"], "heartbeat": 0.2})
    try:
        c.wait_up()
        client = c.client("node1")
        sentinels = [client.get("sleeper", f"sentinel{i}") for i in range(4)]
        ctx = zmq.Context.instance()
        socks = {}
        for name, endpoint in (("leader", c.cluster["leader"]), ("node1", c.endpoint("node1"))):
            socks[name] = ctx.socket(zmq.DEALER)
            socks[name].setsockopt(zmq.LINGER, 0)
            socks[name].connect(endpoint)
        socks["events"] = ctx.socket(zmq.XSUB)
        socks["events"].setsockopt(zmq.LINGER, 0)
        socks["events"].connect(c.cluster["events"])
        yield c, socks, sentinels
        for s in socks.values():
            s.close()
    finally:
        assert c.close() == []


def well_formed_answers(sock, wait_ms: int = 0) -> int:
    count = 0
    while sock.poll(wait_ms):
        assert isinstance(p.decode(sock.recv()), p.Message.__args__)
        count += 1
    return count


def variants(message: list[bytes], rnd: random.Random):
    yield message
    for _ in range(VARIANTS):
        frame = bytearray(rnd.choice(message) if message else b"")
        if frame and rnd.random() < 0.5:
            frame[rnd.randrange(len(frame))] = rnd.randrange(256)
        else:
            del frame[rnd.randrange(len(frame) + 1) :]
        yield [bytes(frame)]


@pytest.mark.slow
@settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(
    batch=st.lists(messages, min_size=1, max_size=4),
    target=st.sampled_from(["leader", "node1", "events"]),
    seed=st.integers(0, 2**32),
)
def test_fuzzed_frames_get_answers_and_change_nothing(fuzzed, batch, target, seed):
    c, socks, sentinels = fuzzed
    sock, rnd = socks[target], random.Random(seed)
    for message in batch:
        for variant in variants(message, rnd):
            if variant:
                sock.send_multipart(variant)
                socks["sent"] = socks.get("sent", 0) + (target != "events")
    if target != "events":
        socks["answers"] = socks.get("answers", 0) + well_formed_answers(sock)


@pytest.mark.slow
def test_after_the_fuzz_the_cluster_serves_and_lost_nothing(fuzzed):
    c, socks, sentinels = fuzzed
    answers = socks.pop("answers", 0) + sum(well_formed_answers(socks[n], 300) for n in ("leader", "node1"))
    sent = socks.pop("sent", 0)
    print(f"fuzz: {sent} messages to the leader and a worker, {answers} well-formed answers")
    assert sent > 4000 and answers >= 0.9 * sent, (sent, answers)  # (a fake worker's reports get none)
    for name in ("node1", "node2"):
        client = c.client(name)
        for s in sentinels:
            assert client.get("sleeper", s.key) == s and alive(s.pid)
        fresh = client.get("sleeper", f"fresh-{name}")
        assert fresh.node in ("node1", "node2") and client.stop("sleeper", fresh.key)
    assert [(n.name, n.state) for n in c.leader().nodes()] == [("node1", "up"), ("node2", "up")]
    with c.client("node2").events("sleeper") as events:
        c.client("node2").get("sleeper", "evented")
        assert events.next_event(5).key == "evented"
    assert all(proc.poll() is None for proc in c.procs.values())


# -- hostile keys through get, into a command group --

PRINT_ARGV = "import sys, time; print('got', sys.argv[1], flush=True); time.sleep(600)"
SHELL_SYNTAX = list(";|&$`'\"\\(){}<>*?!#~ \t\n") + ["$(", "`", "&&", "||", "${IFS}", "-c", "--", "{key}", "%s"]


@pytest.fixture(scope="module")
def commands(tmp_path_factory):
    """A cluster whose `command` groups get a key every way it may be given to them: in
    the environment read by a shell, and as an argument of its own."""
    canary = tmp_path_factory.mktemp("canary")
    log = {"log": "logs/{group}/{key}.log", "stop_timeout": 0.5}  # (relative to the config file)
    calls = {
        "env": {"command": ["sh", "-c", 'printf "got %s\\n" "$FORSETI_KEY"; exec sleep 600'], **log},
        "argv": {"command": ["sh", "-c", 'printf "got %s\\n" "$1"; exec sleep 600', "sh", "{key}"], **log},
        "py": {"command": [sys.executable, "-c", PRINT_ARGV, "{key}"], **log},
    }
    c = Cluster(workers=1, calls=calls)
    try:
        c.wait_up()
        yield c, canary
    finally:
        assert c.close() == []


@pytest.mark.slow
@settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(
    before=st.lists(st.sampled_from(SHELL_SYNTAX), max_size=4),
    after=st.lists(st.sampled_from(SHELL_SYNTAX), max_size=4),
    group=st.sampled_from(["env", "argv", "py"]),
)
def test_hostile_keys_through_get_run_nothing(commands, before, after, group):
    c, canary = commands
    key = "".join(before) + f"touch {canary}/pwned" + "".join(after)
    client = c.client()
    loc = client.get(group, key)
    assert loc.key == key and alive(loc.pid)
    out = c.dir / "logs" / group / f"{escaped(key)}.log"  # the process has said its key: it is past any injection
    expected = f"got {key}\n"
    # (a shell's printf may write its line in pieces: read it once it is all there)
    said = wait_for(
        lambda: out.exists() and len(text := out.read_text()) >= len(expected) and text, 5, 0.01,
        f"the output of {group}/{key!r}",
    )  # fmt: skip
    assert said == expected
    assert client.stop(group, key)
    assert not os.listdir(canary), f"the key {key!r} ran in group {group}"
