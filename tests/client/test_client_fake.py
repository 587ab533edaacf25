"""LeaseClient / AsyncLeaseClient against an in-process FAKE Lease service (no raftlease server).

Covers the client's own duties: following the leader hint, reusing request_id on retries,
error mapping, idempotent release, and the lost signal firing before is_valid() turns false
(and never being undone by a late renewal).
"""

from __future__ import annotations

import threading
import time
from concurrent import futures
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from raftlease.client import (
    AsyncLeaseClient,
    ClusterUnavailable,
    InvalidArgument,
    Lease,
    LeaseClient,
    LeaseHeld,
    LeaseLost,
)
from raftlease.clock import boot_monotonic
from raftlease.v1 import lease_pb2, lease_pb2_grpc

if TYPE_CHECKING:
    from collections.abc import Iterator

Ctx = grpc.ServicerContext


class FakeLease(lease_pb2_grpc.LeaseServicer):
    """A scriptable Lease service. ``follower_of`` makes it answer UNAVAILABLE + hint."""

    def __init__(self) -> None:
        self.follower_of: str | None = None
        self.acquire_requests: list[lease_pb2.AcquireRequest] = []
        self.acquire_failures = 0  # answer UNAVAILABLE (no hint) this many times
        self.acquire_delay = 0.0
        self.held_by: str | None = None
        self.renew_mode = "ok"  # ok | unavailable | not_found | not_found_once
        self.renew_delay = 0.0  # answer each renewal this long after it arrived
        self.renews = 0
        self.received: list[float] = []  # boot clock when each acquire/renew ARRIVED, if answered
        self.releases: list[int] = []
        self.lock = threading.Lock()

    def _maybe_redirect(self, context: Ctx) -> None:
        if self.follower_of is not None:
            context.set_trailing_metadata((("raftlease-leader", self.follower_of),))
            context.abort(grpc.StatusCode.UNAVAILABLE, "not the leader; leader is n1")

    def Acquire(self, request: lease_pb2.AcquireRequest, context: Ctx) -> Any:
        self._maybe_redirect(context)
        with self.lock:
            self.acquire_requests.append(request)
            fail = self.acquire_failures > 0
            self.acquire_failures -= 1
        if fail:
            context.abort(grpc.StatusCode.UNAVAILABLE, "no leader yet")
        if not request.name:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "name must not be empty")
        if self.held_by is not None:
            current = lease_pb2.LeaseInfo(name=request.name, holder=self.held_by, fencing_token=41)
            return lease_pb2.AcquireResponse(acquired=False, current=current)
        time.sleep(self.acquire_delay)
        lease = lease_pb2.LeaseInfo(
            name=request.name,
            holder=request.holder,
            lease_id=7,
            fencing_token=42,
            ttl_ms=request.ttl_ms,
        )
        return lease_pb2.AcquireResponse(acquired=True, lease=lease)

    def Renew(self, request: lease_pb2.RenewRequest, context: Ctx) -> Any:
        self._maybe_redirect(context)
        with self.lock:
            self.renews += 1
        if self.renew_mode == "unavailable":
            context.abort(grpc.StatusCode.UNAVAILABLE, "no valid leader lease")
        if self.renew_mode == "not_found_once":
            self.renew_mode = "ok"
            self.acquire_delay = 0.0
            context.abort(grpc.StatusCode.NOT_FOUND, f"lease {request.lease_id} is not held")
        if self.renew_mode == "not_found":
            context.abort(grpc.StatusCode.NOT_FOUND, f"lease {request.lease_id} is not held")
        arrived = boot_monotonic()
        time.sleep(self.renew_delay)
        with self.lock:
            self.received.append(arrived)  # before the answer leaves: the client may use it
        return lease_pb2.RenewResponse(ttl_ms=1000, fencing_token=42)

    def Get(self, request: lease_pb2.GetRequest, context: Ctx) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "fake")

    def List(self, request: lease_pb2.ListRequest, context: Ctx) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "fake")

    def CheckToken(self, request: lease_pb2.CheckTokenRequest, context: Ctx) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "fake")

    def Watch(self, request: lease_pb2.WatchRequest, context: Ctx) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "fake")

    def KeepAlive(self, request_iterator: Any, context: Ctx) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "fake")

    def Release(self, request: lease_pb2.ReleaseRequest, context: Ctx) -> Any:
        self._maybe_redirect(context)
        self.releases.append(request.lease_id)
        context.abort(grpc.StatusCode.NOT_FOUND, "already released")


class Fakes:
    def __init__(self) -> None:
        self.leader = FakeLease()
        self.follower = FakeLease()
        self.servers: list[grpc.Server] = []
        addresses = []
        for servicer in (self.leader, self.follower):
            server = grpc.server(
                futures.ThreadPoolExecutor(max_workers=8), options=[("grpc.so_reuseport", 0)]
            )
            lease_pb2_grpc.add_LeaseServicer_to_server(servicer, server)
            port = server.add_insecure_port("127.0.0.1:0")
            assert port > 0
            server.start()
            self.servers.append(server)
            addresses.append(f"127.0.0.1:{port}")
        self.leader_address, self.follower_address = addresses
        self.follower.follower_of = self.leader_address

    def stop(self) -> None:
        for server in self.servers:
            server.stop(grace=None)


@pytest.fixture
def fakes() -> Iterator[Fakes]:
    f = Fakes()
    yield f
    f.stop()


def test_follows_leader_hint_and_reuses_request_id(fakes: Fakes) -> None:
    fakes.leader.acquire_failures = 2
    with LeaseClient([fakes.follower_address], timeout=3.0) as client:
        lease = client.acquire("job", ttl=1.0, holder="me")
        assert (lease.lease_id, lease.fencing_token, lease.holder) == (7, 42, "me")
        assert lease.is_valid()
        ids = {r.request_id for r in fakes.leader.acquire_requests}
        assert len(fakes.leader.acquire_requests) == 3
        assert len(ids) == 1  # every retry carried the same request_id
        (request_id,) = ids
        assert len(request_id) == 32
        lease.release()
        assert not lease.is_valid()
        assert lease.lost.is_set()
    assert fakes.leader.releases == [7]  # NOT_FOUND on release counted as success


def test_renewals_extend_validity(fakes: Fakes) -> None:
    with LeaseClient([fakes.leader_address]) as client:
        lease = client.acquire("job", ttl=1.0)
        first = lease.valid_until
        time.sleep(1.2)
        assert lease.is_valid()
        assert lease.valid_until > first + 0.5
        assert fakes.leader.renews >= 2
        assert 0.5 < lease.time_left() <= 1.0


def test_lost_fires_before_validity_ends_and_is_final(fakes: Fakes) -> None:
    fired: list[tuple[float, float, bool]] = []

    def on_lost(lease: Lease) -> None:
        fired.append((boot_monotonic(), lease.valid_until, lease.is_valid()))

    with LeaseClient([fakes.leader_address, fakes.follower_address], timeout=2.0) as client:
        fakes.leader.renew_mode = "unavailable"
        t0 = boot_monotonic()
        lease = client.acquire("job", ttl=1.0, on_lost=on_lost)
        assert lease.lost.wait(2.0)
        (fired_at, valid_until, valid_in_callback) = fired[0]
        assert not valid_in_callback
        assert fired_at < valid_until  # the signal came before validity ran out
        assert valid_until - fired_at < lease.lost_margin + 0.05
        assert valid_until <= t0 + 1.0  # counted from the send, shortened by drift
        assert not lease.is_valid()
        assert fakes.leader.renews >= 3  # it kept retrying fast
        assert "no renewal succeeded" in lease.lost_reason
        fakes.leader.renew_mode = "ok"
        time.sleep(0.5)
        assert not lease.is_valid()  # losing is final
        assert len(fired) == 1


def test_not_found_loses_at_once(fakes: Fakes) -> None:
    with LeaseClient([fakes.leader_address]) as client:
        lease = client.acquire("job", ttl=3.0)
        fakes.leader.renew_mode = "not_found"
        t0 = boot_monotonic()
        assert lease.lost.wait(3.0)
        assert boot_monotonic() - t0 < 1.5  # at the next keepalive (ttl/3), not at expiry
        assert not lease.is_valid()
        assert "no longer knows" in lease.lost_reason


def test_stopped_keepalive_still_signals_lost(fakes: Fakes) -> None:
    with LeaseClient([fakes.leader_address]) as client:
        lease = client.acquire("job", ttl=1.0)
        lease.stop_keepalive()
        renews = fakes.leader.renews
        assert lease.lost.wait(2.0)
        assert boot_monotonic() < lease.valid_until
        assert fakes.leader.renews - renews <= 1


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_renewal_validity_counts_from_the_send_not_the_answer(fakes: Fakes, flavour: str) -> None:
    delayed_renewals_keep_validity_from_the_send(fakes, flavour)


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_planted_validity_from_the_answer_is_caught(
    fakes: Fakes, flavour: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Teeth: plant the bug (the keepalive hands the answer's arrival time to the timer
    instead of the send time) and the check above must fail."""
    from raftlease.client._keepalive import KeepaliveState

    honest = KeepaliveState.on_answer

    def from_the_answer(self: Any, answer: Any, t_send: float, lost_at: float) -> Any:
        return honest(self, answer, boot_monotonic(), lost_at)

    monkeypatch.setattr(KeepaliveState, "on_answer", from_the_answer)
    with pytest.raises(AssertionError, match="after the renewal arrived"):
        delayed_renewals_keep_validity_from_the_send(fakes, flavour)


def delayed_renewals_keep_validity_from_the_send(fakes: Fakes, flavour: str) -> None:
    """A renewal answered late must not extend validity past (send time + TTL, shortened by
    the drift bound): the request was sent no later than it ARRIVED at the server, so
    valid_until <= arrival + ttl (1 - rho) / (1 + rho). A client that counted from the
    answer would overshoot by the answer's delay (0.15 s here, under the 0.2 s cap on one
    renewal attempt at this TTL)."""
    fakes.leader.renew_delay = 0.15
    eff = 1.0 * (1 - 0.01) / (1 + 0.01)

    def check(valid_until: float) -> None:
        with fakes.leader.lock:
            latest = max(fakes.leader.received, default=None)
        assert latest is not None, "no renewal was answered"
        assert valid_until <= latest + eff + 1e-3, (
            f"validity {valid_until - latest:.3f}s after the renewal arrived; at most {eff:.3f}"
        )

    if flavour == "sync":
        with LeaseClient([fakes.leader_address]) as client:
            lease = client.acquire("job", ttl=1.0)
            time.sleep(1.2)
            assert fakes.leader.renews >= 2
            assert lease.is_valid(), "the delayed renewals should have kept the lease"
            check(lease.valid_until)
            lease.release()
        return

    import asyncio

    async def main() -> None:
        async with AsyncLeaseClient([fakes.leader_address]) as client:
            lease = await client.acquire("job", ttl=1.0)
            await asyncio.sleep(1.2)
            assert fakes.leader.renews >= 2
            assert lease.is_valid(), "the delayed renewals should have kept the lease"
            check(lease.valid_until)
            await lease.release()

    asyncio.run(main())


def test_long_queue_wait_renews_before_returning(fakes: Fakes) -> None:
    fakes.leader.acquire_delay = 0.7  # the grant came late: t_send + ttl is nearly used up
    with LeaseClient([fakes.leader_address]) as client:
        lease = client.acquire("job", ttl=1.0, wait=5.0)
        assert fakes.leader.renews >= 1
        assert lease.time_left() > 0.8


def test_grant_that_expired_before_we_saw_it_queues_again(fakes: Fakes) -> None:
    fakes.leader.acquire_delay = 1.2  # the answer came later than the whole TTL
    fakes.leader.renew_mode = "not_found_once"  # ... and the grant had expired meanwhile
    with LeaseClient([fakes.leader_address]) as client:
        lease = client.acquire("job", ttl=1.0, wait=5.0)
        assert lease.is_valid()
        assert len(fakes.leader.acquire_requests) == 2
        first, second = fakes.leader.acquire_requests
        assert first.request_id != second.request_id  # a new acquire, not a retry
        assert second.wait_ms < first.wait_ms  # with what is left of the wait
    fakes.leader.acquire_delay = 1.2
    fakes.leader.renew_mode = "not_found_once"
    with LeaseClient([fakes.leader_address]) as client, pytest.raises(LeaseLost):
        client.acquire("job", ttl=1.0, wait=0.0)  # no wait left: the loss is reported


def test_error_mapping(fakes: Fakes) -> None:
    with LeaseClient([fakes.leader_address]) as client:
        with pytest.raises(InvalidArgument, match="name must not be empty"):
            client.acquire("", ttl=1.0)
        with pytest.raises(InvalidArgument, match="ttl"):
            client.acquire("x", ttl=-1.0)
        fakes.leader.held_by = "other:1"
        with pytest.raises(LeaseHeld) as info:
            client.acquire("x", ttl=1.0)
        assert (info.value.holder, info.value.fencing_token) == ("other:1", 41)
        assert "held by other:1" in str(info.value)


def test_cluster_unavailable_names_endpoints(fakes: Fakes) -> None:
    fakes.leader.acquire_failures = 10_000
    with LeaseClient([fakes.leader_address], timeout=0.4) as client:
        t0 = boot_monotonic()
        with pytest.raises(ClusterUnavailable) as info:
            client.acquire("x", ttl=1.0)
        assert boot_monotonic() - t0 < 1.5
    message = str(info.value)
    assert "\n" not in message
    assert fakes.leader_address in message
    assert "last error: UNAVAILABLE: no leader yet" in message
    assert len(fakes.leader.acquire_requests) > 3  # retried with backoff, not once


async def test_async_client(fakes: Fakes) -> None:
    fired: list[float] = []
    async with AsyncLeaseClient([fakes.follower_address], timeout=3.0) as client:
        async with client.acquire("job", ttl=1.0, holder="me") as lease:
            assert lease.is_valid()
            assert lease.fencing_token == 42
        assert not lease.is_valid()
        lease2 = await client.acquire("job2", ttl=1.0, on_lost=lambda _: fired.append(1.0))
        fakes.leader.renew_mode = "not_found"
        await lease2.lost.wait()
        assert fired == [1.0]
        assert not lease2.is_valid()
        fakes.leader.held_by = "x:1"
        with pytest.raises(LeaseHeld):
            await client.acquire("job3", ttl=1.0)
    assert fakes.leader.releases == [7, 7]  # explicit release, then close() releasing lease2
