"""The I/O-free lease service that the node and the simulator both run (lease_service.py)."""

from raftlease.service.lease_service import (
    Acquired,
    Call,
    CallKind,
    Internal,
    LeaseService,
    NotAcquired,
    Outcome,
    ReadReady,
    Reconfigured,
    Renewal,
)

__all__ = [
    "Acquired",
    "Call",
    "CallKind",
    "Internal",
    "LeaseService",
    "NotAcquired",
    "Outcome",
    "ReadReady",
    "Reconfigured",
    "Renewal",
]
