"""Lease behaviour on a real 3-node cluster: hold/release, LeaseHeld, FIFO handover, fencing
tokens, expiry after keepalives stop, bad input, watch, and the async client."""

from __future__ import annotations

import itertools
import queue
import threading
import time
from typing import TYPE_CHECKING

import grpc
import pytest

from raftlease.client import (
    AsyncLeaseClient,
    InvalidArgument,
    Lease,
    LeaseClient,
    LeaseHeld,
    WatchEvent,
)
from raftlease.clock import boot_monotonic
from raftlease.v1 import lease_pb2, lease_pb2_grpc

if TYPE_CHECKING:
    from integration.conftest import Cluster

pytestmark = pytest.mark.integration


def test_acquire_hold_release(cluster: Cluster) -> None:
    with cluster.client() as client:
        lease = client.acquire("hold", ttl=1.5, holder="worker-1", metadata={"role": "a"})
        assert lease.is_valid()
        assert lease.fencing_token > 0
        info = client.holder("hold")
        assert info is not None
        assert (info.holder, info.lease_id, info.fencing_token) == (
            "worker-1",
            lease.lease_id,
            lease.fencing_token,
        )
        assert info.metadata == {"role": "a"}
        lease.set_health({"queue": "3"})
        time.sleep(2.5)  # longer than the TTL: keepalives must carry it
        assert lease.is_valid()
        assert not lease.lost.is_set()
        info = client.holder("hold")
        assert info is not None
        assert info.fencing_token == lease.fencing_token
        assert info.health == {"queue": "3"}
        assert client.check_token("hold", lease.fencing_token)
        assert [i.name for i in client.leases()] == ["hold"]
        lease.release()
        assert not lease.is_valid()
        assert client.holder("hold") is None
        assert not client.check_token("hold", lease.fencing_token)
        lease.release()  # idempotent


def test_second_acquire_gets_lease_held(cluster: Cluster) -> None:
    with cluster.client() as a, cluster.client() as b:
        with a.acquire("busy", ttl=5.0, holder="alice") as lease:
            with pytest.raises(LeaseHeld) as info:
                b.acquire("busy", ttl=5.0, holder="bob")
            assert info.value.holder == "alice"
            assert info.value.fencing_token == lease.fencing_token
            assert "alice" in str(info.value)
            t0 = boot_monotonic()
            with pytest.raises(LeaseHeld):
                b.acquire("busy", ttl=5.0, wait=0.5, holder="bob")
            assert boot_monotonic() - t0 >= 0.45  # it did wait in the queue
        granted = b.acquire("busy", ttl=5.0, holder="bob")
        assert granted.fencing_token > lease.fencing_token
        granted.release()


def _acquire_in_thread(
    client: LeaseClient, name: str, holder: str, out: queue.Queue[tuple[str, Lease | Exception]]
) -> threading.Thread:
    def run() -> None:
        try:
            out.put((holder, client.acquire(name, ttl=5.0, wait=30.0, holder=holder)))
        except Exception as err:
            out.put((holder, err))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _wait_waiters(client: LeaseClient, name: str, count: int, timeout: float = 10.0) -> None:
    deadline = boot_monotonic() + timeout
    while boot_monotonic() < deadline:
        info = client.holder(name)
        if info is not None and info.waiters >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"never saw {count} waiters on {name!r}")


def test_fifo_handover_to_waiters(cluster: Cluster) -> None:
    got: queue.Queue[tuple[str, Lease | Exception]] = queue.Queue()
    with cluster.client() as a, cluster.client() as b, cluster.client() as c:
        first = a.acquire("fifo", ttl=5.0, holder="a")
        tb = _acquire_in_thread(b, "fifo", "b", got)
        _wait_waiters(a, "fifo", 1)
        tc = _acquire_in_thread(c, "fifo", "c", got)
        _wait_waiters(a, "fifo", 2)
        t0 = boot_monotonic()
        first.release()
        who, lease_b = got.get(timeout=10)
        handover_s = boot_monotonic() - t0
        assert who == "b", lease_b
        assert isinstance(lease_b, Lease)
        assert lease_b.is_valid()
        assert got.empty()  # c is still waiting: no thundering herd
        info = a.holder("fifo")
        assert info is not None
        assert (info.holder, info.waiters) == ("b", 1)
        lease_b.release()
        who, lease_c = got.get(timeout=10)
        assert who == "c", lease_c
        assert isinstance(lease_c, Lease)
        tokens = [first.fencing_token, lease_b.fencing_token, lease_c.fencing_token]
        assert tokens == sorted(set(tokens))
        lease_c.release()
        tb.join(1)
        tc.join(1)
    print(f"\nFIFO handover from release to the next waiter's grant: {handover_s * 1000:.0f} ms")


def test_fencing_tokens_strictly_increase(cluster: Cluster) -> None:
    tokens = []
    with cluster.client() as client:
        for i in range(6):
            lease = client.acquire("tok", ttl=2.0, holder=f"h{i}")
            tokens.append(lease.fencing_token)
            if i % 2:
                lease.release()
            else:  # let it expire instead of releasing, the other way a grant ends
                lease.stop_keepalive()
                deadline = boot_monotonic() + 10
                while client.holder("tok") is not None and boot_monotonic() < deadline:
                    time.sleep(0.05)
        other = client.acquire("tok-other", ttl=2.0)
        other.release()
    assert all(b > a for a, b in itertools.pairwise(tokens)), tokens


def test_expiry_after_keepalives_stop(cluster: Cluster) -> None:
    with cluster.client() as a, cluster.client() as b:
        lease = a.acquire("exp", ttl=1.0, holder="stopper")
        time.sleep(0.4)  # let a renewal or two happen
        lease.stop_keepalive()
        t_stop = boot_monotonic()
        taken = b.acquire("exp", ttl=5.0, wait=10.0, holder="taker")
        elapsed = boot_monotonic() - t_stop
        assert lease.lost.is_set()  # the old holder was told before the new grant
        assert not lease.is_valid()
        assert lease.valid_until <= boot_monotonic()
        assert taken.fencing_token > lease.fencing_token
        taken.release()
    print(f"\nexpiry: lease free {elapsed:.3f}s after its holder stopped keepalives (ttl 1s)")
    assert elapsed <= 1.0 + 1.0


def _leader_stub(cluster: Cluster) -> tuple[grpc.Channel, lease_pb2_grpc.LeaseStub]:
    leader = cluster.leader()
    channel = grpc.insecure_channel(cluster.nodes[leader].address)
    return channel, lease_pb2_grpc.LeaseStub(channel)


def test_bad_input_names_the_bound(cluster: Cluster) -> None:
    with cluster.client() as client:
        cases: list[tuple[dict[str, object], str]] = [
            ({"name": ""}, "name must not be empty"),
            ({"name": "x" * 300}, "limit is 256 bytes"),
            ({"name": "ok", "ttl": 0}, "below the minimum 1000 ms"),
            ({"name": "ok", "ttl": 0.5}, "below the minimum 1000 ms"),
            ({"name": "ok", "ttl": 7200}, "above the maximum 3600000 ms"),
            ({"name": "ok", "wait": 7200}, "above the maximum 3600000 ms"),
            ({"name": "ok", "metadata": {"k": "v" * 5000}}, "limit is 4096 bytes"),
            ({"name": "ok", "holder": "h" * 300}, "limit is 256 bytes"),
            ({"name": "ok", "health": {"k": "v" * 2000}}, "limit is 1024 bytes"),
        ]
        for kwargs, needle in cases:
            name = str(kwargs.pop("name"))
            with pytest.raises(InvalidArgument) as info:
                client.acquire(name, **kwargs)  # type: ignore[arg-type]
            assert needle in str(info.value), (kwargs, str(info.value))
        assert client.holder("ok") is None  # nothing changed
        assert client.leases() == []

    channel, stub = _leader_stub(cluster)
    with channel:
        for call in (
            lambda: stub.Renew(lease_pb2.RenewRequest(lease_id=987654321), timeout=5),
            lambda: stub.Release(lease_pb2.ReleaseRequest(lease_id=987654321), timeout=5),
        ):
            with pytest.raises(grpc.RpcError) as rpc_info:
                call()
            assert rpc_info.value.code() == grpc.StatusCode.NOT_FOUND
    with cluster.client() as client:
        lease = client.acquire("gone", ttl=3.0)
        channel, stub = _leader_stub(cluster)
        with channel:  # end the grant behind the client's back
            stub.Release(lease_pb2.ReleaseRequest(lease_id=lease.lease_id), timeout=5)
        assert lease.lost.wait(3.0)  # NOT_FOUND on the next keepalive: lost at once
        assert "no longer knows" in lease.lost_reason
        lease.release()  # releasing an unknown lease is a success


def test_watch_events(cluster: Cluster) -> None:
    events: queue.Queue[WatchEvent] = queue.Queue()
    with cluster.client() as client, cluster.client() as watcher:
        pre = client.acquire("w", ttl=5.0, holder="first")
        stream = watcher.watch("w")

        def pump() -> None:
            for event in stream:
                events.put(event)

        threading.Thread(target=pump, daemon=True).start()
        current = events.get(timeout=5)
        assert (current.kind, current.name) == ("current", "w")
        assert current.lease is not None
        assert current.lease.fencing_token == pre.fencing_token
        pre.release()
        released = events.get(timeout=5)
        assert released.kind == "released"
        lease = client.acquire("w", ttl=1.0, holder="second")
        acquired = events.get(timeout=5)
        assert acquired.kind == "acquired"
        assert acquired.lease is not None
        assert acquired.lease.fencing_token == lease.fencing_token
        lease.stop_keepalive()
        expired = events.get(timeout=5)
        assert expired.kind == "expired"
        assert expired.index > acquired.index > released.index


async def test_async_client(cluster: Cluster) -> None:
    async with AsyncLeaseClient(cluster.endpoints, timeout=10.0) as a:
        async with a.acquire("async", ttl=1.0, holder="aio") as lease:
            await_time = boot_monotonic()
            info = await a.holder("async")
            assert info is not None
            assert info.holder == "aio"
            import asyncio

            await asyncio.sleep(1.5)
            assert lease.is_valid()
            assert lease.valid_until > await_time
            with pytest.raises(LeaseHeld):
                await a.acquire("async", ttl=1.0)
            assert await a.check_token("async", lease.fencing_token)
        assert await a.holder("async") is None
        status = await a.status()
        assert status["leader"] in cluster.nodes


async def test_cancelled_async_with_still_releases(cluster: Cluster) -> None:
    """Leaving ``async with acquire(...)`` because the task was cancelled must still send the
    Release: otherwise the name stays held by nobody for a whole TTL."""
    import asyncio

    async with AsyncLeaseClient(cluster.endpoints, timeout=10.0) as a:
        holding = asyncio.Event()

        async def body() -> None:
            async with a.acquire("cancelled", ttl=30.0, holder="aio"):
                holding.set()
                await asyncio.sleep(60)

        task = asyncio.get_running_loop().create_task(body())
        await asyncio.wait_for(holding.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        deadline = boot_monotonic() + 5.0
        while await a.holder("cancelled") is not None:
            assert boot_monotonic() < deadline, "the lease was not released on cancellation"
            await asyncio.sleep(0.05)
