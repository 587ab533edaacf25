"""Late heartbeats: a heartbeat unanswered for half an interval is followed by another.

At the server's timing (10 ms ticks, a heartbeat every 10 ticks, a 14-tick leader lease) a
follower that answers only heartbeats (its disk stalled: the save window admits nothing
else) keeps the leader's lease only if each answer arrives within 4 ticks of its heartbeat.
With a late beat at half the interval an answer may take up to 9 ticks.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import pytest

from raftlease.config import RaftConfig
from raftlease.core import AppendEntries, Message, RaftCore, TimeoutNow
from raftlease.types import NodeId, Role

if TYPE_CHECKING:
    from collections.abc import Callable

A, B, C = NodeId("a"), NodeId("b"), NodeId("c")


def _server_timed_cluster() -> dict[NodeId, RaftCore]:
    ids = (A, B, C)
    return {
        i: RaftCore(
            RaftConfig(i, ids, election_ticks_min=20, election_ticks_max=40, heartbeat_ticks=10),
            random.Random(i),
        )
        for i in ids
    }


def _out(core: RaftCore) -> list[Message]:
    rd = core.ready()
    core.advance(rd)
    return list(rd.messages)


def _run(
    delay: int, ticks: int, patch: Callable[[RaftCore], None] | None = None
) -> tuple[list[bool], int]:
    """Elect ``a``, then tick every node ``ticks`` times with each of ``a``'s messages
    reaching its follower ``delay`` ticks after it left and the answers coming straight back.
    Returns whether ``a`` held a valid leader lease after each tick, and how many
    AppendEntries reached ``b``."""
    cores = _server_timed_cluster()
    a = cores[A]
    if patch is not None:
        patch(a)
    a.step(TimeoutNow(0, B, A))
    for m in _out(a):
        cores[m.dst].step(m)
    for i in (B, C):
        for m in _out(cores[i]):
            a.step(m)
    assert a.role is Role.LEADER
    in_flight: list[tuple[int, Message]] = [(0, m) for m in _out(a)]
    valid = []
    appends_to_b = 0
    for now in range(1, ticks + 1):
        for core in cores.values():
            core.tick()
        in_flight += [(now + delay, m) for m in _out(a)]
        due = [m for at, m in in_flight if at <= now]
        in_flight = [(at, m) for at, m in in_flight if at > now]
        for m in due:
            appends_to_b += isinstance(m, AppendEntries) and m.dst == B
            cores[m.dst].step(m)
        for i in (B, C):
            for answer in _out(cores[i]):
                a.step(answer)
        in_flight += [(now + delay, m) for m in _out(a)]
        valid.append(a.lease_valid())
    assert a.role is Role.LEADER
    return valid, appends_to_b


def test_answers_late_by_more_than_the_lease_margin_keep_the_lease() -> None:
    valid, _ = _run(delay=7, ticks=300)
    first = valid.index(True)
    assert all(valid[first:]), f"lease lapsed at ticks {[i for i, v in enumerate(valid) if not v]}"


def test_without_late_beats_the_same_delay_lapses_the_lease() -> None:
    """The control: one heartbeat per interval, as before."""

    def no_late_beats(core: RaftCore) -> None:
        core._late_beat_tick = lambda p: -1  # type: ignore[method-assign]

    valid, _ = _run(delay=7, ticks=300, patch=no_late_beats)
    first = valid.index(True)
    assert not all(valid[first:])


@pytest.mark.parametrize("delay", [0, 1])
def test_answers_on_time_bring_no_extra_heartbeats(delay: int) -> None:
    """Idle, with answers within half an interval, a follower gets one heartbeat per
    interval: the late beat costs nothing when nothing is late."""
    _, appends_to_b = _run(delay=delay, ticks=200)
    assert appends_to_b == pytest.approx(20, abs=2)


def test_late_answers_bring_one_extra_heartbeat_per_interval() -> None:
    _, appends_to_b = _run(delay=7, ticks=200)
    assert appends_to_b == pytest.approx(40, abs=3)
