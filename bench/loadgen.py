"""Load generators for bench/run.py: separate processes speaking raw gRPC (raftlease/v1 stubs).

    python bench/loadgen.py w1 --target HOST:PORT --n 2000 --warmup 200
    python bench/loadgen.py w2 --target HOST:PORT --clients 16 --duration 10 --warmup 2
    python bench/loadgen.py keepalive --target HOST:PORT --leases 1000 --ttl-ms 10000
    python bench/loadgen.py keepalive --mode batch --target HOST:PORT --endpoints A,B,C \
        --clients 100 --leases 100000 --ttl-ms 30000
    python bench/loadgen.py burst --target HOST:PORT --endpoints A,B,C --clients 16 \
        --leases 10000 --ttl-ms 30000

Each prints one JSON object on its last stdout line. ``keepalive`` first acquires the leases,
prints ``READY {...}``, keeps every lease alive (renewal every ttl/3, spread evenly over the
period) until SIGTERM/SIGINT, then prints its counters. ``--mode client`` (W3's default) is
the shipped client: ONE ``LeaseClient`` acquires the leases and its keepalive hub renews them
(one KeepAlive stream per node, renewals due together batched in ``items``; see
bench/keepalive_hub.py ``loadgen_keepalive``). ``--mode stream`` (one KeepAlive stream per
lease, an old client) and ``--mode renew`` (unary Renew per renewal) acquire every lease
first; ``--mode batch`` (W6) plays ``--clients`` clients, each holding its share of the
leases on ONE KeepAlive stream renewed in ``items`` batches, from each lease's grant on: see
:class:`_BatchKeepalive`. In batch mode SIGUSR1 starts the measured phase ("hold"): the
counters before it are reported as the acquisition phase. ``burst`` (W7 burst, see
:func:`_burst`) follows a new leader when given ``--endpoints``, as ``w2`` does.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import heapq
import json
import math
import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc

from raftlease.v1 import cluster_pb2, cluster_pb2_grpc, lease_pb2, lease_pb2_grpc

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

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
    its own name in a loop. Counts acquisitions completed inside the measurement window.
    With ``--endpoints`` (W7) the clients follow a new leader, found through Cluster.Status,
    when a call fails; without it they keep to ``--target`` (W2's measurement)."""
    tgt = _Target(
        argparse.Namespace(
            target=args.target,
            endpoints=args.endpoints,
            channels=args.clients,
            leases=args.clients,
        )
    )
    await tgt.ready()
    loop = asyncio.get_running_loop()
    t_begin = loop.time() + args.warmup
    t_end = t_begin + args.duration
    lat: list[float] = []
    errors: dict[str, int] = {}
    counts = [0] * args.clients
    tag = uuid.uuid4().hex[:6]

    async def client(i: int) -> None:
        name = f"w2-{tag}-{i}"
        while True:
            now = loop.time()
            if now >= t_end:
                return
            gen = tgt.gen
            stub = tgt.stubs[i]
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
                if args.endpoints:
                    await tgt.retarget(gen)
            except asyncio.CancelledError:
                if not _channel_closed():
                    raise
                errors["moved"] = errors.get("moved", 0) + 1  # the leader moved under it

    cpu0 = _self_cpu()
    await asyncio.gather(*(client(i) for i in range(args.clients)))
    cpu = _self_cpu() - cpu0
    await tgt.close()
    total = sum(counts)
    return {
        "acquisitions": total,
        "retargets": tgt.retargets,
        "per_s": total / args.duration,
        "per_client": counts,
        "acquire_ms": lat,
        "errors": errors,
        "client_cpu_s": cpu,
        "duration_s": args.duration,
    }


# ---------------------------------------------------------------------------------- W3/W6
def _channel_closed() -> bool:
    """In an ``except asyncio.CancelledError``: True when the error came from a grpc call
    whose channel was closed under it (grpc.aio cancels the calls of a closed channel),
    not from a cancellation of this task."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() == 0


class _Target:
    """The leader's channels; re-found through Cluster.Status when the leader moves."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.address = args.target
        self.endpoints = [e for e in (args.endpoints or args.target).split(",") if e]
        self.nch = max(1, min(args.channels, args.leases))
        self.gen = 0
        self.retargets = 0
        self._lock = asyncio.Lock()
        # The search itself is _Leader's (also the batch clients'), bounded to 10 s.
        self.leader = _Leader(self.address, self.endpoints, search_s=10.0)
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
            await self.leader.find(self.leader.gen)
            new = self.leader.address
            self.gen += 1
            if not new or new == self.address:
                # Same leader (e.g. it answered UNAVAILABLE while its leader lease lapsed):
                # keep the channels. Closing them would cancel every other call on them.
                return
            old = self.channels
            self.address = new
            self._open(self.address)
            self.retargets += 1
            for ch in old:
                await ch.close()  # calls still on them end with CancelledError: see below

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
                except asyncio.CancelledError:
                    if not _channel_closed():
                        raise
                    continue  # the leader moved under this call: again on the new one
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
    fail_codes: dict[str, int] = {}
    fail_details: dict[str, int] = {}
    lost_reasons: dict[str, int] = {}
    base = loop.time() + 0.05

    def failure(e: grpc.aio.AioRpcError) -> None:
        """Count one failed call by status code (and by code + details)."""
        failed_with(e.code(), e.details())

    def failed_with(code: grpc.StatusCode, details: str | None) -> None:
        nonlocal failed, lost
        failed += 1
        _count(fail_codes, code.name)
        _count_detail(fail_details, code.name, details)
        if code == grpc.StatusCode.NOT_FOUND:
            lost += 1
            _count(lost_reasons, f"status:{code.name}")

    def closed() -> None:
        nonlocal failed
        failed += 1
        _count(fail_codes, "CANCELLED")
        _count_detail(fail_details, "CANCELLED", "local: channel closed (the leader moved)")

    async def keep_stream(i: int) -> None:
        nonlocal sent, ok
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
                failure(e)
                if e.code() == grpc.StatusCode.NOT_FOUND:
                    return
                await asyncio.sleep(0.05)
                await tgt.retarget(gen)
            except asyncio.InvalidStateError:
                # A write to a stream that already ended (the server ended it: a deposed
                # leader, a lapse): its status says why.
                code = await call.code()
                failed_with(code, await call.details())
                if code == grpc.StatusCode.NOT_FOUND:
                    return
                await asyncio.sleep(0.05)
                await tgt.retarget(gen)
            except asyncio.CancelledError:
                if not _channel_closed():
                    raise
                closed()  # the leader moved and its channel closed: reopen on the new one
            finally:
                call.cancel()

    async def keep_unary(i: int) -> None:
        nonlocal sent, ok
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
                failure(e)
                if e.code() == grpc.StatusCode.NOT_FOUND:
                    return
                await asyncio.sleep(0.05)
                await tgt.retarget(gen)
            except asyncio.CancelledError:
                if not _channel_closed():
                    raise
                closed()

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
        "keepalive_streams": args.leases if args.mode == "stream" else 0,
        "period_s": period,
        "acquire_s": acquire_s,
        "renewals_sent": sent,
        "renewals_ok": ok,
        "renewals_failed": failed,
        "failure_codes": fail_codes,
        "failure_details": fail_details,
        "leases_lost": lost,
        "lost_reasons": lost_reasons,
        "retargets": tgt.retargets,
        "renewals_per_s": ok / wall if wall > 0 else 0.0,
        # one KeepAliveRequest (or Renew) per renewal
        "messages_per_s": sent / wall if wall > 0 else 0.0,
        "late_p50_ms": late[len(late) // 2] * 1000 if late else 0.0,
        "late_p99_ms": late[int(len(late) * 0.99)] * 1000 if late else 0.0,
        "client_cpu_s": cpu,
        "wall_s": wall,
    }


# ---------------------------------------------------------------------------------- W6 batch
def _count(d: dict[str, int], key: str, n: int = 1) -> None:
    d[key] = d.get(key, 0) + n


_MAX_DETAILS = 40


def _count_detail(d: dict[str, int], code: str, details: str | None) -> None:
    """Count a failure by ``CODE: details`` (details cut to 160 characters; past
    ``_MAX_DETAILS`` distinct texts, new ones are counted under ``CODE: (other)``)."""
    key = f"{code}: {(details or '').strip()[:160]}"
    if key not in d and len(d) >= _MAX_DETAILS:
        key = f"{code}: (other)"
    _count(d, key)


_RENEWED = lease_pb2.KeepAliveResponse.OUTCOME_RENEWED
_RETRY = lease_pb2.KeepAliveResponse.OUTCOME_RETRY
_NOT_LEADER = lease_pb2.KeepAliveResponse.OUTCOME_NOT_LEADER
_OUTCOME_NAME = lease_pb2.KeepAliveResponse.Outcome.Name


class _Phase:
    """The counters of one phase of a batch-mode run: ``acquire`` (from the start until the
    driver's SIGUSR1) and ``hold`` (from SIGUSR1 to SIGTERM)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.batches = 0  # KeepAliveRequest messages written
        self.sent = 0  # renewal items written
        self.renewed = 0  # items answered RENEWED
        self.refused: dict[str, int] = {}  # items answered otherwise, by outcome
        self.latency_ms: list[float] = []  # per batch: write -> its answer
        # per renewal round of a client: its first write -> the answer to its last lease
        self.round_ms: list[float] = []
        self.late_ms: list[float] = []  # per renewal round (tick): how late it was sent
        self.late_renewals = 0  # items sent more than --late-ms after due
        self.ticks_skipped = 0  # whole rounds skipped: a round was more than a period late
        self.max_gap_s = 0.0  # longest time between two RENEWED answers of one lease
        self.gaps_over = 0  # RENEWED answers that came > 1.5 periods after the one before
        self.lost: dict[str, int] = {}  # leases lost, by reason
        self.stream_failures: dict[str, int] = {}  # by status code
        self.oddities: dict[str, int] = {}  # answers that match nothing, and the like
        self.cpu0 = _self_cpu()
        self.t0 = time.monotonic()
        self.cpu_s = 0.0
        self.wall_s = 0.0

    def close(self) -> None:
        self.cpu_s = _self_cpu() - self.cpu0
        self.wall_s = time.monotonic() - self.t0

    def result(self) -> dict[str, Any]:
        lat = sorted(self.latency_ms)
        late = sorted(self.late_ms)
        return {
            "wall_s": self.wall_s,
            "client_cpu_s": self.cpu_s,
            "batches": self.batches,
            "renewals_sent": self.sent,
            "renewals_ok": self.renewed,
            "renewals_per_s": self.renewed / self.wall_s if self.wall_s else 0.0,
            "refused": self.refused,
            "leases_lost": sum(self.lost.values()),
            "lost_reasons": self.lost,
            "stream_failures": sum(self.stream_failures.values()),
            "stream_failure_codes": self.stream_failures,
            "latency_p50_ms": _q(lat, 0.5),
            "latency_p99_ms": _q(lat, 0.99),
            "latency_max_ms": lat[-1] if lat else 0.0,
            "round_p50_ms": _q(sorted(self.round_ms), 0.5),
            "round_p99_ms": _q(sorted(self.round_ms), 0.99),
            "late_p50_ms": _q(late, 0.5),
            "late_p99_ms": _q(late, 0.99),
            "late_max_ms": late[-1] if late else 0.0,
            "late_renewals": self.late_renewals,
            "ticks_skipped": self.ticks_skipped,
            "max_gap_s": self.max_gap_s,
            "gaps_over_1_5_periods": self.gaps_over,
            "oddities": self.oddities,
            # raw, so that a driver running several load generators can merge percentiles
            "latency_ms": [round(x, 3) for x in self.latency_ms],
            "round_ms": [round(x, 3) for x in self.round_ms],
            "late_ms": [round(x, 3) for x in self.late_ms],
        }


def _q(s: list[float], q: float) -> float:
    return s[min(len(s) - 1, int(len(s) * q))] if s else 0.0


class _Leader:
    """Where the leader is, for every client of a batch-mode run: one search at a time
    (Cluster.Status on each endpoint), bounded to ``search_s`` so that a leader that stalls
    without losing its office is kept (and retried) rather than searched for indefinitely.
    Another system overrides ``status_stub`` and ``leads`` (bench/etcd/etcd_loadgen.py)."""

    def __init__(self, address: str, endpoints: list[str], search_s: float = 2.0) -> None:
        self.address = address
        self.endpoints = endpoints or [address]
        self.search_s = search_s
        self.gen = 0
        self.searches = 0
        self.moves = 0
        self._lock = asyncio.Lock()
        self._status = {
            ep: self.status_stub(grpc.aio.insecure_channel(ep)) for ep in self.endpoints
        }

    def status_stub(self, channel: grpc.aio.Channel) -> Any:
        return cluster_pb2_grpc.ClusterStub(channel)

    async def leads(self, stub: Any) -> bool:
        """Whether the endpoint behind ``stub`` says it is the leader (AioRpcError: no answer)."""
        st = await stub.Status(cluster_pb2.StatusRequest(), timeout=0.3)
        return bool(st.leader_id and st.leader_id == st.node_id)

    async def find(self, seen_gen: int) -> None:
        async with self._lock:
            if self.gen != seen_gen:
                return  # another client already searched since this one looked
            loop = asyncio.get_running_loop()
            self.searches += 1
            deadline = loop.time() + self.search_s
            found = ""
            while not found and loop.time() < deadline:
                for ep, stub in self._status.items():
                    try:
                        if await self.leads(stub):
                            found = ep
                            break
                    except grpc.aio.AioRpcError:
                        continue
                if not found:
                    await asyncio.sleep(0.05)
            if found and found != self.address:
                self.moves += 1
                self.address = found
            self.gen += 1


class _BatchClient:
    """One client of a batch-mode run: its own channel (its own TCP connection), its leases,
    ONE KeepAlive stream. ``valid[lease]`` is the client's own view of a lease's validity:
    the write time of its last renewal answered RENEWED, plus the TTL (counted from the
    Acquire's send time before the first renewal); past it the lease is lost."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.holder = f"{HOLDER}:c{k}"
        self.address = ""
        self.channel: grpc.aio.Channel | None = None
        self.valid: dict[int, float] = {}
        self.last_ok: dict[int, float] = {}  # lease -> when its last RENEWED answer came
        self.bad: dict[int, str] = {}  # lease -> its last refusal, until renewed again
        # (write time, lease ids, the round's first write time if this ends a round)
        self.pending: collections.deque[tuple[float, list[int], float | None]] = collections.deque()
        self.last_answer = -math.inf
        self.retry: set[int] = set()
        self.retry_at = math.inf
        self.move = False  # an item answered NOT_LEADER: find the leader, reopen
        self.failed_at = -math.inf  # the last stream failure: when, and its code
        self.failed_code = ""
        self.wake = asyncio.Event()

    def on_reader_done(self, _task: asyncio.Task[None]) -> None:
        self.wake.set()  # the writer loop looks at how the stream ended

    async def connect(self, address: str) -> None:
        if self.channel is not None and address == self.address:
            return
        old = self.channel
        # A local subchannel pool: every client gets its own connection, as separate
        # processes would (grpc otherwise shares one connection between equal channels).
        self.channel = grpc.aio.insecure_channel(
            address, options=[("grpc.use_local_subchannel_pool", 1)]
        )
        self.address = address
        if old is not None:
            await old.close()


# One acquisition attempt on an acquisition stub: (the lease id if granted, else None; the
# time the lease's TTL counts from). An AioRpcError is retried.
_Attempt: TypeAlias = "Callable[[Any], Awaitable[tuple[int | None, float]]]"


class _BatchKeepalive:
    """``keepalive --mode batch``: this process plays ``--clients`` clients holding
    ``--leases`` leases between them (lease i belongs to client i % clients).

    Acquisitions run ``--concurrency`` at a time across all clients, on ``--channels``
    shared channels to the leader. A granted lease joins its client's set at once. Each
    client renews its whole set every ttl/3 (the clients' rounds spread evenly over the
    period), on its one KeepAlive stream, in messages of at most ``--batch-max`` items
    (``inband_outcomes``), and matches each answer's items to its leases by lease id.
    Outcomes: RENEWED extends validity from the batch's write time; RETRY re-sends the item
    on the same stream after ``--retry-ms``; NOT_LEADER finds the leader and reopens the
    stream there; NOT_FOUND and INVALID lose the lease. A stream that ends (any status) or
    that answers nothing for ``--attempt-s`` (closed here, counted as a local
    DEADLINE_EXCEEDED, as the shipped client does) is reopened on the leader and the
    whole set re-sent. A lease whose validity passes is lost, with the reason: the last
    refusal of it, else the code of a stream failure since its last renewal, else
    "no answer".

    What is raftlease's alone is in the hooks ``leader_type``, ``acq_stub``,
    ``acquisition``, ``open_stream``, ``keepalive_request`` and ``answered`` (and the
    ``mode``/``unit`` labels); bench/etcd/etcd_loadgen.py's ``_W6Keepalive`` overrides
    them for etcd and shares the rest: acquisitions and their retries, the stream loop,
    failures, expiry, phases and the JSON."""

    leader_type: type[_Leader] = _Leader
    mode = "batch"  # the JSON's "mode"
    unit = "batch"  # what one message written on a stream is called in "oddities"

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.loop = asyncio.get_running_loop()
        self.ttl = args.ttl_ms / 1000.0
        self.period = self.ttl / 3.0
        self.period_gap = 1.5 * self.period
        self.late_s = args.late_ms / 1000.0
        self.attempt_s = args.attempt_s
        self.retry_s = args.retry_ms / 1000.0
        self.bmax = max(1, min(1000, args.batch_max))
        self.nclients = max(1, min(args.clients, args.leases or 1))
        endpoints = [e for e in (args.endpoints or args.target).split(",") if e]
        self.leader = self.leader_type(args.target, endpoints)
        self.clients = [_BatchClient(k) for k in range(self.nclients)]
        self.tag = uuid.uuid4().hex[:6]
        self.phase = _Phase("acquire")
        self.phases = [self.phase]
        self.stream_details: dict[str, int] = {}
        self.acquire_errors: dict[str, int] = {}
        self.acquire_details: dict[str, int] = {}
        self.acquired = 0
        self.acquire_failed = 0
        self.reconnects = 0
        self.next_i = 0
        self.base = 0.0
        self.acq_address = ""
        self.acq_stubs: list[Any] = []
        self.acq_channels: list[grpc.aio.Channel] = []

    # -------------------------------------------------------------- what is raftlease's
    def acq_stub(self, channel: grpc.aio.Channel) -> Any:
        """What ``acquisition``'s attempts are given: the stub(s) on one shared channel."""
        return lease_pb2_grpc.LeaseStub(channel)

    def acquisition(self, i: int, cl: _BatchClient) -> _Attempt:
        """Lease number ``i`` (client ``cl``'s): one Acquire, its request reused on retries."""
        req = lease_pb2.AcquireRequest(
            name=f"ka-{self.tag}-{i}",
            holder=cl.holder,
            ttl_ms=self.args.ttl_ms,
            wait_ms=0,
            request_id=f"{self.tag}-{i}",
        )

        async def attempt(stub: lease_pb2_grpc.LeaseAsyncStub) -> tuple[int | None, float]:
            t0 = self.loop.time()
            resp = await stub.Acquire(req, timeout=10)
            return (resp.lease.lease_id if resp.acquired else None), t0

        return attempt

    def open_stream(self, channel: grpc.aio.Channel) -> Any:
        return lease_pb2_grpc.LeaseStub(channel).KeepAlive()

    def keepalive_request(self, ids: list[int]) -> Any:
        """One message renewing ``ids`` (at most ``bmax`` of them)."""
        req = lease_pb2.KeepAliveRequest(lease_id=ids[0], inband_outcomes=True)
        add = req.items.add
        for lid in ids:
            add(lease_id=lid)
        return req

    def answered(
        self, cl: _BatchClient, ph: _Phase, resp: Any, ids: list[int], sent: float, now: float
    ) -> None:
        """The answer ``resp`` to the message that renewed ``ids``, written at ``sent``:
        each item's outcome (matched by lease id)."""
        items = resp.items
        if len(items) != len(ids):
            _count(ph.oddities, "answer with a different item count")
            if not items:
                return  # a server without batches: nothing to match
        until = sent + self.ttl
        renewed = 0
        for it in items:
            lid = it.lease_id
            oc = it.outcome
            if oc == _RENEWED:
                renewed += 1
                if not self.extend(cl, ph, lid, until, now):
                    _count(ph.oddities, "RENEWED for a lease given up or unknown")
                continue
            name = _OUTCOME_NAME(oc)
            _count(ph.refused, name)
            if lid not in cl.valid:
                continue
            if oc in (_RETRY, _NOT_LEADER):
                cl.bad[lid] = name
                cl.retry.add(lid)
                if oc == _NOT_LEADER:
                    cl.move = True
                elif cl.retry_at == math.inf:
                    cl.retry_at = now + self.retry_s
                cl.wake.set()
            else:  # NOT_FOUND, INVALID: gone for good
                self.lose(cl, lid, f"item:{name}")
        ph.renewed += renewed

    # -------------------------------------------------------------- phases
    def start_hold(self) -> None:
        if self.phase.name == "hold":
            return
        self.phase.close()
        self.phase = _Phase("hold")
        self.phases.append(self.phase)

    def lose(self, cl: _BatchClient, lid: int, reason: str) -> None:
        cl.valid.pop(lid, None)
        cl.last_ok.pop(lid, None)
        cl.bad.pop(lid, None)
        cl.retry.discard(lid)
        _count(self.phase.lost, reason)

    def expire(self, cl: _BatchClient, now: float) -> None:
        gone = [lid for lid, v in cl.valid.items() if v <= now]
        for lid in gone:
            why = cl.bad.get(lid)
            if why is not None:
                reason = f"expired after item:{why}"
            elif cl.failed_at > cl.last_ok.get(lid, -math.inf):
                reason = f"expired after stream:{cl.failed_code}"
            else:
                reason = "expired: no answer in time"
            self.lose(cl, lid, reason)

    def extend(self, cl: _BatchClient, ph: _Phase, lid: int, until: float, now: float) -> bool:
        """Lease ``lid`` renewed, valid ``until``, the answer at ``now``; False: ``cl`` does
        not hold it (given up, or unknown)."""
        valid = cl.valid
        if lid not in valid:
            return False
        if until > valid[lid]:
            valid[lid] = until
        gap = now - cl.last_ok[lid]
        if gap > ph.max_gap_s:
            ph.max_gap_s = gap
        if gap > self.period_gap:
            ph.gaps_over += 1
        cl.last_ok[lid] = now
        if cl.bad:
            cl.bad.pop(lid, None)
        return True

    # -------------------------------------------------------------- acquisitions
    async def _acq_stubs(self) -> list[Any]:
        if self.acq_address != self.leader.address:
            old = self.acq_channels
            self.acq_address = self.leader.address
            n = max(1, self.args.channels)
            self.acq_channels = [grpc.aio.insecure_channel(self.acq_address) for _ in range(n)]
            self.acq_stubs = [self.acq_stub(ch) for ch in self.acq_channels]
            for ch in old:
                await ch.close()
        return self.acq_stubs

    async def acquirer(self) -> None:
        args = self.args
        while self.next_i < args.leases:
            i = self.next_i
            self.next_i += 1
            cl = self.clients[i % self.nclients]
            attempt = self.acquisition(i, cl)
            for _attempt in range(100):
                gen = self.leader.gen
                stubs = await self._acq_stubs()
                try:
                    lid, t0 = await attempt(stubs[i % len(stubs)])
                except grpc.aio.AioRpcError as e:
                    _count(self.acquire_errors, e.code().name)
                    _count_detail(self.acquire_details, e.code().name, e.details())
                    await asyncio.sleep(0.05)
                    if e.code() != grpc.StatusCode.CANCELLED:  # CANCELLED: we moved
                        await self.leader.find(gen)
                    continue
                except asyncio.CancelledError:
                    if not _channel_closed():
                        raise
                    _count(self.acquire_errors, "CANCELLED")  # its channel closed: we moved
                    continue
                if lid is not None:
                    self.acquired += 1
                    cl.valid[lid] = t0 + self.ttl
                    cl.last_ok[lid] = self.loop.time()
                else:
                    _count(self.acquire_errors, "not_acquired")
                    self.acquire_failed += 1
                break
            else:
                self.acquire_failed += 1

    # -------------------------------------------------------------- keepalive
    async def read(self, cl: _BatchClient, call: Any) -> None:
        async for resp in call:
            now = self.loop.time()
            ph = self.phase
            if not cl.pending:
                _count(ph.oddities, f"answer without a {self.unit} in flight")
                continue
            sent, ids, round0 = cl.pending.popleft()
            cl.last_answer = now
            ph.latency_ms.append((now - sent) * 1000.0)
            if round0 is not None:
                ph.round_ms.append((now - round0) * 1000.0)
            self.answered(cl, ph, resp, ids, sent, now)

    async def send(
        self, cl: _BatchClient, call: Any, ids: list[int], is_round: bool = False
    ) -> None:
        """Write ``ids`` in messages of at most ``bmax``; ``is_round``: a renewal round, whose
        latency (first write -> answer to the last message) is counted in ``round_ms``."""
        ph = self.phase
        round0 = self.loop.time()
        for j in range(0, len(ids), self.bmax):
            chunk = ids[j : j + self.bmax]
            req = self.keepalive_request(chunk)
            last = is_round and j + self.bmax >= len(ids)
            cl.pending.append((self.loop.time(), chunk, round0 if last else None))
            await call.write(req)
            ph.batches += 1
            ph.sent += len(chunk)

    def stream_failed(self, cl: _BatchClient, code: str, details: str | None) -> None:
        _count(self.phase.stream_failures, code)
        _count_detail(self.stream_details, code, details)
        cl.failed_at = self.loop.time()
        cl.failed_code = code

    async def client(self, cl: _BatchClient) -> None:
        loop = self.loop
        tick = self.base + self.period * cl.k / self.nclients
        resend = False
        while True:
            gen = self.leader.gen
            await cl.connect(self.leader.address)
            assert cl.channel is not None
            call = self.open_stream(cl.channel)
            cl.pending.clear()
            cl.last_answer = -math.inf
            cl.move = False
            reader = loop.create_task(self.read(cl, call))
            reader.add_done_callback(cl.on_reader_done)
            failure: tuple[str, str | None] | None = None
            try:
                if resend:  # after a reconnect: the whole set at once
                    self.expire(cl, loop.time())
                    cl.retry.clear()
                    cl.retry_at = math.inf
                    await self.send(cl, call, list(cl.valid))
                    resend = False
                while True:
                    now = loop.time()
                    if reader.done():
                        failure = _ended(reader)
                        break
                    if cl.move:
                        break
                    wake = tick
                    if cl.pending:
                        quiet = max(cl.last_answer, cl.pending[0][0]) + self.attempt_s
                        if now >= quiet:
                            failure = (
                                "DEADLINE_EXCEEDED",
                                f"local: the stream answered nothing for {self.attempt_s} s",
                            )
                            break
                        wake = min(wake, quiet)
                    if cl.retry:
                        wake = min(wake, cl.retry_at)
                    if now < wake:
                        cl.wake.clear()
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(cl.wake.wait(), wake - now)
                        continue
                    ph = self.phase
                    is_round = now >= tick
                    if is_round:
                        self.expire(cl, now)
                        late = now - tick
                        ph.late_ms.append(late * 1000.0)
                        ids = list(cl.valid)
                        if late > self.late_s:
                            ph.late_renewals += len(ids)
                        tick += self.period
                        while tick <= now:
                            tick += self.period
                            ph.ticks_skipped += 1
                        cl.retry.clear()
                    else:
                        ids = [lid for lid in cl.retry if lid in cl.valid]
                        cl.retry.clear()
                    cl.retry_at = math.inf
                    if ids:
                        await self.send(cl, call, ids, is_round)
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as e:
                # a write to a call that ended: its status is the reader's
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(reader), 1.0)
                failure = _ended(reader) if reader.done() else (type(e).__name__, str(e))
            finally:
                call.cancel()
                reader.cancel()
                with contextlib.suppress(BaseException):
                    await reader
            if failure is not None:
                self.stream_failed(cl, *failure)
                await asyncio.sleep(0.05)
            self.reconnects += 1
            resend = True
            await self.leader.find(gen)

    # -------------------------------------------------------------- run
    async def run(self) -> dict[str, Any]:
        args = self.args
        loop = self.loop
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGUSR1, self.start_hold)
        await self.leader.find(0)  # the --target may not be the leader
        for cl in self.clients:
            await cl.connect(self.leader.address)
            assert cl.channel is not None
            await asyncio.wait_for(cl.channel.channel_ready(), 10)
        cpu0 = _self_cpu()
        t_start = loop.time()
        self.base = t_start + self.period / self.nclients
        tasks = [loop.create_task(self.client(cl)) for cl in self.clients]
        acq = [loop.create_task(self.acquirer()) for _ in range(max(1, args.concurrency))]
        await asyncio.wait([*acq, loop.create_task(stop.wait())], return_when="FIRST_COMPLETED")
        acquire_s = loop.time() - t_start
        if not stop.is_set():
            await asyncio.gather(*acq)
            acquire_s = loop.time() - t_start
            info = {"acquire_s": acquire_s, "acquired": self.acquired}
            print("READY " + json.dumps(info), flush=True)
            await stop.wait()
        now = loop.time()
        for cl in self.clients:  # the losses nobody looked for since the last round
            self.expire(cl, now)
        self.phase.close()
        wall = loop.time() - t_start
        cpu = _self_cpu() - cpu0
        for t in (*tasks, *acq):
            t.cancel()
        await asyncio.gather(*tasks, *acq, return_exceptions=True)
        for cl in self.clients:
            if cl.channel is not None:
                await cl.channel.close()
        for ch in self.acq_channels:
            await ch.close()
        held = sum(len(cl.valid) for cl in self.clients)
        lost: dict[str, int] = {}
        failures: dict[str, int] = {}
        for ph in self.phases:
            for k, v in ph.lost.items():
                _count(lost, k, v)
            for k, v in ph.stream_failures.items():
                _count(failures, k, v)
        return {
            "leases": args.leases,
            "mode": self.mode,
            "clients": self.nclients,
            "ttl_ms": args.ttl_ms,
            "period_s": self.period,
            "batch_max": self.bmax,
            "acquire_s": acquire_s,
            "acquired": self.acquired,
            "acquire_failed": self.acquire_failed,
            "acquire_errors": self.acquire_errors,
            "acquire_error_details": self.acquire_details,
            "held_at_end": held,
            "leases_lost": sum(lost.values()),
            "lost_reasons": lost,
            "stream_failures": sum(failures.values()),
            "stream_failure_codes": failures,
            "stream_failure_details": self.stream_details,
            "reconnects": self.reconnects,
            "leader_searches": self.leader.searches,
            "retargets": self.leader.moves,
            "phases": {ph.name: ph.result() for ph in self.phases},
            "client_cpu_s": cpu,
            "wall_s": wall,
        }


def _ended(reader: asyncio.Task[None]) -> tuple[str, str | None]:
    """How a stream's reader ended: (status code name, details)."""
    if reader.cancelled():
        return ("CANCELLED", "local: reader cancelled")
    e = reader.exception()
    if e is None:
        return ("OK", "the server ended the stream")
    if isinstance(e, grpc.aio.AioRpcError):
        return (e.code().name, e.details())
    return (type(e).__name__, str(e))


async def _keepalive_batch(args: argparse.Namespace) -> dict[str, Any]:
    return await _BatchKeepalive(args).run()


# ---------------------------------------------------------------------------------- W7 burst
class BurstTarget:
    """What :func:`_burst` needs of the system under test; this one is raftlease, and
    bench/etcd/etcd_loadgen.py has etcd's. ``acquirer`` returns one client's acquire: one
    attempt at name number ``k``, the lease id if granted, None if refused, an
    ``AioRpcError`` to retry. ``outcome``: None for a renewal, else its refusal's name;
    ``not_leader``: the refusal's name that means "renew on the leader"."""

    not_leader = _OUTCOME_NAME(_NOT_LEADER)

    def acquirer(
        self, channel: grpc.aio.Channel, tag: str, ttl_ms: int
    ) -> Callable[[int], Awaitable[int | None]]:
        stub = lease_pb2_grpc.LeaseStub(channel)

        async def acquire(k: int) -> int | None:
            resp = await stub.Acquire(
                lease_pb2.AcquireRequest(
                    name=f"burst-{tag}-{k}",
                    holder=HOLDER,
                    ttl_ms=ttl_ms,
                    wait_ms=0,
                    request_id=f"{tag}-{k}",
                ),
                timeout=5,
            )
            return int(resp.lease.lease_id) if resp.acquired else None

        return acquire

    def keepalive_call(self, channel: grpc.aio.Channel) -> Any:
        return lease_pb2_grpc.LeaseStub(channel).KeepAlive()

    def keepalive_request(self, lease_id: int) -> Any:
        return lease_pb2.KeepAliveRequest(lease_id=lease_id, inband_outcomes=True)

    def outcome(self, resp: Any) -> str | None:
        if resp.outcome == lease_pb2.KeepAliveResponse.OUTCOME_RENEWED:
            return None
        return str(lease_pb2.KeepAliveResponse.Outcome.Name(resp.outcome))


async def _burst(args: argparse.Namespace, target: BurstTarget | None = None) -> dict[str, Any]:
    """Issue 15's shape: ``clients`` concurrent clients (one channel each) acquire ``leases``
    distinct names (TTL ``ttl_ms``, no release) as fast as they can, while every lease
    acquired so far is kept alive on ONE KeepAlive stream (in-band outcomes, each lease
    renewed every ttl/3 from its grant). After the burst the stream goes on for ``hold_s``.
    ``target``: raftlease (default) or another system (bench/etcd/etcd_loadgen.py).

    With ``--endpoints`` (raftlease, W7) the clients and the stream follow a new leader, as
    W2's clients do (:class:`_Target`, Cluster.Status on each endpoint): a client after a
    failed call, the stream when it ends or a renewal is answered NOT_LEADER (it is reopened
    on the leader and goes on with the leases due; those answered NOT_LEADER are renewed at
    their next turn). Without it (etcd) everything keeps to ``--target``, and a stream that
    ends is not reopened."""
    target = target or BurstTarget()
    follow = bool(args.endpoints)
    loop = asyncio.get_running_loop()
    # The leader's channels: one per client, the last one the KeepAlive stream's.
    tgt = _Target(
        argparse.Namespace(
            target=args.target,
            endpoints=args.endpoints,
            channels=args.clients + 1,
            leases=args.clients + 1,
        )
    )
    await tgt.ready()
    tag = uuid.uuid4().hex[:6]
    period = args.ttl_ms / 1000.0 / 3.0
    heap: list[tuple[float, int]] = []
    wake = asyncio.Event()
    nxt = 0
    lat: list[float] = []
    errors: dict[str, int] = {}
    granted = 0
    ka: dict[str, Any] = {"sent": 0, "renewed": 0, "refused": 0, "late_ms": []}
    outcomes: dict[str, int] = {}
    ka_error: list[str] = []  # what ended each KeepAlive stream
    streams = 0
    stop = asyncio.Event()

    async def client(i: int) -> None:
        nonlocal nxt, granted
        gen = tgt.gen
        acquire = target.acquirer(tgt.channels[i], tag, args.ttl_ms)
        while nxt < args.leases:
            k = nxt
            nxt += 1
            for _attempt in range(20):
                if gen != tgt.gen:  # the leader moved: its channel
                    gen = tgt.gen
                    acquire = target.acquirer(tgt.channels[i], tag, args.ttl_ms)
                try:
                    t0 = loop.time()
                    lease_id = await acquire(k)
                except grpc.aio.AioRpcError as e:
                    _count(errors, e.code().name)
                    await asyncio.sleep(0.01)
                    if follow:
                        await tgt.retarget(gen)
                    continue
                except asyncio.CancelledError:
                    if not _channel_closed():
                        raise
                    _count(errors, "moved")  # the leader moved under it
                    continue
                lat.append((loop.time() - t0) * 1000)
                if lease_id is not None:
                    granted += 1
                    if args.keepalive:
                        heapq.heappush(heap, (loop.time() + period, lease_id))
                        wake.set()
                else:
                    _count(errors, "not_acquired")
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
            late_ms = (loop.time() - due) * 1000
            try:
                await call.write(target.keepalive_request(lid))
            except BaseException:
                heapq.heappush(heap, (due, lid))  # not sent: first on the next stream
                raise
            ka["late_ms"].append(late_ms)
            ka["sent"] += 1
            heapq.heappush(heap, (due + period, lid))

    async def reader(call: Any) -> None:
        async for resp in call:
            name = target.outcome(resp)
            if name is None:
                ka["renewed"] += 1
            else:
                ka["refused"] += 1
                _count(outcomes, name)
                if follow and name == target.not_leader:
                    return  # renew on the leader: a new stream there

    async def keepalive() -> None:
        nonlocal streams
        while True:
            gen = tgt.gen
            call = target.keepalive_call(tgt.channels[-1])
            streams += 1
            tasks = [loop.create_task(writer(call)), loop.create_task(reader(call))]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                call.cancel()
                for t in tasks:
                    t.cancel()
                for r in await asyncio.gather(*tasks, return_exceptions=True):
                    if isinstance(r, Exception) and not isinstance(r, asyncio.CancelledError):
                        ka_error.append(repr(r))
            if not follow:
                return
            await asyncio.sleep(0.05)
            await tgt.retarget(gen)

    ka_task = loop.create_task(keepalive())
    cpu0 = _self_cpu()
    t0 = loop.time()
    await asyncio.gather(*(client(i) for i in range(args.clients)))
    burst_s = loop.time() - t0
    await asyncio.sleep(args.hold_s)
    stop.set()
    wake.set()
    ka_task.cancel()
    await asyncio.gather(ka_task, return_exceptions=True)
    cpu = _self_cpu() - cpu0
    await tgt.close()
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
        "keepalive_streams": streams,
        "retargets": tgt.retargets,
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
    a2.add_argument("--endpoints", default="", help="all nodes: follow a new leader (W7)")
    a3 = sub.add_parser("keepalive")
    a3.add_argument("--target", required=True)
    a3.add_argument("--endpoints", default="", help="all nodes, to find a new leader")
    a3.add_argument("--leases", type=int, default=1000)
    a3.add_argument("--ttl-ms", type=int, default=10_000)
    a3.add_argument(
        "--mode",
        choices=["client", "stream", "renew", "batch"],
        default="stream",
        help="client: ONE LeaseClient (the shipped keepalive hub, bench/keepalive_hub.py); "
        "stream: one KeepAlive stream per lease; renew: unary Renew; batch: --clients "
        "clients, one stream each, renewals in `items` batches",
    )
    a3.add_argument("--channels", type=int, default=8)
    a3.add_argument("--concurrency", type=int, default=64, help="acquisitions in flight")
    a3.add_argument("--clients", type=int, default=100, help="batch: clients played")
    a3.add_argument("--batch-max", type=int, default=1000, help="batch: items per message")
    a3.add_argument(
        "--late-ms", type=float, default=1000.0, help="batch: a renewal this late is counted"
    )
    a3.add_argument(
        "--attempt-s",
        type=float,
        default=1.0,
        help="batch: a stream that answers nothing this long is closed and reopened",
    )
    a3.add_argument("--retry-ms", type=float, default=100.0, help="batch: RETRY re-send delay")
    a3.add_argument("--pause-s", type=float, default=2.0)
    a3.add_argument(
        "--mark-at", type=int, default=0, help="pause after this many acquisitions (MARK line)"
    )
    a4 = sub.add_parser("burst")
    a4.add_argument("--target", required=True)
    a4.add_argument("--endpoints", default="", help="all nodes: follow a new leader (W7)")
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
    elif args.mode == "batch":
        out = asyncio.run(_keepalive_batch(args))
    elif args.mode == "client":
        from keepalive_hub import loadgen_keepalive  # bench/keepalive_hub.py

        out = loadgen_keepalive(args)
    else:
        out = asyncio.run(_keepalive(args))
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
