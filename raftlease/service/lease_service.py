"""LeaseService: every lease rule of a node, written once, with no I/O and no clock.

The Raft core (raftlease/core) decides what is committed; this object decides what a node
does with it as a lease server. It is synchronous and deterministic: a driver hands it the
time (``now``, seconds on the node's monotonic clock) with every call, and collects what it
must hand back to clients from :meth:`LeaseService.take_replies`. Two drivers run it:

* ``raftlease/node.py`` (asyncio, real time; the gRPC servicers in server.py only translate
  protobuf and await a call's outcome), and
* ``raftlease/testing/sim/`` (the seeded simulator, virtual time),

so the simulator's sweep drives the very rules that ship. What lives here:

* the **leader lease check** (:meth:`lease_ok`): this node is the leader, has applied the
  no-op of its term, and ``now`` is before the leader lease deadline the core's tick
  arithmetic gives (docs/safety.md, L1-L2);
* **renewals** (no log write, leader lease required) and **read barriers** (leader lease,
  and everything committed applied);
* the **acquire procedure** of a call: propose, then (queued, waiting) wait for the handover
  or the wait's end, then leave the queue with ``CancelWait`` and answer from the table; a
  retry of a still-queued acquire leaves the queue at once; a client that goes away leaves
  the queue (no "ghost" handover);
* **expiry**: a leader that committed in its term proposes ``Expire`` once a lease's deadline
  passes on its clock;
* **taking office**: a new leader restarts every lease's deadline (S2) and, a grace period
  later, cancels inherited waits that no client re-attached to; an expiry it proposes within
  that grace first cancels those of the expiring name;
* **losing office**: every call waiting on this node fails "not the leader" (the outcome of
  its write is unknown; the client retries with the same request id).

Only the core's proposals go out from here (``core.propose``); a driver must call every
method that proposes from the one task that owns the core (node.py: its loop).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from raftlease.core.membership import Membership, MembershipError
from raftlease.core.messages import EntryKind
from raftlease.core.ready import SoftState
from raftlease.errors import NoLeaderLease, NotLeader, ProposalDropped
from raftlease.fsm.commands import Acquire, CancelWait, Command, Expire, Release, encode_command
from raftlease.fsm.keeper import INHERITED_WAIT_GRACE_S, LeaseKeeper
from raftlease.fsm.leases import (
    ApplyResult,
    Granted,
    Held,
    LeaseEvent,
    LeaseRecord,
    LeaseTable,
    Queued,
    Rejected,
)
from raftlease.types import NodeId, Role

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from raftlease.core.messages import Entry
    from raftlease.core.raft import RaftCore

log = logging.getLogger("raftlease.service")

__all__ = [
    "Acquired",
    "Call",
    "CallKind",
    "Internal",
    "LeaseService",
    "NotAcquired",
    "Outcome",
    "ReadReady",
    "Renewal",
]


class CallKind(Enum):
    ACQUIRE = "acquire"
    RELEASE = "release"
    READ = "read"  # a read barrier (Get, List, CheckToken, Watch)
    PROPOSE = "propose"  # any other command; its outcome is the table's ApplyResult
    RECONFIGURE = "reconfigure"  # a membership change; its outcome is Reconfigured


class _Stage(Enum):
    PROPOSED = 0  # awaits its proposal's result
    WAITING = 1  # queued: awaits the handover or the end of its wait
    LEAVING = 2  # must leave the queue: CancelWait is proposed at the next ``tick``
    CANCELLING = 3  # its CancelWait is proposed: awaits it
    DONE = 4


@dataclass(frozen=True, slots=True)
class Acquired:
    """The acquire is granted: ``lease`` is the caller's (now, or handed over)."""

    lease: LeaseRecord


@dataclass(frozen=True, slots=True)
class NotAcquired:
    """Not granted; ``current`` is the holder (None: free by the time the call gave up)."""

    current: LeaseRecord | None


@dataclass(frozen=True, slots=True)
class ReadReady:
    """A read barrier passed: the table may be read now."""


@dataclass(frozen=True, slots=True)
class Reconfigured:
    """A membership change committed (and applied here) at ``index``."""

    index: int
    membership: Membership


@dataclass(frozen=True, slots=True)
class Internal:
    """A result no rule expects (a bug): the call ends with an internal error."""

    message: str


# What a call ends with: an outcome, an ApplyResult (PROPOSE, RELEASE), or an exception
# (NotLeader, NoLeaderLease, ProposalDropped: retry; Rejected results stay results).
Outcome = Acquired | NotAcquired | ReadReady | Reconfigured | Internal | ApplyResult | Exception


@dataclass(slots=True, eq=False)
class Call:
    """One client call in progress on this node. ``token`` is the driver's handle (a future,
    a simulated request); the service never looks inside it."""

    kind: CallKind
    token: Any
    cmd: Command | None = None
    membership: Membership | None = None  # RECONFIGURE: the configuration proposed
    wait_s: float = 0.0
    stage: _Stage = _Stage.PROPOSED
    granted: LeaseRecord | None = None  # handed over before its own entry applied
    wait_until: float = math.inf
    read_index: int = 0

    @property
    def done(self) -> bool:
        return self.stage is _Stage.DONE

    @property
    def waits(self) -> bool:
        """A waiting acquire (wait_ms > 0)?"""
        return isinstance(self.cmd, Acquire) and self.cmd.wait


@dataclass(slots=True)
class Renewal:
    """A renewal that was served: the record, and how much of its TTL was left before it."""

    lease: LeaseRecord
    margin_s: float


class LeaseService:
    """The lease server of one node (see the module docstring).

    ``core``: the node's Raft core (proposals, its tick arithmetic for the leader lease).
    ``tick_time(k)``: the time on this node's clock at which the core's tick ``k`` is due
    (node.py: ``t0 + k * tick_s``). ``addresses``: node id -> the address clients reach it on
    (leader hints). ``table``: the lease table restored from a snapshot, if any.
    """

    def __init__(
        self,
        node_id: NodeId,
        core: RaftCore,
        tick_time: Callable[[int], float],
        addresses: Mapping[NodeId, str],
        *,
        table: LeaseTable | None = None,
        keeper: LeaseKeeper | None = None,
        inherited_wait_grace_s: float = INHERITED_WAIT_GRACE_S,
    ) -> None:
        self.id = node_id
        self.core = core
        self.tick_time = tick_time
        self.addresses = addresses
        self.table = table if table is not None else LeaseTable()
        self.keeper = keeper if keeper is not None else LeaseKeeper()
        self.inherited_wait_grace_s = inherited_wait_grace_s
        self.applied_index = core.applied_index
        self.soft = SoftState(core.role, core.leader_id, core.term)
        self.lease_deadline = -math.inf  # when the leader lease runs out (this clock)
        self._pending: dict[int, tuple[int, Call | None]] = {}  # index -> (term, call)
        self._waiters: dict[str, Call] = {}  # request id -> the call told of its handover
        self._reads: list[Call] = []  # read barriers waiting for applied >= read_index
        self._calls: dict[Call, None] = {}  # every call in progress (insertion order)
        self._wait_heap: list[tuple[float, int, Call]] = []
        self._seq = itertools.count()
        self._leaving: list[Call] = []  # calls that must leave their queue (next tick)
        self._abandoned: list[tuple[str, str]] = []  # (name, request id) left by gone clients
        self._inherited_check_at: float | None = None
        self._replies: list[tuple[Call, Outcome]] = []

    # ------------------------------------------------------------------ queries
    @property
    def is_leader(self) -> bool:
        return self.soft.role is Role.LEADER

    @property
    def leader_id(self) -> NodeId | None:
        return self.soft.leader_id

    def leader_address(self) -> str | None:
        lid = self.soft.leader_id
        return self.addresses.get(lid) if lid is not None else None

    def lease_ok(self, now: float) -> bool:
        """May this node serve renewals and linearizable reads at ``now``?"""
        return (
            self.soft.role is Role.LEADER
            and self.applied_index >= self.core.term_start_index > 0
            and now < self.lease_deadline
        )

    def not_leader(self, message: str = "not the leader") -> NotLeader:
        """A NotLeader naming the leader this node knows of (typed: id and address)."""
        lid = self.soft.leader_id
        addr = self.leader_address()
        where = f"leader is {lid} at {addr}" if lid is not None and addr else "no leader known"
        return NotLeader(f"{message}; {where}", addr, lid)

    def require_lease(self, now: float) -> None:
        """Raise NoLeaderLease unless :meth:`lease_ok` (leader or not, with a hint)."""
        if self.lease_ok(now):
            return
        if self.soft.role is Role.LEADER:
            raise NoLeaderLease(
                f"node {self.id} is the leader but its leader lease is not valid yet; "
                "retry shortly",
                None,
                self.id,
            )
        e = self.not_leader()
        raise NoLeaderLease(str(e), e.leader_hint, e.leader_id)

    def remaining_s(self, lease_id: int, now: float) -> float:
        return self.keeper.remaining(lease_id, now)

    def calls(self) -> list[Call]:
        """Every call in progress (a crash resets them all)."""
        return list(self._calls)

    def next_wake(self) -> float:
        """The earliest time :meth:`tick` has something to do (math.inf: nothing)."""
        at = math.inf
        if self._leaving or self._abandoned:
            return -math.inf
        if self._wait_heap:
            at = self._wait_heap[0][0]
        if self.soft.role is Role.LEADER and self.core.committed_in_term():
            # Only a leader that can expire leases acts on deadlines; elsewhere a passed (or
            # stale) deadline would make its driver spin.
            at = min(at, self.keeper.next_deadline())
            if self._inherited_check_at is not None:
                at = min(at, self._inherited_check_at)
        return at

    def take_replies(self) -> Sequence[tuple[Call, Outcome]]:
        """The calls that ended since the last take, with their outcomes, in order."""
        if not self._replies:
            return ()  # the node asks on every loop turn: allocate nothing then
        out, self._replies = self._replies, []
        return out

    # ------------------------------------------------------------------ client calls
    def acquire(self, token: Any, cmd: Acquire, wait_s: float, now: float) -> Call:
        """Start an acquire; its outcome (Acquired, NotAcquired, Rejected, or an exception)
        comes out of :meth:`take_replies`. A waiting acquire registers for the handover of
        its request id first, so a handover applied before its own entry is not missed (a
        retry's registration replaces the older one)."""
        call = Call(CallKind.ACQUIRE, token, cmd, wait_s=wait_s)
        if cmd.wait:
            self._waiters[cmd.request_id] = call
        self._propose_call(call, cmd)
        return call

    def release(self, token: Any, lease_id: int) -> Call:
        call = Call(CallKind.RELEASE, token, Release(lease_id))
        self._propose_call(call, call.cmd)  # type: ignore[arg-type]
        return call

    def propose(self, token: Any, cmd: Command) -> Call:
        """Any command; its outcome is the table's ApplyResult once applied here."""
        call = Call(CallKind.PROPOSE, token, cmd)
        self._propose_call(call, cmd)
        return call

    def reconfigure(self, token: Any, new: Membership) -> Call:
        """Propose the configuration ``new`` (one server's change; RaftCore decides what is
        allowed). Ends with Reconfigured once it commits and applies here, MembershipError
        (nothing changed), NotLeader, or ProposalDropped (outcome unknown)."""
        call = Call(CallKind.RECONFIGURE, token, membership=new)
        self._calls[call] = None
        if self.soft.role is not Role.LEADER:
            self._end(call, self.not_leader())
            return call
        try:
            index, term = self.core.propose_membership(new)
        except NotLeader:
            self._end(call, self.not_leader())
        except (ProposalDropped, MembershipError) as e:
            self._end(call, e)
        else:
            self._pending[index] = (term, call)
        return call

    def read(self, token: Any, now: float) -> Call:
        """A linearizable read point: the leader lease is valid, and everything committed
        when the read began is applied. Ends with ReadReady, or NoLeaderLease."""
        call = Call(CallKind.READ, token)
        try:
            self.require_lease(now)
        except NoLeaderLease as e:
            self._end(call, e)
            return call
        call.read_index = self.core.commit_index
        if self.applied_index >= call.read_index:
            self._end(call, ReadReady())
        else:
            self._calls[call] = None
            self._reads.append(call)
        return call

    def renew(self, lease_id: int, health: dict[str, str] | None, now: float) -> Renewal | None:
        """Extend a lease by its TTL from ``now``: no log write, leader lease required
        (NoLeaderLease otherwise). None: not held (released, expired, past its deadline)."""
        self.require_lease(now)
        margin = self.keeper.remaining(lease_id, now)  # before extending
        rec = self.keeper.renew(self.table, lease_id, now, health)
        return Renewal(rec, margin) if rec is not None else None

    def cancel(self, call: Call) -> None:
        """The client went away (deadline, disconnect): forget the call, no answer. A waiting
        acquire that may still be queued leaves the queue (proposed at the next ``tick``, by
        the leader only), so the name is never handed to nobody. A proposal already made
        still applies."""
        if call.done:
            return
        leave = (call.waits and call.stage in (_Stage.PROPOSED, _Stage.WAITING)) or (
            call.stage is _Stage.LEAVING
        )
        self._finish(call)
        if leave and isinstance(call.cmd, Acquire):
            self._abandoned.append((call.cmd.name, call.cmd.request_id))

    def fail_all(self, message: str) -> None:
        """Every call waiting on this node fails NotLeader (each with its own instance)."""
        calls = [c for _, c in self._pending.values() if c is not None]
        calls += self._reads
        calls += self._waiters.values()
        self._pending.clear()
        self._waiters.clear()
        self._reads.clear()
        for call in calls:
            if not call.done:
                self._end(call, self.not_leader(message))

    # ------------------------------------------------------------------ driver inputs
    def after_step(self) -> None:
        """After the core took inputs: the leader lease deadline from its tick arithmetic
        (tick k is due at ``tick_time(k)``, so a stalled driver cannot stretch it)."""
        core = self.core
        if core.lease_valid():
            self.lease_deadline = self.tick_time(core.lease_start_tick() + core.lease_ticks)
        else:
            self.lease_deadline = -math.inf

    def tick(self, now: float) -> None:
        """Time-driven duties, run by the driver on every turn of its loop (before it takes
        the core's Ready): waits that ran out, queues to leave, expiries, the one-time cancel
        of inherited waits, read barriers that passed."""
        if self._wait_heap and self._wait_heap[0][0] <= now:
            self._waits_ran_out(now)
        if self._leaving:
            leaving, self._leaving = self._leaving, []
            for call in leaving:
                self._leave_queue(call)
        if self._abandoned:
            abandoned, self._abandoned = self._abandoned, []
            if self.soft.role is Role.LEADER:
                for name, request_id in abandoned:
                    self._propose_unwatched(CancelWait(name, request_id))
        core = self.core
        if core.role is Role.LEADER and core.committed_in_term():
            # Inherited waits first: an expiry due in the same turn must find them gone.
            self._maybe_cancel_inherited(now)
            self._maybe_expire(now)
        if self._reads:
            self._release_reads(now)

    def apply_snapshot(self, table_data: bytes, index: int, now: float) -> None:
        """Install a snapshot's lease table; every deadline restarts ``now`` (S2)."""
        self.table = LeaseTable.restore(table_data)
        self.applied_index = index
        self.keeper.restart_all(self.table, now)

    def apply(self, entries: Sequence[Entry], now: float) -> list[LeaseEvent]:
        """Apply committed entries (in order): the table changes, grants start their clock,
        handovers reach their waiting calls, proposals answer their calls. Returns the lease
        events (for watchers and checkers)."""
        table = self.table
        keeper = self.keeper
        pending = self._pending
        out: list[LeaseEvent] = []
        for e in entries:
            result: ApplyResult | None = None
            if e.kind is EntryKind.NORMAL:
                result, events = table.apply_entry(e.data, e.index)
                for ev in events:
                    keeper.on_event(ev, now)
                    if ev.kind == "acquired" and self._waiters:
                        self._hand_over(ev.lease)
                out.extend(events)
            self.applied_index = e.index
            if pending:
                waiter = pending.pop(e.index, None)
                if waiter is not None:
                    term, call = waiter
                    if call is not None and not call.done:
                        if term != e.term:
                            self._end(call, ProposalDropped("a new leader overwrote the entry"))
                        else:
                            self._resolve(call, result, now)
        return out

    def on_soft_state(self, soft: SoftState, now: float) -> bool:
        """The core's soft state after a Ready: True if its role, leader or term changed."""
        old = self.soft
        if old == soft:
            return False
        self.soft = soft
        role = soft.role
        if role is Role.LEADER and old.role is not Role.LEADER:
            # S2: every lease counts as renewed when a new leader takes office.
            self.keeper.restart_all(self.table, now)
            self._inherited_check_at = now + self.inherited_wait_grace_s
        elif old.role is Role.LEADER and role is not Role.LEADER:
            self.lease_deadline = -math.inf
            self._inherited_check_at = None
            self.fail_all("leadership lost; outcome unknown, retry")
        return True

    # ------------------------------------------------------------------ internals
    def _propose_call(self, call: Call, cmd: Command) -> None:
        """Start ``call`` with its proposal (or end it at once: not the leader)."""
        self._calls[call] = None
        self._propose_for(call, cmd)

    def _propose_for(self, call: Call, cmd: Command) -> None:
        """Propose ``cmd`` and answer ``call`` once it applies; NotLeader (with the hint)
        or ProposalDropped ends the call now."""
        if self.soft.role is not Role.LEADER:
            self._end(call, self.not_leader())
            return
        try:
            index, term = self.core.propose(encode_command(cmd))
        except NotLeader:
            self._end(call, self.not_leader())
        except ProposalDropped as e:
            self._end(call, e)
        else:
            self._pending[index] = (term, call)

    def _resolve(self, call: Call, result: ApplyResult | None, now: float) -> None:
        """The entry ``call`` proposed applied in its term: how the call goes on."""
        cmd = call.cmd
        if call.kind is CallKind.RECONFIGURE:
            assert call.membership is not None
            self._end(call, Reconfigured(self.applied_index, call.membership))
            return
        if call.kind is not CallKind.ACQUIRE:
            self._end(call, result if result is not None else Internal("no result"))
            return
        assert isinstance(cmd, Acquire)
        if call.stage is _Stage.CANCELLING:
            # Its CancelWait applied. Handed over just before: then it is ours.
            cur = self.table.get(cmd.name)
            if cur is not None and cur.request_id == cmd.request_id:
                self._end(call, Acquired(cur))
            else:
                self._end(call, NotAcquired(cur))
        elif isinstance(result, Queued):
            if not cmd.wait:
                # A retry (wait_ms=0) of an acquire that is still queued: a wait that ran
                # out at once. Leave the queue, then answer from the table.
                call.stage = _Stage.LEAVING
                self._leaving.append(call)
            elif call.granted is not None:
                self._end(call, Acquired(call.granted))
            else:
                call.stage = _Stage.WAITING
                call.wait_until = now + call.wait_s
                heapq.heappush(self._wait_heap, (call.wait_until, next(self._seq), call))
        elif isinstance(result, Granted):
            self._end(call, Acquired(result.lease))
        elif isinstance(result, Held):
            self._end(call, NotAcquired(result.current))
        elif isinstance(result, Rejected):
            self._end(call, result)
        else:
            self._end(call, Internal(f"unexpected result {result!r}"))

    def _hand_over(self, lease: LeaseRecord) -> None:
        """A grant wakes the call registered under its request id."""
        call = self._waiters.pop(lease.request_id, None)
        if call is None or call.done:
            return
        if call.stage is _Stage.WAITING:
            self._end(call, Acquired(lease))
        elif call.stage is _Stage.PROPOSED:
            call.granted = lease  # it answers once its own entry (Queued) applies

    def _waits_ran_out(self, now: float) -> None:
        heap = self._wait_heap
        while heap and heap[0][0] <= now:
            _, _, call = heapq.heappop(heap)
            if call.stage is _Stage.WAITING:
                self._leave_queue(call)

    def _leave_queue(self, call: Call) -> None:
        """Propose CancelWait for a queued acquire; it answers from the table once applied."""
        if call.done:
            return
        cmd = call.cmd
        assert isinstance(cmd, Acquire)
        if self._waiters.get(cmd.request_id) is call:
            del self._waiters[cmd.request_id]
        call.stage = _Stage.CANCELLING
        self._propose_for(call, CancelWait(cmd.name, cmd.request_id))

    def _release_reads(self, now: float) -> None:
        keep: list[Call] = []
        refusal: NoLeaderLease | None = None
        try:
            self.require_lease(now)
        except NoLeaderLease as e:
            refusal = e
        for call in self._reads:
            if call.done:
                continue
            if self.applied_index < call.read_index:
                keep.append(call)
            else:
                self._end(call, ReadReady() if refusal is None else refusal)
        self._reads = keep

    def _maybe_expire(self, now: float) -> None:
        """Propose ``Expire`` for every lease past its deadline. Within the grace after taking
        office (``_inherited_check_at`` pending), the name's queued acquires that no call on
        this leader waits for leave the queue first (CancelWait, ahead of the Expire in the
        log): the deadlines restarted at office (S2) pass a TTL later, which can be before
        the grace is over (TTLs from 1 s, grace 2 s), and the expiry would otherwise hand the
        name to a waiter whose client went away while no leader could cancel it (a "ghost"
        handover). A client still alive re-attaches by retrying, so it is in ``_waiters`` and
        keeps its place; one that retries later queues again or finds the name free."""
        keeper = self.keeper
        if keeper.next_deadline() > now:
            return
        for rec in keeper.due(self.table, now):
            if self._inherited_check_at is not None:
                self._cancel_unattached(rec.name)
            log.info(
                "%s: lease %r (id %d, holder %r) passed its deadline; expiring",
                self.id,
                rec.name,
                rec.lease_id,
                rec.holder,
                extra={"lease": rec.name, "lease_id": rec.lease_id, "holder": rec.holder},
            )
            if not self._propose_unwatched(Expire(rec.name, rec.lease_id)):
                keeper.unmark(rec.lease_id)

    def _maybe_cancel_inherited(self, now: float) -> None:
        """Once, ``inherited_wait_grace_s`` after taking office: cancel every queued acquire
        that no call on this leader waits for. Its client waited on an earlier leader (that
        wait's timer died with it) and has not retried here; without this, the name would
        later be handed to nobody and stay blocked for the grant's TTL (a "ghost" handover).
        A client that retries later simply queues again, at the back. An expiry within the
        grace does this early for its own name (:meth:`_maybe_expire`)."""
        at = self._inherited_check_at
        if at is None or now < at:
            return
        self._inherited_check_at = None
        self._cancel_unattached()

    def _cancel_unattached(self, only: str | None = None) -> None:
        """Propose CancelWait for every queued acquire (of the name ``only``, or of every
        name) that no call on this leader waits for; stop if the core refuses one."""
        queued = (
            self.table.queued()
            if only is None
            else [(only, w.request_id) for w in self.table.waiters(only)]
        )
        for name, request_id in queued:
            if request_id in self._waiters:
                continue
            log.info(
                "%s: queued acquire %s of %r has no waiting client since this node took "
                "office; cancelling its wait",
                self.id,
                request_id,
                name,
                extra={"lease": name, "request_id": request_id},
            )
            if not self._propose_unwatched(CancelWait(name, request_id)):
                return

    def _propose_unwatched(self, cmd: Command) -> bool:
        """Propose a command the leader issues itself (an expiry, a cancel) and nobody
        awaits; False if the core refused it (no longer leader, transfer under way)."""
        try:
            index, term = self.core.propose(encode_command(cmd))
        except (NotLeader, ProposalDropped):
            return False
        self._pending[index] = (term, None)
        return True

    def _finish(self, call: Call) -> None:
        """The call is over: drop its registration (only if still its own: a retry may have
        replaced it) and forget it."""
        call.stage = _Stage.DONE
        cmd = call.cmd
        if call.waits and isinstance(cmd, Acquire) and self._waiters.get(cmd.request_id) is call:
            del self._waiters[cmd.request_id]
        self._calls.pop(call, None)

    def _end(self, call: Call, outcome: Outcome) -> None:
        if call.done:
            return
        self._finish(call)
        self._replies.append((call, outcome))
