"""grpc.aio servicers (RaftPeer, Lease, Cluster, health) wired to a Node. Layer L4.

Errors are gRPC status codes whose messages say what to do:
  INVALID_ARGUMENT  the request broke a bound (the message names it); nothing changed
  NOT_FOUND         unknown lease id (released, expired, or never granted)
  UNAVAILABLE       not the leader (trailing metadata ``raftlease-leader`` = HOST:PORT when
                    known), no valid leader lease yet, or the outcome of a write is unknown
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import gc
import importlib.metadata
import inspect
import logging
import os
import signal
import socket
import sys
import urllib.parse
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from raftlease.auth import (
    AuthInterceptor,
    AuthRules,
    HandlerCache,
    NodeTLS,
    client_identity,
    load_node_tls,
    load_rules,
)
from raftlease.auth import _bearer as bearer_token
from raftlease.clock import clock_from_env
from raftlease.core.membership import MembershipError
from raftlease.errors import ConfigError, NoLeaderLease, NotLeader, ProposalDropped, StorageError
from raftlease.failpoints import Failpoints
from raftlease.fsm import limits
from raftlease.fsm.commands import Acquire
from raftlease.fsm.leases import (
    LeaseEvent,
    LeaseRecord,
    NotFound,
    Rejected,
    Released,
)
from raftlease.logs import configure_logging, set_term_source
from raftlease.node import Node
from raftlease.service import Acquired, NotAcquired
from raftlease.settings import TICK_MAX_S, TICK_MIN_S, ServerConfig
from raftlease.storage.base import DataDirMismatch
from raftlease.storage.sqlite import SqliteStorage
from raftlease.transport.grpc import (
    CHANNEL_OPTIONS,
    MAX_MESSAGE_BYTES,
    GrpcTransport,
    PeerServicer,
)
from raftlease.transport.tcp import PeerListener
from raftlease.types import NAME_MAX, NAME_PATTERN, NodeId
from raftlease.v1 import (
    cluster_pb2,
    cluster_pb2_grpc,
    lease_pb2,
    lease_pb2_grpc,
    raft_pb2_grpc,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

    from raftlease.storage.base import Storage
    from raftlease.testing.faults import FaultInjector
    from raftlease.transport.base import Transport

log = logging.getLogger("raftlease.server")

LEADER_KEY = "raftlease-leader"

Ctx = grpc.aio.ServicerContext[Any, Any]

# One port carries peer and client traffic, so grpc's own cap is the transport's 64 MiB (an
# InstallSnapshot carries the whole lease table: about 200 bytes a lease, 20 MB for 100 000
# leases). Client requests get their own, smaller cap, --max-request-bytes (RequestGate).
SERVER_OPTIONS: list[tuple[str, int | str]] = [
    ("grpc.so_reuseport", 0),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.http2.min_ping_interval_without_data_ms", 500),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.keepalive_permit_without_calls", 1),
]


async def _abort(
    context: Ctx, code: grpc.StatusCode, msg: str, leader: str | None = None
) -> NoReturn:
    if leader:
        context.set_trailing_metadata(((LEADER_KEY, leader),))
    await context.abort(code, msg)
    raise AssertionError("unreachable")  # pragma: no cover - abort always raises


async def _unavailable(context: Ctx, e: Exception) -> NoReturn:
    """UNAVAILABLE with the error's text; a NotLeader's leader address goes in metadata."""
    hint = e.leader_hint if isinstance(e, NotLeader) else None
    await _abort(context, grpc.StatusCode.UNAVAILABLE, str(e), hint)


def _lease_info(node: Node, rec: LeaseRecord) -> lease_pb2.LeaseInfo:
    info = lease_pb2.LeaseInfo(
        name=rec.name,
        lease_id=rec.lease_id,
        fencing_token=rec.fencing_token,
        holder=rec.holder,
        ttl_ms=rec.ttl_ms,
        remaining_ms=int(node.remaining_s(rec.lease_id) * 1000),
        waiters=node.waiter_count(rec.name),
        granted_index=rec.granted_index,
    )
    info.metadata.update(dict(rec.metadata))
    h = node.lease_health(rec.lease_id)
    if h:
        info.health.update(h)
    return info


# -- per-client limits (docs/operations.md, "Limits") ------------------------------------------

_CONFIG_DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(ServerConfig)}


def peer_host(context: Ctx) -> str:
    """The network host a call comes from (``ipv4:10.0.0.7:53122`` -> ``10.0.0.7``): the
    per-client limits' client when there is no auth identity. Every client behind one NAT or
    proxy, or on this machine, counts as one client."""
    peer = urllib.parse.unquote(context.peer() or "")
    scheme, sep, rest = peer.partition(":")
    if not sep or scheme not in ("ipv4", "ipv6"):
        return peer or "unknown"
    host, colon, port = rest.rpartition(":")
    if not colon or not port.isdigit():
        host = rest
    return host.strip("[]") or "unknown"


def client_key_for(rules: AuthRules | None) -> Callable[[Ctx], str]:
    """Who a call comes from, for the per-client limits: the identity of its bearer token
    (``rules``), else of its client certificate (with TLS), else its network host."""

    def key(context: Ctx) -> str:
        if rules is not None:
            sent, token = bearer_token(context.invocation_metadata())
            if sent and token:
                identity = rules.identity_for_token(token)
                if identity is not None:
                    return f"identity {identity!r}"
        with contextlib.suppress(Exception):  # no TLS: no auth context to read
            identity = client_identity(context.auth_context())
            if identity is not None:
                return f"identity {identity!r}"
        return peer_host(context)

    return key


class HolderCounts:
    """How many leases each holder string holds, on this node's table, for
    ``--max-leases-per-holder``. Kept up to date from the node's lease events (each
    acquisition, release and expiry); counted afresh from the table whenever the table is a
    new one (start-up, an installed snapshot). The holder string is what the table records
    and replicates, so every leader counts the same, also right after a failover."""

    def __init__(self, node: Node, limit: int) -> None:
        self.node = node
        self.limit = limit
        self._table: object = None
        self._counts: dict[str, int] = {}
        watch = getattr(node, "watch", None)
        if watch is not None:
            watch(self._on_event)

    def _on_event(self, ev: LeaseEvent) -> None:
        if self._table is not self.node.table:
            return  # not counted yet: counted from the table on the next look
        holder = ev.lease.holder
        n = self._counts.get(holder, 0) + (1 if ev.kind == "acquired" else -1)
        if n > 0:
            self._counts[holder] = n
        else:
            self._counts.pop(holder, None)

    def count(self, holder: str) -> int:
        table = self.node.table
        if table is not self._table:
            counts: dict[str, int] = {}
            for rec in table.leases():
                counts[rec.holder] = counts.get(rec.holder, 0) + 1
            self._counts = counts
            self._table = table
        return self._counts.get(holder, 0)

    def check(self, holder: str, name: str, request_id: str) -> None:
        """Raise LimitExceeded if ``holder`` already holds the limit (a retry of an acquire
        that was granted, same request id, always passes: it takes nothing new)."""
        n = self.count(holder)
        if n < self.limit:
            return
        current = self.node.lookup(name)
        if current is not None and current.request_id == request_id:
            return
        raise limits.exhausted(
            f"holder {holder!r} holds {n} leases",
            self.limit,
            "--max-leases-per-holder",
            "release some first",
        )


class _TooLarge:
    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size


class _Undecodable:
    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


_CLIENT_SERVICES = ("/raftlease.v1.Lease/", "/raftlease.v1.Cluster/")


class RequestGate(grpc.aio.ServerInterceptor):
    """Looks at every request's bytes before its handler does. A Lease or Cluster request
    larger than ``max_request_bytes`` ends the call RESOURCE_EXHAUSTED (naming the limit and
    ``--max-request-bytes``) without being decoded; bytes that are not the method's request
    message end it INVALID_ARGUMENT (grpc alone would answer INTERNAL and log a traceback).
    Peer messages (RaftPeer) are bounded only by the transport's cap, MAX_MESSAGE_BYTES: an
    InstallSnapshot carries the whole lease table."""

    def __init__(self, max_request_bytes: int) -> None:
        self.max_request_bytes = max_request_bytes
        self._wrapped = HandlerCache()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        return self._wrapped.get(handler_call_details.method, handler, self._wrap)

    def _wrap(self, method: str, handler: Any) -> Any:
        cap = self.max_request_bytes if method.startswith(_CLIENT_SERVICES) else None
        deserialize = handler.request_deserializer
        descriptor = getattr(getattr(deserialize, "__self__", None), "DESCRIPTOR", None)
        kind = getattr(descriptor, "full_name", "request")

        def decode(data: bytes) -> Any:
            if cap is not None and len(data) > cap:
                return _TooLarge(len(data))
            try:
                return deserialize(data)
            except Exception as e:
                return _Undecodable(f"{type(e).__name__}: {e}")

        async def refuse(bad: _TooLarge | _Undecodable, context: Ctx) -> NoReturn:
            if isinstance(bad, _TooLarge):
                assert cap is not None
                err = limits.exhausted(
                    f"the {kind} is {bad.size} bytes", cap, "--max-request-bytes"
                )
                await _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, str(err))
            reason = " ".join(bad.reason.split())[:200]
            await _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the request is not a valid {kind} message ({reason}); nothing changed",
            )

        async def checked(requests: AsyncIterator[Any], context: Ctx) -> AsyncIterator[Any]:
            async for request in requests:
                if isinstance(request, _TooLarge | _Undecodable):
                    await refuse(request, context)
                yield request

        kw: dict[str, Any] = {
            "request_deserializer": decode,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            uu = handler.unary_unary

            async def unary_unary(request: Any, context: Ctx) -> Any:
                if isinstance(request, _TooLarge | _Undecodable):
                    await refuse(request, context)
                return await uu(request, context)

            return grpc.unary_unary_rpc_method_handler(unary_unary, **kw)
        if handler.unary_stream is not None:
            us = handler.unary_stream
            if inspect.iscoroutinefunction(us):
                # grpc calls a streaming handler by its kind: a coroutine writes its answers
                # with context.write (the health service's Watch), a generator yields them.
                async def unary_writer(request: Any, context: Ctx) -> None:
                    if isinstance(request, _TooLarge | _Undecodable):
                        await refuse(request, context)
                    await us(request, context)

                return grpc.unary_stream_rpc_method_handler(unary_writer, **kw)

            async def unary_stream(request: Any, context: Ctx) -> AsyncIterator[Any]:
                if isinstance(request, _TooLarge | _Undecodable):
                    await refuse(request, context)
                async for item in us(request, context):
                    yield item

            return grpc.unary_stream_rpc_method_handler(unary_stream, **kw)
        inner = handler.stream_unary or handler.stream_stream
        if inspect.iscoroutinefunction(inner) and handler.stream_stream is not None:
            return handler  # reads with context.read(), past any wrapper: left as it is
        if handler.stream_unary is not None:
            su = handler.stream_unary

            async def stream_unary(requests: AsyncIterator[Any], context: Ctx) -> Any:
                return await su(checked(requests, context), context)

            return grpc.stream_unary_rpc_method_handler(stream_unary, **kw)
        ss = handler.stream_stream

        async def stream_stream(requests: AsyncIterator[Any], context: Ctx) -> AsyncIterator[Any]:
            async for item in ss(checked(requests, context), context):
                yield item

        return grpc.stream_stream_rpc_method_handler(stream_stream, **kw)


class HealthServicer(health.aio.HealthServicer):
    """grpc's health service, answering List (which grpcio-health-checking's aio servicer
    leaves unimplemented: it raised NotImplementedError, an UNKNOWN answer and a traceback in
    the log; found by tests/integration/test_wire_garbage.py) with UNIMPLEMENTED."""

    async def List(self, request: Any, context: Ctx) -> Any:
        await _abort(
            context,
            grpc.StatusCode.UNIMPLEMENTED,
            "health List is not served: ask Check or Watch for a service name "
            f"({LIVENESS_SERVICE!r}, {READY_SERVICE!r}, {LEASE_SERVICE!r})",
        )


_OUTCOME = lease_pb2.KeepAliveResponse

#: The most renewals one KeepAliveRequest may carry in ``items`` (a batch); more ends the
#: stream INVALID_ARGUMENT naming this bound (protos/raftlease/v1/lease.proto).
MAX_KEEPALIVE_ITEMS = 1000


class _Refusal:
    """Why one renewal failed: its in-band outcome, and the status that ends the call when
    the request did not ask for in-band outcomes."""

    __slots__ = ("code", "leader_hint", "message", "outcome")

    def __init__(
        self,
        outcome: lease_pb2.KeepAliveResponse.Outcome.ValueType,
        code: grpc.StatusCode,
        message: str,
        leader_hint: str = "",
    ) -> None:
        self.outcome = outcome
        self.code = code
        self.message = message
        self.leader_hint = leader_hint


class LeaseServicer(lease_pb2_grpc.LeaseServicer):
    """The Lease service. ``before_reply`` (fault injection only: the ``before-client-reply``
    failpoint) runs once Acquire's answer, or a successful Release's, is ready, before it is
    returned."""

    def __init__(
        self,
        node: Node,
        before_reply: Callable[[], None] | None = None,
        *,
        client_key: Callable[[Ctx], str] | None = None,
    ) -> None:
        """``client_key``: who a call comes from, for the per-client limits (default: the
        peer's network host; serve() passes :func:`client_key_for` its auth rules). The limits
        themselves are the node's ServerConfig ``max_*`` fields (docs/operations.md)."""
        self.node = node
        self.before_reply = before_reply
        self.client_key = client_key or peer_host
        cfg = getattr(node, "cfg", None)

        def limit(f: str) -> int:
            return int(getattr(cfg, f, _CONFIG_DEFAULTS[f]))

        self.waits = limits.ClientSlots(
            limit("max_waits_per_client"), "Acquire calls waiting", "--max-waits-per-client"
        )
        self.streams = limits.ClientSlots(
            limit("max_streams_per_client"),
            "Watch/KeepAlive streams open",
            "--max-streams-per-client",
        )
        self.held = HolderCounts(node, limit("max_leases_per_holder"))

    async def _invalid(self, context: Ctx, msg: str) -> NoReturn:
        await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, msg)

    async def _slot(self, slots: limits.ClientSlots, context: Ctx) -> Callable[[], None]:
        """Take one of ``slots`` for this call's client, or end the call RESOURCE_EXHAUSTED.
        Returns the give-back; it runs once, when the call ends however it ends (also
        registered with the call, for a stream grpc drops without closing its generator)."""
        key = self.client_key(context)
        try:
            slots.take(key)
        except limits.LimitExceeded as e:
            await _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, str(e))
        given_back = False

        def give_back() -> None:
            nonlocal given_back
            if not given_back:
                given_back = True
                slots.give_back(key)

        def on_done(_: Ctx) -> None:
            give_back()

        with contextlib.suppress(Exception):  # a context without done callbacks (tests)
            context.add_done_callback(on_done)  # type: ignore[arg-type]  # stub: a class
        return give_back

    async def Acquire(
        self, request: lease_pb2.AcquireRequest, context: Ctx
    ) -> lease_pb2.AcquireResponse:
        resp = await self._acquire(request, context)
        if self.before_reply is not None:
            self.before_reply()
        return resp

    async def _acquire(
        self, request: lease_pb2.AcquireRequest, context: Ctx
    ) -> lease_pb2.AcquireResponse:
        node = self.node
        try:
            name = limits.validate_name(request.name)
            holder = limits.validate_holder(request.holder)
            ttl_ms = limits.validate_ttl_ms(request.ttl_ms)
            wait_ms = limits.validate_wait_ms(request.wait_ms)
            metadata = limits.validate_metadata(dict(request.metadata))
            request_id = request.request_id or uuid.uuid4().hex
            limits.validate_request_id(request_id)
        except limits.InvalidArgument as e:
            await self._invalid(context, str(e))
        if not node.is_leader:
            await _unavailable(context, node.service.not_leader())
        try:
            self.held.check(holder, name, request_id)
        except limits.LimitExceeded as e:
            await _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, str(e))
        give_back = await self._slot(self.waits, context) if wait_ms > 0 else None
        cmd = Acquire(name, holder, ttl_ms, wait_ms > 0, request_id, metadata)
        try:
            # The whole procedure (queue, wait, leave the queue) is LeaseService's; a
            # cancelled call (deadline, disconnect) leaves the queue there too.
            result = await node.acquire(cmd, wait_ms / 1000.0)
        except (NotLeader, ProposalDropped) as e:
            await _unavailable(context, e)
        finally:
            if give_back is not None:
                give_back()
        if isinstance(result, Acquired):
            return lease_pb2.AcquireResponse(acquired=True, lease=_lease_info(node, result.lease))
        if isinstance(result, NotAcquired):
            resp = lease_pb2.AcquireResponse(acquired=False)
            if result.current is not None:
                resp.current.CopyFrom(_lease_info(node, result.current))
            return resp
        if isinstance(result, Rejected):
            await self._invalid(context, result.message)
        await _abort(context, grpc.StatusCode.INTERNAL, f"unexpected result {result!r}")

    def _try_renew(self, lease_id: int, health: Mapping[str, str]) -> LeaseRecord | _Refusal:
        """One renewal (Renew and each KeepAlive request): the record, or why it failed."""
        node = self.node
        try:
            h = dict(limits.validate_health(health)) if health else None
            rec = node.renew(lease_id, h)
        except limits.InvalidArgument as e:
            return _Refusal(_OUTCOME.OUTCOME_INVALID, grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except NoLeaderLease as e:
            # The leader without a valid leader lease (it lapses briefly when followers are
            # slow to acknowledge, e.g. under load): retry here shortly. Any other node:
            # renew on the leader.
            mine = e.leader_id == node.id
            outcome = _OUTCOME.OUTCOME_RETRY if mine else _OUTCOME.OUTCOME_NOT_LEADER
            return _Refusal(outcome, grpc.StatusCode.UNAVAILABLE, str(e), e.leader_hint or "")
        if rec is None:
            return _Refusal(
                _OUTCOME.OUTCOME_NOT_FOUND,
                grpc.StatusCode.NOT_FOUND,
                f"lease {lease_id} is not held (it was released, expired, or never existed); "
                "acquire it again",
            )
        return rec

    async def _renew(self, lease_id: int, health: Mapping[str, str], context: Ctx) -> LeaseRecord:
        """One renewal without in-band outcomes: the record, or abort the call."""
        result = self._try_renew(lease_id, health)
        if isinstance(result, _Refusal):
            await _abort(context, result.code, result.message, result.leader_hint or None)
        return result

    async def Renew(self, request: lease_pb2.RenewRequest, context: Ctx) -> lease_pb2.RenewResponse:
        if not request.inband_outcomes:
            rec = await self._renew(request.lease_id, request.health, context)
        else:
            result = self._try_renew(request.lease_id, request.health)
            if isinstance(result, _Refusal):
                return lease_pb2.RenewResponse(
                    outcome=result.outcome,
                    message=result.message,
                    leader_hint=result.leader_hint,
                )
            rec = result
        return lease_pb2.RenewResponse(
            ttl_ms=rec.ttl_ms, fencing_token=rec.fencing_token, outcome=_OUTCOME.OUTCOME_RENEWED
        )

    async def KeepAlive(
        self,
        request_iterator: AsyncIterator[lease_pb2.KeepAliveRequest],
        context: Ctx,
    ) -> AsyncIterator[lease_pb2.KeepAliveResponse]:
        give_back = await self._slot(self.streams, context)
        try:
            async for req in request_iterator:
                if req.items:
                    yield await self._keepalive_batch(req, context)
                    continue
                if not req.inband_outcomes:
                    # What a client from before in-band outcomes expects: any failure ends
                    # the stream with its status code (for every lease renewed on it).
                    rec = await self._renew(req.lease_id, req.health, context)
                else:
                    # One lease's failure answers that request; the stream stays open.
                    result = self._try_renew(req.lease_id, req.health)
                    if isinstance(result, _Refusal):
                        yield lease_pb2.KeepAliveResponse(
                            lease_id=req.lease_id,
                            outcome=result.outcome,
                            message=result.message,
                            leader_hint=result.leader_hint,
                        )
                        continue
                    rec = result
                yield lease_pb2.KeepAliveResponse(
                    lease_id=rec.lease_id,
                    ttl_ms=rec.ttl_ms,
                    fencing_token=rec.fencing_token,
                    outcome=_OUTCOME.OUTCOME_RENEWED,
                )
        finally:
            give_back()

    async def _keepalive_batch(
        self, req: lease_pb2.KeepAliveRequest, context: Ctx
    ) -> lease_pb2.KeepAliveResponse:
        """One KeepAliveRequest with ``items``: every item renewed (or refused) in one pass
        and answered, in order, in one response's ``items``. A broken bound ends the call
        INVALID_ARGUMENT before anything is renewed.

        The pass is synchronous (nothing awaited between the first item and the last), and
        each item is a full renewal: ``node.renew`` checks the leader lease at its own clock
        reading, so a leader lease that lapses during a long batch answers the remaining
        items RETRY; no item relies on a check made for another."""
        items = req.items
        if not req.inband_outcomes:
            await self._invalid(
                context,
                "a KeepAliveRequest with items (a batch) needs inband_outcomes = true: each "
                "item's failure is answered in its response item; nothing was renewed",
            )
        if len(items) > MAX_KEEPALIVE_ITEMS:
            await self._invalid(
                context,
                f"a KeepAliveRequest carries at most {MAX_KEEPALIVE_ITEMS} items, got "
                f"{len(items)}: split the batch; nothing was renewed",
            )
        if req.lease_id and req.lease_id != items[0].lease_id:
            await self._invalid(
                context,
                f"a KeepAliveRequest with items must have lease_id 0 or items[0].lease_id "
                f"({items[0].lease_id}), got {req.lease_id}; nothing was renewed",
            )
        resp = lease_pb2.KeepAliveResponse()
        add = resp.items.add
        renewed = _OUTCOME.OUTCOME_RENEWED
        for item in items:
            result = self._try_renew(item.lease_id, item.health)
            if isinstance(result, _Refusal):
                add(
                    lease_id=item.lease_id,
                    outcome=result.outcome,
                    message=result.message,
                    leader_hint=result.leader_hint,
                )
            else:
                add(
                    lease_id=result.lease_id,
                    ttl_ms=result.ttl_ms,
                    fencing_token=result.fencing_token,
                    outcome=renewed,
                )
        return resp

    async def Release(
        self, request: lease_pb2.ReleaseRequest, context: Ctx
    ) -> lease_pb2.ReleaseResponse:
        node = self.node
        if not node.is_leader:
            await _unavailable(context, node.service.not_leader())
        try:
            result = await node.release(request.lease_id)
        except (NotLeader, ProposalDropped) as e:
            await _unavailable(context, e)
        if isinstance(result, Released):
            if self.before_reply is not None:
                self.before_reply()
            return lease_pb2.ReleaseResponse(released=True)
        if isinstance(result, NotFound):
            await _abort(context, grpc.StatusCode.NOT_FOUND, result.message)
        if isinstance(result, Rejected):
            await self._invalid(context, result.message)
        await _abort(context, grpc.StatusCode.INTERNAL, f"unexpected result {result!r}")

    async def _barrier(self, context: Ctx) -> None:
        try:
            await self.node.read_barrier()
        except NotLeader as e:
            await _unavailable(context, e)

    async def Get(self, request: lease_pb2.GetRequest, context: Ctx) -> lease_pb2.GetResponse:
        try:
            name = limits.validate_name(request.name)
        except limits.InvalidArgument as e:
            await self._invalid(context, str(e))
        await self._barrier(context)
        rec = self.node.lookup(name)
        if rec is None:
            return lease_pb2.GetResponse(held=False)
        return lease_pb2.GetResponse(held=True, lease=_lease_info(self.node, rec))

    async def List(self, request: lease_pb2.ListRequest, context: Ctx) -> lease_pb2.ListResponse:
        await self._barrier(context)
        node = self.node
        return lease_pb2.ListResponse(
            leases=[_lease_info(node, r) for r in node.leases(request.prefix)]
        )

    async def CheckToken(
        self, request: lease_pb2.CheckTokenRequest, context: Ctx
    ) -> lease_pb2.CheckTokenResponse:
        try:
            name = limits.validate_name(request.name)
        except limits.InvalidArgument as e:
            await self._invalid(context, str(e))
        await self._barrier(context)
        rec = self.node.lookup(name)
        if rec is None:
            return lease_pb2.CheckTokenResponse(current=False)
        return lease_pb2.CheckTokenResponse(
            current=rec.fencing_token == request.fencing_token,
            current_token=rec.fencing_token,
            holder=rec.holder,
        )

    async def Watch(
        self, request: lease_pb2.WatchRequest, context: Ctx
    ) -> AsyncIterator[lease_pb2.WatchEvent]:
        node = self.node
        name = request.name
        if name:
            try:
                limits.validate_name(name)
            except limits.InvalidArgument as e:
                await self._invalid(context, str(e))
        await self._barrier(context)  # leader only: the initial state is a linearizable read
        give_back = await self._slot(self.streams, context)
        queue: asyncio.Queue[LeaseEvent] = asyncio.Queue(10_000)

        def push(ev: LeaseEvent) -> None:
            if not name or ev.name == name:
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait(ev)

        unwatch = node.watch(push)
        try:
            current = [node.lookup(name)] if name else node.leases()
            for rec in current:
                if rec is not None:
                    yield lease_pb2.WatchEvent(
                        kind=lease_pb2.WatchEvent.KIND_CURRENT,
                        lease=_lease_info(node, rec),
                        index=node.applied_index,
                        name=rec.name,
                    )
            kinds = {
                "acquired": lease_pb2.WatchEvent.KIND_ACQUIRED,
                "released": lease_pb2.WatchEvent.KIND_RELEASED,
                "expired": lease_pb2.WatchEvent.KIND_EXPIRED,
            }
            while True:
                ev = await queue.get()
                yield lease_pb2.WatchEvent(
                    kind=kinds[ev.kind],
                    lease=_lease_info(node, ev.lease),
                    index=ev.index,
                    name=ev.name,
                )
        finally:
            unwatch()
            give_back()


class ClusterServicer(cluster_pb2_grpc.ClusterServicer):
    def __init__(self, node: Node) -> None:
        self.node = node

    async def Status(
        self, request: cluster_pb2.StatusRequest, context: Ctx
    ) -> cluster_pb2.StatusResponse:
        st = self.node.status()
        resp = cluster_pb2.StatusResponse(
            cluster_id=st.cluster_id,
            leader_id=st.leader or "",
            node_id=st.node_id,
            leader_address=st.leader_address or "",
            term=st.term,
        )
        for n in st.nodes:
            resp.nodes.append(
                cluster_pb2.NodeStatus(
                    id=n.id,
                    address=n.address,
                    role=n.role,
                    term=n.term,
                    commit_index=n.commit_index,
                    applied_index=n.applied_index,
                    last_heard_ms=n.last_heard_ms,
                    missed_heartbeats=max(0, n.missed_heartbeats),
                    lag=n.lag,
                    match_index=n.match_index,
                    reachable=n.reachable,
                    lease_valid=n.lease_valid,
                    lease_remaining_ms=n.lease_remaining_ms,
                    learner=n.learner,
                )
            )
        resp.config_index = st.config_index
        return resp

    async def TransferLeadership(
        self, request: cluster_pb2.TransferLeadershipRequest, context: Ctx
    ) -> cluster_pb2.TransferLeadershipResponse:
        node = self.node
        if not node.is_leader:
            await _unavailable(context, node.service.not_leader())
        target = request.target_id or node.transfer_target()
        if not target:
            await _abort(context, grpc.StatusCode.FAILED_PRECONDITION, "no peer to take over")
        if target not in node.members or target == node.id:
            await _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"target_id {target!r} is not a peer; peers are "
                f"{[p for p in node.members if p != node.id]}",
            )
        try:
            await node.transfer_leadership(NodeId(target))
        except (NotLeader, ProposalDropped, ValueError) as e:
            await _abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(e))
        deadline = asyncio.get_running_loop().time() + 2.0
        while asyncio.get_running_loop().time() < deadline:
            if node.leader_id not in (None, node.id):
                break
            await asyncio.sleep(0.02)
        return cluster_pb2.TransferLeadershipResponse(leader_id=node.leader_id or "")

    # -- membership (docs/membership.md) ------------------------------------------------------
    def _member_list(self) -> cluster_pb2.MemberListResponse:
        info = self.node.membership_info()
        m = info.membership
        resp = cluster_pb2.MemberListResponse(
            config_index=info.config_index,
            committed=info.committed,
            leader_id=self.node.leader_id or "",
        )
        for nid in (*m.voters, *m.learners):
            lag = info.lags.get(nid)
            resp.members.append(
                cluster_pb2.Member(
                    id=nid,
                    peer_address=info.addresses.get(nid, ""),
                    learner=nid in m.learners,
                    lag=-1 if lag is None else lag,
                )
            )
        return resp

    async def _require_leader(self, context: Ctx) -> None:
        if not self.node.is_leader:
            await _unavailable(context, self.node.service.not_leader())

    async def _change(
        self, context: Ctx, op: str, node_id: str, address: str = "", patience_s: float = 5.0
    ) -> None:
        """Run one membership change, retrying for ``patience_s`` while it is refused only
        for now (the leader's no-op not committed yet, an earlier change in flight, a learner
        catching up); then ABORTED (the client retries) or FAILED_PRECONDITION."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + patience_s
        while True:
            try:
                await self.node.change_membership(op, NodeId(node_id), address)
                return
            except MembershipError as e:
                if not e.retryable:
                    await _abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(e))
                if loop.time() >= give_up:
                    await _abort(context, grpc.StatusCode.ABORTED, str(e))
            except (NotLeader, ProposalDropped) as e:
                if isinstance(e, ProposalDropped):
                    e = NotLeader(f"{e}; the change may or may not have happened", None)
                await _unavailable(context, e)
            await asyncio.sleep(0.05)

    async def MemberList(
        self, request: cluster_pb2.MemberListRequest, context: Ctx
    ) -> cluster_pb2.MemberListResponse:
        await self._require_leader(context)
        return self._member_list()

    async def MemberAdd(
        self, request: cluster_pb2.MemberAddRequest, context: Ctx
    ) -> cluster_pb2.MemberListResponse:
        problems = member_id_problems(request.id)
        if not request.peer_address:
            problems.append("peer_address is required (HOST:PORT)")
        else:
            problems += peer_address_problems(request.peer_address)
        if problems:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "; ".join(problems))
        await self._require_leader(context)
        node = self.node
        if request.id in node.peer_addresses and not node.membership.is_member(NodeId(request.id)):
            # A former member (as far as this leader knows): its old process may still run
            # with its old log and vote (docs/membership.md, "never reuse an id").
            await _abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{request.id} was a member of this cluster before; a member id is never "
                "reused: add the machine under a new id",
            )
        await self._change(context, "add_learner", request.id, request.peer_address)
        if not request.learner:
            timeout = (request.catch_up_timeout_ms or 30_000) / 1000.0
            await self._change(context, "promote", request.id, patience_s=timeout)
        return self._member_list()

    async def MemberPromote(
        self, request: cluster_pb2.MemberPromoteRequest, context: Ctx
    ) -> cluster_pb2.MemberListResponse:
        await self._require_leader(context)
        await self._change(context, "promote", request.id)
        return self._member_list()

    async def MemberRemove(
        self, request: cluster_pb2.MemberRemoveRequest, context: Ctx
    ) -> cluster_pb2.MemberListResponse:
        node = self.node
        await self._require_leader(context)
        if request.id == node.id and node.membership.is_voter(node.id):
            # Removing the leader: hand over first (a removed leader would otherwise step
            # down only after the change commits, and its followers' vote stickiness would
            # delay the next election); the client retries on the new leader.
            target = node.transfer_target()
            if target is None:
                await _abort(
                    context,
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"{node.id} is the only voter; add another before removing it",
                )
            try:
                await node.transfer_leadership(target)
            except (NotLeader, ProposalDropped, ValueError) as e:
                await _abort(context, grpc.StatusCode.UNAVAILABLE, str(e))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 2.0
            while loop.time() < deadline:
                if node.leader_id not in (None, node.id):
                    break
                await asyncio.sleep(0.02)
            await _unavailable(
                context,
                NotLeader(
                    f"{node.id} handed leadership to {target} before its removal; retry there",
                    node.leader_address() or node.client_address(target),
                ),
            )
        await self._change(context, "remove", request.id)
        return self._member_list()

    async def Snapshot(
        self, request: cluster_pb2.SnapshotRequest, context: Ctx
    ) -> cluster_pb2.SnapshotResponse:
        node = self.node
        await self._require_leader(context)
        try:
            await node.read_barrier()
        except NotLeader as e:
            await _unavailable(context, e)
        index = node.applied_index
        term = node.core.log.term_at(index) or node.core.term
        view = node.table.view()  # frozen in this turn of the loop: consistent at index
        listed = self._member_list()
        pieces = []
        for piece in view.encode(compress=True):  # a slice per turn: the loop runs between
            pieces.append(piece)
            await asyncio.sleep(0)
        data = b"".join(pieces)
        return cluster_pb2.SnapshotResponse(
            index=index,
            term=term,
            cluster_id=node.cfg.cluster_id,
            members=listed.members,
            data=data,
        )


def member_id_problems(node_id: str) -> list[str]:
    """Why ``node_id`` cannot be a member id (empty when it can; types.NAME_PATTERN)."""
    if not node_id:
        return ["a member id must not be empty"]
    if len(node_id) > NAME_MAX:
        return [f"member id is {len(node_id)} characters; at most {NAME_MAX}"]
    if not NAME_PATTERN.match(node_id):
        return [
            f"member id {node_id!r} may use only letters, digits, '-', '_' and '.', "
            "starting with a letter or digit"
        ]
    return []


def peer_address_problems(address: str) -> list[str]:
    """Why ``address`` cannot be a member's peer address (empty when it can): HOST:PORT with
    a host and a port 1..65535, no whitespace or control characters."""
    try:
        host, port = _host_port(address)
    except ServeRefused as e:  # not HOST:PORT (found by tests/test_wire_fuzz.py: was UNKNOWN)
        return [f"peer_address: {e}"]
    if not host or not 0 < port < 65536 or not address.isprintable() or " " in address:
        return [f"peer_address {address!r} is not HOST:PORT (a host, and a port 1..65535)"]
    return []


def _shutdown_cancel_filter(record: logging.LogRecord) -> bool:
    """False (drop) for grpc's report of an RPC cancelled by our own shutdown."""
    exc = record.exc_info[1] if record.exc_info else None
    if isinstance(exc, asyncio.CancelledError):
        return False
    return "CancelledError" not in (record.exc_text or "") + record.getMessage()


# -- start-up checks: refuse a misconfiguration before anything touches the data dir ------------

# TICK_MIN_S and TICK_MAX_S (the allowed --tick range) live in raftlease/settings.py with the
# rest of ServerConfig's rules; they are imported above and re-exported here.

#: What ``raftlease serve`` calls ServerConfig's fields in its refusals (its flags).
SERVE_FLAGS: Mapping[str, str] = {
    "node_id": "--id",
    "peers": "--peers",
    "client_addresses": "--client-addresses",
    "peer_listen": "--peer-listen",
    "peer_links": "--peer-links",
    "cluster_id": "--cluster-id",
    "tick_s": "--tick",
}


class ServeRefused(Exception):
    """The node refuses to start: bad settings or a busy port. Nothing was written to the data
    dir. ``main_serve`` prints it as ONE line ``raftlease serve: error: ...`` and exits 2.
    ``problems``: one message per broken rule (the message itself when there is one)."""

    def __init__(self, *problems: str) -> None:
        self.problems = problems
        if len(problems) == 1:
            message = problems[0]
        else:
            listed = "; ".join(f"({i}) {p}" for i, p in enumerate(problems, 1))
            message = f"{len(problems)} problems: {listed}"
        super().__init__(message)


def _host_port(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    try:
        if not sep:
            raise ValueError(address)
        return host.strip("[]"), int(port)
    except ValueError:
        raise ServeRefused(f"{address!r} is not HOST:PORT") from None


def listen_problems(cfg: ServerConfig, listen: str) -> list[str]:
    """Why ``listen`` cannot be this node's address: it is not HOST:PORT, or its port is not
    the one this node's own ``--peers`` entry (or ``--client-addresses`` entry) names, so the
    others would dial a port nobody answers on. About the listen address, not the settings,
    so it lives here rather than in :meth:`ServerConfig.problems`."""
    try:
        _, port = _host_port(listen)
    except ServeRefused as e:
        return [str(e)]
    out: list[str] = []
    for key, addresses in (("peers", cfg.peers), ("client_addresses", cfg.client_addresses)):
        own = addresses.get(cfg.node_id)
        if own is None:
            continue
        try:
            own_port = _host_port(own)[1]
        except ServeRefused as e:
            out.append(f"{SERVE_FLAGS[key]} entry {cfg.node_id}: {e}")
            continue
        if own_port != port:
            out.append(
                f"--listen {listen} does not match this node's own {SERVE_FLAGS[key]} entry "
                f"{cfg.node_id}={own}: the port must be the one the others reach this node on"
            )
    return out


def check_server_config(cfg: ServerConfig, listen: str) -> None:
    """Raise ServeRefused listing every problem of ``cfg`` (:meth:`ServerConfig.problems`,
    named by the serve flags) and of ``listen`` (:func:`listen_problems`)."""
    problems = cfg.problems(SERVE_FLAGS) + listen_problems(cfg, listen)
    if problems:
        raise ServeRefused(*problems)


def check_serve_settings(
    node_id: str,
    listen: str,
    peers: dict[str, str],
    cluster_id: str,
    client_addresses: dict[str, str] | None = None,
    tick_s: float | None = None,
) -> None:
    """Raise ServeRefused for settings that could split a cluster's brain or cannot work
    (every problem at once; see :func:`check_server_config`).

    Refused, among the rest of ServerConfig's rules: an id that is not one of the peers (the
    members would disagree on who votes), a listen port other than the one this node's own
    peers entry (and client address) names (the others would dial a port nobody answers on),
    an empty cluster id (a message from any other cluster would be accepted), and a tick
    outside 1 ms..100 ms (0 cannot run; with elections 20-40 ticks long a coarse tick makes
    failover take minutes).
    """
    cfg = ServerConfig(
        node_id=NodeId(node_id),
        cluster_id=cluster_id,
        peers={NodeId(k): v for k, v in peers.items()},
        client_addresses={NodeId(k): v for k, v in (client_addresses or {}).items()},
    )
    if tick_s is not None:
        cfg = dataclasses.replace(cfg, tick_s=tick_s)
    check_server_config(cfg, listen)


def check_port_free(listen: str) -> None:
    """Raise ServeRefused unless ``listen`` can be bound right now (SO_REUSEADDR, like grpc,
    so connections of a previous run in TIME_WAIT do not count)."""
    host, port = _host_port(listen)
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as e:
        raise ServeRefused(f"cannot listen on {listen}: {e.strerror}") from None
    for family, socktype, proto, _, sockaddr in infos:
        with socket.socket(family, socktype, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(sockaddr)
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    reason = "address already in use"
                else:
                    reason = (e.strerror or str(e)).lower()
                raise ServeRefused(f"cannot listen on {listen}: {reason}") from None


def check_metrics_address(metrics: str, listen: str) -> None:
    """Raise ServeRefused unless ``--metrics`` is a HOST:PORT other than ``--listen``'s port on
    the same host, and free right now."""
    host, port = _host_port(metrics)
    if (host, port) == _host_port(listen):
        raise ServeRefused(
            f"--metrics {metrics} is the --listen address: give the metrics their own port"
        )
    try:
        check_port_free(metrics)
    except ServeRefused as e:
        raise ServeRefused(f"--metrics: {e}") from None


# -- health: liveness ("") and readiness (READY_SERVICE, LEASE_SERVICE) ------------------------

LIVENESS_SERVICE = ""  # SERVING while the process runs
READY_SERVICE = "raftlease.v1.Ready"  # SERVING while this node is part of a working cluster
LEASE_SERVICE = "raftlease.v1.Lease"  # follows READY_SERVICE
READINESS_POLL_S = 1.0  # one wake-up a second: at 0.25 s it cost W5 (idle CPU) about 8 %


def readiness(node: Node) -> tuple[bool, str]:
    """Is this node ready (and why)? See :meth:`Node.readiness`."""
    return node.readiness()


async def _track_readiness(
    node: Node, servicer: health.aio.HealthServicer, poll_s: float = READINESS_POLL_S
) -> None:
    """Every ``poll_s``: set READY_SERVICE and LEASE_SERVICE from :func:`readiness`, only on
    change (both start NOT_SERVING)."""
    ready = False
    while True:
        try:
            now, why = readiness(node)
        except Exception:  # a bug here must not take the node down: report unready
            log.exception("readiness check failed")
            now, why = False, "readiness check failed"
        if now != ready:
            status = (
                health_pb2.HealthCheckResponse.SERVING
                if now
                else health_pb2.HealthCheckResponse.NOT_SERVING
            )
            for name in (READY_SERVICE, LEASE_SERVICE):
                await servicer.set(name, status)
            log.info("readiness: %s (%s)", "SERVING" if now else "NOT_SERVING", why)
            ready = now
        await asyncio.sleep(poll_s)


async def serve(
    cfg: ServerConfig,
    listen: str,
    data_dir: str | os.PathLike[str],
    *,
    started: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
    metrics: str | None = None,
    tls: NodeTLS | None = None,
    auth: AuthRules | None = None,
) -> None:
    """Run one node until ``stop`` is set.

    Start-up order: bind ``listen`` (ServeRefused if it cannot), then create the data dir and
    open its storage (DataDirMismatch if it belongs to another cluster id, node id or member
    set; StorageError if it is unusable), so a refusal never leaves anything written.
    Health: service "" is SERVING while this runs (liveness); READY_SERVICE and LEASE_SERVICE
    follow :func:`readiness`. ``metrics`` (HOST:PORT, optional): serve Prometheus metrics
    there (raftlease/metrics.py); it is bound right after ``listen``, and refused the same way.
    Fault injection: only when ``RAFTLEASE_FAILPOINTS`` arms a failpoint are the node's
    storage, transport and observer wrapped (raftlease/testing/faults.py); a malformed value
    is refused (ServeRefused) before anything else.
    ``tls`` (raftlease/auth.py): serve with mutual TLS, dial peers with it, and accept a peer's
    message only from the node its certificate names; ``auth``: enforce these rules on the
    Lease and Cluster services (docs/security.md).
    """
    try:
        points = Failpoints.from_env()
    except ValueError as e:
        raise ServeRefused(f"RAFTLEASE_FAILPOINTS: {e}") from None
    check_port_free(listen)
    if cfg.peer_listen not in ("auto", "off"):
        if _host_port(cfg.peer_listen) == _host_port(listen):
            raise ServeRefused(f"--peer-listen {cfg.peer_listen} is the --listen address")
        try:
            check_port_free(cfg.peer_listen)
        except ServeRefused as e:
            raise ServeRefused(f"--peer-listen: {e}") from None
    if metrics is not None:
        check_metrics_address(metrics, listen)
    interceptor = AuthInterceptor(auth) if auth is not None else None
    # The gate first: an oversized or undecodable request is refused before auth decodes it.
    interceptors: list[grpc.aio.ServerInterceptor] = [RequestGate(cfg.max_request_bytes)]
    if interceptor is not None:
        interceptors.append(interceptor)
    server = grpc.aio.server(options=SERVER_OPTIONS, interceptors=interceptors)
    try:
        if tls is not None:
            port = server.add_secure_port(listen, tls.server_credentials())
        else:
            port = server.add_insecure_port(listen)  # binds now, before start()
    except RuntimeError:
        port = 0
    if port == 0:
        # Lost a race for the port since the check above: say why, as the check would.
        await server.stop(None)
        check_port_free(listen)
        raise ServeRefused(f"cannot listen on {listen}: address not available")
    metrics_server: asyncio.Server | None = None
    metrics_slot: list[Any] = []
    if metrics is not None:
        from raftlease.metrics import start_metrics_server  # prometheus_client only if asked

        try:
            metrics_server, metrics_slot = await start_metrics_server(None, *_host_port(metrics))
        except OSError as e:
            await server.stop(None)
            in_use = e.errno == errno.EADDRINUSE
            reason = "address already in use" if in_use else (e.strerror or str(e)).lower()
            raise ServeRefused(f"--metrics: cannot listen on {metrics}: {reason}") from None
    storage: SqliteStorage | None = None
    faults: FaultInjector | None = None
    before_reply: Callable[[], None] | None = None
    try:
        # Start-up only: a blocking mkdir and SQLite open before the loop serves anything.
        Path(data_dir).mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240
        storage = SqliteStorage(
            Path(data_dir) / "raft.db",
            cluster_id=cfg.cluster_id,
            node_id=cfg.node_id,
            members=None if cfg.join else [str(p) for p in cfg.peers],
        )
        transport = GrpcTransport(
            cfg.node_id,
            cfg.cluster_id,
            {str(k): v for k, v in cfg.peers.items()},
            cfg.safety_settings(),
            credentials=tls.peer_credentials() if tls is not None else None,
            tcp_addresses={str(k): v for k, v in cfg.peer_links.items()},
            ssl_context=tls.client_ssl if tls is not None else None,
        )
        node_storage: Storage = storage
        node_transport: Transport = transport
        if points:
            # Test harnesses only (the jepsen-style runner): failpoints around the seams.
            from raftlease.testing.faults import FaultInjector

            faults = FaultInjector(points, cfg.node_id)
            node_storage = faults.storage(storage)
            node_transport = faults.transport(transport)
            before_reply = faults.hook("before-client-reply")
            log.warning("failpoints armed: %s", points)
        node = Node(cfg, node_storage, node_transport, clock_from_env())
        set_term_source(lambda: node.core.term)  # log records carry the term (if configured)
        if metrics is not None:
            from raftlease.metrics import NodeMetrics

            metrics_slot[0] = NodeMetrics(node)
        if faults is not None:
            node.observer = faults.observer(node.observer)  # after the metrics install theirs
    except BaseException:
        if storage is not None:
            storage.close()
        if metrics_server is not None:
            metrics_server.close()
        await server.stop(None)
        raise
    peer_servicer = PeerServicer(
        receive=node.receive,
        cluster_id=cfg.cluster_id,
        members=[str(p) for p in cfg.peers],
        node_id=cfg.node_id,
        settings=cfg.safety_settings(),
        stopping=lambda: node.stopping,
        verify_identity=tls is not None,
        learn_address=node.learn_address,
    )
    if interceptor is not None:
        interceptor.lease_name = lambda lease_id: getattr(
            node.table.by_lease_id(lease_id), "name", None
        )
    raft_pb2_grpc.add_RaftPeerServicer_to_server(peer_servicer, server)
    lease_servicer = LeaseServicer(node, before_reply, client_key=client_key_for(auth))
    lease_pb2_grpc.add_LeaseServicer_to_server(lease_servicer, server)
    cluster_pb2_grpc.add_ClusterServicer_to_server(ClusterServicer(node), server)
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in (READY_SERVICE, LEASE_SERVICE):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    peer_listener: PeerListener | None = None
    tcp_port = 0
    server_ssl = tls.server_ssl if tls is not None else None
    if cfg.peer_listen != "off" and (tls is None or server_ssl is not None):
        peer_listener = PeerListener(peer_servicer)
        auto = cfg.peer_listen == "auto"
        host, port = _host_port(listen if auto else cfg.peer_listen)
        try:
            tcp_port = await peer_listener.start(host, 0 if auto else port, server_ssl)
        except OSError as e:
            await server.stop(None)
            storage.close()
            if metrics_server is not None:
                metrics_server.close()
            reason = (e.strerror or str(e)).lower()
            raise ServeRefused(f"--peer-listen: cannot listen on {host}:{port}: {reason}") from None
    await server.start()
    await health_servicer.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
    log.info(
        "node %s of cluster %s listening on %s (data %s)",
        cfg.node_id,
        cfg.cluster_id,
        listen,
        data_dir,
    )
    if metrics is not None:
        log.info("metrics at http://%s/metrics", metrics)
    if peer_listener is not None:
        log.info(
            "peer link: %s on port %d, announced to peers (--peer-listen)",
            "TCP with mutual TLS" if server_ssl is not None else "plain TCP",
            tcp_port,
        )
    else:
        log.info("peer link: gRPC only (--peer-listen off)")
    log.info(
        "security: %s; %s",
        "mutual TLS (peers checked by certificate)" if tls is not None else "plaintext, no TLS",
        f"auth rules: {len(auth.grants)} grant(s)" if auth is not None else "no auth rules",
    )
    loop = asyncio.get_running_loop()
    run_task = loop.create_task(node.run())
    ready_task = loop.create_task(_track_readiness(node, health_servicer))
    if started is not None:
        started.set()
    stop = stop or asyncio.Event()
    stop_task = loop.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait({run_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        if run_task in done:
            run_task.result()  # re-raise StorageError etc.
    finally:
        # Peers keep their streams to us open; grpc.aio cancels them when the grace period
        # ends and logs each cancellation as an unhandled error. Expected at shutdown: drop
        # exactly those records (and nothing else).
        logging.getLogger("grpc._cython.cygrpc").addFilter(_shutdown_cancel_filter)
        ready_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ready_task
        await health_servicer.enter_graceful_shutdown()
        node.stop()
        stop_task.cancel()
        if peer_listener is not None:
            await peer_listener.close()
        await server.stop(grace=0.5)
        if metrics_server is not None:
            metrics_server.close()
        with contextlib.suppress(Exception):
            await run_task
        await transport.close()
        storage.close()
        log.info("node %s stopped", cfg.node_id)
        set_term_source(None)


EVENT_LOOPS = ("auto", "uvloop", "asyncio")

# The garbage collector's thresholds in a serving process (CPython's default: 700, 10, 10).
# With the default, anything alive across ~10 young collections (a few ms under load: every
# request in flight) reaches the oldest generation, so a full collection, which walks every
# tracked object (one or more per held lease), ran every 2-4 s while clients acquired and
# took 100-150 ms at 100,000 leases on a 2-vCPU VM: longer than the leader lease's slack,
# and each one lapsed it (docs/benchmarks.md, issue 15). With a young generation of 20,000
# objects a request's objects die young; full collections come only after 100 middle ones
# and once the long-lived heap has grown by a quarter (CPython's own rule).
GC_THRESHOLDS = (20_000, 20, 100)


def tune_collector(thresholds: tuple[int, ...] = GC_THRESHOLDS) -> None:
    """Set the collector's thresholds for a serving process (``GC_THRESHOLDS``)."""
    gc.set_threshold(*thresholds)


def freeze_startup_heap() -> None:
    """After start-up: move every object alive now (modules, the table restored from the
    data dir) out of the collector's reach, so a full collection does not walk them again.
    They are still freed by reference counting; only a cycle among them would be kept. No
    collection first: the node already takes part in the cluster, and a full collection of
    a restored 100,000-lease table would hold its loop for ~0.1 s."""
    gc.freeze()


def event_loop_factory(
    choice: str | None = None,
) -> tuple[Callable[[], asyncio.AbstractEventLoop] | None, str]:
    """The loop the server runs on: ``RAFTLEASE_EVENT_LOOP`` = auto (default: uvloop where it
    is installed), uvloop, or asyncio. Returns (factory or None for asyncio's own, a name).

    On this project's VM uvloop gave W2 1,141 -> 1,209 acquisitions/s and W5 2.90 -> 2.37 %
    of a core, W1 unchanged (3 runs each; docs/benchmarks.md). It changes no semantics the
    node relies on: ticks come from the clock, not from when a timer fires (uvloop's timers
    have 1 ms resolution; Node.run adds 1 ms so it never wakes early).
    """
    choice = (choice or os.environ.get("RAFTLEASE_EVENT_LOOP") or "auto").strip().lower()
    if choice not in EVENT_LOOPS:
        raise SystemExit(
            f"raftlease: error: RAFTLEASE_EVENT_LOOP={choice!r}: expected one of "
            f"{', '.join(EVENT_LOOPS)}"
        )
    if choice == "asyncio":
        return None, "asyncio"
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise SystemExit(
                "raftlease: error: RAFTLEASE_EVENT_LOOP=uvloop but uvloop is not installed "
                "(pip install uvloop)"
            ) from None
        return None, "asyncio (uvloop not installed)"
    return uvloop.new_event_loop, f"uvloop {importlib.metadata.version('uvloop')}"


def main_serve(
    node_id: str,
    listen: str,
    peers: dict[str, str],
    data_dir: str,
    cluster_id: str,
    client_addresses: dict[str, str] | None = None,
    metrics: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    tls_ca: str | None = None,
    auth_rules: str | None = None,
    log_format: str = "text",
    log_level: str | None = None,
    **overrides: float | int,
) -> None:
    """Run one node in the foreground until SIGTERM/SIGINT (the CLI's ``serve``).

    ``peers`` maps every node id (this one included) to the address this node uses to reach
    it; ``client_addresses`` (optional) maps ids to the addresses clients should use, when
    peer traffic goes through proxies. ``metrics`` (HOST:PORT, off by default) serves
    Prometheus metrics at ``http://HOST:PORT/metrics``. ``tls_cert``, ``tls_key``, ``tls_ca``
    (all three, or none) and ``auth_rules``: see :func:`load_security`. ``log_format`` (text
    or json) and ``log_level`` (default: ``RAFTLEASE_LOG_LEVEL``, else INFO): the process's log
    (raftlease/logs.py). ``overrides`` are ServerConfig fields.

    A refusal (any rule of :meth:`ServerConfig.problems` or :func:`listen_problems`: all of
    them in one message; a busy port, a data dir of another cluster id, node id or member set)
    prints ONE line ``raftlease serve: error: ...`` on stderr and exits 2, with nothing written
    to the data dir. A storage failure exits 1.
    """
    try:
        unknown = sorted(set(overrides) - _SERVER_FIELDS)
        if unknown:
            raise ServeRefused(f"unknown server setting(s): {', '.join(unknown)}")
        cfg = ServerConfig(
            node_id=NodeId(node_id),
            cluster_id=cluster_id,
            peers={NodeId(k): v for k, v in peers.items()},
            client_addresses={NodeId(k): v for k, v in (client_addresses or {}).items()},
            **overrides,  # type: ignore[arg-type]  # float | int values for the numeric fields
        )
        check_server_config(cfg, listen)  # every problem of the settings, at once
        if metrics is not None:
            _host_port(metrics)  # a malformed --metrics is refused before anything starts
        tls, auth = load_security(node_id, tls_cert, tls_key, tls_ca, auth_rules)
    except ServeRefused as e:
        _refuse(e)
    try:  # text (unchanged) or JSON lines (raftlease/logs.py); records carry node and term
        configure_logging(
            node_id, log_format, log_level or os.environ.get("RAFTLEASE_LOG_LEVEL") or "INFO"
        )
    except ValueError as e:
        _refuse(e)
    factory, loop_name = event_loop_factory()
    tune_collector()

    async def main() -> None:
        stop = asyncio.Event()
        started = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        async def announce() -> None:  # after start-up: a refusal stays ONE line on stderr
            await started.wait()
            freeze_startup_heap()
            log.info("event loop: %s", loop_name)

        announcer = loop.create_task(announce())
        try:
            await serve(
                cfg,
                listen,
                data_dir,
                started=started,
                stop=stop,
                metrics=metrics,
                tls=tls,
                auth=auth,
            )
        finally:
            announcer.cancel()
        # Everything is durable and closed. Leave now: asyncio.run's teardown would cancel
        # grpc's leftover per-RPC coroutines (peers' streams), and grpc prints each of those
        # cancellations as a traceback, which reads like a crash in the logs.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(main())
    except (ServeRefused, DataDirMismatch) as e:
        _refuse(e)
    except StorageError as e:
        log.critical("storage failure, stopping: %s", e)
        raise SystemExit(f"raftlease: error: {e}") from None


def load_security(
    node_id: str,
    tls_cert: str | None,
    tls_key: str | None,
    tls_ca: str | None,
    auth_rules: str | None,
) -> tuple[NodeTLS | None, AuthRules | None]:
    """Read ``serve``'s TLS files and auth rules (docs/security.md), or raise ServeRefused:
    only some of ``--tls-cert``/``--tls-key``/``--tls-ca``, an unusable file, a certificate
    that does not name this node, bad rules, or rules without TLS (tokens and identities
    would cross the network in clear text)."""
    given = {"--tls-cert": tls_cert, "--tls-key": tls_key, "--tls-ca": tls_ca}
    missing = [flag for flag, value in given.items() if not value]
    if 0 < len(missing) < len(given):
        raise ServeRefused(
            f"TLS needs --tls-cert, --tls-key and --tls-ca together; missing {', '.join(missing)}"
        )
    tls: NodeTLS | None = None
    auth: AuthRules | None = None
    try:
        if tls_cert and tls_key and tls_ca:
            tls = load_node_tls(tls_cert, tls_key, tls_ca, node_id)
        if auth_rules is not None:
            if tls is None:
                raise ServeRefused(
                    f"--auth-rules {auth_rules} needs TLS (--tls-cert, --tls-key, --tls-ca): "
                    "without it tokens and identities would cross the network in clear text"
                )
            auth = load_rules(auth_rules)
    except ConfigError as e:
        raise ServeRefused(str(e)) from None
    return tls, auth


_SERVER_FIELDS = frozenset(f.name for f in dataclasses.fields(ServerConfig))


def _refuse(err: Exception) -> NoReturn:
    print(f"raftlease serve: error: {' '.join(str(err).split())}", file=sys.stderr, flush=True)
    raise SystemExit(2)


__all__ = [
    "CHANNEL_OPTIONS",
    "LEASE_SERVICE",
    "LIVENESS_SERVICE",
    "READY_SERVICE",
    "TICK_MAX_S",
    "TICK_MIN_S",
    "HolderCounts",
    "LeaseServicer",
    "RequestGate",
    "ServeRefused",
    "check_metrics_address",
    "check_port_free",
    "check_serve_settings",
    "check_server_config",
    "client_key_for",
    "listen_problems",
    "load_security",
    "main_serve",
    "peer_host",
    "readiness",
    "serve",
]
