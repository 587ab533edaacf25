"""The lease table's log commands, and their compact, deterministic encoding.

A command is what the leader proposes and every replica applies. The encoding is compact JSON
(sorted keys, no spaces, ASCII only) with a ``"type"`` tag, e.g.::

    {"type":"release","lease_id":42}

ASCII-only output keeps every string (even one with a lone surrogate, which the limits then
reject) encodable, and makes equal commands encode to equal bytes on every replica.

``decode_command`` accepts only what ``encode_command`` produces in shape: a JSON object with
a known tag, every required field with the right JSON type (integers are not booleans), and
no unknown field. Anything else raises ``ValueError`` and never another exception type, since
the bytes come from the log and a replica must not crash on them. Field *limits* (name length,
TTL range, ...) are not checked here but by the lease table when it applies the command, with
the validators of :mod:`raftlease.fsm.limits`.

Pure and deterministic. Imports: stdlib only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias, assert_never

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "Acquire",
    "CancelWait",
    "Command",
    "Expire",
    "Release",
    "decode_command",
    "encode_command",
]


@dataclass(frozen=True, slots=True)
class Acquire:
    """Take the lease ``name`` for ``holder`` for ``ttl_ms``.

    ``wait``: if the lease is held, join its FIFO wait queue (the leader cancels the wait with
    :class:`CancelWait` when the client's wait runs out or the client goes away); otherwise the
    answer is "held". ``request_id`` makes retries idempotent: a retry of a granted or queued
    acquire gets the same grant or place in the queue back.
    """

    name: str
    holder: str
    ttl_ms: int
    wait: bool
    request_id: str
    metadata: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Release:
    """End the lease ``lease_id`` (its holder is done), handing it to the next waiter."""

    lease_id: int


@dataclass(frozen=True, slots=True)
class Expire:
    """End the lease ``lease_id`` of ``name`` because it passed its deadline.

    Proposed by the leader, on its own clock. It names the exact grant it expires, so an
    expiry proposed by an old leader can never end a newer grant of the same name.
    """

    name: str
    lease_id: int


@dataclass(frozen=True, slots=True)
class CancelWait:
    """Remove the waiter ``request_id`` from the queue of ``name``.

    Proposed by the leader when the waiter's wait ran out or its client went away.
    """

    name: str
    request_id: str


Command: TypeAlias = Acquire | Release | Expire | CancelWait

_ACQUIRE = "acquire"
_RELEASE = "release"
_EXPIRE = "expire"
_CANCEL_WAIT = "cancel_wait"

_encoder = json.JSONEncoder(separators=(",", ":"), sort_keys=True, allow_nan=False)


def encode_command(cmd: Command) -> bytes:
    """The canonical bytes of ``cmd``: equal commands give equal bytes."""
    obj: dict[str, object]
    match cmd:
        case Acquire():
            obj = {
                "type": _ACQUIRE,
                "name": cmd.name,
                "holder": cmd.holder,
                "ttl_ms": cmd.ttl_ms,
                "wait": cmd.wait,
                "request_id": cmd.request_id,
                "metadata": [[key, value] for key, value in cmd.metadata],
            }
        case Release():
            obj = {"type": _RELEASE, "lease_id": cmd.lease_id}
        case Expire():
            obj = {"type": _EXPIRE, "name": cmd.name, "lease_id": cmd.lease_id}
        case CancelWait():
            obj = {"type": _CANCEL_WAIT, "name": cmd.name, "request_id": cmd.request_id}
        case _:
            assert_never(cmd)
    return _encoder.encode(obj).encode("ascii")


def _reject_constant(constant: str) -> Any:
    raise ValueError(f"{constant} is not allowed")


_decoder = json.JSONDecoder(parse_constant=_reject_constant)


def _check_fields(obj: dict[str, Any], tag: str, required: frozenset[str]) -> None:
    keys = obj.keys()
    if keys != required:
        missing = sorted(required - keys)
        if missing:
            raise ValueError(f"{tag} command is missing field {missing[0]!r}")
        unknown = sorted(keys - required)
        raise ValueError(f"{tag} command has unknown field {unknown[0]!r}")


def _json_type(value: object) -> str:
    match value:
        case None:
            return "null"
        case bool():
            return "boolean"
        case int() | float():
            return "number"
        case str():
            return "string"
        case list():
            return "array"
        case _:
            return "object"


def _str(obj: dict[str, Any], tag: str, key: str) -> str:
    value = obj[key]
    if type(value) is not str:
        raise ValueError(f"{tag}.{key} must be a string, got {_json_type(value)}")
    return value


def _int(obj: dict[str, Any], tag: str, key: str) -> int:
    value = obj[key]
    if type(value) is not int:
        raise ValueError(f"{tag}.{key} must be an integer, got {_json_type(value)}")
    return value


def _bool(obj: dict[str, Any], tag: str, key: str) -> bool:
    value = obj[key]
    if type(value) is not bool:
        raise ValueError(f"{tag}.{key} must be a boolean, got {_json_type(value)}")
    return value


def _pairs(obj: dict[str, Any], tag: str, key: str) -> tuple[tuple[str, str], ...]:
    value = obj[key]
    if type(value) is not list:
        raise ValueError(f"{tag}.{key} must be an array of [key, value] pairs")
    if not value:
        return ()
    pairs: list[tuple[str, str]] = []
    for item in value:
        if type(item) is not list or len(item) != 2:
            raise ValueError(f"{tag}.{key} must be an array of [key, value] pairs")
        k, v = item
        if type(k) is not str or type(v) is not str:
            raise ValueError(f"{tag}.{key} keys and values must be strings")
        pairs.append((k, v))
    return tuple(pairs)


_ACQUIRE_FIELDS = frozenset(["type", "name", "holder", "ttl_ms", "wait", "request_id"])
_ACQUIRE_FIELDS_WITH_METADATA = _ACQUIRE_FIELDS | {"metadata"}
_RELEASE_FIELDS = frozenset(["type", "lease_id"])
_EXPIRE_FIELDS = frozenset(["type", "name", "lease_id"])
_CANCEL_WAIT_FIELDS = frozenset(["type", "name", "request_id"])


def _decode_acquire(obj: dict[str, Any]) -> Acquire:
    if "metadata" in obj:
        _check_fields(obj, _ACQUIRE, _ACQUIRE_FIELDS_WITH_METADATA)
        metadata = _pairs(obj, _ACQUIRE, "metadata")
    else:
        _check_fields(obj, _ACQUIRE, _ACQUIRE_FIELDS)
        metadata = ()
    return Acquire(
        name=_str(obj, _ACQUIRE, "name"),
        holder=_str(obj, _ACQUIRE, "holder"),
        ttl_ms=_int(obj, _ACQUIRE, "ttl_ms"),
        wait=_bool(obj, _ACQUIRE, "wait"),
        request_id=_str(obj, _ACQUIRE, "request_id"),
        metadata=metadata,
    )


def _decode_release(obj: dict[str, Any]) -> Release:
    _check_fields(obj, _RELEASE, _RELEASE_FIELDS)
    return Release(lease_id=_int(obj, _RELEASE, "lease_id"))


def _decode_expire(obj: dict[str, Any]) -> Expire:
    _check_fields(obj, _EXPIRE, _EXPIRE_FIELDS)
    return Expire(name=_str(obj, _EXPIRE, "name"), lease_id=_int(obj, _EXPIRE, "lease_id"))


def _decode_cancel_wait(obj: dict[str, Any]) -> CancelWait:
    _check_fields(obj, _CANCEL_WAIT, _CANCEL_WAIT_FIELDS)
    return CancelWait(
        name=_str(obj, _CANCEL_WAIT, "name"),
        request_id=_str(obj, _CANCEL_WAIT, "request_id"),
    )


_DECODERS: dict[str, Callable[[dict[str, Any]], Command]] = {
    _ACQUIRE: _decode_acquire,
    _RELEASE: _decode_release,
    _EXPIRE: _decode_expire,
    _CANCEL_WAIT: _decode_cancel_wait,
}


def decode_command(data: bytes | bytearray | memoryview) -> Command:
    """Parse bytes made by :func:`encode_command`; ``ValueError`` for anything else."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ValueError(f"a command must be bytes, got {type(data).__name__}")
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"command is not valid UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        obj = _decoder.decode(text)
    except RecursionError:
        raise ValueError("command is not valid JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, NaN/Infinity, an int with too many digits
        raise ValueError(f"command is not valid JSON: {exc}") from None
    if type(obj) is not dict:
        raise ValueError(f"a command must be a JSON object, got {_json_type(obj)}")
    tag = obj.get("type")
    if type(tag) is not str:
        raise ValueError('a command needs a string "type" field')
    decoder = _DECODERS.get(tag)
    if decoder is None:
        known = ", ".join(sorted(_DECODERS))
        raise ValueError(f"unknown command type {tag!r} (known: {known})")
    return decoder(obj)
