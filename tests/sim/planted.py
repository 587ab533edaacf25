"""Planted bugs: RaftCore subclasses (and lease-server SimCluster subclasses) that each break
one safety rule on purpose.

The planted-bug tests run the simulator with these cores and assert that the checkers find
the expected violation within a stated number of seeds: proof that the checkers have teeth.
Every subclass overrides as little as possible; the rest is the production core.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from raftlease.core.messages import (
    AppendEntries,
    Entry,
    RequestVote,
    RequestVoteResponse,
    Snapshot,
)
from raftlease.core.raft import NO_ACK_TICK, RaftCore
from raftlease.fsm.keeper import LeaseKeeper
from raftlease.service import LeaseService
from raftlease.testing.clients import SimClient
from raftlease.testing.sim import SimCluster
from raftlease.types import Role

if TYPE_CHECKING:
    import random

    import pytest

    from raftlease.config import RaftConfig
    from raftlease.core.membership import Membership
    from raftlease.core.progress import Progress
    from raftlease.core.ready import HardState, Ready
    from raftlease.fsm.leases import LeaseEvent, LeaseRecord, LeaseTable
    from raftlease.storage.memory import MemoryStorage
    from raftlease.testing.sim import SimNode


class VoteWithoutLogCheckCore(RaftCore):
    """(a) Grants (pre-)votes without the Raft §5.4.1 up-to-date check."""

    def _handle_request_vote(self, m: RequestVote) -> None:
        if m.pre_vote:
            grant = m.term > self.term
            self._send(
                RequestVoteResponse(m.term if grant else self.term, self.id, m.src, grant, True)
            )
            return
        can_vote = self.voted_for is None or self.voted_for == m.src
        if can_vote and self.role in (Role.FOLLOWER, Role.PRE_CANDIDATE):
            self.voted_for = m.src
            self.election_elapsed = 0
            self._send(RequestVoteResponse(self.term, self.id, m.src, True, False))
        else:
            self._send(RequestVoteResponse(self.term, self.id, m.src, False, False))


class Figure8Core(RaftCore):
    """(b) Commits entries of earlier terms by counting replicas (Raft figure 8)."""

    def _maybe_commit(self) -> bool:
        progress = self.progress
        matches = [self.log.last_index] if self.is_voter else []
        matches += [progress[p].match_index for p in self._voter_peers if p in progress]
        ordered = sorted(matches, reverse=True) + [0] * len(self.voters)
        n = ordered[len(self.voters) // 2]
        if n > self.log.committed:  # the bug: no "term_at(n) == self.term" check
            self.log.commit_to(n)
            return True
        return False


class ForgetVoteCore(RaftCore):
    """(c) Hands the driver a HardState without ``voted_for``: the vote is never persisted."""

    def __init__(
        self,
        config: RaftConfig,
        rng: random.Random,
        hard_state: HardState | None = None,
        snapshot: Snapshot | None = None,
        entries: tuple[Entry, ...] = (),
    ) -> None:
        super().__init__(config, rng, hard_state, snapshot, entries)
        self._true_hard_state: HardState | None = None

    def ready(self) -> Ready:
        rd = super().ready()
        hs = rd.hard_state
        if hs is not None and hs.voted_for is not None:
            self._true_hard_state = hs
            rd = dataclasses.replace(rd, hard_state=dataclasses.replace(hs, voted_for=None))
        return rd

    def advance(self, rd: Ready) -> None:
        super().advance(rd)
        if self._true_hard_state is not None:
            # Keep the core's own bookkeeping honest so it does not re-emit the state forever.
            self._prev_hard = self._true_hard_state
            self._true_hard_state = None


class LeaseWithoutDriftMarginCore(RaftCore):
    """(d1) Leader lease as long as the followers' stickiness: no drift/tick margin."""

    def __init__(
        self,
        config: RaftConfig,
        rng: random.Random,
        hard_state: HardState | None = None,
        snapshot: Snapshot | None = None,
        entries: tuple[Entry, ...] = (),
    ) -> None:
        super().__init__(config, rng, hard_state, snapshot, entries)
        self.lease_ticks = config.election_ticks_min


class NoStickinessCore(RaftCore):
    """(d2) Followers grant (pre-)votes although they heard from a live leader just now."""

    def _in_lease(self) -> bool:
        return self.role is Role.LEADER


# --------------------------------------------------------------------------- lease servers
class AckUnsavedEntriesCore(RaftCore):
    """A follower that, while it saves a Ready (the save window), acknowledges entries it
    holds only in memory: a heartbeat or retransmit is answered with what it holds, not with
    what is durable. The leader may then count an entry that a crash would lose."""

    def _ackable_index(self) -> int:
        return self.log.last_index


class NoRestartKeeper(LeaseKeeper):
    """(e1) ``restart_all`` keeps every deadline it already knows: a new leader honours the
    deadlines it computed when it APPLIED each grant as a follower, and ignores every renewal
    its predecessor served since."""

    def restart_all(self, table: LeaseTable, now: float) -> None:
        for rec in table.leases():
            if rec.lease_id not in self.deadlines:
                self._set(rec.lease_id, now + rec.ttl_ms / 1000.0)


class NoRestartKeeperSim(SimCluster):
    def make_keeper(self) -> LeaseKeeper:
        return NoRestartKeeper()


class NoLeaderLeaseCheckService(LeaseService):
    """(e2) Renewals are served by any node that believes it leads (no leader-lease check):
    a deposed leader that has not noticed yet keeps renewing."""

    def lease_ok(self, now: float) -> bool:
        return self.is_leader and self.applied_index >= self.core.term_start_index > 0


class RenewWithoutLeaderLeaseSim(SimCluster):
    """(e2) in the simulator: every node runs :class:`NoLeaderLeaseCheckService`."""

    def make_service(self, node: SimNode, core: RaftCore, table: LeaseTable | None) -> LeaseService:
        shipped = super().make_service(node, core, table)
        return NoLeaderLeaseCheckService(
            node.id,
            core,
            shipped.tick_time,
            shipped.addresses,
            table=table,
            keeper=shipped.keeper,
        )


class RenewWithoutLeaderLeaseEndToEndSim(RenewWithoutLeaderLeaseSim):
    """(e2) without the renewal rule (``renew-outside-lease``): only a client's belief
    outliving its grant (mutual exclusion) can reveal it."""

    check_renewals = False


# --------------------------------------------------------------------------- swarm targets
# The bugs below (with the ones above) are what tests/sim/test_swarm_planted.py plants, one at
# a time, under the DEFAULT swarm sweep (no hand-tuned mix).


class VoteBeforePersistSim(SimCluster):
    """(f) The driver sends a granted vote before its fsync: a crash in between forgets the
    vote, and the node may vote again in that term after it restarts."""

    def _sends_before_persist(self, storage: MemoryStorage, rd: Ready) -> bool:
        if any(
            type(m) is RequestVoteResponse and m.granted and not m.pre_vote for m in rd.messages
        ):
            return True
        return super()._sends_before_persist(storage, rd)


class NoCheckQuorumCore(RaftCore):
    """(g) CheckQuorum never fails: a leader cut off from its quorum never steps down (only
    liveness suffers: clients talking to it wait forever)."""

    def _quorum_active(self) -> bool:
        super()._quorum_active()
        return True


class AckArrivalLeaseCore(RaftCore):
    """(h) The leader lease counts from when an acknowledgement ARRIVES instead of from the
    send tick it echoes: a late ack stretches the lease past the followers' stickiness."""

    def _heard_from_peer(self, p: Progress, send_tick: int) -> None:
        super()._heard_from_peer(p, send_tick)
        if send_tick > NO_ACK_TICK:
            p.ack_tick = self.tick_count


class ApplyBeyondCommitCore(RaftCore):
    """(i) A follower commits (and so applies) everything it appended, not only up to the
    leader's commit index."""

    def _handle_append(self, m: AppendEntries) -> None:
        super()._handle_append(m)
        if self.role is Role.FOLLOWER and self.log.term_at(m.prev_log_index) == m.prev_log_term:
            last_new = m.prev_log_index + len(m.entries)
            if last_new > self.log.committed and self.log.term_at(last_new) is not None:
                self.log.commit_to(last_new)


class TransferKeepsLeaseCore(RaftCore):
    """(j) A leader handing over leadership keeps its lease after sending TimeoutNow: the
    target campaigns past stickiness and may lead with a lease of its own meanwhile."""

    def _maybe_send_timeout_now(self) -> None:
        super()._maybe_send_timeout_now()
        self.lease_blocked = False

    def lease_valid(self) -> bool:
        if self.role is not Role.LEADER or self.lease_ticks <= 0 or not self.committed_in_term():
            return False
        start = self.lease_start_tick()
        return start >= 0 and self.tick_count - start < self.lease_ticks


class EarlyExpiryKeeper(LeaseKeeper):
    """(k) Proposes expiry after HALF the TTL: the holder still believes it holds the lease."""

    def on_event(self, ev: LeaseEvent, now: float) -> None:
        super().on_event(ev, now)
        lease = ev.lease
        if ev.kind == "acquired" and lease.lease_id in self.deadlines:
            self._set(lease.lease_id, now + lease.ttl_ms / 2000.0)

    def renew(
        self, table: LeaseTable, lease_id: int, now: float, health: dict[str, str] | None
    ) -> LeaseRecord | None:
        rec = super().renew(table, lease_id, now, health)
        if rec is not None:
            self.deadlines[lease_id] = now + rec.ttl_ms / 2000.0
        return rec


class EarlyExpiryKeeperSim(SimCluster):
    def make_keeper(self) -> LeaseKeeper:
        return EarlyExpiryKeeper()


# Monkeypatches (applied with pytest's MonkeyPatch; undone after the test).
def plant_stale_pre_step(mp: pytest.MonkeyPatch) -> None:
    """(m) The stalled-leader bug (fixed 2026-12-03): a leader steps EVERY queued message
    before catching up its missed ticks (docs/safety.md, L2)."""
    mp.setattr(RaftCore, "steps_before_ticks", lambda self, m: self.role is Role.LEADER)


def plant_client_ack_time(mp: pytest.MonkeyPatch) -> None:
    """(n) The client counts validity from the answer's arrival instead of its send."""

    def valid_until_after(self: SimClient, t_send: float, ttl_s: float) -> float:
        return self.local() + self._effective_s(ttl_s)

    mp.setattr(SimClient, "_valid_until_after", valid_until_after)


# --------------------------------------------------------------------------- membership
# Each breaks one rule of single-server membership changes (thesis §4.2 and its errata);
# the swarm seeds that draw membership changes (sweep.MEMBERSHIP_SHARE) exercise them.


class TwoChangesInFlightCore(RaftCore):
    """(o) ``propose_membership`` without the pending-change check: a second change is
    accepted while the first is not committed, so the configuration in force can move two
    voters away from the committed one."""

    def propose_membership(self, new: Membership) -> tuple[int, int]:
        saved = self._configs
        committed = [c for c in saved if c[0] <= self.log.committed]
        self._configs = committed  # hide the pending change(s) from the check
        try:
            index, term = super().propose_membership(new)
        except BaseException:
            self._configs = saved
            raise
        self._configs = [*saved, self._configs[-1]]
        return index, term


class LearnerInQuorumCore(RaftCore):
    """(p) ``_voter_peers`` includes the learners: their acks count toward commit, the
    leader lease and CheckQuorum."""

    def _set_membership(self) -> None:
        super()._set_membership()
        self._voter_peers = self.peers


class RemovedLeaderStaysCore(RaftCore):
    """(q) A leader that removed itself never steps down once the change commits (it goes
    on leading a cluster it is not a voter of)."""

    def _tick_leader(self) -> None:
        self.is_voter = True  # skips the step-down check, and only that (_quorum_active below)
        try:
            super()._tick_leader()
        finally:
            self.is_voter = self.id in self.voters

    def _quorum_active(self) -> bool:
        progress = self.progress
        active = int(self.id in self.voters) + sum(
            1 for pid in self._voter_peers if pid in progress and progress[pid].recent_active
        )
        for p in progress.values():
            p.recent_active = False
        return active >= len(self.voters) // 2 + 1


class NoErrataCore(RaftCore):
    """(r) The errata rule dropped: a new leader accepts a membership change before it has
    committed an entry of its own term."""

    def committed_in_term(self) -> bool:
        if self._in_propose_membership:
            return self.role is Role.LEADER
        return super().committed_in_term()

    _in_propose_membership = False

    def propose_membership(self, new: Membership) -> tuple[int, int]:
        self._in_propose_membership = True
        try:
            return super().propose_membership(new)
        finally:
            self._in_propose_membership = False
