"""The suspend-safe clock (raftlease.clock.boot_monotonic) and who decides on it.

CLOCK_MONOTONIC (``time.monotonic``) stops while a Linux machine is suspended; CLOCK_BOOTTIME
does not. Lease validity on the clients (``is_valid``, ``time_left``, ``valid_until`` and the
send time they count from) and the server's clock (``clock_from_env``) read boot_monotonic,
which is CLOCK_BOOTTIME on Linux and ``time.monotonic`` where that does not exist.
"""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent import futures
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from raftlease import clock
from raftlease.client import AsyncLeaseClient, LeaseClient, effective_ttl
from raftlease.client._retry import Router
from raftlease.client._validity import LeaseTimer
from raftlease.client.sync import Lease
from raftlease.v1 import lease_pb2, lease_pb2_grpc

if TYPE_CHECKING:
    from collections.abc import Iterator

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="CLOCK_BOOTTIME is Linux's"
)


@linux_only
def test_boot_monotonic_reads_clock_boottime() -> None:
    assert clock.BOOT_CLOCK_NAME == "CLOCK_BOOTTIME"
    for _ in range(100):
        before = time.clock_gettime(time.CLOCK_BOOTTIME)
        now = clock.boot_monotonic()
        after = time.clock_gettime(time.CLOCK_BOOTTIME)
        assert before <= now <= after


@linux_only
def test_boot_monotonic_is_not_clock_monotonic() -> None:
    """On a machine never suspended the two clocks agree to the microsecond, so bracketing
    cannot tell them apart: a fresh interpreter whose CLOCK_BOOTTIME reads 10^6 s ahead
    (as after a long suspend) must see that offset in boot_monotonic and both servers'
    clocks, and not in time.monotonic."""
    code = """
import time
real = time.clock_gettime
time.clock_gettime = lambda c: real(c) + 1e6 if c == time.CLOCK_BOOTTIME else real(c)
from raftlease import clock
mono = time.monotonic()
print(clock.boot_monotonic() - mono, clock.clock_from_env().monotonic() - mono)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    offsets = [float(x) for x in out.stdout.split()]
    assert all(abs(off - 1e6) < 1.0 for off in offsets), out.stdout


def test_fallback_without_clock_boottime() -> None:
    assert clock._boot_clock(None) is time.monotonic


def test_fallback_when_the_kernel_refuses_the_clock() -> None:
    assert clock._boot_clock(-12345) is time.monotonic  # EINVAL from clock_gettime


def test_server_clocks_read_boot_monotonic(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [5000.0]
    monkeypatch.setattr(clock, "boot_monotonic", lambda: now[0])
    monkeypatch.delenv("RAFTLEASE_CLOCK_RATE", raising=False)
    production = clock.clock_from_env()
    assert production.monotonic() == 5000.0
    monkeypatch.setenv("RAFTLEASE_CLOCK_RATE", "1.5")
    skewed = clock.clock_from_env()
    now[0] += 10.0  # e.g. ten seconds of suspend
    assert production.monotonic() == 5010.0
    assert skewed.monotonic() == pytest.approx(5015.0)


@linux_only
def test_production_server_clock_is_boottime() -> None:
    before = time.clock_gettime(time.CLOCK_BOOTTIME)
    now = clock.MonotonicClock().monotonic()
    after = time.clock_gettime(time.CLOCK_BOOTTIME)
    assert before <= now <= after


# ---------------------------------------------------------------------------------------------
# Lease validity on the boot clock. The fake boot clock below runs far from time.monotonic, and
# "suspend" advances it alone (time.monotonic stops during a real suspend).


class FakeBootClock:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = time.monotonic() + 100_000.0
        monkeypatch.setattr(clock, "boot_monotonic", self)

    def __call__(self) -> float:
        return self.now


def test_sync_lease_validity_follows_the_boot_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    boot = FakeBootClock(monkeypatch)
    timer = LeaseTimer(10.0, 0.01)
    timer.on_success(boot.now)
    no_client = SimpleNamespace(_router=Router(["127.0.0.1:1"]), endpoints=["127.0.0.1:1"])
    lease = Lease(
        no_client,  # type: ignore[arg-type]  # no keepalive thread is started
        name="x",
        lease_id=1,
        fencing_token=1,
        holder="h",
        timer=timer,
        health={},
        on_lost=None,
    )
    assert lease.is_valid()
    assert lease.time_left() == pytest.approx(effective_ttl(10.0, 0.01))
    boot.now += 60.0  # a suspend: only the boot clock moved
    assert not lease.is_valid()
    assert lease.time_left() == 0.0


class GrantingLease(lease_pb2_grpc.LeaseServicer):
    """Grants every Acquire, renews every Renew; the rest is unimplemented."""

    def Acquire(self, request: lease_pb2.AcquireRequest, context: Any) -> Any:
        lease = lease_pb2.LeaseInfo(
            name=request.name,
            holder=request.holder,
            lease_id=3,
            fencing_token=3,
            ttl_ms=request.ttl_ms,
        )
        return lease_pb2.AcquireResponse(acquired=True, lease=lease)

    def Renew(self, request: lease_pb2.RenewRequest, context: Any) -> Any:
        return lease_pb2.RenewResponse(ttl_ms=10_000, fencing_token=3)

    def Release(self, request: lease_pb2.ReleaseRequest, context: Any) -> Any:
        return lease_pb2.ReleaseResponse()

    def _no(self, context: Any) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "fake")

    def Get(self, request: Any, context: Any) -> Any:
        return self._no(context)

    def List(self, request: Any, context: Any) -> Any:
        return self._no(context)

    def CheckToken(self, request: Any, context: Any) -> Any:
        return self._no(context)

    def Watch(self, request: Any, context: Any) -> Any:
        return self._no(context)

    def KeepAlive(self, request_iterator: Any, context: Any) -> Any:
        return self._no(context)


@pytest.fixture
def granting() -> Iterator[str]:
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4), options=[("grpc.so_reuseport", 0)]
    )
    lease_pb2_grpc.add_LeaseServicer_to_server(GrantingLease(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    assert port > 0
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(grace=None)


def test_sync_acquire_counts_from_the_boot_clock(
    granting: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    boot = FakeBootClock(monkeypatch)
    t_send = boot.now  # the fake clock stands still: the send time is exactly this
    with LeaseClient([granting], timeout=5.0, max_drift=0.01) as client:
        lease = client.acquire("x", ttl=10.0)
        assert lease.valid_until == pytest.approx(t_send + effective_ttl(10.0, 0.01))
        assert lease.is_valid()
        boot.now += 60.0
        assert not lease.is_valid()
        assert lease.time_left() == 0.0


async def test_async_acquire_counts_from_the_boot_clock(
    granting: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    boot = FakeBootClock(monkeypatch)
    t_send = boot.now
    async with AsyncLeaseClient([granting], timeout=5.0, max_drift=0.01) as client:
        lease = await client.acquire("x", ttl=10.0)
        assert lease.valid_until == pytest.approx(t_send + effective_ttl(10.0, 0.01))
        assert lease.is_valid()
        boot.now += 60.0
        assert not lease.is_valid()
        assert lease.time_left() == 0.0
