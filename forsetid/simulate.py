"""The leader's decisions at scale, without sockets: ``python -m forsetid.simulate``.

Simulated workers say hello with their share of the registered keys; then a run times
placement decisions (a get of a new key, and its start reported), the placement heap
against the linear scan it replaced, and finds of registered keys. Each size runs in a
forked child, so that its memory is measured from a clean start. One JSON object per
size goes to stdout as it is done (``forsetictl bench --simulate`` shows them).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import time

from . import protocol as p
from .const import SCALE_KEYS, SCALE_WORKERS, scale_sizes
from .effects import Reply
from .leader import Leader

clock = time.perf_counter


def replies(effects) -> list[tuple[bytes, p.Msg]]:
    """The (peer, message) replies among what ``Leader.handle`` returned, events left
    out: the one place here that knows what an effect looks like."""
    return [(e.peer, e.msg) for e in effects if isinstance(e, Reply)]


def simulate_one(workers: int, keys: int, ops: int) -> dict:
    leader = Leader({"sim": p.Call(entry="sim:run")})
    random.seed(1)
    per = max(1, keys // workers)
    now = time.time()
    before = _rss()
    t = clock()
    for w in range(workers):  # each worker says hello with its share of the keys
        name = f"w{w:05d}"
        locs = [p.Location("sim", f"k{w}-{j}", name, 1000 + j, None, now) for j in range(per)]
        leader.handle(name.encode(), p.Hello(node=name, incarnation="1", processes=locs))
        del locs
    fill = clock() - t
    per_process = (_rss() - before) / (per * workers)

    gets = [p.Get(id=i, group="sim", key=f"new-{i}") for i in range(ops)]
    elapsed = 0.0
    for msg in gets:  # a placement decision: a get of a new key, then its start reported
        t = clock()
        effects = leader.handle(b"client", msg)
        elapsed += clock() - t
        ((peer, spawn),) = replies(effects)
        loc = p.Location("sim", spawn.key, leader.node_of[peer], 1, None, now)
        leader.handle(peer, p.Spawned(id=spawn.id, location=loc))
    get_new = elapsed / ops

    placement = leader.placement
    t = clock()
    for _ in range(ops):
        placement.add(placement.choose(), +1)
    choose = (clock() - t) / ops
    scans = max(10, ops // workers)  # the linear scan that choose() was before, for comparison
    t = clock()
    for _ in range(scans):
        min((w.load, w.name) for w in placement.workers.values() if w.up and not w.full)
    scan = (clock() - t) / scans

    finds = [p.Find(id=i, group="sim", key=f"k{random.randrange(workers)}-{random.randrange(per)}") for i in range(ops)]
    t = clock()
    for msg in finds:
        leader.handle(b"client", msg)
    find = (clock() - t) / ops
    return {
        "workers": workers,
        "keys": per * workers,
        "bytes_per_process": per_process,
        "get_new_us": get_new * 1e6,
        "choose_us": choose * 1e6,
        "scan_us": scan * 1e6,
        "find_us": find * 1e6,
        "fill_s": fill,
    }


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def in_child(fn, *args) -> dict:
    """``fn(*args)`` in a forked child (at most 10 minutes); its result comes back as JSON."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(r)
            signal.alarm(600)
            os.write(w, json.dumps(fn(*args)).encode())  # a few hundred bytes: one write
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    try:
        while chunk := os.read(r, 65536):
            chunks.append(chunk)
    except BaseException:  # interrupted: the child goes too
        os.kill(pid, signal.SIGKILL)
        raise
    finally:
        os.close(r)
        _, status = os.waitpid(pid, 0)
    if status != 0 or not chunks:
        raise RuntimeError(f"the simulation of {args} failed (status {status})")
    return json.loads(b"".join(chunks))


def _counts(text: str) -> list[int]:
    values = sorted(int(v) for v in text.split(","))
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError("expected positive integers separated by commas")
    return values


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m forsetid.simulate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=_counts, default=list(SCALE_WORKERS), metavar="N,N,..")
    ap.add_argument("--keys", type=_counts, default=list(SCALE_KEYS), metavar="N,N,..")
    ap.add_argument("--ops", type=int, default=20_000, help="decisions and lookups timed per size")
    args = ap.parse_args(argv)
    for workers, keys in scale_sizes(args.workers, args.keys):
        try:
            row = in_child(simulate_one, workers, keys, args.ops)
        except RuntimeError as exc:
            print(f"forsetid.simulate: {exc}", file=sys.stderr)
            return 1
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
