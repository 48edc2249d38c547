"""``forsetictl.ready()``: what a managed process calls once it has started. Kept apart
from the client so that importing it costs next to nothing (no ZeroMQ, no msgspec)."""

import os

from forsetid.const import READY, READY_FD_ENV, ready_line


def ready(endpoint: str | None = None) -> bool:
    """Tell the worker that this process has started (groups with ``ready = true``),
    optionally with the endpoint it bound. False when not run by Forseti."""
    fd = os.environ.pop(READY_FD_ENV, None)
    if not fd:
        return False
    try:
        os.write(int(fd), ready_line(READY, endpoint or ""))
        os.close(int(fd))
    except OSError:
        return False
    return True
