"""`raftlease serve --metrics HOST:PORT`: Prometheus metrics of real server processes.

Three real nodes, each with its own metrics port. Known traffic through the raw gRPC Lease
API (no client library, so no background keepalives add renewals): the leader's counters must
show exactly that traffic, its gauges must agree with Cluster.Status. A killed follower must
show up as missed heartbeats and a growing last-heard age. A busy metrics port is refused like
a busy --listen port: one line, exit 2, nothing written.
"""

from __future__ import annotations

import socket
import time
import urllib.request
from typing import TYPE_CHECKING

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from raftlease.v1 import lease_pb2, lease_pb2_grpc

from .conftest import _FAILED, Cluster, free_port, node_status
from .test_serve_validation import serve

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence
    from pathlib import Path

    from raftlease.testing.local import LocalNode

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class MetricsCluster(Cluster):
    """Three nodes started with ``--metrics`` on free ports of their own."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        taken = [node.port for node in self.nodes.values()]
        self.metrics: dict[str, str] = {}
        for node_id in self.nodes:
            taken.append(free_port(avoid=taken))
            self.metrics[node_id] = f"127.0.0.1:{taken[-1]}"

    def start(
        self,
        node_id: str,
        *extra: str,
        env: Mapping[str, str | None] | None = None,
        launcher: Sequence[str] | None = None,
    ) -> LocalNode:
        return super().start(
            node_id, "--metrics", self.metrics[node_id], *extra, env=env, launcher=launcher
        )

    def scrape(self, node_id: str) -> Samples:
        url = f"http://{self.metrics[node_id]}/metrics"
        with urllib.request.urlopen(url, timeout=5.0) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain")
            text = resp.read().decode("utf-8")
        out: Samples = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out


def value(samples: Samples, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    assert key in samples, f"{name}{labels} not scraped; have {sorted(k[0] for k in samples)}"
    return samples[key]


@pytest.fixture
def mcluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[MetricsCluster]:
    c = MetricsCluster(tmp_path)
    c.start_all()
    try:
        c.leader()
        yield c
    finally:
        codes = c.terminate_all()
        if request.node.stash.get(_FAILED, True):
            print(f"exit codes: {codes}\n{c.log_tails()}")


def _renew(stub: lease_pb2_grpc.LeaseStub, lease_id: int) -> None:
    """One successful Renew (a leader whose leader lease lapsed for a moment answers
    UNAVAILABLE; that renewal is not served and not counted: try again)."""
    deadline = time.monotonic() + 10.0
    while True:
        try:
            stub.Renew(lease_pb2.RenewRequest(lease_id=lease_id), timeout=5.0)
            return
        except grpc.RpcError as e:
            if e.code() is not grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_counters_and_gauges_after_known_traffic(mcluster: MetricsCluster) -> None:
    leader = mcluster.leader()
    address = mcluster.nodes[leader].address
    with grpc.insecure_channel(address) as channel:
        stub = lease_pb2_grpc.LeaseStub(channel)
        ids: dict[str, int] = {}
        for name in ("a", "b", "c", "d", "e"):
            ttl_ms = 1000 if name == "e" else 60_000  # "e" is left to expire
            resp = stub.Acquire(
                lease_pb2.AcquireRequest(name=name, holder="metrics-test", ttl_ms=ttl_ms),
                timeout=5.0,
            )
            assert resp.acquired
            ids[name] = resp.lease.lease_id
        for _ in range(3):
            _renew(stub, ids["a"])
        for name in ("b", "c"):
            assert stub.Release(lease_pb2.ReleaseRequest(lease_id=ids[name]), timeout=5.0).released
        deadline = time.monotonic() + 10.0
        while stub.Get(lease_pb2.GetRequest(name="e"), timeout=5.0).held:
            assert time.monotonic() < deadline, "lease e did not expire"
            time.sleep(0.1)

    assert mcluster.leader() == leader, "leadership moved during the test; counts would differ"
    m = mcluster.scrape(leader)
    assert value(m, "raftlease_lease_grants_total") == 5
    assert value(m, "raftlease_lease_renewals_total") == 3
    assert value(m, "raftlease_lease_releases_total") == 2
    assert value(m, "raftlease_lease_expiries_total") == 1
    assert value(m, "raftlease_leases_active") == 2
    assert value(m, "raftlease_lease_waiters") == 0
    # 5 acquires + 2 releases were proposed here; the expiry is the leader's own proposal.
    assert value(m, "raftlease_proposal_latency_seconds_count") == 7
    assert 0 < value(m, "raftlease_proposal_latency_seconds_sum") < 7 * 1.0
    # Each renewal landed within seconds of the grant: more than 90 % of the 60 s TTL left.
    assert value(m, "raftlease_renew_margin_seconds_count") == 3
    assert value(m, "raftlease_renew_margin_ratio_bucket", le="0.9") == 0
    assert value(m, "raftlease_renew_margin_ratio_bucket", le="1.0") == 3
    assert 3 * 54.0 < value(m, "raftlease_renew_margin_seconds_sum") <= 3 * 60.0
    assert value(m, "raftlease_fsync_seconds_count") >= 1

    st = node_status(address)
    assert st is not None
    assert value(m, "raftlease_term") == st.term >= 1
    assert value(m, "raftlease_role", role="leader") == 1
    assert value(m, "raftlease_role", role="follower") == 0
    assert value(m, "raftlease_leader_lease_valid") == 1
    # At least the leader's no-op, 5 grants, 2 releases and 1 expiry are committed.
    commit = value(m, "raftlease_commit_index")
    assert commit >= 9
    assert value(m, "raftlease_applied_index") <= commit
    assert value(m, "raftlease_elections_won_total") >= 1
    assert value(m, "raftlease_leader_changes_total") >= 1
    followers = sorted(set(mcluster.nodes) - {leader})
    for peer in followers:
        assert value(m, "raftlease_heartbeats_sent_total", peer=peer) > 0
        assert value(m, "raftlease_peer_last_heard_seconds", peer=peer) < 1.0
        assert value(m, "raftlease_follower_lag_entries", peer=peer) == 0

    # A follower applied the same lease events (its counters are applied events too); it
    # serves no renewals and sends no heartbeats.
    f = mcluster.scrape(followers[0])
    assert value(f, "raftlease_role", role="follower") == 1
    assert value(f, "raftlease_leader_lease_valid") == 0
    assert value(f, "raftlease_lease_renewals_total") == 0
    assert value(f, "raftlease_lease_grants_total") == 5
    assert value(f, "raftlease_heartbeats_sent_total", peer=leader) == 0


def test_a_killed_follower_shows_as_missed_heartbeats(mcluster: MetricsCluster) -> None:
    leader = mcluster.leader()
    dead, alive = sorted(set(mcluster.nodes) - {leader})
    # A leader elected a moment ago has not heard a heartbeat answer yet (last heard: inf).
    deadline = time.monotonic() + 5.0
    while True:
        before = mcluster.scrape(leader)
        if value(before, "raftlease_peer_last_heard_seconds", peer=dead) < 1.0:
            break
        assert time.monotonic() < deadline, "the leader never heard from its follower"
        time.sleep(0.05)
    missed_dead = value(before, "raftlease_heartbeat_missed_total", peer=dead)
    missed_alive = value(before, "raftlease_heartbeat_missed_total", peer=alive)
    answered_dead = value(before, "raftlease_heartbeat_responses_total", peer=dead)

    mcluster.kill(dead)
    time.sleep(2.0)  # 20 heartbeat intervals of 100 ms

    assert mcluster.leader(timeout=5.0) == leader  # 2 of 3 keep the leader
    after = mcluster.scrape(leader)
    heard = value(after, "raftlease_peer_last_heard_seconds", peer=dead)
    assert 1.5 <= heard < 30.0  # finite: heard from before it died
    assert value(after, "raftlease_heartbeat_missed_total", peer=dead) >= missed_dead + 10
    # At most the interval it died in was still answered.
    assert value(after, "raftlease_heartbeat_responses_total", peer=dead) <= answered_dead + 2
    assert value(after, "raftlease_heartbeat_missed_total", peer=alive) <= missed_alive + 2
    assert value(after, "raftlease_peer_last_heard_seconds", peer=alive) < 1.0
    # With 2 of 3 the leader lease rides on one follower's acks: a late ack on a loaded
    # machine can lapse it for a moment, so look for it valid within a second.
    deadline = time.monotonic() + 1.0
    while value(mcluster.scrape(leader), "raftlease_leader_lease_valid") != 1:
        assert time.monotonic() < deadline, "the leader lease did not come back with 2 of 3"
        time.sleep(0.05)

    time.sleep(0.5)
    later = mcluster.scrape(leader)
    assert value(later, "raftlease_peer_last_heard_seconds", peer=dead) > heard
    assert value(later, "raftlease_heartbeat_missed_total", peer=dead) > value(
        after, "raftlease_heartbeat_missed_total", peer=dead
    )


def test_a_busy_metrics_port_is_refused(tmp_path: Path) -> None:
    listen_port = free_port()
    metrics_port = free_port(avoid={listen_port})
    data_dir = tmp_path / "n1"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", metrics_port))
        busy.listen()
        proc = serve(
            "--id",
            "n1",
            "--listen",
            f"127.0.0.1:{listen_port}",
            "--peers",
            f"n1=127.0.0.1:{listen_port}",
            "--data-dir",
            str(data_dir),
            "--metrics",
            f"127.0.0.1:{metrics_port}",
        )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        f"raftlease serve: error: --metrics: cannot listen on 127.0.0.1:{metrics_port}: "
        "address already in use"
    ]
    assert not data_dir.exists()  # refused before anything was written


def test_metrics_on_the_listen_port_is_refused(tmp_path: Path) -> None:
    port = free_port()
    proc = serve(
        "--id",
        "n1",
        "--listen",
        f"127.0.0.1:{port}",
        "--peers",
        f"n1=127.0.0.1:{port}",
        "--data-dir",
        str(tmp_path / "n1"),
        "--metrics",
        f"127.0.0.1:{port}",
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        f"raftlease serve: error: --metrics 127.0.0.1:{port} is the --listen address: give "
        "the metrics their own port"
    ]
    assert not (tmp_path / "n1").exists()
