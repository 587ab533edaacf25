"""The durable-storage seam: a Protocol, with a SQLite implementation and an in-memory twin.

Who calls it: only the driver (``node.py``, or the simulator), never the core. Methods are
synchronous; the asyncio driver runs them in an executor so the event loop never blocks on
fsync. Error semantics (as etcd's): if any method raises :class:`StorageError`, the node must
stop; it never retries a failed ``save`` and never acknowledges what it tried to save.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from raftlease.core.messages import Entry, Snapshot
from raftlease.core.ready import HardState

if TYPE_CHECKING:
    from collections.abc import Sequence


@dataclass(frozen=True, slots=True)
class LoadedState:
    """Everything a node needs to restart its core."""

    hard_state: HardState
    snapshot: Snapshot | None
    entries: tuple[Entry, ...] = field(default=())  # contiguous, all after snapshot.index


class Storage(Protocol):
    def load(self) -> LoadedState:
        """Read back what earlier ``save``/``compact`` calls made durable.

        Raises StorageError on corruption that cannot be safely repaired (e.g. a bad record in
        the middle of the log). A torn or corrupt *tail* (an unacknowledged write cut by a
        crash) is dropped and the rest returned.
        """
        ...

    def save(
        self,
        hard_state: HardState | None,
        snapshot: Snapshot | None,
        entries: Sequence[Entry],
    ) -> None:
        """Durably store one Ready's worth of state in ONE transaction, then fsync.

        ``entries`` replace every stored entry at index >= entries[0].index. A ``snapshot``
        (received from the leader) replaces the whole log up to its index: entries at or below
        it are dropped, and if the log does not continue the snapshot, all entries are dropped.
        Returns only once the data is on disk. Raises StorageError; the caller must then stop.
        """
        ...

    def compact(self, snapshot: Snapshot) -> None:
        """Store a locally taken snapshot and drop log entries at or below its index (fsync)."""
        ...

    def close(self) -> None:
        """Release file handles. Idempotent."""
        ...
