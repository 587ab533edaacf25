"""What the blocking and the asyncio election share: the result type, the exceptions, the
wait planning of a campaign, the re-campaign pacing and the leader tracking of ``observe()``.

Nothing here performs I/O, sleeps or reads a clock: every method takes the current time, so
all of it is unit tested without a server (tests/client/test_election_unit.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from raftlease.client._common import Backoff
from raftlease.client.errors import LeaseLost
from raftlease.errors import ConfigError, RaftLeaseError
from raftlease.fsm.limits import MAX_WAIT_MS

if TYPE_CHECKING:
    from raftlease.client._common import LeaseInfo, WatchEvent

__all__ = [
    "MAX_WAIT_S",
    "MIN_MAX_WAIT_S",
    "CampaignPlan",
    "ElectionClosed",
    "Leader",
    "LeaderTracker",
    "LeadershipLost",
    "RequeuePacer",
]

MAX_WAIT_S = MAX_WAIT_MS / 1000.0  # the server refuses a longer single wait in the queue
MIN_MAX_WAIT_S = 0.1  # a shorter re-queue period would make a waiting campaign spin


class LeadershipLost(LeaseLost):
    """Leadership ended while code that needs it was running.

    Raised by ``lease.check()``, out of a ``leadership()`` block whose lease was lost (and
    inside it in ``interrupt="signal"`` mode), and instead of the ``CancelledError`` with
    which an asyncio ``leadership()`` block was interrupted. A subclass of
    :class:`LeaseLost`, so ``except LeaseLost`` catches it too.
    """


class ElectionClosed(RaftLeaseError):
    """The election was closed (or its client was) while a campaign was waiting."""


@dataclass(frozen=True, slots=True)
class Leader:
    """Who leads an election: the holder of its lease.

    ``identity`` is the holder string the winner campaigned with (default ``HOSTNAME:PID``);
    ``fencing_token`` strictly increases with every new term; ``metadata`` is what the winner
    passed to ``election(..., metadata=...)``.
    """

    name: str
    identity: str
    fencing_token: int
    lease_id: int
    metadata: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_info(cls, info: LeaseInfo) -> Leader:
        return cls(
            name=info.name,
            identity=info.holder,
            fencing_token=info.fencing_token,
            lease_id=info.lease_id,
            metadata=dict(info.metadata),
        )


def check_wait(wait: object) -> float | None:
    """``campaign(wait=...)``: None (forever) or a finite number of seconds >= 0."""
    if wait is None:
        return None
    if isinstance(wait, bool) or not isinstance(wait, int | float):
        raise ConfigError(f"wait must be None (forever) or seconds >= 0, got {wait!r}")
    if not math.isfinite(wait) or wait < 0:
        raise ConfigError(f"wait must be None (forever) or seconds >= 0, got {wait!r}")
    return float(wait)


def check_max_wait(max_wait: object) -> float:
    """``max_wait``: the longest single wait in the server's queue (None: the server's cap)."""
    if max_wait is None:
        return MAX_WAIT_S
    if (
        isinstance(max_wait, bool)
        or not isinstance(max_wait, int | float)
        or not MIN_MAX_WAIT_S <= max_wait <= MAX_WAIT_S
    ):
        raise ConfigError(
            f"max_wait must be between {MIN_MAX_WAIT_S}s and {MAX_WAIT_S:.0f}s "
            f"(the server's cap on one wait), got {max_wait!r}"
        )
    return float(max_wait)


class CampaignPlan:
    """How one ``campaign(wait)`` spends its time in the server's FIFO queue.

    The server refuses a single wait longer than ``MAX_WAIT_S`` (1 h), so a campaign waits in
    chunks of at most ``max_wait`` seconds and queues again when a chunk ends without the
    lease. ``wait=None`` never gives up. Every loop either waits in the queue (the server
    holds the call) or sleeps a growing backoff, so a campaign never spins:

    - ``next_wait(now)``: seconds to ask the server to wait for the next attempt, or None when
      the deadline has passed (there is always a first attempt, with 0 if ``wait=0``);
    - ``after_held(asked, took)``: the pause before queueing again after the server answered
      "held" (0 after a normal chunk end; a backoff if it answered much sooner than asked);
    - ``after_unavailable()``: the pause after the cluster did not answer (100 ms doubling to
      2 s); the caller gives up only if ``next_wait`` says so.
    """

    def __init__(self, wait: float | None, now: float, max_wait: float = MAX_WAIT_S) -> None:
        self.deadline = None if wait is None else now + wait
        self.max_wait = max_wait
        self.attempts = 0
        self._early = Backoff(start=0.05, cap=1.0)
        self._down = Backoff(start=0.1, cap=2.0)

    def next_wait(self, now: float) -> float | None:
        if self.deadline is None:
            chunk = self.max_wait
        else:
            left = self.deadline - now
            if left <= 0 and self.attempts > 0:
                return None
            chunk = min(self.max_wait, max(0.0, left))
        self.attempts += 1
        return chunk

    def after_held(self, asked: float, took: float) -> float:
        self._down.reset()
        if asked > 0 and took < asked / 2.0:
            return self._early.next_delay()
        self._early.reset()
        return 0.0

    def after_unavailable(self) -> float:
        return self._down.next_delay()


class RequeuePacer:
    """The pause before campaigning again after a term ended (``requeue=True``).

    A term that lasted at least ``min_term`` seconds is followed by no pause (queue again at
    once, like Curator's autoRequeue). A shorter one (a callback that returns or fails at
    once) doubles a pause from ``start`` up to ``cap``, so a broken callback cannot make a
    tight acquire/release loop against the cluster.
    """

    def __init__(self, min_term: float = 1.0, start: float = 0.1, cap: float = 5.0) -> None:
        self.min_term = min_term
        self.start = start
        self.cap = cap
        self._next = start

    def after_term(self, duration: float) -> float:
        if duration >= self.min_term:
            self._next = self.start
            return 0.0
        delay = self._next
        self._next = min(self.cap, self._next * 2.0)
        return delay


class LeaderTracker:
    """Turns the watch events of one lease name into leader changes.

    ``feed(event)`` returns the changes to deliver (zero or one): the new :class:`Leader`, or
    None when the lease became free. The server starts a watch with a ``current`` event only
    if the lease is held (the leader when observing started); a free lease sends nothing
    until it changes. A lease that passes directly to a waiter arrives as
    ``released`` (or ``expired``) then ``acquired`` with the same log index: that gives two
    changes, None then the new leader. A ``current`` event re-sent after a watch reconnected
    gives a change only if the leader differs from the last one delivered.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.current: Leader | None = None
        self.started = False

    def _deliver(self, leader: Leader | None) -> list[Leader | None]:
        self.current = leader
        self.started = True
        return [leader]

    def _same(self, leader: Leader | None) -> bool:
        cur = self.current
        if cur is None or leader is None:
            return cur is leader
        return cur.lease_id == leader.lease_id

    def feed(self, event: WatchEvent) -> list[Leader | None]:
        if event.name and event.name != self.name:
            return []
        lease = event.lease
        if event.kind == "current":
            leader = None if lease is None else Leader.from_info(lease)
            if self.started and self._same(leader):
                return []
            return self._deliver(leader)
        if lease is None:
            return []
        if event.kind == "acquired":
            leader = Leader.from_info(lease)
            if self.started and self._same(leader):
                return []
            return self._deliver(leader)
        if event.kind in ("released", "expired"):
            cur = self.current
            if cur is not None and cur.lease_id == lease.lease_id:
                return self._deliver(None)
            return []
        return []
