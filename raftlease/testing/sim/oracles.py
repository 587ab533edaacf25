"""The simulator's own rules (:class:`SimOracles`), checked as events happen, next to the
checkers of checkers.py. They need the simulator's view of real time and of every node:

* ``vote-stickiness`` (docs/safety.md step 1) at every vote and campaign a node sends;
* ``lease-quorum`` (L1, L3) when a leader lease starts and at each tick while it lasts;
* the CheckQuorum contact oracle (``liveness-checkquorum``) at each leader tick;
* membership: ``config-change`` when a leader appends a configuration entry (one change in
  flight, the errata rule, one voter at a time, a new voter was a learner), ``learner-ack``
  (a leader lease that needs a learner's ack) and ``removed-leader`` (a leader outside its
  committed configuration steps down) at each leader tick;
* the lease history: who held a valid leader lease when (:meth:`SimOracles.lease_history`),
  reported to the checkers as it changes.

``renew-outside-lease`` (S2) sits where renewals are served (driver.py ``_serve``),
``transfer-lease`` (T1) where leases are re-read (driver.py ``_after_input``), the
fault-free-window and post-heal checks in liveness.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from raftlease.core.membership import Membership, voter_change
from raftlease.core.messages import EntryKind, RequestVoteResponse
from raftlease.core.quorum import quorum_value
from raftlease.testing.checkers import Checkers, LivenessViolation
from raftlease.testing.sim.model import LeaseInterval, describe
from raftlease.testing.sim.scheduler import SimScheduler

if TYPE_CHECKING:
    from raftlease.core.messages import Message
    from raftlease.core.raft import RaftCore
    from raftlease.testing.sim.model import SimNode
    from raftlease.types import NodeId


class SimOracles(SimScheduler):
    """Rules checked as events happen, and the lease history (see the module docstring)."""

    checkers: Checkers
    election_ticks_min: int
    # Rule switches (see SimCluster.__init__).
    check_quorum_oracle: bool
    strict_stickiness: bool
    # Lease history: closed intervals, and node -> (start, term) of the open ones.
    lease_intervals: list[LeaseInterval]
    _lease_since: dict[NodeId, tuple[int, int]]
    _lease_due: tuple[int, int] | None  # a quiet window's (start, deadline): liveness.py

    # ================================================================ rules
    def _check_sticky(self, node: SimNode, m: Message) -> None:
        """Rule ``vote-stickiness`` (docs/safety.md, step 1): a node that acknowledged a
        leader's AppendEntries or InstallSnapshot (an ack that counts toward that leader's
        lease) neither grants a (pre-)vote to a rival nor starts a campaign of its own for a
        later term, transfers excepted, until ``election_ticks_min`` of its ticks passed:
        (E_min - 1) ticks at its fastest tick rate so far, in real time."""
        at = node.acked_at_us
        if at < 0 or m.term <= node.acked_term:
            return  # a vote in the acknowledged leader's own term cannot elect a rival
        window = (self.election_ticks_min - 1) * node.min_tick_interval_us - 2
        if self.now >= at + window:
            return
        if type(m) is RequestVoteResponse:
            if m.dst == node.acked_leader or (m.dst, m.term) in node.transfer_asks:
                return  # for the acknowledged leader itself (its old lease ends as it runs),
                # or for a transfer (its leader turned the lease off first)
            if not self.strict_stickiness and not m.pre_vote and node.term_before_vote >= m.term:
                return  # see strict_stickiness
        raise self.checkers._fail(
            "vote-stickiness",
            f"{node.id} sent {describe(m)} {(self.now - at) / 1000:.1f}ms after it acknowledged "
            f"a leader (at t={at}us); it must refuse for {window / 1000:.1f}ms "
            f"({self.election_ticks_min - 1} of its ticks)",
        )

    def check_lease_quorum(self, leader: SimNode) -> None:
        """Rule ``lease-quorum`` (docs/safety.md, L1 and L3), checked when a lease starts and
        at each of the leader's ticks while it holds one:

        * the lease is dated no later than the send ticks echoed by the answers the leader
          was actually delivered (a quorum's, itself included);
        * in real time, a majority (the leader included) cannot vote for a rival: each is
          the leader, down, paused, or inside its stickiness window, which lasts
          (E_min - 1) of its ticks after its last lease-counting ack or its boot.

        A lease counted from the wrong tick outlives the acks and windows that justify it,
        whether or not a rival happens to be elected meanwhile."""
        core = leader.core
        assert core is not None
        # Only the voters in force count (the leader itself only while it is one): a learner's
        # answers, echoed or not, justify nothing (rule ``learner-ack``).
        voters = core.voters
        echoed = leader.echoed
        acks = [core.tick_count] if core.is_voter else []
        acks += [echoed.get(p, 0) for p in voters if p != leader.id]
        justified = quorum_value(acks, len(voters))
        start = core.lease_start_tick()
        if start > justified:
            learners = [p for p in core.peers if p not in voters]
            with_learners = quorum_value(acks + [echoed.get(p, 0) for p in learners], len(voters))
            if learners and start <= with_learners:
                raise self.checkers._fail(
                    "learner-ack",
                    f"{leader.id} dates its leader lease from tick {start}, which only the "
                    f"answers of learners {learners} justify (voters {list(voters)}; "
                    f"echoed {dict(echoed)})",
                )
            raise self.checkers._fail(
                "lease-quorum",
                f"{leader.id} dates its leader lease from tick {start}, but "
                f"the answers it was delivered echo send ticks that justify {justified} at most "
                f"({dict(echoed)}; docs/safety.md L3: an ack is dated by the send tick "
                "it echoes)",
            )
        q = len(voters) // 2 + 1
        safe = 0
        now = self.now
        e1 = self.election_ticks_min - 1
        for n in self.nodes:
            if n.id not in voters:
                continue
            if n is leader or not n.up or n.paused:
                safe += 1
                continue
            window = e1 * n.min_tick_interval_us - 2
            if now < max(n.acked_at_us, n.booted_at_us) + window:
                safe += 1
        if safe >= q:
            return
        raise self.checkers._fail(
            "lease-quorum",
            f"{leader.id} holds a valid leader lease but only {safe} of the voters "
            f"{list(voters)} (itself included) are sticky, down or paused; last acks at "
            f"{[(n.id, n.acked_at_us) for n in self.nodes]} us",
        )

    def check_quorum_bound_ticks(self) -> int:
        """CheckQuorum's bound, in the leader's own ticks: 2·E_min + 2.

        The core checks its quorum every ``election_ticks_min`` ticks and needs an answer
        from a quorum since the previous check, so any window of 2·E_min + 1 ticks holds a
        complete check interval; one more tick for the message that lands on a boundary."""
        return 2 * self.election_ticks_min + 2

    def check_quorum_contact(self, node: SimNode, core: RaftCore) -> None:
        """A leader that no quorum (itself included) has delivered ANY message to over its
        last :meth:`check_quorum_bound_ticks` ticks must have stepped down (CheckQuorum).

        The oracle is the simulator's own record of deliveries, not the core's: a leader
        cut off by a partition, crashes or pauses of its peers, or a lossy link is caught
        whatever the core believes. Lenient on purpose (any message counts, even ones the
        core ignores), so it never blames a correct core."""
        if not self.check_quorum_oracle or not core.config.check_quorum:
            return
        bound = self.check_quorum_bound_ticks()
        now = core.tick_count
        if now - max(node.leader_since_tick, node.config_since_tick) < bound:
            return  # (a configuration change restarts the window: the quorum changed)
        floor = now - bound
        voters = core.voters
        heard = int(core.is_voter) + sum(
            1
            for n in self.nodes
            if n.id in voters and n is not node and node.heard_tick[n.index] >= floor
        )
        if heard >= len(voters) // 2 + 1:
            return
        raise LivenessViolation(
            "liveness-checkquorum",
            f"{node.id} is still leader of term {core.term} although only {heard} of the voters "
            f"{list(voters)} (itself included) reached it in its last {bound} ticks "
            "(bound 2*election_ticks_min+2; "
            f"{self._roles()}) (at t={self.now}us)",
        )

    # ================================================================ membership
    def check_config_change(self, node: SimNode, core: RaftCore) -> None:
        """Rule ``config-change`` (thesis §4.2 and its errata), when a leader's configuration
        in force becomes a configuration entry of its own term (it proposed a change): its
        log holds no other configuration entry above its commit index (one change at a
        time), its commit index is at an entry of its own term (it committed one first), the
        change adds or removes at most one voter, and a voter it adds was a learner."""
        log = core.log
        index = core.config_index
        if index <= log.snapshot_index or log.term_at(index) != core.term:
            return
        commit = log.committed
        prev: Membership | None = None
        pending = []
        for i in range(index - 1, log.snapshot_index, -1):
            e = log.entry(i)
            if e.kind is EntryKind.CONFIG:
                if i > commit:
                    pending.append(i)
                if prev is None:
                    prev = Membership.decode(e.data)
                if i <= commit:
                    break
        if prev is None:
            prev = log.snapshot.membership if log.snapshot is not None else None
        new = core.membership
        problem = ""
        if pending:
            problem = f"the change(s) at {pending} are not committed yet (commit {commit})"
        elif log.term_at(commit) != core.term:
            problem = (
                f"its commit index {commit} is at an entry of term {log.term_at(commit)}, not "
                f"of its term {core.term} (the errata rule)"
            )
        elif prev is not None:
            changed = voter_change(prev, new)
            if len(changed) > 1:
                problem = f"voters {sorted(changed)} change at once"
            for nid in changed & set(new.voters):
                if nid not in prev.learners:
                    problem = f"{nid} becomes a voter without having been a learner"
        if problem:
            raise self.checkers._fail(
                "config-change",
                f"leader {node.id} (term {core.term}) appended configuration {index} with "
                f"voters {list(new.voters)} learners {list(new.learners)}: {problem}",
            )

    def check_removed_leader(self, node: SimNode, core: RaftCore) -> None:
        """Rule ``removed-leader`` (thesis §4.2.2), at each leader tick: a leader that is not
        a voter of its configuration in force, once that configuration is committed, steps
        down within 2 of its ticks (the core steps down one tick after the commit)."""
        if core.is_voter or core.config_index > core.commit_index:
            node.removed_since_tick = -1
            return
        if node.removed_since_tick < 0:
            node.removed_since_tick = core.tick_count
            return
        if core.tick_count - node.removed_since_tick > 2:
            ticks = core.tick_count - node.removed_since_tick
            raise self.checkers._fail(
                "removed-leader",
                f"{node.id} still leads term {core.term} {ticks} ticks after its removal "
                f"(configuration {core.config_index}, voters {list(core.voters)}) committed",
            )

    # ================================================================ lease history
    def _set_lease(self, node: SimNode, valid: bool, term: int) -> None:
        if valid == node.lease:
            return
        node.lease = valid
        if valid:
            self._lease_due = None
            self._lease_since[node.id] = (self.now, term)
            self.check_lease_quorum(node)
            self._log(f"{node.id} LEASE start term={term}")
        else:
            start, t = self._lease_since.pop(node.id)
            self.lease_intervals.append(LeaseInterval(node.id, t, start, self.now))
            self._log(f"{node.id} LEASE end term={t}")
        self.checkers.on_lease(node.id, valid)

    def lease_history(self) -> list[LeaseInterval]:
        """Closed lease intervals plus the ones still open (end_us = -1), by start time."""
        out = list(self.lease_intervals)
        for nid, (start, term) in self._lease_since.items():
            out.append(LeaseInterval(nid, term, start, -1))
        return sorted(out, key=lambda x: x.start_us)

    def _roles(self) -> str:
        parts = []
        for n in self.nodes:
            if n.core is None:
                parts.append(f"{n.id}=down")
            else:
                parts.append(f"{n.id}={n.core.role.value}/t{n.core.term}")
        return " ".join(parts)
