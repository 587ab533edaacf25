"""A leader whose loop stalls in a slow fsync, on real Node loops (docs/safety.md, L2).

Three in-process nodes (real ``Node.run`` loops, MemoryStorage, an in-memory transport, one
ManualClock). The leader A's ``save`` blocks while the others elect B; appends on the B-C link
are lost, so B's no-op reaches only A, whose inbox holds it. When A's save returns, its loop
must catch its ticks up before it steps B's message: then A stays sticky to B and cannot be
elected for term 3 while B's lease is valid. The old ordering (a leader stepped every queued
message before catching up) is planted through ``RaftCore.steps_before_ticks`` to show the
test has teeth.

Since the save window (``Node._while_saving``) a slow fsync no longer stalls a node's loop:
A would keep leading through it (tests/node/test_lease_lapses.py). So this test puts the old
blocking wait back (``blocking_save``): it stands for a loop that stalls outright, as under a
long pause of the process, which is what rule L2 is about.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import TYPE_CHECKING

from raftlease.clock import ManualClock
from raftlease.core import AppendEntries, AppendEntriesResponse, Message, RaftCore
from raftlease.fsm.commands import Acquire
from raftlease.node import Node, NodeConfig
from raftlease.storage.memory import MemoryStorage
from raftlease.transport.base import MemoryTransport
from raftlease.types import NodeId, Role

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import pytest

    from raftlease.core.messages import Entry, Snapshot
    from raftlease.core.ready import HardState

TICK = 0.01
IDS = (NodeId("n1"), NodeId("n2"), NodeId("n3"))


class GatedStorage(MemoryStorage):
    """MemoryStorage whose save blocks (in the node's fsync thread) while the gate is shut."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()
        self.blocked = threading.Event()

    def save(
        self, hard_state: HardState | None, snapshot: Snapshot | None, entries: Sequence[Entry]
    ) -> None:
        if not self.gate.is_set():
            self.blocked.set()
            self.gate.wait(timeout=30)
        super().save(hard_state, snapshot, entries)


class LossyTransport(MemoryTransport):
    def __init__(self) -> None:
        super().__init__()
        self.lose: Callable[[Message], bool] = lambda m: False

    def send(self, messages: Sequence[Message]) -> None:
        super().send([m for m in messages if not self.lose(m)])


async def blocking_save(self: Node, save: asyncio.Future[None]) -> None:
    """``Node._while_saving`` as it was before the save window: the loop takes no input."""
    await save


async def play(seed: int) -> list[tuple[float, list[NodeId]]]:
    """Run the schedule; return every instant at which two nodes had a valid leader lease."""
    clock = ManualClock(100.0)
    net = LossyTransport()
    peers = {i: f"127.0.0.1:{7100 + k}" for k, i in enumerate(IDS)}
    nodes: dict[NodeId, Node] = {}
    stores: dict[NodeId, GatedStorage] = {}
    for k, i in enumerate(IDS):
        cfg = NodeConfig(node_id=i, cluster_id="t", peers=peers, tick_s=TICK, seed=seed * 10 + k)
        stores[i] = GatedStorage()
        nodes[i] = Node(cfg, stores[i], net, clock)
        net.routes[i] = nodes[i].receive
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(n.run()) for n in nodes.values()]
    overlaps: list[tuple[float, list[NodeId]]] = []

    async def advance(seconds: float, real_s: float = 0.0) -> None:
        """``real_s``: also let this much real time pass per step, for the set-up phases
        that wait on the nodes' fsync threads (a loaded machine may not run them within a
        few loop turns)."""
        end = clock.now + seconds
        while clock.now < end - 1e-9:
            clock.advance(TICK / 2)
            for n in nodes.values():
                n._wake.set()
            for _ in range(8):
                await asyncio.sleep(0)
            if real_s:
                await asyncio.sleep(real_s)
            holders = [i for i, n in nodes.items() if n.lease_ok()]
            if len(holders) > 1:
                overlaps.append((clock.now, holders))

    try:
        a: NodeId | None = None
        for _ in range(400):
            await advance(TICK, real_s=0.001)
            a = next((i for i, n in nodes.items() if n.lease_ok()), None)
            if a is not None:
                break
        assert a is not None, "no leader"
        await advance(0.3)
        assert nodes[a].lease_ok()
        b_or_c = [i for i in IDS if i != a]
        # Appends between the other two are lost from now on; A's save blocks.
        net.lose = lambda m: isinstance(m, AppendEntries) and {m.src, m.dst} == set(b_or_c)
        stores[a].gate.clear()
        pending = loop.create_task(nodes[a].propose(Acquire("job", "x", 1000, False, "r1")))
        for _ in range(100):
            await advance(TICK, real_s=0.001)
            if stores[a].blocked.is_set():
                break
        assert stores[a].blocked.is_set(), "A's loop did not reach its save"
        b: NodeId | None = None
        for k in range(300):
            # Real time only if B and C are slow to elect (their vote saves wait for their
            # fsync threads on a loaded machine): the planted-bug test needs this phase's
            # usual timing to show its overlap.
            await advance(TICK, real_s=0.001 if k >= 100 else 0.0)
            b = next((i for i in b_or_c if nodes[i].core.role is Role.LEADER), None)
            if b is not None:
                break
        assert b is not None, "no new leader while A stalled"
        # From now on the A-B link carries only A's answers to B (a lossy link).
        lose_before = net.lose
        net.lose = lambda m: (
            lose_before(m)
            or ({m.src, m.dst} == {a, b} and not isinstance(m, AppendEntriesResponse))
        )
        stores[a].gate.set()  # A's fsync returns: its loop resumes
        await advance(1.0)
        pending.cancel()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await pending  # NotLeader if A lost office first: retrieved, not logged
        return overlaps
    finally:
        for i, n in nodes.items():
            stores[i].gate.set()
            n.stop()
        for t in tasks:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await t


async def test_stalled_leader_never_gives_two_leader_leases(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Node, "_while_saving", blocking_save)
    for seed in range(4):
        overlaps = await play(seed)
        assert overlaps == [], f"seed {seed}: two valid leader leases at {overlaps[:3]}"


async def test_old_ordering_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Teeth: plant the old ordering (a leader steps EVERY queued message before its ticks)."""

    def old_rule(self: RaftCore, m: Message) -> bool:
        return self.role is Role.LEADER

    monkeypatch.setattr(RaftCore, "steps_before_ticks", old_rule)
    monkeypatch.setattr(Node, "_while_saving", blocking_save)
    # The fsync thread's timing varies, so not every seed overlaps: 5-6 of 8 on the project's
    # VM in November, 10 of 64 on a faster hour of it (2026-12-03; 0-2 of 8, so 8 seeds let
    # CI miss it once). Up to 64 seeds, stopping at the first overlap: a miss of all of them
    # is then vanishingly rare (~1e-5 at 1 in 6), and a typical run plays a handful.
    for seed in range(64):
        try:
            if await play(seed):
                return
        except AssertionError:
            continue  # the schedule's set-up did not happen (no stall reached): no verdict
    raise AssertionError("the planted old ordering went unnoticed in 64 seeds")
