"""The simulator's vocabulary: a simulated server (:class:`SimNode`), what the oracles report
(:class:`LeaseInterval`, :class:`LivenessResult`), the message renderer of its transcripts
(:func:`describe`, what ``--verbose`` prints), the state-hash chain, and the constants the
other modules share (partition shapes, failpoint names, the snapshot payload layout)."""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import assert_never

from raftlease.config import RaftConfig
from raftlease.core.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
    RequestVote,
    RequestVoteResponse,
    Snapshot,
    TimeoutNow,
)
from raftlease.core.raft import RaftCore
from raftlease.core.ready import HardState, Ready
from raftlease.fsm.leases import LeaseTable, TableView
from raftlease.service import LeaseService
from raftlease.storage.memory import MemoryStorage
from raftlease.testing.clients import ClientRequest
from raftlease.types import NodeId, Role

CoreFactory = Callable[
    [RaftConfig, random.Random, HardState | None, Snapshot | None, tuple[Entry, ...]], RaftCore
]

PARTITION_SHAPES = (
    "isolate-leader",
    "isolate-one",
    "minority",
    "majorities-ring",
    "bridge",
    "one-way",
)

ZERO_HASH = bytes(16)
HASH_LEN = len(ZERO_HASH)  # a snapshot's data: the state hash, then the lease table

FAILPOINTS = ("before-send", "before-save", "after-send", "after-apply")
# Where a failpoint applies: every Ready (""), a leader's, a new leader's first, one with
# committed entries, a follower's, one that persists a vote (a granted vote or a candidate's
# own), a leader's while entries some follower acknowledged are not committed yet, and one
# that installs a snapshot.
FAILPOINT_SCOPES = ("", "leader", "new-leader", "commit", "follower", "vote", "acked", "snapshot")


class Crashed(Exception):
    """A failpoint crashed the node in the middle of its Ready loop."""


def state_hash(prev: bytes, e: Entry) -> bytes:
    """The state-machine hash chain: the hash after applying ``e`` on top of ``prev``."""
    h = hashlib.blake2b(prev, digest_size=16)
    h.update(e.index.to_bytes(8, "big"))
    h.update(e.term.to_bytes(8, "big"))
    h.update(bytes((int(e.kind),)))
    h.update(e.data)
    return h.digest()


def describe(m: Message) -> str:
    """A short, stable, one-line rendering of a message (for transcripts)."""
    head = f"{m.src}->{m.dst} t{m.term}"
    match m:
        case RequestVote():
            kind = "PreVote" if m.pre_vote else "RequestVote"
            extra = " transfer" if m.transfer else ""
            return f"{head} {kind} last={m.last_log_index}/{m.last_log_term}{extra}"
        case RequestVoteResponse():
            kind = "PreVoteResp" if m.pre_vote else "VoteResp"
            return f"{head} {kind} {'granted' if m.granted else 'rejected'}"
        case AppendEntries():
            ents = ""
            if m.entries:
                ents = f" entries={m.entries[0].index}..{m.entries[-1].index}"
            return (
                f"{head} Append prev={m.prev_log_index}/{m.prev_log_term}{ents} "
                f"commit={m.leader_commit} st={m.send_tick}"
            )
        case AppendEntriesResponse():
            if m.success:
                return f"{head} AppendResp ok match={m.match_index} st={m.send_tick}"
            return (
                f"{head} AppendResp reject prev={m.match_index} last={m.last_log_index} "
                f"conflict={m.conflict_index}/{m.conflict_term}"
            )
        case InstallSnapshot():
            return f"{head} InstallSnapshot {m.snapshot.index}/{m.snapshot.term}"
        case InstallSnapshotResponse():
            return f"{head} SnapshotResp match={m.match_index}"
        case TimeoutNow():
            return f"{head} TimeoutNow"
        case _:
            assert_never(m)


@dataclass(slots=True)
class SimNode:
    """One simulated server: durable storage, a clock, and (while up) a core."""

    id: NodeId
    index: int
    rate: float
    tick_interval_us: float
    storage: MemoryStorage = field(default_factory=MemoryStorage)
    core: RaftCore | None = None
    up: bool = False
    incarnation: int = 0
    next_tick_us: float = 0.0
    applied_index: int = 0
    state_hash: bytes = ZERO_HASH
    # index -> (term, kind, data) of every entry this node's state machine applied.
    applied_log: dict[int, tuple[int, int, bytes]] = field(default_factory=dict)
    seen_role: Role = Role.FOLLOWER
    seen_term: int = 0
    lease: bool = False
    crashes: int = 0
    # ``paused``: input waits in ``inbox`` (the node is stopped, or saving: see below).
    # ``stopped``: SIGSTOP: the clock runs on but the process does nothing; ticks are missed.
    # ``pause_lease_left``: ticks its lease belief has left.
    paused: bool = False
    stopped: bool = False
    missed_ticks: int = 0
    inbox: list[Message | ClientRequest] = field(default_factory=list)
    pause_lease_left: int = 0
    # The lease service that ships (volatile: rebuilt from snapshot + log on boot, as in
    # node.py), and when this node's driver next wakes for it (local seconds; inf: no wake).
    service: LeaseService | None = None
    wake_at: float = math.inf
    deferred: list[Callable[[], None]] = field(default_factory=list)  # timers due while paused
    # The node's monotonic clock: local_s = clock_local_s + rate * (now - clock_real_us) / 1e6.
    clock_real_us: int = 0
    clock_local_s: float = 0.0
    # The CheckQuorum oracle: per peer index, this node's tick count when a message from that
    # peer was last delivered to it (-1: never, in this incarnation); the tick it took office.
    heard_tick: list[int] = field(default_factory=list)
    leader_since_tick: int = 0
    # The stickiness rule: when it last sent an ack that counts toward a leader's lease
    # (real us, -1: never; survives crashes: the window is real time), the shortest real
    # interval between its ticks so far, and the transfer vote requests it was sent.
    acked_at_us: int = -1
    # When this incarnation last stepped an AppendEntries/InstallSnapshot of its term or a
    # newer one (-1: never): its answers, which may leave after a slow save, date it by that.
    leader_stepped_us: int = -1
    booted_at_us: int = 0  # boot counts as contact with a leader (docs/safety.md R1)
    timeout_now_term: int = 0  # the last term in which it sent TimeoutNow (a transfer)
    # As leader: the highest send tick each peer's delivered answers of its term echoed.
    echoed: dict[NodeId, int] = field(default_factory=dict)
    acked_term: int = 0
    acked_leader: NodeId | None = None
    term_before_vote: int = 0  # its term when it was handed the latest RequestVote
    min_tick_interval_us: float = 0.0
    transfer_asks: set[tuple[NodeId, int]] = field(default_factory=set)
    # Membership: a node removed from the configuration and then shut down for good (never
    # restarted); the configuration index this node's core had in force at its last input;
    # as a leader, its tick count when it first led outside a committed configuration in
    # force (-1: not so) and when its configuration in force last changed.
    retired: bool = False
    config_index: int = 0
    # A snapshot begun and not yet compacted (node.py encodes a table over many turns):
    # the index and state hash it was taken at, and the frozen table (volatile).
    snapshot_job: tuple[int, bytes, TableView] | None = None
    removed_since_tick: int = -1
    config_since_tick: int = 0
    # A slow disk (SimFaults.slow_disk): until ``slow_until_us`` every save of this node takes
    # a random time from ``slow_save_us``. ``saving``: the Ready whose save is running; the
    # node is then ``paused`` except for ticks and what RaftCore.steps_while_saving admits
    # (node.py's save window). A stopped node's fsync runs on: ``saved`` once it is durable;
    # the process sees it (finishes the Ready) when it resumes.
    slow_until_us: int = 0
    slow_save_us: tuple[int, int] = (0, 0)
    saving: Ready | None = None
    saved: bool = False
    save_done: Callable[[], None] | None = None  # ends the running save (idempotent)

    @property
    def is_leader(self) -> bool:
        return self.core is not None and self.core.role is Role.LEADER

    @property
    def table(self) -> LeaseTable:
        """The lease table of the running service (an empty one while down)."""
        return self.service.table if self.service is not None else LeaseTable()


@dataclass(frozen=True, slots=True)
class MemberChange:
    """The token of a membership change the simulated operator asked a leader's
    LeaseService for (``SimDriver.reconfigure``): ``what`` is e.g. "add n4"."""

    seq: int
    what: str
    target: NodeId


def gone(node: SimNode, inc: int) -> bool:
    """Has ``node`` crashed (or crashed and restarted) since incarnation ``inc``?"""
    return not node.up or node.incarnation != inc


@dataclass(frozen=True, slots=True)
class LeaseInterval:
    """A node held a valid leader lease over [start_us, end_us) (end -1: still holds it)."""

    node: NodeId
    term: int
    start_us: int
    end_us: int


@dataclass(frozen=True, slots=True)
class LivenessResult:
    """What the post-heal liveness check measured."""

    election_us: int  # heal -> first valid leader lease
    stable_us: int  # heal -> start of the lease of the leader that then stayed stable
    commit_us: int  # proposal -> applied on every node
    leader: NodeId
    term: int
    disruptions: int  # lease leaders deposed before they proved stable
    tick_us: int
    election_ticks_max: int

    @property
    def election_ticks(self) -> float:
        return self.election_us / self.tick_us

    @property
    def stable_ticks(self) -> float:
        return self.stable_us / self.tick_us
