"""``bench/run.py --with-etcd``: W1-W5 against raftlease and etcd 3.4 in the same run.

Each round runs every selected workload (W1-W5) on a fresh raftlease cluster and then on a
fresh 3-member etcd cluster (A, B, A, B, ...), so the two sides of a ratio are measured
minutes apart on the same machine. The raftlease side is bench/run.py's own workload
functions, unchanged; the etcd side is the same shape here, with raw gRPC clients
(bench/etcd/etcd_loadgen.py) against the etcd leader:

- W1: 1 client, sequential acquire + release of one key; acquire = LeaseGrant (TTL 10 s) +
  Txn put-if-absent with that lease (what one lease acquisition costs an etcd client),
  release = LeaseRevoke. Latency of the acquire pair: p50, p99.
- W2: 16 clients (asyncio, one channel each), each acquiring and releasing its own key in a
  loop: acquisitions completed per second.
- W3: 1,000 leases (TTL 10 s), each with its key, renewed every ttl/3, phase-spread, as
  each system's shipped client does it (bench/run.py ``--keepalive-mode client``, the
  default): raftlease ONE LeaseClient (one KeepAlive stream, renewals due together batched in
  ``items``); etcd ONE LeaseKeepAlive stream on one connection, one request per renewal
  written without waiting for earlier answers (clientv3's shape; etcd_loadgen.py
  ``keepalive --mode client --channels 1``). With ``--keepalive-mode stream``/``renew`` both
  sides use a stream per lease (etcd has no unary keepalive). ``--w3-both`` adds the
  stream-per-lease shape on both sides as ``w3_stream_*``. Cluster CPU over the window.
- W4: SIGKILL the leader; one thread per endpoint retries acquire (0.5 s timeout, ~5 ms
  apart) until one succeeds; restart the member and wait for a stable cluster; median and
  max over the trials.
- W5: idle cluster CPU.
- W6 (only when named: ``--only w6``): bench/run.py's own W6 driver (``run_w6_scale``) with
  :class:`EtcdW6Side`: 100 clients acquire N leases (TTL 30 s; ``LeaseGrant`` + ``Txn``
  put-if-absent, as above) and keep them alive, each lease renewed every 10 s from its
  grant, on ONE ``LeaseKeepAlive`` stream per client (bench/etcd/etcd_loadgen.py ``w6``),
  then a hold: leases lost, keepalive latency, leader and cluster CPU, leader RSS growth per
  lease, leader changes. The scales alternate sides (raftlease 1k, etcd 1k, raftlease 10k,
  ...). One keepalive latency sample is one message write -> its answer: on raftlease a
  batch of up to 1,000 leases, on etcd one lease (etcd has no batches); the "round" figure
  (a client's whole set, first write -> answer to its last lease) is the like-for-like one.
- W7 burst (only when named: ``--only w7b``): 16 clients acquire 10,000 keys (TTL 30 s,
  ``LeaseGrant`` + ``Txn`` put-if-absent, no release) as fast as they go, every lease so far
  kept alive on ONE ``LeaseKeepAlive`` stream (etcd_loadgen.py ``burst``), then 10 s more:
  acquisitions/s and latency, refused renewals, leader changes, CPU. Leader-lease lapses are
  raftlease's alone (etcd has no leader lease).

CPU is each server process's own accounting (psutil user+sys), as for raftlease. The ratio
is raftlease / etcd: below 1 is better for raftlease on latency, CPU and failover, above 1
is better on W2's throughput. The per-round ratio (each raftlease run over the etcd run right
after it) is given with its median and range.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .etcd_cluster import ELECTION_MS, HEARTBEAT_MS, EtcdCluster, etcd_binary, etcd_version

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable
    from types import ModuleType

    import grpc

HERE = Path(__file__).resolve().parent
LOADGEN = HERE / "etcd_loadgen.py"
WORKLOADS = ("w1", "w2", "w3", "w4", "w5", "w6", "w7b")
# Side by side only when --only names them (minutes per scale): a plain --with-etcd is W1-W5.
OPT_IN = ("w6", "w7b")

# key, unit, label, which way is better
FIGURES: list[tuple[str, str, str, str]] = [
    ("w1_acquire_p50_ms", "ms", "W1 acquire p50 (1 client)", "lower"),
    ("w1_acquire_p99_ms", "ms", "W1 acquire p99", "lower"),
    ("w2_acquisitions_per_s", "/s", "W2 acquisitions/s (16 clients)", "higher"),
    ("w3_cluster_cpu_pct", "% core", "W3 cluster CPU, 1,000 leases kept alive", "lower"),
    (
        "w3_stream_cluster_cpu_pct",
        "% core",
        "W3 old shape (a stream per lease): cluster CPU",
        "lower",
    ),
    ("w4_failover_median_s", "s", "W4 kill leader -> next acquire, median", "lower"),
    ("w4_failover_max_s", "s", "W4 kill leader -> next acquire, max", "lower"),
    ("w5_idle_cluster_cpu_pct", "% core", "W5 idle 3-node cluster CPU", "lower"),
]
# Context, not goals: printed in a second table, same columns.
EXTRAS: list[tuple[str, str, str, str]] = [
    ("w1_cluster_cpu_ms_per_cycle", "ms", "W1 cluster CPU per acquire+release", "lower"),
    ("w1_client_cpu_ms_per_cycle", "ms", "W1 load generator CPU per cycle (machine speed)", ""),
    ("w2_acquire_p50_ms", "ms", "W2 acquire p50", "lower"),
    ("w2_cluster_cpu_pct", "% core", "W2 cluster CPU", "lower"),
    ("w2_cluster_cpu_ms_per_acquisition", "ms", "W2 cluster CPU per acquisition", "lower"),
    ("w3_renewals_per_s", "/s", "W3 renewals/s (expected 300)", "higher"),
    ("w3_messages_per_s", "msg/s", "W3 keepalive messages/s written", "lower"),
    ("w3_leases_lost", "", "W3 leases lost", "lower"),
    ("w3_client_cpu_pct", "% core", "W3 load generator CPU", ""),
    ("w3_cluster_cpu_ms_per_renewal", "ms", "W3 cluster CPU per renewal", "lower"),
    ("w3_leader_rss_mib", "MiB", "W3 leader RSS, 1,000 leases kept alive", "lower"),
    ("w3_stream_renewals_per_s", "/s", "W3 old shape: renewals/s", "higher"),
    ("w3_stream_cluster_cpu_ms_per_renewal", "ms", "W3 old shape: CPU per renewal", "lower"),
    ("w4_elected_after_median_s", "s", "W4 kill -> new leader in the logs, median", "lower"),
    ("w5_idle_leader_cpu_pct", "% core", "W5 idle leader CPU", "lower"),
]

# W6, per scale: suffix of bench/run.py's w6_<scale>_<suffix> key, unit, label, better.
W6_FIGURES: list[tuple[str, str, str, str]] = [
    ("leases_lost", "", "leases lost (whole run)", "lower"),
    ("leases_lost_in_hold", "", "leases lost in the hold", "lower"),
    ("leader_changes", "", "leader changes", "lower"),
    (
        "keepalive_p50_ms",
        "ms",
        "keepalive p50, one message (raftlease: a batch; etcd: one lease)",
        "lower",
    ),
    ("keepalive_p99_ms", "ms", "keepalive p99, one message", "lower"),
    ("keepalive_round_p99_ms", "ms", "keepalive round p99 (a client's whole set)", "lower"),
    ("leader_cpu_pct", "% core", "leader CPU (hold)", "lower"),
    ("cluster_cpu_pct", "% core", "cluster CPU (hold)", "lower"),
    ("leader_bytes_per_lease", "B", "leader RSS growth per lease", "lower"),
]
W6_EXTRAS: list[tuple[str, str, str, str]] = [
    ("acquisitions_per_s", "/s", "acquisitions/s (64 in flight)", "higher"),
    ("acquiring_cluster_cpu_pct", "% core", "cluster CPU while acquiring", "lower"),
    ("renewals_per_s", "/s", "renewals answered/s in the hold", "higher"),
    ("keepalive_round_p50_ms", "ms", "keepalive round p50", "lower"),
    ("keepalive_max_ms", "ms", "keepalive max, one message", "lower"),
    ("leader_cpu_us_per_renewal", "us", "leader CPU per lease renewed", "lower"),
    ("follower_cpu_pct", "% core", "follower CPU (hold, mean)", "lower"),
    ("leader_rss_mib", "MiB", "leader RSS at the end of the hold", "lower"),
    ("max_node_bytes_per_lease", "B", "largest RSS growth per lease, any node", "lower"),
    ("stream_failures", "", "keepalive stream failures", "lower"),
    ("leader_lease_lapses", "", "leader-lease lapses (raftlease only)", ""),
    ("client_cpu_pct", "% core", "load generator CPU (hold)", ""),
    ("client_cpu_us_per_renewal", "us", "load generator CPU per lease renewed", "lower"),
    ("background_cpu_pct", "% core", "other load on the machine (hold)", ""),
]
W6_SLOPES: list[tuple[str, str, str, str]] = [
    ("leader_bytes_per_lease", "B", "leader RSS per extra lease", "lower"),
    ("cluster_cpu_pct_per_1k_leases", "% core", "cluster CPU per extra 1k leases", "lower"),
    ("leader_cpu_pct_per_1k_leases", "% core", "leader CPU per extra 1k leases", "lower"),
]

W7B_FIGURES: list[tuple[str, str, str, str]] = [
    ("w7b_leader_changes", "", "W7 burst: leader changes", "lower"),
    ("w7b_acquisitions_per_s", "/s", "W7 burst: acquisitions/s (16 clients)", "higher"),
    ("w7b_acquire_p50_ms", "ms", "W7 burst: acquire p50", "lower"),
    ("w7b_acquire_p99_ms", "ms", "W7 burst: acquire p99", "lower"),
    ("w7b_errors", "", "W7 burst: acquire errors", "lower"),
    ("w7b_renewals_ok", "", "W7 burst: renewals answered", "higher"),
    ("w7b_renewals_refused", "", "W7 burst: renewals refused", "lower"),
    ("w7b_leader_cpu_pct", "% core", "W7 burst: leader CPU", "lower"),
    ("w7b_cluster_cpu_pct", "% core", "W7 burst: cluster CPU", "lower"),
    ("w7b_client_cpu_pct", "% core", "W7 burst: load generator CPU", ""),
    ("w7b_leader_lease_lapses", "", "W7 burst: leader-lease lapses (raftlease only)", ""),
    ("w7b_lapse_ms_max", "ms", "W7 burst: longest lapse (raftlease only)", ""),
]


def w6_label(n: int) -> str:
    """bench/run.py's w6_label (report.py prints from the JSON without run.py)."""
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def w6_figures(
    scales: list[int], rows: list[tuple[str, str, str, str]]
) -> list[tuple[str, str, str, str]]:
    """``rows`` for every scale (bench/run.py's keys), in the tables' format."""
    out = []
    for n in scales:
        lab = w6_label(n)
        out += [(f"w6_{lab}_{k}", u, f"W6 {lab}: {label}", b) for k, u, label, b in rows]
    return out


def w6_slope_figures(scales: list[int]) -> list[tuple[str, str, str, str]]:
    labs = [w6_label(n) for n in scales]
    return [
        (f"w6_slope_{a}_{b}_{k}", u, f"W6 {a} -> {b}: {label}", better)
        for a, b in itertools.pairwise(labs)
        for k, u, label, better in W6_SLOPES
    ]


def all_figures(scales: list[int]) -> list[tuple[str, str, str, str]]:
    return (
        FIGURES
        + EXTRAS
        + W7B_FIGURES
        + w6_figures(scales, W6_FIGURES)
        + w6_slope_figures(scales)
        + w6_figures(scales, W6_EXTRAS)
    )


# ---------------------------------------------------------------------------------- helpers
def loadgen(h: ModuleType, args: list[str], timeout: float) -> dict[str, Any]:
    p = subprocess.run(
        [*h.nice_prefix(h.BenchCluster.nice), h.PY, str(LOADGEN), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(h.REPO),
    )
    lines = [x for x in p.stdout.strip().splitlines() if x.startswith("{")]
    if p.returncode != 0 or not lines:
        raise RuntimeError(f"etcd loadgen {args[0]} failed (rc {p.returncode}): {p.stderr[-3000:]}")
    return json.loads(lines[-1])  # type: ignore[no-any-return]


def fresh_etcd() -> tuple[EtcdCluster, str]:
    c = EtcdCluster()
    c.start_nodes()
    try:
        leader = c.wait_stable(30, settle=0.5)
    except Exception:
        c.__exit__(None, None, None)
        raise
    return c, leader


def elections(c: EtcdCluster) -> int:
    return max(0, len(c.elections()) - 1)


# ---------------------------------------------------------------------------------- W1
def etcd_w1(o: argparse.Namespace, h: ModuleType) -> dict[str, Any]:
    n, warm = (400, 100) if o.quick else (2000, 200)
    c, leader = fresh_etcd()
    with c:
        cpu0 = c.cpu_snapshot()
        bg = h.Background()
        r = loadgen(
            h,
            ["w1", "--target", c.nodes[leader].address, "--n", str(n), "--warmup", str(warm)],
            900,
        )
        cpu1 = c.cpu_snapshot()
        busy = bg.busy_pct()
        changes = elections(c)
    a = r["acquire_ms"]
    cluster_cpu_s = sum(cpu1[k] - cpu0[k] for k in cpu1)
    ours = 100.0 * (cluster_cpu_s + r["client_cpu_s"]) / r["wall_s"]
    return {
        "w1_background_cpu_pct": max(0.0, busy - ours - bg.self_pct()),
        "w1_acquire_p50_ms": h.pct(a, 0.5),
        "w1_acquire_p99_ms": h.pct(a, 0.99),
        "w1_acquire_mean_ms": statistics.fmean(a),
        "w1_acquire_max_ms": max(a),
        "w1_grant_p50_ms": h.pct(r["grant_ms"], 0.5),
        "w1_txn_p50_ms": h.pct(r["txn_ms"], 0.5),
        "w1_release_p50_ms": h.pct(r["release_ms"], 0.5),
        "w1_release_p99_ms": h.pct(r["release_ms"], 0.99),
        "w1_cluster_cpu_ms_per_cycle": 1000.0 * cluster_cpu_s / (n + warm),
        "w1_client_cpu_ms_per_cycle": 1000.0 * r["client_cpu_s"] / (n + warm),
        "w1_samples": n,
        "w1_leader_changes": changes,
    }


# ---------------------------------------------------------------------------------- W2
def etcd_w2(o: argparse.Namespace, h: ModuleType) -> dict[str, Any]:
    dur, warm = (5.0, 1.0) if o.quick else (15.0, 3.0)
    c, leader = fresh_etcd()
    with c:
        holder: dict[str, Any] = {}

        def measure() -> None:
            time.sleep(warm + 0.5)
            a = c.cpu_snapshot()
            bg = h.Background()
            t0 = time.monotonic()
            time.sleep(dur - 1.0)
            b = c.cpu_snapshot()
            wall = time.monotonic() - t0
            holder["busy"] = bg.busy_pct() - bg.self_pct()
            holder["per"] = {k: 100.0 * (b[k] - a[k]) / wall for k in b}

        th = threading.Thread(target=measure)
        th.start()
        r = loadgen(
            h,
            [
                "w2",
                "--target",
                c.nodes[leader].address,
                "--clients",
                "16",
                "--duration",
                str(dur),
                "--warmup",
                str(warm),
            ],
            180,
        )
        th.join()
        changes = elections(c)
    per = holder.get("per", {})
    lat = r["acquire_ms"]
    client_pct = 100.0 * r["client_cpu_s"] / (dur + warm)
    return {
        "w2_background_cpu_pct": max(0.0, holder.get("busy", 0.0) - sum(per.values()) - client_pct),
        "w2_acquisitions_per_s": r["per_s"],
        "w2_acquire_p50_ms": h.pct(lat, 0.5),
        "w2_acquire_p99_ms": h.pct(lat, 0.99),
        "w2_errors": sum(r["errors"].values()),
        "w2_leader_cpu_pct": per.get(leader),
        "w2_cluster_cpu_pct": sum(per.values()),
        "w2_client_cpu_pct": client_pct,
        "w2_leader_changes": changes,
    }


# ---------------------------------------------------------------------------------- W3
def etcd_w3(o: argparse.Namespace, h: ModuleType) -> dict[str, Any]:
    """etcd's W3 in the shape matching raftlease's ``--keepalive-mode`` (client: one shared
    LeaseKeepAlive stream, clientv3's; else a stream per lease); with ``--w3-both`` also the
    stream-per-lease shape on a fresh cluster, as ``w3_stream_*``."""
    mode = "client" if o.keepalive_mode == "client" else "stream"
    r = etcd_keepalive(o, h, mode, "w3")
    if getattr(o, "w3_both", False):
        if mode == "stream":
            r.update({f"w3_stream_{k[3:]}": v for k, v in r.items()})
        else:
            h.log("  etcd W3 old shape (a stream per lease), for --w3-both")
            h.wait_for_quiet()
            r.update(etcd_keepalive(o, h, "stream", "w3_stream"))
    return r


def etcd_keepalive(o: argparse.Namespace, h: ModuleType, mode: str, prefix: str) -> dict[str, Any]:
    """1,000 etcd leases kept alive by etcd_loadgen.py ``keepalive --mode MODE`` (client: one
    connection, one shared stream): the figures of bench/run.py's run_keepalive."""
    leases = 1000
    window = 10.0 if o.quick else 30.0
    c, leader = fresh_etcd()
    with c:
        lead = c.nodes[leader]
        time.sleep(1.0)
        rss0 = c.rss(leader)
        p = subprocess.Popen(
            [
                *h.nice_prefix(h.BenchCluster.nice),
                h.PY,
                str(LOADGEN),
                "keepalive",
                "--target",
                lead.address,
                "--leases",
                str(leases),
                "--ttl-ms",
                "10000",
                "--mode",
                mode,
                *(["--channels", "1"] if mode == "client" else []),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=str(h.REPO),
        )
        try:
            assert p.stdout is not None
            line = p.stdout.readline()
            if not line.startswith("READY"):
                assert p.stderr is not None
                raise RuntimeError(f"etcd keepalive loadgen: {line!r} {p.stderr.read()[-2000:]}")
            time.sleep(1.0)
            rss_held = c.rss(leader)
            time.sleep(5.0)  # the 2 s pause, then one renewal period: every stream is open
            bg = h.Background()
            total, per = h.cpu_window(c, window)
            busy = bg.busy_pct() - bg.self_pct()
            rss_kept = c.rss(leader)
            p.send_signal(signal.SIGTERM)
            out, err = p.communicate(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        lines = [x for x in out.strip().splitlines() if x.startswith("{")]
        if not lines:
            raise RuntimeError(f"etcd keepalive loadgen gave no result: {err[-2000:]}")
        r = json.loads(lines[-1])
        changes = elections(c)
    p_ = prefix
    return {
        **h.keepalive_figures(
            prefix, r, leases, total, per, leader, busy, (rss0, rss_held, rss_kept)
        ),
        f"{p_}_messages_per_s": r.get("messages_per_s"),
        f"{p_}_keepalive_streams": r.get("keepalive_streams"),
        f"{p_}_renewals_failed": r["renewals_failed"],
        f"{p_}_leases_lost": r["leases_lost"],
        f"{p_}_renewal_late_p99_ms": r["late_p99_ms"],
        f"{p_}_answer_p99_ms": r.get("answer_p99_ms"),
        f"{p_}_oddities": r.get("oddities", {}),
        f"{p_}_acquire_s": r["acquire_s"],
        f"{p_}_leader_changes": changes,
    }


# ---------------------------------------------------------------------------------- W4
def _etcd_attempt(channel: grpc.Channel) -> Callable[[str], bool]:
    """bench/run.py's W4 probe attempt for etcd: an acquisition is LeaseGrant + Txn
    put-if-absent (0.5 s timeout each)."""
    from etcdpb import rpc_pb2, rpc_pb2_grpc

    from .etcd_loadgen import put_if_absent

    leases, kv = rpc_pb2_grpc.LeaseStub(channel), rpc_pb2_grpc.KVStub(channel)

    def attempt(name: str) -> bool:
        g = leases.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=10), timeout=0.5)
        return bool(kv.Txn(put_if_absent(name.encode(), g.ID), timeout=0.5).succeeded)

    return attempt


def etcd_w4(o: argparse.Namespace, h: ModuleType) -> dict[str, Any]:
    trials = o.w4_trials or (5 if o.quick else 10)
    c, leader = fresh_etcd()
    times: list[float] = []
    detail: list[dict[str, Any]] = []
    bg = h.Background()
    with c:
        prober = h._Prober(c.endpoints, _etcd_attempt)
        try:
            for t in range(trials):
                leader = c.wait_stable(60, settle=1.0)
                time.sleep(0.2)
                t_kill = time.monotonic()
                wall_kill = time.time()
                c.kill(leader)
                dt_s, ep = prober.probe(f"{t}-{uuid.uuid4().hex[:4]}", t_kill, timeout=15.0)
                times.append(dt_s)
                elected = c.first_election_after(wall_kill)
                detail.append(
                    {
                        "killed": leader,
                        "served_by": ep,
                        "s": dt_s,
                        "elected_after_s": None if elected is None else elected - wall_kill,
                    }
                )
                h.log(
                    f"  etcd W4 trial {t + 1}/{trials}: killed {leader}, acquire after {dt_s:.3f}s"
                )
                c.start_node(leader)
        finally:
            prober.close()
        changes = elections(c)
    finite = [x for x in times if x != float("inf")]
    el = [d["elected_after_s"] for d in detail if d["elected_after_s"] is not None]
    return {
        "w4_elected_after_median_s": statistics.median(el) if el else None,
        "w4_elected_after_max_s": max(el) if el else None,
        "w4_machine_busy_pct": bg.busy_pct(),
        "w4_failover_median_s": statistics.median(times),
        "w4_failover_max_s": max(times),
        "w4_failover_min_s": min(finite) if finite else None,
        "w4_trials": len(times),
        "w4_timeouts": len(times) - len(finite),
        "w4_elections": changes,
        "w4_trial_s": times,
        "w4_detail": detail,
    }


# ---------------------------------------------------------------------------------- W5
def etcd_w5(o: argparse.Namespace, h: ModuleType) -> dict[str, Any]:
    window = 10.0 if o.quick else 30.0
    c, leader = fresh_etcd()
    with c:
        time.sleep(3.0)
        bg = h.Background()
        total, per = h.cpu_window(c, window)
        busy = bg.busy_pct() - bg.self_pct()
    return {
        "w5_background_cpu_pct": max(0.0, busy - total),
        "w5_idle_cluster_cpu_pct": total,
        "w5_idle_leader_cpu_pct": per.get(leader),
        "w5_idle_follower_cpu_pct": statistics.fmean(v for k, v in per.items() if k != leader),
    }


# ---------------------------------------------------------------------------------- W6
class EtcdW6Side:
    """bench/run.py's ``W6Side`` for etcd: run.py's ``run_w6_scale(o, n, EtcdW6Side())``
    runs W6 on a fresh etcd cluster with etcd_loadgen.py ``w6`` as the clients. The leader is
    the member ``Maintenance.Status`` names (asked every second in the hold, as for
    raftlease); elections from the members' logs; etcd has no leader lease (no lapses)."""

    name = "etcd"
    loadgen = LOADGEN
    leasewatch = False

    def start(self, env_for: dict[str, dict[str, str]] | None) -> tuple[EtcdCluster, str]:
        return fresh_etcd()

    def loadgen_args(self) -> list[str]:
        return ["w6"]

    def leader(self, c: EtcdCluster) -> str | None:
        for n, m in c.nodes.items():
            if not m.alive():
                continue
            st = c.status(n, timeout=0.3)
            if st is not None and st.leader and st.leader == st.header.member_id:
                return n
        return None

    def elections(self, c: EtcdCluster) -> list[float | None]:
        return [t for _n, t in c.elections()]

    def lapses(self, c: EtcdCluster) -> None:
        return None


ETCD_W6 = EtcdW6Side()


def w6_scale(o: argparse.Namespace, h: ModuleType, n: int, side: str) -> dict[str, Any]:
    """One W6 scale on one side (bench/run.py's driver for both)."""
    return h.run_w6_scale(o, n) if side == "raftlease" else h.run_w6_scale(o, n, ETCD_W6)


# ---------------------------------------------------------------------------------- W7 burst
def etcd_w7b(o: argparse.Namespace, h: ModuleType) -> dict[str, Any]:
    """bench/run.py's run_w7burst on etcd (etcd_loadgen.py ``burst``): leader changes from
    the members' logs, CPU of the first leader and of the cluster over burst + hold."""
    leases = 2000 if o.quick else o.burst_leases
    c, leader = fresh_etcd()
    with c:
        cpu0 = c.cpu_snapshot()
        r = loadgen(
            h,
            [
                "burst",
                "--target",
                c.nodes[leader].address,
                "--clients",
                "16",
                "--leases",
                str(leases),
                "--ttl-ms",
                "30000",
                "--hold-s",
                str(o.burst_hold_s),
            ],
            900,
        )
        cpu1 = c.cpu_snapshot()
        changes = elections(c)
    ka = r["keepalive"]
    return {
        "w7b_leader_changes": changes,
        "w7b_acquisitions_per_s": r["acquisitions_per_s"],
        "w7b_burst_s": r["burst_s"],
        "w7b_granted": r["granted"],
        "w7b_acquire_p50_ms": r["acquire_p50_ms"],
        "w7b_acquire_p99_ms": r["acquire_p99_ms"],
        "w7b_errors": sum(r["errors"].values()),
        "w7b_renewals_ok": ka["renewed"],
        "w7b_renewals_refused": ka["refused"],
        "w7b_leader_cpu_pct": 100.0 * (cpu1[leader] - cpu0[leader]) / r["wall_s"],
        "w7b_cluster_cpu_pct": 100.0
        * sum(cpu1[k] - cpu0[k] for k in cpu1 if k in cpu0)
        / r["wall_s"],
        "w7b_client_cpu_pct": 100.0 * r["client_cpu_s"] / r["wall_s"],
        "w7b_detail": {"loadgen": r},
    }


ETCD_FNS: dict[str, Callable[[argparse.Namespace, ModuleType], dict[str, Any]]] = {
    "w1": etcd_w1,
    "w2": etcd_w2,
    "w3": etcd_w3,
    "w4": etcd_w4,
    "w5": etcd_w5,
    "w7b": etcd_w7b,
}


# ---------------------------------------------------------------------------------- report
# A W3 run whose load generator renewed less than this share of the expected renewals
# (streams failing, a retarget) measured a different load: its CPU figure is set aside as
# w3_cluster_cpu_pct_short_run and kept out of the medians and ratios.
W3_MIN_RENEWAL_SHARE = 0.95
W3_SHAPES = {
    "client": "each system's shipped client: raftlease ONE LeaseClient (one KeepAlive stream, "
    "renewals due within 0.25 s batched in one message); etcd ONE LeaseKeepAlive stream, one "
    "request per renewal (clientv3)",
    "stream": "a keepalive stream per lease on both sides, one request per renewal",
    "renew": "raftlease a unary Renew per renewal; etcd a LeaseKeepAlive stream per lease",
}
# A side "wins" a figure only when every round's ratio is at least this far from 1.
VERDICT_MARGIN = 0.05


def _derive(r: dict[str, Any]) -> None:
    for w3 in ("w3", "w3_stream"):  # today's shape and, with --w3-both, the old one
        exp = r.get(f"{w3}_renewals_expected_per_s")
        got = r.get(f"{w3}_renewals_per_s")
        cpu = f"{w3}_cluster_cpu_pct"
        if _num(exp) and _num(got) and got < W3_MIN_RENEWAL_SHARE * exp and cpu in r:
            r[f"{cpu}_short_run"] = r.pop(cpu)
            r.pop(f"{w3}_cluster_cpu_ms_per_renewal", None)
        if r.get(f"{w3}_renewals_per_s") and r.get(cpu) is not None:
            r[f"{w3}_cluster_cpu_ms_per_renewal"] = 10.0 * r[cpu] / r[f"{w3}_renewals_per_s"]
    for k in [k for k in r if k.startswith("w6_") and k.endswith("_client_cpu_pct")]:
        pre = k.removesuffix("_client_cpu_pct")
        ren = r.get(f"{pre}_renewals_per_s")
        if _num(ren) and ren and _num(r[k]):
            r[f"{pre}_client_cpu_us_per_renewal"] = 1e4 * r[k] / ren
    if r.get("w2_acquisitions_per_s") and r.get("w2_cluster_cpu_pct") is not None:
        r["w2_cluster_cpu_ms_per_acquisition"] = (
            10.0 * r["w2_cluster_cpu_pct"] / r["w2_acquisitions_per_s"]
        )


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v == v


def summarize(per_round: list[dict[str, dict[str, Any]]], key: str) -> dict[str, Any]:
    """Medians and ranges of each side, and of the per-round ratio raftlease / etcd."""
    a = [r["raftlease"].get(key) for r in per_round]
    b = [r["etcd"].get(key) for r in per_round]
    av = [x for x in a if _num(x)]
    bv = [x for x in b if _num(x)]
    # Only where both are >= 0 and etcd's is not 0: a ratio of, say, two slopes of opposite
    # sign (RSS that shrank on one side) says nothing.
    ratios = [x / y for x, y in zip(a, b, strict=True) if _num(x) and _num(y) and x >= 0 < y]
    out: dict[str, Any] = {"raftlease": av, "etcd": bv, "ratios": ratios}
    for side, vals in (("raftlease", av), ("etcd", bv)):
        out[f"{side}_median"] = statistics.median(vals) if vals else None
        out[f"{side}_min"] = min(vals) if vals else None
        out[f"{side}_max"] = max(vals) if vals else None
    out["ratio_median"] = statistics.median(ratios) if ratios else None
    out["ratio_min"] = min(ratios) if ratios else None
    out["ratio_max"] = max(ratios) if ratios else None
    return out


def _f(v: Any, unit: str) -> str:
    if v is None:
        return "-"
    if unit in ("/s", "B"):
        return f"{v:,.0f}"
    if unit == "" and float(v).is_integer():
        return f"{int(v)}"
    if unit == "s":
        return f"{v:.3f}"
    return f"{v:.2f}"


def table(summary: dict[str, dict[str, Any]], figures: list[tuple[str, str, str, str]]) -> str:
    rows = [
        "| figure | raftlease median (min-max) | etcd 3.4 median (min-max) "
        "| raftlease / etcd, per round: median (min-max) | better |",
        "|---|---|---|---|---|",
    ]
    for key, unit, label, better in figures:
        s = summary.get(key)
        if s is None or (s["raftlease_median"] is None and s["etcd_median"] is None):
            continue
        cells = []
        for side in ("raftlease", "etcd"):
            med = s[f"{side}_median"]
            u = f" {unit}" if unit else ""
            cells.append(
                "-"
                if med is None
                else f"{_f(med, unit)}{u} ({_f(s[f'{side}_min'], unit)}-"
                f"{_f(s[f'{side}_max'], unit)})"
            )
        rm = s["ratio_median"]
        if rm is None or not better:
            ratio = "-" if rm is None else f"{rm:.2f} ({s['ratio_min']:.2f}-{s['ratio_max']:.2f})"
            who = ""
        else:
            ratio = f"{rm:.2f} ({s['ratio_min']:.2f}-{s['ratio_max']:.2f})"
            lo, hi = s["ratio_min"], s["ratio_max"]
            below, above = lo < 1.0 - VERDICT_MARGIN, hi > 1.0 + VERDICT_MARGIN  # some round
            all_below, all_above = hi < 1.0 - VERDICT_MARGIN, lo > 1.0 + VERDICT_MARGIN
            good = all_below if better == "lower" else all_above
            bad = all_above if better == "lower" else all_below
            who = (
                "raftlease"
                if good
                else "etcd"
                if bad
                else "unclear"
                if below or above
                else "no difference"
            )
        rows.append(f"| {label} | {cells[0]} | {cells[1]} | {ratio} | {who} |")
    return "\n".join(rows)


def load_avg() -> list[float]:
    with contextlib.suppress(OSError):
        return [round(x, 2) for x in os.getloadavg()]
    return []


def main(o: argparse.Namespace, selected: list[str], runs: int, h: ModuleType) -> None:
    """The --with-etcd driver: ``runs`` rounds of every selected workload, raftlease then
    etcd, each on a fresh cluster."""
    binary = etcd_binary()
    if binary is None:
        msg = (
            "--with-etcd: skipped: no `etcd` on PATH. Install etcd 3.4 by hand (Debian/Ubuntu: "
            "`apt-get install etcd-server`; not a project dependency) and run again."
        )
        print(msg)
        h.log(msg)
        return
    version = etcd_version(binary)
    if not version.startswith("3.4."):
        h.log(f"--with-etcd: warning: {binary} is etcd {version}, not 3.4")
    EtcdCluster.nice = h.BenchCluster.nice
    only = {w.strip() for w in o.only.split(",") if w.strip()}
    sel = [w for w in selected if w in WORKLOADS and (w not in OPT_IN or w in only)]
    dropped = [w for w in selected if w not in WORKLOADS]
    if dropped:
        h.log(f"--with-etcd: no etcd side for {', '.join(dropped)}; not run")
    skipped = [w for w in selected if w in OPT_IN and w not in only]
    if skipped:
        h.log(f"--with-etcd: {', '.join(skipped)} side by side only with --only; not run")
    scales = h.w6_scales(o) if "w6" in sel else []
    # W6 runs in the first --w6-runs rounds (one W6 round is minutes long), the rest --runs.
    count = {w: (o.w6_runs if w == "w6" else runs) for w in sel}
    nrounds = max(count.values(), default=runs)
    # W6 is one unit per scale, so that the sides of each scale run back to back.
    units: list[tuple[str, int | None]] = [
        u for w in sel for u in ([(w, n) for n in scales] if w == "w6" else [(w, None)])
    ]
    if not o.w4_trials:
        o.w4_trials = 5 if o.quick else 10  # both sides; run.py's own default is 30
    raft_fns = {
        "w1": h.run_w1,
        "w2": h.run_w2,
        "w3": h.run_w3,
        "w4": h.run_w4,
        "w5": h.run_w5,
        "w7b": h.run_w7burst,
    }
    ts = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    h.RESULTS.mkdir(parents=True, exist_ok=True)
    out_path = Path(o.out) if o.out else h.RESULTS / f"{ts}-etcd.json"
    h.BenchCluster.log_archive = h.RESULTS / f"{ts}-logs"
    cmd = " ".join([Path(h.PY).name, *sys.argv])
    facts = h.machine_facts()
    facts["etcd_binary"] = binary
    facts["etcd_version"] = version
    h.log(
        f"side by side: {cmd}; {nrounds} round(s) of {sel} on raftlease then etcd {version}"
        f"{f' (W6 scales {scales}, {o.w6_runs} round(s))' if scales else ''}; "
        f"results -> {out_path}"
    )
    rounds: list[dict[str, dict[str, Any]]] = []
    t_all = time.monotonic()

    def make_result(rs: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
        return _result(o, h, rounds=rs, cmd=cmd, sel=sel, scales=scales, facts=facts, t_all=t_all)

    result = make_result(rounds)
    for i in range(nrounds):
        rnd: dict[str, dict[str, Any]] = {"raftlease": {}, "etcd": {}, "load": {}}
        w6_done: dict[str, list[int]] = {"raftlease": [], "etcd": []}
        for w, n in units:
            if count[w] <= i:
                continue
            name = w.upper() if n is None else f"{w.upper()} {n:,} leases"
            unit = w if n is None else f"{w}_{h.w6_label(n)}"
            for side in ("raftlease", "etcd"):
                h.log(f"round {i + 1}/{nrounds}: {name} on {side}")
                h.wait_for_quiet()
                h.BenchCluster.label = f"{unit}-round{i + 1}"
                la0 = load_avg()
                try:
                    if n is not None:
                        r = w6_scale(o, h, n, side)
                        w6_done[side].append(n)
                    else:
                        r = raft_fns[w](o) if side == "raftlease" else ETCD_FNS[w](o, h)
                except Exception as e:  # a broken run is reported, not fatal to the others
                    h.log(f"  {side} {name} failed: {e}")
                    r = {f"{unit}_error": str(e)}
                _derive(r)
                rnd[side].update(r)
                rnd["load"][f"{unit}_{side}"] = {"before": la0, "after": load_avg()}
                brief = {
                    k: round(v, 3)
                    for k, v in r.items()
                    if isinstance(v, float) and not k.endswith("_s")
                }
                h.log(f"  {brief}")
                # after every run, the round so far (a long W6 side that fails or is
                # interrupted leaves the runs before it on disk)
                result = make_result([*rounds, rnd])
                out_path.write_text(json.dumps(result, indent=1, default=str))
        if "w6" in sel and count["w6"] > i:
            for side in ("raftlease", "etcd"):
                h.w6_derived(rnd[side], w6_done[side])  # slopes between scales, per side
        rounds.append(rnd)
        result = make_result(rounds)
        out_path.write_text(json.dumps(result, indent=1, default=str))
    report(result)
    print(f"results: {out_path}")


def _result(
    o: argparse.Namespace,
    h: ModuleType,
    *,
    rounds: list[dict[str, dict[str, Any]]],
    cmd: str,
    sel: list[str],
    scales: list[int],
    facts: dict[str, Any],
    t_all: float,
) -> dict[str, Any]:
    """The JSON of a --with-etcd run (written after every run)."""
    summary = {k: summarize(rounds, k) for k, *_ in all_figures(scales)}
    return {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": cmd,
        "mode": "side by side with etcd",
        "rounds": len(rounds),
        "workloads": sel,
        "quick": o.quick,
        "nice": o.nice,
        "w4_trials": o.w4_trials,
        "keepalive_mode": o.keepalive_mode,
        "w3_both": o.w3_both,
        "w6": (
            {
                "scales": scales,
                "clients": o.w6_clients,
                "hold_s": h.w6_hold(o),
                "procs": o.w6_procs,
                "ttl_ms": h.W6_TTL_MS,
                "runs": o.w6_runs,
            }
            if scales
            else None
        ),
        "machine": facts,
        "etcd_flags": {
            "heartbeat_interval_ms": HEARTBEAT_MS,
            "election_timeout_ms": ELECTION_MS,
        },
        "summary": summary,
        "per_round": rounds,
        "elapsed_s": time.monotonic() - t_all,
    }


def report(result: dict[str, Any]) -> None:
    """Print the tables of a --with-etcd result (also bench/etcd/report.py, from its JSON)."""
    rounds = result["per_round"]
    for rnd in rounds:
        for side in ("raftlease", "etcd"):
            _derive(rnd[side])
    w6 = result.get("w6") or {}
    scales = w6.get("scales", [])
    summary = {k: summarize(rounds, k) for k, *_ in all_figures(scales)}
    result["summary"] = summary
    loads = [v for rnd in rounds for x in rnd["load"].values() for v in x["after"][:1]]
    m = result["machine"]
    print()
    print(
        f"raftlease vs etcd {m['etcd_version']}, {result.get('date')} — {m['cpu_model']}, "
        f"{m['cores_logical']} cores, Python {m['python']}, grpcio {m['grpcio']}, "
        f"commit {m['git_commit'][:10]}{' (+local changes)' if m['raftlease_dirty'] else ''}"
    )
    print(
        f"command: {result['command']}   rounds: {len(rounds)} (raftlease then etcd per "
        f"workload), W4 trials per run: {result['w4_trials']}"
    )
    km = result.get("keepalive_mode")
    if km and "w3" in result.get("workloads", []):
        print(f"W3 shape: {W3_SHAPES.get(km, km)}")
        if result.get("w3_both") and km != "stream":
            print(f"W3 old shape (w3_stream_*): {W3_SHAPES['stream']}")
    short = [
        f"round {i + 1} {side}{' (old shape)' if w3 == 'w3_stream' else ''}"
        for i, rnd in enumerate(rounds)
        for side in ("raftlease", "etcd")
        for w3 in ("w3", "w3_stream")
        if f"{w3}_cluster_cpu_pct_short_run" in rnd[side]
    ]
    if short:
        print(
            f"W3 CPU left out of the medians for {', '.join(short)}: fewer than "
            f"{W3_MIN_RENEWAL_SHARE:.0%} of the expected renewals (see w3_renewals_per_s)"
        )
    if loads:
        print(
            f"1-min load average after each run: median {statistics.median(loads):.1f} "
            f"(min {min(loads):.1f}, max {max(loads):.1f}) on {m['cores_logical']} cores"
        )
    if any(
        summary[k][f"{side}_median"] is not None
        for k, *_ in FIGURES + EXTRAS
        for side in ("raftlease", "etcd")
    ):
        print()
        print(table(summary, FIGURES))
        print()
        print(table(summary, EXTRAS))
    if any(
        summary[k][f"{side}_median"] is not None
        for k, *_ in W7B_FIGURES
        for side in ("raftlease", "etcd")
    ):
        print()
        print(
            "W7 burst: acquisition = raftlease Acquire, etcd LeaseGrant + Txn put-if-absent; "
            "every lease kept alive on one stream, one message per lease per renewal on both "
            "sides; CPU over the burst and the 10 s after it."
        )
        print()
        print(table(summary, W7B_FIGURES))
    if scales:
        print()
        print(
            f"W6: {w6['clients']} clients, one keepalive stream each, TTL "
            f"{w6['ttl_ms'] / 1000:.0f} s, every lease renewed every "
            f"{w6['ttl_ms'] / 3000:.0f} s, hold {w6['hold_s']:.0f} s, {w6['procs']} load "
            "generator process(es) per side. Acquisition: raftlease Acquire; etcd LeaseGrant "
            "+ Txn put-if-absent. One keepalive message: raftlease a KeepAlive batch of all "
            "of a client's leases due (<= 1,000 items); etcd one LeaseKeepAliveRequest (one "
            "lease). Round: a client's whole set, first write -> answer to its last lease."
        )
        print()
        print(table(summary, w6_figures(scales, W6_FIGURES) + w6_slope_figures(scales)))
        print()
        print(table(summary, w6_figures(scales, W6_EXTRAS)))
        for i, rnd in enumerate(rounds):
            for side in ("raftlease", "etcd"):
                for n in scales:
                    lab = w6_label(n)
                    got = rnd[side].get(f"w6_{lab}_renewals_per_s")
                    exp = rnd[side].get(f"w6_{lab}_renewals_expected_per_s")
                    if _num(got) and _num(exp) and got < W3_MIN_RENEWAL_SHARE * exp:
                        print(
                            f"round {i + 1} {side} W6 {lab}: {got:,.0f} renewals/s answered in "
                            f"the hold of {exp:,.0f}/s due: its CPU figures are of a lighter load"
                        )
                    for what in (
                        "error",
                        "lost_reasons",
                        "stream_failure_codes",
                        "stream_failure_details",
                        "acquire_errors",
                    ):
                        v = rnd[side].get(f"w6_{lab}_{what}")
                        if v:
                            print(f"round {i + 1} {side} W6 {lab} {what.replace('_', ' ')}: {v}")
    print()
