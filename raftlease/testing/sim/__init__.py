"""SimCluster: a seeded, deterministic discrete-event simulator of a raftlease cluster.

No asyncio, no real time, no global ``random``: one ``random.Random(seed)`` is split, in a
fixed order, into the streams used for clocks, the network, the workload, faults and each
core's election timer (a restarted core gets a fresh stream from the ``restart`` one). The
same seed therefore replays the same run, event for event, with or without tracing.

Each node has a :class:`MemoryStorage`, a core built from ``storage.load()``, a clock that
ticks every ``tick_us / rate`` real microseconds (``rate`` = 1 ± drift; within the config's
``max_drift`` by default) and the lease service that ships
(:class:`raftlease.service.LeaseService`), driven exactly as ``raftlease/node.py`` drives
them. Simulated clients (clients.py) talk to the nodes over their own lossy, partitionable
links; the checkers (checkers.py) and the simulator's own rules run after every step.

:class:`SimCluster` is one class built from layers, one module each; each layer calls only
the layers below it (a few failpoint hooks of the driver, and the scheduler's ``_dispatch``,
are declared for the type checker and implemented above):

==============  ===============  ===========================================================
module          class            what lives there
==============  ===============  ===========================================================
model.py        (data)           SimNode, LeaseInterval, LivenessResult, describe(), the
                                 state-hash chain, PARTITION_SHAPES, failpoint names
scheduler.py    SimScheduler     virtual time, the event heap, at / after / run_until...,
                                 node(), leader()
oracles.py      SimOracles       vote-stickiness, lease-quorum, the CheckQuorum contact
                                 oracle, the membership rules, the lease history
driver.py       SimDriver        what each event does: the Ready loop, the LeaseService,
                                 client requests and replies, the workload (propose ...)
faults.py       SimFaults        boot, crash, restart, pause / resume, clock rates,
                                 failpoints, partitions, link faults
liveness.py     SimLiveness      quiet windows, final heal, post-heal liveness checks
members.py      SimMembers       the membership operator: spares join as learners, are
                                 promoted, voters (the leader too) are removed
cluster.py      SimCluster       the constructor: random streams, nodes, networks, clients
==============  ===============  ===========================================================

A subclass of :class:`SimCluster` overrides any of these methods as before (planted bugs
override ``make_service``, ``make_keeper``, ``_sends_before_persist``, ``lease_ok``, or set
``check_renewals``): every layer calls through ``self``.
"""

from raftlease.testing.sim.cluster import SimCluster
from raftlease.testing.sim.model import (
    FAILPOINT_SCOPES,
    FAILPOINTS,
    HASH_LEN,
    PARTITION_SHAPES,
    ZERO_HASH,
    CoreFactory,
    LeaseInterval,
    LivenessResult,
    SimNode,
    describe,
    state_hash,
)

__all__ = [
    "FAILPOINTS",
    "FAILPOINT_SCOPES",
    "HASH_LEN",
    "PARTITION_SHAPES",
    "ZERO_HASH",
    "CoreFactory",
    "LeaseInterval",
    "LivenessResult",
    "SimCluster",
    "SimNode",
    "describe",
    "state_hash",
]
