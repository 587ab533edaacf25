"""Incremental safety checkers for the simulator (docs/fault-matrix.md, checks RI and ME).

The simulator calls one hook per observation, as it happens; each hook costs O(1) or
O(entries in the observation), never O(log) per event, so the checks can run after EVERY
event. A broken rule raises :class:`SafetyViolation` at once, with the simulated time, so the
seed plus the time pin the failure down.

The rules, and where each is checked:

1. ``election-safety``: at most one leader per term (``on_become_leader``).
2. ``vote-safety``: a node grants its (non-pre) vote to at most one candidate per term, across
   restarts (``on_vote_granted``, fed every granted RequestVoteResponse and every
   candidate's own vote as it is SENT); and a node that restarts remembers its newest vote
   (``check_vote_durable``: a forgotten vote is a double vote waiting for a second asker).
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
13. ``applied-uncommitted``: a node applies an entry only once a majority holds it durably
   (in its persisted log or under its persisted snapshot) (``check_committed``, fed every
   applied entry; ``on_save`` / ``on_snapshot_durable`` record who persisted what). Catches a
   node that applies beyond its commit index at once, before any other node disagrees.
14. ``committed-changed``: a node that restarts finds, up to its persisted commit index, only
   entries that agree with what was applied anywhere, and a commit index its own durable log
   or snapshot reaches (``check_boot_log``).
15. ``commit-unsafe``: once an entry is applied, no node that lacks it has a durable log at
   least as up to date as a majority's (it could win an election and overwrite the entry:
   Leader Completeness, checked before the election instead of after it; ``check_committed``).
16. ``config-step``: every newly committed configuration (a CONFIG entry applied for the first
   time anywhere) differs from the previous committed one by at most one voter (``on_apply``).
17. ``learner-ack``: an entry that is applied (rule 13) or the newest applied entry at a crash
   (rule 7) is held by a majority only if learners are counted (a quorum counted a learner).

Membership (rules 7, 13, 15): a "majority" is one of the voters of a configuration that may
have been in force when the entry committed: the newest configuration at or below the
entry's index, or any configuration entry after it (a leader uses the newest configuration in
its log, committed or not). Rule 15 asks each node lacking the entry for the quorum of the
configuration in its own durable log (a node outside it never campaigns, and a voter outside
its own configuration refuses votes). ``Checkers.voters`` are the bootstrap voters; the
simulator reports each node's durable configuration (``on_durable_config``).

Liveness oracles live in the simulator (``SimCluster.check_quorum_contact``: a leader cut off
from a quorum steps down within 2·E_min + 2 of its ticks; ``SimCluster.quiet_window``: a
cluster that can talk has a valid leader lease within 3·E_max ticks plus catch-up) and raise
:class:`LivenessViolation`.

The lease state machine and its clients have their own checker, :class:`LeaseCheckers`
(docs/fault-matrix.md, checks ME and FT; rules 9-12 below).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from raftlease.core.membership import Membership, voter_change
from raftlease.core.messages import EntryKind
from raftlease.types import NodeId

if TYPE_CHECKING:
    from collections.abc import Iterable

    from raftlease.core.messages import Entry, Snapshot
    from raftlease.fsm.leases import LeaseRecord
    from raftlease.storage.base import LoadedState

__all__ = [
    "Belief",
    "Checkers",
    "LeaseCheckers",
    "LeaseStats",
    "LivenessViolation",
    "SafetyViolation",
]


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
    # (index, term) -> the nodes that persisted that entry (never shrinks: a truncation of a
    # durable entry is caught by the other rules; over-counting only makes rule 13 lenient)
    durable: dict[tuple[int, int], set[NodeId]] = field(default_factory=dict)
    last_vote: dict[NodeId, tuple[int, NodeId]] = field(default_factory=dict)  # newest vote
    snapshot_index: dict[NodeId, int] = field(default_factory=dict)  # persisted snapshots
    durable_last: dict[NodeId, tuple[int, int]] = field(default_factory=dict)  # (index, term)
    electable_checked: int = 0  # rule 15 ran for every applied index up to this one
    # Membership: every CONFIG entry persisted anywhere, (index, term, membership), by index;
    # each node's durable configuration (the newest in its durable log; the simulator
    # reports it); the newest committed configuration (index, membership) and how many
    # configuration entries committed.
    configs: list[tuple[int, int, Membership]] = field(default_factory=list)
    node_config: dict[NodeId, Membership] = field(default_factory=dict)
    committed_config: tuple[int, Membership] | None = None
    configs_committed: int = 0
    _config_by_key: dict[tuple[int, int], Membership] = field(default_factory=dict)
    _cfg_memo: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict)

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
            last = self.last_vote.get(voter)
            if last is None or term > last[0]:
                self.last_vote[voter] = (term, candidate)
        elif prev != candidate:
            raise self._fail(
                "vote-safety",
                f"{voter} granted its vote in term {term} to {prev} and then to {candidate}",
            )

    def check_vote_durable(self, node: NodeId, term: int, voted_for: NodeId | None) -> None:
        """``node`` restarts with durable (term, voted_for): it must remember its newest vote
        (or have moved to a later term). A vote it forgot lets it vote twice in that term:
        whether or not a second candidate happens to ask, the restart already broke rule 2's
        precondition (votes are persisted before they are sent, ready.py)."""
        last = self.last_vote.get(node)
        if last is None:
            return
        t, cand = last
        if term > t or (term == t and voted_for == cand):
            return
        raise self._fail(
            "vote-safety",
            f"{node} voted for {cand} in term {t} but restarts with term {term}, vote "
            f"{voted_for}: the vote was not durable",
        )

    # -------------------------------------------------------------- 4. log matching
    def on_save(self, node: NodeId, entries: Iterable[Entry], prev_term: int) -> None:
        """``entries`` (contiguous) were persisted after an entry of term ``prev_term``."""
        table = self.entries
        durable = self.durable
        last: Entry | None = None
        for e in entries:
            key = (e.index, e.term)
            holders = durable.get(key)
            if holders is None:
                durable[key] = {node}
            else:
                holders.add(node)
            rec = (int(e.kind), e.data, prev_term)
            old = table.get(key)
            if old is None:
                table[key] = rec
                if e.kind is EntryKind.CONFIG:
                    self._add_config(e)
            elif old != rec:
                raise self._fail(
                    "log-matching",
                    f"{node} holds entry {e.index}/{e.term} = (kind {rec[0]}, data "
                    f"{rec[1]!r}, after term {rec[2]}) but another node held (kind {old[0]}, "
                    f"data {old[1]!r}, after term {old[2]})",
                )
            prev_term = e.term
            last = e
        if last is not None:  # entries replace the stored suffix: this is the new last one
            self.durable_last[node] = (last.index, last.term)

    # -------------------------------------------------------------- 13 + 14. commitment
    def on_snapshot_durable(self, node: NodeId, index: int, term: int = 0) -> None:
        """``node`` persisted a snapshot at ``index`` (``term``: an installed one, which may
        become its durable log's last entry; 0 for a compaction, which never does)."""
        if index > self.snapshot_index.get(node, 0):
            self.snapshot_index[node] = index
        if term and index >= self.durable_last.get(node, (0, 0))[0]:
            self.durable_last[node] = (index, term)

    def check_committed(self, node: NodeId, entry: Entry) -> None:
        """``node`` applies ``entry``: a majority must hold it durably."""
        holders = self.durable.get((entry.index, entry.term), ())
        problem = self._majority_problem(entry.index, entry.term, holders)
        if problem is not None:
            raise self._fail(
                problem[0] or "applied-uncommitted",
                f"{node} applied {entry.index}/{entry.term}, which only {sorted(holders)} hold "
                f"durably ({problem[1]})",
            )
        if entry.index > self.electable_checked:
            self.electable_checked = entry.index
            self._check_electable(entry, holders)

    # -------------------------------------------------------------- membership
    def _add_config(self, e: Entry) -> None:
        configs = self.configs
        item = (e.index, e.term, Membership.decode(e.data))
        self._config_by_key[(e.index, e.term)] = item[2]
        if not configs or configs[-1][0] <= e.index:
            configs.append(item)
        else:
            configs.append(item)
            configs.sort(key=lambda c: c[0])

    def on_durable_config(self, node: NodeId, membership: Membership) -> None:
        """The newest configuration in ``node``'s durable log (or snapshot) is ``membership``."""
        self.node_config[node] = membership

    def config_in_log(self, index: int, term: int) -> tuple[int, int]:
        """(index, term) of the newest CONFIG entry at or below ``index`` in the logs that hold
        entry ``index``/``term`` ((0, 0): none, the bootstrap voters), found by walking the
        predecessor terms of rule 4 (log matching) back; memoized per entry."""
        memo = self._cfg_memo
        table = self.entries
        path: list[tuple[int, int]] = []
        key = (index, term)
        found = (0, 0)
        while key[0] > 0:
            hit = memo.get(key)
            if hit is not None:
                found = hit
                break
            rec = table.get(key)
            if rec is None:  # never persisted (should not happen): no better answer
                break
            if rec[0] == EntryKind.CONFIG:
                found = key
                break
            path.append(key)
            key = (key[0] - 1, rec[2])
        for k in path:
            memo[k] = found
        return found

    def voter_sets(self, index: int, term: int) -> list[Membership]:
        """The configurations whose voters' majority may have committed entry
        ``index``/``term``: the newest configuration at or below it in its log (the bootstrap
        voters if none), and every configuration entry after it (a leader uses the newest
        configuration in its log, committed or not)."""
        k = self.config_in_log(index, term)
        out = [self._config_by_key.get(k) or Membership(tuple(sorted(self.voters)))]
        out += [m for i, _, m in self.configs if i > index]
        return out

    def _majority_problem(
        self, index: int, term: int, holders: set[NodeId] | tuple[()]
    ) -> tuple[str, str] | None:
        """None if ``holders`` (plus every node with a durable snapshot at or past ``index``)
        include a majority of the voters of one of :meth:`voter_sets`; else ("", what a
        majority is), or ("learner-ack", ...) if they do only when the learners of such a
        configuration are counted too."""
        snaps = self.snapshot_index
        if not self.configs:  # no membership change: every node is a bootstrap voter
            q = len(self.voters) // 2 + 1
            count = len(holders)
            if count < q:
                count += sum(1 for n, snap in snaps.items() if snap >= index and n not in holders)
            if count >= q:
                return None
            return "", f"a majority is {q}"
        allh = set(holders) | {nid for nid, snap in snaps.items() if snap >= index}
        sets = self.voter_sets(index, term)
        for m in sets:
            if sum(1 for v in m.voters if v in allh) >= len(m.voters) // 2 + 1:
                return None
        for m in sets:
            if m.learners and len(allh & set(m.members)) >= len(m.voters) // 2 + 1:
                return "learner-ack", (
                    f"a majority of the voters {list(m.voters)} only if the learners "
                    f"{list(m.learners)} are counted"
                )
        need = "; ".join(f"{len(m.voters) // 2 + 1} of {list(m.voters)}" for m in sets)
        return "", f"a majority is {need}"

    def _check_electable(self, entry: Entry, holders: set[NodeId] | tuple[()]) -> None:
        """Rule 15: no node that lacks a committed entry can ever be elected. A candidate
        wins with a majority of votes, and a voter grants only to a log at least as up to date
        as its own (§5.4.1), so it is enough that no node lacking ``entry`` has a log (durable:
        what survives crashes) at least as up to date as a majority's. Checked once per
        newly applied index (the newest committed entry: log matching covers the older).
        With membership changes the candidate counts the voters of the configuration in its
        own durable log, and only if it is one of them; a voter outside its own durable
        configuration refuses (the core refuses votes then)."""
        lasts = self.durable_last
        snaps = self.snapshot_index
        if not self.node_config:
            candidates: list[tuple[NodeId, tuple[NodeId, ...]]] = [
                (c, self.voters) for c in self.voters
            ]
        else:
            candidates = [(c, m.voters) for c, m in self.node_config.items() if c in m.voters]
        cfg = self.node_config
        for c, voters in candidates:
            if c in holders or snaps.get(c, 0) >= entry.index:
                continue
            ci, ct = lasts.get(c, (0, 0))
            willing = 0
            for v in voters:
                if cfg and v in cfg and not cfg[v].is_member(v):
                    continue
                vi, vt = lasts.get(v, (0, 0))
                if ct > vt or (ct == vt and ci >= vi):
                    willing += 1
            q = len(voters) // 2 + 1
            if willing >= q:
                raise self._fail(
                    "commit-unsafe",
                    f"{entry.index}/{entry.term} was applied, but {c} lacks it and its durable "
                    f"log (last {ci}/{ct}) is at least as up to date as {willing} of the voters "
                    f"{list(voters)} of its configuration: it could be elected and overwrite "
                    f"the entry (durable lasts: {dict(sorted(lasts.items()))})",
                )

    def check_boot_log(self, node: NodeId, st: LoadedState) -> None:
        """``node`` boots from ``st``: its committed prefix must agree with what was applied."""
        commit = st.hard_state.commit
        snap = st.snapshot.index if st.snapshot is not None else 0
        last = snap + len(st.entries)
        if commit > last:
            raise self._fail(
                "committed-changed",
                f"{node} restarts with commit index {commit} but its durable log ends at {last}",
            )
        applied = self.applied
        for e in st.entries:
            if e.index > commit:
                break
            rec = applied.get(e.index)
            if rec is not None and rec.term != e.term:
                raise self._fail(
                    "committed-changed",
                    f"{node} restarts with {e.index}/{e.term} under its commit index {commit}, "
                    f"but {rec.node} applied {e.index}/{rec.term}",
                )

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
            if entry.kind is EntryKind.CONFIG:
                self._config_committed(node, entry)
            if entry.index > self.max_applied_index:
                self.max_applied_index = entry.index
                self.max_applied_term = entry.term
            # Lease commands are JSON objects that carry their own request ids: no 8-byte id.
            if len(entry.data) >= 8 and entry.data[:1] != b"{":
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

    def on_snapshot_applied(
        self, node: NodeId, snap: Snapshot, state_hash: bytes | None = None
    ) -> None:
        """``state_hash``: the state hash the snapshot carries (default: all of its data)."""
        sh = snap.data if state_hash is None else state_hash
        old = self.applied.get(snap.index)
        if old is None:
            # Every snapshot is taken by a node that applied its index, so this is news.
            raise self._fail(
                "state-machine-safety",
                f"{node} installed a snapshot at {snap.index}/{snap.term} nobody applied",
            )
        if old.term != snap.term or old.state_hash != sh:
            raise self._fail(
                "state-machine-safety",
                f"{node} installed snapshot {snap.index}/{snap.term} (state "
                f"{sh.hex()}) but {old.node} applied {snap.index}/{old.term} (state "
                f"{old.state_hash.hex()})",
            )

    # -------------------------------------------------------------- 1 + 6. new leaders
    def on_become_leader(
        self, node: NodeId, term: int, last_index: int, snapshot_index: int, term_at_c: int | None
    ) -> None:
        """``term_at_c`` is the new leader's term at ``committed_probe(term)[0]`` (None if
        absent): the newest entry applied anywhere in a term before ``term``. (A candidate
        that wins a stale term late, e.g. paused with its vote answers queued, need not hold
        entries of later terms: Raft's Leader Completeness is about earlier terms.)"""
        prev = self.leaders.get(term)
        if prev is not None and prev != node:
            raise self._fail(
                "election-safety", f"{node} became leader of term {term}, already led by {prev}"
            )
        self.leaders[term] = node
        c, t = self.committed_probe(term)
        if c == 0 or c <= snapshot_index:
            return
        if c > last_index or term_at_c != t:
            raise self._fail(
                "leader-completeness",
                f"{node} became leader of term {term} with last index {last_index} and term "
                f"{term_at_c} at index {c}, but {c}/{t} was already applied by "
                f"{self.applied[c].node}",
            )

    def committed_probe(self, before_term: int | None = None) -> tuple[int, int]:
        """(index, term) of the newest entry applied anywhere (0, 0 if none); with
        ``before_term``, the newest of a term below it (log terms never decrease with the
        index, so a binary search over the applied indexes finds it)."""
        if before_term is None or self.max_applied_term < before_term:
            return self.max_applied_index, self.max_applied_term
        applied = self.applied
        lo, hi = 0, self.max_applied_index  # applied[lo] (or nothing) has term < before_term
        while lo < hi:
            mid = (lo + hi + 1) // 2
            rec = applied.get(mid)
            if rec is None:
                return 0, 0  # a gap (should not happen): no check
            if rec.term < before_term:
                lo = mid
            else:
                hi = mid - 1
        return (lo, applied[lo].term) if lo > 0 else (0, 0)

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
        problem = self._majority_problem(c, t, set(holders))
        if problem is not None:
            raise self._fail(
                problem[0] or "committed-lost",
                f"after {why}, applied entry {c}/{t} is durable only on {sorted(holders)} "
                f"({problem[1]})",
            )

    # -------------------------------------------------------------- 16. configuration steps
    def _config_committed(self, node: NodeId, entry: Entry) -> None:
        new = Membership.decode(entry.data)
        prev = self.committed_config
        old = prev[1] if prev is not None else Membership(tuple(sorted(self.voters)))
        self.configs_committed += 1
        changed = voter_change(old, new)
        if len(changed) > 1:
            raise self._fail(
                "config-step",
                f"{node} applied configuration {entry.index}/{entry.term} with voters "
                f"{list(new.voters)}; the previous committed one"
                f"{f' (index {prev[0]})' if prev else ''} had {list(old.voters)}: "
                f"{sorted(changed)} changed at once",
            )
        self.committed_config = (entry.index, new)

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


# ====================================================================================== leases
@dataclass(slots=True)
class Belief:
    """A client believed it held ``name`` (grant ``lease_id``) over [start_us, end_us) real time.

    ``end_us`` is the client's ``valid_until`` converted to real time (docs/fault-matrix.md: belief
    intervals are [ack received, local deadline)); a renewal moves it later. An end the
    client knows of (release, NOT_FOUND, crash) cuts it to that instant; the lost signal a
    keepalive raises shortly before ``valid_until`` does not (a late keepalive thread must
    not matter). ``final``: no renewal can extend it any more.
    """

    client: NodeId
    name: str
    lease_id: int
    token: int
    start_us: int
    end_us: float
    final: bool = False

    def valid_at(self, t_us: int) -> bool:
        return self.start_us <= t_us < self.end_us


@dataclass(slots=True)
class LeaseStats:
    grants: int = 0  # distinct grants applied anywhere
    expiries: int = 0  # distinct Expire applied anywhere
    releases: int = 0
    beliefs: int = 0  # grants a client acted on
    empty_beliefs: int = 0  # grants whose answer came too late to believe
    renewals: int = 0
    handovers: int = 0  # a belief started in a name another client believed in before
    writes_accepted_valid: int = 0
    writes_accepted_late: int = 0  # from a holder whose belief had ended (a late write)
    writes_rejected_late: int = 0  # fencing stopped a late write
    writes_rejected_valid: int = 0  # a believing holder was fenced off: an ME symptom
    ghost_handovers: int = 0  # a queued acquire granted after its client stopped waiting
    server_errors: int = 0  # answers server.py gives as INTERNAL ("unexpected result")


@dataclass(slots=True)
class LeaseCheckers:
    """The lease rules (docs/fault-matrix.md, ME and FT), fed by the simulator as things happen.

    9. ``mutual-exclusion`` (ME): no two clients believe they hold the same name at one
       instant. A belief can only start at an event (the grant's answer arrives), and one
       that has ended never comes back, so checking every other current belief of the name
       when one starts is exact: it is the check "after every event".
    10. ``belief-after-end`` (ME, docs/safety.md C1): no client believes in a grant once the
       grant's end (Expire or Release) has been applied anywhere: from then on the name is
       free in the replicated state and may be granted at once. Checked when the end is
       first applied and when a belief starts or is extended. (``check_after_end=False``
       leaves only rule 9.)
    11. ``fencing-token-order`` (FT): a grant's token is its log index and names one grant
       everywhere; on every node, per name, tokens strictly increase in apply order within
       an incarnation (and exceed the snapshot a node restored); the tokens acknowledged to
       clients (beliefs that were not empty) never go backwards per name, i.e. they are
       consistent with real-time order.
    12. ``fencing`` (FT): the fenced resource never accepts a token lower than one it
       accepted before. Each write is also classified by whether its holder still believed
       at that instant (``LeaseStats``): late writes may be accepted (fencing admits them
       until a newer token arrives); a believing holder's write is never rejected unless
       rule 10 is broken.
    Also: lease-table snapshots taken at one index are byte-identical
    (``state-machine-safety``).

    ``enforce_me=False`` records ME violations (rules 9 and 10) in ``me_violations`` instead
    of raising, so a run that breaks ME on purpose (clocks beyond the drift bound) goes on
    and shows that fencing still holds.
    """

    now_us: int = 0
    check_after_end: bool = True
    enforce_me: bool = True
    me_violations: list[SafetyViolation] = field(default_factory=list)
    stats: LeaseStats = field(default_factory=LeaseStats)
    beliefs: list[Belief] = field(default_factory=list)  # every non-empty belief, in order
    current: dict[str, dict[NodeId, Belief]] = field(default_factory=dict)
    by_lease: dict[int, Belief] = field(default_factory=dict)
    ended: dict[int, int] = field(default_factory=dict)  # lease id -> first end apply time
    grants: dict[int, tuple[str, str, str]] = field(default_factory=dict)
    node_tokens: dict[NodeId, dict[str, int]] = field(default_factory=dict)
    node_floor: dict[NodeId, int] = field(default_factory=dict)
    acked: dict[str, int] = field(default_factory=dict)  # name -> highest believed token
    last_believer: dict[str, NodeId] = field(default_factory=dict)
    accepted_max: dict[str, int] = field(default_factory=dict)
    snapshot_tables: dict[int, bytes] = field(default_factory=dict)

    def _fail(self, name: str, detail: str) -> SafetyViolation:
        return SafetyViolation(name, f"{detail} (at t={self.now_us}us)")

    def _me(self, name: str, detail: str) -> None:
        v = self._fail(name, detail)
        if self.enforce_me:
            raise v
        self.me_violations.append(v)

    @staticmethod
    def _describe(b: Belief) -> str:
        return f"{b.client} token {b.token} [{b.start_us}us, {b.end_us:.0f}us)"

    # -------------------------------------------------------------- 9 + 10: beliefs
    def on_belief_start(
        self, client: NodeId, name: str, lease_id: int, token: int, end_us: float
    ) -> None:
        now = self.now_us
        per = self.current.get(name)
        if per is None:
            per = self.current[name] = {}
        for other in list(per.values()):
            if other.end_us <= now:
                del per[other.client]
                continue
            if other.client != client:
                self._me(
                    "mutual-exclusion",
                    f"{client} starts believing it holds {name!r} (token {token}, until "
                    f"{end_us:.0f}us) while {self._describe(other)} still believes it does",
                )
        if self.check_after_end and lease_id in self.ended:
            self._me(
                "belief-after-end",
                f"{client} starts believing in {name!r} token {token} until {end_us:.0f}us, "
                f"but that grant ended (applied at t={self.ended[lease_id]}us)",
            )
        prev = self.acked.get(name, 0)
        if token < prev:
            raise self._fail(
                "fencing-token-order",
                f"{client} was granted {name!r} with token {token} after a client already "
                f"acted on token {prev}",
            )
        self.acked[name] = token
        if self.last_believer.get(name, client) != client:
            self.stats.handovers += 1
        self.last_believer[name] = client
        b = Belief(client, name, lease_id, token, now, end_us)
        per[client] = b
        self.by_lease[lease_id] = b
        self.beliefs.append(b)
        self.stats.beliefs += 1

    def on_empty_belief(self, client: NodeId, name: str, lease_id: int) -> None:
        self.stats.empty_beliefs += 1

    def on_belief_extend(self, client: NodeId, lease_id: int, end_us: float) -> None:
        b = self.by_lease.get(lease_id)
        if b is None or b.client != client or b.final:
            return
        self.stats.renewals += 1
        if end_us > b.end_us:
            b.end_us = end_us
        if self.check_after_end and lease_id in self.ended and b.end_us > self.now_us:
            self._me(
                "belief-after-end",
                f"a renewal extends {b.client}'s belief in {b.name!r} token {b.token} to "
                f"{b.end_us:.0f}us, but that grant ended (applied at "
                f"t={self.ended[lease_id]}us)",
            )

    def on_belief_end(self, client: NodeId, lease_id: int, cut: bool = True) -> None:
        """The client stops believing: at once (``cut``), or at ``valid_until`` as planned
        (it gave up renewing: its lost signal fired)."""
        b = self.by_lease.get(lease_id)
        if b is None or b.client != client or b.final:
            return
        b.final = True
        if cut and b.end_us > self.now_us:
            b.end_us = self.now_us
        per = self.current.get(b.name)
        if b.end_us <= self.now_us and per is not None and per.get(client) is b:
            del per[client]

    def believer(self, name: str) -> Belief | None:
        """The client that believes it holds ``name`` now, if any."""
        for b in self.current.get(name, {}).values():
            if b.valid_at(self.now_us):
                return b
        return None

    # -------------------------------------------------------------- 10 + 11: the lease table
    def on_lease_event(self, node: NodeId, kind: str, lease: LeaseRecord, index: int) -> None:
        """``node`` applied a grant (kind "acquired") or an end ("released"/"expired")."""
        if kind == "acquired":
            token = lease.fencing_token
            if token != index or lease.lease_id != index:
                raise self._fail(
                    "fencing-token-order",
                    f"{node} granted {lease.name!r} at index {index} with token {token} "
                    f"and lease id {lease.lease_id}",
                )
            rec = (lease.name, lease.holder, lease.request_id)
            old = self.grants.get(token)
            if old is None:
                self.grants[token] = rec
                self.stats.grants += 1
            elif old != rec:
                raise self._fail(
                    "fencing-token-order",
                    f"{node} applied token {token} as a grant of {rec}, another node as {old}",
                )
            per = self.node_tokens.get(node)
            if per is None:
                per = self.node_tokens[node] = {}
            last = max(per.get(lease.name, 0), self.node_floor.get(node, 0))
            if token <= last:
                raise self._fail(
                    "fencing-token-order",
                    f"{node} granted {lease.name!r} with token {token}, not above {last}",
                )
            per[lease.name] = token
            return
        lease_id = lease.lease_id
        if lease_id in self.ended:
            return
        self.ended[lease_id] = self.now_us
        if kind == "expired":
            self.stats.expiries += 1
        else:
            self.stats.releases += 1
        b = self.by_lease.get(lease_id)
        if self.check_after_end and b is not None and b.valid_at(self.now_us):
            self._me(
                "belief-after-end",
                f"{node} applied the {kind[:-1]} of {lease.name!r} token {lease_id} (the name "
                f"is free from now on) while {self._describe(b)} still believes it holds it",
            )

    def on_node_boot(self, node: NodeId, snapshot_index: int) -> None:
        self.node_tokens[node] = {}
        self.node_floor[node] = snapshot_index

    def on_snapshot_taken(self, node: NodeId, index: int, table: bytes) -> None:
        old = self.snapshot_tables.get(index)
        if old is None:
            self.snapshot_tables[index] = table
        elif old != table:
            raise self._fail(
                "state-machine-safety",
                f"{node}'s lease table at index {index} differs from another node's "
                f"({table[:120]!r} vs {old[:120]!r})",
            )

    def on_table_restored(self, node: NodeId, index: int, table: bytes) -> None:
        self.on_snapshot_taken(node, index, table)
        self.on_node_boot(node, index)

    # -------------------------------------------------------------- 12: the fenced resource
    def on_write(
        self, client: NodeId, name: str, token: int, lease_id: int, accepted: bool
    ) -> None:
        b = self.by_lease.get(lease_id)
        valid = b is not None and b.client == client and b.valid_at(self.now_us)
        st = self.stats
        if not accepted:
            if valid:
                st.writes_rejected_valid += 1
            else:
                st.writes_rejected_late += 1
            return
        prev = self.accepted_max.get(name, 0)
        if token < prev:
            raise self._fail(
                "fencing",
                f"the resource accepted {client}'s write to {name!r} with token {token} after "
                f"accepting token {prev}",
            )
        self.accepted_max[name] = token
        if valid:
            st.writes_accepted_valid += 1
        else:
            st.writes_accepted_late += 1
