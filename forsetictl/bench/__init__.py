"""``forsetictl bench``: what a lookup, a start and an exit cost, next to what the
machine itself costs (a raw pyzmq round trip, a bare fork), measured in the same run.

By default it starts a throw-away cluster of its own (a leader and ``--workers``
workers on ipc:// in a private directory: :class:`~forsetictl.localcluster.LocalCluster`)
and always tears it down, processes and all. With ``--config``/``--endpoint`` it
measures a running cluster instead, adding two groups (``bench-entry``,
``bench-command``) if they are missing and stopping every process it started.
``--simulate`` measures the leader's decisions alone (``python -m forsetid.simulate``).
``--curve`` measures what CURVE costs a cached find and a new entry start instead: a
plain and a CURVE cluster of its own side by side, and a raw CURVE echo (``curve.py``).
``--failover`` measures a cluster with backend "etcd" instead: from the loss of its
leader (SIGKILL, SIGTERM) to the first successful get of a new key, and cached find and
starts against backend memory, on etcds and clusters of its own (``failover.py``).
``--saturation`` measures one leader's capacity instead: misses and starts per second
until its throughput stops growing, and its CPU per miss and per start, from 10 to
1,000 workers and 10k to 1M keys (a leader of its own, stand-in workers: ``saturation.py``).

``report.py`` the figures and the table, ``timing.py`` the bounded loops,
``baselines.py`` the machine's own costs, ``measure.py`` the cluster's, ``clients.py``
the AsyncClient's and a client's failover, ``detect.py`` how soon a lost worker is taken
for down (own cluster only), ``simulate.py`` the simulation's launcher.
"""

from __future__ import annotations

import json
import os
import sys

import msgspec

from ..client import Client, ForsetiError
from ..config import ConfigError, resolve_endpoint
from ..localcluster import ClusterError, LocalCluster
from .calls import PHASES as TALK_PHASES
from .calls import talks
from .clients import async_rows, client_failover
from .curve import PHASES as CURVE_PHASES
from .curve import curve_bench
from .detect import detection
from .failover import failover_bench
from .failover import phases as failover_phases
from .measure import COMMAND_GROUP, ENTRY_GROUP, GROUPS, Bench
from .report import BenchError, Progress, Report
from .saturation import phases as saturation_phases
from .saturation import saturation_bench
from .simulate import simulate

USAGE, FAILED = 2, 3  # exit statuses, as forsetictl's


OWN_ONLY = {  # the modes that measure clusters of their own
    "curve": "plain and with CURVE",
    "failover": "each with its own etcd",
    "saturation": "a leader and stand-in workers",
}


def run(args) -> int:
    """``forsetictl bench``; returns the exit status."""
    modes = [mode for mode in OWN_ONLY if getattr(args, mode)]
    if modes and (args.simulate or args.config or args.endpoint or len(modes) > 1):
        if args.simulate:
            other = "--simulate"
        elif args.config or args.endpoint:
            other = "--config/--endpoint"
        else:
            other = f"--{modes[1]}"
        message = f"bench: --{modes[0]} measures clusters of its own, {OWN_ONLY[modes[0]]}: it takes no {other}"
        if args.json:
            print(json.dumps({"error": "usage", "message": message}))
        print(f"forsetictl: {message}", file=sys.stderr)
        return USAGE
    if args.simulate:
        return simulate(args)
    own = not (args.config or args.endpoint)
    if args.curve:
        phases = CURVE_PHASES
    elif args.failover or args.saturation:
        phases = failover_phases(args) if args.failover else saturation_phases(args)
    else:
        phases = 13 + 3 * own + TALK_PHASES
    progress = Progress(not args.json, phases=phases)
    try:
        if args.curve:
            report = curve_bench(args, progress)
        elif args.failover:
            report = failover_bench(args, progress)
        elif args.saturation:
            report = saturation_bench(args, progress)
        else:
            report = _bench(args, progress, own)
    except (BenchError, ForsetiError, ClusterError, ConfigError) as exc:
        progress.done()
        if args.json:
            print(json.dumps({"error": "config" if isinstance(exc, ConfigError) else "bench", "message": str(exc)}))
        print(f"forsetictl: bench: {exc}", file=sys.stderr)
        return USAGE if isinstance(exc, ConfigError) else FAILED
    progress.done()
    print(json.dumps(report.json()) if args.json else report.table())
    return 0


def _bench(args, progress: Progress, own: bool) -> Report:
    """The whole bench, against its own cluster or the one named."""
    cluster = None
    bench = None
    try:
        if not own:
            workers, transport = _running_cluster(args)
        else:
            progress("starting a local cluster")
            cluster = _local_cluster(args)
            cluster.wait_up(timeout=20.0)
            workers, transport = [cluster.endpoint(n) for n in cluster.node_names], args.transport
        bench = Bench(args, workers, transport, progress)
        bench.report.info = {
            "cluster": "own" if cluster else workers[0],
            "workers": len(bench.names) if not cluster else args.workers,
            "transport": transport,
            "cpus": os.cpu_count(),
        }
        bench.ensure_groups()
        bench.round_trips()
        async_rows(bench, bench.cached.key)
        bench.forks(args.forks // 2)
        bench.starts(ENTRY_GROUP, "entry")
        bench.starts(COMMAND_GROUP, "command")
        bench.forks(args.forks - args.forks // 2)
        bench.exits()
        talks(bench, cluster)
        detection(bench, cluster, args.losses)  # last: it kills and restarts the cluster's workers
        client_failover(bench, cluster, args.losses)
        return bench.report
    finally:
        try:
            if bench is not None:
                bench.close()
        except (BenchError, ForsetiError):
            pass
        finally:
            if cluster is not None:
                cluster.close()


def _running_cluster(args) -> tuple[list[str], str]:
    """The worker named by --config/--endpoint, and its transport."""
    endpoint = resolve_endpoint(args.endpoint, args.config)
    with Client(endpoint, timeout=args.timeout) as c:
        if c.info().role == "leader":
            raise BenchError(f"{endpoint} is the leader; give a worker's endpoint (node.listen)")
    return [endpoint], "tcp" if endpoint.startswith("tcp://") else "ipc"


def _local_cluster(args) -> LocalCluster:
    return LocalCluster(
        args.workers,
        calls={group: msgspec.to_builtins(call) for group, call in GROUPS.items()},
        # The exit measurement SIGKILLs processes on purpose: no crash-loop guard here.
        cluster={"name": "bench", "max_retries": 1_000_000},
        tcp=args.transport == "tcp",
        profile_dir=args.profile,
        prefix="forseti-bench-",
    )
