"""Resource limits (docs/operations.md, "Limits") on a real 3-node cluster started with small
limits: a Lease request over --max-request-bytes, a client's waiting Acquire calls over
--max-waits-per-client, its open Watch/KeepAlive streams over --max-streams-per-client and a
holder's leases over --max-leases-per-holder each end with RESOURCE_EXHAUSTED, one line that
names the limit, its value and its flag, and disturb nothing else. Every per-client count
comes back when its call ends: answered, cancelled, timed out, or its client killed. Peer
messages are not bound by --max-request-bytes: a follower catches up through an
InstallSnapshot much larger than it. The first tests need no cluster: the pure bookkeeping
and the defaults (100 000 leases fit a snapshot well under the transport's cap)."""

from __future__ import annotations

import asyncio
import base64
import random
import signal
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio
import pytest

from integration.conftest import Cluster
from raftlease.fsm import limits
from raftlease.fsm.commands import Acquire
from raftlease.fsm.leases import LeaseTable
from raftlease.server import client_key_for, peer_host
from raftlease.settings import REQUEST_BYTES_MAX, ServerConfig
from raftlease.transport.grpc import MAX_MESSAGE_BYTES
from raftlease.types import NodeId
from raftlease.v1 import cluster_pb2, cluster_pb2_grpc, lease_pb2, lease_pb2_grpc

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
MAX_REQUEST = 4096
MAX_WAITS = 2
MAX_STREAMS = 2
MAX_LEASES = 3
pytestmark = pytest.mark.integration

LIMIT_ARGS = (
    "--max-request-bytes",
    str(MAX_REQUEST),
    "--max-waits-per-client",
    str(MAX_WAITS),
    "--max-streams-per-client",
    str(MAX_STREAMS),
    "--max-leases-per-holder",
    str(MAX_LEASES),
)


# -- no cluster ---------------------------------------------------------------------------------


def test_client_slots_count_per_client_and_forget_idle_clients() -> None:
    slots = limits.ClientSlots(2, "streams open", "--max-streams-per-client")
    slots.take("a")
    slots.take("a")
    slots.take("b")
    with pytest.raises(limits.LimitExceeded) as info:
        slots.take("a")
    assert str(info.value) == (
        "client a has 2 streams open: the limit is 2 (--max-streams-per-client; raise it on "
        "every node to allow more)"
    )
    slots.give_back("a")
    slots.take("a")
    for _ in range(2):
        slots.give_back("a")
    slots.give_back("b")
    assert (slots.count("a"), slots.total()) == (0, 0)
    slots.give_back("a")  # one too many changes nothing
    assert slots.total() == 0
    with pytest.raises(ValueError, match="--x must be >= 1"):
        limits.ClientSlots(0, "things", "--x")


class _Peer:
    def __init__(self, peer: str) -> None:
        self._peer = peer

    def peer(self) -> str:
        return self._peer

    def invocation_metadata(self) -> tuple[()]:
        return ()

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}


@pytest.mark.parametrize(
    ("peer", "key"),
    [
        ("ipv4:10.0.0.7:53122", "10.0.0.7"),
        ("ipv6:[::1]:7001", "::1"),
        ("ipv6:%5B::1%5D:7001", "::1"),
        ("unix:/tmp/sock", "unix:/tmp/sock"),
        ("", "unknown"),
    ],
)
def test_a_client_without_identity_is_its_host(peer: str, key: str) -> None:
    assert peer_host(_Peer(peer)) == key  # type: ignore[arg-type]
    assert client_key_for(None)(_Peer(peer)) == key  # type: ignore[arg-type]


def test_defaults_fit_the_benchmarks_and_the_transport() -> None:
    peers = {NodeId("n1"): "127.0.0.1:1"}
    cfg = ServerConfig(node_id=NodeId("n1"), cluster_id="c", peers=peers)
    assert cfg.max_request_bytes == 1024 * 1024
    assert cfg.max_waits_per_client >= 10_000
    assert cfg.max_streams_per_client > 10_000  # W6: 10 000 KeepAlive streams, one host
    assert cfg.max_leases_per_holder >= 100_000  # the W6 goal: 100 x 1000 leases
    assert REQUEST_BYTES_MAX == MAX_MESSAGE_BYTES
    bad: dict[str, Any] = {
        "max_request_bytes": 10,
        "max_waits_per_client": 0,
        "max_streams_per_client": 0,
        "max_leases_per_holder": -1,
    }
    problems = ServerConfig(node_id=NodeId("n1"), cluster_id="c", peers=peers, **bad).problems()
    for name in bad:
        assert any(p.startswith(name) for p in problems), (name, problems)


def test_a_100k_lease_snapshot_fits_the_peer_message_cap() -> None:
    """What an InstallSnapshot of the W6 goal weighs: ~8 MB of JSON (snapshot format 2;
    ~20 MB in format 1), sent as a zlib stream of ~1-3 MB, under the 64 MiB cap."""
    table = LeaseTable()
    for i in range(100_000):
        table.apply(Acquire(f"ka-{i:06d}", "bench:12345", 10_000, False, f"{i:032x}", ()), i + 1)
    plain = len(table.snapshot())
    sent = len(b"".join(table.view().encode(compress=True)))
    assert 4_000_000 < plain < MAX_MESSAGE_BYTES // 2, plain
    assert sent < plain // 2, (sent, plain)


# -- a cluster with small limits -----------------------------------------------------------------


@pytest.fixture
def limited(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    c.start_all(*LIMIT_ARGS, "--snapshot-entries", "20")
    try:
        c.leader()
        yield c
    finally:
        codes = c.terminate_all()
        print(f"exit codes: {codes}\n{c.log_tails()}")


def assert_limit_line(err: grpc.aio.AioRpcError, flag: str, value: int) -> None:
    assert err.code() == EXHAUSTED, err
    details = err.details() or ""
    assert "\n" not in details
    assert flag in details, details
    assert f"the limit is {value} " in details, details


class Raw:
    """grpc.aio stubs on one node."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.aio.insecure_channel(address)
        self.lease: Any = lease_pb2_grpc.LeaseStub(self.channel)
        self.cluster: Any = cluster_pb2_grpc.ClusterStub(self.channel)

    async def acquire(
        self, name: str, holder: str = "t", request_id: str | None = None
    ) -> lease_pb2.AcquireResponse:
        request = lease_pb2.AcquireRequest(
            name=name, holder=holder, ttl_ms=60_000, request_id=request_id or uuid.uuid4().hex
        )
        deadline = time.monotonic() + 10.0
        while True:
            try:
                resp: lease_pb2.AcquireResponse = await self.lease.Acquire(request, timeout=5.0)
                return resp
            except grpc.aio.AioRpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)

    async def close(self) -> None:
        await self.channel.close()


async def leader_raw(cluster: Cluster) -> Raw:
    return Raw(cluster.nodes[cluster.leader()].address)


async def eventually(check: Any, within: float = 5.0) -> Any:
    """Retry the coroutine function ``check`` until it returns without an RPC error."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await check()
        except grpc.aio.AioRpcError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def test_an_oversized_request_is_refused_and_nothing_else_is(limited: Cluster) -> None:
    raw = await leader_raw(limited)
    try:
        big = lease_pb2.AcquireRequest(
            name="big", holder="t", ttl_ms=10_000, request_id="r1", metadata={"k": "v" * 5000}
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await raw.lease.Acquire(big, timeout=5)
        assert_limit_line(info.value, "--max-request-bytes", MAX_REQUEST)
        assert "raftlease.v1.AcquireRequest is 50" in (info.value.details() or "")
        # Nothing changed, and the node serves the next request on the same channel.
        got = await raw.lease.Get(lease_pb2.GetRequest(name="big"), timeout=5)
        assert not got.held
        assert (await raw.acquire("small")).acquired
        # A streamed request over the limit ends its stream the same way.
        call = raw.lease.KeepAlive()
        await call.write(lease_pb2.KeepAliveRequest(lease_id=1, health={"h": "x" * 5000}))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call.read()
        assert_limit_line(info.value, "--max-request-bytes", MAX_REQUEST)
        # Undecodable bytes are INVALID_ARGUMENT, not grpc's INTERNAL.
        garbage = raw.channel.unary_unary(
            "/raftlease.v1.Lease/Get",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await garbage(b"\xff\xff\xff", timeout=5)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value
        assert "not a valid raftlease.v1.GetRequest" in (info.value.details() or "")
    finally:
        await raw.close()


async def test_a_snapshot_larger_than_the_client_cap_still_reaches_a_follower(
    limited: Cluster,
) -> None:
    leader = limited.leader()
    follower = next(n for n in limited.nodes if n != leader)
    limited.kill(follower)
    raw = Raw(limited.nodes[leader].address)
    try:
        # 40 leases of ~3 KB random metadata each (a 4 KB request; random, as snapshots are
        # compressed): a ~100 KB snapshot, and over --snapshot-entries entries, so the
        # leader compacts past what the follower has.
        for i in range(40):
            md = {"blob": base64.b64encode(random.randbytes(2250)).decode()}
            req = lease_pb2.AcquireRequest(
                name=f"snap-{i}", holder=f"h{i}", ttl_ms=600_000, request_id=f"s{i}", metadata=md
            )
            assert (await eventually(lambda req=req: raw.lease.Acquire(req, timeout=5))).acquired
        snap = await raw.cluster.Snapshot(cluster_pb2.SnapshotRequest(), timeout=5)
        assert len(snap.data) > 20 * MAX_REQUEST
        limited.start(follower)
        deadline = time.monotonic() + 20.0
        while True:
            st = limited.status(follower)
            if st is not None:
                me = next(n for n in st.nodes if n.id == follower)
                if me.applied_index >= snap.index:
                    break
            assert time.monotonic() < deadline, "the follower never caught up"
            await asyncio.sleep(0.2)
    finally:
        await raw.close()


async def test_waiting_acquires_per_client(limited: Cluster) -> None:
    raw = await leader_raw(limited)
    try:
        assert (await raw.acquire("busy", holder="owner")).acquired

        def wait_for_busy(timeout: float = 30.0) -> Any:
            req = lease_pb2.AcquireRequest(
                name="busy", holder="w", ttl_ms=10_000, wait_ms=60_000, request_id=uuid.uuid4().hex
            )
            return raw.lease.Acquire(req, timeout=timeout)

        waiting = [wait_for_busy() for _ in range(MAX_WAITS)]
        await asyncio.sleep(0.5)  # both reached the server and queued
        assert all(not w.done() for w in waiting)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await wait_for_busy()
        assert_limit_line(info.value, "--max-waits-per-client", MAX_WAITS)
        assert "Acquire calls waiting" in (info.value.details() or "")
        # An acquire that does not wait is not counted, and still answers.
        free = await raw.acquire("other")
        assert free.acquired
        held = await raw.lease.Acquire(
            lease_pb2.AcquireRequest(name="busy", holder="x", ttl_ms=10_000, request_id="nw"),
            timeout=5,
        )
        assert not held.acquired
        # A cancelled wait gives its slot back ...
        waiting[0].cancel()
        third = await eventually(lambda: _queued(wait_for_busy))
        third.cancel()
        # ... and so does one whose deadline passed.
        short = wait_for_busy(timeout=1.0)
        await asyncio.sleep(0.3)
        assert not short.done()  # admitted: one of the limit's slots, with waiting[1]
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await short
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        again = await eventually(lambda: _queued(wait_for_busy))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await wait_for_busy()  # waiting[1] and `again`: exactly the limit
        assert_limit_line(info.value, "--max-waits-per-client", MAX_WAITS)
        again.cancel()
        waiting[1].cancel()
        # Every slot came back: the limit's worth of waits queue again.
        calls = [await eventually(lambda: _queued(wait_for_busy)) for _ in range(MAX_WAITS)]
        for call in calls:
            call.cancel()
    finally:
        await raw.close()


async def _queued(start: Any) -> Any:
    """Start a waiting acquire; an RPC error if it ended within 0.3 s (refused)."""
    call = start()
    try:
        await asyncio.wait_for(asyncio.shield(call), 0.3)
    except TimeoutError:
        return call  # still waiting: it was admitted
    return call


async def _open_watch(raw: Raw) -> Any:
    call = raw.lease.Watch(lease_pb2.WatchRequest(name="watched"))
    await asyncio.wait_for(call.read(), 5.0)  # the CURRENT event: the stream is open
    return call


async def _open_keepalive(raw: Raw, lease_id: int) -> Any:
    call = raw.lease.KeepAlive()
    await call.write(lease_pb2.KeepAliveRequest(lease_id=lease_id, inband_outcomes=True))
    resp = await asyncio.wait_for(call.read(), 5.0)
    if resp is grpc.aio.EOF:
        await call  # raises the status
    return call


async def test_streams_per_client_come_back_when_streams_end(limited: Cluster) -> None:
    raw = await leader_raw(limited)
    try:
        lease = await raw.acquire("watched")
        watch = await _open_watch(raw)
        keep = await _open_keepalive(raw, lease.lease.lease_id)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await _open_watch(raw)
        assert_limit_line(info.value, "--max-streams-per-client", MAX_STREAMS)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await _open_keepalive(raw, 1)
        assert_limit_line(info.value, "--max-streams-per-client", MAX_STREAMS)
        # Unary calls are not streams: still served.
        assert (await raw.lease.Get(lease_pb2.GetRequest(name="watched"), timeout=5)).held
        watch.cancel()  # a cancelled stream gives its slot back
        watch = await eventually(lambda: _open_watch(raw))
        await keep.done_writing()  # a stream the client closed gives its slot back
        assert await asyncio.wait_for(keep.read(), 5.0) is grpc.aio.EOF
        keep = await eventually(lambda: _open_keepalive(raw, lease.lease.lease_id))
        watch.cancel()
        keep.cancel()
    finally:
        await raw.close()


CHILD = """
import asyncio, sys
import grpc.aio
from raftlease.v1 import lease_pb2, lease_pb2_grpc

async def main():
    ch = grpc.aio.insecure_channel(sys.argv[1])
    stub = lease_pb2_grpc.LeaseStub(ch)
    calls = []
    for _ in range(int(sys.argv[2])):
        call = stub.Watch(lease_pb2.WatchRequest(name="watched"))
        await call.read()
        calls.append(call)
    print("OPEN", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_a_killed_client_gives_its_streams_back(limited: Cluster) -> None:
    raw = await leader_raw(limited)
    address = limited.nodes[limited.leader()].address
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, address, str(MAX_STREAMS), stdout=asyncio.subprocess.PIPE
    )
    try:
        await raw.acquire("watched")
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 20)
        assert line.strip() == b"OPEN"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await _open_watch(raw)
        assert_limit_line(info.value, "--max-streams-per-client", MAX_STREAMS)
        child.send_signal(signal.SIGKILL)
        await asyncio.wait_for(child.wait(), 10)
        calls = [await eventually(lambda: _open_watch(raw)) for _ in range(MAX_STREAMS)]
        for call in calls:
            call.cancel()
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
        await raw.close()


async def test_leases_per_holder(limited: Cluster) -> None:
    raw = await leader_raw(limited)
    try:
        granted = [await raw.acquire(f"mine-{i}", holder="h", request_id=f"r{i}") for i in range(3)]
        assert all(g.acquired for g in granted)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await raw.acquire("mine-3", holder="h")
        assert_limit_line(info.value, "--max-leases-per-holder", MAX_LEASES)
        assert "holder 'h' holds 3 leases" in (info.value.details() or "")
        # Nothing changed; another holder is not affected; a retry of a grant still answers.
        assert not (await raw.lease.Get(lease_pb2.GetRequest(name="mine-3"), timeout=5)).held
        assert (await raw.acquire("theirs", holder="other")).acquired
        retry = await raw.acquire("mine-0", holder="h", request_id="r0")
        assert retry.acquired
        assert retry.lease.lease_id == granted[0].lease.lease_id
        # The new leader counts the same (from the replicated table).
        await raw.cluster.TransferLeadership(cluster_pb2.TransferLeadershipRequest(), timeout=10)
        await raw.close()
        raw = await leader_raw(limited)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await raw.acquire("mine-3", holder="h")
        assert_limit_line(info.value, "--max-leases-per-holder", MAX_LEASES)
        # A release makes room.
        await eventually(
            lambda: raw.lease.Release(
                lease_pb2.ReleaseRequest(lease_id=granted[1].lease.lease_id), timeout=5
            )
        )
        assert (await raw.acquire("mine-3", holder="h")).acquired
    finally:
        await raw.close()
