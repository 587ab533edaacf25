"""The simulator's newer oracles, each shown both ways (production passes, a planted bug
fails): the CheckQuorum bound, the election bound of a fault-free window, vote durability
across restarts, "applied only once a majority holds it", the committed prefix at boot, and
the crash points at the moments that matter (votes, acknowledged-not-committed entries,
snapshot installs)."""

from __future__ import annotations

import pytest

from raftlease.core.messages import Entry, EntryKind, RequestVote, RequestVoteResponse
from raftlease.core.raft import RaftCore
from raftlease.core.ready import HardState
from raftlease.storage.base import LoadedState
from raftlease.testing import Checkers, LivenessViolation, SafetyViolation, SimCluster
from raftlease.types import NodeId

from .planted import ForgetVoteCore, NoCheckQuorumCore

MS = 1_000


def _leader(sim: SimCluster) -> str:
    assert sim.run_until_true(lambda: bool(sim.lease_holders()), 2_000 * MS)
    return sim.lease_holders()[0]


@pytest.mark.parametrize("seed", range(3))
def test_isolated_leader_steps_down_within_the_check_quorum_bound(seed: int) -> None:
    sim = SimCluster(3, seed)
    lead = _leader(sim)
    sim.isolate(lead)
    sim.run_for(1_000 * MS)  # the oracle would raise if it stayed leader past the bound
    assert not sim.node(lead).is_leader


@pytest.mark.parametrize("seed", range(3))
def test_leader_without_check_quorum_is_caught(seed: int) -> None:
    sim = SimCluster(3, seed, core_factory=NoCheckQuorumCore)
    lead = _leader(sim)
    sim.isolate(lead)
    with pytest.raises(LivenessViolation) as exc:
        sim.run_for(1_000 * MS)
    assert exc.value.name == "liveness-checkquorum"
    # It was caught at the bound, not later: 2*E_min+2 ticks (+1 of phase, +1% drift).
    bound_us = (sim.check_quorum_bound_ticks() + 2) * sim.tick_us * 1.02
    assert sim.now - 1_000 * MS < bound_us + 1_000 * MS


def test_quiet_window_elects_within_the_bound() -> None:
    sim = SimCluster(5, 1)
    _leader(sim)
    for node in sim.nodes:
        sim.crash(node.id)
    sim.quiet_window(200 * MS)  # restarts everyone; a lease is due within the bound
    assert sim.quiet_until - sim.now >= sim.election_bound_us()
    sim.run_for(sim.election_bound_us() + 50 * MS)
    assert sim.lease_holders()


class _NeverCampaigns(RaftCore):
    def _start_election(self, transfer: bool) -> None:
        self.election_elapsed = 0


def test_quiet_window_without_an_election_is_caught() -> None:
    sim = SimCluster(3, 2, core_factory=_NeverCampaigns)
    sim.run_for(50 * MS)
    sim.quiet_window(100 * MS)
    with pytest.raises(LivenessViolation) as exc:
        sim.run_for(sim.election_bound_us() + 50 * MS)
    assert exc.value.name == "liveness-election"


def _vote_then_restart(core: type[RaftCore], seed: int) -> None:
    """Run until some node granted a vote to another, crash that voter and restart it."""
    sim = SimCluster(3, seed, core_factory=core)

    def voted() -> bool:
        return any(v != voter for (voter, _), v in sim.checkers.votes.items())

    assert sim.run_until_true(voted, 2_000 * MS)
    voter = next(voter for (voter, _), v in sim.checkers.votes.items() if v != voter)
    sim.crash(voter)
    sim.restart(voter)


@pytest.mark.parametrize("seed", range(3))
def test_a_vote_survives_a_restart(seed: int) -> None:
    _vote_then_restart(RaftCore, seed)


@pytest.mark.parametrize("seed", range(3))
def test_a_forgotten_vote_is_caught_at_restart(seed: int) -> None:
    with pytest.raises(SafetyViolation) as exc:
        _vote_then_restart(ForgetVoteCore, seed)
    assert exc.value.name == "vote-safety"
    assert "not durable" in str(exc.value)


def _entry(index: int, term: int) -> Entry:
    return Entry(index, term, EntryKind.NORMAL, index.to_bytes(8, "big"))


def test_applied_only_once_a_majority_holds_it() -> None:
    ids = tuple(NodeId(f"n{i}") for i in range(1, 4))
    chk = Checkers(ids)
    e = _entry(1, 1)
    chk.on_save(ids[0], [e], 0)
    with pytest.raises(SafetyViolation) as exc:
        chk.check_committed(ids[0], e)
    assert exc.value.name == "applied-uncommitted"
    chk.on_snapshot_durable(ids[1], 1, 1)  # a snapshot covering it counts too
    chk.check_committed(ids[0], e)
    chk.on_save(ids[2], [e], 0)
    chk.check_committed(ids[2], e)


def test_boot_log_must_agree_with_what_was_applied() -> None:
    ids = tuple(NodeId(f"n{i}") for i in range(1, 4))
    chk = Checkers(ids)
    chk.on_apply(ids[0], 0, _entry(1, 1), b"h")
    chk.check_boot_log(ids[1], LoadedState(HardState(1, None, 1), None, (_entry(1, 1),)))
    with pytest.raises(SafetyViolation) as exc:
        chk.check_boot_log(ids[1], LoadedState(HardState(2, None, 1), None, (_entry(1, 2),)))
    assert exc.value.name == "committed-changed"
    with pytest.raises(SafetyViolation):
        chk.check_boot_log(ids[1], LoadedState(HardState(2, None, 3), None, (_entry(1, 1),)))


@pytest.mark.parametrize(
    "failpoint",
    [
        "vote:before-save",
        "vote:before-send",
        "vote:after-send",
        "acked:before-send",
        "acked:after-send",
        "follower:before-save",
        "before-save",
    ],
)
def test_crash_points_that_matter_fire_and_production_survives(failpoint: str) -> None:
    sim = SimCluster(
        5,  # in 3 nodes one ack commits at once: nothing is ever acked-but-uncommitted
        4,
        failpoints={failpoint: 0.3},
        failpoint_down_us=(0, 5 * MS),
        compact_every_us=(50 * MS, 100 * MS),
    )
    sim.run_for(2_000 * MS)
    assert sim.failpoint_crashes > 0
    sim.final_heal()
    sim.check_liveness()


def test_crash_during_a_snapshot_install() -> None:
    sim = SimCluster(
        3,
        5,
        failpoints={"snapshot:before-save": 0.5, "snapshot:after-apply": 0.5},
        failpoint_down_us=(0, 5 * MS),
        compact_every_us=(30 * MS, 60 * MS),
        propose_every_us=(2 * MS, 5 * MS),
    )
    lead = _leader(sim)
    follower = next(n.id for n in sim.nodes if n.id != lead)
    sim.isolate(follower)
    sim.run_for(500 * MS)
    sim.heal()  # the follower is behind every snapshot: it gets InstallSnapshot
    sim.run_for(1_500 * MS)
    assert sim.failpoint_crashes > 0
    sim.final_heal()
    sim.check_liveness()


def test_sticky_voter_adopting_a_term_first() -> None:
    """A follower that just acknowledged the leader (so it counts toward the leader's lease)
    adopts a higher term from a REJECTED PreVoteResponse (RaftCore.step: any higher-term
    message but a granted pre-vote answer makes it a follower of that term, with no vote),
    then gets a RequestVote of that same term from a rival: ``_handle_request_vote`` grants
    it, because the stickiness check in ``step`` runs only when ``m.term > self.term``. Its
    vote can elect the rival while the leader's lease, which counted its ack, is valid
    (docs/safety.md step 1 says it refuses "every (pre-)vote"). Found by the swarm sweep
    with ``SimCluster.strict_stickiness`` on (seed 205 when found: n4 acked n5, leader of
    term 1, adopted term 2 from n2's rejected PreVoteResp 2.4 ms later and granted n2's
    term-2 RequestVote 1 ms after that). Fixed in ``_handle_request_vote``: a non-transfer
    vote is refused while ``_in_lease()``, whatever its term."""
    sim = SimCluster(3, 7, propose_every_us=None)
    lead = _leader(sim)
    sim.run_for(30 * MS)  # heartbeats: every follower acknowledged the leader just now
    follower, rival = (n for n in sim.nodes if n.id != lead)
    core = follower.core
    assert core is not None
    assert core._in_lease()
    term = core.term + 1
    core.step(RequestVoteResponse(term, rival.id, follower.id, False, True))
    assert core.term == term
    assert core.voted_for is None
    core.step(
        RequestVote(term, rival.id, follower.id, core.log.last_index, core.log.last_term, False)
    )
    rd = core.ready()
    core.advance(rd)
    granted = [m for m in rd.messages if type(m) is RequestVoteResponse and m.granted]
    assert not granted, f"{follower.id} voted for {rival.id} while sticky: {granted}"


def test_a_node_that_could_win_without_a_committed_entry_is_caught() -> None:
    """Rule 15 (commit-unsafe), the figure-8 shape: 1/1 is on n1 and n2 (a majority) but
    n3's durable log ends with a term-2 entry, more up to date than both: n3 could win."""
    ids = tuple(NodeId(f"n{i}") for i in range(1, 4))
    chk = Checkers(ids)
    e = _entry(1, 1)
    chk.on_save(ids[0], [e], 0)
    chk.on_save(ids[1], [e], 0)
    chk.on_save(ids[2], [_entry(1, 2)], 0)
    with pytest.raises(SafetyViolation) as exc:
        chk.check_committed(ids[0], e)
    assert exc.value.name == "commit-unsafe"


def test_a_snapshot_overtaken_by_an_install_is_dropped() -> None:
    """node.py freezes its table, encodes it over many turns, then compacts at the frozen
    index; if an InstallSnapshot moved the log past that index meanwhile, the core drops
    the late snapshot (compact() returns None) and the node goes on from the installed one."""
    sim = SimCluster(3, 4, propose_every_us=(2 * MS, 5 * MS))
    lead = _leader(sim)
    follower = next(n.id for n in sim.nodes if n.id != lead)
    sim.run_for(50 * MS)
    assert sim.begin_snapshot(follower)  # frozen at its applied index
    frozen = sim.node(follower).applied_index
    sim.isolate(follower)
    sim.run_for(300 * MS)
    snap = sim.compact(lead)  # the leader's log no longer reaches back to the follower
    assert snap is not None
    sim.heal()
    assert sim.run_until_true(lambda: sim.node(follower).applied_index > snap.index, 1_000 * MS)
    core = sim.node(follower).core
    assert core is not None
    assert core.log.snapshot_index > frozen  # it installed the leader's snapshot
    assert sim.finish_snapshot(follower) is None
    assert core.log.snapshot_index > frozen
    sim.final_heal()
    sim.check_liveness()
