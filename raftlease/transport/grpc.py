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
from raftlease.transport import tcp
from raftlease.v1 import raft_pb2, raft_pb2_grpc

if TYPE_CHECKING:
    import ssl
    from collections.abc import AsyncIterator, Callable, Iterable, Sequence

    from raftlease.core.messages import Message

log = logging.getLogger("raftlease.transport")

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
QUEUE_LIMIT = 8192
MIN_BACKOFF_S = 0.02
MAX_BACKOFF_S = 0.2
BATCH_LIMIT = 256
# How long a dialer waits for the peer's answer about the TCP link (and for that link's hello).
ANNOUNCE_TIMEOUT_S = 1.0
# How long a link waits for its gRPC channel to connect before it starts over (dropping what
# queued meanwhile, so a healed partition does not replay a stale backlog).
CONNECT_TIMEOUT_S = 1.0

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
    # Its own connection per channel: a link that moved to TCP closes its channel, and with
    # the process-wide pool an earlier channel's subchannel could keep that connection up.
    ("grpc.use_local_subchannel_pool", 1),
]


# The URI SAN a node's certificate names its node id with (raftlease/certs.py makes them).
NODE_URI_PREFIX = "raftlease://node/"

# gRPC metadata key of the peer handshake: the sender's NodeConfig.safety_settings().
SETTINGS_METADATA_KEY = "raftlease-safety-settings"
# Where the dialing node listens for peers: a node learns the address of a member its
# configuration does not name yet (a new leader, seen by a member whose log lags) from it.
ADDRESS_METADATA_KEY = "raftlease-peer-address"
# The receiving node's answer, as initial metadata of ``Send``: the port of its plain-TCP
# peer link, or "off" (raftlease/transport/tcp.py).
LINK_PORT_METADATA_KEY = "raftlease-link-port"


class _Link:
    def __init__(
        self,
        peer_id: str,
        address: str,
        cluster_id: str,
        settings: str,
        credentials: grpc.ChannelCredentials | None = None,
        hello: dict[str, str] | None = None,
        tcp_address: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.peer_id = peer_id
        self.address = address
        # The plain-TCP link (raftlease/transport/tcp.py): the hello it opens with (None: this
        # node never moves off gRPC), where to dial it if not at the port the peer announces,
        # and, while it is up, its writer (``GrpcTransport.send`` writes frames straight on it).
        self.hello = hello
        self.tcp_address = tcp_address
        self.ssl_context = ssl_context  # with TLS: the TCP link is mutual TLS too
        self.writer: asyncio.StreamWriter | None = None
        self.tcp_warned: str | None = None
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

    async def _tcp_link(
        self, call: grpc.aio.StreamUnaryCall[raft_pb2.PeerBatch, Any]
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """The plain-TCP link, once the peer announced one and it answered; None if it
        announced none ("off", or the call ended: a refusal shows on the gRPC side) or its port
        does not answer. Raises tcp.LinkRefused if the peer refused the TCP link."""
        md = await call.initial_metadata()
        port = dict(md or ()).get(LINK_PORT_METADATA_KEY)
        if self.hello is None or not isinstance(port, str) or not port.isdigit():
            return None
        host = self.address.rpartition(":")[0]
        address = self.tcp_address or f"{host}:{port}"
        try:
            return await tcp.dial(
                address,
                self.hello,
                wait_s=ANNOUNCE_TIMEOUT_S,
                ssl_context=self.ssl_context,
                server_hostname=host.strip("[]"),
            )
        except (OSError, TimeoutError, ValueError) as e:
            reason = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            if self.tcp_warned != reason:
                self.tcp_warned = reason
                log.warning(
                    "peer %s announced its TCP link at %s, which does not answer (%s): Raft "
                    "messages to %s stay on gRPC (open that port, or see --peer-listen)",
                    self.peer_id,
                    address,
                    reason,
                    self.peer_id,
                )
            return None

    async def _open(
        self, call: grpc.aio.StreamUnaryCall[raft_pb2.PeerBatch, Any]
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Carry this link's messages on ``call`` until the peer's answer about the TCP link
        comes; the TCP link once it is up (``call`` then ends with nothing more on it). With
        no TCP link, carry them on ``call`` until it ends, then raise why. An older node
        announces nothing before the call ends: its messages go over gRPC all along."""
        loop = asyncio.get_running_loop()
        announced = loop.create_task(self._tcp_link(call))
        pump: asyncio.Task[None] | None = None
        ended: asyncio.Task[grpc.StatusCode] | None = None
        try:
            done, _ = await asyncio.wait({announced}, timeout=ANNOUNCE_TIMEOUT_S)
            if not done:
                # No answer yet (a peer still starting, an older version): meanwhile, gRPC.
                log.debug("link to %s: no answer about its TCP link yet: on gRPC", self.peer_id)
                pump = loop.create_task(self._pump(call))
                await asyncio.wait({announced, pump}, return_when=asyncio.FIRST_COMPLETED)
            if pump is not None and pump.done():
                pump.result()  # the call broke: raises why
            link = announced.result()
            if link is None:
                # No TCP link: gRPC carries the messages until the call ends. Watch for that
                # end, not only for a failed write: a call the peer refused (or an older peer
                # ended) must start over now, not when the next message finds it dead (an
                # idle link, between two followers, would wait for that, and lose it). The
                # call may not read as done yet when its empty metadata comes.
                if pump is None:
                    pump = loop.create_task(self._pump(call))
                ended = loop.create_task(call.code())
                await asyncio.wait({pump, ended}, return_when=asyncio.FIRST_COMPLETED)
                if pump.done():
                    pump.result()  # the call broke: raises why
                raise ConnectionError("the peer ended the link")
            self.tcp_warned = None
            with contextlib.suppress(Exception):
                await call.done_writing()
                await asyncio.wait_for(call, ANNOUNCE_TIMEOUT_S)
            return link
        finally:
            # Waited for with asyncio.wait, not awaited: a CancelledError raised into this
            # frame would tie its traceback to the task (a cycle), keeping ``call`` alive.
            tasks: tuple[asyncio.Task[Any] | None, ...] = (announced, pump, ended)
            left = {t for t in tasks if t is not None and not t.done()}
            for task in left:
                task.cancel()
            if left:
                await asyncio.wait(left)
            # A failed task holds the error this frame raises, whose traceback holds this
            # frame: drop the tasks, or that cycle keeps ``call`` and its connection up.
            announced = pump = ended = tasks = None  # type: ignore[assignment]

    async def _pump_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Carry this link's messages on the TCP connection until it ends: ``send`` writes
        them straight on ``writer`` from now on; what queued meanwhile goes first."""
        pending: list[Message] = []
        while not self.queue.empty():
            pending.append(self.queue.get_nowait())
        self.writer = writer
        try:
            if pending:
                write_frames(writer, [message_to_pb(m, self.cluster_id) for m in pending])
            await tcp.until_closed(reader)
            log.debug("TCP link to %s at %s closed", self.peer_id, self.address)
        finally:
            self.writer = None
            writer.close()

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
                # Connected first: a call opened on a channel that is still connecting waits,
                # unanswered, until its first write fails, even once the peer is up; an idle
                # link (a follower's to another follower) would never move to TCP.
                await asyncio.wait_for(channel.channel_ready(), CONNECT_TIMEOUT_S)
                stub = raft_pb2_grpc.RaftPeerStub(channel)
                call = stub.Send(metadata=self.metadata)
                link = await self._open(call)
                # The gRPC call ended; close its channel, or its connection stays up with
                # keepalive pings. A call still referenced keeps it up too.
                call = None
                with contextlib.suppress(Exception):
                    await channel.close(grace=None)
                await self._pump_tcp(*link)
            except asyncio.CancelledError:
                raise
            except TimeoutError:
                log.debug("link to %s at %s: no connection yet", self.peer_id, self.address)
            except tcp.LinkRefused as e:
                code = getattr(grpc.StatusCode, e.code, grpc.StatusCode.UNKNOWN)
                self._broke(code, e.text)
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


def write_frames(writer: asyncio.StreamWriter, pms: list[raft_pb2.PeerMessage]) -> None:
    """Write ``pms`` on a TCP link as one batch (no await); dropped if the link is closing or
    already holds WRITE_BUFFER_LIMIT unsent bytes (a stalled peer): Raft resends."""
    transport = writer.transport
    if transport.is_closing() or transport.get_write_buffer_size() > tcp.WRITE_BUFFER_LIMIT:
        return
    batch = raft_pb2.PeerBatch()
    batch.messages.extend(pms)
    transport.write(tcp.batch_frames(batch, pms))


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
        tcp_links: bool = True,
        tcp_addresses: dict[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """``settings``: this node's ``NodeConfig.safety_settings()``, sent when a link opens;
        a peer whose own settings differ refuses the link. ``credentials``: TLS credentials
        to dial the peers with (None: plaintext). ``tcp_links``: move to a peer's TCP link
        when it announces one; with ``credentials``, only given ``ssl_context`` (the same
        certificate and CA for the TCP link's mutual TLS). ``tcp_addresses``: where to dial a
        peer's TCP link instead of the announced port on its host (a proxy, NAT)."""
        self._node_id = node_id
        self._own_address = peers.get(node_id, "")
        self._link_args = (cluster_id, settings, credentials)
        self._tcp = tcp_links and (credentials is None or ssl_context is not None)
        self._ssl = ssl_context
        self._tcp_addresses = dict(tcp_addresses or {})
        self.links: dict[str, _Link] = {}
        self.faults = parse_faults(os.environ.get("RAFTLEASE_TRANSPORT_FAULTS", ""))
        self._held: list[Message] = []
        self.set_peers(peers)

    def _new_link(self, pid: str, address: str) -> _Link:
        cluster_id, settings, _ = self._link_args
        hello = None
        if self._tcp:
            hello = {
                "cluster_id": cluster_id,
                "src": self._node_id,
                "dst": pid,
                "settings": settings,
                "address": self._own_address,
            }
        link = _Link(
            pid,
            address,
            *self._link_args,
            hello=hello,
            tcp_address=self._tcp_addresses.get(pid),
            ssl_context=self._ssl,
        )
        if self._own_address:
            link.metadata += ((ADDRESS_METADATA_KEY, self._own_address),)
        link.task = asyncio.get_running_loop().create_task(link.run())
        return link

    def set_peers(self, peers: dict[str, str]) -> None:
        """The membership changed: open links to new peers (or moved addresses), close the
        links of peers that left. Called from the node's loop."""
        for pid in [p for p, link in self.links.items() if peers.get(p) != link.address]:
            link = self.links.pop(pid)
            if link.task is not None:
                link.task.cancel()
        for pid, addr in peers.items():
            if pid != self._node_id and pid not in self.links and addr:
                self.links[pid] = self._new_link(pid, addr)

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
        framed: dict[_Link, list[raft_pb2.PeerMessage]] | None = None
        for m in messages:
            link = links.get(m.dst)
            if link is None:
                continue
            if link.writer is not None:
                # On the TCP link: one frame per peer for this whole call, written below.
                if framed is None:
                    framed = {}
                framed.setdefault(link, []).append(message_to_pb(m, link.cluster_id))
                continue
            try:
                link.queue.put_nowait(m)
            except asyncio.QueueFull:
                continue  # dropped: Raft resends what still matters
        if framed:
            for link, pms in framed.items():
                if link.writer is not None:
                    write_frames(link.writer, pms)

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
        self.receive = receive
        self.cluster_id = cluster_id
        self.members = frozenset(members)
        self.node_id = node_id
        self.settings = settings
        self._stopping = stopping
        self.verify_identity = verify_identity
        self.learn_address = learn_address  # (sender id, its advertised peer address)
        self._refusals_logged: set[str] = set()
        # The port this node takes plain-TCP peer links on (set once its listener is up);
        # None: it takes none, and peers keep sending over this service.
        self.tcp_port: int | None = None

    def link_port(self) -> str:
        """What ``Send`` announces in its initial metadata: the TCP link port, or "off"."""
        return str(self.tcp_port) if self.tcp_port else "off"

    def _log_refusal(self, text: str) -> None:
        # A refused peer reconnects every few hundred ms: log each distinct refusal once.
        if text not in self._refusals_logged:
            self._refusals_logged.add(text)
            log.error("refusing a peer link: %s", text)

    def certified_node(self, uris: Iterable[str]) -> tuple[str | None, str | None]:
        """(the node id a peer certificate's URI SANs name, None), or (None, why the link is
        refused): a certificate naming no node is a client's or a stranger's."""
        ids = {u[len(NODE_URI_PREFIX) :] for u in uris if u.startswith(NODE_URI_PREFIX)}
        if len(ids) == 1:
            return ids.pop(), None  # each message's sender is checked against it
        if ids:
            text = f"the peer's certificate names several nodes ({', '.join(sorted(ids))})"
        else:
            text = (
                "the peer's certificate names no node (a URI SAN "
                f"{NODE_URI_PREFIX}<id>): only member nodes may send Raft messages"
            )
        self._log_refusal(text)
        return None, text

    async def _certified_node(self, context: _Ctx) -> str:
        """The node id the peer's certificate names (its ``raftlease://node/<id>`` URI SAN),
        or refuse the link."""
        uris = [v.decode("utf-8", "replace") for v in context.auth_context().get("peer_uri", ())]
        node, text = self.certified_node(uris)
        if node is not None:
            return node
        await _refuse(context, grpc.StatusCode.PERMISSION_DENIED, str(text))

    def settings_refusal(self, theirs: object) -> str | None:
        """Why a link announcing safety settings ``theirs`` is refused, or None."""
        if theirs == self.settings:
            return None
        # Safety settings must match on every node (docs/safety.md, L1): refuse the link,
        # so a peer with another tick or election timeout changes no term here.
        said = repr(theirs) if theirs is not None else "none"
        text = (
            f"safety settings differ: the peer sent {said}, node {self.node_id} runs with "
            f"{self.settings!r}; every node of a cluster needs the same tick, election "
            "timeout, heartbeat, lease and max drift"
        )
        self._log_refusal(text)
        return text

    def message_refusal(
        self, pm: raft_pb2.PeerMessage, certified: str | None
    ) -> tuple[grpc.StatusCode, str] | None:
        """Why a link that carried ``pm`` is refused (the status code and its text), or None.
        ``certified``: the node the link's certificate names (mutual TLS), else None."""
        me = self.node_id
        if pm.cluster_id != self.cluster_id:
            return (
                grpc.StatusCode.FAILED_PRECONDITION,
                f"message from cluster {pm.cluster_id!r}; this node belongs to {self.cluster_id!r}",
            )
        if not pm.src or pm.src == me:
            # Any other node of this cluster may send: a node whose log lags must hear a
            # leader added after its newest configuration (the cluster id, the safety settings
            # and, with TLS, the certificate are the gate; docs/membership.md).
            return (
                grpc.StatusCode.PERMISSION_DENIED,
                f"a peer message needs a source other than {me!r}, got {pm.src!r}",
            )
        if certified is not None and pm.src != certified:
            text = (
                f"a message from {pm.src!r} came over a link whose certificate names node "
                f"{certified!r}: refused"
            )
            self._log_refusal(text)
            return grpc.StatusCode.PERMISSION_DENIED, text
        if pm.dst != me:
            return (
                grpc.StatusCode.FAILED_PRECONDITION,
                f"message for {pm.dst!r} reached node {me!r}",
            )
        return None

    async def Send(
        self,
        request_iterator: AsyncIterator[raft_pb2.PeerBatch],
        context: _Ctx,
    ) -> raft_pb2.SendSummary:
        receive = self.receive
        received = 0
        certified = await self._certified_node(context) if self.verify_identity else None
        handshake = dict(context.invocation_metadata() or ())
        said = handshake.get(ADDRESS_METADATA_KEY) if self.learn_address else None
        advertised = said if isinstance(said, str) else None
        refused = self.settings_refusal(handshake.get(SETTINGS_METADATA_KEY))
        if refused is not None:
            await _refuse(context, grpc.StatusCode.FAILED_PRECONDITION, refused)
        # The link passed its checks: say where this node takes the plain-TCP link (or that
        # it takes none), so the dialer can move over to it (raftlease/transport/tcp.py).
        await context.send_initial_metadata(((LINK_PORT_METADATA_KEY, self.link_port()),))
        try:
            async for batch in request_iterator:
                for pm in batch.messages:
                    bad = self.message_refusal(pm, certified)
                    if bad is not None:
                        await _refuse(context, *bad)
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
