"""What the clients hand back: :class:`LeaseInfo` (a grant as the cluster reports it),
:class:`WatchEvent`, and :class:`WatchDedup` (each change delivered once across re-opened
watch streams)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from raftlease.v1 import lease_pb2

__all__ = ["LeaseInfo", "MemberInfo", "MemberList", "WatchDedup", "WatchEvent", "members_from_pb"]


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """A grant as the cluster reports it (``holder()``, ``leases()``, watch events).

    ``ttl`` and ``remaining`` are seconds; ``remaining`` is the serving leader's view, not a
    guarantee to anyone. ``granted_index`` is the Raft log index of the grant.
    """

    name: str
    holder: str
    lease_id: int
    fencing_token: int
    ttl: float
    metadata: dict[str, str] = field(default_factory=dict)
    health: dict[str, str] = field(default_factory=dict)
    remaining: float = 0.0
    waiters: int = 0
    granted_index: int = 0

    @classmethod
    def from_pb(cls, pb: lease_pb2.LeaseInfo) -> LeaseInfo:
        return cls(
            name=pb.name,
            holder=pb.holder,
            lease_id=pb.lease_id,
            fencing_token=pb.fencing_token,
            ttl=pb.ttl_ms / 1000.0,
            metadata=dict(pb.metadata),
            health=dict(pb.health),
            remaining=pb.remaining_ms / 1000.0,
            waiters=pb.waiters,
            granted_index=pb.granted_index,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "holder": self.holder,
            "lease_id": self.lease_id,
            "fencing_token": self.fencing_token,
            "ttl": self.ttl,
            "metadata": dict(self.metadata),
            "health": dict(self.health),
            "remaining": self.remaining,
            "waiters": self.waiters,
            "granted_index": self.granted_index,
        }


_KIND_NAMES = {
    lease_pb2.WatchEvent.KIND_CURRENT: "current",
    lease_pb2.WatchEvent.KIND_ACQUIRED: "acquired",
    lease_pb2.WatchEvent.KIND_RELEASED: "released",
    lease_pb2.WatchEvent.KIND_EXPIRED: "expired",
}


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change seen by ``watch()``.

    ``kind`` is ``"current"`` (the state when the watch (re)started), ``"acquired"``,
    ``"released"`` or ``"expired"``; ``lease`` is the grant concerned (for released/expired,
    the grant that ended); ``index`` is the Raft log index of the change.
    """

    kind: str
    name: str
    lease: LeaseInfo | None
    index: int

    @classmethod
    def from_pb(cls, pb: lease_pb2.WatchEvent) -> WatchEvent:
        lease = LeaseInfo.from_pb(pb.lease) if pb.HasField("lease") else None
        name = pb.name or (lease.name if lease is not None else "")
        return cls(kind=_KIND_NAMES.get(pb.kind, "unknown"), name=name, lease=lease, index=pb.index)


class WatchDedup:
    """Skips watch events already delivered before the stream was re-opened.

    A broken Watch stream is re-opened (maybe on a new leader), and the new stream may send
    again changes the old one already delivered; each change is delivered once. A change is
    identified by ``(index, kind, name, lease_id)``, not by its index alone: one log entry
    can make several changes. Releasing (or expiring) a lease that has waiters hands it to the
    first waiter in the same entry, so the server sends ``released`` (or ``expired``) and then
    ``acquired`` with the same index; deduplicating by index dropped the ``acquired``.

    The server sends the changes of a stream in log order, so only the keys at the highest
    index delivered so far are kept: an event below that index was delivered (or superseded
    by a later one) before, one at it is new unless its key was seen, one above it is new.
    ``current`` events (the state when a stream starts) always pass and change nothing, and
    so do events without an index (0).
    """

    def __init__(self) -> None:
        self.last_index = 0
        self._seen_at_last: set[tuple[str, str, int]] = set()

    @staticmethod
    def _key(event: WatchEvent) -> tuple[str, str, int]:
        lease_id = event.lease.lease_id if event.lease is not None else 0
        return (event.kind, event.name, lease_id)

    def admit(self, event: WatchEvent) -> bool:
        """True if ``event`` is to be delivered (and remember it), False if it is a repeat."""
        if event.kind == "current" or not event.index:
            return True
        key = self._key(event)
        if event.index < self.last_index:
            return False
        if event.index == self.last_index:
            if key in self._seen_at_last:
                return False
            self._seen_at_last.add(key)
            return True
        self.last_index = event.index
        self._seen_at_last = {key}
        return True


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """One member of the cluster's configuration, as the leader sees it."""

    id: str
    peer_address: str
    learner: bool
    lag: int | None  # entries it lacks (None: unknown)


@dataclass(frozen=True, slots=True)
class MemberList:
    """The configuration in force on the leader (``raftlease member list``)."""

    members: tuple[MemberInfo, ...]
    config_index: int  # log index of the configuration entry; 0: the bootstrap members
    committed: bool
    leader_id: str

    @property
    def voters(self) -> tuple[str, ...]:
        return tuple(m.id for m in self.members if not m.learner)

    @property
    def learners(self) -> tuple[str, ...]:
        return tuple(m.id for m in self.members if m.learner)

    def addresses(self) -> dict[str, str]:
        return {m.id: m.peer_address for m in self.members}


def members_from_pb(resp: Any) -> MemberList:
    """A ``MemberListResponse`` (or a ``SnapshotResponse``'s members) as a MemberList."""
    return MemberList(
        members=tuple(
            MemberInfo(m.id, m.peer_address, m.learner, None if m.lag < 0 else m.lag)
            for m in resp.members
        ),
        config_index=getattr(resp, "config_index", 0),
        committed=getattr(resp, "committed", True),
        leader_id=getattr(resp, "leader_id", ""),
    )
