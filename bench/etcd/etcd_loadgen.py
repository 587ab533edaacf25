"""Load generators for the etcd side of ``bench/run.py --with-etcd``: the shapes of
bench/loadgen.py's w1, w2 and keepalive, spoken to etcd's v3 API with raw gRPC stubs
(bench/etcd/gen, see regen_stubs.py).

One lease acquisition in etcd = ``LeaseGrant`` (TTL 10 s) + ``Txn`` put-if-absent (compare
the key's create_revision with 0; on success put the key with the lease): two Raft
proposals, what an etcd client does to take a named lock with a fresh lease. A release is
``LeaseRevoke`` (one proposal; it deletes the key). A renewal is one message on a
``LeaseKeepAlive`` stream (served by the leader's lessor, no Raft proposal).

    python bench/etcd/etcd_loadgen.py w1 --target HOST:PORT --n 2000 --warmup 200
    python bench/etcd/etcd_loadgen.py w2 --target HOST:PORT --clients 16 --duration 15
    python bench/etcd/etcd_loadgen.py keepalive --target HOST:PORT --leases 1000
    python bench/etcd/etcd_loadgen.py w6 --target HOST:PORT --endpoints A,B,C \
        --clients 100 --leases 10000 --ttl-ms 30000
    python bench/etcd/etcd_loadgen.py burst --target HOST:PORT --clients 16 --leases 10000

Each prints one JSON object on its last stdout line; ``keepalive`` prints ``READY {...}``
after the acquisitions, keeps every lease alive (renewal every ttl/3, spread evenly) until
SIGTERM/SIGINT, then prints its counters: ``--mode stream`` (the default) one
``LeaseKeepAlive`` stream per lease; ``--mode client`` the shape of etcd's Go client
(clientv3): ONE ``LeaseKeepAlive`` stream per channel carrying every lease of that channel,
one ``LeaseKeepAliveRequest`` per renewal (etcd has no batches), written without waiting
for earlier answers, which a reader task matches by lease ID (bench/run.py's W3 uses
``--channels 1``: one client, one connection, one stream). ``w6`` is the etcd side of
bench/loadgen.py's ``keepalive --mode batch`` (W6), with the same output (see
:class:`_W6Keepalive`): ``--clients`` clients, each with its own connection and ONE
``LeaseKeepAlive`` stream, one request per lease (etcd has no batches). ``burst`` is the
etcd side of bench/loadgen.py's ``burst`` (W7 burst), same output.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parent / "gen"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # bench/

import grpc
import loadgen as rl  # bench/loadgen.py: W6's phase counters and helpers, shared
from etcdpb import rpc_pb2, rpc_pb2_grpc

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

HOLDER = f"bench:{os.getpid()}".encode()
TTL_S = 10


def _self_cpu() -> float:
    t = os.times()
    return t.user + t.system


def put_if_absent(key: bytes, lease_id: int) -> rpc_pb2.TxnRequest:
    return rpc_pb2.TxnRequest(
        compare=[
            rpc_pb2.Compare(
                key=key,
                target=rpc_pb2.Compare.CREATE,
                result=rpc_pb2.Compare.EQUAL,
                create_revision=0,
            )
        ],
        success=[
            rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=HOLDER, lease=lease_id))
        ],
        failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=key))],
    )


# ---------------------------------------------------------------------------------- W1
def w1(args: argparse.Namespace) -> dict[str, Any]:
    channel = grpc.insecure_channel(args.target)
    grpc.channel_ready_future(channel).result(timeout=10)
    lease = rpc_pb2_grpc.LeaseStub(channel)
    kv = rpc_pb2_grpc.KVStub(channel)
    key = f"w1-{uuid.uuid4().hex[:8]}".encode()
    acq: list[float] = []
    grant: list[float] = []
    txn: list[float] = []
    rel: list[float] = []
    cpu0 = _self_cpu()
    t_start = time.monotonic()
    for i in range(args.warmup + args.n):
        t0 = time.monotonic()
        g = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=TTL_S), timeout=5)
        t1 = time.monotonic()
        r = kv.Txn(put_if_absent(key, g.ID), timeout=5)
        t2 = time.monotonic()
        if not r.succeeded:
            raise SystemExit(f"w1: put-if-absent of {key!r} refused")
        lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=g.ID), timeout=5)
        t3 = time.monotonic()
        if i >= args.warmup:
            acq.append((t2 - t0) * 1000)
            grant.append((t1 - t0) * 1000)
            txn.append((t2 - t1) * 1000)
            rel.append((t3 - t2) * 1000)
    wall = time.monotonic() - t_start
    channel.close()
    return {
        "acquire_ms": acq,
        "grant_ms": grant,
        "txn_ms": txn,
        "release_ms": rel,
        "client_cpu_s": _self_cpu() - cpu0,
        "wall_s": wall,
    }


# ---------------------------------------------------------------------------------- W2
async def _w2(args: argparse.Namespace) -> dict[str, Any]:
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
        lease = rpc_pb2_grpc.LeaseStub(channels[i])
        kv = rpc_pb2_grpc.KVStub(channels[i])
        key = f"w2-{tag}-{i}".encode()
        while loop.time() < t_end:
            try:
                t0 = loop.time()
                g = await lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=TTL_S), timeout=5)
                r = await kv.Txn(put_if_absent(key, g.ID), timeout=5)
                t1 = loop.time()
                if r.succeeded:
                    if t_begin <= t1 < t_end:
                        counts[i] += 1
                        lat.append((t1 - t0) * 1000)
                else:
                    errors["not_acquired"] = errors.get("not_acquired", 0) + 1
                await lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=g.ID), timeout=5)
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


# ---------------------------------------------------------------------------------- W3
async def _keepalive(args: argparse.Namespace) -> dict[str, Any]:
    nch = max(1, min(args.channels, args.leases))
    channels = [grpc.aio.insecure_channel(args.target) for _ in range(nch)]
    for ch in channels:
        await asyncio.wait_for(ch.channel_ready(), 10)
    leases = [rpc_pb2_grpc.LeaseStub(ch) for ch in channels]
    kvs = [rpc_pb2_grpc.KVStub(ch) for ch in channels]
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tag = uuid.uuid4().hex[:6]
    ttl_s = max(1, args.ttl_ms // 1000)
    lease_ids = [0] * args.leases
    granted = [0.0] * args.leases  # LeaseGrant send time, then each renewal's answered send
    sem = asyncio.Semaphore(args.concurrency)
    t0 = loop.time()

    async def acquire(i: int) -> None:
        async with sem:
            for _attempt in range(50):
                try:
                    granted[i] = loop.time()
                    g = await leases[i % nch].LeaseGrant(
                        rpc_pb2.LeaseGrantRequest(TTL=ttl_s), timeout=10
                    )
                    r = await kvs[i % nch].Txn(
                        put_if_absent(f"ka-{tag}-{i}".encode(), g.ID), timeout=10
                    )
                except grpc.aio.AioRpcError:
                    await asyncio.sleep(0.05)
                    continue
                if r.succeeded:
                    lease_ids[i] = g.ID
                    return
            raise SystemExit(f"keepalive: could not acquire lease {i}")

    await asyncio.gather(*(acquire(i) for i in range(args.leases)))
    acquire_s = loop.time() - t0

    period = ttl_s / 3.0
    sent = ok = failed = lost = 0
    late: list[float] = []
    answer_ms: list[float] = []
    odd: dict[str, int] = {}
    gone: set[int] = set()  # lease indices etcd answered TTL <= 0 for
    base = 0.0

    async def keep_stream(i: int) -> None:
        nonlocal sent, ok, failed, lost
        due = base + period * i / args.leases
        req = rpc_pb2.LeaseKeepAliveRequest(ID=lease_ids[i])
        while not stop.is_set():
            call = leases[i % nch].LeaseKeepAlive()
            try:
                while not stop.is_set():
                    delay = due - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    late.append(loop.time() - due)
                    await call.write(req)
                    sent += 1
                    resp = await call.read()
                    if resp is grpc.aio.EOF or resp.TTL <= 0:
                        lost += 1
                        return
                    ok += 1
                    due += period
            except grpc.aio.AioRpcError:
                failed += 1
                await asyncio.sleep(0.05)
            finally:
                call.cancel()

    async def read_answers(
        call: Any, index: dict[int, int], inflight: dict[int, list[float]]
    ) -> None:
        """client mode: the answers of one shared stream, matched by lease ID."""
        nonlocal ok, lost
        while True:
            resp = await call.read()
            if resp is grpc.aio.EOF:
                rl._count(odd, "stream ended by the server")
                return
            i = index.get(resp.ID)
            sends = inflight.get(resp.ID)
            if i is None or not sends:
                rl._count(odd, "answer for no request in flight")
                continue
            t_send = sends.pop(0)  # etcd answers a stream's requests in order
            answer_ms.append((loop.time() - t_send) * 1000)
            if resp.TTL <= 0:
                if i not in gone:
                    gone.add(i)
                    lost += 1
                continue
            ok += 1
            granted[i] = max(granted[i], t_send)

    async def keep_client(ch: int) -> None:
        """client mode: every lease of channel ``ch`` renewed on ONE LeaseKeepAlive stream,
        each every ``period`` (phases spread evenly over all leases), one request per
        renewal, written as it falls due; a reader task takes the answers. A stream that ends
        is reopened (renewals in flight on it are not re-sent: the next is a period later)."""
        nonlocal sent, failed
        mine = range(ch, args.leases, nch)
        heap = [(base + period * i / args.leases, i) for i in mine]
        heapq.heapify(heap)
        index = {lease_ids[i]: i for i in mine}
        while not stop.is_set():
            call = leases[ch].LeaseKeepAlive()
            inflight: dict[int, list[float]] = {}
            reader = loop.create_task(read_answers(call, index, inflight))
            try:
                while not stop.is_set() and not reader.done():
                    due, i = heap[0]
                    delay = due - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                        continue
                    heapq.heapreplace(heap, (due + period, i))
                    if i in gone:
                        continue
                    now = loop.time()
                    late.append(now - due)
                    inflight.setdefault(lease_ids[i], []).append(now)
                    await call.write(rpc_pb2.LeaseKeepAliveRequest(ID=lease_ids[i]))
                    sent += 1
                if reader.done() and not reader.cancelled():
                    reader.result()  # raises the stream's failure, if any
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                failed += 1
            finally:
                call.cancel()
                reader.cancel()
            if not stop.is_set():
                await asyncio.sleep(0.05)

    print("READY " + json.dumps({"acquire_s": acquire_s}), flush=True)
    await asyncio.sleep(args.pause_s)
    base = loop.time() + 0.05
    if args.mode == "client":
        tasks = [loop.create_task(keep_client(ch)) for ch in range(nch)]
    else:
        tasks = [loop.create_task(keep_stream(i)) for i in range(args.leases)]
    cpu0 = _self_cpu()
    t_keep = loop.time()
    await stop.wait()
    wall = loop.time() - t_keep
    cpu = _self_cpu() - cpu0
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for ch in channels:
        await ch.close()
    end = loop.time()
    expired = 0
    if args.mode == "client":
        # leases whose last answered renewal (or grant) is more than a TTL ago: etcd let them go
        expired = sum(1 for i in range(args.leases) if i not in gone and granted[i] + ttl_s < end)
    late.sort()
    answer_ms.sort()
    return {
        "leases": args.leases,
        "mode": args.mode,
        "keepalive_streams": nch if args.mode == "client" else args.leases,
        "period_s": period,
        "acquire_s": acquire_s,
        "renewals_sent": sent,
        "renewals_ok": ok,
        "renewals_failed": failed,
        "leases_lost": lost + expired,
        "leases_expired": expired,
        "oddities": odd,
        "renewals_per_s": ok / wall if wall > 0 else 0.0,
        "messages_per_s": sent / wall if wall > 0 else 0.0,  # one request per renewal
        "answer_p50_ms": rl._q(answer_ms, 0.5) if answer_ms else None,
        "answer_p99_ms": rl._q(answer_ms, 0.99) if answer_ms else None,
        "late_p50_ms": late[len(late) // 2] * 1000 if late else 0.0,
        "late_p99_ms": late[int(len(late) * 0.99)] * 1000 if late else 0.0,
        "client_cpu_s": cpu,
        "wall_s": wall,
    }


# ---------------------------------------------------------------------------------- W6
class _Leader(rl._Leader):
    """Where the etcd leader is, for every client of a w6 run (``Maintenance.Status`` on each
    endpoint: the member whose ``leader`` is its own id): one search at a time, at most
    ``search_s``."""

    def status_stub(self, channel: grpc.aio.Channel) -> Any:
        return rpc_pb2_grpc.MaintenanceStub(channel)

    async def leads(self, stub: Any) -> bool:
        st = await stub.Status(rpc_pb2.StatusRequest(), timeout=0.3)
        return bool(st.leader and st.leader == st.header.member_id)


def _held_by(r: rpc_pb2.TxnResponse, lease_id: int) -> bool:
    """A put-if-absent that failed because an earlier try of the same acquisition (one that
    timed out on the client but was applied) already put the key with this lease."""
    for op in r.responses:
        for kv in op.response_range.kvs:
            if kv.lease == lease_id:
                return True
    return False


class _W6Keepalive(rl._BatchKeepalive):
    """``w6``: the etcd side of W6, bench/loadgen.py's ``keepalive --mode batch``
    (:class:`loadgen._BatchKeepalive`: the same driver, clients, phases and JSON) with etcd's
    hooks.

    ``--clients`` clients hold ``--leases`` leases between them (lease i belongs to client
    i % clients). An acquisition is ``LeaseGrant(TTL)`` + ``Txn`` put-if-absent of the
    lease's own key with that lease (etcd's lock recipe, as in W1-W5's etcd side; a retried
    Txn that finds the key already holding its lease counts as acquired), ``--concurrency``
    at a time on ``--channels`` shared channels to the leader. A granted lease joins its
    client's set at once. Each client renews its whole set every ttl/3 (the clients' rounds
    spread over the period) on its one ``LeaseKeepAlive`` stream: one request per lease
    (``batch_max`` 1: etcd has no batches), written back to back; etcd answers each request
    in order with the lease's TTL. TTL > 0 extends the client's view of the lease's validity
    from the request's write time; TTL <= 0 (etcd: lease not found) loses it. A stream that
    ends or answers nothing for ``--attempt-s`` is reopened on the leader and the whole set
    re-sent. A lease whose validity passes is lost, with the reason (the last stream
    failure's code, or "no answer"). SIGUSR1 starts the "hold" phase; SIGTERM ends the run."""

    leader_type = _Leader
    mode = "etcd: one LeaseKeepAlive request per lease"
    unit = "request"

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.ttl_s = max(1, round(self.ttl))

    def acq_stub(self, channel: grpc.aio.Channel) -> Any:
        return (rpc_pb2_grpc.LeaseStub(channel), rpc_pb2_grpc.KVStub(channel))

    def acquisition(self, i: int, cl: rl._BatchClient) -> rl._Attempt:
        """``LeaseGrant`` + ``Txn``; a retry reuses the lease until etcd no longer knows it.
        The TTL counts from the ``LeaseGrant``'s send time."""
        key = f"w6-{self.tag}-{i}".encode()
        lid = 0
        t0 = 0.0

        async def attempt(
            stubs: tuple[rpc_pb2_grpc.LeaseStub, rpc_pb2_grpc.KVStub],
        ) -> tuple[int | None, float]:
            nonlocal lid, t0
            lease_stub, kv = stubs
            try:
                if not lid:
                    t0 = self.loop.time()
                    g = await lease_stub.LeaseGrant(
                        rpc_pb2.LeaseGrantRequest(TTL=self.ttl_s), timeout=10
                    )
                    lid = g.ID
                r = await kv.Txn(put_if_absent(key, lid), timeout=10)
            except grpc.aio.AioRpcError as e:
                if e.code() == grpc.StatusCode.NOT_FOUND:
                    lid = 0  # the lease expired before its Txn went through: a new one
                raise
            return (lid if r.succeeded or _held_by(r, lid) else None), t0

        return attempt

    def open_stream(self, channel: grpc.aio.Channel) -> Any:
        return rpc_pb2_grpc.LeaseStub(channel).LeaseKeepAlive()

    def keepalive_request(self, ids: list[int]) -> Any:
        return rpc_pb2.LeaseKeepAliveRequest(ID=ids[0])

    def answered(
        self, cl: rl._BatchClient, ph: rl._Phase, resp: Any, ids: list[int], sent: float, now: float
    ) -> None:
        lid = ids[0]
        if lid != resp.ID:
            rl._count(ph.oddities, "answer for another lease than the oldest request")
            lid = resp.ID
        if resp.TTL <= 0:
            rl._count(ph.refused, "TTL<=0")
            if lid in cl.valid:
                self.lose(cl, lid, "item:TTL<=0 (lease not found)")
            return
        ph.renewed += 1
        if not self.extend(cl, ph, lid, sent + self.ttl, now):
            rl._count(ph.oddities, "renewed a lease given up or unknown")


async def _w6(args: argparse.Namespace) -> dict[str, Any]:
    return await _W6Keepalive(args).run()


# ---------------------------------------------------------------------------------- W7 burst
class _EtcdBurst(rl.BurstTarget):
    """bench/loadgen.py's ``burst`` on etcd: a name is acquired with ``LeaseGrant`` (TTL
    ``ttl_ms``, rounded to whole seconds) + ``Txn`` put-if-absent (a retry reuses its lease
    until etcd no longer knows it); every lease is kept alive on ONE ``LeaseKeepAlive``
    stream, one request per lease; an answer with TTL <= 0 is a refusal."""

    def acquirer(
        self, channel: grpc.aio.Channel, tag: str, ttl_ms: int
    ) -> Callable[[int], Awaitable[int | None]]:
        lease_stub = rpc_pb2_grpc.LeaseStub(channel)
        kv = rpc_pb2_grpc.KVStub(channel)
        ttl_s = max(1, round(ttl_ms / 1000))
        granted: dict[int, int] = {}  # name number -> its lease, across retries

        async def acquire(k: int) -> int | None:
            lid = granted.get(k, 0)
            try:
                if not lid:
                    g = await lease_stub.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=ttl_s), timeout=5)
                    lid = granted[k] = g.ID
                r = await kv.Txn(put_if_absent(f"burst-{tag}-{k}".encode(), lid), timeout=5)
            except grpc.aio.AioRpcError as e:
                if e.code() == grpc.StatusCode.NOT_FOUND:
                    granted.pop(k, None)  # the lease is gone: grant a new one
                raise
            granted.pop(k, None)
            return int(lid) if r.succeeded or _held_by(r, lid) else None

        return acquire

    def keepalive_call(self, channel: grpc.aio.Channel) -> Any:
        return rpc_pb2_grpc.LeaseStub(channel).LeaseKeepAlive()

    def keepalive_request(self, lease_id: int) -> Any:
        return rpc_pb2.LeaseKeepAliveRequest(ID=lease_id)

    def outcome(self, resp: Any) -> str | None:
        return None if resp.TTL > 0 else "TTL<=0"


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    a1 = sub.add_parser("w1")
    a1.add_argument("--target", required=True)
    a1.add_argument("--n", type=int, default=2000)
    a1.add_argument("--warmup", type=int, default=200)
    a2 = sub.add_parser("w2")
    a2.add_argument("--target", required=True)
    a2.add_argument("--clients", type=int, default=16)
    a2.add_argument("--duration", type=float, default=10.0)
    a2.add_argument("--warmup", type=float, default=2.0)
    a3 = sub.add_parser("keepalive")
    a3.add_argument("--target", required=True)
    a3.add_argument("--leases", type=int, default=1000)
    a3.add_argument("--ttl-ms", type=int, default=10_000)
    a3.add_argument(
        "--mode",
        choices=["stream", "client"],
        default="stream",
        help="stream: a LeaseKeepAlive stream per lease; client: one per channel (clientv3)",
    )
    a3.add_argument("--channels", type=int, default=8)
    a3.add_argument("--concurrency", type=int, default=64)
    a3.add_argument("--pause-s", type=float, default=2.0)
    a6 = sub.add_parser("w6")
    a6.add_argument("--target", required=True)
    a6.add_argument("--endpoints", default="", help="all members, to find a new leader")
    a6.add_argument("--leases", type=int, default=1000)
    a6.add_argument("--clients", type=int, default=100, help="clients (one stream each)")
    a6.add_argument("--ttl-ms", type=int, default=30_000)
    a6.add_argument("--channels", type=int, default=8, help="acquisition channels")
    a6.add_argument("--concurrency", type=int, default=64, help="acquisitions in flight")
    a6.add_argument("--late-ms", type=float, default=1000.0, help="a renewal this late counts")
    a6.add_argument(
        "--attempt-s",
        type=float,
        default=1.0,
        help="a stream that answers nothing this long is closed and reopened",
    )
    # loadgen.py's batch flags, fixed: etcd has no batches (one request per lease) and no
    # RETRY answer to re-send after
    a6.set_defaults(batch_max=1, retry_ms=0.0)
    a7 = sub.add_parser("burst")
    a7.add_argument("--target", required=True)
    a7.add_argument("--clients", type=int, default=16)
    a7.add_argument("--leases", type=int, default=10_000)
    a7.add_argument("--ttl-ms", type=int, default=30_000)
    a7.add_argument("--hold-s", type=float, default=10.0)
    a7.add_argument("--no-keepalive", dest="keepalive", action="store_false")
    # No leader to follow: any etcd member serves LeaseGrant, Txn and LeaseKeepAlive itself
    # (forwarding to the leader), so the burst keeps to --target through a leader change.
    a7.set_defaults(endpoints="")
    args = ap.parse_args()
    if args.cmd == "w1":
        out = w1(args)
    elif args.cmd == "w2":
        out = asyncio.run(_w2(args))
    elif args.cmd == "w6":
        out = asyncio.run(_w6(args))
    elif args.cmd == "burst":
        out = asyncio.run(rl._burst(args, _EtcdBurst()))
    else:
        out = asyncio.run(_keepalive(args))
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
