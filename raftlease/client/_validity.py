"""The validity arithmetic: the safety core of the client (docs/safety.md, C1).

Pure: every method takes the current time (``raftlease.clock.boot_monotonic`` in the real
clients, the simulated client's own clock in the simulator). The lock only makes one
:class:`LeaseTimer` safe to share between a keepalive thread and the caller's thread.
"""

from __future__ import annotations

import math
import threading

from raftlease.errors import ConfigError

__all__ = ["LeaseTimer", "effective_ttl", "lost_margin"]


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
            self.valid_until = max(self.valid_until, self.extension(t_send))
            self.last_send = max(self.last_send, t_send)
            return True

    def extension(self, t_send: float) -> float:
        """How far a success sent at ``t_send`` carries validity: ``t_send +
        effective_ttl(ttl)``. (The simulator overrides it to plant client bugs.)"""
        return t_send + effective_ttl(self.ttl, self.max_drift)

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
