"""Who may send what, with ``security.curve``: the role of a peer is the folder of
``security.authorized`` that holds its public key (docs/guides/security.md). Decided here, on
every message by its kind, before any decision sees it.

* ``readers`` may look: ``find``, ``ls``, ``nodes``, ``calls``, ``info`` (and follow
  the events: any key that passed the handshake may subscribe);
* ``clients`` also ``get``, ``stop``, ``call`` and ``send``;
* ``admins`` also ``add-call``, ``remove-call``, ``drain`` and ``undrain``;
* ``workers`` join the cluster, each only as the node its key file names
  (``workers/node1.key`` is node1), and forward what their own clients may ask (a
  worker checks its client's role before it forwards a request).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import protocol as p

ROLES = ("workers", "admins", "clients", "readers")  # the folders of security.authorized

_READ = (p.Find, p.List, p.Nodes, p.Calls, p.Info)
_CLIENT = (*_READ, p.Get, p.Stop, p.Talk)
_ADMIN = (*_CLIENT, p.AddCall, p.RemoveCall, p.Drain, p.Undrain)
_WORKER = (*_ADMIN, p.Hello, p.Ping, p.Spawned, p.SpawnFailed, p.Exited, p.Suspend, p.Leaving)
ALLOWED: dict[str, tuple[type, ...]] = {"readers": _READ, "clients": _CLIENT, "admins": _ADMIN, "workers": _WORKER}


@dataclass(frozen=True)
class Peer:
    """An authenticated peer: its role and its name (its key file's, without ``.key``)."""

    role: str
    name: str


def refusal(peer: Peer, msg: p.Msg) -> str | None:
    """Why ``peer`` may not send ``msg`` (None: it may)."""
    if not isinstance(msg, ALLOWED[peer.role]):
        return f"role {peer.role} ({peer.name}) may not send '{p.tag(msg)}'"
    if isinstance(msg, p.Hello) and msg.node != peer.name:
        return f"the key of worker {peer.name} joins only as {peer.name}, not as {msg.node}"
    return None
