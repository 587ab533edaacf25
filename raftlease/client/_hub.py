"""All of one client's keepalives on one KeepAlive stream per connection: :class:`KeepaliveHub`.

Pure, like ``_protocol.py``: no I/O, no clock, no thread. Every method takes ``now`` (the
client's ``raftlease.clock.boot_monotonic()``); the drivers (``_hub_sync.py``: one thread,
``_hub_aio.py``: one task) carry out what :meth:`KeepaliveHub.poll` returns and feed back
what the network brought.

The hub owns every held lease's :class:`~raftlease.client._protocol.KeepaliveMachine`, and
the machines decide everything about one lease exactly as they do on their own: when a
renewal is due, where to send it (the leader, a hint, the next endpoint), how long to back
off, when the lease is lost. The hub only adds the transport:

- **One stream per target.** Renewals to one node are written on one ``KeepAlive`` stream
  (opened on first use, a new one after the old one broke). A node that answers the stream
  with UNIMPLEMENTED (a server without it) gets one unary ``Renew`` per renewal from then on
  (:meth:`KeepaliveHub.on_unsupported`); the renewals in flight on that stream are re-sent as
  Renews with their original send times.
- **Batches.** A poll that sends any renewal also sends every renewal that would fall due
  within :func:`batch_ahead` (``min(0.25 s, ttl / 30)``) anyway; all of one poll's renewals to
  one target are one :class:`StreamWrite`. Renewing early is always safe (validity counts from
  the send), and leases renewed together stay together, so after a few rounds a client's
  leases renew in a few bursts per ``ttl / 3``. A retry's backoff is never shortened.
- **Answers by lease id.** A stream's answers name their lease. Each renewal written is
  recorded as (call, send time) for its lease until answered; an answer extends validity from
  the OLDEST unanswered send time of that lease (with two renewals of one lease in flight the
  hub cannot know which one was answered, so it assumes the earlier: never later than the
  truth). The server answers a stream's requests in order, so in practice a lease has at most
  one renewal in flight.
- **Failures.** A stream that ends (a status, a broken connection, a clean end) fails every
  renewal in flight on it: each lease's machine gets the failure and decides (retry, follow
  the hint, move on, declare the loss). A stream that answers nothing for the attempt timeout
  of its renewals (``SendRenew.timeout``: ``renew_attempt_cap(ttl)``, counted from its last
  answer or, when it was idle, from the write) is closed and failed the same way with
  DEADLINE_EXCEEDED: a renewal queued behind others on a stream that is answering is not a
  hung attempt. A renewal still unanswered at its lease's lost time is failed at that time, so
  the loss is declared on time whatever the stream does.
- **Idle streams** (nothing in flight, nothing written for 1.5 renewal intervals plus a
  second: the leases moved to another node) are closed.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from raftlease.client._protocol import KeepaliveMachine, Lost, SendRenew, Sleep, Stopped
from raftlease.client._retry import Failure

if TYPE_CHECKING:
    from raftlease.client._keepalive import RenewAnswer

__all__ = [
    "BATCH_CAP_S",
    "HubStats",
    "HubStep",
    "KeepaliveHub",
    "LeaseEnded",
    "StreamWrite",
    "UnaryRenew",
    "batch_ahead",
]

# How early a renewal may be sent to join a batch: a tenth of the renewal interval (ttl / 3),
# at most BATCH_CAP_S.
BATCH_CAP_S = 0.25
BATCH_FRACTION = 0.1
# A stream with nothing in flight is closed after this many renewal intervals without a write
# (plus IDLE_GRACE_S): no lease renews there any more.
IDLE_INTERVALS = 1.5
IDLE_GRACE_S = 1.0


def batch_ahead(ttl: float) -> float:
    """How many seconds early a lease of ``ttl`` may be renewed to join a batch."""
    return min(BATCH_CAP_S, BATCH_FRACTION * ttl / 3.0)


# ---------------------------------------------------------------------------------- effects
@dataclass(frozen=True, slots=True)
class StreamWrite:
    """Write the renewals of ``lease_ids`` (in that order) on the KeepAlive stream ``call``
    to ``target``; open that stream first when ``opens``. ``batched``: as few messages as the
    bounds allow, many leases per message (``items``); else one ``KeepAliveRequest`` per
    lease (a server that ignores ``items``)."""

    call: int
    target: str
    lease_ids: tuple[int, ...]
    opens: bool
    batched: bool = True


@dataclass(frozen=True, slots=True)
class UnaryRenew:
    """Send one ``Renew`` of ``lease_id`` to ``target`` as call ``call``, giving up after
    ``timeout`` (the fallback for a node without the KeepAlive stream)."""

    call: int
    target: str
    lease_id: int
    timeout: float


@dataclass(frozen=True, slots=True)
class LeaseEnded:
    """The keepalive of ``lease_id`` is over: ``lost`` says why the lease is lost (declare it),
    None if it was lost or released already (nothing to do). The hub has forgotten it."""

    lease_id: int
    lost: Lost | None


@dataclass(slots=True)
class HubStep:
    """What the driver does now, in this order: declare the ``ended`` leases lost, cancel the
    ``closes`` calls, carry out ``writes`` and ``unary``; then wait for the network (feed it
    back) or for ``wake`` (None: nothing is timed; wait for an event), and poll again."""

    ended: list[LeaseEnded] = field(default_factory=list)
    closes: list[int] = field(default_factory=list)
    writes: list[StreamWrite] = field(default_factory=list)
    unary: list[UnaryRenew] = field(default_factory=list)
    wake: float | None = None


@dataclass(slots=True)
class HubStats:
    """Counters (for the benchmark and for tests)."""

    renewals_sent: int = 0
    answers: int = 0
    renewed: int = 0
    writes: int = 0  # StreamWrite bursts
    messages: int = 0  # KeepAliveRequest messages written (counted by the driver)
    unbatched: int = 0  # batches a server answered as a plain request (it ignores items)
    streams_opened: int = 0
    streams_failed: int = 0
    unary_sent: int = 0
    lost: int = 0


# ---------------------------------------------------------------------------------- state
class _Entry:
    """One lease in the hub."""

    __slots__ = ("awaiting", "deadline", "early", "lease_id", "machine", "pending", "seq", "wake")

    def __init__(self, lease_id: int, machine: KeepaliveMachine) -> None:
        self.lease_id = lease_id
        self.machine = machine
        self.wake = math.inf  # when to poll the machine (its Sleep), inf while awaiting
        self.early = False  # that Sleep is a renewal interval: may be cut short for a batch
        self.seq = 0  # the timer heap's entry for ``wake``
        self.awaiting = False  # a SendRenew was carried out; its answer or failure is due
        self.deadline = math.inf  # the lost time, while awaiting
        self.pending: list[tuple[int, float, float]] = []  # (call, t_send, timeout) unanswered


class _Call:
    """One KeepAlive stream (or one unary Renew) to ``target``."""

    __slots__ = (
        "batched",
        "id",
        "idle_after",
        "in_flight",
        "last_write",
        "pending",
        "progress_at",
        "stall_after",
        "target",
        "unary",
    )

    def __init__(self, call_id: int, target: str, *, unary: bool) -> None:
        self.id = call_id
        self.target = target
        self.unary = unary
        self.batched = not unary  # many leases per message, until the server ignores items
        self.pending: dict[int, int] = {}  # lease id -> renewals in flight on this call
        self.in_flight = 0
        self.progress_at = -math.inf  # the last answer, or the write that ended an idle spell
        self.stall_after = math.inf  # no answer for this long while in flight: stalled
        self.last_write = -math.inf
        self.idle_after = IDLE_GRACE_S

    def stall_at(self) -> float:
        return self.progress_at + self.stall_after if self.in_flight else math.inf

    def idle_at(self) -> float:
        if self.unary or self.in_flight:
            return math.inf
        return self.last_write + self.idle_after


# ---------------------------------------------------------------------------------- the hub
class KeepaliveHub:
    """Every held lease of one client, renewed over one stream per target (see the module
    docstring). Single-threaded: one driver thread or task calls it.

    - :meth:`add` a lease's machine when the lease is handed out, :meth:`remove` it when it is
      released (its answers in flight are then ignored), :meth:`nudge` it when it should be
      polled at once (``stop_keepalive()``).
    - :meth:`poll` returns the :class:`HubStep` to carry out.
    - Feed back :meth:`on_answer` for each stream answer or unary Renew answer,
      :meth:`on_call_failed` when a stream ends (however: status, broken connection, clean
      end) or a unary Renew fails, :meth:`on_unsupported` when a stream is answered
      UNIMPLEMENTED, :meth:`on_unbatched` when a batch was answered as a plain request.
      Events for a call the hub closed or forgot are ignored.
    """

    def __init__(self) -> None:
        self.stats = HubStats()
        self._leases: dict[int, _Entry] = {}
        self._calls: dict[int, _Call] = {}
        self._streams: dict[str, int] = {}  # target -> its open stream's call id
        self._unary_targets: set[str] = set()
        self._next_call = 1
        self._next_seq = 1
        self._timers: list[tuple[float, int, int]] = []  # (wake, seq, lease id); lazy deletion
        self._deadlines: list[tuple[float, int]] = []  # (lost time, lease id); lazy deletion
        self._outbox: list[tuple[_Entry, SendRenew, float]] = []  # (entry, send, t_send)
        self._step = HubStep()

    # -- leases -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._leases)

    def __contains__(self, lease_id: object) -> bool:
        return lease_id in self._leases

    def add(self, now: float, lease_id: int, machine: KeepaliveMachine) -> None:
        """Keep ``lease_id`` alive from now on, as ``machine`` decides."""
        if lease_id in self._leases:
            raise ValueError(f"lease id {lease_id} is in the keepalive hub already")
        entry = _Entry(lease_id, machine)
        self._leases[lease_id] = entry
        self._apply(entry, machine.poll(now), now)

    def remove(self, lease_id: int) -> None:
        """Forget ``lease_id`` (released): no more renewals; answers in flight are ignored."""
        entry = self._leases.pop(lease_id, None)
        if entry is not None:
            self._drop_pending(entry)

    def nudge(self, now: float, lease_id: int) -> None:
        """Poll the machine of ``lease_id`` at the next :meth:`poll` (unless a renewal is in
        flight): after ``stop_renewing()`` its next step is the wait for the lost time."""
        entry = self._leases.get(lease_id)
        if entry is not None and not entry.awaiting:
            self._sleep(entry, now, early=False)

    def targets(self) -> dict[str, int]:
        """The open streams: target -> call id."""
        return dict(self._streams)

    def calls(self) -> list[int]:
        """Every call the hub considers open (the driver cancels them when it stops)."""
        return list(self._calls)

    def unary_targets(self) -> frozenset[str]:
        """Targets that answered the stream UNIMPLEMENTED: renewed with unary Renews."""
        return frozenset(self._unary_targets)

    def in_flight(self, lease_id: int) -> list[tuple[int, float]]:
        """The unanswered renewals of ``lease_id``: (call, send time)."""
        entry = self._leases.get(lease_id)
        return [] if entry is None else [(c, t) for c, t, _ in entry.pending]

    # -- driving ----------------------------------------------------------------------------

    def poll(self, now: float) -> HubStep:
        """Everything due at ``now``: lost times, stalled calls, renewals (with the ones that
        join their batch), idle streams; and when to poll next."""
        self._expire_deadlines(now)
        self._expire_calls(now)
        self._run_timers(now)
        self._flush(now)
        self._close_idle(now)
        step, self._step = self._step, HubStep()
        step.wake = self._next_wake()
        return step

    def on_answer(self, now: float, call_id: int, lease_id: int, answer: RenewAnswer) -> None:
        """An answer on ``call_id`` for ``lease_id``."""
        call = self._calls.get(call_id)
        if call is None or not call.pending.get(lease_id):
            return  # a call we closed, or an answer to nothing we sent there
        self._unpend(call, lease_id)
        call.progress_at = now
        if call.unary:
            self._forget_call(call)
        entry = self._leases.get(lease_id)
        if entry is None:
            return
        # This call's oldest renewal of the lease; validity from the OLDEST of all of them.
        mine = min((p for p in entry.pending if p[0] == call_id), key=lambda p: p[1])
        t_oldest = min(p[1] for p in entry.pending)
        entry.pending.remove(mine)
        self.stats.answers += 1
        if answer.outcome in ("RENEWED", "UNSPECIFIED"):
            self.stats.renewed += 1
        if not entry.awaiting:
            return
        self._settle(entry)
        self._apply(entry, entry.machine.on_answer(now, answer, t_send=t_oldest), now)

    def on_call_failed(self, now: float, call_id: int, failure: Failure) -> None:
        """``call_id`` ended without answering what is in flight on it (a stream's status
        or end, a unary Renew's error): every lease waiting on it gets ``failure``."""
        call = self._calls.get(call_id)
        if call is None:
            return
        if not call.unary:
            self.stats.streams_failed += 1
        self._fail_call(call, now, failure)

    def on_unbatched(self, now: float, call_id: int, lease_ids: tuple[int, ...]) -> None:
        """A batch on the stream ``call_id`` was answered as a plain request (its first lease
        only): the server ignores ``items``. The other leases of that batch (``lease_ids``)
        are written again on the same stream, one per message, at the next poll; they stay
        in flight with their ORIGINAL send times (validity counts from then: earlier than
        the renewal can happen, so never later than the truth). The stream is written
        unbatched from now on."""
        call = self._calls.get(call_id)
        if call is None or call.unary:
            return
        call.batched = False
        call.progress_at = now  # it answered
        self.stats.unbatched += 1
        again = []
        for lease_id in lease_ids:
            entry = self._leases.get(lease_id)
            if entry is None or not entry.awaiting or not call.pending.get(lease_id):
                continue
            again.append(lease_id)
        if again:
            self._step.writes.append(
                StreamWrite(call.id, call.target, tuple(again), opens=False, batched=False)
            )
            self.stats.writes += 1
            self.stats.renewals_sent += len(again)

    def on_unsupported(self, now: float, call_id: int) -> None:
        """The stream ``call_id`` was answered UNIMPLEMENTED: its target gets unary Renews
        from now on, starting with the renewals that were in flight on the stream (with their
        original send times: validity still counts from then)."""
        call = self._calls.get(call_id)
        if call is None:
            return
        self._unary_targets.add(call.target)
        self._forget_call(call)
        for lease_id in list(call.pending):
            entry = self._leases.get(lease_id)
            if entry is None:
                continue
            moved = [p for p in entry.pending if p[0] == call_id]
            entry.pending = [p for p in entry.pending if p[0] != call_id]
            for _, t_send, timeout in moved:
                self._send_unary(entry, call.target, t_send, timeout, now)

    # -- internals: the machines ------------------------------------------------------------

    def _apply(self, entry: _Entry, action: SendRenew | Sleep | Lost | Stopped, now: float) -> None:
        machine = entry.machine
        if isinstance(action, Sleep):
            early = machine.renewing and not machine.state.failing
            self._sleep(entry, action.until, early=early)
        elif isinstance(action, SendRenew):
            entry.wake = math.inf
            entry.awaiting = True
            self._outbox.append((entry, action, machine.t_send))
        else:
            self._leases.pop(entry.lease_id, None)
            self._drop_pending(entry)
            entry.awaiting = False
            lost = action if isinstance(action, Lost) else None
            if lost is not None:
                self.stats.lost += 1
            self._step.ended.append(LeaseEnded(entry.lease_id, lost))

    def _sleep(self, entry: _Entry, until: float, *, early: bool) -> None:
        entry.wake = until
        entry.early = early
        entry.seq = self._next_seq
        self._next_seq += 1
        heapq.heappush(self._timers, (until, entry.seq, entry.lease_id))

    def _settle(self, entry: _Entry) -> None:
        """The renewal the machine waited for is answered or failed."""
        entry.awaiting = False
        entry.deadline = math.inf

    def _fail_entry(self, entry: _Entry, now: float, failure: Failure) -> None:
        self._settle(entry)
        self._apply(entry, entry.machine.on_failure(now, failure), now)

    def _run_timers(self, now: float) -> None:
        """Poll every machine whose Sleep is over; if anything goes out now, also every
        machine whose renewal falls due within its batch window."""
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, seq, lease_id = heapq.heappop(timers)
            entry = self._leases.get(lease_id)
            if entry is None or entry.seq != seq or entry.awaiting:
                continue  # stale
            entry.wake = math.inf
            self._apply(entry, entry.machine.poll(now), now)
        if not self._outbox:
            return
        later: list[tuple[float, int, int]] = []
        while timers and timers[0][0] <= now + BATCH_CAP_S:
            item = heapq.heappop(timers)
            wake, seq, lease_id = item
            entry = self._leases.get(lease_id)
            if entry is None or entry.seq != seq or entry.awaiting:
                continue
            ahead = batch_ahead(entry.machine.timer.ttl)
            if not entry.early or wake > now + ahead:
                later.append(item)  # a retry's backoff is never cut short
                continue
            entry.wake = math.inf
            self._apply(entry, entry.machine.poll(now, ahead=ahead), now)
        for item in later:
            heapq.heappush(timers, item)

    def _expire_deadlines(self, now: float) -> None:
        """A renewal unanswered at its lease's lost time fails then: the machine declares
        the loss on time, whatever the stream does."""
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            deadline, lease_id = heapq.heappop(deadlines)
            entry = self._leases.get(lease_id)
            if entry is None or not entry.awaiting or entry.deadline != deadline:
                continue
            self._drop_pending(entry)
            self._fail_entry(
                entry, now, Failure("DEADLINE_EXCEEDED: no answer before the lease's lost time")
            )

    def _expire_calls(self, now: float) -> None:
        for call in list(self._calls.values()):
            if now < call.stall_at():
                continue
            if call.unary:
                error = f"DEADLINE_EXCEEDED: no answer from {call.target} within " + (
                    f"{call.stall_after:.3f}s"
                )
            else:
                error = (
                    f"DEADLINE_EXCEEDED: the KeepAlive stream to {call.target} answered "
                    f"nothing for {call.stall_after:.3f}s"
                )
            self._step.closes.append(call.id)
            self._fail_call(call, now, Failure(error))

    def _close_idle(self, now: float) -> None:
        for call in list(self._calls.values()):
            if now >= call.idle_at():
                self._step.closes.append(call.id)
                self._forget_call(call)

    def _next_wake(self) -> float | None:
        timers = self._timers
        while timers:
            _, seq, lease_id = timers[0]
            entry = self._leases.get(lease_id)
            if entry is not None and entry.seq == seq and not entry.awaiting:
                break
            heapq.heappop(timers)
        deadlines = self._deadlines
        while deadlines:
            deadline, lease_id = deadlines[0]
            entry = self._leases.get(lease_id)
            if entry is not None and entry.awaiting and entry.deadline == deadline:
                break
            heapq.heappop(deadlines)
        wake = min(
            timers[0][0] if timers else math.inf,
            deadlines[0][0] if deadlines else math.inf,
            min((min(c.stall_at(), c.idle_at()) for c in self._calls.values()), default=math.inf),
        )
        return None if wake == math.inf else wake

    # -- internals: calls -------------------------------------------------------------------

    def _flush(self, now: float) -> None:
        """Write the renewals the machines asked for: one burst per target."""
        if not self._outbox:
            return
        outbox, self._outbox = self._outbox, []
        batches: dict[int, list[int]] = {}
        opened: set[int] = set()
        for entry, send, t_send in outbox:
            if self._leases.get(entry.lease_id) is not entry or not entry.awaiting:
                continue  # ended meanwhile
            entry.deadline = entry.machine.timer.lost_at()
            heapq.heappush(self._deadlines, (entry.deadline, entry.lease_id))
            if send.target in self._unary_targets:
                self._send_unary(entry, send.target, t_send, send.timeout, now)
                continue
            call = self._stream(send.target, opened)
            self._pend(call, entry, t_send, send.timeout, now)
            batches.setdefault(call.id, []).append(entry.lease_id)
        for call_id, lease_ids in batches.items():
            call = self._calls[call_id]
            self._step.writes.append(
                StreamWrite(call_id, call.target, tuple(lease_ids), call_id in opened, call.batched)
            )
            self.stats.writes += 1
            self.stats.renewals_sent += len(lease_ids)

    def _stream(self, target: str, opened: set[int]) -> _Call:
        call_id = self._streams.get(target)
        if call_id is not None:
            return self._calls[call_id]
        call = _Call(self._new_call_id(), target, unary=False)
        self._calls[call.id] = call
        self._streams[target] = call.id
        opened.add(call.id)
        self.stats.streams_opened += 1
        return call

    def _send_unary(
        self, entry: _Entry, target: str, t_send: float, timeout: float, now: float
    ) -> None:
        call = _Call(self._new_call_id(), target, unary=True)
        self._calls[call.id] = call
        self._pend(call, entry, t_send, timeout, now)
        self._step.unary.append(UnaryRenew(call.id, target, entry.lease_id, timeout))
        self.stats.unary_sent += 1
        self.stats.renewals_sent += 1

    def _pend(self, call: _Call, entry: _Entry, t_send: float, timeout: float, now: float) -> None:
        if not call.in_flight:
            call.progress_at = now  # the stall clock starts with the first write after idling
            call.stall_after = timeout
        else:
            call.stall_after = min(call.stall_after, timeout)
        call.pending[entry.lease_id] = call.pending.get(entry.lease_id, 0) + 1
        call.in_flight += 1
        call.last_write = now
        interval = entry.machine.timer.ttl / 3.0
        call.idle_after = max(call.idle_after, IDLE_INTERVALS * interval + IDLE_GRACE_S)
        entry.pending.append((call.id, t_send, timeout))

    def _unpend(self, call: _Call, lease_id: int) -> None:
        n = call.pending.get(lease_id, 0)
        if n <= 0:
            return
        call.in_flight -= 1
        if n == 1:
            del call.pending[lease_id]
        else:
            call.pending[lease_id] = n - 1

    def _drop_pending(self, entry: _Entry) -> None:
        """The entry's renewals in flight will never count (released, lost, failed)."""
        for call_id, _, _ in entry.pending:
            call = self._calls.get(call_id)
            if call is None:
                continue
            self._unpend(call, entry.lease_id)
            if call.unary and not call.in_flight:
                self._forget_call(call)
        entry.pending = []

    def _fail_call(self, call: _Call, now: float, failure: Failure) -> None:
        self._forget_call(call)
        for lease_id in list(call.pending):
            entry = self._leases.get(lease_id)
            if entry is None:
                continue
            entry.pending = [p for p in entry.pending if p[0] != call.id]
            if entry.awaiting and not entry.pending:
                self._fail_entry(entry, now, failure)

    def _forget_call(self, call: _Call) -> None:
        self._calls.pop(call.id, None)
        if self._streams.get(call.target) == call.id:
            del self._streams[call.target]

    def _new_call_id(self) -> int:
        call_id = self._next_call
        self._next_call += 1
        return call_id
