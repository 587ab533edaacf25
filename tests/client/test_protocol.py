"""The sans-I/O lease procedure (raftlease/client/_protocol.py), driven with explicit times.

The machines are what LeaseClient, AsyncLeaseClient and the simulator's SimClient run: here
no server, no thread and no clock, only ``now`` values and the answers a test makes up.
"""

from __future__ import annotations

import ast
import random
from pathlib import Path

import pytest

from raftlease.client._keepalive import RenewAnswer
from raftlease.client._protocol import (
    Acquired,
    AcquireMachine,
    CallMachine,
    Failed,
    Held,
    KeepaliveMachine,
    Lost,
    Send,
    SendAcquire,
    SendRenew,
    Sleep,
    Stopped,
)
from raftlease.client._retry import Failure, Router, attempt_cap, renew_attempt_cap
from raftlease.client._validity import LeaseTimer, effective_ttl, lost_margin
from raftlease.client.errors import ClusterUnavailable, InvalidArgument, LeaseLost, LeaseNotFound

NODES = ["n1:1", "n2:2", "n3:3"]
DRIFT = 0.01
UNAVAILABLE = Failure("UNAVAILABLE: connection refused")
NOT_FOUND = Failure("NOT_FOUND: lease 7 is not held", exc=LeaseNotFound("lease 7 is not held"))


def _sent(action: object, target: str, timeout: float) -> None:
    """``action`` sends to ``target`` with about ``timeout`` seconds for the attempt."""
    assert isinstance(action, Send), action
    assert action.target == target
    assert action.timeout == pytest.approx(timeout)


def _router(leader: str | None = None) -> Router:
    router = Router(NODES)
    if leader is not None:
        router.succeeded(leader)
    return router


# --------------------------------------------------------------------------- one call
def test_call_attempts_the_leader_with_the_attempt_cap() -> None:
    call = CallMachine("get 'x'", 100.0, 5.0, _router("n2:2"), round_size=3, cap=1.0)
    assert call.poll(100.0) == Send("n2:2", 1.0)
    _sent(call.poll(104.5), "n2:2", 0.5)  # never past the deadline
    call = CallMachine("get 'x'", 100.0, 5.0, _router(), round_size=3)
    assert call.poll(101.0) == Send("n1:1", 4.0)  # no cap: what is left


def test_call_follows_a_hint_at_once_and_backs_off_otherwise() -> None:
    router = _router("n1:1")
    call = CallMachine("get 'x'", 100.0, 5.0, router, round_size=3, rng=random.Random(3))
    call.poll(100.0)
    action = call.on_failure(100.1, Failure("UNAVAILABLE: not the leader", "n3:3"))
    _sent(action, "n3:3", 4.9)  # a fresh hint: no sleep
    leaders = [router.leader]
    sleep = call.on_failure(100.2, UNAVAILABLE)
    assert isinstance(sleep, Sleep)
    assert 100.2 + 0.005 <= sleep.until <= 100.2 + 0.010  # 10 ms, jittered down to half
    leaders.append(router.leader)
    _sent(call.poll(sleep.until), "n1:1", 100.0 + 5.0 - sleep.until)
    call.answered()
    leaders.append(router.leader)
    assert leaders == ["n3:3", None, "n1:1"]


def test_call_ends_at_its_deadline_naming_what_it_tried() -> None:
    call = CallMachine("get 'x'", 100.0, 1.0, _router(), round_size=3, rng=random.Random(0))
    call.poll(100.0)
    action = call.on_failure(100.999, UNAVAILABLE)
    assert isinstance(action, Sleep)
    assert action.until <= 101.0  # the backoff never sleeps past the deadline
    action = call.poll(101.0)
    assert isinstance(action, Failed)
    assert isinstance(action.error, ClusterUnavailable)
    assert str(action.error) == (
        "get 'x': no leader answered within 1s; tried n1:1; "
        "last error: UNAVAILABLE: connection refused"
    )


def test_call_ends_with_a_non_retriable_error() -> None:
    call = CallMachine("get 'x'", 100.0, 5.0, _router())
    call.poll(100.0)
    error = InvalidArgument("name must not be empty")
    assert call.on_failure(100.1, Failure("INVALID_ARGUMENT", exc=error)) == Failed(error)


# --------------------------------------------------------------------------- acquire
def _acquire(
    wait: float = 0.0, ttl_ms: int = 10_000, now: float = 100.0, router: Router | None = None
) -> AcquireMachine[str]:
    ids = iter(f"req-{i}" for i in range(1, 100))
    return AcquireMachine(
        "x",
        ttl_ms=ttl_ms,
        wait=wait,
        timeout=5.0,
        now=now,
        router=router if router is not None else _router("n1:1"),
        max_drift=DRIFT,
        new_request_id=lambda: next(ids),
        round_size=3,
        rng=random.Random(7),
    )


def test_acquire_reuses_its_request_id_and_counts_from_the_first_send() -> None:
    machine = _acquire()
    first = machine.poll(100.0)
    assert first == SendAcquire("n1:1", attempt_cap(5.0), "req-1", 0)
    # n1 answers "not the leader, n2 is"; n2's attempt times out; n3 grants the retry
    second = machine.on_failure(100.2, Failure("UNAVAILABLE: not the leader", "n2:2"))
    assert isinstance(second, SendAcquire)
    assert (second.target, second.request_id) == ("n2:2", "req-1")
    third = machine.on_failure(101.0, Failure("DEADLINE_EXCEEDED"))
    assert isinstance(third, Sleep)
    again = machine.poll(third.until)
    assert isinstance(again, SendAcquire)
    assert (again.target, again.request_id) == ("n3:3", "req-1")  # the same id on every retry
    done = machine.on_granted(101.2, "grant", lease_id=7, ttl=10.0)
    assert isinstance(done, Acquired)
    assert done.grant == "grant"
    # validity from the FIRST send (100.0), not the retry's or the answer's
    assert done.timer.valid_until == pytest.approx(100.0 + effective_ttl(10.0, DRIFT))
    assert done.timer.renew_due() == pytest.approx(100.0 + 10.0 / 3)
    assert machine.router.leader == "n3:3"


def test_acquire_asks_for_what_is_left_of_the_wait() -> None:
    machine = _acquire(wait=3.0)
    first = machine.poll(100.0)
    assert first == SendAcquire("n1:1", 3.0 + attempt_cap(5.0), "req-1", 3000)
    second = machine.on_failure(101.0, Failure("UNAVAILABLE", "n2:2"))
    assert isinstance(second, SendAcquire)
    assert (second.target, second.request_id, second.wait_ms) == ("n2:2", "req-1", 2000)
    assert second.timeout == pytest.approx(2.0 + attempt_cap(5.0))
    # the round's deadline is the wait plus the client timeout
    late = machine.on_failure(107.9, Failure("UNAVAILABLE", "n3:3"))
    assert isinstance(late, SendAcquire)
    _sent(late, "n3:3", 0.1)
    assert late.wait_ms == 0
    action = machine.on_failure(108.0, UNAVAILABLE)
    while isinstance(action, Sleep):
        action = machine.poll(action.until)
    assert isinstance(action, Failed)
    assert isinstance(action.error, ClusterUnavailable)
    assert str(action.error).startswith("acquire 'x': no leader answered within 8s; tried ")


def test_acquire_held_and_ttl_defaults() -> None:
    machine = _acquire()
    machine.poll(100.0)
    assert machine.on_held(100.1, "current grant") == Held("current grant")
    machine = _acquire(ttl_ms=3_000)
    machine.poll(100.0)
    done = machine.on_granted(100.1, "grant", lease_id=7, ttl=0.0)  # no TTL in the answer
    assert isinstance(done, Acquired)
    assert done.timer.ttl == 3.0


def test_a_grant_that_waited_long_is_renewed_before_it_is_handed_out() -> None:
    machine = _acquire(wait=30.0)
    machine.poll(100.0)
    # granted after 6 s in the queue: less than half the 10 s TTL is left
    confirm = machine.on_granted(106.0, "grant", lease_id=7, ttl=10.0)
    assert confirm == SendRenew("n1:1", renew_attempt_cap(10.0), 7)
    retry = machine.on_failure(106.3, Failure("UNAVAILABLE", "n2:2"))
    assert retry == SendRenew("n2:2", renew_attempt_cap(10.0), 7)
    done = machine.on_renewed(106.5, 10.0)
    assert isinstance(done, Acquired)
    # from the renewal's FIRST send (106.0)
    assert done.timer.valid_until == pytest.approx(106.0 + effective_ttl(10.0, DRIFT))
    assert done.timer.renew_due() == pytest.approx(106.0 + 10.0 / 3)


def test_a_grant_that_expired_before_it_was_ours_queues_again_while_the_wait_lasts() -> None:
    machine = _acquire(wait=30.0)
    machine.poll(100.0)
    machine.on_granted(112.0, "grant", lease_id=7, ttl=10.0)
    again = machine.on_failure(112.1, NOT_FOUND)
    assert isinstance(again, SendAcquire)
    assert (again.target, again.request_id, again.wait_ms) == ("n1:1", "req-2", 17900)
    assert again.timeout == pytest.approx(17.9 + attempt_cap(5.0))
    assert (machine.rounds, machine.t_first_send) == (2, 112.1)
    done = machine.on_granted(112.2, "grant 2", lease_id=8, ttl=10.0)
    assert isinstance(done, Acquired)
    assert done.timer.valid_until == pytest.approx(112.1 + effective_ttl(10.0, DRIFT))


def test_a_grant_that_expired_after_the_wait_is_lost() -> None:
    machine = _acquire(wait=0.0)
    machine.poll(100.0)
    machine.on_granted(112.0, "grant", lease_id=7, ttl=10.0)
    action = machine.on_failure(112.1, NOT_FOUND)
    assert isinstance(action, Failed)
    assert isinstance(action.error, LeaseLost)
    assert str(action.error) == (
        "lease 'x' was granted after waiting in the queue but expired before it could be renewed"
    )


def test_acquire_answers_out_of_turn_are_refused() -> None:
    machine = _acquire()
    with pytest.raises(RuntimeError):
        machine.on_renewed(100.0)
    machine.poll(100.0)
    with pytest.raises(RuntimeError):
        machine.on_renewed(100.0)


def test_acquire_builds_timers_through_the_hook() -> None:
    class EarlyTimer(LeaseTimer):
        def extension(self, t_send: float) -> float:
            return t_send + 1.0

    ids = iter(["a", "b"])
    machine: AcquireMachine[str] = AcquireMachine(
        "x",
        ttl_ms=10_000,
        wait=0.0,
        timeout=5.0,
        now=0.0,
        router=_router("n1:1"),
        max_drift=DRIFT,
        new_request_id=lambda: next(ids),
        make_timer=lambda ttl: EarlyTimer(ttl, DRIFT),
    )
    machine.poll(0.0)
    action = machine.on_granted(0.1, "g", lease_id=1, ttl=10.0)
    # 0.9 s left of a 10 s TTL by the planted rule: confirmed first
    assert isinstance(action, SendRenew)


# --------------------------------------------------------------------------- keepalive
TTL = 9.0


def _keepalive(t_send: float = 100.0) -> KeepaliveMachine:
    timer = LeaseTimer(TTL, DRIFT)
    timer.on_success(t_send)
    return KeepaliveMachine(
        "renew lease 'x'", 7, timer, _router("n1:1"), round_size=3, rng=random.Random(5)
    )


def test_keepalive_renews_every_third_of_the_ttl_from_the_send() -> None:
    ka = _keepalive()
    assert ka.poll(100.0) == Sleep(103.0)
    send = ka.poll(103.0)
    assert send == SendRenew("n1:1", renew_attempt_cap(TTL), 7)
    # answered 0.15 s later: validity counts from the send (103.0), not the answer
    after = ka.on_answer(103.15, RenewAnswer("RENEWED", ttl=TTL))
    assert after == Sleep(106.0)
    assert ka.timer.valid_until == pytest.approx(103.0 + effective_ttl(TTL, DRIFT))


def test_keepalive_retries_quickly_and_declares_the_loss_before_validity_ends() -> None:
    ka = _keepalive()
    lost_at = ka.timer.lost_at()
    assert lost_at == pytest.approx(ka.timer.valid_until - lost_margin(TTL))
    now = 103.0
    action: SendRenew | Sleep | Lost | Stopped = ka.poll(now)
    targets = []
    while not isinstance(action, Lost):
        if isinstance(action, SendRenew):
            targets.append(action.target)
            assert now + action.timeout <= lost_at + 1e-9  # never past the lost time
            now += action.timeout  # no answer: the attempt times out
            action = ka.on_failure(now, Failure("DEADLINE_EXCEEDED"))
        else:
            assert isinstance(action, Sleep)
            assert now < action.until <= lost_at
            now = action.until
            action = ka.poll(now)
    assert action.timed_out
    assert now == pytest.approx(lost_at)
    assert now < ka.timer.valid_until  # the lost signal comes first
    assert action.reason == "no renewal succeeded (DEADLINE_EXCEEDED)"
    assert set(targets) == set(NODES)  # it tried every node
    assert ka.timer.valid_until == pytest.approx(100.0 + effective_ttl(TTL, DRIFT))


def test_keepalive_not_found_is_lost_at_once() -> None:
    ka = _keepalive()
    ka.poll(103.0)
    action = ka.on_failure(103.01, NOT_FOUND)
    assert isinstance(action, Lost)
    assert not action.timed_out
    assert "no longer knows lease id 7" in action.reason
    ka = _keepalive()
    ka.poll(103.0)
    action = ka.on_answer(103.01, RenewAnswer("NOT_FOUND", message="gone"))
    assert isinstance(action, Lost)
    assert not action.timed_out


def test_stopped_keepalive_still_loses_on_time() -> None:
    ka = _keepalive()
    ka.stop_renewing()
    lost_at = ka.timer.lost_at()
    assert ka.poll(100.0) == Sleep(lost_at)
    action = ka.poll(lost_at)
    assert action == Lost("keepalives stopped", timed_out=True)


def test_a_late_success_after_the_loss_stops_the_keepalive() -> None:
    ka = _keepalive()
    ka.poll(103.0)
    ka.timer.mark_lost()
    before = ka.timer.valid_until
    assert ka.on_answer(103.1, RenewAnswer("RENEWED", ttl=TTL)) == Stopped()
    assert ka.timer.valid_until == before


def test_keepalive_retry_stays_on_the_leader() -> None:
    ka = _keepalive()
    ka.poll(103.0)
    action = ka.on_answer(103.01, RenewAnswer("RETRY", message="leader lease not valid yet"))
    assert isinstance(action, Sleep)
    assert action.until <= 103.01 + 0.02
    again = ka.poll(action.until)
    assert isinstance(again, SendRenew)
    _sent(again, "n1:1", renew_attempt_cap(TTL))


# --------------------------------------------------------------------------- purity
CLIENT = Path(__file__).resolve().parents[2] / "raftlease" / "client"
PURE = ("_protocol.py", "_retry.py", "_validity.py", "_keepalive.py", "_hub.py")
FORBIDDEN = (
    "asyncio",
    "grpc",
    "google.protobuf",
    "time",
    "socket",
    "raftlease.v1",
    "raftlease.clock",
)


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            found.add(node.module)
    return found


@pytest.mark.parametrize("name", PURE)
def test_the_protocol_modules_do_no_io_and_read_no_clock(name: str) -> None:
    imported = _imports(CLIENT / name)
    bad = {m for m in imported for f in FORBIDDEN if m == f or m.startswith(f + ".")}
    assert not bad, f"{name} imports {sorted(bad)}"
    local = {m.rpartition(".")[2] + ".py" for m in imported if m.startswith("raftlease.client.")}
    assert local <= {*PURE, "_values.py", "errors.py"}, f"{name} imports {sorted(local)}"
    if name == "_protocol.py":
        assert "threading" not in imported
