"""The pure logic of leader election (raftlease/client/_election_base.py), without a server:
how a campaign spends its time in the server's queue (re-queueing past the server's 1 h cap,
never spinning), how re-campaigning is paced, and how watch events become leader changes
(including a lease handed straight to a waiter: released + acquired at one log index)."""

from __future__ import annotations

import math

import pytest

from raftlease.client import LeaseInfo, WatchEvent
from raftlease.client._election_base import (
    MAX_WAIT_S,
    CampaignPlan,
    Leader,
    LeadershipLost,
    LeaderTracker,
    RequeuePacer,
    check_max_wait,
    check_wait,
)
from raftlease.client.errors import LeaseLost
from raftlease.errors import ConfigError
from raftlease.fsm.limits import MAX_WAIT_MS


def _info(lease_id: int, holder: str = "a", name: str = "e") -> LeaseInfo:
    return LeaseInfo(
        name=name,
        holder=holder,
        lease_id=lease_id,
        fencing_token=lease_id,
        ttl=2.0,
        metadata={"addr": f"{holder}:80"},
    )


def _ev(kind: str, index: int, lease: LeaseInfo | None, name: str = "e") -> WatchEvent:
    return WatchEvent(kind=kind, name=name, lease=lease, index=index)


# -- CampaignPlan ---------------------------------------------------------------------------


def test_forever_waits_in_chunks_of_the_server_cap_and_never_gives_up() -> None:
    assert MAX_WAIT_S == MAX_WAIT_MS / 1000.0 == 3600.0
    plan = CampaignPlan(None, now=0.0)
    for i in range(100):
        assert plan.next_wait(now=i * 3600.0) == MAX_WAIT_S
    assert plan.attempts == 100


def test_a_tiny_injected_cap_requeues_until_the_deadline() -> None:
    plan = CampaignPlan(1.0, now=10.0, max_wait=0.3)
    chunks = []
    now = 10.0
    while (chunk := plan.next_wait(now)) is not None:
        chunks.append(chunk)
        now += chunk
        assert plan.after_held(chunk, chunk) == 0.0  # a chunk that ran its course: no pause
    assert chunks == pytest.approx([0.3, 0.3, 0.3, 0.1])
    assert plan.attempts == 4


def test_wait_zero_makes_exactly_one_attempt() -> None:
    plan = CampaignPlan(0.0, now=5.0)
    assert plan.next_wait(5.0) == 0.0
    assert plan.next_wait(5.0) is None


def test_an_early_held_answer_backs_off_so_the_campaign_cannot_spin() -> None:
    plan = CampaignPlan(None, now=0.0, max_wait=10.0)
    delays = [plan.after_held(10.0, 0.001) for _ in range(8)]
    assert all(d > 0 for d in delays)
    assert delays[-1] > delays[0]  # grows
    assert max(delays) <= 1.0
    assert plan.after_held(10.0, 10.0) == 0.0  # a normal chunk end resets it
    assert plan.after_held(10.0, 0.001) <= 0.05


def test_unavailable_backoff_grows_to_two_seconds() -> None:
    plan = CampaignPlan(None, now=0.0)
    delays = [plan.after_unavailable() for _ in range(10)]
    assert 0.05 <= delays[0] <= 0.1
    assert 1.0 <= delays[-1] <= 2.0


@pytest.mark.parametrize("bad", [-1, math.inf, math.nan, "5", True])
def test_bad_wait_is_refused(bad: object) -> None:
    with pytest.raises(ConfigError, match="wait"):
        check_wait(bad)


@pytest.mark.parametrize("bad", [0.0, 0.05, MAX_WAIT_S + 1, "1", True])
def test_bad_max_wait_is_refused(bad: object) -> None:
    with pytest.raises(ConfigError, match="max_wait"):
        check_max_wait(bad)


def test_max_wait_defaults_to_the_server_cap() -> None:
    assert check_max_wait(None) == MAX_WAIT_S
    assert check_max_wait(0.5) == 0.5
    assert check_wait(None) is None
    assert check_wait(3) == 3.0


# -- RequeuePacer ---------------------------------------------------------------------------


def test_requeue_is_immediate_after_a_real_term_and_paced_after_short_ones() -> None:
    pacer = RequeuePacer(min_term=1.0, start=0.1, cap=0.5)
    assert pacer.after_term(30.0) == 0.0
    assert [pacer.after_term(0.01) for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    assert pacer.after_term(2.0) == 0.0
    assert pacer.after_term(0.0) == 0.1


# -- LeaderTracker --------------------------------------------------------------------------


def test_a_current_event_gives_the_current_leader() -> None:
    assert LeaderTracker("e").feed(_ev("current", 0, None)) == [None]
    got = LeaderTracker("e").feed(_ev("current", 0, _info(7)))
    assert got == [Leader("e", "a", 7, 7, {"addr": "a:80"})]


def test_direct_handover_to_a_waiter_gives_both_changes_in_order() -> None:
    tracker = LeaderTracker("e")
    assert tracker.feed(_ev("current", 0, _info(3, "a"))) == [Leader.from_info(_info(3, "a"))]
    assert tracker.feed(_ev("released", 9, _info(3, "a"))) == [None]
    assert tracker.feed(_ev("acquired", 9, _info(9, "b"))) == [Leader.from_info(_info(9, "b"))]
    assert tracker.feed(_ev("expired", 15, _info(9, "b"))) == [None]
    assert tracker.current is None


def test_repeats_and_stale_events_give_no_change() -> None:
    tracker = LeaderTracker("e")
    tracker.feed(_ev("current", 0, _info(3)))
    assert tracker.feed(_ev("current", 0, _info(3))) == []  # re-sent after a reconnect
    assert tracker.feed(_ev("acquired", 3, _info(3))) == []  # already known
    assert tracker.feed(_ev("released", 2, _info(1))) == []  # not the current grant
    assert tracker.feed(_ev("acquired", 5, _info(5, "x", "other"), name="other")) == []
    assert tracker.feed(_ev("current", 0, _info(8, "c"))) == [Leader.from_info(_info(8, "c"))]


def test_leadership_lost_is_a_lease_lost() -> None:
    assert issubclass(LeadershipLost, LeaseLost)
