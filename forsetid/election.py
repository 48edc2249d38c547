"""Who leads, with ``backend = "etcd"``: an election held in etcd, never by us.

Each candidate campaigns for one key, ``/forseti/CLUSTER/leader``, created only if it
does not exist (a transaction on create revision 0, as Patroni does) and bound to a
lease of ``cluster.lease`` seconds. The key's create revision is the term: etcd's
revision grows with every write, so every election has a larger one. The winner keeps
the lease alive; the others watch the key and campaign again once it is gone.

:class:`Office` is the pure part, what the loop asks before every decision: a leader
leads only until ``lease`` seconds after it *sent* the last renewal that succeeded, so
it stops deciding before etcd can have let the lease lapse and elected another (fencing:
docs/guides/ha.md). :class:`Campaign` is the thread that talks to etcd, so the loop never
waits on it. It renews only while the loop still turns: a wedged loop loses office.
What the leader must leave to its successor (the workers it knew, the groups added at
run time) is written under the same prefix, each write guarded by the term.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
import time
from dataclasses import dataclass, field

from .etcd import Etcd, EtcdError

log = logging.getLogger("forsetid")

MEMBERS, CALLS = "members/", "calls/"  # under the cluster's prefix: what a new leader reads


class Office:
    """This candidate's standing: the term it leads and until when, or standby."""

    def __init__(self, lease: float) -> None:
        self.lease = lease
        self.term = 0  # the term it leads or led last (0: none yet)
        self.until: float | None = None  # monotonic: when it must stop deciding (None: standby)

    def won(self, term: int, sent_at: float) -> None:
        self.term, self.until = term, sent_at + self.lease

    def renewed(self, sent_at: float) -> None:
        if self.until is not None:
            self.until = max(self.until, sent_at + self.lease)

    def lost(self) -> None:
        self.until = None

    def leading(self, now: float) -> bool:
        return self.until is not None and now < self.until


@dataclass
class Won:
    term: int
    sent_at: float  # when the lease was asked for: its lapse is counted from there
    members: list[str] = field(default_factory=list)  # the workers the predecessors knew
    calls: dict[str, bytes] = field(default_factory=dict)  # groups added at run time, encoded


@dataclass
class Renewed:
    sent_at: float


@dataclass
class Lost:
    why: str


@dataclass
class Standing:
    """A standby's view: who leads (None: nobody, or unknown) and in which term."""

    leader: str | None
    term: int


@dataclass
class Unreachable:
    why: str


@dataclass
class Resigned:
    pass


@dataclass
class Recorded:
    """A record written: ``members/NODE`` tells that a successor will wait for NODE."""

    key: str


Report = Won | Renewed | Lost | Standing | Unreachable | Resigned | Recorded


class Campaign(threading.Thread):
    """Campaigns, holds the lease, writes the leader's records; tells the loop through
    ``reports`` and a byte on ``fd``."""

    def __init__(self, etcd: Etcd, cluster: str, name: str, lease: float) -> None:
        super().__init__(name="forseti-election", daemon=True)
        self.etcd, self.name, self.lease = etcd, name, lease
        self.prefix = f"/forseti/{cluster}/"
        self.key = self.prefix + "leader"
        self.ttl = max(1, math.ceil(lease))  # etcd's TTLs are whole seconds (it may round up further)
        self.every = min(lease / 4, 0.5)  # renewals: several within the lease
        self.turned_at = time.monotonic()  # set by the loop each turn
        self.reports: queue.SimpleQueue[Report] = queue.SimpleQueue()
        self.writes: queue.SimpleQueue[tuple[int, str, bytes | None] | None] = queue.SimpleQueue()
        self._write: tuple[int, str, bytes | None] | None = None  # taken off the queue, not yet done
        self.fd, self._wake = os.pipe()
        os.set_blocking(self.fd, False)
        os.set_blocking(self._wake, False)
        self._halt = threading.Event()
        self._resign = threading.Event()
        self._release = threading.Event()
        self._lease: int | None = None
        self._term = 0
        self._renewed_at = 0.0  # when the last renewal that succeeded was sent
        self._unreachable = False

    # -- the loop's side --

    def alive(self, now: float) -> None:
        self.turned_at = now

    def record(self, term: int, key: str, value: bytes | None) -> None:
        """Write (None: delete) a record of the leader of ``term``, guarded by it: one
        queued in a term that has ended is dropped."""
        self.writes.put((term, key, value))

    def resign(self) -> None:
        """Revoke the lease (a standby takes over at once) and campaign no more."""
        self._resign.set()
        self.writes.put(None)

    def release(self) -> None:
        """Revoke the lease, and stand again: the loop cannot lead."""
        self._release.set()
        self.writes.put(None)

    def holding(self) -> bool:
        """Whether it holds a lease (that a resignation must revoke)."""
        return self._lease is not None

    def close(self) -> None:
        self._halt.set()
        self.writes.put(None)
        self.etcd.interrupt()  # (a standby's watch)
        self.join(timeout=2 * self.etcd.timeout + 0.5)
        if not self.is_alive():  # (one still in a watch may yet write: its pipe stays, the process ends)
            for fd in (self.fd, self._wake):
                os.close(fd)

    def taken(self) -> list[Report]:
        try:
            os.read(self.fd, 4096)
        except BlockingIOError:
            pass
        out = []
        while True:
            try:
                out.append(self.reports.get_nowait())
            except queue.Empty:
                return out

    # -- the thread --

    def _report(self, report: Report) -> None:
        self.reports.put(report)
        try:
            os.write(self._wake, b"!")
        except BlockingIOError:  # the loop has bytes to read already
            pass

    def run(self) -> None:
        while True:
            try:
                if self._resign.is_set():  # (before a halt: a resignation must revoke)
                    self._give_up(Resigned())
                    return
                if self._halt.is_set():
                    return
                if self._release.is_set():
                    self._release.clear()
                    self._give_up(Lost("released: this daemon could not lead"))
                elif self._lease is None:
                    self._stand()
                else:
                    self._hold()
                if self._unreachable:
                    self._unreachable = False
                    log.info("etcd answers again")
            except EtcdError as exc:
                if not self._unreachable:
                    self._unreachable = True
                    self._report(Unreachable(str(exc)))
                self._halt.wait(self.every)
            except Exception:  # a bug, or an answer of a shape we did not expect: never die quietly
                log.exception("the election thread failed; it goes on in %.1f s", self.every)
                self._report(Unreachable("the election thread failed (see the traceback above)"))
                self._halt.wait(self.every)

    def _wedged(self) -> bool:
        return time.monotonic() - self.turned_at > max(2 * self.every, self.lease / 2)

    def _stand(self) -> None:
        """Campaign if nobody leads, else wait until the leader's key is gone."""
        held = self.etcd.get(self.key)
        if held is not None:
            holder, term, revision = held
            self._report(Standing(holder, term))
            began = time.monotonic()
            if not self.etcd.wait_deleted(self.key, revision, timeout=max(self.lease, 1.0)):
                # (a watch that ends at once, e.g. cancelled, must not make this spin)
                self._halt.wait(max(0.0, self.every - (time.monotonic() - began)))
            return
        if self._wedged():  # a loop that does not turn must not take office
            self._halt.wait(self.every)
            return
        sent_at = time.monotonic()
        lease = self.etcd.grant(self.ttl)
        try:
            won, term, holder = self.etcd.create(self.key, self.name, lease)
        except EtcdError:
            self.etcd.revoke(lease)  # the create may have been done, its answer lost: undo it
            raise
        if not won:
            self.etcd.revoke(lease)
            self._report(Standing(holder or None, term))
            return
        self._drop_writes()  # (queued in an earlier term)
        self._lease, self._term, self._renewed_at = lease, term, sent_at
        try:
            members = sorted(self.etcd.prefix(self.prefix + MEMBERS))
            calls = self.etcd.prefix(self.prefix + CALLS)
        except EtcdError:
            self._give_up(Lost("it could not read its predecessor's records"))  # so it should not lead
            raise
        self._report(Won(term, sent_at, members, calls))

    def _hold(self) -> None:
        """Renew the lease every ``every`` seconds while the loop turns; write records
        in between."""
        if not self._wedged():
            sent_at = time.monotonic()
            if self.etcd.keepalive(self._lease or 0) <= 0:
                self._lease = None
                self._drop_writes()
                self._report(Lost("its lease lapsed in etcd"))
                return
            self._renewed_at = sent_at
            self._report(Renewed(sent_at))
        elif time.monotonic() - self._renewed_at > self.lease:
            self._lease = None  # let lapse: the loop would be deciding on a lapsed lease
            self._drop_writes()
            self._report(Lost(f"the loop did not turn for {time.monotonic() - self.turned_at:.1f} s"))
            return
        deadline = time.monotonic() + self.every
        while (left := deadline - time.monotonic()) > 0:
            if self._write is None:
                try:
                    self._write = self.writes.get(timeout=left)
                except queue.Empty:
                    return
            if self._write is None:  # resign, release or close
                return
            term, key, value = self._write
            # (one that fails stays, to be tried again first)
            if term == self._term:
                if not self.etcd.put_if(self.key, self._term, self.prefix + key, value):
                    self._lease = None
                    self._drop_writes()
                    self._report(Lost("another candidate holds the leader's key"))
                    return
                if value is not None:
                    self._report(Recorded(key))
            self._write = None

    def _drop_writes(self) -> None:
        self._write = None
        while True:
            try:
                self.writes.get_nowait()
            except queue.Empty:
                return

    def _give_up(self, report: Report) -> None:
        lease, self._lease = self._lease, None
        self._drop_writes()
        if lease is not None:
            try:
                self.etcd.revoke(lease)  # its key goes with it: a standby takes over at once
            finally:
                self._report(report)
