"""Where a call or a send goes from this node: decisions only (sans-I/O).

A talk (``protocol.Talk``) names a key, never a node. The caller's node looks the key
up in its cache; on a miss it asks the leader as ``get`` does (``find`` with
``create`` false), and the talks for that key wait behind the lookup in the order they
came, so that one client's requests to one key arrive in the order sent. A key that runs
here goes into its process's mailbox (``mailboxes.py``); one that runs elsewhere goes to
that node's client endpoint, as a client's request would, and the answer comes back the
same way. The node learns the other nodes' endpoints from the leader (``nodes``).

Every failure is answered: ``not-found`` (create false), the leader's error, ``gone``
when the process exits, when its node is lost (the leader's exit event says so) or when
the other node no longer knows it (a talk not delivered is looked up once more first).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from . import protocol as p
from .cache import LocationCache
from .effects import Dropped, Reply, ToPeer
from .mailboxes import Mailboxes
from .processes import Processes

TALK = b""  # the "client" of a worker's own lookup, in Worker.forwards (no ROUTER peer is named so)
Key = tuple[str, str]


@dataclass(slots=True)
class Waiting:
    client: bytes
    msg: p.Talk  # its id is the client's
    retried: bool = False  # looked up again after the node we sent it to did not know the key


@dataclass(slots=True)
class Away:
    """A talk sent to another node, until it answers."""

    talk: Waiting
    location: p.Location
    since: float  # wall clock


AWAY_TTL = 60.0  # seconds a talk sent elsewhere without a deadline waits for its answer, at most


class Talks:
    def __init__(
        self,
        node: str,
        cache: LocationCache,
        processes: Processes,
        mailboxes: Mailboxes,
        calls: dict[str, p.Call],
        forward: Callable[[p.Get | p.Find | p.Nodes], list],
        wall: Callable[[], float],
        max_payload: int = p.MAX_PAYLOAD,
    ) -> None:
        self.node, self.cache, self.processes, self.mailboxes = node, cache, processes, mailboxes
        self.calls = calls  # the worker's (the same dict)
        self.forward = forward  # sends a lookup to the leader under a new id: its effects
        self.wall = wall
        self.max_payload = max_payload
        self.endpoints: dict[str, str] = {}  # node -> its client endpoint
        self.ids = processes.tokens  # the worker's ids, for our lookups and what we send other nodes
        self.lookups: dict[int, Key | None] = {}  # our lookup's id -> the key it is for (None: the nodes)
        self.behind: dict[Key, list[Waiting]] = {}  # talks waiting for a lookup of their key, in order
        self.unrouted: list[tuple[Waiting, p.Location]] = []  # waiting for the nodes' endpoints
        self.away: dict[int, Away] = {}  # our id -> a talk sent to another node

    def on_client(self, client: bytes, msg: p.Talk) -> list:
        refused = self._refusal(msg)
        if refused is not None:
            return [Reply(client, refused)]
        return self._go(Waiting(client, msg))

    def _refusal(self, msg: p.Talk) -> p.Error | None:
        call = self.calls.get(msg.group)
        if call is None:
            return p.Error(id=msg.id, kind=p.UNKNOWN_GROUP, message=f"unknown group '{msg.group}'")
        if call.mailbox == 0:
            text = f"group {msg.group} takes no messages (calls.{msg.group}.mailbox = 0)"
            return p.Error(id=msg.id, kind=p.NO_MAILBOX, message=text)
        if len(msg.payload) > self.max_payload:
            text = (
                f"a payload of {len(msg.payload)} bytes is over the limit of {self.max_payload} (cluster.max_payload)"
            )
            return p.Error(id=msg.id, kind=p.TOO_LARGE, message=text)
        return None

    def _go(self, talk: Waiting) -> list:
        msg = talk.msg
        if p.expired(msg.deadline, self.wall()):
            return [Dropped(f"a call to {msg.group}/{msg.key} past its deadline")]  # its caller gave up
        k = (msg.group, msg.key)
        if msg.here:  # passed on by another node: this node's process, or none
            proc = self.processes.by_key.get(k)
            if proc is None or proc.location is None:
                return [_error(talk, p.NOT_FOUND, f"{k[0]}/{k[1]} is not on {self.node}")]
            return self.mailboxes.deliver(proc.token, talk.client, msg)
        if k in self.behind:
            self.behind[k].append(talk)
            return []
        loc = self.cache.get(*k)
        if loc is not None:
            return self._route(talk, loc)
        self.behind[k] = [talk]
        if msg.create:
            lookup: p.Get | p.Find = p.Get(group=k[0], key=k[1], args=msg.args, deadline=msg.deadline)
        else:
            lookup = p.Find(group=k[0], key=k[1], deadline=msg.deadline)
        return self._ask(lookup, k)

    def _ask(self, lookup: p.Get | p.Find | p.Nodes, k: Key | None) -> list:
        lookup.id = next(self.ids)
        self.lookups[lookup.id] = k
        return self.forward(lookup)

    def resolved(self, lookup_id: int, reply: p.Msg) -> list:
        """The leader's answer to a lookup (or the error that stands for it)."""
        if lookup_id not in self.lookups:
            return []
        k = self.lookups.pop(lookup_id)
        if k is None:
            return self._endpoints(reply)
        talks = self.behind.pop(k, [])
        if isinstance(reply, p.Found) and reply.location is not None:
            self.cache.learn(reply.location, reply.seq, reply.epoch)
            return [e for talk in talks for e in self._route(talk, reply.location)]
        if isinstance(reply, p.Found):
            kind, text = p.NOT_FOUND, f"no process for {k[0]}/{k[1]}"
        elif isinstance(reply, p.Error):
            kind, text = reply.kind, reply.message
        else:
            kind, text = p.BAD_MESSAGE, f"unexpected '{p.tag(reply)}' from the leader"
        return [_error(t, kind, text) for t in talks]

    def _route(self, talk: Waiting, loc: p.Location) -> list:
        if loc.node == self.node:
            proc = self.processes.by_key.get((loc.group, loc.key))
            if proc is None or proc.location != loc:  # exited meanwhile: ask again
                self.cache.forget(loc)
                return self._again(talk, f"{loc.group}/{loc.key} (pid {loc.pid}) exited")
            return self.mailboxes.deliver(proc.token, talk.client, talk.msg)
        endpoint = self.endpoints.get(loc.node)
        if endpoint is None:
            self.unrouted.append((talk, loc))
            return self._ask(p.Nodes(), None) if len(self.unrouted) == 1 else []
        ours = next(self.ids)
        self.away[ours] = Away(talk, loc, self.wall())
        return [ToPeer(endpoint, msgspec.structs.replace(talk.msg, id=ours, here=True, args=[]))]

    def _endpoints(self, reply: p.Msg) -> list:
        if isinstance(reply, p.NodeList):
            self.endpoints.update({n.name: n.listen for n in reply.items if n.listen})
        unrouted, self.unrouted = self.unrouted, []
        out: list = []
        for talk, loc in unrouted:
            if loc.node in self.endpoints:
                out += self._route(talk, loc)
            else:
                out.append(
                    self._gone(talk, f"the endpoint of node {loc.node}, which runs {loc.group}/{loc.key}, is not known")
                )
        return out

    def on_peer(self, msg: p.Msg) -> list:
        """Another node's answer to a talk we sent it."""
        away = self.away.pop(msg.id, None)
        if away is None:
            return []
        talk = away.talk
        if isinstance(msg, p.Error) and msg.kind == p.NOT_FOUND:  # not delivered: it moved, or exited
            self.cache.forget(away.location)
            return self._again(talk, msg.message)
        return [Reply(talk.client, msgspec.structs.replace(msg, id=talk.msg.id))]

    def expire(self) -> None:
        """Forget the talks sent elsewhere whose callers gave up (another node drops a
        request past its deadline, unanswered), or that waited ``AWAY_TTL``."""
        now = self.wall()
        gone = [i for i, a in self.away.items() if p.expired(a.talk.msg.deadline, now) or now - a.since > AWAY_TTL]
        for i in gone:
            del self.away[i]

    def exited(self, loc: p.Location, why: str) -> list:
        """A process elsewhere ended, or its node was lost (``why``): the talks sent to
        it hear ``gone`` now (its node may never answer)."""
        ours = [i for i, away in self.away.items() if away.location == loc]
        text = f"{loc.group}/{loc.key} (pid {loc.pid} on {loc.node}) ended before it answered: {why}"
        return [self._gone(self.away.pop(i).talk, text) for i in ours]

    def _again(self, talk: Waiting, why: str) -> list:
        """Look a talk up once more (it was not delivered anywhere); the second time
        it is ``gone`` (``not-found`` if it was not to start the key)."""
        if talk.retried:
            return [_error(talk, p.GONE if talk.msg.create else p.NOT_FOUND, why)]
        talk.retried = True
        return self._go(talk)

    def _gone(self, talk: Waiting, text: str) -> Reply:
        return _error(talk, p.GONE, text)


def _error(talk: Waiting, kind: str, text: str) -> Reply:
    return Reply(talk.client, p.Error(id=talk.msg.id, kind=kind, message=text))
