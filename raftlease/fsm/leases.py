"""The replicated lease table: the state machine every replica applies committed entries to.

Rules of this module:

- PURE AND DETERMINISTIC. Nothing here reads a clock, does I/O, or draws a random number.
  Every replica applies the same committed entries, in log order, and reaches byte-identical
  state (compare :meth:`LeaseTable.state_hash` across replicas). Deadlines are not state:
  the leader tracks them on its own clock and proposes :class:`Expire` when one passes.
- Every input is :meth:`LeaseTable.apply_entry` (or :meth:`LeaseTable.apply`), once per
  committed entry, with strictly increasing log indices.
- A lease's ``lease_id`` and ``fencing_token`` are both the log index of the entry that made
  the grant. Indices strictly increase, so tokens strictly increase per name (guarantee 2,
  fencing) and lease ids are unique across names, with no counter to keep in sync.
- A command that breaks a limit, or bytes that do not decode, give :class:`Rejected` and change
  nothing but ``applied_index``; every replica rejects them identically.
- Waiters exist only for a held name. A release or expiry hands the lease to the first waiter
  IN THE SAME ENTRY (events "released"/"expired" then "acquired"), so a free name with waiters
  is never observable and there is no thundering herd.

Imports: stdlib, :mod:`raftlease.fsm.commands`, :mod:`raftlease.fsm.limits`. (Of ``sys``,
only ``sys.intern``: one holder string shared by every lease and waiter of that holder; of
``gc``, only a pause of the cyclic collector while a snapshot is restored.)
"""

from __future__ import annotations

import gc
import hashlib
import json
import sys
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, assert_never

from raftlease.fsm.commands import (
    Acquire,
    CancelWait,
    Command,
    Expire,
    Release,
    decode_command,
)
from raftlease.fsm.limits import (
    InvalidArgument,
    validate_holder,
    validate_metadata,
    validate_name,
    validate_request_id,
    validate_ttl_ms,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = [
    "ApplyResult",
    "Expired",
    "Granted",
    "Held",
    "LeaseEvent",
    "LeaseRecord",
    "LeaseTable",
    "NotFound",
    "Queued",
    "Rejected",
    "Released",
    "TableView",
    "WaitCancelled",
    "Waiter",
    "decompress_snapshot",
]

SNAPSHOT_FORMAT = 2
"""The format :meth:`LeaseTable.snapshot` writes. :meth:`LeaseTable.restore` reads it and
format 1 (one JSON object per lease, written by earlier versions), so older data dirs and
``raftlease snapshot save`` files still load."""


SNAPSHOT_ZLIB_LEVEL = 1
"""A snapshot a node keeps, stores and sends (``TableView.encode(compress=True)``) is the
format-2 JSON in one zlib stream at this level: 100,000 leases 8.5 -> 3.0 MB for ~110 ms of
CPU in total, spread over the slices (level 6: 2.7 MB for 275 ms). The core holds its latest
snapshot in memory for followers that fall behind, so this is ~55 bytes per lease less on
every node. :meth:`LeaseTable.restore` reads both forms."""

SNAPSHOT_MAX_BYTES = 1 << 30
"""The largest decompressed snapshot :meth:`LeaseTable.restore` accepts (a 100,000-lease
table is ~9 MB): a damaged or hostile stream cannot make a node allocate without bound."""

_ZLIB_HEADER = 0x78  # the first byte of a zlib stream (deflate, 32 KiB window)

_SHARED_TTLS = 1_024
"""At most this many distinct TTL values per table share one int object (LeaseTable._ttls)."""


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """One current grant. ``lease_id`` is the index of the log entry that granted it, and
    also its ``fencing_token`` and ``granted_index`` (properties, not slots: one stored int
    for the three keeps a 100,000-lease table 1.6 MB smaller).

    ``request_id`` is the id of the acquire that got this grant (directly, or as a waiter);
    a retry of that acquire gets this record back.
    """

    name: str
    lease_id: int
    holder: str
    ttl_ms: int
    metadata: tuple[tuple[str, str], ...]
    request_id: str

    @property
    def fencing_token(self) -> int:
        """Strictly larger for every later grant of any name (the grant's log index)."""
        return self.lease_id

    @property
    def granted_index(self) -> int:
        """The index of the log entry that made this grant."""
        return self.lease_id


@dataclass(frozen=True, slots=True)
class Waiter:
    """A queued acquire: it becomes a :class:`LeaseRecord` when the lease is handed over."""

    holder: str
    ttl_ms: int
    request_id: str
    metadata: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Granted:
    """The acquire holds ``lease`` (a new grant, or the same one again for a retry)."""

    lease: LeaseRecord


@dataclass(frozen=True, slots=True)
class Queued:
    """The acquire waits at ``position`` (1 = next) in the FIFO queue of ``name``."""

    name: str
    position: int
    current: LeaseRecord


@dataclass(frozen=True, slots=True)
class Held:
    """The lease is held by someone else and the acquire did not ask to wait."""

    current: LeaseRecord


@dataclass(frozen=True, slots=True)
class Released:
    """``lease`` ended; ``next_grant`` is the first waiter's new grant, if there was one."""

    lease: LeaseRecord
    next_grant: LeaseRecord | None


@dataclass(frozen=True, slots=True)
class Expired:
    """``lease`` expired; ``next_grant`` is the first waiter's new grant, if there was one."""

    lease: LeaseRecord
    next_grant: LeaseRecord | None


@dataclass(frozen=True, slots=True)
class NotFound:
    """The release or expiry named a lease that is not current; nothing changed."""

    message: str


@dataclass(frozen=True, slots=True)
class WaitCancelled:
    """The waiter ``request_id`` left the queue of ``name`` (``found`` false: it was not there)."""

    name: str
    request_id: str
    found: bool


@dataclass(frozen=True, slots=True)
class Rejected:
    """The command broke a limit or did not decode; nothing changed. Maps to INVALID_ARGUMENT."""

    message: str


ApplyResult: TypeAlias = (
    Granted | Queued | Held | Released | Expired | NotFound | WaitCancelled | Rejected
)

EventKind: TypeAlias = Literal["acquired", "released", "expired"]


@dataclass(frozen=True, slots=True)
class LeaseEvent:
    """A change for watchers: ``lease`` was acquired, released or expired at log ``index``."""

    kind: EventKind
    name: str
    lease: LeaseRecord
    index: int


class LeaseTable:
    """The lease table: current grants by name and by lease id, and a FIFO queue per name.

    Not thread-safe: the driver applies entries from one task and serves reads from the same
    one (or from a copy restored from :meth:`snapshot`).
    """

    __slots__ = ("_applied_index", "_by_id", "_by_name", "_queues", "_ttls")

    def __init__(self) -> None:
        self._applied_index = 0
        self._by_name: dict[str, LeaseRecord] = {}
        self._by_id: dict[int, LeaseRecord] = {}
        # Waiters by request id, in arrival order: O(1) lookup, cancel and pop-first.
        # A name has a queue only while it is held and the queue is non-empty.
        self._queues: dict[str, OrderedDict[str, Waiter]] = {}
        # One int object per TTL value in use (the first _SHARED_TTLS values seen), shared by
        # every lease and waiter with that TTL: a decoded command brings its own (32 bytes).
        # Not state: it changes no result, bytes or equality.
        self._ttls: dict[int, int] = {}

    # ------------------------------------------------------------------ applying entries

    @property
    def applied_index(self) -> int:
        """The index of the last entry applied (0 for an empty table)."""
        return self._applied_index

    def apply_entry(self, data: bytes, index: int) -> tuple[ApplyResult, list[LeaseEvent]]:
        """Decode and apply the committed entry ``data`` at log ``index``.

        Undecodable bytes give :class:`Rejected` and change nothing but ``applied_index``.
        Raises ``ValueError`` if ``index`` is not above ``applied_index`` (a driver bug).
        """
        self._check_index(index)
        try:
            cmd = decode_command(data)
        except ValueError as exc:
            self._applied_index = index
            return Rejected(f"undecodable command: {exc}"), []
        return self._apply(cmd, index)

    def apply(self, cmd: Command, index: int) -> tuple[ApplyResult, list[LeaseEvent]]:
        """Apply ``cmd``, committed at log ``index``; returns the result and watch events.

        Raises ``ValueError`` if ``index`` is not above ``applied_index`` (a driver bug).
        """
        self._check_index(index)
        return self._apply(cmd, index)

    def _check_index(self, index: int) -> None:
        if type(index) is not int or index <= self._applied_index:
            raise ValueError(
                f"entry index {index!r} is not above the applied index {self._applied_index}: "
                "entries must be applied exactly once, in log order"
            )

    def _apply(self, cmd: Command, index: int) -> tuple[ApplyResult, list[LeaseEvent]]:
        self._applied_index = index
        try:
            match cmd:
                case Acquire():
                    return self._acquire(cmd, index)
                case Release():
                    return self._end(cmd.lease_id, None, index, "released")
                case Expire():
                    return self._end(cmd.lease_id, cmd.name, index, "expired")
                case CancelWait():
                    return self._cancel_wait(cmd), []
                case _:
                    assert_never(cmd)
        except InvalidArgument as exc:  # raised before any change
            return Rejected(str(exc)), []

    def _acquire(self, cmd: Acquire, index: int) -> tuple[ApplyResult, list[LeaseEvent]]:
        name = validate_name(cmd.name)
        # Interned: a client holds many leases (and waits) under one holder string. (A str
        # subclass, possible through apply(), cannot be interned: its plain str can.)
        holder = validate_holder(cmd.holder)
        holder = sys.intern(holder if type(holder) is str else str.__str__(holder))
        ttl_ms = self._shared_ttl(validate_ttl_ms(cmd.ttl_ms))
        request_id = validate_request_id(cmd.request_id)
        metadata = validate_metadata(cmd.metadata)
        if type(cmd.wait) is not bool:
            raise InvalidArgument(f"wait must be a boolean, got {type(cmd.wait).__name__}")

        current = self._by_name.get(name)
        if current is None:
            lease = LeaseRecord(name, index, holder, ttl_ms, metadata, request_id)
            self._by_name[name] = lease
            self._by_id[index] = lease
            return Granted(lease), [LeaseEvent("acquired", name, lease, index)]

        if current.request_id == request_id:
            _check_same_holder(name, request_id, current.holder, holder)
            return Granted(current), []  # a retry of the acquire that got this grant

        queue = self._queues.get(name)
        if queue is not None:
            waiter = queue.get(request_id)
            if waiter is not None:  # a retry of a queued acquire: same place in the queue
                _check_same_holder(name, request_id, waiter.holder, holder)
                position = 1 + list(queue).index(request_id)
                return Queued(name, position, current), []

        if not cmd.wait:
            return Held(current), []
        if queue is None:
            queue = self._queues[name] = OrderedDict()
        queue[request_id] = Waiter(holder, ttl_ms, request_id, metadata)
        return Queued(name, len(queue), current), []

    def _shared_ttl(self, ttl_ms: int) -> int:
        ttls = self._ttls
        if len(ttls) < _SHARED_TTLS:
            return ttls.setdefault(ttl_ms, ttl_ms)
        return ttls.get(ttl_ms, ttl_ms)

    def _end(
        self, lease_id: int, name: str | None, index: int, kind: Literal["released", "expired"]
    ) -> tuple[ApplyResult, list[LeaseEvent]]:
        lease = self._by_id.get(lease_id)
        if lease is None or (name is not None and lease.name != name):
            if name is None:
                message = (
                    f"lease {lease_id} is not held (it was released, expired, or never existed)"
                )
            else:  # e.g. a stale expiry from an earlier leader: it must not end a newer grant
                message = (
                    f"lease {lease_id} is not the current lease of {name!r} "
                    "(it was released, expired, or never existed); nothing expired"
                )
            return NotFound(message), []

        del self._by_id[lease_id]
        del self._by_name[lease.name]
        events = [LeaseEvent(kind, lease.name, lease, index)]
        next_grant = self._hand_over(lease.name, index)
        if next_grant is not None:
            events.append(LeaseEvent("acquired", lease.name, next_grant, index))
        if kind == "released":
            return Released(lease, next_grant), events
        return Expired(lease, next_grant), events

    def _hand_over(self, name: str, index: int) -> LeaseRecord | None:
        """Grant the free ``name`` to its first waiter, in this same entry ``index``."""
        queue = self._queues.get(name)
        if queue is None:
            return None
        _, waiter = queue.popitem(last=False)
        if not queue:
            del self._queues[name]
        lease = LeaseRecord(
            name, index, waiter.holder, waiter.ttl_ms, waiter.metadata, waiter.request_id
        )
        self._by_name[name] = lease
        self._by_id[index] = lease
        return lease

    def _cancel_wait(self, cmd: CancelWait) -> WaitCancelled:
        queue = self._queues.get(cmd.name)
        if queue is None or queue.pop(cmd.request_id, None) is None:
            return WaitCancelled(cmd.name, cmd.request_id, found=False)
        if not queue:
            del self._queues[cmd.name]
        return WaitCancelled(cmd.name, cmd.request_id, found=True)

    # ------------------------------------------------------------------ reads

    def get(self, name: str) -> LeaseRecord | None:
        """The current grant of ``name``, or None if it is free."""
        return self._by_name.get(name)

    def by_lease_id(self, lease_id: int) -> LeaseRecord | None:
        """The current grant with this lease id, or None (released, expired, never existed)."""
        return self._by_id.get(lease_id)

    def leases(self, prefix: str = "") -> list[LeaseRecord]:
        """Every current grant whose name starts with ``prefix``, sorted by name."""
        if prefix:
            names = sorted(name for name in self._by_name if name.startswith(prefix))
        else:
            names = sorted(self._by_name)
        return [self._by_name[name] for name in names]

    def waiters(self, name: str) -> tuple[Waiter, ...]:
        """The queue of ``name``, first in line first."""
        queue = self._queues.get(name)
        return () if queue is None else tuple(queue.values())

    def queued(self) -> list[tuple[str, str]]:
        """Every queued acquire as (name, request id): names sorted, each queue in order."""
        return [(name, rid) for name in sorted(self._queues) for rid in self._queues[name]]

    def check_token(self, name: str, token: int) -> bool:
        """True iff ``token`` is the fencing token of the current grant of ``name``."""
        lease = self._by_name.get(name)
        return lease is not None and type(token) is int and lease.fencing_token == token

    def __len__(self) -> int:
        """The number of current grants."""
        return len(self._by_name)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LeaseTable):
            return NotImplemented
        return (
            self._applied_index == other._applied_index
            and self._by_name == other._by_name
            and self._queues == other._queues  # OrderedDict equality is order-sensitive
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        waiting = sum(len(queue) for queue in self._queues.values())
        return (
            f"<LeaseTable applied_index={self._applied_index} leases={len(self._by_name)} "
            f"waiters={waiting}>"
        )

    # ------------------------------------------------------------------ snapshots

    def snapshot(self) -> bytes:
        """The whole state as canonical bytes: equal tables give equal bytes.

        Format 2, compact ASCII JSON: ``{"applied_index":N,"format":2,"leases":[...]}`` with
        one array per lease, sorted by name::

            [name, lease_id, holder, ttl_ms, [[key, value], ...], request_id, [waiter, ...]]

        and one array per waiter, first in line first: ``[holder, ttl_ms, request_id,
        [[key, value], ...]]``. ``fencing_token`` and ``granted_index`` are not stored: they
        equal ``lease_id``. The same bytes as joining ``self.view().encode()``, which a
        driver uses to build a big table's snapshot in slices between other work.
        """
        return b"".join(self.view().encode())

    def view(self) -> TableView:
        """The table as it is now, frozen: O(leases) pointer copies and no encoding (about
        2 ms for 100,000 leases), so it can be taken in one turn of a driver's loop and
        encoded later, slice by slice, while this table goes on applying entries."""
        return TableView(
            self._applied_index,
            dict(self._by_name),
            {name: tuple(queue.values()) for name, queue in self._queues.items()},
        )

    def state_hash(self) -> str:
        """SHA-256 (hex) of :meth:`snapshot`, to compare replicas cheaply."""
        return hashlib.sha256(self.snapshot()).hexdigest()

    @classmethod
    def restore(cls, data: bytes) -> LeaseTable:
        """The table :meth:`snapshot` wrote; ``ValueError`` if ``data`` is not such a snapshot.

        Reads format 2 (what :meth:`snapshot` writes), format 1 (earlier versions), and either
        one as a zlib stream (what nodes keep, store and send: ``encode(compress=True)``).
        Checks structure and invariants (unique names, lease ids and request ids, ids in
        1..``applied_index``), not today's limits, so a snapshot written under other limits
        still restores.
        """
        data = decompress_snapshot(data)
        try:
            return _restore(data)
        except _SnapshotError as exc:
            raise ValueError(f"invalid lease table snapshot: {exc}") from None


SNAPSHOT_SLICE = 2_000
"""Leases per piece of :meth:`TableView.encode`: a few ms of encoding on a small VM."""

_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=False)


@dataclass(frozen=True, slots=True)
class TableView:
    """A lease table frozen at ``applied_index`` (see :meth:`LeaseTable.view`).

    Its records and waiters are immutable and its dicts are its own, so it stays valid
    while the table it came from changes.
    """

    applied_index: int
    leases: dict[str, LeaseRecord]
    queues: dict[str, tuple[Waiter, ...]]

    def __len__(self) -> int:
        return len(self.leases)

    def encode(self, per_slice: int = SNAPSHOT_SLICE, compress: bool = False) -> Iterator[bytes]:
        """:meth:`LeaseTable.snapshot`'s bytes in pieces: the header (its turn also sorts the
        names), then slices of at most ``per_slice`` leases each, then the trailer. A driver
        takes one piece per turn of its loop, so a table of any size never holds the loop for
        longer than one piece. ``compress``: the same bytes as one zlib stream
        (``SNAPSHOT_ZLIB_LEVEL``), compressed piece by piece; what nodes keep and send."""
        if per_slice < 1:
            raise ValueError(f"per_slice must be >= 1, got {per_slice}")
        if not compress:
            return self._encode(per_slice)
        return self._compressed(per_slice)

    def _compressed(self, per_slice: int) -> Iterator[bytes]:
        z = zlib.compressobj(SNAPSHOT_ZLIB_LEVEL)
        for piece in self._encode(per_slice):
            out = z.compress(piece)
            if out:
                yield out
        yield z.flush()

    def _encode(self, per_slice: int) -> Iterator[bytes]:
        names = sorted(self.leases)
        yield b'{"applied_index":%d,"format":%d,"leases":[' % (
            self.applied_index,
            SNAPSHOT_FORMAT,
        )
        leases, queues, encode = self.leases, self.queues, _ENCODER.encode
        for start in range(0, len(names), per_slice):
            rows: list[tuple[object, ...]] = []
            for name in names[start : start + per_slice]:
                lease = leases[name]
                queue = queues.get(name)
                rows.append(
                    (
                        name,
                        lease.lease_id,
                        lease.holder,
                        lease.ttl_ms,
                        lease.metadata,  # JSON writes tuples as arrays: [[key, value], ...]
                        lease.request_id,
                        [(w.holder, w.ttl_ms, w.request_id, w.metadata) for w in queue]
                        if queue
                        else (),
                    )
                )
            text = encode(rows)
            yield (b"," if start else b"") + text[1:-1].encode("ascii")
        yield b"]}"


def _check_same_holder(name: str, request_id: str, known: str, holder: str) -> None:
    if known != holder:
        raise InvalidArgument(
            f"request_id {request_id!r} of lease {name!r} belongs to holder {known!r}, "
            f"not {holder!r}; every acquire needs its own request_id"
        )


# ---------------------------------------------------------------------- snapshot parsing


class _SnapshotError(Exception):
    pass


def _reject_constant(constant: str) -> Any:
    raise ValueError(f"{constant} is not allowed")


_STATE_KEYS = frozenset(["format", "applied_index", "leases"])


def decompress_snapshot(data: bytes) -> bytes:
    """The format-2 (or 1) JSON of a snapshot, whether ``data`` is that JSON or a zlib stream
    of it (``TableView.encode(compress=True)``); ``ValueError`` if the stream is damaged or
    would decompress past ``SNAPSHOT_MAX_BYTES``."""
    if not data or data[0] != _ZLIB_HEADER:
        return bytes(data)
    z = zlib.decompressobj()
    try:
        out = z.decompress(data, SNAPSHOT_MAX_BYTES)
    except zlib.error as exc:
        raise ValueError(f"invalid lease table snapshot: damaged zlib stream ({exc})") from None
    if z.unconsumed_tail:
        raise ValueError(
            f"invalid lease table snapshot: decompresses to more than {SNAPSHOT_MAX_BYTES} bytes"
        )
    if not z.eof or z.unused_data:
        raise ValueError("invalid lease table snapshot: truncated or trailing zlib data")
    return out


def _restore(data: bytes) -> LeaseTable:
    # Parsing and rebuilding 100,000 leases allocates a few hundred thousand containers, and
    # each few thousand start a collection of the young generation, and now and then of the
    # whole heap: with the collector running, restoring took twice as long. Nothing made
    # here is garbage in a cycle, so pause it (not re-enabling it if it was already off).
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _parse(data)
    finally:
        if enabled:
            gc.enable()


def _parse(data: bytes) -> LeaseTable:
    try:
        state = json.loads(bytes(data).decode("utf-8"), parse_constant=_reject_constant)
    except RecursionError:
        raise _SnapshotError("nested too deeply") from None
    except (ValueError, TypeError) as exc:
        raise _SnapshotError(f"not JSON: {exc}") from None
    state = _object(state, _STATE_KEYS, "snapshot")
    version = _field(state, "format", int, "snapshot")
    if version not in (1, 2):
        raise _SnapshotError(f"format {version} is not supported (expected 1 or 2)")
    applied_index = _field(state, "applied_index", int, "snapshot")
    if applied_index < 0:
        raise _SnapshotError(f"applied_index {applied_index} is negative")
    leases = _field(state, "leases", list, "snapshot")
    table = LeaseTable()
    table._applied_index = applied_index
    if version == 2:
        _restore_leases_v2(table, leases)
    else:
        _restore_leases_v1(table, leases)
    return table


# Format 2: arrays. A follower restores in one turn of its event loop (100,000 leases: about
# 0.2 s with the parse on a small VM, against 0.85 s for format 1 before), so the common case
# is one tuple unpack and one chained type check; the helpers below only build the message
# once something is wrong.
_LEASE_FIELDS = ("name", "lease_id", "holder", "ttl_ms", "metadata", "request_id", "waiters")
_LEASE_TYPES: tuple[type[Any], ...] = (str, int, str, int, list, str, list)
_WAITER_FIELDS = ("holder", "ttl_ms", "request_id", "metadata")
_WAITER_TYPES: tuple[type[Any], ...] = (str, int, str, list)


# The records of a restore are built through their slots' descriptors: LeaseRecord's own
# (frozen dataclass) __init__ is eight object.__setattr__ calls, and was half of the loop.
# The same objects as the constructor makes (equal, frozen, of the same class); the snapshot
# tests compare restored records with constructed ones, so a new field cannot go unset.
def _slot_setter(field: str) -> Callable[[LeaseRecord, object], None]:
    setter: Callable[[LeaseRecord, object], None] = vars(LeaseRecord)[field].__set__
    return setter


_SET_NAME = _slot_setter("name")
_SET_LEASE_ID = _slot_setter("lease_id")
_SET_HOLDER = _slot_setter("holder")
_SET_TTL_MS = _slot_setter("ttl_ms")
_SET_METADATA = _slot_setter("metadata")
_SET_REQUEST_ID = _slot_setter("request_id")


def _restore_leases_v2(table: LeaseTable, leases: list[Any]) -> None:
    applied_index = table._applied_index
    by_name, by_id, queues = table._by_name, table._by_id, table._queues
    intern, new = sys.intern, object.__new__
    set_name, set_lease_id, set_holder = _SET_NAME, _SET_LEASE_ID, _SET_HOLDER
    set_ttl_ms, set_metadata, set_request_id = _SET_TTL_MS, _SET_METADATA, _SET_REQUEST_ID
    ttls, shared_ttl = table._ttls, table._shared_ttl
    for position, raw in enumerate(leases):
        if type(raw) is not list or len(raw) != 7:
            raise _SnapshotError(_shape_error(f"leases[{position}]", _LEASE_FIELDS))
        name, lease_id, holder, ttl_ms, metadata, request_id, waiters = raw
        if not (
            type(name) is str
            and type(lease_id) is int
            and type(holder) is str
            and type(ttl_ms) is int
            and type(metadata) is list
            and type(request_id) is str
            and type(waiters) is list
        ):
            raise _SnapshotError(
                _type_error(raw, f"leases[{position}]", _LEASE_FIELDS, _LEASE_TYPES)
            )
        if not 0 < lease_id <= applied_index:
            raise _SnapshotError(
                f"leases[{position}].lease_id {lease_id} is outside 1..{applied_index}"
            )
        if name in by_name:
            raise _SnapshotError(f"leases[{position}]: name {name!r} appears twice")
        if lease_id in by_id:
            raise _SnapshotError(f"leases[{position}]: lease_id {lease_id} appears twice")
        # LeaseRecord(name, lease_id, holder, ttl_ms, metadata, request_id), slot by slot.
        lease = new(LeaseRecord)
        set_name(lease, name)
        set_lease_id(lease, lease_id)
        set_holder(lease, intern(holder))
        set_ttl_ms(lease, ttls.get(ttl_ms) or shared_ttl(ttl_ms))
        set_metadata(lease, _pairs(metadata, f"leases[{position}]") if metadata else ())
        set_request_id(lease, request_id)
        by_name[name] = lease
        by_id[lease_id] = lease
        if waiters:
            queues[name] = _waiters_v2(table, waiters, request_id, f"leases[{position}]")


def _waiters_v2(
    table: LeaseTable, raws: list[Any], lease_request_id: str, where: str
) -> OrderedDict[str, Waiter]:
    queue: OrderedDict[str, Waiter] = OrderedDict()
    for number, raw in enumerate(raws):
        if type(raw) is not list or len(raw) != 4:
            raise _SnapshotError(_shape_error(f"{where}.waiters[{number}]", _WAITER_FIELDS))
        holder, ttl_ms, request_id, metadata = raw
        if not (
            type(holder) is str
            and type(ttl_ms) is int
            and type(request_id) is str
            and type(metadata) is list
        ):
            raise _SnapshotError(
                _type_error(raw, f"{where}.waiters[{number}]", _WAITER_FIELDS, _WAITER_TYPES)
            )
        if request_id in queue or request_id == lease_request_id:
            raise _SnapshotError(
                f"{where}.waiters[{number}]: request_id {request_id!r} is not unique"
            )
        pairs = _pairs(metadata, f"{where}.waiters[{number}]") if metadata else ()
        queue[request_id] = Waiter(sys.intern(holder), table._shared_ttl(ttl_ms), request_id, pairs)
    return queue


def _shape_error(where: str, fields: tuple[str, ...]) -> str:
    return f"{where} must be an array of {len(fields)} fields [{', '.join(fields)}]"


def _type_error(
    raw: list[Any], where: str, fields: tuple[str, ...], kinds: tuple[type[Any], ...]
) -> str:
    for value, field, kind in zip(raw, fields, kinds, strict=True):
        if type(value) is not kind:
            return f"{where}.{field} must be {kind.__name__}, got {type(value).__name__}"
    raise AssertionError(f"{where}: no field has the wrong type")  # pragma: no cover


def _pairs(value: list[Any], where: str) -> tuple[tuple[str, str], ...]:
    pairs: list[tuple[str, str]] = []
    for pair in value:
        if type(pair) is not list or len(pair) != 2 or not all(type(s) is str for s in pair):
            raise _SnapshotError(f"{where}.metadata must hold [str, str] pairs")
        pairs.append((pair[0], pair[1]))
    return tuple(pairs)


# Format 1: one object per lease, with field names.
_LEASE_KEYS = frozenset(
    [
        "name",
        "lease_id",
        "fencing_token",
        "holder",
        "ttl_ms",
        "metadata",
        "granted_index",
        "request_id",
        "waiters",
    ]
)
_WAITER_KEYS = frozenset(["holder", "ttl_ms", "request_id", "metadata"])


def _field(obj: dict[str, Any], key: str, kind: type[Any], where: str) -> Any:
    if key not in obj:
        raise _SnapshotError(f"{where} has no {key!r}")
    value = obj[key]
    if type(value) is not kind:
        raise _SnapshotError(f"{where}.{key} must be {kind.__name__}, got {type(value).__name__}")
    return value


def _object(value: object, keys: frozenset[str], where: str) -> dict[str, Any]:
    if type(value) is not dict:
        raise _SnapshotError(f"{where} must be an object")
    if value.keys() != keys:
        raise _SnapshotError(f"{where} must have exactly the fields {sorted(keys)}")
    return value


def _metadata(value: object, where: str) -> tuple[tuple[str, str], ...]:
    if type(value) is not list:
        raise _SnapshotError(f"{where}.metadata must be a list")
    return _pairs(value, where)


def _restore_leases_v1(table: LeaseTable, leases: list[Any]) -> None:
    applied_index = table._applied_index
    for position, raw in enumerate(leases):
        where = f"leases[{position}]"
        obj = _object(raw, _LEASE_KEYS, where)
        name = _field(obj, "name", str, where)
        lease_id = _field(obj, "lease_id", int, where)
        fencing_token = _field(obj, "fencing_token", int, where)
        holder = _field(obj, "holder", str, where)
        ttl_ms = _field(obj, "ttl_ms", int, where)
        metadata = _metadata(obj["metadata"], where)
        granted_index = _field(obj, "granted_index", int, where)
        request_id = _field(obj, "request_id", str, where)
        if not 0 < lease_id <= applied_index:
            raise _SnapshotError(f"{where}.lease_id {lease_id} is outside 1..{applied_index}")
        if not lease_id == fencing_token == granted_index:
            raise _SnapshotError(f"{where}: lease_id, fencing_token and granted_index differ")
        if name in table._by_name:
            raise _SnapshotError(f"{where}: name {name!r} appears twice")
        if lease_id in table._by_id:
            raise _SnapshotError(f"{where}: lease_id {lease_id} appears twice")
        lease = LeaseRecord(
            name, lease_id, sys.intern(holder), table._shared_ttl(ttl_ms), metadata, request_id
        )
        table._by_name[name] = lease
        table._by_id[lease_id] = lease

        queue: OrderedDict[str, Waiter] = OrderedDict()
        for number, raw_waiter in enumerate(_field(obj, "waiters", list, where)):
            where_w = f"{where}.waiters[{number}]"
            wobj = _object(raw_waiter, _WAITER_KEYS, where_w)
            waiter = Waiter(
                holder=sys.intern(_field(wobj, "holder", str, where_w)),
                ttl_ms=table._shared_ttl(_field(wobj, "ttl_ms", int, where_w)),
                request_id=_field(wobj, "request_id", str, where_w),
                metadata=_metadata(wobj["metadata"], where_w),
            )
            if waiter.request_id in queue or waiter.request_id == lease.request_id:
                raise _SnapshotError(f"{where_w}: request_id {waiter.request_id!r} is not unique")
            queue[waiter.request_id] = waiter
        if queue:
            table._queues[name] = queue
