"""The pure parts of ``raftlease run``'s child checks (docs/singleton.md): the heartbeat
deadline and status payload, the health-check failure count, the restart backoff with jitter
(the first restart immediate, then growing) and the restart circuit breaker. No I/O, no
clock: every method takes the time.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from raftlease.fsm.limits import MAX_HEALTH_BYTES, MAX_HEALTH_ENTRIES
from raftlease.heartbeat import parse_beat

__all__ = [
    "HealthChecks",
    "Heartbeat",
    "RestartBreaker",
    "backoff_delay",
    "fit_health",
]

BACKOFF_CAP_S = 30.0
JITTER = 0.2  # a delayed restart waits between 1x and 1.2x its exponential delay


def backoff_delay(
    failures: int, base: float = 1.0, cap: float = BACKOFF_CAP_S, u: float = 0.0
) -> float:
    """Seconds before restart number ``failures`` (1-based: the failures counted in the
    breaker's window, this one included).

    The first restart is immediate (0, no jitter): a single crash or hang costs no extra
    downtime. From the second on the backoff grows: ``min(cap, base * 2 ** (failures - 2))``
    (``base``, ``2 * base``, ``4 * base`` ...), stretched by up to :data:`JITTER` with ``u``
    in [0, 1) (a uniform random draw; 0 gives the bare schedule). So a crash loop never
    spins: a restart is the first only when no other failure is in the window, so two
    immediate restarts are more than a window apart (with no window: only the very first
    restart of the supervisor is immediate), and every failure within a window of another one
    waits at least ``min(base, cap)``. ``base <= 0``: every restart is immediate."""
    if base <= 0 or failures <= 1:
        return 0.0
    exponent = failures - 2
    delay = cap if exponent >= 64 else min(cap, base * 2.0**exponent)
    return delay * (1.0 + JITTER * min(max(u, 0.0), 1.0))


@dataclass
class RestartBreaker:
    """Counts the command's failures (a non-zero exit, or a kill for a missed heartbeat or
    failing health checks) in a sliding window of ``window`` seconds (``inf``: the whole life
    of the supervisor). :meth:`failure` returns True when this failure is more than
    ``max_restarts`` within the window: the breaker opens, no restart is allowed."""

    max_restarts: int
    window: float = math.inf
    times: deque[float] = field(default_factory=deque)

    def _prune(self, now: float) -> None:
        while self.times and now - self.times[0] > self.window:
            self.times.popleft()

    def failure(self, now: float) -> bool:
        """Record a failure at ``now``; True if the breaker opens (no restart)."""
        self.times.append(now)
        self._prune(now)
        return len(self.times) > self.max_restarts

    def failures(self, now: float) -> int:
        """Failures inside the window ending at ``now``."""
        self._prune(now)
        return len(self.times)


def fit_health(status: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """The entries of ``status`` that fit the lease's health payload bounds (16 entries, 1024
    bytes of UTF-8 keys plus values), in order; and the keys dropped."""
    kept: dict[str, str] = {}
    dropped: list[str] = []
    total = 0
    for key, value in status.items():
        size = len(key.encode("utf-8", "replace")) + len(value.encode("utf-8", "replace"))
        if len(kept) >= MAX_HEALTH_ENTRIES or total + size > MAX_HEALTH_BYTES:
            dropped.append(key)
            continue
        kept[key] = value
        total += size
    return kept, dropped


@dataclass
class Heartbeat:
    """The command's heartbeat: ``timeout`` seconds (None: not enforced, beats only carry
    the status). The first deadline counts from the start of the command."""

    timeout: float | None
    started: float = 0.0
    last_beat: float | None = None
    beats: int = 0
    status: dict[str, str] = field(default_factory=dict)

    def start(self, now: float) -> None:
        self.started = now
        self.last_beat = None
        self.beats = 0
        self.status = {}

    def take(self, line: str, now: float) -> bool:
        """Record one beat line; True if the status payload changed."""
        self.last_beat = now
        self.beats += 1
        status = parse_beat(line)
        if status and status != self.status:
            self.status = status
            return True
        return False

    def deadline(self) -> float:
        if self.timeout is None:
            return math.inf
        return (self.last_beat if self.last_beat is not None else self.started) + self.timeout

    def overdue(self, now: float) -> bool:
        return now >= self.deadline()

    def silence(self, now: float) -> float:
        """Seconds since the last beat (or the start)."""
        return now - (self.last_beat if self.last_beat is not None else self.started)


@dataclass
class HealthChecks:
    """Results of the periodic checks (``--health-cmd``, ``--health-port``): the command is
    unhealthy after ``retries`` failures in a row; one success resets the count."""

    retries: int = 3
    consecutive: int = 0
    last_error: str = ""

    def result(self, ok: bool, error: str = "") -> bool:
        """Record one check's result; True if the command is now unhealthy."""
        if ok:
            self.consecutive = 0
            self.last_error = ""
            return False
        self.consecutive += 1
        self.last_error = error
        return self.unhealthy

    @property
    def unhealthy(self) -> bool:
        return self.retries > 0 and self.consecutive >= self.retries
