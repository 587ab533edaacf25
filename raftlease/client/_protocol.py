"""The lease client's procedure as sans-I/O step machines, driven by the sync client
(``sync.py``, threads), the asyncio client (``aio.py``) and the simulator's client
(``raftlease.testing.clients.SimClient``, under the simulator's scheduler).

A machine never sends, sleeps, or reads a clock. Every method takes ``now``, the time on the
client's own clock (``raftlease.clock.boot_monotonic()`` in the real clients, the simulated
client's local clock in the simulator), and what came back from the network, and returns the
next :data:`Action`:

- :class:`Send` (a plain call's attempt: the driver sends its own request),
  :class:`SendAcquire`, :class:`SendRenew`: send to ``target``, give up on the attempt after
  ``timeout`` seconds (a timed-out attempt is a retriable :class:`Failure`); then feed the
  answer or the failure back;
- :class:`Sleep`: call ``poll(now)`` once the clock reads ``until`` (always later than the
  ``now`` it was returned for);
- the end of the procedure: :class:`Failed` (raise ``error``), :class:`Held`,
  :class:`Acquired`, :class:`Lost`, :class:`Stopped`.

The machines:

- :class:`CallMachine`: one logical call (Get, List, Release, a Renew, ...): attempts on the
  leader until an answer or the deadline, following leader hints, backing off
  (docs/guarantees.md: retries).
- :class:`AcquireMachine`: one ``acquire()``. One request id per logical acquire, reused on
  every retry; validity counts from the FIRST attempt's send (a retry may return the grant
  made for an earlier attempt); each attempt asks for what is left of the wait; a grant whose
  validity is more than half used up is renewed once before it is handed out, and if the
  server no longer knows it, the acquire starts over (new request id) while the wait lasts.
- :class:`KeepaliveMachine`: one held lease's keepalive. A renewal every ``ttl / 3`` counted
  from the last successful send, quick retries while renewals fail (``KeepaliveState``), and
  the loss decision: lost at ``timer.lost_at()`` without a successful renewal, or at once
  when the server no longer knows the lease (docs/safety.md, C1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, Literal, TypeAlias, TypeVar

from raftlease.client._keepalive import KeepaliveState, KeepaliveStep, RenewAnswer
from raftlease.client._retry import Attempts, Failure, Router, attempt_cap, renew_attempt_cap
from raftlease.client._validity import LeaseTimer
from raftlease.client.errors import LeaseLost

if TYPE_CHECKING:
    import random
    from collections.abc import Callable

__all__ = [
    "AcquireMachine",
    "Acquired",
    "Action",
    "CallMachine",
    "Failed",
    "Held",
    "KeepaliveMachine",
    "Lost",
    "Send",
    "SendAcquire",
    "SendRenew",
    "Sleep",
    "Stopped",
]

G = TypeVar("G")


# ---------------------------------------------------------------------------------- actions
@dataclass(frozen=True, slots=True)
class Send:
    """Send the call's request to ``target``; give up on this attempt after ``timeout``."""

    target: str
    timeout: float


@dataclass(frozen=True, slots=True)
class SendAcquire(Send):
    """Send an Acquire with ``request_id`` (the same on every retry of one acquire),
    allowing the server to queue it for ``wait_ms``."""

    request_id: str
    wait_ms: int


@dataclass(frozen=True, slots=True)
class SendRenew(Send):
    """Send a Renew of ``lease_id``."""

    lease_id: int


@dataclass(frozen=True, slots=True)
class Sleep:
    """Call ``poll(now)`` again once the clock reads ``until``."""

    until: float


@dataclass(frozen=True, slots=True)
class Failed:
    """The call is over: raise ``error`` (ClusterUnavailable, LeaseLost, a mapped status)."""

    error: Exception


@dataclass(frozen=True, slots=True)
class Held:
    """The acquire is over: the name is held by someone else (``current``: the wire's
    description of that grant, if the server sent one)."""

    current: object


@dataclass(frozen=True, slots=True)
class Acquired(Generic[G]):
    """The acquire is over: ``grant`` (the wire's grant) is ours, valid as ``timer`` says."""

    grant: G
    timer: LeaseTimer


@dataclass(frozen=True, slots=True)
class Lost:
    """The keepalive is over: the lease is lost. ``timed_out``: no renewal succeeded by
    ``timer.lost_at()`` (else the server said it no longer knows the lease)."""

    reason: str
    timed_out: bool


@dataclass(frozen=True, slots=True)
class Stopped:
    """The keepalive is over: the lease was already lost or released."""


Action: TypeAlias = Send | Sleep | Failed | Held | Acquired[G] | Lost | Stopped


# ---------------------------------------------------------------------------------- one call
class CallMachine:
    """One logical call: attempts against the leader until one is answered, or the deadline
    (``now + total``) passes (then :class:`Failed` with ``ClusterUnavailable``).

    Each attempt lasts at most ``cap`` seconds (None: what is left until the deadline). A
    retriable failure moves on as :class:`Attempts` says (a fresh leader hint at once, else
    the next endpoint after a backoff that grows once per round of endpoints), never sleeping
    past the deadline; any other failure ends the call with its exception.

    ``poll(now)`` -> :class:`Send` or :class:`Failed`; the driver sends and calls
    :meth:`answered` on an answer, or :meth:`on_failure`, which returns the next action.
    """

    def __init__(
        self,
        what: str,
        now: float,
        total: float,
        router: Router,
        *,
        round_size: int = 1,
        cap: float | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.what = what
        self.total = total
        self.deadline = now + total
        self.cap = cap
        self.router = router
        self.attempts = Attempts(what, self.deadline, rng, round_size=round_size)
        self.target = router.pick()

    def poll(self, now: float) -> Send | Failed:
        """The next attempt, or the end of the call if its time is up."""
        remaining = self.deadline - now
        if remaining <= 0:
            return Failed(self.attempts.unavailable(self.total))
        self.attempts.note(self.target)
        return Send(self.target, remaining if self.cap is None else min(self.cap, remaining))

    def answered(self) -> None:
        """The attempt on :attr:`target` was answered: that node leads."""
        self.router.succeeded(self.target)

    def on_failure(self, now: float, failure: Failure) -> Send | Sleep | Failed:
        """The attempt on :attr:`target` failed."""
        if failure.exc is not None:
            return Failed(failure.exc)
        self.target, delay = self.attempts.failed(self.router, self.target, failure)
        delay = min(delay, self.deadline - now)
        if delay > 0:
            return Sleep(now + delay)
        return self.poll(now)


# ---------------------------------------------------------------------------------- acquire
class AcquireMachine(Generic[G]):
    """One ``acquire(name, ttl, wait)``; ``G`` is the wire's grant type (what
    :class:`Acquired` hands back).

    ``poll(now)`` starts it (and resumes it after a :class:`Sleep`). Feed it:
    :meth:`on_granted` / :meth:`on_held` for an answered :class:`SendAcquire`,
    :meth:`on_renewed` for an answered :class:`SendRenew` (the confirming renewal), and
    :meth:`on_failure` for any failed attempt.

    - A round has one ``request_id`` (``new_request_id()``) and one ``t_first_send`` (the
      ``now`` of its first attempt, BEFORE it is sent). Its deadline is ``wait`` (what is left
      of it) plus ``timeout``; each attempt asks the server to queue it for what is left of
      the wait and lasts at most that plus ``attempt_cap``.
    - On a grant, validity is ``timer.on_success(t_first_send)``. If less than half the TTL is
      left (the call waited in the queue, or its answer was late), the grant is renewed once
      (a :class:`CallMachine` of ``timeout``, each attempt at most ``renew_attempt_cap(ttl)``,
      validity from the renewal's first send) before :class:`Acquired`. If the server no
      longer knows it (it expired before we learned of it), a new round starts while the
      wait lasts; after that the acquire fails with ``LeaseLost``.
    """

    def __init__(
        self,
        name: str,
        *,
        ttl_ms: int,
        wait: float,
        timeout: float,
        now: float,
        router: Router,
        max_drift: float,
        new_request_id: Callable[[], str],
        round_size: int = 1,
        attempt_cap_s: float | None = None,
        rng: random.Random | None = None,
        make_timer: Callable[[float], LeaseTimer] | None = None,
    ) -> None:
        self.name = name
        self.ttl_ms = ttl_ms
        self.timeout = timeout
        self.wait_end = now + wait
        self.router = router
        self.max_drift = max_drift
        self.round_size = round_size
        self.attempt_cap = attempt_cap(timeout) if attempt_cap_s is None else attempt_cap_s
        self.rounds = 0
        self.request_id = ""
        self.t_first_send = -math.inf
        self.stage: Literal["new", "acquire", "confirm"] = "new"
        self._new_request_id = new_request_id
        self._rng = rng
        self._make_timer = make_timer
        self._wait = 0.0  # the wait this round asked for
        self._call: CallMachine | None = None
        self._grant: G | None = None
        self._timer: LeaseTimer | None = None
        self._lease_id = 0
        self._t_renew = -math.inf

    # -- driving ----------------------------------------------------------------------------

    def poll(self, now: float) -> Action[G]:
        """Start the acquire, or go on after a :class:`Sleep`."""
        if self._call is None:
            return self._new_round(now)
        return self._shape(self._call.poll(now), now)

    def on_failure(self, now: float, failure: Failure) -> Action[G]:
        """The current attempt failed (a status, or no answer within its timeout)."""
        call = self._current()
        if self.stage == "confirm" and failure.not_found:
            if now < self.wait_end:
                return self._new_round(now)  # it expired before it was ours: queue again
            return Failed(
                LeaseLost(
                    f"lease {self.name!r} was granted after waiting in the queue but expired "
                    "before it could be renewed"
                )
            )
        return self._shape(call.on_failure(now, failure), now)

    def on_held(self, now: float, current: object = None) -> Held:
        """The Acquire was answered: not granted, ``current`` holds it."""
        self._expect("acquire").answered()
        return Held(current)

    def on_granted(self, now: float, grant: G, *, lease_id: int, ttl: float) -> Action[G]:
        """The Acquire was answered with ``grant`` (lease ``lease_id``, ``ttl`` seconds; 0 if
        the server did not say: the TTL asked for)."""
        self._expect("acquire").answered()
        timer = self._new_timer(ttl if ttl > 0 else self.ttl_ms / 1000.0)
        timer.on_success(self.t_first_send)  # from the FIRST send: see the class docstring
        self._grant = grant
        self._timer = timer
        if timer.time_left(now) >= timer.ttl / 2.0:
            return Acquired(grant, timer)
        # Waited long in the queue: renew once before handing it out.
        self.stage = "confirm"
        self._lease_id = lease_id
        self._t_renew = now  # BEFORE the renewal's first attempt: validity counts from here
        self._call = CallMachine(
            f"renew {self.name!r}",
            now,
            self.timeout,
            self.router,
            round_size=self.round_size,
            cap=renew_attempt_cap(timer.ttl),
            rng=self._rng,
        )
        return self._shape(self._call.poll(now), now)

    def on_renewed(self, now: float, ttl: float = 0.0) -> Acquired[G]:
        """The confirming Renew was answered (``ttl``: the TTL it reports, 0 if none)."""
        self._expect("confirm").answered()
        assert self._grant is not None
        assert self._timer is not None
        self._timer.on_success(self._t_renew, ttl)
        return Acquired(self._grant, self._timer)

    # -- internals --------------------------------------------------------------------------

    def _new_timer(self, ttl: float) -> LeaseTimer:
        if self._make_timer is not None:
            return self._make_timer(ttl)
        return LeaseTimer(ttl, self.max_drift)

    def _new_round(self, now: float) -> Action[G]:
        self.rounds += 1
        self.stage = "acquire"
        self.request_id = self._new_request_id()
        self.t_first_send = now  # BEFORE the first attempt: validity counts from here
        self._wait = max(0.0, self.wait_end - now)
        self._grant = None
        self._timer = None
        self._call = CallMachine(
            f"acquire {self.name!r}",
            now,
            self._wait + self.timeout,
            self.router,
            round_size=self.round_size,
            rng=self._rng,
        )
        return self._shape(self._call.poll(now), now)

    def _shape(self, action: Send | Sleep | Failed, now: float) -> Action[G]:
        """A plain call's attempt, made into this stage's request."""
        if not isinstance(action, Send):
            return action
        if self.stage == "confirm":
            return SendRenew(action.target, action.timeout, self._lease_id)
        wait_left = max(0.0, self.t_first_send + self._wait - now)
        return SendAcquire(
            action.target,
            min(action.timeout, wait_left + self.attempt_cap),
            self.request_id,
            int(wait_left * 1000),
        )

    def _current(self) -> CallMachine:
        if self._call is None:
            raise RuntimeError("AcquireMachine: nothing was sent yet")
        return self._call

    def _expect(self, stage: Literal["acquire", "confirm"]) -> CallMachine:
        if self.stage != stage:
            raise RuntimeError(f"AcquireMachine: an answer for {stage!r} in stage {self.stage!r}")
        return self._current()


# ---------------------------------------------------------------------------------- keepalive
class KeepaliveMachine:
    """One held lease's keepalive: when to renew, where, and when the lease is lost.

    ``poll(now)``:

    - :class:`Lost` (``timed_out``) once ``now >= timer.lost_at()``: no renewal succeeded in
      time (the lost signal precedes the end of validity by ``timer.lost_margin``);
    - :class:`Sleep` until ``timer.lost_at()`` after :meth:`stop_renewing`;
    - :class:`Sleep` until the next renewal is due (``timer.renew_due()``: the last successful
      send + ttl / 3) unless renewals are failing;
    - else :class:`SendRenew` to ``state.target`` with a timeout of at most
      ``renew_attempt_cap(ttl)``, never past the lost time. ``now`` is taken as the send time:
      the driver sends right away (validity counts from the send, docs/safety.md).

    Feed the answer to :meth:`on_answer` or the failure to :meth:`on_failure` (decisions:
    :class:`KeepaliveState`); each returns the next action, :class:`Lost` (not ``timed_out``:
    the server no longer knows the lease) or :class:`Stopped` (the lease was lost already:
    a late success cannot revive it).
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
        self.timer = timer
        self.lease_id = lease_id
        self.state = KeepaliveState(what, lease_id, timer, router, round_size=round_size, rng=rng)
        self.renewing = True
        self.t_send = -math.inf  # the send time of the renewal in flight

    def stop_renewing(self) -> None:
        """No more renewals (``stop_keepalive()``); the loss is still decided on time."""
        self.renewing = False

    def poll(self, now: float, ahead: float = 0.0) -> SendRenew | Sleep | Lost:
        """What now. ``ahead`` (>= 0): renew now if the next renewal falls due within that
        many seconds anyway (a keepalive hub batches renewals that fall due close together;
        renewing early is always safe: validity counts from the send). It never shortens a
        retry's backoff: while renewals fail, a poll always renews."""
        timer = self.timer
        lost_at = timer.lost_at()
        if now >= lost_at:
            return Lost(self.state.lost_reason(), timed_out=True)
        if not self.renewing:
            return Sleep(lost_at)
        if not self.state.failing:
            wake = min(timer.renew_due(), lost_at)
            if wake > now + max(0.0, ahead):
                return Sleep(wake)
        self.t_send = now  # BEFORE the request: validity counts from here
        timeout = min(renew_attempt_cap(timer.ttl), lost_at - now)
        return SendRenew(self.state.target, timeout, self.lease_id)

    def on_answer(
        self, now: float, answer: RenewAnswer, t_send: float | None = None
    ) -> SendRenew | Sleep | Lost | Stopped:
        """The renewal sent at :attr:`t_send` was answered. ``t_send``: the send time to
        count validity from instead, never later than :attr:`t_send` (a hub with two
        renewals of this lease in flight passes the OLDEST unanswered one's)."""
        sent = self.t_send if t_send is None else min(t_send, self.t_send)
        return self._follow(now, self.state.on_answer(answer, sent, self.timer.lost_at()))

    def on_failure(self, now: float, failure: Failure) -> SendRenew | Sleep | Lost | Stopped:
        """The renewal failed (a status, or no answer within its timeout)."""
        return self._follow(now, self.state.on_failure(failure, self.timer.lost_at()))

    def _follow(self, now: float, step: KeepaliveStep) -> SendRenew | Sleep | Lost | Stopped:
        if step.kind == "lost":
            return Lost(step.reason, timed_out=False)
        if step.kind == "done":
            return Stopped()
        if step.kind == "retry":
            until = min(now + step.delay, self.timer.lost_at())
            if until > now:
                return Sleep(until)
        return self.poll(now)
