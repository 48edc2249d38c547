"""``forsetid``: reads the config and runs the parts of its role on one loop.

A leader (``leader_io.py``) and a worker (``worker_io.py``) are each a part of a
:class:`loop.Loop`; role "both" runs the two on one loop, the worker reaching its
leader over ``inproc://``. Where a message is decoded: ``protocol.py``; decided:
``leader.py`` and ``worker.py``; carried out: ``leader_io.py``, ``worker_io.py``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import math
import os
import sys
import uuid

from . import protocol as p
from .check import report
from .config import Config, ConfigError, check_role, load, protected
from .keys import authorized, curve_keys
from .leader_io import LeaderIO
from .lease import failover_seconds, lease_seconds
from .loop import Loop
from .spawner import Spawner
from .worker_io import WorkerIO

log = logging.getLogger("forsetid")


def build(config: Config) -> Loop:
    """A loop with the parts of ``config.node.role``, their sockets bound and connected."""
    role, cluster = config.node.role, config.cluster
    check_role(config)
    protected(config)
    keys = curve_keys(config)
    spawner = None
    if role in ("worker", "both"):
        # The fork server starts first: its preloading overlaps the daemon's own start.
        entries = sorted({c.entry for c in config.calls.values() if c.entry})
        spawner = Spawner(entries, config.node.python_path, lease=cluster.partition == "stop")
    loop = Loop(config.path, keys, (lambda: authorized(config)) if keys else None)
    parts = loop.parts
    seats = [p.Seat(c.name, c.leader, c.events) for c in cluster.candidates]
    about = p.InfoReply(
        node=config.node.name,
        role=role,
        events=cluster.events,
        silence=cluster.heartbeat * cluster.liveness,
        candidates=seats,
        listen=config.node.listen if role in ("worker", "both") else "",
    )
    inproc = f"inproc://forseti-{uuid.uuid4().hex}"
    try:
        if config.node.metrics:  # (prometheus_client is imported only then)
            from .metrics import Metrics

            loop.metrics = Metrics(config.node.metrics, config.path)
        if role in ("leader", "both"):
            parts.append(LeaderIO(loop, config, about, inproc))
        if spawner is not None:
            parts.append(WorkerIO(loop, config, about, spawner, _leaders(config, inproc)))
    except BaseException:
        loop.close()
        if spawner is not None and not any(isinstance(part, WorkerIO) for part in parts):
            spawner.close()
        raise
    return loop


def failover_stops(config: Config) -> str | None:
    """With partition "stop" and an elected leader, whether a failover itself may stop
    a worker's processes: their lease (heartbeat x liveness less half a heartbeat, from
    the last answered ping, sent up to a heartbeat before the leader was lost) must
    outlast the longest failover (``lease.failover_seconds``)."""
    c = config.cluster
    if c.partition != "stop" or c.backend != "etcd" or config.node.role == "leader":
        return None
    covered = lease_seconds(c.heartbeat, c.liveness) - c.heartbeat
    longest, parts = failover_seconds(c.heartbeat, c.lease, c.etcd_election)
    if covered > longest:
        return None
    return (
        f'cluster.partition = "stop": a failover may stop this worker\'s processes: they outlive a lost leader by '
        f"{covered:g} s (heartbeat x (liveness - 1.5)), and a failover may take up to {longest:g} s = {parts}, "
        f"with cluster.etcd_election = {c.etcd_election:g} (etcd's --election-timeout); raise cluster.liveness "
        f"to at least {math.floor(longest / c.heartbeat + 1.5) + 1}"
    )


def _leaders(config: Config, inproc: str) -> list[tuple[str, str, str]]:
    """Where the worker looks for its leader: (name, leader, events) of each that may
    lead; with role "both", its own leader part over inproc."""
    out = []
    for c in config.leaders():
        mine = config.node.role == "both" and c.name in ("", config.node.name)
        out.append((c.name, inproc + "-leader", inproc + "-events") if mine else (c.name, c.leader, c.events))
    return out


def _version() -> str:
    try:
        return importlib.metadata.version("forseti")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that is not installed
        return "unknown"


CHECK_HELP = (
    "check the config as a start would (its keys and types, the groups, role and name, protected mode, with "
    "security.curve the key files and authorized folder, and where processes run that each entry module is "
    "found; found, not imported, so no code of it runs), print what this daemon would bind, connect to and "
    "start, and exit: 0 valid, 2 not (one line). Nothing is bound or connected, etcd is not asked"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="forsetid", description="The Forseti daemon.")
    parser.add_argument("--version", action="version", version=f"forsetid {_version()}")
    parser.add_argument("--config", required=True, help="path to forseti.toml")
    parser.add_argument("--role", choices=["leader", "worker", "both"], help="overrides node.role")
    parser.add_argument("--name", help="overrides node.name")
    parser.add_argument("--log-level", default="INFO", type=str.upper, choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--check", action="store_true", help=CHECK_HELP)
    args = parser.parse_args(argv)
    if not args.check:
        logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s[%(process)d] %(levelname)s %(message)s")
    try:
        config = load(args.config)
        if args.role:
            config.node.role = args.role
        if args.name:
            config.node.name = args.name
        if args.check:
            lines = report(config)
        else:
            loop = build(config)
    except ConfigError as exc:
        print(f"forsetid: {exc}", file=sys.stderr)
        return 2
    if args.check:
        why = failover_stops(config)
        print("\n".join(lines + ([f"warning: {why}"] if why else [])))
        return 0
    log.info("%s up: role %s, pid %d", config.node.name, config.node.role, os.getpid())
    if (why := failover_stops(config)) is not None:
        log.warning("%s", why)
    return loop.run()


if __name__ == "__main__":
    sys.exit(main())
