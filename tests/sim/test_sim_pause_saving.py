"""A node stopped (SIGSTOP) in the middle of a slow save (SimFaults.pause inside
SimDriver._slow_save's window).

The process does nothing while stopped: no ticks, no messages stepped, nothing sent, even what
its save window would admit. The fsync it started runs on in the kernel and ends on time: a
crash after that keeps the save, a crash before it loses it. The node learns of the finished
save only when it resumes: it then finishes the Ready (its post-save answers go out) and
catches up as after any pause. Resumed before the save ends, it goes on with its save window.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from raftlease.core.messages import AppendEntriesResponse
from raftlease.testing import SimCluster

if TYPE_CHECKING:
    from raftlease.core.messages import Message
    from raftlease.testing.sim.model import SimNode

MS = 1_000
SAVE_US = 200 * MS


class Setup:
    """A 3-node cluster whose follower ``f`` has just begun a slow save of entry ``idx``;
    ``sent`` records (time, message) for every message ``f`` sends from then on."""

    def __init__(self, seed: int) -> None:
        sim = SimCluster(3, seed, propose_every_us=None)
        assert sim.run_until_true(lambda: bool(sim.lease_holders()), 2_000 * MS)
        lead = sim.lease_holders()[0]
        sim.run_for(50 * MS)
        f = next(n for n in sim.nodes if n.id != lead)
        # Slow only for this save: after the pause, the node saves at once again.
        sim.slow_disk([f.id], 300 * MS, (SAVE_US, SAVE_US))
        where = sim.propose()
        assert where is not None
        assert sim.run_until_true(lambda: f.saving is not None, 100 * MS)
        assert f.saving is not None
        assert any(e.index == where[0] for e in f.saving.entries)
        self.sim = sim
        self.f: SimNode = f
        self.idx = where[0]
        self.save_ends = sim.now + SAVE_US
        self.sent: list[tuple[int, Message]] = []
        send = sim._send

        def spy(m: Message) -> None:
            if m.src == f.id:
                self.sent.append((sim.now, m))
            send(m)

        sim._send = spy  # type: ignore[method-assign]

    def acks(self) -> list[tuple[int, Message]]:
        """f's answers that acknowledge the entry it was saving."""
        return [
            (t, m)
            for t, m in self.sent
            if isinstance(m, AppendEntriesResponse) and m.success and m.match_index >= self.idx
        ]

    def end(self) -> None:
        self.sim.final_heal()
        self.sim.check_liveness()


def phase(f: SimNode) -> tuple[bool, bool, bool]:
    """(stopped, saving, its fsync ended)"""
    return f.stopped, f.saving is not None, f.saved


@pytest.mark.parametrize("seed", range(4))
def test_stopped_during_save_does_nothing_until_resumed(seed: int) -> None:
    """(a) No tick, no step, no send while stopped, even after the fsync ended (it is durable
    then); (b) on resume it finishes the Ready first: the post-save ack goes out then."""
    s = Setup(seed)
    sim, f = s.sim, s.f
    core = f.core
    assert core is not None
    ticks, term, last = core.tick_count, core.term, core.last_index
    pause_us = 2 * SAVE_US
    resume_at = sim.now + pause_us
    sim.pause(f.id, pause_us)
    sim.run_until(resume_at - 1)  # the save's time has passed; still stopped
    assert (core.tick_count, core.term, core.last_index) == (ticks, term, last)
    assert s.sent == []
    assert f.missed_ticks > 0
    assert f.inbox, "the leader's messages must wait (even those a save window admits)"
    assert f.storage.last_index >= s.idx, "the fsync ran on while stopped: durable"
    assert phase(f) == (True, True, True)  # stopped, saving, the fsync ended
    sim.run_until(resume_at)
    assert not f.paused
    assert phase(f) == (False, False, False)
    acks = s.acks()
    assert acks, "the post-save ack must go out on resume"
    assert acks[0][0] == resume_at
    assert core.tick_count >= ticks + (pause_us // sim.tick_us) - 2  # the ticks caught up
    s.end()


@pytest.mark.parametrize("seed", range(4))
def test_resumed_before_save_ends_goes_on_saving(seed: int) -> None:
    """Resumed while its fsync still runs: it catches its ticks up and takes what its save
    window admits, but finishes the Ready (acks the entry) only when the save ends."""
    s = Setup(seed)
    sim, f = s.sim, s.f
    core = f.core
    assert core is not None
    ticks = core.tick_count
    pause_us = SAVE_US // 2
    resume_at = sim.now + pause_us
    sim.pause(f.id, pause_us)
    sim.run_until(resume_at - 1)
    assert core.tick_count == ticks
    assert s.sent == []
    assert phase(f) == (True, True, False)
    sim.run_until(resume_at)
    assert f.paused  # in its save window again
    assert phase(f) == (False, True, False)
    assert core.tick_count >= ticks + (pause_us // sim.tick_us) - 1
    sim.run_until(s.save_ends - 1)
    assert s.acks() == []
    assert f.saving is not None
    assert s.sent, "in its save window again: it answers the leader's heartbeats"
    assert sim.run_until_true(lambda: bool(s.acks()), 50 * MS)
    assert s.acks()[0][0] == s.save_ends
    s.end()


@pytest.mark.parametrize("seed", range(4))
def test_crash_while_stopped_before_save_ends_loses_it(seed: int) -> None:
    """(c) A crash while stopped, before the fsync ended: the save is lost, nothing was sent;
    the node restarts without the entry (and gets it again from the leader)."""
    s = Setup(seed)
    sim, f = s.sim, s.f
    sim.pause(f.id, 4 * SAVE_US)
    sim.run_until(s.save_ends - 1)
    assert s.sent == []
    assert phase(f) == (True, True, False)
    sim.crash(f.id)
    assert f.storage.last_index < s.idx, "the unfinished save must be lost"
    sim.run_for(2 * SAVE_US)  # the save's time passes while it is down: nothing happens
    assert f.storage.last_index < s.idx
    sim.restart(f.id)
    assert f.core is not None
    assert f.core.last_index < s.idx
    assert s.acks() == []
    s.end()
    assert f.storage.last_index >= s.idx


@pytest.mark.parametrize("seed", range(4))
def test_crash_while_stopped_after_save_ends_keeps_it(seed: int) -> None:
    """(c) A crash while stopped, after the fsync ended: durable, but the node never learnt
    of it: the post-save ack never went out."""
    s = Setup(seed)
    sim, f = s.sim, s.f
    sim.pause(f.id, 4 * SAVE_US)
    sim.run_until(s.save_ends)
    assert s.sent == []
    assert phase(f) == (True, True, True)
    sim.crash(f.id)
    assert f.storage.last_index >= s.idx
    sim.restart(f.id)
    assert f.core is not None
    assert f.core.last_index >= s.idx
    s.end()
