"""The blocking client: :class:`LeaseClient` and the :class:`Lease` it hands out.

Keepalives run on one daemon thread per held lease. Every gRPC channel is a plain
``grpc.insecure_channel``; grpc's sync channels are thread-safe, so the caller's thread and the
keepalive threads share them.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import grpc

from raftlease import clock as _clock
from raftlease.client._common import (
    CHANNEL_OPTIONS,
    Attempts,
    KeepaliveState,
    LeaseInfo,
    LeaseTimer,
    Router,
    WatchDedup,
    WatchEvent,
    attempt_cap,
    check_str_map,
    check_token_value,
    default_holder,
    describe_rpc_error,
    format_duration,
    is_retriable,
    lease_held_error,
    map_rpc_error,
    merge_status,
    parse_endpoints,
    renew_attempt_cap,
    safe_callback,
    seconds_to_ms,
)
from raftlease.client._election_base import LeadershipLost
from raftlease.client.errors import (
    ClusterUnavailable,
    LeaseLost,
    LeaseNotFound,
)
from raftlease.errors import ConfigError, RaftLeaseError
from raftlease.fsm.limits import validate_health
from raftlease.v1 import cluster_pb2, cluster_pb2_grpc, lease_pb2, lease_pb2_grpc

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence
    from types import TracebackType

    from raftlease.client.election import Election, Leadership, LeadershipRunner

__all__ = ["Lease", "LeaseClient"]

log = logging.getLogger("raftlease.client")

_T = TypeVar("_T")


@dataclass(slots=True)
class _Conn:
    channel: grpc.Channel
    lease: lease_pb2_grpc.LeaseStub
    cluster: cluster_pb2_grpc.ClusterStub


def _check_client_settings(timeout: object, max_drift: object) -> None:
    if not (isinstance(timeout, int | float) and timeout > 0):
        raise ConfigError(f"timeout must be a number of seconds > 0, got {timeout!r}")
    if not (isinstance(max_drift, int | float) and 0.0 <= max_drift < 1.0):
        raise ConfigError(f"max_drift must be in [0, 1) (0.01 = 1 %), got {max_drift!r}")


class Lease:
    """A held lease. Use it as a context manager to release it on exit.

    Attributes: ``name``, ``lease_id``, ``fencing_token`` (pass it to every protected
    resource), ``holder``, ``ttl`` (seconds, as granted), ``valid_until`` (a
    ``raftlease.clock.boot_monotonic()`` deadline: CLOCK_BOOTTIME on Linux, which keeps
    counting while the machine is suspended) and ``lost`` (a :class:`threading.Event`).

    Safety. ``valid_until`` is computed from the moment the client *sent* the Acquire or the
    latest successful Renew, shortened by the clock-drift bound:
    ``valid_until = max(valid_until, t_send + ttl * (1 - max_drift) / (1 + max_drift))``.
    No other grant of this name can exist before ``valid_until`` (docs/guarantees.md, guarantee 1).

    Keepalives run on a daemon thread every ``ttl / 3``; a failed renewal is retried quickly
    against the leader hint and the other endpoints (a leader answering RETRY, its own leader
    lease lapsed for a moment, is retried itself; see ``KeepaliveState``), and validity is only
    ever extended by a success. If no renewal has succeeded by ``valid_until - lost_margin``
    (``lost_margin = min(0.05 * ttl, 0.25 s)``), or the server answers NOT_FOUND, the lease is
    *lost*: first ``is_valid()`` turns false, then ``lost`` is set and ``on_lost(lease)`` is
    called (on the keepalive thread). So the signal always fires before ``is_valid()`` would
    turn false on its own. Losing is final: a late renewal cannot revive the lease.

    ``lost`` is also set by :meth:`release` (``on_lost`` is not called then), so a worker
    waiting on ``lease.lost`` stops whenever the lease ends.
    """

    def __init__(
        self,
        client: LeaseClient,
        *,
        name: str,
        lease_id: int,
        fencing_token: int,
        holder: str,
        timer: LeaseTimer,
        health: dict[str, str],
        on_lost: Callable[[Lease], object] | None,
    ) -> None:
        self.name = name
        self.lease_id = lease_id
        self.fencing_token = fencing_token
        self.holder = holder
        self.lost = threading.Event()
        self.lost_reason = ""
        self._client = client
        self._timer = timer
        self._health = health
        self._on_lost = on_lost
        self._stop = threading.Event()
        self._renewing = True
        self._released = False
        self._thread = threading.Thread(
            target=self._keepalive_loop, name=f"raftlease-keepalive-{name}", daemon=True
        )

    # -- the public surface ---------------------------------------------------------------

    @property
    def ttl(self) -> float:
        """The granted TTL in seconds (as last reported by the leader)."""
        return self._timer.ttl

    @property
    def valid_until(self) -> float:
        """A ``raftlease.clock.boot_monotonic()`` deadline before which no one else can hold
        this lease (that clock counts time spent suspended; ``time.monotonic`` does not)."""
        return self._timer.valid_until

    @property
    def lost_margin(self) -> float:
        """How long before ``valid_until`` a lease without a fresh renewal is declared lost."""
        return self._timer.lost_margin

    def is_valid(self) -> bool:
        """True while this client may act as the holder.

        False once ``lost`` is set (lost or released), and whenever
        ``raftlease.clock.boot_monotonic() >= valid_until``: from then on the lease may have
        passed to someone else. After a suspend that outlasted the lease this is false at
        once, even before the keepalive thread wakes to set ``lost``.
        """
        return not self.lost.is_set() and self._timer.is_valid(_clock.boot_monotonic())

    def time_left(self) -> float:
        """Seconds until ``valid_until`` (0 when lost, released or expired)."""
        if self.lost.is_set():
            return 0.0
        return self._timer.time_left(_clock.boot_monotonic())

    def set_health(self, health: Mapping[str, str]) -> None:
        """Replace the health payload sent with every following keepalive.

        Raises InvalidArgument if it breaks the health bounds (16 entries, 1024 bytes).
        """
        checked = check_str_map("health", health)
        validate_health(checked)
        self._health = checked

    def release(self) -> None:
        """Give the lease up (idempotent). ``is_valid()`` is false from the call on.

        A lease the server no longer knows (already released or expired) counts as released.
        Raises ClusterUnavailable if no leader confirmed the release within the client's
        timeout; the lease then simply expires after its TTL.
        """
        if self._released:
            return
        self._released = True
        self._timer.mark_lost()
        self.lost.set()
        self._stop.set()
        self._client._forget(self)
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=0.05)
        self._client._release(self.lease_id)

    def check(self, margin: float = 0.0) -> None:
        """Raise :class:`LeadershipLost` unless the lease is valid with more than ``margin``
        seconds left. Call it between the steps of work that needs the lease."""
        if self.is_valid() and self.time_left() > margin:
            return
        why = self.lost_reason or ("released" if self._released else "expired")
        if not why or self.is_valid():
            why = f"less than {format_duration(margin)} of validity left"
        raise LeadershipLost(
            f"lease {self.name!r} (token {self.fencing_token}) is no longer valid: {why}"
        )

    def renew(self) -> None:
        """Renew now, besides the background keepalives; extends validity like them.

        Raises :class:`LeaseLost` if the lease is lost or released, or the server no longer
        knows it (the lease is then declared lost), :class:`ClusterUnavailable` if no leader
        answered within the client's timeout (validity is unchanged; keepalives go on).
        """
        if self.lost.is_set():
            raise LeaseLost(
                f"lease {self.name!r} is no longer held: {self.lost_reason or 'released'}"
            )
        request = lease_pb2.RenewRequest(lease_id=self.lease_id, health=self._health)
        t_send = _clock.boot_monotonic()  # BEFORE the request: validity counts from here
        try:
            resp = self._client._call(
                f"renew {self.name!r}",
                lambda c, t: c.lease.Renew(request, timeout=t),
                cap=renew_attempt_cap(self._timer.ttl),
            )
        except LeaseNotFound as err:
            self._declare_lost(f"the server no longer knows lease id {self.lease_id}: {err}")
            raise LeaseLost(f"lease {self.name!r} expired or was released: {err}") from None
        if not self._timer.on_success(t_send, resp.ttl_ms / 1000.0):
            raise LeaseLost(f"lease {self.name!r} was lost: {self.lost_reason or 'released'}")

    def stop_keepalive(self) -> None:
        """Stop renewing without releasing: the lease runs out on its own.

        The lost signal still fires at ``valid_until - lost_margin``. Useful in tests and to
        simulate a holder that hangs.
        """
        self._renewing = False

    def __enter__(self) -> Lease:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.release()
        except RaftLeaseError as err:
            log.warning("raftlease: could not release lease %r: %s", self.name, err)

    def __repr__(self) -> str:
        return (
            f"Lease(name={self.name!r}, lease_id={self.lease_id}, "
            f"fencing_token={self.fencing_token}, holder={self.holder!r}, "
            f"ttl={self.ttl}, valid={self.is_valid()}, time_left={self.time_left():.3f})"
        )

    # -- keepalive --------------------------------------------------------------------------

    def _start(self) -> None:
        self._thread.start()

    def _declare_lost(self, reason: str) -> None:
        if not self._timer.mark_lost():
            return
        self.lost_reason = reason
        log.warning("raftlease: lease %r lost: %s", self.name, reason)
        self.lost.set()
        on_lost = self._on_lost
        if on_lost is not None and not self._released:
            safe_callback(lambda: on_lost(self))

    def _keepalive_loop(self) -> None:
        client = self._client
        state = KeepaliveState(
            f"renew lease {self.name!r}",
            self.lease_id,
            self._timer,
            client._router,
            round_size=len(client.endpoints),
        )
        while not self._stop.is_set():
            now = _clock.boot_monotonic()
            lost_at = self._timer.lost_at()
            if now >= lost_at:
                self._declare_lost(state.lost_reason())
                return
            if not self._renewing:
                self._stop.wait(lost_at - now)
                continue
            if not state.failing:
                wake = min(self._timer.renew_due(), lost_at)
                if wake > now:
                    self._stop.wait(wake - now)
                    continue
            t_send = _clock.boot_monotonic()  # BEFORE the request: validity counts from here
            budget = min(renew_attempt_cap(self._timer.ttl), lost_at - t_send)
            if budget <= 0:
                continue
            try:
                resp = client._conn(state.target).lease.Renew(
                    state.request(self._health), timeout=budget
                )
            except grpc.RpcError as err:
                if self._stop.is_set():
                    return
                step = state.on_error(err, lost_at)
            else:
                step = state.on_response(resp, t_send, lost_at)
            if step.kind == "lost":
                self._declare_lost(step.reason)
                return
            if step.kind == "done":
                return
            if step.kind == "retry":
                self._stop.wait(max(0.0, min(step.delay, lost_at - _clock.boot_monotonic())))


class LeaseClient:
    """A blocking client of a raftlease cluster.

    ``endpoints``: ``HOST:PORT`` strings (a list, or one comma-separated string); default the
    environment variable ``RAFTLEASE_ENDPOINTS``, else 127.0.0.1:7001-7003. Any endpoint
    works: on UNAVAILABLE the client follows the ``raftlease-leader`` hint, else rotates
    through the endpoints, with jittered exponential backoff (10 ms doubling to 500 ms), until
    ``timeout`` seconds have passed; then it raises :class:`ClusterUnavailable`.

    ``max_drift`` is the bound on clock rate error assumed by the validity arithmetic (0.01 =
    1 %, the cluster's default); see :class:`Lease`.

    Used as a context manager it releases every lease it still holds and closes its channels.
    """

    def __init__(
        self,
        endpoints: Sequence[str] | str | None = None,
        *,
        timeout: float = 5.0,
        max_drift: float = 0.01,
    ) -> None:
        _check_client_settings(timeout, max_drift)
        self.endpoints = parse_endpoints(endpoints)
        self.timeout = float(timeout)
        self.max_drift = float(max_drift)
        self._router = Router(self.endpoints)
        self._conns: dict[str, _Conn] = {}
        self._leases: set[Lease] = set()
        self._elections: weakref.WeakSet[Election] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._closed = False

    # -- plumbing ---------------------------------------------------------------------------

    def _conn(self, target: str) -> _Conn:
        with self._lock:
            if self._closed:
                raise ClusterUnavailable("the client is closed")
            conn = self._conns.get(target)
            if conn is None:
                channel = grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
                conn = _Conn(
                    channel,
                    lease_pb2_grpc.LeaseStub(channel),
                    cluster_pb2_grpc.ClusterStub(channel),
                )
                self._conns[target] = conn
            return conn

    def _call(
        self,
        what: str,
        fn: Callable[[_Conn, float], _T],
        *,
        total: float | None = None,
        cap: float | None = None,
    ) -> _T:
        """Run ``fn(conn, attempt_timeout)`` against the leader, retrying as documented."""
        total = self.timeout if total is None else total
        deadline = _clock.boot_monotonic() + total
        attempts = Attempts(what, deadline, round_size=len(self.endpoints))
        target = self._router.pick()
        while True:
            remaining = deadline - _clock.boot_monotonic()
            if remaining <= 0:
                raise attempts.unavailable(total)
            attempts.note(target)
            try:
                result = fn(self._conn(target), remaining if cap is None else min(cap, remaining))
            except grpc.RpcError as err:
                if not is_retriable(err):
                    raise map_rpc_error(err) from None
                target, delay = attempts.failed(self._router, target, err)
                delay = min(delay, deadline - _clock.boot_monotonic())
                if delay > 0:
                    time.sleep(delay)
                continue
            self._router.succeeded(target)
            return result

    def _forget(self, lease: Lease) -> None:
        with self._lock:
            self._leases.discard(lease)

    def _release(self, lease_id: int) -> bool:
        request = lease_pb2.ReleaseRequest(lease_id=lease_id)
        try:
            resp = self._call(
                "release",
                lambda c, t: c.lease.Release(request, timeout=t),
                cap=attempt_cap(self.timeout),
            )
        except LeaseNotFound:
            return False  # already released or expired: release is idempotent
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
        on_lost: Callable[[Lease], object] | None = None,
    ) -> Lease:
        """Take the lease ``name`` for ``ttl`` seconds and keep it alive in the background.

        If the lease is held and ``wait > 0``, wait up to ``wait`` seconds in the server's FIFO
        queue for it. Raises :class:`LeaseHeld` (with ``holder`` and ``fencing_token`` of the
        current grant) if it was not granted, :class:`InvalidArgument` naming the bound broken,
        :class:`ClusterUnavailable` if no leader answered within ``wait + timeout``.

        One ``request_id`` is generated per call and reused on every retry, so a retry after
        an ambiguous failure returns the same grant. Validity counts from the moment the FIRST
        attempt was sent (a retry may return a grant made for an earlier attempt); if the wait
        in the queue ate much of the TTL, the lease is renewed once before it is returned (and
        if the grant already expired, e.g. because the answer was stuck on a node that hung,
        the call queues again while ``wait`` lasts, else raises :class:`LeaseLost`).
        ``on_lost(lease)`` is called on the keepalive thread when the lease is lost.
        """
        self._check_open()
        ttl_ms = seconds_to_ms("ttl", ttl)
        wait_ms = seconds_to_ms("wait", wait)
        holder = default_holder() if holder is None else holder
        meta = check_str_map("metadata", metadata)
        health_map = check_str_map("health", health)
        if health_map:
            validate_health(health_map)
        wait_end = _clock.boot_monotonic() + wait_ms / 1000.0
        while True:
            lease = self._acquire_once(name, ttl_ms, wait_end, holder, meta, health_map, on_lost)
            if lease is not None:
                return lease
            # Granted while our call was stuck on a node that hung, and expired before we
            # learned of it: wait in the queue again with what is left of ``wait``.

    def _acquire_once(
        self,
        name: str,
        ttl_ms: int,
        wait_end: float,
        holder: str,
        meta: dict[str, str],
        health_map: dict[str, str],
        on_lost: Callable[[Lease], object] | None,
    ) -> Lease | None:
        """One acquire with one request_id; None if the grant expired before it was ours."""
        request_id = uuid.uuid4().hex
        t_first_send = _clock.boot_monotonic()  # BEFORE the first attempt: see acquire()
        wait_s = max(0.0, wait_end - t_first_send)
        cap = attempt_cap(self.timeout)

        def attempt(conn: _Conn, remaining: float) -> lease_pb2.AcquireResponse:
            wait_left = max(0.0, t_first_send + wait_s - _clock.boot_monotonic())
            request = lease_pb2.AcquireRequest(
                name=name,
                holder=holder,
                ttl_ms=ttl_ms,
                wait_ms=int(wait_left * 1000),
                metadata=meta,
                request_id=request_id,
            )
            return conn.lease.Acquire(request, timeout=min(remaining, wait_left + cap))

        resp = self._call(f"acquire {name!r}", attempt, total=wait_s + self.timeout)
        if not resp.acquired:
            raise lease_held_error(name, resp.current if resp.HasField("current") else None)
        grant = resp.lease
        timer = LeaseTimer(
            grant.ttl_ms / 1000.0 if grant.ttl_ms else ttl_ms / 1000.0, self.max_drift
        )
        timer.on_success(t_first_send)
        lease = Lease(
            self,
            name=grant.name or name,
            lease_id=grant.lease_id,
            fencing_token=grant.fencing_token,
            holder=grant.holder or holder,
            timer=timer,
            health=health_map,
            on_lost=on_lost,
        )
        if timer.time_left(_clock.boot_monotonic()) < timer.ttl / 2.0:
            try:
                self._renew_now(lease, timer)
            except LeaseLost:
                if _clock.boot_monotonic() < wait_end:
                    return None
                raise
        with self._lock:
            self._leases.add(lease)
        lease._start()
        return lease

    def _renew_now(self, lease: Lease, timer: LeaseTimer) -> None:
        """Renew a grant that waited long in the queue, before handing it out."""
        request = lease_pb2.RenewRequest(lease_id=lease.lease_id, health=lease._health)
        t_send = _clock.boot_monotonic()
        try:
            resp = self._call(
                f"renew {lease.name!r}",
                lambda c, t: c.lease.Renew(request, timeout=t),
                cap=renew_attempt_cap(timer.ttl),
            )
        except LeaseNotFound:
            raise LeaseLost(
                f"lease {lease.name!r} was granted after waiting in the queue but expired "
                "before it could be renewed"
            ) from None
        timer.on_success(t_send, resp.ttl_ms / 1000.0)

    def holder(self, name: str) -> LeaseInfo | None:
        """Who holds ``name`` now (a linearizable read), or None if it is free."""
        request = lease_pb2.GetRequest(name=name)
        resp = self._call(
            f"get {name!r}",
            lambda c, t: c.lease.Get(request, timeout=t),
            cap=attempt_cap(self.timeout),
        )
        return LeaseInfo.from_pb(resp.lease) if resp.held else None

    def leases(self, prefix: str = "") -> list[LeaseInfo]:
        """Every held lease whose name starts with ``prefix``, sorted by name."""
        request = lease_pb2.ListRequest(prefix=prefix)
        resp = self._call(
            "list leases",
            lambda c, t: c.lease.List(request, timeout=t),
            cap=attempt_cap(self.timeout),
        )
        return [LeaseInfo.from_pb(pb) for pb in resp.leases]

    def check_token(self, name: str, token: int) -> bool:
        """Is ``token`` the fencing token of the current grant of ``name``?"""
        token = check_token_value(token)
        request = lease_pb2.CheckTokenRequest(name=name, fencing_token=token)
        resp = self._call(
            f"check token of {name!r}",
            lambda c, t: c.lease.CheckToken(request, timeout=t),
            cap=attempt_cap(self.timeout),
        )
        return resp.current

    def watch(self, name: str = "") -> Iterator[WatchEvent]:
        """Iterate over changes of ``name`` (all names if empty), forever.

        First the current state (``kind="current"``), then every acquire, release and
        expiry. A broken stream is re-opened on the leader (its current state is sent again;
        events already delivered are skipped). Raises ClusterUnavailable if no node served
        the watch for ``timeout`` seconds. Close the iterator to stop watching.
        """
        self._check_open()
        return self._watch(name)

    def _watch(self, name: str) -> Iterator[WatchEvent]:
        request = lease_pb2.WatchRequest(name=name)
        dedup = WatchDedup()
        attempts: Attempts | None = None
        while True:
            if attempts is not None and _clock.boot_monotonic() >= attempts.deadline:
                raise attempts.unavailable(self.timeout)
            if self._router.leader is None:
                self._discover_leader()
            target = self._router.pick()
            call = self._conn(target).lease.Watch(request)
            delay = 0.0
            try:
                for pb in call:
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
                _, delay = attempts.failed(self._router, target, err)
            finally:
                call.cancel()
            time.sleep(delay if delay > 0 else 0.01)

    def _discover_leader(self) -> None:
        """Learn the leader's address from any node's Cluster.Status (watch prefers the
        leader: a follower's view of the lease table may lag)."""
        for endpoint in self.endpoints:
            try:
                st = self._conn(endpoint).cluster.Status(
                    cluster_pb2.StatusRequest(), timeout=min(1.0, self.timeout)
                )
            except grpc.RpcError:
                continue
            if st.leader_address:
                self._router.succeeded(st.leader_address)
                return

    # -- leader election (raftlease/client/election.py, docs/election.md) --------------------

    def election(
        self,
        name: str,
        *,
        ttl: float = 10.0,
        holder: str | None = None,
        metadata: Mapping[str, str] | None = None,
        max_wait: float | None = None,
    ) -> Election:
        """A contender in the election ``name``: ``campaign()``, ``resign()``, ``leader()``,
        ``observe()``. See :class:`raftlease.client.election.Election`."""
        from raftlease.client.election import Election

        self._check_open()
        election = Election(
            self, name, ttl=ttl, holder=holder, metadata=metadata, max_wait=max_wait
        )
        with self._lock:
            self._elections.add(election)
        return election

    def leadership(
        self,
        name: str,
        *,
        ttl: float = 10.0,
        wait: float | None = None,
        holder: str | None = None,
        metadata: Mapping[str, str] | None = None,
        interrupt: Literal["signal"] | None = None,
        margin: float = 0.0,
        signum: int | None = None,
        max_wait: float | None = None,
    ) -> Leadership:
        """``with client.leadership(name, ttl=...) as lease:`` campaigns (``wait``: None =
        forever), runs the block while leading and resigns on exit; :class:`LeadershipLost`
        if the lease was lost meanwhile. ``interrupt="signal"`` raises it in the main thread
        at once. See :class:`raftlease.client.election.Leadership`."""
        from raftlease.client.election import Leadership

        return Leadership(
            self,
            name,
            ttl=ttl,
            wait=wait,
            holder=holder,
            metadata=metadata,
            interrupt=interrupt,
            margin=margin,
            signum=signum,
            max_wait=max_wait,
        )

    def run_for_leadership(
        self,
        name: str,
        on_started_leading: Callable[[Lease], object],
        on_stopped_leading: Callable[[], object] | None = None,
        on_new_leader: Callable[[str], object] | None = None,
        *,
        requeue: bool = True,
        ttl: float = 10.0,
        holder: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> LeadershipRunner:
        """Campaign, call ``on_started_leading(lease)`` in a worker thread while leading, and
        campaign again when the term ends; the running :class:`LeadershipRunner` (``stop()``
        it, or use it as a context manager)."""
        from raftlease.client.election import LeadershipRunner

        election = self.election(name, ttl=ttl, holder=holder, metadata=metadata)
        return LeadershipRunner(
            election, on_started_leading, on_stopped_leading, on_new_leader, requeue=requeue
        ).start()

    def singleton(
        self,
        name: str,
        fn: Callable[..., object],
        *args: object,
        ttl: float = 10.0,
        holder: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> LeadershipRunner:
        """Run ``fn(*args)`` in a worker thread only while leading ``name``, again after every
        new win; ``fn`` reaches its lease through ``current_lease()``. A running
        :class:`LeadershipRunner`."""
        return self.run_for_leadership(
            name, lambda _lease: fn(*args), ttl=ttl, holder=holder, metadata=metadata
        )

    # -- cluster ----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Ask EVERY endpoint for its Cluster.Status and merge the answers.

        Returns ``{"leader": id or None, "leader_address", "term", "cluster_id", "nodes":
        [{"id", "address", "role", "term", "commit_index", "applied_index", "last_heard_ms",
        "match_index", "lag", "missed_heartbeats", "reachable", "lease_valid",
        "lease_remaining_ms"}, ...]}``; liveness fields are the leader's view, the leader-lease
        fields each node's own. Endpoints that did not answer are listed with role "unreachable".
        """
        self._check_open()
        per_node = min(self.timeout, 2.0)
        futures = {
            ep: self._conn(ep).cluster.Status.future(cluster_pb2.StatusRequest(), timeout=per_node)
            for ep in self.endpoints
        }
        answers: dict[str, cluster_pb2.StatusResponse | str] = {}
        for ep, fut in futures.items():
            try:
                answers[ep] = fut.result()
            except grpc.RpcError as err:
                answers[ep] = describe_rpc_error(err)
        return merge_status(self.endpoints, answers)

    def transfer_leadership(self, to: str | None = None) -> str:
        """Hand leadership to node ``to`` (or the most up-to-date follower); the new leader."""
        request = cluster_pb2.TransferLeadershipRequest(target_id=to or "")
        resp = self._call(
            "transfer leadership",
            lambda c, t: c.cluster.TransferLeadership(request, timeout=t),
        )
        return resp.leader_id

    # -- lifecycle --------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ClusterUnavailable("the client is closed")

    def close(self) -> None:
        """Release every lease still held (best effort) and close the channels; close every
        election made by :meth:`election` (stopping runners and campaigns)."""
        with self._lock:
            elections = list(self._elections)
        for election in elections:
            election.close()
        with self._lock:
            leases = list(self._leases)
        for lease in leases:
            try:
                lease.release()
            except RaftLeaseError as err:
                log.warning("raftlease: could not release lease %r: %s", lease.name, err)
        with self._lock:
            self._closed = True
            conns = list(self._conns.values())
            self._conns.clear()
        for conn in conns:
            conn.channel.close()

    def __enter__(self) -> LeaseClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"LeaseClient(endpoints={self.endpoints!r}, "
            f"timeout={format_duration(self.timeout)}, max_drift={self.max_drift})"
        )
