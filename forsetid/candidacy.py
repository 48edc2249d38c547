"""A leader part's candidacy, with ``backend = "etcd"``: what etcd's election
(``election.Campaign``, in its thread) reports to the loop, whether this candidate may
decide now (``election.Office``, asked before every message it decides and at every
turn), how a standby answers (``not-leader``, naming the leader it knows of), how the
winner starts a new ``Leader`` that rebuilds the dictionary from the workers' hellos
and tells every worker at once (``Elected``), and how it resigns at shutdown. Part of
``leader_io.LeaderIO`` (a base class of it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import msgspec
import zmq

from . import protocol as p
from .config import Config
from .effects import Record, Reply
from .election import Campaign, Lost, Office, Recorded, Renewed, Resigned, Standing, Unreachable, Won
from .leader import Leader
from .loop import Loop

log = logging.getLogger("forsetid")


class Candidacy:
    # The leader part's pieces this uses (``leader_io.LeaderIO.__init__`` makes them).
    loop: Loop
    config: Config
    about: p.InfoReply
    router: zmq.Socket
    leader: Leader | None
    office: Office | None
    campaign: Campaign | None
    known_leader: str | None  # a standby's: who leads, as etcd said last
    resigned: bool
    _lead: Callable[..., Leader]
    _publish: Callable[[bytes, p.Msg], None]
    carry_out: Callable[[list], None]

    def _on_campaign(self, fd: int) -> None:
        assert self.campaign is not None and self.office is not None
        name = self.config.node.name
        for report in self.campaign.taken():
            if isinstance(report, Won):
                self._won(report)
            elif isinstance(report, Renewed):
                self.office.renewed(report.sent_at)
            elif isinstance(report, Lost):
                self._step_down(report.why)
            elif isinstance(report, Standing):
                if self.leader is not None and report.term != self.office.term:
                    self._step_down(f"etcd says {report.leader} leads, in term {report.term}")
                if report.leader != self.known_leader:
                    log.info("%s stands by: %s leads (term %d)", name, report.leader or "nobody", report.term)
                self.known_leader = report.leader
            elif isinstance(report, Unreachable):
                if self.leader is not None:
                    left = (self.office.until or 0) - time.monotonic()
                    log.warning("etcd is unreachable (%s): leading %.1f s more unless it answers", report.why, left)
                else:
                    self.known_leader = None  # (a hint that may be stale by now is no hint)
                    log.warning("etcd is unreachable (%s): cannot stand for leader", report.why)
            elif isinstance(report, Resigned):
                self._step_down("resigned")
                self.resigned = True
            elif isinstance(report, Recorded) and self.leader is not None and self._leading():
                self.carry_out(self.leader.recorded(report.key))

    def _won(self, report: Won) -> None:
        assert self.campaign is not None and self.office is not None
        name = self.config.node.name
        if self.loop.stopping:  # (resigning already: the thread revokes this lease next)
            return
        self.office.won(report.term, report.sent_at)
        self.resigned = False
        if not self._leading():  # a report read too late to act on
            self.campaign.release()
            return
        try:
            calls = dict(self.config.calls)
            for group, raw in report.calls.items():
                try:
                    calls[group] = msgspec.json.decode(raw, type=p.Call)
                except msgspec.DecodeError as exc:  # (ValidationError included)
                    log.warning("group %s, as recorded in etcd, is unusable and left out: %s", group, exc)
            self._lead(calls, report.term, report.members)
        except Exception:  # a candidate that holds the lease but cannot lead must let go
            log.exception("%s won the election but cannot lead: it lets its lease go", name)
            self.office.lost()
            self.leader = None
            self.campaign.release()
            return
        self.known_leader = name
        waits = f"waiting for {len(report.members)} known workers" if report.members else "no worker known yet"
        log.warning("%s leads (term %d): elected in etcd; %s", name, report.term, waits)
        self._announce(b"")

    def _announce(self, topic: bytes) -> None:
        """Tell the workers who leads (at once when elected, then with every tick, so a
        worker whose subscription missed it hears it within a heartbeat)."""
        assert self.office is not None and self.leader is not None
        self._publish(topic, p.Elected(node=self.config.node.name, term=self.office.term, epoch=self.leader.epoch))

    def _leading(self) -> bool:
        """Whether this candidate may decide now; a leader whose lease may have lapsed
        steps down here, before it decides anything more."""
        if self.office is None:
            return True
        if self.office.leading(time.monotonic()):
            return True
        if self.leader is not None:
            self._step_down(f"no renewal of its lease succeeded for {self.office.lease:g} s")
        return False

    def _step_down(self, why: str) -> None:
        assert self.office is not None
        self.office.lost()
        leader, self.leader = self.leader, None
        if leader is not None:
            log.warning("%s stops leading (term %d): %s", self.config.node.name, self.office.term, why)
            self.carry_out([e for e in leader.abdicate() if isinstance(e, Reply)])
            self.known_leader = None

    def _not_leader(self, peer: bytes, msg: p.Msg) -> None:
        if isinstance(msg, p.Info):
            state = msgspec.structs.replace(self.about, id=msg.id, state="standby", leader=self.known_leader or "")
            self.loop.send(self.router, peer, state)
            return
        who = self.known_leader if self.known_leader != self.config.node.name else None
        text = f"{self.config.node.name} does not lead" + (f"; {who} does" if who else "; no leader is known yet")
        self.loop.send(self.router, peer, p.Error(id=msg.id, kind=p.NOT_LEADER, message=text, leader=who or ""))

    def _record(self, effect: Record) -> None:
        if self.campaign is not None and self.office is not None:
            self.campaign.record(self.office.term, effect.key, effect.value)

    # -- the loop's part --

    def begin_shutdown(self) -> float:
        if self.campaign is None:
            return 0.0
        # Resign: no more decisions from here, and the lease is revoked so that a standby
        # takes over at once rather than when it lapses.
        if self.leader is not None:
            self._step_down("shutting down: resigned")
        self.campaign.resign()
        return self.campaign.etcd.timeout

    @property
    def idle(self) -> bool:
        return self.campaign is None or self.resigned or not self.campaign.holding()

    def close(self) -> None:
        if self.campaign is not None:
            self.loop.unwatch(self.campaign.fd)
            self.campaign.close()
            self.campaign = None
