"""The asyncio driver (raftlease/node.py) on three in-process nodes.

Real Node objects, real Ready loops, MemoryStorage and an in-memory transport; one shared
ManualClock so the tests decide when time passes. Covers the runtime halves of the safety
argument in docs/safety.md: (L2) the leader-lease deadline is tick arithmetic that a stalled
loop cannot stretch, (S2) a new leader restarts every lease's deadline when it takes office,
renewals need the leader lease, and expiry is proposed once a deadline passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from typing import TYPE_CHECKING

import pytest

from raftlease.clock import ManualClock
from raftlease.errors import NotLeader
from raftlease.fsm.commands import Acquire
from raftlease.fsm.leases import Granted, Queued
from raftlease.node import Node, NodeConfig, NoLeaderLease
from raftlease.storage.memory import MemoryStorage
from raftlease.transport.base import MemoryTransport
from raftlease.types import NodeId

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

TICK = 0.01
IDS = [NodeId("n1"), NodeId("n2"), NodeId("n3")]


class Cluster:
    def __init__(self) -> None:
        self.clock = ManualClock(100.0)
        self.net = MemoryTransport()
        self.nodes: dict[NodeId, Node] = {}
        self.tasks: dict[NodeId, asyncio.Task[None]] = {}
        peers = {i: f"127.0.0.1:{7000 + k}" for k, i in enumerate(IDS)}
        for k, i in enumerate(IDS):
            cfg = NodeConfig(node_id=i, cluster_id="t", peers=peers, tick_s=TICK, seed=k)
            node = Node(cfg, MemoryStorage(), self.net, self.clock)
            self.nodes[i] = node
            self.net.routes[i] = node.receive

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for i, node in self.nodes.items():
            self.tasks[i] = loop.create_task(node.run())

    async def advance(self, seconds: float, step: float = TICK) -> None:
        """Move the shared clock forward in small steps, letting every loop run between."""
        end = self.clock.now + seconds
        while self.clock.now < end:
            self.clock.advance(step)
            for node in self.nodes.values():
                node._wake.set()
            for _ in range(5):
                await asyncio.sleep(0)
            await asyncio.sleep(0.0005)

    async def leader(self, within: float = 2.0) -> Node:
        end = self.clock.now + within
        while self.clock.now < end:
            for node in self.nodes.values():
                if node.lease_ok():
                    return node
            await self.advance(TICK)
        raise AssertionError("no leader with a valid lease")

    async def kill(self, node_id: NodeId) -> None:
        self.net.routes.pop(node_id, None)
        self.net.blocked |= {(node_id, other) for other in IDS}
        task = self.tasks.pop(node_id)
        self.nodes.pop(node_id).stop()
        with contextlib.suppress(Exception):
            await task

    async def close(self) -> None:
        for i in list(self.tasks):
            await self.kill(i)


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    c = Cluster()
    c.start()
    yield c
    await c.close()


async def acquire(node: Node, name: str, ttl_ms: int = 2000) -> Granted:
    result = await asyncio.wait_for(
        node.propose(Acquire(name, "holder-a", ttl_ms, False, f"req-{name}")), 5
    )
    assert isinstance(result, Granted)
    return result


async def test_leader_lease_deadline_is_tick_arithmetic(cluster: Cluster) -> None:
    leader = await cluster.leader()
    core = leader.core
    assert core.lease_valid()
    expected = leader._t0 + (core.lease_start_tick() + core.lease_ticks) * TICK
    assert leader.lease_deadline == pytest.approx(expected)
    # (L2): the lease ends when the CLOCK passes the deadline, even if the loop never runs
    # again (GC pause, SIGSTOP, a stuck fsync): lease_ok() reads the clock itself.
    cluster.clock.now = leader.lease_deadline - 1e-6
    assert leader.lease_ok()
    cluster.clock.now = leader.lease_deadline
    assert not leader.lease_ok()
    with pytest.raises(NoLeaderLease, match="leader lease is not valid"):
        leader.require_lease()


async def test_followers_refuse_lease_operations_with_a_hint(cluster: Cluster) -> None:
    leader = await cluster.leader()
    follower = next(n for n in cluster.nodes.values() if n is not leader)
    await cluster.advance(0.1)
    with pytest.raises(NoLeaderLease, match=f"not the leader; leader is {leader.id}") as e:
        follower.require_lease()
    assert e.value.leader_hint == leader.cfg.peers[leader.id]
    with pytest.raises(NotLeader):
        await follower.propose(Acquire("x", "h", 1000, False, "r"))


async def test_renewal_extends_from_now_and_expiry_is_proposed_after_ttl(
    cluster: Cluster,
) -> None:
    leader = await cluster.leader()
    granted = await acquire(leader, "billing", ttl_ms=1000)
    lease_id = granted.lease.lease_id
    t_grant = leader.deadlines[lease_id] - 1.0
    await cluster.advance(0.5)
    assert leader.renew(lease_id, {"queue": "3"}) is not None
    assert leader.deadlines[lease_id] == pytest.approx(cluster.clock.now + 1.0)
    assert leader.deadlines[lease_id] > t_grant + 1.0
    assert leader.health[lease_id] == {"queue": "3"}
    # No more renewals: the leader expires it about one TTL later (its clock), not before.
    deadline = leader.deadlines[lease_id]
    while leader.table.get("billing") is not None:
        assert cluster.clock.now < deadline + 0.5, "lease was not expired after its TTL"
        await cluster.advance(TICK)
    assert cluster.clock.now >= deadline
    assert leader.renew(lease_id, None) is None  # gone: the server answers NOT_FOUND


async def test_new_leader_restarts_every_deadline(cluster: Cluster) -> None:
    old = await cluster.leader()
    granted = await acquire(old, "billing", ttl_ms=2000)
    lease_id = granted.lease.lease_id
    await cluster.advance(1.0)
    assert old.renew(lease_id, None) is not None
    last_renewal = cluster.clock.now
    await cluster.kill(old.id)
    new = await cluster.leader(within=3.0)
    assert new is not old
    office = cluster.clock.now
    # (S2): every lease counts as renewed when the new leader took office, so its deadline
    # is at least a TTL after the last renewal the old leader served.
    assert new.deadlines[lease_id] >= last_renewal + 2.0
    assert new.deadlines[lease_id] == pytest.approx(office + 2.0, abs=0.1)
    assert new.table.get("billing") is not None


async def test_read_barrier_waits_for_lease_and_applies(cluster: Cluster) -> None:
    leader = await cluster.leader()
    await acquire(leader, "a")
    barrier = asyncio.get_running_loop().create_task(leader.read_barrier())
    while not barrier.done():
        await cluster.advance(TICK)
    barrier.result()
    assert leader.applied_index >= leader.core.commit_index - 1
    assert leader.table.get("a") is not None
    assert not math.isinf(leader.lease_deadline)


async def test_new_leader_cancels_inherited_waits_nobody_waits_for(cluster: Cluster) -> None:
    """A queued acquire whose client waited on the old leader (its wait timer died with it)
    is cancelled by the new leader after the grace period, unless the client re-attached
    there (a retry with the same request id): otherwise the name would later be handed to
    nobody and stay blocked for a TTL (a "ghost" handover)."""
    old = await cluster.leader()
    await acquire(old, "billing", ttl_ms=60_000)
    for rid in ("gone", "back"):
        queued = await asyncio.wait_for(
            old.propose(Acquire("billing", f"holder-{rid}", 1000, True, rid)), 5
        )
        assert isinstance(queued, Queued)
    await cluster.kill(old.id)
    new = await cluster.leader(within=3.0)
    assert [w.request_id for w in new.table.waiters("billing")] == ["gone", "back"]
    # "back" retries on the new leader with the same request id and waits there.
    back = asyncio.ensure_future(
        new.acquire(Acquire("billing", "holder-back", 1000, True, "back"), 60.0)
    )
    await cluster.advance(new.cfg.inherited_wait_grace_s - 0.5)
    assert [w.request_id for w in new.table.waiters("billing")] == ["gone", "back"]
    await cluster.advance(1.0)
    assert [w.request_id for w in new.table.waiters("billing")] == ["back"]
    assert not back.done()
    back.cancel()  # the client goes away: its wait leaves the queue too
    with pytest.raises(asyncio.CancelledError):
        await back
    await cluster.advance(0.5)
    assert new.table.waiters("billing") == ()


async def renewal_refused_once_the_leader_lease_ran_out(cluster: Cluster) -> None:
    leader = await cluster.leader()
    granted = await acquire(leader, "billing", ttl_ms=5000)
    assert leader.renew(granted.lease.lease_id, None) is not None
    # The loop does not run again; the clock passes the leader lease's deadline (a stalled
    # loop, or followers gone quiet): the renewal must be refused, not served.
    cluster.clock.now = leader.lease_deadline
    with pytest.raises(NoLeaderLease, match="leader lease is not valid"):
        leader.renew(granted.lease.lease_id, None)


async def test_renewal_needs_a_valid_leader_lease(cluster: Cluster) -> None:
    await renewal_refused_once_the_leader_lease_ran_out(cluster)


async def test_planted_renewal_without_the_lease_check_is_caught(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Teeth: plant Node.renew answering without checking the leader lease."""

    def renew_unchecked(self: Node, lease_id: int, health: dict[str, str] | None) -> object:
        return self.keeper.renew(self.table, lease_id, self.clock.monotonic(), health)

    monkeypatch.setattr(Node, "renew", renew_unchecked)
    with pytest.raises(pytest.fail.Exception, match="DID NOT RAISE"):
        await renewal_refused_once_the_leader_lease_ran_out(cluster)
