"""Unit tests of a worker's calls and sends (talks.py) and its processes' mailboxes
(mailboxes.py): decisions only, driven with messages and fake peers."""

from __future__ import annotations

from test_worker import ENTRY, WALL, make, started

from forsetid import protocol as p
from forsetid.effects import Dropped, Reply, ToLeader, ToPeer, ToProcess

CLIENT = b"client-1"
MAILBOX = "ipc:///tmp/forseti-test/mailbox"
LOC2 = p.Location("users", "far", "node2", 777)


def talker():
    worker, _ = make(mailbox=MAILBOX, calls={"users": ENTRY})
    return worker


def talk(key="k", payload=b"hi", id=9, **kw) -> p.Talk:
    return p.Talk(id=id, group="users", key=key, payload=payload, deadline=WALL + 5, **kw)


def hello(worker, proc, peer=b"proc-1"):
    return worker.on_process(peer, [b"hello", str(proc.token).encode()])


def test_a_call_to_a_local_process_waits_for_its_hello_then_its_reply_goes_to_its_caller():
    worker = talker()
    proc, _ = started(worker)
    assert worker.processes.env(proc)["FORSETI_MAILBOX"] == MAILBOX
    assert worker.on_client(CLIENT, talk()) == []  # queued: the process has not said hello
    (push,) = hello(worker, proc)
    assert isinstance(push, ToProcess) and push.peer == b"proc-1" and push.frames[0] == b"call"
    number = push.frames[1]
    (answer,) = worker.on_process(b"proc-1", [b"reply", number, b"hello back"])
    assert answer == Reply(CLIENT, p.Answer(id=9, payload=b"hello back"))
    assert worker.on_process(b"proc-1", [b"reply", number, b"twice"]) == []  # one reply per request
    assert worker.mailboxes.held == 0


def test_a_send_is_answered_once_in_the_mailbox_and_the_mailbox_is_bounded():
    worker = talker()
    proc, _ = started(worker)
    worker.mailboxes.boxes[proc.token].limit = 2
    hello(worker, proc)
    ok, push = worker.on_client(CLIENT, talk(id=1, one_way=True))
    assert ok == Reply(CLIENT, p.Ok(id=1)) and push.frames[0] == b"send"
    worker.on_client(CLIENT, talk(id=2))
    (busy,) = worker.on_client(CLIENT, talk(id=3))
    assert busy.msg.kind == p.BUSY and "full (2 requests unanswered)" in busy.msg.message
    worker.on_process(b"proc-1", [b"reply", push.frames[1], b""])  # the send was taken: room again
    assert isinstance(worker.on_client(CLIENT, talk(id=4))[0], ToProcess)


def test_the_callers_of_a_process_that_ends_hear_gone_naming_how():
    worker = talker()
    proc, _ = started(worker, pid=4242)
    worker.on_client(CLIENT, talk(id=1))
    hello(worker, proc)
    worker.on_client(b"client-2", talk(id=2))
    out = worker.processes.on_exit(4242, -9)
    gone = [e for e in out if isinstance(e, Reply)]
    assert {(e.peer, e.msg.id) for e in gone} == {(CLIENT, 1), (b"client-2", 2)}
    assert all(e.msg.kind == p.GONE and "killed by SIGKILL" in e.msg.message for e in gone)
    assert worker.mailboxes.held == 0


def test_a_miss_asks_the_leader_and_the_talks_behind_it_keep_their_order():
    worker = talker()
    (ask,) = worker.on_client(CLIENT, talk(id=1, payload=b"a"))
    assert isinstance(ask, ToLeader) and isinstance(ask.msg, p.Get) and ask.msg.deadline == WALL + 5
    assert worker.on_client(CLIENT, talk(id=2, payload=b"b")) == []  # behind the lookup
    nodes_ask = worker.on_leader(p.Found(id=ask.msg.id, location=p.Location("users", "k", "node2", 777)))
    (nodes,) = nodes_ask  # the other node's endpoint is not known yet
    assert isinstance(nodes.msg, p.Nodes)
    item = p.NodeInfo("node2", "up", 1, 0, listen="tcp://10.0.0.2:7072")
    sent = worker.on_leader(p.NodeList(id=nodes.msg.id, items=[item]))
    assert [(e.endpoint, e.msg.payload, e.msg.here) for e in sent] == [
        ("tcp://10.0.0.2:7072", b"a", True),
        ("tcp://10.0.0.2:7072", b"b", True),
    ]
    (back,) = worker.on_peer(p.Answer(id=sent[1].msg.id, payload=b"B"))
    assert back == Reply(CLIENT, p.Answer(id=2, payload=b"B"))


def test_create_false_is_a_find_and_not_found_is_said():
    worker = talker()
    (ask,) = worker.on_client(CLIENT, talk(create=False))
    assert isinstance(ask.msg, p.Find)
    (err,) = worker.on_leader(p.Found(id=ask.msg.id, location=None))
    assert err.msg.kind == p.NOT_FOUND


def test_a_talk_elsewhere_hears_gone_when_its_process_exits_or_its_node_is_lost():
    worker = talker()
    worker.talks.endpoints["node2"] = "tcp://10.0.0.2:7072"
    worker.cache.learn(LOC2, 0)
    (sent,) = worker.on_client(CLIENT, talk(key="far"))
    assert isinstance(sent, ToPeer)
    (gone,) = worker.on_event(p.Event(seq=1, epoch="e1", kind="exited", location=LOC2, reason="node-down"))
    assert gone.msg.kind == p.GONE and "its node went down" in gone.msg.message
    assert worker.on_peer(p.Answer(id=sent.msg.id, payload=b"late")) == []  # answered once


def test_a_talk_the_other_node_no_longer_knows_is_looked_up_again_once():
    worker = talker()
    worker.talks.endpoints["node2"] = "tcp://10.0.0.2:7072"
    worker.cache.learn(LOC2, 0)
    (sent,) = worker.on_client(CLIENT, talk(key="far"))
    (ask,) = worker.on_peer(p.Error(id=sent.msg.id, kind=p.NOT_FOUND, message="users/far is not on node2"))
    assert isinstance(ask.msg, p.Get)  # not delivered anywhere: safe to place again
    (again,) = worker.on_leader(p.Found(id=ask.msg.id, location=LOC2))
    (gone,) = worker.on_peer(p.Error(id=again.msg.id, kind=p.NOT_FOUND, message="users/far is not on node2"))
    assert gone.msg.kind == p.GONE


def test_refused_at_once_and_dropped_past_its_deadline():
    worker = talker()
    (err,) = worker.on_client(CLIENT, p.Talk(id=1, group="nope", key="k", payload=b""))
    assert err.msg.kind == p.UNKNOWN_GROUP
    worker.calls["quiet"] = p.Call(entry="m:f", mailbox=0)
    (err,) = worker.on_client(CLIENT, p.Talk(id=2, group="quiet", key="k", payload=b""))
    assert err.msg.kind == p.NO_MAILBOX
    (err,) = worker.on_client(CLIENT, talk(payload=b"x" * (p.MAX_PAYLOAD + 1)))
    assert err.msg.kind == p.TOO_LARGE
    (dropped,) = worker.on_client(CLIENT, p.Talk(id=3, group="users", key="k", payload=b"", deadline=WALL - 1))
    assert isinstance(dropped, Dropped)


def test_a_lookup_the_leader_never_answers_does_not_block_its_key():
    worker = talker()
    (ask,) = worker.on_client(CLIENT, talk(id=1))
    (err,) = worker._forget_forward(ask.msg.id)
    assert err.msg.kind == "timeout"
    (again,) = worker.on_client(CLIENT, talk(id=2))
    assert isinstance(again.msg, p.Get)  # asked afresh, not queued behind a lost lookup
