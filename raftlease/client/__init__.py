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
    RpcFailed,
    StaleToken,
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
    "RpcFailed",
    "StaleToken",
    "WatchEvent",
    "current_async_lease",
    "current_lease",
    "effective_ttl",
    "lost_margin",
    "parse_duration",
    "parse_endpoints",
]
