"""NodeMetrics (raftlease/metrics.py) on three in-process nodes.

Real Node objects and Ready loops, MemoryStorage, an in-memory transport and one ManualClock
(as in test_node.py); each node has its own CollectorRegistry, so three sets of metrics live
in one process. The levels are read at scrape time; the counters come through the node's
observer hook (raftlease/observe.py).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from prometheus_client.parser import text_string_to_metric_families

from raftlease.fsm.commands import Acquire, Release
from raftlease.fsm.leases import Granted, Queued, Released
from raftlease.metrics import NodeMetrics, start_metrics_server
from raftlease.observe import NOOP_OBSERVER

from .test_node import IDS, TICK
from .test_node import Cluster as NodeCluster

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from raftlease.types import NodeId

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Cluster(NodeCluster):
    """test_node's three in-process nodes, each with a NodeMetrics of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.metrics: dict[NodeId, NodeMetrics] = {}
        for i, node in self.nodes.items():
            assert node.observer is NOOP_OBSERVER
            self.metrics[i] = NodeMetrics(node)
            assert node.observer is self.metrics[i]

    def scrape(self, node_id: NodeId) -> Samples:
        body, ctype = self.metrics[node_id].render()
        assert ctype.startswith("text/plain")
        out: Samples = {}
        for family in text_string_to_metric_families(body.decode("utf-8")):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out


def value(samples: Samples, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    assert key in samples, f"{name}{labels} not scraped"
    return samples[key]


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    c = Cluster()
    c.start()
    yield c
    await c.close()


async def test_levels_are_read_from_the_node_at_scrape_time(cluster: Cluster) -> None:
    leader = await cluster.leader()
    await cluster.advance(0.05)  # followers learn the commit index
    m = cluster.scrape(leader.id)
    assert value(m, "raftlease_role", role="leader") == 1
    assert value(m, "raftlease_role", role="follower") == 0
    assert value(m, "raftlease_term") == leader.core.term
    assert value(m, "raftlease_commit_index") == leader.core.commit_index >= 1
    assert value(m, "raftlease_applied_index") == leader.applied_index
    assert value(m, "raftlease_leader_lease_valid") == 1
    # Exact counts depend on how the election went (a split vote is possible when the test
    # loop runs late); what must hold: it started at least the election it won.
    won = value(m, "raftlease_elections_won_total")
    assert won >= 1
    assert value(m, "raftlease_elections_started_total") >= won
    assert value(m, "raftlease_leader_changes_total") >= 1
    for node_id, node in cluster.nodes.items():
        if node is leader:
            continue
        f = cluster.scrape(node_id)
        assert value(f, "raftlease_role", role="follower") == 1
        assert value(f, "raftlease_leader_lease_valid") == 0
        assert value(f, "raftlease_leader_changes_total") >= 1  # saw the leader
        # Followers export no peer gauges; their heartbeat counters stay at zero.
        assert not any(k[0] == "raftlease_peer_last_heard_seconds" for k in f)
        assert value(f, "raftlease_heartbeats_sent_total", peer=leader.id) == 0
        assert value(m, "raftlease_peer_last_heard_seconds", peer=node_id) <= 0.2
        assert value(m, "raftlease_follower_lag_entries", peer=node_id) == 0


async def test_lease_counters_renew_margin_and_waiters(cluster: Cluster) -> None:
    leader = await cluster.leader()
    grant = await asyncio.wait_for(leader.propose(Acquire("a", "h", 2000, False, "r-a")), 5)
    assert isinstance(grant, Granted)
    other = await asyncio.wait_for(leader.propose(Acquire("b", "h", 2000, False, "r-b")), 5)
    assert isinstance(other, Granted)
    queued = await asyncio.wait_for(leader.propose(Acquire("a", "h2", 2000, True, "r-q")), 5)
    assert isinstance(queued, Queued)
    m = cluster.scrape(leader.id)
    assert value(m, "raftlease_leases_active") == 2
    assert value(m, "raftlease_lease_waiters") == 1
    assert value(m, "raftlease_lease_grants_total") == 2
    assert value(m, "raftlease_proposal_latency_seconds_count") == 3

    # Renew "a" with 1.5 s of its 2 s left (the margin is read before the deadline moves).
    await cluster.advance(0.5)
    assert leader.renew(grant.lease.lease_id, None) is not None
    assert leader.renew(grant.lease.lease_id, None) is not None  # again at once: 2 s left
    m = cluster.scrape(leader.id)
    assert value(m, "raftlease_lease_renewals_total") == 2
    assert value(m, "raftlease_renew_margin_seconds_count") == 2
    assert value(m, "raftlease_renew_margin_seconds_sum") == pytest.approx(3.5, abs=0.02)
    assert value(m, "raftlease_renew_margin_ratio_bucket", le="0.7") == 0
    assert value(m, "raftlease_renew_margin_ratio_bucket", le="0.8") == 1
    assert value(m, "raftlease_renew_margin_ratio_bucket", le="1.0") == 2

    # Release "a": the waiter is granted it; "b" is left to expire.
    released = await asyncio.wait_for(leader.propose(Release(grant.lease.lease_id)), 5)
    assert isinstance(released, Released)
    while leader.table.get("b") is not None:
        await cluster.advance(TICK)
    await cluster.advance(0.25)  # followers learn the commit index with the next heartbeat
    for node_id in cluster.nodes:  # every node counts the events it applied
        m = cluster.scrape(node_id)
        assert value(m, "raftlease_lease_grants_total") == 3
        assert value(m, "raftlease_lease_releases_total") == 1
        assert value(m, "raftlease_lease_expiries_total") == 1
        assert value(m, "raftlease_leases_active") == 1
        assert value(m, "raftlease_lease_waiters") == 0
    m = cluster.scrape(leader.id)
    assert value(m, "raftlease_fsync_seconds_count") > 0


async def test_heartbeats_of_a_cut_off_peer_are_missed(cluster: Cluster) -> None:
    leader = await cluster.leader()
    cut, ok = (i for i in IDS if i != leader.id)
    await cluster.advance(1.0)  # 10 heartbeat intervals
    m = cluster.scrape(leader.id)
    for peer in (cut, ok):
        sent = value(m, "raftlease_heartbeats_sent_total", peer=peer)
        answered = value(m, "raftlease_heartbeat_responses_total", peer=peer)
        assert sent >= 9
        assert value(m, "raftlease_heartbeat_missed_total", peer=peer) == 0
        assert sent - 1 <= answered <= sent
    missed_before = value(m, "raftlease_heartbeat_missed_total", peer=cut)

    cluster.net.blocked |= {(cut, leader.id), (leader.id, cut)}
    await cluster.advance(1.0)
    m = cluster.scrape(leader.id)
    assert 9 <= value(m, "raftlease_heartbeat_missed_total", peer=cut) - missed_before <= 11
    assert value(m, "raftlease_heartbeat_missed_total", peer=ok) == 0
    assert value(m, "raftlease_peer_last_heard_seconds", peer=cut) >= 0.9
    assert value(m, "raftlease_peer_last_heard_seconds", peer=ok) <= 0.2
    assert value(m, "raftlease_role", role="leader") == 1  # 2 of 3 keep it

    cluster.net.blocked.clear()
    await cluster.advance(0.3)
    m = cluster.scrape(leader.id)
    assert value(m, "raftlease_peer_last_heard_seconds", peer=cut) <= 0.2


async def test_http_endpoint_serves_the_registry(cluster: Cluster) -> None:
    leader = await cluster.leader()
    server, slot = await start_metrics_server(None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    async def get(path: str) -> tuple[str, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await writer.drain()
        data = await reader.read()
        writer.close()
        await writer.wait_closed()
        head, _, body = data.partition(b"\r\n\r\n")
        return head.decode().split("\r\n")[0], body

    try:
        status, _ = await get("/metrics")
        assert status == "HTTP/1.1 503 Service Unavailable"  # bound before the node exists
        slot[0] = cluster.metrics[leader.id]
        status, body = await get("/metrics")
        assert status == "HTTP/1.1 200 OK"
        assert b'raftlease_role{role="leader"} 1.0' in body
        status, _ = await get("/other")
        assert status == "HTTP/1.1 404 Not Found"
    finally:
        server.close()
        await server.wait_closed()


def test_node_and_server_do_not_import_prometheus_client() -> None:
    """Only ``--metrics`` loads prometheus_client: the node, its observer hook and the server
    module stay free of it (the server imports raftlease.metrics lazily)."""
    code = (
        "import sys, raftlease.node, raftlease.observe, raftlease.server; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'prometheus_client'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]"
