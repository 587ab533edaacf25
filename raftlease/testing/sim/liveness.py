"""Liveness (:class:`SimLiveness`): fault-free windows during a run and the checks after the
final heal, with their bounds derived from the configuration (docs/simulator.md,
"Liveness"). The per-tick CheckQuorum oracle is in oracles.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from raftlease.testing.checkers import LivenessViolation
from raftlease.testing.sim.faults import SimFaults
from raftlease.testing.sim.model import LivenessResult, SimNode
from raftlease.types import Role

if TYPE_CHECKING:
    from collections.abc import Callable


class SimLiveness(SimFaults):
    """Quiet windows, the final heal and the post-heal checks (see the module docstring)."""

    election_ticks_max: int
    quiet_until: int  # a fault-free window lasts until then (faults are held back)
    quiet_windows: int
    _held_failpoints: dict[str, float] | None  # the failpoints a quiet window holds back

    # ================================================================ bounds
    def catch_up_us(self) -> int:
        """Worst-case time to bring the most lagging node up to the longest log.

        One round trip (at the slowest link's maximum delay, plus a tick for retransmission)
        per ``max_entries_per_append * max_inflight`` entries of backlog, rounded up.
        """
        up = [n.core for n in self.nodes if n.core is not None]
        if not up:
            return 0
        members = self.member_nodes()
        backlog = max(c.log.last_index for c in up) - min(n.applied_index for n in members)
        cfg = up[0].config
        per_round = cfg.max_entries_per_append * cfg.max_inflight
        rtt = 2 * max(p.delay_max_us for p in self.net.links.values()) + self.tick_us
        return -(-max(backlog, 0) // per_round) * rtt

    def delay_allowance_us(self) -> int:
        """Message delays in the election bounds: each election attempt waits for two round
        trips (pre-vote, vote) at the slowest link's maximum delay, three attempts; plus one
        straggler at the longest delay any link ever had (sent before the heal)."""
        rtt = 2 * max(p.delay_max_us for p in self.net.links.values())
        return 3 * 2 * rtt + self.net.max_delay_us

    def election_bound_us(self) -> int:
        """How long a cluster whose every node can talk may go without a valid leader lease:
        3·E_max ticks (a pre-vote, a vote and a split vote or two) plus the catch-up
        allowance (a new leader's no-op must commit on a majority) plus the delay allowance,
        as :meth:`check_liveness` allows after the final heal."""
        return (
            3 * self.election_ticks_max * self.tick_us
            + self.catch_up_us()
            + self.delay_allowance_us()
        )

    def member_nodes(self, lead: SimNode | None = None) -> list[SimNode]:
        """The nodes the liveness checks wait for: the members (voters and learners) of the
        configuration in force at ``lead`` (default: the current leader; without one, the
        newest committed configuration, else the bootstrap voters). A spare that never
        joined, or a node removed, is not expected to apply anything."""
        lead = lead if lead is not None else self.leader()
        if lead is not None and lead.core is not None:
            members = set(lead.core.membership.members)
        elif self.checkers.committed_config is not None:
            members = set(self.checkers.committed_config[1].members)
        else:
            members = set(self.voter_ids)
        return [n for n in self.nodes if n.id in members]

    # ================================================================ quiet windows
    def quiet_window(self, length_us: int) -> None:
        """A fault-free window: heal every partition and link, restart every crashed node,
        resume every paused one, hold failpoints back; the fault schedule skips its faults
        until ``quiet_until``. A valid leader lease must then exist within
        :meth:`election_bound_us` (else ``liveness-election``), checked at the deadline."""
        if self._held_failpoints is None:
            self._held_failpoints = self.failpoints
        self.failpoints = {}
        self.net.heal()
        self.net.reset_links(pinned=False)
        self.client_net.heal()
        self.client_net.reset_links()
        self.heal_disks()
        self.quiet_windows += 1
        for node in self.nodes:
            if not node.up:
                self.restart(node.id)
            elif node.paused:
                self.resume(node.id)
        bound = self.election_bound_us()
        length = max(length_us, bound + self.tick_us)
        self.quiet_until = self.now + length
        self._log(
            f"QUIET window for {length / 1000:.0f}ms (leader lease due in {bound / 1000:.0f}ms)"
        )
        if any(n.lease for n in self.nodes):
            self._lease_due = None
        else:
            self._lease_due = (self.now, self.now + bound)
            due = self._lease_due

            def check() -> None:
                if self._lease_due is due:
                    raise LivenessViolation(
                        "liveness-election",
                        f"no valid leader lease within {bound / 1000:.0f}ms of the fault-free "
                        f"window that began at t={due[0]}us ({self._roles()}) "
                        f"(at t={self.now}us)",
                    )

            self.at(due[1], check)
        end = self.quiet_until

        def over() -> None:
            if self.quiet_until == end and self.workload_on:
                held, self._held_failpoints = self._held_failpoints, None
                self.failpoints = held or {}
                self.net.reset_links()  # the chronic (pinned) link faults come back
                self._log("QUIET window over")

        self.at(end, over)

    # ================================================================ final heal and liveness
    def final_heal(self) -> None:
        """Stop workload and failpoints, heal partitions, clean links, restart and resume all."""
        self.workload_on = False
        self.failpoints = {}
        self._held_failpoints = None
        self._lease_due = None
        self.net.heal()
        self.net.unpin_all()
        self.client_net.heal()
        self.client_net.reset_links()
        self.heal_disks()
        self._log("FINAL HEAL")
        for node in self.nodes:
            if not node.up:
                self.restart(node.id)
            elif node.paused:
                self.resume(node.id)

    def check_liveness(
        self,
        election_bound_ticks: int | None = None,
        stable_bound_ticks: int | None = None,
        stable_ticks: int | None = None,
    ) -> LivenessResult:
        """After :meth:`final_heal`: a lease leader, then a stable one that commits everywhere.

        Bounds, from the heal, with E = election_ticks_max ticks, C = the catch-up
        allowance (:meth:`catch_up_us`: one worst-case round trip per
        ``max_entries_per_append * max_inflight`` entries of backlog, since a new leader's
        lease waits for its no-op to commit on a majority) and D = the delay allowance
        (:meth:`delay_allowance_us`: two round trips, pre-vote and vote, per election
        attempt, for three attempts, plus one straggler):
          * some node holds a valid leader lease within ``election_bound_ticks`` (3·E) + C + D;
          * a STABLE leader's lease starts within ``stable_bound_ticks`` (8·E) + C + D. Stable
            means: a fresh proposal to it is applied on every node (within E + C + the
            longest delay any link had: a straggler may hold up a FIFO link), every node
            reaches the same state hash, and it then stays leader of the same term for
            ``stable_ticks`` (5·E). (Its lease may lapse and come back meanwhile when round
            trips approach ``lease_ticks``.) A leader deposed before that (e.g. by a higher
            term left behind by a partition) counts as a disruption and the wait goes on.
        Raises :class:`LivenessViolation`.
        """
        e = self.election_ticks_max
        t = self.tick_us
        catch_up = self.catch_up_us() + self.delay_allowance_us()
        eb = (3 * e if election_bound_ticks is None else election_bound_ticks) * t + catch_up
        stable_bound = 8 * e if stable_bound_ticks is None else stable_bound_ticks
        deadline = self.now + stable_bound * t + catch_up
        sb = (5 * e if stable_ticks is None else stable_ticks) * t
        t0 = self.now
        first_lease_us = -1
        disruptions = 0
        while True:
            if not self.run_until_true(
                lambda: any(n.lease for n in self.nodes), max(0, deadline - self.now)
            ):
                raise LivenessViolation(
                    "liveness-stable" if first_lease_us >= 0 else "liveness-election",
                    f"no stable leader with a valid lease within {(deadline - t0) // t} ticks "
                    f"of the heal at t={t0}us ({disruptions} disruptions; {self._roles()})",
                )
            if first_lease_us < 0:
                first_lease_us = self.now - t0
                if first_lease_us > eb:
                    raise LivenessViolation(
                        "liveness-election",
                        f"the first leader lease after the heal at t={t0}us began only after "
                        f"{first_lease_us / t:.1f} ticks (bound {eb / t:.1f} ticks, of which "
                        f"{catch_up / t:.1f} catch-up and message delays)",
                    )
            lead = next(n for n in self.nodes if n.lease)
            assert lead.core is not None
            term = lead.core.term
            lease_start = self.now

            def lost(lead: SimNode = lead, term: int = term) -> bool:
                core = lead.core
                return core is None or core.role is not Role.LEADER or core.term != term

            where = self.propose()
            if where is None:
                raise LivenessViolation(
                    "liveness-commit", f"{lead.id} refused a proposal at t={self.now}us"
                )
            index = where[0]
            # A message sent before the heal on a slow link may still hold up a FIFO link.
            allowance = e * t + self.catch_up_us() + self.net.max_delay_us

            def done_or_lost(
                index: int = index, lost: Callable[[], bool] = lost, lead: SimNode = lead
            ) -> bool:
                return lost() or all(n.applied_index >= index for n in self.member_nodes(lead))

            t1 = self.now
            if not self.run_until_true(done_or_lost, allowance):
                raise LivenessViolation(
                    "liveness-commit",
                    f"proposal {where} not applied on every node within "
                    f"{allowance / t:.1f} ticks (applied: "
                    f"{[(n.id, n.applied_index) for n in self.member_nodes(lead)]}; "
                    f"{self._roles()})",
                )
            if lost():
                disruptions += 1
                continue
            commit_us = self.now - t1
            if self.run_until_true(lost, sb):
                disruptions += 1
                continue

            # Lease traffic (client acquires, the leader's expiries) goes on after the heal, so
            # wait (a commit allowance at most) for an instant at which every node applied
            # the same prefix.
            def converged(lead: SimNode = lead) -> bool:
                members = self.member_nodes(lead)
                return len({(n.applied_index, n.state_hash) for n in members}) == 1

            if not self.run_until_true(converged, allowance):
                states = [
                    (n.id, n.applied_index, n.state_hash.hex()[:8]) for n in self.member_nodes(lead)
                ]
                raise LivenessViolation(
                    "liveness-converge",
                    f"members disagree on (applied index, state hash): {states}",
                )
            return LivenessResult(
                first_lease_us, lease_start - t0, commit_us, lead.id, term, disruptions, t, e
            )

    def check_lease_expiry(self) -> int:
        """After :meth:`check_liveness`: every lease nobody renews is expired in time.

        A lease in the stable leader's table whose holder does not keep it alive (it
        released, lost, crashed, stopped renewing, or never learned of the grant) must be
        gone from that table within ``max_ttl / (1 - max_drift)`` (its deadline on the
        leader's clock, at most one TTL after now) plus two ticks, a commit round trip, the
        longest client-link delay (a renewal still in flight) and the catch-up allowance.
        Skipped if leadership changes meanwhile (a new leader
        restarts every deadline: docs/safety.md S2). Returns how many leases it waited for;
        raises :class:`LivenessViolation` ("liveness-expiry").
        """
        lead = self.leader()
        if lead is None or lead.core is None or not self.clients:
            return 0
        term = lead.core.term
        kept = {
            c.lease.lease_id
            for c in self.clients
            if c.lease is not None and c.holding and c.keepalive
        }
        # A grant whose client is still acquiring it may yet be taken up and renewed.
        taking = {c.request_id for c in self.clients if c.acquiring}
        orphans = [
            r for r in lead.table.leases() if r.lease_id not in kept and r.request_id not in taking
        ]
        if not orphans:
            return 0
        rho = lead.core.config.max_drift
        max_ttl_us = max(r.ttl_ms for r in orphans) * 1_000
        rtt = 2 * max(p.delay_max_us for p in self.net.links.values())
        # A renewal the holder sent before it stopped may still be on a (slow) client link.
        straggler = self.client_net.max_delay_us
        bound = (
            int(max_ttl_us / (1 - rho)) + 2 * self.tick_us + rtt + straggler + self.catch_up_us()
        )
        ids = {r.lease_id for r in orphans}
        t0 = self.now

        def changed() -> bool:
            core = lead.core
            return core is None or core.role is not Role.LEADER or core.term != term

        def done() -> bool:
            return changed() or not any(lead.table.by_lease_id(i) for i in ids)

        if not self.run_until_true(done, bound) and not changed():
            left = [r for r in orphans if lead.table.by_lease_id(r.lease_id) is not None]
            raise LivenessViolation(
                "liveness-expiry",
                f"{lead.id} (term {term}) still holds {len(left)} lease(s) nobody renews "
                f"{(self.now - t0) / 1000:.0f} ms after the check began (bound "
                f"{bound / 1000:.0f} ms): {[(r.name, r.lease_id, r.holder) for r in left]}",
            )
        return len(orphans)
