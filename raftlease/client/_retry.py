"""The retry policy: jittered backoff, which endpoint to try next, and the bookkeeping of one
logical call's attempts.

Pure: no I/O, no sleeping, no clock reading (a deadline is compared with times passed in).
A failed attempt is described by a :class:`Failure`, whatever the transport (gRPC in the
real clients, the simulator's network in ``raftlease.testing.clients``).
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from raftlease.client._values import format_duration
from raftlease.client.errors import ClusterUnavailable, LeaseNotFound

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "BACKOFF_CAP_S",
    "BACKOFF_START_S",
    "Attempts",
    "Backoff",
    "Failure",
    "Router",
    "attempt_cap",
    "renew_attempt_cap",
]

BACKOFF_START_S = 0.010
BACKOFF_CAP_S = 0.500


@dataclass(frozen=True, slots=True)
class Failure:
    """An attempt that brought back no answer the call can use.

    ``error`` is one line for messages (``"UNAVAILABLE: connection refused"``); ``hint`` the
    leader the node named, if any. ``exc`` is None for a failure another attempt may get past
    (unavailable, a deadline, no answer at all), else the exception the call raises (a
    non-retriable status: :class:`LeaseNotFound` for NOT_FOUND, ``InvalidArgument``, ...).
    """

    error: str
    hint: str | None = None
    exc: Exception | None = None

    @property
    def retriable(self) -> bool:
        return self.exc is None

    @property
    def not_found(self) -> bool:
        """The server does not know the lease (it expired or was released)."""
        return isinstance(self.exc, LeaseNotFound)


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


class Router:
    """Which endpoint to try next: the known leader, else the configured endpoints in turn.

    Thread-safe; shared by a client's calls and its keepalives. A leader hint (from the
    ``raftlease-leader`` trailing metadata) may name an address outside ``endpoints``.
    ``first`` is the index of the endpoint tried first (the simulator's clients draw it).
    """

    def __init__(self, endpoints: Sequence[str], first: int = 0) -> None:
        self.endpoints = list(endpoints)
        self._leader: str | None = None
        self._next = first
        self._lock = threading.Lock()

    @property
    def leader(self) -> str | None:
        return self._leader

    @leader.setter
    def leader(self, target: str | None) -> None:
        with self._lock:
            self._leader = target

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

    def failed(self, router: Router, target: str, failure: Failure) -> tuple[str, float]:
        """After a retriable failure: the next target and how long to sleep first."""
        return self.refused(router, target, failure.error, failure.hint)

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
