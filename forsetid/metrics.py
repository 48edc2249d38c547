"""``node.metrics``: Prometheus text on ``http://HOST:PORT/metrics`` (docs/reference/metrics.md).

One :class:`Metrics` per daemon, made by ``daemon.build`` only when ``node.metrics`` is
set (with it off this module, and prometheus_client, are never imported). The IO parts
call it where they carry out effects (``leader_io.py``, ``worker_io.py``) and the loop
where it refuses a message (``loop.py``); the decisions never see it.

prometheus_client's own HTTP server answers scrapes on a thread of its own: the loop
never waits on it. Counters and the histogram are thread-safe; what lives in the
decisions' state (processes by group and node, workers by state, the epoch) is read
from :class:`Snapshot`, a frozen value the loop replaces each heartbeat, so a scrape
never walks a dictionary the loop is changing. Taking the snapshot walks the leader's
dictionary: up to ``SMALL`` keys every heartbeat, beyond that only at the first
heartbeat after a scrape asked for it (a scrape then reads the one taken after the
scrape before it).
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable
from dataclasses import dataclass

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily
from prometheus_client.exposition import start_http_server
from prometheus_client.registry import Collector

from . import protocol as p
from .config import ConfigError, metrics_address

# Start latency, seconds: a spare's start takes ~1 ms, a command's tens of ms, a
# ready process as long as it likes (start_timeout is 10 s by default).
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Call latency, seconds: a round trip is ~0.1-0.3 ms; what the process takes is its own.
CALL_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)

WORKER_STATES = ("up", "draining", "down", "left")
SMALL = 10_000  # keys a leader may walk every heartbeat for its snapshot (~2 ms)

# A start failure's reason, as the worker words it, to a small set of kinds.
FAILURE_KINDS = (
    ("already starting or stopping", "other"),
    ("not ready within start_timeout", "timeout"),
    ("before it was ready", "exited"),
    ("reported a start failure", "exited"),
    ("suspended", "suspended"),
    ("shutting down", "shutdown"),
)


def failure_kind(reason: str) -> str:
    """A worker's reason for a failed start as "timeout", "exited", "suspended",
    "shutdown", "other" or, what the fork server says (cannot import, command not
    found, fork failed), "cannot-start". The leader counts "node-down" itself."""
    for words, kind in FAILURE_KINDS:
        if words in reason:
            return kind
    return "cannot-start"


@dataclass(frozen=True)
class Snapshot:
    """What a scrape reads of the leader's state: replaced whole, never changed."""

    processes: tuple[tuple[str, str, int], ...] = ()  # (group, node, count)
    workers: tuple[tuple[str, int], ...] = (("up", 0), ("draining", 0), ("down", 0), ("left", 0))
    epoch: str = ""


class Metrics:
    """The registry, the HTTP server and what the IO parts count."""

    def __init__(self, address: str, config_path: str = "<config>") -> None:
        host, port = metrics_address(address, config_path)
        if hasattr(prometheus_client, "disable_created_metrics"):  # no *_created series: half the text, no use here
            prometheus_client.disable_created_metrics()
        self.address = address
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.starts = Counter("forseti_starts", "Starts begun by this worker, by group.", ["group"], registry=r)
        self.start_failures = Counter(
            "forseti_start_failures", "Starts that failed, by group and reason kind.", ["group", "reason"], registry=r
        )
        self.start_seconds = Histogram(
            "forseti_start_seconds", "Seconds from a worker's start of a process to its being started (spawned).",
            ["group"], buckets=BUCKETS, registry=r,
        )  # fmt: skip
        self.exits = Counter(
            "forseti_exits", "Processes reported exited by the leader, by group and reason.", ["group", "reason"],
            registry=r,
        )  # fmt: skip
        self.elections = Counter("forseti_leader_elections", "Leaderships taken by this daemon.", registry=r)
        self.requests = Counter(
            "forseti_requests", "Client requests to this worker (node.listen), by kind and outcome.",
            ["kind", "outcome"], registry=r,
        )  # fmt: skip
        self.calls = Counter(
            "forseti_calls", "Calls and sends through this worker (node.listen), by group, kind (call, send) and "
            "outcome (ok, gone, busy, not-found, no-mailbox, too-large...).", ["group", "kind", "outcome"], registry=r,
        )  # fmt: skip
        self.call_seconds = Histogram(
            "forseti_call_seconds", "Seconds from a call's arrival at this worker to its answer (sends: until in "
            "the mailbox), by group and kind.", ["group", "kind"], buckets=CALL_BUCKETS, registry=r,
        )  # fmt: skip
        self.mailboxes = None  # a worker's Mailboxes: its ``held`` is the mailbox depth
        self.refused = Counter("forseti_refused", "Messages refused, by why.", ["why"], registry=r)
        for why in (p.BAD_MESSAGE, p.FORBIDDEN):
            self.refused.labels(why)
        self.leader: Snapshot | None = None  # set by a leader (role leader or both)
        self.worker_epoch = ""  # the epoch of the leader this worker joined
        self.wanted = True  # a scrape came since the last snapshot (set by the HTTP thread)
        self._children: dict[tuple, object] = {}  # (kind, outcome) -> the counter's child
        r.register(_State(self))
        try:
            self.server, self.thread = start_http_server(port, host, registry=r)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{config_path}: node.metrics: cannot serve metrics on {address}: {exc}") from None

    # -- what the IO parts call --

    failure_kind = staticmethod(failure_kind)
    small = SMALL

    def request(self, kind: str, outcome: str) -> None:
        child = self._children.get((kind, outcome))
        if child is None:
            child = self._children[(kind, outcome)] = self.requests.labels(kind, outcome)
        child.inc()  # type: ignore[attr-defined]

    def refuse(self, why: str) -> None:
        self.refused.labels(why).inc()

    def set_leader(self, epoch: str, locations: Iterable[p.Location], workers: Iterable[str]) -> None:
        """The leader's heartbeat: its epoch, its dictionary's locations, each worker's state."""
        counts = Tally((loc.group, loc.node) for loc in locations)
        states = Tally(workers)
        self.wanted = False
        self.leader = Snapshot(
            processes=tuple((g, n, c) for (g, n), c in sorted(counts.items())),
            workers=tuple((state, states[state]) for state in WORKER_STATES),
            epoch=epoch,
        )

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _State(Collector):
    """The gauges read from the snapshot (on the HTTP server's thread)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self):
        snap = self.metrics.leader  # one read: the loop replaces it whole
        self.metrics.wanted = True
        epoch = snap.epoch if snap is not None else self.metrics.worker_epoch
        info = InfoMetricFamily("forseti_epoch", "The epoch of the leader: this daemon's, or the one it joined.")
        if epoch:
            info.add_metric([], {"epoch": epoch})
        yield info
        if self.metrics.mailboxes is not None:
            depth = GaugeMetricFamily(
                "forseti_mailbox_depth", "Requests in this worker's mailboxes, waiting or unanswered."
            )
            depth.add_metric([], self.metrics.mailboxes.held)  # (an int the loop keeps: one read)
            yield depth
        if snap is None:
            return
        procs = GaugeMetricFamily(
            "forseti_processes", "Processes in the leader's dictionary, by group and node.", labels=["group", "node"]
        )
        for group, node, count in snap.processes:
            procs.add_metric([group, node], count)
        yield procs
        workers = GaugeMetricFamily("forseti_workers", "Workers the leader knows, by state.", labels=["state"])
        for state, count in snap.workers:
            workers.add_metric([state], count)
        yield workers
