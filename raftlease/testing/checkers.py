"""Incremental safety checkers for the simulator (TESTING.md, columns RI and ME).

The simulator calls one hook per observation, as it happens; each hook costs O(1) or
O(entries in the observation), never O(log) per event, so the checks can run after EVERY
event. A broken rule raises :class:`SafetyViolation` at once, with the simulated time, so the
seed plus the time pin the failure down.

The rules, and where each is checked:

1. ``election-safety``: at most one leader per term (``on_become_leader``).
2. ``vote-safety``: a node grants its (non-pre) vote to at most one candidate per term, across
   restarts (``on_vote_granted``, fed every granted RequestVoteResponse as it is SENT).
3. ``term-monotonic``: a node's term never decreases, across restarts (``on_term``).
4. ``log-matching``: two entries with the same (index, term) are identical and have the same
   predecessor term (``on_save``, fed every batch of entries as it is persisted). By induction
   over the predecessor terms this gives the full Log Matching property: equal (index, term)
   implies equal logs up to that index.
5. ``state-machine-safety``: no two nodes apply different entries (or reach different
   state-machine hashes) at one index (``on_apply`` / ``on_snapshot_applied``). Also checks
   that a node applies indexes in order and each command id at one index only.
6. ``leader-completeness``: a new leader's log holds the highest entry applied anywhere so
   far (``on_become_leader``; with rule 4 that covers every committed entry).
7. ``committed-lost``: after a crash or restart, the highest applied entry is still in the
   durable storage (log or snapshot) of a majority (``check_durable``).
8. ``lease-exclusion``: at every event time at most one node's ``lease_valid()`` is true
   (``on_lease``; a core's answer changes only on its own inputs, so a per-node cache updated
   after each input is exact).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from raftlease.types import NodeId

if TYPE_CHECKING:
    from collections.abc import Iterable

    from raftlease.core.messages import Entry, Snapshot
    from raftlease.storage.base import LoadedState

__all__ = ["Checkers", "LivenessViolation", "SafetyViolation"]


class SafetyViolation(Exception):
    """A checked rule was broken. ``name`` is the rule's short name (see module docstring)."""

    def __init__(self, name: str, detail: str) -> None:
        super().__init__(f"{name}: {detail}")
        self.name = name
        self.detail = detail


class LivenessViolation(SafetyViolation):
    """The cluster failed to recover within the stated bound after the final heal."""


@dataclass(slots=True)
class _Applied:
    term: int
    kind: int
    data: bytes
    state_hash: bytes
    node: NodeId


@dataclass(slots=True)
class Checkers:
    """All the invariants, with the state needed to check them incrementally.

    ``now_us`` is set by the simulator before each event, for the messages only.
    """

    voters: tuple[NodeId, ...]
    now_us: int = 0
    leaders: dict[int, NodeId] = field(default_factory=dict)  # term -> leader
    votes: dict[tuple[NodeId, int], NodeId] = field(default_factory=dict)
    max_term: dict[NodeId, int] = field(default_factory=dict)
    # (index, term) -> (kind, data, predecessor term)
    entries: dict[tuple[int, int], tuple[int, bytes, int]] = field(default_factory=dict)
    applied: dict[int, _Applied] = field(default_factory=dict)
    max_applied_index: int = 0
    max_applied_term: int = 0
    command_index: dict[bytes, int] = field(default_factory=dict)
    lease_holders: set[NodeId] = field(default_factory=set)
    events_checked: int = 0

    def _fail(self, name: str, detail: str) -> SafetyViolation:
        return SafetyViolation(name, f"{detail} (at t={self.now_us}us)")

    # -------------------------------------------------------------- 3. terms
    def on_term(self, node: NodeId, term: int) -> None:
        prev = self.max_term.get(node, 0)
        if term < prev:
            raise self._fail("term-monotonic", f"{node} went from term {prev} back to {term}")
        if term > prev:
            self.max_term[node] = term

    # -------------------------------------------------------------- 2. votes
    def on_vote_granted(self, voter: NodeId, term: int, candidate: NodeId) -> None:
        key = (voter, term)
        prev = self.votes.get(key)
        if prev is None:
            self.votes[key] = candidate
        elif prev != candidate:
            raise self._fail(
                "vote-safety",
                f"{voter} granted its vote in term {term} to {prev} and then to {candidate}",
            )

    # -------------------------------------------------------------- 4. log matching
    def on_save(self, node: NodeId, entries: Iterable[Entry], prev_term: int) -> None:
        """``entries`` (contiguous) were persisted after an entry of term ``prev_term``."""
        table = self.entries
        for e in entries:
            key = (e.index, e.term)
            rec = (int(e.kind), e.data, prev_term)
            old = table.get(key)
            if old is None:
                table[key] = rec
            elif old != rec:
                raise self._fail(
                    "log-matching",
                    f"{node} holds entry {e.index}/{e.term} = (kind {rec[0]}, data "
                    f"{rec[1]!r}, after term {rec[2]}) but another node held (kind {old[0]}, "
                    f"data {old[1]!r}, after term {old[2]})",
                )
            prev_term = e.term

    # -------------------------------------------------------------- 5. state machine safety
    def on_apply(self, node: NodeId, prev_applied: int, entry: Entry, state_hash: bytes) -> None:
        if entry.index != prev_applied + 1:
            raise self._fail(
                "state-machine-safety",
                f"{node} applied index {entry.index} right after index {prev_applied}",
            )
        old = self.applied.get(entry.index)
        if old is None:
            self.applied[entry.index] = _Applied(
                entry.term, int(entry.kind), entry.data, state_hash, node
            )
            if entry.index > self.max_applied_index:
                self.max_applied_index = entry.index
                self.max_applied_term = entry.term
            if len(entry.data) >= 8:
                cid = entry.data[:8]
                seen = self.command_index.get(cid)
                if seen is not None and seen != entry.index:
                    raise self._fail(
                        "state-machine-safety",
                        f"command {cid.hex()} applied at index {seen} and again at "
                        f"{entry.index} (by {node})",
                    )
                self.command_index[cid] = entry.index
            return
        if (
            old.term != entry.term
            or old.kind != int(entry.kind)
            or old.data != entry.data
            or old.state_hash != state_hash
        ):
            raise self._fail(
                "state-machine-safety",
                f"{node} applied {entry.index}/{entry.term} data {entry.data!r} (state "
                f"{state_hash.hex()}) but {old.node} applied {entry.index}/{old.term} data "
                f"{old.data!r} (state {old.state_hash.hex()})",
            )

    def on_snapshot_applied(self, node: NodeId, snap: Snapshot) -> None:
        old = self.applied.get(snap.index)
        if old is None:
            # Every snapshot is taken by a node that applied its index, so this is news.
            raise self._fail(
                "state-machine-safety",
                f"{node} installed a snapshot at {snap.index}/{snap.term} nobody applied",
            )
        if old.term != snap.term or old.state_hash != snap.data:
            raise self._fail(
                "state-machine-safety",
                f"{node} installed snapshot {snap.index}/{snap.term} (state "
                f"{snap.data.hex()}) but {old.node} applied {snap.index}/{old.term} (state "
                f"{old.state_hash.hex()})",
            )

    # -------------------------------------------------------------- 1 + 6. new leaders
    def on_become_leader(
        self, node: NodeId, term: int, last_index: int, snapshot_index: int, term_at_c: int | None
    ) -> None:
        """``term_at_c`` is the new leader's term at ``max_applied_index`` (None if absent)."""
        prev = self.leaders.get(term)
        if prev is not None and prev != node:
            raise self._fail(
                "election-safety", f"{node} became leader of term {term}, already led by {prev}"
            )
        self.leaders[term] = node
        c = self.max_applied_index
        if c == 0 or c <= snapshot_index:
            return
        if c > last_index or term_at_c != self.max_applied_term:
            raise self._fail(
                "leader-completeness",
                f"{node} became leader of term {term} with last index {last_index} and term "
                f"{term_at_c} at index {c}, but {c}/{self.max_applied_term} was already "
                f"applied by {self.applied[c].node}",
            )

    def committed_probe(self) -> tuple[int, int]:
        """(index, term) of the newest entry applied anywhere (0, 0 if none)."""
        return self.max_applied_index, self.max_applied_term

    # -------------------------------------------------------------- 7. durability
    def check_durable(self, states: dict[NodeId, LoadedState], why: str) -> None:
        """Does a majority's durable state still hold the newest applied entry?"""
        c, t = self.max_applied_index, self.max_applied_term
        if c == 0:
            return
        holders = []
        for nid, st in states.items():
            snap_index = st.snapshot.index if st.snapshot is not None else 0
            if snap_index >= c:
                holders.append(nid)
                continue
            pos = c - snap_index - 1
            if pos < len(st.entries) and st.entries[pos].term == t:
                holders.append(nid)
        if len(holders) < len(self.voters) // 2 + 1:
            raise self._fail(
                "committed-lost",
                f"after {why}, applied entry {c}/{t} is durable only on {sorted(holders)}",
            )

    # -------------------------------------------------------------- 8. leader lease
    def on_lease(self, node: NodeId, valid: bool) -> None:
        holders = self.lease_holders
        if valid:
            if node not in holders:
                holders.add(node)
                if len(holders) > 1:
                    raise self._fail(
                        "lease-exclusion",
                        f"{sorted(holders)} all hold a valid leader lease at once",
                    )
        elif node in holders:
            holders.discard(node)
