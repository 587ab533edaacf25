"""RaftLog (core/log.py): positions and term_at, the follower append rule (§5.3) and its
refusal to truncate committed entries, snapshot restore and local compaction, and which
entries are unstable (still to be persisted by the driver).
"""

from __future__ import annotations

import pytest

from raftlease.core.log import LogInvariantError, RaftLog
from raftlease.core.messages import Entry, Snapshot
from raftlease.types import NodeId


def ents(*terms: int, start: int = 1) -> tuple[Entry, ...]:
    return tuple(Entry(i, t) for i, t in enumerate(terms, start))


def snap(index: int, term: int) -> Snapshot:
    return Snapshot(index, term, (NodeId("1"), NodeId("2"), NodeId("3")), b"state")


def test_empty_log() -> None:
    log = RaftLog(None, (), 0)
    assert (log.first_index, log.last_index, log.last_term, log.committed) == (1, 0, 0, 0)
    assert log.term_at(0) == 0
    assert log.term_at(1) is None
    assert log.unstable_entries() == ()


def test_term_at_with_snapshot() -> None:
    log = RaftLog(snap(5, 2), ents(2, 3, start=6), 5)
    assert (log.first_index, log.last_index, log.last_term) == (6, 7, 3)
    assert log.term_at(4) is None  # compacted away
    assert log.term_at(5) == 2  # the snapshot's own index
    assert log.term_at(6) == 2
    assert log.term_at(7) == 3
    assert log.term_at(8) is None  # beyond the log
    assert log.committed == 5
    assert log.applied == 5


def test_constructor_checks() -> None:
    with pytest.raises(LogInvariantError, match="not contiguous at index 3"):
        RaftLog(None, (Entry(1, 1), Entry(3, 1)), 0)
    with pytest.raises(LogInvariantError, match="commit index 3 is beyond the last log index 2"):
        RaftLog(None, ents(1, 1), 3)
    # Entries loaded from storage are stable; the commit index is never below the snapshot.
    log = RaftLog(snap(4, 1), ents(1, start=5), 0)
    assert log.committed == 4
    assert log.unstable_entries() == ()


def test_truncate_and_append_appends_and_skips_matching_entries() -> None:
    log = RaftLog(None, ents(1, 1), 0)
    log.truncate_and_append(ents(1, 1, 2))  # 1 and 2 match; 3 is new
    assert log.entries == list(ents(1, 1, 2))
    assert log.unstable_entries() == ents(2, start=3)
    log.truncate_and_append(ents(1, start=2))  # a duplicate (old) append changes nothing
    assert log.entries == list(ents(1, 1, 2))


def test_truncate_and_append_cuts_at_first_conflict() -> None:
    log = RaftLog(None, ents(1, 1, 2, 2), 1)  # entries 1..4 stable (loaded from storage)
    log.truncate_and_append(ents(3, 3, start=3))  # 3/2 conflicts with 3/3: cut 3.., append
    assert log.entries == list(ents(1, 1, 3, 3))
    assert log.unstable_entries() == ents(3, 3, start=3)  # the driver must rewrite 3 and 4


def test_truncate_and_append_conflict_in_the_middle_of_the_batch() -> None:
    log = RaftLog(None, ents(1, 1, 2, 2, 2), 0)
    log.truncate_and_append(ents(1, 1, 3, start=2))  # 2 and 3 match, 4 conflicts
    assert [e.term for e in log.entries] == [1, 1, 1, 3]
    assert log.last_index == 4


def test_truncate_and_append_refuses_to_truncate_committed_entries() -> None:
    log = RaftLog(None, ents(1, 1, 2), 0)
    log.commit_to(2)
    with pytest.raises(LogInvariantError) as exc:
        log.truncate_and_append(ents(3, start=2))
    assert str(exc.value) == "refusing to truncate committed entry 2 (commit 2)"
    assert log.entries == list(ents(1, 1, 2))  # unchanged
    log.truncate_and_append(ents(3, start=3))  # above the commit index a conflict is fine
    assert [e.term for e in log.entries] == [1, 1, 3]


def test_truncate_and_append_rejects_a_gap() -> None:
    log = RaftLog(None, ents(1), 0)
    with pytest.raises(LogInvariantError, match="gap: appending 3 after 1"):
        log.truncate_and_append(ents(1, start=3))


def test_truncate_and_append_skips_entries_covered_by_the_snapshot() -> None:
    log = RaftLog(snap(3, 1), (), 3)
    log.truncate_and_append(ents(1, 1, 2, start=2))  # 2 and 3 are inside the snapshot
    assert log.entries == [Entry(4, 2)]


def test_commit_to() -> None:
    log = RaftLog(None, ents(1, 1), 0)
    assert log.commit_to(2) is True
    assert log.commit_to(1) is False  # never moves backwards
    assert log.committed == 2
    with pytest.raises(LogInvariantError, match="commit 3 beyond last index 2"):
        log.commit_to(3)


def test_restore_snapshot_beyond_the_log_drops_everything() -> None:
    log = RaftLog(None, ents(1, 1, 2), 1)
    s = snap(5, 3)
    log.restore(s)
    assert log.entries == []
    assert (log.snapshot, log.pending_snapshot) == (s, s)
    assert (log.first_index, log.last_index, log.last_term) == (6, 5, 3)
    assert (log.committed, log.applied) == (5, 5)
    assert log.unstable_entries() == ()


def test_restore_snapshot_with_a_conflicting_term_drops_everything() -> None:
    log = RaftLog(None, ents(1, 1, 2, 2), 1)
    log.restore(snap(3, 3))  # we hold 3/2, the snapshot says 3/3: our suffix is wrong too
    assert log.entries == []
    assert log.last_index == 3
    assert log.term_at(3) == 3


def test_restore_snapshot_inside_the_log_keeps_the_matching_suffix() -> None:
    log = RaftLog(None, ents(1, 1, 2, 2), 1)
    log.restore(snap(2, 1))
    assert log.entries == list(ents(2, 2, start=3))
    assert (log.committed, log.applied, log.last_index) == (2, 2, 4)


def test_compact_drops_applied_prefix() -> None:
    log = RaftLog(None, ents(1, 1, 2, 2), 0)
    log.commit_to(3)
    log.applied = 3
    log.compact(snap(2, 1))
    assert log.entries == list(ents(2, 2, start=3))
    assert (log.first_index, log.term_at(2), log.term_at(1)) == (3, 1, None)
    assert log.pending_snapshot is None  # a local snapshot is not sent back to the driver
    log.compact(snap(1, 1))  # older than what we have: no-op
    assert log.snapshot is not None
    assert log.snapshot.index == 2


def test_compact_refuses_unapplied_entries() -> None:
    log = RaftLog(None, ents(1, 1, 2), 3)
    log.applied = 1
    with pytest.raises(LogInvariantError, match="cannot compact to 2: only 1 applied"):
        log.compact(snap(2, 1))


def test_unstable_entries_follow_appends() -> None:
    log = RaftLog(None, ents(1), 0)
    log.append(Entry(2, 1))
    log.append(Entry(3, 1))
    assert log.unstable_entries() == ents(1, 1, start=2)
    log.unstable_from = 4  # what RaftCore.advance() does once the driver persisted them
    assert log.unstable_entries() == ()


def test_up_to_date_rule() -> None:
    log = RaftLog(None, ents(1, 2, 2), 0)  # last (3, 2)
    assert log.is_up_to_date(3, 2)  # equal
    assert log.is_up_to_date(4, 2)  # same term, longer
    assert log.is_up_to_date(1, 3)  # newer term wins even if shorter
    assert not log.is_up_to_date(2, 2)  # same term, shorter
    assert not log.is_up_to_date(9, 1)  # older term loses even if longer


def test_term_run_helpers() -> None:
    log = RaftLog(snap(2, 1), ents(1, 4, 4, 5, start=3), 2)  # 3/1 4/4 5/4 6/5
    assert log.first_index_of_term(5) == 4
    assert log.first_index_of_term(3) == 3  # stops at the snapshot
    assert log.last_index_of_term(4) == 5
    assert log.last_index_of_term(2) == 0  # absent
    assert log.last_index_of_term(9) == 0


def test_next_committed_respects_limit() -> None:
    log = RaftLog(None, ents(1, 1, 1, 1), 0)
    log.commit_to(4)
    assert log.next_committed(2) == ents(1, 1)
    log.applied = 2
    assert log.next_committed(10) == ents(1, 1, start=3)
    log.applied = 4
    assert log.next_committed(10) == ()
