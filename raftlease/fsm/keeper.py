"""LeaseKeeper: the leader's lease clock. Pure and deterministic: time is passed in.

The lease table (leases.py) says *who* holds what; the keeper says *until when*, on the local
clock of the node that serves the leases. Nothing here is replicated or persisted: renewals
need no log write, and a node that becomes leader restarts every deadline at the moment it
takes office (``restart_all``), which can only make a lease last longer, never shorter
(docs/safety.md, S2). The asyncio node and the deterministic simulator both drive it.
"""

from __future__ import annotations

import heapq
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from raftlease.fsm.leases import LeaseEvent, LeaseRecord, LeaseTable


# A new leader inherits the replicated wait queues, but not the clients' wait timers (they ran
# on the old leader). A queued acquire whose client has not re-attached (a retry with the same
# request id registers it again) this long after the leader took office is cancelled, so the
# name is not later handed to nobody and blocked for a TTL. Clients retry within about 1 s.
INHERITED_WAIT_GRACE_S = 2.0
# Ended leases the deadline buckets may keep beyond twice the live ones before they are rebuilt.
FILED_SLACK = 64
# Deadlines are filed in buckets of 1/BUCKETS_PER_S seconds: bucket ``floor(d * 16)``. A power
# of two keeps the arithmetic exact (a bucket's start never lies above a deadline filed in it,
# whatever the float). A bucket costs a list, two dict entries and a float (~200 B): 30 s of
# TTL span ~500 of them, ~1 B per lease at 100,000 leases (~200 per bucket, scanned once when
# it comes up). Wider buckets would make that scan, and the near heap below, longer.
BUCKETS_PER_S = 16


class LeaseKeeper:
    __slots__ = (
        "_buckets",
        "_expiring",
        "_filed",
        "_mins",
        "_near",
        "_order",
        "deadlines",
        "health",
    )

    def __init__(self) -> None:
        self.deadlines: dict[int, float] = {}  # lease_id -> local-clock deadline
        # Every live lease is filed once, at a deadline that may be early, never late: a renewal
        # only moves ``deadlines``, and ``due`` re-files the lease when its bucket comes up.
        # bucket number -> the lease ids filed in it (their ints are the dict's own: 8 B each).
        self._buckets: dict[int, list[int]] = {}
        self._mins: dict[int, float] = {}  # bucket number -> earliest deadline filed in it
        self._order: list[int] = []  # heap of the bucket numbers in ``_buckets``
        # (deadline, lease_id) of the leases due within the bucket that holds ``now`` at the
        # last ``due``: a small heap (a bucket's worth at most), so that the node, which wakes
        # at each of their deadlines, does not scan the whole bucket every time.
        self._near: list[tuple[float, int]] = []
        self._filed = 0  # entries in ``_buckets`` and ``_near`` (ended leases included)
        self._expiring: set[int] = set()  # expiry proposed, not yet applied
        self.health: dict[int, dict[str, str]] = {}  # latest keepalive payload per lease

    def on_event(self, ev: LeaseEvent, now: float) -> None:
        """Apply-time bookkeeping: a grant starts its clock now; an end forgets the lease."""
        lease = ev.lease
        if ev.kind == "acquired":
            self._set(lease.lease_id, now + lease.ttl_ms / 1000.0)
        else:
            self.deadlines.pop(lease.lease_id, None)
            self._expiring.discard(lease.lease_id)
            self.health.pop(lease.lease_id, None)
            if self._filed > 2 * len(self.deadlines) + FILED_SLACK:
                # Entries of ended leases leave the buckets only when ``due`` visits them, and
                # a follower never calls ``due``: rebuild, so the entries stay within twice the
                # live leases (amortized O(1) per event).
                self._refile_all()

    def restart_all(self, table: LeaseTable, now: float) -> None:
        """Treat every lease as renewed ``now`` (a new leader taking office, or a snapshot)."""
        self.deadlines = {r.lease_id: now + r.ttl_ms / 1000.0 for r in table.leases()}
        self._refile_all()
        self._expiring.clear()
        self.health.clear()

    def renew(
        self, table: LeaseTable, lease_id: int, now: float, health: dict[str, str] | None
    ) -> LeaseRecord | None:
        """Extend ``lease_id`` by its TTL from ``now``; None if it is gone or already due.

        The caller must hold a valid leader lease (the node checks it first).
        """
        rec = table.by_lease_id(lease_id)
        if rec is None:
            return None
        if lease_id in self._expiring or self.deadlines.get(lease_id, math.inf) <= now:
            return None  # past its deadline: an expiry is (or is about to be) proposed
        # Only the dict moves: the lease stays filed once, at its older deadline, and ``due``
        # re-files it at the current one when that bucket comes up. One filed entry per lease
        # however often it is renewed (memory: issue 5, W6).
        self.deadlines[lease_id] = now + rec.ttl_ms / 1000.0
        if health is not None:
            self.health[lease_id] = health
        return rec

    def due(self, table: LeaseTable, now: float) -> list[LeaseRecord]:
        """Leases whose deadline has passed and whose expiry is not yet proposed, in
        (deadline, lease id) order.

        Marks them as expiring; call ``unmark`` if the proposal fails. Visits the buckets that
        start at or before ``now`` (each lease in them once) and the near heap's due entries.
        """
        deadlines = self.deadlines
        expiring = self._expiring
        buckets = self._buckets
        mins = self._mins
        order = self._order
        near = self._near
        if now < math.inf:
            limit = math.floor(now * BUCKETS_PER_S)  # the bucket that holds ``now``
            end = (limit + 1) / BUCKETS_PER_S  # and where it ends (exact)
        else:
            limit = max(order, default=0)  # every bucket
            end = math.inf
        found: list[tuple[float, int, LeaseRecord]] = []
        while order and order[0] <= limit:
            bn = heapq.heappop(order)
            lids = buckets.pop(bn)
            del mins[bn]
            self._filed -= len(lids)
            for lease_id in lids:
                d = deadlines.get(lease_id)
                if d is None or lease_id in expiring:
                    continue  # ended, or already expiring
                if d <= now:
                    self._found(table, lease_id, d, found)
                elif d < end:  # not yet, but within this bucket: file it exactly
                    heapq.heappush(near, (d, lease_id))
                    self._filed += 1
                else:  # renewed since it was filed
                    self._file(lease_id, d)
        while near and near[0][0] <= now:
            _, lease_id = heapq.heappop(near)
            self._filed -= 1
            d = deadlines.get(lease_id)
            if d is None or lease_id in expiring:
                continue
            if d <= now:
                self._found(table, lease_id, d, found)
            elif d < end:
                heapq.heappush(near, (d, lease_id))
                self._filed += 1
            else:
                self._file(lease_id, d)
        if len(found) > 1:
            found.sort()  # by (deadline, lease id): a lease is found once, so never by record
        return [rec for _, _, rec in found]

    def unmark(self, lease_id: int) -> None:
        """An expiry proposal failed: let ``due`` offer this lease again."""
        self._expiring.discard(lease_id)
        d = self.deadlines.get(lease_id)
        if d is not None:
            self._file(lease_id, d)

    def remaining(self, lease_id: int, now: float) -> float:
        d = self.deadlines.get(lease_id)
        return max(0.0, d - now) if d is not None else 0.0

    def next_deadline(self) -> float:
        """The earliest deadline filed: never later than any lease's deadline (a lease filed
        before a renewal makes it early; ``due`` then re-files it), and above ``now`` right
        after ``due(now)``, so a driver sleeping until it does not spin."""
        at = self._near[0][0] if self._near else math.inf
        if self._order:
            at = min(at, self._mins[self._order[0]])
        return at

    def _set(self, lease_id: int, deadline: float) -> None:
        self.deadlines[lease_id] = deadline
        self._file(lease_id, deadline)

    def _file(self, lease_id: int, deadline: float) -> None:
        bn = math.floor(deadline * BUCKETS_PER_S)
        lids = self._buckets.get(bn)
        if lids is None:
            self._buckets[bn] = [lease_id]
            self._mins[bn] = deadline
            heapq.heappush(self._order, bn)
        else:
            lids.append(lease_id)
            if deadline < self._mins[bn]:
                self._mins[bn] = deadline
        self._filed += 1

    def _found(
        self,
        table: LeaseTable,
        lease_id: int,
        deadline: float,
        found: list[tuple[float, int, LeaseRecord]],
    ) -> None:
        rec = table.by_lease_id(lease_id)
        if rec is not None:
            self._expiring.add(lease_id)
            found.append((deadline, lease_id, rec))

    def _refile_all(self) -> None:
        """File every lease in ``deadlines`` afresh (in its order: deterministic)."""
        self._buckets = {}
        self._mins = {}
        self._order = []
        self._near = []
        self._filed = 0
        for lease_id, d in self.deadlines.items():
            self._file(lease_id, d)
