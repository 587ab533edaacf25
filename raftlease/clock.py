"""The Clock seam: the driver's only source of time. Layer L2.

Only local durations are measured with it; no reading is ever sent to another node
(PySyncObj's wall-clock lease timestamps are the pitfall this avoids).
"""

from __future__ import annotations

import os
import time
from typing import Protocol


class Clock(Protocol):
    rate: float  # how fast this clock runs against real time (1.0 = exact)

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards."""
        ...


class MonotonicClock:
    """``time.monotonic``: the production clock."""

    rate = 1.0

    def monotonic(self) -> float:
        return time.monotonic()


class SkewedClock:
    """A monotonic clock running at ``rate`` times real time (TESTING.md rows 15-16).

    ``RAFTLEASE_CLOCK_RATE=1.01`` makes a server's clock 1 % fast. Rates within the configured
    ``max_drift`` must be harmless; rates beyond it may break mutual exclusion by design.
    """

    def __init__(self, rate: float) -> None:
        if rate <= 0:
            raise ValueError(f"clock rate must be positive, got {rate}")
        self.rate = rate
        self._base = time.monotonic()

    def monotonic(self) -> float:
        return self._base + (time.monotonic() - self._base) * self.rate


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
