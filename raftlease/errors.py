"""The exception hierarchy. Imports: types only (layer L0)."""

from __future__ import annotations


class RaftLeaseError(Exception):
    """Root of every error raftlease raises on purpose."""


class ConfigError(RaftLeaseError, ValueError):
    """A configuration value breaks a documented rule; the message names the rule."""


class NotLeader(RaftLeaseError):
    """This node is not the leader; ``leader_hint`` is the leader it knows of, if any."""

    def __init__(self, message: str = "not the leader", leader_hint: str | None = None) -> None:
        super().__init__(message)
        self.leader_hint = leader_hint


class ProposalDropped(RaftLeaseError):
    """A proposal was not appended (no leader, leadership transfer, or lost leadership)."""


class StorageError(RaftLeaseError):
    """Durable storage failed or holds data that cannot be trusted; the node must stop."""


class LeaseHeld(RaftLeaseError):
    """The lease is held by another holder."""

    def __init__(self, message: str, holder: str = "", fencing_token: int = 0) -> None:
        super().__init__(message)
        self.holder = holder
        self.fencing_token = fencing_token
