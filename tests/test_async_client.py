"""forsetictl.AsyncClient against real daemons, each test on a real event loop
(``asyncio.run`` inside a plain test): the same answers as Client, many requests in
flight on one client, cancellation, events, the near cache."""

from __future__ import annotations

import asyncio
import time

import pytest

from forsetictl import AsyncClient, BadEndpoint, BadRequest, ForsetiError, Timeout, UnknownGroup, Unreachable
from forsetid import protocol as p


def test_everything_client_does_as_coroutines(make_cluster):
    c = make_cluster(workers=2)

    async def main():
        async with AsyncClient(c.endpoint("node1"), timeout=5.0) as client:
            loc = await client.get("sleeper", "a1")
            assert loc.group == "sleeper" and loc.key == "a1" and loc.pid > 0
            assert await client.find("sleeper", "a1") == loc
            assert await client.find("sleeper", "nobody") is None
            assert [x.key for x in await client.processes("sleeper")] == ["a1"]
            nodes = await client.nodes()
            assert sorted(n.name for n in nodes) == ["node1", "node2"]
            assert {n.listen for n in nodes} == {c.endpoint("node1"), c.endpoint("node2")}
            assert "sleeper" in await client.calls()
            await client.add_call("extra", command=["sleep", "60"])
            assert "extra" in await client.calls()
            await client.remove_call("extra")
            with pytest.raises(UnknownGroup):
                await client.get("extra", "k")
            await client.drain("node2")
            assert {n.name: n.state for n in await client.nodes()}["node2"] == "draining"
            await client.undrain("node2")
            assert (await client.leader())["leader"] == c.leader_name
            assert (await client.info()).node == "node1"
            assert await client.stop("sleeper", "a1") is True
            assert await client.stop("sleeper", "a1") is False

    asyncio.run(main())


def test_a_thousand_requests_in_flight_on_one_client_each_get_their_own_answer(make_cluster):
    c = make_cluster(workers=1)

    async def main():
        async with AsyncClient(c.endpoint("node1"), timeout=30.0) as client:  # (a loaded machine is slow)
            locs = await asyncio.gather(*(client.get("sleeper", f"k{i}") for i in range(3)))
            keys = [locs[i % 3].key for i in range(1000)]
            found = await asyncio.gather(*(client.find("sleeper", k) for k in keys))
            assert [f.key for f in found] == keys

    asyncio.run(main())


def test_a_cancelled_request_leaves_the_client_usable(make_cluster):
    c = make_cluster(workers=1)

    async def main():
        async with AsyncClient(c.endpoint("node1"), timeout=5.0) as client:
            loc = await client.get("sleeper", "c1")
            # A get of a slow start, cancelled while it waits: its late answer is dropped.
            slow = asyncio.ensure_future(client.get("slow", "s1"))
            await asyncio.sleep(0.05)
            slow.cancel()
            with pytest.raises(asyncio.CancelledError):
                await slow
            for _ in range(3):  # and everything after it is answered, each with its own answer
                assert await client.find("sleeper", "c1") == loc
            deadline = time.monotonic() + 10
            while await client.find("slow", "s1") is None:  # started: its get's late answer was sent
                assert time.monotonic() < deadline, "the slow start never finished"
                await asyncio.sleep(0.05)
            assert await client.find("sleeper", "c1") == loc  # (the late answer was dropped, not taken for this)
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(client.get("slow", "s2"), 0.01)
            assert await client.find("sleeper", "c1") == loc
            assert not client._lines[c.endpoint("node1")].waiting  # nothing left behind

    asyncio.run(main())


def test_events_is_an_async_iterator(make_cluster):
    c = make_cluster(workers=1)

    async def main():
        async with AsyncClient(c.endpoint("node1")) as client:
            async with client.events("sleeper") as stream:
                loc = await client.get("sleeper", "e1")
                seen = []
                async for event in stream:
                    seen.append((event.kind, event.key))
                    if event.kind == "started" and event.key == "e1":
                        await client.stop("sleeper", "e1")
                    if event.kind == "exited":
                        break
                assert seen == [("started", "e1"), ("exited", "e1")] and event.pid == loc.pid
                assert await stream.next_event(0.05) is None

    asyncio.run(main())


def test_the_near_cache_answers_without_a_request(make_cluster):
    c = make_cluster(workers=1)

    async def main():
        async with AsyncClient(c.endpoint("node1"), cache=True) as client:
            loc = await client.get("sleeper", "n1")
            deadline = time.monotonic() + 5
            while not (client.near is not None and client.near.hits):
                assert await client.find("sleeper", "n1") == loc
                assert time.monotonic() < deadline, "the near cache never answered"
                await asyncio.sleep(0.01)
            sent = client.requests
            for _ in range(100):
                assert await client.find("sleeper", "n1") == loc
            assert client.requests == sent

    asyncio.run(main())


def test_fail_fast_refused_endpoint_bad_endpoint_bad_request(tmp_path):
    async def main():
        async with AsyncClient(f"ipc://{tmp_path}/nobody", timeout=5.0) as client:
            start = time.monotonic()
            with pytest.raises(Unreachable) as err:
                await client.find("g", "k")
            assert time.monotonic() - start < 2.0
            assert isinstance(err.value, Timeout) and f"ipc://{tmp_path}/nobody" in str(err.value)
            with pytest.raises(BadRequest, match="a key is 1-1024 characters"):
                await client.get("default", "x" * 10240)
            with pytest.raises(BadRequest, match="a group name is"):
                await client.find("bad group!", "k")
            with pytest.raises(BadRequest, match=f"over the limit of {p.MAX_MESSAGE} bytes"):
                await client.get("default", "k", args=["x" * p.MAX_MESSAGE])
            assert isinstance(err.value, ForsetiError)

    asyncio.run(main())
    with pytest.raises(BadEndpoint, match="write tcp://127.0.0.1:7072"):
        AsyncClient("127.0.0.1:7072")


@pytest.mark.slow
def test_an_async_client_moves_to_another_node_when_its_own_is_killed(make_cluster):
    c = make_cluster(workers=2)

    async def main():
        async with AsyncClient([c.endpoint("node1"), c.endpoint("node2")], timeout=5.0) as client:
            locs = await asyncio.gather(*(client.get("sleeper", f"m{i}") for i in range(6)))
            survivors = [loc for loc in locs if loc.node == "node2"]
            assert survivors
            c.kill("node1")
            start = time.monotonic()
            # Many at once, sent to the dead node first: each is sent again through node2.
            found = await asyncio.gather(*(client.find("sleeper", loc.key) for loc in survivors * 20))
            assert found == survivors * 20
            assert time.monotonic() - start < 2.0
            assert client.endpoint == c.endpoint("node2")

    asyncio.run(main())
