"""The blocking client: :class:`LeaseClient` and the :class:`Lease` it hands out.

Keepalives of every lease a client holds run on one daemon thread, the client's keepalive
hub (``_hub_sync.py``; the decisions are ``_hub.KeepaliveHub``'s and each lease's
``_protocol.KeepaliveMachine``'s): one KeepAlive stream per node, renewals batched. grpc's
sync channels are thread-safe, so the caller's thread and the hub share them.
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
from raftlease.client._election_base import LeadershipLost
from raftlease.client._hub_sync import SyncKeepalives
from raftlease.client._keepalive import safe_callback
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
from raftlease.errors import ConfigError, RaftLeaseError
from raftlease.fsm.limits import validate_health
from raftlease.v1 import cluster_pb2, cluster_pb2_grpc, lease_pb2, lease_pb2_grpc

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence
    from types import TracebackType

    from raftlease.client._validity import LeaseTimer
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

    Keepalives run every ``ttl / 3`` on the client's keepalive thread, which renews all of the
    client's leases over one KeepAlive stream per node (batched: a renewal may go out up to
    ``min(0.25 s, ttl / 30)`` early to join others; a server without the stream gets one
    Renew per renewal). A failed renewal is retried quickly against the leader hint and the
    other endpoints (a leader answering RETRY, its own leader lease lapsed for a moment, is
    retried itself; see ``KeepaliveState``), and validity is only ever extended by a success.
    If no renewal has succeeded by ``valid_until - lost_margin`` (``lost_margin = min(0.05 *
    ttl, 0.25 s)``), or the server answers NOT_FOUND, the lease is *lost*: first
    ``is_valid()`` turns false, then ``lost`` is set and ``on_lost(lease)`` is called (on the
    keepalive thread: keep it short, the client's other leases are renewed by that thread
    too). So the signal always fires before ``is_valid()`` would turn false on its own.
    Losing is final: a late renewal cannot revive the lease.

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
        self._keepalive = KeepaliveMachine(
            f"renew lease {name!r}",
            lease_id,
            timer,
            client._router,
            round_size=len(client.endpoints),
        )
        self._released = False
        self._started = False

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
        self._client._forget(self)
        if self._started:
            self._client._keepalives.remove(self)
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
        self._keepalive.stop_renewing()
        if self._started:
            self._client._keepalives.nudge(self)

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
        self._client._keepalives.add(self)
        self._started = True

    def _declare_lost(
        self, reason: str, run: Callable[[Callable[[], object]], None] | None = None
    ) -> None:
        """Mark the lease lost (``is_valid()`` turns false), set ``lost``, then call
        ``on_lost`` (or hand the call to ``run``: the keepalive hub calls it once the step's
        renewals are written)."""
        if not self._timer.mark_lost():
            return
        self.lost_reason = reason
        log.warning("raftlease: lease %r lost: %s", self.name, reason)
        self.lost.set()
        on_lost = self._on_lost
        if on_lost is None or self._released:
            return

        def call() -> None:
            if not self._released:
                on_lost(self)

        if run is None:
            safe_callback(call)
        else:
            run(call)


class LeaseClient:
    """A blocking client of a raftlease cluster.

    ``endpoints``: ``HOST:PORT`` strings (a list, or one comma-separated string); default the
    environment variable ``RAFTLEASE_ENDPOINTS``, else 127.0.0.1:7001-7003. Any endpoint
    works: on UNAVAILABLE the client follows the ``raftlease-leader`` hint, else rotates
    through the endpoints, with jittered exponential backoff (10 ms doubling to 500 ms), until
    ``timeout`` seconds have passed; then it raises :class:`ClusterUnavailable`.

    ``max_drift`` is the bound on clock rate error assumed by the validity arithmetic (0.01 =
    1 %, the cluster's default); see :class:`Lease`.

    ``tls`` and ``token`` (docs/security.md): a ``TLSConfig(ca=..., cert=..., key=...)``, True
    (system CAs) or False (plaintext); a bearer token. By default both come from the
    environment (``RAFTLEASE_TLS_CA``/``_CERT``/``_KEY``, ``RAFTLEASE_TOKEN``/``_TOKEN_FILE``),
    else the client speaks plaintext with no token, as before.

    Used as a context manager it releases every lease it still holds and closes its channels.
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
        self._leases: set[Lease] = set()
        self._keepalives = SyncKeepalives(self)
        self._elections: weakref.WeakSet[Election] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._closed = False

    # -- plumbing ---------------------------------------------------------------------------

    def session_options(self) -> dict[str, Any]:
        """The keyword arguments that make another client with this one's settings (the
        elections open their own session with them)."""
        sec = self._security
        return {
            "timeout": self.timeout,
            "max_drift": self.max_drift,
            "tls": sec.tls if sec.tls is not None else False,
            "token": sec.token,
        }

    def _conn(self, target: str) -> _Conn:
        with self._lock:
            if self._closed:
                raise ClusterUnavailable("the client is closed")
            conn = self._conns.get(target)
            if conn is None:
                channel = self._security.sync_channel(target, CHANNEL_OPTIONS)
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
                time.sleep(max(0.0, action.until - _clock.boot_monotonic()))
                action = call.poll(_clock.boot_monotonic())
                continue
            try:
                result = fn(self._conn(action.target), action.timeout)
            except grpc.RpcError as err:
                action = call.on_failure(
                    _clock.boot_monotonic(), rpc_failure(err, self._security.explain)
                )
                continue
            call.answered()
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
                request = acquire_request(action, name, holder, ttl_ms, meta)
                try:
                    resp = self._conn(action.target).lease.Acquire(request, timeout=action.timeout)
                except grpc.RpcError as err:
                    action = machine.on_failure(
                        _clock.boot_monotonic(), rpc_failure(err, self._security.explain)
                    )
                else:
                    action = feed_acquire_response(machine, _clock.boot_monotonic(), resp)
            elif isinstance(action, SendRenew):  # a grant that waited long: renew it first
                renew = lease_pb2.RenewRequest(lease_id=action.lease_id, health=health_map)
                try:
                    renewed = self._conn(action.target).lease.Renew(renew, timeout=action.timeout)
                except grpc.RpcError as err:
                    action = machine.on_failure(
                        _clock.boot_monotonic(), rpc_failure(err, self._security.explain)
                    )
                else:
                    action = machine.on_renewed(_clock.boot_monotonic(), renewed.ttl_ms / 1000.0)
            elif isinstance(action, Sleep):
                time.sleep(max(0.0, action.until - _clock.boot_monotonic()))
                action = machine.poll(_clock.boot_monotonic())
            elif isinstance(action, Held):
                raise lease_held_error(name, action.current)
            elif isinstance(action, Failed):
                raise action.error
            elif isinstance(action, Acquired):
                return self._hand_out(action.grant, action.timer, name, holder, health_map, on_lost)
            else:
                raise AssertionError(f"unexpected acquire step {action!r}")

    def _hand_out(
        self,
        grant: lease_pb2.LeaseInfo,
        timer: LeaseTimer,
        name: str,
        holder: str,
        health_map: dict[str, str],
        on_lost: Callable[[Lease], object] | None,
    ) -> Lease:
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
        with self._lock:
            self._leases.add(lease)
        lease._start()
        return lease

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
                _, delay = attempts.failed(
                    self._router, target, rpc_failure(err, self._security.explain)
                )
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

    # -- membership (docs/membership.md) ------------------------------------------------------

    def members(self) -> MemberList:
        """The configuration in force on the leader: voters, learners, addresses."""
        request = cluster_pb2.MemberListRequest()
        resp = self._call("list members", lambda c, t: c.cluster.MemberList(request, timeout=t))
        return members_from_pb(resp)

    def add_member(
        self, node_id: str, peer_address: str, *, learner: bool = False, timeout: float = 60.0
    ) -> MemberList:
        """Add ``node_id`` (listening for peers at ``peer_address``) as a learner; unless
        ``learner``, wait for it to catch up and promote it to voter. Raises RaftLeaseError
        with the reason if refused (an id in use, an address in use, a change in flight)."""
        catch_up_ms = int(max(1.0, timeout - 5.0) * 1000)
        request = cluster_pb2.MemberAddRequest(
            id=node_id, peer_address=peer_address, learner=learner, catch_up_timeout_ms=catch_up_ms
        )
        resp = self._call(
            "add member",
            lambda c, t: c.cluster.MemberAdd(request, timeout=t),
            total=timeout,
            cap=timeout,
        )
        return members_from_pb(resp)

    def promote_member(self, node_id: str, *, timeout: float = 30.0) -> MemberList:
        """Make the caught-up learner ``node_id`` a voter."""
        request = cluster_pb2.MemberPromoteRequest(id=node_id)
        resp = self._call(
            "promote member",
            lambda c, t: c.cluster.MemberPromote(request, timeout=t),
            total=timeout,
        )
        return members_from_pb(resp)

    def remove_member(self, node_id: str, *, timeout: float = 30.0) -> MemberList:
        """Remove the member ``node_id`` (the leader hands over first if it is the one)."""
        request = cluster_pb2.MemberRemoveRequest(id=node_id)
        resp = self._call(
            "remove member",
            lambda c, t: c.cluster.MemberRemove(request, timeout=t),
            total=timeout,
        )
        return members_from_pb(resp)

    def snapshot(self) -> cluster_pb2.SnapshotResponse:
        """A consistent snapshot of the lease table from the leader (``raftlease snapshot
        save``): its index, term, cluster id, members and the serialized table."""
        request = cluster_pb2.SnapshotRequest()
        resp: cluster_pb2.SnapshotResponse = self._call(
            "snapshot", lambda c, t: c.cluster.Snapshot(request, timeout=t)
        )
        return resp

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
        self._keepalives.stop()
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
