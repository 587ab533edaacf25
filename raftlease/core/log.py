"""RaftLog: the in-memory log of one node (entries after the last snapshot).

The driver persists what :meth:`unstable_entries` returns (see ready.py); after a restart the
core is rebuilt from storage, so everything here is either derived from storage or volatile.
Nothing here reads a clock or does I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from raftlease.errors import RaftLeaseError

if TYPE_CHECKING:
    from raftlease.core.messages import Entry, Snapshot


class LogInvariantError(RaftLeaseError):
    """An input would break a Raft safety rule (e.g. truncating a committed entry)."""


class RaftLog:
    __slots__ = (
        "applied",
        "committed",
        "entries",
        "pending_snapshot",
        "snapshot",
        "unstable_from",
    )

    def __init__(self, snapshot: Snapshot | None, entries: tuple[Entry, ...], commit: int) -> None:
        self.snapshot: Snapshot | None = snapshot
        self.entries: list[Entry] = list(entries)
        first = self.first_index
        for i, e in enumerate(self.entries):
            if e.index != first + i:
                raise LogInvariantError(f"log not contiguous at index {e.index}")
        self.committed = max(commit, self.snapshot_index)
        if self.committed > self.last_index:
            raise LogInvariantError(
                f"commit index {self.committed} is beyond the last log index {self.last_index}"
            )
        self.applied = self.snapshot_index
        self.unstable_from = self.last_index + 1
        self.pending_snapshot: Snapshot | None = None

    # --- positions -------------------------------------------------------------------------
    @property
    def snapshot_index(self) -> int:
        return self.snapshot.index if self.snapshot is not None else 0

    @property
    def snapshot_term(self) -> int:
        return self.snapshot.term if self.snapshot is not None else 0

    @property
    def first_index(self) -> int:
        return self.snapshot_index + 1

    @property
    def last_index(self) -> int:
        return self.snapshot_index + len(self.entries)

    @property
    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.snapshot_term

    def term_at(self, index: int) -> int | None:
        """Term of the entry at ``index``; None if compacted away (below the snapshot) or absent."""
        si = self.snapshot_index
        if index == si:
            return self.snapshot_term
        if index < si or index > si + len(self.entries):
            return None
        return self.entries[index - si - 1].term

    def entry(self, index: int) -> Entry:
        return self.entries[index - self.snapshot_index - 1]

    def slice(self, lo: int, hi: int) -> tuple[Entry, ...]:
        """Entries with lo <= index < hi (both within the retained log)."""
        si = self.snapshot_index
        return tuple(self.entries[lo - si - 1 : hi - si - 1])

    def first_index_of_term(self, index: int) -> int:
        """The first index of the run of entries with the same term as ``index``."""
        term = self.term_at(index)
        i = index
        while i - 1 > self.snapshot_index and self.term_at(i - 1) == term:
            i -= 1
        return i

    def last_index_of_term(self, term: int) -> int:
        """The last index holding ``term`` (0 if none)."""
        for e in reversed(self.entries):
            if e.term == term:
                return e.index
            if e.term < term:
                break
        return 0

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft §5.4.1: is a candidate's log at least as up-to-date as ours?"""
        lt = self.last_term
        return last_term > lt or (last_term == lt and last_index >= self.last_index)

    # --- mutation --------------------------------------------------------------------------
    def append(self, entry: Entry) -> None:
        self.entries.append(entry)

    def truncate_and_append(self, entries: tuple[Entry, ...]) -> None:
        """Follower append (Raft §5.3): skip matching entries, cut at the first conflict."""
        for k, e in enumerate(entries):
            existing = self.term_at(e.index)
            if existing is not None and e.index > self.snapshot_index and existing == e.term:
                continue
            if e.index <= self.snapshot_index:
                continue
            if e.index <= self.last_index:
                if e.index <= self.committed:
                    raise LogInvariantError(
                        f"refusing to truncate committed entry {e.index} (commit {self.committed})"
                    )
                del self.entries[e.index - self.snapshot_index - 1 :]
                self.unstable_from = min(self.unstable_from, e.index)
            if e.index != self.last_index + 1:
                raise LogInvariantError(f"gap: appending {e.index} after {self.last_index}")
            self.entries.extend(entries[k:])
            return

    def commit_to(self, index: int) -> bool:
        if index > self.committed:
            if index > self.last_index:
                raise LogInvariantError(f"commit {index} beyond last index {self.last_index}")
            self.committed = index
            return True
        return False

    def restore(self, snapshot: Snapshot) -> None:
        """Install a leader's snapshot: the log now starts after it."""
        if self.term_at(snapshot.index) == snapshot.term and snapshot.index <= self.last_index:
            keep = self.entries[snapshot.index - self.snapshot_index :]
        else:
            keep = []
        self.snapshot = snapshot
        self.entries = keep
        self.committed = max(self.committed, snapshot.index)
        self.applied = snapshot.index
        self.unstable_from = max(self.unstable_from, snapshot.index + 1)
        if not keep:
            self.unstable_from = snapshot.index + 1
        self.pending_snapshot = snapshot

    def compact(self, snapshot: Snapshot) -> None:
        """Drop entries covered by a locally taken snapshot (already applied and persisted)."""
        if snapshot.index > self.applied:
            raise LogInvariantError(
                f"cannot compact to {snapshot.index}: only {self.applied} applied"
            )
        if snapshot.index <= self.snapshot_index:
            return
        self.entries = self.entries[snapshot.index - self.snapshot_index :]
        self.snapshot = snapshot

    # --- what the driver must do -----------------------------------------------------------
    def unstable_entries(self) -> tuple[Entry, ...]:
        if self.unstable_from > self.last_index:
            return ()
        return self.slice(max(self.unstable_from, self.first_index), self.last_index + 1)

    def next_committed(self, limit: int) -> tuple[Entry, ...]:
        lo = self.applied + 1
        hi = min(self.committed, self.applied + limit) + 1
        if hi <= lo:
            return ()
        return self.slice(lo, hi)
