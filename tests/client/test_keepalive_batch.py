"""Several leases per KeepAlive message (issue 15), on the server side: the KeepAlive handler
(``LeaseServicer.KeepAlive`` in raftlease/server.py) against a fake node, no network. A
request with ``items`` is answered by ONE response whose items answer them in order, each
with its own in-band outcome; the bounds end the stream INVALID_ARGUMENT before anything is
renewed; a plain request on the same stream is answered as before; and the batch is one
synchronous pass in which each item checks the leader lease itself. The real-cluster side
is in tests/integration/test_keepalive_outcomes.py and test_keepalive_stream.py."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from raftlease.errors import NoLeaderLease
from raftlease.fsm.leases import LeaseRecord
from raftlease.server import MAX_KEEPALIVE_ITEMS, LeaseServicer
from raftlease.v1 import lease_pb2

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable

KA = lease_pb2.KeepAliveResponse


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


class FakeContext:
    def peer(self) -> str:
        return "ipv4:127.0.0.1:4711"

    def set_trailing_metadata(self, md: Any) -> None:
        self.metadata = md

    def add_done_callback(self, cb: Any) -> None:
        pass

    async def abort(self, code: grpc.StatusCode, message: str) -> None:
        raise Aborted(code, message)


class FakeNode:
    """Holds ``held`` lease ids; its leader lease lapses after ``lapse_after`` renewals.
    Each renewal records how far a concurrent task had got (``ticks``): a pass that awaited
    between items would let it move."""

    id = "n1"

    def __init__(self, held: Iterable[int], lapse_after: int | None = None) -> None:
        self.held = set(held)
        self.lapse_after = lapse_after
        self.renewals: list[tuple[int, dict[str, str] | None]] = []
        self.ticks = 0
        self.seen_ticks: list[int] = []

    def renew(self, lease_id: int, health: dict[str, str] | None) -> LeaseRecord | None:
        self.seen_ticks.append(self.ticks)
        if self.lapse_after is not None and len(self.renewals) >= self.lapse_after:
            raise NoLeaderLease(
                "node n1 is the leader but its leader lease is not valid yet; retry shortly",
                None,
                self.id,
            )
        self.renewals.append((lease_id, health))
        if lease_id not in self.held:
            return None
        return LeaseRecord(f"name-{lease_id}", lease_id, "h", 9000, (), "r")


async def _run(
    node: FakeNode, requests: list[lease_pb2.KeepAliveRequest]
) -> tuple[list[lease_pb2.KeepAliveResponse], Aborted | None]:
    servicer = LeaseServicer(node)  # type: ignore[arg-type]

    async def stream() -> AsyncIterator[lease_pb2.KeepAliveRequest]:
        for r in requests:
            yield r

    async def ticker() -> None:
        while True:
            node.ticks += 1
            await asyncio.sleep(0)

    tick = asyncio.get_running_loop().create_task(ticker())
    out: list[lease_pb2.KeepAliveResponse] = []
    try:
        async for resp in servicer.KeepAlive(stream(), FakeContext()):  # type: ignore[arg-type]
            out.append(resp)
            await asyncio.sleep(0)
    except Aborted as e:
        return out, e
    finally:
        tick.cancel()
    return out, None


def _batch(*items: tuple[int, dict[str, str]], inband: bool = True) -> lease_pb2.KeepAliveRequest:
    req = lease_pb2.KeepAliveRequest(
        lease_id=items[0][0], health=items[0][1], inband_outcomes=inband
    )
    for lid, health in items:
        req.items.add(lease_id=lid, health=health)
    return req


async def test_a_batch_of_mixed_outcomes_is_answered_in_one_response_in_order() -> None:
    node = FakeNode(held={1, 3, 4})
    too_big = {f"k{i}": "v" * 100 for i in range(20)}  # 20 entries > 16
    batch = _batch((1, {"load": "1"}), (2, {}), (3, too_big), (4, {}))
    plain = lease_pb2.KeepAliveRequest(lease_id=4, inband_outcomes=True)
    old_style = lease_pb2.KeepAliveRequest(lease_id=1)  # no flag: as a client before them
    (resp, plain_resp, old_resp), err = await _run(node, [batch, plain, old_style])
    assert err is None
    # the envelope of a batch's answer carries nothing but its items
    assert (resp.lease_id, resp.outcome, resp.ttl_ms, resp.message) == (0, 0, 0, "")
    assert [(a.lease_id, KA.Outcome.Name(a.outcome)) for a in resp.items] == [
        (1, "OUTCOME_RENEWED"),
        (2, "OUTCOME_NOT_FOUND"),
        (3, "OUTCOME_INVALID"),
        (4, "OUTCOME_RENEWED"),
    ]
    renewed, gone, invalid, _ = resp.items
    assert (renewed.ttl_ms, renewed.fencing_token, renewed.message) == (9000, 1, "")
    assert "lease 2 is not held" in gone.message
    assert gone.ttl_ms == gone.fencing_token == 0
    assert "health" in invalid.message
    assert all(not a.items for a in resp.items)
    # each item renewed once, with its own health; the top-level lease not on its own
    assert node.renewals[:3] == [(1, {"load": "1"}), (2, None), (4, None)]
    # a plain request on the same stream, with and without in-band outcomes: as before
    assert (plain_resp.lease_id, plain_resp.outcome, len(plain_resp.items)) == (
        4,
        KA.OUTCOME_RENEWED,
        0,
    )
    assert (old_resp.lease_id, old_resp.outcome, old_resp.ttl_ms) == (1, KA.OUTCOME_RENEWED, 9000)
    assert len(node.renewals) == 5


async def test_a_batch_is_one_pass_and_each_item_checks_the_leader_lease() -> None:
    """The leader lease lapses after 600 renewals of a 1,000-item batch: those are RENEWED,
    the rest RETRY (each item checks it; none relies on a check made for another). Nothing
    else runs on the event loop during the pass: no await between the items."""
    n = MAX_KEEPALIVE_ITEMS
    node = FakeNode(held=range(1, n + 1), lapse_after=600)
    (resp,), err = await _run(node, [_batch(*((lid, {}) for lid in range(1, n + 1)))])
    assert err is None
    outcomes = [a.outcome for a in resp.items]
    assert [a.lease_id for a in resp.items] == list(range(1, n + 1))
    assert outcomes == [KA.OUTCOME_RENEWED] * 600 + [KA.OUTCOME_RETRY] * (n - 600)
    assert resp.items[-1].leader_hint == ""
    assert "retry shortly" in resp.items[-1].message
    assert len(node.seen_ticks) == n
    assert len(set(node.seen_ticks)) == 1  # the whole batch in one loop turn


@pytest.mark.parametrize(
    ("request_", "text"),
    [
        (_batch((1, {}), (2, {}), inband=False), "needs inband_outcomes = true"),
        (
            _batch(*((lid, {}) for lid in range(1, MAX_KEEPALIVE_ITEMS + 2))),
            f"at most {MAX_KEEPALIVE_ITEMS} items, got {MAX_KEEPALIVE_ITEMS + 1}",
        ),
        (
            lease_pb2.KeepAliveRequest(
                lease_id=7, inband_outcomes=True, items=[lease_pb2.KeepAliveItem(lease_id=1)]
            ),
            "lease_id 0 or items[0].lease_id (1), got 7",
        ),
    ],
    ids=["without-inband", "over-the-bound", "other-top-level-lease"],
)
async def test_a_batch_that_breaks_a_bound_ends_the_stream_and_renews_nothing(
    request_: lease_pb2.KeepAliveRequest, text: str
) -> None:
    node = FakeNode(held={1, 2})
    before = lease_pb2.KeepAliveRequest(lease_id=1, inband_outcomes=True)
    after = lease_pb2.KeepAliveRequest(lease_id=2, inband_outcomes=True)
    out, err = await _run(node, [before, request_, after])
    assert err is not None
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert text in err.message
    assert "nothing was renewed" in err.message
    assert [r.lease_id for r in out] == [1]
    assert node.renewals == [(1, None)]  # only the request before the bad one


async def test_a_batch_with_top_level_lease_zero_is_accepted() -> None:
    node = FakeNode(held={1, 2})
    req = lease_pb2.KeepAliveRequest(
        inband_outcomes=True,
        items=[lease_pb2.KeepAliveItem(lease_id=1), lease_pb2.KeepAliveItem(lease_id=2)],
    )
    (resp,), err = await _run(node, [req])
    assert err is None
    assert [(a.lease_id, a.outcome) for a in resp.items] == [
        (1, KA.OUTCOME_RENEWED),
        (2, KA.OUTCOME_RENEWED),
    ]
