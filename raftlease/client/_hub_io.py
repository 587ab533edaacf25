"""What the sync and asyncio keepalive drivers (``_hub_sync``, ``_hub_aio``) both do with a
KeepAlive stream's events: hand its answers to the hub, and turn how it ended into a failure
of the renewals it carried. Written once here; the drivers differ only in how they wait."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import grpc

from raftlease.client._retry import Failure
from raftlease.client._rpc import renew_answer, rpc_code, rpc_failure

if TYPE_CHECKING:
    from collections.abc import Callable

    from raftlease.client._hub import KeepaliveHub
    from raftlease.client._rpc import KeepaliveMessages

__all__ = ["stream_answered", "stream_ended"]

log = logging.getLogger("raftlease.client")


def stream_answered(
    hub: KeepaliveHub,
    now: float,
    call_id: int,
    target: str,
    messages: KeepaliveMessages,
    resp: Any,
) -> None:
    """One KeepAliveResponse on the stream ``call_id``: every lease it answers; the leases of
    a batch that a server without ``items`` left unanswered go one per message from now on."""
    answers, rest = messages.answers(resp)
    for lease_id, answer in answers:
        hub.on_answer(now, call_id, lease_id, renew_answer(answer))
    if rest:
        log.info("raftlease: %s ignores batched keepalives: one lease per message", target)
        hub.on_unbatched(now, call_id, rest)


def stream_ended(
    hub: KeepaliveHub,
    now: float,
    call_id: int,
    target: str,
    err: BaseException | None,
    explain: Callable[[str], str] | None,
) -> None:
    """The stream ``call_id`` to ``target`` ended (``err``: its status, or None when it just
    closed): UNIMPLEMENTED switches that node to unary Renew; anything else fails the
    renewals in flight on it, and each lease's machine decides what next."""
    if isinstance(err, grpc.RpcError) and rpc_code(err) == grpc.StatusCode.UNIMPLEMENTED:
        log.info("raftlease: %s has no KeepAlive stream: renewing with Renew", target)
        hub.on_unsupported(now, call_id)
    elif isinstance(err, grpc.RpcError):
        hub.on_call_failed(now, call_id, rpc_failure(err, explain))
    else:
        why = f": {err}" if err is not None else ""
        failure = Failure(f"UNAVAILABLE: the KeepAlive stream to {target} ended{why}")
        hub.on_call_failed(now, call_id, failure)
