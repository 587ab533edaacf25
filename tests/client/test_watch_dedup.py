"""Watch de-duplication (raftlease.client._common.WatchDedup) and both clients' use of it.

A lease released (or expired) with waiters passes to the first waiter in the SAME log entry,
so the server sends ``released`` then ``acquired`` with one index; both must be delivered.
A re-opened stream (after a leader change) may send again what the old one delivered; that
must be skipped. Here: the rule on hand-made events, a property over random replays, and the
sync and async clients against a fake Watch service whose streams break and replay.
"""

from __future__ import annotations

import threading
from concurrent import futures
from typing import TYPE_CHECKING, Any, cast

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftlease.client import AsyncLeaseClient, LeaseClient
from raftlease.client._common import LeaseInfo, WatchDedup, WatchEvent
from raftlease.v1 import lease_pb2, lease_pb2_grpc

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Generator, Iterator


def ev(kind: str, index: int, lease_id: int, name: str = "job", holder: str = "") -> WatchEvent:
    info = LeaseInfo(
        name=name,
        holder=holder or f"h{lease_id}",
        lease_id=lease_id,
        fencing_token=lease_id,
        ttl=5.0,
    )
    return WatchEvent(kind=kind, name=name, lease=info, index=index)


def test_handover_in_one_entry_delivers_release_and_acquire() -> None:
    dedup = WatchDedup()
    assert dedup.admit(ev("acquired", 7, 7))
    # A releases lease 7; the same entry (index 10) grants lease 10 to the waiter B.
    assert dedup.admit(ev("released", 10, 7))
    assert dedup.admit(ev("acquired", 10, 10, holder="B"))  # dropped when keyed by index only
    # expiry with a waiter: the same shape
    assert dedup.admit(ev("expired", 14, 10))
    assert dedup.admit(ev("acquired", 14, 14))


def test_replay_after_reconnect_is_skipped() -> None:
    dedup = WatchDedup()
    assert dedup.admit(ev("acquired", 7, 7))
    assert dedup.admit(ev("released", 10, 7))
    assert dedup.admit(ev("acquired", 10, 10))
    # the stream is re-opened: the current state, then the same changes again
    assert dedup.admit(ev("current", 10, 10))
    assert not dedup.admit(ev("acquired", 7, 7))
    assert not dedup.admit(ev("released", 10, 7))
    assert not dedup.admit(ev("acquired", 10, 10))
    assert dedup.admit(ev("released", 12, 10))  # then new changes pass
    assert not dedup.admit(ev("released", 12, 10))


def test_stream_broken_between_the_two_events_of_one_entry() -> None:
    dedup = WatchDedup()
    assert dedup.admit(ev("released", 10, 7))
    # the old stream broke here; the new one replays index 10 in full
    assert not dedup.admit(ev("released", 10, 7))
    assert dedup.admit(ev("acquired", 10, 10))


def test_current_and_unindexed_events_always_pass_and_change_nothing() -> None:
    dedup = WatchDedup()
    assert dedup.admit(ev("acquired", 10, 10))
    assert dedup.admit(ev("current", 10, 10))
    assert dedup.admit(ev("current", 10, 10))
    assert dedup.admit(ev("current", 3, 3))
    assert dedup.admit(ev("acquired", 0, 99))
    assert dedup.admit(ev("acquired", 0, 99))
    assert dedup.last_index == 10
    assert dedup.admit(ev("released", 10, 10))  # a different change at the same index


def test_watch_all_names_keys_on_the_name_too() -> None:
    dedup = WatchDedup()
    assert dedup.admit(ev("acquired", 5, 5, name="a"))
    assert dedup.admit(ev("acquired", 5, 5, name="b"))
    assert not dedup.admit(ev("acquired", 5, 5, name="a"))


def test_event_without_lease() -> None:
    dedup = WatchDedup()
    bare = WatchEvent(kind="released", name="job", lease=None, index=4)
    assert dedup.admit(bare)
    assert not dedup.admit(bare)


# A log of distinct changes in index order (1-3 changes per index, as a handover makes 2).
_LOG = st.lists(st.integers(min_value=1, max_value=3), min_size=1, max_size=12).map(
    lambda sizes: [
        ev(("released", "acquired", "expired")[k], index, index * 10 + k)
        for index, size in enumerate(sizes, start=1)
        for k in range(size)
    ]
)


@given(log=_LOG, data=st.data())
def test_any_sequence_of_replaying_streams_delivers_each_change_once(
    log: list[WatchEvent], data: st.DataObject
) -> None:
    """Streams each send a run of the log in order, starting anywhere at or before the first
    change not yet delivered (a server replays, it never skips); the output is the log."""
    dedup = WatchDedup()
    delivered: list[WatchEvent] = []
    while len(delivered) < len(log):
        start = data.draw(st.integers(min_value=0, max_value=len(delivered)), label="start")
        end = data.draw(st.integers(min_value=len(delivered) + 1, max_value=len(log)))
        delivered.extend(e for e in log[start:end] if dedup.admit(e))
    assert delivered == log


# ---------------------------------------------------------------------------------------------
# Both clients, against a fake Watch service whose first stream breaks mid-entry and whose
# second stream replays.

H1 = lease_pb2.LeaseInfo(name="job", holder="A", lease_id=7, fencing_token=7, ttl_ms=5000)
H2 = lease_pb2.LeaseInfo(name="job", holder="B", lease_id=10, fencing_token=10, ttl_ms=5000)
K = lease_pb2.WatchEvent
STREAMS = [
    # stream 1: current, A's release at 10, then the node goes away before B's acquire
    [
        K(kind=K.KIND_CURRENT, name="job", lease=H1, index=8),
        K(kind=K.KIND_RELEASED, lease=H1, index=10, name="job"),
    ],
    # stream 2 (a new leader): current, a replay of index 10 in full, then a new change
    [
        K(kind=K.KIND_CURRENT, name="job", lease=H2, index=10),
        K(kind=K.KIND_RELEASED, name="job", lease=H1, index=10),
        K(kind=K.KIND_ACQUIRED, name="job", lease=H2, index=10),
        K(kind=K.KIND_RELEASED, name="job", lease=H2, index=11),
    ],
]
EXPECTED = [
    ("current", 8, 7),
    ("released", 10, 7),
    ("current", 10, 10),
    ("acquired", 10, 10),
    ("released", 11, 10),
]


class ReplayingWatch(lease_pb2_grpc.LeaseServicer):
    """Serves STREAMS, one per Watch call; every other method is unimplemented."""

    def __init__(self) -> None:
        self.calls = 0
        self.done = threading.Event()

    def _no(self, context: Any) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "fake")

    def Acquire(self, request: Any, context: Any) -> Any:
        return self._no(context)

    def Renew(self, request: Any, context: Any) -> Any:
        return self._no(context)

    def Get(self, request: Any, context: Any) -> Any:
        return self._no(context)

    def List(self, request: Any, context: Any) -> Any:
        return self._no(context)

    def CheckToken(self, request: Any, context: Any) -> Any:
        return self._no(context)

    def KeepAlive(self, request_iterator: Any, context: Any) -> Any:
        return self._no(context)

    def Release(self, request: Any, context: Any) -> Any:
        return self._no(context)

    def Watch(self, request: lease_pb2.WatchRequest, context: Any) -> Any:
        self.calls += 1
        if self.calls > len(STREAMS):
            self.done.wait(10.0)
            context.abort(grpc.StatusCode.UNAVAILABLE, "fake: no more streams")
        yield from STREAMS[self.calls - 1]
        if self.calls < len(STREAMS):
            context.abort(grpc.StatusCode.UNAVAILABLE, "fake: node went away")
        self.done.wait(10.0)


@pytest.fixture
def fake_watch() -> Iterator[tuple[str, ReplayingWatch]]:
    servicer = ReplayingWatch()
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4), options=[("grpc.so_reuseport", 0)]
    )
    lease_pb2_grpc.add_LeaseServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    assert port > 0
    server.start()
    yield f"127.0.0.1:{port}", servicer
    servicer.done.set()
    server.stop(grace=None)


def _summary(event: WatchEvent) -> tuple[str, int, int]:
    assert event.lease is not None
    return (event.kind, event.index, event.lease.lease_id)


def test_sync_client_watch_delivers_handover_and_skips_replay(
    fake_watch: tuple[str, ReplayingWatch],
) -> None:
    address, servicer = fake_watch
    with LeaseClient([address], timeout=5.0) as client:
        stream = cast("Generator[WatchEvent, None, None]", client.watch("job"))
        got = [_summary(next(stream)) for _ in EXPECTED]
        stream.close()
    assert got == EXPECTED
    assert servicer.calls == 2


async def test_async_client_watch_delivers_handover_and_skips_replay(
    fake_watch: tuple[str, ReplayingWatch],
) -> None:
    address, servicer = fake_watch
    async with AsyncLeaseClient([address], timeout=5.0) as client:
        stream = cast("AsyncGenerator[WatchEvent, None]", client.watch("job"))
        got = [_summary(await anext(stream)) for _ in EXPECTED]
        await stream.aclose()
    assert got == EXPECTED
    assert servicer.calls == 2
