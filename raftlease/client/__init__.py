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

Leader election (docs/election.md): ``client.election(NAME)`` (:class:`Election`,
:class:`AsyncElection`: campaign / resign / leader / observe), ``client.leadership(NAME)``
(a block that runs only while leading), ``client.run_for_leadership(NAME, ...)`` and
``client.singleton(NAME, fn)`` (:class:`LeadershipRunner`, :class:`AsyncLeadershipRunner`),
:class:`Leader`, :class:`LeadershipLost`, :func:`current_lease`, :func:`current_async_lease`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
    from raftlease.client._election_base import ElectionClosed, Leader, LeadershipLost
    from raftlease.client._tls import TLSConfig
    from raftlease.client.aelection import (
        AsyncElection,
        AsyncLeadership,
        AsyncLeadershipRunner,
        current_async_lease,
    )
    from raftlease.client.aio import AsyncLease, AsyncLeaseClient
    from raftlease.client.election import Election, Leadership, LeadershipRunner, current_lease
    from raftlease.client.errors import (
        ClusterUnavailable,
        InvalidArgument,
        LeaseHeld,
        LeaseLost,
        LeaseNotFound,
        LimitExceeded,
        PermissionDenied,
        RpcFailed,
        StaleToken,
        Unauthenticated,
    )
    from raftlease.client.fencing import FencingGuard
    from raftlease.client.sync import Lease, LeaseClient

__all__ = [
    "DEFAULT_ENDPOINTS",
    "ENDPOINTS_ENV",
    "AsyncElection",
    "AsyncLeadership",
    "AsyncLeadershipRunner",
    "AsyncLease",
    "AsyncLeaseClient",
    "ClusterUnavailable",
    "Election",
    "ElectionClosed",
    "FencingGuard",
    "InvalidArgument",
    "Leader",
    "Leadership",
    "LeadershipLost",
    "LeadershipRunner",
    "Lease",
    "LeaseClient",
    "LeaseHeld",
    "LeaseInfo",
    "LeaseLost",
    "LeaseNotFound",
    "LimitExceeded",
    "PermissionDenied",
    "RpcFailed",
    "StaleToken",
    "TLSConfig",
    "Unauthenticated",
    "WatchEvent",
    "current_async_lease",
    "current_lease",
    "effective_ttl",
    "lost_margin",
    "parse_duration",
    "parse_endpoints",
]

# Imported lazily (PEP 562): the pure modules of this package (_protocol, _retry, _keepalive,
# _validity, _values, errors), which the simulator drives, must load without grpc.
_LAZY = {
    "AsyncElection": "raftlease.client.aelection",
    "AsyncLeadership": "raftlease.client.aelection",
    "AsyncLeadershipRunner": "raftlease.client.aelection",
    "AsyncLease": "raftlease.client.aio",
    "AsyncLeaseClient": "raftlease.client.aio",
    "ClusterUnavailable": "raftlease.client.errors",
    "DEFAULT_ENDPOINTS": "raftlease.client._common",
    "ENDPOINTS_ENV": "raftlease.client._common",
    "Election": "raftlease.client.election",
    "ElectionClosed": "raftlease.client._election_base",
    "FencingGuard": "raftlease.client.fencing",
    "InvalidArgument": "raftlease.client.errors",
    "Leader": "raftlease.client._election_base",
    "Leadership": "raftlease.client.election",
    "LeadershipLost": "raftlease.client._election_base",
    "LeadershipRunner": "raftlease.client.election",
    "Lease": "raftlease.client.sync",
    "LeaseClient": "raftlease.client.sync",
    "LeaseHeld": "raftlease.client.errors",
    "LeaseInfo": "raftlease.client._common",
    "LeaseLost": "raftlease.client.errors",
    "LeaseNotFound": "raftlease.client.errors",
    "LimitExceeded": "raftlease.client.errors",
    "PermissionDenied": "raftlease.client.errors",
    "RpcFailed": "raftlease.client.errors",
    "StaleToken": "raftlease.client.errors",
    "TLSConfig": "raftlease.client._tls",
    "Unauthenticated": "raftlease.client.errors",
    "WatchEvent": "raftlease.client._common",
    "current_async_lease": "raftlease.client.aelection",
    "current_lease": "raftlease.client.election",
    "effective_ttl": "raftlease.client._common",
    "lost_margin": "raftlease.client._common",
    "parse_duration": "raftlease.client._common",
    "parse_endpoints": "raftlease.client._common",
}


if not TYPE_CHECKING:  # mypy reads the imports above

    def __getattr__(name: str) -> Any:
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value
        return value
