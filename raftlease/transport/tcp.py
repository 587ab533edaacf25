"""The plain-TCP peer link: one direction of Raft traffic as length-prefixed frames.

Why: on this project's 2-vCPU VM grpc.aio costs 0.52-0.60 ms of CPU per peer round trip
(a cygrpc write under the GIL, eventfd wake-ups, a future per message read), against
0.15-0.26 ms for a plain asyncio stream carrying the same protobuf (``bench/micro_transport.py``).
Heartbeats and their answers are most of an idle cluster's CPU (W5) and two of the hops of
every acquisition (W1), so peers move their Raft messages to a plain TCP connection once the
gRPC link has vetted them. Clients keep gRPC, and the RaftPeer service of the wire contract
keeps working: it is where every link starts, and where it stays when the TCP link is off.

Set-up (``raftlease.transport.grpc._Link`` dials, :class:`PeerListener` answers):

1. The dialer opens ``RaftPeer.Send`` as before. The receiver checks the handshake (the safety
   settings; with TLS, the certificate) and answers with initial metadata naming the port of
   its TCP link (``raftlease-link-port``), or ``off``.
2. Given a port, the dialer connects to it on the host it dialed (or at the address
   ``--peer-links`` names for that peer: a proxy, NAT), sends its hello frame and waits for the
   answer. On ``ok`` it ends the gRPC call and writes every later message on this connection,
   one frame per batch, with no await per message.
3. A peer that announces no port (an older version, ``--peer-listen off``) or whose port
   cannot be reached keeps the gRPC link; the dialer says so once in its log. With TLS the TCP
   link is mutual TLS with the node's certificate: the receiver takes only a certificate that
   names one node, and then only that node's messages (as the gRPC service does).

Frames: a 4-byte big-endian length, then the payload. The dialer's first frame is its hello,
a JSON object (``cluster_id``, ``src``, ``dst``, ``settings``, ``address``); the receiver answers
one JSON frame, ``{"ok": true}`` or ``{"refused": text, "code": status}``, and sends nothing
more unless it refuses a later frame (then it closes the connection). Every later frame is one
``raft_pb2.PeerBatch``, checked message by message by the same rules as the gRPC service
(``PeerServicer.message_refusal``): another cluster's message, a foreign destination or bytes
that are not a batch end the link with a refusal the dialer logs.

Dead connections: the dialer's socket sets TCP keepalive and ``TCP_USER_TIMEOUT``, so a vanished
peer, or bytes left unacknowledged for two seconds, end the connection and the dialer
reconnects with its backoff. Layer L4 (asyncio only; no grpc here).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from typing import TYPE_CHECKING, Any, cast

from google.protobuf.message import DecodeError

from raftlease.codec import message_from_pb
from raftlease.v1 import raft_pb2

if TYPE_CHECKING:
    import ssl
    from collections.abc import Sequence

    from raftlease.transport.grpc import PeerServicer

log = logging.getLogger("raftlease.transport")

HEADER_BYTES = 4
# A frame carries at most what one gRPC message may (an InstallSnapshot holds the lease table).
MAX_FRAME_BYTES = 64 * 1024 * 1024
# The hello and the answer are small JSON objects.
MAX_HELLO_BYTES = 64 * 1024
# Bytes a dialer may leave unsent before it drops messages (Raft resends what still matters).
WRITE_BUFFER_LIMIT = 16 * 1024 * 1024
USER_TIMEOUT_MS = 2000
OK = b'{"ok": true}'


def frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(HEADER_BYTES, "big") + payload


class FrameError(ValueError):
    """A length prefix over the limit: the stream is not this protocol, or is corrupt."""


class FrameReader:
    """Splits a byte stream into frames, however the bytes arrive."""

    __slots__ = ("buf", "limit")

    def __init__(self, limit: int) -> None:
        self.buf = bytearray()
        self.limit = limit

    def feed(self, data: bytes) -> list[bytes]:
        buf = self.buf
        buf += data
        frames: list[bytes] = []
        off, end = 0, len(buf)
        while end - off >= HEADER_BYTES:
            size = int.from_bytes(buf[off : off + HEADER_BYTES], "big")
            if size > self.limit:
                raise FrameError(
                    f"a frame of {size} bytes is over the limit of {self.limit}: "
                    "not a raftlease peer link, or a corrupt one"
                )
            start = off + HEADER_BYTES
            if end - start < size:
                break
            frames.append(bytes(buf[start : start + size]))
            off = start + size
        if off:
            del buf[:off]
        return frames


class LinkRefused(Exception):
    """The receiving node refused the link; ``code`` names the gRPC status it would use."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


def tune(sock: socket.socket | None) -> None:
    """No Nagle delay; keepalive probes and a user timeout end a connection to a peer that
    vanished (the gRPC link's keepalive pings did that before)."""
    if sock is None:
        return
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (
        ("TCP_KEEPIDLE", 1),
        ("TCP_KEEPINTVL", 1),
        ("TCP_KEEPCNT", 2),
        ("TCP_USER_TIMEOUT", USER_TIMEOUT_MS),
    ):
        option = getattr(socket, name, None)
        if option is not None:  # Linux has them all; elsewhere the defaults stay
            sock.setsockopt(socket.IPPROTO_TCP, option, value)


async def _read_frame(reader: asyncio.StreamReader, limit: int) -> bytes:
    size = int.from_bytes(await reader.readexactly(HEADER_BYTES), "big")
    if size > limit:
        raise FrameError(f"an answer frame of {size} bytes (limit {limit})")
    return await reader.readexactly(size)


def _answer(payload: bytes) -> dict[str, Any]:
    try:
        answer = json.loads(payload)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise FrameError(f"the peer's answer is not a JSON object: {payload[:80]!r}")
    return answer


async def dial(
    address: str,
    hello: dict[str, str],
    *,
    wait_s: float,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to a peer's TCP link at ``address`` and say hello; the open connection once the
    peer said ok. With ``ssl_context``, over mutual TLS, the peer's certificate checked for
    ``server_hostname`` (the host of its peer address, also when ``address`` is a proxy).
    Raises :class:`LinkRefused` if it refused, OSError (ssl.SSLError among them) or
    TimeoutError if it could not be reached or did not answer within ``wait_s``."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    kw: dict[str, Any] = {}
    if ssl_context is not None:
        kw = {"ssl": ssl_context, "server_hostname": server_hostname or host}
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port), **kw), wait_s)
    try:
        tune(writer.get_extra_info("socket"))
        writer.write(frame(json.dumps(hello).encode()))
        answer = _answer(await asyncio.wait_for(_read_frame(reader, MAX_HELLO_BYTES), wait_s))
    except BaseException:
        writer.close()
        raise
    if answer.get("ok") is True:
        return reader, writer
    writer.close()
    raise LinkRefused(str(answer.get("code", "UNKNOWN")), str(answer.get("refused", answer)))


async def until_closed(reader: asyncio.StreamReader) -> None:
    """Wait out an established link: returns when the peer closes it, raises
    :class:`LinkRefused` if it refused a frame first. The receiver sends nothing else."""
    try:
        payload = await _read_frame(reader, MAX_HELLO_BYTES)
    except asyncio.IncompleteReadError:
        return  # closed
    answer = _answer(payload)
    raise LinkRefused(str(answer.get("code", "UNKNOWN")), str(answer.get("refused", answer)))


def batch_frames(batch: raft_pb2.PeerBatch, messages: Sequence[raft_pb2.PeerMessage]) -> bytes:
    """``messages`` as frames: one batch, or one frame per message when together they would
    pass the frame limit (a snapshot beside other messages)."""
    payload = batch.SerializeToString()
    if len(payload) <= MAX_FRAME_BYTES:
        return frame(payload)
    return b"".join(frame(raft_pb2.PeerBatch(messages=[m]).SerializeToString()) for m in messages)


class _Connection(asyncio.Protocol):
    """One inbound link: a hello, then batches handed to the node in order."""

    def __init__(self, servicer: PeerServicer, live: set[_Connection]) -> None:
        self.servicer = servicer
        self.live = live
        self.reader = FrameReader(MAX_HELLO_BYTES)
        self.transport: asyncio.Transport | None = None
        self.greeted = False
        self.closed = False
        self.advertised: str | None = None
        self.certified: str | None = None  # with TLS: the node the peer's certificate names

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport instances, but have its methods
        self.transport = cast("asyncio.Transport", transport)
        self.live.add(self)
        tune(transport.get_extra_info("socket"))
        if transport.get_extra_info("ssl_object") is not None:
            # Mutual TLS: the handshake checked the CA; the certificate must name one node,
            # and every message must come from it (as on the gRPC link).
            cert = transport.get_extra_info("peercert") or {}
            uris = [v for k, v in cert.get("subjectAltName", ()) if k == "URI"]
            self.certified, text = self.servicer.certified_node(uris)
            if text is not None:
                self.refuse("PERMISSION_DENIED", text)

    def connection_lost(self, exc: Exception | None) -> None:
        self.live.discard(self)
        self.closed = True

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return  # refused: the rest of the stream is not read
        try:
            frames = self.reader.feed(data)
        except FrameError as e:
            self.refuse("RESOURCE_EXHAUSTED", str(e))
            return
        for payload in frames:
            if self.greeted:
                self._batch(payload)
            else:
                self._hello(payload)
            if self.transport is None or self.transport.is_closing():
                return

    def refuse(self, code: str, text: str) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.write(frame(json.dumps({"refused": text, "code": code}).encode()))
            self.transport.close()

    def _hello(self, payload: bytes) -> None:
        s = self.servicer
        try:
            hello = json.loads(payload)
        except ValueError:
            hello = None
        if not isinstance(hello, dict):
            self.refuse(
                "INVALID_ARGUMENT",
                "the first frame of a peer link must be its hello, a JSON object",
            )
            return
        cid = hello.get("cluster_id")
        if cid != s.cluster_id:
            self.refuse(
                "FAILED_PRECONDITION",
                f"a link from cluster {cid!r}; this node belongs to {s.cluster_id!r}",
            )
            return
        text = s.settings_refusal(hello.get("settings"))
        if text is not None:
            self.refuse("FAILED_PRECONDITION", text)
            return
        if hello.get("dst") != s.node_id:
            self.refuse(
                "FAILED_PRECONDITION", f"a link for {hello.get('dst')!r} reached node {s.node_id!r}"
            )
            return
        address = hello.get("address")
        self.advertised = address if isinstance(address, str) and address else None
        self.greeted = True
        self.reader.limit = MAX_FRAME_BYTES
        assert self.transport is not None
        self.transport.write(frame(OK))

    def _batch(self, payload: bytes) -> None:
        s = self.servicer
        try:
            batch = raft_pb2.PeerBatch.FromString(payload)
        except DecodeError as e:
            self.refuse("INVALID_ARGUMENT", f"a frame that is not a raftlease.v1.PeerBatch: {e}")
            return
        receive = s.receive
        for pm in batch.messages:
            bad = s.message_refusal(pm, self.certified)
            if bad is not None:
                self.refuse(bad[0].name, bad[1])
                return
            try:
                msg = message_from_pb(pm)
            except ValueError as e:
                self.refuse("INVALID_ARGUMENT", str(e))
                return
            if self.advertised is not None:
                if s.learn_address is not None:
                    s.learn_address(pm.src, self.advertised)  # once per link
                self.advertised = None
            receive(msg)


class PeerListener:
    """Takes plain-TCP peer links for ``servicer``'s node, with the servicer's rules."""

    def __init__(self, servicer: PeerServicer) -> None:
        self.servicer = servicer
        self.server: asyncio.Server | None = None
        self.live: set[_Connection] = set()

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> int:
        """Listen on ``host:port`` (port 0: a free one), over mutual TLS with ``ssl_context``;
        the port taken, which the servicer announces from now on. Raises OSError if it cannot
        listen."""
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: _Connection(self.servicer, self.live),
            host.strip("[]"),
            port,
            ssl=ssl_context,
        )
        taken: int = self.server.sockets[0].getsockname()[1]
        self.servicer.tcp_port = taken
        return taken

    async def close(self) -> None:
        self.servicer.tcp_port = None
        if self.server is not None:
            self.server.close()
            for conn in list(self.live):
                if conn.transport is not None:
                    conn.transport.abort()
            await self.server.wait_closed()
            self.server = None
