"""The asyncio driver: turns time into ticks and runs the Ready loop of one node. Layer L3.

One task (``run``) owns the core and the lease service: every tick, step, proposal and
transfer happens in it, so neither ever sees concurrency. Each loop iteration:

  1. catch ticks up with the clock (BEFORE stepping, so a message is dated correctly; a
     leader's answers of its own term may go first: ``RaftCore.steps_before_ticks``);
  2. step every queued peer message, then run every queued client operation through the
     lease service, then the service's time-driven duties (expiry, waits that ran out);
  3. if the core has a Ready: PERSIST it (one fsync for the whole batch: group commit, in an
     executor so the loop never blocks on disk), then SEND its messages, then APPLY its
     committed entries through the lease service, then ``advance``.

While the fsync runs, new messages and operations queue up and form the next batch.

Every lease rule (the leader lease check, renewals, read barriers, the acquire procedure,
expiry, taking and losing office) lives in ``raftlease/service`` and runs here as it runs in
the simulator; this module only feeds it time and events and hands its outcomes to the
awaiting callers (server.py's gRPC handlers).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import random
import threading
import zlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from raftlease.core.membership import Membership, MembershipError
from raftlease.core.raft import RaftCore
from raftlease.errors import NoLeaderLease, NotLeader, ProposalDropped
from raftlease.fsm.leases import LeaseTable
from raftlease.observe import NOOP_OBSERVER
from raftlease.service import Call, LeaseService, Reconfigured
from raftlease.settings import ServerConfig
from raftlease.types import NodeId, Role

if TYPE_CHECKING:
    from collections.abc import Callable

    from raftlease.clock import Clock
    from raftlease.core.messages import Message
    from raftlease.core.ready import Ready, SoftState
    from raftlease.fsm.commands import Acquire, Command
    from raftlease.fsm.keeper import LeaseKeeper
    from raftlease.fsm.leases import ApplyResult, LeaseEvent, LeaseRecord
    from raftlease.observe import NodeObserver
    from raftlease.service import Outcome
    from raftlease.storage.base import Storage
    from raftlease.transport.base import Transport

TIMER_SLACK_S = 0.001
# How long the loop blocks, GIL released, handing a Ready to the fsync thread: until the
# thread has started the save (any role), and, on a node that does not lead, until the save
# is done (no client calls wait on a follower's loop; see Node._save_ready). Past these
# bounds (a stalled disk, a snapshot being stored first) the loop goes on as _while_saving.
SAVE_START_WAIT_S = 0.001
FOLLOWER_SAVE_WAIT_S = 0.002

log = logging.getLogger("raftlease.node")


#: A node's settings: the server's one validated configuration (raftlease/settings.py), under
#: the name the node, its tests, the benchmark and the jepsen-style harness use.
NodeConfig = ServerConfig


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
        self._saved_vote = (loaded.hard_state.term, loaded.hard_state.voted_for)
        self._last_snapshot_index = self.core.applied_index
        # Nodes snapshot at different indexes: 0-7 64ths of snapshot_entries later, fixed per
        # node id. A snapshot of 10,000 leases held a node's loop for 56-345 ms on the
        # project's 2-vCPU VM, and both followers doing it at the same index left the leader
        # with no answers to count: its lease lapsed, and a follower stalled past its election
        # timeout campaigned (issue 15, docs/benchmarks.md). A hash can still give two ids
        # the same slot: this spreads, it does not ensure.
        slot = zlib.crc32(cfg.node_id.encode()) % 8
        self._snapshot_offset = slot * (cfg.snapshot_entries // 64)
        self._compaction: concurrent.futures.Future[None] | None = None
        # A snapshot being encoded, one slice per turn of the loop (see _maybe_snapshot).
        self._snapshot_job: _SnapshotJob | None = None
        self.tick_s = cfg.tick_s
        self._t0 = clock.monotonic()
        self._ticks_done = 0
        self.sleeps = 0  # times the loop went to sleep (an idle node must not spin)
        # Peer addresses: the configuration's, overridden by this node's own --peers (which
        # may name proxies); every id ever seen stays (a lagging member must still reach a
        # leader its configuration does not know yet).
        self._membership = self.core.membership
        self.peer_addresses: dict[NodeId, str] = {
            **self._membership.address_map(),
            **cfg.peers,
        }
        addresses: dict[NodeId, str] = {}
        self._client_addresses = addresses  # the service's leader hints (updated in place)
        self._update_client_addresses()
        self._warn_if_peers_differ()
        self.service = LeaseService(
            self.id,
            self.core,
            self._tick_time,
            addresses,
            table=LeaseTable.restore(loaded.snapshot.data) if loaded.snapshot else None,
            inherited_wait_grace_s=cfg.inherited_wait_grace_s,
        )
        self._inbox: deque[Message] = deque()
        self._ops: deque[_Op] = deque()
        self._wake = asyncio.Event()
        self._save_wake = asyncio.Event()  # a peer message while a Ready is being saved
        self._stopping = False
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="fsync")
        self._save_started = threading.Event()
        self.watchers: set[Callable[[LeaseEvent], None]] = set()
        self.leader_changes = 0
        # Leader-lease lapses: the lease ran out while this node led (no quorum answer to a
        # message sent in the last lease_ticks was stepped in time); see _watch_lease.
        self.lease_lapses = 0
        self._lease_until = -math.inf  # the last deadline seen while the lease was valid
        self.observer: NodeObserver = NOOP_OBSERVER  # metrics (raftlease/observe.py)

    def _tick_time(self, k: int) -> float:
        return self._t0 + k * self.tick_s

    # ------------------------------------------------------------------ inputs (any task)
    def receive(self, m: Message) -> None:
        """A peer message arrived (called by the RaftPeer servicer)."""
        self._inbox.append(m)
        self._wake.set()
        self._save_wake.set()

    async def acquire(self, cmd: Acquire, wait_s: float) -> Outcome:
        """Run the acquire procedure (LeaseService.acquire): Acquired, NotAcquired or
        Rejected; raises NotLeader (with hint) or ProposalDropped (outcome unknown: retry
        with the same request id). Cancelling the caller leaves the wait queue."""
        outcome: Outcome = await self._call(_Op("acquire", (cmd, wait_s)))
        return outcome

    async def release(self, lease_id: int) -> Outcome:
        """Released, NotFound or Rejected; raises NotLeader or ProposalDropped."""
        outcome: Outcome = await self._call(_Op("release", lease_id))
        return outcome

    async def propose(self, cmd: Command) -> ApplyResult | None:
        """Replicate ``cmd``; returns the lease table's result once it is applied here.

        Raises NotLeader (with hint) if this node is not the leader, ProposalDropped if the
        entry was overwritten by a new leader (outcome: not applied).
        """
        result: ApplyResult | None = await self._call(_Op("propose", cmd))
        return result

    async def transfer_leadership(self, target: NodeId) -> None:
        await self._call(_Op("transfer", target))

    async def _call(self, op: _Op) -> Any:
        if self._stopping:
            raise NotLeader("node is shutting down", None)
        start = self.clock.monotonic()
        self._ops.append(op)
        self._wake.set()
        try:
            result = await op.fut
        except asyncio.CancelledError:
            if op.call is not None and not op.call.done:
                self._ops.append(_Op("cancel", op.call))  # the loop cancels it
                self._wake.set()
            raise
        if op.kind in ("propose", "release", "reconfigure") or (
            op.kind == "acquire" and not op.arg[1]
        ):
            # Proposal latency: a call that is only its proposal (an acquire may also wait
            # for a handover, which is not replication latency).
            self.observer.on_proposal_applied(self.clock.monotonic() - start)
        return result

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stopping

    # ------------------------------------------------------------------ queries
    @property
    def soft(self) -> SoftState:
        """Role, leader and term as of the last handled Ready (the lease service's view)."""
        return self.service.soft

    @property
    def is_leader(self) -> bool:
        return self.service.is_leader

    @property
    def leader_id(self) -> NodeId | None:
        return self.service.leader_id

    @property
    def table(self) -> LeaseTable:
        return self.service.table

    @property
    def applied_index(self) -> int:
        return self.service.applied_index

    @property
    def lease_deadline(self) -> float:
        """Clock time at which the leader lease runs out (-inf: no valid leader lease)."""
        return self.service.lease_deadline

    def leader_address(self) -> str | None:
        return self.service.leader_address()

    def client_address(self, node_id: NodeId) -> str:
        return self.cfg.client_addresses.get(node_id) or self.peer_addresses.get(node_id, "")

    # ------------------------------------------------------------------ membership
    @property
    def membership(self) -> Membership:
        """The configuration in force on this node (the newest in its log)."""
        return self.core.membership

    async def change_membership(self, op: str, node_id: NodeId, address: str = "") -> Reconfigured:
        """``op``: "add_learner" (with ``address``), "promote" or "remove". Answers once the
        change is committed and applied here. Raises MembershipError (refused, nothing
        changed; ``retryable`` says whether the same request may succeed later), NotLeader,
        or ProposalDropped (outcome unknown: list the members and retry)."""
        outcome: Reconfigured = await self._call(_Op("reconfigure", (op, node_id, address)))
        return outcome

    def membership_info(self) -> MembershipInfo:
        core = self.core
        m = core.membership
        lags = {nid: core.learner_lag(nid) for nid in m.members if nid != self.id}
        if core.role is Role.LEADER:
            lags[self.id] = 0
        return MembershipInfo(
            membership=m,
            addresses={nid: self.peer_addresses.get(nid, "") for nid in m.members},
            config_index=core.config_index,
            committed=core.config_index <= core.commit_index,
            lags=lags,
        )

    def _membership_changed(self) -> None:
        old, new = self._membership, self.core.membership
        self._membership = new
        for nid, addr in new.addresses:
            if nid not in self.cfg.peers:
                self.peer_addresses[nid] = addr
        self._update_client_addresses()
        self.transport.set_peers({str(k): v for k, v in self.peer_addresses.items()})
        log.info(
            "%s: configuration at index %d: voters %s, learners %s (was voters %s, learners %s)",
            self.id,
            self.core.config_index,
            ", ".join(new.voters) or "none",
            ", ".join(new.learners) or "none",
            ", ".join(old.voters) or "none",
            ", ".join(old.learners) or "none",
        )

    def learn_address(self, node_id: str, address: str) -> None:
        """A peer link from ``node_id`` advertised where it listens: remember it if this node
        knows no address for it yet (a leader added after this node's newest configuration
        must still be answered). A known address is never replaced this way."""
        nid = NodeId(node_id)
        if not address or nid in self.peer_addresses:
            return
        self.peer_addresses[nid] = address
        self._update_client_addresses()
        self.transport.set_peers({str(k): v for k, v in self.peer_addresses.items()})
        log.info("%s: learned the peer address of %s from its link: %s", self.id, nid, address)

    def _update_client_addresses(self) -> None:
        for nid in self.peer_addresses:
            self._client_addresses[nid] = self.client_address(nid)

    def _warn_if_peers_differ(self) -> None:
        m = self._membership
        if self.core.config_index == 0 or set(m.members) == set(self.cfg.peers):
            return
        log.warning(
            "%s: the data dir's configuration (index %d: %s) differs from --peers (%s); the "
            "configuration governs, --peers only supplies addresses",
            self.id,
            self.core.config_index,
            ", ".join(m.members),
            ", ".join(sorted(self.cfg.peers)),
        )

    def lease_ok(self) -> bool:
        """May this node serve renewals and linearizable reads at this instant?"""
        return self.service.lease_ok(self.clock.monotonic())

    def require_lease(self) -> None:
        self.service.require_lease(self.clock.monotonic())

    async def read_barrier(self) -> None:
        """Linearizable read point: leader lease valid, and everything committed is applied.
        Raises NoLeaderLease."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.service.read(fut, self.clock.monotonic())
        self._deliver_replies()
        if not fut.done():
            self._wake.set()  # the loop releases it once applied (LeaseService.tick)
        await fut

    def renew(self, lease_id: int, health: dict[str, str] | None) -> LeaseRecord | None:
        """Extend a lease by its TTL from now (leader lease required; no log write)."""
        r = self.service.renew(lease_id, health, self.clock.monotonic())
        if r is None:
            return None
        self.observer.on_renewal(r.margin_s, r.lease.ttl_ms / 1000.0)
        return r.lease

    @property
    def keeper(self) -> LeaseKeeper:
        return self.service.keeper

    @property
    def deadlines(self) -> dict[int, float]:
        return self.service.keeper.deadlines

    @property
    def health(self) -> dict[int, dict[str, str]]:
        return self.service.keeper.health

    def remaining_s(self, lease_id: int) -> float:
        return self.service.remaining_s(lease_id, self.clock.monotonic())

    # ------------------------------------------------------------------ main loop
    async def run(self) -> None:
        """Drive the core until ``stop()``. Raises StorageError (the node must exit)."""
        loop = asyncio.get_running_loop()
        self._t0 = self.clock.monotonic()
        svc = self.service
        try:
            while not self._stopping:
                inbox = self._inbox
                core = self.core
                self._catch_up_ticks()
                while inbox:
                    core.step(inbox.popleft())
                self._run_ops()
                now = self._after_step()
                svc.tick(now)
                self._deliver_replies()
                # Before the Ready, so that a busy loop (a Ready every turn) still advances
                # a snapshot being encoded; compact() needs no Ready outstanding, as here.
                self._maybe_snapshot()
                if core.has_ready():
                    rd = core.ready()
                    if await self._handle_ready(rd):
                        # Let the callers just answered reply before this loop's next turn
                        # (one more Ready, ticks, timers): their tasks run first.
                        await asyncio.sleep(0)
                    continue
                self._wake.clear()
                if self._inbox or self._ops:
                    continue
                # Sleep until the core's next timer (heartbeat, election, CheckQuorum) or the
                # service's next duty (a lease deadline, a wait running out), not every tick:
                # an idle follower then wakes only for heartbeats (W5, idle CPU). Skipped
                # ticks are caught up from the clock.
                next_tick = self._t0 + (self._ticks_done + core.ticks_until_timer()) * self.tick_s
                wake_at = min(next_tick, svc.next_wake())
                if core.lead_transferee is not None:
                    wake_at = min(wake_at, self._t0 + (self._ticks_done + 1) * self.tick_s)
                delay = max(0.0, (wake_at - self.clock.monotonic()) / self.clock.rate)
                if self._snapshot_job is not None:
                    delay = 0.0  # the next slice, once the loop has polled for I/O
                elif delay > 0.0:
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
            svc.fail_all("node stopped")
            self._deliver_replies()
            while self._ops:
                op = self._ops.popleft()
                if not op.fut.done():
                    op.fut.set_exception(NotLeader("node stopped", None))
            self._executor.shutdown(wait=True)
            pending = self._compaction
            if pending is not None and pending.exception() is not None:
                log.error("%s: storing a snapshot failed: %s", self.id, pending.exception())

    def _after_step(self) -> float:
        """After the core took inputs: the service's leader-lease deadline, and the lapse
        count. Returns the time it read."""
        svc = self.service
        svc.after_step()
        now = self.clock.monotonic()
        until = self._lease_until
        if svc.lease_deadline != until or now >= until > -math.inf:
            self._watch_lease(now)  # counts lapses only
        return now

    def _watch_lease(self, now: float) -> None:
        """Count a leader-lease lapse: the deadline last seen valid passed before a newer
        quorum answer moved it (or before the node stopped leading). Called after each
        ``after_step`` whose deadline differs from the last one seen, or has passed. Counts
        only; the lease itself is decided by the service, from the core's ticks."""
        until = self._lease_until
        deadline = self.service.lease_deadline
        if until > -math.inf and now >= until and deadline != until:
            # The lease was out from ``until`` until now (at most: the loop saw it now).
            self.lease_lapses += 1
            self.observer.on_lease_lapse(now - until)
            log.info(
                "%s: leader lease lapsed for up to %.0f ms (no quorum answer in time)",
                self.id,
                (now - until) * 1000,
            )
        if deadline > now:
            self._lease_until = deadline
        elif now >= until and deadline == until:
            return  # lapsed and not counted yet: counted when the deadline moves
        else:
            self._lease_until = -math.inf  # gave the lease up before it ran out (step-down)

    def _step_admitted(self, admits: Callable[[Message], bool]) -> None:
        """Step the inbox's messages that ``admits`` accepts, in arrival order; the others
        stay in the inbox, in their order, for a later turn."""
        inbox = self._inbox
        step = self.core.step
        held: list[Message] = []
        while inbox:
            m = inbox.popleft()
            if admits(m):
                step(m)
            else:
                held.append(m)
        inbox.extendleft(reversed(held))

    def _catch_up_ticks(self) -> None:
        """Catch the ticks up with the clock BEFORE stepping peer messages, so that no message
        is dated at a stale tick (docs/safety.md, L2); only a leader's own answers may go
        first (RaftCore.steps_before_ticks says which, and why)."""
        due = self._ticks_due()
        if self._inbox and due > self._ticks_done and self.core.role is Role.LEADER:
            # Only when ticks are behind: else the same order.
            self._step_admitted(self.core.steps_before_ticks)
        self._sync_ticks(due)

    async def _while_saving(self, save: asyncio.Future[None]) -> None:
        """Keep the clock and the heartbeats going while the fsync thread saves a Ready.

        A disk stalled for 0.2-1.9 s (seen on all three nodes at once, issue 15) used to
        stop the node: a leader neither sent heartbeats nor counted answers and lost its
        lease, a follower answered nothing and then campaigned. Now ticks go on, the
        messages ``RaftCore.steps_while_saving`` admits are stepped (the rest wait in the
        inbox, in order, for the next turn of ``run``), and what ``take_messages`` releases
        is sent at once. Client calls wait: nothing is proposed while a Ready is out."""
        if save.done():
            return
        loop = asyncio.get_running_loop()
        wake = self._save_wake
        core = self.core
        save.add_done_callback(lambda _: wake.set())
        while not save.done():
            wake.clear()
            if self._inbox or self._ticks_due() > self._ticks_done:
                self._catch_up_ticks()
                self._step_admitted(core.steps_while_saving)
                msgs = core.take_messages()
                if msgs:
                    self._send_messages(msgs)
                self._after_step()
            next_tick = self._t0 + (self._ticks_done + core.ticks_until_timer()) * self.tick_s
            delay = max(0.0, (next_tick - self.clock.monotonic()) / self.clock.rate)
            timer = loop.call_later(delay + TIMER_SLACK_S, wake.set)
            if not save.done():
                await wake.wait()
            timer.cancel()
        save.result()

    def _ticks_due(self) -> int:
        return int((self.clock.monotonic() - self._t0) / self.tick_s)

    def _sync_ticks(self, due: int) -> None:
        core = self.core
        while self._ticks_done < due:
            core.tick()
            self._ticks_done += 1

    def _run_ops(self) -> None:
        svc = self.service
        ops = self._ops
        now = self.clock.monotonic()
        while ops:
            op = ops.popleft()
            kind = op.kind
            if kind == "cancel":
                svc.cancel(op.arg)
                continue
            fut = op.fut
            if fut.done():
                continue  # its caller went away before the loop got to it
            if kind == "acquire":
                cmd, wait_s = op.arg
                op.call = svc.acquire(fut, cmd, wait_s, now)
            elif kind == "release":
                op.call = svc.release(fut, op.arg)
            elif kind == "propose":
                op.call = svc.propose(fut, op.arg)
            elif kind == "reconfigure":
                what, nid, address = op.arg
                try:
                    # Every entry carries every member's address (the bootstrap
                    # configuration has none: they come from this node's --peers).
                    current = self.core.membership
                    book = {n: self.peer_addresses.get(n, "") for n in current.members}
                    book.update(current.address_map())
                    current = Membership(
                        current.voters, current.learners, tuple(sorted(book.items()))
                    )
                    new = _changed(current, what, nid, address)
                except MembershipError as e:
                    fut.set_exception(e)
                    continue
                op.call = svc.reconfigure(fut, new)
            elif kind == "transfer":
                try:
                    self.core.transfer_leadership(op.arg)
                    fut.set_result(None)
                except (NotLeader, ProposalDropped, ValueError) as e:
                    if isinstance(e, NotLeader):
                        e = svc.not_leader()
                    fut.set_exception(e)

    def _deliver_replies(self) -> bool:
        """Hand the service's outcomes to the awaiting callers; whether there were any."""
        replies = self.service.take_replies()
        for call, outcome in replies:
            fut: asyncio.Future[Any] = call.token
            if fut.done():
                continue
            if isinstance(outcome, Exception):
                fut.set_exception(outcome)
            else:
                fut.set_result(outcome)
        return bool(replies)

    async def _handle_ready(self, rd: Ready) -> bool:
        # A leader replicates WHILE it fsyncs its own entries (Ready contract, rule 1's
        # exception; thesis §10.2.1): nothing is stepped until the save is done, and the core
        # counts our own entries only after advance(). Everything else: PERSIST BEFORE SEND.
        if self.core.membership is not self._membership:
            self._membership_changed()  # links to new members before this Ready's sends
        early = rd.may_send_before_persist(*self._saved_vote)
        if early:
            self._send(rd)
        if rd.must_fsync(*self._saved_vote):
            await self._save_ready(rd)
        if not early:
            self._send(rd)
        if rd.committed_entries:
            self.observer.on_commit_ready(rd.committed_entries)
        self._apply(rd)
        self.core.advance(rd)
        self._on_soft_state(rd.soft_state)
        return self._deliver_replies()

    def _send(self, rd: Ready) -> None:
        self._send_messages(rd.messages)

    def _send_messages(self, msgs: tuple[Message, ...]) -> None:
        self.observer.on_send(msgs)
        self.transport.send(msgs)

    async def _save_ready(self, rd: Ready) -> None:
        """Have the fsync thread save ``rd``; return once it is saved.

        The thread needs the GIL to start, which it got only once this loop polled for I/O
        again: on the VM of docs/benchmarks.md that put the leader's fsync ~0.2 ms after its
        Ready (W1 timeline), alongside its followers' fsyncs on a shared disk. So the loop
        waits, GIL released, until the save has started (bounded, SAVE_START_WAIT_S). A node
        that does not lead waits for the save itself (bounded, FOLLOWER_SAVE_WAIT_S): its
        answer to the leader waits on it anyway, and it then goes out without two hops
        through the loop. Past either bound (a stalled disk, a snapshot being stored ahead
        of it), the loop goes on in ``_while_saving``: ticks, heartbeats, answers."""
        started = self._save_started
        started.clear()
        job = self._executor.submit(self._save, rd)
        if self._compaction is None or self._compaction.done():  # nothing ahead of it
            if self.core.role is Role.LEADER:
                started.wait(SAVE_START_WAIT_S)
            else:
                concurrent.futures.wait((job,), FOLLOWER_SAVE_WAIT_S)
        if job.done():
            job.result()  # raises StorageError: the loop ends, the node must exit
            return
        await self._while_saving(asyncio.wrap_future(job))

    def _save(self, rd: Ready) -> None:
        self._save_started.set()
        start = self.clock.monotonic()
        self.storage.save(rd.hard_state, rd.snapshot, rd.entries)
        self.observer.on_save(self.clock.monotonic() - start)
        if rd.hard_state is not None:
            vote = (rd.hard_state.term, rd.hard_state.voted_for)
            if vote != self._saved_vote and vote[1] is not None:
                # One line per durable vote: the jepsen-style RI check reads these.
                log.info("%s voted for %s at term %d (persisted)", self.id, vote[1], vote[0])
            self._saved_vote = vote

    def _apply(self, rd: Ready) -> None:
        now = self.clock.monotonic()
        svc = self.service
        if rd.snapshot is not None:
            svc.apply_snapshot(rd.snapshot.data, rd.snapshot.index, now)
            self._last_snapshot_index = rd.snapshot.index
            self._snapshot_job = None  # older than what was just installed
        if rd.committed_entries:
            events = svc.apply(rd.committed_entries, now)
            for ev in events:
                self.observer.on_lease_event(ev.kind)
                for w in list(self.watchers):
                    w(ev)

    def _on_soft_state(self, soft: SoftState) -> None:
        old = self.service.soft
        if not self.service.on_soft_state(soft, self.clock.monotonic()):
            return
        self.observer.on_state_change(old, soft)
        if soft.role in (Role.PRE_CANDIDATE, Role.CANDIDATE) and soft.role is not old.role:
            log.info("%s became %s at term %d", self.id, soft.role.value, soft.term)
        if soft.role is Role.LEADER and old.role is not Role.LEADER:
            log.info("%s became leader at term %d", self.id, soft.term)
            self.leader_changes += 1
        elif old.role is Role.LEADER and soft.role is not Role.LEADER:
            log.info(
                "%s lost leadership at term %d (leader now %s)", self.id, soft.term, soft.leader_id
            )
        elif soft.leader_id != old.leader_id and soft.leader_id is not None:
            log.info("%s follows leader %s at term %d", self.id, soft.leader_id, soft.term)

    def _maybe_snapshot(self) -> None:
        """Take a snapshot every ``snapshot_entries`` applied entries, without holding the
        loop: the table is frozen in one turn (a view: pointer copies, ~2 ms for 100,000
        leases), then encoded one slice per turn (~10 ms each), then handed to the core and
        stored on the fsync thread. Encoding 100,000 leases in one go held the loop for
        ~0.5 s, longer than an election timeout (issue 15)."""
        pending = self._compaction
        if pending is not None:
            if not pending.done():
                return
            self._compaction = None
            pending.result()  # a StorageError ends the loop: the node must exit
        job = self._snapshot_job
        if job is not None:
            piece = next(job.pieces, None)
            if piece is not None:
                job.parts.append(piece)
                return
            self._snapshot_job = None
            self._compact(job.index, b"".join(job.parts), job.leases)
            return
        svc = self.service
        due = self.cfg.snapshot_entries + self._snapshot_offset
        if svc.applied_index - self._last_snapshot_index < due:
            return
        # At the service's applied index: the table's own may be lower (no-op and CONFIG
        # entries leave it unchanged).
        index = svc.applied_index
        view = svc.table.view()
        self._last_snapshot_index = index
        self._snapshot_job = _SnapshotJob(index, len(view), view.encode(compress=True), [])

    def _compact(self, index: int, data: bytes, leases: int) -> None:
        snap = self.core.compact(index, data)
        if snap is None:
            log.info(
                "%s: snapshot at index %d dropped: the log is compacted past it", self.id, index
            )
            return
        # Storing it (drop the compacted entries, write the table, fsync) runs on the fsync
        # thread, which keeps it before every later save (they wait for it); the loop
        # goes on stepping, so heartbeats are answered (they need no save) meanwhile. Until
        # it is stored, the log on disk still holds every entry: a crash loses nothing.
        self._compaction = self._executor.submit(self.storage.compact, snap)
        log.info("%s: snapshot at index %d (%d leases)", self.id, index, leases)

    # ------------------------------------------------------------------ what servers read
    def lookup(self, name: str) -> LeaseRecord | None:
        return self.service.table.get(name)

    def leases(self, prefix: str = "") -> list[LeaseRecord]:
        return self.service.table.leases(prefix)

    def waiter_count(self, name: str) -> int:
        return len(self.service.table.waiters(name))

    def lease_health(self, lease_id: int) -> dict[str, str] | None:
        """The latest keepalive payload of a lease (on the leader), if any."""
        return self.service.keeper.health.get(lease_id)

    def watch(self, callback: Callable[[LeaseEvent], None]) -> Callable[[], None]:
        """Call ``callback`` with every lease event applied here; returns the unsubscribe."""
        self.watchers.add(callback)
        return lambda: self.watchers.discard(callback)

    @property
    def members(self) -> tuple[NodeId, ...]:
        return self.core.membership.members

    def transfer_target(self) -> NodeId | None:
        """The most caught-up voting peer (on the leader), the default target of a transfer."""
        status = {p.id: p.match_index for p in self.core.peer_status() if not p.learner}
        return max(status, key=lambda k: status[k]) if status else None

    def readiness(self) -> tuple[bool, str]:
        """Is this node ready (and why): it is the leader and holds a valid leader lease, or
        it follows a leader it heard from within the minimum election timeout, counted in its
        core's ticks exactly as vote stickiness counts them. A follower's core catches its
        ticks up when its randomized election timer fires, so a follower of a dead leader
        turns unready at the latest one election timeout after the leader's last message (it
        then starts a pre-vote and forgets the leader)."""
        if self.is_leader:
            if self.lease_ok():
                return True, "leader with a valid leader lease"
            return False, "leader without a valid leader lease (no quorum heard recently)"
        leader = self.leader_id
        if leader is None or leader == self.id:
            return False, "no leader known"
        core = self.core
        since, limit = core.ticks_since_leader, core.config.election_ticks_min
        if since < limit:
            return True, f"following leader {leader}"
        return False, f"leader {leader} not heard from for {since} ticks (limit {limit})"

    def status(self) -> ClusterStatus:
        """This node's view of the cluster: itself, and (on the leader) every peer."""
        core = self.core
        ok = self.lease_ok()
        nodes = [
            MemberStatus(
                id=self.id,
                address=self.client_address(self.id),
                role=core.role.value,
                term=core.term,
                commit_index=core.commit_index,
                applied_index=self.applied_index,
                match_index=core.commit_index,
                last_index=core.last_index,
                reachable=True,
                lease_valid=ok,
                lease_remaining_ms=max(
                    0, int((self.lease_deadline - self.clock.monotonic()) * 1000)
                )
                if ok
                else 0,
                learner=self.id in core.membership.learners,
            )
        ]
        if core.role is Role.LEADER:
            hb = self.cfg.heartbeat_ticks
            for p in core.peer_status():
                since = p.ticks_since_heard
                nodes.append(
                    MemberStatus(
                        id=p.id,
                        address=self.client_address(p.id),
                        role="follower",
                        term=core.term,
                        commit_index=min(p.match_index, core.commit_index),
                        applied_index=p.applied_index,
                        match_index=p.match_index,
                        lag=max(0, core.last_index - p.match_index),
                        last_heard_ms=-1 if since < 0 else int(since * self.tick_s * 1000),
                        missed_heartbeats=max(0, since // hb - 1) if since >= 0 else -1,
                        reachable=0 <= since < self.cfg.election_ticks_min,
                        lost_entries=p.lost_entries,
                        learner=p.learner,
                    )
                )
        return ClusterStatus(
            node_id=self.id,
            cluster_id=self.cfg.cluster_id,
            leader=self.service.leader_id,
            leader_address=self.leader_address(),
            term=core.term,
            nodes=tuple(nodes),
            config_index=core.config_index,
        )


@dataclass(frozen=True, slots=True)
class MemberStatus:
    """One member as a node sees it (a leader sees its peers; others only themselves).
    ``last_heard_ms`` and ``missed_heartbeats`` are -1 when never heard (0 for itself)."""

    id: NodeId
    address: str
    role: str
    term: int
    commit_index: int
    applied_index: int
    match_index: int
    last_index: int = 0
    lag: int = 0
    last_heard_ms: int = 0
    missed_heartbeats: int = 0
    reachable: bool = True
    lease_valid: bool = False
    lease_remaining_ms: int = 0
    lost_entries: int = 0
    learner: bool = False


@dataclass(frozen=True, slots=True)
class ClusterStatus:
    node_id: NodeId
    cluster_id: str
    leader: NodeId | None
    leader_address: str | None
    term: int
    nodes: tuple[MemberStatus, ...]
    config_index: int = 0


@dataclass(frozen=True, slots=True)
class MembershipInfo:
    """The configuration in force on a node, with each member's address and (on the leader)
    how many entries it lacks."""

    membership: Membership
    addresses: dict[NodeId, str]
    config_index: int
    committed: bool
    lags: dict[NodeId, int | None]


def _changed(m: Membership, op: str, node_id: NodeId, address: str) -> Membership:
    if op == "add_learner":
        return m.with_learner(node_id, address)
    if op == "promote":
        return m.promoted(node_id)
    if op == "remove":
        return m.without(node_id)
    raise ValueError(f"unknown membership operation {op!r}")


@dataclass(slots=True, eq=False)
class _Op:
    """A caller's request to the loop (kind, argument), its future, and the service's call
    for it once the loop started it (so that a caller that goes away can cancel it)."""

    kind: str
    arg: Any
    fut: asyncio.Future[Any] = field(default_factory=lambda: _new_future())
    call: Call | None = None


def _new_future() -> asyncio.Future[Any]:
    fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    # The caller may stop listening (timeout, leadership lost) before a result or an
    # exception arrives; retrieve it so asyncio never logs it as unhandled.
    fut.add_done_callback(_ignore_result)
    return fut


def _ignore_result(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


__all__ = [
    "ClusterStatus",
    "MemberStatus",
    "MembershipInfo",
    "NoLeaderLease",
    "Node",
    "NodeConfig",
    "ServerConfig",
]


@dataclass(slots=True)
class _SnapshotJob:
    """A snapshot of the table as it was at ``index``, being encoded piece by piece."""

    index: int
    leases: int
    pieces: Iterator[bytes]
    parts: list[bytes]
