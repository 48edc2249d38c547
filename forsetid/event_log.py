"""The leader's events, numbered as ``protocol.Sequence`` follows them: ``seq`` counts
every event of this leader's life (its ``epoch``), ``gseq`` the events of each group,
so that a subscriber of one group can tell a gap too. A reply to ``get``/``find``
carries where the count stands, for a cache to keep it only if no later event came."""

from __future__ import annotations

import time
import uuid

from . import protocol as p


class EventLog:
    def __init__(self, clock=time.time, epoch: str | None = None) -> None:
        self.epoch = epoch or uuid.uuid4().hex[:12]
        self.seq = 0
        self.gseq: dict[str, int] = {}
        self.clock = clock

    def event(self, kind, loc: p.Location, exit_code=None, signal=None, reason=None, at=None, adopted=False) -> p.Event:
        self.seq += 1
        gseq = self.gseq[loc.group] = self.gseq.get(loc.group, 0) + 1
        return p.Event(
            seq=self.seq,
            epoch=self.epoch,
            kind=kind,
            location=loc,
            exit_code=exit_code,
            signal=signal,
            reason=reason,
            at=at or self.clock(),
            gseq=gseq,
            adopted=adopted,
        )

    def tick(self, group: str | None = None) -> p.Tick:
        """Where the count stands (a group's topic gets that group's ``gseq``)."""
        return p.Tick(seq=self.seq, epoch=self.epoch, gseq=self.gseq.get(group, 0) if group else 0)

    def found(self, req_id: int, loc: p.Location | None) -> p.Found:
        return p.Found(id=req_id, location=loc, seq=self.seq, epoch=self.epoch)
