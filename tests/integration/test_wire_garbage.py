"""Garbage on a node's gRPC port (issue 14): random bytes over raw TCP, truncated and broken
HTTP/2, and well-formed HTTP/2 whose gRPC bodies are random bytes, sent to every method path
of every service the port serves (Lease, Cluster, health and the peers' RaftPeer/Send, with
and without the peer handshake). The node answers each call with a normal status (an
undecodable body is INVALID_ARGUMENT, an oversized one RESOURCE_EXHAUSTED; never UNKNOWN or
INTERNAL), stays up, keeps its leader and term, logs no traceback, and its memory stays
bounded: a second round of the same garbage grows the leader's RSS by less than 32 MiB.
"""

from __future__ import annotations

import random
import socket
import struct
import time
from typing import TYPE_CHECKING, Any

import grpc
import psutil  # type: ignore[import-untyped]
import pytest
from grpc_health.v1 import health_pb2

from raftlease.server import member_id_problems, peer_address_problems
from raftlease.settings import ServerConfig
from raftlease.transport.grpc import SETTINGS_METADATA_KEY
from raftlease.types import NodeId
from raftlease.v1 import cluster_pb2, lease_pb2, raft_pb2

if TYPE_CHECKING:
    from integration.conftest import Cluster

pytestmark = pytest.mark.integration

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
BROKEN = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.DATA_LOSS}
RSS_GROWTH_BOUND = 32 * 2**20

# Every method the port serves: (path, request class, client streaming, server streaming).
METHODS: list[tuple[str, Any, bool, bool]] = []
for _module in (lease_pb2, cluster_pb2, raft_pb2, health_pb2):
    for _service in _module.DESCRIPTOR.services_by_name.values():
        for _m in _service.methods:
            METHODS.append(
                (
                    f"/{_service.full_name}/{_m.name}",
                    getattr(_module, _m.input_type.name),
                    _m.client_streaming,
                    _m.server_streaming,
                )
            )


def bodies(rng: random.Random) -> list[bytes]:
    """Request bodies: edge cases of the protobuf encoding, then random bytes."""
    out = [
        b"\x00",
        b"\xff" * 16,
        b"\x0a\x02\xc3\x28",  # field 1, a string that is not UTF-8
        b"\x0a\xff\xff\xff\xff\x0f",  # field 1, a length far past the end
        b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",  # field 1, a 10-byte varint
        b"\xf8\xff\xff\xff\x0f\x01",  # an unknown field
        b"\x0b" * 64,  # start-group tags (proto2 groups): never valid here
        b"\x0a\x00" * 1000,
        b"\x12\x04\x0a\x02\x0a\x00" * 50,
    ]
    out += [rng.randbytes(rng.choice([1, 3, 17, 200, 5000])) for _ in range(8)]
    return out


def harmless(path: str, cls: Any, body: bytes) -> bool:
    """False for a body that decodes into an admin request that would legitimately change
    the leadership or the members (b"" is a TransferLeadership to any follower)."""
    try:
        request = cls.FromString(body)
    except Exception:
        return True
    name = path.rsplit("/", 1)[1]
    if name == "TransferLeadership":
        return bool(request.target_id) and not request.target_id.startswith("n")
    if name in ("MemberRemove", "MemberPromote"):
        return request.id not in ("n1", "n2", "n3")
    if name == "MemberAdd":
        return bool(member_id_problems(request.id) or peer_address_problems(request.peer_address))
    return True


def call_raw(
    channel: grpc.Channel,
    path: str,
    client_stream: bool,
    server_stream: bool,
    body: bytes,
    metadata: tuple[tuple[str, str], ...] = (),
) -> grpc.StatusCode:
    """One call with ``body`` as its request bytes (each message of a stream); its code."""
    ident = {"request_serializer": lambda b: b, "response_deserializer": lambda b: b}
    try:
        if client_stream and server_stream:
            list(channel.stream_stream(path, **ident)(iter([body, body]), timeout=2.0))
        elif client_stream:
            channel.stream_unary(path, **ident)(iter([body, body]), timeout=2.0, metadata=metadata)
        elif server_stream:
            list(channel.unary_stream(path, **ident)(body, timeout=0.3))
        else:
            channel.unary_unary(path, **ident)(body, timeout=2.0)
    except grpc.RpcError as e:
        code: grpc.StatusCode = e.code()
        return code
    return grpc.StatusCode.OK


def terms(cluster: Cluster) -> dict[str, tuple[str, int]]:
    out = {}
    for nid in cluster.nodes:
        st = cluster.status(nid, timeout=2.0)
        assert st is not None, f"{nid} does not answer Status"
        out[nid] = (st.leader_id, st.term)
    return out


def settled_terms(cluster: Cluster, leader: str) -> dict[str, tuple[str, int]]:
    """The terms once every node has heard from the leader (a follower that has not yet
    had its first heartbeat answers with no leader and term 0, which is not a change)."""
    deadline = time.monotonic() + 10.0
    while True:
        seen = terms(cluster)
        if all(seen_leader == leader for seen_leader, _ in seen.values()):
            return seen
        assert time.monotonic() < deadline, f"the followers never heard from {leader}: {seen}"
        time.sleep(0.1)


def garbage_calls(cluster: Cluster, leader: str, rng: random.Random) -> dict[str, set[str]]:
    node = cluster.nodes[leader]
    peers = {NodeId(n): cluster.nodes[n].address for n in cluster.nodes}
    settings = ServerConfig(
        node_id=NodeId(leader), cluster_id=cluster.cluster_id, peers=peers
    ).safety_settings()
    handshake = ((SETTINGS_METADATA_KEY, settings),)
    seen: dict[str, set[str]] = {}
    with grpc.insecure_channel(node.address) as channel:
        for path, cls, cs, ss in METHODS:
            for body in [*bodies(rng), rng.randbytes(2 * 2**20)]:
                if not harmless(path, cls, body):
                    continue
                for metadata in ((), handshake) if path.endswith("RaftPeer/Send") else ((),):
                    code = call_raw(channel, path, cs, ss, body, metadata)
                    seen.setdefault(path, set()).add(code.name)
                    assert code not in BROKEN, f"{path} answered {code} to {body[:40]!r}"
    return seen


def raw_tcp(address: str, rng: random.Random) -> None:
    host, port = address.rsplit(":", 1)
    target = (host, int(port))

    def send(data: bytes, linger: float = 0.0) -> None:
        with socket.create_connection(target, timeout=2.0) as s:
            try:
                s.sendall(data)
                if linger:
                    s.settimeout(linger)
                    s.recv(65536)
            except OSError:
                pass  # the server may close on us: that is the point

    for _ in range(10):
        send(rng.randbytes(rng.choice([1, 24, 1000, 65536])))
    for k in range(0, len(PREFACE), 4):
        send(PREFACE[:k], linger=0.05)
    send(PREFACE + rng.randbytes(4096), linger=0.2)
    settings = struct.pack(">I", 0)[1:] + b"\x04\x00" + b"\x00\x00\x00\x00"
    # A HEADERS frame on stream 1 whose header block is random (not HPACK).
    block = rng.randbytes(64)
    headers = struct.pack(">I", len(block))[1:] + b"\x01\x05" + struct.pack(">I", 1) + block
    send(PREFACE + settings + headers, linger=0.2)
    # A DATA frame claiming 16 MiB, then nothing.
    send(PREFACE + settings + b"\xff\xff\xff\x00\x00\x00\x00\x00\x01", linger=0.2)
    # Many half-open connections at once, then all closed.
    held = [socket.create_connection(target, timeout=2.0) for _ in range(50)]
    for s in held:
        s.sendall(PREFACE[:10])
    time.sleep(0.3)
    for s in held:
        s.close()


def test_garbage_on_the_port_changes_nothing(cluster: Cluster) -> None:
    leader = cluster.leader()
    before = settled_terms(cluster, leader)
    proc = psutil.Process(cluster.nodes[leader].pid)
    rng = random.Random(14)

    garbage_calls(cluster, leader, rng)  # warm-up round: grpc's pools and caches fill
    raw_tcp(cluster.nodes[leader].address, rng)
    rss_warm = proc.memory_info().rss
    seen = garbage_calls(cluster, leader, rng)
    raw_tcp(cluster.nodes[leader].address, rng)
    rss_after = proc.memory_info().rss

    print(f"codes: {dict(sorted(seen.items()))}; RSS {rss_warm >> 20} -> {rss_after >> 20} MiB")
    assert len(seen) == len(METHODS)
    assert "INVALID_ARGUMENT" in seen["/raftlease.v1.Lease/Acquire"]
    assert "RESOURCE_EXHAUSTED" in seen["/raftlease.v1.Lease/Acquire"]
    assert "INVALID_ARGUMENT" in seen["/raftlease.v1.RaftPeer/Send"]
    for nid in cluster.nodes:
        assert cluster.nodes[nid].alive(), f"{nid} died:\n{cluster.log_tails()}"
    assert terms(cluster) == before, "garbage moved the leadership or a term"
    growth = rss_after - rss_warm
    assert growth < RSS_GROWTH_BOUND, f"the leader's RSS grew {growth / 2**20:.1f} MiB"
    for nid in cluster.nodes:
        text = cluster.nodes[nid].log_text()
        assert "Traceback" not in text, f"{nid} logged a traceback:\n{text[-4000:]}"
