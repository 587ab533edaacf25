"""MemoryStorage: the in-memory twin of the Storage protocol, for tests and the simulator.

Everything a call stores is "durable" the moment the call returns: a simulated crash keeps this
object and rebuilds the core from :meth:`MemoryStorage.load`, exactly as a real restart reads
the SQLite file. The semantics of ``save``/``compact``/``load`` (including which calls raise
:class:`StorageError`) match :class:`raftlease.storage.sqlite.SqliteStorage` exactly; a property
test holds the two together. What only a file needs (ownership by a cluster id, node id and
member set; format version; checksums) is SqliteStorage's alone: this object is never reopened
under another configuration and never holds damaged data.

The log is a list of entries plus an offset (the snapshot's index, or 0), so appends and
truncations are list operations and lookups are O(1). Entries and snapshots are frozen
dataclasses, so they are shared, never copied.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from raftlease.core.ready import HardState
from raftlease.errors import StorageError
from raftlease.storage.base import LoadedState

if TYPE_CHECKING:
    from collections.abc import Sequence

    from raftlease.core.messages import Entry, Snapshot

__all__ = ["MemoryStorage"]


class MemoryStorage:
    """An in-memory :class:`~raftlease.storage.base.Storage`; not thread-safe.

    Invariant: ``_entries[i].index == _offset + 1 + i`` and ``_offset`` is the stored
    snapshot's index (0 without a snapshot).
    """

    __slots__ = ("_entries", "_hard_state", "_offset", "_snapshot")

    def __init__(self) -> None:
        self._hard_state = HardState()
        self._snapshot: Snapshot | None = None
        self._entries: list[Entry] = []
        self._offset = 0

    # -- inspection (handy for tests and the simulator; not part of the Protocol) ----------

    @property
    def hard_state(self) -> HardState:
        """The last saved hard state (``HardState()`` if none was ever saved)."""
        return self._hard_state

    @property
    def snapshot(self) -> Snapshot | None:
        """The stored snapshot, if any."""
        return self._snapshot

    @property
    def first_index(self) -> int:
        """Index the first stored entry has or would have: the snapshot's index + 1 (or 1)."""
        return self._offset + 1

    @property
    def last_index(self) -> int:
        """Index of the last stored entry, else the snapshot's index, else 0."""
        return self._offset + len(self._entries)

    def copy(self) -> MemoryStorage:
        """An independent copy (entries are immutable and shared; the list is not)."""
        other = MemoryStorage()
        other._hard_state = self._hard_state
        other._snapshot = self._snapshot
        other._entries = self._entries.copy()
        other._offset = self._offset
        return other

    # -- the Storage protocol -----------------------------------------------------------------

    def load(self) -> LoadedState:
        """Return everything saved, nothing dropped. Never raises: memory holds nothing
        damaged (SqliteStorage refuses damaged data at ``load()`` rather than dropping any;
        see :meth:`raftlease.storage.base.Storage.load`)."""
        return LoadedState(self._hard_state, self._snapshot, tuple(self._entries))

    def save(
        self,
        hard_state: HardState | None,
        snapshot: Snapshot | None,
        entries: Sequence[Entry],
    ) -> None:
        """Store hard state, then snapshot, then entries, all or nothing.

        A ``snapshot`` drops every entry at or below its index, and drops all entries if the
        log has no entry at ``snapshot.index`` with ``snapshot.term`` (the log does not
        continue it). ``entries`` then replace every entry at index >= ``entries[0].index``.

        Raises StorageError, changing nothing, if the call breaks the log's shape (these are
        caller bugs): the snapshot is older than the stored one; ``entries`` are not
        contiguous; ``entries[0].index`` is at or below the snapshot's index, or would leave a
        gap after the last stored entry.
        """
        log = self._entries
        offset = self._offset
        keep_from = 0  # with a snapshot: position in ``log`` of the first entry that survives
        if snapshot is not None:
            if self._snapshot is not None and snapshot.index < self._snapshot.index:
                raise StorageError(
                    f"snapshot at index {snapshot.index} is older than the stored snapshot at "
                    f"index {self._snapshot.index}"
                )
            keep_from = self._continuation(snapshot)
            new_offset = snapshot.index
            new_last = offset + len(log) if keep_from >= 0 else new_offset
        else:
            new_offset = offset
            new_last = offset + len(log)
        if entries:
            check_entries(entries, new_offset, new_last)

        # Validated: now mutate (nothing below can fail).
        if snapshot is not None:
            if keep_from >= 0:
                del log[:keep_from]
            else:
                log.clear()
            self._offset = new_offset
            self._snapshot = snapshot
        if entries:
            del log[entries[0].index - self._offset - 1 :]
            log.extend(entries)
        if hard_state is not None:
            self._hard_state = hard_state

    def compact(self, snapshot: Snapshot) -> None:
        """Store a locally taken snapshot and drop the entries at or below its index.

        A snapshot not newer than the stored one is ignored (a harmless race with an installed
        snapshot). Raises StorageError, changing nothing, if the log has no entry at
        ``snapshot.index`` with ``snapshot.term`` (a local snapshot must cover the local log).
        """
        if self._snapshot is not None and snapshot.index <= self._snapshot.index:
            return
        keep_from = self._continuation(snapshot)
        if keep_from < 0:
            raise StorageError(
                f"cannot compact to index {snapshot.index} term {snapshot.term}: the log holds "
                f"no such entry (last index {self.last_index})"
            )
        del self._entries[:keep_from]
        self._offset = snapshot.index
        self._snapshot = snapshot

    def close(self) -> None:
        """Does nothing: the object stays usable, so a simulated restart can ``load()`` it."""

    # -- helpers ------------------------------------------------------------------------------

    def _continuation(self, snapshot: Snapshot) -> int:
        """Position in ``_entries`` after the entry matching ``snapshot``, or -1 if none does."""
        pos = snapshot.index - self._offset
        if pos == 0:
            base_term = self._snapshot.term if self._snapshot is not None else 0
            return 0 if base_term == snapshot.term else -1
        if 0 < pos <= len(self._entries) and self._entries[pos - 1].term == snapshot.term:
            return pos
        return -1


def check_entries(entries: Sequence[Entry], offset: int, last: int) -> None:
    """Raise StorageError unless ``entries`` fit after ``offset`` and reach at most last + 1.

    Shared with SqliteStorage so both reject exactly the same calls. O(1): checks the ends.
    """
    first = entries[0].index
    if entries[-1].index != first + len(entries) - 1:
        raise StorageError(
            f"entries to save are not contiguous: {len(entries)} entries from index {first} "
            f"to {entries[-1].index}"
        )
    if first <= offset:
        raise StorageError(
            f"entries to save start at index {first}, at or below the snapshot index {offset}"
        )
    if first > last + 1:
        raise StorageError(
            f"entries to save start at index {first}, leaving a gap after the last stored "
            f"index {last}"
        )
