"""The membership operator (:class:`SimMembers`): a seeded schedule of single-server
membership changes, issued through the leader's ``LeaseService.reconfigure`` as an operator
would (``raftlease members add/promote/remove``), interleaved with every fault of faults.py.

The cluster starts with its bootstrap voters plus ``spares``: nodes that boot with an EMPTY
configuration (``RaftConfig(voters=())``, a joining node: it never campaigns and refuses
votes until a configuration containing it reaches it). They have storage, crash, restart,
pause and get partitioned like every other node. At each step (``member_every_us``) the
operator looks at the leader's configuration in force and asks for the next change:

* a learner in the configuration: promote it (refused while it lags; retried next step), or
  now and then remove it again;
* more voters than at bootstrap: remove one, the leader itself with probability
  ``member_remove_leader``;
* otherwise: add the next unused spare as a learner (a spare id is used at most once: a
  removed node never comes back, under its id or any other), or now and then, while a spare
  is left to grow back with, remove a voter first (one below the bootstrap size).

A removed node keeps running, or (``member_retire``) is shut down for good a little after
its removal committed (``SimNode.retired``: never restarted). After an accepted change the
operator sometimes asks for the next one at once (``member_burst``), and sometimes acts the
moment a node becomes leader (``member_eager``): a correct core refuses both (one change at a
time; the errata rule), which is what the planted bugs of tests/sim/planted.py break.
Nothing happens during a quiet window or after the final heal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from raftlease.core.membership import MembershipError
from raftlease.testing.sim.liveness import SimLiveness

if TYPE_CHECKING:
    import random

    from raftlease.core.membership import Membership
    from raftlease.testing.sim.model import MemberChange, SimNode
    from raftlease.types import NodeId


class SimMembers(SimLiveness):
    """The membership operator (see the module docstring)."""

    member_rng: random.Random
    spare_ids: tuple[NodeId, ...]
    spares_left: list[NodeId]  # never used yet, in order
    member_remove_leader: float
    member_retire: float
    member_burst: float
    member_eager: float

    def member_step(self) -> None:
        """One operator step: ask the leader for the next change (if any makes sense)."""
        if not self.workload_on or self.now < self.quiet_until:
            return
        lead = self.leader()
        if lead is None or lead.core is None:
            return
        m = lead.core.membership
        rng = self.member_rng
        n = len(self.voter_ids)
        new: Membership | None = None
        what = ""
        target: NodeId | None = None
        try:
            if m.learners:
                target = m.learners[0]
                if rng.random() < 0.15:
                    new, what = m.without(target), f"remove learner {target}"
                else:
                    new, what = m.promoted(target), f"promote {target}"
            elif len(m.voters) > n or (
                len(m.voters) == n and n > 2 and self.spares_left and rng.random() < 0.2
            ):
                target = lead.id if rng.random() < self.member_remove_leader else None
                if target is None or target not in m.voters:
                    target = rng.choice(m.voters)
                new, what = m.without(target), f"remove {target}"
            elif self.spares_left:
                target = self.spares_left[0]
                new, what = m.with_learner(target, str(target)), f"add {target}"
        except MembershipError as e:  # e.g. the last voter: nothing to ask
            self._log(f"operator: no change ({e})")
            return
        if new is None or target is None:
            return
        stats = self.member_stats
        refused = stats.get("refused", 0) + stats.get("not-leader", 0)
        token = self.reconfigure(new, what, target)
        if token is None:
            return
        # Not refused on the spot: the entry may be in some log now (even if the leader
        # crashed meanwhile).
        accepted = stats.get("refused", 0) + stats.get("not-leader", 0) == refused
        if what.startswith("add") and accepted and self.spares_left[:1] == [target]:
            self.spares_left.pop(0)  # a spare id is used once, whatever becomes of it
        if accepted and rng.random() < self.member_burst:
            self.after(rng.randint(0, 500), self.member_step)  # the next one at once

    def on_leader_elected(self, node: SimNode) -> None:
        if self.spare_ids and self.member_rng.random() < self.member_eager:
            self.after(self.member_rng.randint(0, 1_000), self.member_step)

    def on_member_committed(self, node: SimNode, token: MemberChange) -> None:
        if not token.what.startswith("remove") or self.member_rng.random() >= self.member_retire:
            return
        victim = self.node(token.target)

        def retire() -> None:
            if victim.retired:
                return
            self.crash(victim.id)
            victim.retired = True
            self._log(f"{victim.id} RETIRED (removed from the configuration, shut down)")

        self.after(self.member_rng.randint(5_000, 200_000), retire)
