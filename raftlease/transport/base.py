"""The outbound peer-transport seam. Inbound messages reach ``Node.receive`` through the
transport's receiving side (``raftlease.transport.grpc.PeerServicer``), which the server wires.

Who calls it: the node's Ready loop, after persisting (the Ready contract). ``send`` never
blocks and may drop messages (a full queue, a dead link): Raft tolerates loss.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from raftlease.core.messages import Message


class Transport(Protocol):
    def send(self, messages: Sequence[Message]) -> None:
        """Queue messages for delivery; never blocks, never raises for a dead peer."""
        ...

    async def close(self) -> None:
        """Stop all links. Idempotent."""
        ...

    def set_peers(self, peers: dict[str, str]) -> None:
        """The membership changed: ``peers`` maps every member id to its peer address."""
        ...


class MemoryTransport:
    """In-process twin: delivers straight to the peers' ``receive`` (tests)."""

    def __init__(self) -> None:
        self.routes: dict[str, Callable[[Message], None]] = {}
        self.blocked: set[tuple[str, str]] = set()

    def send(self, messages: Sequence[Message]) -> None:
        for m in messages:
            if (m.src, m.dst) in self.blocked:
                continue
            route = self.routes.get(m.dst)
            if route is not None:
                route(m)

    async def close(self) -> None:
        self.routes.clear()

    def set_peers(self, peers: dict[str, str]) -> None:
        pass  # routes are registered by the test
