"""Unit tests of the incremental checkers: each rule fires on a hand-made violation and stays
quiet on the matching legal history. (The planted-bug tests show they fire in real runs.)"""

from __future__ import annotations

import pytest

from raftlease.core.messages import Entry, EntryKind, Snapshot
from raftlease.core.ready import HardState
from raftlease.fsm.leases import LeaseRecord
from raftlease.storage.base import LoadedState
from raftlease.testing.checkers import Checkers, LeaseCheckers, SafetyViolation
from raftlease.types import NodeId

A, B, C = NodeId("n1"), NodeId("n2"), NodeId("n3")


def make() -> Checkers:
    return Checkers((A, B, C))


def e(index: int, term: int, data: bytes = b"") -> Entry:
    return Entry(index, term, EntryKind.NORMAL, data)


def test_election_safety() -> None:
    chk = make()
    chk.on_become_leader(A, 2, 0, 0, None)
    chk.on_become_leader(A, 2, 0, 0, None)  # the same leader seen again is fine
    chk.on_become_leader(B, 3, 0, 0, None)
    with pytest.raises(SafetyViolation) as info:
        chk.on_become_leader(C, 2, 0, 0, None)
    assert info.value.name == "election-safety"


def test_vote_safety_across_restarts() -> None:
    chk = make()
    chk.on_vote_granted(A, 4, B)
    chk.on_vote_granted(A, 4, B)  # a duplicate grant to the same candidate is fine
    chk.on_vote_granted(A, 5, C)
    with pytest.raises(SafetyViolation) as info:
        chk.on_vote_granted(A, 4, C)
    assert info.value.name == "vote-safety"


def test_term_monotonic() -> None:
    chk = make()
    chk.on_term(A, 3)
    chk.on_term(A, 3)
    with pytest.raises(SafetyViolation) as info:
        chk.on_term(A, 2)
    assert info.value.name == "term-monotonic"


def test_log_matching_same_index_term_different_data() -> None:
    chk = make()
    chk.on_save(A, [e(1, 1, b"x"), e(2, 1, b"y")], prev_term=0)
    chk.on_save(B, [e(1, 1, b"x")], prev_term=0)
    with pytest.raises(SafetyViolation) as info:
        chk.on_save(C, [e(2, 1, b"z")], prev_term=1)
    assert info.value.name == "log-matching"


def test_log_matching_same_entry_different_predecessor() -> None:
    chk = make()
    chk.on_save(A, [e(5, 3, b"x")], prev_term=2)
    with pytest.raises(SafetyViolation) as info:
        chk.on_save(B, [e(5, 3, b"x")], prev_term=1)
    assert info.value.name == "log-matching"


def test_state_machine_safety() -> None:
    chk = make()
    chk.on_apply(A, 0, e(1, 1, b"cmd00001"), b"h1")
    chk.on_apply(B, 0, e(1, 1, b"cmd00001"), b"h1")
    with pytest.raises(SafetyViolation) as info:
        chk.on_apply(C, 0, e(1, 2, b"cmd00002"), b"h2")
    assert info.value.name == "state-machine-safety"


def test_apply_out_of_order_and_duplicate_command() -> None:
    chk = make()
    with pytest.raises(SafetyViolation):
        chk.on_apply(A, 0, e(2, 1), b"h")
    chk = make()
    chk.on_apply(A, 0, e(1, 1, b"cmd00001xx"), b"h1")
    with pytest.raises(SafetyViolation) as info:
        chk.on_apply(A, 1, e(2, 1, b"cmd00001yy"), b"h2")  # same 8-byte id, second index
    assert "command" in info.value.detail


def test_snapshot_must_match_applied_state() -> None:
    chk = make()
    chk.on_apply(A, 0, e(1, 1), b"h1")
    chk.on_snapshot_applied(B, Snapshot(1, 1, (A, B, C), b"h1"))
    with pytest.raises(SafetyViolation):
        chk.on_snapshot_applied(C, Snapshot(1, 1, (A, B, C), b"other"))


def test_leader_completeness() -> None:
    chk = make()
    chk.on_apply(A, 0, e(1, 1), b"h1")
    chk.on_apply(A, 1, e(2, 2), b"h2")
    chk.on_become_leader(B, 3, 2, 0, 2)  # holds 2/2: fine
    chk.on_become_leader(C, 4, 5, 3, None)  # 2 is inside its snapshot: fine
    with pytest.raises(SafetyViolation) as info:
        chk.on_become_leader(A, 5, 2, 0, 1)  # holds a different term at index 2
    assert info.value.name == "leader-completeness"
    with pytest.raises(SafetyViolation):
        chk.on_become_leader(A, 6, 1, 0, None)  # too short


def test_leader_completeness_of_a_stale_term_won_late() -> None:
    """A candidate of term 2 paused with its vote answers queued wins term 2 after term 3
    committed entries: it must hold what terms 1 and 2 committed, not term 3's."""
    chk = make()
    chk.on_apply(A, 0, e(1, 1), b"h1")
    chk.on_apply(A, 1, e(2, 1), b"h2")
    chk.on_become_leader(B, 3, 3, 0, 1)
    chk.on_apply(B, 2, e(3, 3), b"h3")  # 3/3 committed in term 3
    assert chk.committed_probe(2) == (2, 1)
    chk.on_become_leader(C, 2, 3, 0, 1)  # holds 2/1 (and its own 3/2): fine
    with pytest.raises(SafetyViolation) as info:
        chk.on_become_leader(A, 2, 1, 0, None)  # misses 2/1: not fine
    assert info.value.name in ("leader-completeness", "election-safety")
    chk2 = make()
    chk2.on_apply(A, 0, e(1, 1), b"h1")
    chk2.on_apply(A, 1, e(2, 3), b"h2")
    with pytest.raises(SafetyViolation) as info:
        chk2.on_become_leader(B, 2, 0, 0, None)  # misses 1/1
    assert info.value.name == "leader-completeness"


def test_committed_durability() -> None:
    chk = make()
    chk.on_apply(A, 0, e(1, 1), b"h1")
    has = LoadedState(HardState(1, None, 1), None, (e(1, 1),))
    empty = LoadedState(HardState(1, None, 0), None, ())
    snap = LoadedState(HardState(1, None, 1), Snapshot(1, 1, (A, B, C), b"h1"), ())
    chk.check_durable({A: has, B: snap, C: empty}, "test")
    with pytest.raises(SafetyViolation) as info:
        chk.check_durable({A: has, B: empty, C: empty}, "test")
    assert info.value.name == "committed-lost"


def test_lease_exclusion() -> None:
    chk = make()
    chk.on_lease(A, True)
    chk.on_lease(A, False)
    chk.on_lease(B, True)
    chk.on_lease(B, True)
    with pytest.raises(SafetyViolation) as info:
        chk.on_lease(C, True)
    assert info.value.name == "lease-exclusion"


# ------------------------------------------------------------------------------ leases
C1, C2 = NodeId("c1"), NodeId("c2")


def grant(token: int, name: str = "x", holder: str = "c1") -> LeaseRecord:
    return LeaseRecord(name, token, holder, 1000, (), f"{holder}-{token}")


def at(chk: LeaseCheckers, t: int) -> LeaseCheckers:
    chk.now_us = t
    return chk


def test_mutual_exclusion_overlap() -> None:
    chk = LeaseCheckers()
    at(chk, 10).on_belief_start(C1, "x", 5, 5, 100.0)
    at(chk, 50).on_belief_start(C1, "y", 6, 6, 200.0)  # another name: fine
    with pytest.raises(SafetyViolation) as info:
        at(chk, 99).on_belief_start(C2, "x", 7, 7, 300.0)
    assert info.value.name == "mutual-exclusion"
    chk = LeaseCheckers()
    at(chk, 10).on_belief_start(C1, "x", 5, 5, 100.0)
    at(chk, 100).on_belief_start(C2, "x", 7, 7, 300.0)  # [10, 100) then [100, 300): fine
    assert chk.stats.handovers == 1


def test_release_cuts_the_belief_but_the_lost_signal_does_not() -> None:
    chk = LeaseCheckers()
    at(chk, 10).on_belief_start(C1, "x", 5, 5, 100.0)
    at(chk, 20).on_belief_end(C1, 5)  # released at 20
    at(chk, 30).on_belief_start(C2, "x", 7, 7, 300.0)
    chk = LeaseCheckers()
    at(chk, 10).on_belief_start(C1, "x", 5, 5, 100.0)
    at(chk, 20).on_belief_end(C1, 5, cut=False)  # gave up renewing: believes until 100
    at(chk, 25).on_belief_extend(C1, 5, 500.0)  # a late renewal cannot revive it
    assert chk.by_lease[5].end_us == 100.0
    with pytest.raises(SafetyViolation) as info:
        at(chk, 30).on_belief_start(C2, "x", 7, 7, 300.0)
    assert info.value.name == "mutual-exclusion"


def test_belief_after_end() -> None:
    chk = LeaseCheckers()
    at(chk, 10).on_belief_start(C1, "x", 5, 5, 100.0)
    at(chk, 5).on_lease_event(A, "acquired", grant(5), 5)
    at(chk, 100).on_lease_event(A, "expired", grant(5), 9)  # belief over at 100: fine
    at(chk, 120).on_lease_event(B, "expired", grant(5), 9)  # the same end elsewhere: fine
    with pytest.raises(SafetyViolation) as info:  # believing a grant that already ended
        at(chk, 130).on_belief_start(C2, "x", 5, 5, 200.0)
    assert info.value.name == "belief-after-end"
    chk = LeaseCheckers()
    at(chk, 10).on_belief_start(C1, "x", 5, 5, 100.0)
    with pytest.raises(SafetyViolation) as info:
        at(chk, 99).on_lease_event(A, "expired", grant(5), 9)
    assert info.value.name == "belief-after-end"
    chk = LeaseCheckers()
    at(chk, 10).on_belief_start(C1, "x", 5, 5, 40.0)
    at(chk, 50).on_lease_event(A, "released", grant(5), 9)
    with pytest.raises(SafetyViolation) as info:  # renewed by a node that missed the end
        at(chk, 60).on_belief_extend(C1, 5, 1_000.0)
    assert info.value.name == "belief-after-end"


def test_me_violations_recorded_when_not_enforced() -> None:
    chk = LeaseCheckers(enforce_me=False)
    at(chk, 10).on_belief_start(C1, "x", 5, 5, 100.0)
    at(chk, 20).on_belief_start(C2, "x", 7, 7, 300.0)
    assert [v.name for v in chk.me_violations] == ["mutual-exclusion"]


def test_fencing_token_order() -> None:
    chk = LeaseCheckers()
    chk.on_lease_event(A, "acquired", grant(5), 5)
    chk.on_lease_event(B, "acquired", grant(5), 5)
    chk.on_lease_event(A, "acquired", grant(8), 8)
    with pytest.raises(SafetyViolation) as info:  # token is not the grant's index
        chk.on_lease_event(A, "acquired", grant(9), 10)
    assert info.value.name == "fencing-token-order"
    with pytest.raises(SafetyViolation) as info:  # one token, two different grants
        chk.on_lease_event(C, "acquired", grant(8, holder="c2"), 8)
    assert info.value.name == "fencing-token-order"
    with pytest.raises(SafetyViolation) as info:  # backwards on one node
        chk.on_lease_event(A, "acquired", grant(5), 5)
    chk.on_node_boot(A, 0)  # a restarted node replays from its snapshot: fine
    chk.on_lease_event(A, "acquired", grant(5), 5)
    chk.on_table_restored(B, 20, b"{}")
    with pytest.raises(SafetyViolation):  # below the snapshot it restored
        chk.on_lease_event(B, "acquired", grant(8), 8)
    with pytest.raises(SafetyViolation) as info:  # two tables at one index differ
        chk.on_snapshot_taken(C, 20, b"{other}")
    assert info.value.name == "state-machine-safety"
    chk = LeaseCheckers()
    at(chk, 10).on_belief_start(C1, "x", 8, 8, 20.0)
    with pytest.raises(SafetyViolation) as info:  # acted-on tokens go backwards
        at(chk, 30).on_belief_start(C2, "x", 5, 5, 40.0)
    assert info.value.name == "fencing-token-order"


def test_fencing_resource() -> None:
    chk = LeaseCheckers()
    at(chk, 10).on_belief_start(C1, "x", 5, 5, 100.0)
    at(chk, 20).on_write(C1, "x", 5, 5, accepted=True)
    at(chk, 150).on_write(C1, "x", 5, 5, accepted=True)  # late, accepted
    at(chk, 160).on_write(C2, "x", 9, 9, accepted=True)
    at(chk, 170).on_write(C1, "x", 5, 5, accepted=False)  # late, fenced off
    st = chk.stats
    assert (st.writes_accepted_valid, st.writes_accepted_late, st.writes_rejected_late) == (1, 2, 1)
    with pytest.raises(SafetyViolation) as info:
        at(chk, 180).on_write(C1, "x", 5, 5, accepted=True)
    assert info.value.name == "fencing"
