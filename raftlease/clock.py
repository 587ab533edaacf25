"""The Clock seam: the driver's only source of time. Layer L2.

Only local durations are measured with it; no reading is ever sent to another node
(PySyncObj's wall-clock lease timestamps are the pitfall this avoids).

Every decision that a lease or the leader lease is still good (the server's :class:`Clock`,
the clients' ``Lease.is_valid`` / ``time_left`` / ``valid_until`` and the send times they are
measured from) reads :func:`boot_monotonic`: on Linux ``CLOCK_BOOTTIME``, which keeps counting
while the machine is suspended, where ``CLOCK_MONOTONIC`` (``time.monotonic``) stops. A process
that wakes from a suspend therefore sees its deadlines as passed instead of believing a lease
the rest of the cluster has long given away. Timers (asyncio/uvloop ``call_later``,
``threading.Event.wait``, ``time.sleep``) keep their own monotonic clock: only how long to
sleep is derived from this clock, never whether something is still valid.
"""

from __future__ import annotations

import functools
import os
import time
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable


def _boot_clock(clock_id: int | None) -> Callable[[], float]:
    """A reader of ``clock_id`` if this system can read it, else ``time.monotonic``."""
    if clock_id is None:
        return time.monotonic
    try:
        time.clock_gettime(clock_id)
    except OSError:  # the constant exists but the kernel refuses it
        return time.monotonic
    return functools.partial(time.clock_gettime, clock_id)  # C-level call: ~60 ns a read


_read_boot_clock = _boot_clock(getattr(time, "CLOCK_BOOTTIME", None))

#: Which clock :func:`boot_monotonic` reads: ``"CLOCK_BOOTTIME"`` or ``"time.monotonic"``.
BOOT_CLOCK_NAME = "time.monotonic" if _read_boot_clock is time.monotonic else "CLOCK_BOOTTIME"


def boot_monotonic() -> float:
    """Seconds on a clock that never goes backwards and keeps counting during suspend.

    ``time.clock_gettime(time.CLOCK_BOOTTIME)`` on Linux; ``time.monotonic()`` where there is
    no ``CLOCK_BOOTTIME`` (then whether suspend is counted is that platform's monotonic
    clock's business). The clients and the server both read it; the clients look it up as
    ``raftlease.clock.boot_monotonic`` at call time, so a test harness can replace this one
    name to skew or pin a client's clock.
    """
    return _read_boot_clock()


class Clock(Protocol):
    rate: float  # how fast this clock runs against real time (1.0 = exact)

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards."""
        ...


class MonotonicClock:
    """:func:`boot_monotonic` (CLOCK_BOOTTIME on Linux): the production clock."""

    rate = 1.0

    def monotonic(self) -> float:
        return boot_monotonic()


class SkewedClock:
    """:func:`boot_monotonic` running at ``rate`` times real time (docs/fault-matrix.md rows 15-16).

    ``RAFTLEASE_CLOCK_RATE=1.01`` makes a server's clock 1 % fast. Rates within the configured
    ``max_drift`` must be harmless; rates beyond it may break mutual exclusion by design.
    """

    def __init__(self, rate: float) -> None:
        if rate <= 0:
            raise ValueError(f"clock rate must be positive, got {rate}")
        self.rate = rate
        self._base = boot_monotonic()

    def monotonic(self) -> float:
        return self._base + (boot_monotonic() - self._base) * self.rate


class ManualClock:
    """A clock that moves only when told to (tests)."""

    rate = 1.0

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def clock_from_env() -> Clock:
    """The production clock, or a skewed one if ``RAFTLEASE_CLOCK_RATE`` is set."""
    raw = os.environ.get("RAFTLEASE_CLOCK_RATE", "")
    if raw:
        return SkewedClock(float(raw))
    return MonotonicClock()
