"""In-band keepalive outcomes on a real 3-node cluster.

A renewal that asks for ``inband_outcomes`` is answered with its outcome (RENEWED, NOT_FOUND,
RETRY, NOT_LEADER, INVALID) and the KeepAlive stream stays open for the other leases on it;
a renewal that does not ask ends the stream with a status code, as before. A batch (a
request with ``items``) gets one response whose items carry each lease's outcome. The last
test holds a lease with LeaseClient through a brief lapse of the leader's leader lease.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from typing import TYPE_CHECKING, Any, cast

import grpc
import grpc.aio
import pytest

from raftlease.v1 import lease_pb2, lease_pb2_grpc

if TYPE_CHECKING:
    from integration.conftest import Cluster

pytestmark = pytest.mark.integration

KA = lease_pb2.KeepAliveResponse
LAPSE_TEXT = "leader lease is not valid"  # what the leader says while its lease has lapsed


class Raw:
    """Raw grpc.aio calls to one node."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.channel = grpc.aio.insecure_channel(address)
        self.stub: lease_pb2_grpc.LeaseAsyncStub = lease_pb2_grpc.LeaseStub(self.channel)

    async def acquire(self, name: str, ttl_ms: int = 10_000) -> int:
        """Acquire ``name`` on this node (the leader), retrying while it warms up."""
        request = lease_pb2.AcquireRequest(
            name=name, holder="raw", ttl_ms=ttl_ms, request_id=uuid.uuid4().hex
        )
        deadline = time.monotonic() + 10.0
        while True:
            try:
                resp = await self.stub.Acquire(request, timeout=2.0)
            except grpc.aio.AioRpcError as err:
                if err.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
                continue
            assert resp.acquired, resp
            return resp.lease.lease_id

    def stream(self) -> Stream:
        return Stream(self.stub)

    async def close(self) -> None:
        await self.channel.close()


class Stream:
    """One KeepAlive stream: write a request, read its answer."""

    def __init__(self, stub: lease_pb2_grpc.LeaseAsyncStub) -> None:
        self.call: Any = stub.KeepAlive()

    async def renew(self, lease_id: int, *, inband: bool = True) -> lease_pb2.KeepAliveResponse:
        await self.call.write(lease_pb2.KeepAliveRequest(lease_id=lease_id, inband_outcomes=inband))
        resp = await asyncio.wait_for(self.call.read(), 5.0)
        assert resp is not grpc.aio.EOF, "the server ended the stream"
        return cast("lease_pb2.KeepAliveResponse", resp)

    async def batch(
        self, items: list[tuple[int, dict[str, str]]], *, inband: bool = True
    ) -> lease_pb2.KeepAliveResponse:
        """Several renewals in one message (``items``), as the clients send them."""
        req = lease_pb2.KeepAliveRequest(
            lease_id=items[0][0], health=items[0][1], inband_outcomes=inband
        )
        for lid, health in items:
            req.items.add(lease_id=lid, health=health)
        await self.call.write(req)
        resp = await asyncio.wait_for(self.call.read(), 5.0)
        assert resp is not grpc.aio.EOF, "the server ended the stream"
        return cast("lease_pb2.KeepAliveResponse", resp)

    def cancel(self) -> None:
        self.call.cancel()


def _leader_and_followers(cluster: Cluster) -> tuple[str, list[str]]:
    leader = cluster.leader()
    return leader, [n for n in cluster.nodes if n != leader]


async def test_one_lease_not_found_leaves_the_stream_open(cluster: Cluster) -> None:
    leader, _ = _leader_and_followers(cluster)
    raw = Raw(cluster.nodes[leader].address)
    try:
        ids = [await raw.acquire(f"inband-{i}") for i in range(3)]
        stream = raw.stream()
        for lid in ids:
            resp = await stream.renew(lid)
            assert (resp.lease_id, resp.outcome, resp.ttl_ms) == (lid, KA.OUTCOME_RENEWED, 10_000)
            assert resp.fencing_token > 0
        # Release the middle one through another call.
        released = await raw.stub.Release(lease_pb2.ReleaseRequest(lease_id=ids[1]), timeout=5)
        assert released.released
        for _ in range(3):  # keep sending: the stream stays open for the other two
            answers = [await stream.renew(lid) for lid in ids]
            assert [(a.lease_id, a.outcome) for a in answers] == [
                (ids[0], KA.OUTCOME_RENEWED),
                (ids[1], KA.OUTCOME_NOT_FOUND),
                (ids[2], KA.OUTCOME_RENEWED),
            ]
            gone = answers[1]
            assert f"lease {ids[1]} is not held" in gone.message
            assert (gone.ttl_ms, gone.fencing_token, gone.leader_hint) == (0, 0, "")
            assert answers[0].ttl_ms == answers[2].ttl_ms == 10_000
        stream.cancel()
    finally:
        await raw.close()


async def test_a_batch_answers_every_item_in_one_response(cluster: Cluster) -> None:
    """Mixed outcomes in one batch (renewed, not found, invalid health), plain requests with
    and without the flag on the same stream, a batch on a follower (NOT_LEADER per item),
    and a batch over the bound (INVALID_ARGUMENT naming it, the stream ends)."""
    leader, followers = _leader_and_followers(cluster)
    raw = Raw(cluster.nodes[leader].address)
    on_follower = Raw(cluster.nodes[followers[0]].address)
    try:
        ids = [await raw.acquire(f"batch-{i}") for i in range(4)]
        await raw.stub.Release(lease_pb2.ReleaseRequest(lease_id=ids[1]), timeout=5)
        stream = raw.stream()
        too_big = {"k": "x" * 2000}  # over the 1024-byte health bound
        for _ in range(2):  # the stream stays open
            resp = await stream.batch(
                [(ids[0], {"load": "0.1"}), (ids[1], {}), (ids[2], too_big), (ids[3], {})]
            )
            assert (resp.lease_id, resp.outcome) == (0, KA.OUTCOME_UNSPECIFIED)
            assert [(a.lease_id, a.outcome) for a in resp.items] == [
                (ids[0], KA.OUTCOME_RENEWED),
                (ids[1], KA.OUTCOME_NOT_FOUND),
                (ids[2], KA.OUTCOME_INVALID),
                (ids[3], KA.OUTCOME_RENEWED),
            ]
            assert resp.items[0].ttl_ms == resp.items[3].ttl_ms == 10_000
            assert resp.items[0].fencing_token == ids[0]
            assert f"lease {ids[1]} is not held" in resp.items[1].message
            assert "health" in resp.items[2].message
            # plain requests on the same stream, as before
            plain = await stream.renew(ids[3])
            assert (plain.lease_id, plain.outcome, len(plain.items)) == (
                ids[3],
                KA.OUTCOME_RENEWED,
                0,
            )
            old = await stream.renew(ids[0], inband=False)
            assert (old.lease_id, old.outcome) == (ids[0], KA.OUTCOME_RENEWED)
        got = await raw.stub.Get(lease_pb2.GetRequest(name="batch-0"), timeout=5)
        assert dict(got.lease.health) == {"load": "0.1"}  # the item's health was recorded
        # on a follower: every item NOT_LEADER with the hint
        resp = await on_follower.stream().batch([(ids[0], {}), (ids[3], {})])
        assert [(a.lease_id, a.outcome, a.leader_hint) for a in resp.items] == [
            (ids[0], KA.OUTCOME_NOT_LEADER, cluster.nodes[leader].address),
            (ids[3], KA.OUTCOME_NOT_LEADER, cluster.nodes[leader].address),
        ]
        # over the bound: INVALID_ARGUMENT naming it, and the stream is over
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stream.batch([(ids[0], {})] * 1001)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "at most 1000 items, got 1001" in (info.value.details() or "")
        # without in-band outcomes a batch is refused the same way
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await raw.stream().batch([(ids[0], {}), (ids[3], {})], inband=False)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "needs inband_outcomes = true" in (info.value.details() or "")
    finally:
        await raw.close()
        await on_follower.close()


async def test_without_the_flag_a_failure_still_ends_the_stream(cluster: Cluster) -> None:
    leader, _ = _leader_and_followers(cluster)
    raw = Raw(cluster.nodes[leader].address)
    try:
        ids = [await raw.acquire(f"abort-{i}") for i in range(2)]
        stream = raw.stream()
        for lid in ids:
            resp = await stream.renew(lid, inband=False)
            # The outcome is set on success even without the flag (old clients ignore it).
            assert (resp.lease_id, resp.outcome) == (lid, KA.OUTCOME_RENEWED)
        await raw.stub.Release(lease_pb2.ReleaseRequest(lease_id=ids[0]), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stream.renew(ids[0], inband=False)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert f"lease {ids[0]} is not held" in (info.value.details() or "")
        # The stream is over: the other lease cannot be renewed on it any more.
        with pytest.raises((grpc.aio.AioRpcError, asyncio.InvalidStateError)):
            await stream.renew(ids[1], inband=False)
        # The same holds for Renew: a status, as before.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await raw.stub.Renew(lease_pb2.RenewRequest(lease_id=ids[0]), timeout=5)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        # ... unless asked for in-band outcomes
        gone = await raw.stub.Renew(
            lease_pb2.RenewRequest(lease_id=ids[0], inband_outcomes=True), timeout=5
        )
        assert gone.outcome == KA.OUTCOME_NOT_FOUND
        kept = await raw.stub.Renew(
            lease_pb2.RenewRequest(lease_id=ids[1], inband_outcomes=True), timeout=5
        )
        assert (kept.outcome, kept.ttl_ms) == (KA.OUTCOME_RENEWED, 10_000)
    finally:
        await raw.close()


async def test_a_follower_answers_not_leader_with_the_hint(cluster: Cluster) -> None:
    leader, followers = _leader_and_followers(cluster)
    leader_address = cluster.nodes[leader].address
    on_leader = Raw(leader_address)
    on_follower = Raw(cluster.nodes[followers[0]].address)
    try:
        lid = await on_leader.acquire("follower")
        stream = on_follower.stream()
        answers = [await stream.renew(lid) for _ in range(3)]  # the stream stays open
        for resp in answers:
            assert resp.outcome == KA.OUTCOME_NOT_LEADER, resp
            assert resp.lease_id == lid
            assert resp.leader_hint == leader_address
            assert resp.ttl_ms == 0
            assert "not the leader" in resp.message
        # The client moves the stream to the hint.
        moved = Raw(answers[-1].leader_hint)
        try:
            renewed = await moved.stream().renew(lid)
            assert renewed.outcome == KA.OUTCOME_RENEWED
        finally:
            await moved.close()
        stream.cancel()
    finally:
        await on_leader.close()
        await on_follower.close()


async def test_retry_while_the_leader_lease_lapsed(cluster: Cluster) -> None:
    """SIGSTOP both followers: the leader's lease lapses within 140 ms and its renewals are
    answered RETRY, in-band. Resume them right then (before the leader would step down or a
    follower's election timer would fire): the same stream answers RENEWED again."""
    for _round in range(3):  # a new round only if the pause still moved the leadership
        leader, followers = _leader_and_followers(cluster)
        raw = Raw(cluster.nodes[leader].address)
        try:
            lid = await raw.acquire(f"retry-{_round}")
            stream = raw.stream()
            resp = await stream.renew(lid)
            assert resp.outcome == KA.OUTCOME_RENEWED
            for f in followers:
                cluster.signal(f, signal.SIGSTOP)
            try:
                deadline = time.monotonic() + 2.0
                resp = await stream.renew(lid)
                while resp.outcome == KA.OUTCOME_RENEWED and time.monotonic() < deadline:
                    resp = await stream.renew(lid)
            finally:
                for f in followers:
                    cluster.signal(f, signal.SIGCONT)
            assert resp.outcome == KA.OUTCOME_RETRY, resp
            assert LAPSE_TEXT in resp.message
            assert (resp.lease_id, resp.ttl_ms, resp.leader_hint) == (lid, 0, "")
            # The same stream, once the followers answer again:
            deadline = time.monotonic() + 3.0
            while resp.outcome == KA.OUTCOME_RETRY and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
                resp = await stream.renew(lid)
            if resp.outcome == KA.OUTCOME_NOT_LEADER:
                continue  # the leader stepped down meanwhile (a loaded machine): again
            assert (resp.outcome, resp.lease_id, resp.ttl_ms) == (
                KA.OUTCOME_RENEWED,
                lid,
                10_000,
            )
            stream.cancel()
            return
        finally:
            await raw.close()
    pytest.fail("the leadership moved in every round")
