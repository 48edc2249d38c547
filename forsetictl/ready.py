"""``forsetictl.ready()``: what a managed process calls once it has started. Kept apart
from the client so that importing it costs next to nothing (no ZeroMQ)."""

import os


def ready(endpoint: str | None = None) -> bool:
    """Tell the worker that this process has started (groups with ``ready = true``),
    optionally with the endpoint it bound. False when not run by Forseti."""
    fd = os.environ.pop("FORSETI_READY_FD", None)
    if not fd:
        return False
    line = f"R {endpoint or ''}".replace("\n", " ") + "\n"
    try:
        os.write(int(fd), line.encode())
        os.close(int(fd))
    except OSError:
        return False
    return True
