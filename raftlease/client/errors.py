"""The exceptions the clients raise, all under :class:`raftlease.errors.RaftLeaseError`.

``LeaseHeld`` (``raftlease.errors``) and ``InvalidArgument`` (``raftlease.fsm.limits``) are
re-exported here so that ``from raftlease.client import ...`` reaches every client error.
"""

from __future__ import annotations

from raftlease.errors import LeaseHeld, RaftLeaseError
from raftlease.fsm.limits import InvalidArgument

__all__ = [
    "ClusterUnavailable",
    "InvalidArgument",
    "LeaseHeld",
    "LeaseLost",
    "LeaseNotFound",
    "RpcFailed",
    "StaleToken",
]


class ClusterUnavailable(RaftLeaseError):
    """No leader answered before the client's ``timeout`` expired.

    The message is one line naming the endpoints tried and the last error seen. ``tried`` holds
    those endpoints (in the order first tried) and ``last_error`` that error's text.
    """

    def __init__(self, message: str, tried: tuple[str, ...] = (), last_error: str = "") -> None:
        super().__init__(message)
        self.tried = tried
        self.last_error = last_error


class LeaseNotFound(RaftLeaseError):
    """The server does not know the lease id: it was released, or it expired (``NOT_FOUND``)."""


class LeaseLost(RaftLeaseError):
    """The lease can no longer be trusted: renewals failed for too long, or it expired."""


class RpcFailed(RaftLeaseError):
    """The server answered with a status code the client does not expect (a server bug).

    ``code`` is the gRPC status code's name (e.g. ``"INTERNAL"``).
    """

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class Unauthenticated(RpcFailed):
    """The cluster's auth rules need credentials this client did not give, or its bearer token
    is not valid there (UNAUTHENTICATED; docs/security.md). Nothing changed."""


class PermissionDenied(RpcFailed):
    """This client's identity may not do that to that name (PERMISSION_DENIED; the message
    says what it may do). Nothing changed."""


class LimitExceeded(RpcFailed):
    """A server limit refused the call (RESOURCE_EXHAUSTED: too many waiting acquires or open
    streams from this client, too many leases for this holder, a request too large; the
    message names the limit and the server flag that raises it). Nothing changed; the client
    does not retry it on its own, since waiting rarely frees the slot it needs."""


class StaleToken(RaftLeaseError):
    """A fencing token is older than one already seen for the same lease name.

    Raised by :class:`raftlease.client.fencing.FencingGuard`; ``name``, ``token`` and
    ``highest`` say which name, which token was refused and the highest token seen.
    """

    def __init__(self, name: str, token: int, highest: int) -> None:
        super().__init__(
            f"stale fencing token {token} for lease {name!r}: "
            f"a newer grant (token {highest}) has already been seen"
        )
        self.name = name
        self.token = token
        self.highest = highest
