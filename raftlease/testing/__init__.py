"""Public test toolkit: a seeded, deterministic cluster simulator and its safety checkers.

``SimCluster`` drives real ``RaftCore`` instances over virtual time and a faulty simulated
network, each running the lease service node.py runs (raftlease/service), and simulated
lease clients (``ClientParams``, ``SimClient``, driving the shipped client's step machines)
that write to a fenced resource; ``Checkers`` and
``LeaseCheckers`` raise ``SafetyViolation`` the moment a Raft, leader-lease, mutual-exclusion
or fencing invariant breaks.
``python -m raftlease.testing.sweep --seeds N`` runs N random fault schedules.
Nothing here imports asyncio or grpc. ``raftlease.testing.local`` (``LocalCluster``,
``free_port``) runs real ``raftlease serve`` processes instead; it polls them over gRPC, so it
is not re-exported here: import it from there.
"""

from raftlease.testing.checkers import (
    Checkers,
    LeaseCheckers,
    LeaseStats,
    LivenessViolation,
    SafetyViolation,
)
from raftlease.testing.clients import ClientParams, FencedResource, SimClient
from raftlease.testing.network import LinkParams, SimNetwork
from raftlease.testing.sim import (
    PARTITION_SHAPES,
    CoreFactory,
    LeaseInterval,
    LivenessResult,
    SimCluster,
    SimNode,
)

__all__ = [
    "PARTITION_SHAPES",
    "Checkers",
    "ClientParams",
    "CoreFactory",
    "FencedResource",
    "LeaseCheckers",
    "LeaseInterval",
    "LeaseStats",
    "LinkParams",
    "LivenessResult",
    "LivenessViolation",
    "SafetyViolation",
    "SimClient",
    "SimCluster",
    "SimNetwork",
    "SimNode",
]
