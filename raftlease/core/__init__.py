"""The deterministic Raft core: no I/O, no clock, no asyncio, no global random.

Public surface: :class:`RaftCore`, the message dataclasses, :class:`Ready`, :class:`HardState`.
"""

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
from raftlease.core.raft import RaftCore
from raftlease.core.ready import HardState, Ready, SoftState

__all__ = [
    "AppendEntries",
    "AppendEntriesResponse",
    "Entry",
    "EntryKind",
    "HardState",
    "InstallSnapshot",
    "InstallSnapshotResponse",
    "Message",
    "RaftCore",
    "Ready",
    "RequestVote",
    "RequestVoteResponse",
    "Snapshot",
    "SoftState",
    "TimeoutNow",
]
