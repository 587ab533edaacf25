"""The gRPC side of the clients: channel options, status codes and trailing metadata, and
the conversions between the wire (``raftlease.v1`` messages, ``grpc.RpcError``) and the
sans-I/O protocol (``_protocol.py``: :class:`Failure`, :class:`RenewAnswer`, the actions).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

import grpc

from raftlease.client._keepalive import RenewAnswer
from raftlease.client._retry import Failure
from raftlease.client._values import one_line
from raftlease.client.errors import (
    InvalidArgument,
    LeaseHeld,
    LeaseNotFound,
    LimitExceeded,
    PermissionDenied,
    RpcFailed,
    Unauthenticated,
)
from raftlease.v1 import lease_pb2

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from raftlease.client._protocol import AcquireMachine, Action, SendAcquire

__all__ = [
    "CHANNEL_OPTIONS",
    "KEEPALIVE_BATCH_BYTES",
    "KEEPALIVE_BATCH_ITEMS",
    "LEADER_METADATA_KEY",
    "RETRIABLE_CODES",
    "KeepaliveMessages",
    "acquire_request",
    "describe_rpc_error",
    "feed_acquire_response",
    "is_retriable",
    "keepalive_request",
    "lease_held_error",
    "map_rpc_error",
    "metadata_leader_hint",
    "outcome_name",
    "renew_answer",
    "renew_request",
    "rpc_code",
    "rpc_details",
    "rpc_failure",
    "rpc_leader_hint",
]

LEADER_METADATA_KEY = "raftlease-leader"

# Channel options:
# - reconnect quickly after a node restarts (gRPC's default first backoff is 1 s growing to
#   120 s, which would hide a restarted leader from us for far too long);
# - HTTP/2 keepalive pings while a call is active, so a long call (an Acquire waiting in the
#   queue, a Watch) on a node that hangs (SIGSTOP, dead host) fails within ~4 s and is retried
#   elsewhere instead of hanging until its deadline. The server allows pings this often.
CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.enable_retries", 0),
    ("grpc.keepalive_time_ms", 2000),
    ("grpc.keepalive_timeout_ms", 2000),
    ("grpc.http2.ping_timeout_ms", 2000),  # what actually bounds an unanswered ping (1.85)
    ("grpc.http2.max_pings_without_data", 0),
)

# Status codes after which another attempt (maybe on another node) may succeed. An Acquire is
# retried with the same request_id, so retrying an ambiguous failure is safe.
RETRIABLE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
    }
)


def rpc_code(err: grpc.RpcError) -> grpc.StatusCode:
    try:
        code: object = err.code()
    except Exception:  # not every RpcError is a Call
        return grpc.StatusCode.UNKNOWN
    return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN


def rpc_details(err: grpc.RpcError) -> str:
    try:
        details = err.details()
    except Exception:
        return str(err)
    return one_line(details or "")


def metadata_leader_hint(metadata: Sequence[Any] | None) -> str | None:
    """The ``raftlease-leader`` value of trailing metadata, if present and non-empty."""
    for item in metadata or ():
        key = getattr(item, "key", None)
        value = getattr(item, "value", None)
        if key is None and isinstance(item, tuple) and len(item) == 2:
            key, value = item
        if key == LEADER_METADATA_KEY:
            if isinstance(value, bytes):
                value = value.decode("utf-8", "replace")
            if isinstance(value, str) and value.strip():
                return value.strip()
    return None


def rpc_leader_hint(err: grpc.RpcError) -> str | None:
    try:
        metadata = err.trailing_metadata()
    except Exception:
        return None
    return metadata_leader_hint(metadata)


def describe_rpc_error(err: grpc.RpcError) -> str:
    code = rpc_code(err)
    details = rpc_details(err)
    return f"{code.name}: {details}" if details else code.name


def is_retriable(err: grpc.RpcError) -> bool:
    return rpc_code(err) in RETRIABLE_CODES


def map_rpc_error(err: grpc.RpcError) -> Exception:
    """The typed exception for a non-retriable status."""
    code = rpc_code(err)
    details = rpc_details(err)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument(details or "invalid argument")
    if code == grpc.StatusCode.NOT_FOUND:
        return LeaseNotFound(details or "lease not found")
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return PermissionDenied(f"permission denied: {details}", code.name)
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return Unauthenticated(f"unauthenticated: {details}", code.name)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return LimitExceeded(f"limit reached: {details}", code.name)
    return RpcFailed(f"server answered {describe_rpc_error(err)}", code.name)


def rpc_failure(err: grpc.RpcError, explain: Callable[[str], str] | None = None) -> Failure:
    """A failed attempt for the protocol: retriable statuses (with the leader hint of the
    trailing metadata), or the exception a non-retriable one maps to. ``explain`` may add
    to a retriable failure's description (the TLS hints of ``_tls.ChannelSecurity``)."""
    if is_retriable(err):
        error = describe_rpc_error(err)
        return Failure(explain(error) if explain else error, rpc_leader_hint(err))
    return Failure(describe_rpc_error(err), exc=map_rpc_error(err))


_OUTCOME = lease_pb2.KeepAliveResponse


def outcome_name(outcome: lease_pb2.KeepAliveResponse.Outcome.ValueType) -> str:
    """``RETRY``, ``NOT_FOUND``, ... for a ``KeepAliveResponse.Outcome`` value."""
    try:
        return _OUTCOME.Outcome.Name(outcome).removeprefix("OUTCOME_")
    except ValueError:
        return f"outcome {outcome}"


def renew_request(lease_id: int, health: Mapping[str, str]) -> lease_pb2.RenewRequest:
    """The keepalive's Renew: it asks for in-band outcomes (RETRY, NOT_LEADER, ...)."""
    return lease_pb2.RenewRequest(lease_id=lease_id, health=dict(health), inband_outcomes=True)


def keepalive_request(lease_id: int, health: Mapping[str, str]) -> lease_pb2.KeepAliveRequest:
    """One renewal on the keepalive hub's KeepAlive stream, with in-band outcomes (one
    lease's failure leaves the stream open for the others)."""
    return lease_pb2.KeepAliveRequest(lease_id=lease_id, health=dict(health), inband_outcomes=True)


#: At most this many renewals in one KeepAliveRequest (the server's bound on ``items``:
#: ``raftlease.server.MAX_KEEPALIVE_ITEMS``; tests/client/test_hub.py keeps the two equal) ...
KEEPALIVE_BATCH_ITEMS = 1000
#: ... and about this many bytes: a 16th of the servers' default --max-request-bytes (1 MiB),
#: and still 1,000 items of leases with small health payloads.
KEEPALIVE_BATCH_BYTES = 64 * 1024
_ITEM_OVERHEAD = 16  # bytes per item besides its health payload (tags, lengths, lease id)
_ENTRY_OVERHEAD = 8  # bytes per health entry besides its key and value


def _item_bytes(health: Mapping[str, str]) -> int:
    n = _ITEM_OVERHEAD
    for k, v in health.items():
        n += _ENTRY_OVERHEAD + len(k.encode()) + len(v.encode())
    return n


class KeepaliveMessages:
    """The ``KeepAliveRequest`` messages written on one KeepAlive stream, and the matching of
    its answers to them (a server answers a stream's requests in order, one response each).
    Pure: the hub drivers (``_hub_sync.py``, ``_hub_aio.py``) keep one per stream.

    - :meth:`requests`: the renewals of one :class:`~raftlease.client._hub.StreamWrite`. Batched:
      as few messages as the bounds allow (:data:`KEEPALIVE_BATCH_ITEMS` items, about
      :data:`KEEPALIVE_BATCH_BYTES`), each a batch (``items``) whose top-level ``lease_id`` and
      ``health`` are its first item's; a message of one lease is a plain request. Not batched:
      one plain request per lease.
    - :meth:`answers`: one response, as (lease id, answer) pairs, plus the lease ids of a batch
      the server did not answer: a response without ``items`` to a batch comes from a server
      that ignores ``items`` (from before them); it renewed the top-level lease only, and the
      others are to be sent again one per request (``KeepaliveHub.on_unbatched``).
    """

    __slots__ = ("_sent",)

    def __init__(self) -> None:
        # per message written, oldest first: a batch's lease ids, or None for a plain request
        self._sent: deque[tuple[int, ...] | None] = deque()

    def requests(
        self,
        lease_ids: Sequence[int],
        health: Callable[[int], Mapping[str, str]],
        *,
        batched: bool,
    ) -> list[lease_pb2.KeepAliveRequest]:
        out: list[lease_pb2.KeepAliveRequest] = []
        sent = self._sent
        if not batched or len(lease_ids) == 1:
            for lid in lease_ids:
                out.append(keepalive_request(lid, health(lid)))
                sent.append(None)
            return out
        groups: list[tuple[lease_pb2.KeepAliveRequest, list[int]]] = []
        size = KEEPALIVE_BATCH_BYTES
        for lid in lease_ids:
            h = health(lid)
            n = _item_bytes(h) if h else _ITEM_OVERHEAD
            if (
                not groups
                or len(groups[-1][1]) >= KEEPALIVE_BATCH_ITEMS
                or size + n > (KEEPALIVE_BATCH_BYTES)
            ):
                req = lease_pb2.KeepAliveRequest(lease_id=lid, health=h, inband_outcomes=True)
                groups.append((req, []))
                size = n
            req, ids = groups[-1]
            req.items.add(lease_id=lid, health=h)
            ids.append(lid)
            size += n
        for req, ids in groups:
            if len(ids) == 1:  # alone in its message: a plain request
                del req.items[:]
                sent.append(None)
            else:
                sent.append(tuple(ids))
            out.append(req)
        return out

    def answers(
        self, resp: lease_pb2.KeepAliveResponse
    ) -> tuple[list[tuple[int, lease_pb2.KeepAliveResponse]], tuple[int, ...]]:
        head = self._sent.popleft() if self._sent else None
        if resp.items:  # a batch's answer: one per item
            return [(a.lease_id, a) for a in resp.items], ()
        answered = [(resp.lease_id, resp)]
        if head is None:
            return answered, ()
        # A batch answered like a plain request: the server ignores ``items``.
        rest = list(head)
        if resp.lease_id in rest:
            rest.remove(resp.lease_id)
        return answered, tuple(rest)

    def __len__(self) -> int:
        """Messages written and not answered yet."""
        return len(self._sent)


def renew_answer(resp: lease_pb2.RenewResponse | lease_pb2.KeepAliveResponse) -> RenewAnswer:
    """A Renew (or KeepAlive stream) answer for the keepalive's decisions."""
    return RenewAnswer(
        outcome_name(resp.outcome),
        ttl=resp.ttl_ms / 1000.0,
        message=one_line(resp.message),
        hint=resp.leader_hint.strip(),
    )


def acquire_request(
    action: SendAcquire, name: str, holder: str, ttl_ms: int, metadata: Mapping[str, str]
) -> lease_pb2.AcquireRequest:
    return lease_pb2.AcquireRequest(
        name=name,
        holder=holder,
        ttl_ms=ttl_ms,
        wait_ms=action.wait_ms,
        metadata=metadata,
        request_id=action.request_id,
    )


def feed_acquire_response(
    machine: AcquireMachine[lease_pb2.LeaseInfo], now: float, resp: lease_pb2.AcquireResponse
) -> Action[lease_pb2.LeaseInfo]:
    """Hand an answered Acquire to the machine: granted, or held by someone else."""
    if not resp.acquired:
        return machine.on_held(now, resp.current if resp.HasField("current") else None)
    grant = resp.lease
    return machine.on_granted(now, grant, lease_id=grant.lease_id, ttl=grant.ttl_ms / 1000.0)


def lease_held_error(name: str, current: object) -> LeaseHeld:
    """The error of an acquire answered "held"; ``current`` is the grant the server named
    (a ``LeaseInfo`` message), if any."""
    if not isinstance(current, lease_pb2.LeaseInfo) or not current.holder:
        return LeaseHeld(f"lease {name!r} is held by another holder")
    return LeaseHeld(
        f"lease {name!r} is held by {current.holder} (fencing token {current.fencing_token})",
        current.holder,
        current.fencing_token,
    )
