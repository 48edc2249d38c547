"""Entry functions for the demo config and the tests.

An ``entry`` function is called as ``function(key, *group_args, *extra_args)`` in its own
process; it lives while the function runs.
"""

from __future__ import annotations

import os
import sys
import time

import forsetictl


def echo(key: str, *args) -> None:
    """Say hello, then live for ``args[0]`` seconds (default: until stopped)."""
    print(f"[{os.environ.get('FORSETI_NODE')}] {key}: hello from pid {os.getpid()}, args {list(args)}", flush=True)
    _sleep(float(args[0]) if args else None)


def counter(key: str, interval: float = 1.0, *args) -> None:
    """A visible session: prints a heartbeat line for its key every ``interval`` seconds."""
    n = 0
    while True:
        n += 1
        print(f"[{os.environ.get('FORSETI_NODE')}] {key}: tick {n}", flush=True)
        time.sleep(float(interval))


def sleeper(key: str, seconds: float = 3600.0, *args) -> None:
    """Live for ``seconds``, quietly."""
    _sleep(float(seconds))


def slow_ready(key: str, delay: float = 2.0, *args) -> None:
    """Take ``delay`` seconds to start (a group with ready = true), then live."""
    time.sleep(float(delay))
    forsetictl.ready(os.environ.get("FORSETI_ENDPOINT"))
    _sleep(None)


def fail(key: str, *args) -> None:
    """Raise at once: an abnormal exit."""
    raise RuntimeError(f"{key}: failing on purpose")


def exit_with(key: str, code: int = 3, *args) -> None:
    sys.exit(int(code))


def _sleep(seconds: float | None) -> None:
    if seconds is None:
        while True:
            time.sleep(3600)
    time.sleep(seconds)


def echo_calls(key: str, *args) -> None:
    """Answer each call with its payload; b"hang" is never answered (the bench waits on
    it for a ``gone``)."""
    for request in forsetictl.mailbox():
        if request.payload != b"hang":
            request.reply(request.payload)


def chat(key: str, *args) -> None:
    """A user's chat session: ``post TEXT`` keeps a line and answers how many there are;
    ``read`` answers them all, one per line. Its history lives as long as the process."""
    history: list[bytes] = []

    def handle(payload: bytes) -> bytes:
        verb, _, text = payload.partition(b" ")
        if verb == b"post":
            history.append(text)
            return b"%d" % len(history)
        if verb == b"read":
            return b"\n".join(history)
        return b"unknown request (post TEXT | read)"

    forsetictl.serve(handle)
