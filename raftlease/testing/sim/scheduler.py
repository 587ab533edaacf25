"""The event scheduler (:class:`SimScheduler`, the lowest layer of SimCluster): virtual time,
the heap of timed events, the loops that run it, and the queries every layer uses.

Time is an integer number of microseconds. Events sit on a heap ordered by (time, seq):
node ticks, message deliveries, client requests and answers, and scheduled actions
(workload, faults, tests). ``seq`` counts every push, so events due at one instant run in
the order they were scheduled. What an event does is the driver's business
(:meth:`SimDriver._dispatch <raftlease.testing.sim.driver.SimDriver._dispatch>`).
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Any

from raftlease.config import RaftConfig
from raftlease.types import NodeId, Role

if TYPE_CHECKING:
    import itertools
    import random
    from collections.abc import Callable

    from raftlease.testing.sim.model import SimNode

TICK = 0
MSG = 1
ACTION = 2
CREQ = 3  # a client request reaches a node (index: the node)
CREP = 4  # a node's answer reaches a client (index: the client)

# An event: (time_us, seq, kind, node index, payload). (time, seq) is unique, so the payload
# is never compared.
Event = tuple[int, int, int, int, Any]


class SimScheduler:
    """Virtual time and the event loop. The attributes below are set by
    ``SimCluster.__init__`` (cluster.py); each layer declares the ones it reads."""

    ids: tuple[NodeId, ...]  # every node: the bootstrap voters, then the spares
    voter_ids: tuple[NodeId, ...]  # the bootstrap voters (the spares start with no config)
    nodes: list[SimNode]
    _by_id: dict[NodeId, SimNode]
    config_overrides: dict[str, Any]
    tick_us: int
    trace: Callable[[str], None] | None
    now: int
    events: int  # events processed so far
    _heap: list[Event]
    _seq: itertools.count[int]
    workload_rng: random.Random
    workload_on: bool  # False: the periodic workload (``_every``) stops acting

    if TYPE_CHECKING:

        def _dispatch(self, ev: Event) -> None:
            """Process one event: the driver (driver.py)."""

    # ================================================================ configuration and queries
    def config_for(self, nid: NodeId) -> RaftConfig:
        """A bootstrap voter's RaftConfig lists the bootstrap voters; a spare's lists none
        (it joins: no configuration until a leader replicates one that contains it)."""
        voters = self.voter_ids if nid in self.voter_ids else ()
        return RaftConfig(node_id=nid, voters=voters, **self.config_overrides)

    def node(self, nid: str) -> SimNode:
        return self._by_id[NodeId(nid)]

    def note(self, text: str) -> None:
        """Add a line to the transcript (if tracing), stamped with the virtual time."""
        self._log(text)

    def _log(self, text: str) -> None:
        if self.trace is not None:
            self.trace(f"[{self.now / 1000:10.3f}ms] {text}")

    def leader(self, *, saving: bool = False) -> SimNode | None:
        """The running (up, not paused) leader in the highest term, or None. ``saving``:
        also one in the middle of a slow save (paused for client calls, not stopped), as a
        SIGSTOP sees it."""
        best: SimNode | None = None
        for node in self.nodes:
            core = node.core
            if (
                node.up
                and not node.stopped
                and (saving or not node.paused)
                and core is not None
                and core.role is Role.LEADER
                and (best is None or (best.core is not None and core.term > best.core.term))
            ):
                best = node
        return best

    def lease_holders(self) -> list[NodeId]:
        return [n.id for n in self.nodes if n.lease]

    # ================================================================ event loop
    def _push(self, at_us: int, kind: int, index: int, payload: Any) -> None:
        heapq.heappush(self._heap, (at_us, next(self._seq), kind, index, payload))

    def at(self, at_us: int, action: Callable[[], None]) -> None:
        """Run ``action`` at virtual time ``at_us`` (not earlier than now)."""
        self._push(max(at_us, self.now), ACTION, -1, action)

    def after(self, delay_us: int, action: Callable[[], None]) -> None:
        self.at(self.now + delay_us, action)

    def _every(self, span: tuple[int, int], action: Callable[[], None]) -> None:
        lo, hi = span
        rng = self.workload_rng

        def fire() -> None:
            if self.workload_on:
                action()
            self.after(rng.randint(lo, hi), fire)

        self.after(rng.randint(lo, hi), fire)

    def run_until(self, t_us: int) -> None:
        """Process every event up to and including time ``t_us``."""
        heap = self._heap
        while heap and heap[0][0] <= t_us:
            self._dispatch(heapq.heappop(heap))
        if t_us > self.now:
            self.now = t_us

    def run_for(self, us: int) -> None:
        self.run_until(self.now + us)

    def run_until_true(self, pred: Callable[[], bool], limit_us: int) -> bool:
        """Run until ``pred()`` holds (checked after every event) or ``limit_us`` passes."""
        heap = self._heap
        end = self.now + limit_us
        if pred():
            return True
        while heap and heap[0][0] <= end:
            self._dispatch(heapq.heappop(heap))
            if pred():
                return True
        self.now = max(self.now, end)
        return pred()
