"""grpc.aio peer transport, both directions of ``RaftPeer.Send``.

Sending (:class:`GrpcTransport`): one long-lived client stream per peer. Messages are one-way,
as the core is asynchronous. Each link has a bounded queue; a full queue or a dead link drops
messages (Raft retransmits). A broken stream reconnects with jittered exponential backoff.
gRPC keepalive pings cut a silently dead TCP connection within about two seconds, so a healed
partition does not replay a stale backlog for long.

Receiving (:class:`PeerServicer`): the RaftPeer service. It refuses a link whose safety
settings differ from this node's, drops nothing silently (a message from another cluster, a
stranger or for another node ends the stream with a status that says so), decodes the rest
and hands them to a ``receive`` callable. It knows nothing of the node: the server wires it.
Layer L4 (imports grpc).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from typing import TYPE_CHECKING, Any, NoReturn

import grpc

from raftlease.codec import message_from_pb, message_to_pb
from raftlease.v1 import raft_pb2, raft_pb2_grpc

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable, Sequence

    from raftlease.core.messages import Message

log = logging.getLogger("raftlease.transport")

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
QUEUE_LIMIT = 8192
MIN_BACKOFF_S = 0.02
MAX_BACKOFF_S = 0.2
BATCH_LIMIT = 256

CHANNEL_OPTIONS: list[tuple[str, int | str]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 1000),
    ("grpc.keepalive_timeout_ms", 1000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 200),
    ("grpc.enable_retries", 0),
]


# The URI SAN a node's certificate names its node id with (raftlease/certs.py makes them).
NODE_URI_PREFIX = "raftlease://node/"

# gRPC metadata key of the peer handshake: the sender's NodeConfig.safety_settings().
SETTINGS_METADATA_KEY = "raftlease-safety-settings"
# Where the dialing node listens for peers: a node learns the address of a member its
# configuration does not name yet (a new leader, seen by a member whose log lags) from it.
ADDRESS_METADATA_KEY = "raftlease-peer-address"


class _Link:
    def __init__(
        self,
        peer_id: str,
        address: str,
        cluster_id: str,
        settings: str,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.peer_id = peer_id
        self.address = address
        self.credentials = credentials  # TLS: verify the peer, present our certificate
        self.cluster_id = cluster_id
        self.metadata: tuple[tuple[str, str], ...] = ((SETTINGS_METADATA_KEY, settings),)
        self.refusal: str | None = None  # the peer's last reason for refusing this link
        self.queue: asyncio.Queue[Message] = asyncio.Queue(QUEUE_LIMIT)
        self.task: asyncio.Task[None] | None = None

    async def _next_batch(self) -> raft_pb2.PeerBatch:
        queue = self.queue
        cid = self.cluster_id
        first = await queue.get()
        batch = raft_pb2.PeerBatch()
        batch.messages.append(message_to_pb(first, cid))
        n = 1
        while n < BATCH_LIMIT and not queue.empty():
            batch.messages.append(message_to_pb(queue.get_nowait(), cid))
            n += 1
        return batch

    async def _pump(self, call: grpc.aio.StreamUnaryCall[raft_pb2.PeerBatch, Any]) -> None:
        """Write batches on ``call`` until it fails.

        Written by this task with ``call.write`` rather than handed to grpc as a request
        iterator: a dead call's iterator task would stay parked on the shared queue and
        swallow the next messages after a reconnect (seen as ~1 s stalled elections after a
        peer restarted).
        """
        while True:
            batch = await self._next_batch()
            await call.write(batch)

    def _broke(self, code: grpc.StatusCode, details: str | None) -> None:
        if code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.PERMISSION_DENIED):
            # The peer refused this link (another cluster, a stranger, other safety settings).
            # It will refuse every reconnect too: log each distinct refusal once.
            if details != self.refusal:
                self.refusal = details
                log.error("peer %s at %s refused us: %s", self.peer_id, self.address, details)
        else:
            log.debug("link to %s at %s broke: %s", self.peer_id, self.address, code)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = MIN_BACKOFF_S
        while True:
            started = loop.time()
            if self.credentials is None:
                channel = grpc.aio.insecure_channel(self.address, options=CHANNEL_OPTIONS)
            else:
                channel = grpc.aio.secure_channel(
                    self.address, self.credentials, options=CHANNEL_OPTIONS
                )
            call = None
            try:
                stub = raft_pb2_grpc.RaftPeerStub(channel)
                call = stub.Send(metadata=self.metadata)
                await self._pump(call)
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as e:
                self._broke(e.code(), e.details())
            except Exception as e:  # a write on a call the peer already ended, and the like
                if call is not None and call.done():
                    # The peer ended the call (e.g. refused the link): say why it did.
                    self._broke(await call.code(), await call.details())
                else:
                    log.debug("link to %s at %s broke: %r", self.peer_id, self.address, e)
            finally:
                if call is not None:
                    call.cancel()
                with contextlib.suppress(Exception):
                    await channel.close(grace=None)
            # Drop what queued up while the link was down: Raft resends what still matters.
            while not self.queue.empty():
                self.queue.get_nowait()
            if loop.time() - started > 1.0:
                backoff = MIN_BACKOFF_S  # the link worked: a fresh failure starts over
            await asyncio.sleep(backoff * (0.5 + random.random()))
            # Capped low: a peer that comes back must hear our votes within a fraction of an
            # election timeout, or its first election after rejoining stalls (seen in W4).
            backoff = min(backoff * 2, MAX_BACKOFF_S)


def parse_faults(spec: str) -> dict[str, float]:
    """``"dup=0.05;reorder=0.05;drop=0.1"`` -> probabilities (fault injection only)."""
    faults: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        key, sep, value = part.partition("=")
        if not sep or key not in ("dup", "reorder", "drop"):
            raise ValueError(f"bad transport fault {part!r}: expected dup=P, reorder=P or drop=P")
        p = float(value)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"transport fault {key} must be a probability in [0, 1], got {p}")
        faults[key] = p
    return faults


class GrpcTransport:
    """Outbound links to every peer. Create it inside the running event loop.

    ``RAFTLEASE_TRANSPORT_FAULTS="dup=0.05;reorder=0.05;drop=0.1"`` (off by default) makes
    ``send`` duplicate, reorder (hold one message back past the next) or drop messages, so
    real-process tests can exercise what a TCP proxy cannot produce.
    """

    def __init__(
        self,
        node_id: str,
        cluster_id: str,
        peers: dict[str, str],
        settings: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        """``settings``: this node's ``NodeConfig.safety_settings()``, sent when a link opens;
        a peer whose own settings differ refuses the link. ``credentials``: TLS credentials
        to dial the peers with (None: plaintext)."""
        self.links = {
            pid: _Link(pid, addr, cluster_id, settings, credentials)
            for pid, addr in peers.items()
            if pid != node_id
        }
        self.faults = parse_faults(os.environ.get("RAFTLEASE_TRANSPORT_FAULTS", ""))
        self._held: list[Message] = []
        own_address = peers.get(node_id, "")
        for link in self.links.values():
            if own_address:
                link.metadata += ((ADDRESS_METADATA_KEY, own_address),)
            link.task = asyncio.get_running_loop().create_task(link.run())
        self._node_id = node_id
        self._own_address = own_address
        self._link_args = (cluster_id, settings, credentials)

    def set_peers(self, peers: dict[str, str]) -> None:
        """The membership changed: open links to new peers (or moved addresses), close the
        links of peers that left. Called from the node's loop."""
        loop = asyncio.get_running_loop()
        for pid in [p for p, link in self.links.items() if peers.get(p) != link.address]:
            link = self.links.pop(pid)
            if link.task is not None:
                link.task.cancel()
        for pid, addr in peers.items():
            if pid != self._node_id and pid not in self.links and addr:
                link = _Link(pid, addr, *self._link_args)
                if self._own_address:
                    link.metadata += ((ADDRESS_METADATA_KEY, self._own_address),)
                link.task = loop.create_task(link.run())
                self.links[pid] = link

    def _with_faults(self, messages: Sequence[Message]) -> list[Message]:
        f = self.faults
        out: list[Message] = []
        for m in messages:
            if random.random() < f.get("drop", 0.0):
                continue
            if random.random() < f.get("reorder", 0.0):
                self._held.append(m)
                continue
            out.append(m)
            if random.random() < f.get("dup", 0.0):
                out.append(m)
            if self._held:
                out.extend(self._held)
                self._held.clear()
        return out

    def send(self, messages: Sequence[Message]) -> None:
        if self.faults:
            messages = self._with_faults(messages)
        links = self.links
        for m in messages:
            link = links.get(m.dst)
            if link is None:
                continue
            try:
                link.queue.put_nowait(m)
            except asyncio.QueueFull:
                continue  # dropped: Raft resends what still matters

    async def close(self) -> None:
        tasks = [link.task for link in self.links.values() if link.task is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self.links.clear()


_Ctx = grpc.aio.ServicerContext[Any, Any]


async def _refuse(context: _Ctx, code: grpc.StatusCode, msg: str) -> NoReturn:
    await context.abort(code, msg)
    raise AssertionError("unreachable")  # pragma: no cover - abort always raises


class PeerServicer(raft_pb2_grpc.RaftPeerServicer):
    """The receiving side of peer links: ``RaftPeer.Send`` streams from the other members."""

    def __init__(
        self,
        *,
        receive: Callable[[Message], None],
        cluster_id: str,
        members: Iterable[str],
        node_id: str,
        settings: str,
        stopping: Callable[[], bool],
        verify_identity: bool = False,
        learn_address: Callable[[str, str], None] | None = None,
    ) -> None:
        """``receive``: called with each decoded message, in order (never blocks).
        ``members``: every voter's id (this node's included); ``settings``: this node's
        ``NodeConfig.safety_settings()``, which a peer's handshake must equal.
        ``stopping``: true once the node shuts down (a cancelled stream is then no error).
        ``verify_identity`` (mutual TLS): the peer's certificate must name one node, as the
        URI SAN ``raftlease://node/<id>``, and every message must come from that node."""
        self._receive = receive
        self.cluster_id = cluster_id
        self.members = frozenset(members)
        self.node_id = node_id
        self.settings = settings
        self._stopping = stopping
        self.verify_identity = verify_identity
        self.learn_address = learn_address  # (sender id, its advertised peer address)
        self._refusals_logged: set[str] = set()

    def _log_refusal(self, text: str) -> None:
        # A refused peer reconnects every few hundred ms: log each distinct refusal once.
        if text not in self._refusals_logged:
            self._refusals_logged.add(text)
            log.error("refusing a peer link: %s", text)

    async def _certified_node(self, context: _Ctx) -> str:
        """The node id the peer's certificate names (its ``raftlease://node/<id>`` URI SAN),
        or refuse the link: without one it is a client's or a stranger's certificate."""
        uris = [v.decode("utf-8", "replace") for v in context.auth_context().get("peer_uri", ())]
        ids = {u[len(NODE_URI_PREFIX) :] for u in uris if u.startswith(NODE_URI_PREFIX)}
        if len(ids) == 1:
            return ids.pop()  # each message's sender is checked against it (and the members)
        if ids:
            text = f"the peer's certificate names several nodes ({', '.join(sorted(ids))})"
        else:
            text = (
                "the peer's certificate names no node (a URI SAN "
                f"{NODE_URI_PREFIX}<id>): only member nodes may send Raft messages"
            )
        self._log_refusal(text)
        await _refuse(context, grpc.StatusCode.PERMISSION_DENIED, text)

    async def Send(
        self,
        request_iterator: AsyncIterator[raft_pb2.PeerBatch],
        context: _Ctx,
    ) -> raft_pb2.SendSummary:
        receive = self._receive
        cid = self.cluster_id
        me = self.node_id
        received = 0
        certified = await self._certified_node(context) if self.verify_identity else None
        handshake = dict(context.invocation_metadata() or ())
        theirs = handshake.get(SETTINGS_METADATA_KEY)
        said = handshake.get(ADDRESS_METADATA_KEY) if self.learn_address else None
        advertised = said if isinstance(said, str) else None
        if theirs != self.settings:
            # Safety settings must match on every node (docs/safety.md, L1): refuse the link,
            # so a peer with another tick or election timeout changes no term here.
            said = repr(theirs) if theirs is not None else "none"
            text = (
                f"safety settings differ: the peer sent {said}, node {me} runs with "
                f"{self.settings!r}; every node of a cluster needs the same tick, election "
                "timeout, heartbeat, lease and max drift"
            )
            self._log_refusal(text)
            await _refuse(context, grpc.StatusCode.FAILED_PRECONDITION, text)
        try:
            async for batch in request_iterator:
                for pm in batch.messages:
                    if pm.cluster_id != cid:
                        await _refuse(
                            context,
                            grpc.StatusCode.FAILED_PRECONDITION,
                            f"message from cluster {pm.cluster_id!r}; this node belongs to {cid!r}",
                        )
                    if not pm.src or pm.src == me:
                        # Any other node of this cluster may send: a node whose log lags
                        # must hear a leader added after its newest configuration (the
                        # cluster id, the safety settings and, with TLS, the certificate
                        # are the gate; docs/membership.md).
                        await _refuse(
                            context,
                            grpc.StatusCode.PERMISSION_DENIED,
                            f"a peer message needs a source other than {me!r}, got {pm.src!r}",
                        )
                    if certified is not None and pm.src != certified:
                        text = (
                            f"a message from {pm.src!r} came over a link whose certificate "
                            f"names node {certified!r}: refused"
                        )
                        self._log_refusal(text)
                        await _refuse(context, grpc.StatusCode.PERMISSION_DENIED, text)
                    if pm.dst != me:
                        await _refuse(
                            context,
                            grpc.StatusCode.FAILED_PRECONDITION,
                            f"message for {pm.dst!r} reached node {me!r}",
                        )
                    try:
                        msg = message_from_pb(pm)
                    except ValueError as e:
                        await _refuse(context, grpc.StatusCode.INVALID_ARGUMENT, str(e))
                    if advertised and self.learn_address is not None:
                        self.learn_address(pm.src, advertised)  # once per link
                        advertised = None
                    receive(msg)
                    received += 1
        except asyncio.CancelledError:
            if self._stopping():
                # Graceful shutdown ends the long-lived peer streams: not an error.
                return raft_pb2.SendSummary(received=received)
            raise
        return raft_pb2.SendSummary(received=received)
