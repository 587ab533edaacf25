"""Failpoints for real server processes, as wrappers around the node's seams. Layer: testing.

A production node has no failpoint checks at all. ``raftlease.server.serve`` (the composition
root) reads ``RAFTLEASE_FAILPOINTS`` (raftlease/failpoints.py) and, only when it arms
something, builds a :class:`FaultInjector` and wraps the node's parts in it:

- storage (:class:`FailpointStorage`): ``before-save`` before a ``save``'s transaction and
  fsync; ``before-snapshot-save`` after it when the save carries a snapshot, and before a
  ``compact``; once the write is durable (nothing that depends on it sent yet):
  ``after-save``, then ``after-vote-save`` if the saved hard state holds a vote, then
  ``after-snapshot-save`` if a snapshot was written (``compact``: only that one);
- transport (:class:`FailpointTransport`): ``before-send``, before a Ready's messages go out;
- observer (:class:`FailpointObserver`): ``after-commit-before-apply``, in
  ``NodeObserver.on_commit_ready``: the Ready is saved and sent, its committed entries are
  not applied yet;
- server: ``before-client-reply``, once Acquire's answer (and a successful Release's) is
  ready and before it is returned (:meth:`FaultInjector.hook`, passed to the LeaseServicer).

Each point fires exactly where node.py used to hit it inline, at the same moment relative to
the fsync (the save and its fsync run in the node's fsync thread; so do these hooks). One
thing node.py did between the fsync and the ``after-*`` points was to log
``<id> voted for <id> at term <T> (persisted)`` for a new vote (the jepsen-style RI check reads
these lines); a ``panic`` at an ``after-*`` point writes that line first, as before.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from raftlease.observe import NodeObserver

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from raftlease.core.messages import Entry, Message, Snapshot
    from raftlease.core.ready import HardState, SoftState
    from raftlease.failpoints import Failpoints
    from raftlease.fsm.leases import EventKind
    from raftlease.storage.base import LoadedState, Storage
    from raftlease.transport.base import Transport
    from raftlease.types import NodeId

# The node's logger: the vote line below stands in for the one raftlease.node writes.
_node_log = logging.getLogger("raftlease.node")


class FailpointStorage:
    """A :class:`~raftlease.storage.base.Storage` that hits the save and snapshot points
    around ``inner``'s writes."""

    def __init__(self, inner: Storage, points: Failpoints, node_id: NodeId) -> None:
        self.inner = inner
        self.points = points
        self.node_id = node_id
        self._vote: tuple[int, str | None] = (0, None)  # the last durable (term, voted_for)

    def load(self) -> LoadedState:
        loaded = self.inner.load()
        self._vote = (loaded.hard_state.term, loaded.hard_state.voted_for)
        return loaded

    def save(
        self,
        hard_state: HardState | None,
        snapshot: Snapshot | None,
        entries: Sequence[Entry],
    ) -> None:
        hit = self.points.hit
        hit("before-save")
        if snapshot is not None:
            hit("before-snapshot-save")
        self.inner.save(hard_state, snapshot, entries)
        last_words = None
        if hard_state is not None:
            vote = (hard_state.term, hard_state.voted_for)
            if vote != self._vote and vote[1] is not None:
                last_words = self._vote_line(vote[0], vote[1])
            self._vote = vote
        hit("after-save", last_words)
        if hard_state is not None and hard_state.voted_for is not None:
            hit("after-vote-save", last_words)
        if snapshot is not None:
            hit("after-snapshot-save", last_words)

    def compact(self, snapshot: Snapshot) -> None:
        self.points.hit("before-snapshot-save")
        self.inner.compact(snapshot)
        self.points.hit("after-snapshot-save")

    def close(self) -> None:
        self.inner.close()

    def _vote_line(self, term: int, voted_for: str) -> Callable[[], None]:
        def write() -> None:
            # What Node._save logs right after this save returns (a panic here precedes it).
            _node_log.info("%s voted for %s at term %d (persisted)", self.node_id, voted_for, term)

        return write


class FailpointTransport:
    """A :class:`~raftlease.transport.base.Transport` that hits ``before-send`` on every
    ``send`` (once per Ready, as node.py did), then hands the messages to ``inner``."""

    def __init__(self, inner: Transport, points: Failpoints) -> None:
        self.inner = inner
        self.points = points

    def send(self, messages: Sequence[Message]) -> None:
        self.points.hit("before-send")
        self.inner.send(messages)

    async def close(self) -> None:
        await self.inner.close()

    def set_peers(self, peers: dict[str, str]) -> None:
        self.inner.set_peers(peers)


class FailpointObserver(NodeObserver):
    """Hits ``after-commit-before-apply`` in :meth:`on_commit_ready`; passes every event on to
    ``inner`` (the metrics, or the no-op observer)."""

    __slots__ = ("inner", "points")

    def __init__(self, inner: NodeObserver, points: Failpoints) -> None:
        self.inner = inner
        self.points = points

    def on_commit_ready(self, entries: Sequence[Entry]) -> None:
        self.points.hit("after-commit-before-apply")
        self.inner.on_commit_ready(entries)

    def on_state_change(self, old: SoftState, new: SoftState) -> None:
        self.inner.on_state_change(old, new)

    def on_send(self, messages: Sequence[Message]) -> None:
        self.inner.on_send(messages)

    def on_save(self, seconds: float) -> None:
        self.inner.on_save(seconds)

    def on_proposal_applied(self, seconds: float) -> None:
        self.inner.on_proposal_applied(seconds)

    def on_renewal(self, remaining_s: float, ttl_s: float) -> None:
        self.inner.on_renewal(remaining_s, ttl_s)

    def on_lease_event(self, kind: EventKind) -> None:
        self.inner.on_lease_event(kind)

    def on_lease_lapse(self, seconds: float) -> None:
        self.inner.on_lease_lapse(seconds)


class FaultInjector:
    """Builds the wrappers for one node from the armed failpoints (the server's entry point)."""

    def __init__(self, points: Failpoints, node_id: NodeId) -> None:
        self.points = points
        self.node_id = node_id

    def storage(self, inner: Storage) -> FailpointStorage:
        return FailpointStorage(inner, self.points, self.node_id)

    def transport(self, inner: Transport) -> FailpointTransport:
        return FailpointTransport(inner, self.points)

    def observer(self, inner: NodeObserver) -> FailpointObserver:
        return FailpointObserver(inner, self.points)

    def hook(self, name: str) -> Callable[[], None]:
        """A callable that hits failpoint ``name`` (e.g. the server's before-client-reply)."""
        points = self.points

        def hit() -> None:
            points.hit(name)

        return hit


__all__ = ["FailpointObserver", "FailpointStorage", "FailpointTransport", "FaultInjector"]
