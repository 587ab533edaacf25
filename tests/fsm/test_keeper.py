"""LeaseKeeper: the leader's lease clock (deadlines, renewals, expiry), with time passed in."""

from __future__ import annotations

import math
import random

from raftlease.fsm.commands import Acquire, Release
from raftlease.fsm.keeper import FILED_SLACK, LeaseKeeper
from raftlease.fsm.leases import Granted, LeaseTable


def grant(
    table: LeaseTable, keeper: LeaseKeeper, name: str, index: int, now: float, ttl_ms: int = 1000
) -> int:
    result, events = table.apply(Acquire(name, "h", ttl_ms, False, f"r-{name}"), index)
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


def filed(keeper: LeaseKeeper) -> dict[int, int]:
    """lease_id -> how many times it is filed (in the buckets and the near heap)."""
    out: dict[int, int] = {}
    lids = [lid for b in keeper._buckets.values() for lid in b] + [lid for _, lid in keeper._near]
    for lid in lids:
        out[lid] = out.get(lid, 0) + 1
    assert sum(out.values()) == keeper._filed
    assert sorted(keeper._order) == sorted(keeper._buckets) == sorted(keeper._mins)
    return out


def test_renewal_moves_the_deadline_and_old_filed_entries_are_ignored() -> None:
    table, keeper = LeaseTable(), LeaseKeeper()
    lid = grant(table, keeper, "a", 1, now=0.0)
    rec = keeper.renew(table, lid, 0.6, {"q": "1"})
    assert rec is not None
    assert keeper.deadlines[lid] == 1.6
    assert keeper.health[lid] == {"q": "1"}
    assert keeper.due(table, 1.2) == []  # the entry filed at 1.0 is re-filed, not expired
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


def test_renewals_do_not_grow_the_filed_entries() -> None:
    table, keeper = LeaseTable(), LeaseKeeper()
    lid = grant(table, keeper, "a", 1, now=0.0)
    for k in range(1, 100):
        assert keeper.renew(table, lid, k * 0.3, None) is not None
    assert filed(keeper) == {lid: 1}  # one entry per lease, whatever the renewal count
    assert keeper.due(table, 29.0) == []  # the early filed entry is re-filed, not expired
    assert filed(keeper) == {lid: 1}
    assert [r.lease_id for r in keeper.due(table, 99 * 0.3 + 1.0)] == [lid]
    assert filed(keeper) == {}


def test_filed_entries_stay_bounded_on_a_follower_that_never_expires() -> None:
    """A follower applies grants and releases but never calls ``due``: ended leases must not
    pile up in the deadline buckets (10,000 grant/release pairs left 10,000 entries)."""
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
    assert sum(filed(keeper).values()) <= FILED_SLACK + 1
    assert len(keeper._buckets) <= FILED_SLACK + 1


def test_renewed_lease_is_not_reported_when_its_old_bucket_comes_due() -> None:
    table, keeper = LeaseTable(), LeaseKeeper()
    a = grant(table, keeper, "a", 1, now=0.0)  # deadline 1.0
    b = grant(table, keeper, "b", 2, now=0.01)  # deadline 1.01, same bucket
    assert keeper.renew(table, a, 0.5, None) is not None  # a: 1.5, still filed at 1.0
    assert keeper.next_deadline() == 1.0  # early: fine, ``due`` finds nothing then
    assert keeper.due(table, 1.0) == []
    assert keeper.next_deadline() == 1.01
    assert [r.lease_id for r in keeper.due(table, 1.2)] == [b]
    assert filed(keeper) == {a: 1}  # re-filed at its new deadline
    assert keeper.next_deadline() == 1.5
    assert keeper.due(table, 1.49) == []
    assert [r.lease_id for r in keeper.due(table, 1.5)] == [a]


def test_leases_in_one_bucket_are_reported_only_once_each_is_due() -> None:
    table, keeper = LeaseTable(), LeaseKeeper()
    lids = [grant(table, keeper, n, i + 1, now=i * 0.01) for i, n in enumerate("abcd")]
    assert len(keeper._buckets) == 1  # deadlines 1.00 .. 1.03, one bucket
    assert [r.lease_id for r in keeper.due(table, 1.005)] == lids[:1]
    assert keeper.next_deadline() == 1.01
    assert keeper.due(table, 1.009) == []
    assert [r.lease_id for r in keeper.due(table, 1.01)] == lids[1:2]
    assert [r.lease_id for r in keeper.due(table, 1.05)] == lids[2:]
    assert keeper.next_deadline() == math.inf
    assert filed(keeper) == {}


def test_due_reports_in_deadline_then_lease_id_order() -> None:
    table, keeper = LeaseTable(), LeaseKeeper()
    a = grant(table, keeper, "a", 1, now=0.0, ttl_ms=3000)  # 3.0
    b = grant(table, keeper, "b", 2, now=0.0, ttl_ms=1000)  # 1.0
    c = grant(table, keeper, "c", 3, now=0.5, ttl_ms=2000)  # 2.5
    d = grant(table, keeper, "d", 4, now=0.0, ttl_ms=1000)  # 1.0
    assert keeper.renew(table, b, 0.9, None) is not None  # b: 1.9, filed at 1.0
    assert [r.lease_id for r in keeper.due(table, 10.0)] == [d, b, c, a]
    # Equal deadlines come in lease id order, whatever order they were filed in.
    keeper.unmark(d)
    keeper.unmark(b)
    keeper.unmark(a)
    keeper.unmark(c)
    assert [r.lease_id for r in keeper.due(table, math.inf)] == [d, b, c, a]
    x = grant(table, keeper, "x", 5, now=20.0)
    y = grant(table, keeper, "y", 6, now=20.0)
    keeper.due(table, 21.0)
    keeper.unmark(y)
    keeper.unmark(x)
    assert [r.lease_id for r in keeper.due(table, 21.0)] == [x, y]


def test_next_deadline_is_never_late_and_due_matches_a_plain_scan() -> None:
    """Random grants, renewals, releases, failed expiries and ``due`` calls against a model
    that scans every deadline: ``due`` reports exactly the leases whose deadline passed, in
    order; ``next_deadline`` is never after the earliest deadline, and is after ``now`` once
    ``due(now)`` has run (a driver sleeping until it never spins)."""
    for seed in range(20):
        rng = random.Random(seed)
        table, keeper = LeaseTable(), LeaseKeeper()
        index = 0
        now = 0.0
        expiring: set[int] = set()
        for step in range(600):
            now += rng.choice((0.0, 0.001, 0.01, 0.03, 0.2))
            live = [r.lease_id for r in table.leases()]
            op = rng.random()
            if op < 0.3 or not live:
                index += 1
                grant(table, keeper, f"s{step}", index, now, rng.choice((1000, 1000, 1500, 2000)))
            elif op < 0.6:
                lid = rng.choice(live)
                rec = keeper.renew(table, lid, now, None)
                assert (rec is None) == (lid in expiring or keeper.deadlines[lid] <= now)
            elif op < 0.7:
                lid = rng.choice(live)
                index += 1
                _, events = table.apply(Release(lid), index)
                for ev in events:
                    keeper.on_event(ev, now)
                expiring.discard(lid)
            elif op < 0.75 and expiring:
                lid = rng.choice(sorted(expiring))
                keeper.unmark(lid)
                expiring.discard(lid)
            else:
                want = sorted(
                    (d, lid)
                    for lid, d in keeper.deadlines.items()
                    if d <= now and lid not in expiring
                )
                got = [r.lease_id for r in keeper.due(table, now)]
                assert got == [lid for _, lid in want], (seed, step)
                expiring.update(got)
                assert keeper.next_deadline() > now
            pending = [d for lid, d in keeper.deadlines.items() if lid not in expiring]
            assert keeper.next_deadline() <= min(pending, default=math.inf)
            assert all(n == 1 for n in filed(keeper).values())
            assert set(filed(keeper)) >= set(keeper.deadlines) - expiring
