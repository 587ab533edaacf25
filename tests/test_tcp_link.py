"""The plain-TCP peer link (raftlease/transport/tcp.py), over real loopback sockets.

What a node relies on: a peer that announces a TCP link gets its messages over it, in order,
and the gRPC connection that set it up closes (no keepalive pings left behind); a peer that
announces none, or whose port does not answer, still gets every message over gRPC; bad bytes
on the TCP port get a refusal that says why and reach the node never.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from typing import TYPE_CHECKING, Any

import grpc
import psutil  # type: ignore[import-untyped]
import pytest

from raftlease.codec import message_to_pb
from raftlease.core.messages import AppendEntries, Message, RequestVote
from raftlease.server import SERVER_OPTIONS
from raftlease.transport import tcp
from raftlease.transport.grpc import GrpcTransport, PeerServicer
from raftlease.types import NodeId
from raftlease.v1 import raft_pb2, raft_pb2_grpc

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

CID = "tcp-link-test"
SETTINGS = "tick=10ms election=20-40 heartbeat=10 lease=14 max_drift=0.01"


def _vote(i: int, src: str = "a", dst: str = "b") -> RequestVote:
    return RequestVote(i, NodeId(src), NodeId(dst), i, 1, False, False)


class Peer:
    """Node "b": a gRPC server with the RaftPeer service and, unless ``tcp_off``, a TCP link."""

    def __init__(self) -> None:
        self.got: list[Message] = []
        self.learned: list[tuple[str, str]] = []
        self.servicer = PeerServicer(
            receive=self.got.append,
            cluster_id=CID,
            members=["a", "b"],
            node_id="b",
            settings=SETTINGS,
            stopping=lambda: True,
            learn_address=lambda nid, addr: self.learned.append((nid, addr)),
        )
        self.listener = tcp.PeerListener(self.servicer)
        self.server: grpc.aio.Server | None = None
        self.port = 0

    async def start(self, *, tcp_off: bool = False, port: int = 0) -> None:
        self.server = grpc.aio.server(options=SERVER_OPTIONS)
        raft_pb2_grpc.add_RaftPeerServicer_to_server(self.servicer, self.server)
        self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        if not tcp_off:
            await self.listener.start("127.0.0.1", 0)
        await self.server.start()

    async def stop(self) -> None:
        await self.listener.close()
        if self.server is not None:
            await self.server.stop(None)


async def _until(cond: Callable[[], bool], what: str, wait_s: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + wait_s
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def _grpc_connections(port: int) -> int:
    """This process's established TCP connections to ``port`` (the peer's gRPC port)."""
    return sum(
        1
        for c in psutil.Process(os.getpid()).net_connections(kind="tcp")
        if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
    )


async def _with_peer(
    body: Callable[[Peer], Any], *, tcp_off: bool = False
) -> AsyncIterator[None] | None:
    peer = Peer()
    await peer.start(tcp_off=tcp_off)
    try:
        await body(peer)
    finally:
        await peer.stop()
    return None


def _transport(peer: Peer, **kw: Any) -> GrpcTransport:
    return GrpcTransport(
        "a", CID, {"a": "127.0.0.1:1", "b": f"127.0.0.1:{peer.port}"}, SETTINGS, **kw
    )


def test_messages_move_to_the_tcp_link_and_the_grpc_connection_closes() -> None:
    async def body(peer: Peer) -> None:
        tr = _transport(peer)
        try:
            link = tr.links["b"]
            tr.send([_vote(1)])  # queued before the link is up: goes first on it
            await _until(lambda: link.writer is not None, "the TCP link")
            tr.send([_vote(i) for i in range(2, 200)])
            await _until(lambda: len(peer.got) == 199, "199 messages")
            assert [m.term for m in peer.got] == list(range(1, 200))  # in order, none twice
            # The dialer advertised its own address once, from the hello.
            assert peer.learned == [("a", "127.0.0.1:1")]
            # The gRPC connection that set the link up is gone (else it pings every second).
            await _until(lambda: _grpc_connections(peer.port) == 0, "the gRPC connection to close")
        finally:
            await tr.close()

    asyncio.run(_with_peer(body))


def test_a_peer_that_starts_after_the_dialer_gets_the_tcp_link_too() -> None:
    """The first attempt fails (nothing listens yet); the link that finally opens moves to TCP
    and leaves no gRPC connection behind (a failed attempt's error once kept one alive)."""

    async def main() -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        peer = Peer()
        tr = GrpcTransport("a", CID, {"a": "127.0.0.1:1", "b": f"127.0.0.1:{port}"}, SETTINGS)
        try:
            await asyncio.sleep(0.3)  # refused connection attempts
            await peer.start(port=port)
            # Nothing to send (an idle link, as between two followers): it moves all the same.
            await _until(lambda: tr.links["b"].writer is not None, "the TCP link")
            tr.send([_vote(1)])
            await _until(lambda: len(peer.got) == 1, "a message")
            await _until(lambda: _grpc_connections(port) == 0, "the gRPC connection to close")
        finally:
            await tr.close()
            await peer.stop()

    asyncio.run(main())


def test_a_peer_without_a_tcp_link_gets_everything_over_grpc() -> None:
    async def body(peer: Peer) -> None:
        tr = _transport(peer)
        try:
            tr.send([_vote(i) for i in range(1, 51)])
            await _until(lambda: len(peer.got) == 50, "50 messages over gRPC")
            assert tr.links["b"].writer is None
            assert _grpc_connections(peer.port) == 1
        finally:
            await tr.close()

    asyncio.run(_with_peer(body, tcp_off=True))


def test_an_announced_port_that_does_not_answer_keeps_grpc_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def body(peer: Peer) -> None:
        with socket.socket() as s:  # a port nobody listens on
            s.bind(("127.0.0.1", 0))
            dead = s.getsockname()[1]
        tr = _transport(peer, tcp_addresses={"b": f"127.0.0.1:{dead}"})
        try:
            tr.send([_vote(i) for i in range(1, 11)])
            await _until(lambda: len(peer.got) == 10, "10 messages over gRPC")
            assert tr.links["b"].writer is None
        finally:
            await tr.close()

    with caplog.at_level(logging.WARNING, logger="raftlease.transport"):
        asyncio.run(_with_peer(body))
    warned = [r.getMessage() for r in caplog.records if "does not answer" in r.getMessage()]
    assert warned, caplog.text
    assert "stay on gRPC" in warned[0]


def test_tcp_links_off_on_the_dialer_keeps_grpc() -> None:
    async def body(peer: Peer) -> None:
        tr = _transport(peer, tcp_links=False)
        try:
            tr.send([_vote(1)])
            await _until(lambda: len(peer.got) == 1, "a message over gRPC")
            await asyncio.sleep(0.2)
            assert tr.links["b"].writer is None
        finally:
            await tr.close()

    asyncio.run(_with_peer(body))


# -- the receiving side, spoken to byte by byte --------------------------------------------------


def _hello(**over: str) -> bytes:
    hello = {"cluster_id": CID, "src": "a", "dst": "b", "settings": SETTINGS, "address": ""}
    hello.update(over)
    return tcp.frame(json.dumps(hello).encode())


def _batch(*messages: Message, cluster_id: str = CID) -> bytes:
    batch = raft_pb2.PeerBatch(messages=[message_to_pb(m, cluster_id) for m in messages])
    return tcp.frame(batch.SerializeToString())


async def _talk(peer: Peer, data: bytes) -> list[dict[str, Any]]:
    """Send ``data`` to the peer's TCP link; every answer frame until it closes (or 2 s)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", peer.servicer.tcp_port)
    writer.write(data)
    answers: list[dict[str, Any]] = []
    try:
        while True:
            size = int.from_bytes(await asyncio.wait_for(reader.readexactly(4), 2.0), "big")
            answers.append(json.loads(await reader.readexactly(size)))
    except (TimeoutError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()
    return answers


@pytest.mark.parametrize(
    ("data", "code", "words"),
    [
        (_hello(cluster_id="other"), "FAILED_PRECONDITION", "a link from cluster 'other'"),
        (_hello(settings="tick=20ms"), "FAILED_PRECONDITION", "safety settings differ"),
        (_hello(dst="c"), "FAILED_PRECONDITION", "a link for 'c' reached node 'b'"),
        (tcp.frame(b"GET / HTTP/1.1"), "INVALID_ARGUMENT", "must be its hello"),
        (b"\xff\xff\xff\xff" + b"x" * 10, "RESOURCE_EXHAUSTED", "over the limit"),
        (_hello() + tcp.frame(b"\x0a\xff\xff"), "INVALID_ARGUMENT", "not a raftlease.v1.PeerBatch"),
        (_hello() + _batch(_vote(1), cluster_id="other"), "FAILED_PRECONDITION", "from cluster"),
        (_hello() + _batch(_vote(1, dst="c")), "FAILED_PRECONDITION", "message for 'c'"),
        (_hello() + _batch(_vote(1, src="b")), "PERMISSION_DENIED", "a source other than"),
    ],
    ids=[
        "foreign-cluster",
        "other-settings",
        "other-node",
        "not-a-hello",
        "oversized-frame",
        "garbage-batch",
        "foreign-message",
        "misrouted-message",
        "own-source",
    ],
)
def test_bad_input_is_refused_with_a_reason_and_reaches_no_node(
    data: bytes, code: str, words: str
) -> None:
    async def body(peer: Peer) -> None:
        answers = await _talk(peer, data)
        assert answers, "no answer"
        last = answers[-1]
        assert last.get("code") == code, answers
        assert words in last.get("refused", ""), answers
        assert peer.got == []

    asyncio.run(_with_peer(body))


def test_frames_split_anywhere_arrive_whole() -> None:
    async def body(peer: Peer) -> None:
        ae = AppendEntries(3, NodeId("a"), NodeId("b"), 0, 0, (), 0, 7)
        data = _hello(address="127.0.0.1:9") + _batch(_vote(1), ae) + _batch(_vote(2))
        reader, writer = await asyncio.open_connection("127.0.0.1", peer.servicer.tcp_port)
        for i in range(len(data)):  # one byte per write
            writer.write(data[i : i + 1])
            await writer.drain()
        size = int.from_bytes(await reader.readexactly(4), "big")
        assert json.loads(await reader.readexactly(size)) == {"ok": True}
        await _until(lambda: len(peer.got) == 3, "3 messages")
        writer.close()
        assert peer.got[1] == ae
        assert peer.learned == [("a", "127.0.0.1:9")]

    asyncio.run(_with_peer(body))


def test_a_refusing_peer_is_logged_once_per_reason(caplog: pytest.LogCaptureFixture) -> None:
    """The dialer's view: the receiver refuses the TCP link (here: the hello names another
    cluster than the gRPC handshake let through) and the dialer logs the reason."""

    async def body(peer: Peer) -> None:
        tr = _transport(peer)
        link = tr.links["b"]
        assert link.hello is not None
        link.hello["cluster_id"] = "other"
        try:
            await asyncio.sleep(1.5)
            assert link.writer is None
        finally:
            await tr.close()

    with caplog.at_level(logging.ERROR, logger="raftlease.transport"):
        asyncio.run(_with_peer(body))
    refusals = [r.getMessage() for r in caplog.records if "refused us" in r.getMessage()]
    assert len(refusals) == 1, caplog.text
    assert "a link from cluster 'other'" in refusals[0]


def test_a_refused_idle_link_says_why_without_waiting_for_a_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The receiver refuses the link (other safety settings) before announcing anything; the
    dialer, with nothing to send, logs the refusal at once and keeps retrying."""

    async def body(peer: Peer) -> None:
        tr = GrpcTransport(
            "a", CID, {"a": "127.0.0.1:1", "b": f"127.0.0.1:{peer.port}"}, "tick=20ms"
        )
        try:
            await _until(lambda: "refused us" in caplog.text, "the refusal logged", 5.0)
        finally:
            await tr.close()

    with caplog.at_level(logging.ERROR, logger="raftlease.transport"):
        asyncio.run(_with_peer(body))
    assert "refused us: safety settings differ" in caplog.text
    assert "the peer sent 'tick=20ms'" in caplog.text
