"""Planted bugs: RaftCore subclasses (and lease-server SimCluster subclasses) that each break
one safety rule on purpose.

The planted-bug tests run the simulator with these cores and assert that the checkers find
the expected violation within a stated number of seeds: proof that the checkers have teeth.
Every subclass overrides as little as possible; the rest is the production core.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from raftlease.core.messages import Entry, RequestVote, RequestVoteResponse, Snapshot
from raftlease.core.raft import RaftCore
from raftlease.fsm.keeper import LeaseKeeper
from raftlease.testing.sim import SimCluster
from raftlease.types import Role

if TYPE_CHECKING:
    import random

    from raftlease.config import RaftConfig
    from raftlease.core.ready import HardState, Ready
    from raftlease.fsm.leases import LeaseTable
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
        matches = [self.log.last_index] + [p.match_index for p in self.progress.values()]
        ordered = sorted(matches, reverse=True)
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


class RenewWithoutLeaderLeaseSim(SimCluster):
    """(e2) Renewals are served by any node that believes it leads (no leader-lease check):
    a deposed leader that has not noticed yet keeps renewing."""

    def lease_ok(self, node: SimNode) -> bool:
        core = node.core
        return (
            core is not None
            and node.soft_role is Role.LEADER
            and node.applied_index >= core.term_start_index > 0
        )
