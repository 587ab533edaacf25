"""Size and range limits of everything a client may put into the lease table.

The server checks these before proposing (so a client gets ``INVALID_ARGUMENT`` at once), and
the lease table checks them again when it applies a command (so a bad entry that reached the
log is rejected identically on every replica and changes nothing).

Every validator takes an untrusted value (hence the ``object`` parameters), returns it narrowed
to its type, and raises :class:`InvalidArgument` with a message that names the field, the
bound and the value seen. Pure and deterministic: no clock, no I/O. Imports: stdlib, errors.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from raftlease.errors import RaftLeaseError

MAX_NAME_BYTES = 256
MAX_HOLDER_BYTES = 256
MIN_TTL_MS = 1000
MAX_TTL_MS = 3_600_000
MAX_WAIT_MS = 3_600_000
MAX_METADATA_ENTRIES = 16
MAX_METADATA_BYTES = 4096  # sum of the UTF-8 lengths of every key and value
MAX_HEALTH_ENTRIES = 16
MAX_HEALTH_BYTES = 1024  # sum of the UTF-8 lengths of every key and value
MAX_REQUEST_ID_BYTES = 128

# Unicode general category Cc is exactly U+0000..U+001F and U+007F..U+009F, and the Unicode
# stability policy freezes it; a regex is much faster than unicodedata.category per character.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")

__all__ = [
    "MAX_HEALTH_BYTES",
    "MAX_HEALTH_ENTRIES",
    "MAX_HOLDER_BYTES",
    "MAX_METADATA_BYTES",
    "MAX_METADATA_ENTRIES",
    "MAX_NAME_BYTES",
    "MAX_REQUEST_ID_BYTES",
    "MAX_TTL_MS",
    "MAX_WAIT_MS",
    "MIN_TTL_MS",
    "ClientSlots",
    "InvalidArgument",
    "LimitExceeded",
    "exhausted",
    "validate_health",
    "validate_holder",
    "validate_metadata",
    "validate_name",
    "validate_request_id",
    "validate_ttl_ms",
    "validate_wait_ms",
]


class InvalidArgument(RaftLeaseError, ValueError):
    """A client-supplied value breaks a documented limit; the message names field and bound.

    The server maps it to gRPC ``INVALID_ARGUMENT``; the lease table to ``Rejected``.
    """


class LimitExceeded(RaftLeaseError):
    """A client would go past a resource limit (waiting acquires, open streams, leases held,
    request size); the message names the limit, its value and the ``serve`` flag that raises
    it (:func:`exhausted`). The server maps it to gRPC ``RESOURCE_EXHAUSTED``; nothing changed.
    """


def exhausted(what: str, limit: int, flag: str, advice: str = "") -> LimitExceeded:
    """The one-line error of a resource limit: what went past it, the limit, and its flag."""
    tail = f"; {advice}" if advice else ""
    return LimitExceeded(
        f"{what}: the limit is {limit} ({flag}; raise it on every node to allow more){tail}"
    )


class ClientSlots:
    """How many of one kind of resource (waiting acquires, open streams) each client holds
    now, bounded per client. ``take`` counts one for a client or raises
    :class:`LimitExceeded`; ``give_back`` undoes one take (call it exactly once per take, when
    the call ends however it ends). A client with nothing left is forgotten, so the table
    holds only clients with something open. Pure bookkeeping: no clock, no I/O."""

    __slots__ = ("_counts", "flag", "limit", "noun")

    def __init__(self, limit: int, noun: str, flag: str) -> None:
        if limit < 1:
            raise ValueError(f"{flag} must be >= 1, got {limit}")
        self.limit = limit
        self.noun = noun  # e.g. "Acquire calls waiting"
        self.flag = flag
        self._counts: dict[str, int] = {}

    def take(self, client: str) -> None:
        n = self._counts.get(client, 0)
        if n >= self.limit:
            raise exhausted(f"client {client} has {n} {self.noun}", self.limit, self.flag)
        self._counts[client] = n + 1

    def give_back(self, client: str) -> None:
        n = self._counts.get(client, 0) - 1
        if n > 0:
            self._counts[client] = n
        else:
            self._counts.pop(client, None)

    def count(self, client: str) -> int:
        """What ``client`` holds now."""
        return self._counts.get(client, 0)

    def total(self) -> int:
        """What every client holds together."""
        return sum(self._counts.values())


def _type_name(value: object) -> str:
    return type(value).__name__


def _utf8_len(field: str, value: str) -> int:
    if value.isascii():
        return len(value)
    try:
        return len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:  # a lone surrogate, e.g. from "\ud800" in JSON
        raise InvalidArgument(
            f"{field} is not valid Unicode: it contains the lone surrogate "
            f"U+{ord(value[exc.start]):04X} at character {exc.start}"
        ) from None


def _validate_label(field: str, value: object, limit: int) -> str:
    """The shared rules of names, holders and request ids."""
    if not isinstance(value, str):
        raise InvalidArgument(f"{field} must be a string, got {_type_name(value)}")
    if not value:
        raise InvalidArgument(f"{field} must not be empty")
    size = _utf8_len(field, value)
    if size > limit:
        raise InvalidArgument(f"{field} is {size} bytes; the limit is {limit} bytes (UTF-8)")
    control = _CONTROL.search(value)
    if control is not None:
        raise InvalidArgument(
            f"{field} must not contain control characters "
            f"(found U+{ord(control.group()):04X} at character {control.start()})"
        )
    if value.isspace():
        raise InvalidArgument(f"{field} must not be only whitespace")
    return value


def validate_name(name: object) -> str:
    """A lease name: non-empty, at most 256 UTF-8 bytes, no control characters, not blank."""
    return _validate_label("name", name, MAX_NAME_BYTES)


def validate_holder(holder: object) -> str:
    """A holder identity: the same rules as a name, at most 256 UTF-8 bytes."""
    return _validate_label("holder", holder, MAX_HOLDER_BYTES)


def validate_request_id(request_id: object) -> str:
    """A request id: the same rules as a name, at most 128 UTF-8 bytes.

    It must not be empty: two clients that both sent an empty id would look like retries of
    each other, and the second would be told it holds the first one's lease.
    """
    return _validate_label("request_id", request_id, MAX_REQUEST_ID_BYTES)


def _validate_ms(field: str, value: object, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(
            f"{field} must be an integer number of milliseconds, got {_type_name(value)} {value!r}"
        )
    if value < minimum:
        raise InvalidArgument(f"{field}={value} is below the minimum {minimum} ms")
    if value > maximum:
        raise InvalidArgument(f"{field}={value} is above the maximum {maximum} ms")
    return value


def validate_ttl_ms(ttl_ms: object) -> int:
    """A lease TTL in milliseconds: from 1000 (1 s) to 3_600_000 (1 h) inclusive."""
    return _validate_ms("ttl_ms", ttl_ms, MIN_TTL_MS, MAX_TTL_MS)


def validate_wait_ms(wait_ms: object) -> int:
    """How long an acquire may wait in the queue, in ms: 0 (do not wait) to 3_600_000 (1 h)."""
    return _validate_ms("wait_ms", wait_ms, 0, MAX_WAIT_MS)


def _validate_pairs(
    field: str, value: object, max_entries: int, max_bytes: int
) -> tuple[tuple[str, str], ...]:
    items: list[object]
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, Iterable) and not isinstance(value, str | bytes | bytearray):
        items = list(value)
    else:
        raise InvalidArgument(
            f"{field} must be a mapping or a sequence of (key, value) pairs, "
            f"got {_type_name(value)}"
        )
    if len(items) > max_entries:
        raise InvalidArgument(f"{field} has {len(items)} entries; the limit is {max_entries}")
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    total = 0
    for item in items:
        if not isinstance(item, tuple | list) or len(item) != 2:
            raise InvalidArgument(f"{field} entries must be (key, value) pairs, got {item!r}")
        key, val = item
        if not isinstance(key, str):
            raise InvalidArgument(f"{field} keys must be strings, got {_type_name(key)} {key!r}")
        if not isinstance(val, str):
            raise InvalidArgument(
                f"{field} value of key {key!r} must be a string, got {_type_name(val)}"
            )
        if key in seen:
            raise InvalidArgument(f"{field} key {key!r} appears more than once")
        seen.add(key)
        total += _utf8_len(f"{field} key {key!r}", key)
        total += _utf8_len(f"{field} value of key {key!r}", val)
        pairs.append((key, val))
    if total > max_bytes:
        raise InvalidArgument(
            f"{field} is {total} bytes (keys plus values, UTF-8); the limit is {max_bytes} bytes"
        )
    return tuple(pairs)


def validate_metadata(metadata: object) -> tuple[tuple[str, str], ...]:
    """Lease metadata: a mapping (or pairs) of str to str, at most 16 entries, 4096 bytes.

    Returns the entries as a tuple of pairs, in the order given.
    """
    if metadata == ():
        return ()
    return _validate_pairs("metadata", metadata, MAX_METADATA_ENTRIES, MAX_METADATA_BYTES)


def validate_health(health: object) -> tuple[tuple[str, str], ...]:
    """A keepalive's health payload: str to str, at most 16 entries, 1024 bytes."""
    return _validate_pairs("health", health, MAX_HEALTH_ENTRIES, MAX_HEALTH_BYTES)
