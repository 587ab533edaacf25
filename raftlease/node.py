"""The asyncio driver: turns time into ticks and runs the Ready loop of one node. Layer L3.

One task (``run``) owns the core: every tick, step, proposal and transfer happens in it, so
the core never sees concurrency. Each loop iteration:

  1. catch ticks up with the clock (BEFORE stepping, so a message is dated correctly; a
     leader's answers of its own term may go first: ``RaftCore.steps_before_ticks``);
  2. step every queued peer message, then every queued proposal;
  3. if the core has a Ready: PERSIST it (one fsync for the whole batch: group commit, in an
     executor so the loop never blocks on disk), then SEND its messages, then APPLY its
     committed entries to the lease table, then ``advance``.

While the fsync runs, new messages and proposals queue up and form the next batch.

Leases are served here too (``LeaseService`` in server.py is only the gRPC face):
  * ``lease_ok()``: this node is the leader, has applied its no-op, and its leader lease has
    not run out on the local clock. The lease deadline is derived from the core's tick
    arithmetic (tick k is reached at ``t0 + k * tick_s``) so a stalled loop cannot stretch it.
  * renewals need ``lease_ok()`` and no log write; expiry is proposed once a lease's deadline
    passes on this clock; a new leader restarts every lease's deadline when it takes office.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import random
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from raftlease import failpoints
from raftlease.config import RaftConfig
from raftlease.core.messages import EntryKind, Message
from raftlease.core.raft import RaftCore
from raftlease.core.ready import Ready, SoftState
from raftlease.errors import NotLeader, ProposalDropped, RaftLeaseError
from raftlease.fsm.commands import CancelWait, Command, Expire, encode_command
from raftlease.fsm.keeper import INHERITED_WAIT_GRACE_S, LeaseKeeper
from raftlease.fsm.leases import ApplyResult, LeaseEvent, LeaseRecord, LeaseTable
from raftlease.observe import NOOP_OBSERVER
from raftlease.types import NodeId, Role

if TYPE_CHECKING:
    from collections.abc import Callable

    from raftlease.clock import Clock
    from raftlease.observe import NodeObserver
    from raftlease.storage.base import Storage
    from raftlease.transport.base import Transport

TIMER_SLACK_S = 0.001

log = logging.getLogger("raftlease.node")


class NoLeaderLease(RaftLeaseError):
    """This node cannot serve lease operations right now (not leader, or lease not valid)."""

    def __init__(self, message: str, leader_hint: str | None) -> None:
        super().__init__(message)
        self.leader_hint = leader_hint


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Runtime settings of one node.

    tick_s: seconds per core tick (default 0.01). With election 20..40 ticks and heartbeat 10
        ticks that is a 200..400 ms election timeout and 100 ms heartbeats.
    heartbeat_ticks: 10 here, half the minimum election timeout (the most
        ``RaftConfig.validate`` allows). On this project's 2-core VM heartbeats are most of an
        idle cluster's CPU (W5: 4.1-4.5 % of a core at 40 ms, 2.9-3.5 % at 60 ms, 2.8 % at
        100 ms), and a longer heartbeat does not slow failover: a follower's election timer
        runs from the last heartbeat it heard, so on average it fires sooner after the leader
        dies (W4 median 0.31 s at 60 ms, 0.28 s at 100 ms; docs/benchmarks.md). The fine tick
        (10 ms rather than 20 ms) keeps the leader lease 14 ticks = 140 ms long, 40 ms more
        than a heartbeat interval, so it does not lapse between heartbeats.
    snapshot_entries: take a snapshot and compact the log after this many applied entries.
    inherited_wait_grace_s: a new leader cancels every queued acquire whose client has not
        re-attached (retried with its request id) this long after it took office.
    """

    node_id: NodeId
    cluster_id: str
    peers: dict[NodeId, str]  # every voter, this node included -> HOST:PORT for peer traffic
    # Where clients reach each node (leader hints, status). Defaults to ``peers``; differs
    # when peer links go through proxies (the jepsen-style harness).
    client_addresses: dict[NodeId, str] = field(default_factory=dict)
    tick_s: float = 0.01
    election_ticks_min: int = 20
    election_ticks_max: int = 40
    heartbeat_ticks: int = 10
    max_drift: float = 0.01
    snapshot_entries: int = 10_000
    inherited_wait_grace_s: float = INHERITED_WAIT_GRACE_S
    seed: int | None = None
    raft_overrides: dict[str, Any] = field(default_factory=dict)

    def safety_settings(self) -> str:
        """The settings the safety argument compares across nodes (docs/safety.md, L1), as
        one line. Peers exchange it when a link opens and refuse a mismatch: a rolling change
        of the tick length, say, would otherwise break (L1) silently."""
        rc = self.raft_config()
        return (
            f"tick={self.tick_s * 1000:g}ms election={rc.election_ticks_min}-"
            f"{rc.election_ticks_max} heartbeat={rc.heartbeat_ticks} "
            f"lease={rc.effective_lease_ticks} max_drift={rc.max_drift:g}"
        )

    def raft_config(self) -> RaftConfig:
        return RaftConfig(
            node_id=self.node_id,
            voters=tuple(sorted(self.peers)),
            election_ticks_min=self.election_ticks_min,
            election_ticks_max=self.election_ticks_max,
            heartbeat_ticks=self.heartbeat_ticks,
            max_drift=self.max_drift,
            **self.raft_overrides,
        )


class Node:
    def __init__(
        self, cfg: NodeConfig, storage: Storage, transport: Transport, clock: Clock
    ) -> None:
        self.cfg = cfg
        self.id = cfg.node_id
        self.storage = storage
        self.transport = transport
        self.clock = clock
        loaded = storage.load()
        rng = random.Random(cfg.seed) if cfg.seed is not None else random.Random()
        self.core = RaftCore(
            cfg.raft_config(), rng, loaded.hard_state, loaded.snapshot, loaded.entries
        )
        self.table = LeaseTable.restore(loaded.snapshot.data) if loaded.snapshot else LeaseTable()
        self.applied_index = self.core.applied_index
        self._saved_vote = (loaded.hard_state.term, loaded.hard_state.voted_for)
        self._last_snapshot_index = self.core.applied_index
        self.tick_s = cfg.tick_s
        self._t0 = clock.monotonic()
        self._ticks_done = 0
        self.sleeps = 0  # times the loop went to sleep (an idle node must not spin)
        # When this leader looks for inherited waits nobody waits for (None: not pending).
        self._inherited_check_at: float | None = None
        self._inbox: deque[Message] = deque()
        self._ops: deque[tuple[str, Any, asyncio.Future[Any]]] = deque()
        self._wake = asyncio.Event()
        self._pending: dict[int, tuple[int, asyncio.Future[Any]]] = {}
        self._stopping = False
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="fsync")
        self.soft = SoftState(self.core.role, self.core.leader_id, self.core.term)
        self.lease_deadline = -math.inf  # clock time at which the leader lease runs out
        # Lease deadlines on this node's clock (meaningful on the leader only).
        self.keeper = LeaseKeeper()
        self._waiters: dict[str, asyncio.Future[LeaseRecord]] = {}
        self._applied_waiters: list[tuple[int, asyncio.Future[Any]]] = []
        self.watchers: set[Callable[[LeaseEvent], None]] = set()
        self.leader_changes = 0
        self.observer: NodeObserver = NOOP_OBSERVER  # metrics (raftlease/observe.py)

    # ------------------------------------------------------------------ inputs (any task)
    def receive(self, m: Message) -> None:
        """A peer message arrived (called by the RaftPeer servicer)."""
        self._inbox.append(m)
        self._wake.set()

    async def propose(self, cmd: Command) -> ApplyResult | None:
        """Replicate ``cmd``; returns the lease table's result once it is applied here.

        Raises NotLeader (with hint) if this node is not the leader, ProposalDropped if the
        entry was overwritten by a new leader (outcome: not applied).
        """
        start = self.clock.monotonic()
        result: ApplyResult | None = await self._op("propose", encode_command(cmd))
        self.observer.on_proposal_applied(self.clock.monotonic() - start)
        return result

    async def transfer_leadership(self, target: NodeId) -> None:
        await self._op("transfer", target)

    async def _op(self, kind: str, arg: Any) -> Any:
        if self._stopping:
            raise NotLeader("node is shutting down", None)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._ops.append((kind, arg, fut))
        self._wake.set()
        return await fut

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stopping

    # ------------------------------------------------------------------ queries
    @property
    def is_leader(self) -> bool:
        return self.soft.role is Role.LEADER

    @property
    def leader_id(self) -> NodeId | None:
        return self.soft.leader_id

    def leader_address(self) -> str | None:
        lid = self.soft.leader_id
        return self.client_address(lid) if lid is not None else None

    def client_address(self, node_id: NodeId) -> str:
        return self.cfg.client_addresses.get(node_id) or self.cfg.peers.get(node_id, "")

    def lease_ok(self) -> bool:
        """May this node serve renewals and linearizable reads at this instant?"""
        return (
            self.soft.role is Role.LEADER
            and self.applied_index >= self.core.term_start_index > 0
            and self.clock.monotonic() < self.lease_deadline
        )

    def require_lease(self) -> None:
        if not self.lease_ok():
            lid = self.soft.leader_id
            if self.soft.role is Role.LEADER:
                raise NoLeaderLease(
                    f"node {self.id} is the leader but its leader lease is not valid yet; "
                    "retry shortly",
                    None,
                )
            where = f"leader is {lid} at {self.leader_address()}" if lid else "no leader known"
            raise NoLeaderLease(f"not the leader; {where}", self.leader_address())

    async def read_barrier(self) -> None:
        """Linearizable read point: leader lease valid, and everything committed is applied."""
        self.require_lease()
        target = self.core.commit_index
        if self.applied_index < target:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._applied_waiters.append((target, fut))
            await fut
            self.require_lease()

    def renew(self, lease_id: int, health: dict[str, str] | None) -> LeaseRecord | None:
        """Extend a lease by its TTL from now (leader lease required; no log write)."""
        self.require_lease()
        now = self.clock.monotonic()
        remaining = self.keeper.remaining(lease_id, now)  # before extending: the renew margin
        rec = self.keeper.renew(self.table, lease_id, now, health)
        if rec is not None:
            self.observer.on_renewal(remaining, rec.ttl_ms / 1000.0)
        return rec

    @property
    def deadlines(self) -> dict[int, float]:
        return self.keeper.deadlines

    @property
    def health(self) -> dict[int, dict[str, str]]:
        return self.keeper.health

    def remaining_s(self, lease_id: int) -> float:
        return self.keeper.remaining(lease_id, self.clock.monotonic())

    def register_waiter(self, request_id: str) -> asyncio.Future[LeaseRecord]:
        fut: asyncio.Future[LeaseRecord] = asyncio.get_running_loop().create_future()
        # The handler may stop listening (timeout, leadership lost) before a result or an
        # exception arrives; retrieve it so asyncio never logs it as unhandled.
        fut.add_done_callback(_ignore_result)
        self._waiters[request_id] = fut
        return fut

    def drop_waiter(self, request_id: str, fut: asyncio.Future[LeaseRecord]) -> None:
        """Forget ``fut`` (only if it is still the one registered: a retry may have replaced
        it with its own)."""
        if self._waiters.get(request_id) is fut:
            del self._waiters[request_id]

    async def cancel_wait(self, name: str, request_id: str) -> None:
        await self.propose(CancelWait(name, request_id))

    # ------------------------------------------------------------------ main loop
    async def run(self) -> None:
        """Drive the core until ``stop()``. Raises StorageError (the node must exit)."""
        loop = asyncio.get_running_loop()
        self._t0 = self.clock.monotonic()
        try:
            while not self._stopping:
                inbox = self._inbox
                core = self.core
                # Catch the ticks up with the clock BEFORE stepping peer messages, so that no
                # message is dated at a stale tick (docs/safety.md, L2); only a leader's own
                # answers may go first (RaftCore.steps_before_ticks says which, and why).
                due = self._ticks_due()
                if inbox and due > self._ticks_done and core.role is Role.LEADER:
                    self._step_answers_first()  # only when ticks are behind: else same order
                self._sync_ticks(due)
                while inbox:
                    core.step(inbox.popleft())
                self._run_ops()
                self._update_lease_deadline()
                self._maybe_expire()
                self._maybe_cancel_inherited()
                if core.has_ready():
                    rd = core.ready()
                    await self._handle_ready(rd, loop)
                    continue
                self._maybe_snapshot()
                self._wake.clear()
                if self._inbox or self._ops:
                    continue
                # Sleep until the core's next timer (heartbeat, election, CheckQuorum) or the
                # next lease deadline, not every tick: an idle follower then wakes only for
                # heartbeats (W5, idle CPU). Skipped ticks are caught up from the clock.
                next_tick = self._t0 + (self._ticks_done + core.ticks_until_timer()) * self.tick_s
                wake_at = next_tick
                if core.role is Role.LEADER and core.committed_in_term():
                    # Only a leader that can expire leases acts on deadlines; anywhere else a
                    # passed (or stale) deadline would make this loop spin.
                    wake_at = min(wake_at, self.keeper.next_deadline())
                    if self._inherited_check_at is not None:
                        wake_at = min(wake_at, self._inherited_check_at)
                if core.lead_transferee is not None:
                    wake_at = min(wake_at, self._t0 + (self._ticks_done + 1) * self.tick_s)
                delay = max(0.0, (wake_at - self.clock.monotonic()) / self.clock.rate)
                if delay > 0.0:
                    # Never wake early: uvloop's timers have 1 ms resolution and fire up to
                    # 1 ms before they are due; the loop would then re-arm a sub-millisecond
                    # timer (call_soon in uvloop) and spin until the clock caught up (3-4
                    # wake-ups per heartbeat instead of 1). Ticks come from the clock, so
                    # waking up to 1 ms late changes nothing but the timing of the wake.
                    delay += TIMER_SLACK_S
                # Sleep until the next tick or a wake-up, whichever first (call_later is far
                # cheaper than wait_for, which wraps the wait in a new task every time).
                self.sleeps += 1
                timer = loop.call_later(delay, self._wake.set)
                await self._wake.wait()
                timer.cancel()
        finally:
            self._fail_all("node stopped", None)
            self._executor.shutdown(wait=True)

    def _step_answers_first(self) -> None:
        inbox = self._inbox
        core = self.core
        held: list[Message] = []
        for _ in range(len(inbox)):
            m = inbox.popleft()
            if core.steps_before_ticks(m):
                core.step(m)
            else:
                held.append(m)
        inbox.extendleft(reversed(held))

    def _ticks_due(self) -> int:
        return int((self.clock.monotonic() - self._t0) / self.tick_s)

    def _sync_ticks(self, due: int) -> None:
        core = self.core
        while self._ticks_done < due:
            core.tick()
            self._ticks_done += 1

    def _run_ops(self) -> None:
        core = self.core
        ops = self._ops
        while ops:
            kind, arg, fut = ops.popleft()
            if fut.done():
                continue
            try:
                if kind == "propose":
                    index, term = core.propose(arg)
                    self._pending[index] = (term, fut)
                elif kind == "transfer":
                    core.transfer_leadership(arg)
                    fut.set_result(None)
            except (NotLeader, ProposalDropped, ValueError) as e:
                if isinstance(e, NotLeader):
                    e.leader_hint = self.leader_address()
                fut.set_exception(e)

    async def _handle_ready(self, rd: Ready, loop: asyncio.AbstractEventLoop) -> None:
        # A leader replicates WHILE it fsyncs its own entries (Ready contract, rule 1's
        # exception; thesis §10.2.1): nothing is stepped until the save is done, and the core
        # counts our own entries only after advance(). Everything else: PERSIST BEFORE SEND.
        early = rd.may_send_before_persist(*self._saved_vote)
        if early:
            self._send(rd)
        if self._needs_save(rd):
            await loop.run_in_executor(self._executor, self._save, rd)
        if not early:
            self._send(rd)
        if rd.committed_entries and failpoints.enabled:
            failpoints.hit("after-commit-before-apply")
        self._apply(rd)
        self.core.advance(rd)
        self._on_soft_state(rd.soft_state)

    def _send(self, rd: Ready) -> None:
        if failpoints.enabled:
            failpoints.hit("before-send")
        self.observer.on_send(rd.messages)
        self.transport.send(rd.messages)

    def _needs_save(self, rd: Ready) -> bool:
        """Is there anything to fsync? A Ready whose only change is the commit index is not
        written on its own: Raft does not need the commit index durable (a restarted node
        learns it again from the leader), so it rides along with the next entries or vote.
        This saves one fsync per write on every node."""
        if rd.entries or rd.snapshot is not None:
            return True
        hs = rd.hard_state
        if hs is None:
            return False
        return (hs.term, hs.voted_for) != self._saved_vote

    def _save(self, rd: Ready) -> None:
        if failpoints.enabled:
            failpoints.hit("before-save")
            if rd.snapshot is not None:
                failpoints.hit("before-snapshot-save")
        start = self.clock.monotonic()
        self.storage.save(rd.hard_state, rd.snapshot, rd.entries)
        self.observer.on_save(self.clock.monotonic() - start)
        if rd.hard_state is not None:
            vote = (rd.hard_state.term, rd.hard_state.voted_for)
            if vote != self._saved_vote and vote[1] is not None:
                # One line per durable vote: the jepsen-style RI check reads these.
                log.info("%s voted for %s at term %d (persisted)", self.id, vote[1], vote[0])
            self._saved_vote = vote
        if failpoints.enabled:
            failpoints.hit("after-save")
            if rd.hard_state is not None and rd.hard_state.voted_for is not None:
                failpoints.hit("after-vote-save")
            if rd.snapshot is not None:
                failpoints.hit("after-snapshot-save")

    def _apply(self, rd: Ready) -> None:
        now = self.clock.monotonic()
        if rd.snapshot is not None:
            self.table = LeaseTable.restore(rd.snapshot.data)
            self.applied_index = rd.snapshot.index
            self._last_snapshot_index = rd.snapshot.index
            self.keeper.restart_all(self.table, now)
        table = self.table
        pending = self._pending
        for e in rd.committed_entries:
            result: ApplyResult | None = None
            if e.kind is EntryKind.NORMAL:
                result, events = table.apply_entry(e.data, e.index)
                for ev in events:
                    self._on_event(ev, now)
            self.applied_index = e.index
            waiter = pending.pop(e.index, None)
            if waiter is not None:
                term, fut = waiter
                if not fut.done():
                    if term == e.term:
                        fut.set_result(result)
                    else:
                        fut.set_exception(ProposalDropped("a new leader overwrote the entry"))
        if self._applied_waiters:
            keep = []
            for target, fut in self._applied_waiters:
                if self.applied_index >= target:
                    if not fut.done():
                        fut.set_result(None)
                else:
                    keep.append((target, fut))
            self._applied_waiters = keep

    def _on_event(self, ev: LeaseEvent, now: float) -> None:
        self.keeper.on_event(ev, now)
        self.observer.on_lease_event(ev.kind)
        if ev.kind == "acquired":
            fut = self._waiters.pop(ev.lease.request_id, None)
            if fut is not None and not fut.done():
                fut.set_result(ev.lease)
        for w in list(self.watchers):
            w(ev)

    def _on_soft_state(self, soft: SoftState) -> None:
        old = self.soft
        self.soft = soft
        if old.role is soft.role and old.leader_id == soft.leader_id and old.term == soft.term:
            return
        self.observer.on_state_change(old, soft)
        if soft.role in (Role.PRE_CANDIDATE, Role.CANDIDATE) and soft.role is not old.role:
            log.info("%s became %s at term %d", self.id, soft.role.value, soft.term)
        if soft.role is Role.LEADER and old.role is not Role.LEADER:
            log.info("%s became leader at term %d", self.id, soft.term)
            self.leader_changes += 1
            now = self.clock.monotonic()
            self.keeper.restart_all(self.table, now)
            self._inherited_check_at = now + self.cfg.inherited_wait_grace_s
        elif old.role is Role.LEADER and soft.role is not Role.LEADER:
            log.info(
                "%s lost leadership at term %d (leader now %s)", self.id, soft.term, soft.leader_id
            )
            self.lease_deadline = -math.inf
            self._inherited_check_at = None
            self._fail_all("leadership lost; outcome unknown, retry", self.leader_address())
        elif soft.leader_id != old.leader_id and soft.leader_id is not None:
            log.info("%s follows leader %s at term %d", self.id, soft.leader_id, soft.term)

    def _fail_all(self, message: str, hint: str | None) -> None:
        """Fail every waiting request with its own NotLeader (one instance per future, so
        tracebacks never mix requests)."""
        futures = [fut for _, fut in self._pending.values()]
        futures += [fut for _, fut in self._applied_waiters]
        futures += self._waiters.values()
        self._pending.clear()
        self._waiters.clear()
        self._applied_waiters.clear()
        for fut in futures:
            if not fut.done():
                fut.set_exception(NotLeader(message, hint))

    def _update_lease_deadline(self) -> None:
        core = self.core
        if core.lease_valid():
            self.lease_deadline = (
                self._t0 + (core.lease_start_tick() + core.lease_ticks) * self.tick_s
            )
        else:
            self.lease_deadline = -math.inf

    def _maybe_expire(self) -> None:
        core = self.core
        if core.role is not Role.LEADER or not core.committed_in_term():
            return
        now = self.clock.monotonic()
        if self.keeper.next_deadline() > now:
            return
        for rec in self.keeper.due(self.table, now):
            log.info(
                "%s: lease %r (id %d, holder %r) passed its deadline; expiring",
                self.id,
                rec.name,
                rec.lease_id,
                rec.holder,
            )
            if not self._propose_unwatched(Expire(rec.name, rec.lease_id)):
                self.keeper.unmark(rec.lease_id)

    def _maybe_cancel_inherited(self) -> None:
        """Once, ``inherited_wait_grace_s`` after taking office: cancel every queued acquire
        that no client of this leader waits for. Its client waited on an earlier leader (that
        wait's timer died with it) and has not retried here; without this, the name would
        later be handed to nobody and stay blocked for the grant's TTL (a "ghost" handover).
        A client that retries later simply queues again, at the back."""
        at = self._inherited_check_at
        core = self.core
        if at is None or core.role is not Role.LEADER or not core.committed_in_term():
            return
        if self.clock.monotonic() < at:
            return
        self._inherited_check_at = None
        for name, request_id in self.table.queued():
            if request_id in self._waiters:
                continue
            log.info(
                "%s: queued acquire %s of %r has no waiting client since this node took "
                "office; cancelling its wait",
                self.id,
                request_id,
                name,
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
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(_ignore_result)
        self._pending[index] = (term, fut)
        return True

    def _maybe_snapshot(self) -> None:
        if self.applied_index - self._last_snapshot_index < self.cfg.snapshot_entries:
            return
        index = self.applied_index
        snap = self.core.compact(index, self.table.snapshot())
        self._last_snapshot_index = index
        if failpoints.enabled:
            failpoints.hit("before-snapshot-save")
        self.storage.compact(snap)  # rare; a short synchronous write is acceptable here
        if failpoints.enabled:
            failpoints.hit("after-snapshot-save")
        log.info("%s: snapshot at index %d (%d leases)", self.id, index, len(self.table))

    # ------------------------------------------------------------------ status
    def status(self) -> dict[str, Any]:
        core = self.core
        me = {
            "id": self.id,
            "address": self.client_address(self.id),
            "role": core.role.value,
            "term": core.term,
            "commit_index": core.commit_index,
            "applied_index": self.applied_index,
            "last_index": core.last_index,
            "last_heard_ms": 0,
            "reachable": True,
            "lease_valid": self.lease_ok(),
            "lease_remaining_ms": max(0, int((self.lease_deadline - self.clock.monotonic()) * 1000))
            if self.lease_ok()
            else 0,
        }
        nodes = [me]
        if core.role is Role.LEADER:
            hb = self.cfg.heartbeat_ticks
            for p in core.peer_status():
                heard_ms = (
                    -1 if p.ticks_since_heard < 0 else int(p.ticks_since_heard * self.tick_s * 1000)
                )
                nodes.append(
                    {
                        "id": p.id,
                        "address": self.client_address(p.id),
                        "role": "follower",
                        "term": core.term,
                        "commit_index": min(p.match_index, core.commit_index),
                        "applied_index": p.applied_index,
                        "match_index": p.match_index,
                        "lag": max(0, core.last_index - p.match_index),
                        "last_heard_ms": heard_ms,
                        "missed_heartbeats": max(0, p.ticks_since_heard // hb - 1)
                        if p.ticks_since_heard >= 0
                        else -1,
                        "reachable": 0 <= p.ticks_since_heard < self.cfg.election_ticks_min,
                        "lost_entries": p.lost_entries,
                    }
                )
        return {
            "node_id": self.id,
            "cluster_id": self.cfg.cluster_id,
            "leader": self.soft.leader_id,
            "leader_address": self.leader_address(),
            "term": core.term,
            "nodes": nodes,
        }


def _ignore_result(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()
