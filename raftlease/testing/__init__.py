"""Public test toolkit: a seeded, deterministic cluster simulator and its safety checkers.

``SimCluster`` drives real ``RaftCore`` instances over virtual time and a faulty simulated
network, each with the lease table and keeper node.py runs, and simulated lease clients
(``ClientParams``, ``SimClient``) that write to a fenced resource; ``Checkers`` and
``LeaseCheckers`` raise ``SafetyViolation`` the moment a Raft, leader-lease, mutual-exclusion
or fencing invariant breaks.
``python -m raftlease.testing.sweep --seeds N`` runs N random fault schedules.
Nothing here imports asyncio or grpc.
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
