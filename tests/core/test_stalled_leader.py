"""A stalled leader must not date the new leader's first message at a stale tick.

The scenario (docs/safety.md, L2), at the server's timing (E = 20..40 ticks, H = 10, L = 14),
with three cores stepped by hand and lease validity judged in real ticks:

1. A leads term 1 with a valid leader lease.
2. A's loop stalls: it takes no ticks and steps nothing; messages for it queue up.
3. B wins term 2 with C's vote; from then on appends on the B-C link are lost.
4. A resumes. Its driver steps what may go before the missed ticks, catches the ticks up,
   then steps the rest. Under the old ordering (everything first while A is leader), A steps
   B's no-op at its stale tick: it follows B, records "heard from the leader" too early, and
   the replayed ticks end its stickiness at once, while its ack makes B's lease valid.
5. A campaigns for term 3 and C (no leader heard for longer than E) votes for it: A's lease
   is valid while B's still is. Two valid leader leases.

The shipped rule (``RaftCore.steps_before_ticks``: only a leader's own-term answers go
first) keeps A sticky, so it cannot campaign and the invariant holds. The same schedule with
the old rule planted shows the check has teeth.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from raftlease.config import RaftConfig
from raftlease.core import AppendEntries, Message, RaftCore
from raftlease.types import NodeId, Role

IDS = (NodeId("a"), NodeId("b"), NodeId("c"))
Rule = Callable[[RaftCore, Message], bool]


def shipped_rule(core: RaftCore, m: Message) -> bool:
    return core.steps_before_ticks(m)


def old_rule(core: RaftCore, m: Message) -> bool:
    """The ordering before the fix: a leader stepped every queued message first."""
    return core.role is Role.LEADER


class Cores:
    """Three cores, a FIFO network, stalls counted in missed ticks, and a lease checker that
    judges validity in real ticks (a stalled node's missed ticks have passed too)."""

    def __init__(self, seed: int) -> None:
        self.cores = {
            i: RaftCore(
                RaftConfig(
                    node_id=i,
                    voters=IDS,
                    election_ticks_min=20,
                    election_ticks_max=40,
                    heartbeat_ticks=10,
                ),
                random.Random(f"{seed}/{i}"),
            )
            for i in IDS
        }
        self.queue: list[Message] = []
        self.inbox: dict[NodeId, list[Message]] = {i: [] for i in IDS}
        self.missed: dict[NodeId, int] = dict.fromkeys(IDS, 0)
        self.stalled: set[NodeId] = set()
        self.lost: Callable[[Message], bool] = lambda m: False
        self.overlaps: list[tuple[NodeId, ...]] = []

    def valid(self, i: NodeId) -> bool:
        core = self.cores[i]
        return core.lease_valid() and self.missed[i] < core.lease_remaining_ticks()

    def check(self) -> None:
        holders = tuple(i for i in IDS if self.valid(i))
        if len(holders) > 1:
            self.overlaps.append(holders)

    def flush(self, i: NodeId) -> None:
        core = self.cores[i]
        while core.has_ready():
            rd = core.ready()
            self.queue.extend(rd.messages)
            core.advance(rd)
        self.check()

    def tick(self, *ids: NodeId) -> None:
        for i in ids or IDS:
            if i in self.stalled:
                self.missed[i] += 1
            else:
                self.cores[i].tick()
                self.flush(i)
        self.check()

    def step(self, m: Message) -> None:
        if self.lost(m):
            return
        if m.dst in self.stalled:
            self.inbox[m.dst].append(m)
            return
        self.cores[m.dst].step(m)
        self.flush(m.dst)

    def deliver(self, until: Callable[[], bool] = lambda: False) -> None:
        while self.queue and not until():
            self.step(self.queue.pop(0))

    def resume(self, i: NodeId, rule: Rule) -> None:
        """What the node's loop does after a stall, as one input (nothing observes between)."""
        core = self.cores[i]
        self.stalled.discard(i)
        queued, self.inbox[i] = self.inbox[i], []
        later = []
        for m in queued:
            if rule(core, m):
                core.step(m)
            else:
                later.append(m)
        for _ in range(self.missed[i]):
            core.tick()
        self.missed[i] = 0
        for m in later:
            core.step(m)
        self.flush(i)

    def leader(self) -> NodeId | None:
        leaders = [i for i in IDS if self.cores[i].role is Role.LEADER]
        return leaders[0] if len(leaders) == 1 else None


def play(rule: Rule, seed: int) -> Cores:
    c = Cores(seed)
    # 1. A stable leader with a valid lease.
    for _ in range(200):
        c.tick()
        c.deliver()
        a = c.leader()
        if a is not None and c.valid(a):
            break
    else:
        raise AssertionError("no leader")
    for _ in range(30):
        c.tick()
        c.deliver()
    a = c.leader()
    assert a is not None
    assert c.valid(a)
    b_or_c = [i for i in IDS if i != a]
    # 2. A stalls. 3. The other two elect a leader among themselves.
    c.stalled.add(a)
    new: NodeId | None = None
    for _ in range(200):
        c.tick()
        c.deliver(until=lambda: any(c.cores[i].role is Role.LEADER for i in b_or_c))
        new = next((i for i in b_or_c if c.cores[i].role is Role.LEADER), None)
        if new is not None:
            break
    assert new is not None, "no new leader while A stalled"
    b = new
    cc = next(i for i in b_or_c if i != b)
    assert c.cores[b].term == 2
    # ... and appends on the B-C link are lost from now on (the no-op to C included).
    c.lost = lambda m: isinstance(m, AppendEntries) and {m.src, m.dst} == {b, cc}
    c.deliver()
    assert c.missed[a] >= 20, "the stall outlasted the minimum election timeout"
    # 4. A resumes; its ack of B's no-op reaches B.
    c.resume(a, rule)
    c.deliver()
    # 5. A campaigns the moment its timer or stickiness allows; C has heard no leader for
    # longer than E. Messages between A and B are lost from here on.
    lost_before = c.lost
    c.lost = lambda m: lost_before(m) or {m.src, m.dst} == {a, b}
    c.cores[a].campaign()
    c.flush(a)
    for _ in range(20):
        c.deliver()
        c.tick()
    return c


@pytest.mark.parametrize("seed", range(8))
def test_stalled_leader_steps_the_new_leaders_message_after_catching_up(seed: int) -> None:
    c = play(shipped_rule, seed)
    assert c.overlaps == [], f"two valid leader leases at once: {c.overlaps[:3]}"


def test_old_ordering_gives_two_leader_leases() -> None:
    """Teeth: the same schedule with the old ordering planted breaks leader-lease exclusion.
    (In a seed where C's own timer fires first, C wins term 3 after B's lease ran out.)"""
    broken = [seed for seed in range(8) if play(old_rule, seed).overlaps]
    assert len(broken) >= 6, f"the old ordering gave two leader leases only in seeds {broken}"


def test_only_own_term_answers_go_first() -> None:
    c = Cores(0)
    for _ in range(200):
        c.tick()
        c.deliver()
        if c.leader() is not None and c.valid(c.leader() or IDS[0]):
            break
    leader = c.leader()
    assert leader is not None
    core = c.cores[leader]
    follower = next(i for i in IDS if i != leader)
    core.tick()  # ... until it sends heartbeats; collect one answer of each kind
    for _ in range(10):
        c.tick(leader)
    answers = [m for m in c.queue if m.src == leader]
    assert answers, "the leader sent heartbeats"
    c.cores[follower].step(answers[0] if answers[0].dst == follower else answers[1])
    rd = c.cores[follower].ready()
    ack = rd.messages[0]
    c.cores[follower].advance(rd)
    assert core.steps_before_ticks(ack)
    newer = AppendEntries(core.term + 1, follower, leader, 0, 0)
    assert not core.steps_before_ticks(newer)
    assert not c.cores[follower].steps_before_ticks(ack)  # only a leader
