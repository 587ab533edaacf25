"""What the sync and asyncio keepalive drivers (``_hub_sync``, ``_hub_aio``) both do with
their events: hand a KeepAlive stream's answers to the hub, turn how a stream or a unary Renew
ended into a failure of the renewals it carried, and add, remove and nudge leases. Written
once here (:class:`HubEvents`); the drivers differ only in how they wait and send."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import grpc

from raftlease import clock as _clock
from raftlease.client._retry import Failure
from raftlease.client._rpc import renew_answer, rpc_code, rpc_failure

if TYPE_CHECKING:
    from collections.abc import Callable

    from raftlease.client._hub import KeepaliveHub
    from raftlease.client._rpc import KeepaliveMessages
    from raftlease.client.sync import Lease

__all__ = ["HubEvents", "StreamBase", "stream_answered", "stream_ended"]

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


class StreamBase:
    """What the event handling reads of a driver's KeepAlive stream."""

    target: str
    messages: KeepaliveMessages


class HubEvents:
    """The driver events and what each means for the hub. A driver posts them from its
    stream readers, its Renew calls and its public methods, and hands each to
    :meth:`_handle` on its hub thread or task:

    - ``("answer", call_id, resp)``, ``("ended", call_id, err_or_None)``: a stream's;
    - ``("unary", call_id, lease_id, resp)``, ``("unary_failed", call_id, err)``: a Renew's;
    - ``("add", lease)``, ``("remove", lease_id)``, ``("nudge", lease_id)``, ``("stop",)``.
    """

    hub: KeepaliveHub
    _calls: dict[int, Any]
    _targets: dict[int, str]
    _leases: dict[int, Any]
    _client: Any  # LeaseClient or AsyncLeaseClient: its security explains refusals

    def _handle(self, event: tuple[Any, ...]) -> bool:
        """Apply one event to the hub; False once told to stop."""
        hub = self.hub
        now = _clock.boot_monotonic()
        kind = event[0]
        if kind == "answer":
            _, call_id, resp = event
            stream = self._calls.get(call_id)
            if isinstance(stream, StreamBase):  # else a stream we closed
                stream_answered(hub, now, call_id, stream.target, stream.messages, resp)
        elif kind == "ended":
            _, call_id, err = event
            self._calls.pop(call_id, None)
            target = self._targets.pop(call_id, "?")
            stream_ended(hub, now, call_id, target, err, self._client._security.explain)
        elif kind == "unary":
            _, call_id, lease_id, resp = event
            self._calls.pop(call_id, None)
            self._targets.pop(call_id, None)
            hub.on_answer(now, call_id, lease_id, renew_answer(resp))
        elif kind == "unary_failed":
            _, call_id, err = event
            self._calls.pop(call_id, None)
            self._targets.pop(call_id, None)
            hub.on_call_failed(now, call_id, rpc_failure(err, self._client._security.explain))
        elif kind == "add":
            lease: Lease = event[1]
            self._leases[lease.lease_id] = lease
            hub.add(now, lease.lease_id, lease._keepalive)
        elif kind == "remove":
            self._leases.pop(event[1], None)
            hub.remove(event[1])
        elif kind == "nudge":
            hub.nudge(now, event[1])
        elif kind == "stop":
            return False
        return True

    def _health_of(self, lease_id: int) -> dict[str, str]:
        return self._leases[lease_id]._health  # type: ignore[no-any-return]
