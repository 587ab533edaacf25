"""The exception hierarchy. Imports: types only (layer L0)."""

from __future__ import annotations


class RaftLeaseError(Exception):
    """Root of every error raftlease raises on purpose."""


class ConfigError(RaftLeaseError, ValueError):
    """A configuration value breaks a documented rule; the message names the rule."""


class NotLeader(RaftLeaseError):
    """This node is not the leader. ``leader_hint``: the address clients reach the leader it
    knows of on; ``leader_id``: that leader's node id (either None when unknown)."""

    def __init__(
        self,
        message: str = "not the leader",
        leader_hint: str | None = None,
        leader_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.leader_hint = leader_hint
        self.leader_id = leader_id


class NoLeaderLease(NotLeader):
    """This node cannot serve renewals or linearizable reads right now: it is not the leader
    (hint: the leader), or it leads without a valid leader lease (no hint: retry here)."""


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
