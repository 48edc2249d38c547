"""The shipped asyncio HTTP front-end (conf/frontend/frontend.py), run as a user runs
it, against a real cluster of two workers: sessions got, found and stopped over HTTP,
many at once, a name the rules refuse answered 400, and the front-end going on when
the node it talks to is SIGKILLed."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from cluster import ROOT, line_within

SESSIONS = {"sessions": {"entry": "forsetid.examples:sleeper"}, "chat": {"entry": "forsetid.examples:chat"}}


def ask(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


@pytest.fixture
def frontend(make_cluster):
    c = make_cluster(workers=2, calls=SESSIONS)
    endpoints = f"{c.endpoint('node1')},{c.endpoint('node2')}"
    cmd = [sys.executable, str(ROOT / "conf" / "frontend" / "frontend.py"), "--endpoint", endpoints, "--port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        line = line_within(proc.stdout, 10.0)
        assert line.startswith("listening on http://127.0.0.1:"), line
        yield c, int(line.rstrip().rstrip("/").rsplit(":", 1)[1])
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_frontend_serves_sessions_over_http(frontend):
    c, port = frontend
    status, alice = ask(port, "GET", "/session/alice")
    assert status == 200 and alice["key"] == "alice" and alice["pid"] > 0
    assert ask(port, "GET", "/find/alice") == (200, alice)
    assert ask(port, "GET", "/find/bob")[0] == 404
    with ThreadPoolExecutor(16) as pool:  # many connections at once, one event loop
        answers = list(pool.map(lambda i: ask(port, "GET", f"/session/u{i % 10}"), range(100)))
    assert all(status == 200 for status, _ in answers)
    assert len({body["pid"] for _, body in answers}) == 10  # one process per user
    status, body = ask(port, "GET", "/session/" + "x" * 2000)
    assert status == 400 and "a key is 1-1024 characters" in body["error"]
    assert ask(port, "DELETE", "/session/alice") == (200, {"stopped": True})


@pytest.mark.slow
def test_the_frontend_goes_on_when_its_node_is_killed(frontend):
    c, port = frontend
    users = [f"k{i}" for i in range(6)]
    locs = {u: ask(port, "GET", f"/session/{u}")[1] for u in users}
    assert any(loc["node"] == "node2" for loc in locs.values())
    c.kill("node1")
    for user, loc in locs.items():
        if loc["node"] == "node2":
            assert ask(port, "GET", f"/find/{user}") == (200, loc)


def test_the_frontend_talks_to_each_users_chat_session(frontend):
    """The per-user chat: each user's history lives in that user's one process, wherever
    it runs, posted to and read through any node with call."""
    c, port = frontend
    assert ask(port, "GET", "/chat/carol") == (404, {"error": "no chat for carol"})  # create=False: none yet
    for i, user in enumerate(["carol", "dave", "carol"]):
        assert ask(port, "POST", f"/chat/{user}", b"line %d" % i)[0] == 200
    assert ask(port, "GET", "/chat/carol") == (200, {"history": ["line 0", "line 2"]})
    assert ask(port, "GET", "/chat/dave") == (200, {"history": ["line 1"]})
    assert ask(port, "POST", "/chat/carol", b"more") == (200, {"lines": 3})
    pids = {loc.pid for loc in c.client().processes("chat")}
    assert len(pids) == 2  # one process per user
