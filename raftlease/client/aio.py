"""The asyncio client: :class:`AsyncLeaseClient` and the :class:`AsyncLease` it hands out.

Every ``grpc.aio`` channel is created lazily, inside the running event loop, on the first
call that needs it (grpc.aio objects are bound to the loop that created them). Keepalives of
every held lease run in one task, the client's keepalive hub (``_hub_aio.py``; the decisions
are ``_hub.KeepaliveHub``'s and each lease's ``_protocol.KeepaliveMachine``'s): one KeepAlive
stream per node, renewals batched. The client keeps a reference to every task it starts.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import grpc.aio

from raftlease import clock as _clock
from raftlease.client._election_base import LeadershipLost
from raftlease.client._hub_aio import AsyncKeepalives
from raftlease.client._models import (
    LeaseInfo,
    MemberList,
    WatchDedup,
    WatchEvent,
    members_from_pb,
)
from raftlease.client._protocol import (
    Acquired,
    AcquireMachine,
    CallMachine,
    Failed,
    Held,
    KeepaliveMachine,
    Send,
    SendAcquire,
    SendRenew,
    Sleep,
)
from raftlease.client._retry import Attempts, Router, attempt_cap, renew_attempt_cap
from raftlease.client._rpc import (
    CHANNEL_OPTIONS,
    acquire_request,
    describe_rpc_error,
    feed_acquire_response,
    is_retriable,
    lease_held_error,
    map_rpc_error,
    rpc_failure,
)
from raftlease.client._status import merge_status
from raftlease.client._tls import TLSConfig, channel_security
from raftlease.client._values import (
    check_str_map,
    check_token_value,
    default_holder,
    format_duration,
    parse_endpoints,
    seconds_to_ms,
)
from raftlease.client.errors import ClusterUnavailable, LeaseLost, LeaseNotFound
from raftlease.client.sync import _check_client_settings
from raftlease.errors import RaftLeaseError
from raftlease.fsm.limits import validate_health
from raftlease.v1 import cluster_pb2, cluster_pb2_grpc, lease_pb2, lease_pb2_grpc

if TYPE_CHECKING:
    from types import TracebackType

    from raftlease.client._validity import LeaseTimer
    from raftlease.client.aelection import (
        AsyncElection,
        AsyncLeadership,
        AsyncLeadershipRunner,
    )

__all__ = ["AsyncLease", "AsyncLeaseClient"]

log = logging.getLogger("raftlease.client")

_T = TypeVar("_T")

OnLost = Callable[["AsyncLease"], object]


@dataclass(slots=True)
class _Conn:
    channel: grpc.aio.Channel
    lease: lease_pb2_grpc.LeaseAsyncStub
    cluster: cluster_pb2_grpc.ClusterAsyncStub


# Releases in flight, referenced until done (a cancelled caller no longer awaits them).
_RELEASES: set[asyncio.Task[None]] = set()


def _release_done(task: asyncio.Task[None]) -> None:
    _RELEASES.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: the caller may have been cancelled and gone


class AsyncLease:
    """A held lease (asyncio). ``async with`` it to release it on exit.

    The same attributes and the same safety rules as :class:`raftlease.client.Lease`, with
    ``lost`` an :class:`asyncio.Event` and the keepalives renewed by the client's keepalive
    task (one KeepAlive stream per node, renewals batched, as for ``LeaseClient``):

    ``valid_until = max(valid_until, t_send + ttl * (1 - max_drift) / (1 + max_drift))`` where
    ``t_send`` is read BEFORE each Acquire/Renew is sent. Keepalives every ``ttl / 3``; failures
    are retried quickly on the leader hint and other endpoints (a leader answering RETRY on the
    leader itself), and only a success extends validity. If no renewal succeeded by
    ``valid_until - lost_margin`` (``lost_margin = min(0.05 * ttl, 0.25 s)``), or the server
    says NOT_FOUND, ``is_valid()`` turns false, then ``lost`` is set and ``on_lost(lease)`` is
    called (by the keepalive task; what it returns, if awaitable, is awaited in a task of its
    own). ``is_valid()`` is also false whenever
    ``raftlease.clock.boot_monotonic() >= valid_until`` (CLOCK_BOOTTIME on Linux: it counts time
    spent suspended, unlike the event loop's clock, which only times the keepalive's sleeps).
    :meth:`release` sets ``lost`` too, without calling ``on_lost``.
    """

    def __init__(
        self,
        client: AsyncLeaseClient,
        *,
        name: str,
        lease_id: int,
        fencing_token: int,
        holder: str,
        timer: LeaseTimer,
        health: dict[str, str],
        on_lost: OnLost | None,
    ) -> None:
        self.name = name
        self.lease_id = lease_id
        self.fencing_token = fencing_token
        self.holder = holder
        self.lost = asyncio.Event()
        self.lost_reason = ""
        self._client = client
        self._timer = timer
        self._health = health
        self._on_lost = on_lost
        self._keepalive = KeepaliveMachine(
            f"renew lease {name!r}",
            lease_id,
            timer,
            client._router,
            round_size=len(client.endpoints),
        )
        self._released = False
        self._started = False

    @property
    def ttl(self) -> float:
        """The granted TTL in seconds (as last reported by the leader)."""
        return self._timer.ttl

    @property
    def valid_until(self) -> float:
        """A ``raftlease.clock.boot_monotonic()`` deadline before which no one else can hold
        this lease."""
        return self._timer.valid_until

    @property
    def lost_margin(self) -> float:
        """How long before ``valid_until`` a lease without a fresh renewal is declared lost."""
        return self._timer.lost_margin

    def is_valid(self) -> bool:
        """True while this client may act as the holder (see the class docstring)."""
        return not self.lost.is_set() and self._timer.is_valid(_clock.boot_monotonic())

    def time_left(self) -> float:
        """Seconds until ``valid_until`` (0 when lost, released or expired)."""
        if self.lost.is_set():
            return 0.0
        return self._timer.time_left(_clock.boot_monotonic())

    def set_health(self, health: Mapping[str, str]) -> None:
        """Replace the health payload sent with every following keepalive."""
        checked = check_str_map("health", health)
        validate_health(checked)
        self._health = checked

    async def release(self) -> None:
        """Give the lease up (idempotent); NOT_FOUND from the server counts as released."""
        if self._released:
            return
        self._released = True
        self._timer.mark_lost()
        self.lost.set()
        # In a task of its own, shielded: a release called while the caller's task is being
        # cancelled (leaving ``async with`` on cancellation) must still reach the server, or
        # the name stays held by nobody for a TTL.
        done = asyncio.get_running_loop().create_task(self._finish_release())
        _RELEASES.add(done)
        done.add_done_callback(_release_done)
        await asyncio.shield(done)

    async def _finish_release(self) -> None:
        if self._started:
            self._client._keepalives.remove(self)
        self._client._forget(self)
        await self._client._release(self.lease_id)

    def check(self, margin: float = 0.0) -> None:
        """Raise :class:`LeadershipLost` unless the lease is valid with more than ``margin``
        seconds left (see :meth:`raftlease.client.Lease.check`)."""
        if self.is_valid() and self.time_left() > margin:
            return
        why = self.lost_reason or ("released" if self._released else "expired")
        if self.is_valid():
            why = f"less than {format_duration(margin)} of validity left"
        raise LeadershipLost(
            f"lease {self.name!r} (token {self.fencing_token}) is no longer valid: {why}"
        )

    async def renew(self) -> None:
        """Renew now, besides the background keepalives (see
        :meth:`raftlease.client.Lease.renew`)."""
        if self.lost.is_set():
            raise LeaseLost(
                f"lease {self.name!r} is no longer held: {self.lost_reason or 'released'}"
            )
        request = lease_pb2.RenewRequest(lease_id=self.lease_id, health=self._health)
        t_send = _clock.boot_monotonic()  # BEFORE the request: validity counts from here
        try:
            resp = await self._client._call(
                f"renew {self.name!r}",
                lambda c, t: c.lease.Renew(request, timeout=t),
                cap=renew_attempt_cap(self._timer.ttl),
            )
        except LeaseNotFound as err:
            await self._declare_lost(f"the server no longer knows lease id {self.lease_id}: {err}")
            raise LeaseLost(f"lease {self.name!r} expired or was released: {err}") from None
        if not self._timer.on_success(t_send, resp.ttl_ms / 1000.0):
            raise LeaseLost(f"lease {self.name!r} was lost: {self.lost_reason or 'released'}")

    def stop_keepalive(self) -> None:
        """Stop renewing without releasing; the lost signal still fires on time."""
        self._keepalive.stop_renewing()
        if self._started:
            self._client._keepalives.nudge(self)

    async def __aenter__(self) -> AsyncLease:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.release()
        except RaftLeaseError as err:
            log.warning("raftlease: could not release lease %r: %s", self.name, err)

    def __repr__(self) -> str:
        return (
            f"AsyncLease(name={self.name!r}, lease_id={self.lease_id}, "
            f"fencing_token={self.fencing_token}, holder={self.holder!r}, "
            f"ttl={self.ttl}, valid={self.is_valid()}, time_left={self.time_left():.3f})"
        )

    # -- keepalive --------------------------------------------------------------------------

    def _start(self) -> None:
        self._client._keepalives.add(self)
        self._started = True

    def _signal_lost(self, reason: str) -> bool:
        """Mark the lease lost (``is_valid()`` turns false), then set ``lost``; False if it
        was lost or released already."""
        if not self._timer.mark_lost():
            return False
        self.lost_reason = reason
        log.warning("raftlease: lease %r lost: %s", self.name, reason)
        self.lost.set()
        return True

    def _run_on_lost(self) -> Awaitable[object] | None:
        """Call ``on_lost`` (not after a release); what it returned if that is awaitable."""
        on_lost = self._on_lost
        if on_lost is None or self._released:
            return None
        try:
            result = on_lost(self)
        except Exception:
            log.exception("raftlease: on_lost callback raised")
            return None
        return result if inspect.isawaitable(result) else None

    async def _declare_lost(self, reason: str) -> None:
        if not self._signal_lost(reason):
            return
        result = self._run_on_lost()
        if result is None:
            return
        try:
            await result
        except Exception:
            log.exception("raftlease: on_lost callback raised")


class _AcquireCall:
    """What :meth:`AsyncLeaseClient.acquire` returns: await it for an :class:`AsyncLease`, or
    ``async with`` it to hold the lease for the block and release it after."""

    def __init__(self, coro_fn: Callable[[], Awaitable[AsyncLease]]) -> None:
        self._coro_fn = coro_fn
        self._lease: AsyncLease | None = None

    def __await__(self) -> Generator[Any, None, AsyncLease]:
        return self._run().__await__()

    async def _run(self) -> AsyncLease:
        return await self._coro_fn()

    async def __aenter__(self) -> AsyncLease:
        self._lease = await self._coro_fn()
        return self._lease

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._lease is not None:
            await self._lease.__aexit__(exc_type, exc, tb)


class AsyncLeaseClient:
    """An asyncio client of a raftlease cluster; the same rules as
    :class:`raftlease.client.LeaseClient`.

    Create and use it inside a running event loop (``async with AsyncLeaseClient(...) as
    client``); channels are opened on first use. Closing it releases every lease it still
    holds and closes its channels. ``tls`` and ``token``: as for ``LeaseClient``.
    """

    def __init__(
        self,
        endpoints: Sequence[str] | str | None = None,
        *,
        timeout: float = 5.0,
        max_drift: float = 0.01,
        tls: TLSConfig | bool | None = None,
        token: str | None = None,
    ) -> None:
        _check_client_settings(timeout, max_drift)
        self.endpoints = parse_endpoints(endpoints)
        self.timeout = float(timeout)
        self.max_drift = float(max_drift)
        self._security = channel_security(tls, token)
        self._router = Router(self.endpoints)
        self._conns: dict[str, _Conn] = {}
        self._leases: set[AsyncLease] = set()
        self._keepalives = AsyncKeepalives(self)
        self._closed = False

    # -- plumbing ---------------------------------------------------------------------------

    def session_options(self) -> dict[str, Any]:
        """The keyword arguments that make another client with this one's settings."""
        sec = self._security
        return {
            "timeout": self.timeout,
            "max_drift": self.max_drift,
            "tls": sec.tls if sec.tls is not None else False,
            "token": sec.token,
        }

    def _conn(self, target: str) -> _Conn:
        if self._closed:
            raise ClusterUnavailable("the client is closed")
        conn = self._conns.get(target)
        if conn is None:
            asyncio.get_running_loop()  # grpc.aio channels belong to the running loop
            channel = self._security.aio_channel(target, CHANNEL_OPTIONS)
            conn = _Conn(
                channel,
                lease_pb2_grpc.LeaseStub(channel),
                cluster_pb2_grpc.ClusterStub(channel),
            )
            self._conns[target] = conn
        return conn

    async def _call(
        self,
        what: str,
        fn: Callable[[_Conn, float], Awaitable[_T]],
        *,
        total: float | None = None,
        cap: float | None = None,
    ) -> _T:
        """Run ``fn(conn, attempt_timeout)`` against the leader, retrying as documented
        (``_protocol.CallMachine``)."""
        now = _clock.boot_monotonic()
        total = self.timeout if total is None else total
        call = CallMachine(what, now, total, self._router, round_size=len(self.endpoints), cap=cap)
        action: Send | Sleep | Failed = call.poll(now)
        while True:
            if isinstance(action, Failed):
                raise action.error
            if isinstance(action, Sleep):
                await asyncio.sleep(max(0.0, action.until - _clock.boot_monotonic()))
                action = call.poll(_clock.boot_monotonic())
                continue
            try:
                result = await fn(self._conn(action.target), action.timeout)
            except grpc.RpcError as err:
                action = call.on_failure(
                    _clock.boot_monotonic(), rpc_failure(err, self._security.explain)
                )
                continue
            call.answered()
            return result

    def _forget(self, lease: AsyncLease) -> None:
        self._leases.discard(lease)

    async def _release(self, lease_id: int) -> bool:
        request = lease_pb2.ReleaseRequest(lease_id=lease_id)
        try:
            resp = await self._call(
                "release",
                lambda c, t: c.lease.Release(request, timeout=t),
                cap=attempt_cap(self.timeout),
            )
        except LeaseNotFound:
            return False
        return resp.released

    # -- leases -----------------------------------------------------------------------------

    def acquire(
        self,
        name: str,
        ttl: float = 10.0,
        wait: float = 0.0,
        *,
        holder: str | None = None,
        metadata: Mapping[str, str] | None = None,
        health: Mapping[str, str] | None = None,
        on_lost: OnLost | None = None,
    ) -> _AcquireCall:
        """Take the lease ``name``; ``await`` the result, or ``async with`` it.

        The same semantics as :meth:`raftlease.client.LeaseClient.acquire`.
        """

        async def run() -> AsyncLease:
            return await self._acquire(
                name,
                ttl,
                wait,
                holder=holder,
                metadata=metadata,
                health=health,
                on_lost=on_lost,
            )

        return _AcquireCall(run)

    async def _acquire(
        self,
        name: str,
        ttl: float,
        wait: float,
        *,
        holder: str | None,
        metadata: Mapping[str, str] | None,
        health: Mapping[str, str] | None,
        on_lost: OnLost | None,
    ) -> AsyncLease:
        self._check_open()
        ttl_ms = seconds_to_ms("ttl", ttl)
        wait_ms = seconds_to_ms("wait", wait)
        holder_id = default_holder() if holder is None else holder
        meta = check_str_map("metadata", metadata)
        health_map = check_str_map("health", health)
        if health_map:
            validate_health(health_map)
        now = _clock.boot_monotonic()
        machine: AcquireMachine[lease_pb2.LeaseInfo] = AcquireMachine(
            name,
            ttl_ms=ttl_ms,
            wait=wait_ms / 1000.0,
            timeout=self.timeout,
            now=now,
            router=self._router,
            max_drift=self.max_drift,
            new_request_id=lambda: uuid.uuid4().hex,
            round_size=len(self.endpoints),
        )
        action = machine.poll(now)
        while True:  # drive the acquire machine (``_protocol.AcquireMachine``)
            if isinstance(action, SendAcquire):
                request = acquire_request(action, name, holder_id, ttl_ms, meta)
                try:
                    conn = self._conn(action.target)
                    resp = await conn.lease.Acquire(request, timeout=action.timeout)
                except grpc.RpcError as err:
                    action = machine.on_failure(
                        _clock.boot_monotonic(), rpc_failure(err, self._security.explain)
                    )
                else:
                    action = feed_acquire_response(machine, _clock.boot_monotonic(), resp)
            elif isinstance(action, SendRenew):  # a grant that waited long: renew it first
                renew = lease_pb2.RenewRequest(lease_id=action.lease_id, health=health_map)
                try:
                    conn = self._conn(action.target)
                    renewed = await conn.lease.Renew(renew, timeout=action.timeout)
                except grpc.RpcError as err:
                    action = machine.on_failure(
                        _clock.boot_monotonic(), rpc_failure(err, self._security.explain)
                    )
                else:
                    action = machine.on_renewed(_clock.boot_monotonic(), renewed.ttl_ms / 1000.0)
            elif isinstance(action, Sleep):
                await asyncio.sleep(max(0.0, action.until - _clock.boot_monotonic()))
                action = machine.poll(_clock.boot_monotonic())
            elif isinstance(action, Held):
                raise lease_held_error(name, action.current)
            elif isinstance(action, Failed):
                raise action.error
            elif isinstance(action, Acquired):
                grant = action.grant
                lease = AsyncLease(
                    self,
                    name=grant.name or name,
                    lease_id=grant.lease_id,
                    fencing_token=grant.fencing_token,
                    holder=grant.holder or holder_id,
                    timer=action.timer,
                    health=health_map,
                    on_lost=on_lost,
                )
                self._leases.add(lease)
                lease._start()
                return lease
            else:
                raise AssertionError(f"unexpected acquire step {action!r}")

    async def holder(self, name: str) -> LeaseInfo | None:
        """Who holds ``name`` now (a linearizable read), or None if it is free."""
        request = lease_pb2.GetRequest(name=name)
        resp = await self._call(
            f"get {name!r}",
            lambda c, t: c.lease.Get(request, timeout=t),
            cap=attempt_cap(self.timeout),
        )
        return LeaseInfo.from_pb(resp.lease) if resp.held else None

    async def leases(self, prefix: str = "") -> list[LeaseInfo]:
        """Every held lease whose name starts with ``prefix``, sorted by name."""
        request = lease_pb2.ListRequest(prefix=prefix)
        resp = await self._call(
            "list leases",
            lambda c, t: c.lease.List(request, timeout=t),
            cap=attempt_cap(self.timeout),
        )
        return [LeaseInfo.from_pb(pb) for pb in resp.leases]

    async def check_token(self, name: str, token: int) -> bool:
        """Is ``token`` the fencing token of the current grant of ``name``?"""
        token = check_token_value(token)
        request = lease_pb2.CheckTokenRequest(name=name, fencing_token=token)
        resp = await self._call(
            f"check token of {name!r}",
            lambda c, t: c.lease.CheckToken(request, timeout=t),
            cap=attempt_cap(self.timeout),
        )
        return resp.current

    async def watch(self, name: str = "") -> AsyncIterator[WatchEvent]:
        """Async-iterate over changes of ``name`` (all names if empty); see LeaseClient.watch."""
        self._check_open()
        request = lease_pb2.WatchRequest(name=name)
        dedup = WatchDedup()
        attempts: Attempts | None = None
        while True:
            if attempts is not None and _clock.boot_monotonic() >= attempts.deadline:
                raise attempts.unavailable(self.timeout)
            if self._router.leader is None:
                await self._discover_leader()
            target = self._router.pick()
            call = self._conn(target).lease.Watch(request)
            delay = 0.0
            try:
                async for pb in call:
                    attempts = None
                    self._router.succeeded(target)
                    event = WatchEvent.from_pb(pb)
                    if dedup.admit(event):
                        yield event
            except grpc.RpcError as err:
                if self._closed:
                    return
                if not is_retriable(err):
                    raise map_rpc_error(err) from None
                if attempts is None:
                    attempts = Attempts(
                        f"watch {name!r}",
                        _clock.boot_monotonic() + self.timeout,
                        round_size=len(self.endpoints),
                    )
                attempts.note(target)
                _, delay = attempts.failed(
                    self._router, target, rpc_failure(err, self._security.explain)
                )
            finally:
                call.cancel()
            await asyncio.sleep(delay if delay > 0 else 0.01)

    async def _discover_leader(self) -> None:
        """Learn the leader's address from any node's Cluster.Status."""
        for endpoint in self.endpoints:
            try:
                st = await self._conn(endpoint).cluster.Status(
                    cluster_pb2.StatusRequest(), timeout=min(1.0, self.timeout)
                )
            except grpc.RpcError:
                continue
            if st.leader_address:
                self._router.succeeded(st.leader_address)
                return

    # -- leader election (raftlease/client/aelection.py, docs/election.md) -------------------

    def election(
        self,
        name: str,
        *,
        ttl: float = 10.0,
        holder: str | None = None,
        metadata: Mapping[str, str] | None = None,
        max_wait: float | None = None,
    ) -> AsyncElection:
        """A contender in the election ``name`` (asyncio); see
        :class:`raftlease.client.aelection.AsyncElection`."""
        from raftlease.client.aelection import AsyncElection

        self._check_open()
        return AsyncElection(
            self, name, ttl=ttl, holder=holder, metadata=metadata, max_wait=max_wait
        )

    def leadership(
        self,
        name: str,
        *,
        ttl: float = 10.0,
        wait: float | None = None,
        holder: str | None = None,
        metadata: Mapping[str, str] | None = None,
        margin: float = 0.0,
        max_wait: float | None = None,
    ) -> AsyncLeadership:
        """``async with client.leadership(name, ttl=...) as lease:`` runs the block while
        leading; the block's task is cancelled when the lease is lost and the block raises
        :class:`LeadershipLost`. See :class:`raftlease.client.aelection.AsyncLeadership`."""
        from raftlease.client.aelection import AsyncLeadership

        return AsyncLeadership(
            self,
            name,
            ttl=ttl,
            wait=wait,
            holder=holder,
            metadata=metadata,
            margin=margin,
            max_wait=max_wait,
        )

    def run_for_leadership(
        self,
        name: str,
        on_started_leading: Callable[[AsyncLease], object],
        on_stopped_leading: Callable[[], object] | None = None,
        on_new_leader: Callable[[str], object] | None = None,
        *,
        requeue: bool = True,
        ttl: float = 10.0,
        holder: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> AsyncLeadershipRunner:
        """Campaign, run ``on_started_leading(lease)`` as a task while leading (cancelled when
        the lease is lost), campaign again when the term ends; the running
        :class:`AsyncLeadershipRunner` (``await stop()`` it, or ``async with`` it). Call it
        inside a running event loop."""
        from raftlease.client.aelection import AsyncLeadershipRunner

        election = self.election(name, ttl=ttl, holder=holder, metadata=metadata)
        return AsyncLeadershipRunner(
            election, on_started_leading, on_stopped_leading, on_new_leader, requeue=requeue
        ).start()

    def singleton(
        self,
        name: str,
        fn: Callable[..., Awaitable[object]],
        *args: object,
        ttl: float = 10.0,
        holder: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> AsyncLeadershipRunner:
        """Run the coroutine ``fn(*args)`` as a task only while leading ``name`` (cancelled
        when the lease is lost), again after every new win; ``fn`` reaches its lease through
        ``current_async_lease()``."""
        return self.run_for_leadership(
            name, lambda _lease: fn(*args), ttl=ttl, holder=holder, metadata=metadata
        )

    # -- cluster ----------------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        """Ask EVERY endpoint for its Cluster.Status and merge the answers (see
        :meth:`raftlease.client.LeaseClient.status`)."""
        self._check_open()
        per_node = min(self.timeout, 2.0)

        async def one(ep: str) -> cluster_pb2.StatusResponse | str:
            try:
                return await self._conn(ep).cluster.Status(
                    cluster_pb2.StatusRequest(), timeout=per_node
                )
            except grpc.RpcError as err:
                return describe_rpc_error(err)

        results = await asyncio.gather(*(one(ep) for ep in self.endpoints))
        return merge_status(self.endpoints, dict(zip(self.endpoints, results, strict=True)))

    async def transfer_leadership(self, to: str | None = None) -> str:
        """Hand leadership to node ``to`` (or the most up-to-date follower); the new leader."""
        request = cluster_pb2.TransferLeadershipRequest(target_id=to or "")
        resp = await self._call(
            "transfer leadership",
            lambda c, t: c.cluster.TransferLeadership(request, timeout=t),
        )
        return resp.leader_id

    # -- membership (docs/membership.md) ------------------------------------------------------

    async def members(self) -> MemberList:
        """The configuration in force on the leader: voters, learners, addresses."""
        request = cluster_pb2.MemberListRequest()
        resp = await self._call(
            "list members", lambda c, t: c.cluster.MemberList(request, timeout=t)
        )
        return members_from_pb(resp)

    async def add_member(
        self,
        node_id: str,
        peer_address: str,
        *,
        learner: bool = False,
        timeout: float = 60.0,  # noqa: ASYNC109 - the RPC's total budget, as in LeaseClient
    ) -> MemberList:
        """Add ``node_id`` (listening for peers at ``peer_address``) as a learner; unless
        ``learner``, wait for it to catch up and promote it to voter. Raises RaftLeaseError
        with the reason if refused (an id in use, an address in use, a change in flight)."""
        catch_up_ms = int(max(1.0, timeout - 5.0) * 1000)
        request = cluster_pb2.MemberAddRequest(
            id=node_id, peer_address=peer_address, learner=learner, catch_up_timeout_ms=catch_up_ms
        )
        resp = await self._call(
            "add member",
            lambda c, t: c.cluster.MemberAdd(request, timeout=t),
            total=timeout,
            cap=timeout,
        )
        return members_from_pb(resp)

    async def promote_member(self, node_id: str, *, timeout: float = 30.0) -> MemberList:  # noqa: ASYNC109
        """Make the caught-up learner ``node_id`` a voter."""
        request = cluster_pb2.MemberPromoteRequest(id=node_id)
        resp = await self._call(
            "promote member",
            lambda c, t: c.cluster.MemberPromote(request, timeout=t),
            total=timeout,
        )
        return members_from_pb(resp)

    async def remove_member(self, node_id: str, *, timeout: float = 30.0) -> MemberList:  # noqa: ASYNC109
        """Remove the member ``node_id`` (the leader hands over first if it is the one)."""
        request = cluster_pb2.MemberRemoveRequest(id=node_id)
        resp = await self._call(
            "remove member",
            lambda c, t: c.cluster.MemberRemove(request, timeout=t),
            total=timeout,
        )
        return members_from_pb(resp)

    async def snapshot(self) -> cluster_pb2.SnapshotResponse:
        """A consistent snapshot of the lease table from the leader (``raftlease snapshot
        save``): its index, term, cluster id, members and the serialized table."""
        request = cluster_pb2.SnapshotRequest()
        resp: cluster_pb2.SnapshotResponse = await self._call(
            "snapshot", lambda c, t: c.cluster.Snapshot(request, timeout=t)
        )
        return resp

    # -- lifecycle --------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ClusterUnavailable("the client is closed")

    async def close(self) -> None:
        """Release every lease still held (best effort) and close the channels."""
        for lease in list(self._leases):
            try:
                await lease.release()
            except RaftLeaseError as err:
                log.warning("raftlease: could not release lease %r: %s", lease.name, err)
        await self._keepalives.aclose()
        self._closed = True
        conns = list(self._conns.values())
        self._conns.clear()
        for conn in conns:
            await conn.channel.close()

    async def __aenter__(self) -> AsyncLeaseClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return (
            f"AsyncLeaseClient(endpoints={self.endpoints!r}, "
            f"timeout={format_duration(self.timeout)}, max_drift={self.max_drift})"
        )
