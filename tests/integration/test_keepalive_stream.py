"""The clients' keepalive hub on a real 3-node cluster (issue 15): every lease a client holds
is renewed over one KeepAlive stream per node, by one thread (LeaseClient) or one task
(AsyncLeaseClient), in batches; the stream moves to the next leader; a leader whose own
lease lapses for a moment answers RETRY in-band and the lease is retried on the same node.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from raftlease.client import AsyncLeaseClient
from raftlease.client import sync as client_sync
from raftlease.clock import boot_monotonic
from raftlease.v1 import lease_pb2

if TYPE_CHECKING:
    from collections.abc import Iterator

    from integration.conftest import Cluster

pytestmark = pytest.mark.integration

KA = lease_pb2.KeepAliveResponse
LAPSE_TEXT = "leader lease is not valid"


def _leader_address(cluster: Cluster, exclude: set[str] | None = None) -> str:
    return cluster.nodes[cluster.leader(exclude=exclude)].address


def test_many_leases_one_stream_one_thread(cluster: Cluster) -> None:
    leader = _leader_address(cluster)
    threads_before = threading.active_count()
    with cluster.client() as client:
        leases = [client.acquire(f"many-{i}", ttl=3.0) for i in range(60)]
        first = {le.name: le.valid_until for le in leases}
        time.sleep(3.5)  # at least one renewal of every lease (every 1 s)
        hub = client._keepalives.hub
        assert hub.targets().keys() == {leader}
        # the hub thread, the stream's reader and grpc's request writer: not one per lease
        assert threading.active_count() - threads_before <= 4
        names = {t.name for t in threading.enumerate()}
        assert "raftlease-keepalive" in names
        assert not any(n.startswith("raftlease-keepalive-many") for n in names)
        stats = hub.stats
        assert stats.unary_sent == 0
        assert stats.renewed >= 2 * 60
        assert stats.writes < stats.renewals_sent / 5  # batched
        for lease in leases:
            assert lease.is_valid(), lease.lost_reason
            assert lease.valid_until > first[lease.name] + 1.5
        for lease in leases[:30]:
            lease.release()
        time.sleep(1.2)
        assert len(hub) == 30
        assert client.holder("many-0") is None
        assert client.holder("many-59") is not None
    assert not any(t.name == "raftlease-keepalive" for t in threading.enumerate())


def test_the_stream_moves_to_the_next_leader(cluster: Cluster) -> None:
    old = cluster.leader()
    lost: list[str] = []
    with cluster.client() as client:
        leases = [
            client.acquire(f"move-{i}", ttl=4.0, on_lost=lambda le: lost.append(le.lost_reason))
            for i in range(20)
        ]
        tokens = {le.name: le.fencing_token for le in leases}
        time.sleep(1.5)
        assert client._keepalives.hub.targets().keys() == {cluster.nodes[old].address}
        cluster.kill(old)
        new = cluster.leader(exclude={old})
        time.sleep(5.0)  # longer than the TTL: only renewals on the new leader keep them
        assert not lost, lost
        for lease in leases:
            assert lease.is_valid(), lease.lost_reason
        hub = client._keepalives.hub
        assert hub.targets().keys() == {cluster.nodes[new].address}
        assert hub.stats.streams_opened >= 2
        for name, token in tokens.items():
            info = client.holder(name)
            assert info is not None
            assert info.fencing_token == token


async def test_async_client_one_task_and_a_leader_change(cluster: Cluster) -> None:
    lost: list[str] = []
    async with AsyncLeaseClient(cluster.endpoints, timeout=10.0) as client:
        tasks_before = len(asyncio.all_tasks())
        leases = [
            await client.acquire(f"aio-{i}", ttl=3.0, on_lost=lambda le: lost.append(le.name))
            for i in range(40)
        ]
        await asyncio.sleep(2.5)
        # the hub task, the stream's reader task, grpc.aio's tasks for the stream (its request
        # iterator's consumer, ...): not one per lease
        tasks = asyncio.all_tasks()
        assert len(tasks) - tasks_before <= 5, sorted(t.get_name() for t in tasks)
        assert sum(t.get_name() == "raftlease-keepalive" for t in tasks) == 1
        hub = client._keepalives.hub
        assert len(hub.targets()) == 1
        assert hub.stats.renewed >= 40
        assert hub.stats.unary_sent == 0
        new_leader = await client.transfer_leadership()
        await asyncio.sleep(4.0)  # longer than the TTL
        assert not lost, lost
        assert all(le.is_valid() for le in leases)
        assert hub.targets().keys() == {cluster.nodes[new_leader].address}
        await leases[0].release()
        assert await client.holder("aio-0") is None
        assert 0 < len(hub) < 40


@dataclass(frozen=True)
class _Seen:
    t: float
    target: str
    lease_id: int
    what: str  # "sent", or the answer's outcome name and message


class _Recording:
    """Wraps one KeepAlive call: records every request sent and every answer."""

    def __init__(self, call: Any, target: str, log: list[_Seen], lock: threading.Lock) -> None:
        self._call = call
        self._target = target
        self._log = log
        self._lock = lock

    def __iter__(self) -> Iterator[lease_pb2.KeepAliveResponse]:
        for resp in self._call:
            now = boot_monotonic()
            with self._lock:
                for answer in resp.items or [resp]:  # a batch's answer: one per item
                    what = f"{KA.Outcome.Name(answer.outcome)}: {answer.message}"
                    self._log.append(_Seen(now, self._target, answer.lease_id, what))
            yield resp

    def cancel(self) -> None:
        self._call.cancel()


class _RecordingStub:
    """Records every renewal sent and answered. ``ignore_items``: strip ``items`` from every
    request before it leaves, so that the node answers as a server from before them does
    (the top-level lease only)."""

    def __init__(
        self,
        inner: Any,
        target: str,
        log: list[_Seen],
        lock: threading.Lock,
        *,
        ignore_items: bool = False,
    ) -> None:
        self._inner = inner
        self._target = target
        self._log = log
        self._lock = lock
        self._ignore_items = ignore_items
        self.messages = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def KeepAlive(self, requests: Iterator[lease_pb2.KeepAliveRequest]) -> _Recording:
        def sent() -> Iterator[lease_pb2.KeepAliveRequest]:
            for req in requests:
                if self._ignore_items and req.items:
                    req = lease_pb2.KeepAliveRequest(
                        lease_id=req.lease_id, health=req.health, inband_outcomes=True
                    )
                now = boot_monotonic()
                with self._lock:
                    self.messages += 1
                    for item in req.items or [req]:
                        self._log.append(_Seen(now, self._target, item.lease_id, "sent"))
                yield req

        return _Recording(self._inner.KeepAlive(sent()), self._target, self._log, self._lock)


def test_renewals_stay_on_the_leader_through_a_lease_lapse(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stream version of test_keepalive_outcomes' lapse test: SIGSTOP both followers for
    0.5 s while a renewal falls due. The leader answers RETRY in-band on the stream; the hub
    re-sends that lease on the SAME node within milliseconds, and the lease survives."""
    seen: list[_Seen] = []
    lock = threading.Lock()
    with cluster.client() as client:
        plain_conn = client._conn

        def recording_conn(target: str) -> client_sync._Conn:
            conn = plain_conn(target)
            stub = _RecordingStub(conn.lease, target, seen, lock)
            return client_sync._Conn(conn.channel, stub, conn.cluster)  # type: ignore[arg-type]

        monkeypatch.setattr(client, "_conn", recording_conn)
        lost: list[str] = []
        lease = client.acquire("lapse", ttl=5.0, on_lost=lambda le: lost.append(le.lost_reason))
        saw_lapse = False
        for _round in range(4):
            followers = [n for n in cluster.nodes if n != cluster.leader()]
            due = lease._timer.renew_due()
            time.sleep(max(0.0, due - 0.17 - boot_monotonic()))
            valid_before = lease.valid_until
            first = len(seen)
            for f in followers:
                cluster.signal(f, signal.SIGSTOP)
            try:
                time.sleep(0.5)
            finally:
                for f in followers:
                    cluster.signal(f, signal.SIGCONT)
            deadline = boot_monotonic() + 4.0
            while lease.valid_until == valid_before and boot_monotonic() < deadline:
                time.sleep(0.02)
            assert lease.valid_until > valid_before, "no renewal succeeded after the lapse"
            assert lease.is_valid(), lease.lost_reason
            assert not lost
            with lock:
                mine = [s for s in seen[first:] if s.lease_id == lease.lease_id]
            retries = [i for i, s in enumerate(mine) if LAPSE_TEXT in s.what]
            for i in retries:
                nxt = next((s for s in mine[i + 1 :] if s.what == "sent"), None)
                assert nxt is not None, mine
                assert nxt.target == mine[i].target, mine
                assert nxt.t - mine[i].t < 0.3, mine
            print(f"round {_round}: " + "; ".join(f"{s.target} {s.what}" for s in mine))
            if retries:
                saw_lapse = True
                break
        assert saw_lapse, f"no renewal met the lapse: {seen}"
        time.sleep(0.5)
        assert lease.is_valid()
        assert client.holder("lapse") is not None
        lease.release()
    assert not lost


def test_a_closed_client_cancels_its_stream(cluster: Cluster) -> None:
    client = cluster.client()
    lease = client.acquire("closing", ttl=3.0)
    time.sleep(1.2)
    hub = client._keepalives
    assert hub.hub.targets()
    client.close()
    assert not lease.is_valid()
    assert not any(t.name == "raftlease-keepalive" for t in threading.enumerate())
    assert hub._calls == {}  # its streams were cancelled
    time.sleep(0.2)
    assert not any(t.name.startswith("raftlease-keepalive-stream") for t in threading.enumerate())


def _recording(
    client: client_sync.LeaseClient,
    monkeypatch: pytest.MonkeyPatch,
    seen: list[_Seen],
    *,
    ignore_items: bool = False,
) -> dict[str, _RecordingStub]:
    stubs: dict[str, _RecordingStub] = {}
    lock = threading.Lock()
    plain_conn = client._conn

    def recording_conn(target: str) -> client_sync._Conn:
        conn = plain_conn(target)
        if target not in stubs:
            stubs[target] = _RecordingStub(
                conn.lease, target, seen, lock, ignore_items=ignore_items
            )
        return client_sync._Conn(conn.channel, stubs[target], conn.cluster)  # type: ignore[arg-type]

    monkeypatch.setattr(client, "_conn", recording_conn)
    return stubs


def test_renewals_that_fall_due_together_share_a_message(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 15: gRPC's cost is per message, so the hub writes many leases per message."""
    seen: list[_Seen] = []
    with cluster.client() as client:
        stubs = _recording(client, monkeypatch, seen)
        leases = [client.acquire(f"batched-{i}", ttl=3.0) for i in range(200)]
        time.sleep(3.5)
        hub = client._keepalives.hub
        stats = hub.stats
        assert stats.renewed >= 2 * 200
        assert stats.unbatched == 0
        messages = sum(stub.messages for stub in stubs.values())
        assert messages == stats.messages
        assert messages < stats.renewals_sent / 10, (messages, stats.renewals_sent)
        answered = [s for s in seen if s.what.startswith("OUTCOME_RENEWED")]
        assert len(answered) >= stats.renewed
        for lease in leases:
            assert lease.is_valid(), lease.lost_reason


def test_a_server_that_ignores_items_gets_one_lease_per_message(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Against a node that ignores ``items`` (here: the requests are stripped of them before
    they leave, so the node sees what a server from before them would: the top-level lease,
    which the client sets to the batch's first), each batch's first lease is renewed and the
    others are sent again one per message on the same stream: nothing is lost."""
    seen: list[_Seen] = []
    lost: list[str] = []
    with cluster.client() as client:
        stubs = _recording(client, monkeypatch, seen, ignore_items=True)
        leases = [
            client.acquire(f"old-{i}", ttl=3.0, on_lost=lambda le: lost.append(le.lost_reason))
            for i in range(30)
        ]
        time.sleep(4.0)  # longer than the TTL
        assert not lost, lost
        hub = client._keepalives.hub
        assert hub.stats.unbatched >= 1
        assert hub.stats.renewed >= 30
        assert hub.stats.streams_opened == 1  # the same stream, unbatched from then on
        for lease in leases:
            assert lease.is_valid(), lease.lost_reason
        # every renewal the node saw was a plain request; each lease was answered
        assert all(s.lease_id for s in seen)
        assert {s.lease_id for s in seen if s.what.startswith("OUTCOME_RENEWED")} == {
            le.lease_id for le in leases
        }
        assert sum(stub.messages for stub in stubs.values()) >= hub.stats.renewed
