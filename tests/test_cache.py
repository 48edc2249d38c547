"""Unit tests of forsetid.cache.LocationCache: a worker's cache kept true by events."""

from forsetid.cache import LocationCache
from forsetid.protocol import Event, Location, Tick

A = Location("users", "a", "node1", 101)
B = Location("users", "b", "node2", 102)
C = Location("other", "c", "node1", 103)


def started(seq, loc, epoch="e1"):
    return Event(seq=seq, epoch=epoch, kind="started", location=loc)


def exited(seq, loc, epoch="e1", reason="exit"):
    return Event(seq=seq, epoch=epoch, kind="exited", location=loc, exit_code=0, reason=reason)


def fed(*msgs) -> LocationCache:
    cache = LocationCache()
    for msg in msgs:
        assert cache.apply(msg) is True
    return cache


def test_events_applied_in_order():
    cache = fed(started(1, A), started(2, B), started(3, C), exited(4, B))
    assert (cache.get("users", "a"), cache.get("users", "b"), cache.get("other", "c")) == (A, None, C)
    assert len(cache) == 2 and cache.seq == 4 and cache.epoch == "e1" and cache.resets == 0


def test_first_tick_sets_epoch_and_seq():
    cache = fed(Tick(seq=7, epoch="e1"), started(8, A))
    assert cache.seq == 8 and cache.get("users", "a") == A


def test_gap_empties_and_returns_false():
    cache = fed(started(1, A), started(2, B))
    assert cache.apply(started(4, C)) is False
    assert cache.get("users", "a") is None and cache.get("users", "b") is None
    assert cache.resets == 1 and cache.seq == 4
    assert cache.get("other", "c") == C  # the event that revealed the gap is itself true
    assert cache.apply(exited(5, C)) is True and len(cache) == 0


def test_tick_ahead_reveals_a_gap():
    cache = fed(started(1, A))
    assert cache.apply(Tick(seq=1, epoch="e1")) is True and cache.get("users", "a") == A
    assert cache.apply(Tick(seq=3, epoch="e1")) is False
    assert len(cache) == 0 and cache.seq == 3


def test_new_epoch_empties():
    cache = fed(started(1, A), started(2, B))
    assert cache.apply(started(1, C, epoch="e2")) is True
    assert cache.epoch == "e2" and cache.seq == 1 and cache.resets == 1
    assert cache.get("users", "a") is None and cache.get("other", "c") == C


def test_learn_only_when_no_later_event_applied():
    cache = fed(started(1, C), started(2, B))
    cache.learn(A, seq=2)
    assert cache.get("users", "a") == A
    cache.learn(C, seq=5)  # a reply from further on than the events seen: fine
    assert cache.get("other", "c") == C


def test_learn_after_overtaking_exit_is_refused():
    cache = fed(started(1, B))
    # the leader answered "a" at seq 1, but its exit event (seq 3) overtook the reply
    assert cache.apply(started(2, A)) and cache.apply(exited(3, A))
    cache.learn(A, seq=1)
    assert cache.get("users", "a") is None


def test_exit_of_another_pid_keeps_entry():
    newer = Location("users", "a", "node2", 999)
    cache = fed(started(1, A), exited(2, newer))
    assert cache.get("users", "a") == A
    assert cache.apply(exited(3, A)) and cache.get("users", "a") is None


def test_duplicates_ignored():
    cache = fed(started(1, A), exited(2, A))
    assert cache.apply(started(1, A)) is True  # a late duplicate must not resurrect it
    assert cache.apply(exited(2, A)) is True
    assert cache.apply(Tick(seq=1, epoch="e1")) is True
    assert cache.get("users", "a") is None and cache.seq == 2 and cache.resets == 0


def test_forget_only_the_same_location():
    cache = fed(started(1, A))
    cache.forget(Location("users", "a", "node1", 555))
    assert cache.get("users", "a") == A
    cache.forget(A)
    assert cache.get("users", "a") is None


def test_clear_counts_resets_only_when_something_was_lost():
    cache = LocationCache()
    cache.clear()
    assert cache.resets == 0
    cache.learn(A, 0)
    cache.clear()
    assert cache.resets == 1 and len(cache) == 0


def test_an_answer_from_another_leader_life_is_not_kept():
    cache = LocationCache()
    cache.apply(Tick(seq=3, epoch="new"))
    cache.learn(A, 5, "old")
    assert cache.get(A.group, A.key) is None
    cache.learn(A, 5, "new")
    assert cache.get(A.group, A.key) == A
