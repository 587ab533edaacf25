"""The keepalive hub (``raftlease/client/_hub.py``): every held lease of one client on one
KeepAlive stream per node, driven with explicit times like test_protocol.py. No network."""

from __future__ import annotations

import itertools
import random

import pytest

from raftlease.client._hub import (
    BATCH_CAP_S,
    HubStep,
    KeepaliveHub,
    LeaseEnded,
    StreamWrite,
    UnaryRenew,
    batch_ahead,
)
from raftlease.client._keepalive import RenewAnswer
from raftlease.client._protocol import KeepaliveMachine, Lost, SendRenew, Sleep
from raftlease.client._retry import Failure, Router, renew_attempt_cap
from raftlease.client._rpc import (
    KEEPALIVE_BATCH_BYTES,
    KEEPALIVE_BATCH_ITEMS,
    KeepaliveMessages,
    renew_answer,
)
from raftlease.client._validity import LeaseTimer, effective_ttl
from raftlease.server import MAX_KEEPALIVE_ITEMS
from raftlease.v1 import lease_pb2

NODES = ["n1:1", "n2:2", "n3:3"]
TTL = 9.0  # renewals every 3 s; batch window 0.25 s; attempt cap 1 s
DRIFT = 0.01
EFF = effective_ttl(TTL, DRIFT)
CAP = renew_attempt_cap(TTL)
RENEWED = RenewAnswer("RENEWED", ttl=TTL)
KA = lease_pb2.KeepAliveResponse


def _router(leader: str | None = "n1:1") -> Router:
    router = Router(NODES)
    if leader is not None:
        router.succeeded(leader)
    return router


def _machine(router: Router, lease_id: int, t_send: float, ttl: float = TTL) -> KeepaliveMachine:
    timer = LeaseTimer(ttl, DRIFT)
    timer.on_success(t_send)
    return KeepaliveMachine(
        f"renew lease {lease_id}",
        lease_id,
        timer,
        router,
        round_size=3,
        rng=random.Random(lease_id),
    )


def _hub(
    *acquired: float, router: Router | None = None
) -> tuple[KeepaliveHub, list[KeepaliveMachine]]:
    """A hub with lease i + 1 acquired (sent) at ``acquired[i]``, added at that time."""
    router = router or _router()
    hub = KeepaliveHub()
    machines = []
    for i, t in enumerate(acquired):
        m = _machine(router, i + 1, t)
        hub.add(t, i + 1, m)
        machines.append(m)
    return hub, machines


def _written(step: HubStep) -> list[int]:
    return [lid for w in step.writes for lid in w.lease_ids]


def test_batch_window() -> None:
    assert batch_ahead(9.0) == pytest.approx(0.25)
    assert batch_ahead(1.0) == pytest.approx(0.1 / 3)
    assert batch_ahead(3600.0) == BATCH_CAP_S


def test_renewals_falling_due_together_go_out_in_one_write_on_one_stream() -> None:
    hub, (m1, m2, m3) = _hub(100.0, 100.2, 101.0)
    assert hub.poll(101.0).wake == 103.0
    step = hub.poll(103.0)
    # lease 1 is due; lease 2 falls due within the window (0.25 s) and joins; lease 3 does not
    assert step.writes == [StreamWrite(1, "n1:1", (1, 2), opens=True)]
    assert step.wake == 103.0 + CAP  # the stream's stall check (lease 3 is due at 104.0)
    assert hub.in_flight(1) == [(1, 103.0)]
    assert hub.in_flight(2) == [(1, 103.0)]  # sent 0.2 s early: validity counts from then
    # answered 0.1 s later, in another order: validity from the SEND, per lease id
    hub.on_answer(103.1, 1, 2, RENEWED)
    hub.on_answer(103.1, 1, 1, RENEWED)
    assert m1.timer.valid_until == pytest.approx(103.0 + EFF)
    assert m2.timer.valid_until == pytest.approx(103.0 + EFF)
    assert hub.poll(103.1).wake == 104.0
    step = hub.poll(104.0)
    assert step.writes == [StreamWrite(1, "n1:1", (3,), opens=False)]  # the same stream
    hub.on_answer(104.05, 1, 3, RENEWED)
    assert m3.timer.valid_until == pytest.approx(104.0 + EFF)
    # leases 1 and 2 now renew together, every ttl / 3 from their send
    assert sorted(_written(hub.poll(106.0))) == [1, 2]
    assert hub.stats.renewals_sent == 5
    assert hub.stats.writes == 3
    assert hub.stats.streams_opened == 1


def test_nothing_is_sent_early_without_a_renewal_that_is_due() -> None:
    hub, _ = _hub(100.0)
    for now in (101.0, 102.8, 102.99):
        step = hub.poll(now)
        assert not step.writes
        assert step.wake == 103.0


def test_an_answer_to_nothing_in_flight_is_ignored() -> None:
    hub, (m1,) = _hub(100.0)
    before = m1.timer.valid_until
    hub.on_answer(101.0, 1, 1, RENEWED)  # no such call yet
    hub.poll(103.0)
    hub.on_answer(103.1, 1, 99, RENEWED)  # no such lease on it
    hub.on_answer(103.1, 7, 1, RENEWED)  # no such call
    assert m1.timer.valid_until == before
    hub.on_answer(103.1, 1, 1, RENEWED)
    hub.on_answer(103.2, 1, 1, RENEWED)  # a duplicate: nothing in flight any more
    assert m1.timer.valid_until == pytest.approx(103.0 + EFF)
    assert hub.stats.answers == 1


def test_validity_counts_from_the_oldest_unanswered_send() -> None:
    """Two renewals of one lease in flight: an answer cannot be told apart, so it counts from
    the older send. (Defensive: the hub's own flow keeps at most one in flight per lease, so
    the second one is planted here.)"""
    hub, (m1,) = _hub(100.0)
    hub.poll(103.0)  # renewal on call 1 at 103.0
    entry = hub._leases[1]
    entry.pending.insert(0, (1, 102.5, CAP))  # an older one on the same call
    hub._calls[1].pending[1] += 1
    hub._calls[1].in_flight += 1
    hub.on_answer(103.2, 1, 1, RENEWED)
    assert m1.timer.valid_until == pytest.approx(102.5 + EFF)
    assert hub.in_flight(1) == [(1, 103.0)]
    # the machine itself never counts from later than its own send either
    m = _machine(_router(), 9, 100.0)
    assert isinstance(m.poll(103.0), SendRenew)
    m.on_answer(103.2, RENEWED, t_send=103.1)
    assert m.timer.valid_until == pytest.approx(103.0 + EFF)


def test_one_leases_outcome_leaves_the_others_on_the_stream() -> None:
    hub, (_, m2, m3) = _hub(100.0, 100.0, 100.0)
    step = hub.poll(103.0)
    assert step.writes == [StreamWrite(1, "n1:1", (1, 2, 3), opens=True)]
    hub.on_answer(103.05, 1, 1, RenewAnswer("NOT_FOUND", message="lease 1 is not held"))
    hub.on_answer(103.05, 1, 2, RenewAnswer("RETRY", message="leader lease not valid"))
    hub.on_answer(103.05, 1, 3, RENEWED)
    step = hub.poll(103.05)
    (ended,) = step.ended
    assert ended.lease_id == 1
    assert ended.lost is not None
    assert not ended.lost.timed_out
    assert "no longer knows lease id 1" in ended.lost.reason
    assert 1 not in hub
    assert step.closes == []
    assert m2.timer.valid_until == pytest.approx(100.0 + EFF)  # RETRY never extends
    assert m3.timer.valid_until == pytest.approx(103.0 + EFF)
    # RETRY: the same stream, within 10-20 ms
    assert step.wake is not None
    assert 103.05 + 0.01 <= step.wake <= 103.05 + 0.02
    step = hub.poll(step.wake)
    assert step.writes == [StreamWrite(1, "n1:1", (2,), opens=False)]
    hub.on_answer(step.wake or 103.07, 1, 2, RENEWED)
    assert m2.timer.valid_until > 103.05 + EFF


def test_a_retry_backoff_is_never_cut_short_by_a_batch() -> None:
    hub, _ = _hub(100.0, 100.02)
    hub.poll(103.0)  # lease 1 goes; lease 2 (due 103.02) joins the batch
    hub.on_answer(103.005, 1, 1, RenewAnswer("RETRY"))
    hub.on_answer(103.005, 1, 2, RENEWED)
    retry_at = hub.poll(103.005).wake
    assert retry_at is not None
    assert retry_at > 103.005
    # lease 3 falls due just before lease 1's retry: the retry is not pulled forward
    m3 = _machine(_router(), 3, retry_at - 0.003 - 3.0)
    hub.add(103.005, 3, m3)
    step = hub.poll(retry_at - 0.003)
    assert _written(step) == [3]
    assert step.wake == retry_at
    assert _written(hub.poll(retry_at)) == [1]


def test_not_leader_moves_that_lease_to_the_hint_on_a_stream_of_its_own() -> None:
    hub, (m1, _) = _hub(100.0, 100.0)
    hub.poll(103.0)
    hub.on_answer(103.01, 1, 1, RenewAnswer("NOT_LEADER", hint="n2:2"))
    hub.on_answer(103.01, 1, 2, RENEWED)
    step = hub.poll(103.01)
    assert step.writes == [StreamWrite(2, "n2:2", (1,), opens=True)]
    assert hub.targets() == {"n1:1": 1, "n2:2": 2}
    hub.on_answer(103.02, 2, 1, RENEWED)
    assert m1.timer.valid_until == pytest.approx(103.01 + EFF)


def test_a_broken_stream_fails_every_renewal_on_it_and_they_follow_the_hint() -> None:
    hub, machines = _hub(100.0, 100.0, 100.1)
    hub.poll(103.0)
    hub.on_call_failed(103.2, 1, Failure("UNAVAILABLE: not the leader", "n3:3"))
    assert hub.targets() == {}
    step = hub.poll(103.2)
    assert step.writes == [StreamWrite(2, "n3:3", (1, 2, 3), opens=True)]
    for lid in (1, 2, 3):
        hub.on_answer(103.3, 2, lid, RENEWED)
    for m in machines:
        assert m.timer.valid_until == pytest.approx(103.2 + EFF)
        assert m.state.target == "n3:3"
    # events of the call that ended are ignored
    hub.on_answer(103.4, 1, 1, RENEWED)
    hub.on_call_failed(103.4, 1, Failure("CANCELLED"))
    assert hub.stats.streams_failed == 1


def test_a_stream_that_answers_nothing_is_closed_after_the_attempt_timeout() -> None:
    router = _router()
    hub, machines = _hub(100.0, 100.0, router=router)
    hub.poll(103.0)
    assert hub.poll(103.0 + CAP - 0.01).closes == []
    step = hub.poll(103.0 + CAP)
    assert step.closes == [1]
    assert not step.writes
    assert router.leader is None
    # each machine moves on as after a timed-out Renew: the next endpoint, after a backoff
    seen: list[int] = []
    now = 103.0 + CAP
    while len(seen) < 2:
        assert step.wake is not None
        now = step.wake
        step = hub.poll(now)
        for w in step.writes:
            assert w.target == "n2:2"
            seen.extend(w.lease_ids)
    assert sorted(seen) == [1, 2]
    assert now - (103.0 + CAP) <= 0.01
    assert all("DEADLINE_EXCEEDED" in m.state.lost_reason() for m in machines)


def test_a_stream_that_keeps_answering_is_not_a_stall() -> None:
    hub, (_, m2) = _hub(100.0, 100.0)
    hub.poll(103.0)
    hub.on_answer(103.9, 1, 1, RENEWED)  # progress: lease 2 waits its turn behind it
    step = hub.poll(103.0 + CAP)
    assert step.closes == []
    assert step.wake == pytest.approx(103.9 + CAP)
    hub.on_answer(104.5, 1, 2, RENEWED)
    assert m2.timer.valid_until == pytest.approx(103.0 + EFF)


def test_a_renewal_unanswered_at_the_lost_time_loses_the_lease_on_time() -> None:
    router = _router()
    hub = KeepaliveHub()
    late = _machine(router, 1, 100.0)  # lost at 100 + EFF - 0.25
    other = _machine(router, 2, 100.0)
    lost_at = late.timer.lost_at()
    t = lost_at - 0.5
    hub.add(t, 1, late)
    hub.add(t, 2, other)
    step = hub.poll(t)
    assert _written(step) == [1, 2]
    hub.on_answer(t + 0.45, 1, 2, RENEWED)  # the stream answers: no stall
    assert hub.poll(lost_at - 1e-6).ended == []
    step = hub.poll(lost_at)
    assert step.ended == [
        LeaseEnded(
            1,
            Lost(
                "no renewal succeeded (DEADLINE_EXCEEDED: no answer before the lease's lost time)",
                timed_out=True,
            ),
        )
    ]
    assert lost_at < late.timer.valid_until  # the signal comes before validity ends
    assert step.closes == []  # the stream stays for the others
    assert 2 in hub


def test_a_server_without_the_stream_gets_unary_renews_with_the_original_send_times() -> None:
    hub, (m1, m2) = _hub(100.0, 100.0)
    hub.poll(103.0)
    hub.on_unsupported(103.01, 1)
    step = hub.poll(103.01)
    assert step.writes == []
    assert step.unary == [UnaryRenew(2, "n1:1", 1, CAP), UnaryRenew(3, "n1:1", 2, CAP)]
    assert hub.in_flight(1) == [(2, 103.0)]
    hub.on_answer(103.2, 2, 1, RENEWED)
    hub.on_answer(103.2, 3, 2, RenewAnswer("RETRY"))
    assert m1.timer.valid_until == pytest.approx(103.0 + EFF)
    assert hub.unary_targets() == frozenset({"n1:1"})
    # from then on: unary Renews to that node, never a stream
    now = 103.2
    renewed_from = 0.0
    for _ in range(20):
        step = hub.poll(now)
        assert step.writes == []
        for u in step.unary:
            assert u.target == "n1:1"
            hub.on_answer(now, u.call, u.lease_id, RENEWED)
            renewed_from = now
        if m2.timer.valid_until > 100.0 + EFF:
            break
        assert step.wake is not None
        now = step.wake
    assert m2.timer.valid_until == pytest.approx(renewed_from + EFF)
    assert 103.2 < renewed_from < 103.25
    assert hub.stats.unary_sent == 3


def test_an_idle_stream_is_closed() -> None:
    hub, _ = _hub(100.0)
    hub.poll(103.0)
    hub.on_answer(103.01, 1, 1, RenewAnswer("NOT_LEADER", hint="n2:2"))
    step = hub.poll(103.01)
    assert step.writes == [StreamWrite(2, "n2:2", (1,), opens=True)]
    hub.on_answer(103.02, 2, 1, RENEWED)
    idle_at = 103.0 + 1.5 * TTL / 3 + 1.0
    now = 103.02
    while now < idle_at + 1:
        step = hub.poll(now)
        if step.closes:
            break
        for w in step.writes:
            for lid in w.lease_ids:
                hub.on_answer(now, w.call, lid, RENEWED)
        assert step.wake is not None
        now = step.wake
    assert step.closes == [1]
    assert now == pytest.approx(idle_at)
    assert hub.targets() == {"n2:2": 2}


def test_removed_leases_are_forgotten() -> None:
    hub, (m1, _) = _hub(100.0, 100.0)
    hub.poll(103.0)
    hub.remove(1)
    before = m1.timer.valid_until
    hub.on_answer(103.1, 1, 1, RENEWED)
    assert m1.timer.valid_until == before
    hub.on_answer(103.1, 1, 2, RENEWED)
    assert _written(hub.poll(106.0)) == [2]
    hub.remove(2)
    step = hub.poll(106.0)
    assert step.ended == []
    assert len(hub) == 0


def test_stopped_keepalive_sends_nothing_and_loses_on_time() -> None:
    hub, (m1,) = _hub(100.0)
    m1.stop_renewing()
    hub.nudge(101.0, 1)
    step = hub.poll(101.0)
    assert step.writes == []
    lost_at = m1.timer.lost_at()
    assert step.wake == lost_at
    step = hub.poll(lost_at)
    assert step.ended == [LeaseEnded(1, Lost("keepalives stopped", timed_out=True))]


def test_a_lease_lost_meanwhile_ends_without_a_signal() -> None:
    hub, (m1,) = _hub(100.0)
    hub.poll(103.0)
    m1.timer.mark_lost()  # released (or lost) on another path
    hub.on_answer(103.1, 1, 1, RENEWED)
    assert hub.poll(103.1).ended == [LeaseEnded(1, None)]


def test_many_leases_settle_into_a_few_bursts_and_never_renew_more_than_the_window_early() -> None:
    rng = random.Random(7)
    router = _router()
    hub = KeepaliveHub()
    acquired = sorted(100.0 + rng.uniform(0.0, 3.0) for _ in range(300))
    machines = {}
    for i, t in enumerate(acquired, start=1):
        machines[i] = _machine(router, i, t)
        hub.add(t, i, machines[i])
    sends: dict[int, list[float]] = {i: [t] for i, t in enumerate(acquired, start=1)}
    bursts: list[float] = []
    now = acquired[-1]
    while now < 160.0:
        step = hub.poll(now)
        assert step.ended == []
        for w in step.writes:
            bursts.append(now)
            for lid in w.lease_ids:
                sends[lid].append(now)
                hub.on_answer(now + 0.002, w.call, lid, RENEWED)
        assert step.wake is not None
        now = max(step.wake, now + 0.002)
    for lid, times in sends.items():
        gaps = [b - a for a, b in itertools.pairwise(times[1:])]
        assert all(3.0 - 0.25 - 1e-9 <= g <= 3.0 + 0.003 for g in gaps), (lid, gaps)
    last_interval = [b for b in bursts if b >= 157.0]
    assert len(last_interval) <= 13  # about ttl / 3 / 0.25 bursts, whatever the lease count
    assert hub.stats.streams_opened == 1
    assert all(m.timer.is_valid(160.0) for m in machines.values())


def test_the_hub_never_polls_a_machine_with_a_renewal_in_flight() -> None:
    hub, (m1,) = _hub(100.0)
    assert isinstance(m1.poll(100.0), Sleep)
    hub.poll(103.0)
    hub.nudge(103.05, 1)  # ignored while awaiting
    step = hub.poll(103.05)
    assert step.writes == []
    assert step.wake == 103.0 + CAP
    with pytest.raises(ValueError, match="already"):
        hub.add(103.05, 1, m1)


# ---------------------------------------------------------------- several leases per message
# (issue 15: gRPC's cost is per message; KeepAliveRequest.items carries many renewals)


def _health(lid: int) -> dict[str, str]:
    return {}


def _batch_answer(req: lease_pb2.KeepAliveRequest, **outcomes: str) -> lease_pb2.KeepAliveResponse:
    """What a server that knows ``items`` answers: one item per request item, in order."""
    resp = lease_pb2.KeepAliveResponse()
    for item in req.items:
        name = outcomes.get(f"l{item.lease_id}", "RENEWED")
        if name == "RENEWED":
            resp.items.add(
                lease_id=item.lease_id,
                ttl_ms=9000,
                fencing_token=item.lease_id,
                outcome=KA.OUTCOME_RENEWED,
            )
        else:
            resp.items.add(lease_id=item.lease_id, outcome=KA.Outcome.Value(f"OUTCOME_{name}"))
    return resp


def _old_answer(req: lease_pb2.KeepAliveRequest) -> lease_pb2.KeepAliveResponse:
    """What a server from before ``items`` answers: the top-level lease only, no items."""
    return lease_pb2.KeepAliveResponse(
        lease_id=req.lease_id, ttl_ms=9000, outcome=KA.OUTCOME_RENEWED
    )


def test_the_client_bound_is_the_servers() -> None:
    assert KEEPALIVE_BATCH_ITEMS == MAX_KEEPALIVE_ITEMS == 1000


def test_a_batched_write_is_one_message_whose_top_level_is_its_first_item() -> None:
    msgs = KeepaliveMessages()
    health = {2: {"load": "0.5"}}
    (req,) = msgs.requests([1, 2, 3], lambda lid: health.get(lid, {}), batched=True)
    assert req.inband_outcomes
    assert [(i.lease_id, dict(i.health)) for i in req.items] == [
        (1, {}),
        (2, {"load": "0.5"}),
        (3, {}),
    ]
    # a server from before items renews the first one (with its health): nothing else
    assert (req.lease_id, dict(req.health)) == (1, {})
    assert len(msgs) == 1
    answers, rest = msgs.answers(_batch_answer(req, l2="NOT_FOUND"))
    assert [(lid, a.outcome) for lid, a in answers] == [
        (1, KA.OUTCOME_RENEWED),
        (2, KA.OUTCOME_NOT_FOUND),
        (3, KA.OUTCOME_RENEWED),
    ]
    assert rest == ()
    assert len(msgs) == 0


def test_a_message_of_one_lease_and_an_unbatched_write_are_plain_requests() -> None:
    msgs = KeepaliveMessages()
    (one,) = msgs.requests([5], _health, batched=True)
    assert (one.lease_id, len(one.items), one.inband_outcomes) == (5, 0, True)
    plain = msgs.requests([6, 7], _health, batched=False)
    assert [(r.lease_id, len(r.items)) for r in plain] == [(6, 0), (7, 0)]
    for lid in (5, 6, 7):
        answers, rest = msgs.answers(
            lease_pb2.KeepAliveResponse(lease_id=lid, outcome=KA.OUTCOME_RENEWED)
        )
        assert [x for x, _ in answers] == [lid]
        assert rest == ()


def test_batches_split_at_the_item_bound_and_the_byte_budget() -> None:
    msgs = KeepaliveMessages()
    ids = list(range(1, 2501))
    reqs = msgs.requests(ids, _health, batched=True)
    assert [len(r.items) for r in reqs] == [1000, 1000, 500]
    assert [r.lease_id for r in reqs] == [1, 1001, 2001]
    assert [i.lease_id for r in reqs for i in r.items] == ids
    assert len(msgs) == 3
    # 1000 items one byte short of the bound each: split by bytes, each message within budget
    big = {"k": "x" * 1000}
    reqs = msgs.requests(list(range(1, 201)), lambda lid: big, batched=True)
    assert len(reqs) > 3
    assert sum(len(r.items) for r in reqs) == 200
    assert all(r.ByteSize() <= KEEPALIVE_BATCH_BYTES + 2048 for r in reqs)
    # a last group of one lease is a plain request (1001 leases: 1000 + 1)
    reqs = KeepaliveMessages().requests(list(range(1, 1002)), _health, batched=True)
    assert [(len(r.items), r.lease_id) for r in reqs] == [(1000, 1), (0, 1001)]


def test_an_answer_without_items_to_a_batch_comes_from_a_server_that_ignores_them() -> None:
    msgs = KeepaliveMessages()
    (req,) = msgs.requests([4, 5, 6], _health, batched=True)
    answers, rest = msgs.answers(_old_answer(req))
    assert [lid for lid, _ in answers] == [4]
    assert rest == (5, 6)


def test_batched_answers_drive_each_lease_from_its_own_send_time() -> None:
    """1,500 leases due together: one StreamWrite, two messages; the answers, item by item,
    extend each lease's validity from the send."""
    n = 1500
    hub, machines = _hub(*([100.0] * n))
    step = hub.poll(103.0)
    (write,) = step.writes
    assert write == StreamWrite(1, "n1:1", tuple(range(1, n + 1)), opens=True, batched=True)
    msgs = KeepaliveMessages()
    reqs = msgs.requests(write.lease_ids, _health, batched=write.batched)
    assert [len(r.items) for r in reqs] == [1000, 500]
    # the second message is answered first (no server does, but matching is by lease id)
    for req, t in ((reqs[1], 103.05), (reqs[0], 103.2)):
        answers, rest = msgs.answers(_batch_answer(req, l7="RETRY", l1200="NOT_FOUND"))
        assert rest == ()
        for lid, answer in answers:
            hub.on_answer(t, 1, lid, renew_answer(answer))
    step = hub.poll(103.2)
    assert [e.lease_id for e in step.ended] == [1200]
    for lid in (1, 1001, n):
        assert machines[lid - 1].timer.valid_until == pytest.approx(103.0 + EFF)
    assert machines[6].timer.valid_until == pytest.approx(100.0 + EFF)  # RETRY never extends
    assert hub.stats.renewed == n - 2
    assert step.wake is not None
    retry = hub.poll(step.wake)  # lease 7 alone: on the same stream
    assert retry.writes == [StreamWrite(1, "n1:1", (7,), opens=False, batched=True)]


def test_a_server_that_ignores_items_gets_the_rest_again_one_per_message() -> None:
    hub, machines = _hub(100.0, 100.0, 100.0, 100.1)
    (write,) = hub.poll(103.0).writes
    assert write.lease_ids == (1, 2, 3, 4)
    msgs = KeepaliveMessages()
    (req,) = msgs.requests(write.lease_ids, _health, batched=True)
    answers, rest = msgs.answers(_old_answer(req))
    assert [lid for lid, _ in answers] == [1]
    hub.on_answer(103.1, 1, 1, renew_answer(answers[0][1]))
    hub.on_unbatched(103.1, 1, rest)
    assert machines[0].timer.valid_until == pytest.approx(103.0 + EFF)
    step = hub.poll(103.1)
    # the others again, on the same stream, unbatched, still in flight since 103.0
    assert step.writes == [StreamWrite(1, "n1:1", (2, 3, 4), opens=False, batched=False)]
    assert hub.in_flight(2) == [(1, 103.0)]
    assert hub.in_flight(4) == [(1, 103.0)]  # sent early in the batch: counts from then
    reqs = msgs.requests(step.writes[0].lease_ids, _health, batched=False)
    assert [len(r.items) for r in reqs] == [0, 0, 0]
    for r in reqs:
        answers, rest = msgs.answers(_old_answer(r))
        assert rest == ()
        hub.on_answer(103.15, 1, r.lease_id, renew_answer(answers[0][1]))
    for m in machines:
        assert m.timer.valid_until == pytest.approx(103.0 + EFF)  # from the ORIGINAL send
    assert hub.stats.unbatched == 1
    # from then on this stream is written unbatched ...
    (write,) = hub.poll(106.0).writes
    assert (write.call, write.batched) == (1, False)
    # ... and a new stream (the node may have been upgraded) tries batches again
    hub.on_call_failed(106.1, 1, Failure("UNAVAILABLE: connection reset"))
    now, writes = 106.1, list[StreamWrite]()
    while not writes:
        step = hub.poll(now)
        writes = step.writes
        assert step.wake is not None
        now = step.wake
    assert {(w.call, w.batched, w.opens) for w in writes} == {(2, True, True)}


def test_an_unbatched_report_for_leases_no_longer_in_flight_sends_nothing() -> None:
    hub, _ = _hub(100.0, 100.0)
    hub.poll(103.0)
    hub.remove(2)
    hub.on_unbatched(103.1, 1, (2,))
    hub.on_unbatched(103.1, 9, (1,))  # a call we do not know
    step = hub.poll(103.1)
    assert step.writes == []
