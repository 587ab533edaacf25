"""RaftCore (core/raft.py), one test per rule: a vote at most once per term and persisted
before the grant leaves (§5.2, thesis §3.8); the log up-to-date check (§5.4.1); stale-term
messages answered with our term (§5.1); PreVote records nothing; the leader lease (valid only
after the no-op commits and while a quorum acked within lease_ticks, never during a
transfer); NotLeader with a leader hint; and the Ready contract's ban on input between
ready() and advance().

Single-node rules drive one RaftCore with hand-made messages; cluster rules use the transcript
runner's Cluster (transcript.py) command by command.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

import pytest

from raftlease.config import RaftConfig
from raftlease.core import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    HardState,
    InstallSnapshot,
    InstallSnapshotResponse,
    RaftCore,
    RequestVote,
    RequestVoteResponse,
    Snapshot,
    TimeoutNow,
)
from raftlease.errors import NotLeader, ProposalDropped
from raftlease.types import NodeId, Role

from .transcript import Cluster

if TYPE_CHECKING:
    from collections.abc import Callable

    from raftlease.core import Message

N1, N2, N3 = NodeId("1"), NodeId("2"), NodeId("3")


def make(hs: HardState | None = None, entries: tuple[Entry, ...] = (), **kw: Any) -> RaftCore:
    """Node 1 of a three-node cluster, restarted from ``hs`` and ``entries``."""
    return RaftCore(RaftConfig(N1, (N1, N2, N3), **kw), random.Random(0), hs, None, entries)


def plain(hs: HardState | None = None, entries: tuple[Entry, ...] = ()) -> RaftCore:
    """Raft as in the paper: no PreVote, no CheckQuorum (so no stickiness, no lease)."""
    return make(hs, entries, pre_vote=False, check_quorum=False)


def drain(core: RaftCore) -> list[Message]:
    """Run the Ready loop (nothing to persist here) and return the messages sent."""
    out: list[Message] = []
    while core.has_ready():
        rd = core.ready()
        out += rd.messages
        core.advance(rd)
    return out


def cluster(*commands: str) -> Cluster:
    c = Cluster()
    for cmd in commands:
        c.run(cmd)
    return c


def node(c: Cluster, nid: str) -> RaftCore:
    core = c.nodes[NodeId(nid)].core
    assert core is not None
    return core


ELECTED = ("add-nodes 3", "tick all 10", "campaign 1", "stabilize")


# --- votes ------------------------------------------------------------------------------------
def test_vote_granted_at_most_once_per_term() -> None:
    f = plain()
    f.step(RequestVote(1, N2, N1, 0, 0))
    assert drain(f) == [RequestVoteResponse(1, N1, N2, True)]
    f.step(RequestVote(1, N3, N1, 0, 0))  # a second candidate in the same term
    assert drain(f) == [RequestVoteResponse(1, N1, N3, False)]
    f.step(RequestVote(1, N2, N1, 0, 0))  # the same candidate again (a retry): still granted
    assert drain(f) == [RequestVoteResponse(1, N1, N2, True)]
    f.step(RequestVote(2, N3, N1, 0, 0))  # a new term frees the vote
    assert drain(f) == [RequestVoteResponse(2, N1, N3, True)]


def test_vote_survives_restart() -> None:
    f = plain(HardState(term=1, voted_for=N2))
    f.step(RequestVote(1, N3, N1, 0, 0))
    assert drain(f) == [RequestVoteResponse(1, N1, N3, False)]


def test_vote_is_in_the_hard_state_of_the_ready_that_sends_the_grant() -> None:
    # READY CONTRACT: the driver persists hard_state BEFORE sending the same Ready's messages.
    f = plain()
    f.step(RequestVote(1, N2, N1, 0, 0))
    rd = f.ready()
    assert rd.hard_state == HardState(term=1, voted_for=N2, commit=0)
    assert rd.must_fsync(0, None)  # the new vote must be on disk before the grant leaves
    assert rd.messages == (RequestVoteResponse(1, N1, N2, True),)


@pytest.mark.parametrize(
    ("last_index", "last_term", "granted"),
    [
        (3, 2, True),  # same last entry
        (4, 2, True),  # same last term, longer
        (1, 3, True),  # newer last term, even if shorter
        (2, 2, False),  # same last term, shorter
        (9, 1, False),  # older last term, even if longer
    ],
)
def test_log_up_to_date_check(last_index: int, last_term: int, granted: bool) -> None:
    f = plain(HardState(term=2), (Entry(1, 1), Entry(2, 2), Entry(3, 2)))  # last (3, 2)
    f.step(RequestVote(3, N2, N1, last_index, last_term))
    assert drain(f) == [RequestVoteResponse(3, N1, N2, granted)]
    assert f.term == 3  # a higher term is adopted either way
    assert f.voted_for == (N2 if granted else None)


def test_prevote_records_nothing() -> None:
    f = make(HardState(term=4))
    for _ in range(10):  # past the boot stickiness (10 ticks)
        f.tick()
    assert f.role is Role.FOLLOWER
    assert not drain(f)
    f.step(RequestVote(5, N2, N1, 0, 0, pre_vote=True))
    assert drain(f) == [RequestVoteResponse(5, N1, N2, True, pre_vote=True)]
    assert (f.term, f.voted_for, f.role) == (4, None, Role.FOLLOWER)


def test_stale_term_messages_are_answered_with_our_term() -> None:
    f = plain(HardState(term=5), (Entry(1, 1),))
    f.step(AppendEntries(3, N2, N1, 0, 0))
    f.step(RequestVote(3, N2, N1, 9, 3))
    f.step(RequestVote(4, N3, N1, 9, 3, pre_vote=True))
    f.step(InstallSnapshot(3, N2, N1, Snapshot(9, 3, (N1, N2, N3))))
    f.step(TimeoutNow(3, N2, N1))  # nothing to answer
    f.step(AppendEntriesResponse(3, N2, N1, True, 1))  # nothing to answer
    assert drain(f) == [
        AppendEntriesResponse(5, N1, N2, False, 0, 1),
        RequestVoteResponse(5, N1, N2, False),
        RequestVoteResponse(5, N1, N3, False, pre_vote=True),
        InstallSnapshotResponse(5, N1, N2, 0),
    ]
    assert (f.term, f.role, f.leader_id, f.last_index) == (5, Role.FOLLOWER, None, 1)


def test_an_answer_with_a_higher_term_deposes_the_leader() -> None:
    c = cluster(*ELECTED)
    leader = node(c, "1")
    leader.step(AppendEntriesResponse(7, N2, N1, False, 1, 1))
    assert (leader.role, leader.term, leader.leader_id) == (Role.FOLLOWER, 7, None)


# --- the leader lease ----------------------------------------------------------------------
def test_lease_valid_only_after_noop_commit_and_quorum_ack() -> None:
    c = cluster("add-nodes 3", "tick all 10", "campaign 1", "deliver 2", "deliver 3")
    c.run("deliver 1")  # pre-votes granted: candidate
    c.run("deliver 2")
    c.run("deliver 3")
    c.run("deliver 1")  # votes granted: leader, no-op 1/1 on its way
    leader = node(c, "1")
    assert leader.role is Role.LEADER
    assert not leader.committed_in_term()
    assert not leader.lease_valid()
    c.run("deliver 2")  # 2 stores the no-op; its ack is not delivered yet
    assert not leader.lease_valid()
    c.run("deliver 1")  # 2's ack: the no-op commits and {1, 2} acked the tick it was sent
    assert leader.committed_in_term()
    assert leader.lease_valid()
    assert leader.lease_remaining_ticks() == 6
    for remaining in range(5, 0, -1):  # no more acks delivered: the lease runs down
        c.run("tick 1")
        assert leader.lease_valid()
        assert leader.lease_remaining_ticks() == remaining
    c.run("tick 1")  # 6 ticks after the acknowledged send
    assert not leader.lease_valid()
    assert leader.lease_remaining_ticks() == 0
    assert leader.role is Role.LEADER  # still the leader: only the lease lapsed
    c.run("stabilize")  # acks of the heartbeats sent meanwhile arrive, the last one just sent
    assert leader.lease_valid()
    assert leader.lease_remaining_ticks() == 6


def test_lease_needs_a_quorum_not_one_follower() -> None:
    c = cluster("add-nodes 5", "tick all 10", "campaign 1", "stabilize")
    leader = node(c, "1")
    assert leader.lease_valid()
    for _ in range(2):  # every 2 ticks only 2 answers: 2 of 5 is not a quorum
        c.run("tick 1 2")
        c.run("deliver 2")
        c.run("deliver 1")
        for dst in "345":
            c.run(f"drop from=1 to={dst}")
    c.run("tick 1")
    assert leader.lease_valid()  # 5 ticks since the quorum ack of the no-op (lease: 6)
    c.run("tick 1")
    assert not leader.lease_valid()
    for nid in ("2", "3", "1"):  # the heartbeat of this tick reaches 2 and 3: a quorum again
        c.run(f"deliver {nid}")
    assert leader.lease_valid()


def test_no_lease_without_prevote_and_checkquorum() -> None:
    c = cluster("add-nodes 3 prevote=false", "tick all 10", "campaign 1", "stabilize")
    assert node(c, "1").role is Role.LEADER
    assert not node(c, "1").lease_valid()


def test_lease_false_during_transfer() -> None:
    c = cluster(*ELECTED, "propose 1 x")
    leader = node(c, "1")
    assert leader.lease_valid()
    c.run("transfer 1 2")  # 2 lacks 2/1: the leader catches it up first
    assert leader.role is Role.LEADER
    assert not leader.lease_valid()
    with pytest.raises(ProposalDropped):
        leader.propose(b"y")
    c.run("deliver 2")
    c.run("deliver 1")  # 2 is up to date: TimeoutNow goes out, the lease is off for the term
    assert leader.timeout_now_sent
    assert leader.lead_transferee == N2
    assert leader.role is Role.LEADER
    assert not leader.lease_valid()
    c.run("stabilize")
    assert node(c, "2").role is Role.LEADER
    assert node(c, "2").term == 2


def test_lease_returns_when_a_transfer_is_abandoned_before_timeout_now() -> None:
    c = cluster(*ELECTED, "crash 3", "propose 1 x", "stabilize", "transfer 1 3")
    leader = node(c, "1")
    assert not leader.lease_valid()
    c.run("run-ticks 10")  # 3 never catches up: the transfer times out, TimeoutNow never sent
    assert leader.role is Role.LEADER
    assert leader.lead_transferee is None
    assert leader.lease_valid()


def test_forced_campaign_cannot_overlap_a_valid_lease() -> None:
    # Regression (found by these tests): campaign() ignored the caller's own stickiness, so a
    # follower that had just acked the leader could vote for itself and win while the old
    # leader's lease was still valid. 2 is out of touch with 1 (so it would grant), 3 is not.
    c = cluster(*ELECTED)
    for _ in range(12):  # 2 loses 1 (both ways) and stops being sticky; 3 keeps acking 1
        c.run("tick all")
        c.run("drop from=1 to=2")
        c.run("drop from=2 to=1")
        c.run("stabilize")
    old = node(c, "1")
    assert old.lease_valid()
    assert node(c, "3").ticks_since_leader == 0
    assert node(c, "3").campaign() is False  # 3 acked 1's heartbeat this very tick
    c.run("stabilize drop=(3,1),(1,3),(1,2),(2,1)")
    new = node(c, "3")
    assert not (old.lease_valid() and new.lease_valid()), "two valid leader leases at once"
    assert new.role is Role.FOLLOWER
    assert new.term == 1


# --- errors ------------------------------------------------------------------------------------
def test_propose_on_follower_raises_not_leader_with_hint() -> None:
    fresh = cluster("add-nodes 3")
    with pytest.raises(NotLeader) as exc:
        node(fresh, "2").propose(b"x")
    assert exc.value.leader_hint is None
    c = cluster(*ELECTED)
    with pytest.raises(NotLeader) as exc:
        node(c, "2").propose(b"x")
    assert exc.value.leader_hint == "1"
    assert str(exc.value) == "node 2 is not the leader"
    with pytest.raises(NotLeader):
        node(c, "2").transfer_leadership(N3)


INPUTS: dict[str, Callable[[RaftCore], object]] = {
    # A vote request is never admitted while saving (tick() and a leader's own-term answers
    # are: tests/core/test_save_window.py).
    "step": lambda c: c.step(RequestVote(2, N2, N1, 1, 1)),
    "propose": lambda c: c.propose(b"x"),
    "campaign": lambda c: c.campaign(),
    "transfer_leadership": lambda c: c.transfer_leadership(N2),
    "compact": lambda c: c.compact(1, b""),
    "ready": lambda c: c.ready(),
}


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_input_between_ready_and_advance_raises(name: str) -> None:
    c = cluster(*ELECTED)
    leader = node(c, "1")
    leader.tick()
    leader.tick()  # a heartbeat to send
    rd = leader.ready()
    with pytest.raises(RuntimeError, match="between ready\\(\\) and advance\\(\\)"):
        INPUTS[name](leader)
    leader.advance(rd)
    INPUTS[name](leader)  # accepted once the Ready is advanced


def test_advance_without_ready_raises() -> None:
    f = plain()
    rd = f.ready()
    f.advance(rd)
    with pytest.raises(RuntimeError, match="advance\\(\\) without a matching ready\\(\\)"):
        f.advance(rd)


# --- replicating before the leader's own fsync (ready.py, rule 1's exception) ---------------
def test_leader_counts_its_own_entries_only_once_advanced() -> None:
    solo = RaftCore(RaftConfig(N1, (N1,)), random.Random(0), None, None, ())
    for _ in range(10):
        solo.tick()
    solo.campaign()
    rd = solo.ready()
    assert solo.role is Role.LEADER
    assert [e.index for e in rd.entries] == [1]  # the no-op, not yet durable
    assert rd.committed_entries == ()  # so it does not count, even as a quorum of one
    assert solo.commit_index == 0
    solo.advance(rd)  # the driver reports it persisted
    assert solo.commit_index == 1
    rd = solo.ready()
    assert [e.index for e in rd.committed_entries] == [1]


def test_only_a_leader_ready_without_a_new_vote_may_be_sent_before_the_fsync() -> None:
    c = cluster(*ELECTED)
    leader, follower = node(c, "1"), node(c, "2")
    leader.propose(b"x")
    rd = leader.ready()
    assert rd.entries
    assert rd.may_send_before_persist(leader.term, leader.voted_for)
    leader.advance(rd)
    leader.tick()
    leader.tick()  # a heartbeat only: nothing to fsync, so nothing to overlap
    beat = leader.ready()
    assert beat.messages
    assert not beat.entries
    assert not beat.may_send_before_persist(leader.term, leader.voted_for)
    leader.advance(beat)
    append = next(m for m in rd.messages if m.dst == N2)
    follower.step(append)
    rd = follower.ready()
    assert rd.entries  # a follower's ack depends on its fsync: never early
    assert not rd.may_send_before_persist(follower.term, follower.voted_for)
    follower.advance(rd)
    candidate = node(c, "3")
    candidate.campaign()
    rd = candidate.ready()
    assert not rd.may_send_before_persist(candidate.term, candidate.voted_for)


def test_a_reply_to_an_older_terms_message_acknowledges_nothing() -> None:
    """A stale reply (to a message of an older term) carries send_tick 0; it must not count
    toward the leader lease, which in a process's first L ticks it would have."""
    ids = (NodeId("a"), NodeId("b"), NodeId("c"))
    cores = {
        i: RaftCore(
            RaftConfig(i, ids, election_ticks_min=20, election_ticks_max=40, heartbeat_ticks=10),
            random.Random(i),
        )
        for i in ids
    }

    def ready(i: NodeId) -> list[Any]:
        rd = cores[i].ready()
        cores[i].advance(rd)
        return list(rd.messages)

    a = cores[NodeId("a")]
    a.step(TimeoutNow(0, NodeId("b"), NodeId("a")))  # a transfer at tick 0 skips stickiness
    for m in ready(NodeId("a")):
        cores[m.dst].step(m)
    for i in (NodeId("b"), NodeId("c")):
        for m in ready(i):
            a.step(m)
    noop = [m for m in ready(NodeId("a")) if m.dst == "b"]
    assert a.role is Role.LEADER
    assert a.tick_count == 0
    for m in noop:
        cores[NodeId("b")].step(m)
    for m in ready(NodeId("b")):
        a.step(m)  # b's answer to the no-op sent at tick 0: commits it
    ready(NodeId("a"))
    assert a.committed_in_term()
    # c answers an AppendEntries of an older term: a stale reply at a's current term.
    a.step(AppendEntriesResponse(a.term, NodeId("c"), NodeId("a"), False, 0, 0, send_tick=0))
    assert not a.lease_valid(), "send_tick 0 counted as an acknowledgement"
