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
import os
import sys
import uuid

from . import protocol as p
from .config import Config, ConfigError, load, protected
from .keys import authorized, curve_keys
from .leader_io import LeaderIO
from .loop import Loop
from .spawner import Spawner
from .worker_io import WorkerIO

log = logging.getLogger("forsetid")


def build(config: Config) -> Loop:
    """A loop with the parts of ``config.node.role``, their sockets bound and connected."""
    role, cluster = config.node.role, config.cluster
    protected(config)
    keys = curve_keys(config)
    spawner = None
    if role in ("worker", "both"):
        # The fork server starts first: its preloading overlaps the daemon's own start.
        entries = sorted({c.entry for c in config.calls.values() if c.entry})
        spawner = Spawner(entries, config.node.python_path, lease=cluster.partition == "stop")
    loop = Loop(config.path, keys, (lambda: authorized(config)) if keys else None)
    parts = loop.parts
    about = p.InfoReply(
        node=config.node.name, role=role, events=cluster.events, silence=cluster.heartbeat * cluster.liveness
    )
    inproc = f"inproc://forseti-{uuid.uuid4().hex}"
    try:
        if config.node.metrics:  # (prometheus_client is imported only then)
            from .metrics import Metrics

            loop.metrics = Metrics(config.node.metrics, config.path)
        if role in ("leader", "both"):
            parts.append(LeaderIO(loop, config, about, inproc))
        if spawner is not None:
            local = role == "both"
            leader, events = (inproc + "-leader", inproc + "-events") if local else (cluster.leader, cluster.events)
            parts.append(WorkerIO(loop, config, about, spawner, leader, events))
    except BaseException:
        loop.close()
        if spawner is not None and not any(isinstance(part, WorkerIO) for part in parts):
            spawner.close()
        raise
    return loop


def _version() -> str:
    try:
        return importlib.metadata.version("forseti")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that is not installed
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="forsetid", description="The Forseti daemon.")
    parser.add_argument("--version", action="version", version=f"forsetid {_version()}")
    parser.add_argument("--config", required=True, help="path to forseti.toml")
    parser.add_argument("--role", choices=["leader", "worker", "both"], help="overrides node.role")
    parser.add_argument("--name", help="overrides node.name")
    parser.add_argument("--log-level", default="INFO", type=str.upper, choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s[%(process)d] %(levelname)s %(message)s")
    try:
        config = load(args.config)
        if args.role:
            config.node.role = args.role
        if args.name:
            config.node.name = args.name
        loop = build(config)
    except ConfigError as exc:
        print(f"forsetid: {exc}", file=sys.stderr)
        return 2
    log.info("%s up: role %s, pid %d", config.node.name, config.node.role, os.getpid())
    return loop.run()


if __name__ == "__main__":
    sys.exit(main())
