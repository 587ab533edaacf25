"""Named failpoints for fault injection (etcd gofail's analogue). Off unless configured.

``RAFTLEASE_FAILPOINTS="before-save=panic;after-save=sleep(200)"`` arms failpoints by name.
Actions: ``panic`` exits the process at once with status 137 (like SIGKILL: no cleanup, no
flush), ``sleep(MS)`` blocks the calling thread, ``off`` does nothing. Each action may be
prefixed with ``N*`` to fire only on the N-th hit (e.g. ``3*panic``).

Points (:data:`POINTS`): before-save, after-save (around the log/hard-state fsync),
after-vote-save (a save that carried a vote, before any reply is sent), before-send,
after-commit-before-apply, before-snapshot-save, after-snapshot-save, before-client-reply.

Nothing in the production path reads this module: ``raftlease.server.serve`` parses
``RAFTLEASE_FAILPOINTS`` with :meth:`Failpoints.from_env` and, only when something is armed,
wraps the node's storage, transport and observer in ``raftlease.testing.faults``, which hit
the points.
"""

from __future__ import annotations

import logging
import os
import re
import time
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

log = logging.getLogger("raftlease.failpoints")

ENV_VAR: Final = "RAFTLEASE_FAILPOINTS"

POINTS: Final = (
    "before-save",
    "after-save",
    "after-vote-save",
    "before-send",
    "after-commit-before-apply",
    "before-snapshot-save",
    "after-snapshot-save",
    "before-client-reply",
)

_ACTION = re.compile(r"^(?:(\d+)\*)?(panic|off|sleep\((\d+)\))$")


class _Point:
    __slots__ = ("action", "hits", "nth", "sleep_ms")

    def __init__(self, action: str, nth: int, sleep_ms: int) -> None:
        self.action = action
        self.nth = nth
        self.sleep_ms = sleep_ms
        self.hits = 0


def _parse(spec: str) -> dict[str, _Point]:
    points: dict[str, _Point] = {}
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        name, sep, action = part.partition("=")
        m = _ACTION.match(action.strip())
        if not sep or m is None:
            raise ValueError(
                f"bad failpoint {part!r}: expected NAME=panic, NAME=sleep(MS) or NAME=N*ACTION"
            )
        kind = "sleep" if m.group(3) else m.group(2)
        points[name.strip()] = _Point(kind, int(m.group(1) or 0), int(m.group(3) or 0))
    return points


class Failpoints:
    """The failpoints armed in this process (from a spec like ``RAFTLEASE_FAILPOINTS``'s).

    False when nothing is armed (only ``off`` counts as nothing). A name that is not one of
    :data:`POINTS` is accepted (and logged once): it is simply never hit.
    """

    __slots__ = ("_points", "_spec")

    def __init__(self, spec: str = "") -> None:
        """Raises ValueError for a malformed spec."""
        self._spec = spec.strip()
        self._points = {n: p for n, p in _parse(spec).items() if p.action != "off"}
        for name in sorted(set(self._points) - set(POINTS)):
            log.warning("failpoint %r is not a known point (%s): never hit", name, POINTS)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Failpoints:
        """The failpoints ``RAFTLEASE_FAILPOINTS`` arms (ValueError if malformed)."""
        return cls((os.environ if environ is None else environ).get(ENV_VAR, ""))

    def __bool__(self) -> bool:
        return bool(self._points)

    def __str__(self) -> str:
        return self._spec

    def armed(self, name: str) -> bool:
        return name in self._points

    def hit(self, name: str, before_panic: Callable[[], None] | None = None) -> None:
        """Evaluate failpoint ``name``: count the hit, then panic or sleep if it is its turn.

        ``before_panic`` runs right before a panic exits the process (to write a log line the
        caller would have written next)."""
        p = self._points.get(name)
        if p is None:
            return
        p.hits += 1
        if p.nth and p.hits != p.nth:
            return
        if p.action == "panic":
            if before_panic is not None:
                before_panic()
            log.warning("failpoint %s: panic", name)
            logging.shutdown()
            os._exit(137)
        if p.action == "sleep":
            time.sleep(p.sleep_ms / 1000.0)


__all__ = ["ENV_VAR", "POINTS", "Failpoints"]
