"""The timed loops, each bounded by a count and by a deadline: nothing waits forever;
and what measuring two things side by side needs (chunks that take turns, the bench
and what it starts on CPUs apart)."""

from __future__ import annotations

import os
import time

import zmq

from forsetid import protocol as p

from .report import BenchError

PHASE_SECONDS = 20.0  # no measurement runs longer than this
clock = time.perf_counter


def sequential(fn, count: int, deadline: float | None = None) -> list[float]:
    """``fn(i)`` timed ``count`` times, or until ``deadline`` (time.monotonic(); default
    PHASE_SECONDS from now)."""
    samples = []
    deadline = time.monotonic() + PHASE_SECONDS if deadline is None else deadline
    for i in range(count):
        t = clock()
        fn(i)
        samples.append(clock() - t)
        if time.monotonic() > deadline:
            break
    return samples


def new_keys(get, label: str):
    """A measure for ``alternate``: sequential ``get(key)`` of keys never asked before,
    numbered on from one call to the next (``label`` and the run keep them apart)."""
    run_id = f"{os.getpid()}-{int(time.time())}"
    asked = [0]

    def measure(n: int, deadline: float) -> list[float]:
        first, asked[0] = asked[0], asked[0] + n
        return sequential(lambda i: get(f"{label}-{run_id}-{first + i}"), n, deadline)

    return measure


def dealer(ctx: zmq.Context, endpoint: str, keys=None) -> zmq.Socket:
    """A DEALER connected to ``endpoint``; a CURVE client with ``keys`` (CurveKeys)."""
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if keys is not None:
        keys.apply(sock)
    sock.connect(endpoint)
    return sock


def pipeline(sock: zmq.Socket, make, total: int, window: int, seconds: float, timeout: float):
    """Keep ``window`` requests in flight until ``total`` were answered or ``seconds``
    passed. ``make(i)`` gives request i as ``(id, frame)``; replies are decoded (as a
    real client would) and matched by id. Returns (answered, elapsed, latencies)."""
    sent_at, latencies = {}, []
    sent = done = 0
    start = clock()
    stop_at = start + min(seconds, PHASE_SECONDS)

    def send():
        nonlocal sent
        rid, frame = make(sent)
        sent_at[rid] = clock()
        sock.send(frame)
        sent += 1

    while sent < min(window, total):
        send()
    while done < sent:
        if not sock.poll(int(timeout * 1000)):
            raise BenchError(f"{sent - done} requests unanswered after {timeout:g} s")
        msg = p.decode(sock.recv())
        now = clock()
        if isinstance(msg, p.Error):
            raise BenchError(f"the cluster answered with an error: {msg.message}")
        latencies.append(now - sent_at.pop(msg.id))
        done += 1
        if sent < total and now < stop_at:
            send()
    return done, clock() - start, latencies


def alternate(measures: dict, total: int, chunk: int, deadline: float) -> dict:
    """Each of ``measures`` (name -> fn(count, deadline) -> samples) ``total`` times, in
    chunks of ``chunk``: one chunk of each per round, the order reversed every other
    round. Stops after the round in which ``deadline`` passed."""
    samples = {name: [] for name in measures}
    order, done, i = list(measures), 0, 0
    while done < total:
        n = min(chunk, total - done)
        for name in order if i % 2 == 0 else reversed(order):
            samples[name] += measures[name](n, deadline)
        done, i = done + n, i + 1
        if time.monotonic() > deadline:
            break
    return samples


def cpus_apart() -> list[int] | None:
    """The CPUs this process may run on, if there are two or more to pin the client and
    the servers apart (None: leave the scheduler be)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None
    return cpus if len(cpus) >= 2 else None


def pin(cpus: set[int], threads: bool = True) -> bool:
    """Run this process's calling thread (``threads``: every thread) on ``cpus``; False
    if that is not allowed here."""
    try:
        for task in os.listdir("/proc/self/task") if threads else ["0"]:
            try:
                os.sched_setaffinity(int(task), cpus)
            except ProcessLookupError:  # a thread that ended meanwhile
                pass
    except OSError:
        return False
    return True
