"""What one lease's keepalive does after each renewal answer (:class:`KeepaliveState`).

Pure apart from a log line: no I/O, no sleeping, no clock reading, no wire types. The answer
comes in as a :class:`RenewAnswer` (``raftlease.client._rpc.renew_answer`` makes one from a
``RenewResponse``; the simulator from its own replies) and a failed call as a
:class:`~raftlease.client._retry.Failure`. The loop around it (when to renew, when the lease
is lost) is ``raftlease.client._protocol.KeepaliveMachine``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from raftlease.client._retry import Attempts, Backoff, Failure, Router
from raftlease.client._values import one_line

if TYPE_CHECKING:
    import random
    from collections.abc import Callable

    from raftlease.client._validity import LeaseTimer

__all__ = [
    "RETRY_CAP_S",
    "RETRY_LIMIT",
    "RETRY_START_S",
    "KeepaliveState",
    "KeepaliveStep",
    "RenewAnswer",
    "safe_callback",
]

log = logging.getLogger("raftlease.client")

# A RETRY answer (the leader, briefly without a valid leader lease) is retried on the same
# node after 10-20 ms, doubling to at most 100-200 ms: its leader lease comes back with the
# next heartbeat round a majority acknowledges (100 ms heartbeats at the server's defaults).
RETRY_START_S = 0.020
RETRY_CAP_S = 0.200
# ... but after this many RETRY answers in a row the next one counts as a failure without a
# leader hint (the loop tries another node). A leader cut off from its majority steps down
# within an election timeout (CheckQuorum) and then answers NOT_LEADER, so this only matters
# against a node that keeps answering RETRY for longer than that.
RETRY_LIMIT = 12


@dataclass(frozen=True, slots=True)
class RenewAnswer:
    """A renewal's answer, as the keepalive sees it.

    ``outcome`` is the in-band outcome's name: ``RENEWED``, ``RETRY``, ``NOT_LEADER``,
    ``NOT_FOUND``, ``INVALID``, ``UNSPECIFIED`` (what a server from before in-band outcomes
    sends, and only on success) or anything else (an outcome this client does not know).
    ``ttl`` is the granted TTL in seconds (0: not given), ``hint`` the leader a NOT_LEADER
    answer names.
    """

    outcome: str
    ttl: float = 0.0
    message: str = ""
    hint: str = ""


@dataclass(frozen=True, slots=True)
class KeepaliveStep:
    """What a keepalive loop does after one renewal attempt.

    ``kind`` is ``"renewed"`` (validity was extended: wait until the next renewal is due),
    ``"retry"`` (nothing was renewed: sleep ``delay`` seconds, at most until the lease's lost
    time, then renew again on ``KeepaliveState.target``), ``"lost"`` (declare the lease lost
    with ``reason`` and stop) or ``"done"`` (the lease was already lost or released: stop).
    """

    kind: Literal["renewed", "retry", "lost", "done"]
    delay: float = 0.0
    reason: str = ""


class KeepaliveState:
    """The decisions of one lease's keepalive loop, shared by the sync and async clients and
    the simulator's client.

    The loop sends a renewal to :attr:`target`, reading ``t_send`` BEFORE it sends, and hands
    the answer to :meth:`on_answer`, or the call's failure to :meth:`on_failure`; each returns
    the :class:`KeepaliveStep` to take.

    - RENEWED (or UNSPECIFIED, what a server from before in-band outcomes sends on success):
      validity is extended from ``t_send`` (``LeaseTimer.on_success``), the target is the
      leader.
    - RETRY (the leader without a valid leader lease right now): nothing is extended; renew
      again on the same node soon (RETRY_START_S doubling to RETRY_CAP_S). The router keeps
      the leader, so the lease's other calls are not sent elsewhere.
    - NOT_LEADER: follow the hint at once (at most twice in a row), else try the next
      endpoint after a backoff, as for an UNAVAILABLE status.
    - NOT_FOUND (in-band or as a status): the lease is lost; only this lease.
    - INVALID (the health payload is refused) and outcomes this client does not know: logged,
      retried after a backoff.
    - Any other failure: retriable ones move on like :meth:`Attempts.failed`, others are
      logged and retried after a backoff.

    Only a RENEWED answer ever extends validity; the loop declares the lease lost at
    ``timer.lost_at()`` if none came, with :meth:`lost_reason`.
    """

    def __init__(
        self,
        what: str,
        lease_id: int,
        timer: LeaseTimer,
        router: Router,
        *,
        round_size: int = 1,
        rng: random.Random | None = None,
    ) -> None:
        self.what = what
        self.lease_id = lease_id
        self.timer = timer
        self.router = router
        self.round_size = round_size
        self.target = router.pick()
        self.streak: Attempts | None = None  # set while renewals are failing
        self.retries = 0  # RETRY answers in a row
        self._rng = rng
        self._retry_backoff = Backoff(RETRY_START_S, RETRY_CAP_S, rng)

    @property
    def failing(self) -> bool:
        """True while renewals fail: the loop renews again after the step's delay instead
        of waiting until the next renewal is due."""
        return self.streak is not None

    def lost_reason(self) -> str:
        """Why the lease is lost when ``timer.lost_at()`` came without a renewal."""
        if self.streak is not None:
            return f"no renewal succeeded ({self.streak.last_error})"
        return "keepalives stopped"

    def _failure(self, lost_at: float) -> Attempts:
        if self.streak is None:
            self.streak = Attempts(self.what, lost_at, self._rng, round_size=self.round_size)
        self.streak.note(self.target)
        return self.streak

    def _not_found(self, detail: str) -> KeepaliveStep:
        return KeepaliveStep(
            "lost",
            reason=f"the server no longer knows lease id {self.lease_id} "
            f"(expired or released): {detail}",
        )

    def on_answer(self, answer: RenewAnswer, t_send: float, lost_at: float) -> KeepaliveStep:
        """The answer to a renewal sent at ``t_send`` to :attr:`target`."""
        outcome = answer.outcome
        if outcome in ("UNSPECIFIED", "RENEWED"):
            if not self.timer.on_success(t_send, answer.ttl):
                return KeepaliveStep("done")  # already lost: final
            self.router.succeeded(self.target)
            self.streak = None
            self.retries = 0
            self._retry_backoff.reset()
            return KeepaliveStep("renewed")
        error = f"{outcome}: {one_line(answer.message)}".rstrip(": ")
        if outcome == "NOT_FOUND":
            return self._not_found(error)
        streak = self._failure(lost_at)
        if outcome == "RETRY" and self.retries < RETRY_LIMIT:
            # The leader, its leader lease lapsed for a moment: stay, and retry soon.
            self.retries += 1
            streak.last_error = error
            return KeepaliveStep("retry", self._retry_backoff.next_delay())
        self.retries = 0
        self._retry_backoff.reset()
        if outcome == "INVALID":
            log.warning("raftlease: %s: %s", self.what, error)
            streak.last_error = error
            return KeepaliveStep("retry", streak.backoff.next_delay())
        # NOT_LEADER, a RETRY beyond the limit, or an outcome this client does not know:
        # move on as after UNAVAILABLE (following the hint, if any).
        hint = answer.hint.strip() if outcome == "NOT_LEADER" else ""
        self.target, delay = streak.refused(self.router, self.target, error, hint or None)
        return KeepaliveStep("retry", delay)

    def on_failure(self, failure: Failure, lost_at: float) -> KeepaliveStep:
        """The renewal sent to :attr:`target` failed (a status, or no answer in time)."""
        if failure.not_found:
            return self._not_found(failure.error)
        streak = self._failure(lost_at)
        self.retries = 0
        self._retry_backoff.reset()
        if failure.retriable:
            self.target, delay = streak.failed(self.router, self.target, failure)
            return KeepaliveStep("retry", delay)
        # e.g. a health payload an older server refuses; keep trying, log it
        streak.last_error = failure.error
        log.warning("raftlease: %s: %s", self.what, streak.last_error)
        return KeepaliveStep("retry", streak.backoff.next_delay())


def safe_callback(callback: Callable[[], object]) -> None:
    """Run a user callback; its exceptions are logged, never propagated into a keepalive."""
    try:
        callback()
    except Exception:
        log.exception("raftlease: on_lost callback raised")
