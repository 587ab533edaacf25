"""Micro-benchmark: how many unary calls per second a grpc.aio server with nothing behind it
answers on this machine, with W2's client shape (16 concurrent clients, one channel each, in
another process). It bounds W2 from above: each W2 acquisition is two calls to the leader
(Acquire, then Release), so half this figure is what a leader could reach if Raft, SQLite and
the two followers cost nothing.

    .venv/bin/python bench/grpc_ceiling.py [--seconds 8] [--clients 16] [--out PATH]

The server is as the node runs it: uvloop, raftlease.server's SERVER_OPTIONS and its
RequestGate interceptor, answering grpc's health Check with no work. CPU figures are each
process's own user+sys time over the measured window (warm-up excluded). Prints a table and
one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc
import uvloop
from grpc_health.v1 import health_pb2, health_pb2_grpc

from raftlease.server import SERVER_OPTIONS, RequestGate


class _NoOp(health_pb2_grpc.HealthServicer):
    async def Check(self, request: Any, context: Any) -> Any:
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


def _cpu_s() -> float:
    t = os.times()
    return t.user + t.system


async def _server(o: argparse.Namespace) -> dict[str, Any]:
    server = grpc.aio.server(options=SERVER_OPTIONS, interceptors=[RequestGate(1 << 20)])
    health_pb2_grpc.add_HealthServicer_to_server(_NoOp(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--client",
            str(port),
            "--seconds",
            str(o.seconds),
            "--clients",
            str(o.clients),
            stdout=subprocess.PIPE,
        )
        assert proc.stdout is not None
        await proc.stdout.readline()  # warmed up: the window starts
        cpu0 = _cpu_s()
        line = await proc.stdout.readline()
        cpu = _cpu_s() - cpu0
        await proc.wait()
    finally:
        await server.stop(None)
    client = json.loads(line)
    calls, secs = client["calls"], client["seconds"]
    return {
        "clients": o.clients,
        "seconds": round(secs, 2),
        "calls_per_s": round(calls / secs),
        "acquisitions_per_s_bound": round(calls / secs / 2),
        "server_cpu_pct": round(cpu / secs * 100, 1),
        "server_cpu_ms_per_call": round(cpu / calls * 1000, 3),
        "client_cpu_pct": round(client["cpu_s"] / secs * 100, 1),
        "cores": os.cpu_count(),
    }


async def _client(port: int, o: argparse.Namespace) -> None:
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(o.clients)]
    stubs = [health_pb2_grpc.HealthStub(c) for c in channels]
    request = health_pb2.HealthCheckRequest()

    async def calls_until(stub: Any, end: float) -> int:
        n = 0
        while time.monotonic() < end:
            await stub.Check(request)
            n += 1
        return n

    end = time.monotonic() + 1.0
    await asyncio.gather(*(calls_until(s, end) for s in stubs))  # warm-up
    print("go", flush=True)
    cpu0, t0 = _cpu_s(), time.monotonic()
    counts = await asyncio.gather(*(calls_until(s, t0 + o.seconds) for s in stubs))
    secs, cpu = time.monotonic() - t0, _cpu_s() - cpu0
    print(json.dumps({"calls": sum(counts), "seconds": secs, "cpu_s": cpu}), flush=True)
    for c in channels:
        await c.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=8.0, help="measured window (s)")
    ap.add_argument("--clients", type=int, default=16, help="concurrent clients (W2: 16)")
    ap.add_argument("--out", default="", help="also write the JSON here")
    ap.add_argument("--client", type=int, default=0, help=argparse.SUPPRESS)
    o = ap.parse_args()
    if o.client:
        uvloop.run(_client(o.client, o))
        return
    r = uvloop.run(_server(o))
    print("| figure | value |\n|---|---|")
    for k, v in r.items():
        print(f"| {k} | {v} |")
    print(json.dumps(r))
    if o.out:
        Path(o.out).write_text(json.dumps(r, indent=1) + "\n")


if __name__ == "__main__":
    main()
