"""The node driver (:class:`SimDriver`): what each event does to a node, exactly as
``raftlease/node.py`` drives its core and lease service.

After EVERY input to a core (tick, message, proposal, transfer) the driver runs the Ready
loop as the READY CONTRACT (core/ready.py) says: save hard state + snapshot + entries, then
send the messages, then apply the snapshot and committed entries, then ``advance``. The
checkers (checkers.py) observe each step as it happens.

Each node runs the lease service that ships, :class:`raftlease.service.LeaseService`, as
node.py drives it: it applies every committed entry to its lease table (snapshots carry the
state hash followed by ``table.snapshot()``), keeps lease deadlines on the node's own clock
(``local = offset + rate * real``), serves renewals under its leader lease check, runs each
client call's acquire procedure, expires leases, and acts on taking and losing office.
Nothing here restates those rules: the driver only delivers simulated clients' requests
(clients.py) over their own lossy, partitionable links, translates the service's outcomes
into replies, and models what gRPC does around a handler (a call's deadline and a client's
death cancel it).

Also here: the workload's inputs (:meth:`SimDriver.propose`, ``compact``,
``transfer_leadership``, ``campaign``, and ``reconfigure``: a membership change through the
leader's ``LeaseService.reconfigure``, as node.py's ``change_membership`` does).
Overridable hooks for planted bugs:
:meth:`SimDriver.make_service`, :meth:`SimDriver.make_keeper`,
:meth:`SimDriver._sends_before_persist`, :meth:`SimDriver.lease_ok` and
``check_renewals``.
"""

from __future__ import annotations

import functools
import math
import traceback
from typing import TYPE_CHECKING

from raftlease.core.membership import MembershipError
from raftlease.core.messages import (
    AppendEntries,
    AppendEntriesResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from raftlease.errors import NoLeaderLease, NotLeader, ProposalDropped
from raftlease.fsm.keeper import LeaseKeeper
from raftlease.fsm.leases import Rejected, Released, decompress_snapshot
from raftlease.service import Acquired, Internal, LeaseService, NotAcquired, Reconfigured
from raftlease.testing.checkers import SafetyViolation
from raftlease.testing.clients import (
    HELD,
    INTERNAL,
    INVALID,
    NOT_FOUND,
    OK,
    UNAVAILABLE,
    AcquireReq,
    ClientReply,
    ReleaseReq,
    RenewReq,
)
from raftlease.testing.sim.model import (
    HASH_LEN,
    Crashed,
    MemberChange,
    describe,
    gone,
    state_hash,
)
from raftlease.testing.sim.oracles import SimOracles
from raftlease.testing.sim.scheduler import ACTION, CREP, CREQ, MSG, TICK, Event
from raftlease.types import NodeId, Role

if TYPE_CHECKING:
    import random
    from collections.abc import Callable, Sequence

    from raftlease.core.membership import Membership
    from raftlease.core.messages import Entry, Message, Snapshot
    from raftlease.core.raft import RaftCore
    from raftlease.core.ready import Ready
    from raftlease.fsm.leases import LeaseRecord, LeaseTable
    from raftlease.service import Call, Outcome
    from raftlease.storage.memory import MemoryStorage
    from raftlease.testing.checkers import LeaseCheckers
    from raftlease.testing.clients import ClientRequest, FencedResource, SimClient
    from raftlease.testing.network import SimNetwork
    from raftlease.testing.sim.model import SimNode


class SimDriver(SimOracles):
    """Drives each node's core and lease service (see the module docstring)."""

    # Rule ``renew-outside-lease``: a renewal is answered OK only by a node that holds a valid
    # leader lease at that instant (False: leave such bugs to the end-to-end ME checks).
    check_renewals = True

    net: SimNetwork
    client_net: SimNetwork
    clients: list[SimClient]
    _client_index: dict[NodeId, int]
    lease_checks: LeaseCheckers
    resource: FencedResource
    ghosts: list[tuple[int, str, str]]  # (token, request id, why)
    failpoints: dict[str, float]
    fault_rng: random.Random
    next_command: int
    proposed: int
    leader_history: list[tuple[int, NodeId, int]]  # (time, node, term)
    # Membership changes asked of leaders (reconfigure): outcome -> count ("proposed",
    # "committed", "refused", "not-leader", "dropped"), and the committed ones in order.
    member_stats: dict[str, int]
    member_log: list[tuple[int, str]]  # (time, what) of every committed change
    _member_seq: int

    if TYPE_CHECKING:
        # Failpoints: the fault layer (faults.py) decides whether the node crashes here.

        def _acked_crash(self, node: SimNode, core: RaftCore) -> bool: ...

        def _fails(self, node: SimNode, rd: Ready, point: str) -> bool: ...

        def _maybe_fail(self, node: SimNode, rd: Ready, point: str) -> None: ...

        def _crash_now(self, node: SimNode) -> None: ...

        def resume(self, nid: str) -> None: ...

    # ================================================================ events
    def _dispatch(self, ev: Event) -> None:
        t, _, kind, idx, payload = ev
        self.now = t
        self.checkers.now_us = t
        self.lease_checks.now_us = t
        self.events += 1
        if kind == TICK:
            node = self.nodes[idx]
            if node.up and node.incarnation == payload and node.stopped:
                node.missed_ticks += 1
                if node.lease:
                    node.pause_lease_left -= 1
                    if node.pause_lease_left <= 0:  # its belief ends on its own clock
                        self._set_lease(node, False, 0)
                node.next_tick_us += node.tick_interval_us
                self._push(int(node.next_tick_us), TICK, idx, payload)
            elif node.up and node.incarnation == payload:
                core = node.core
                assert core is not None
                try:
                    core.tick()
                except SafetyViolation:
                    raise
                except Exception as exc:
                    raise self._core_error(node, "tick", exc) from exc
                self._after_input(node)
                if node.core is not None and node.core.role is Role.LEADER:
                    self.check_quorum_contact(node, node.core)
                    self.check_removed_leader(node, node.core)
                    if node.lease:
                        self.check_lease_quorum(node)
                node.next_tick_us += node.tick_interval_us
                self._push(int(node.next_tick_us), TICK, idx, payload)
        elif kind == MSG:
            self._deliver(payload)
        elif kind == ACTION:
            payload()
        elif kind == CREQ:
            self._deliver_request(payload)
        else:
            rep: ClientReply = payload
            if (rep.src, rep.dst) not in self.client_net.blocked:
                self.clients[idx].on_reply(rep)

    def _guarded(self, node: SimNode, what: str, work: Callable[[], None]) -> bool:
        """Run driver ``work`` on ``node``; False if a failpoint crashed the node meanwhile.
        Any other exception than a safety violation is the core's error."""
        try:
            work()
        except Crashed:
            return False
        except SafetyViolation:
            raise
        except Exception as exc:
            raise self._core_error(node, what, exc) from exc
        return True

    def _core_error(self, node: SimNode, what: str, exc: Exception) -> SafetyViolation:
        tb = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return SafetyViolation(
            "core-error", f"{node.id} raised during {what}: {tb} (at t={self.now}us)"
        )

    # ================================================================ inputs and Ready
    def _deliver(self, m: Message) -> None:
        node = self._by_id[m.dst]
        if not node.up or (m.src, m.dst) in self.net.blocked:
            return
        core = node.core
        assert core is not None
        if node.stopped or (node.paused and not core.steps_while_saving(m)):
            node.inbox.append(m)
            return
        node.heard_tick[self._by_id[m.src].index] = core.tick_count
        if (type(m) is AppendEntries or type(m) is InstallSnapshot) and m.term >= core.term:
            node.leader_stepped_us = self.now  # RaftCore._heard_from_leader, as it steps it
        if (
            (type(m) is AppendEntriesResponse or type(m) is InstallSnapshotResponse)
            and m.term == core.term
            and core.role is Role.LEADER
            and m.send_tick > node.echoed.get(m.src, 0)
        ):
            node.echoed[m.src] = m.send_tick
        if type(m) is RequestVote:
            node.term_before_vote = core.term
            if m.transfer:
                node.transfer_asks.add((m.src, m.term))
        if self.trace is not None:
            self._log(f"deliver {describe(m)}")
        try:
            core.step(m)
        except SafetyViolation:
            raise
        except Exception as exc:
            raise self._core_error(node, f"step({describe(m)})", exc) from exc
        self._after_input(node)

    def _send(self, m: Message) -> None:
        idx = self._by_id[m.dst].index
        for delay in self.net.plan(m.src, m.dst, type(m).__name__, self.now):
            self._push(self.now + delay, MSG, idx, m)

    def _after_input(self, node: SimNode) -> None:
        core = node.core
        assert core is not None
        chk = self.checkers
        if core.config_index != node.config_index:  # its configuration in force changed
            node.config_index = core.config_index
            node.config_since_tick = core.tick_count
            if self.trace is not None:
                m = core.membership
                self._log(
                    f"{node.id} config {core.config_index}: voters {list(m.voters)} "
                    f"learners {list(m.learners)}"
                )
            if core.role is Role.LEADER:
                self.check_config_change(node, core)
        if node.saving is not None:
            # node.py's save window (Node._while_saving): send what the core releases; no
            # service duties and no Ready until the save is done.
            msgs = core.take_messages()
            if msgs:
                self._send_all(node, msgs)
        else:
            self._duties(node)  # node.py: every loop iteration, before the Ready
        if core.role is Role.LEADER and self.failpoints and self._acked_crash(node, core):
            return
        if (
            node.saving is None
            and core.has_ready()
            and not self._guarded(node, "the Ready loop", lambda: self._ready_loop(node, core))
        ):
            return  # a failpoint crashed it
        term = core.term
        role = core.role
        if term != node.seen_term:
            chk.on_term(node.id, term)
        if role is not node.seen_role or term != node.seen_term:
            if role is Role.LEADER:
                c, _ = chk.committed_probe(term)
                chk.on_become_leader(
                    node.id,
                    term,
                    core.log.last_index,
                    core.log.snapshot_index,
                    core.log.term_at(c) if c > 0 else None,
                )
                self.leader_history.append((self.now, node.id, term))
                node.leader_since_tick = core.tick_count
                node.echoed = {}
                node.removed_since_tick = -1
                self.on_leader_elected(node)
            if self.trace is not None:
                self._log(f"{node.id} {node.seen_role.value}->{role.value} term={term}")
            node.seen_role = role
            node.seen_term = term
        valid = role is Role.LEADER and core.lease_valid()
        if valid and node.timeout_now_term == term:
            # Rule ``transfer-lease`` (docs/safety.md, T1): a leader that sent TimeoutNow
            # (whose target may now campaign past stickiness) has no lease for the rest of
            # its term.
            raise self.checkers._fail(
                "transfer-lease",
                f"{node.id} holds a valid leader lease in term {term} after it sent TimeoutNow",
            )
        if valid != node.lease:
            self._set_lease(node, valid, term)
        if node.service is not None:
            self._schedule_wake(node, node.service)

    def _persist(self, node: SimNode, core: RaftCore, rd: Ready) -> None:
        if rd.hard_state is None and rd.snapshot is None and not rd.entries:
            return
        chk = self.checkers
        nid = node.id
        if rd.hard_state is not None:
            # The durable term never goes back. (The core's term may have moved on while this
            # Ready was being saved: a tick can start an election in the save window.)
            stored = node.storage.hard_state.term
            if rd.hard_state.term < stored:
                raise chk._fail(
                    "term-monotonic",
                    f"{nid} stores term {rd.hard_state.term} over its stored term {stored}",
                )
        if rd.entries:
            first = rd.entries[0].index
            prev_term = core.log.term_at(first - 1)
            if prev_term is None:
                raise SafetyViolation(
                    "driver",
                    f"{nid} must persist entries from {first} but has no term at "
                    f"{first - 1} (at t={self.now}us)",
                )
            chk.on_save(nid, rd.entries, prev_term)
        if rd.snapshot is not None:
            chk.on_snapshot_durable(nid, rd.snapshot.index, rd.snapshot.term)
        node.storage.save(rd.hard_state, rd.snapshot, rd.entries)
        # Durable now: the core's log (and so its configuration in force) is the stored one.
        chk.on_durable_config(nid, core.membership)

    def _send_all(self, node: SimNode, messages: tuple[Message, ...]) -> None:
        chk = self.checkers
        for m in messages:
            t = type(m)
            if t is RequestVoteResponse:
                if m.granted:  # type: ignore[union-attr]
                    if not m.pre_vote:  # type: ignore[union-attr]
                        chk.on_vote_granted(m.src, m.term, m.dst)
                    self._check_sticky(node, m)
            elif t is RequestVote:
                if not m.pre_vote:  # type: ignore[union-attr]
                    chk.on_vote_granted(m.src, m.term, m.src)  # a candidate's vote for itself
                if not m.transfer:  # type: ignore[union-attr]
                    self._check_sticky(node, m)
            elif t is TimeoutNow:
                node.timeout_now_term = m.term
            elif (t is AppendEntriesResponse or t is InstallSnapshotResponse) and m.send_tick:  # type: ignore[union-attr]
                # It counts toward the leader's lease. The node's stickiness window runs from
                # the last leader message it STEPPED (each one restarts its election timer),
                # at or after the one this answers; the answer may leave later, after a
                # slow save.
                stepped = node.leader_stepped_us
                node.acked_at_us = max(node.acked_at_us, stepped if stepped >= 0 else self.now)
                node.acked_term = m.term
                node.acked_leader = m.dst
            self._send(m)

    def _ready_loop(self, node: SimNode, core: RaftCore) -> None:
        for _ in range(10_000):
            rd = core.ready()
            early = self._sends_before_persist(node.storage, rd)
            self._begin_ready(node, rd, early)
            delay = self._save_delay(node, rd)
            if delay:
                self._slow_save(node, rd, early, delay)
                return
            self._persist(node, core, rd)
            self._finish_ready(node, core, rd, early)
            if not core.has_ready():
                return
        raise SafetyViolation("driver", f"{node.id}: Ready loop did not settle (at t={self.now}us)")

    def _begin_ready(self, node: SimNode, rd: Ready, early: bool) -> None:
        """Up to the save: a leader replicates BEFORE its own fsync (ready.py, rule 1's
        exception; node.py does it). ``before-send`` there: persisted, but every message was
        lost (a crash right after the fsync while the network dropped the sends)."""
        fps = self.failpoints
        if early:
            if fps and self._fails(node, rd, "before-send"):
                assert node.core is not None
                self._persist(node, node.core, rd)
                self._crash_now(node)
            self._send_all(node, rd.messages)
        # A crash before the fsync loses this whole Ready (nothing persisted; sent only if
        # early: then followers may have what the leader lost).
        if fps:
            self._maybe_fail(node, rd, "before-save")

    def _finish_ready(self, node: SimNode, core: RaftCore, rd: Ready, early: bool) -> None:
        """The node saw its save (1. PERSIST, ``_persist``) done: 2. SEND (unless sent early),
        3. APPLY, 4. ADVANCE."""
        chk = self.checkers
        nid = node.id
        fps = self.failpoints
        if not early:
            if fps:
                self._maybe_fail(node, rd, "before-send")
            self._send_all(node, rd.messages)
        if fps:
            self._maybe_fail(node, rd, "after-send")
        # 3. APPLY the snapshot, then committed entries (node.py ``_apply``).
        svc = node.service
        assert svc is not None
        if rd.snapshot is not None:
            snap = rd.snapshot
            chk.on_snapshot_applied(nid, snap, snap.data[:HASH_LEN])
            node.applied_index = snap.index
            node.state_hash = snap.data[:HASH_LEN]
            svc.apply_snapshot(snap.data[HASH_LEN:], snap.index, self.local_clock(node))
            self.lease_checks.on_table_restored(
                nid, snap.index, decompress_snapshot(snap.data[HASH_LEN:])
            )
            self._log(f"{nid} installed snapshot {snap.index}/{snap.term}")
        if rd.committed_entries:
            self._apply_entries(node, svc, rd.committed_entries)
        if fps:
            self._maybe_fail(node, rd, "after-apply")
        # 4. ADVANCE, then the soft state (node.py ``_on_soft_state``).
        core.advance(rd)
        soft = rd.soft_state
        if svc.on_soft_state(soft, self.local_clock(node)):
            self._log(f"{nid} soft state: {soft.role.value} leader={soft.leader_id}")
        self._send_replies(node, svc)
        self._duties(node)  # node.py: the next loop iteration

    def _save_delay(self, node: SimNode, rd: Ready) -> int:
        """How long this Ready's fsync takes: 0 (at once) unless the node's disk is slow
        (SimFaults.slow_disk) and there is something to fsync (node.py skips the rest)."""
        if self.now >= node.slow_until_us:
            return 0
        hs = node.storage.hard_state
        if not rd.must_fsync(hs.term, hs.voted_for):
            return 0
        return self.fault_rng.randint(*node.slow_save_us)

    def _slow_save(self, node: SimNode, rd: Ready, early: bool, delay: int) -> None:
        """Start a save that takes ``delay``: the node takes ticks and what the core admits
        meanwhile (node.py's save window); the rest waits as for a paused node. A crash
        before it is done loses the Ready. A node stopped (SIGSTOP) meanwhile takes nothing;
        its fsync still ends on time, and it finishes the Ready when it resumes."""
        node.saving = rd
        node.saved = False
        node.paused = True
        node.missed_ticks = 0
        node.inbox = []
        inc = node.incarnation
        self._log(f"{node.id} SLOW SAVE for {delay / 1000:.1f}ms")

        def done() -> None:
            if gone(node, inc) or node.saving is not rd:
                return
            core = node.core
            assert core is not None
            if not node.saved:  # the fsync ends: durable now, whether or not it is stopped
                node.saved = True
                self._persist(node, core, rd)
                self._log(f"{node.id} save done{' (stopped)' if node.stopped else ''}")
            if node.stopped:
                return  # the process sees it when it resumes (SimFaults.resume)
            node.saving = None
            node.saved = False
            finish = functools.partial(self._finish_ready, node, core, rd, early)
            if self._guarded(node, "the end of a slow save", finish):
                self.resume(node.id)  # what waited; the Ready loop goes on from there

        node.save_done = done
        self.after(delay, done)

    def _sends_before_persist(self, storage: MemoryStorage, rd: Ready) -> bool:
        """Does the driver send this Ready's messages before its fsync? (ready.py rule 1's
        exception, as node.py applies it; a planted driver bug overrides this.)"""
        hs0 = storage.hard_state
        return rd.may_send_before_persist(hs0.term, hs0.voted_for)

    # ================================================================ the lease service
    def local_clock(self, node: SimNode) -> float:
        """``node``'s monotonic clock now, in seconds (it runs while the node is down)."""
        return node.clock_local_s + node.rate * (self.now - node.clock_real_us) / 1e6

    def make_keeper(self) -> LeaseKeeper:
        """A fresh LeaseKeeper for a booting node (planted bugs override this)."""
        return LeaseKeeper()

    def make_service(self, node: SimNode, core: RaftCore, table: LeaseTable | None) -> LeaseService:
        """The lease service of a booting node: the shipped class (planted bugs override
        this). Its leader-lease deadline comes from the core's tick arithmetic, as in
        node.py; the simulator ticks exactly at each tick boundary and re-reads the lease
        after every tick, so a tick still ahead maps to "not yet" (inf) and a tick already
        reached to "passed" (-inf). Leader hints are node ids."""

        def tick_time(k: int) -> float:
            return math.inf if k > core.tick_count else -math.inf

        return LeaseService(
            node.id,
            core,
            tick_time,
            {nid: nid for nid in self.ids},
            table=table,
            keeper=self.make_keeper(),
        )

    def lease_ok(self, node: SimNode) -> bool:
        """May ``node`` serve renewals at this instant? (LeaseService.lease_ok)"""
        svc = node.service
        return svc is not None and svc.lease_ok(self.local_clock(node))

    def _duties(self, node: SimNode) -> None:
        """What node.py's loop does on every turn: the leader-lease deadline from the core,
        the service's time-driven duties (expiry, waits that ran out, queues to leave, the
        cancel of inherited waits), and the outcomes those produced."""
        svc = node.service
        if svc is None:
            return
        svc.after_step()
        svc.tick(self.local_clock(node))
        self._send_replies(node, svc)

    def _schedule_wake(self, node: SimNode, svc: LeaseService) -> None:
        """node.py sleeps until the service's next duty: wake the node then (a duty already
        due runs at its next tick, so that a refused proposal cannot spin the scheduler)."""
        at = svc.next_wake()
        local = self.local_clock(node)
        if not (local < at < node.wake_at):
            return
        node.wake_at = at

        inc = node.incarnation

        def wake() -> None:
            if gone(node, inc) or node.wake_at != at:
                return
            if node.paused:
                node.deferred.append(wake)
                return
            node.wake_at = math.inf
            self._after_input(node)

        # Rounded up, so the node wakes at or after ``at`` (never in the same instant).
        self.after(max(1, math.ceil((at - local) * 1e6 / node.rate)), wake)

    def _apply_entries(self, node: SimNode, svc: LeaseService, entries: Sequence[Entry]) -> None:
        chk = self.checkers
        lchk = self.lease_checks
        nid = node.id
        h = node.state_hash
        applied = node.applied_index
        log = node.applied_log
        for e in entries:
            h = state_hash(h, e)
            chk.on_apply(nid, applied, e, h)
            chk.check_committed(nid, e)
            applied = e.index
            log[applied] = (e.term, int(e.kind), e.data)
        node.state_hash = h
        node.applied_index = applied
        events = svc.apply(entries, self.local_clock(node))
        per_entry: dict[int, int] = {}
        for ev in events:
            per_entry[ev.index] = per_entry.get(ev.index, 0) + 1
        for ev in events:
            lease = ev.lease
            if (
                ev.kind == "acquired"
                and per_entry[ev.index] > 1
                and lease.fencing_token not in lchk.grants
            ):
                self._check_handover(lease)
            lchk.on_lease_event(nid, ev.kind, lease, ev.index)
            if self.trace is not None:
                self._log(
                    f"{nid} applied {ev.kind} {lease.name} token={lease.fencing_token} "
                    f"holder={lease.holder}"
                )
        if self.trace is not None:
            self._log(f"{nid} applied {entries[0].index}..{entries[-1].index}/{entries[-1].term}")

    def _send_replies(self, node: SimNode, svc: LeaseService) -> None:
        """Translate the service's outcomes into replies, as server.py translates them into
        gRPC answers."""
        for call, outcome in svc.take_replies():
            if isinstance(call.token, MemberChange):
                self._member_outcome(node, call.token, outcome)
                continue
            self._reply(self._reply_for(node, call, outcome))

    def _reply_for(self, node: SimNode, call: Call, outcome: Outcome) -> ClientReply:
        req: ClientRequest = call.token
        if isinstance(outcome, Exception):
            return self._unavailable(node, req, outcome)
        if isinstance(outcome, Acquired):
            return ClientReply(node.id, req.src, req.seq, OK, outcome.lease)
        if isinstance(outcome, NotAcquired):
            return ClientReply(node.id, req.src, req.seq, HELD, outcome.current)
        if isinstance(req, ReleaseReq):
            status = OK if isinstance(outcome, Released) else NOT_FOUND
            return ClientReply(node.id, req.src, req.seq, status)
        if isinstance(outcome, Rejected):
            return ClientReply(node.id, req.src, req.seq, INVALID)
        # server.py: ``_abort(INTERNAL, f"unexpected result {result!r}")``: must not happen.
        what = outcome.message if isinstance(outcome, Internal) else repr(outcome)
        self.lease_checks.stats.server_errors += 1
        self._log(f"{node.id} answers {req.src} INTERNAL: {what}")
        return ClientReply(node.id, req.src, req.seq, INTERNAL)

    def _unavailable(self, node: SimNode, req: ClientRequest, e: Exception) -> ClientReply:
        """UNAVAILABLE, with the leader this node names (none when it is the leader itself
        without a valid leader lease: retry there). ProposalDropped: the outcome is unknown."""
        if isinstance(e, NotLeader):
            lid = e.leader_id
        else:
            lid = node.service.leader_id if node.service is not None else None
        hint = NodeId(lid) if lid is not None and lid != node.id else None
        return ClientReply(node.id, req.src, req.seq, UNAVAILABLE, hint=hint)

    def _node_timer(self, node: SimNode, delay_s: float, action: Callable[[], None]) -> None:
        """Run ``action`` after ``delay_s`` on ``node``'s clock, in this incarnation; a paused
        node runs it when it resumes."""
        inc = node.incarnation

        def fire() -> None:
            if not node.up or node.incarnation != inc:
                return
            if node.paused:
                node.deferred.append(action)
            else:
                action()

        self.after(max(0, int(delay_s * 1e6 / node.rate)), fire)

    def _cancel_call(self, node: SimNode, call: Call) -> None:
        """The client went away (deadline, disconnect): gRPC cancels the handler, which
        cancels its call (LeaseService.cancel); no answer is sent."""
        svc = node.service
        if svc is None or call.done:
            return
        svc.cancel(call)
        self._after_input(node)

    def client_gone(self, client: NodeId) -> None:
        """A client process died: its connections close and every node cancels its calls."""
        for node in self.nodes:
            if node.up and node.service is not None:
                for call in node.service.calls():
                    if isinstance(call.token, MemberChange) or call.token.src != client:
                        continue
                    if node.paused:
                        node.deferred.append(functools.partial(self._cancel_call, node, call))
                    else:
                        self._cancel_call(node, call)

    def _check_handover(self, lease: LeaseRecord) -> None:
        """A queued acquire was just granted (first apply anywhere): does its client still
        wait for it? If not, its waiter outlived the call (a "ghost" handover): the name is
        blocked until the grant expires, although commands.py says the leader cancels the
        wait when the client goes away."""
        idx = self._client_index.get(NodeId(lease.holder))
        if idx is None:
            return
        c = self.clients[idx]
        if not (c.acquiring and c.request_id == lease.request_id):
            why = c.abandoned.get(lease.request_id, "unknown")
            self.lease_checks.stats.ghost_handovers += 1
            self.ghosts.append((lease.fencing_token, lease.request_id, why))
            self._log(
                f"GHOST handover: {lease.name} token={lease.fencing_token} to "
                f"{lease.request_id}, which {c.id} no longer waits for ({why})"
            )

    # ---------------------------------------------------------------- client traffic
    def client(self, cid: str) -> SimClient:
        return self.clients[self._client_index[NodeId(cid)]]

    def client_send(self, req: ClientRequest) -> None:
        idx = self._by_id[req.dst].index
        for delay in self.client_net.plan(req.src, req.dst, "", self.now):
            self._push(self.now + delay, CREQ, idx, req)

    def _reply(self, rep: ClientReply) -> None:
        idx = self._client_index[rep.dst]
        for delay in self.client_net.plan(rep.src, rep.dst, "", self.now):
            self._push(self.now + delay, CREP, idx, rep)

    def client_log(self, text: str) -> None:
        self._log(text)

    def resource_write(
        self, client: NodeId, name: str, token: int, lease_id: int, delay_us: int
    ) -> None:
        """``client`` writes to the fenced resource; the write lands ``delay_us`` later."""

        def land() -> None:
            accepted = self.resource.write(name, token)
            self.lease_checks.on_write(client, name, token, lease_id, accepted)
            if not accepted or self.trace is not None:
                self._log(
                    f"resource {'accepts' if accepted else 'REJECTS'} {client}'s write to "
                    f"{name} token={token}"
                )

        self.after(delay_us, land)

    def _deliver_request(self, req: ClientRequest) -> None:
        node = self._by_id[req.dst]
        if (req.src, req.dst) in self.client_net.blocked:
            return
        if self.clients[self._client_index[req.src]].down:
            return  # its connection closed with the process: the request never arrives
        if not node.up:  # connection refused: the client learns at once
            self._reply(ClientReply(node.id, req.src, req.seq, UNAVAILABLE))
            return
        if node.paused:
            node.inbox.append(req)
            return
        self._serve(node, req)

    def _serve(self, node: SimNode, req: ClientRequest) -> None:
        """server.py's LeaseServicer: the request goes to the node's LeaseService."""
        core = node.core
        svc = node.service
        assert core is not None
        assert svc is not None
        now = self.local_clock(node)
        if isinstance(req, RenewReq):
            try:
                renewed = svc.renew(req.lease_id, None, now)
            except NoLeaderLease as e:
                self._reply(self._unavailable(node, req, e))
                return
            if (
                renewed is not None
                and self.check_renewals
                and node.id not in self.checkers.lease_holders
            ):
                # Rule ``renew-outside-lease`` (docs/safety.md, S2: renewals happen only
                # during the serving leader's lease, which no new leader can overlap).
                raise SafetyViolation(
                    "renew-outside-lease",
                    f"{node.id} (term {core.term}, {core.role.value}) renewed lease "
                    f"{req.lease_id} for {req.src} without a valid leader lease "
                    f"(at t={self.now}us)",
                )
            if renewed is None:
                self._reply(ClientReply(node.id, req.src, req.seq, NOT_FOUND))
            else:
                ttl_ms = renewed.lease.ttl_ms
                self._reply(ClientReply(node.id, req.src, req.seq, OK, ttl_ms=ttl_ms))
            return
        try:
            if isinstance(req, AcquireReq):
                call = svc.acquire(req, req.cmd, req.wait_ms / 1000.0, now)
            else:
                call = svc.release(req, req.lease_id)
        except SafetyViolation:
            raise
        except Exception as exc:
            raise self._core_error(node, "propose", exc) from exc
        if not call.done and req.timeout_us > 0:  # gRPC cancels the handler at its deadline
            self._node_timer(node, req.timeout_us / 1e6, lambda: self._cancel_call(node, call))
        if self.trace is not None:
            if isinstance(req, AcquireReq):
                what = f"Acquire {req.cmd.name} {req.cmd.request_id} wait_ms={req.wait_ms}"
            else:
                what = f"Release {req.lease_id}"
            self._log(f"{node.id} serves {what} from {req.src}")
        self._after_input(node)

    # ================================================================ workload inputs
    def propose(self, data: bytes | None = None) -> tuple[int, int] | None:
        """Propose a command to the current leader; its (index, term), or None if refused.

        The default command is 8 bytes of unique id followed by 8 random bytes.
        """
        node = self.leader()
        if node is None or node.core is None:
            return None
        if data is None:
            data = self.next_command.to_bytes(8, "big") + self.workload_rng.randbytes(8)
            self.next_command += 1
        try:
            where = node.core.propose(data)
        except (NotLeader, ProposalDropped):
            return None
        except SafetyViolation:
            raise
        except Exception as exc:
            raise self._core_error(node, "propose", exc) from exc
        self.proposed += 1
        if self.trace is not None:
            self._log(f"{node.id} propose {data[:8].hex()} -> {where[0]}/{where[1]}")
        self._after_input(node)
        return where

    def compact(self, nid: str) -> Snapshot | None:
        """Snapshot a node at its applied index and compact, in one go.

        The payload is the state hash followed by ``table.snapshot()`` (node.py's payload).
        """
        if not self.begin_snapshot(nid):
            return None
        return self.finish_snapshot(nid)

    def begin_snapshot(self, nid: str) -> bool:
        """Freeze a node's table at its applied index, as node.py does before it encodes
        the table over many turns; :meth:`finish_snapshot` compacts at that index later."""
        node = self.node(nid)
        core = node.core
        if (
            not node.up
            or node.paused
            or core is None
            or node.service is None
            or node.snapshot_job is not None
            or node.applied_index <= core.log.snapshot_index
        ):
            return False
        # The table's own applied_index may be lower (no-op and CONFIG entries leave it);
        # the snapshot is at the node's, as in node.py.
        node.snapshot_job = (node.applied_index, node.state_hash, node.service.table.view())
        return True

    def finish_snapshot(self, nid: str) -> Snapshot | None:
        """Encode the frozen table and compact the core at its index; the core drops it
        (None) when the log was compacted past it meanwhile (an InstallSnapshot)."""
        node = self.node(nid)
        core = node.core
        job = node.snapshot_job
        if not node.up or node.paused or core is None or job is None:
            return None
        node.snapshot_job = None
        index, state_hash, view = job
        payload = b"".join(view.encode(compress=True))  # as node.py keeps it
        table = decompress_snapshot(payload)
        try:
            snap = core.compact(index, state_hash + payload)
        except SafetyViolation:
            raise
        except Exception as exc:
            raise self._core_error(node, "compact", exc) from exc
        if snap is None:
            self._log(f"{node.id} snapshot at {index} dropped: compacted past it")
            return None
        self.lease_checks.on_snapshot_taken(node.id, snap.index, table)
        self.checkers.on_snapshot_durable(node.id, snap.index)
        node.storage.compact(snap)
        self._log(f"{node.id} compact to {snap.index}/{snap.term}")
        return snap

    def transfer_leadership(self, target: str | None = None) -> NodeId | None:
        """Ask the leader to hand over to ``target`` (a random peer by default)."""
        node = self.leader()
        if node is None or node.core is None:
            return None
        peers = [nid for nid in node.core.voters if nid != node.id]
        if not peers:
            return None
        to = NodeId(target) if target is not None else self.workload_rng.choice(peers)
        try:
            node.core.transfer_leadership(to)
        except NotLeader:
            return None
        except SafetyViolation:
            raise
        except Exception as exc:
            raise self._core_error(node, "transfer_leadership", exc) from exc
        self._log(f"{node.id} transfer leadership to {to}")
        self._after_input(node)
        return to

    def reconfigure(self, new: Membership, what: str, target: NodeId) -> MemberChange | None:
        """Ask the current leader's LeaseService to change the membership to ``new`` (one
        server's change; the core decides what is allowed). Returns the call's token, or None
        without a leader. The outcome is counted in ``member_stats`` when the service ends
        the call (``_member_outcome``)."""
        node = self.leader()
        if node is None or node.core is None or node.service is None:
            return None
        self._member_seq += 1
        token = MemberChange(self._member_seq, what, target)
        try:
            node.service.reconfigure(token, new)
        except SafetyViolation:
            raise
        except Exception as exc:
            raise self._core_error(node, f"reconfigure({what})", exc) from exc
        self._log(f"{node.id} reconfigure #{token.seq}: {what}")
        self._after_input(node)
        return token

    def _member_outcome(self, node: SimNode, token: MemberChange, outcome: Outcome) -> None:
        if isinstance(outcome, Reconfigured):
            kind = "committed"
            self.member_log.append((self.now, token.what))
            self.on_member_committed(node, token)
        elif isinstance(outcome, MembershipError):
            kind = "refused"
        elif isinstance(outcome, NotLeader):
            kind = "not-leader"
        else:
            kind = "dropped"
        self.member_stats[kind] = self.member_stats.get(kind, 0) + 1
        self._log(f"{node.id} reconfigure #{token.seq} ({token.what}): {kind}: {outcome}")

    def on_leader_elected(self, node: SimNode) -> None:
        """``node`` just became leader (the operator layer, members.py, may act at once)."""

    def on_member_committed(self, node: SimNode, token: MemberChange) -> None:
        """A membership change committed and applied on the leader ``node`` (the operator
        layer, members.py, acts on it)."""

    def campaign(self, nid: str) -> None:
        node = self.node(nid)
        if node.up and not node.paused and node.core is not None:
            node.core.campaign()
            self._after_input(node)

    def _workload_propose(self) -> None:
        self.propose()

    def _workload_compact(self) -> None:
        """Begin a snapshot on a node and finish it 0-10 ms later, as node.py encodes a big
        table over many turns: the entries applied (and snapshots installed) meanwhile are
        what the core's compact() must take. A job left by a pause is finished first."""
        up = [n for n in self.nodes if n.up]
        if up:
            nid = self.workload_rng.choice(up).id
            self.finish_snapshot(nid)
            if self.begin_snapshot(nid):

                def finish() -> None:
                    self.finish_snapshot(nid)

                self.after(self.workload_rng.randint(0, 10_000), finish)

    def _workload_transfer(self) -> None:
        self.transfer_leadership()
