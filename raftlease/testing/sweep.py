"""Seed sweep: many random fault schedules over SimCluster, each checked after every event.

    python -m raftlease.testing.sweep --seeds 300            # seeds 0..299
    python -m raftlease.testing.sweep --seeds 100 --start 5000
    python -m raftlease.testing.sweep --seed 17 --verbose    # replay one seed with a transcript
    python -m raftlease.testing.sweep --seeds 200 --coverage # + branch coverage of the core

Swarm testing (docs/simulator.md): each seed draws its OWN fault mix (:func:`swarm_mix`):
every fault dimension (partitions of every shape including one-way isolations of the leader,
crashes with downtimes from 0-2 ms to 1.5 s, crash points inside the Ready loop of any node
and at the moments that matter, SIGSTOP-like pauses, lossy / duplicating / slow links with
per-message-type and one-link loss and delays beyond an election timeout, leadership
transfers, clock skew within the drift bound, fault-free windows with a liveness bound, slow
client links, flow-control and timing variants) is switched on or off with its own
intensity, so some seeds are brutal in one dimension and quiet in the rest. ``FaultMix.drew``
(and ``SeedResult.drew``, and ``--verbose``) say what a seed drew; ``SeedResult.injected``
what it injected. ``--mix random`` runs the older generator (:func:`random_mix`), and
``--mix module:NAME`` a fixed FaultMix (the hand-tuned ones in tests/sim/test_planted.py).
A run ends with everything healed and a liveness check.

The lease workload is on: 2-4 simulated clients (clients.py) acquire (some waiting in the
queue), renew, release, hang and crash over lossy client links that faults also cut, and
write to a fenced resource; the lease checkers (mutual exclusion, fencing) run with the Raft
ones after every event, and after the heal every lease nobody renews must expire in time.
``--no-leases`` turns the clients off. The ``leases:`` line before the last one sums what
the workload did, and counts two server faults that break no safety rule (INTERNAL answers
to retried queued acquires, and "ghost" handovers to waiters whose client went away: see
tests/sim/test_server_bugs.py).

The last line reads ``N seeds passed, M failed`` with the rate and the longest post-heal
election. Exit status 1 if any seed failed; each failure prints its violation and a replay
command.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import importlib.util
import json
import random
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raftlease.config import RaftConfig
from raftlease.core.raft import RaftCore
from raftlease.testing.checkers import LeaseStats, SafetyViolation
from raftlease.testing.clients import ClientParams
from raftlease.testing.network import LinkParams
from raftlease.testing.sim import PARTITION_SHAPES, CoreFactory, LivenessResult, SimCluster
from raftlease.types import NodeId

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence
    from types import FrameType

__all__ = [
    "CLIENT_CUTS",
    "SWARM_SHAPES",
    "SWEEP_SHAPES",
    "FaultMix",
    "SeedResult",
    "main",
    "random_mix",
    "run_seed",
    "schedule_faults",
    "swarm_mix",
    "watchdog",
]

MS = 1_000
_DEFAULT_DRIFT = RaftConfig(node_id=NodeId("n1"), voters=(NodeId("n1"),)).max_drift
# Partition shapes of the sweep: the sim's named shapes, plus an isolated leader that keeps
# some clients on its side (they reach only it).
SWEEP_SHAPES = (*PARTITION_SHAPES, "isolate-leader-clients")
# The swarm's shapes add one-way isolations of the leader (it cannot send, or cannot hear).
SWARM_SHAPES = (*SWEEP_SHAPES, "mute-leader", "deaf-leader")
# How a client <-> node cut is shaped: the client reaches only the leader, reaches everyone
# but the leader, reaches nobody, or misses a random subset of the nodes.
CLIENT_CUTS = ("leader-only", "not-leader", "all", "some")
_TIMINGS: tuple[dict[str, Any], ...] = (
    {"election_ticks_min": 7, "election_ticks_max": 10, "heartbeat_ticks": 2},  # tightest
    {"election_ticks_min": 15, "election_ticks_max": 30, "heartbeat_ticks": 3},
    {"election_ticks_min": 10, "election_ticks_max": 12, "heartbeat_ticks": 1},  # split votes
    {"max_drift": 0.05},
)


@dataclass(frozen=True, slots=True)
class FaultMix:
    """What one seed does. Weights pick the next fault; 0 disables a kind.

    ``gap_us`` is the (min, max) pause between fault injections; ``shapes`` the partition
    shapes allowed; ``crash_down_us`` how long a crashed node stays down. ``clients`` is the
    lease workload (None, the default here: no clients; :func:`random_mix`, i.e. the sweep,
    always has one); ``w_client`` weighs cuts of client <-> node links (``client_cuts``
    shapes), which ``partition_us`` also times.
    """

    n: int = 3
    duration_us: int = 2_500 * MS
    config: dict[str, Any] = field(default_factory=dict)
    link: LinkParams = field(default_factory=LinkParams)
    gap_us: tuple[int, int] = (50 * MS, 400 * MS)
    w_partition: float = 1.0
    w_crash: float = 1.0
    w_flaky: float = 1.0
    w_transfer: float = 0.3
    w_pause: float = 0.0
    shapes: tuple[str, ...] = SWEEP_SHAPES
    partition_us: tuple[int, int] = (50 * MS, 1_200 * MS)
    crash_down_us: tuple[int, int] = (0, 400 * MS)
    crash_targets: tuple[str, ...] = ("one", "leader", "majority", "all")
    pause_us: tuple[int, int] = (20 * MS, 1_000 * MS)
    flaky_us: tuple[int, int] = (100 * MS, 1_000 * MS)
    flaky_drop: tuple[float, float] = (0.05, 0.4)
    flaky_dup: tuple[float, float] = (0.0, 0.2)
    flaky_delay_max_us: tuple[int, int] = (3 * MS, 60 * MS)
    propose_every_us: tuple[int, int] | None = (5 * MS, 40 * MS)
    compact_every_us: tuple[int, int] | None = (100 * MS, 600 * MS)
    rates: tuple[float, ...] | None = None
    failpoints: dict[str, float] = field(default_factory=dict)
    failpoint_down_us: tuple[int, int] = (0, 200 * MS)
    clients: ClientParams | None = None
    client_link: LinkParams | None = None
    w_client: float = 0.5
    client_cuts: tuple[str, ...] = CLIENT_CUTS
    # Swarm dimensions (all off by default, so the hand-tuned mixes behave as before).
    w_skew: float = 0.0  # a node's clock rate changes, within the drift bound
    w_quiet: float = 0.0  # a fault-free window (liveness: a leader lease within a bound)
    quiet_us: tuple[int, int] = (500 * MS, 1_000 * MS)
    flaky_kinds: tuple[frozenset[str], ...] = (frozenset(),)  # per-message-type loss
    flaky_one_link: float = 0.0  # probability a flaky episode hits one directed link only
    pause_leader: float = 0.7  # probability a pause hits the leader (if any)
    # (src index, dst index, params): links that keep these params all run long (a link
    # reset restores them): e.g. one link that loses every AppendEntries.
    chronic: tuple[tuple[int, int, LinkParams], ...] = ()
    # Membership changes (SimCluster's operator, sim/members.py): ``spares`` nodes beyond the
    # ``n`` bootstrap voters start empty; every ``member_every_us`` the operator asks the
    # leader for the next single-server change (add a spare as a learner, promote it, remove
    # a voter, the leader with probability ``member_remove_leader``).
    spares: int = 0
    member_every_us: tuple[int, int] | None = None
    member_remove_leader: float = 0.4
    member_retire: float = 0.3
    member_burst: float = 0.3
    member_eager: float = 0.3
    # Slow disks (node.py's save window): for ``slow_disk_for_us`` every save of one node
    # (the leader with probability ``slow_disk_leader``), or of every node at once with
    # probability ``slow_disk_shared`` (one disk under all of them), takes ``slow_save_us``.
    w_slow_disk: float = 0.0
    slow_disk_for_us: tuple[int, int] = (100 * MS, 1_500 * MS)
    slow_save_us: tuple[int, int] = (20 * MS, 300 * MS)
    slow_disk_shared: float = 0.5
    slow_disk_leader: float = 0.5
    # What the swarm drew for this seed, one "dimension: intensities" item each.
    drew: tuple[str, ...] = ()

    def describe(self) -> str:
        kinds = [
            name
            for name, w in (
                ("partition", self.w_partition),
                ("crash", self.w_crash),
                ("flaky", self.w_flaky),
                ("transfer", self.w_transfer),
                ("pause", self.w_pause),
                ("client-cut", self.w_client if self.clients is not None else 0.0),
                ("skew", self.w_skew),
                ("quiet", self.w_quiet),
                ("slow-disk", self.w_slow_disk),
            )
            if w > 0
        ]
        if self.spares and self.member_every_us is not None:
            kinds.append("members")
        if self.failpoints:
            kinds.append("failpoints")
        cfg = ",".join(f"{k}={v}" for k, v in sorted(self.config.items()))
        c = self.clients
        leases = "clients=0"
        if c is not None:
            leases = f"clients={c.count} names={len(c.names)}"
            if c.rates is not None:
                leases += f" client-rates={[round(r, 4) for r in c.rates]}"
            if c.bug is not None:
                leases += f" client-bug={c.bug}"
        spares = f"+{self.spares}" if self.spares else ""
        return (
            f"n={self.n}{spares} {self.duration_us // MS}ms faults={'+'.join(kinds) or 'none'} "
            f"link={self.link.delay_min_us}-{self.link.delay_max_us}us {leases} {cfg}"
        ).strip()


def random_mix(rng: random.Random) -> FaultMix:
    """A random fault mix, as the sweep uses (every choice from ``rng``)."""
    n = rng.choice((3, 3, 5, 5, 5))
    config: dict[str, Any] = {}
    if rng.random() < 0.4:
        config["max_entries_per_append"] = rng.choice((1, 2, 4))
    if rng.random() < 0.3:
        config["max_inflight"] = rng.choice((1, 2, 8))
    if rng.random() < 0.3:  # timing other than the defaults (10..20 ticks, heartbeat 2, 1 %)
        config.update(rng.choice(_TIMINGS))
    slow = rng.random() < 0.25
    link = LinkParams(
        delay_min_us=rng.choice((100, 500, 1_000)),
        delay_max_us=rng.choice((5_000, 15_000)) if slow else rng.choice((1_000, 3_000)),
    )

    def w() -> float:
        return rng.choice((0.0, 0.5, 1.0, 2.0))

    weights = [w(), w(), w(), rng.choice((0.0, 0.2, 0.5))]
    if not any(weights[:3]):
        weights[rng.randrange(3)] = 1.0
    failpoints: dict[str, float] = {}
    if rng.random() < 0.3:  # crashes inside the Ready loop (fault matrix row 3)
        failpoints = {
            "leader:before-send": rng.choice((0.002, 0.01)),
            "new-leader:before-send": rng.choice((0.1, 0.3)),
            "commit:before-send": rng.choice((0.01, 0.05)),
            "after-send": rng.choice((0.0, 0.001)),
            "after-apply": rng.choice((0.0, 0.001)),
        }
        # A leader that replicated before its own fsync dies before that fsync. Tied to an
        # earlier choice instead of a new draw, so every seed replays as in earlier versions.
        failpoints["leader:before-save"] = 5 * failpoints["leader:before-send"]
    w_pause = rng.choice((0.0, 0.0, 0.5, 1.0))  # SIGSTOP / SIGCONT (fault matrix row 9)
    rates = None
    drift = float(config.get("max_drift", _DEFAULT_DRIFT))
    if rng.random() < 0.3:  # every clock at an edge of the drift bound
        rates = tuple(1.0 + rng.choice((-drift, drift)) for _ in range(n))
    # The lease workload (drawn last, so the choices above are those of earlier versions).
    count = rng.randint(2, 4)
    client_rates = None
    if rng.random() < 0.3:  # client clocks at the edges of the drift bound too
        client_rates = tuple(1.0 + rng.choice((-drift, drift)) for _ in range(count))
    clients = ClientParams(
        count=count,
        names=rng.choice((("lock-a",), ("lock-a", "lock-b"))),
        rates=client_rates,
        p_late_write=rng.choice((0.0, 0.05, 0.2)),
    )
    return FaultMix(
        n=n,
        duration_us=rng.randint(2_000, 5_000) * MS,
        config=config,
        link=link,
        gap_us=(rng.choice((20, 50, 100)) * MS, rng.choice((200, 400, 800)) * MS),
        w_partition=weights[0],
        w_crash=weights[1],
        w_flaky=weights[2],
        w_transfer=weights[3],
        w_pause=w_pause,
        compact_every_us=rng.choice((None, (50 * MS, 300 * MS), (200 * MS, 800 * MS))),
        failpoints=failpoints,
        rates=rates,
        clients=clients,
        w_client=rng.choice((0.0, 0.3, 0.7)),
    )


# Message-kind sets a flaky link may lose (besides everything): per-message-type loss.
_KINDS: tuple[frozenset[str], ...] = (
    frozenset({"AppendEntries"}),
    frozenset({"AppendEntriesResponse"}),
    frozenset({"AppendEntries", "InstallSnapshot"}),
    frozenset({"RequestVote", "RequestVoteResponse"}),
    frozenset({"RequestVoteResponse"}),
    frozenset({"InstallSnapshot", "InstallSnapshotResponse"}),
)
# Crash points the swarm may arm, by family: (failpoint, base probability per Ready). Rare
# scopes get high probabilities. A seed arms one or more families, each scaled by its own
# intensity: crashes at every Ready boundary of any node; around a leader's replication
# (new leaders, commits: the Raft figure-8 moves); right after a vote is persisted; while
# entries some follower acknowledged are not committed; during a snapshot install.
_FAILPOINT_FAMILIES: dict[str, tuple[tuple[str, float], ...]] = {
    "ready": (
        ("before-save", 0.01),
        ("before-send", 0.01),
        ("after-send", 0.005),
        ("after-apply", 0.005),
    ),
    "follower": (
        ("follower:before-save", 0.02),
        ("follower:before-send", 0.02),
        ("follower:after-send", 0.01),
    ),
    "leader": (
        ("leader:before-send", 0.03),
        ("leader:before-save", 0.03),
        ("new-leader:before-send", 0.5),
        ("commit:before-send", 0.2),
    ),
    "vote": (("vote:before-save", 0.3), ("vote:before-send", 0.3), ("vote:after-send", 0.3)),
    "acked": (("acked:before-send", 0.1), ("acked:after-send", 0.1)),
    "snapshot": (
        ("snapshot:before-save", 0.5),
        ("snapshot:before-send", 0.5),
        ("snapshot:after-apply", 0.5),
    ),
}
_DOWN_US = ((0, 2 * MS), (0, 20 * MS), (0, 150 * MS), (0, 400 * MS), (300 * MS, 1_500 * MS))


def _span(rng: random.Random, choices: Sequence[tuple[int, int]]) -> tuple[int, int]:
    return rng.choice(choices)


def _ms(span: tuple[int, int]) -> str:
    return f"{span[0] // MS}-{span[1] // MS}ms"


def swarm_mix(rng: random.Random) -> FaultMix:
    """Swarm testing: this seed's OWN mix. Every fault dimension is switched on or off, and
    given its own intensity, by the seed, so some seeds are brutal in one dimension and
    quiet in the others (Groce et al., "Swarm testing", ISSTA 2012). Clock rates stay within
    the drift bound (beyond it, safety breaks by design: dedicated tests only).
    ``FaultMix.drew`` lists what was drawn."""
    drew: list[str] = []
    n = rng.choice((3, 3, 5, 5, 5))
    config: dict[str, Any] = {}
    # Flow control: small batches make a backlog cross the network in many appends (an old
    # term's entries reach a majority before the new leader's no-op does: Raft figure 8).
    if rng.random() < 0.7:
        config["max_entries_per_append"] = rng.choice((1, 2, 2, 4, 16))
    if rng.random() < 0.3:
        config["max_inflight"] = rng.choice((1, 2, 8))
    if rng.random() < 0.35:
        config.update(rng.choice(_TIMINGS))
    if config:
        drew.append("config " + ",".join(f"{k}={v}" for k, v in sorted(config.items())))
    drift = float(config.get("max_drift", _DEFAULT_DRIFT))
    e_max = int(config.get("election_ticks_max", 20))
    link = rng.choice(
        (
            LinkParams(delay_min_us=100, delay_max_us=1_000),
            LinkParams(delay_min_us=500, delay_max_us=3_000),
            LinkParams(delay_min_us=1_000, delay_max_us=15_000),
            LinkParams(delay_min_us=0, delay_max_us=30_000),  # heavy reordering
        )
    )
    # Peer links keep order (one stream per peer, as the gRPC transport) unless the seed
    # draws reordering: messages overtake each other on a link.
    reorder = rng.random() < 0.3
    link = dataclasses.replace(link, fifo=not reorder)
    drew.append(
        f"link {link.delay_min_us}-{link.delay_max_us}us {'reordering' if reorder else 'fifo'}"
    )

    def weight(p_on: float) -> float:
        return rng.choice((0.5, 1.0, 2.0, 4.0)) if rng.random() < p_on else 0.0

    w_partition = weight(0.5)
    shapes = tuple(x for x in SWARM_SHAPES if rng.random() < 0.6) or (rng.choice(SWARM_SHAPES),)
    partition_us = _span(rng, ((20 * MS, 200 * MS), (50 * MS, 1_200 * MS), (500 * MS, 2_500 * MS)))
    if w_partition:
        drew.append(f"partition w={w_partition} {'/'.join(shapes)} {_ms(partition_us)}")
    w_crash = weight(0.5)
    targets = ("one", "leader", "majority", "all")
    crash_targets = tuple(x for x in targets if rng.random() < 0.6) or ("leader",)
    crash_down_us = _span(rng, _DOWN_US)
    if w_crash:
        drew.append(f"crash w={w_crash} {'/'.join(crash_targets)} down {_ms(crash_down_us)}")
    w_flaky = weight(0.5)
    flaky_drop = rng.choice(((0.05, 0.3), (0.3, 0.7), (0.7, 1.0)))
    flaky_dup = rng.choice(((0.0, 0.0), (0.0, 0.05), (0.05, 0.15)))
    # Delays up to several election timeouts: a stale RequestVote or ack arrives very late.
    flaky_delay = rng.choice(
        ((3 * MS, 60 * MS), (20 * MS, 150 * MS), (100 * MS, 3 * e_max * 10 * MS))
    )
    flaky_us = _span(rng, ((50 * MS, 300 * MS), (100 * MS, 1_000 * MS), (500 * MS, 2_500 * MS)))
    flaky_kinds: tuple[frozenset[str], ...] = (frozenset(),)
    if rng.random() < 0.5:
        flaky_kinds = (rng.choice(_KINDS),)
    flaky_one_link = rng.choice((0.0, 0.5, 1.0))
    if w_flaky:
        kinds = "+".join(sorted(flaky_kinds[0])) or "all"
        drew.append(
            f"flaky w={w_flaky} drop {flaky_drop[0]}-{flaky_drop[1]} of {kinds} dup "
            f"{flaky_dup[0]}-{flaky_dup[1]} delay<={_ms(flaky_delay)} for {_ms(flaky_us)} "
            f"one-link {flaky_one_link}"
        )
    w_pause = weight(0.4)
    pause_us = _span(rng, ((5 * MS, 50 * MS), (20 * MS, 300 * MS), (100 * MS, 1_500 * MS)))
    pause_leader = rng.choice((0.0, 0.5, 0.9))
    if w_pause:
        drew.append(f"pause w={w_pause} {_ms(pause_us)} leader {pause_leader}")
    w_transfer = rng.choice((0.0, 0.0, 0.2, 0.5, 1.0))
    if w_transfer:
        drew.append(f"transfer w={w_transfer}")
    w_skew = weight(0.3)
    if w_skew:
        drew.append(f"skew w={w_skew} (within +-{drift})")
    failpoints: dict[str, float] = {}
    failpoint_down_us = _span(rng, _DOWN_US[:4])
    if rng.random() < 0.6:
        families = [f for f in _FAILPOINT_FAMILIES if rng.random() < 0.4]
        if not families:
            families = [rng.choice(list(_FAILPOINT_FAMILIES))]
        for fam in families:
            scale = rng.choice((0.5, 1.0, 2.0, 3.0))
            for name, p in _FAILPOINT_FAMILIES[fam]:
                failpoints[name] = min(1.0, p * scale)
        drew.append(
            "failpoints "
            + " ".join(f"{k}={v:.3g}" for k, v in sorted(failpoints.items()))
            + f" down {_ms(failpoint_down_us)}"
        )
    rates = None
    if rng.random() < 0.4:  # clocks at the edges of (or anywhere within) the drift bound
        edge = rng.random() < 0.5
        rates = tuple(
            1.0 + (rng.choice((-drift, drift)) if edge else rng.uniform(-drift, drift))
            for _ in range(n)
        )
        drew.append(f"rates {'edges' if edge else 'within'} +-{drift}")
    w_quiet = rng.choice((0.0, 0.3, 0.6))
    if w_quiet:
        drew.append(f"quiet w={w_quiet}")
    if not (w_partition or w_crash or w_flaky or w_pause or failpoints):
        w_crash = 1.0  # every seed has at least one fault kind
        drew.append(f"crash w=1.0 {'/'.join(crash_targets)} down {_ms(crash_down_us)}")
    gap_us = (rng.choice((5, 20, 50, 100)) * MS, rng.choice((100, 200, 400, 800)) * MS)
    drew.append(f"gap {_ms(gap_us)}")
    propose_every_us = rng.choice(((1 * MS, 5 * MS), (5 * MS, 40 * MS), (20 * MS, 200 * MS)))
    compact_every_us = rng.choice(
        (None, (20 * MS, 100 * MS), (50 * MS, 300 * MS), (200 * MS, 800 * MS))
    )
    drew.append(
        f"propose {_ms(propose_every_us)} compact "
        f"{'never' if compact_every_us is None else _ms(compact_every_us)}"
    )
    count = rng.randint(2, 4)
    client_rates = None
    if rng.random() < 0.3:
        client_rates = tuple(1.0 + rng.choice((-drift, drift)) for _ in range(count))
    clients = ClientParams(
        count=count,
        names=rng.choice((("lock-a",), ("lock-a", "lock-b"))),
        rates=client_rates,
        p_late_write=rng.choice((0.0, 0.05, 0.2)),
    )
    w_client = rng.choice((0.0, 0.3, 0.7))
    if w_client:
        drew.append(f"client-cut w={w_client}")
    client_link = None
    if rng.random() < 0.5:  # slow client links: answers arrive long after the server acted
        client_link = LinkParams(
            delay_min_us=rng.choice((0, 1 * MS)), delay_max_us=rng.choice((30, 60, 150)) * MS
        )
        drew.append(f"client-link {client_link.delay_min_us}-{client_link.delay_max_us}us")
    chronic: tuple[tuple[int, int, LinkParams], ...] = ()
    if rng.random() < 0.25:  # one directed link loses one message kind all run long
        a = rng.randrange(n)
        b = rng.choice([x for x in range(n) if x != a])
        lost = rng.choice(_KINDS)
        params = dataclasses.replace(link, drop=rng.choice((0.5, 0.9, 1.0)), drop_kinds=lost)
        chronic = ((a, b, params),)
        drew.append(f"chronic n{a + 1}->n{b + 1} drops {params.drop} of {'+'.join(sorted(lost))}")
    member = _membership_draw(rng, n)
    if member:
        drew.append(
            f"members +{member['spares']} spares every {_ms(member['member_every_us'])} "
            f"remove-leader {member['member_remove_leader']} retire {member['member_retire']} "
            f"burst {member['member_burst']} eager {member['member_eager']}"
        )
    duration_us = rng.randint(2_000, 5_000) * MS
    # Drawn after everything else, so that every other choice is the one earlier versions
    # drew for the same seed.
    w_slow_disk = weight(0.35)
    slow_disk_for_us = _span(rng, ((50 * MS, 300 * MS), (200 * MS, 1_500 * MS)))
    slow_save_us = _span(rng, ((1 * MS, 20 * MS), (20 * MS, 300 * MS), (100 * MS, 2_000 * MS)))
    slow_disk_shared = rng.choice((0.0, 0.5, 1.0))
    slow_disk_leader = rng.choice((0.0, 0.5, 0.9))
    if w_slow_disk:
        drew.append(
            f"slow-disk w={w_slow_disk} for {_ms(slow_disk_for_us)} saves {_ms(slow_save_us)} "
            f"shared {slow_disk_shared} leader {slow_disk_leader}"
        )
    return FaultMix(
        n=n,
        duration_us=duration_us,
        config=config,
        link=link,
        gap_us=gap_us,
        w_slow_disk=w_slow_disk,
        slow_disk_for_us=slow_disk_for_us,
        slow_save_us=slow_save_us,
        slow_disk_shared=slow_disk_shared,
        slow_disk_leader=slow_disk_leader,
        w_partition=w_partition,
        w_crash=w_crash,
        w_flaky=w_flaky,
        w_transfer=w_transfer,
        w_pause=w_pause,
        shapes=shapes,
        partition_us=partition_us,
        crash_down_us=crash_down_us,
        crash_targets=crash_targets,
        pause_us=pause_us,
        flaky_us=flaky_us,
        flaky_drop=flaky_drop,
        flaky_dup=flaky_dup,
        flaky_delay_max_us=flaky_delay,
        propose_every_us=propose_every_us,
        compact_every_us=compact_every_us,
        rates=rates,
        failpoints=failpoints,
        failpoint_down_us=failpoint_down_us,
        clients=clients,
        w_client=w_client,
        w_skew=w_skew,
        w_quiet=w_quiet,
        flaky_kinds=flaky_kinds,
        flaky_one_link=flaky_one_link,
        pause_leader=pause_leader,
        client_link=client_link,
        chronic=chronic,
        drew=tuple(drew),
        **member,
    )


#: Fraction of swarm seeds that run membership changes.
MEMBERSHIP_SHARE = 0.5


def _membership_draw(rng: random.Random, n: int) -> dict[str, Any]:
    """The membership dimension of a swarm seed, from a side stream seeded by ``rng``'s state
    WITHOUT drawing from it: every other choice of the seed (and the simulator's seed, drawn
    after the mix) stays what it was before membership changes existed, so a seed without
    them replays exactly as it did."""
    side = random.Random(repr(rng.getstate()[1][:8]))
    if side.random() >= MEMBERSHIP_SHARE:
        return {}
    return {
        "spares": side.choice((1, 2, 2)),
        "member_every_us": side.choice(((20 * MS, 150 * MS), (50 * MS, 400 * MS))),
        "member_remove_leader": side.choice((0.0, 0.4, 0.8)),
        "member_retire": side.choice((0.0, 0.5)),
        "member_burst": side.choice((0.0, 0.3, 0.8)),
        "member_eager": side.choice((0.0, 0.3, 0.8)),
    }


# Mix generators by name (``--mix``): the default swarm, and the sweep's older random mix.
MIXES: dict[str, Callable[[random.Random], FaultMix]] = {"swarm": swarm_mix, "random": random_mix}


def schedule_faults(
    sim: SimCluster, mix: FaultMix, rng: random.Random, log: Callable[[str], None]
) -> None:
    """Put the mix's faults on the sim's event heap, up to ``mix.duration_us``."""
    kinds = [
        "partition",
        "crash",
        "flaky",
        "transfer",
        "pause",
        "client-cut",
        "skew",
        "quiet",
        "slow-disk",  # last, weight 0 in older mixes: their seeds replay as before
    ]
    w_client = mix.w_client if sim.clients else 0.0
    weights = [
        mix.w_partition,
        mix.w_crash,
        mix.w_flaky,
        mix.w_transfer,
        mix.w_pause,
        w_client,
        mix.w_skew,
        mix.w_quiet,
        mix.w_slow_disk,
    ]
    if not any(weights):
        return
    injected = sim.injected
    state = {"partition_epoch": 0, "flaky_epoch": 0, "client_epoch": 0}

    def end_client_cut(epoch: int) -> Callable[[], None]:
        def fire() -> None:
            if state["client_epoch"] == epoch:
                sim.heal_clients()

        return fire

    def end_partition(epoch: int) -> Callable[[], None]:
        def fire() -> None:
            if state["partition_epoch"] == epoch:
                sim.heal()

        return fire

    def end_flaky(epoch: int) -> Callable[[], None]:
        def fire() -> None:
            if state["flaky_epoch"] == epoch:
                sim.reset_links()
                sim.reset_client_links()

        return fire

    def inject() -> None:
        kind = rng.choices(kinds, weights)[0]
        if sim.now < sim.quiet_until:
            return  # a fault-free window
        injected[kind] = injected.get(kind, 0) + 1
        if kind == "partition":
            sim.heal()
            state["partition_epoch"] += 1
            what = sim.partition(rng.choice(mix.shapes), rng)
            sim.after(rng.randint(*mix.partition_us), end_partition(state["partition_epoch"]))
            log(f"fault: partition {what}")
        elif kind == "crash":
            target = rng.choice(mix.crash_targets)
            up = [node.id for node in sim.nodes if node.up]
            if not up:
                return
            lead = sim.leader()
            if target == "leader" and lead is not None:
                victims = [lead.id]
            elif target == "majority":
                victims = rng.sample(list(sim.ids), len(sim.ids) // 2 + 1)
            elif target == "all":
                victims = list(sim.ids)
            else:
                victims = [rng.choice(up)]
            for v in victims:
                sim.crash_for(v, rng.randint(*mix.crash_down_us))
            log(f"fault: crash {target} {victims}")
        elif kind == "flaky":
            params = LinkParams(
                drop=rng.uniform(*mix.flaky_drop),
                dup=rng.uniform(*mix.flaky_dup),
                delay_min_us=mix.link.delay_min_us,
                delay_max_us=max(mix.link.delay_max_us, rng.randint(*mix.flaky_delay_max_us)),
                drop_kinds=rng.choice(mix.flaky_kinds),
                fifo=mix.link.fifo,
            )
            pairs = [(a, b) for a in sim.ids for b in sim.ids if a != b]
            if mix.flaky_one_link and rng.random() < mix.flaky_one_link:
                lead = sim.leader()
                a = lead.id if lead is not None and rng.random() < 0.5 else rng.choice(sim.ids)
                b = rng.choice([x for x in sim.ids if x != a])
                links: list[tuple[NodeId, NodeId]] | None = [
                    (a, b) if rng.random() < 0.5 else (b, a)
                ]
            else:
                links = (
                    None if rng.random() < 0.5 else rng.sample(pairs, rng.randint(1, len(pairs)))
                )
            sim.reset_links()
            sim.reset_client_links()
            sim.set_links(params, links)
            if sim.clients and rng.random() < 0.5:
                sim.set_client_links(params)
            state["flaky_epoch"] += 1
            sim.after(rng.randint(*mix.flaky_us), end_flaky(state["flaky_epoch"]))
            log(f"fault: flaky {'all' if links is None else len(links)} links {params}")
        elif kind == "pause":
            lead = sim.leader(saving=True)  # one in the middle of a slow save is a target too
            up = [node.id for node in sim.nodes if node.up]
            if not up:
                return
            pick = rng.random() < mix.pause_leader
            victim = lead.id if lead is not None and pick else rng.choice(up)
            sim.pause(victim, rng.randint(*mix.pause_us))
            log(f"fault: pause {victim}")
        elif kind == "client-cut":
            sim.heal_clients()
            state["client_epoch"] += 1
            client = rng.choice(sim.clients).id
            shape = rng.choice(mix.client_cuts)
            lead = sim.leader()
            ids = list(sim.ids)
            if shape == "leader-only" and lead is not None:
                cut = [x for x in ids if x != lead.id]
            elif shape == "not-leader" and lead is not None:
                cut = [lead.id]
            elif shape == "some":
                cut = rng.sample(ids, rng.randint(1, len(ids) - 1))
            else:
                cut = ids
            sim.cut_client(client, cut)
            sim.after(rng.randint(*mix.partition_us), end_client_cut(state["client_epoch"]))
            log(f"fault: client-cut {shape} {client} from {cut}")
        elif kind == "skew":
            node = rng.choice(sim.nodes)
            rho = sim.config_for(node.id).max_drift
            rate = 1.0 + (rng.choice((-rho, rho)) if rng.random() < 0.5 else rng.uniform(-rho, rho))
            sim.set_clock_rate(node.id, rate)
            log(f"fault: skew {node.id} rate {rate:.5f}")
        elif kind == "quiet":
            sim.quiet_window(rng.randint(*mix.quiet_us))
            log("fault: quiet window")
        elif kind == "slow-disk":
            lead = sim.leader()
            if rng.random() < mix.slow_disk_shared:
                slow = list(sim.ids)
            elif lead is not None and rng.random() < mix.slow_disk_leader:
                slow = [lead.id]
            else:
                slow = [rng.choice(sim.ids)]
            sim.slow_disk(slow, rng.randint(*mix.slow_disk_for_us), mix.slow_save_us)
            log(f"fault: slow-disk {slow}")
        else:
            to = sim.transfer_leadership()
            log(f"fault: transfer leadership to {to}")

    t = 0
    while True:
        t += rng.randint(*mix.gap_us)
        if t >= mix.duration_us:
            break
        sim.at(t, inject)


@dataclass(slots=True)
class SeedResult:
    seed: int
    mix: FaultMix
    violation: SafetyViolation | None = None
    liveness: LivenessResult | None = None
    events: int = 0
    proposed: int = 0
    applied: int = 0
    leases: LeaseStats = field(default_factory=LeaseStats)
    me_violations: list[SafetyViolation] = field(default_factory=list)
    # The faults the schedule injected (kind -> count) and the failpoint crashes; the mix's
    # ``drew`` says what the swarm drew (intensities).
    injected: dict[str, int] = field(default_factory=dict)
    failpoint_crashes: int = 0
    quiet_windows: int = 0
    # Membership changes asked of leaders (outcome -> count), the committed ones as the
    # leader answered them ("add n4", "promote n4", "remove n1"), and the configuration
    # entries committed (applied anywhere), which also counts those whose leader died.
    members: dict[str, int] = field(default_factory=dict)
    member_changes: list[str] = field(default_factory=list)
    configs_committed: int = 0
    elapsed_s: float = 0.0  # wall time

    @property
    def ok(self) -> bool:
        return self.violation is None

    @property
    def drew(self) -> tuple[str, ...]:
        return self.mix.drew

    def faults(self) -> str:
        """One line: what this seed drew and injected."""
        inj = " ".join(f"{k}={v}" for k, v in sorted(self.injected.items()))
        if self.failpoint_crashes:
            inj += f" failpoint-crashes={self.failpoint_crashes}"
        if self.members:
            inj += " members: " + " ".join(f"{k}={v}" for k, v in sorted(self.members.items()))
        return f"injected: {inj or 'nothing'}"


def run_seed(
    seed: int,
    *,
    mix: FaultMix | None = None,
    core_factory: CoreFactory = RaftCore,
    trace: Callable[[str], None] | None = None,
    liveness: bool = True,
    watchdog_s: float | None = 10.0,
    sim_class: type[SimCluster] = SimCluster,
    leases: bool = True,
    check_after_end: bool = True,
    enforce_me: bool = True,
    base_config: Mapping[str, Any] | None = None,
    draw: Callable[[random.Random], FaultMix] | None = None,
) -> SeedResult:
    """Run one seed's schedule; never raises a SafetyViolation (it is in the result).

    ``sim_class``: a SimCluster subclass (planted server bugs); ``leases=False`` drops the
    mix's clients; ``check_after_end=False`` leaves ME to the overlap rule alone;
    ``enforce_me=False`` only records ME violations (``SeedResult.me_violations``).
    ``base_config``: RaftConfig fields under the mix's own (e.g. the runtime's shipped
    ``heartbeat_ticks``); a timing variant the mix drew still wins.

    ``mix``: a fixed mix (a hand-tuned one); else ``draw(rng)`` draws the seed's own,
    :func:`swarm_mix` by default (:func:`random_mix` is the sweep's older generator).

    ``watchdog_s``: wall-clock seconds after which a seed that stopped making progress (a
    core stuck in a loop) is reported as a ``core-hang`` violation instead of hanging the
    sweep. POSIX main thread only (SIGALRM); ignored elsewhere.
    """
    started = time.perf_counter()
    root = random.Random(seed)
    mix = (draw or swarm_mix)(root) if mix is None else mix
    sim_seed = root.getrandbits(64)
    if not leases and mix.clients is not None:
        mix = dataclasses.replace(mix, clients=None)
    if base_config:
        mix = dataclasses.replace(mix, config={**base_config, **mix.config})
    result = SeedResult(seed, mix)
    sim = sim_class(
        mix.n,
        sim_seed,
        config=mix.config,
        core_factory=core_factory,
        rates=mix.rates,
        link=mix.link,
        propose_every_us=mix.propose_every_us,
        compact_every_us=mix.compact_every_us,
        failpoints=mix.failpoints,
        failpoint_down_us=mix.failpoint_down_us,
        clients=mix.clients,
        client_link=mix.client_link,
        trace=trace,
        spares=mix.spares,
        member_every_us=mix.member_every_us,
        member_remove_leader=mix.member_remove_leader,
        member_retire=mix.member_retire,
        member_burst=mix.member_burst,
        member_eager=mix.member_eager,
    )
    for a, b, params in mix.chronic:
        sim.net.pin(sim.ids[a], sim.ids[b], params)
    sim.lease_checks.check_after_end = check_after_end
    sim.lease_checks.enforce_me = enforce_me
    log = trace if trace is not None else _ignore
    log(f"seed {seed}: {mix.describe()}")
    for item in mix.drew:
        log(f"  drew {item}")
    log(f"clock rates: {[round(node.rate, 5) for node in sim.nodes]}")
    if sim.clients:
        log(f"client clock rates: {[round(c.rate, 5) for c in sim.clients]}")
    try:
        with watchdog(sim, watchdog_s) as kick:
            schedule_faults(sim, mix, sim.user_rng, sim.note)
            # In slices, re-arming the watchdog after each: a slow seed (a message storm)
            # is not a hang; a core call that never returns still is.
            for t in range(_SLICE_US, mix.duration_us + _SLICE_US, _SLICE_US):
                sim.run_until(min(t, mix.duration_us))
                kick()
            if liveness:
                sim.final_heal()
                result.liveness = sim.check_liveness()
                sim.check_lease_expiry()
    except SafetyViolation as v:
        result.violation = v
    result.events = sim.events
    result.proposed = sim.proposed
    result.applied = sim.checkers.max_applied_index
    result.leases = sim.lease_checks.stats
    result.me_violations = sim.lease_checks.me_violations
    result.injected = dict(sim.injected)
    result.failpoint_crashes = sim.failpoint_crashes
    result.quiet_windows = sim.quiet_windows
    result.members = dict(sim.member_stats)
    result.member_changes = [what for _, what in sim.member_log]
    result.configs_committed = sim.checkers.configs_committed
    result.elapsed_s = time.perf_counter() - started
    log(f"seed {seed}: {result.faults()}")
    return result


_SLICE_US = 10 * MS


def _nothing() -> None:
    pass


def _ignore(_: str) -> None:
    pass


@contextlib.contextmanager
def watchdog(sim: SimCluster, seconds: float | None) -> Iterator[Callable[[], None]]:
    """Turn a core call that never returns into a ``core-hang`` SafetyViolation.

    A wall-clock alarm (SIGALRM) fires after ``seconds``; the handler raises inside whatever
    the sim was running, naming the innermost frames. POSIX main thread only; elsewhere (or
    with ``seconds=None``) this does nothing. An outer timer (pytest-timeout) is restored.
    Yields ``kick``: call it to re-arm the alarm (progress was made).
    """
    usable = (
        seconds is not None
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
    )
    if not usable or seconds is None:
        yield _nothing
        return

    def fire(signum: int, frame: FrameType | None) -> None:
        where = " <- ".join(
            f"{Path(f.filename).name}:{f.lineno} {f.name}"
            for f in reversed(traceback.extract_stack(frame, limit=4))
        )
        raise SafetyViolation(
            "core-hang",
            f"no progress for {seconds}s of wall time at t={sim.now}us (event {sim.events}); "
            f"stuck in {where}",
        )

    started = time.monotonic()
    old_handler = signal.signal(signal.SIGALRM, fire)
    old_delay, old_interval = signal.setitimer(signal.ITIMER_REAL, seconds)

    def kick() -> None:
        signal.setitimer(signal.ITIMER_REAL, seconds)

    try:
        yield kick
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        if old_delay > 0:  # someone else's timer (pytest-timeout): give it back what is left
            left = max(old_delay - (time.monotonic() - started), 0.001)
            signal.setitimer(signal.ITIMER_REAL, left, old_interval)


def _load_core(spec: str) -> CoreFactory:
    module, _, attr = spec.partition(":")
    if not attr:
        raise SystemExit(f"--core wants module:Class, got {spec!r}")
    factory: CoreFactory = getattr(importlib.import_module(module), attr)
    return factory


_SETTABLE = frozenset(
    (
        "election_ticks_min",
        "election_ticks_max",
        "heartbeat_ticks",
        "max_entries_per_append",
        "max_inflight",
    )
)


def _parse_set(spec: str) -> dict[str, Any]:
    """``"heartbeat_ticks=3,election_ticks_min=12"`` -> a dict of RaftConfig overrides."""
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key not in _SETTABLE:
            raise ValueError(
                f"--set: bad item {part!r}: expected K=V with K one of {sorted(_SETTABLE)}"
            )
        try:
            out[key] = int(value)
        except ValueError:
            raise ValueError(f"--set: {key} must be an integer, got {value!r}") from None
    return out


def main(argv: Sequence[str] | None = None, core_factory: CoreFactory | None = None) -> int:
    """The CLI. ``core_factory`` (tests only) overrides ``--core``."""
    ap = argparse.ArgumentParser(
        prog="python -m raftlease.testing.sweep",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--seeds", type=int, default=100, help="how many seeds to run")
    ap.add_argument("--start", type=int, default=0, help="first seed (offset)")
    ap.add_argument("--seed", type=int, default=None, help="run only this seed")
    ap.add_argument("--verbose", action="store_true", help="print an event transcript")
    ap.add_argument(
        "--core",
        default=None,
        help="module:Class of the core to test (default raftlease.core.raft:RaftCore)",
    )
    ap.add_argument(
        "--watchdog", type=float, default=10.0, help="wall seconds before a seed is a hang"
    )
    ap.add_argument("--no-leases", action="store_true", help="no lease clients (Raft checks only)")
    ap.add_argument(
        "--set",
        default="",
        metavar="K=V,...",
        help="RaftConfig overrides under every mix's own, e.g. heartbeat_ticks=3 (integers)",
    )
    ap.add_argument(
        "--mix",
        default="swarm",
        help="how each seed gets its faults: swarm (default: drawn per seed), random (the "
        "older generator), or module:NAME of a FaultMix (e.g. tests.sim.test_planted:"
        "MIX_FIGURE_8) run with every seed",
    )
    ap.add_argument(
        "--coverage",
        action="store_true",
        help="measure branch coverage of raftlease/core/raft.py, raftlease/fsm/*.py and "
        "raftlease/service/*.py "
        "over the seeds run (needs coverage.py)",
    )
    args = ap.parse_args(argv)
    try:
        base_config = _parse_set(args.set)
        fixed_mix, draw = _load_mix(args.mix)
    except ValueError as e:
        ap.error(str(e))
    if args.coverage:
        rest = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--coverage"]
        return _run_under_coverage(rest)
    if core_factory is None:
        core_factory = RaftCore if args.core is None else _load_core(args.core)
    core_opt = f" --core {args.core}" if args.core else ""
    if args.no_leases:
        core_opt += " --no-leases"
    if args.set:
        core_opt += f" --set {args.set}"
    if args.mix != "swarm":
        core_opt += f" --mix {args.mix}"
    totals = LeaseStats()
    member_seeds = 0
    configs_committed = 0
    member_totals: dict[str, int] = {}
    change_kinds: dict[str, int] = {}

    seeds = [args.seed] if args.seed is not None else range(args.start, args.start + args.seeds)
    trace = print if args.verbose else None
    failed: list[SeedResult] = []
    worst: SeedResult | None = None
    started = time.perf_counter()
    count = 0
    total = len(seeds)
    every = max(1, total // 10)
    for seed in seeds:
        res = run_seed(
            seed,
            mix=fixed_mix,
            draw=draw,
            trace=trace,
            core_factory=core_factory,
            watchdog_s=args.watchdog,
            leases=not args.no_leases,
            base_config=base_config,
        )
        count += 1
        if res.mix.spares and res.mix.member_every_us is not None:
            member_seeds += 1
            configs_committed += res.configs_committed
            for k, v in res.members.items():
                member_totals[k] = member_totals.get(k, 0) + v
            for what in res.member_changes:
                kind = what.rsplit(" ", 1)[0]
                change_kinds[kind] = change_kinds.get(kind, 0) + 1
        for f in dataclasses.fields(LeaseStats):
            setattr(totals, f.name, getattr(totals, f.name) + getattr(res.leases, f.name))
        if not res.ok:
            failed.append(res)
            print(f"seed {seed} FAILED: {res.violation}", flush=True)
        elif res.liveness is not None and (
            worst is None
            or worst.liveness is None
            or res.liveness.election_us > worst.liveness.election_us
        ):
            worst = res
        if args.verbose or count % every == 0 or count == total:
            rate = count / max(time.perf_counter() - started, 1e-9)
            print(f"  {count}/{total} seeds, {len(failed)} failed, {rate:.1f} seeds/s", flush=True)
    elapsed = max(time.perf_counter() - started, 1e-9)
    for res in failed:
        print(f"seed {res.seed}: {res.violation}")
        print(f"  mix: {res.mix.describe()}")
        for item in res.drew:
            print(f"  drew {item}")
        print(f"  {res.faults()}")
        print(f"  replay: python -m raftlease.testing.sweep --seed {res.seed} --verbose{core_opt}")
    if not args.no_leases:
        t = totals
        print(
            f"leases: {t.grants} grants ({t.beliefs} acted on, {t.handovers} handovers), "
            f"{t.expiries} expiries, {t.releases} releases, {t.renewals} renewals; fenced "
            f"writes: {t.writes_accepted_valid} accepted, {t.writes_accepted_late} accepted "
            f"late, {t.writes_rejected_late} late ones rejected, {t.writes_rejected_valid} "
            f"rejected from a believing holder; {t.server_errors} INTERNAL answers, "
            f"{t.ghost_handovers} ghost handovers"
        )
    if member_seeds:
        kinds = ", ".join(f"{v} {k}" for k, v in sorted(change_kinds.items()))
        asked = " ".join(f"{k}={v}" for k, v in sorted(member_totals.items()))
        print(
            f"membership: {member_seeds} of {count} seeds changed membership; "
            f"{configs_committed} configuration entries committed; leaders answered: "
            f"{asked} ({kinds})"
        )
    longest = "no post-heal election measured"
    if worst is not None and worst.liveness is not None:
        lv = worst.liveness
        longest = (
            f"longest post-heal election {lv.election_ticks:.1f} ticks = "
            f"{lv.election_us / 1000:.1f} ms (seed {worst.seed}, election_ticks_max "
            f"{lv.election_ticks_max})"
        )
    print(
        f"{count - len(failed)} seeds passed, {len(failed)} failed "
        f"({count / elapsed:.1f} seeds/s; {longest})"
    )
    return 1 if failed else 0


def _load_mix(spec: str) -> tuple[FaultMix | None, Callable[[random.Random], FaultMix] | None]:
    """``--mix``: (a fixed mix, or None) and (a generator, or None)."""
    if spec in MIXES:
        return None, MIXES[spec]
    module, _, attr = spec.partition(":")
    if not attr:
        raise ValueError(f"--mix: expected one of {sorted(MIXES)} or module:NAME, got {spec!r}")
    obj = getattr(importlib.import_module(module), attr, None)
    # By class name: run as ``python -m``, this module is __main__, a second FaultMix class.
    if type(obj).__name__ == "FaultMix":
        return obj, None
    if callable(obj):
        return None, obj
    raise ValueError(f"--mix: {spec} is neither a FaultMix nor a mix generator")


def _run_under_coverage(argv: list[str]) -> int:
    """``--coverage``: run this very sweep again under coverage.py (branch mode, measuring
    raftlease/core/raft.py, raftlease/fsm/*.py and raftlease/service/*.py from their import
    on: the shipped Raft core, lease table and lease service), then print the
    report. The data file lives in a temporary directory."""
    import subprocess
    import tempfile

    if importlib.util.find_spec("coverage") is None:
        raise SystemExit("--coverage needs coverage.py (pip install coverage; dev extras)")
    root = Path(__file__).resolve().parents[1]
    include = f"{root / 'core' / 'raft.py'},{root / 'fsm' / '*.py'},{root / 'service' / '*.py'}"
    with tempfile.TemporaryDirectory() as tmp:
        data = str(Path(tmp) / "sweep.coverage")
        run = [sys.executable, "-m", "coverage", "run", "--branch", "--data-file", data]
        rc = subprocess.call([*run, "--include", include, "-m", "raftlease.testing.sweep", *argv])
        out = Path(tmp) / "sweep.json"
        report = [sys.executable, "-m", "coverage", "json", "--data-file", data, "-q"]
        subprocess.call([*report, "--include", include, "-o", str(out)])
        files = json.loads(out.read_text())["files"]
    print("coverage from the sweep alone (statements; branches):")
    tot = dict.fromkeys(("covered_lines", "num_statements", "covered_branches", "num_branches"), 0)
    for path in sorted(files):
        nums = files[path]["summary"]
        for k in tot:
            tot[k] += nums[k]
        print(f"  {path[path.rfind('raftlease/') :]:28} {_pct(nums)}")
    print(f"  {'total':28} {_pct(tot)}")
    return rc


def _pct(n: Mapping[str, int]) -> str:
    lines = 100 * n["covered_lines"] / max(n["num_statements"], 1)
    branches = 100 * n["covered_branches"] / max(n["num_branches"], 1)
    return (
        f"{lines:5.1f}% of {n['num_statements']} statements; "
        f"{branches:5.1f}% of {n['num_branches']} branches"
    )


if __name__ == "__main__":
    sys.exit(main())
