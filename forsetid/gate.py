"""The authentication step in front of every socket, with ``security.curve``: it answers
ZeroMQ's authentication requests (ZAP, RFC 27), which libzmq sends for each CURVE
handshake (and without an answer lets every key in), and says of each message whether
its sender may send it (``roles.py``). The table of authorized keys is read at start and
again on SIGHUP."""

from __future__ import annotations

import logging
from collections.abc import Callable

import zmq
import zmq.utils.z85

from . import protocol as p
from .config import ConfigError
from .roles import ROLES, Peer, refusal

log = logging.getLogger("forsetid")

ENDPOINT = "inproc://zeromq.zap.01"  # where libzmq asks, per context
DOMAIN = b"forseti"


class Gate:
    def __init__(self, authorize: Callable[[], dict[bytes, Peer]], junk) -> None:
        self.authorize = authorize
        self.authorized = authorize()
        self.junk = junk  # a rate-limited log: refusals may come in floods

    def answer(self, frames: list[bytes]) -> list[bytes] | None:
        """The reply to one ZAP request (a ROUTER's frames), or None if it is not one.
        The User-Id it gives, the key, comes with every message of that connection."""
        # [routing id, b"", version, request id, domain, address, identity, mechanism, key]
        if len(frames) < 9 or frames[1] != b"":
            return None
        request_id, address, mechanism, raw = frames[3], frames[5], frames[7], frames[8]
        key = zmq.utils.z85.encode(raw) if mechanism == b"CURVE" and len(raw) == 32 else b""
        if key in self.authorized:
            status = [b"200", b"OK", key]
        else:
            self.junk.warning("refused a key at the handshake from %s: not in security.authorized",
                              address.decode(errors="replace"))  # fmt: skip
            status = [b"400", b"key not authorized", b""]
        return [frames[0], b"", b"1.0", request_id, *status, b""]

    def check(self, frame: zmq.Frame, msg: p.Msg) -> str | None:
        """Why the sender of ``frame`` may not send ``msg`` (None: it may). A frame with
        no User-Id came over inproc, from this daemon itself."""
        try:
            key = frame.get("User-Id")
        except zmq.ZMQError:
            return None
        peer = self.authorized.get(key.encode())
        if peer is None:
            return "this key is no longer authorized (security.authorized)"
        return refusal(peer, msg)

    def reload(self) -> None:
        """Read the authorized keys again; a table that cannot be read keeps the old one.
        A key taken out is refused from its next request on, on open connections too;
        an events subscription it holds lasts until that connection ends (an XPUB has no
        per-message check: its next handshake is refused)."""
        try:
            table = self.authorize()
        except ConfigError as exc:
            log.error("SIGHUP: keeping the authorized keys as they were: %s", exc)
            return
        self.authorized = table
        counts = ", ".join(f"{sum(peer.role == role for peer in table.values())} {role}" for role in ROLES)
        log.info("SIGHUP: re-read security.authorized: %s", counts)
