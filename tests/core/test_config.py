"""RaftConfig.validate(): every broken rule is reported with its exact message, in rule order,
all at once (InvalidConfig, a ConfigError: one problem a line), and the leader-lease bound
max_safe_lease_ticks: known values, and over a hypothesis grid the inequality it exists for
(docs/safety.md (L1)): a lease counted on the leader's clock ends before a follower that acked
it can vote again, for any clock-rate error up to max_drift:

    lease_ticks / (1 - rho)  <  (election_ticks_min - 1) / (1 + rho)

(the follower's first tick may come right after the ack, hence the "- 1").
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from raftlease.config import InvalidConfig, RaftConfig, lease_margin_ticks, max_safe_lease_ticks
from raftlease.errors import ConfigError, RaftLeaseError
from raftlease.types import NodeId

VOTERS = (NodeId("1"), NodeId("2"), NodeId("3"))


def config(**kw: Any) -> RaftConfig:
    kw.setdefault("node_id", NodeId("1"))
    kw.setdefault("voters", VOTERS)
    return RaftConfig(**kw)


def test_defaults_are_valid() -> None:
    c = config()
    c.validate()
    assert c.effective_lease_ticks == 6  # floor(0.99 * (9 / 1.01 - 2))


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"node_id": NodeId("")}, "node_id must be a non-empty string"),
        (
            {"voters": (NodeId("1"), NodeId("2"), NodeId("1"))},
            "voters must be distinct, got ['1', '2', '1']",
        ),
        ({"node_id": NodeId("4")}, "node_id '4' must be one of voters ['1', '2', '3']"),
        ({"max_drift": 0.2}, "max_drift must be in [0, 0.2), got 0.2"),
        ({"max_drift": -0.01}, "max_drift must be in [0, 0.2), got -0.01"),
        ({"max_drift": math.nan}, "max_drift must be in [0, 0.2), got nan"),
        ({"heartbeat_ticks": 0}, "heartbeat_ticks must be >= 1, got 0"),
        (
            {"election_ticks_min": 5, "heartbeat_ticks": 3},
            "election_ticks_min must be at least 2 * heartbeat_ticks (got 5 < 2 * 3)",
        ),
        (
            # 2x is allowed, but the lease must outlast one heartbeat interval.
            {"election_ticks_min": 6, "election_ticks_max": 12, "heartbeat_ticks": 3},
            "the leader lease (2 ticks) must outlast one heartbeat interval (3"
            " ticks), or it lapses between heartbeats even on an idle network; "
            "raise election_ticks_min or lower heartbeat_ticks",
        ),
        (
            {"election_ticks_min": 12, "heartbeat_ticks": 6, "lease_ticks": 6},
            "the leader lease (6 ticks) must outlast one heartbeat interval (6"
            " ticks), or it lapses between heartbeats even on an idle network; "
            "raise election_ticks_min or lower heartbeat_ticks",
        ),
        (
            {"election_ticks_max": 10},
            "election_ticks_max must be greater than election_ticks_min (got 10 <= 10)",
        ),
        ({"max_entries_per_append": 0}, "max_entries_per_append must be >= 1"),
        ({"max_inflight": 0}, "max_inflight must be >= 1"),
        (
            {"lease_ticks": 5, "pre_vote": False},
            "a leader lease needs pre_vote and check_quorum enabled",
        ),
        (
            {"lease_ticks": 5, "check_quorum": False},
            "a leader lease needs pre_vote and check_quorum enabled",
        ),
        ({"lease_ticks": 0}, "lease_ticks must be >= 1, got 0"),
        (
            {"lease_ticks": 7},
            "lease_ticks=7 is unsafe: it must be at most 6 = "
            "floor((1-max_drift)*((election_ticks_min-1)/(1+max_drift) - 2)) "
            "for election_ticks_min=10, max_drift=0.01",
        ),
        (
            {"election_ticks_min": 3, "election_ticks_max": 6, "heartbeat_ticks": 1},
            "election_ticks_min=3 leaves no safe leader-lease window at max_drift=0.01; "
            "raise election_ticks_min",
        ),
    ],
)
def test_each_rule_has_its_message(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        config(**kw).validate()
    # The rule broken first is listed first; a rule that follows from it may come after it.
    assert str(exc.value).splitlines()[0] == message
    assert isinstance(exc.value, InvalidConfig)
    assert exc.value.problems[0] == message
    assert str(exc.value) == "\n".join(exc.value.problems)
    assert config(**kw).problems() == list(exc.value.problems)
    assert isinstance(exc.value, ValueError)
    assert isinstance(exc.value, RaftLeaseError)


def test_every_broken_rule_is_reported_once() -> None:
    c = config(
        node_id=NodeId("9"),
        heartbeat_ticks=0,
        election_ticks_max=5,
        max_inflight=0,
        max_drift=math.nan,
    )
    assert c.problems() == [
        "node_id '9' must be one of voters ['1', '2', '3']",
        "max_drift must be in [0, 0.2), got nan",  # so the lease bound is not evaluated
        "heartbeat_ticks must be >= 1, got 0",  # so 2 * heartbeat_ticks is not compared
        "election_ticks_max must be greater than election_ticks_min (got 5 <= 10)",
        "max_inflight must be >= 1",
    ]
    with pytest.raises(InvalidConfig) as exc:
        c.validate()
    assert str(exc.value).splitlines() == c.problems()


def test_a_valid_config_has_no_problems() -> None:
    assert config().problems() == []
    assert config(election_ticks_min=20, election_ticks_max=40, heartbeat_ticks=10).problems() == []


def test_rules_do_not_need_a_lease_when_it_is_off() -> None:
    # Without PreVote or CheckQuorum there is no lease, so no lease bound applies.
    c = config(election_ticks_min=3, election_ticks_max=6, heartbeat_ticks=1, pre_vote=False)
    c.validate()
    assert c.effective_lease_ticks == 0


def test_explicit_lease_ticks_is_used() -> None:
    c = config(lease_ticks=3)
    c.validate()
    assert c.effective_lease_ticks == 3


@pytest.mark.parametrize(
    ("election_ticks_min", "max_drift", "expected"),
    [
        (10, 0.01, 6),  # the bare core's default: floor(0.99 * (8.91 - 2))
        (10, 0.0, 7),  # an exact integer: 9 - 2
        (20, 0.01, 14),  # the server: floor(0.99 * (18.81 - 4)) = floor(14.66)
        (6, 0.01, 2),
        (100, 0.1, 62),  # 0.9 * (90 - 20) = 63 in reals; Fraction(0.1) is a hair above 1/10
        (5, 0.19, 1),
        (4, 0.01, 0),  # no safe window: the margin takes it all
        (3, 0.0, 0),
    ],
)
def test_max_safe_lease_ticks_values(
    election_ticks_min: int, max_drift: float, expected: int
) -> None:
    assert max_safe_lease_ticks(election_ticks_min, max_drift) == expected


@given(
    election_ticks_min=st.integers(3, 100_000),
    max_drift=st.floats(0.0, 0.2, exclude_max=True, allow_nan=False),
)
def test_max_safe_lease_ticks_inequality(election_ticks_min: int, max_drift: float) -> None:
    lease = max_safe_lease_ticks(election_ticks_min, max_drift)
    rho, e = Fraction(max_drift), election_ticks_min  # exact arithmetic for the check
    margin = lease_margin_ticks(e)
    # (L1) with one tick off the follower's side for granularity, and the margin on top.
    assert Fraction(lease) / (1 - rho) + margin <= Fraction(e - 1) / (1 + rho)
    assert Fraction(lease) / (1 - rho) < Fraction(e - 1) / (1 + rho)
    # Not needlessly small: one more tick would break the margin.
    assert Fraction(lease + 1) / (1 - rho) + margin > Fraction(e - 1) / (1 + rho)
    assert margin >= 2
    assert margin * 5 >= e


@given(election_ticks_min=st.integers(7, 1000), max_drift=st.floats(0.0, 0.19))
@example(election_ticks_min=6, max_drift=0.125)  # bound 2 ticks: not above the default heartbeat
def test_validate_accepts_the_bound_and_refuses_one_more(
    election_ticks_min: int, max_drift: float
) -> None:
    safe = max_safe_lease_ticks(election_ticks_min, max_drift)
    kw: dict[str, Any] = {
        "election_ticks_min": election_ticks_min,
        "election_ticks_max": election_ticks_min + 1,
        "max_drift": max_drift,
        # The smallest bound here is 2 ticks (7 ticks at 19 %); a 1-tick heartbeat keeps the
        # lease-outlasts-a-heartbeat rule out of this test's way.
        "heartbeat_ticks": 1,
    }
    config(lease_ticks=safe, **kw).validate()
    assert config(**kw).effective_lease_ticks == safe
    with pytest.raises(ConfigError, match="is unsafe"):
        config(lease_ticks=safe + 1, **kw).validate()
