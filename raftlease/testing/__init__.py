"""Public test toolkit: a seeded, deterministic cluster simulator and its safety checkers.

``SimCluster`` drives real ``RaftCore`` instances over virtual time and a faulty simulated
network; ``Checkers`` raises ``SafetyViolation`` the moment a Raft or lease invariant breaks.
``python -m raftlease.testing.sweep --seeds N`` runs N random fault schedules.
Nothing here imports asyncio or grpc.
"""

from raftlease.testing.checkers import Checkers, LivenessViolation, SafetyViolation
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
    "CoreFactory",
    "LeaseInterval",
    "LinkParams",
    "LivenessResult",
    "LivenessViolation",
    "SafetyViolation",
    "SimCluster",
    "SimNetwork",
    "SimNode",
]
