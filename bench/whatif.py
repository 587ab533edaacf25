"""What-if experiments: monkeypatches applied by bench/_serve.py to estimate the gain of a
proposed optimization before anyone writes it. Never used by ``make bench``'s default run.

    RAFTLEASE_BENCH_WHATIF=uvloop,send_before_fsync,nofsync

  uvloop             run the server on uvloop's event loop (needs ``pip install uvloop``).
  send_before_fsync  the leader sends a Ready's AppendEntries BEFORE its own fsync, which the
                     Raft thesis (§10.2.1) allows for the leader's own log entries; everything
                     else (follower acks, votes) still waits for the fsync. Safe only as a
                     leader-side reordering: the leader counts itself in the commit quorum
                     only once its own fsync is done (here: advance() runs after the save).
  election_margin    draw the randomized election timeout from [min + 3, max) ticks instead of
                     [min, max): a candidate then never asks for (pre-)votes while a voter's
                     leader stickiness (``ticks_since_leader < election_ticks_min``) can still
                     refuse it because its last heartbeat arrived a tick later.
  nofsync            SQLite ``synchronous=OFF``: NOT durable; shows what fsync costs in total.
"""

from __future__ import annotations

import inspect
import sys
from typing import Any


def install(names: list[str]) -> None:
    for n in names:
        if n == "uvloop":
            try:
                import uvloop
            except ImportError:
                print("whatif: uvloop not installed; skipped", file=sys.stderr)
                continue
            uvloop.install()
        elif n == "send_before_fsync":
            _send_before_fsync()
        elif n == "nofsync":
            _nofsync()
        elif n == "election_margin":
            _election_margin()
        elif n:
            print(f"whatif: unknown experiment {n!r}", file=sys.stderr)


def _send_before_fsync() -> None:
    from raftlease import failpoints
    from raftlease.core.messages import AppendEntries
    from raftlease.node import Node
    from raftlease.types import Role

    src = inspect.getsource(Node._handle_ready)
    for needle in ("_needs_save", "_save", "transport.send", "_apply", "advance"):
        if needle not in src:
            print(
                f"whatif: Node._handle_ready changed ({needle} missing); skipped", file=sys.stderr
            )
            return

    async def _handle_ready(self: Any, rd: Any, loop: Any) -> None:
        self.stats["readies"] += 1
        leader = self.soft.role is Role.LEADER and rd.soft_state.role is Role.LEADER
        early = ()
        if (
            leader
            and rd.entries
            and (
                rd.hard_state is None
                or (rd.hard_state.term, rd.hard_state.voted_for) == self._saved_vote
            )
        ):
            early = tuple(m for m in rd.messages if isinstance(m, AppendEntries))
            if early:
                self.transport.send(early)
        if self._needs_save(rd):
            await loop.run_in_executor(self._executor, self._save, rd)
        if failpoints.enabled:
            failpoints.hit("before-send")
        sent = {id(m) for m in early}
        rest = [m for m in rd.messages if id(m) not in sent] if sent else rd.messages
        self.transport.send(rest)
        self._apply(rd)
        self.core.advance(rd)
        self._on_soft_state(rd.soft_state)

    Node._handle_ready = _handle_ready  # type: ignore[method-assign]


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
