"""quorum.py: quorum_size, and quorum_value against brute-force oracles (etcd's quick_test).

quorum_value picks the commit index (over match indexes) and the leader lease start (over
acknowledged send ticks, where -1 means "never acknowledged"), so values may be negative.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftlease.core.quorum import quorum_size, quorum_value

if TYPE_CHECKING:
    import random


def naive_quorum_value(values: list[int], voters: int) -> int:
    """The largest v such that a majority of voters reached v (missing voters count as 0)."""
    padded = values + [0] * (voters - len(values))
    majority = voters // 2 + 1
    return max(v for v in padded if sum(1 for x in padded if x >= v) >= majority)


@pytest.mark.parametrize(("voters", "size"), [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (7, 4)])
def test_quorum_size(voters: int, size: int) -> None:
    assert quorum_size(voters) == size


@given(st.integers(1, 9).flatmap(lambda n: st.lists(st.integers(-1, 50), min_size=n, max_size=n)))
def test_quorum_value_matches_naive_with_every_voter(values: list[int]) -> None:
    assert quorum_value(values, len(values)) == naive_quorum_value(values, len(values))


@given(
    st.integers(1, 9).flatmap(
        lambda n: st.tuples(st.just(n), st.lists(st.integers(0, 50), max_size=n))
    )
)
def test_quorum_value_missing_voters_count_as_zero(case: tuple[int, list[int]]) -> None:
    voters, values = case
    assert quorum_value(values, voters) == naive_quorum_value(values, voters)


@given(st.lists(st.integers(-1, 50), min_size=1, max_size=9), st.randoms(use_true_random=False))
def test_quorum_value_ignores_order(values: list[int], rnd: random.Random) -> None:
    shuffled = list(values)
    rnd.shuffle(shuffled)
    assert quorum_value(shuffled, len(values)) == quorum_value(values, len(values))


def test_quorum_value_examples() -> None:
    assert quorum_value([5, 3, 1], 3) == 3  # commit index: two of three have 3
    assert quorum_value([9, -1, -1], 3) == -1  # lease: only the leader itself
    assert quorum_value([9, 4, -1], 3) == 4
    assert quorum_value([9, 8, 7, 2, 1], 5) == 7
    assert quorum_value([9], 3) == 0  # two voters missing: no majority reached anything
