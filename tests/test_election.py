"""The election's parts: ``Office`` (the fencing rule, pure), ``Campaign`` against a real
etcd (win, stand by, resign, lose the lease when the loop stops turning, writes guarded
by the term), the gateway client, and the worker's way to its leader (pure)."""

from __future__ import annotations

import time

import pytest
from cluster import wait_for

from forsetictl.localetcd import LocalEtcd
from forsetid import protocol as p
from forsetid.effects import Reconnect, Reply, ToLeader
from forsetid.election import Campaign, Lost, Office, Renewed, Resigned, Standing, Won
from forsetid.etcd import Etcd, EtcdError
from forsetid.worker import Worker

# -- Office --


def test_a_leader_leads_until_lease_seconds_after_the_last_renewal_it_sent():
    office = Office(lease=2.0)
    assert not office.leading(0.0)
    office.won(term=7, sent_at=10.0)
    assert office.leading(11.9) and not office.leading(12.0)
    office.renewed(sent_at=11.0)  # (a renewal that succeeded, counted from when it was sent)
    assert office.leading(12.9) and not office.leading(13.0)
    office.renewed(sent_at=10.5)  # a late answer to an older renewal gives nothing back
    assert not office.leading(13.0)
    office.lost()
    assert not office.leading(11.0) and office.term == 7
    office.renewed(sent_at=20.0)  # a standby has nothing to renew
    assert not office.leading(20.5)


# -- Campaign, on a real etcd --


@pytest.fixture(scope="module")
def etcd():
    with LocalEtcd() as server:
        yield server


def reports(campaign: Campaign, kind, timeout: float = 10.0, keep_alive: bool = True):
    """Wait for a report of ``kind``, the loop's side kept turning (``alive``)."""
    seen = []

    def got():
        if keep_alive:
            campaign.alive(time.monotonic())
        seen.extend(campaign.taken())
        return next((r for r in seen if isinstance(r, kind)), None)

    return wait_for(got, timeout, 0.02, f"a {kind.__name__} report")


def campaign(etcd, name: str, cluster: str, lease: float = 1.0) -> Campaign:
    c = Campaign(Etcd([etcd.url], timeout=0.5), cluster, name, lease)
    c.start()
    return c


def test_one_campaign_wins_the_other_stands_by_and_takes_over_when_it_resigns(etcd):
    a = campaign(etcd, "a", "resign")
    try:
        won = reports(a, Won)
        assert won.term > 0 and won.members == [] and won.calls == {}
        b = campaign(etcd, "b", "resign")
        try:
            standing = reports(b, Standing)
            assert (standing.leader, standing.term) == ("a", won.term)
            reports(a, Renewed)
            a.record(won.term - 1, "members/stale", b"")  # queued in a term that has ended: dropped
            a.record(won.term, "members/node1", b"")
            a.record(won.term, "calls/extra", b'{"command": ["sleep", "1"]}')
            wait_for(lambda: Etcd([etcd.url]).get("/forseti/resign/members/node1"), 5, 0.02, "the record")
            a.resign()
            reports(a, Resigned)
            t0 = time.monotonic()
            won_b = reports(b, Won)
            assert time.monotonic() - t0 < 1.0  # at once, through the watch: not at the lease's lapse
            assert won_b.term > won.term and won_b.members == ["node1"] and b"sleep" in won_b.calls["extra"]
        finally:
            b.resign()
            b.close()
    finally:
        a.close()


def test_a_loop_that_stops_turning_loses_office(etcd):
    a = campaign(etcd, "a", "wedged", lease=1.0)
    try:
        reports(a, Won)
        lost = reports(a, Lost, timeout=10, keep_alive=False)  # no alive(): the lease lapses
        assert "the loop did not turn" in lost.why
        # Once it turns again it stands for office again, with a new term.
        assert reports(a, Won).term > 0
    finally:
        a.resign()
        a.close()


def test_writes_of_a_past_term_are_refused(etcd):
    client = Etcd([etcd.url])
    lease = client.grant(5)
    won, term, _ = client.create("/forseti/guard/leader", "a", lease)
    assert won and client.put_if("/forseti/guard/leader", term, "/forseti/guard/x", b"1")
    again, same, holder = client.create("/forseti/guard/leader", "b", lease)
    assert (again, same, holder) == (False, term, "a")
    client.revoke(lease)
    assert not client.put_if("/forseti/guard/leader", term, "/forseti/guard/x", b"2")
    assert client.prefix("/forseti/guard/") == {"x": b"1"}


def test_every_endpoint_is_tried_in_turn(etcd):
    client = Etcd(["http://127.0.0.1:1", etcd.url], timeout=0.5)
    assert client.grant(2) > 0  # the dead one first, then the live one
    with pytest.raises(EtcdError, match="no etcd endpoint answered"):
        Etcd(["http://127.0.0.1:1"], timeout=0.2).grant(2)


# -- the worker's way to its leader (pure) --


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def ha_worker():
    clock = Clock()
    leaders = [("a", "tcp://a"), ("b", "tcp://b"), ("c", "tcp://c")]
    return Worker("node1", clock=clock, leaders=leaders, heartbeat=1.0, election_lease=2.0), clock


def test_a_worker_goes_where_a_standby_says_the_leader_is_and_obeys_only_the_newest_term():
    w, clock = ha_worker()
    assert w.endpoint == "tcp://a"
    hello = w.hello()
    out = w.on_leader(p.Error(id=hello.id, kind=p.NOT_LEADER, message="a does not lead", leader="b"))
    assert [e.endpoint for e in out if isinstance(e, Reconnect)] == ["tcp://b"]
    w.on_leader(p.Welcome(id=w.hello_id, epoch="9", term=9, leader="b"))
    assert w.welcomed and w.term == 9
    # An order is obeyed from the leader that welcomed it; a welcome of an older term is refused.
    out = w.on_event(p.Elected(node="c", term=12, epoch="12"))
    assert [e.endpoint for e in out if isinstance(e, Reconnect)] == ["tcp://c"] and not w.welcomed
    assert w.on_leader(p.Kill(location=p.Location("g", "k", "node1", 1, None, 0.0))) == []
    out = w.on_leader(p.Welcome(id=w.hello_id, epoch="5", term=5, leader="c"))
    assert not w.welcomed and any(isinstance(e, Reconnect) for e in out)
    assert w.on_event(p.Elected(node="a", term=8, epoch="8")) == []  # old news


def test_a_worker_searches_the_candidates_and_sends_its_waiting_requests_again():
    w, clock = ha_worker()
    w.on_leader(p.Welcome(id=w.hello().id, epoch="3", term=3, leader="a"))
    (forward,) = w.on_client(b"c1", p.Get(id=1, group="g", key="k"))
    assert isinstance(forward, ToLeader)
    add = w.on_client(b"c2", p.AddCall(id=2, name="x", call=p.Call(command=["true"])))
    out = w.on_event(p.Elected(node="b", term=4, epoch="4"))
    sent = [e.msg for e in out if isinstance(e, ToLeader)]
    assert isinstance(sent[0], p.Hello) and [type(m) for m in sent[1:]] == [p.Get]  # the get again, safe
    assert [e.msg.kind for e in out if isinstance(e, Reply)] == [p.NO_LEADER]  # the add-call may have been done
    assert add and w.forwards and all(isinstance(r, p.Get) for _, _, r in w.forwards.values())
    # b does not answer: a heartbeat later the worker tries the next candidate.
    clock.now += 1.0
    assert [e.endpoint for e in w.expire() if isinstance(e, Reconnect)] == ["tcp://c"]


# -- etcd that answers badly --


class Proxy:
    """An HTTP front of the real etcd that answers ``fail(path)`` requests with a 503
    and an error body, as a sick member or a proxy would; counts what it was asked."""

    def __init__(self, etcd_url: str, fail) -> None:
        import http.server
        import threading
        import urllib.parse

        target = urllib.parse.urlsplit(etcd_url)
        asked: list[str] = []
        self.asked = asked

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                asked.append(self.path)
                if fail(self.path):
                    data = b'{"error": "etcdserver: too many requests", "code": 14, "message": "too many requests"}'
                    self.send_response(503)
                else:
                    conn = http.client.HTTPConnection(target.hostname, target.port, timeout=5)
                    conn.request("POST", self.path, body=body, headers={"Content-Type": "application/json"})
                    data = conn.getresponse().read()  # (a watch would stream: not proxied here)
                    conn.close()
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        import http.client

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_member_that_answers_with_an_error_is_passed_over_for_the_next(etcd):
    sick = Proxy(etcd.url, fail=lambda path: True)
    try:
        client = Etcd([sick.url, etcd.url], timeout=0.5)
        assert client.grant(2) > 0 and sick.asked == ["/v3/lease/grant"]
        assert client.grant(2) > 0 and len(sick.asked) == 1  # the one that answered is asked first now
        with pytest.raises(EtcdError, match="too many requests"):
            Etcd([sick.url], timeout=0.5).grant(2)
    finally:
        sick.close()


def test_a_standby_whose_watch_fails_at_once_does_not_spin(etcd):
    holder = Etcd([etcd.url])
    lease = holder.grant(10)
    assert holder.create("/forseti/spin/leader", "someone", lease)[0]
    front = Proxy(etcd.url, fail=lambda path: path == "/v3/watch")
    standby = Campaign(Etcd([front.url], timeout=0.5), "spin", "b", lease=2.0)
    standby.start()
    try:
        time.sleep(2.0)
        standby.alive(time.monotonic())
        watches = front.asked.count("/v3/watch")
        assert 1 <= watches <= 8, front.asked  # one every `every` (0.5 s) at most, not thousands
    finally:
        standby.close()
        front.close()
        holder.revoke(lease)


def test_a_worker_that_lost_its_leader_follows_a_rebuilt_etcds_lower_terms():
    w, clock = ha_worker()
    w.on_leader(p.Welcome(id=w.hello().id, epoch="52", term=52, leader="a"))
    clock.now += w.silence + 0.1  # no word from any leader for longer than a lease
    w.expire()
    assert w.term == 0
    w.on_leader(p.Welcome(id=w.hello_id, epoch="2", term=2, leader="b"))
    assert w.welcomed and w.term == 2
