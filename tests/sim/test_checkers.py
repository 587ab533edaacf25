"""Unit tests of the incremental checkers: each rule fires on a hand-made violation and stays
quiet on the matching legal history. (The planted-bug tests show they fire in real runs.)"""

from __future__ import annotations

import pytest

from raftlease.core.messages import Entry, EntryKind, Snapshot
from raftlease.core.ready import HardState
from raftlease.storage.base import LoadedState
from raftlease.testing.checkers import Checkers, SafetyViolation
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
