"""What the sync and the async client share: endpoints, durations, the validity arithmetic,
the retry policy, error mapping, result dataclasses and the status merge.

Nothing here performs I/O or sleeps; the clock is always passed in, so all of it is unit
tested with a fake clock (tests/client/).
"""

from __future__ import annotations

import logging
import math
import os
import random
import re
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import grpc

from raftlease.client.errors import (
    ClusterUnavailable,
    InvalidArgument,
    LeaseHeld,
    LeaseNotFound,
    RpcFailed,
)
from raftlease.errors import ConfigError
from raftlease.v1 import cluster_pb2, lease_pb2

ENDPOINTS_ENV = "RAFTLEASE_ENDPOINTS"
DEFAULT_ENDPOINTS = ("127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003")
LEADER_METADATA_KEY = "raftlease-leader"

log = logging.getLogger("raftlease.client")

BACKOFF_START_S = 0.010
BACKOFF_CAP_S = 0.500

# Channel options:
# - reconnect quickly after a node restarts (gRPC's default first backoff is 1 s growing to
#   120 s, which would hide a restarted leader from us for far too long);
# - HTTP/2 keepalive pings while a call is active, so a long call (an Acquire waiting in the
#   queue, a Watch) on a node that hangs (SIGSTOP, dead host) fails within ~4 s and is retried
#   elsewhere instead of hanging until its deadline. The server allows pings this often.
CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.enable_retries", 0),
    ("grpc.keepalive_time_ms", 2000),
    ("grpc.keepalive_timeout_ms", 2000),
    ("grpc.http2.ping_timeout_ms", 2000),  # what actually bounds an unanswered ping (1.85)
    ("grpc.http2.max_pings_without_data", 0),
)

# Status codes after which another attempt (maybe on another node) may succeed. An Acquire is
# retried with the same request_id, so retrying an ambiguous failure is safe.
RETRIABLE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)


# ---------------------------------------------------------------------------------------------
# Endpoints, durations, identities


_ENDPOINT = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+):(\d{1,5})$")


def parse_endpoints(value: Sequence[str] | str | None) -> list[str]:
    """Normalize endpoints to a non-empty, de-duplicated list of ``HOST:PORT`` strings.

    ``value`` may be a comma-separated string, a sequence of such strings, or ``None`` (then
    the environment variable ``RAFTLEASE_ENDPOINTS`` is used if set, else the three local
    default ports 7001-7003). Raises :class:`ConfigError` naming the bad entry.
    """
    if value is None:
        env = os.environ.get(ENDPOINTS_ENV, "").strip()
        value = env if env else list(DEFAULT_ENDPOINTS)
    parts = [value] if isinstance(value, str) else list(value)
    out: list[str] = []
    for part in parts:
        if not isinstance(part, str):
            raise ConfigError(f"endpoints must be strings, got {type(part).__name__}")
        for raw in part.split(","):
            endpoint = raw.strip()
            if not endpoint:
                continue
            match = _ENDPOINT.match(endpoint)
            if match is None or not 1 <= int(match.group(1)) <= 65535:
                raise ConfigError(
                    f"endpoint {endpoint!r} is not HOST:PORT (e.g. 127.0.0.1:7001, a port 1-65535)"
                )
            if endpoint not in out:
                out.append(endpoint)
    if not out:
        raise ConfigError("no endpoints given: pass HOST:PORT[,HOST:PORT...]")
    return out


_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str) -> float:
    """Parse ``10s``, ``500ms``, ``2m``, ``1h``, ``1.5s`` or a bare number of seconds.

    Returns seconds as a float. Raises :class:`ValueError` with a message saying what is
    accepted; negative, infinite and non-numeric values are refused.
    """
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(
            f"invalid duration {text!r}: use a number with an optional unit ms, s, m or h "
            "(e.g. 10s, 500ms, 2m, 1h; a bare number means seconds)"
        )
    value = float(match.group(1)) * _UNIT_S[match.group(2)]
    if not math.isfinite(value):
        raise ValueError(f"invalid duration {text!r}: too large")
    return value


def format_duration(seconds: float) -> str:
    """A short human form of a duration: ``250ms``, ``10s``, ``1.5s``, ``2m``, ``1h``."""
    if seconds < 1.0:
        return f"{round(seconds * 1000)}ms"
    if seconds < 60.0 or seconds % 60:
        text = f"{seconds:.3f}".rstrip("0").rstrip(".")
        return f"{text}s"
    if seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    return f"{int(seconds // 60)}m"


def default_holder() -> str:
    """The default holder identity: ``HOSTNAME:PID``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def seconds_to_ms(field_name: str, seconds: object) -> int:
    """Convert a duration in seconds to whole milliseconds for the wire.

    Only what cannot be encoded is refused here (negative, NaN, infinite, not a number); the
    server checks the documented bounds and answers ``INVALID_ARGUMENT`` naming them.
    """
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise InvalidArgument(
            f"{field_name} must be a number of seconds, got {type(seconds).__name__}"
        )
    if not math.isfinite(seconds) or seconds < 0:
        raise InvalidArgument(
            f"{field_name} must be a finite number of seconds >= 0, got {seconds}"
        )
    return round(seconds * 1000)


def check_str_map(field_name: str, value: object) -> dict[str, str]:
    """A copy of a str->str mapping (``None`` is empty); refuses other types locally."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidArgument(f"{field_name} must be a mapping of str to str")
    out: dict[str, str] = {}
    items: list[tuple[object, object]] = list(value.items())
    for key, val in items:
        if not isinstance(key, str) or not isinstance(val, str):
            raise InvalidArgument(
                f"{field_name} must map str to str, got {type(key).__name__}: {type(val).__name__}"
            )
        out[key] = val
    return out


# ---------------------------------------------------------------------------------------------
# Validity arithmetic (the safety core of the client)


def effective_ttl(ttl: float, max_drift: float) -> float:
    """How long, on this process's clock, a lease of ``ttl`` seconds may be trusted.

    (The clients read ``raftlease.clock.boot_monotonic``: CLOCK_BOOTTIME on Linux, which keeps
    counting while the machine is suspended, so a suspend eats into the lease as it should.)

    The leader measures ``ttl`` on its own clock from a moment after we sent the request. With
    every clock's rate within ``max_drift`` of real time, the leader's ``ttl`` lasts at least
    ``ttl / (1 + max_drift)`` real seconds, and our clock counts at most ``(1 - max_drift)``
    seconds per real second... i.e. ``ttl * (1 - max_drift) / (1 + max_drift)`` local seconds
    after the send are always before the leader's deadline.
    """
    return ttl * (1.0 - max_drift) / (1.0 + max_drift)


def lost_margin(ttl: float) -> float:
    """How long before ``valid_until`` the lost signal fires: ``min(0.05 * ttl, 0.25 s)``."""
    return min(0.05 * ttl, 0.25)


class LeaseTimer:
    """The validity state of one held lease. Pure: every method takes the current time.

    - ``on_success(t_send, ttl)`` after an Acquire/Renew succeeded, where ``t_send`` is the
      clock time (``raftlease.clock.boot_monotonic``) read BEFORE the request was sent:
      ``valid_until`` becomes ``max(valid_until, t_send + effective_ttl(ttl))``. It never
      moves backwards, and never moves at all once the lease is lost (a late success cannot
      revive it).
    - ``lost_at()`` is ``valid_until - lost_margin(ttl)``: the keepalive declares the lease lost
      at that time if no renewal has succeeded, so the lost signal always precedes the moment
      ``is_valid()`` would turn false by itself.
    - ``is_valid(now)`` is false once lost is marked, and whenever ``now >= valid_until``.
    - ``renew_due()`` is ``last t_send + ttl / 3``: when the next keepalive is due.
    """

    def __init__(self, ttl: float, max_drift: float) -> None:
        if not 0.0 <= max_drift < 1.0:
            raise ConfigError(f"max_drift must be in [0, 1), got {max_drift}")
        self.ttl = ttl
        self.max_drift = max_drift
        self.valid_until = -math.inf
        self.last_send = -math.inf
        self.lost = False
        self._lock = threading.Lock()

    def on_success(self, t_send: float, ttl: float | None = None) -> bool:
        """Record a successful grant/renewal sent at ``t_send``; False if already lost."""
        with self._lock:
            if self.lost:
                return False
            if ttl is not None and ttl > 0:
                self.ttl = ttl
            self.valid_until = max(
                self.valid_until, t_send + effective_ttl(self.ttl, self.max_drift)
            )
            self.last_send = max(self.last_send, t_send)
            return True

    def mark_lost(self) -> bool:
        """Mark the lease lost (final); True if this call changed it."""
        with self._lock:
            if self.lost:
                return False
            self.lost = True
            return True

    @property
    def lost_margin(self) -> float:
        return lost_margin(self.ttl)

    def lost_at(self) -> float:
        return self.valid_until - self.lost_margin

    def renew_due(self) -> float:
        return self.last_send + self.ttl / 3.0

    def is_valid(self, now: float) -> bool:
        return not self.lost and now < self.valid_until

    def time_left(self, now: float) -> float:
        if self.lost:
            return 0.0
        return max(0.0, self.valid_until - now)


# ---------------------------------------------------------------------------------------------
# Retry policy


class Backoff:
    """Jittered exponential backoff: 10 ms, 20 ms, 40 ms ... capped at 500 ms.

    Each delay is drawn uniformly from [d/2, d] for the nominal delay d.
    """

    def __init__(
        self,
        start: float = BACKOFF_START_S,
        cap: float = BACKOFF_CAP_S,
        rng: random.Random | None = None,
    ) -> None:
        self.start = start
        self.cap = cap
        self.attempt = 0
        self._rng = rng if rng is not None else random.Random()

    def delay(self) -> float:
        """A jittered delay at the current level (the level does not change)."""
        nominal = min(self.cap, self.start * (2.0**self.attempt))
        return self._rng.uniform(nominal / 2.0, nominal)

    def grow(self) -> None:
        """Double the nominal delay (up to the cap)."""
        if self.start * (2.0**self.attempt) < self.cap:
            self.attempt += 1

    def next_delay(self) -> float:
        """A jittered delay at the current level, then grow."""
        delay = self.delay()
        self.grow()
        return delay

    def reset(self) -> None:
        self.attempt = 0


def one_line(text: str) -> str:
    """Collapse whitespace (gRPC connection errors span lines) into one line."""
    return " ".join(text.split())


def rpc_code(err: grpc.RpcError) -> grpc.StatusCode:
    try:
        code: object = err.code()
    except Exception:  # not every RpcError is a Call
        return grpc.StatusCode.UNKNOWN
    return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN


def rpc_details(err: grpc.RpcError) -> str:
    try:
        details = err.details()
    except Exception:
        return str(err)
    return one_line(details or "")


def metadata_leader_hint(metadata: Sequence[Any] | None) -> str | None:
    """The ``raftlease-leader`` value of trailing metadata, if present and non-empty."""
    for item in metadata or ():
        key = getattr(item, "key", None)
        value = getattr(item, "value", None)
        if key is None and isinstance(item, tuple) and len(item) == 2:
            key, value = item
        if key == LEADER_METADATA_KEY:
            if isinstance(value, bytes):
                value = value.decode("utf-8", "replace")
            if isinstance(value, str) and value.strip():
                return value.strip()
    return None


def rpc_leader_hint(err: grpc.RpcError) -> str | None:
    try:
        metadata = err.trailing_metadata()
    except Exception:
        return None
    return metadata_leader_hint(metadata)


def check_token_value(token: object) -> int:
    """A fencing token: an int >= 0; anything else raises InvalidArgument."""
    if isinstance(token, bool) or not isinstance(token, int) or token < 0:
        raise InvalidArgument(f"fencing token must be an integer >= 0, got {token!r}")
    return token


def describe_rpc_error(err: grpc.RpcError) -> str:
    code = rpc_code(err)
    details = rpc_details(err)
    return f"{code.name}: {details}" if details else code.name


def is_retriable(err: grpc.RpcError) -> bool:
    return rpc_code(err) in RETRIABLE_CODES


def map_rpc_error(err: grpc.RpcError) -> Exception:
    """The typed exception for a non-retriable status."""
    code = rpc_code(err)
    details = rpc_details(err)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument(details or "invalid argument")
    if code == grpc.StatusCode.NOT_FOUND:
        return LeaseNotFound(details or "lease not found")
    return RpcFailed(f"server answered {describe_rpc_error(err)}", code.name)


class Router:
    """Which endpoint to try next: the known leader, else the configured endpoints in turn.

    Thread-safe; shared by a client's calls and its keepalives. A leader hint (from the
    ``raftlease-leader`` trailing metadata) may name an address outside ``endpoints``.
    """

    def __init__(self, endpoints: Sequence[str]) -> None:
        self.endpoints = list(endpoints)
        self._leader: str | None = None
        self._next = 0
        self._lock = threading.Lock()

    @property
    def leader(self) -> str | None:
        return self._leader

    def pick(self) -> str:
        with self._lock:
            if self._leader is not None:
                return self._leader
            return self.endpoints[self._next % len(self.endpoints)]

    def succeeded(self, target: str) -> None:
        with self._lock:
            self._leader = target

    def failed(self, target: str, hint: str | None) -> str:
        """Record a failed attempt on ``target``; return the endpoint to try next."""
        with self._lock:
            if hint is not None and hint != target:
                self._leader = hint
                return hint
            if self._leader == target or hint == target:
                self._leader = None
            if target in self.endpoints:
                self._next = self.endpoints.index(target) + 1
            else:
                self._next += 1
            return self.endpoints[self._next % len(self.endpoints)]


class Attempts:
    """Bookkeeping of one logical call's attempts: deadline, endpoints tried, last error.

    Retry policy: a fresh leader hint is followed at once (at most twice in a row); any
    other failure sleeps a jittered backoff first. The backoff doubles (10 ms ... 500 ms) once
    per round through the endpoints rather than once per attempt, so that while an election
    runs every node is re-tried quickly and a new leader is found soon after it is elected.
    """

    def __init__(
        self,
        what: str,
        deadline: float,
        rng: random.Random | None = None,
        round_size: int = 1,
    ) -> None:
        self.what = what
        self.deadline = deadline
        self.tried: list[str] = []
        self.last_error = "no attempt made"
        self.backoff = Backoff(rng=rng)
        self.round_size = max(1, round_size)
        self._hint_follows = 0
        self._failures = 0

    def note(self, target: str) -> None:
        if target not in self.tried:
            self.tried.append(target)

    def failed(self, router: Router, target: str, err: grpc.RpcError) -> tuple[str, float]:
        """After a retriable failure: the next target and how long to sleep first."""
        return self.refused(router, target, describe_rpc_error(err), rpc_leader_hint(err))

    def refused(
        self, router: Router, target: str, error: str, hint: str | None
    ) -> tuple[str, float]:
        """After a retriable failure described by ``error``, with the leader ``hint`` the
        node gave (if any): the next target and how long to sleep first."""
        self.last_error = error
        nxt = router.failed(target, hint)
        if hint is not None and hint != target and self._hint_follows < 2:
            self._hint_follows += 1  # follow a fresh hint at once, but not in a loop
            return nxt, 0.0
        self._hint_follows = 0
        self._failures += 1
        delay = self.backoff.delay()
        if self._failures % self.round_size == 0:
            self.backoff.grow()
        return nxt, delay

    def unavailable(self, timeout: float) -> ClusterUnavailable:
        tried = ", ".join(self.tried) if self.tried else "none"
        return ClusterUnavailable(
            f"{self.what}: no leader answered within {format_duration(timeout)}; "
            f"tried {tried}; last error: {self.last_error}",
            tuple(self.tried),
            self.last_error,
        )


def attempt_cap(timeout: float) -> float:
    """The longest single attempt of a quick call, so a hung node cannot eat the whole timeout."""
    return max(1.0, timeout / 3.0)


def renew_attempt_cap(ttl: float) -> float:
    """The longest single renewal attempt: short, so a paused node is skipped quickly."""
    return max(0.2, min(1.0, ttl / 6.0))


# ---------------------------------------------------------------------------------------------
# Keepalive: what one lease's renewal loop does after each answer

_OUTCOME = lease_pb2.KeepAliveResponse

# A RETRY answer (the leader, briefly without a valid leader lease) is retried on the same
# node after 10-20 ms, doubling to at most 100-200 ms: its leader lease comes back with the
# next heartbeat round a majority acknowledges (100 ms heartbeats at the server's defaults).
RETRY_START_S = 0.020
RETRY_CAP_S = 0.200
# ... but after this many RETRY answers in a row the next one counts as a failure without a
# leader hint (the loop tries another node). A leader cut off from its majority steps down
# within an election timeout (CheckQuorum) and then answers NOT_LEADER, so this only matters
# against a node that keeps answering RETRY for longer than that.
RETRY_LIMIT = 12


@dataclass(frozen=True, slots=True)
class KeepaliveStep:
    """What a keepalive loop does after one renewal attempt.

    ``kind`` is ``"renewed"`` (validity was extended: wait until the next renewal is due),
    ``"retry"`` (nothing was renewed: sleep ``delay`` seconds, at most until the lease's lost
    time, then renew again on ``KeepaliveState.target``), ``"lost"`` (declare the lease lost
    with ``reason`` and stop) or ``"done"`` (the lease was already lost or released: stop).
    """

    kind: Literal["renewed", "retry", "lost", "done"]
    delay: float = 0.0
    reason: str = ""


def outcome_name(outcome: lease_pb2.KeepAliveResponse.Outcome.ValueType) -> str:
    """``RETRY``, ``NOT_FOUND``, ... for a ``KeepAliveResponse.Outcome`` value."""
    try:
        return _OUTCOME.Outcome.Name(outcome).removeprefix("OUTCOME_")
    except ValueError:
        return f"outcome {outcome}"


class KeepaliveState:
    """The decisions of one lease's keepalive loop, shared by the sync and async clients.

    Pure apart from a log line: no I/O, no sleeping, no clock reading. The loop sends
    :meth:`request` (a Renew asking for in-band outcomes) to :attr:`target`, reading
    ``t_send`` BEFORE it sends, and hands the answer to :meth:`on_response`, or the call's
    error to :meth:`on_error`; each returns the :class:`KeepaliveStep` to take.

    - RENEWED (or 0, what a server from before in-band outcomes sends on success): validity
      is extended from ``t_send`` (``LeaseTimer.on_success``), the target is the leader.
    - RETRY (the leader without a valid leader lease right now): nothing is extended; renew
      again on the same node soon (RETRY_START_S doubling to RETRY_CAP_S). The router keeps
      the leader, so the lease's other calls are not sent elsewhere.
    - NOT_LEADER: follow ``leader_hint`` at once (at most twice in a row), else try the next
      endpoint after a backoff, as for an UNAVAILABLE status.
    - NOT_FOUND (in-band or as a status): the lease is lost; only this lease.
    - INVALID (the health payload is refused) and outcomes this client does not know: logged,
      retried after a backoff.
    - Any other gRPC error: retriable ones move on like :meth:`Attempts.failed`, others are
      logged and retried after a backoff.

    Only a RENEWED answer ever extends validity; the loop declares the lease lost at
    ``timer.lost_at()`` if none came, with :meth:`lost_reason`.
    """

    def __init__(
        self,
        what: str,
        lease_id: int,
        timer: LeaseTimer,
        router: Router,
        *,
        round_size: int = 1,
        rng: random.Random | None = None,
    ) -> None:
        self.what = what
        self.lease_id = lease_id
        self.timer = timer
        self.router = router
        self.round_size = round_size
        self.target = router.pick()
        self.streak: Attempts | None = None  # set while renewals are failing
        self.retries = 0  # RETRY answers in a row
        self._rng = rng
        self._retry_backoff = Backoff(RETRY_START_S, RETRY_CAP_S, rng)

    @property
    def failing(self) -> bool:
        """True while renewals fail: the loop renews again after the step's delay instead
        of waiting until the next renewal is due."""
        return self.streak is not None

    def request(self, health: Mapping[str, str]) -> lease_pb2.RenewRequest:
        return lease_pb2.RenewRequest(
            lease_id=self.lease_id, health=dict(health), inband_outcomes=True
        )

    def lost_reason(self) -> str:
        """Why the lease is lost when ``timer.lost_at()`` came without a renewal."""
        if self.streak is not None:
            return f"no renewal succeeded ({self.streak.last_error})"
        return "keepalives stopped"

    def _failure(self, lost_at: float) -> Attempts:
        if self.streak is None:
            self.streak = Attempts(self.what, lost_at, self._rng, round_size=self.round_size)
        self.streak.note(self.target)
        return self.streak

    def _not_found(self, detail: str) -> KeepaliveStep:
        return KeepaliveStep(
            "lost",
            reason=f"the server no longer knows lease id {self.lease_id} "
            f"(expired or released): {detail}",
        )

    def on_response(
        self,
        resp: lease_pb2.RenewResponse | lease_pb2.KeepAliveResponse,
        t_send: float,
        lost_at: float,
    ) -> KeepaliveStep:
        """The answer to a renewal sent at ``t_send`` to :attr:`target`."""
        outcome = resp.outcome
        if outcome in (_OUTCOME.OUTCOME_UNSPECIFIED, _OUTCOME.OUTCOME_RENEWED):
            if not self.timer.on_success(t_send, resp.ttl_ms / 1000.0):
                return KeepaliveStep("done")  # already lost: final
            self.router.succeeded(self.target)
            self.streak = None
            self.retries = 0
            self._retry_backoff.reset()
            return KeepaliveStep("renewed")
        error = f"{outcome_name(outcome)}: {one_line(resp.message)}".rstrip(": ")
        if outcome == _OUTCOME.OUTCOME_NOT_FOUND:
            return self._not_found(error)
        streak = self._failure(lost_at)
        if outcome == _OUTCOME.OUTCOME_RETRY and self.retries < RETRY_LIMIT:
            # The leader, its leader lease lapsed for a moment: stay, and retry soon.
            self.retries += 1
            streak.last_error = error
            return KeepaliveStep("retry", self._retry_backoff.next_delay())
        self.retries = 0
        self._retry_backoff.reset()
        if outcome == _OUTCOME.OUTCOME_INVALID:
            log.warning("raftlease: %s: %s", self.what, error)
            streak.last_error = error
            return KeepaliveStep("retry", streak.backoff.next_delay())
        # NOT_LEADER, a RETRY beyond the limit, or an outcome this client does not know:
        # move on as after UNAVAILABLE (following the hint, if any).
        hint = resp.leader_hint.strip() if outcome == _OUTCOME.OUTCOME_NOT_LEADER else ""
        self.target, delay = streak.refused(self.router, self.target, error, hint or None)
        return KeepaliveStep("retry", delay)

    def on_error(self, err: grpc.RpcError, lost_at: float) -> KeepaliveStep:
        """The renewal sent to :attr:`target` failed with a gRPC status."""
        if rpc_code(err) == grpc.StatusCode.NOT_FOUND:
            return self._not_found(describe_rpc_error(err))
        streak = self._failure(lost_at)
        self.retries = 0
        self._retry_backoff.reset()
        if is_retriable(err):
            self.target, delay = streak.failed(self.router, self.target, err)
            return KeepaliveStep("retry", delay)
        # e.g. a health payload an older server refuses; keep trying, log it
        streak.last_error = describe_rpc_error(err)
        log.warning("raftlease: %s: %s", self.what, streak.last_error)
        return KeepaliveStep("retry", streak.backoff.next_delay())


# ---------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """A grant as the cluster reports it (``holder()``, ``leases()``, watch events).

    ``ttl`` and ``remaining`` are seconds; ``remaining`` is the serving leader's view, not a
    guarantee to anyone. ``granted_index`` is the Raft log index of the grant.
    """

    name: str
    holder: str
    lease_id: int
    fencing_token: int
    ttl: float
    metadata: dict[str, str] = field(default_factory=dict)
    health: dict[str, str] = field(default_factory=dict)
    remaining: float = 0.0
    waiters: int = 0
    granted_index: int = 0

    @classmethod
    def from_pb(cls, pb: lease_pb2.LeaseInfo) -> LeaseInfo:
        return cls(
            name=pb.name,
            holder=pb.holder,
            lease_id=pb.lease_id,
            fencing_token=pb.fencing_token,
            ttl=pb.ttl_ms / 1000.0,
            metadata=dict(pb.metadata),
            health=dict(pb.health),
            remaining=pb.remaining_ms / 1000.0,
            waiters=pb.waiters,
            granted_index=pb.granted_index,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "holder": self.holder,
            "lease_id": self.lease_id,
            "fencing_token": self.fencing_token,
            "ttl": self.ttl,
            "metadata": dict(self.metadata),
            "health": dict(self.health),
            "remaining": self.remaining,
            "waiters": self.waiters,
            "granted_index": self.granted_index,
        }


_KIND_NAMES = {
    lease_pb2.WatchEvent.KIND_CURRENT: "current",
    lease_pb2.WatchEvent.KIND_ACQUIRED: "acquired",
    lease_pb2.WatchEvent.KIND_RELEASED: "released",
    lease_pb2.WatchEvent.KIND_EXPIRED: "expired",
}


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change seen by ``watch()``.

    ``kind`` is ``"current"`` (the state when the watch (re)started), ``"acquired"``,
    ``"released"`` or ``"expired"``; ``lease`` is the grant concerned (for released/expired,
    the grant that ended); ``index`` is the Raft log index of the change.
    """

    kind: str
    name: str
    lease: LeaseInfo | None
    index: int

    @classmethod
    def from_pb(cls, pb: lease_pb2.WatchEvent) -> WatchEvent:
        lease = LeaseInfo.from_pb(pb.lease) if pb.HasField("lease") else None
        name = pb.name or (lease.name if lease is not None else "")
        return cls(kind=_KIND_NAMES.get(pb.kind, "unknown"), name=name, lease=lease, index=pb.index)


class WatchDedup:
    """Skips watch events already delivered before the stream was re-opened.

    A broken Watch stream is re-opened (maybe on a new leader), and the new stream may send
    again changes the old one already delivered; each change is delivered once. A change is
    identified by ``(index, kind, name, lease_id)``, not by its index alone: one log entry
    can make several changes. Releasing (or expiring) a lease that has waiters hands it to the
    first waiter in the same entry, so the server sends ``released`` (or ``expired``) and then
    ``acquired`` with the same index; deduplicating by index dropped the ``acquired``.

    The server sends the changes of a stream in log order, so only the keys at the highest
    index delivered so far are kept: an event below that index was delivered (or superseded
    by a later one) before, one at it is new unless its key was seen, one above it is new.
    ``current`` events (the state when a stream starts) always pass and change nothing, and
    so do events without an index (0).
    """

    def __init__(self) -> None:
        self.last_index = 0
        self._seen_at_last: set[tuple[str, str, int]] = set()

    @staticmethod
    def _key(event: WatchEvent) -> tuple[str, str, int]:
        lease_id = event.lease.lease_id if event.lease is not None else 0
        return (event.kind, event.name, lease_id)

    def admit(self, event: WatchEvent) -> bool:
        """True if ``event`` is to be delivered (and remember it), False if it is a repeat."""
        if event.kind == "current" or not event.index:
            return True
        key = self._key(event)
        if event.index < self.last_index:
            return False
        if event.index == self.last_index:
            if key in self._seen_at_last:
                return False
            self._seen_at_last.add(key)
            return True
        self.last_index = event.index
        self._seen_at_last = {key}
        return True


def lease_held_error(name: str, current: lease_pb2.LeaseInfo | None) -> LeaseHeld:
    if current is None or not current.holder:
        return LeaseHeld(f"lease {name!r} is held by another holder")
    return LeaseHeld(
        f"lease {name!r} is held by {current.holder} (fencing token {current.fencing_token})",
        current.holder,
        current.fencing_token,
    )


# ---------------------------------------------------------------------------------------------
# Cluster status


def _natural_key(text: str) -> tuple[Any, ...]:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text))


def merge_status(
    endpoints: Sequence[str],
    answers: Mapping[str, cluster_pb2.StatusResponse | str],
) -> dict[str, Any]:
    """Merge every endpoint's own ``Cluster.Status`` into one view.

    ``answers`` maps each endpoint to its StatusResponse, or to an error text when it did not
    answer. The result is ``{"leader": id or None, "leader_address", "term", "cluster_id",
    "nodes": [...]}``; each node has ``id, address, role, term, commit_index, applied_index``
    (and ``lease_valid, lease_remaining_ms``: its own leader lease) from its own answer, and
    ``last_heard_ms, match_index, lag, missed_heartbeats, reachable`` as seen by the leader
    (None when no leader answered). Nodes that did not answer have role ``"unreachable"`` and
    an ``error``.
    """
    ok = {ep: a for ep, a in answers.items() if isinstance(a, cluster_pb2.StatusResponse)}

    # The leader: a node that says it leads (highest term wins), else the most-named leader.
    leader: str | None = None
    leader_term = -1
    leader_resp: cluster_pb2.StatusResponse | None = None
    for resp in ok.values():
        if resp.leader_id and resp.leader_id == resp.node_id and resp.term > leader_term:
            leader, leader_term, leader_resp = resp.node_id, resp.term, resp
    leader_address: str | None = None
    if leader is None:
        votes: dict[tuple[int, str], int] = {}
        addresses: dict[str, str] = {}
        for resp in ok.values():
            if resp.leader_id:
                key = (resp.term, resp.leader_id)
                votes[key] = votes.get(key, 0) + 1
                if resp.leader_address:
                    addresses[resp.leader_id] = resp.leader_address
        if votes:
            (_, leader), _count = max(votes.items(), key=lambda kv: (kv[0][0], kv[1]))
            leader_address = addresses.get(leader)
    else:
        assert leader_resp is not None
        leader_address = leader_resp.leader_address or None

    nodes: dict[str, dict[str, Any]] = {}

    def blank(node_id: str, address: str) -> dict[str, Any]:
        return {
            "id": node_id,
            "address": address,
            "role": "unknown",
            "term": None,
            "commit_index": None,
            "applied_index": None,
            "last_heard_ms": None,
            "match_index": None,
            "lag": None,
            "missed_heartbeats": None,
            "reachable": None,
            "lease_valid": None,
            "lease_remaining_ms": None,
        }

    # Each node's own view of itself.
    answered: set[str] = set()
    for endpoint, resp in ok.items():
        me = next((n for n in resp.nodes if n.id == resp.node_id), None)
        node_id = resp.node_id or endpoint
        entry = nodes.setdefault(node_id, blank(node_id, endpoint))
        entry["address"] = (me.address if me is not None and me.address else "") or endpoint
        entry["role"] = me.role if me is not None and me.role else "unknown"
        entry["term"] = resp.term if resp.term else (me.term if me is not None else 0)
        entry["commit_index"] = me.commit_index if me is not None else None
        entry["applied_index"] = me.applied_index if me is not None else None
        entry["lease_valid"] = me.lease_valid if me is not None else None
        entry["lease_remaining_ms"] = me.lease_remaining_ms if me is not None else None
        answered.add(node_id)

    # The leader's view of everyone (liveness, lag); nodes we did not query come from here.
    if leader_resp is not None:
        for n in leader_resp.nodes:
            entry = nodes.setdefault(n.id, blank(n.id, n.address))
            if n.id not in answered:
                entry.update(
                    address=n.address or entry["address"],
                    role=n.role or "unknown",
                    term=n.term,
                    commit_index=n.commit_index,
                    applied_index=n.applied_index,
                )
            entry.update(
                last_heard_ms=0 if n.id == leader else n.last_heard_ms,
                match_index=n.match_index,
                lag=n.lag,
                missed_heartbeats=n.missed_heartbeats,
                reachable=True if n.id == leader else n.reachable,
            )
    else:
        # Without the leader's answer, each node's list still names its peers.
        for resp in ok.values():
            for n in resp.nodes:
                if n.id not in nodes:
                    nodes[n.id] = blank(n.id, n.address)

    # Endpoints that did not answer.
    for endpoint in endpoints:
        error = answers.get(endpoint)
        if not isinstance(error, str):
            continue
        match = next(
            (e for e in nodes.values() if e["address"] == endpoint and e["id"] not in answered),
            None,
        )
        if match is None:
            match = nodes.setdefault(endpoint, blank(endpoint, endpoint))
        match["role"] = "unreachable"
        match["error"] = one_line(error)

    terms = [resp.term for resp in ok.values()]
    cluster_ids = [resp.cluster_id for resp in ok.values() if resp.cluster_id]
    return {
        "leader": leader,
        "leader_address": leader_address,
        "term": max(terms) if terms else None,
        "cluster_id": cluster_ids[0] if cluster_ids else None,
        "nodes": [nodes[k] for k in sorted(nodes, key=_natural_key)],
    }


def safe_callback(callback: Callable[[], object]) -> None:
    """Run a user callback; its exceptions are logged, never propagated into a keepalive."""
    try:
        callback()
    except Exception:
        log.exception("raftlease: on_lost callback raised")
