"""The save window: what a RaftCore takes while its driver saves a Ready (between ``ready()``
and ``advance()``), and what of its output may leave before the save is done.

A disk that stalls for a second on every node at once (this project's benchmarks saw 1.9 s)
must not cost the leader its lease: ticks go on, a leader hears its followers' answers, and a
follower answers heartbeats from its durable log. Nothing may acknowledge an entry that is
still being saved (``RaftCore.steps_while_saving``, ``take_messages``).
"""

from __future__ import annotations

import pytest

from raftlease.core import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    EntryKind,
    RaftCore,
    Ready,
    RequestVote,
)
from raftlease.types import Role

from .test_raft import ELECTED, N1, N2, N3, cluster, drain, node


def _beats_through_a_save(step_answers: bool) -> tuple[RaftCore, list[bool]]:
    """Elect node 1, propose, and hold the leader's Ready unsaved for 3 lease spans while its
    heartbeats go out (``take_messages``) and, if ``step_answers``, their answers come back.
    Returns the leader and whether its lease was valid after each tick."""
    c = cluster(*ELECTED)
    leader = node(c, "1")
    followers = {N2: node(c, "2"), N3: node(c, "3")}
    assert leader.lease_valid()
    leader.propose(b"x")
    rd = leader.ready()
    assert rd.entries  # its fsync is stalled from here on
    valid = []
    for _ in range(3 * leader.lease_ticks):
        leader.tick()
        for m in leader.take_messages():
            f = followers[m.dst]
            f.step(m)
            for answer in drain(f):
                assert leader.steps_while_saving(answer)
                if step_answers:
                    leader.step(answer)
        valid.append(leader.lease_valid())
    leader.advance(rd)
    return leader, valid


def test_a_leader_keeps_its_lease_through_a_stalled_save() -> None:
    leader, valid = _beats_through_a_save(step_answers=True)
    assert all(valid)
    assert leader.role is Role.LEADER


def test_without_the_answers_the_lease_runs_out_during_the_save() -> None:
    """The control: what the node did before the save window (nothing stepped while saving)."""
    _leader, valid = _beats_through_a_save(step_answers=False)
    assert valid[0]
    assert not valid[-1]


def _follower_saving(commit_with_entry: bool) -> tuple[RaftCore, Ready]:
    """Node 2 of an elected cluster has entry 2 in a Ready it is still saving (entry 1, the
    no-op, is durable); if ``commit_with_entry`` the same append told it entry 2 committed."""
    c = cluster(*ELECTED)
    leader, f = node(c, "1"), node(c, "2")
    leader.propose(b"x")
    rd = leader.ready()
    leader.advance(rd)
    append = next(m for m in rd.messages if m.dst == N2)
    assert isinstance(append, AppendEntries)
    assert [e.index for e in append.entries] == [2]
    if commit_with_entry:
        append = AppendEntries(
            append.term, N1, N2, append.prev_log_index, append.prev_log_term, append.entries, 2, 7
        )
    f.step(append)
    saving = f.ready()
    assert [e.index for e in saving.entries] == [2]
    return f, saving


def _answer_while_saving(f: RaftCore, m: AppendEntries) -> AppendEntriesResponse:
    """Step ``m`` into ``f`` while it saves; its one answer, which must be sendable at once."""
    assert f.steps_while_saving(m)
    f.step(m)
    (answer,) = f.take_messages()
    assert isinstance(answer, AppendEntriesResponse)
    assert answer.success
    return answer


@pytest.mark.parametrize("commit_with_entry", [False, True])
def test_a_follower_answers_a_heartbeat_from_its_durable_log_only(commit_with_entry: bool) -> None:
    f, _ = _follower_saving(commit_with_entry)
    beat = AppendEntries(f.term, N1, N2, 1, f.log.term_at(1) or 0, (), 2, 42)
    answer = _answer_while_saving(f, beat)
    assert answer.send_tick == 42
    # Entry 2 is in memory but not on disk: acknowledging it could commit it on a quorum that
    # does not hold it (the simulator's planted AckUnsavedEntriesCore does just that).
    assert answer.match_index == 1
    assert f.election_elapsed == 0  # heard from its leader: no election from this follower


def test_a_retransmit_of_entries_being_saved_is_answered_like_a_heartbeat() -> None:
    """A leader that hears of no progress for a heartbeat interval resends the entries
    instead of a heartbeat: the follower answers it too, from its durable log only."""
    f, saving = _follower_saving(False)
    again = AppendEntries(f.term, N1, N2, 1, f.log.term_at(1) or 0, saving.entries, 1, 44)
    assert _answer_while_saving(f, again).match_index == 1
    f.advance(saving)
    assert f.ready().entries == ()  # nothing new to save: it held them already


def test_an_empty_append_beyond_the_durable_log_waits_for_the_save() -> None:
    f, _ = _follower_saving(False)
    probe = AppendEntries(f.term, N1, N2, 2, f.term, (), 1, 43)  # prev is entry 2: unsaved
    assert not f.steps_while_saving(probe)
    with pytest.raises(RuntimeError, match="steps_while_saving"):
        f.step(probe)
    new_entry = Entry(3, f.term, EntryKind.NORMAL, b"y")
    with_entries = AppendEntries(f.term, N1, N2, 2, f.term, (new_entry,), 1, 43)
    assert not f.steps_while_saving(with_entries)
    other_leader = AppendEntries(f.term, N3, N2, 1, f.term, (), 1, 43)
    assert not f.steps_while_saving(other_leader)
    newer_term = AppendEntries(f.term + 1, N1, N2, 1, f.term, (), 1, 43)
    assert not f.steps_while_saving(newer_term)
    assert not f.steps_while_saving(RequestVote(f.term + 1, N3, N2, 5, f.term))


def test_an_election_begun_during_a_save_waits_for_the_next_ready() -> None:
    f, saving = _follower_saving(False)
    for _ in range(f.config.election_ticks_max + 1):
        f.tick()
    assert f.role is Role.PRE_CANDIDATE  # its election timer ran while it was saving
    assert f.take_messages() == ()  # its requests leave only from a Ready of their own
    f.advance(saving)
    rd = f.ready()
    assert {m.dst for m in rd.messages if isinstance(m, RequestVote)} == {N1, N3}
