"""Planted bugs vs the DEFAULT swarm sweep: the simulator as a bug finder.

Each test plants one bug (a RaftCore or SimCluster subclass, or a monkeypatch, all in
planted.py) and sweeps ``run_seed(seed)`` for seeds 0, 1, 2, ... exactly as ``make sim``
does: every seed draws its own swarm mix (sweep.swarm_mix); no mix is tuned for the bug. The
test asserts that a seed within the budget fails with one of the expected violations, and
prints the first failing seed and the wall time to detection. A control replays that seed
with the bug removed: it must pass, so the failure is the bug's.

The budgets are about three times the first detecting seed measured when this was written
(see docs/simulator.md for the table, with detection rates over 150 seeds). Seeds are
deterministic, so a bug found at seed k is found at seed k again until the simulator, the
swarm generator or the code under test changes; then measure again (below) and adjust.

Measure again (every bug, N seeds each, rate and first seed):

    .venv/bin/python -m tests.sim.test_swarm_planted --seeds 200
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from raftlease.core.raft import RaftCore
from raftlease.testing.sim import CoreFactory, SimCluster
from raftlease.testing.sweep import SeedResult, run_seed

from .planted import (
    AckArrivalLeaseCore,
    AckUnsavedEntriesCore,
    ApplyBeyondCommitCore,
    EarlyExpiryKeeperSim,
    Figure8Core,
    ForgetVoteCore,
    LearnerInQuorumCore,
    NoCheckQuorumCore,
    NoErrataCore,
    NoRestartKeeperSim,
    RemovedLeaderStaysCore,
    RenewWithoutLeaderLeaseSim,
    TransferKeepsLeaseCore,
    TwoChangesInFlightCore,
    VoteBeforePersistSim,
    VoteWithoutLogCheckCore,
    plant_client_ack_time,
    plant_stale_pre_step,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

RAFT_SAFETY = frozenset(
    {
        "election-safety",
        "vote-safety",
        "log-matching",
        "leader-completeness",
        "state-machine-safety",
        "committed-lost",
        "committed-changed",
        "applied-uncommitted",
        "commit-unsafe",
        "core-error",
    }
)
LEASE = frozenset(
    {
        "lease-exclusion",
        "lease-quorum",
        "vote-stickiness",
        "renew-outside-lease",
        "transfer-lease",
        "mutual-exclusion",
        "belief-after-end",
        "fencing",
        "fencing-token-order",
    }
)
LIVENESS = frozenset(
    {
        "liveness-checkquorum",
        "liveness-election",
        "liveness-stable",
        "liveness-commit",
        "liveness-converge",
        "liveness-expiry",
    }
)


MEMBERSHIP = frozenset({"config-change", "config-step", "learner-ack", "removed-leader"})


@dataclass(frozen=True)
class Bug:
    name: str
    budget: int  # seeds swept before the test gives up
    expected: frozenset[str]
    core: CoreFactory = RaftCore
    sim_class: type[SimCluster] = SimCluster
    patch: Callable[[pytest.MonkeyPatch], None] | None = None


# Budgets: about three times the first failing seed measured (at least 20 seeds).
BUGS = (
    Bug("vote-without-log-check", 20, RAFT_SAFETY, core=VoteWithoutLogCheckCore),
    Bug("figure-8-commit-by-counting", 100, RAFT_SAFETY, core=Figure8Core),
    Bug("vote-sent-before-persisted", 40, RAFT_SAFETY, sim_class=VoteBeforePersistSim),
    Bug("vote-not-persisted", 20, RAFT_SAFETY, core=ForgetVoteCore),
    Bug("no-check-quorum", 20, LIVENESS, core=NoCheckQuorumCore),
    Bug("renew-without-leader-lease", 20, LEASE, sim_class=RenewWithoutLeaderLeaseSim),
    # Rare (10 of seeds 0-299 on 2026-12-03); its first failing seed moved from 2 to 45 when
    # the slow-disk dimension changed every seed's schedule.
    Bug("client-validity-from-answer", 140, LEASE, patch=plant_client_ack_time),
    Bug("stale-pre-step", 20, LEASE, patch=plant_stale_pre_step),
    Bug("new-leader-keeps-deadlines", 25, LEASE, sim_class=NoRestartKeeperSim),
    Bug("lease-from-ack-arrival", 20, LEASE, core=AckArrivalLeaseCore),
    Bug("apply-beyond-commit", 20, RAFT_SAFETY, core=ApplyBeyondCommitCore),
    Bug("transfer-keeps-lease", 20, LEASE, core=TransferKeepsLeaseCore),
    Bug("expiry-before-ttl", 20, LEASE, sim_class=EarlyExpiryKeeperSim),
    # The save window (slow disks: only the swarm seeds that draw them exercise it).
    Bug("ack-unsaved-entries", 40, RAFT_SAFETY, core=AckUnsavedEntriesCore),
    # Membership changes (only the swarm seeds that draw them exercise these).
    Bug("two-changes-in-flight", 25, MEMBERSHIP | RAFT_SAFETY, core=TwoChangesInFlightCore),
    Bug(
        "learner-in-quorum",
        20,
        MEMBERSHIP | RAFT_SAFETY | LEASE | LIVENESS,
        core=LearnerInQuorumCore,
    ),
    Bug("removed-leader-stays", 20, MEMBERSHIP, core=RemovedLeaderStaysCore),
    Bug("no-errata-rule", 25, MEMBERSHIP | RAFT_SAFETY, core=NoErrataCore),
)


def _run(bug: Bug, seed: int) -> SeedResult:
    return run_seed(seed, core_factory=bug.core, sim_class=bug.sim_class, watchdog_s=20)


def sweep(bug: Bug, seeds: Iterator[int], mp: pytest.MonkeyPatch) -> Iterator[SeedResult]:
    with mp.context() as m:
        if bug.patch is not None:
            bug.patch(m)
        for seed in seeds:
            yield _run(bug, seed)


@pytest.mark.parametrize("bug", BUGS, ids=[b.name for b in BUGS])
def test_default_swarm_sweep_finds_planted_bug(bug: Bug, monkeypatch: pytest.MonkeyPatch) -> None:
    started = time.perf_counter()
    found: SeedResult | None = None
    for res in sweep(bug, iter(range(bug.budget)), monkeypatch):
        if not res.ok:
            found = res
            break
    took = time.perf_counter() - started
    assert found is not None, f"{bug.name}: the default swarm sweep missed it in {bug.budget} seeds"
    assert found.violation is not None
    print(
        f"\n{bug.name}: first failing seed {found.seed} after {took:.1f}s: {found.violation}\n"
        f"  replay: python -m raftlease.testing.sweep --seed {found.seed} --verbose"
    )
    assert found.violation.name in bug.expected, str(found.violation)
    control = run_seed(found.seed, watchdog_s=20)
    assert control.ok, f"production code fails seed {found.seed} too: {control.violation}"


def measure(seeds: int, only: list[str]) -> None:
    """Every bug over ``seeds`` seeds: first failing seed, detection rate, time to detection."""
    print(f"{'bug':32} {'first':>5} {'rate':>9} {'to first':>9}  violations")
    for bug in BUGS:
        if only and bug.name not in only:
            continue
        mp = pytest.MonkeyPatch()
        started = time.perf_counter()
        first: int | None = None
        first_s = 0.0
        hits = 0
        names: dict[str, int] = {}
        for res in sweep(bug, iter(range(seeds)), mp):
            if res.ok:
                continue
            hits += 1
            assert res.violation is not None
            names[res.violation.name] = names.get(res.violation.name, 0) + 1
            if first is None:
                first = res.seed
                first_s = time.perf_counter() - started
        mp.undo()
        print(
            f"{bug.name:32} {first if first is not None else '-':>5} "
            f"{hits:>4}/{seeds:<4} {first_s:>8.1f}s  "
            + ", ".join(f"{k} {v}" for k, v in sorted(names.items())),
            flush=True,
        )


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=200)
    ap.add_argument("only", nargs="*")
    args = ap.parse_args()
    measure(args.seeds, args.only)
    sys.exit(0)
