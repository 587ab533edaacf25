"""The gRPC health service separates liveness from readiness, on real server processes.

Service "" (overall) is SERVING while the process runs. "raftlease.v1.Ready" and
"raftlease.v1.Lease" are SERVING only while the node is the leader with a valid leader lease,
or follows a leader it heard from within the minimum election timeout. A lone node of a
3-node cluster is alive but not ready; with a quorum every node becomes ready; once the
others are SIGKILLed the survivor (leader or follower) turns unready within a couple of
election timeouts (200-400 ms each at the default 10 ms tick).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from integration.conftest import Cluster

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.integration

LIVE = ""
READY = "raftlease.v1.Ready"
LEASE = "raftlease.v1.Lease"
SERVING = "SERVING"
NOT_SERVING = "NOT_SERVING"
ELECTION_TIMEOUT_MAX_S = 0.4  # 40 ticks of 10 ms
READINESS_POLL_S = 1.0  # how often the server re-evaluates readiness


class Prober:
    """Health checks against several nodes, one channel each."""

    def __init__(self) -> None:
        self._channels: dict[str, grpc.Channel] = {}

    def status(self, address: str, service: str) -> str:
        """The status name, "NOT_FOUND" for an unknown service, or "DOWN" if no answer."""
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = grpc.insecure_channel(address)
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service=service)
        try:
            resp = stub.Check(request, timeout=0.5)  # type: ignore[attr-defined]
        except grpc.RpcError as e:
            code = e.code()
            return "NOT_FOUND" if code == grpc.StatusCode.NOT_FOUND else "DOWN"
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status))

    def wait_for(
        self, address: str, service: str, want: str, timeout: float
    ) -> tuple[bool, float, str]:
        """Poll until ``service`` at ``address`` reports ``want``: (reached, seconds, last)."""
        start = time.monotonic()
        last = ""
        while time.monotonic() - start < timeout:
            last = self.status(address, service)
            if last == want:
                return True, time.monotonic() - start, last
            time.sleep(0.02)
        return False, time.monotonic() - start, last

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()


@pytest.fixture
def stopped_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Three configured nodes, none started; all stopped at the end."""
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        print(f"exit codes: {c.terminate_all()}")  # failures carry the log tails


@pytest.mark.parametrize("survivor_role", ["leader", "follower"])
def test_liveness_and_readiness(stopped_cluster: Cluster, survivor_role: str) -> None:
    c = stopped_cluster
    probe = Prober()
    try:
        # 1. A lone node of a 3-node cluster: alive, never ready (no leader, no quorum).
        n1 = c.nodes["n1"].address
        c.start("n1")
        ok, _, last = probe.wait_for(n1, LIVE, SERVING, timeout=20.0)
        assert ok, f"liveness never SERVING (last {last})\n{c.log_tails()}"
        deadline = time.monotonic() + 4 * ELECTION_TIMEOUT_MAX_S
        while time.monotonic() < deadline:
            assert probe.status(n1, LIVE) == SERVING
            assert probe.status(n1, READY) == NOT_SERVING
            assert probe.status(n1, LEASE) == NOT_SERVING
            time.sleep(0.05)

        # 2. With a quorum every node becomes ready, the leader and both followers.
        c.start("n2")
        c.start("n3")
        leader = c.leader()
        for node in c.nodes.values():
            for service in (READY, LEASE):
                ok, _, last = probe.wait_for(node.address, service, SERVING, timeout=10.0)
                assert ok, f"{node.id} {service!r} is {last}, leader {leader}\n{c.log_tails()}"
            assert probe.status(node.address, LIVE) == SERVING

        # 3. Kill the two others: the survivor turns unready within a couple of election
        # timeouts (plus the server's poll interval), and stays alive.
        if survivor_role == "leader":
            survivor = leader
        else:
            survivor = next(nid for nid in c.nodes if nid != leader)
        for nid in c.nodes:
            if nid != survivor:
                c.kill(nid)
        address = c.nodes[survivor].address
        bound = 2 * ELECTION_TIMEOUT_MAX_S + READINESS_POLL_S + 0.5
        ok, took, last = probe.wait_for(address, READY, NOT_SERVING, timeout=bound)
        assert ok, f"{survivor} still {last} {took:.2f}s after losing quorum\n{c.log_tails()}"
        assert probe.status(address, LEASE) == NOT_SERVING
        assert probe.status(address, LIVE) == SERVING
        print(f"{survivor_role} {survivor} unready {took:.3f}s after the others were killed")
    finally:
        probe.close()
