"""Cluster membership: who votes, who only learns, and where each member listens.

A :class:`Membership` is a value: the core keeps the newest one in its log (Raft thesis §4.1:
a server uses the latest configuration in its log, committed or not) and the driver reads
addresses from it. Changes go through the log one server at a time (thesis §4.2, with the
errata's rule that a leader first commits an entry of its own term); see
``RaftCore.propose_membership`` and docs/membership.md.

Encoded as a small JSON object (``encode``/``decode``) in the data of a CONFIG log entry.
Nothing here does I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from raftlease.errors import RaftLeaseError
from raftlease.types import NodeId


class MembershipError(RaftLeaseError):
    """A membership change was refused; nothing changed. ``retryable``: the same request may
    succeed later unchanged (a change already in flight, a learner still catching up)."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class Membership:
    """Voters (counted in every quorum) and learners (replicated to, never counted), sorted,
    with each member's peer address (opaque to the core)."""

    voters: tuple[NodeId, ...]
    learners: tuple[NodeId, ...] = ()
    addresses: tuple[tuple[NodeId, str], ...] = ()

    @classmethod
    def of(
        cls,
        voters: dict[NodeId, str] | tuple[NodeId, ...],
        learners: dict[NodeId, str] | tuple[NodeId, ...] = (),
    ) -> Membership:
        addrs: dict[NodeId, str] = {}
        for group in (voters, learners):
            if isinstance(group, dict):
                addrs.update(group)
        return cls(
            tuple(sorted(voters)),
            tuple(sorted(learners)),
            tuple(sorted(addrs.items())),
        )

    @property
    def members(self) -> tuple[NodeId, ...]:
        return tuple(sorted((*self.voters, *self.learners)))

    def address(self, node_id: NodeId) -> str:
        for nid, addr in self.addresses:
            if nid == node_id:
                return addr
        return ""

    def address_map(self) -> dict[NodeId, str]:
        return dict(self.addresses)

    def is_voter(self, node_id: NodeId) -> bool:
        return node_id in self.voters

    def is_member(self, node_id: NodeId) -> bool:
        return node_id in self.voters or node_id in self.learners

    # ---------------------------------------------------------------- single-server changes
    def with_learner(self, node_id: NodeId, address: str) -> Membership:
        """Add ``node_id`` as a learner. Refuses an existing id or an address in use."""
        if not node_id:
            raise MembershipError("a member id must be a non-empty string")
        if self.is_member(node_id):
            kind = "a voter" if self.is_voter(node_id) else "a learner"
            raise MembershipError(
                f"{node_id} is already {kind}; a replacement machine needs a new id "
                "(an id must never be reused: the old node's vote and log went with it)"
            )
        for nid, addr in self.addresses:
            if address and addr == address:
                raise MembershipError(f"address {address} is already used by member {nid}")
        addrs = {**self.address_map(), node_id: address}
        return Membership(
            self.voters, tuple(sorted((*self.learners, node_id))), tuple(sorted(addrs.items()))
        )

    def promoted(self, node_id: NodeId) -> Membership:
        """Make the learner ``node_id`` a voter."""
        if self.is_voter(node_id):
            raise MembershipError(f"{node_id} is already a voter")
        if node_id not in self.learners:
            raise MembershipError(f"{node_id} is not a member (members: {_ids(self.members)})")
        return Membership(
            tuple(sorted((*self.voters, node_id))),
            tuple(x for x in self.learners if x != node_id),
            self.addresses,
        )

    def without(self, node_id: NodeId) -> Membership:
        """Remove the member ``node_id`` (voter or learner). Refuses the last voter."""
        if not self.is_member(node_id):
            raise MembershipError(f"{node_id} is not a member (members: {_ids(self.members)})")
        if self.voters == (node_id,):
            raise MembershipError(f"{node_id} is the last voter; a cluster needs at least one")
        return Membership(
            tuple(x for x in self.voters if x != node_id),
            tuple(x for x in self.learners if x != node_id),
            tuple((n, a) for n, a in self.addresses if n != node_id),
        )

    # ---------------------------------------------------------------- encoding
    def encode(self) -> bytes:
        return json.dumps(
            {
                "voters": list(self.voters),
                "learners": list(self.learners),
                "addresses": dict(self.addresses),
            },
            sort_keys=True,
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> Membership:
        """Raises ValueError on anything but an encoded Membership."""
        try:
            obj = json.loads(data)
            voters = [NodeId(str(v)) for v in obj["voters"]]
            learners = [NodeId(str(v)) for v in obj.get("learners", [])]
            addresses = {NodeId(str(k)): str(v) for k, v in obj.get("addresses", {}).items()}
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ValueError(f"not an encoded membership: {data[:80]!r}") from exc
        return cls(tuple(sorted(voters)), tuple(sorted(learners)), tuple(sorted(addresses.items())))


def voter_change(old: Membership, new: Membership) -> set[NodeId]:
    """The voters added or removed between two configurations."""
    return set(old.voters) ^ set(new.voters)


def _ids(ids: tuple[NodeId, ...]) -> str:
    return ", ".join(ids) or "none"


__all__ = ["Membership", "MembershipError", "voter_change"]
