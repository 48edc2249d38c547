"""Names and numbers that the daemon, its fork server, the client and the managed
processes must agree on, each stated once.

It imports nothing: a managed process reads it (through ``forsetictl.ready``) and the
fork server too, and each module either of them maps makes every fork dearer.
"""

# Endpoints when the config file says nothing.
DEFAULT_LEADER = "tcp://127.0.0.1:7070"
DEFAULT_EVENTS = "tcp://127.0.0.1:7071"
DEFAULT_LISTEN = "tcp://127.0.0.1:7072"  # a node's client endpoint: forsetictl's last resort

# A group's name: what the config's [calls.NAME] and every message's `group` accept.
GROUP_PATTERN = r"^[A-Za-z0-9_.:@-]+$"
GROUP_MAX = 128
GROUP_RULE = "a group name is 1-128 of A-Z a-z 0-9 _ . : @ -"

# The ready pipe: a process being started writes one line on the fd this variable names,
# "R <endpoint>" once it has started, or "E <reason>" if it cannot start.
READY_FD_ENV = "FORSETI_READY_FD"
READY, NOT_READY = "R", "E"
READY_LINE_MAX = 4096  # bytes; what is longer is cut there


# The mailbox: a process's endpoint and id (see protocol's mailbox frames).
MAILBOX_ENV = "FORSETI_MAILBOX"
MAILBOX_ID_ENV = "FORSETI_MAILBOX_ID"


def ready_line(tag: str, text: str = "") -> bytes:
    """One line for the ready pipe (a newline in ``text`` would end it early)."""
    return f"{tag} {text}".replace("\n", " ").encode() + b"\n"


# /proc/PID/comm of a spare: an entry process forked ahead, waiting for its key.
SPARE_NAME = b"forseti-spare"

# The sizes the scale measurements run at (forsetid.simulate, forsetictl bench --simulate
# and --saturation): worker counts, and registered keys.
SCALE_WORKERS = (10, 100, 1000)
SCALE_KEYS = (10_000, 100_000, 1_000_000)


def scale_sizes(workers, keys) -> list[tuple[int, int]]:
    """Every worker count at the fewest keys, then every key count at the most workers."""
    return [(w, keys[0]) for w in workers] + [(workers[-1], k) for k in keys[1:]]
