"""Micro-benchmark: what one peer message costs on today's grpc.aio transport versus a plain
asyncio TCP stream, both carrying the same protobuf PeerMessage (AppendEntries with one
100-byte entry, answered by an AppendEntriesResponse).

    .venv/bin/python bench/micro_transport.py [--n 3000]

Two processes ping-pong N messages sequentially (like W1's replication round trip). Reported:
round-trip p50/p99 and the CPU (user+sys of both processes) per round trip. Each round trip is
4 message operations (send + receive on each side).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc

from raftlease.codec import message_from_pb, message_to_pb
from raftlease.core.messages import AppendEntries, AppendEntriesResponse, Entry, EntryKind
from raftlease.server import SERVER_OPTIONS
from raftlease.transport.grpc import GrpcTransport
from raftlease.types import NodeId
from raftlease.v1 import raft_pb2, raft_pb2_grpc

CID = "micro"
_LEN = struct.Struct("<I")


def _ae(i: int) -> AppendEntries:
    e = Entry(i, 1, EntryKind.NORMAL, b"x" * 100)
    return AppendEntries(1, NodeId("a"), NodeId("b"), i - 1, 1, (e,), i - 1, i)


def _aer(i: int) -> AppendEntriesResponse:
    return AppendEntriesResponse(1, NodeId("b"), NodeId("a"), True, i, i, 0, 0, i, i)


class _Servicer(raft_pb2_grpc.RaftPeerServicer):
    def __init__(self, on_msg: object) -> None:
        self.on_msg = on_msg

    async def Send(self, request_iterator, context):  # type: ignore[no-untyped-def]
        async for batch in request_iterator:
            for pm in batch.messages:
                self.on_msg(message_from_pb(pm))  # type: ignore[operator]
        return raft_pb2.SendSummary()


async def grpc_side(role: str, my: str, other: str, n: int) -> dict[str, float]:
    inbox: asyncio.Queue[object] = asyncio.Queue()
    server = grpc.aio.server(options=SERVER_OPTIONS)
    raft_pb2_grpc.add_RaftPeerServicer_to_server(_Servicer(inbox.put_nowait), server)
    server.add_insecure_port(my)
    await server.start()
    me, peer = ("a", "b") if role == "a" else ("b", "a")
    tr = GrpcTransport(me, CID, {me: my, peer: other}, "bench")
    res = await _pingpong(role, lambda m: tr.send([m]), inbox, n)
    await tr.close()
    await server.stop(None)
    return res


async def tcp_side(role: str, my: str, other: str, n: int) -> dict[str, float]:
    """Plain asyncio streams: one outbound connection per direction, 4-byte length prefix."""
    inbox: asyncio.Queue[object] = asyncio.Queue()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                (ln,) = _LEN.unpack(await reader.readexactly(4))
                pm = raft_pb2.PeerMessage.FromString(await reader.readexactly(ln))
                inbox.put_nowait(message_from_pb(pm))
        except (asyncio.IncompleteReadError, asyncio.CancelledError, ConnectionError):
            pass

    host, port = my.rsplit(":", 1)
    server = await asyncio.start_server(handle, host, int(port))
    await asyncio.sleep(1.0)
    ohost, oport = other.rsplit(":", 1)
    _, w = await asyncio.open_connection(ohost, int(oport))

    def send(m: object) -> None:
        data = message_to_pb(m, CID).SerializeToString()  # type: ignore[arg-type]
        w.write(_LEN.pack(len(data)) + data)

    res = await _pingpong(role, send, inbox, n)
    w.close()
    server.close()
    return res


async def _pingpong(role: str, send: Any, inbox: asyncio.Queue[Any], n: int) -> dict[str, Any]:
    """Side a sends AppendEntries i and waits for the response to i (re-sending after 0.2 s:
    a link may drop messages while it connects); side b answers every AppendEntries. Both
    measure their CPU between message 200 and message 199 + n."""
    last = 199 + n
    if role == "a":
        rtts = []
        c0 = os.times()
        for i in range(1, last + 1):
            if i == 200:
                c0 = os.times()
            t0 = time.perf_counter()
            send(_ae(i))
            while True:
                try:
                    m = await asyncio.wait_for(inbox.get(), 0.2)
                except TimeoutError:
                    send(_ae(i))
                    continue
                if m.match_index == i:
                    break
            if i >= 200:
                rtts.append(time.perf_counter() - t0)
        c1 = os.times()
        await asyncio.sleep(0.3)
        return {"rtts": rtts, "cpu": (c1.user + c1.system) - (c0.user + c0.system)}
    c0 = c1 = os.times()
    while True:
        try:
            m = await asyncio.wait_for(inbox.get(), 10)
        except TimeoutError:
            break
        i = m.prev_log_index + 1
        if i == 200:
            c0 = os.times()
        send(_aer(i))
        if i == last:
            c1 = os.times()
            await asyncio.sleep(0.5)
            break
    return {"cpu": (c1.user + c1.system) - (c0.user + c0.system)}


def child() -> None:
    kind, role, my, other, n = sys.argv[2:7]
    fn = grpc_side if kind == "grpc" else tcp_side
    print(json.dumps(asyncio.run(fn(role, my, other, int(n)))), flush=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child()
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=3000)
    o = ap.parse_args()
    from raftlease.testing.local import free_port

    out = {}
    for kind in ("grpc", "tcp"):
        port_a = free_port()
        pa, pb = f"127.0.0.1:{port_a}", f"127.0.0.1:{free_port(avoid={port_a})}"
        me = [sys.executable, __file__, "--child", kind]
        b = subprocess.Popen([*me, "b", pb, pa, str(o.n)], stdout=subprocess.PIPE, text=True)
        a = subprocess.Popen([*me, "a", pa, pb, str(o.n)], stdout=subprocess.PIPE, text=True)
        try:
            ra = json.loads(a.communicate(timeout=120)[0].strip().splitlines()[-1])
            rb = json.loads(b.communicate(timeout=30)[0].strip().splitlines()[-1])
        except (subprocess.TimeoutExpired, IndexError):
            for p in (a, b):
                p.kill()
                p.wait()
            out[kind] = {"error": "timed out"}
            continue
        rt = sorted(ra["rtts"])
        out[kind] = {
            "rtt_p50_ms": 1000 * rt[len(rt) // 2],
            "rtt_p99_ms": 1000 * rt[int(len(rt) * 0.99)],
            "cpu_ms_per_round_trip": 1000 * (ra["cpu"] + rb["cpu"]) / o.n,
        }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
