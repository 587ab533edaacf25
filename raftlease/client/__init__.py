"""raftlease clients: :class:`LeaseClient` (blocking) and :class:`AsyncLeaseClient` (asyncio).

::

    from raftlease import LeaseClient

    with LeaseClient(["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"]) as client:
        with client.acquire("billing", ttl=10.0, wait=30.0) as lease:
            do_work(lease.fencing_token)      # pass the token to every protected resource
            if not lease.is_valid():          # false once the lease may belong to another
                ...

Also here: :class:`FencingGuard` for protected resources, the result dataclasses
:class:`LeaseInfo` and :class:`WatchEvent`, and every exception the clients raise.
"""

from __future__ import annotations

from raftlease.client._common import (
    DEFAULT_ENDPOINTS,
    ENDPOINTS_ENV,
    LeaseInfo,
    WatchEvent,
    effective_ttl,
    lost_margin,
    parse_duration,
    parse_endpoints,
)
from raftlease.client.aio import AsyncLease, AsyncLeaseClient
from raftlease.client.errors import (
    ClusterUnavailable,
    InvalidArgument,
    LeaseHeld,
    LeaseLost,
    LeaseNotFound,
    RpcFailed,
    StaleToken,
)
from raftlease.client.fencing import FencingGuard
from raftlease.client.sync import Lease, LeaseClient

__all__ = [
    "DEFAULT_ENDPOINTS",
    "ENDPOINTS_ENV",
    "AsyncLease",
    "AsyncLeaseClient",
    "ClusterUnavailable",
    "FencingGuard",
    "InvalidArgument",
    "Lease",
    "LeaseClient",
    "LeaseHeld",
    "LeaseInfo",
    "LeaseLost",
    "LeaseNotFound",
    "RpcFailed",
    "StaleToken",
    "WatchEvent",
    "effective_ttl",
    "lost_margin",
    "parse_duration",
    "parse_endpoints",
]
