"""Raft messages and log records as frozen, slotted dataclasses (no protobuf here).

Every message carries ``term``, ``src`` and ``dst``. ``codec.py`` maps them to the wire.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from raftlease.core.membership import Membership
from raftlease.types import NodeId


class EntryKind(enum.IntEnum):
    NORMAL = 1  # an application command (opaque bytes for the core)
    NOOP = 2  # appended by every new leader to commit entries of earlier terms (Raft §5.4.2)
    CONFIG = 3  # a new membership (data: Membership.encode()); in force once appended


@dataclass(frozen=True, slots=True)
class Entry:
    index: int
    term: int
    kind: EntryKind = EntryKind.NORMAL
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A state-machine snapshot covering the log up to and including ``index``."""

    index: int
    term: int
    voters: tuple[NodeId, ...]
    data: bytes = b""
    # The rest of the membership as of ``index``: non-voting members and every member's peer
    # address (empty in a snapshot of a cluster that never changed membership).
    learners: tuple[NodeId, ...] = ()
    addresses: tuple[tuple[NodeId, str], ...] = ()

    @property
    def membership(self) -> Membership:
        return Membership(self.voters, self.learners, self.addresses)


@dataclass(frozen=True, slots=True)
class RequestVote:
    term: int
    src: NodeId
    dst: NodeId
    last_log_index: int
    last_log_term: int
    pre_vote: bool = False
    # Set when the campaign follows a TimeoutNow (leadership transfer): voters then ignore
    # leader stickiness, as the current leader asked for this election itself.
    transfer: bool = False


@dataclass(frozen=True, slots=True)
class RequestVoteResponse:
    term: int
    src: NodeId
    dst: NodeId
    granted: bool
    pre_vote: bool = False


@dataclass(frozen=True, slots=True)
class AppendEntries:
    term: int
    src: NodeId
    dst: NodeId
    prev_log_index: int
    prev_log_term: int
    entries: tuple[Entry, ...] = ()
    leader_commit: int = 0
    # The leader's own tick counter when it sent this message; echoed back untouched so the
    # leader can date quorum acknowledgements for its leader lease. Opaque to followers.
    send_tick: int = 0


@dataclass(frozen=True, slots=True)
class AppendEntriesResponse:
    term: int
    src: NodeId
    dst: NodeId
    success: bool
    # On success: the highest index known to match the leader's log.
    match_index: int = 0
    # On rejection (fast backtracking, Raft §5.3 optimisation): the follower's last index and,
    # if the follower has an entry at prev_log_index with a different term, that term and the
    # first index the follower holds of it.
    last_log_index: int = 0
    conflict_term: int = 0
    conflict_index: int = 0
    send_tick: int = 0  # echo of AppendEntries.send_tick
    applied_index: int = 0  # follower health, shown by cluster status


@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    term: int
    src: NodeId
    dst: NodeId
    snapshot: Snapshot
    send_tick: int = 0


@dataclass(frozen=True, slots=True)
class InstallSnapshotResponse:
    term: int
    src: NodeId
    dst: NodeId
    match_index: int
    send_tick: int = 0


@dataclass(frozen=True, slots=True)
class TimeoutNow:
    term: int
    src: NodeId
    dst: NodeId


Message = (
    RequestVote
    | RequestVoteResponse
    | AppendEntries
    | AppendEntriesResponse
    | InstallSnapshot
    | InstallSnapshotResponse
    | TimeoutNow
)

__all__ = [
    "AppendEntries",
    "AppendEntriesResponse",
    "Entry",
    "EntryKind",
    "InstallSnapshot",
    "InstallSnapshotResponse",
    "Message",
    "RequestVote",
    "RequestVoteResponse",
    "Snapshot",
    "TimeoutNow",
]
