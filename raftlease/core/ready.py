"""What the core hands to its driver: state to persist, messages to send, entries to apply.

THE READY CONTRACT (Raft thesis §3.8; etcd raft ``Ready``), for every driver:

  1. PERSIST ``hard_state`` (if not None), then ``snapshot`` (if not None), then ``entries``
     (which REPLACE any stored entries at the same or higher index), and FSYNC, BEFORE
     sending any message of this Ready. Votes and append acknowledgements depend on it.
     One exception (Raft thesis §10.2.1): when ``soft_state.role`` is LEADER and the Ready
     changes neither the term nor the vote (``hard_state`` is None or differs only in
     ``commit``) and carries no snapshot, the driver MAY send the messages BEFORE the
     fsync, so that followers write in parallel with the leader. A leader's messages never
     depend on its own entries being durable, and the core counts the leader itself in the
     commit quorum only up to the entries that ``advance`` reported persisted.
     WHILE IT SAVES (between ``ready()`` and ``advance()``) the driver may ``tick()`` and
     ``step`` the messages ``RaftCore.steps_while_saving`` admits (a leader's own-term
     answers; a follower's heartbeats within its durable log), and send at once what
     ``take_messages()`` returns; any other input raises. A stalled fsync then costs
     no leader its lease, and nothing acknowledges an entry that is still being saved.
  2. SEND ``messages`` (any order; they may be lost, which Raft tolerates).
  3. APPLY ``snapshot`` to the state machine if set, then ``committed_entries`` in order.
     Nothing is acknowledged to a client before its entry is applied here.
  4. Call ``RaftCore.advance(ready)``.

``soft_state`` is volatile (role, leader) and needs no persistence.
"""

from __future__ import annotations

from dataclasses import dataclass

from raftlease.core.messages import Entry, Message, Snapshot
from raftlease.types import NodeId, Role


@dataclass(frozen=True, slots=True)
class HardState:
    """State that must be durable before messages depending on it are sent."""

    term: int = 0
    voted_for: NodeId | None = None
    commit: int = 0


@dataclass(frozen=True, slots=True)
class SoftState:
    role: Role
    leader_id: NodeId | None
    term: int


@dataclass(frozen=True, slots=True)
class Ready:
    hard_state: HardState | None
    soft_state: SoftState
    entries: tuple[Entry, ...]
    snapshot: Snapshot | None
    messages: tuple[Message, ...]
    committed_entries: tuple[Entry, ...]

    def must_fsync(self, saved_term: int, saved_vote: NodeId | None) -> bool:
        """Is there anything to fsync? A Ready whose only change is the commit index need not
        be written on its own: Raft does not need the commit index durable (a restarted node
        learns it again from the leader), so it rides along with the next entries or vote.
        This saves one fsync per write on every node. ``saved_term`` / ``saved_vote``: the
        term and vote the driver last made durable."""
        if self.entries or self.snapshot is not None:
            return True
        hs = self.hard_state
        return hs is not None and (hs.term, hs.voted_for) != (saved_term, saved_vote)

    def may_send_before_persist(self, saved_term: int, saved_vote: NodeId | None) -> bool:
        """May the driver send this Ready's messages before fsyncing its entries? (rule 1's
        exception; false when there are no entries, as there is then nothing to overlap)

        ``saved_term`` / ``saved_vote``: the term and vote the driver last made durable.
        """
        if not self.entries or self.soft_state.role is not Role.LEADER or self.snapshot is not None:
            return False
        hs = self.hard_state
        return hs is None or (hs.term == saved_term and hs.voted_for == saved_vote)
