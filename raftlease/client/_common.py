"""What the sync and the async client share, re-exported from the modules that now hold it
(this module only keeps the old import path working):

- ``_values``: endpoints, durations, the default holder, str maps, fencing tokens;
- ``_validity``: the validity arithmetic (``LeaseTimer``, ``effective_ttl``, ``lost_margin``);
- ``_retry``: backoff, routing, one call's attempts, ``Failure``;
- ``_keepalive``: a keepalive's decisions after each renewal answer;
- ``_protocol``: the lease procedure as sans-I/O step machines (acquire, keepalive, calls);
- ``_rpc``: gRPC status codes, metadata and messages to and from the protocol;
- ``_models``: ``LeaseInfo``, ``WatchEvent``, ``WatchDedup``;
- ``_status``: ``merge_status``.
"""

from __future__ import annotations

from raftlease.client._keepalive import (
    RETRY_CAP_S,
    RETRY_LIMIT,
    RETRY_START_S,
    KeepaliveState,
    KeepaliveStep,
    RenewAnswer,
    safe_callback,
)
from raftlease.client._models import LeaseInfo, WatchDedup, WatchEvent
from raftlease.client._retry import (
    BACKOFF_CAP_S,
    BACKOFF_START_S,
    Attempts,
    Backoff,
    Failure,
    Router,
    attempt_cap,
    renew_attempt_cap,
)
from raftlease.client._rpc import (
    CHANNEL_OPTIONS,
    LEADER_METADATA_KEY,
    RETRIABLE_CODES,
    describe_rpc_error,
    is_retriable,
    lease_held_error,
    map_rpc_error,
    metadata_leader_hint,
    outcome_name,
    rpc_code,
    rpc_details,
    rpc_leader_hint,
)
from raftlease.client._status import merge_status
from raftlease.client._validity import LeaseTimer, effective_ttl, lost_margin
from raftlease.client._values import (
    DEFAULT_ENDPOINTS,
    ENDPOINTS_ENV,
    check_str_map,
    check_token_value,
    default_holder,
    format_duration,
    one_line,
    parse_duration,
    parse_endpoints,
    seconds_to_ms,
)
from raftlease.client.errors import (
    ClusterUnavailable,
    InvalidArgument,
    LeaseHeld,
    LeaseNotFound,
    RpcFailed,
)

__all__ = [
    "BACKOFF_CAP_S",
    "BACKOFF_START_S",
    "CHANNEL_OPTIONS",
    "DEFAULT_ENDPOINTS",
    "ENDPOINTS_ENV",
    "LEADER_METADATA_KEY",
    "RETRIABLE_CODES",
    "RETRY_CAP_S",
    "RETRY_LIMIT",
    "RETRY_START_S",
    "Attempts",
    "Backoff",
    "ClusterUnavailable",
    "Failure",
    "InvalidArgument",
    "KeepaliveState",
    "KeepaliveStep",
    "LeaseHeld",
    "LeaseInfo",
    "LeaseNotFound",
    "LeaseTimer",
    "RenewAnswer",
    "Router",
    "RpcFailed",
    "WatchDedup",
    "WatchEvent",
    "attempt_cap",
    "check_str_map",
    "check_token_value",
    "default_holder",
    "describe_rpc_error",
    "effective_ttl",
    "format_duration",
    "is_retriable",
    "lease_held_error",
    "lost_margin",
    "map_rpc_error",
    "merge_status",
    "metadata_leader_hint",
    "one_line",
    "outcome_name",
    "parse_duration",
    "parse_endpoints",
    "renew_attempt_cap",
    "rpc_code",
    "rpc_details",
    "rpc_leader_hint",
    "safe_callback",
    "seconds_to_ms",
]
