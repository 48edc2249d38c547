"""Unit tests of forsetid.protocol: the one encoder/decoder pair and its errors."""

import typing

import msgspec
import pytest

from forsetid import protocol as p

LOC = p.Location("users", "k1", "node1", 4242, "ipc:///tmp/k1.sock", 1700000000.5)
CALL = p.Call(entry="forsetid.examples:echo", args=["a", 1, 2.5, True, None])
CMD = p.Call(command=["sleep", "{key}"], ready=True, start_timeout=2.0, stop_timeout=0.5, endpoint="tcp://{node}:1")

SAMPLES = [
    p.Get(id=1, group="users", key="k1", args=["x", 1, None]),
    p.Find(id=2, group="users", key="k1"),
    p.Stop(id=3, group="users", key="k1"),
    p.List(id=4, group="users"),
    p.Nodes(id=5),
    p.Calls(id=6),
    p.AddCall(id=7, name="users", call=CMD),
    p.AddCall(id=7, name="users", call=CMD, replace=True),
    p.RemoveCall(id=8, name="users"),
    p.Drain(id=9, node="node1", stop=True),
    p.Undrain(id=10, node="node1"),
    p.Leaving(),
    p.Info(id=8),
    p.Talk(id=8, group="users", key="k1", payload=b"\x00hello", args=["x"], create=False, deadline=1700000000.25),
    p.Talk(id=8, group="users", key="k1", payload=b"", one_way=True, here=True),
    p.Answer(id=8, payload=b"\xffreply"),
    p.Found(id=9, location=LOC, seq=12),
    p.Stopped(id=10, found=True),
    p.Locations(id=11, items=[LOC]),
    p.NodeList(id=12, items=[p.NodeInfo("node1", "up", 3, 10, ["users"], "tcp://127.0.0.1:7072")]),
    p.CallList(id=13, items={"default": CALL, "users": CMD}),
    p.Ok(id=14),
    p.InfoReply(id=15, node="node1", role="both", events="tcp://127.0.0.1:7071"),
    p.Error(id=16, kind=p.UNKNOWN_GROUP, message="unknown group 'x'"),
    p.Hello(
        id=17,
        node="node1",
        incarnation="abc",
        capacity=5,
        processes=[LOC],
        calls={"users": CMD},
        suspended={"users": 3.5},
    ),
    p.Welcome(id=18, epoch="e1", calls={"default": CALL}),
    p.Suspend(id=19, group="users", seconds=10.0),
    p.Ping(id=20),
    p.Pong(id=21, epoch="e1", known=False),
    p.Spawn(id=22, group="users", key="k1", call=CALL, args=[1]),
    p.Spawned(id=23, location=LOC),
    p.SpawnFailed(id=24, group="users", key="k1", reason="boom"),
    p.Kill(id=25, location=LOC, reason="conflict"),
    p.Kill(id=25, location=LOC, reason="stopped", drain=True),
    p.Exited(id=26, location=LOC, exit_code=None, signal=9, reason="exit", at=1700000001.0),
    p.Exited(id=26, location=LOC, exit_code=None, signal=15, reason="stopped", at=1700000001.0, drain=True),
    p.Event(seq=7, epoch="e1", kind="exited", location=LOC, exit_code=1, reason="exit", at=1.0, gseq=3),
    p.Tick(seq=7, epoch="e1", gseq=3),
    p.Elected(node="node2", term=42, epoch="42"),
]


def raw(**fields) -> bytes:
    return msgspec.msgpack.encode({"v": p.VERSION, "id": 77, **fields})


def bad(frame: bytes) -> p.Error:
    with pytest.raises(p.BadMessage) as info:
        p.decode(frame)
    err = info.value.reply
    assert isinstance(err, p.Error)
    assert str(info.value) == err.message
    return err


def call_error(**call) -> str:
    with pytest.raises((ValueError, msgspec.ValidationError)) as info:
        msgspec.convert(call, p.Call)
    return str(info.value)


# -- round trips --


def test_samples_cover_every_message_kind():
    assert {type(m) for m in SAMPLES} == set(typing.get_args(p.Message))


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__struct_config__.tag)
def test_round_trip(msg):
    frame = p.encode(msg)
    assert len(frame) < p.MAX_MESSAGE
    out = p.decode(frame)
    assert type(out) is type(msg)
    assert out == msg
    wire = msgspec.msgpack.decode(frame)
    assert wire["t"] == type(msg).__struct_config__.tag
    assert wire["v"] == p.VERSION


def test_defaults_fill_in_and_are_omitted_from_calls():
    out = p.decode(raw(t="get", group="g", key="k"))
    assert out == p.Get(id=77, group="g", key="k", args=[])
    assert msgspec.msgpack.decode(p.encode(p.Call(entry="m:f"))) == {"entry": "m:f"}


def test_topic_is_group_then_nul():
    assert p.topic("users") == b"users\0"


# -- decode errors --


@pytest.mark.parametrize(
    "frame, words",
    [
        (b"", ["empty frame"]),
        (b"\xc1\xc1\xc1", ["not MessagePack"]),
        (p.encode(p.Get(id=5, group="g", key="k"))[:-3], ["truncated"]),
        (raw(t="no-such-tag"), ["no-such-tag", "$.t"]),
        (raw(t="get", group=12, key="k"), ["Expected `str`", "$.group"]),
        (raw(t="get", group="g"), ["missing", "key"]),
        (raw(t="get", group="g", key=""), ["length >= 1", "$.key"]),
        (raw(t="get", group="g", key="x" * 1025), ["length <= 1024", "$.key"]),
        (raw(t="get", group="a\0b", key="k"), ["$.group"]),
        (raw(t="get", group="a b", key="k"), ["$.group"]),
        (raw(t="find", group="g" * 129, key="k"), ["$.group"]),
        (raw(t="stopped", found="yes"), ["Expected `bool`", "$.found"]),
        (msgspec.msgpack.encode([1, 2, 3]), ["Expected `object`"]),
        (raw(group="g", key="k"), ["missing", "`t`"]),
    ],
    ids=[
        "empty",
        "not-msgpack",
        "truncated",
        "unknown-tag",
        "wrong-type",
        "missing-field",
        "empty-key",
        "huge-key",
        "group-nul",
        "group-space",
        "group-long",
        "bool-type",
        "not-a-map",
        "no-tag",
    ],
)
def test_bad_frames_give_bad_message(frame, words):
    err = bad(frame)
    assert err.kind == p.BAD_MESSAGE
    assert err.message.startswith("malformed message: ")
    for word in words:
        assert word in err.message


def test_key_of_1024_is_accepted():
    assert p.decode(raw(t="get", group="g", key="x" * 1024)).key == "x" * 1024


def test_reply_carries_the_senders_id_when_readable():
    assert bad(raw(t="get", group="g", key="")).id == 77
    assert bad(raw(t="nope")).id == 77
    assert bad(b"").id == 0
    assert bad(b"\xc1").id == 0
    assert bad(msgspec.msgpack.encode({"t": "get", "v": 1, "id": "seven", "group": "g"})).id == 0
    assert bad(msgspec.msgpack.encode({"t": "get", "v": 1, "id": -1})).id == 0


@pytest.mark.parametrize("fields", [dict(t="get", group="g", key="k"), dict(t="not-yet-invented", x=1)])
def test_other_version_gives_version_error(fields):
    err = bad(msgspec.msgpack.encode({**fields, "v": 2, "id": 31}))
    assert err.kind == p.VERSION_MISMATCH
    assert err.id == 31
    assert "version 2" in err.message and f"version {p.VERSION}" in err.message


def test_error_reply_itself_encodes():
    err = bad(b"")
    assert p.decode(p.encode(err)) == err


# -- Call validation --


def test_call_needs_entry_or_command():
    assert "exactly one of `entry` or `command`" in call_error()
    assert "exactly one of `entry` or `command`" in call_error(entry="m:f", command=["x"])


@pytest.mark.parametrize("entry", ["module", "module:", ":func", ""])
def test_call_entry_format(entry):
    assert "package.module:function" in call_error(entry=entry)


def test_call_command_not_empty():
    assert "`command` must not be empty" in call_error(command=[])


def test_call_timeouts_checked():
    assert "> 0" in call_error(entry="m:f", start_timeout=0)
    assert ">= 0" in call_error(entry="m:f", stop_timeout=-1)


def test_call_unknown_field_refused():
    assert "unknown field `bogus`" in call_error(entry="m:f", bogus=1)


def test_bad_call_inside_a_message_is_a_bad_message():
    err = bad(raw(t="add-call", name="g", call={"entry": "m:f", "command": ["x"]}))
    assert err.kind == p.BAD_MESSAGE and err.id == 77
    assert "exactly one of" in err.message and "$.call" in err.message


def test_a_restart_policy_is_one_of_three_and_never_by_default():
    assert p.Call(entry="m:f").restart == "never"
    assert msgspec.msgpack.decode(p.encode(p.Call(entry="m:f", restart="always"))) == {
        "entry": "m:f",
        "restart": "always",
    }
    assert "Invalid enum value 'sometimes'" in call_error(entry="m:f", restart="sometimes")
    with pytest.raises(ValueError, match=r"`restart` must be one of 'never', 'on-failure', 'always', got 'x'"):
        p.Call(entry="m:f", restart="x")  # type: ignore[arg-type]
    err = bad(raw(t="add-call", name="g", call={"entry": "m:f", "restart": "often"}))
    assert err.kind == p.BAD_MESSAGE and "$.call.restart" in err.message


def test_valid_calls():
    assert p.Call(entry="pkg.mod:func").command is None
    assert p.Call(command=["true"]).entry is None


def test_a_template_with_an_unknown_placeholder_is_refused():
    with pytest.raises(ValueError, match=r"unknown placeholder \{kee\}"):
        p.Call(command=["serve", "{kee}"])
    with pytest.raises(ValueError, match=r"`endpoint` has an unknown placeholder \{grup\}"):
        p.Call(entry="m:f", endpoint="ipc:///run/{grup}/{key}")
    # A shell's ${NAME} and braces that name nothing are not placeholders.
    assert p.Call(command=["sh", "-c", "echo ${HOME} {} {1,2}", "sh", "{key}"], endpoint="tcp://{node}:1").command


def test_a_lookup_that_passed_the_check_is_not_decoded_again_and_a_bad_one_never_passes(monkeypatch):
    decoded = []
    real = p._decoder

    class Counting:
        def decode(self, frame):
            decoded.append(frame)
            return real.decode(frame)

    monkeypatch.setattr(p, "_decoder", Counting())
    monkeypatch.setattr(p, "_PASSED", {})  # (as a client starts)
    for _ in range(3):
        assert p.checked(p.Find(id=1, group="g", key="k")) == p.encode(p.Find(id=1, group="g", key="k"))
        p.checked(p.Get(id=2, group="g", key="k"))
    assert len(decoded) == 1  # the first find's check: the same (group, key) passed
    for _ in range(2):
        p.checked(p.Get(id=3, group="g", key="k", args=["x"]))  # a get with arguments: checked every time
        with pytest.raises(p.Refused, match="a key is"):
            p.checked(p.Find(id=4, group="g", key=""))  # a bad one: every time, never remembered
    assert len(decoded) == 5
    assert ("g", "") not in p._PASSED
