"""Named failpoints for fault injection (etcd gofail's analogue). Off unless configured.

``RAFTLEASE_FAILPOINTS="before-save=panic;after-save=sleep(200)"`` arms failpoints by name.
Actions: ``panic`` exits the process at once with status 137 (like SIGKILL: no cleanup, no
flush), ``sleep(MS)`` blocks the calling thread, ``off`` does nothing. Each action may be
prefixed with ``N*`` to fire only on the N-th hit (e.g. ``3*panic``).

Points: before-save, after-save (around the log/hard-state fsync), after-vote-save (a save
that carried a vote, before any reply is sent), before-send, after-commit-before-apply,
before-snapshot-save, after-snapshot-save, before-client-reply.
"""

from __future__ import annotations

import logging
import os
import re
import time

log = logging.getLogger("raftlease.failpoints")

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


_points = _parse(os.environ.get("RAFTLEASE_FAILPOINTS", ""))
enabled = bool(_points)


def hit(name: str) -> None:
    """Evaluate failpoint ``name`` (cheap when nothing is armed: check ``enabled`` first)."""
    p = _points.get(name)
    if p is None or p.action == "off":
        return
    p.hits += 1
    if p.nth and p.hits != p.nth:
        return
    if p.action == "panic":
        log.warning("failpoint %s: panic", name)
        logging.shutdown()
        os._exit(137)
    if p.action == "sleep":
        time.sleep(p.sleep_ms / 1000.0)
