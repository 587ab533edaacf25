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
# Ended leases the deadline heap may keep beyond twice the live ones before it is rebuilt.
HEAP_SLACK = 64


class LeaseKeeper:
    __slots__ = ("_expiring", "_heap", "deadlines", "health")

    def __init__(self) -> None:
        self.deadlines: dict[int, float] = {}  # lease_id -> local-clock deadline
        # (filed deadline, lease_id), one per lease; a renewal only moves ``deadlines``, so a
        # filed deadline may be early, never late: ``due`` re-files it when it surfaces.
        self._heap: list[tuple[float, int]] = []
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
            if len(self._heap) > 2 * len(self.deadlines) + HEAP_SLACK:
                # Entries of ended leases leave the heap only when ``due`` pops them, and a
                # follower never calls ``due``: rebuild, so the heap stays within twice the
                # live leases (amortized O(1) per event).
                self._heap = [(d, lid) for lid, d in self.deadlines.items()]
                heapq.heapify(self._heap)

    def restart_all(self, table: LeaseTable, now: float) -> None:
        """Treat every lease as renewed ``now`` (a new leader taking office, or a snapshot)."""
        self.deadlines = {r.lease_id: now + r.ttl_ms / 1000.0 for r in table.leases()}
        self._heap = [(d, lid) for lid, d in self.deadlines.items()]
        heapq.heapify(self._heap)
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
        # Only the dict moves: the heap keeps one (possibly older) entry per lease, and
        # ``due`` re-files it at the current deadline when it surfaces. One heap entry per
        # lease however often it is renewed (memory: issue 5, W6).
        self.deadlines[lease_id] = now + rec.ttl_ms / 1000.0
        if health is not None:
            self.health[lease_id] = health
        return rec

    def due(self, table: LeaseTable, now: float) -> list[LeaseRecord]:
        """Leases whose deadline has passed and whose expiry is not yet proposed.

        Marks them as expiring; call ``unmark`` if the proposal fails. O(k log n) for k due.
        """
        heap = self._heap
        out: list[LeaseRecord] = []
        while heap and heap[0][0] <= now:
            filed, lease_id = heapq.heappop(heap)
            deadline = self.deadlines.get(lease_id)
            if deadline is None or lease_id in self._expiring:
                continue  # ended, or already expiring
            if deadline > filed:
                heapq.heappush(heap, (deadline, lease_id))  # renewed since: re-file
                continue
            rec = table.by_lease_id(lease_id)
            if rec is None:
                continue
            self._expiring.add(lease_id)
            out.append(rec)
        return out

    def unmark(self, lease_id: int) -> None:
        """An expiry proposal failed: let ``due`` offer this lease again."""
        self._expiring.discard(lease_id)
        d = self.deadlines.get(lease_id)
        if d is not None:
            heapq.heappush(self._heap, (d, lease_id))

    def remaining(self, lease_id: int, now: float) -> float:
        d = self.deadlines.get(lease_id)
        return max(0.0, d - now) if d is not None else 0.0

    def next_deadline(self) -> float:
        return self._heap[0][0] if self._heap else math.inf

    def _set(self, lease_id: int, deadline: float) -> None:
        self.deadlines[lease_id] = deadline
        heapq.heappush(self._heap, (deadline, lease_id))
