"""Fencing for protected resources: reject writes that carry a stale fencing token.

A paused or partitioned holder may act after its lease has passed to someone else
(docs/guarantees.md, guarantee 2). A resource that remembers the highest token it has seen
per lease name and refuses older ones is safe even then::

    guard = FencingGuard()

    def write(name: str, token: int, data: bytes) -> None:
        guard.check(name, token)   # raises StaleToken if a newer holder already wrote
        ...                        # perform the write

The check and the record are one atomic step (thread-safe). Equal tokens pass: the current
holder may write many times. For a resource in another process, keep the highest token next
to the data and compare in the same transaction as the write.
"""

from __future__ import annotations

import threading

from raftlease.client._common import check_token_value
from raftlease.client.errors import StaleToken

__all__ = ["FencingGuard", "StaleToken"]


class FencingGuard:
    """Remembers the highest fencing token seen per lease name; rejects older tokens."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._highest: dict[str, int] = {}

    def check(self, name: str, token: int) -> None:
        """Raise :class:`StaleToken` if ``token`` is lower than the highest seen for ``name``;
        otherwise record it (the highest becomes ``max(highest, token)``)."""
        token = check_token_value(token)
        with self._lock:
            highest = self._highest.get(name)
            if highest is not None and token < highest:
                raise StaleToken(name, token, highest)
            self._highest[name] = token

    def highest(self, name: str) -> int | None:
        """The highest token accepted for ``name``, or None if none was seen."""
        with self._lock:
            return self._highest.get(name)

    def __repr__(self) -> str:
        with self._lock:
            return f"FencingGuard({self._highest!r})"
