"""Membership rules of RaftCore (core/raft.py, core/membership.py; Raft thesis §4.1-4.2 and its
errata): a learner is replicated to but never counted; a promotion needs a caught-up learner;
one change at a time, and only once the leader committed an entry of its term; a removal
shrinks the quorum; a removed leader steps down once the change commits and never campaigns
again; a node with no configuration never campaigns and refuses votes until a configuration
that contains it reaches it; a truncated CONFIG entry takes the older configuration back;
snapshots carry the membership; the leader lease counts only the voters in force.

Cluster rules use the transcript runner's Cluster (transcript.py) command by command, plus
joining nodes (``RaftConfig(voters=())``) added by :func:`add_spare`.
"""

from __future__ import annotations

import random

import pytest

from raftlease.config import RaftConfig
from raftlease.core import (
    AppendEntries,
    Entry,
    EntryKind,
    InstallSnapshot,
    RaftCore,
    RequestVote,
    RequestVoteResponse,
    Snapshot,
    SoftState,
)
from raftlease.core.membership import Membership, MembershipError
from raftlease.types import NodeId, Role

from .transcript import Cluster, Node

N1, N2, N3, N4, N5 = (NodeId(str(i)) for i in range(1, 6))
ELECTED = ("add-nodes 3", "tick all 10", "campaign 1", "stabilize")


def cluster(*commands: str) -> Cluster:
    c = Cluster()
    for cmd in commands:
        c.run(cmd)
    return c


def core(c: Cluster, nid: str) -> RaftCore:
    k = c.nodes[NodeId(nid)].core
    assert k is not None
    return k


def add_spare(c: Cluster, nid: str) -> None:
    """A joining node: no configuration (voters=()) until a leader replicates one."""
    n = Node(NodeId(nid), RaftConfig(NodeId(nid), ()))
    c.nodes[n.id] = n
    c._start(n)
    k = core(c, nid)
    n.soft = SoftState(k.role, k.leader_id, k.term)


def change(c: Cluster, leader: str, new: Membership) -> tuple[int, int]:
    where = core(c, leader).propose_membership(new)
    c._ready(c.nodes[NodeId(leader)])
    return where


def with_learner(c: Cluster, nid: str = "4", *, stabilize: bool = True) -> None:
    """Elected 3-node cluster (leader 1) plus the learner ``nid``, committed."""
    add_spare(c, nid)
    m = core(c, "1").membership
    change(c, "1", m.with_learner(NodeId(nid), f"addr-{nid}"))
    if stabilize:
        c.run("stabilize")


def caught_up(c: Cluster, nid: str) -> None:
    """A heartbeat round, so that the leader heard from ``nid`` just now."""
    c.run("tick 1 2")
    c.run("stabilize")


def role(k: RaftCore) -> Role:
    return k.role


def voters(k: RaftCore) -> tuple[NodeId, ...]:
    return k.voters


def members(k: RaftCore) -> tuple[tuple[NodeId, ...], tuple[NodeId, ...]]:
    return k.membership.voters, k.membership.learners


# --------------------------------------------------------------------------- learners
def test_learner_is_replicated_to_but_not_counted_in_commit() -> None:
    c = cluster(*ELECTED)
    with_learner(c)
    lead, learner = core(c, "1"), core(c, "4")
    assert members(learner) == ((N1, N2, N3), (N4,))
    assert learner.last_index == lead.last_index == lead.commit_index
    # Only the leader and the learner can talk: the learner holds the entry, which must not
    # commit (one voter of three holds it).
    c.run("partition 1,4|2,3")
    c.run("propose 1 x")
    c.run("stabilize")
    c.run("tick 1 4")
    c.run("stabilize")
    assert learner.last_index == lead.last_index
    assert lead.commit_index == lead.last_index - 1
    c.run("heal")
    c.run("stabilize")
    assert lead.commit_index == lead.last_index


def test_learner_never_campaigns() -> None:
    c = cluster(*ELECTED)
    with_learner(c)
    c.run("crash 1")
    for _ in range(60):
        c.run("tick 4")
        assert core(c, "4").role is Role.FOLLOWER
    assert not core(c, "4").campaign()


# --------------------------------------------------------------------------- promotion
def test_promote_refused_while_lagging_allowed_when_caught_up() -> None:
    c = cluster(*ELECTED)
    add_spare(c, "4")
    c.run("partition 1,2,3|4")  # the learner hears nothing for now (messages wait)
    change(c, "1", core(c, "1").membership.with_learner(N4, "a4"))
    c.run("stabilize")
    for i in range(3):
        c.run(f"propose 1 x{i}")
    c.run("stabilize")
    with pytest.raises(MembershipError, match="not caught up") as exc:
        core(c, "1").propose_membership(core(c, "1").membership.promoted(N4))
    assert exc.value.retryable
    # A voter that does not hold the log would count in the quorum at once.
    with pytest.raises(MembershipError, match="must join as a learner"):
        core(c, "1").propose_membership(Membership.of((N1, N2, N3, N5)))
    c.run("heal")
    c.run("stabilize")
    caught_up(c, "4")
    index, _ = change(c, "1", core(c, "1").membership.promoted(N4))
    c.run("stabilize")
    assert core(c, "1").commit_index >= index
    assert members(core(c, "4")) == ((N1, N2, N3, N4), ())
    assert core(c, "4").is_voter


def test_two_changes_in_flight_refused() -> None:
    c = cluster(*ELECTED)
    add_spare(c, "4")
    add_spare(c, "5")
    lead = core(c, "1")
    change(c, "1", lead.membership.with_learner(N4, "a4"))  # not delivered yet
    with pytest.raises(MembershipError, match="one change at a time") as exc:
        lead.propose_membership(lead.membership.with_learner(N5, "a5"))
    assert exc.value.retryable
    with pytest.raises(MembershipError, match="one change at a time"):
        lead.propose_membership(lead.membership.without(N3))
    c.run("stabilize")
    change(c, "1", lead.membership.with_learner(N5, "a5"))  # the first one committed
    c.run("stabilize")
    assert members(lead) == ((N1, N2, N3), (N4, N5))


def test_two_voters_at_once_refused() -> None:
    c = cluster(*ELECTED)
    with pytest.raises(MembershipError, match="one voter at a time"):
        core(c, "1").propose_membership(Membership.of((N1,)))


def test_change_refused_before_the_leaders_noop_commits() -> None:
    c = cluster("add-nodes 3", "tick all 10", "campaign 1")
    c.run("deliver 2")
    c.run("deliver 3")
    c.run("deliver 1")  # pre-votes granted: RequestVotes go out
    c.run("deliver 2")
    c.run("deliver 3")
    c.run("deliver 1")  # votes granted: leader, its no-op on the way
    lead = core(c, "1")
    assert lead.role is Role.LEADER
    assert not lead.committed_in_term()
    with pytest.raises(MembershipError, match="has not yet committed an entry of its term") as e:
        lead.propose_membership(lead.membership.without(N3))
    assert e.value.retryable
    c.run("stabilize")
    assert lead.committed_in_term()
    change(c, "1", lead.membership.without(N3))


# --------------------------------------------------------------------------- removal
def test_removing_a_voter_shrinks_the_quorum() -> None:
    c = cluster(*ELECTED)
    with_learner(c)
    caught_up(c, "4")
    change(c, "1", core(c, "1").membership.promoted(N4))
    c.run("stabilize")
    lead = core(c, "1")
    assert lead.voters == (N1, N2, N3, N4)
    # Four voters: 1 and 2 alone are no majority.
    c.run("partition 1,2|3,4")
    c.run("propose 1 a")
    c.run("stabilize")
    assert lead.commit_index == lead.last_index - 1
    c.run("heal")
    c.run("stabilize")
    index, _ = change(c, "1", lead.membership.without(N4))
    c.run("stabilize")
    assert lead.commit_index >= index
    assert voters(lead) == (N1, N2, N3)
    # Three voters: 1 and 2 are a majority.
    c.run("partition 1,2|3,4")
    c.run("propose 1 b")
    c.run("stabilize")
    assert lead.commit_index == lead.last_index
    assert N4 not in lead.peers  # no longer replicated to (it may never learn of its removal)


def test_removed_leader_steps_down_after_commit_and_never_campaigns() -> None:
    c = cluster(*ELECTED)
    lead = core(c, "1")
    index, _ = change(c, "1", lead.membership.without(N1))
    assert not lead.is_voter
    assert lead.role is Role.LEADER
    c.run("stabilize")
    assert lead.commit_index >= index
    assert role(lead) is Role.LEADER  # manages the cluster until its next tick
    c.run("tick 1")
    assert role(lead) is Role.FOLLOWER
    for _ in range(80):
        c.run("tick all")
        c.run("stabilize")
        assert role(lead) is Role.FOLLOWER
        assert not lead.campaign()
    leaders = [n for n in ("2", "3") if core(c, n).role is Role.LEADER]
    assert len(leaders) == 1
    assert core(c, leaders[0]).voters == (N2, N3)


def test_removed_leader_tells_the_followers_the_commit_before_stepping_down() -> None:
    c = cluster(*ELECTED)
    lead = core(c, "1")
    index, _ = change(c, "1", lead.membership.without(N1))
    c.run("stabilize")
    assert lead.commit_index >= index
    c.run("tick 1")
    c.run("stabilize")
    assert lead.role is Role.FOLLOWER
    assert core(c, "2").commit_index >= index
    assert core(c, "3").commit_index >= index


# --------------------------------------------------------------------------- joining nodes
def _joining(nid: NodeId = N4) -> RaftCore:
    return RaftCore(RaftConfig(nid, ()), random.Random(0))


def _drain(k: RaftCore) -> list[object]:
    out: list[object] = []
    while k.has_ready():
        rd = k.ready()
        out += rd.messages
        k.advance(rd)
    return out


def test_node_without_configuration_never_campaigns_and_refuses_votes() -> None:
    k = _joining()
    for _ in range(100):
        k.tick()
        assert k.role is Role.FOLLOWER
        assert k.term == 0
    assert not k.campaign()
    assert _drain(k) == []
    k.step(RequestVote(5, N2, N4, 0, 0))
    (resp,) = _drain(k)
    assert isinstance(resp, RequestVoteResponse)
    assert not resp.granted
    assert k.voted_for is None
    k.step(RequestVote(6, N2, N4, 0, 0, pre_vote=True))
    (resp,) = _drain(k)
    assert isinstance(resp, RequestVoteResponse)
    assert not resp.granted
    # A leader replicates a configuration that contains it (as a learner).
    cfg = Membership.of((N1, N2, N3), (N4,))
    entries = (Entry(1, 6, EntryKind.NOOP), Entry(2, 6, EntryKind.CONFIG, cfg.encode()))
    k.step(AppendEntries(6, N1, N4, 0, 0, entries, 2, 1))
    _drain(k)
    assert members(k) == ((N1, N2, N3), (N4,))
    assert k.config_index == 2
    for _ in range(40):  # a learner still never campaigns
        k.tick()
        assert k.role is Role.FOLLOWER
    k.step(RequestVote(7, N2, N4, 2, 6))  # out of its stickiness window: it votes now
    (resp,) = _drain(k)
    assert isinstance(resp, RequestVoteResponse)
    assert resp.granted
    assert k.voted_for == N2


def test_uncommitted_config_entry_truncated_on_a_follower_reverts() -> None:
    k = RaftCore(RaftConfig(N3, (N1, N2, N3)), random.Random(0))
    new = Membership.of((N1, N2, N3), (N4,))
    k.step(
        AppendEntries(
            1,
            N1,
            N3,
            0,
            0,
            (Entry(1, 1, EntryKind.NOOP), Entry(2, 1, EntryKind.CONFIG, new.encode())),
            1,
            1,
        )
    )
    _drain(k)
    assert members(k) == ((N1, N2, N3), (N4,))
    assert k.config_index == 2
    # A leader of term 2 never had it: its entry 2 replaces the CONFIG entry.
    k.step(AppendEntries(2, N2, N3, 1, 1, (Entry(2, 2, EntryKind.NOOP),), 1, 1))
    _drain(k)
    assert k.log.term_at(2) == 2
    assert members(k) == ((N1, N2, N3), ())
    assert k.config_index == 0
    # The older CONFIG entry of a longer log is kept when a later one is cut.
    third = new.promoted(N4)
    k.step(
        AppendEntries(
            3,
            N1,
            N3,
            2,
            2,
            (
                Entry(3, 3, EntryKind.CONFIG, new.encode()),
                Entry(4, 3, EntryKind.CONFIG, third.encode()),
            ),
            2,
            1,
        )
    )
    _drain(k)
    assert k.config_index == 4
    assert k.voters == (N1, N2, N3, N4)
    k.step(AppendEntries(4, N2, N3, 3, 3, (Entry(4, 4, EntryKind.NOOP),), 3, 1))
    _drain(k)
    assert k.config_index == 3
    assert members(k) == ((N1, N2, N3), (N4,))


# --------------------------------------------------------------------------- snapshots
def test_snapshot_carries_membership_and_a_restored_node_uses_it() -> None:
    c = cluster(*ELECTED)
    with_learner(c)
    lead = core(c, "1")
    c.run(f"compact 1 {lead.applied_index}")
    snap = lead.log.snapshot
    assert snap is not None
    assert snap.voters == (N1, N2, N3)
    assert snap.learners == (N4,)
    assert dict(snap.addresses)[N4] == "addr-4"
    # A node restarted from a snapshot with no later entries takes the membership from it.
    c.run(f"compact 4 {core(c, '4').applied_index}")
    c.run("crash 4")
    c.run("restart 4")
    assert members(core(c, "4")) == ((N1, N2, N3), (N4,))
    assert core(c, "4").config_index == snap.index
    # A joining node that installs the snapshot adopts it too.
    k = _joining(N5)
    k.step(InstallSnapshot(lead.term, N1, N5, snap, 1))
    _drain(k)
    assert members(k) == ((N1, N2, N3), (N4,))
    assert not k.is_voter
    # And a core built from it.
    r = RaftCore(RaftConfig(N4, ()), random.Random(0), None, snap)
    assert members(r) == ((N1, N2, N3), (N4,))


def test_snapshot_membership_is_the_one_at_its_index() -> None:
    c = cluster(*ELECTED)
    at = core(c, "1").applied_index
    with_learner(c)
    c.run(f"compact 1 {at}")  # below the CONFIG entry: the bootstrap voters, no learner
    snap = core(c, "1").log.snapshot
    assert snap is not None
    assert snap.voters == (N1, N2, N3)
    assert snap.learners == ()
    assert members(core(c, "1")) == ((N1, N2, N3), (N4,))


# --------------------------------------------------------------------------- leader lease
def test_leader_lease_counts_only_the_voters_in_force() -> None:
    c = cluster(*ELECTED)
    with_learner(c)
    lead = core(c, "1")
    c.run("tick 1 2")
    c.run("stabilize")
    assert lead.lease_valid()
    # The voters are cut off; the learner still answers every heartbeat.
    c.run("partition 1,4|2,3")
    for _ in range(lead.lease_ticks + 2):
        c.run("tick 1")
        c.run("stabilize")
    assert lead.progress[N4].ack_tick >= lead.tick_count - lead.config.heartbeat_ticks
    assert not lead.lease_valid()
    assert lead.lease_start_tick() < lead.tick_count - lead.lease_ticks
    # CheckQuorum does not count the learner either: the leader steps down.
    for _ in range(2 * lead.config.election_ticks_min):
        c.run("tick 1")
        c.run("stabilize")
    assert lead.role is Role.FOLLOWER


def test_snapshot_type_roundtrip_membership() -> None:
    snap = Snapshot(3, 1, (N1, N2), b"", (N3,), ((N3, "x"),))
    assert snap.membership == Membership((N1, N2), (N3,), ((N3, "x"),))
