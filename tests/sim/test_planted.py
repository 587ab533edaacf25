"""Planted bugs: proof that the checkers have teeth.

Each test runs a RaftCore subclass with one classic bug (planted.py) over seeded fault
schedules chosen to make that bug reachable, and asserts that the simulator reports the
expected violation within a stated number of seeds. A control run shows the production core
passes the very same schedules, so the violation is the bug's, not the harness's.

These are the hand-tuned mixes; tests/sim/test_swarm_planted.py shows the DEFAULT swarm sweep
finds the same bugs (and more) without them. Since the sharper rules of 2026-12 (commit-unsafe,
vote-stickiness, lease-quorum) several are caught earlier than by the rules named below.

Measured when written (first detecting seed; share of 200 seeds that detect), vs the bound:
  (a) vote without log check      seed 0   46%   bound 100 seeds
  (b) figure-8 commit by counting seed 10  10%   bound 200 seeds
  (c) vote not persisted           seed 0   10%   bound 100 seeds
  (d1) lease without drift margin  seed 3   30%   bound 100 seeds
  (d2) no leader stickiness        seed 0   46%   bound 100 seeds
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from raftlease.core.raft import RaftCore
from raftlease.testing import LinkParams
from raftlease.testing.sweep import FaultMix, SeedResult, run_seed

from .planted import (
    Figure8Core,
    ForgetVoteCore,
    LeaseWithoutDriftMarginCore,
    NoStickinessCore,
    VoteWithoutLogCheckCore,
)

if TYPE_CHECKING:
    from raftlease.testing.sim import CoreFactory

MS = 1_000

# Crashes and minority partitions with a steady stream of proposals: logs diverge often, and
# a stale node often asks for votes.
MIX_STALE_CANDIDATES = FaultMix(
    n=5,
    duration_us=3_000 * MS,
    gap_us=(50 * MS, 300 * MS),
    w_partition=1,
    w_crash=1,
    w_flaky=0,
    w_transfer=0,
    shapes=("minority", "isolate-leader", "isolate-one"),
    crash_targets=("one", "leader", "majority"),
    crash_down_us=(0, 300 * MS),
    propose_every_us=(2 * MS, 10 * MS),
    compact_every_us=None,
)

# Figure 8 needs: a leader that persists entries but crashes before sending them, a new
# leader that crashes before replicating its no-op, and a leader that crashes right after
# committing an old-term entry. Failpoints crash exactly there; one entry per append and one
# append in flight make "an old-term entry on a majority, the no-op not yet" last long.
MIX_FIGURE_8 = FaultMix(
    n=3,
    duration_us=3_000 * MS,
    config={"max_entries_per_append": 1, "max_inflight": 1},
    link=LinkParams(delay_min_us=500, delay_max_us=5 * MS),
    w_partition=0,
    w_crash=0,
    w_flaky=0,
    w_transfer=0,
    failpoints={
        "leader:before-send": 0.03,
        "new-leader:before-send": 0.5,
        "commit:before-send": 0.2,
    },
    failpoint_down_us=(0, 150 * MS),
    propose_every_us=(2 * MS, 10 * MS),
    compact_every_us=None,
)

# Split votes (all election timers equal: max = min + 1), slow links, and crashes with short
# downtimes: a voter often restarts while a second candidate's RequestVote of the same term
# is still in flight.
MIX_SPLIT_VOTES = FaultMix(
    n=5,
    duration_us=3_000 * MS,
    config={"election_ticks_max": 11},
    link=LinkParams(delay_min_us=1 * MS, delay_max_us=30 * MS),
    gap_us=(10 * MS, 40 * MS),
    w_partition=0,
    w_crash=1,
    w_flaky=0,
    w_transfer=0,
    crash_targets=("one", "leader"),
    crash_down_us=(0, 10 * MS),
    compact_every_us=None,
)

# Leaders isolated on fast links: the majority elects a successor as soon as stickiness
# allows, so any lease longer than the stickiness window (minus margins) overlaps it.
MIX_ISOLATE_LEADER = FaultMix(
    n=3,
    duration_us=3_000 * MS,
    link=LinkParams(delay_min_us=100, delay_max_us=300),
    gap_us=(300 * MS, 500 * MS),
    w_partition=1,
    w_crash=0,
    w_flaky=0,
    w_transfer=0,
    shapes=("isolate-leader",),
    partition_us=(250 * MS, 400 * MS),
    compact_every_us=None,
)

# One node stops hearing the leader (one-way cut or isolation, then heal) while the others
# still do; with no proposals its log stays up to date, so only stickiness stops its election.
MIX_DEAF_FOLLOWER = FaultMix(
    n=3,
    duration_us=3_000 * MS,
    link=LinkParams(delay_min_us=100, delay_max_us=3 * MS),
    gap_us=(200 * MS, 400 * MS),
    w_partition=1,
    w_crash=0,
    w_flaky=0,
    w_transfer=0,
    shapes=("one-way", "isolate-one"),
    partition_us=(250 * MS, 400 * MS),
    propose_every_us=None,
    compact_every_us=None,
)


def first_failure(core: CoreFactory, mix: FaultMix, seeds: int) -> SeedResult | None:
    for seed in range(seeds):
        result = run_seed(seed, mix=mix, core_factory=core, watchdog_s=20)
        if not result.ok:
            return result
    return None


def assert_found(core: CoreFactory, mix: FaultMix, within: int, expected: set[str]) -> SeedResult:
    found = first_failure(core, mix, within)
    assert found is not None, f"{core!r} not caught within {within} seeds"
    assert found.violation is not None
    assert found.violation.name in expected, str(found.violation)
    # Control: the production core passes the same schedules up to and past that seed.
    for seed in range(found.seed + 3):
        control = run_seed(seed, mix=mix, core_factory=RaftCore, watchdog_s=20)
        assert control.ok, f"production core failed seed {seed}: {control.violation}"
    return found


SAFETY = {
    "leader-completeness",
    "state-machine-safety",
    "log-matching",
    "committed-lost",
    "commit-unsafe",
}


def test_a_vote_without_log_up_to_date_check() -> None:
    assert_found(VoteWithoutLogCheckCore, MIX_STALE_CANDIDATES, 100, SAFETY)


def test_b_figure_8_commit_of_old_term_by_counting() -> None:
    assert_found(Figure8Core, MIX_FIGURE_8, 200, SAFETY | {"core-error"})


def test_c_vote_not_persisted() -> None:
    assert_found(ForgetVoteCore, MIX_SPLIT_VOTES, 100, {"vote-safety", "election-safety"})


# The vote-stickiness rule (sim.py ``_check_sticky``) sees a missing stickiness at the vote
# itself, and lease-quorum a lease that outlives its followers' stickiness in real time,
# before any lease overlaps; lease-exclusion remains the end-to-end symptom.


@pytest.mark.parametrize(
    ("core", "mix"),
    [
        (LeaseWithoutDriftMarginCore, MIX_ISOLATE_LEADER),
        (NoStickinessCore, MIX_DEAF_FOLLOWER),
    ],
    ids=["d1-lease-without-drift-margin", "d2-no-stickiness"],
)
def test_d_leader_lease_overlap(core: CoreFactory, mix: FaultMix) -> None:
    assert_found(core, mix, 100, {"lease-exclusion", "vote-stickiness", "lease-quorum"})
