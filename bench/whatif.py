"""What-if experiments: monkeypatches applied by bench/_serve.py to estimate the gain of a
proposed optimization before anyone writes it. Never used by ``make bench``'s default run.

    RAFTLEASE_BENCH_WHATIF=asyncio,nofsync

  asyncio            run the server on asyncio's own event loop instead of uvloop (what it did
                     before 2026-12-01; the same as RAFTLEASE_EVENT_LOOP=asyncio).
  election_margin    draw the randomized election timeout from [min + 3, max) ticks instead of
                     [min, max): a candidate then never asks for (pre-)votes while a voter's
                     leader stickiness (``ticks_since_leader < election_ticks_min``) can still
                     refuse it because its last heartbeat arrived a tick later.
  nofsync            SQLite ``synchronous=OFF``: NOT durable; shows what fsync costs in total.
  malloc_arenas2     glibc ``mallopt(M_ARENA_MAX, 2)`` before any thread starts: fewer malloc
                     arenas for gRPC's threads (W6 memory).
"""

from __future__ import annotations

import os
import sys
from typing import Any


def install(names: list[str]) -> None:
    for n in names:
        if n == "asyncio":
            os.environ["RAFTLEASE_EVENT_LOOP"] = "asyncio"
        elif n == "malloc_arenas2":
            import ctypes

            ctypes.CDLL("libc.so.6").mallopt(-8, 2)  # M_ARENA_MAX
        elif n == "nofsync":
            _nofsync()
        elif n == "election_margin":
            _election_margin()
        elif n:
            print(f"whatif: unknown experiment {n!r}", file=sys.stderr)


def _nofsync() -> None:
    from raftlease.storage import sqlite as st

    orig_open = st.SqliteStorage._open

    def _open(self: Any, conn: Any) -> None:
        orig_open(self, conn)
        conn.execute("PRAGMA synchronous=OFF")

    st.SqliteStorage._open = _open  # type: ignore[method-assign]


def _election_margin() -> None:
    from raftlease.core.raft import RaftCore

    def _random_election_ticks(self: Any) -> int:
        c = self.config
        return int(
            self.rng.randrange(
                min(c.election_ticks_min + 3, c.election_ticks_max - 1), c.election_ticks_max
            )
        )

    RaftCore._random_election_ticks = _random_election_ticks  # type: ignore[method-assign]
