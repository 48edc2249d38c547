"""Entry functions used by the tests (importable by the daemons: PYTHONPATH has tests/)."""

import json
import os
import signal
import sys
import time

import forsetictl


def record(key, path, *args):
    """Write what we were called with, then live until stopped."""
    with open(path, "w") as f:
        json.dump(
            {
                "key": key,
                "args": list(args),
                "env": {
                    k: v for k, v in os.environ.items() if k.startswith("FORSETI_") and k != "FORSETI_TEST_CLUSTER"
                },
                "pid": os.getpid(),
            },
            f,
        )
    while True:
        time.sleep(3600)


def ready_with_endpoint(key, *args):
    forsetictl.ready(f"tcp://127.0.0.1:9/{key}")
    while True:
        time.sleep(3600)


def exit_before_ready(key, *args):
    raise SystemExit(7)


def until_signalled(key, *args):
    """Live until SIGUSR1 (then exit 0: a clean exit) or SIGUSR2 (exit 3: a failure);
    ready (a group with ready = true) once it listens for them."""
    signal.signal(signal.SIGUSR1, lambda *_: sys.exit(0))
    signal.signal(signal.SIGUSR2, lambda *_: sys.exit(3))
    forsetictl.ready()
    while True:
        time.sleep(3600)
