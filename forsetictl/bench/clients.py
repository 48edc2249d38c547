"""The clients programs lean on: an AsyncClient's cached find next to the sync
Client's and to a raw ``zmq.asyncio`` round trip (in alternating chunks, on one event
loop); a thousand gets awaited at once next to the pipelined DEALER; how late a 10 ms
ticker runs while a thousand requests are in flight; and, with the bench's own cluster,
how long a client with two endpoints takes from the SIGKILL of its node to its next
answered find, through the other."""

from __future__ import annotations

import asyncio
import time

import zmq
import zmq.asyncio

from ..aio import AsyncClient
from ..client import Client
from ..localcluster import LocalCluster
from .baselines import EchoServer
from .measure import ENTRY_GROUP, PIPELINED, Bench, find_frame
from .report import BenchError, stats
from .timing import PHASE_SECONDS, clock

IN_FLIGHT = 1000
TICK = 0.010  # the ticker's period, seconds


def async_rows(bench: Bench, key: str) -> None:
    bench.progress("asyncio: AsyncClient, Client and raw zmq.asyncio, alternating; 1,000 in flight")
    echo = EchoServer(bench.transport, lifetime=PHASE_SECONDS * 4)
    try:
        asyncio.run(_async_rows(bench, key, echo.endpoint))
    finally:
        echo.close()


async def _async_rows(bench: Bench, key: str, echo: str) -> None:
    a, r = bench.args, bench.report
    ctx = zmq.asyncio.Context.instance()
    raw = ctx.socket(zmq.DEALER)
    raw.setsockopt(zmq.LINGER, 0)
    raw.connect(echo)
    frame = find_frame(ENTRY_GROUP, key)
    sync = bench.client
    async with AsyncClient(bench.workers[0], timeout=bench.timeout) as client:

        async def raw_trip() -> None:
            await raw.send(frame)
            await raw.recv()

        async def async_find() -> None:
            await client.find(ENTRY_GROUP, key)

        async def sync_find() -> None:
            sync.find(ENTRY_GROUP, key)

        samples: dict = {raw_trip: [], async_find: [], sync_find: []}
        chunk = max(1, a.count // 10)
        for round in range(11):  # the first round warms up, and is dropped
            for fn, kept in samples.items():
                taken = []
                for _ in range(chunk):
                    t = clock()
                    await fn()
                    taken.append(clock() - t)
                kept += taken if round else []
        raw.close()
        r.baseline("raw zmq.asyncio round trip", stats(samples[raw_trip]))
        r.baseline("cached find (Client, sequential, same phase)", stats(samples[sync_find]))
        found = stats(samples[async_find])
        r.latency(
            "cached find (AsyncClient, sequential)", found, "cached find (Client, sequential, same phase)", ("x<=", 1.2)
        )
        r.latency("cached find (AsyncClient), vs raw zmq.asyncio", found, "raw zmq.asyncio round trip")
        await _in_flight(bench, client, key)


async def _in_flight(bench: Bench, client: AsyncClient, key: str) -> None:
    """IN_FLIGHT coroutines each awaiting gets of an existing key one after the other
    (IN_FLIGHT requests in flight all along), a ticker beside them once all are going."""
    r = bench.report
    lags: list[float] = []
    done = 0
    stop = False

    async def asker() -> None:
        nonlocal done
        while not stop:
            await client.get(ENTRY_GROUP, key)
            done += 1

    def going() -> bool:
        return not stop

    alone: list[float] = []
    await ticker(alone, lambda: len(alone) < 100)  # the machine's own lag: a second of the ticker alone
    askers = []
    for _ in range(IN_FLIGHT // 50):  # started 50 at a time, not all in one turn of the loop
        askers += [asyncio.ensure_future(asker()) for _ in range(50)]
        await asyncio.sleep(0)
    await asyncio.sleep(0.2)  # all going
    tick = asyncio.ensure_future(ticker(lags, going))
    first, start = done, clock()
    await asyncio.sleep(max(bench.args.seconds, 1.0))
    rate = (done - first) / (clock() - start)
    stop = True
    await asyncio.gather(tick, *askers)
    r.row(f"gets of a live key, {IN_FLIGHT} awaited at once (AsyncClient)", rate, "/s", PIPELINED, ("x>=", 0.7))
    if len(lags) < 2:
        raise BenchError("the ticker did not run")
    r.baseline("event-loop lag, 10 ms ticker alone", stats(alone))
    r.baselines["event-loop lag, 10 ms ticker alone max"] = (max(alone) * 1e6, "us")
    base = "event-loop lag, 10 ms ticker alone"
    lag = f"event-loop lag, 10 ms ticker, {IN_FLIGHT} in flight"
    r.row(f"{lag} p99", stats(lags)["p99"], "us", base + " p99", ("<=", 5000))
    r.row(f"{lag} max", max(lags) * 1e6, "us", base + " max")


async def ticker(lags: list[float], going) -> None:
    """A sleep of TICK seconds, again and again while ``going()``: how late each woke."""
    while going():
        due = time.monotonic() + TICK
        await asyncio.sleep(TICK)
        lags.append(max(0.0, time.monotonic() - due))


def client_failover(bench: Bench, cluster: LocalCluster | None, rounds: int) -> None:
    """SIGKILL of the node a two-endpoint Client talks to -> its next answered find."""
    r = bench.report
    name = "client failover: SIGKILL of its node -> next answered find"
    if cluster is None or len(cluster.node_names) < 2:
        r.info["client failover"] = "skipped: it needs the bench's own cluster, of two workers or more"
        return
    bench.progress(f"client failover: {rounds} nodes killed under a client")
    victim, other = cluster.node_names[-1], cluster.node_names[0]
    took = []
    for i in range(rounds):
        with Client([cluster.endpoint(victim), cluster.endpoint(other)], timeout=bench.timeout) as client:
            client.find(ENTRY_GROUP, bench.key("failover", i))  # connected to the victim
            proc = cluster.procs[victim]
            t0 = clock()
            cluster.kill(victim)
            client.find(ENTRY_GROUP, bench.key("failover", i))
            took.append(clock() - t0)
            if client.endpoint != cluster.endpoint(other):
                raise BenchError("the client did not move to the other node")
        proc.wait(10)
        cluster.start(victim)
        cluster.wait_up(timeout=20.0)
    r.latency(name, stats(took), "raw round trip", median_target=("<=", 1_000_000), p99_target=("<=", 1_000_000))
