"""A client's side of CURVE (docs/guides/security.md): its key files, the handshake as its
sockets' monitors tell of it, and ``forsetictl keygen``.

Key files are ZeroMQ certificate files: ``NAME.key`` holds the public key,
``NAME.key_secret`` both halves. A client needs its own pair (the ``.key_secret`` file)
and the server's public key (``server.key``)."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import zmq
import zmq.auth
from zmq.utils import z85
from zmq.utils.monitor import parse_monitor_message

# What a client's monitor listens to: how each handshake ended, nothing else (a monitor
# that is not read keeps at most its high-water mark of events, then drops them).
HANDSHAKE_EVENTS = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)
# What a request socket's monitor listens to besides: a connection that broke, and a
# reconnection's first retry, which tells at once that nothing listens there.
CONNECTION_EVENTS = HANDSHAKE_EVENTS | zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED


class KeyFileError(ValueError):
    """Key files a client cannot use: the message names the file (or the option) and the problem."""


@dataclass(frozen=True)
class CurveKeys:
    """A client's CURVE keys, Z85-encoded as the socket options take them."""

    public: bytes
    secret: bytes
    server: bytes  # the server's public key, pinned

    def apply(self, sock: zmq.Socket) -> None:
        """Make ``sock`` a CURVE client (before it connects)."""
        sock.curve_serverkey = self.server
        sock.curve_publickey = self.public
        sock.curve_secretkey = self.secret


def load_keys(
    key: str | os.PathLike | None,
    server_key: str | os.PathLike | None,
    key_label: str = "key",
    server_label: str = "server_key",
) -> CurveKeys | None:
    """The keys in the files ``key`` (the client's ``.key_secret``) and ``server_key``
    (the server's public key), or None if neither is given. The labels name where each
    path came from in errors (an argument, an option, a config key)."""
    if key is None and server_key is None:
        return None
    if server_key is None:
        raise KeyFileError(f"{key_label} {key} needs {server_label} too (the server's public key file)")
    if key is None:
        raise KeyFileError(f"{server_label} {server_key} needs {key_label} too (this client's .key_secret file)")
    public, secret = _read(key, key_label, secret=True)
    server, _ = _read(server_key, server_label)
    return CurveKeys(public, secret, server)


def _read(path: str | os.PathLike, label: str, secret: bool = False) -> tuple[bytes, bytes | None]:
    where = f"{label} {os.fspath(path)}"
    if not os.path.isfile(path):
        raise KeyFileError(f"{where}: no such file" if not os.path.exists(path) else f"{where}: not a file")
    try:
        public, secret_key = zmq.auth.load_certificate(path)
    except OSError as exc:
        raise KeyFileError(f"{where}: cannot read: {exc.strerror or exc}") from None
    except Exception:  # ValueError (no public key), UnicodeDecodeError, ...
        raise KeyFileError(f"{where}: not a ZeroMQ key file (no public-key line)") from None
    for name, value in (("public-key", public), ("secret-key", secret_key)):
        if value is not None and not _is_key(value):
            raise KeyFileError(f"{where}: its {name} is not a CURVE key (40 Z85 characters)")
    if secret and secret_key is None:
        raise KeyFileError(f"{where}: holds no secret key (give the .key_secret file)")
    return public, secret_key


def _is_key(value: bytes) -> bool:
    if len(value) != 40:
        return False
    try:
        return len(z85.decode(value)) == 32
    except Exception:  # a character outside Z85
        return False


# -- the handshake, as a socket's monitor tells of it --


class Handshakes:
    """The monitor of one socket: whether a handshake has succeeded, or why the last one
    failed; with ``CONNECTION_EVENTS``, whether the connection is gone too. Cheap to
    keep: libzmq posts to it only when a connection's handshake ends or it breaks."""

    def __init__(self, sock: zmq.Socket, curve: bool, events: int = HANDSHAKE_EVENTS) -> None:
        self.curve = curve  # whether this client shows keys (to say what a failure means)
        self.succeeded = False  # a handshake succeeded, and none failed since
        self.failure: str | None = None  # what the last failed handshake said
        self.refused = False  # that failure is a refusal for sure (not a connection cut short)
        self.cut_short = 0  # handshakes cut short in a row, with no reason given (see verdict)
        self.connected = False  # a handshake has succeeded on this socket, ever
        self.gone: str | None = None  # "refused" (nothing listens), "lost" (it broke); None: fine
        self.monitor = sock.get_monitor_socket(events)
        self.monitor.setsockopt(zmq.LINGER, 0)

    def read(self) -> None:
        """Take in every event waiting (a monitor of a blocking socket)."""
        while True:
            try:
                frames = self.monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.take(frames)

    def take(self, frames: list[bytes]) -> None:
        """Take in one event, as the monitor socket gave it."""
        try:
            event = parse_monitor_message(frames)
        except Exception:  # pragma: no cover - libzmq sends well-formed events
            return
        self._note(event["event"], event["value"])

    def verdict(self, final: bool = False) -> tuple[str, str] | None:
        """What the events so far say of the connection, as a client's failure kind and
        reason: ("denied", why) for a refused handshake, ("refused", "") when nothing
        listens, ("lost", "") when it broke; None while all is well as far as it knows.
        A handshake cut short without a reason counts as a refusal when it happened twice
        in a row (a server that went away refuses the reconnection instead; which side
        notices a mismatch first is a race, so the reason may take many retries to show)
        or when ``final`` (the wait is over)."""
        if self.refused or self.cut_short >= 2 or (final and self.failure is not None):
            return ("denied", self.failure or "")
        if self.failure is None and self.gone is not None:
            return (self.gone, "")
        return None

    def _note(self, event: int, value: int) -> None:
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self.succeeded, self.failure, self.refused, self.cut_short = True, None, False, 0
            self.connected, self.gone = True, None
            return
        if event in (zmq.EVENT_DISCONNECTED, zmq.EVENT_CONNECT_RETRIED):
            self.succeeded = False
            self.gone = "lost" if self.connected or event == zmq.EVENT_DISCONNECTED else "refused"
            return
        self.succeeded = False
        if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            self.refused = True
            self.failure = f"the server refused this client's key (ZAP status {value})"
        elif event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
            self.refused = True
            if value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
                self.failure = (
                    "the server does not use CURVE (handshake: mechanism mismatch); give no keys"
                    if self.curve
                    else "the server requires CURVE (handshake: mechanism mismatch); give a key pair and the "
                    "server's public key (--key and --server-key, or [security] in the config)"
                )
            else:
                self.failure = f"handshake protocol error {_protocol_error(value)}"
        elif event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
            # The server closed the connection mid-handshake: what a CURVE server does with a
            # client that pinned another server key (or a server that just went away).
            self.cut_short += 1
            why = (
                "is the server key the cluster's? (a server that does not use CURVE does this too)"
                if self.curve
                else "a server that requires CURVE does this to a client without keys (--key, --server-key)"
            )
            closed = f"the server closed the connection during the handshake ({os.strerror(value)}): {why}"
            self.failure = self.failure or closed

    def close(self, sock: zmq.Socket) -> None:
        try:
            sock.disable_monitor()
        except zmq.ZMQError:  # pragma: no cover - the socket is already closed
            pass
        self.monitor.close()


def _protocol_error(value: int) -> str:
    for name in dir(zmq):
        if name.startswith("PROTOCOL_ERROR_") and getattr(zmq, name) == value:
            return name.removeprefix("PROTOCOL_ERROR_").lower().replace("_", " ")
    return hex(value)


def monitored(endpoint: str) -> bool:
    """Whether a connection to ``endpoint`` has a handshake to watch (inproc has none)."""
    return not endpoint.startswith("inproc://")


# -- keygen --

_BANNER = """#   ****  Generated on {now} by forsetictl keygen  ****
#   ZeroMQ CURVE {what}
#   {note}

metadata
curve
    public-key = "{public}"
"""


def keygen(name: str, folder: str | os.PathLike = ".") -> tuple[str, str]:
    """Write a new key pair, ``NAME.key`` (public) and ``NAME.key_secret`` (both halves,
    mode 0600), into ``folder`` (made 0700 if it does not exist); the two paths. Refuses
    to overwrite either file (FileExistsError naming it)."""
    if not name or name in (".", "..") or os.sep in name or (os.altsep and os.altsep in name):
        raise KeyFileError(f"keygen: {name!r} is not a key name (a file name, without a folder)")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    public_path = os.path.join(folder, f"{name}.key")
    secret_path = os.path.join(folder, f"{name}.key_secret")
    for path in (public_path, secret_path):
        if os.path.lexists(path):
            raise FileExistsError(f"keygen: {path} exists already: not overwritten")
    public, secret = (k.decode("ascii") for k in zmq.curve_keypair())
    now = datetime.datetime.now().isoformat(" ", "seconds")
    secret_text = _BANNER.format(
        now=now, what="Secret Certificate", note="DO NOT PROVIDE THIS FILE TO OTHER USERS", public=public
    )
    _create(secret_path, secret_text + f'    secret-key = "{secret}"\n', 0o600)
    try:
        note = "Give this file to the cluster (authorized/ROLE/) or to its clients (server.key)"
        _create(public_path, _BANNER.format(now=now, what="Public Certificate", note=note, public=public), 0o644)
    except BaseException:
        os.unlink(secret_path)  # no half pair left behind
        raise
    return public_path, secret_path


def _create(path: str, text: str, mode: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise FileExistsError(f"keygen: {path} exists already: not overwritten") from None
    with os.fdopen(fd, "w", encoding="ascii") as f:
        os.fchmod(fd, mode)  # whatever the umask: the secret is its owner's alone
        f.write(text)
