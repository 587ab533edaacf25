"""LeaseKeeper: the leader's lease clock (deadlines, renewals, expiry), with time passed in."""

from __future__ import annotations

from raftlease.fsm.commands import Acquire, Release
from raftlease.fsm.keeper import LeaseKeeper
from raftlease.fsm.leases import Granted, LeaseTable


def grant(table: LeaseTable, keeper: LeaseKeeper, name: str, index: int, now: float) -> int:
    result, events = table.apply(Acquire(name, "h", 1000, False, f"r-{name}"), index)
    assert isinstance(result, Granted)
    for ev in events:
        keeper.on_event(ev, now)
    return result.lease.lease_id


def test_grant_starts_the_clock_at_apply_time_and_due_waits_for_the_deadline() -> None:
    table, keeper = LeaseTable(), LeaseKeeper()
    lid = grant(table, keeper, "a", 1, now=10.0)
    assert keeper.deadlines[lid] == 11.0
    assert keeper.due(table, 10.999) == []
    due = keeper.due(table, 11.0)
    assert [r.lease_id for r in due] == [lid]
    assert keeper.due(table, 12.0) == []  # proposed once, not again
    assert keeper.renew(table, lid, 11.5, None) is None  # due: no renewal past the deadline


def test_renewal_moves_the_deadline_and_old_heap_entries_are_ignored() -> None:
    table, keeper = LeaseTable(), LeaseKeeper()
    lid = grant(table, keeper, "a", 1, now=0.0)
    rec = keeper.renew(table, lid, 0.6, {"q": "1"})
    assert rec is not None
    assert keeper.deadlines[lid] == 1.6
    assert keeper.health[lid] == {"q": "1"}
    assert keeper.due(table, 1.2) == []  # the stale (1.0, lid) pair is skipped
    assert [r.lease_id for r in keeper.due(table, 1.6)] == [lid]


def test_failed_expiry_proposal_is_offered_again() -> None:
    table, keeper = LeaseTable(), LeaseKeeper()
    lid = grant(table, keeper, "a", 1, now=0.0)
    assert len(keeper.due(table, 2.0)) == 1
    keeper.unmark(lid)
    assert [r.lease_id for r in keeper.due(table, 2.0)] == [lid]


def test_restart_all_renews_every_lease_at_office_time() -> None:
    table, keeper = LeaseTable(), LeaseKeeper()
    a = grant(table, keeper, "a", 1, now=0.0)
    b = grant(table, keeper, "b", 2, now=0.5)
    keeper.health[a] = {"x": "y"}
    keeper.restart_all(table, 5.0)
    assert keeper.deadlines == {a: 6.0, b: 6.0}
    assert keeper.health == {}
    assert keeper.due(table, 5.9) == []


def test_release_forgets_the_lease() -> None:
    table, keeper = LeaseTable(), LeaseKeeper()
    lid = grant(table, keeper, "a", 1, now=0.0)
    _, events = table.apply(Release(lid), 2)
    for ev in events:
        keeper.on_event(ev, 0.5)
    assert lid not in keeper.deadlines
    assert keeper.due(table, 10.0) == []
    assert keeper.remaining(lid, 0.5) == 0.0


def test_renewals_do_not_grow_the_heap() -> None:
    table, keeper = LeaseTable(), LeaseKeeper()
    lid = grant(table, keeper, "a", 1, now=0.0)
    for k in range(1, 100):
        assert keeper.renew(table, lid, k * 0.3, None) is not None
    assert len(keeper._heap) == 1  # one entry per lease, whatever the renewal count
    assert keeper.due(table, 29.0) == []  # the early filed entry is re-filed, not expired
    assert len(keeper._heap) == 1
    assert [r.lease_id for r in keeper.due(table, 99 * 0.3 + 1.0)] == [lid]


def test_heap_stays_bounded_on_a_follower_that_never_expires() -> None:
    """A follower applies grants and releases but never calls ``due``: ended leases must not
    pile up in the deadline heap (10,000 grant/release pairs left 10,000 entries)."""
    table, keeper = LeaseTable(), LeaseKeeper()
    index = 0
    for i in range(10_000):
        index += 1
        lid = grant(table, keeper, f"n{i % 7}", index, now=float(i))
        index += 1
        _, events = table.apply(Release(lid), index)
        for ev in events:
            keeper.on_event(ev, float(i))
    assert keeper.deadlines == {}
    assert len(keeper._heap) <= 64 + 1
