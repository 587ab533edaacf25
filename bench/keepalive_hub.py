"""Keepalive hub benchmark: one client holding many leases, before and after issue 15.

    .venv/bin/python bench/keepalive_hub.py                          # 1,000 leases, 30 s, both
    .venv/bin/python bench/keepalive_hub.py --leases 10000 --modes hub
    .venv/bin/python bench/keepalive_hub.py --json-out bench/results/keepalive_hub.json
    .venv/bin/python bench/keepalive_hub.py --leases 10000 --clients 10 --modes hub

A fresh local 3-node cluster (real ``raftlease serve`` processes, LocalCluster). Per mode, one
``LeaseClient`` acquires ``--leases`` leases (TTL ``--ttl``, acquired concurrently by a
temporary pool of threads that is gone before the measurement), holds them for ``--hold``
seconds, then releases them. Modes:

- ``hub``: the shipped client: one keepalive thread per client, one KeepAlive stream per
  node, renewals batched, many leases per message (raftlease/client/_hub.py).
  ``--clients N``: N such clients in this process, ``--leases`` each (holder ``bench-I``).
- ``hub-single``: the hub as it was before batches: one lease per KeepAliveRequest message
  (``KeepaliveMessages.requests`` patched to write unbatched).
- ``per-lease``: what the client did before the hub: one thread per lease, each driving the same
  ``KeepaliveMachine`` with unary ``Renew`` calls (the old ``Lease._keepalive_loop``,
  reproduced here).

Measured over the hold window only: the client process's threads (``threading.active_count``
at the middle of the window), its CPU seconds (``time.process_time``) and CPU share, the
leader's CPU seconds (``/proc/PID/stat``, Linux), renewals answered (RENEWED) and sent,
write bursts and KeepAliveRequest messages (hub), and leases lost (must be 0; the exit
status is 1 otherwise).

Prints one JSON object, then a table.

Also W3's load generator: ``bench/loadgen.py keepalive --mode client`` (``bench/run.py --only
w3``, the default ``--keepalive-mode client``) calls :func:`loadgen_keepalive` here: ONE
``LeaseClient`` acquires the leases with :func:`acquire_leases` and keeps them alive with the
shipped hub, in a process of its own, speaking loadgen.py's READY/MARK protocol.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc

from raftlease import clock as _clock
from raftlease.client import Lease, LeaseClient
from raftlease.client._protocol import Lost, SendRenew, Sleep, Stopped
from raftlease.client._rpc import KeepaliveMessages, renew_answer, renew_request, rpc_failure
from raftlease.testing.local import LocalCluster

if TYPE_CHECKING:
    from collections.abc import Callable

REPO = Path(__file__).resolve().parent.parent


def _proc_cpu(pid: int | None) -> float | None:
    """utime + stime of a process in seconds (Linux), None elsewhere."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


class _PerLease:
    """The pre-hub keepalive: a thread per lease driving its KeepaliveMachine with unary
    Renews (Lease._keepalive_loop as it was), counting answers."""

    def __init__(self) -> None:
        self.renewed = 0
        self.sent = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def start(self, lease: Lease) -> None:
        threading.Thread(
            target=self._loop, args=(lease,), name=f"keepalive-{lease.name}", daemon=True
        ).start()

    def _loop(self, lease: Lease) -> None:
        client = lease._client
        machine = lease._keepalive
        action: SendRenew | Sleep | Lost | Stopped = machine.poll(_clock.boot_monotonic())
        while not self.stop.is_set():
            if isinstance(action, Sleep):
                self.stop.wait(max(0.0, action.until - _clock.boot_monotonic()))
                action = machine.poll(_clock.boot_monotonic())
            elif isinstance(action, SendRenew):
                request = renew_request(lease.lease_id, lease._health)
                with self.lock:
                    self.sent += 1
                try:
                    resp = client._conn(action.target).lease.Renew(request, timeout=action.timeout)
                except grpc.RpcError as err:
                    if self.stop.is_set():
                        return
                    action = machine.on_failure(
                        _clock.boot_monotonic(), rpc_failure(err, client._security.explain)
                    )
                except Exception:
                    return
                else:
                    answer = renew_answer(resp)
                    if answer.outcome == "RENEWED":
                        with self.lock:
                            self.renewed += 1
                    action = machine.on_answer(_clock.boot_monotonic(), answer)
            else:
                if isinstance(action, Lost):
                    lease._declare_lost(action.reason)
                return


_ORIGINAL_START = Lease._start
_ORIGINAL_REQUESTS = KeepaliveMessages.requests


def _unbatched_requests(
    self: KeepaliveMessages, lease_ids: Any, health: Any, *, batched: bool
) -> Any:
    return _ORIGINAL_REQUESTS(self, lease_ids, health, batched=False)


def _hub_totals(clients: list[LeaseClient]) -> tuple[int, int, int, int]:
    """(renewed, renewals sent, write bursts, messages) over every client's hub."""
    hubs = [c._keepalives.hub.stats for c in clients]
    return (
        sum(h.renewed for h in hubs),
        sum(h.renewals_sent for h in hubs),
        sum(h.writes for h in hubs),
        sum(h.messages for h in hubs),
    )


def acquire_leases(
    clients: list[LeaseClient],
    indices: range,
    ttl: float,
    prefix: str,
    on_lost: Callable[[Lease], object],
    workers: int = 32,
) -> list[Lease]:
    """Acquire ``{prefix}{k}-{i}`` (holder ``bench-k``) on every client k for every i in
    ``indices``, ``workers`` at a time on a temporary thread pool (gone when this returns):
    each lease is kept alive by its client's hub from its grant on."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [
            pool.submit(
                c.acquire, f"{prefix}{k}-{i}", ttl=ttl, holder=f"bench-{k}", on_lost=on_lost
            )
            for i in indices
            for k, c in enumerate(clients)
        ]
        return [f.result() for f in futures]


def release_leases(leases: list[Lease], workers: int = 32) -> None:
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda le: le.release(), leases))


def run_mode(
    cluster: LocalCluster, mode: str, n: int, ttl: float, hold: float, n_clients: int = 1
) -> dict[str, Any]:
    threads_idle = threading.active_count()
    per_lease = _PerLease() if mode == "per-lease" else None
    if per_lease is not None and n_clients != 1:
        raise SystemExit("--clients applies to the hub mode only")
    clients = [LeaseClient(cluster.endpoints, timeout=10.0) for _ in range(n_clients)]
    if per_lease is not None:  # the client's leases start per-lease threads, not the hub
        Lease._start = lambda self: per_lease.start(self)  # type: ignore[method-assign]
    if mode == "hub-single":
        KeepaliveMessages.requests = _unbatched_requests  # type: ignore[method-assign]
    lost: list[str] = []
    prefix = f"{mode}-{os.getpid()}-"
    t0 = time.monotonic()
    leases = acquire_leases(clients, range(n), ttl, prefix, lambda le: lost.append(le.name))
    acquire_s = time.monotonic() - t0
    time.sleep(min(2.0, ttl / 3))  # let the first renewals spread as they will
    stats0 = _hub_totals(clients)
    pl0 = (per_lease.renewed, per_lease.sent) if per_lease else (0, 0)
    leader = cluster.wait_leader(10.0)
    leader_pid = cluster.nodes[leader].pid
    srv0 = _proc_cpu(leader_pid)
    cpu0, w0 = time.process_time(), time.monotonic()
    time.sleep(hold / 2)
    threads = threading.active_count()
    time.sleep(hold / 2)
    cpu1, w1 = time.process_time(), time.monotonic()
    srv1 = _proc_cpu(leader_pid)
    messages: int | None = None
    if per_lease is not None:
        renewed, sent, writes = per_lease.renewed - pl0[0], per_lease.sent - pl0[1], None
    else:
        stats1 = _hub_totals(clients)
        renewed, sent, writes, messages = (b - a for a, b in zip(stats0, stats1, strict=True))
    invalid = sum(1 for lease in leases if not lease.is_valid())
    streams = sum(len(c._keepalives.hub.targets()) for c in clients)
    unbatched = sum(c._keepalives.hub.stats.unbatched for c in clients)
    if per_lease is not None:
        per_lease.stop.set()
    t_rel = time.monotonic()
    release_leases(leases)
    release_s = time.monotonic() - t_rel
    for c in clients:
        c.close()
    Lease._start = _ORIGINAL_START  # type: ignore[method-assign]
    KeepaliveMessages.requests = _ORIGINAL_REQUESTS  # type: ignore[method-assign]
    window = w1 - w0
    return {
        "mode": mode,
        "clients": n_clients,
        "leases": n * n_clients,
        "ttl_s": ttl,
        "hold_s": round(window, 2),
        "acquire_s": round(acquire_s, 2),
        "release_s": round(release_s, 2),
        "threads_before_acquire": threads_idle,
        "threads_holding": threads,
        "client_cpu_s": round(cpu1 - cpu0, 3),
        "client_cpu_pct": round(100.0 * (cpu1 - cpu0) / window, 1),
        "leader_cpu_s": None if srv0 is None or srv1 is None else round(srv1 - srv0, 3),
        "renewals_answered": renewed,
        "renewals_sent": sent,
        "renewals_per_s": round(renewed / window, 1),
        "expected_per_s": round(n * n_clients / (ttl / 3), 1),
        "write_bursts": writes,
        "messages": messages,
        "renewals_per_message": round(sent / messages, 1) if messages else None,
        "batches_unbatched": unbatched if per_lease is None else None,
        "keepalive_streams": streams if per_lease is None else 0,
        "leases_lost": len(lost),
        "leases_invalid_at_end": invalid,
    }


def _cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def loadgen_keepalive(args: argparse.Namespace) -> dict[str, Any]:
    """``bench/loadgen.py keepalive --mode client`` (W3): the shipped client's shape.

    ONE blocking ``LeaseClient`` (endpoints: ``--endpoints``, else ``--target``) acquires
    ``--leases`` leases of TTL ``--ttl-ms`` (:func:`acquire_leases`, 32 at a time) and keeps
    them alive with its hub: one keepalive thread, one KeepAlive stream per node it renews on,
    the renewals due within ``batch_ahead(ttl)`` sent together in ``items`` batches. The
    protocol is loadgen.py's: with ``--mark-at M`` the first M leases are acquired, ``MARK``
    printed and ``--pause-s`` slept; then the rest; then ``READY {...}``. The hub renews every
    lease from its grant on (there is no keepalive-free pause, unlike ``--mode stream``); the
    counters start ``--pause-s`` after READY and end at SIGTERM/SIGINT: renewals answered
    RENEWED (and other answers), renewals sent, KeepAliveRequest messages and write bursts
    (the hub's own counters), streams opened and failed, and this process's CPU (every
    thread). Leases lost: ``on_lost`` calls plus leases not valid at the end, by reason. Then
    the leases are released (32 at a time) and the client closed."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _s, _f: stop.set())
    endpoints = [e for e in (args.endpoints or args.target).split(",") if e]
    ttl = args.ttl_ms / 1000.0
    client = LeaseClient(endpoints, timeout=10.0)
    lost: list[Lease] = []
    prefix = f"ka-{os.getpid()}-"
    t0 = time.monotonic()
    mark = min(max(0, args.mark_at), args.leases)
    leases = acquire_leases([client], range(mark), ttl, prefix, lost.append)
    if mark:
        print("MARK " + json.dumps({"leases": mark}), flush=True)
        time.sleep(args.pause_s)
    leases += acquire_leases([client], range(mark, args.leases), ttl, prefix, lost.append)
    acquire_s = time.monotonic() - t0 - (args.pause_s if mark else 0.0)
    print("READY " + json.dumps({"acquire_s": acquire_s}), flush=True)
    stop.wait(args.pause_s)
    stats = client._keepalives.hub.stats
    s0 = dataclasses.asdict(stats)
    cpu0, w0 = _cpu_s(), time.monotonic()
    threads = threading.active_count()
    while not stop.wait(0.5):
        pass
    wall = time.monotonic() - w0
    cpu = _cpu_s() - cpu0
    d = {k: v - s0[k] for k, v in dataclasses.asdict(stats).items()}
    streams = len(client._keepalives.hub.targets())
    ended = {id(le): le for le in lost}
    ended.update({id(le): le for le in leases if not le.is_valid()})
    reasons: dict[str, int] = {}
    for le in ended.values():
        why = str(getattr(le, "lost_reason", None) or "not valid at the end")[:160]
        reasons[why] = reasons.get(why, 0) + 1
    t_rel = time.monotonic()
    release_leases(leases)
    client.close()
    return {
        "leases": args.leases,
        "mode": "client",
        "period_s": ttl / 3.0,
        "acquire_s": acquire_s,
        "renewals_sent": d["renewals_sent"],
        "renewals_ok": d["renewed"],
        # answered, but not RENEWED (RETRY, NOT_LEADER, ...): the machine retries them
        "renewals_failed": d["answers"] - d["renewed"],
        "failure_codes": {"stream failed": d["streams_failed"]} if d["streams_failed"] else {},
        "leases_lost": len(ended),
        "lost_reasons": reasons,
        "renewals_per_s": d["renewed"] / wall if wall > 0 else 0.0,
        "messages": d["messages"],
        "messages_per_s": d["messages"] / wall if wall > 0 else 0.0,
        "write_bursts": d["writes"],
        "renewals_per_message": d["renewals_sent"] / d["messages"] if d["messages"] else None,
        "unary_renews": d["unary_sent"],
        "streams_opened": d["streams_opened"],
        "keepalive_streams": streams,
        "threads": threads,
        "client_cpu_s": cpu,
        "wall_s": wall,
        "release_s": time.monotonic() - t_rel,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leases", type=int, default=1000, help="per client")
    parser.add_argument("--clients", type=int, default=1, help="hub mode: clients in this process")
    parser.add_argument("--ttl", type=float, default=10.0)
    parser.add_argument("--hold", type=float, default=30.0)
    parser.add_argument(
        "--modes", default="per-lease,hub", help="per-lease,hub-single,hub (in that order)"
    )
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="keepalive-hub-") as tmp:
        cluster = LocalCluster(tmp, 3, cwd=REPO, env={"RAFTLEASE_LOG_LEVEL": "WARNING"})
        with cluster:
            cluster.start_all()
            cluster.wait_leader(20.0)
            for mode in args.modes.split(","):
                rows.append(
                    run_mode(cluster, mode.strip(), args.leases, args.ttl, args.hold, args.clients)
                )
    result = {"benchmark": "keepalive_hub", "cpus": os.cpu_count(), "rows": rows}
    print(json.dumps(result, indent=2))
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")
    cols = [
        ("mode", "mode"),
        ("clients", "clients"),
        ("leases", "leases"),
        ("threads_holding", "threads"),
        ("keepalive_streams", "streams"),
        ("client_cpu_s", "client CPU s"),
        ("client_cpu_pct", "CPU %"),
        ("leader_cpu_s", "leader CPU s"),
        ("renewals_answered", "renewed"),
        ("renewals_per_s", "renewed/s"),
        ("expected_per_s", "n/(ttl/3)"),
        ("write_bursts", "bursts"),
        ("messages", "messages"),
        ("leases_lost", "lost"),
    ]
    print()
    print(" | ".join(h for _, h in cols))
    print(" | ".join("-" * len(h) for _, h in cols))
    for row in rows:
        print(" | ".join(str(row[k]) for k, _ in cols))
    return 1 if any(r["leases_lost"] or r["leases_invalid_at_end"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
