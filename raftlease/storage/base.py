"""The durable-storage seam: a Protocol, with a SQLite implementation and an in-memory twin.

Who calls it: only the driver (``node.py``, or the simulator), never the core. Methods are
synchronous; the asyncio driver runs them in an executor so the event loop never blocks on
fsync. Error semantics (as etcd's): if any method raises :class:`StorageError`, the node must
stop; it never retries a failed ``save`` and never acknowledges what it tried to save.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Protocol

from raftlease.core.messages import Entry, Snapshot
from raftlease.core.ready import HardState
from raftlease.errors import StorageError

if TYPE_CHECKING:
    from collections.abc import Sequence


#: What to tell an operator whose node's data is damaged or gone (every storage error that
#: refuses to start says this). Wiping the data dir is NOT a fix: a node restarted empty under
#: its old id has forgotten its vote (it may vote twice in one term, electing two leaders) and
#: its log (a grant that was committed with its acknowledgement can be lost).
NOT_REJOIN_ADVICE: Final = (
    "refusing to start. Do not restart this node with an empty data dir under the same id: it "
    "would have forgotten its vote and log, could vote twice in one term, and a committed "
    "grant could be lost. Replace the machine under a new id instead: `raftlease member add` "
    "it, then `raftlease member remove` this one (docs/membership.md); the cluster keeps "
    "running on the remaining quorum meanwhile"
)


class DataDirMismatch(StorageError):
    """The data dir belongs to another configuration (cluster id, node id or member set).

    A misconfiguration, not damage: nothing was read or written beyond the ownership record;
    start the node with the settings the data dir was created with.
    """


@dataclass(frozen=True, slots=True)
class LoadedState:
    """Everything a node needs to restart its core."""

    hard_state: HardState
    snapshot: Snapshot | None
    entries: tuple[Entry, ...] = field(default=())  # contiguous, all after snapshot.index


class Storage(Protocol):
    def load(self) -> LoadedState:
        """Read back what earlier ``save``/``compact`` calls made durable.

        Raises StorageError if anything stored fails its check: a bad record anywhere in
        the log, the last one included, or a bad hard state or snapshot. Nothing is ever
        dropped or repaired: a save that returned may have been acknowledged to the leader
        (an entry counted towards a commit, a vote granted), so dropping even the last entry
        could lose a committed entry or let this node vote twice in a term. A write cut by a
        crash never reaches ``load()``: ``save`` is one atomic transaction (SqliteStorage:
        an SQLite COMMIT, which a crash either completes or rolls back whole), so what was
        not committed is simply absent, not damaged. MemoryStorage never holds damaged data
        and its ``load()`` never raises.

        A node whose storage is refused must not rejoin with an empty data dir under its old
        id: it would have forgotten its vote and its log. See :data:`NOT_REJOIN_ADVICE`.
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
