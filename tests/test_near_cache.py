"""The client's near cache (Client(..., cache=True)) against a real cluster: cached
lookups make no request, an exit event drops the location, a gap or a new leader
empties the cache."""

import os
import signal
import time

import msgspec
from cluster import wait_for

from forsetictl import Client
from forsetid import protocol as p


def near_client(cluster, name: str) -> Client:
    client = Client(cluster.endpoint(name), timeout=5.0, cache=True)
    cluster._clients.append(client)  # closed with the cluster
    return client


def warm(client: Client, group: str, key: str) -> p.Location:
    """Until a lookup of (group, key) is answered from the near cache."""
    loc = client.get(group, key)

    def cached():
        hits = client.near.hits if client.near else 0
        return client.find(group, key) == loc and client.near.hits > hits

    wait_for(cached, what="a near-cache hit")
    return loc


def test_cached_lookups_make_no_request(make_cluster):
    cluster = make_cluster(workers=2)
    client = near_client(cluster, "node1")
    loc = warm(client, "sleeper", "k1")
    sent = client.requests
    for _ in range(1000):
        assert client.find("sleeper", "k1") == loc
        assert client.get("sleeper", "k1") == loc
    assert client.requests == sent
    # And with every daemon frozen, the answer still comes (from memory).
    frozen = list(cluster.procs.values())
    try:
        for proc in frozen:
            proc.send_signal(signal.SIGSTOP)
        assert client.find("sleeper", "k1") == loc
    finally:
        for proc in frozen:
            proc.send_signal(signal.SIGCONT)
    assert client.requests == sent
    # A key never seen is still asked for.
    assert client.find("sleeper", "other") is None
    assert client.requests == sent + 1


def test_no_dead_location_after_its_exit_event(make_cluster):
    cluster = make_cluster(workers=2)
    owner = cluster.client("node1")
    loc = owner.get("sleeper", "k2")
    other = "node2" if loc.node == "node1" else "node1"
    client = near_client(cluster, other)  # caches a process of another node
    assert warm(client, "sleeper", "k2") == loc
    with owner.events("sleeper") as stream:
        os.kill(loc.pid, signal.SIGKILL)
        event = wait_for(lambda: stream.next_event(0.1), what="the exit event")
        while not (event.kind == "exited" and event.key == "k2"):
            event = wait_for(lambda: stream.next_event(0.1), what="the exit event")
    near = client.near
    exit_seq = event.seq
    wait_for(lambda: near.sync() or near.events.n >= exit_seq, what="the exit event at the client")
    assert near.locations.get(("sleeper", "k2")) is None
    for _ in range(100):
        assert client.find("sleeper", "k2") is None
    # A new process for the key is learnt afresh.
    fresh = client.get("sleeper", "k2")
    assert fresh.pid != loc.pid and client.find("sleeper", "k2") == fresh


def test_gap_and_new_epoch_empty_the_cache(make_cluster):
    cluster = make_cluster(workers=1)
    client = near_client(cluster, "node1")
    loc = warm(client, "sleeper", "k3")
    near = client.near
    # A gap in the sequence: two events lost, so nothing cached can be trusted.
    near.apply(p.Tick(seq=near.events.n + 2, epoch=near.events.epoch))
    assert len(near.locations) == 0
    sent = client.requests
    assert client.find("sleeper", "k3") == loc
    assert client.requests == sent + 1
    # The two events it "lost" happen now (a start and a stop), and it learns again.
    client.get("sleeper", "other")
    assert client.stop("sleeper", "other")
    warm(client, "sleeper", "k3")
    # A new leader (new epoch): the cache empties itself when its first tick arrives.
    epoch = near.events.epoch
    cluster.stop("leader")
    cluster.start("leader")
    cluster.wait_up()
    wait_for(lambda: near.sync() or near.events.epoch != epoch, timeout=10, what="the new leader's tick")
    assert near.locations.get(("sleeper", "k3")) is None
    sent = client.requests
    assert wait_for(lambda: client.find("sleeper", "k3"), what="k3 re-registered") == loc  # the same process
    assert client.requests > sent


def test_the_near_cache_trusts_a_silent_stream_as_long_as_the_cluster_does(make_cluster):
    c = make_cluster(workers=1, cluster={"heartbeat": 0.2, "liveness": 3})
    with Client(c.endpoint("node1"), cache=True) as client:
        client.find("sleeper", "x")  # opens the near cache
        assert abs(client.near.silence - 0.6) < 1e-9


# -- against a scripted node (a ROUTER and a PUB of the test's own): the races ------------


class ScriptedNode:
    """Answers info, and each get/find with ``answer(msg)`` after publishing what
    ``before(msg)`` returns: the events that overtake the reply."""

    def __init__(self, tmp_path, answer, before=lambda msg: [], silence: float = 3.0) -> None:
        import threading

        import zmq

        self.ctx = zmq.Context()
        self.router, self.pub = self.ctx.socket(zmq.ROUTER), self.ctx.socket(zmq.PUB)
        self.endpoint, self.events = f"ipc://{tmp_path}/node", f"ipc://{tmp_path}/events"
        self.router.bind(self.endpoint)
        self.pub.bind(self.events)
        self.answer, self.before, self.silence = answer, before, silence
        self.asked: list[p.Msg] = []
        self.client: Client | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def publish(self, msg: p.Msg) -> None:
        self.pub.send_multipart([b"", p.encode(msg)])

    def _serve(self) -> None:
        while not self.done.is_set():
            if not self.router.poll(20):
                continue
            peer, frame = self.router.recv_multipart()
            msg = p.decode(frame)
            if isinstance(msg, p.Info):
                reply = p.InfoReply(id=msg.id, node="n1", role="worker", events=self.events, silence=self.silence)
            elif isinstance(msg, p.Nodes):  # (a client asks for the other nodes once)
                reply = p.NodeList(id=msg.id, items=[])
            else:
                self.asked.append(msg)
                if events := self.before(msg):
                    for event in events:
                        self.publish(event)
                    time.sleep(0.05)  # (two connections: give the events a head start)
                reply = msgspec.structs.replace(self.answer(msg), id=msg.id)
            self.router.send_multipart([peer, p.encode(reply)])

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        self.done.set()
        self.thread.join()
        self.router.close(0)
        self.pub.close(0)
        self.ctx.term()


X = p.Location("g", "k", "n1", 4242, None, 1.0)


def live_near_client(node: ScriptedNode) -> Client:
    """A near-cache client whose event stream has heard event 1 of epoch e1 (closed
    with the node)."""
    node.client = client = Client(node.endpoint, timeout=5.0, cache=True)
    client.find("g", "warm-up")  # opens the near cache
    wait_for(
        lambda: (node.publish(p.Tick(seq=1, epoch="e1")), client.near.asking("g", "-")[0] == 1)[1], what="a live stream"
    )
    client.near.asked("g", "-")
    return client


def test_an_exit_that_overtakes_the_answer_to_a_find_wins(tmp_path):
    exit_x = p.Event(seq=2, epoch="e1", kind="exited", location=X, reason="exit", at=2.0)
    node = ScriptedNode(
        tmp_path,
        answer=lambda msg: p.Found(location=X, seq=1, epoch="e1"),
        before=lambda msg: [exit_x] if msg.key == "k" else [],
    )
    try:
        client = live_near_client(node)
        # The exit reaches the client before the answer, so the answer is not told.
        assert client.find("g", "k") is None
        assert (node.asked[-1].seq, node.asked[-1].epoch) == (1, "e1")  # the position went with it
        assert client.get("g", "k") == X  # a get keeps its answer (what it started may end at once)...
        assert client.near.lookup("g", "k") is None  # ...but does not keep it
    finally:
        node.close()


def test_a_silent_stream_forgets_locations_but_not_how_far_it_got(tmp_path):
    node = ScriptedNode(tmp_path, answer=lambda msg: p.Found(location=None), silence=0.3)
    try:
        client = live_near_client(node)
        node.publish(p.Event(seq=2, epoch="e1", kind="exited", location=X, reason="exit", at=2.0))
        wait_for(lambda: client.near.asking("g", "-")[0] == 2, what="the exit applied")
        wait_for(
            lambda: client.near.lookup("g", "k") is None and client.near.heard is None, what="the stream judged silent"
        )
        assert client.find("g", "k") is None
        # A worker whose cache lags behind that exit must still not answer from it.
        assert (node.asked[-1].seq, node.asked[-1].epoch) == (2, "e1")
    finally:
        node.close()


def test_exits_are_noted_for_every_key_in_flight_not_only_the_last_asked():
    import zmq

    from forsetictl.near_cache import NearCache

    ctx = zmq.Context()
    near = NearCache(ctx, "inproc://nobody-publishes-here")
    try:
        near.apply(p.Tick(seq=1, epoch="e1"))
        y = p.Location("g", "y", "n1", 4343, None, 1.0)
        near.asking("g", "k")  # two requests in flight at once (an AsyncClient's)
        near.asking("g", "y")
        near.apply(p.Event(seq=2, epoch="e1", kind="exited", location=X, reason="exit", at=2.0))
        assert near.learn(X, 1, "e1") is False  # the answer about k came after k's exit
        assert near.learn(y, 2, "e1") is True and near.lookup("g", "y") == y
        near.asked("g", "k")
        near.asked("g", "y")
        assert not near._exited
    finally:
        near.close()
        ctx.term()
