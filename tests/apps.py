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


def talker(key, *args):
    """Answer each call with KEY:PAYLOAD; b"exit N" exits with code N, b"sleep S" answers
    after S seconds (b"hold PATH S": makes the file PATH first), b"pid" answers the pid."""
    for request in forsetictl.mailbox():
        if request.payload.startswith(b"hold "):
            _, path, seconds = request.payload.split()
            open(path, "w").close()
            request = type(request)(request._number, request.one_way, b"sleep " + seconds, request._send)
        if request.payload.startswith(b"exit "):
            os._exit(int(request.payload.split()[1]))
        if request.payload.startswith(b"sleep "):
            time.sleep(float(request.payload.split()[1]))
        if request.payload == b"pid":
            request.reply(b"%d" % os.getpid())
            continue
        request.reply(key.encode() + b":" + request.payload)


def journal(key, *args):
    """Keep every payload; a call answers with all of them so far, joined by commas."""
    seen = []

    def handle(payload):
        if payload != b"?":
            seen.append(payload)
        return b",".join(seen)

    forsetictl.serve(handle)


def async_talker(key, *args):
    import asyncio

    async def handle(payload):
        await asyncio.sleep(0)
        return b"async " + payload

    asyncio.run(forsetictl.aserve(handle))
