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
- W3: 1,000 leases (TTL 10 s), each with its key, renewed every ttl/3 on its own
  LeaseKeepAlive stream, phase-spread: cluster CPU over the window.
- W4: SIGKILL the leader; one thread per endpoint retries acquire (0.5 s timeout, ~5 ms
  apart) until one succeeds; restart the member and wait for a stable cluster; median and
  max over the trials.
- W5: idle cluster CPU.

CPU is each server process's own accounting (psutil user+sys), as for raftlease. The ratio
is raftlease / etcd: below 1 is better for raftlease on latency, CPU and failover, above 1
is better on W2's throughput. The per-round ratio (each raftlease run over the etcd run right
after it) is given with its median and range.
"""

from __future__ import annotations

import contextlib
import datetime as dt
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
WORKLOADS = ("w1", "w2", "w3", "w4", "w5")

# key, unit, label, which way is better
FIGURES: list[tuple[str, str, str, str]] = [
    ("w1_acquire_p50_ms", "ms", "W1 acquire p50 (1 client)", "lower"),
    ("w1_acquire_p99_ms", "ms", "W1 acquire p99", "lower"),
    ("w2_acquisitions_per_s", "/s", "W2 acquisitions/s (16 clients)", "higher"),
    ("w3_cluster_cpu_pct", "% core", "W3 cluster CPU, 1,000 leases kept alive", "lower"),
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
    ("w3_cluster_cpu_ms_per_renewal", "ms", "W3 cluster CPU per renewal", "lower"),
    ("w3_leader_rss_mib", "MiB", "W3 leader RSS, 1,000 leases kept alive", "lower"),
    ("w4_elected_after_median_s", "s", "W4 kill -> new leader in the logs, median", "lower"),
    ("w5_idle_leader_cpu_pct", "% core", "W5 idle leader CPU", "lower"),
]


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
    client_pct = 100.0 * r["client_cpu_s"] / r["wall_s"] if r["wall_s"] else 0.0
    return {
        "w3_background_cpu_pct": max(0.0, busy - total - client_pct),
        "w3_cluster_cpu_pct": total,
        "w3_leader_cpu_pct": per.get(leader),
        "w3_follower_cpu_pct": statistics.fmean(v for k, v in per.items() if k != leader),
        "w3_leader_bytes_per_lease_held": (rss_held - rss0) / leases,
        "w3_leader_bytes_per_lease_kept_alive": (rss_kept - rss0) / leases,
        "w3_leader_rss_mib": rss_kept / 2**20,
        "w3_renewals_per_s": r["renewals_per_s"],
        "w3_renewals_expected_per_s": leases / r["period_s"],
        "w3_renewals_failed": r["renewals_failed"],
        "w3_leases_lost": r["leases_lost"],
        "w3_renewal_late_p99_ms": r["late_p99_ms"],
        "w3_acquire_s": r["acquire_s"],
        "w3_client_cpu_pct": client_pct,
        "w3_leader_changes": changes,
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


ETCD_FNS: dict[str, Callable[[argparse.Namespace, ModuleType], dict[str, Any]]] = {
    "w1": etcd_w1,
    "w2": etcd_w2,
    "w3": etcd_w3,
    "w4": etcd_w4,
    "w5": etcd_w5,
}


# ---------------------------------------------------------------------------------- report
# A W3 run whose load generator renewed less than this share of the expected renewals
# (streams failing, a retarget) measured a different load: its CPU figure is set aside as
# w3_cluster_cpu_pct_short_run and kept out of the medians and ratios.
W3_MIN_RENEWAL_SHARE = 0.95
# A side "wins" a figure only when every round's ratio is at least this far from 1.
VERDICT_MARGIN = 0.05


def _derive(r: dict[str, Any]) -> None:
    exp = r.get("w3_renewals_expected_per_s")
    got = r.get("w3_renewals_per_s")
    if _num(exp) and _num(got) and got < W3_MIN_RENEWAL_SHARE * exp and "w3_cluster_cpu_pct" in r:
        r["w3_cluster_cpu_pct_short_run"] = r.pop("w3_cluster_cpu_pct")
        r.pop("w3_cluster_cpu_ms_per_renewal", None)
    if r.get("w3_renewals_per_s") and r.get("w3_cluster_cpu_pct") is not None:
        r["w3_cluster_cpu_ms_per_renewal"] = 10.0 * r["w3_cluster_cpu_pct"] / r["w3_renewals_per_s"]
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
    ratios = [x / y for x, y in zip(a, b, strict=True) if _num(x) and _num(y) and y]
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
    if unit == "/s":
        return f"{v:,.0f}"
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
            u = f" {unit}" if med is not None else ""
            cells.append(
                f"{_f(med, unit)}{u} ({_f(s[f'{side}_min'], unit)}-{_f(s[f'{side}_max'], unit)})"
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
    sel = [w for w in selected if w in WORKLOADS]
    dropped = [w for w in selected if w not in WORKLOADS]
    if dropped:
        h.log(f"--with-etcd: no etcd side for {', '.join(dropped)}; not run")
    if not o.w4_trials:
        o.w4_trials = 5 if o.quick else 10  # both sides; run.py's own default is 30
    raft_fns = {
        "w1": h.run_w1,
        "w2": h.run_w2,
        "w3": lambda o: h.run_keepalive(o, 1000, "w3"),
        "w4": h.run_w4,
        "w5": h.run_w5,
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
        f"side by side: {cmd}; {runs} round(s) of {sel} on raftlease then etcd {version}; "
        f"results -> {out_path}"
    )
    rounds: list[dict[str, dict[str, Any]]] = []
    t_all = time.monotonic()
    result: dict[str, Any] = {}
    for i in range(runs):
        rnd: dict[str, dict[str, Any]] = {"raftlease": {}, "etcd": {}, "load": {}}
        for w in sel:
            for side in ("raftlease", "etcd"):
                h.log(f"round {i + 1}/{runs}: {w.upper()} on {side}")
                h.wait_for_quiet()
                h.BenchCluster.label = f"{w}-round{i + 1}"
                la0 = load_avg()
                try:
                    r = raft_fns[w](o) if side == "raftlease" else ETCD_FNS[w](o, h)
                except Exception as e:  # a broken run is reported, not fatal to the others
                    h.log(f"  {side} {w.upper()} failed: {e}")
                    r = {f"{w}_error": str(e)}
                _derive(r)
                rnd[side].update(r)
                rnd["load"][f"{w}_{side}"] = {"before": la0, "after": load_avg()}
                brief = {
                    k: round(v, 3)
                    for k, v in r.items()
                    if isinstance(v, float) and not k.endswith("_s")
                }
                h.log(f"  {brief}")
        rounds.append(rnd)
        summary = {k: summarize(rounds, k) for k, *_ in FIGURES + EXTRAS}
        result = {
            "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": cmd,
            "mode": "side by side with etcd",
            "rounds": len(rounds),
            "workloads": sel,
            "quick": o.quick,
            "nice": o.nice,
            "w4_trials": o.w4_trials,
            "machine": facts,
            "etcd_flags": {
                "heartbeat_interval_ms": HEARTBEAT_MS,
                "election_timeout_ms": ELECTION_MS,
            },
            "summary": summary,
            "per_round": rounds,
            "elapsed_s": time.monotonic() - t_all,
        }
        out_path.write_text(json.dumps(result, indent=1, default=str))  # after every round
    report(result)
    print(f"results: {out_path}")


def report(result: dict[str, Any]) -> None:
    """Print the tables of a --with-etcd result (also bench/etcd/report.py, from its JSON)."""
    rounds = result["per_round"]
    for rnd in rounds:
        for side in ("raftlease", "etcd"):
            _derive(rnd[side])
    summary = {k: summarize(rounds, k) for k, *_ in FIGURES + EXTRAS}
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
    short = [
        f"round {i + 1} {side}"
        for i, rnd in enumerate(rounds)
        for side in ("raftlease", "etcd")
        if "w3_cluster_cpu_pct_short_run" in rnd[side]
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
    print()
    print(table(summary, FIGURES))
    print()
    print(table(summary, EXTRAS))
    print()
