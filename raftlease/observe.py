"""The node's observer hook: what a Node reports as it runs, for metrics. Layer L3.

``Node.observer`` is a :class:`NodeObserver`; the default one does nothing, so a node without
``--metrics`` pays one no-op method call per event. raftlease/metrics.py implements it with
Prometheus counters and histograms; nothing here imports prometheus_client. Fault injection
(raftlease/testing/faults.py) wraps it to hit a failpoint between commit and apply.

Only *events* come through here (a role change, an fsync, a proposal applied, a renewal, a
lease event, a leader-lease lapse, a batch of outgoing messages, committed entries about to be
applied). Levels (term, indexes, leases held, peer status) are read from the node when metrics
are scraped, not pushed on every change.

Every method is called on the node's event loop, except :meth:`NodeObserver.on_save`, which
runs in the node's fsync thread. A method must be cheap and must not raise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from raftlease.core.messages import Entry, Message
    from raftlease.core.ready import SoftState
    from raftlease.fsm.leases import EventKind


class NodeObserver:
    """No-op base: override what you need."""

    __slots__ = ()

    def on_state_change(self, old: SoftState, new: SoftState) -> None:
        """The node's role, term or known leader changed (once per Ready, so a node that went
        through several states within one Ready reports only the first and the last)."""

    def on_send(self, messages: Sequence[Message]) -> None:
        """``messages`` are being handed to the transport (one call per Ready)."""

    def on_save(self, seconds: float) -> None:
        """``Storage.save`` (one fsync'd batch) took ``seconds``. Called in the fsync thread."""

    def on_commit_ready(self, entries: Sequence[Entry]) -> None:
        """Newly committed ``entries`` are about to be applied: their Ready is saved and its
        messages sent, and nothing of them is applied yet (fault injection's
        ``after-commit-before-apply`` point, raftlease/testing/faults.py). Only called for a
        Ready that commits something."""

    def on_proposal_applied(self, seconds: float) -> None:
        """A proposal made on this node was applied ``seconds`` after ``Node.propose``."""

    def on_renewal(self, remaining_s: float, ttl_s: float) -> None:
        """A renewal was served; the lease had ``remaining_s`` of its ``ttl_s`` left."""

    def on_lease_event(self, kind: EventKind) -> None:
        """A lease was acquired, released or expired (applied on this node)."""

    def on_lease_lapse(self, seconds: float) -> None:
        """This leader's leader lease ran out before a quorum answer renewed it (or before
        it stopped leading); it was out for at most ``seconds`` (until the loop saw it)."""


NOOP_OBSERVER = NodeObserver()

__all__ = ["NOOP_OBSERVER", "NodeObserver"]
