"""raftlease: leader election and time-bounded, fenced leases on Raft.

The clients are imported lazily (PEP 562), so ``import raftlease`` and ``import raftlease.core``
never pull in grpc; ``from raftlease import LeaseClient`` does.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from raftlease.errors import ConfigError, LeaseHeld, NotLeader, RaftLeaseError, StorageError

if TYPE_CHECKING:
    from raftlease.client import (
        AsyncLeaseClient,
        Leader,
        LeadershipLost,
        LeaseClient,
        current_async_lease,
        current_lease,
    )

__version__ = "0.1.0"

__all__ = [
    "AsyncLeaseClient",
    "ConfigError",
    "Leader",
    "LeadershipLost",
    "LeaseClient",
    "LeaseHeld",
    "NotLeader",
    "RaftLeaseError",
    "StorageError",
    "current_async_lease",
    "current_lease",
]

# Public name -> the module that defines it, imported on first access.
_LAZY = {
    "AsyncLeaseClient": "raftlease.client",
    "Leader": "raftlease.client",
    "LeadershipLost": "raftlease.client",
    "LeaseClient": "raftlease.client",
    "current_async_lease": "raftlease.client",
    "current_lease": "raftlease.client",
}

if not TYPE_CHECKING:  # mypy reads the imports above; a module __getattr__ would hide typos.

    def __getattr__(name: str) -> object:
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module 'raftlease' has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value  # later lookups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted(set(globals()) | set(_LAZY))
