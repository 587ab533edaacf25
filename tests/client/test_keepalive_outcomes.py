"""The keepalive's handling of one renewal answer (``KeepaliveState`` in
raftlease/client/_keepalive.py, shared by LeaseClient, AsyncLeaseClient and the simulator's
client): in-band outcomes, old servers' answers and gRPC errors, converted from the wire as
the clients do (``_rpc.renew_answer``, ``_rpc.rpc_failure``). Pure: a fake clock value is
passed in, no server."""

from __future__ import annotations

import logging
import random
from typing import Any

import grpc
import pytest

from raftlease.client._keepalive import (
    RETRY_CAP_S,
    RETRY_LIMIT,
    RETRY_START_S,
    KeepaliveState,
    KeepaliveStep,
)
from raftlease.client._retry import Router
from raftlease.client._rpc import outcome_name, renew_answer, renew_request, rpc_failure
from raftlease.client._validity import LeaseTimer, effective_ttl
from raftlease.v1 import lease_pb2

KA = lease_pb2.KeepAliveResponse
ENDPOINTS = ["n1:1", "n2:2", "n3:3"]
TTL = 6.0
DRIFT = 0.01
T0 = 100.0  # the acquire's send time
LOST_AT = 200.0


class _RpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str = "", hint: str | None = None) -> None:
        self._code = code
        self._details = details
        self._hint = hint

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> Any:
        return (("raftlease-leader", self._hint),) if self._hint else ()


def _state(leader: str = "n1:1") -> tuple[KeepaliveState, LeaseTimer, Router]:
    router = Router(ENDPOINTS)
    router.succeeded(leader)
    timer = LeaseTimer(TTL, DRIFT)
    timer.on_success(T0)
    state = KeepaliveState(
        "renew lease 'x'", 7, timer, router, round_size=len(ENDPOINTS), rng=random.Random(1)
    )
    return state, timer, router


def _renew(
    outcome: lease_pb2.KeepAliveResponse.Outcome.ValueType,
    *,
    ttl_ms: int = 0,
    message: str = "",
    hint: str = "",
) -> lease_pb2.RenewResponse:
    return lease_pb2.RenewResponse(
        ttl_ms=ttl_ms, fencing_token=5 if ttl_ms else 0, outcome=outcome,
        message=message, leader_hint=hint,
    )  # fmt: skip


def _on_response(
    state: KeepaliveState,
    resp: lease_pb2.RenewResponse | lease_pb2.KeepAliveResponse,
    t_send: float,
    lost_at: float,
) -> KeepaliveStep:
    return state.on_answer(renew_answer(resp), t_send, lost_at)


def _on_error(state: KeepaliveState, err: grpc.RpcError, lost_at: float) -> KeepaliveStep:
    return state.on_failure(rpc_failure(err), lost_at)


RETRY_MSG = "node n1 is the leader but its leader lease is not valid yet; retry shortly"


def test_the_request_asks_for_inband_outcomes() -> None:
    req = renew_request(7, {"q": "1"})
    assert (req.lease_id, dict(req.health), req.inband_outcomes) == (7, {"q": "1"}, True)


def test_renewed_extends_validity_from_the_send_time() -> None:
    state, timer, router = _state()
    step = _on_response(state, _renew(KA.OUTCOME_RENEWED, ttl_ms=9000), 101.0, LOST_AT)
    assert step.kind == "renewed"
    assert timer.valid_until == pytest.approx(101.0 + effective_ttl(9.0, DRIFT))
    assert timer.ttl == 9.0
    assert router.leader == "n1:1"
    assert not state.failing


def test_an_old_servers_answer_without_outcome_is_a_renewal() -> None:
    # A server from before in-band outcomes sends outcome 0, and only on success.
    state, timer, _ = _state()
    step = _on_response(state, _renew(KA.OUTCOME_UNSPECIFIED, ttl_ms=6000), 102.0, LOST_AT)
    assert step.kind == "renewed"
    assert timer.valid_until == pytest.approx(102.0 + effective_ttl(TTL, DRIFT))
    # ... and the same for a KeepAlive stream's answer
    ka = lease_pb2.KeepAliveResponse(lease_id=7, ttl_ms=6000, fencing_token=5)
    assert _on_response(state, ka, 103.0, LOST_AT).kind == "renewed"
    assert timer.valid_until == pytest.approx(103.0 + effective_ttl(TTL, DRIFT))


def test_retry_keeps_the_lease_and_the_leader_and_never_extends_validity() -> None:
    state, timer, router = _state()
    before = (timer.valid_until, timer.last_send, timer.ttl)
    delays = []
    for i in range(6):
        step = _on_response(state, _renew(KA.OUTCOME_RETRY, message=RETRY_MSG), 103.0 + i, LOST_AT)
        assert step.kind == "retry"
        delays.append(step.delay)
        assert state.target == "n1:1"  # stay on the leader
        assert router.leader == "n1:1"  # and so do the client's other calls
        assert (timer.valid_until, timer.last_send, timer.ttl) == before
        assert not timer.lost
    assert bool(state.failing)
    # retried soon: 10-20 ms, doubling to at most the cap
    for i, delay in enumerate(delays):
        nominal = min(RETRY_CAP_S, RETRY_START_S * 2**i)
        assert nominal / 2 <= delay <= nominal
    assert state.lost_reason() == f"no renewal succeeded (RETRY: {RETRY_MSG})"
    # The next RENEWED counts from ITS send time, not from any RETRY's.
    step = _on_response(state, _renew(KA.OUTCOME_RENEWED, ttl_ms=6000), 110.0, LOST_AT)
    assert step.kind == "renewed"
    assert timer.valid_until == pytest.approx(110.0 + effective_ttl(TTL, DRIFT))
    assert not state.failing
    # and the RETRY backoff starts over
    step = _on_response(state, _renew(KA.OUTCOME_RETRY), 111.0, LOST_AT)
    assert RETRY_START_S / 2 <= step.delay <= RETRY_START_S


def test_a_node_that_keeps_answering_retry_is_left_after_the_limit() -> None:
    state, _, router = _state()
    for _ in range(RETRY_LIMIT):
        assert _on_response(state, _renew(KA.OUTCOME_RETRY), 101.0, LOST_AT).kind == "retry"
        assert state.target == "n1:1"
    step = _on_response(state, _renew(KA.OUTCOME_RETRY, message=RETRY_MSG), 101.0, LOST_AT)
    assert step.kind == "retry"
    assert state.target == "n2:2"  # treated as a failure without a hint: the next endpoint
    assert router.leader is None
    assert state.retries == 0


def test_not_found_loses_the_lease() -> None:
    state, timer, _ = _state()
    step = _on_response(
        state, _renew(KA.OUTCOME_NOT_FOUND, message="lease 7 is not held"), 101.0, LOST_AT
    )
    assert step.kind == "lost"
    assert "no longer knows lease id 7" in step.reason
    assert "NOT_FOUND: lease 7 is not held" in step.reason
    assert not timer.lost  # the loop declares it lost (and signals) with this reason


def test_not_leader_follows_the_hint_at_once() -> None:
    state, timer, router = _state()
    before = timer.valid_until
    step = _on_response(
        state, _renew(KA.OUTCOME_NOT_LEADER, message="not the leader", hint="n3:3"), 101.0, LOST_AT
    )
    assert (step.kind, step.delay) == ("retry", 0.0)
    assert state.target == "n3:3"
    assert router.leader == "n3:3"
    assert timer.valid_until == before
    # a hint that points back and forth is followed at most twice in a row
    _on_response(state, _renew(KA.OUTCOME_NOT_LEADER, hint="n1:1"), 101.0, LOST_AT)
    step = _on_response(state, _renew(KA.OUTCOME_NOT_LEADER, hint="n3:3"), 101.0, LOST_AT)
    assert step.delay > 0.0


def test_not_leader_without_a_hint_tries_the_next_endpoint() -> None:
    state, _, router = _state()
    step = _on_response(
        state,
        _renew(KA.OUTCOME_NOT_LEADER, message="not the leader; no leader known"),
        101.0,
        LOST_AT,
    )
    assert step.kind == "retry"
    assert 0.0 < step.delay <= 0.01
    assert state.target == "n2:2"
    assert router.leader is None
    assert state.lost_reason() == (
        "no renewal succeeded (NOT_LEADER: not the leader; no leader known)"
    )


def test_invalid_is_logged_and_retried_on_the_same_node(caplog: pytest.LogCaptureFixture) -> None:
    state, timer, router = _state()
    before = timer.valid_until
    with caplog.at_level(logging.WARNING, logger="raftlease.client"):
        step = _on_response(
            state,
            _renew(KA.OUTCOME_INVALID, message="health has 17 entries; the limit is 16"),
            101.0,
            LOST_AT,
        )
    assert step.kind == "retry"
    assert step.delay > 0.0
    assert state.target == "n1:1"
    assert router.leader == "n1:1"
    assert timer.valid_until == before
    assert "INVALID: health has 17 entries" in caplog.text


def test_an_unknown_outcome_is_a_failure_not_a_renewal() -> None:
    state, timer, _ = _state()
    before = timer.valid_until
    unknown = lease_pb2.KeepAliveResponse.Outcome.ValueType(99)
    assert outcome_name(unknown) == "outcome 99"
    step = _on_response(state, _renew(unknown, ttl_ms=6000), 101.0, LOST_AT)
    assert step.kind == "retry"
    assert timer.valid_until == before
    assert state.target == "n2:2"


def test_a_late_renewal_after_the_lease_was_lost_stops_the_loop() -> None:
    state, timer, _ = _state()
    before = timer.valid_until
    timer.mark_lost()
    step = _on_response(state, _renew(KA.OUTCOME_RENEWED, ttl_ms=6000), 101.0, LOST_AT)
    assert step.kind == "done"
    assert timer.valid_until == before


def test_status_errors_as_before() -> None:
    # NOT_FOUND as a status (an old server, or a request without in-band outcomes)
    state, _, _ = _state()
    step = _on_error(state, _RpcError(grpc.StatusCode.NOT_FOUND, "lease 7 is not held"), LOST_AT)
    assert step.kind == "lost"
    assert "NOT_FOUND: lease 7 is not held" in step.reason
    # UNAVAILABLE with a hint: follow it at once
    state, _, router = _state()
    step = _on_error(
        state, _RpcError(grpc.StatusCode.UNAVAILABLE, "not the leader", hint="n2:2"), LOST_AT
    )
    assert (step.kind, step.delay, state.target, router.leader) == ("retry", 0.0, "n2:2", "n2:2")
    # a deadline (a hung node): the next endpoint after a backoff
    step = _on_error(state, _RpcError(grpc.StatusCode.DEADLINE_EXCEEDED), LOST_AT)
    assert step.kind == "retry"
    assert state.target == "n3:3"
    assert state.lost_reason() == "no renewal succeeded (DEADLINE_EXCEEDED)"
    # a non-retriable status: the same node after a backoff
    step = _on_error(state, _RpcError(grpc.StatusCode.INVALID_ARGUMENT, "bad health"), LOST_AT)
    assert step.kind == "retry"
    assert step.delay > 0.0
    assert state.target == "n3:3"


def test_a_status_error_resets_the_retry_streak() -> None:
    state, _, _ = _state()
    for _ in range(RETRY_LIMIT - 1):
        _on_response(state, _renew(KA.OUTCOME_RETRY), 101.0, LOST_AT)
    _on_error(state, _RpcError(grpc.StatusCode.UNAVAILABLE, "x", hint="n2:2"), LOST_AT)
    assert state.target == "n2:2"
    for _ in range(RETRY_LIMIT):
        _on_response(state, _renew(KA.OUTCOME_RETRY), 101.0, LOST_AT)
        assert state.target == "n2:2"
