"""The key files of ``[security]``: ZeroMQ certificate files (``NAME.key`` holds the
public key, ``NAME.key_secret`` both halves; ``forsetictl keygen`` writes them), read
at start with errors that name the file and the key path, and the table of authorized
public keys by role, read again on SIGHUP."""

from __future__ import annotations

import os
from dataclasses import dataclass

import zmq
import zmq.auth

from .config import Config, ConfigError
from .roles import ROLES, Peer


@dataclass(frozen=True)
class CurveKeys:
    server_public: bytes  # z85, as the socket options take them
    server_secret: bytes
    public: bytes | None = None  # this daemon's own pair, to reach the leader as a client
    secret: bytes | None = None

    def apply(self, sock: zmq.Socket, serves: bool, domain: bytes) -> None:
        """Make ``sock`` a CURVE server (``serves``: peers show their keys to it, and ZAP
        is asked about each in ``domain``) or, with a pair of this daemon's own, a CURVE
        client pinning the cluster's server key."""
        if serves:
            sock.curve_secretkey, sock.curve_publickey = self.server_secret, self.server_public
            sock.zap_domain = domain
            sock.curve_server = True
        elif self.secret is not None:
            sock.curve_secretkey, sock.curve_publickey = self.secret, self.public
            sock.curve_serverkey = self.server_public


def curve_keys(config: Config) -> CurveKeys | None:
    """The keys this daemon's sockets need, or None without ``security.curve``."""
    sec = config.security
    if not sec.curve:
        return None
    if not sec.server_key:
        raise ConfigError(f"{config.path}: security.server_key: needed with security.curve = true")
    if not sec.authorized:
        raise ConfigError(f"{config.path}: security.authorized: needed with security.curve = true")
    server_public, _ = _load(config, "security.server_key", sec.server_key)
    _, server_secret = _load(config, "security.server_key", sec.server_key + "_secret", secret=True)
    public = secret = None
    if sec.key:
        public, secret = _load(config, "security.key", sec.key, secret=True)
    elif config.node.role == "worker":
        raise ConfigError(f"{config.path}: security.key: a worker needs its own key pair to join the leader")
    authorized(config)  # refused at start rather than at the first handshake
    return CurveKeys(server_public, server_secret, public, secret)


def authorized(config: Config) -> dict[bytes, Peer]:
    """Public key (z85) -> the peer it authenticates, from the role folders."""
    folder = config.security.authorized
    if not os.path.isdir(folder):
        raise ConfigError(f"{config.path}: security.authorized: {folder}: no such folder")
    table: dict[bytes, Peer] = {}
    for role in ROLES:
        where = os.path.join(folder, role)
        if not os.path.isdir(where):
            continue  # a role nobody has
        try:
            entries = sorted(os.listdir(where))
        except OSError as exc:
            raise ConfigError(f"{config.path}: security.authorized: {where}: {exc.strerror or exc}") from None
        for entry in entries:
            if not entry.endswith(".key"):
                continue
            public, _ = _load(config, "security.authorized", os.path.join(where, entry))
            peer = Peer(role, entry[: -len(".key")])
            other = table.setdefault(public, peer)
            if other != peer:
                raise ConfigError(
                    f"{config.path}: security.authorized: one key is both {other.role}/{other.name}.key "
                    f"and {role}/{entry}: a key has one role"
                )
    return table


def _load(config: Config, where: str, path: str, secret: bool = False) -> tuple[bytes, bytes | None]:
    try:
        public, secret_key = zmq.auth.load_certificate(path)
    except OSError as exc:
        raise ConfigError(f"{config.path}: {where}: {path}: cannot read: {exc.strerror or exc}") from None
    except Exception as exc:  # a file that is not a certificate: zmq.auth raises ValueError and others
        raise ConfigError(f"{config.path}: {where}: {path}: not a ZeroMQ key file ({exc})") from None
    if secret and not secret_key:
        raise ConfigError(f"{config.path}: {where}: {path}: holds no secret key (give the .key_secret file)")
    return public, secret_key
