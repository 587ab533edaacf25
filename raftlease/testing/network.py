"""SimNetwork: the simulator's message network (per directed link loss, duplication, delay).

Reordering comes from random per-message delays. Partitions and one-way cuts are sets of
blocked directed links: a message is dropped if its link is blocked when it is sent or when
it would arrive (a partition also eats what is in flight, as a dead TCP connection would).
All randomness comes from the ``random.Random`` handed in (derived from the sim's seed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import random
    from collections.abc import Iterable, Sequence

    from raftlease.types import NodeId

__all__ = ["LinkParams", "SimNetwork"]


@dataclass(frozen=True, slots=True)
class LinkParams:
    """How one directed link behaves. Delays are uniform in [delay_min_us, delay_max_us]."""

    drop: float = 0.0
    dup: float = 0.0
    delay_min_us: int = 200
    delay_max_us: int = 2_000
    # Message kinds (class names, e.g. "AppendEntries") that ``drop`` applies to; empty: all.
    # Lets a link lose only AppendEntries, or only vote traffic (per-message-type loss).
    drop_kinds: frozenset[str] = frozenset()
    # FIFO: a message never overtakes an earlier one on this link (one long-lived stream per
    # peer, as the gRPC transport has); its delay is stretched instead. False: reordering.
    fifo: bool = False

    def __post_init__(self) -> None:
        if not (0.0 <= self.drop <= 1.0 and 0.0 <= self.dup <= 1.0):
            raise ValueError(f"drop and dup must be probabilities, got {self.drop}, {self.dup}")
        if not 0 <= self.delay_min_us <= self.delay_max_us:
            raise ValueError(
                f"need 0 <= delay_min_us <= delay_max_us, got "
                f"{self.delay_min_us}, {self.delay_max_us}"
            )


class SimNetwork:
    """Links between ``ids``; every link starts as ``default``."""

    def __init__(self, ids: Sequence[NodeId], rng: random.Random, default: LinkParams) -> None:
        self.ids = tuple(ids)
        self.rng = rng
        self.default = default
        self.links: dict[tuple[NodeId, NodeId], LinkParams] = {}
        self.blocked: set[tuple[NodeId, NodeId]] = set()  # partitions and one-way cuts
        self.sent = 0
        self.dropped = 0
        self.duplicated = 0
        # The longest delay any link was ever set to (liveness bounds allow for stragglers).
        self.max_delay_us = default.delay_max_us
        # Links pinned to other params (chronic faults): a reset restores these, not default.
        self.pinned: dict[tuple[NodeId, NodeId], LinkParams] = {}
        self.last_arrival: dict[tuple[NodeId, NodeId], int] = {}  # FIFO links
        self._reset_links()

    # ---------------------------------------------------------------- link parameters
    def _reset_links(self) -> None:
        self.links = {(a, b): self.default for a in self.ids for b in self.ids if a != b}

    def set_link(self, src: NodeId, dst: NodeId, params: LinkParams) -> None:
        self.links[(src, dst)] = params
        self.max_delay_us = max(self.max_delay_us, params.delay_max_us)

    def set_links(
        self, params: LinkParams, links: Iterable[tuple[NodeId, NodeId]] | None = None
    ) -> None:
        for key in self.links if links is None else list(links):
            self.links[key] = params
        self.max_delay_us = max(self.max_delay_us, params.delay_max_us)

    def reset_links(self, pinned: bool = True) -> None:
        """Every link back to the default (clean) parameters, or the pinned ones (unless
        ``pinned`` is false)."""
        self._reset_links()
        if pinned:
            self.links.update(self.pinned)

    def pin(self, src: NodeId, dst: NodeId, params: LinkParams) -> None:
        """Keep ``params`` on src -> dst from now on, across resets (until unpinned)."""
        self.pinned[(src, dst)] = params
        self.set_link(src, dst, params)

    def unpin_all(self) -> None:
        self.pinned.clear()
        self._reset_links()

    # ---------------------------------------------------------------- partitions
    def is_blocked(self, src: NodeId, dst: NodeId) -> bool:
        return (src, dst) in self.blocked

    def split(self, groups: Sequence[Iterable[NodeId]]) -> None:
        """Block every link between nodes of different groups (nodes in no group: all cut)."""
        where: dict[NodeId, int] = {}
        for gi, group in enumerate(groups):
            for nid in group:
                where[nid] = gi
        for a in self.ids:
            for b in self.ids:
                if a != b and (a not in where or where.get(a) != where.get(b)):
                    self.blocked.add((a, b))

    def connect_only(self, allowed: Iterable[tuple[NodeId, NodeId]]) -> None:
        """Block every link except the given (undirected) pairs."""
        ok = set()
        for a, b in allowed:
            ok.add((a, b))
            ok.add((b, a))
        for a in self.ids:
            for b in self.ids:
                if a != b and (a, b) not in ok:
                    self.blocked.add((a, b))

    def cut(self, src: NodeId, dst: NodeId) -> None:
        """One-way cut: messages from ``src`` to ``dst`` are lost; the reverse still flows."""
        self.blocked.add((src, dst))

    def heal(self) -> None:
        self.blocked.clear()

    # ---------------------------------------------------------------- sending
    def plan(self, src: NodeId, dst: NodeId, kind: str = "", now: int = 0) -> tuple[int, ...]:
        """The delays (us) of each copy of one message sent now: 0, 1 or 2 copies.

        ``kind``: the message's class name, for links whose loss is per message type;
        ``now``: the current time, for FIFO links."""
        self.sent += 1
        if (src, dst) in self.blocked:
            self.dropped += 1
            return ()
        p = self.links[(src, dst)]
        r = self.rng.random
        if p.drop and (not p.drop_kinds or kind in p.drop_kinds) and r() < p.drop:
            self.dropped += 1
            return ()
        span = p.delay_max_us - p.delay_min_us + 1
        first = p.delay_min_us + int(r() * span)
        out: tuple[int, ...] = (first,)
        if p.dup and r() < p.dup:
            self.duplicated += 1
            out = (first, p.delay_min_us + int(r() * span))
        if p.fifo:
            key = (src, dst)
            last = self.last_arrival.get(key, 0) - now
            out = tuple(sorted(max(d, last) for d in out))
            self.last_arrival[key] = now + out[-1]
        return out
