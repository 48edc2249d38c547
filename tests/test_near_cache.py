"""The client's near cache (Client(..., cache=True)) against a real cluster: cached
lookups make no request, an exit event drops the location, a gap or a new leader
empties the cache."""

import os
import signal

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
    wait_for(lambda: near.sync() or near.cache.seq >= exit_seq, what="the exit event at the client")
    assert near.cache.get("sleeper", "k2") is None
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
    near.apply(p.Tick(seq=near.cache.seq + 2, epoch=near.cache.epoch))
    assert len(near.cache) == 0
    sent = client.requests
    assert client.find("sleeper", "k3") == loc
    assert client.requests == sent + 1
    # The two events it "lost" happen now (a start and a stop), and it learns again.
    client.get("sleeper", "other")
    assert client.stop("sleeper", "other")
    warm(client, "sleeper", "k3")
    # A new leader (new epoch): the cache empties itself when its first tick arrives.
    epoch = near.cache.epoch
    cluster.stop("leader")
    cluster.start("leader")
    cluster.wait_up()
    wait_for(lambda: near.sync() or near.cache.epoch != epoch, timeout=10, what="the new leader's tick")
    assert near.cache.get("sleeper", "k3") is None
    sent = client.requests
    assert wait_for(lambda: client.find("sleeper", "k3"), what="k3 re-registered") == loc  # the same process
    assert client.requests > sent


def test_the_near_cache_trusts_a_silent_stream_as_long_as_the_cluster_does(make_cluster):
    c = make_cluster(workers=1, cluster={"heartbeat": 0.2, "liveness": 3})
    with Client(c.endpoint("node1"), cache=True) as client:
        client.find("sleeper", "x")  # opens the near cache
        assert abs(client.near.silence - 0.6) < 1e-9
