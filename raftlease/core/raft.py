"""RaftCore: a deterministic, synchronous Raft state machine (etcd RawNode style).

Rules of this module (as h11's):
  * Nothing here reads a clock, does I/O, or uses the global ``random``. Time is ``tick()``;
    randomness is the ``random.Random`` handed in by the caller (seeded in tests).
  * Every input is ``tick()``, ``step(message)``, ``propose(data)`` or
    ``transfer_leadership(target)``. Every output comes out of ``ready()``.
  * The driver follows the READY CONTRACT in ``ready.py``: PERSIST hard state and entries
    BEFORE SENDING the messages of the same Ready, then apply, then ``advance()``.
    Between ``ready()`` and ``advance()`` (while the driver saves) only ``tick()`` and the
    messages ``steps_while_saving`` admits may be given; ``take_messages()`` says what of
    their output may be sent before the save is done.
  * Only ``_become_follower``, ``_become_pre_candidate``, ``_become_candidate`` and
    ``_become_leader`` write ``self.role``.

Extensions over the Raft paper: PreVote and CheckQuorum with leader stickiness (thesis
§9.6), leadership transfer (§3.10), fast log backtracking (§5.3), snapshots (§7), and a
leader lease counted in this node's own ticks (see ``lease_valid``; docs/safety.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, assert_never

from raftlease.core.log import RaftLog
from raftlease.core.membership import Membership, MembershipError, voter_change
from raftlease.core.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    EntryKind,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
    RequestVote,
    RequestVoteResponse,
    Snapshot,
    TimeoutNow,
)
from raftlease.core.progress import Progress, ProgressState
from raftlease.core.quorum import quorum_size, quorum_value
from raftlease.core.ready import HardState, Ready, SoftState
from raftlease.errors import NotLeader, ProposalDropped
from raftlease.types import NodeId, Role

if TYPE_CHECKING:
    import random

    from raftlease.config import RaftConfig

MAX_COMMITTED_PER_READY = 4096
# The send_tick of a reply that acknowledges nothing (an answer to an older term's message).
NO_ACK_TICK = 0
# What a stalled leader may step before catching up its ticks (steps_before_ticks).
_OWN_TERM_ANSWERS = (AppendEntriesResponse, InstallSnapshotResponse)


@dataclass(frozen=True, slots=True)
class PeerStatus:
    """The leader's view of one peer (for cluster status)."""

    id: NodeId
    match_index: int
    next_index: int
    state: str
    ticks_since_heard: int  # -1: never heard in this term
    applied_index: int
    lost_entries: int  # times its log was found shorter than what it had acknowledged
    learner: bool = False


class RaftCore:
    def __init__(
        self,
        config: RaftConfig,
        rng: random.Random,
        hard_state: HardState | None = None,
        snapshot: Snapshot | None = None,
        entries: tuple[Entry, ...] = (),
    ) -> None:
        config.validate()
        self.config = config
        self.id = config.node_id
        self.rng = rng
        hs = hard_state or HardState()
        self.term = hs.term
        self.voted_for: NodeId | None = hs.voted_for
        self.log = RaftLog(snapshot, entries, hs.commit)
        self.role = Role.FOLLOWER
        # Membership (thesis §4.1): the newest configuration in the log is in force, committed
        # or not. _configs holds (index, membership) for the base (the snapshot's, else the
        # bootstrap voters at index 0) and every CONFIG entry of the retained log, in order.
        base = snapshot.membership if snapshot else Membership(tuple(sorted(config.voters)))
        self._configs: list[tuple[int, Membership]] = [(self.log.snapshot_index, base)]
        self._scan_configs(self.log.entries)
        self.membership = base
        self.voters: tuple[NodeId, ...] = ()
        self.peers: tuple[NodeId, ...] = ()  # every other member: replication targets
        self._voter_peers: tuple[NodeId, ...] = ()  # the other voters: counted in quorums
        self.is_voter = False
        self.leader_id: NodeId | None = None
        self.lease_ticks = config.effective_lease_ticks

        self.tick_count = 0  # this node's logical clock; never persisted, never sent as time
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        # Ticks since we last heard from a live leader. Boot counts as hearing one: a node
        # that just restarted cannot know whether it acknowledged a leader's heartbeat an
        # instant before it crashed, so it refuses votes for election_ticks_min (stickiness).
        self.ticks_since_leader = 0
        self.randomized_election_ticks = self._random_election_ticks()

        self.votes: dict[NodeId, bool] = {}
        self.progress: dict[NodeId, Progress] = {}
        self.term_start_index = 0  # index of this leader's first entry (its no-op)
        self.lead_transferee: NodeId | None = None
        self.transfer_elapsed = 0
        self.timeout_now_sent = False
        self.lease_blocked = False  # set once TimeoutNow is sent: no lease for this term

        self._msgs: list[Message] = []
        self._prev_hard = hs
        self._ready_outstanding = False
        self._set_membership()

    # ------------------------------------------------------------------ public inputs
    def tick(self) -> None:
        """Advance this node's logical clock by one tick. Allowed while a Ready is being
        saved: a stalled disk must not stop the clock (see ``steps_while_saving``)."""
        self.tick_count += 1
        self.ticks_since_leader += 1
        if self.role is Role.LEADER:
            self._tick_leader()
        else:
            self._tick_election()

    def propose(self, data: bytes) -> tuple[int, int]:
        """Append a command to the leader's log; returns its (index, term).

        Raises NotLeader (with a leader hint) on a non-leader, ProposalDropped during a
        leadership transfer. The entry is committed only if it is later applied at this index
        with this term; anything else at that index means it was dropped.
        """
        self._check_no_ready()
        if self.role is not Role.LEADER:
            raise NotLeader(f"node {self.id} is not the leader", self.leader_id)
        if self.lead_transferee is not None:
            raise ProposalDropped(f"leadership is being transferred to {self.lead_transferee}")
        index = self.log.last_index + 1
        self.log.append(Entry(index, self.term, EntryKind.NORMAL, data))
        return index, self.term

    def step(self, m: Message) -> None:
        """Feed one message received from a peer (while a Ready is being saved, only one
        that ``steps_while_saving`` admits)."""
        if self._ready_outstanding and not self.steps_while_saving(m):
            raise RuntimeError(
                "RaftCore.step() between ready() and advance() of a message "
                "steps_while_saving() does not admit"
            )
        if m.dst != self.id or m.src == self.id:
            return  # not for us: the transport should have refused it
        # Messages from outside our configuration are processed (thesis §4.1): a lagging node
        # must hear a leader its log does not know of yet. Such a node's votes and answers
        # count only where the receiver's configuration makes it a voter.
        if m.term > self.term:
            if isinstance(m, RequestVote):
                if self._in_lease() and not m.transfer:
                    # Leader stickiness (thesis §9.6): we heard from a live leader recently,
                    # so this candidate cannot be needed. Do not even bump our term.
                    self._send(RequestVoteResponse(self.term, self.id, m.src, False, m.pre_vote))
                    return
                if not m.pre_vote:
                    self._become_follower(m.term, None)
            elif isinstance(m, RequestVoteResponse) and m.pre_vote and m.granted:
                pass  # a granted pre-vote carries the term we would campaign in
            elif isinstance(m, AppendEntries | InstallSnapshot | TimeoutNow):
                self._become_follower(m.term, m.src)
            else:
                self._become_follower(m.term, None)
        elif m.term < self.term:
            self._reply_stale(m)
            return

        match m:
            case RequestVote():
                self._handle_request_vote(m)
            case RequestVoteResponse():
                self._handle_vote_response(m)
            case AppendEntries():
                self._handle_append(m)
            case AppendEntriesResponse():
                self._handle_append_response(m)
            case InstallSnapshot():
                self._handle_snapshot(m)
            case InstallSnapshotResponse():
                self._handle_snapshot_response(m)
            case TimeoutNow():
                self._handle_timeout_now(m)
            case _:
                assert_never(m)

    def transfer_leadership(self, target: NodeId) -> None:
        """Hand leadership to ``target`` (thesis §3.10). Proposals are refused meanwhile."""
        self._check_no_ready()
        if self.role is not Role.LEADER:
            raise NotLeader(f"node {self.id} is not the leader", self.leader_id)
        if target == self.id or target not in self._voter_peers:
            raise ValueError(
                f"cannot transfer leadership to {target!r}: not a voting peer of {self.id}"
            )
        if self.lead_transferee == target:
            return
        self.lead_transferee = target
        self.transfer_elapsed = 0
        self.timeout_now_sent = False
        self._maybe_send_timeout_now()
        if not self.timeout_now_sent:
            self._send_append(target)

    def campaign(self) -> bool:
        """Start an election now, unless this node heard from a live leader too recently.

        Returns whether it campaigned. A node inside its own stickiness window must not: its
        vote for itself would then count against a leader whose lease it just acknowledged
        (docs/safety.md, L1). Use ``transfer_leadership`` on the leader to move leadership.
        """
        self._check_no_ready()
        if self.role is Role.LEADER or self._in_lease() or not self.is_voter:
            return False
        self._start_election(transfer=False)
        return True

    def propose_membership(self, new: Membership) -> tuple[int, int]:
        """Append a configuration entry that changes at most one voter (thesis §4.2); it is in
        force on this leader at once. Returns its (index, term), committed like ``propose``.

        Refused with MembershipError (retryable) until this leader has committed an entry of
        its own term (thesis errata: otherwise two changes decided by different leaders could
        have disjoint quorums) and while an earlier change is not committed; refused outright
        for a change of two or more voters, no voter left, or a new voter that is not a
        caught-up learner (it would count in the quorum before it holds the log).
        """
        self._check_no_ready()
        if self.role is not Role.LEADER:
            raise NotLeader(f"node {self.id} is not the leader", self.leader_id)
        if self.lead_transferee is not None:
            raise ProposalDropped(f"leadership is being transferred to {self.lead_transferee}")
        if not self.committed_in_term():
            raise MembershipError(
                f"leader {self.id} has not yet committed an entry of its term {self.term}; "
                "retry in a moment",
                retryable=True,
            )
        pending = self._configs[-1][0]
        if pending > self.log.committed:
            raise MembershipError(
                f"the membership change at index {pending} is not committed yet; "
                "one change at a time",
                retryable=True,
            )
        old = self.membership
        changed = voter_change(old, new)
        if not new.voters:
            raise MembershipError("a configuration needs at least one voter")
        if len(changed) > 1:
            raise MembershipError(
                f"one voter at a time: this change adds or removes {sorted(changed)}"
            )
        for nid in changed & set(new.voters):
            if nid not in old.learners:
                raise MembershipError(f"{nid} must join as a learner before it can vote")
            self._check_caught_up(nid)
        index = self.log.last_index + 1
        self.log.append(Entry(index, self.term, EntryKind.CONFIG, new.encode()))
        self._configs.append((index, new))
        self._set_membership()
        return index, self.term

    def learner_lag(self, node_id: NodeId) -> int | None:
        """Entries the member ``node_id`` lacks (on the leader), None if unknown."""
        p = self.progress.get(node_id)
        if self.role is not Role.LEADER or p is None:
            return None
        return self.log.last_index - p.match_index

    def _check_caught_up(self, nid: NodeId) -> None:
        p = self.progress.get(nid)
        behind = self.log.last_index - (p.match_index if p else 0)
        recent = (
            p is not None
            and p.last_heard_tick >= 0
            and self.tick_count - p.last_heard_tick < self.config.election_ticks_min
        )
        if p is None or not recent or behind > self.config.max_entries_per_append:
            raise MembershipError(
                f"learner {nid} is not caught up ({behind} entries behind the leader"
                f"{'' if recent else ', not heard from recently'}); promote it once it is",
                retryable=True,
            )

    def compact(self, index: int, data: bytes) -> Snapshot | None:
        """Record a state-machine snapshot at ``index`` (already applied) and drop older log.

        The driver then persists it with ``Storage.compact``. Returns the snapshot, or None
        when the log is already compacted to ``index`` or past it: a driver that encodes a
        big table over many turns may find that an InstallSnapshot overtook it meanwhile.
        """
        self._check_no_ready()
        if index <= self.log.snapshot_index:
            return None
        term = self.log.term_at(index)
        if term is None:
            raise ValueError(f"cannot snapshot at {index}: not in the retained log")
        m = self._config_at(index)
        snap = Snapshot(index, term, m.voters, data, m.learners, m.addresses)
        self.log.compact(snap)
        later = [c for c in self._configs if c[0] > index]
        self._configs = [(index, m), *later]
        return snap

    # ------------------------------------------------------------------ outputs
    def ready(self) -> Ready:
        """Collect everything the driver must persist, send and apply (see ready.py)."""
        self._check_no_ready()
        if self.role is Role.LEADER:
            self._flush_appends()
        hs = HardState(self.term, self.voted_for, self.log.committed)
        snapshot = self.log.pending_snapshot
        rd = Ready(
            hard_state=hs if hs != self._prev_hard else None,
            soft_state=SoftState(self.role, self.leader_id, self.term),
            entries=self.log.unstable_entries(),
            snapshot=snapshot,
            messages=tuple(self._msgs),
            committed_entries=self.log.next_committed(MAX_COMMITTED_PER_READY),
        )
        self._msgs = []
        self._ready_outstanding = True
        return rd

    def has_ready(self) -> bool:
        if self.role is Role.LEADER and self._appends_pending():
            return True
        return bool(
            self._msgs
            or self.log.pending_snapshot is not None
            or self.log.unstable_from <= self.log.last_index
            or self.log.committed > self.log.applied
            or HardState(self.term, self.voted_for, self.log.committed) != self._prev_hard
        )

    def advance(self, rd: Ready) -> None:
        """The driver has persisted, sent and applied ``rd``."""
        if not self._ready_outstanding:
            raise RuntimeError("advance() without a matching ready()")
        self._ready_outstanding = False
        if rd.hard_state is not None:
            self._prev_hard = rd.hard_state
        if rd.entries:
            self.log.unstable_from = max(self.log.unstable_from, rd.entries[-1].index + 1)
        if rd.snapshot is not None and self.log.pending_snapshot is rd.snapshot:
            self.log.pending_snapshot = None
        if rd.committed_entries:
            self.log.applied = max(self.log.applied, rd.committed_entries[-1].index)
        if rd.entries and self.role is Role.LEADER:
            self._maybe_commit()  # our own entries are durable now: they count for us

    # ------------------------------------------------------------------ queries
    @property
    def commit_index(self) -> int:
        return self.log.committed

    @property
    def applied_index(self) -> int:
        return self.log.applied

    @property
    def last_index(self) -> int:
        return self.log.last_index

    def committed_in_term(self) -> bool:
        """Has this leader committed an entry of its own term (its no-op)? (Raft §8)"""
        return (
            self.role is Role.LEADER
            and self.term_start_index > 0
            and self.log.committed >= self.term_start_index
        )

    def ticks_until_timer(self) -> int:
        """Ticks until a tick would make this core act on its own (send heartbeats, check
        the quorum, start an election); at least 1. Lets a driver sleep instead of waking
        for every tick: the ticks it skips are caught up from the clock when it wakes."""
        if self.role is Role.LEADER:
            c = self.config
            soonest = min(
                c.heartbeat_ticks - self.heartbeat_elapsed,
                c.election_ticks_min - self.election_elapsed,
            )
            for p in self.progress.values():
                due = self._late_beat_tick(p)
                if due >= 0:
                    soonest = min(soonest, due - self.tick_count)
            return max(1, soonest)
        return max(1, self.randomized_election_ticks - self.election_elapsed)

    def steps_before_ticks(self, m: Message) -> bool:
        """May a driver whose tick counter fell behind the clock step ``m`` BEFORE it catches
        the missed ticks up? Only a leader's answers of its own current term.

        A leader whose loop stalled holds its followers' answers; ticking first would make
        CheckQuorum step down for lack of answers it already holds. Such an answer is dated by
        the send tick it echoes, so a stale counter does not matter for it. Every other message
        must be stepped after the catch-up: a newer-term AppendEntries stepped at a stale tick
        would make this node record "heard from the leader" too early, and the replayed ticks
        would end its vote stickiness while its ack already counts toward the new leader's
        lease (two valid leader leases; docs/safety.md, L2). The node and the simulator both
        ask this method, so the rule exists once.
        """
        return (
            self.role is Role.LEADER
            and type(m) in _OWN_TERM_ANSWERS
            and m.term == self.term
            and m.dst == self.id
        )

    def steps_while_saving(self, m: Message) -> bool:
        """May a driver step ``m`` while it is saving a Ready (between ``ready()`` and
        ``advance()``)? Only what keeps a leader lease alive through a slow fsync and needs
        nothing of the Ready being saved (issue 15: a disk stalled for a second on every
        node at once must not cost the leader its lease):

          * a leader's answers of its own term. They count toward its commit index only what
            each follower reported durable, and the leader counts itself only up to what
            ``advance`` reported persisted (``_maybe_commit``);
          * a follower's AppendEntries of its own term from the leader it follows, whose
            ``prev_log_index`` lies in the durable part of its log (``_ackable_index``) and
            that brings no entry it does not hold already: a heartbeat, or a retransmit or
            probe of entries it is saving (a leader that hears of no progress for a heartbeat
            interval resends them instead of a heartbeat). No snapshot may be pending. The
            answer acknowledges no more than the durable part.

        Everything else waits for ``advance()``: a vote or a newer term changes what must be
        durable before the answer, entries change the log being saved. ``tick()`` is always
        allowed. The node and the simulator both ask this method, so the rule exists once.
        """
        if m.term != self.term or m.dst != self.id:
            return False
        if self.role is Role.LEADER:
            return type(m) in _OWN_TERM_ANSWERS
        return (
            self.role is Role.FOLLOWER
            and isinstance(m, AppendEntries)
            and m.src == self.leader_id
            and (not m.entries or self._holds(m.entries[-1]))
            and m.prev_log_index <= self._ackable_index()
            and self.log.pending_snapshot is None
        )

    def take_messages(self) -> tuple[Message, ...]:
        """While a Ready is being saved: the messages produced since ``ready()`` (by ticks and
        by what ``steps_while_saving`` admitted) if they may be sent before that save is done,
        else () and they wait for the next Ready. They may while this node leads or follows
        with the term and vote that are already durable (those of the last Ready that
        ``advance`` saw): its heartbeats and answers then rest on durable state only. A node
        that began an election meanwhile keeps its requests for the next Ready, which makes
        its new term and vote durable first."""
        prev = self._prev_hard
        if (
            not self._msgs
            or self.role not in (Role.LEADER, Role.FOLLOWER)
            or self.term != prev.term
            or self.voted_for != prev.voted_for
        ):
            return ()
        msgs = tuple(self._msgs)
        self._msgs = []
        return msgs

    def _holds(self, e: Entry) -> bool:
        """Does our log hold ``e`` (and so, by Log Matching, every entry before it)?"""
        return e.index > self.log.snapshot_index and self.log.term_at(e.index) == e.term

    def _ackable_index(self) -> int:
        """The highest log index this node may acknowledge now: its last one, except while a
        Ready is being saved, when only the entries below ``unstable_from`` are durable."""
        if self._ready_outstanding:
            return min(self.log.last_index, self.log.unstable_from - 1)
        return self.log.last_index

    def lease_start_tick(self) -> int:
        """The newest own send_tick that a quorum of the voters in force (this leader
        included only while it is one) has acknowledged."""
        progress = self.progress
        acks = [progress[pid].ack_tick for pid in self._voter_peers if pid in progress]
        if self.is_voter:
            acks.append(self.tick_count)
        return quorum_value(acks, len(self.voters))

    def lease_valid(self) -> bool:
        """Does this node hold a valid leader lease right now?

        True only for a leader that (a) has committed its no-op, (b) is not handing over
        leadership, and (c) heard a quorum acknowledge a message it sent fewer than
        ``lease_ticks`` ticks ago. Followers that acknowledged it refuse votes for
        ``election_ticks_min`` of their own ticks, which config.validate() proves longer.
        """
        if self.role is not Role.LEADER or self.lease_ticks <= 0 or self.lease_blocked:
            return False
        if self.lead_transferee is not None or not self.committed_in_term():
            return False
        start = self.lease_start_tick()
        return start >= 0 and self.tick_count - start < self.lease_ticks

    def lease_remaining_ticks(self) -> int:
        """Whole ticks the leader lease has left (0 if not valid)."""
        if not self.lease_valid():
            return 0
        return self.lease_ticks - (self.tick_count - self.lease_start_tick())

    @property
    def config_index(self) -> int:
        """Index of the configuration in force (0: the bootstrap voters)."""
        return self._configs[-1][0]

    def peer_status(self) -> list[PeerStatus]:
        out = []
        for pid in self.peers:
            p = self.progress.get(pid)
            if p is None:
                continue
            heard = -1 if p.last_heard_tick < 0 else self.tick_count - p.last_heard_tick
            out.append(
                PeerStatus(
                    pid,
                    p.match_index,
                    p.next_index,
                    p.state.value,
                    heard,
                    p.applied_index,
                    p.lost_entries,
                    pid not in self.voters,
                )
            )
        return out

    # ------------------------------------------------------------------ role changes
    def _become_follower(self, term: int, leader: NodeId | None) -> None:
        if term > self.term:
            self.term = term
            self.voted_for = None
        self.role = Role.FOLLOWER
        self.leader_id = leader
        self._reset_timers()
        self.progress = {}
        self.lead_transferee = None
        self.lease_blocked = False

    def _become_pre_candidate(self) -> None:
        # PreVote (thesis §9.6): ask first, without touching term or vote.
        self.role = Role.PRE_CANDIDATE
        self.leader_id = None
        self.votes = {self.id: True}
        self._reset_timers()

    def _become_candidate(self) -> None:
        self.role = Role.CANDIDATE
        self.term += 1
        self.voted_for = self.id
        self.leader_id = None
        self.votes = {self.id: True}
        self._reset_timers()

    def _become_leader(self) -> None:
        self.role = Role.LEADER
        self.leader_id = self.id
        self._reset_timers()
        self.lead_transferee = None
        self.lease_blocked = False
        nxt = self.log.last_index + 1
        self.progress = {pid: Progress(nxt) for pid in self.peers}
        # Raft §5.4.2 / §8: a no-op of our own term commits every earlier entry safely.
        self.term_start_index = nxt
        self.log.append(Entry(nxt, self.term, EntryKind.NOOP, b""))
        self._maybe_commit()
        for pid in self.peers:
            self._send_append(pid)

    def _reset_timers(self) -> None:
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_ticks = self._random_election_ticks()

    def _random_election_ticks(self) -> int:
        c = self.config
        return self.rng.randrange(c.election_ticks_min, c.election_ticks_max)

    # ------------------------------------------------------------------ ticks
    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.election_elapsed >= self.randomized_election_ticks:
            if not self.is_voter:
                # A learner, a node removed from the configuration, or a joining node with
                # none yet: it never campaigns (it would only disrupt the voters).
                self.election_elapsed = 0
                return
            self._start_election(transfer=False)

    def _tick_leader(self) -> None:
        c = self.config
        if not self.is_voter and self._configs[-1][0] <= self.log.committed:
            # Thesis §4.2.2: a leader removed from the configuration manages the cluster
            # until the change commits, then steps down, after telling every follower the
            # commit index (else they learn that the change committed only from the next
            # leader's no-op).
            for pid in self.peers:
                self._send_match_heartbeat(pid, self.progress[pid])
            self._become_follower(self.term, None)
            return
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= c.election_ticks_min:
            self.election_elapsed = 0
            if c.check_quorum and not self._quorum_active():
                # CheckQuorum: a leader cut off from a majority steps down by itself.
                self._become_follower(self.term, None)
                return
        if self.lead_transferee is not None:
            self.transfer_elapsed += 1
            if self.transfer_elapsed >= c.election_ticks_min:
                sent = self.timeout_now_sent
                self.lead_transferee = None
                if sent:
                    # The target may still win with a delayed TimeoutNow; our lease stays off
                    # for this term, so step down and let a normal election run.
                    self._become_follower(self.term, None)
                    return
        if self.heartbeat_elapsed >= c.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            for pid in self.peers:
                self._send_heartbeat(pid)
            return
        progress, now = self.progress, self.tick_count
        for pid in self.peers:
            p = progress[pid]
            due = self._late_beat_tick(p)
            if 0 <= due <= now:
                self._send_match_heartbeat(pid, p)

    def _late_beat_tick(self, p: Progress) -> int:
        """When ``p`` is owed an extra heartbeat, or -1: the last one went unanswered for half
        a heartbeat interval (a follower whose disk stalls answers only heartbeats; a loop
        that lags answers late). Without it the lease would rest on one answer per interval,
        each due within ``lease_ticks - heartbeat_ticks`` ticks of its heartbeat (4 at the
        server's timing, 40 ms); with it an answer may take up to ``lease_ticks - half``.
        A peer not heard from for an election timeout (down, cut off) gets none: the regular
        heartbeat keeps trying it. Idle, with answers on time, nothing extra is sent."""
        half = self.config.heartbeat_ticks // 2
        if (
            half < 1
            or p.ack_tick >= p.beat_tick
            or p.state is ProgressState.SNAPSHOT
            or p.last_heard_tick < 0
            or self.tick_count - p.last_heard_tick >= self.config.election_ticks_min
        ):
            return -1
        return p.beat_tick + half

    def _quorum_active(self) -> bool:
        progress = self.progress
        active = int(self.is_voter) + sum(
            1 for pid in self._voter_peers if pid in progress and progress[pid].recent_active
        )
        for p in progress.values():
            p.recent_active = False
        return active >= quorum_size(len(self.voters))

    def _in_lease(self) -> bool:
        """Leader stickiness: have we heard from (or been) a live leader too recently to vote?"""
        if not self.config.check_quorum:
            return False
        if self.role is Role.LEADER:
            return True
        return self.ticks_since_leader < self.config.election_ticks_min

    # ------------------------------------------------------------------ elections
    def _start_election(self, transfer: bool) -> None:
        if not self.is_voter:
            return
        if len(self.voters) == 1:
            self._become_candidate()
            self._become_leader()
            return
        if self.config.pre_vote and not transfer:
            self._become_pre_candidate()
            term = self.term + 1
            pre = True
        else:
            self._become_candidate()
            term = self.term
            pre = False
        for pid in self._voter_peers:
            self._send(
                RequestVote(
                    term, self.id, pid, self.log.last_index, self.log.last_term, pre, transfer
                )
            )

    def _handle_request_vote(self, m: RequestVote) -> None:
        # Here m.term >= self.term (stale ones were answered in step()).
        if self.id not in self._configs[-1][1].members:
            # A joining node, or one removed: no configuration in its log contains it, so it
            # must not vote (a node that joined with a reused id may have forgotten a vote).
            self._send(RequestVoteResponse(self.term, self.id, m.src, False, m.pre_vote))
            return
        up_to_date = self.log.is_up_to_date(m.last_log_index, m.last_log_term)
        if m.pre_vote:
            grant = m.term > self.term and up_to_date
            self._send(
                RequestVoteResponse(m.term if grant else self.term, self.id, m.src, grant, True)
            )
            return
        # Stickiness applies to every new vote, not only to one that raises our term: a node
        # that just acknowledged a leader may have adopted this term from another message
        # first (a rejected pre-vote answer), and its vote would then elect a rival while the
        # leader's lease, which counted its ack, still runs (docs/safety.md, step 1).
        sticky = self._in_lease() and not m.transfer
        can_vote = self.voted_for == m.src or (self.voted_for is None and not sticky)
        if can_vote and up_to_date and self.role in (Role.FOLLOWER, Role.PRE_CANDIDATE):
            # Raft §5.2: the vote is part of HardState; the Ready contract persists it
            # BEFORE this response is sent (thesis §3.8).
            self.voted_for = m.src
            self.election_elapsed = 0
            self._send(RequestVoteResponse(self.term, self.id, m.src, True, False))
        else:
            self._send(RequestVoteResponse(self.term, self.id, m.src, False, False))

    def _handle_vote_response(self, m: RequestVoteResponse) -> None:
        if m.pre_vote:
            if self.role is not Role.PRE_CANDIDATE:
                return
            if m.granted and m.term != self.term + 1:
                return
        elif self.role is not Role.CANDIDATE or m.term != self.term:
            return
        if m.src not in self.voters:
            return  # only the voters of our configuration count
        self.votes[m.src] = m.granted
        q = quorum_size(len(self.voters))
        granted = sum(1 for v in self.votes.values() if v)
        rejected = len(self.votes) - granted
        if granted >= q:
            if self.role is Role.PRE_CANDIDATE:
                self._start_election_after_prevote()
            else:
                self._become_leader()
        elif rejected >= q:
            self._become_follower(self.term, None)

    def _start_election_after_prevote(self) -> None:
        self._become_candidate()
        for pid in self._voter_peers:
            self._send(
                RequestVote(
                    self.term, self.id, pid, self.log.last_index, self.log.last_term, False, False
                )
            )

    def _handle_timeout_now(self, m: TimeoutNow) -> None:
        if self.role is Role.LEADER or not self.is_voter:
            return
        # Thesis §3.10: the leader asked us to take over; skip PreVote and stickiness.
        self._start_election(transfer=True)

    # ------------------------------------------------------------------ follower side
    def _heard_from_leader(self, leader: NodeId) -> None:
        if self.role is not Role.FOLLOWER:
            self._become_follower(self.term, leader)
        self.leader_id = leader
        self.election_elapsed = 0
        self.ticks_since_leader = 0

    def _handle_append(self, m: AppendEntries) -> None:
        self._heard_from_leader(m.src)
        log = self.log
        prev, prev_term, entries = m.prev_log_index, m.prev_log_term, m.entries
        if prev < log.committed:
            # Everything up to our commit index matches every later leader's log (§5.4):
            # skip that part and check the rest from our commit index on.
            entries = tuple(e for e in entries if e.index > log.committed)
            prev = log.committed
            prev_term = log.term_at(prev) or 0
        term = log.term_at(prev)
        if term is None or term != prev_term:
            if term is None:
                self._respond_append(m, False, match=prev)
            else:
                first = log.first_index_of_term(prev)
                self._respond_append(m, False, match=prev, conflict_term=term, conflict_index=first)
            return
        if entries and not self._holds(entries[-1]):  # else a duplicate: nothing to change
            log.truncate_and_append(entries)
            self._configs_appended(entries)
        # While a Ready is being saved (steps_while_saving: no new entries here),
        # acknowledge only what is durable, even where ``prev`` was raised to our commit
        # index or the message repeats entries we are still saving.
        last_new = min(max(prev, m.prev_log_index + len(m.entries)), self._ackable_index())
        log.commit_to(min(m.leader_commit, last_new))
        self._respond_append(m, True, match=last_new)

    def _respond_append(
        self,
        m: AppendEntries,
        success: bool,
        match: int,
        conflict_term: int = 0,
        conflict_index: int = 0,
    ) -> None:
        # On rejection ``match_index`` carries the rejected prev_log_index (lets the leader
        # drop stale rejections).
        self._send(
            AppendEntriesResponse(
                self.term,
                self.id,
                m.src,
                success,
                match,
                self.log.last_index,
                conflict_term,
                conflict_index,
                m.send_tick,
                self.log.applied,
            )
        )

    def _handle_snapshot(self, m: InstallSnapshot) -> None:
        self._heard_from_leader(m.src)
        snap = m.snapshot
        if snap.index > self.log.committed:
            if self.log.term_at(snap.index) == snap.term:
                self.log.commit_to(snap.index)  # we already have it: just fast-forward
            else:
                self.log.restore(snap)
                self._configs = [(snap.index, snap.membership)]
                self._scan_configs(self.log.entries)
                self._set_membership()
        match = max(self.log.committed, 0)
        self._send(InstallSnapshotResponse(self.term, self.id, m.src, match, m.send_tick))

    # ------------------------------------------------------------------ leader side
    def _heard_from_peer(self, p: Progress, send_tick: int) -> None:
        p.recent_active = True
        p.last_heard_tick = self.tick_count
        # send_tick 0 is no acknowledgement: a reply to a message of an older term (see
        # _reply_stale) carries 0, and must not count toward this term's leader lease. A
        # heartbeat really sent at tick 0 is then not counted either: the safe direction.
        if send_tick > p.ack_tick and send_tick > NO_ACK_TICK:
            p.ack_tick = send_tick

    def _handle_append_response(self, m: AppendEntriesResponse) -> None:
        if self.role is not Role.LEADER:
            return
        p = self.progress.get(m.src)
        if p is None:
            return
        self._heard_from_peer(p, m.send_tick)
        p.applied_index = m.applied_index
        if m.success:
            if m.match_index > p.match_index:
                p.match_index = m.match_index
                p.match_tick = self.tick_count
                if p.next_index <= p.match_index:
                    p.next_index = p.match_index + 1
                self._maybe_commit()  # followers learn it with the next append
            p.free_inflight(m.match_index)
            if p.state is ProgressState.PROBE or (
                p.state is ProgressState.SNAPSHOT and p.match_index >= self.log.snapshot_index
            ):
                p.become_replicate()
            if self.lead_transferee == m.src:
                self._maybe_send_timeout_now()
            return
        # Rejection. m.match_index is the prev_log_index that was refused.
        if m.match_index < p.match_index or (
            p.state is ProgressState.PROBE and m.match_index != p.next_index - 1
        ):
            return  # stale
        if m.last_log_index < p.match_index and m.send_tick > p.match_tick:
            # The follower's log ends below what it acknowledged: its disk lost acknowledged
            # entries (e.g. a damaged WAL). Resync it from where its log really ends; our
            # commit index never goes back. (Without this it would stay stuck forever.)
            # Only a rejection of an append sent AFTER we learned the match proves it: an
            # older, delayed rejection is just stale.
            p.match_index = m.last_log_index
            p.lost_entries += 1
        if m.conflict_term > 0:
            last = self.log.last_index_of_term(m.conflict_term)
            nxt = last + 1 if last > 0 else m.conflict_index
        else:
            nxt = m.last_log_index + 1
        p.next_index = max(p.match_index + 1, min(nxt, m.match_index))
        p.become_probe()
        self._send_append(m.src)

    def _handle_snapshot_response(self, m: InstallSnapshotResponse) -> None:
        if self.role is not Role.LEADER:
            return
        p = self.progress.get(m.src)
        if p is None:
            return
        self._heard_from_peer(p, m.send_tick)
        if m.match_index > p.match_index:
            p.match_index = m.match_index
            p.match_tick = self.tick_count
            self._maybe_commit()
        p.next_index = p.match_index + 1
        p.become_probe()

    def _maybe_commit(self) -> bool:
        # The leader counts ITSELF only up to what the driver has persisted (advance()), not
        # up to its last index: a driver may send a leader's AppendEntries before its own
        # fsync (Raft thesis §10.2.1), and an entry counts toward the quorum only where it
        # is durable.
        log = self.log
        progress = self.progress
        matches = [progress[pid].match_index for pid in self._voter_peers if pid in progress]
        if self.is_voter:
            matches.append(min(log.last_index, log.unstable_from - 1))
        n = quorum_value(matches, len(self.voters))
        # Raft §5.4.2 (figure 8): only entries of the current term commit by counting.
        if n > self.log.committed and self.log.term_at(n) == self.term:
            self.log.commit_to(n)
            return True
        return False

    def _maybe_send_timeout_now(self) -> None:
        target = self.lead_transferee
        if target is None or self.timeout_now_sent:
            return
        p = self.progress.get(target)
        if p is not None and p.match_index == self.log.last_index:
            self.timeout_now_sent = True
            self.lease_blocked = True  # BEFORE the target can campaign (it skips stickiness)
            self._send(TimeoutNow(self.term, self.id, target))

    def _appends_pending(self) -> bool:
        last = self.log.last_index
        for p in self.progress.values():
            if p.state is ProgressState.REPLICATE and p.next_index <= last:
                if len(p.inflight) < self.config.max_inflight:
                    return True
            elif p.state is ProgressState.PROBE and not p.probe_sent:
                return True
        return False

    def _flush_appends(self) -> None:
        """Batching: send whatever each peer is missing, once per Ready."""
        self._maybe_commit()
        last = self.log.last_index
        for pid, p in self.progress.items():
            if p.state is ProgressState.REPLICATE:
                # _send_append may switch the peer to SNAPSHOT (its next entry was compacted
                # away): re-check the state each round, or this loop never ends.
                while self._can_pipeline(p, last):
                    self._send_append(pid)
            elif p.state is ProgressState.PROBE and not p.probe_sent:
                self._send_append(pid)

    def _can_pipeline(self, p: Progress, last: int) -> bool:
        return (
            p.state is ProgressState.REPLICATE
            and p.next_index <= last
            and len(p.inflight) < self.config.max_inflight
        )

    def _send_heartbeat(self, pid: NodeId) -> None:
        p = self.progress[pid]
        # Every heartbeat includes an empty AppendEntries at the peer's known match point,
        # also when appends are resent or probed below: a follower whose disk is stalled
        # answers that one (steps_while_saving) but not entries it does not hold yet, and
        # without its answers this leader's lease would lapse and CheckQuorum depose it
        # (issue 15: a 390 ms stall of every node's disk under W2 load did).
        beat = p.state is not ProgressState.SNAPSHOT and self._send_match_heartbeat(pid, p)
        if p.state is ProgressState.REPLICATE:
            if p.inflight and p.match_index == p.hb_match:
                # No progress over a whole heartbeat interval with appends outstanding: one
                # was lost. Fall back to probing from the known match point (retransmit).
                p.next_index = p.match_index + 1
                p.become_probe()
                self._send_append(pid)
                return
            p.hb_match = p.match_index
            if beat:
                return
        if p.state is ProgressState.SNAPSHOT:
            # While a snapshot is on its way, keep the follower's election timer quiet with
            # an empty append at index 0 (always matches below a follower's commit index).
            self._send(AppendEntries(self.term, self.id, pid, 0, 0, (), 0, self.tick_count))
            self._send_snapshot(pid, p)
            return
        # PROBE: resend the probe (recovers a lost probe).
        p.probe_sent = False
        self._send_append(pid)

    def _send_match_heartbeat(self, pid: NodeId, p: Progress) -> bool:
        """An empty AppendEntries at the peer's known match point (it never triggers a
        spurious rejection) carrying the commit index; False if that point was compacted."""
        log = self.log
        prev_term = log.term_at(p.match_index)
        if prev_term is None:
            return False
        self._send(
            AppendEntries(
                self.term,
                self.id,
                pid,
                p.match_index,
                prev_term,
                (),
                log.committed,
                self.tick_count,
            )
        )
        p.beat_tick = self.tick_count
        return True

    def _send_append(self, pid: NodeId) -> None:
        p = self.progress[pid]
        log = self.log
        prev = p.next_index - 1
        prev_term = log.term_at(prev)
        if prev_term is None or p.state is ProgressState.SNAPSHOT:
            self._send_snapshot(pid, p)
            return
        hi = min(log.last_index + 1, p.next_index + self.config.max_entries_per_append)
        entries = log.slice(p.next_index, hi)
        self._send(
            AppendEntries(
                self.term, self.id, pid, prev, prev_term, entries, log.committed, self.tick_count
            )
        )
        if p.state is ProgressState.REPLICATE:
            if entries:
                p.next_index = entries[-1].index + 1
                p.inflight.append(entries[-1].index)
        else:
            p.probe_sent = True

    def _send_snapshot(self, pid: NodeId, p: Progress) -> None:
        snap = self.log.snapshot
        if snap is None:
            return
        p.state = ProgressState.SNAPSHOT
        p.inflight.clear()
        if self.tick_count - p.last_snapshot_tick < self.config.election_ticks_min:
            return  # one in flight; resend at most once per election timeout
        p.last_snapshot_tick = self.tick_count
        p.probe_sent = True
        self._send(InstallSnapshot(self.term, self.id, pid, snap, self.tick_count))

    # ------------------------------------------------------------------ membership
    def _scan_configs(self, entries: list[Entry] | tuple[Entry, ...]) -> None:
        configs = self._configs
        for e in entries:
            if e.kind is EntryKind.CONFIG:
                configs.append((e.index, Membership.decode(e.data)))

    def _configs_appended(self, entries: tuple[Entry, ...]) -> None:
        """A follower appended ``entries`` (cutting a conflicting suffix first, maybe): drop
        the configurations the log no longer holds and add the new ones (a configuration
        entry removed by truncation takes the older configuration back, thesis §4.1)."""
        lo, hi, last = entries[0].index, entries[-1].index, self.log.last_index
        before = self._configs
        kept = [c for c in before if c[0] < lo or (hi < c[0] <= last)]
        added = [
            (e.index, Membership.decode(e.data)) for e in entries if e.kind is EntryKind.CONFIG
        ]
        if not added and len(kept) == len(before):
            return
        later = [c for c in kept if c[0] > hi]
        self._configs = [c for c in kept if c[0] < lo] + added + later
        self._set_membership()

    def _config_at(self, index: int) -> Membership:
        for i, m in reversed(self._configs):
            if i <= index:
                return m
        return self._configs[0][1]

    def _set_membership(self) -> None:
        m = self._configs[-1][1]
        self.membership = m
        self.voters = m.voters
        self.is_voter = self.id in m.voters
        self.peers = tuple(x for x in m.members if x != self.id)
        self._voter_peers = tuple(x for x in m.voters if x != self.id)
        if self.role is Role.LEADER:
            nxt = self.log.last_index + 1
            for pid in self.peers:
                if pid not in self.progress:
                    self.progress[pid] = Progress(nxt)
            for pid in [p for p in self.progress if p not in self.peers]:
                del self.progress[pid]
            if self.lead_transferee is not None and self.lead_transferee not in self.voters:
                self.lead_transferee = None

    # ------------------------------------------------------------------ plumbing
    def _reply_stale(self, m: Message) -> None:
        """A message from an older term: tell the sender our term so it steps down."""
        match m:
            case AppendEntries():
                self._send(
                    AppendEntriesResponse(
                        self.term,
                        self.id,
                        m.src,
                        False,
                        m.prev_log_index,
                        self.log.last_index,
                        send_tick=NO_ACK_TICK,
                    )
                )
            case InstallSnapshot():
                self._send(
                    InstallSnapshotResponse(self.term, self.id, m.src, 0, send_tick=NO_ACK_TICK)
                )
            case RequestVote():
                self._send(RequestVoteResponse(self.term, self.id, m.src, False, m.pre_vote))
            case _:
                pass

    def _send(self, m: Message) -> None:
        self._msgs.append(m)

    def _check_no_ready(self) -> None:
        if self._ready_outstanding:
            raise RuntimeError("RaftCore input between ready() and advance()")
