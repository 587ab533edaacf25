"""Load generators for bench/run.py: separate processes speaking raw gRPC (raftlease/v1 stubs).

    python bench/loadgen.py w1 --target HOST:PORT --n 2000 --warmup 200
    python bench/loadgen.py w2 --target HOST:PORT --clients 16 --duration 10 --warmup 2
    python bench/loadgen.py keepalive --target HOST:PORT --leases 1000 --ttl-ms 10000
    python bench/loadgen.py burst --target HOST:PORT --clients 16 --leases 10000 --ttl-ms 30000

Each prints one JSON object on its last stdout line. ``keepalive`` first acquires the leases,
prints ``READY {...}``, keeps every lease alive (renewal every ttl/3, spread evenly over the
period) until SIGTERM/SIGINT, then prints its counters.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc

from raftlease.v1 import cluster_pb2, cluster_pb2_grpc, lease_pb2, lease_pb2_grpc

HOLDER = f"bench:{os.getpid()}"


def _self_cpu() -> float:
    t = os.times()
    return t.user + t.system


# ---------------------------------------------------------------------------------- W1
def w1(args: argparse.Namespace) -> dict[str, Any]:
    """One client, sequential acquire + release of one name; latency of each call."""
    channel = grpc.insecure_channel(args.target)
    grpc.channel_ready_future(channel).result(timeout=10)
    stub = lease_pb2_grpc.LeaseStub(channel)
    name = f"w1-{uuid.uuid4().hex[:8]}"
    acq: list[float] = []
    rel: list[float] = []
    trace: list[tuple[str, float, float, int]] = []
    cpu0 = _self_cpu()
    t_start = time.monotonic()
    for i in range(args.warmup + args.n):
        rid = uuid.uuid4().hex
        req = lease_pb2.AcquireRequest(
            name=name, holder=HOLDER, ttl_ms=10_000, wait_ms=0, request_id=rid
        )
        t0 = time.monotonic()
        resp = stub.Acquire(req, timeout=5)
        t1 = time.monotonic()
        if not resp.acquired:
            raise SystemExit(f"w1: acquire of {name} refused: {resp}")
        t2 = time.monotonic()
        stub.Release(lease_pb2.ReleaseRequest(lease_id=resp.lease.lease_id), timeout=5)
        t3 = time.monotonic()
        if i >= args.warmup:
            acq.append((t1 - t0) * 1000)
            rel.append((t3 - t2) * 1000)
            if args.trace:
                trace.append((rid, t0, t1, resp.lease.granted_index))
        if args.pause_ms:
            time.sleep(args.pause_ms / 1000)
    wall = time.monotonic() - t_start
    channel.close()
    return {
        "acquire_ms": acq,
        "release_ms": rel,
        "trace": trace,
        "client_cpu_s": _self_cpu() - cpu0,
        "wall_s": wall,
    }


# ---------------------------------------------------------------------------------- W2
async def _w2(args: argparse.Namespace) -> dict[str, Any]:
    """N concurrent clients (asyncio tasks, one channel each), each acquiring and releasing
    its own name in a loop. Counts acquisitions completed inside the measurement window."""
    channels = [grpc.aio.insecure_channel(args.target) for _ in range(args.clients)]
    for ch in channels:
        await asyncio.wait_for(ch.channel_ready(), 10)
    loop = asyncio.get_running_loop()
    t_begin = loop.time() + args.warmup
    t_end = t_begin + args.duration
    lat: list[float] = []
    errors: dict[str, int] = {}
    counts = [0] * args.clients
    tag = uuid.uuid4().hex[:6]

    async def client(i: int) -> None:
        stub = lease_pb2_grpc.LeaseStub(channels[i])
        name = f"w2-{tag}-{i}"
        while True:
            now = loop.time()
            if now >= t_end:
                return
            try:
                t0 = loop.time()
                resp = await stub.Acquire(
                    lease_pb2.AcquireRequest(
                        name=name,
                        holder=HOLDER,
                        ttl_ms=10_000,
                        wait_ms=0,
                        request_id=uuid.uuid4().hex,
                    ),
                    timeout=5,
                )
                t1 = loop.time()
                if resp.acquired:
                    if t_begin <= t1 < t_end:
                        counts[i] += 1
                        lat.append((t1 - t0) * 1000)
                    await stub.Release(
                        lease_pb2.ReleaseRequest(lease_id=resp.lease.lease_id), timeout=5
                    )
                else:
                    errors["not_acquired"] = errors.get("not_acquired", 0) + 1
            except grpc.aio.AioRpcError as e:
                k = e.code().name
                errors[k] = errors.get(k, 0) + 1
                await asyncio.sleep(0.01)

    cpu0 = _self_cpu()
    await asyncio.gather(*(client(i) for i in range(args.clients)))
    cpu = _self_cpu() - cpu0
    for ch in channels:
        await ch.close()
    total = sum(counts)
    return {
        "acquisitions": total,
        "per_s": total / args.duration,
        "per_client": counts,
        "acquire_ms": lat,
        "errors": errors,
        "client_cpu_s": cpu,
        "duration_s": args.duration,
    }


# ---------------------------------------------------------------------------------- W3/W6
class _Target:
    """The leader's channels; re-found through Cluster.Status when the leader moves."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.address = args.target
        self.endpoints = [e for e in (args.endpoints or args.target).split(",") if e]
        self.nch = max(1, min(args.channels, args.leases))
        self.gen = 0
        self.retargets = 0
        self._lock = asyncio.Lock()
        self._open(self.address)

    def _open(self, address: str) -> None:
        self.channels = [grpc.aio.insecure_channel(address) for _ in range(self.nch)]
        self.stubs = [lease_pb2_grpc.LeaseStub(ch) for ch in self.channels]

    async def ready(self) -> None:
        for ch in self.channels:
            await asyncio.wait_for(ch.channel_ready(), 10)

    async def retarget(self, seen_gen: int) -> None:
        async with self._lock:
            if self.gen != seen_gen:
                return  # someone already moved us
            new = None
            for _ in range(200):
                for ep in self.endpoints:
                    async with grpc.aio.insecure_channel(ep) as ch:
                        try:
                            st = await cluster_pb2_grpc.ClusterStub(ch).Status(
                                cluster_pb2.StatusRequest(), timeout=0.3
                            )
                        except grpc.aio.AioRpcError:
                            continue
                    if st.leader_id and st.leader_id == st.node_id:
                        new = ep
                        break
                if new:
                    break
                await asyncio.sleep(0.05)
            old = self.channels
            self.address = new or self.address
            self._open(self.address)
            self.gen += 1
            self.retargets += 1
            for ch in old:
                await ch.close()

    async def close(self) -> None:
        for ch in self.channels:
            await ch.close()


async def _keepalive(args: argparse.Namespace) -> dict[str, Any]:
    tgt = _Target(args)
    await tgt.ready()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tag = uuid.uuid4().hex[:6]
    nch = tgt.nch

    # 1. acquire the leases, `concurrency` at a time
    lease_ids: list[int] = [0] * args.leases
    sem = asyncio.Semaphore(args.concurrency)
    t0 = loop.time()

    async def acquire(i: int) -> None:
        async with sem:
            for _attempt in range(50):
                gen = tgt.gen
                try:
                    resp = await tgt.stubs[i % nch].Acquire(
                        lease_pb2.AcquireRequest(
                            name=f"ka-{tag}-{i}",
                            holder=HOLDER,
                            ttl_ms=args.ttl_ms,
                            wait_ms=0,
                            request_id=f"{tag}-{i}",
                        ),
                        timeout=10,
                    )
                except grpc.aio.AioRpcError:
                    await asyncio.sleep(0.05)
                    await tgt.retarget(gen)
                    continue
                if resp.acquired:
                    lease_ids[i] = resp.lease.lease_id
                    return
            raise SystemExit(f"keepalive: could not acquire lease {i}")

    # A first slice, then a pause for the driver to read the leader's memory: the slope between
    # that reading and the one after all acquisitions is the memory each further lease costs,
    # without the one-off growth of a fresh process's first requests.
    mark = min(max(0, args.mark_at), args.leases)
    await asyncio.gather(*(acquire(i) for i in range(mark)))
    if mark:
        print("MARK " + json.dumps({"leases": mark}), flush=True)
        await asyncio.sleep(args.pause_s)
    await asyncio.gather(*(acquire(i) for i in range(mark, args.leases)))
    acquire_s = loop.time() - t0 - (args.pause_s if mark else 0.0)

    # 2. keep them alive: each lease renews every period, phase-shifted evenly
    period = args.ttl_ms / 1000.0 / 3.0
    sent = ok = failed = lost = 0
    late: list[float] = []
    base = loop.time() + 0.05

    async def keep_stream(i: int) -> None:
        nonlocal sent, ok, failed, lost
        lid = lease_ids[i]
        due = base + period * i / args.leases
        req = lease_pb2.KeepAliveRequest(lease_id=lid)
        while not stop.is_set():
            gen = tgt.gen
            call = tgt.stubs[i % nch].KeepAlive()
            try:
                while not stop.is_set():
                    delay = due - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    late.append(loop.time() - due)
                    await call.write(req)
                    sent += 1
                    await call.read()
                    ok += 1
                    due += period
            except grpc.aio.AioRpcError as e:
                failed += 1
                if e.code() == grpc.StatusCode.NOT_FOUND:
                    lost += 1
                    return
                await asyncio.sleep(0.05)
                await tgt.retarget(gen)
            finally:
                call.cancel()

    async def keep_unary(i: int) -> None:
        nonlocal sent, ok, failed, lost
        lid = lease_ids[i]
        due = base + period * i / args.leases
        req = lease_pb2.RenewRequest(lease_id=lid)
        while not stop.is_set():
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            late.append(loop.time() - due)
            sent += 1
            gen = tgt.gen
            try:
                await tgt.stubs[i % nch].Renew(req, timeout=5)
                ok += 1
                due += period
            except grpc.aio.AioRpcError as e:
                failed += 1
                if e.code() == grpc.StatusCode.NOT_FOUND:
                    lost += 1
                    return
                await asyncio.sleep(0.05)
                await tgt.retarget(gen)

    keep = keep_stream if args.mode == "stream" else keep_unary
    print("READY " + json.dumps({"acquire_s": acquire_s}), flush=True)
    await asyncio.sleep(args.pause_s)  # lets the driver read the leader's memory, leases held
    base = loop.time() + 0.05
    tasks = [loop.create_task(keep(i)) for i in range(args.leases)]
    cpu0 = _self_cpu()
    t_keep = loop.time()
    await stop.wait()
    wall = loop.time() - t_keep
    cpu = _self_cpu() - cpu0
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await tgt.close()
    late.sort()
    return {
        "leases": args.leases,
        "mode": args.mode,
        "period_s": period,
        "acquire_s": acquire_s,
        "renewals_sent": sent,
        "renewals_ok": ok,
        "renewals_failed": failed,
        "leases_lost": lost,
        "retargets": tgt.retargets,
        "renewals_per_s": ok / wall if wall > 0 else 0.0,
        "late_p50_ms": late[len(late) // 2] * 1000 if late else 0.0,
        "late_p99_ms": late[int(len(late) * 0.99)] * 1000 if late else 0.0,
        "client_cpu_s": cpu,
        "wall_s": wall,
    }


# ---------------------------------------------------------------------------------- W7 burst
async def _burst(args: argparse.Namespace) -> dict[str, Any]:
    """Issue 15's shape: ``clients`` concurrent clients (one channel each) acquire ``leases``
    distinct names (TTL ``ttl_ms``, no release) as fast as they can, while every lease
    acquired so far is kept alive on ONE KeepAlive stream (in-band outcomes, each lease
    renewed every ttl/3 from its grant). After the burst the stream goes on for ``hold_s``."""
    loop = asyncio.get_running_loop()
    channels = [grpc.aio.insecure_channel(args.target) for _ in range(args.clients)]
    ka_channel = grpc.aio.insecure_channel(args.target)
    for ch in (*channels, ka_channel):
        await asyncio.wait_for(ch.channel_ready(), 10)
    tag = uuid.uuid4().hex[:6]
    period = args.ttl_ms / 1000.0 / 3.0
    heap: list[tuple[float, int]] = []
    wake = asyncio.Event()
    nxt = 0
    lat: list[float] = []
    errors: dict[str, int] = {}
    granted = 0
    ka = {"sent": 0, "renewed": 0, "refused": 0, "late_ms": []}
    outcomes: dict[str, int] = {}
    stop = asyncio.Event()

    async def client(i: int) -> None:
        nonlocal nxt, granted
        stub = lease_pb2_grpc.LeaseStub(channels[i])
        while nxt < args.leases:
            k = nxt
            nxt += 1
            for _attempt in range(20):
                try:
                    t0 = loop.time()
                    resp = await stub.Acquire(
                        lease_pb2.AcquireRequest(
                            name=f"burst-{tag}-{k}",
                            holder=HOLDER,
                            ttl_ms=args.ttl_ms,
                            wait_ms=0,
                            request_id=f"{tag}-{k}",
                        ),
                        timeout=5,
                    )
                except grpc.aio.AioRpcError as e:
                    errors[e.code().name] = errors.get(e.code().name, 0) + 1
                    await asyncio.sleep(0.01)
                    continue
                lat.append((loop.time() - t0) * 1000)
                if resp.acquired:
                    granted += 1
                    if args.keepalive:
                        heapq.heappush(heap, (loop.time() + period, resp.lease.lease_id))
                        wake.set()
                else:
                    errors["not_acquired"] = errors.get("not_acquired", 0) + 1
                break

    async def writer(call: Any) -> None:
        while not stop.is_set():
            if not heap:
                wake.clear()
                await wake.wait()
                continue
            due, lid = heap[0]
            delay = due - loop.time()
            if delay > 0:
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), delay)
                continue
            heapq.heappop(heap)
            ka["late_ms"].append((loop.time() - due) * 1000)
            await call.write(lease_pb2.KeepAliveRequest(lease_id=lid, inband_outcomes=True))
            ka["sent"] += 1
            heapq.heappush(heap, (due + period, lid))

    async def reader(call: Any) -> None:
        async for resp in call:
            if resp.outcome == lease_pb2.KeepAliveResponse.OUTCOME_RENEWED:
                ka["renewed"] += 1
            else:
                ka["refused"] += 1
                name = lease_pb2.KeepAliveResponse.Outcome.Name(resp.outcome)
                outcomes[name] = outcomes.get(name, 0) + 1

    call = lease_pb2_grpc.LeaseStub(ka_channel).KeepAlive()
    ka_tasks = [loop.create_task(writer(call)), loop.create_task(reader(call))]
    cpu0 = _self_cpu()
    t0 = loop.time()
    await asyncio.gather(*(client(i) for i in range(args.clients)))
    burst_s = loop.time() - t0
    await asyncio.sleep(args.hold_s)
    stop.set()
    wake.set()
    call.cancel()
    for t in ka_tasks:
        t.cancel()
    res = await asyncio.gather(*ka_tasks, return_exceptions=True)
    ka_error = [
        repr(r)
        for r in res
        if isinstance(r, Exception) and not isinstance(r, asyncio.CancelledError)
    ]
    cpu = _self_cpu() - cpu0
    for ch in (*channels, ka_channel):
        await ch.close()
    late = sorted(ka.pop("late_ms"))
    lat.sort()
    return {
        "leases": args.leases,
        "granted": granted,
        "burst_s": burst_s,
        "acquisitions_per_s": granted / burst_s if burst_s else 0.0,
        "acquire_p50_ms": lat[len(lat) // 2] if lat else 0.0,
        "acquire_p99_ms": lat[int(len(lat) * 0.99)] if lat else 0.0,
        "errors": errors,
        "keepalive": ka,
        "keepalive_outcomes": outcomes,
        "keepalive_error": ka_error,
        "renewal_late_p99_ms": late[int(len(late) * 0.99)] if late else 0.0,
        "client_cpu_s": cpu,
        "wall_s": burst_s + args.hold_s,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    a1 = sub.add_parser("w1")
    a1.add_argument("--target", required=True)
    a1.add_argument("--n", type=int, default=2000)
    a1.add_argument("--warmup", type=int, default=200)
    a1.add_argument("--pause-ms", type=float, default=0.0)
    a1.add_argument("--trace", action="store_true")
    a2 = sub.add_parser("w2")
    a2.add_argument("--target", required=True)
    a2.add_argument("--clients", type=int, default=16)
    a2.add_argument("--duration", type=float, default=10.0)
    a2.add_argument("--warmup", type=float, default=2.0)
    a3 = sub.add_parser("keepalive")
    a3.add_argument("--target", required=True)
    a3.add_argument("--endpoints", default="", help="all nodes, to find a new leader")
    a3.add_argument("--leases", type=int, default=1000)
    a3.add_argument("--ttl-ms", type=int, default=10_000)
    a3.add_argument("--mode", choices=["stream", "renew"], default="stream")
    a3.add_argument("--channels", type=int, default=8)
    a3.add_argument("--concurrency", type=int, default=64)
    a3.add_argument("--pause-s", type=float, default=2.0)
    a3.add_argument(
        "--mark-at", type=int, default=0, help="pause after this many acquisitions (MARK line)"
    )
    a4 = sub.add_parser("burst")
    a4.add_argument("--target", required=True)
    a4.add_argument("--clients", type=int, default=16)
    a4.add_argument("--leases", type=int, default=10_000)
    a4.add_argument("--ttl-ms", type=int, default=30_000)
    a4.add_argument("--hold-s", type=float, default=10.0)
    a4.add_argument("--no-keepalive", dest="keepalive", action="store_false")
    args = ap.parse_args()
    if args.cmd == "w1":
        out = w1(args)
    elif args.cmd == "w2":
        out = asyncio.run(_w2(args))
    elif args.cmd == "burst":
        out = asyncio.run(_burst(args))
    else:
        out = asyncio.run(_keepalive(args))
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
