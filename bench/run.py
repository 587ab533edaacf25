"""raftlease benchmarks (issue 5): W1-W6 (+ W7 opt-in) against fresh local 3-node clusters.

    .venv/bin/python bench/run.py                 # full: every workload 3 times (~15 min)
    .venv/bin/python bench/run.py --quick         # 1 run each, short windows (~2 min)
    .venv/bin/python bench/run.py --only w1,w2    # a subset
    .venv/bin/python bench/run.py --w7            # also the 10-minute stability run
    .venv/bin/python bench/run.py --only w7b      # W7 burst: 10,000 acquisitions, lease lapses
    .venv/bin/python bench/run.py --only w3 --w3-both
                                                  # W3 as the shipped client keeps 1,000 leases
                                                  # alive, and the old shape (a stream per lease)
    .venv/bin/python bench/run.py --with-etcd     # W1-W5 side by side with etcd 3.4, ratios
    .venv/bin/python bench/run.py --with-etcd --only w6 --w6-leases 1000,10000
                                                  # W6 side by side with etcd 3.4, per scale
    .venv/bin/python bench/run.py --profile       # py-spy profiles + W1 timeline, no table runs
                                                  # (combine with --only to run both)

Each run starts a fresh cluster (3 real server processes, fresh data dirs, real fsync) on
127.0.0.1; load generators are separate processes (bench/loadgen.py). CPU figures come from the
processes' own accounting (psutil cpu_times user+sys deltas). W3 (--keepalive-mode client, the
default) is ONE LeaseClient keeping 1,000 leases alive with its keepalive hub (one KeepAlive
stream, renewals batched); --keepalive-mode stream is the old shape (a stream per lease), and
--w3-both adds it as w3_stream_* figures. Results: bench/results/<ts>.json
plus a table on stdout comparing each figure with the goal. Timing never sets the exit code.
With --with-etcd (bench/etcd/sidebyside.py) each workload runs on raftlease and then on a
local 3-member etcd 3.4 cluster, and the tables give both sides and their ratio per figure:
W1-W5 by default, W6 and W7b when --only names them (etcd: LeaseGrant + Txn put-if-absent
per lease, one LeaseKeepAlive request per lease per renewal); results:
bench/results/<ts>-etcd.json.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import itertools
import json
import os
import platform
import queue
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import analyze
import grpc
import psutil
from cluster import BENCH_DIR, REPO, BenchCluster, nice_prefix

from raftlease.v1 import lease_pb2, lease_pb2_grpc

RESULTS = BENCH_DIR / "results"
PY = sys.executable
KIB = 1024.0

# name, unit, goal op, goal value, etcd 3.4 default (same kind of machine; issue 5)
GOALS: dict[str, tuple[str, str, float, str]] = {
    "w1_acquire_p50_ms": ("ms", "<=", 1.5, "2.4"),
    "w1_acquire_p99_ms": ("ms", "<=", 5.0, "8.2"),
    "w2_acquisitions_per_s": ("/s", ">=", 2000.0, "662"),
    "w3_cluster_cpu_pct": ("% core", "<=", 8.0, "13.3"),
    "w4_failover_median_s": ("s", "<=", 0.40, "1.55"),
    "w4_failover_max_s": ("s", "<=", 0.60, "2.31"),
    "w5_idle_cluster_cpu_pct": ("% core", "<=", 2.0, "4.15"),
    "w6_leases_lost": ("", "<=", 0.0, ""),
    "w6_leader_lease_lapses": ("", "<=", 0.0, ""),
    "w6_leader_changes": ("", "<=", 0.0, ""),
    "w6_leader_bytes_per_lease": ("B", "<=", 1024.0, ""),
    "w6_leader_bytes_per_extra_lease": ("B", "<=", 1024.0, ""),
    "w6_keepalive_p99_ms": ("ms", "<=", 20.0, ""),
    "w7_leader_changes": ("", "<=", 0.0, ""),
    "w7_leader_lease_lapses": ("", "<=", 0.0, ""),
    "w7b_leader_lease_lapses": ("", "<=", 0.0, ""),
    "w7b_leader_changes": ("", "<=", 0.0, ""),
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    if not s:
        return float("nan")
    k = min(len(s) - 1, max(0, round(q * (len(s) - 1))))
    return s[k]


def summarize(vals: list[float]) -> dict[str, Any]:
    vals = [v for v in vals if v is not None]
    if not vals:
        return {"median": None, "min": None, "max": None, "runs": []}
    return {
        "median": statistics.median(vals),
        "min": min(vals),
        "max": max(vals),
        "runs": vals,
    }


def machine_facts() -> dict[str, Any]:
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = ""
    dirty = False
    with contextlib.suppress(Exception):
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--", "raftlease"],
                cwd=REPO,
                capture_output=True,
                text=True,
            ).stdout.strip()
        )
    import google.protobuf

    return {
        "cpu_model": cpu,
        "cores_logical": psutil.cpu_count(logical=True),
        "cores_physical": psutil.cpu_count(logical=False),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_impl": platform.python_implementation(),
        "grpcio": grpc.__version__,
        "protobuf": google.protobuf.__version__,
        "protobuf_backend": _protobuf_backend(),
        "git_commit": commit,
        "raftlease_dirty": dirty,
        "hostname": platform.node(),
    }


def _protobuf_backend() -> str:
    with contextlib.suppress(Exception):
        from google.protobuf.internal import api_implementation

        return str(api_implementation.Type())
    return "unknown"


# ---------------------------------------------------------------------------------- helpers
def popen_kw() -> dict[str, Any]:
    """Extra subprocess arguments (none today; niceness goes through nice_prefix)."""
    return {}


def loadgen(args: list[str], timeout: float) -> dict[str, Any]:
    p = subprocess.run(
        [*nice_prefix(BenchCluster.nice), PY, str(BENCH_DIR / "loadgen.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(REPO),
        **popen_kw(),
    )
    lines = [x for x in p.stdout.strip().splitlines() if x.startswith("{")]
    if p.returncode != 0 or not lines:
        raise RuntimeError(f"loadgen {args[0]} failed (rc {p.returncode}): {p.stderr[-3000:]}")
    return json.loads(lines[-1])  # type: ignore[no-any-return]


# Set by main() from --whatif / --set: applied to every node of every cluster.
NODE_ENV: dict[str, str] = {}
NODE_OVERRIDES: dict[str, Any] = {}


def new_cluster() -> BenchCluster:
    return BenchCluster(overrides=NODE_OVERRIDES)


def fresh_cluster(env_for: dict[str, dict[str, str]] | None = None) -> tuple[BenchCluster, str]:
    c = new_cluster()
    env = {nid: {**NODE_ENV, **(env_for or {}).get(nid, {})} for nid in c.nodes}
    c.start_nodes(env)
    try:
        leader = c.wait_stable(30, settle=0.5)
    except Exception:
        c.stop()
        c.keep_dir = True
        raise
    return c, leader


def system_busy_s() -> float:
    """CPU seconds the whole machine spent busy (all cores, everything but idle/iowait)."""
    t = psutil.cpu_times()
    return float(
        sum(getattr(t, f) for f in t._fields if f not in ("idle", "iowait", "guest", "guest_nice"))
    )


class Background:
    """Machine-wide busy CPU during a window, to report how much OTHER load shared the box."""

    def __init__(self) -> None:
        self.b0 = system_busy_s()
        self.t0 = time.monotonic()
        self.self0 = _self_cpu()

    def busy_pct(self) -> float:
        return 100.0 * (system_busy_s() - self.b0) / (time.monotonic() - self.t0)

    def self_pct(self) -> float:
        return 100.0 * (_self_cpu() - self.self0) / (time.monotonic() - self.t0)


def _self_cpu() -> float:
    t = os.times()
    return t.user + t.system


QUIET = {"max_wait_s": 30.0, "threshold_pct": 30.0, "enabled": 1.0}


def wait_for_quiet() -> float:
    """Wait (up to QUIET['max_wait_s']) until the machine's busy CPU over 2 s is below the
    threshold (% of one core). Returns the last measured busy %, for the record."""
    if not QUIET["enabled"]:
        return float("nan")
    deadline = time.monotonic() + QUIET["max_wait_s"]
    while True:
        bg = Background()
        time.sleep(2.0)
        busy = bg.busy_pct()
        if busy < QUIET["threshold_pct"] or time.monotonic() >= deadline:
            if busy >= QUIET["threshold_pct"]:
                log(f"  machine still busy ({busy:.0f}% of a core from other processes); going on")
            return busy
        log(f"  waiting for a quiet machine: {busy:.0f}% of a core busy elsewhere")


def cpu_window(c: BenchCluster, seconds: float) -> tuple[float, dict[str, float]]:
    """Cluster CPU over the window as % of one core, and per node."""
    a = c.cpu_snapshot()
    t0 = time.monotonic()
    time.sleep(seconds)
    b = c.cpu_snapshot()
    wall = time.monotonic() - t0
    per = {nid: 100.0 * (b[nid] - a[nid]) / wall for nid in b if nid in a}
    return sum(per.values()), per


# ---------------------------------------------------------------------------------- W1
def run_w1(o: argparse.Namespace) -> dict[str, Any]:
    n, warm = (400, 100) if o.quick else (2000, 200)
    c, leader = fresh_cluster()
    with c:
        cpu0 = c.cpu_snapshot()
        bg = Background()
        r = loadgen(
            ["w1", "--target", c.nodes[leader].address, "--n", str(n), "--warmup", str(warm)],
            600,
        )
        cpu1 = c.cpu_snapshot()
        busy = bg.busy_pct()
    a, rel = r["acquire_ms"], r["release_ms"]
    cluster_cpu_s = sum(cpu1[k] - cpu0[k] for k in cpu1)
    ours = 100.0 * (cluster_cpu_s + r["client_cpu_s"]) / r["wall_s"]
    return {
        "w1_background_cpu_pct": max(0.0, busy - ours - bg.self_pct()),
        "w1_acquire_p50_ms": pct(a, 0.5),
        "w1_acquire_p99_ms": pct(a, 0.99),
        "w1_acquire_mean_ms": statistics.fmean(a),
        "w1_acquire_max_ms": max(a),
        "w1_release_p50_ms": pct(rel, 0.5),
        "w1_release_p99_ms": pct(rel, 0.99),
        "w1_cluster_cpu_ms_per_cycle": 1000.0 * cluster_cpu_s / (n + warm),
        "w1_client_cpu_ms_per_cycle": 1000.0 * r["client_cpu_s"] / (n + warm),
        "w1_samples": n,
    }


# ---------------------------------------------------------------------------------- W2
def run_w2(o: argparse.Namespace) -> dict[str, Any]:
    dur, warm = (5.0, 1.0) if o.quick else (15.0, 3.0)
    c, leader = fresh_cluster()
    with c:
        lead = c.nodes[leader]
        holder: dict[str, Any] = {}

        def measure() -> None:
            time.sleep(warm + 0.5)
            a = c.cpu_snapshot()
            bg = Background()
            t0 = time.monotonic()
            time.sleep(dur - 1.0)
            b = c.cpu_snapshot()
            wall = time.monotonic() - t0
            holder["busy"] = bg.busy_pct() - bg.self_pct()
            holder["per"] = {k: 100.0 * (b[k] - a[k]) / wall for k in b}

        th = threading.Thread(target=measure)
        th.start()
        r = loadgen(
            [
                "w2",
                "--target",
                lead.address,
                "--clients",
                "16",
                "--duration",
                str(dur),
                "--warmup",
                str(warm),
            ],
            120,
        )
        th.join()
        changes = len(c.leader_changes_in_logs()) - 1
    per = holder.get("per", {})
    lat = r["acquire_ms"]
    client_pct = 100.0 * r["client_cpu_s"] / (dur + warm)
    return {
        "w2_background_cpu_pct": max(0.0, holder.get("busy", 0.0) - sum(per.values()) - client_pct),
        "w2_acquisitions_per_s": r["per_s"],
        "w2_acquire_p50_ms": pct(lat, 0.5),
        "w2_acquire_p99_ms": pct(lat, 0.99),
        "w2_errors": sum(r["errors"].values()),
        "w2_leader_cpu_pct": per.get(leader),
        "w2_cluster_cpu_pct": sum(per.values()),
        "w2_client_cpu_pct": client_pct,
        "w2_leader_changes": changes,
    }


# ---------------------------------------------------------------------------------- W3 / W6
def run_keepalive(
    o: argparse.Namespace, leases: int, prefix: str, mode: str | None = None
) -> dict[str, Any]:
    """``leases`` leases (TTL 10 s) kept alive by bench/loadgen.py ``keepalive --mode MODE``
    (default ``--keepalive-mode``) in a niced process of its own: cluster CPU over the window,
    per node, leader RSS, renewals answered per second, leases lost, load generator CPU.
    ``client``: ONE LeaseClient (its hub: one KeepAlive stream, batched renewals; see
    bench/keepalive_hub.py); ``stream``: one KeepAlive stream per lease; ``renew``: unary."""
    mode = mode or o.keepalive_mode
    window = 10.0 if o.quick else 30.0
    c, leader = fresh_cluster()
    with c:
        lead = c.nodes[leader]
        time.sleep(1.0)
        rss0 = c.rss(leader)
        p = subprocess.Popen(
            [
                *nice_prefix(BenchCluster.nice),
                PY,
                str(BENCH_DIR / "loadgen.py"),
                "keepalive",
                "--target",
                lead.address,
                "--endpoints",
                ",".join(c.endpoints),
                "--leases",
                str(leases),
                "--ttl-ms",
                "10000",
                "--mode",
                mode,
                "--mark-at",
                str(leases // 10),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=str(REPO),
            **popen_kw(),
        )
        try:
            assert p.stdout is not None
            line = p.stdout.readline()
            rss_mark = None
            if line.startswith("MARK"):
                # leases // 10 acquired; the loadgen pauses 2 s before the rest
                time.sleep(1.0)
                rss_mark = c.rss(leader)
                line = p.stdout.readline()
            if not line.startswith("READY"):
                raise RuntimeError(f"keepalive loadgen: {line!r} {p.stderr.read()[-2000:]}")
            # The loadgen prints READY right after the acquisitions and waits 2 s before
            # opening any keepalive stream: this is the memory of `leases` held leases.
            # (client mode: the client's one stream renews them from their grant on.)
            time.sleep(1.0)
            rss_held = c.rss(leader)
            time.sleep(5.0)  # the pause, then one renewal period (ttl/3) so every stream is open
            bg = Background()
            total, per = cpu_window(c, window)
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
            raise RuntimeError(f"keepalive loadgen gave no result: {err[-2000:]}")
        r = json.loads(lines[-1])
        changes = len(c.leader_changes_in_logs()) - 1
    return {
        **keepalive_figures(
            prefix, r, leases, total, per, leader, busy, (rss0, rss_held, rss_kept)
        ),
        # The slope: what each lease past the first tenth added (no fresh-process growth).
        f"{prefix}_leader_bytes_per_extra_lease_held": (
            (rss_held - rss_mark) / (leases - leases // 10) if rss_mark is not None else None
        ),
        # KeepAliveRequest messages (or Renews) written per second: one per renewal except
        # in client mode, where the hub batches renewals due together (`items`)
        f"{prefix}_messages_per_s": r.get("messages_per_s"),
        f"{prefix}_renewals_per_message": r.get("renewals_per_message"),
        f"{prefix}_keepalive_streams": r.get("keepalive_streams"),
        f"{prefix}_renewals_failed": r["renewals_failed"],
        f"{prefix}_leases_lost": r.get("leases_lost", 0),
        f"{prefix}_lost_reasons": r.get("lost_reasons", {}),
        f"{prefix}_failure_codes": r.get("failure_codes", {}),
        f"{prefix}_failure_details": r.get("failure_details", {}),
        f"{prefix}_client_retargets": r.get("retargets", 0),
        f"{prefix}_renewal_late_p99_ms": r.get("late_p99_ms"),  # not in client mode
        f"{prefix}_acquire_s": r["acquire_s"],
        f"{prefix}_leader_changes": changes,
    }


def keepalive_figures(
    prefix: str,
    r: dict[str, Any],
    leases: int,
    total: float,
    per: dict[str, float],
    leader: str,
    busy: float,
    rss: tuple[int, int, int],
) -> dict[str, Any]:
    """The figures of a keepalive run that raftlease's and etcd's W3 share: CPU (cluster,
    leader, followers, load generator, the rest of the machine), leader RSS (``rss``: before,
    with the leases held, kept alive) and renewals. ``r``: the load generator's JSON."""
    rss0, rss_held, rss_kept = rss
    client_pct = 100.0 * r["client_cpu_s"] / r["wall_s"] if r["wall_s"] else 0.0
    return {
        f"{prefix}_background_cpu_pct": max(0.0, busy - total - client_pct),
        f"{prefix}_cluster_cpu_pct": total,
        f"{prefix}_leader_cpu_pct": per.get(leader),
        f"{prefix}_follower_cpu_pct": statistics.fmean(v for k, v in per.items() if k != leader),
        f"{prefix}_client_cpu_pct": client_pct,
        f"{prefix}_leader_bytes_per_lease_held": (rss_held - rss0) / leases,
        f"{prefix}_leader_bytes_per_lease_kept_alive": (rss_kept - rss0) / leases,
        f"{prefix}_leader_rss_mib": rss_kept / 2**20,
        f"{prefix}_renewals_per_s": r["renewals_per_s"],
        f"{prefix}_renewals_expected_per_s": leases / r["period_s"],
    }


def run_w3(o: argparse.Namespace) -> dict[str, Any]:
    """W3: 1,000 leases kept alive in ``--keepalive-mode`` (default ``client``: the shipped
    LeaseClient). With ``--w3-both`` also the old shape, a KeepAlive stream per lease, on a
    fresh cluster: the same figures prefixed ``w3_stream_`` (``w3_stream_cluster_cpu_pct``)."""
    r = run_keepalive(o, 1000, "w3")
    if getattr(o, "w3_both", False):
        if o.keepalive_mode == "stream":  # the main figure is the old shape already
            r.update({f"w3_stream_{k[3:]}": v for k, v in r.items()})
        else:
            log("  W3 old shape (a stream per lease), for --w3-both")
            wait_for_quiet()
            r.update(run_keepalive(o, 1000, "w3_stream", "stream"))
    return r


W3_SHAPES = {
    "client": "ONE LeaseClient (the shipped client): one KeepAlive stream, renewals due within "
    "0.25 s batched in one message",
    "stream": "a KeepAlive stream per lease (an old client), one request per renewal",
    "renew": "a unary Renew per renewal",
}


# ---------------------------------------------------------------------------------- W6
# Issue goal: 100,000 leases held by 100 clients, kept alive at TTL 30 s for 10 minutes:
# 0 leases lost, 0 leader-lease lapses, leader memory <= 1 KiB per lease, keepalive p99
# <= 20 ms; CPU and memory at 1k, 10k and 100k leases, and the slope between them.
W6_TTL_MS = 30_000


def w6_label(n: int) -> str:
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def w6_scales(o: argparse.Namespace) -> list[int]:
    spec = o.w6_leases or ("1000,10000" if o.quick else "1000,10000,100000")
    return sorted({int(x.replace("_", "")) for x in spec.split(",") if x.strip()})


def w6_hold(o: argparse.Namespace) -> float:
    return float(o.w6_hold if o.w6_hold is not None else (20.0 if o.quick else 60.0))


_LAPSE = re.compile(r"leader lease lapsed for up to (\d+) ms")


def _log_stamp(line: str) -> float | None:
    """Wall-clock time of a server log line (logging's asctime, millisecond resolution)."""
    try:
        return dt.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    except ValueError:
        return None


def lease_lapses_in_logs(c: BenchCluster) -> list[tuple[str, float | None, float]]:
    """(node, wall time, ms) of every 'leader lease lapsed' line (node.py logs one each time
    it counts raftlease_leader_lease_lapses_total, so the two agree; the logs also survive a
    restart, the counter does not)."""
    out = []
    for nid, node in c.nodes.items():
        for line in node.log_text().splitlines():
            m = _LAPSE.search(line)
            if m:
                out.append((nid, _log_stamp(line), float(m.group(1))))
    return out


class _Lines:
    """A load generator's stdout lines, read by a thread (so a wait can time out); its
    stderr, drained by another (its last 100 lines kept)."""

    def __init__(self, p: subprocess.Popen[str]) -> None:
        self.p = p
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.rest: list[str] = []
        self.err: collections.deque[str] = collections.deque(maxlen=100)
        threading.Thread(target=self._pump, daemon=True).start()
        threading.Thread(target=self._drain, daemon=True).start()

    def _pump(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _drain(self) -> None:
        assert self.p.stderr is not None
        for line in self.p.stderr:
            self.err.append(line)

    def wait_for(self, prefix: str, deadline: float) -> str:
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"no {prefix} line from the load generator in time") from None
            if line is None:
                raise RuntimeError(f"load generator ended before {prefix} (rc {self.p.wait()})")
            if line.startswith(prefix):
                return line
            self.rest.append(line)

    def result(self) -> dict[str, Any]:
        lines = [*self.rest]
        while True:
            line = self.lines.get(timeout=120)
            if line is None:
                break
            lines.append(line)
        js = [x for x in lines if x.startswith("{")]
        if not js:
            raise RuntimeError(f"load generator gave no result (rc {self.p.wait()})")
        return json.loads(js[-1])  # type: ignore[no-any-return]


def current_leader(c: BenchCluster) -> str | None:
    """The node that says it leads now (Cluster.Status), or None."""
    for nid in c.nodes:
        st = c.status(nid, timeout=0.3)
        if st is not None and st.leader_id == nid:
            return nid
    return None


def _rss_all(c: BenchCluster) -> dict[str, int]:
    return {nid: c.rss(nid) for nid, node in c.nodes.items() if node.alive()}


def _merge_counts(dicts: list[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


class W6Side:
    """What run_w6_scale needs of the system under test; this one is raftlease.
    bench/etcd/sidebyside.py's ``EtcdW6Side`` is etcd's (``run.py --with-etcd --only w6``).
    The cluster it returns needs ``nodes`` (each with ``address`` and ``alive()``),
    ``endpoints``, ``rss``, ``cpu_snapshot`` and to be a context manager; the load generator
    takes bench/loadgen.py's ``keepalive --mode batch`` flags and prints its JSON."""

    name = "raftlease"
    loadgen = BENCH_DIR / "loadgen.py"
    leasewatch = True  # --w6-watch applies

    def start(self, env_for: dict[str, dict[str, str]] | None) -> tuple[Any, str]:
        return fresh_cluster(env_for)

    def loadgen_args(self) -> list[str]:
        return ["keepalive", "--mode", "batch"]

    def leader(self, c: Any) -> str | None:
        return current_leader(c)

    def elections(self, c: Any) -> list[float | None]:
        """Wall time of every leader election in the run (the first one included)."""
        return [_log_stamp(ln) for _n, ln in c.leader_changes_in_logs()]

    def lapses(self, c: Any) -> list[tuple[str, float | None, float]] | None:
        """(node, wall time, ms) of every leader-lease lapse; None: no such thing."""
        return lease_lapses_in_logs(c)


RAFTLEASE_W6 = W6Side()


def run_w6_scale(o: argparse.Namespace, leases: int, side: W6Side = RAFTLEASE_W6) -> dict[str, Any]:
    """One W6 scale on a fresh cluster: ``o.w6_clients`` clients over ``o.w6_procs`` load
    generator processes acquire ``leases`` leases (TTL 30 s; each kept alive from its grant,
    on its client's one KeepAlive stream, in batches), then ``w6_hold(o)`` s of keepalive
    only: the measured window (CPU, RSS, keepalive latency). ``side``: raftlease, or etcd
    (bench/etcd/sidebyside.py)."""
    hold = w6_hold(o)
    nclients = max(1, min(o.w6_clients, leases))
    nprocs = max(1, min(o.w6_procs, nclients))
    watch = (
        Path(tempfile.mkdtemp(prefix="raftlease-leasewatch-"))
        if o.w6_watch and side.leasewatch
        else None
    )
    env_for = (
        {f"n{i}": {"RAFTLEASE_BENCH_LEASEWATCH": str(watch / f"n{i}.json")} for i in (1, 2, 3)}
        if watch
        else None
    )
    who = "" if side is RAFTLEASE_W6 else f"{side.name} "
    c, leader = side.start(env_for)
    with c:
        lead = c.nodes[leader]
        time.sleep(1.0)
        rss0 = _rss_all(c)
        cpu_a0 = c.cpu_snapshot()
        t_start = time.monotonic()
        procs: list[subprocess.Popen[str]] = []
        readers: list[_Lines] = []
        try:
            for j in range(nprocs):
                # process j plays clients [c0, c1) and their leases (proportional shares)
                c0, c1 = nclients * j // nprocs, nclients * (j + 1) // nprocs
                cl = c1 - c0
                share = leases * c1 // nclients - leases * c0 // nclients
                p = subprocess.Popen(
                    [
                        *nice_prefix(BenchCluster.nice),
                        PY,
                        str(side.loadgen),
                        *side.loadgen_args(),
                        "--target",
                        lead.address,
                        "--endpoints",
                        ",".join(c.endpoints),
                        "--leases",
                        str(share),
                        "--clients",
                        str(cl),
                        "--ttl-ms",
                        str(W6_TTL_MS),
                        "--concurrency",
                        str(max(1, o.w6_concurrency // nprocs)),
                    ],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    cwd=str(REPO),
                    **popen_kw(),
                )
                procs.append(p)
                readers.append(_Lines(p))
            # acquisitions (keepalive runs from each grant on); each node's peak RSS meanwhile
            deadline = t_start + 120.0 + leases / 100.0
            ready = []
            peak = dict(rss0)

            def sample_rss() -> dict[str, int]:
                now = _rss_all(c)
                for k, v in now.items():
                    peak[k] = max(peak.get(k, 0), v)
                return now

            for rd in readers:
                line = ""
                while not line:
                    try:
                        line = rd.wait_for("READY", min(deadline, time.monotonic() + 1.0))
                    except TimeoutError:
                        if time.monotonic() >= deadline:
                            raise
                        sample_rss()
                ready.append(json.loads(line.split(" ", 1)[1]))
            acquire_wall = time.monotonic() - t_start
            cpu_a1 = c.cpu_snapshot()
            rss_acquired = sample_rss()
            log(
                f"  {who}W6 {w6_label(leases)}: {sum(r['acquired'] for r in ready):,} acquired "
                f"in {acquire_wall:.1f} s; holding {hold:.0f} s"
            )
            # the hold: the measured window
            for p in procs:
                p.send_signal(signal.SIGUSR1)
            hold_wall0 = time.time()
            bg = Background()
            cpu_h0 = c.cpu_snapshot()
            t_h0 = time.monotonic()
            leaders: list[str | None] = [side.leader(c)]  # who leads, every second
            while time.monotonic() - t_h0 < hold:
                time.sleep(min(1.0, max(0.0, hold - (time.monotonic() - t_h0))))
                sample_rss()
                leaders.append(side.leader(c))
            cpu_h1 = c.cpu_snapshot()
            hold_s = time.monotonic() - t_h0
            busy = bg.busy_pct() - bg.self_pct()
            hold_wall1 = time.time()
            rss_end = sample_rss()
            for p in procs:
                p.send_signal(signal.SIGTERM)
            results = [rd.result() for rd in readers]
            for p in procs:
                p.wait(timeout=60)
        except Exception:
            for rd in readers:
                tail = "".join(rd.err)[-1500:]
                if tail.strip():
                    log(f"  {who}W6 load generator stderr: {tail}")
            raise
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        elected = side.elections(c)
        lapses = side.lapses(c)
    stalls = _w6_stalls(watch) if watch else {}
    hold_phase = [r["phases"].get("hold", {}) for r in results]
    lat = [x for h in hold_phase for x in h.get("latency_ms", [])]
    lat_round = [x for h in hold_phase for x in h.get("round_ms", [])]
    lat_acq = [x for r in results for x in r["phases"].get("acquire", {}).get("latency_ms", [])]
    late = [x for h in hold_phase for x in h.get("late_ms", [])]
    renewed = sum(h.get("renewals_ok", 0) for h in hold_phase)
    per = {k: 100.0 * (cpu_h1[k] - cpu_h0[k]) / hold_s for k in cpu_h1 if k in cpu_h0}
    per_acq = {k: 100.0 * (cpu_a1[k] - cpu_a0[k]) / acquire_wall for k in cpu_a1 if k in cpu_a0}
    # The leader's figures are those of the node that led for most of the hold (after
    # elections while acquiring, it is often not the first leader).
    seen = [x for x in leaders if x is not None]
    hl = max(set(seen), key=seen.count) if seen else leader
    growth = {k: rss_end[k] - rss0[k] for k in rss_end if k in rss0}
    client_pct = sum(100.0 * h.get("client_cpu_s", 0.0) / hold_s for h in hold_phase)
    in_hold = (
        None
        if lapses is None
        else [x for x in lapses if x[1] is not None and hold_wall0 <= x[1] <= hold_wall1]
    )
    changes_in_hold = [t for t in elected if t is not None and hold_wall0 <= t]
    x = f"w6_{w6_label(leases)}"
    return {
        f"{x}_leases": leases,
        f"{x}_clients": nclients,
        f"{x}_loadgens": nprocs,
        f"{x}_hold_s": hold_s,
        f"{x}_acquired": sum(r["acquired"] for r in results),
        f"{x}_acquire_failed": sum(r["acquire_failed"] for r in results),
        f"{x}_acquire_s": acquire_wall,
        f"{x}_acquisitions_per_s": leases / acquire_wall if acquire_wall else None,
        f"{x}_acquire_errors": _merge_counts([r["acquire_errors"] for r in results]),
        f"{x}_leases_lost": sum(r["leases_lost"] for r in results),
        f"{x}_leases_lost_in_hold": sum(h.get("leases_lost", 0) for h in hold_phase),
        f"{x}_lost_reasons": _merge_counts([r["lost_reasons"] for r in results]),
        f"{x}_stream_failures": sum(r["stream_failures"] for r in results),
        f"{x}_stream_failure_codes": _merge_counts([r["stream_failure_codes"] for r in results]),
        f"{x}_stream_failure_details": _merge_counts(
            [r["stream_failure_details"] for r in results]
        ),
        f"{x}_refused_in_hold": _merge_counts([h.get("refused", {}) for h in hold_phase]),
        f"{x}_refused": _merge_counts(
            [ph.get("refused", {}) for r in results for ph in r["phases"].values()]
        ),
        f"{x}_client_retargets": sum(r["retargets"] for r in results),
        f"{x}_stream_reopens": sum(r["reconnects"] for r in results),
        f"{x}_leader_changes": max(0, len(elected) - 1),
        f"{x}_leader_changes_in_hold": len(changes_in_hold),
        f"{x}_leader_lease_lapses": None if lapses is None else len(lapses),
        f"{x}_leader_lease_lapses_in_hold": None if in_hold is None else len(in_hold),
        f"{x}_lapse_ms_max": (
            None if lapses is None else max((ms for _n, _t, ms in lapses), default=0.0)
        ),
        f"{x}_keepalive_p50_ms": pct(lat, 0.5) if lat else None,
        f"{x}_keepalive_p99_ms": pct(lat, 0.99) if lat else None,
        f"{x}_keepalive_max_ms": max(lat) if lat else None,
        f"{x}_keepalive_batches": len(lat),
        # a client's whole renewal round: its first write -> the answer to its last lease
        f"{x}_keepalive_round_p50_ms": pct(lat_round, 0.5) if lat_round else None,
        f"{x}_keepalive_round_p99_ms": pct(lat_round, 0.99) if lat_round else None,
        f"{x}_acquiring_keepalive_p99_ms": pct(lat_acq, 0.99) if lat_acq else None,
        f"{x}_renewal_late_p99_ms": pct(late, 0.99) if late else None,
        f"{x}_late_renewals": sum(h.get("late_renewals", 0) for h in hold_phase),
        f"{x}_renewal_max_gap_s": max((h.get("max_gap_s", 0.0) for h in hold_phase), default=0),
        f"{x}_renewals_per_s": renewed / hold_s,
        f"{x}_renewals_expected_per_s": leases / (W6_TTL_MS / 3000.0),
        f"{x}_cluster_cpu_pct": sum(per.values()),
        f"{x}_leader_cpu_pct": per.get(hl),
        f"{x}_follower_cpu_pct": statistics.fmean(v for k, v in per.items() if k != hl),
        f"{x}_leader_cpu_us_per_renewal": (
            1e6 * (cpu_h1[hl] - cpu_h0[hl]) / renewed if renewed and hl in cpu_h0 else None
        ),
        f"{x}_acquiring_cluster_cpu_pct": sum(per_acq.values()),
        f"{x}_acquiring_busiest_node_cpu_pct": max(per_acq.values(), default=None),
        f"{x}_acquiring_client_cpu_pct": sum(
            100.0 * r["phases"].get("acquire", {}).get("client_cpu_s", 0.0) / acquire_wall
            for r in results
        ),
        f"{x}_client_cpu_pct": client_pct,
        f"{x}_background_cpu_pct": max(0.0, busy - sum(per.values()) - client_pct),
        f"{x}_first_leader": leader,
        f"{x}_hold_leader": hl,
        f"{x}_hold_leader_samples": leaders,
        f"{x}_leader_rss_base_mib": rss0[hl] / 2**20,
        f"{x}_leader_rss_acquired_mib": rss_acquired.get(hl, 0) / 2**20,
        f"{x}_leader_rss_peak_mib": peak.get(hl, 0) / 2**20,
        f"{x}_leader_rss_mib": rss_end.get(hl, 0) / 2**20,
        f"{x}_leader_bytes_per_lease": growth[hl] / leases if hl in growth else None,
        f"{x}_leader_rss_growth_bytes": growth.get(hl),
        f"{x}_max_node_bytes_per_lease": max(growth.values()) / leases if growth else None,
        f"{x}_node_rss_mib": {k: v / 2**20 for k, v in rss_end.items()},
        **{f"{x}_{k}": v for k, v in stalls.items()},
    }


def _w6_stalls(watch: Path) -> dict[str, Any]:
    """What bench/leasewatch.py saw on each node (``--w6-watch``): GC pauses, slow fsyncs,
    loop lag and lapses with their wall times, to line lapses up with their causes."""
    out: dict[str, Any] = {}
    for i in (1, 2, 3):
        nid = f"n{i}"
        try:
            f = json.loads((watch / f"{nid}.json").read_text())
        except (OSError, ValueError):
            continue
        gcs = f.get("gc_ms", [])
        out[f"watch_{nid}"] = {
            "gc_pauses_over_5ms": len(gcs),
            "gc_max_ms": max((ms for _g, _t, ms in gcs), default=0.0),
            "gc_gen2_ms": [round(ms, 1) for g, _t, ms in gcs if g == 2],
            "gc": [(g, round(t, 3), round(ms, 1)) for g, t, ms in gcs],
            "slow_saves": f.get("slow_saves", []),
            "save_ms": f.get("save_ms"),
            "loop_lag_ms": f.get("loop_lag_ms"),
            "big_lags": f.get("big_lags", []),
            "snapshot_ms": f.get("snapshot_ms", []),
            "lapse_at": f.get("lapse_at", []),
            "lapse_s": f.get("lapse_s", []),
            "gc_tracked": f.get("gc_tracked"),
            "gc_types": f.get("gc_types"),
            "tracemalloc_total": f.get("tracemalloc_total"),
            "tracemalloc_top": f.get("tracemalloc_top"),
            "smaps": f.get("smaps"),
            "pymalloc": f.get("pymalloc"),
        }
    shutil.rmtree(watch, ignore_errors=True)
    return out


def run_w6(o: argparse.Namespace) -> dict[str, Any]:
    """W6 at every scale of --w6-leases (fresh cluster each), then the slopes between
    consecutive scales, and the headline figures the goal table shows."""
    scales = w6_scales(o)
    label = BenchCluster.label
    out: dict[str, Any] = {"w6_scales": scales}
    done: list[int] = []
    for k, n in enumerate(scales):
        if k:
            wait_for_quiet()
        BenchCluster.label = f"{label}-{w6_label(n)}"
        log(f"  W6 {w6_label(n)}: {n:,} leases, {o.w6_clients} clients, TTL 30 s")
        try:
            out.update(run_w6_scale(o, n))
            done.append(n)
        except Exception as e:  # one broken scale is reported, the others still run
            log(f"  W6 {w6_label(n)} failed: {e}")
            out[f"w6_{w6_label(n)}_error"] = str(e)
    BenchCluster.label = label
    w6_derived(out, done)
    return out


def w6_derived(out: dict[str, Any], done: list[int]) -> None:
    """Add to ``out`` (one side's W6 figures per scale) the slopes between consecutive scales
    of ``done`` and the headline figures the goal table shows."""

    def f(n: int, key: str) -> float | None:
        v = out.get(f"w6_{w6_label(n)}_{key}")
        return float(v) if isinstance(v, int | float) else None

    for a, b in itertools.pairwise(done):
        s = f"w6_slope_{w6_label(a)}_{w6_label(b)}"
        ga, gb = f(a, "leader_rss_growth_bytes"), f(b, "leader_rss_growth_bytes")
        if ga is not None and gb is not None:
            out[f"{s}_leader_bytes_per_lease"] = (gb - ga) / (b - a)
        for key in ("cluster_cpu_pct", "leader_cpu_pct"):
            ca, cb = f(a, key), f(b, key)
            if ca is not None and cb is not None:
                out[f"{s}_{key}_per_1k_leases"] = 1000.0 * (cb - ca) / (b - a)
    if done:
        top = done[-1]
        out["w6_leases_lost"] = sum(f(n, "leases_lost") or 0 for n in done)
        if any(f(n, "leader_lease_lapses") is not None for n in done):
            out["w6_leader_lease_lapses"] = sum(f(n, "leader_lease_lapses") or 0 for n in done)
        out["w6_leader_changes"] = sum(f(n, "leader_changes") or 0 for n in done)
        out["w6_leader_bytes_per_lease"] = f(top, "leader_bytes_per_lease")
        out["w6_keepalive_p99_ms"] = f(top, "keepalive_p99_ms")
        if len(done) > 1:
            a, b = done[-2], done[-1]
            out["w6_leader_bytes_per_extra_lease"] = out.get(
                f"w6_slope_{w6_label(a)}_{w6_label(b)}_leader_bytes_per_lease"
            )


# name suffix, label, unit, goal (op, value) or None
W6_ROWS: list[tuple[str, str, str, tuple[str, float] | None]] = [
    ("clients", "clients (one KeepAlive stream each)", "", None),
    ("loadgens", "load generator processes", "", None),
    ("acquire_s", "acquisitions took", "s", None),
    ("acquisitions_per_s", "acquisitions/s", "/s", None),
    ("hold_s", "hold (measured window)", "s", None),
    ("leases_lost", "leases lost (whole run)", "", ("<=", 0.0)),
    ("leases_lost_in_hold", "leases lost in the hold", "", ("<=", 0.0)),
    ("stream_failures", "KeepAlive stream failures", "", None),
    ("stream_reopens", "KeepAlive streams reopened (failure or NOT_LEADER)", "", None),
    ("leader_changes", "leader changes", "", ("<=", 0.0)),
    ("leader_lease_lapses", "leader-lease lapses (whole run)", "", ("<=", 0.0)),
    ("leader_lease_lapses_in_hold", "leader-lease lapses in the hold", "", ("<=", 0.0)),
    ("lapse_ms_max", "longest lapse", "ms", None),
    ("keepalive_p50_ms", "keepalive p50 (batch write -> answer)", "ms", None),
    ("keepalive_p99_ms", "keepalive p99", "ms", ("<=", 20.0)),
    ("keepalive_max_ms", "keepalive max", "ms", None),
    ("keepalive_round_p99_ms", "keepalive round p99 (a client's whole set)", "ms", None),
    ("acquiring_keepalive_p99_ms", "keepalive p99 while acquiring", "ms", None),
    ("renewal_late_p99_ms", "renewal round sent late, p99", "ms", None),
    ("renewals_per_s", "renewals answered RENEWED/s", "/s", None),
    ("cluster_cpu_pct", "cluster CPU (hold)", "% core", None),
    ("leader_cpu_pct", "leader CPU (hold)", "% core", None),
    ("follower_cpu_pct", "follower CPU (hold, mean)", "% core", None),
    ("leader_cpu_us_per_renewal", "leader CPU per renewal", "us", None),
    ("acquiring_cluster_cpu_pct", "cluster CPU while acquiring", "% core", None),
    ("acquiring_busiest_node_cpu_pct", "busiest node CPU while acquiring", "% core", None),
    ("acquiring_client_cpu_pct", "load generator CPU while acquiring", "% core", None),
    ("client_cpu_pct", "load generator CPU (hold)", "% core", None),
    ("background_cpu_pct", "other load on the machine (hold)", "% core", None),
    ("leader_rss_base_mib", "leader RSS before", "MiB", None),
    ("leader_rss_peak_mib", "leader RSS peak", "MiB", None),
    ("leader_rss_mib", "leader RSS at the end of the hold", "MiB", None),
    ("leader_bytes_per_lease", "leader RSS growth per lease", "B", ("<=", 1024.0)),
    ("max_node_bytes_per_lease", "largest RSS growth per lease, any node", "B", None),
]


def w6_table(summary: dict[str, dict[str, Any]], scales: list[int]) -> str:
    """W6 per scale (columns), then the slopes between consecutive scales."""
    labs = [w6_label(n) for n in scales if f"w6_{w6_label(n)}_leases" in summary]
    if not labs:
        return ""
    rows = [
        "| W6 (TTL 30 s) | " + " | ".join(f"{lab} leases" for lab in labs) + " | goal |",
        "|---" * (len(labs) + 2) + "|",
    ]
    for suffix, label, unit, goal in W6_ROWS:
        cells = []
        for lab in labs:
            s = summary.get(f"w6_{lab}_{suffix}")
            v = None if s is None else s["median"]
            cell = fmt(v, unit) + (f" {unit}" if unit and v is not None else "")
            if goal is not None and v is not None and meets(v, *goal) == "NO":
                cell += " (NO)"
            cells.append(cell)
        g = f"{goal[0]} {fmt(goal[1], unit)}{f' {unit}' if unit else ''}" if goal else ""
        rows.append(f"| {label} | " + " | ".join(cells) + f" | {g} |")
    slopes = []
    for a, b in itertools.pairwise(labs):
        pre = f"w6_slope_{a}_{b}"
        vals = [summary.get(f"{pre}_{k}", {}).get("median") for k in _SLOPE_KEYS]
        if any(v is not None for v in vals):
            slopes.append(
                f"| {a} -> {b} | {fmt(vals[0], 'B')} B | {fmt(vals[1], '%')} | "
                f"{fmt(vals[2], '%')} |"
            )
    if slopes:
        rows += [
            "",
            "| W6 slope | leader RSS per extra lease | cluster CPU per extra 1k leases "
            "(% core) | leader CPU per extra 1k leases (% core) |",
            "|---|---|---|---|",
            *slopes,
        ]
    return "\n".join(rows)


_SLOPE_KEYS = (
    "leader_bytes_per_lease",
    "cluster_cpu_pct_per_1k_leases",
    "leader_cpu_pct_per_1k_leases",
)


# ---------------------------------------------------------------------------------- W4
def _acquire_attempt(channel: grpc.Channel) -> Callable[[str], bool]:
    """One raftlease acquisition of a fresh name (the W4 probe's attempt)."""
    stub = lease_pb2_grpc.LeaseStub(channel)

    def attempt(name: str) -> bool:
        request = lease_pb2.AcquireRequest(
            name=name, holder="w4", ttl_ms=10_000, wait_ms=0, request_id=uuid.uuid4().hex
        )
        return bool(stub.Acquire(request, timeout=0.5).acquired)

    return attempt


class _Prober:
    """Threads, one per endpoint, each trying an acquisition every ~5 ms until one succeeds.
    ``make_attempt(channel)`` builds one endpoint's attempt (default: raftlease's Acquire;
    bench/etcd/sidebyside.py gives etcd's)."""

    def __init__(
        self,
        endpoints: list[str],
        make_attempt: Callable[[grpc.Channel], Callable[[str], bool]] = _acquire_attempt,
    ) -> None:
        self.endpoints = endpoints
        self.channels = [grpc.insecure_channel(e) for e in endpoints]
        self.attempts = [make_attempt(ch) for ch in self.channels]
        for ch in self.channels:
            with contextlib.suppress(grpc.FutureTimeoutError):
                grpc.channel_ready_future(ch).result(timeout=2)

    def close(self) -> None:
        for ch in self.channels:
            ch.close()

    def probe(self, trial: str, t_kill: float, timeout: float = 10.0) -> tuple[float, str]:
        done = threading.Event()
        won: list[tuple[float, str]] = []
        lock = threading.Lock()

        def worker(i: int) -> None:
            attempt = self.attempts[i]
            name = f"w4-{trial}-{i}"
            while not done.is_set() and time.monotonic() - t_kill < timeout:
                try:
                    if attempt(name):
                        t = time.monotonic()
                        with lock:
                            won.append((t, self.endpoints[i]))
                        done.set()
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.005)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(self.attempts))]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        if not won:
            return float("inf"), ""
        t, ep = min(won)
        return t - t_kill, ep


def run_w4(o: argparse.Namespace) -> dict[str, Any]:
    trials = o.w4_trials or (5 if o.quick else 30)
    c, leader = fresh_cluster()
    times: list[float] = []
    detail: list[dict[str, Any]] = []
    bg = Background()
    with c:
        prober = _Prober(c.endpoints)
        try:
            for t in range(trials):
                leader = c.wait_stable(30, settle=1.0)
                time.sleep(0.2)
                t_kill = time.monotonic()
                wall_kill = time.time()
                c.kill(leader)
                dt_s, ep = prober.probe(f"{t}-{uuid.uuid4().hex[:4]}", t_kill)
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
                log(f"  W4 trial {t + 1}/{trials}: killed {leader}, acquire after {dt_s:.3f}s")
                c.start_node(leader)
        finally:
            prober.close()
        changes = len(c.leader_changes_in_logs()) - 1
    finite = [x for x in times if x != float("inf")]
    el = [d["elected_after_s"] for d in detail if d["elected_after_s"] is not None]
    served = [d["s"] - d["elected_after_s"] for d in detail if d["elected_after_s"] is not None]
    return {
        "w4_elected_after_median_s": statistics.median(el) if el else None,
        "w4_elected_after_max_s": max(el) if el else None,
        "w4_served_after_election_median_s": statistics.median(served) if served else None,
        "w4_machine_busy_pct": bg.busy_pct(),
        "w4_failover_median_s": statistics.median(times),
        "w4_failover_max_s": max(times),
        "w4_failover_min_s": min(finite) if finite else None,
        "w4_failover_p90_s": pct(times, 0.9),
        "w4_trials": len(times),
        "w4_timeouts": len(times) - len(finite),
        "w4_elections": changes,
        "w4_trial_s": times,
        "w4_detail": detail,
    }


# ---------------------------------------------------------------------------------- W5
def run_w5(o: argparse.Namespace) -> dict[str, Any]:
    window = 10.0 if o.quick else 30.0
    c, leader = fresh_cluster()
    with c:
        time.sleep(3.0)
        bg = Background()
        total, per = cpu_window(c, window)
        busy = bg.busy_pct() - bg.self_pct()
    return {
        "w5_background_cpu_pct": max(0.0, busy - total),
        "w5_idle_cluster_cpu_pct": total,
        "w5_idle_leader_cpu_pct": per.get(leader),
        "w5_idle_follower_cpu_pct": statistics.fmean(v for k, v in per.items() if k != leader),
    }


# ---------------------------------------------------------------------------------- W7
def run_w7(o: argparse.Namespace) -> dict[str, Any]:
    dur = o.w7_seconds
    # bench/leasewatch.py in every node: each lapse next to the GC pauses and slow fsyncs
    watch = Path(tempfile.mkdtemp(prefix="raftlease-leasewatch-"))
    c, leader0 = fresh_cluster(
        {f"n{i}": {"RAFTLEASE_BENCH_LEASEWATCH": str(watch / f"n{i}.json")} for i in (1, 2, 3)}
    )
    changes: list[dict[str, Any]] = []
    with c:
        stop = threading.Event()
        res: dict[str, Any] = {}

        def load() -> None:
            try:
                res["w2"] = loadgen(
                    [
                        "w2",
                        "--target",
                        c.nodes[leader0].address,
                        "--endpoints",  # W7 follows a new leader (W2 keeps to the first)
                        ",".join(c.endpoints),
                        "--clients",
                        "16",
                        "--duration",
                        str(dur),
                        "--warmup",
                        "0",
                    ],
                    dur + 120,
                )
            except Exception as e:
                res["error"] = str(e)
            finally:
                stop.set()

        th = threading.Thread(target=load)
        th.start()
        seen = (leader0, None)
        t0 = time.monotonic()
        while not stop.wait(0.5):
            for nid in c.nodes:
                st = c.status(nid, timeout=0.3)
                if st is not None and st.leader_id == nid:
                    if seen[0] != nid or (seen[1] is not None and seen[1] != st.term):
                        changes.append({"t": time.monotonic() - t0, "leader": nid, "term": st.term})
                    seen = (nid, st.term)
                    break
        th.join()
        log_changes = len(c.leader_changes_in_logs()) - 1
        lapses = lease_lapses_in_logs(c)
    r = res.get("w2", {})
    return {
        "w7_leader_lease_lapses": len(lapses),
        "w7_lapse_ms_max": max((ms for _n, _t, ms in lapses), default=0.0),
        "w7_leader_changes": max(len(changes), log_changes),
        "w7_leader_changes_per_hour": max(len(changes), log_changes) * 3600.0 / dur,
        "w7_changes_seen_by_status": changes,
        "w7_changes_in_logs": log_changes,
        "w7_acquisitions_per_s": r.get("per_s"),
        "w7_client_retargets": r.get("retargets"),
        **{f"w7_{k}": v for k, v in _w6_stalls(watch).items()},
        "w7_errors": r.get("errors"),
        "w7_seconds": dur,
        "w7_error": res.get("error"),
    }


# ---------------------------------------------------------------------------------- W7 burst
def run_w7burst(o: argparse.Namespace) -> dict[str, Any]:
    """Issue 15: 10,000 acquisitions (TTL 30 s) from 16 clients as fast as they go, every
    lease kept alive on one KeepAlive stream, then 10 s more of that stream. Counts the
    leader's lease lapses and its ack delays (bench/leasewatch.py, on every node) and the
    leader changes (servers' logs)."""
    leases = 2000 if o.quick else o.burst_leases
    watch = Path(tempfile.mkdtemp(prefix="raftlease-leasewatch-"))
    env_for = {
        f"n{i}": {"RAFTLEASE_BENCH_LEASEWATCH": str(watch / f"n{i}.json")} for i in (1, 2, 3)
    }
    c, leader = fresh_cluster(env_for)
    with c:
        cpu0 = c.cpu_snapshot()
        r = loadgen(
            [
                "burst",
                "--target",
                c.nodes[leader].address,
                "--endpoints",  # follows a new leader, as W7's load does
                ",".join(c.endpoints),
                "--clients",
                "16",
                "--leases",
                str(leases),
                "--ttl-ms",
                "30000",
                "--hold-s",
                str(o.burst_hold_s),
            ],
            600,
        )
        cpu1 = c.cpu_snapshot()
        changes = len(c.leader_changes_in_logs()) - 1
    # The nodes wrote their figures when they stopped.
    figs = {}
    for nid in c.nodes:
        with contextlib.suppress(OSError, ValueError):
            figs[nid] = json.loads((watch / f"{nid}.json").read_text())
    shutil.rmtree(watch, ignore_errors=True)
    lead = figs.get(leader, {})
    lapses = sum(f.get("lapses", 0) for f in figs.values())
    lapse_s = [x for f in figs.values() for x in f.get("lapse_s", [])]
    ka = r["keepalive"]

    def fig(series: str, q: str) -> float | None:
        v = lead.get(series, {}).get(q)
        return float(v) if v is not None else None

    return {
        "w7b_leader_lease_lapses": lapses,
        "w7b_lapse_ms_total": 1000.0 * sum(lapse_s),
        "w7b_lapse_ms_max": 1000.0 * max(lapse_s) if lapse_s else 0.0,
        "w7b_leader_changes": changes,
        "w7b_acquisitions_per_s": r["acquisitions_per_s"],
        "w7b_burst_s": r["burst_s"],
        "w7b_granted": r["granted"],
        "w7b_acquire_p50_ms": r["acquire_p50_ms"],
        "w7b_acquire_p99_ms": r["acquire_p99_ms"],
        "w7b_errors": sum(r["errors"].values()),
        "w7b_renewals_ok": ka["renewed"],
        "w7b_renewals_refused": ka["refused"],
        "w7b_ack_at_step_p50_ms": fig("ack_at_step_ms", "p50"),
        "w7b_ack_at_step_p99_ms": fig("ack_at_step_ms", "p99"),
        "w7b_ack_at_step_max_ms": fig("ack_at_step_ms", "max"),
        "w7b_ack_at_receive_p99_ms": fig("ack_at_receive_ms", "p99"),
        "w7b_send_lag_p99_ms": fig("send_lag_ms", "p99"),
        "w7b_send_lag_max_ms": fig("send_lag_ms", "max"),
        "w7b_ticks_replayed_p99": fig("ticks_replayed", "p99"),
        "w7b_leader_loop_lag_p99_ms": fig("loop_lag_ms", "p99"),
        "w7b_leader_loop_lag_max_ms": fig("loop_lag_ms", "max"),
        "w7b_follower_turnaround_p99_ms": max(
            (f.get("turnaround_ms", {}).get("p99", 0.0) for n, f in figs.items() if n != leader),
            default=None,
        ),
        "w7b_leader_cpu_pct": 100.0 * (cpu1[leader] - cpu0[leader]) / r["wall_s"],
        "w7b_cluster_cpu_pct": 100.0
        * sum(cpu1[k] - cpu0[k] for k in cpu1 if k in cpu0)
        / r["wall_s"],
        "w7b_client_cpu_pct": 100.0 * r["client_cpu_s"] / r["wall_s"],
        "w7b_detail": {"loadgen": r, "leasewatch": figs},
    }


# ---------------------------------------------------------------------------------- profile
def _thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread name (from /proc/PID/task/*/comm and psutil)."""
    out: dict[str, float] = {}
    p = psutil.Process(pid)
    for th in p.threads():
        try:
            name = Path(f"/proc/{pid}/task/{th.id}/comm").read_text().strip()
        except OSError:
            name = "?"
        key = "main (asyncio loop)" if th.id == pid else name
        out[key] = out.get(key, 0.0) + th.user_time + th.system_time
    return out


def _pyspy() -> str | None:
    cand = Path(PY).parent / "py-spy"
    if cand.exists():
        return str(cand)
    return shutil.which("py-spy")


def _spy_record(spy: str, pid: int, raw: Path, seconds: float, rate: int, native: bool) -> None:
    args = [spy, "record", "--pid", str(pid), "--rate", str(rate), "--duration"]
    args += [str(int(seconds)), "--gil", "--nolineno", "--format", "raw", "-o", str(raw)]
    # --native unwinds C frames too (cygrpc, libc syscalls, upb) but must pause the process
    # for each sample, so it samples less often; the Python-only pass runs non-blocking.
    args += ["--native"] if native else ["--nonblocking"]
    subprocess.run(args, capture_output=True, check=False, timeout=seconds + 60)


def _stack_report(raw: Path, title: str, svg: Path) -> dict[str, Any]:
    stacks = analyze.read_collapsed(raw)
    total, by_self, by_total = analyze.top_functions(stacks, 20)
    analyze.flame_svg(stacks, title, svg)
    return {
        "samples": total,
        "top_self": by_self,
        "top_total": by_total,
        "self_by_category": analyze.self_by_category(stacks),
        "flamegraph": str(svg.relative_to(REPO)),
    }


def profile_under(
    o: argparse.Namespace,
    label: str,
    start_load: Any,
    seconds: float,
    outdir: Path,
    rate: int,
    modes: tuple[str, ...] = ("python", "native"),
) -> dict[str, Any]:
    """Start a cluster, start load via start_load(cluster, leader) -> stop callable, record
    the leader with py-spy (GIL-holding samples only, i.e. where the process spends its
    Python-side CPU; once Python-only, once with native frames) and per-thread CPU."""
    wait_for_quiet()
    spy = _pyspy()
    c, leader = fresh_cluster()
    res: dict[str, Any] = {}
    with c:
        pid = c.nodes[leader].proc.pid  # type: ignore[union-attr]
        stop_load = start_load(c, leader)
        try:
            time.sleep(3.0)
            th0 = _thread_cpu(pid)
            t0 = time.monotonic()
            if spy is not None:
                for mode in modes:
                    raw = outdir / f"{label}-leader-{mode}.collapsed.txt"
                    _spy_record(spy, pid, raw, seconds, rate, mode == "native")
                    if raw.exists():
                        res[mode] = _stack_report(
                            raw,
                            f"raftlease leader under {label.upper()} ({mode} stacks, GIL held)",
                            outdir / f"{label}-leader-{mode}.svg",
                        )
            else:
                time.sleep(seconds)
                res["note"] = "py-spy not installed (pip install py-spy into .venv)"
            th1 = _thread_cpu(pid)
            wall = time.monotonic() - t0
        finally:
            stop_load()
    threads = {k: 100.0 * (th1.get(k, 0.0) - th0.get(k, 0.0)) / wall for k in th1}
    res["leader_thread_cpu_pct"] = dict(sorted(threads.items(), key=lambda kv: -kv[1]))
    return res


def run_profile(o: argparse.Namespace, outdir: Path) -> dict[str, Any]:
    outdir.mkdir(parents=True, exist_ok=True)
    secs = 8.0 if o.quick else 15.0
    prof: dict[str, Any] = {}

    def w2_load(c: BenchCluster, leader: str) -> Any:
        p = subprocess.Popen(
            [
                *nice_prefix(BenchCluster.nice),
                PY,
                str(BENCH_DIR / "loadgen.py"),
                "w2",
                "--target",
                c.nodes[leader].address,
                "--clients",
                "16",
                "--duration",
                str(2 * secs + 8),
                "--warmup",
                "1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=str(REPO),
            **popen_kw(),
        )

        def stop() -> None:
            p.terminate()
            p.wait()

        return stop

    def w3_load(c: BenchCluster, leader: str) -> Any:
        p = subprocess.Popen(
            [
                *nice_prefix(BenchCluster.nice),
                PY,
                str(BENCH_DIR / "loadgen.py"),
                "keepalive",
                "--target",
                c.nodes[leader].address,
                "--endpoints",
                ",".join(c.endpoints),
                "--leases",
                "1000",
                "--mode",
                o.keepalive_mode,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=str(REPO),
            **popen_kw(),
        )
        assert p.stdout is not None
        p.stdout.readline()  # READY
        time.sleep(1.0)

        def stop() -> None:
            p.terminate()
            p.wait()

        return stop

    log("profile: leader under W2 (py-spy)")
    prof["w2"] = profile_under(o, "w2", w2_load, secs, outdir, 250)
    log("profile: leader under W3 (py-spy)")
    prof["w3"] = profile_under(o, "w3", w3_load, max(secs, 20.0), outdir, 250)
    log("profile: idle leader (W5, py-spy)")
    prof["w5"] = profile_under(
        o, "w5", lambda c, leader: lambda: None, max(secs, 20.0), outdir, 500
    )
    log("profile: W1 per-acquire timeline (probes on every node)")
    prof["w1_timeline"] = run_w1_timeline(o, outdir)
    log("profile: W2 batching and fsync (probes on every node)")
    prof["w2_pipeline"] = run_w2_pipeline(o, outdir)
    return prof


def run_w2_pipeline(o: argparse.Namespace, outdir: Path) -> dict[str, Any]:
    """W2 with probes on every node: batching and fsync figures per node."""
    wait_for_quiet()
    tdir = outdir / "traces-w2"
    tdir.mkdir(parents=True, exist_ok=True)
    env_for = {
        nid: {"RAFTLEASE_BENCH_TRACE": str(tdir / f"{nid}.jsonl")} for nid in ("n1", "n2", "n3")
    }
    dur, warm = (6.0, 2.0) if o.quick else (10.0, 2.0)
    c, leader = fresh_cluster(env_for)
    with c:
        t_start = time.monotonic()
        r = loadgen(
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
            120,
        )
        c.stop()
    files = sorted(tdir.glob("n*.jsonl"))
    stats = analyze.pipeline_stats(files, t_start + warm + 1.0, t_start + warm + dur - 0.5)
    return {"leader": leader, "acquisitions_per_s_with_probes": r["per_s"], "nodes": stats}


def run_w1_timeline(o: argparse.Namespace, outdir: Path) -> dict[str, Any]:
    """W1 with probes on every node: where the time of one acquire goes."""
    wait_for_quiet()
    tdir = outdir / "traces"
    tdir.mkdir(parents=True, exist_ok=True)
    env_for = {
        nid: {"RAFTLEASE_BENCH_TRACE": str(tdir / f"{nid}.jsonl")} for nid in ("n1", "n2", "n3")
    }
    c, leader = fresh_cluster(env_for)
    with c:
        r = loadgen(
            [
                "w1",
                "--target",
                c.nodes[leader].address,
                "--n",
                "300" if o.quick else "1000",
                "--warmup",
                "100",
                "--trace",
            ],
            600,
        )
        c.stop()  # SIGTERM: the probes write their files at exit
    files = sorted(tdir.glob("n*.jsonl"))
    tl = analyze.acquire_timeline(leader, files, [tuple(x) for x in r["trace"]])  # type: ignore[misc]
    tl["acquire_p50_ms_with_probes"] = pct(r["acquire_ms"], 0.5)
    tl["leader"] = leader
    return tl


# ---------------------------------------------------------------------------------- report
def fmt(v: Any, unit: str) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and v != v:
        return "nan"
    if unit in ("/s", "B"):
        return f"{v:,.0f}"
    if unit == "s":
        return f"{v:.3f}"
    if unit in ("", "x") and float(v).is_integer():
        return f"{int(v)}"
    return f"{v:.2f}"


def meets(v: float | None, op: str, goal: float) -> str:
    if v is None:
        return "-"
    ok = v <= goal if op == "<=" else v >= goal
    return "yes" if ok else "NO"


LABELS = {
    "w1_acquire_p50_ms": "W1 acquire p50 (1 client, acquire+release)",
    "w1_acquire_p99_ms": "W1 acquire p99",
    "w2_acquisitions_per_s": "W2 acquisitions/s (16 clients, distinct names)",
    "w3_cluster_cpu_pct": "W3 cluster CPU, 1,000 leases kept alive",
    "w4_failover_median_s": "W4 kill leader -> next acquire, median",
    "w4_failover_max_s": "W4 kill leader -> next acquire, max",
    "w5_idle_cluster_cpu_pct": "W5 idle 3-node cluster CPU",
    "w6_leases_lost": "W6 leases lost (100 clients, TTL 30 s; all scales)",
    "w6_leader_lease_lapses": "W6 leader-lease lapses (all scales)",
    "w6_leader_changes": "W6 leader changes (all scales)",
    "w6_leader_bytes_per_lease": "W6 leader RSS growth per lease (largest scale)",
    "w6_leader_bytes_per_extra_lease": "W6 leader RSS per extra lease (two largest scales)",
    "w6_keepalive_p99_ms": "W6 keepalive p99, batch write -> answer (largest scale)",
    "w7_leader_changes": "W7 leader changes in 10 min under W2 load",
    "w7_leader_lease_lapses": "W7 leader-lease lapses in 10 min under W2 load",
    "w7b_leader_lease_lapses": "W7 burst: leader-lease lapses (10k acquisitions, 16 clients)",
    "w7b_leader_changes": "W7 burst: leader changes",
}


def table(summary: dict[str, dict[str, Any]]) -> str:
    rows = [
        "| workload / figure | median | min | max | goal | meets | etcd 3.4 default |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, (unit, op, goal, etcd) in GOALS.items():
        s = summary.get(key)
        if s is None:
            continue
        u = f" {unit}" if unit else ""
        rows.append(
            f"| {LABELS[key]} | {fmt(s['median'], unit)}{u} | {fmt(s['min'], unit)} | "
            f"{fmt(s['max'], unit)} | {op} {fmt(goal, unit)}{u} | {meets(s['median'], op, goal)}"
            f" | {etcd} |"
        )
    return "\n".join(rows)


EXTRA_UNITS = {
    "_messages_per_s": "msg/s",  # (before "_per_s": a few messages a second, 2 decimals)
    "_ms": "ms",
    "_pct": "% core",
    "_per_s": "/s",
    "_s": "s",
    "_mib": "MiB",
}


def extra_table(summary: dict[str, dict[str, Any]]) -> str:
    rows = ["| figure | median | min | max |", "|---|---|---|---|"]
    for key, s in summary.items():
        if key in GOALS or s["median"] is None or not isinstance(s["median"], int | float):
            continue
        unit = next((u for suf, u in EXTRA_UNITS.items() if key.endswith(suf)), "")
        rows.append(
            f"| {key} | {fmt(s['median'], unit)} {unit} | {fmt(s['min'], unit)} | "
            f"{fmt(s['max'], unit)} |"
        )
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 run each, short windows")
    ap.add_argument("--runs", type=int, default=None, help="runs per workload (default 3)")
    ap.add_argument("--only", default="", help="comma list of w1,w2,w3,w4,w5,w6,w7b")
    ap.add_argument("--burst-leases", type=int, default=10_000, help="W7 burst: acquisitions")
    ap.add_argument("--burst-hold-s", type=float, default=10.0, help="W7 burst: keepalive after")
    ap.add_argument("--w7", action="store_true", help="also the 10-minute stability run (W7)")
    ap.add_argument("--w7-seconds", type=float, default=600.0)
    ap.add_argument("--w4-trials", type=int, default=0)
    ap.add_argument("--profile", action="store_true", help="py-spy + W1 timeline (see docs)")
    ap.add_argument(
        "--keepalive-mode",
        choices=["client", "stream", "renew"],
        default="client",
        help="W3 only: client = ONE LeaseClient, the shipped keepalive (one stream, batched "
        "renewals); stream = a KeepAlive stream per lease (the old shape); renew = unary Renew. "
        "With --with-etcd, etcd's W3 is one shared LeaseKeepAlive stream (clientv3's shape) "
        "for client, a stream per lease otherwise",
    )
    ap.add_argument(
        "--w3-both",
        action="store_true",
        help="W3: also the old shape (a stream per lease) on a fresh cluster, reported as "
        "w3_stream_* (w3_stream_cluster_cpu_pct); on both sides with --with-etcd",
    )
    ap.add_argument(
        "--w6-leases",
        default="",
        help="W6 scales, comma list (default 1000,10000,100000; --quick: 1000,10000)",
    )
    ap.add_argument("--w6-clients", type=int, default=100, help="W6 clients (streams)")
    ap.add_argument(
        "--w6-hold",
        type=float,
        default=None,
        help="W6 measured hold after the acquisitions, s (default 60; --quick 20; issue: 600)",
    )
    ap.add_argument(
        "--w6-procs", type=int, default=1, help="W6 load generator processes sharing the clients"
    )
    ap.add_argument(
        "--w6-watch",
        action="store_true",
        help="W6: run bench/leasewatch.py in every node (GC pauses, slow fsyncs, loop lag)",
    )
    ap.add_argument(
        "--w6-concurrency", type=int, default=64, help="W6 acquisitions in flight (all procs)"
    )
    ap.add_argument(
        "--w6-runs", type=int, default=1, help="W6 runs (each scale a fresh cluster; default 1)"
    )
    ap.add_argument(
        "--with-etcd",
        action="store_true",
        help="side by side: W1-W5 on raftlease and on a local 3-member etcd 3.4 cluster, "
        "interleaved, with ratios (bench/etcd/sidebyside.py; needs `etcd` on PATH); W6 and "
        "W7b too when --only names them (each W6 scale on both sides; --w6-* and --burst-* "
        "apply to both)",
    )
    ap.add_argument(
        "--no-quiet-wait",
        action="store_true",
        help="do not wait (up to 60 s) for other processes to go quiet before each run",
    )
    ap.add_argument(
        "--quiet-max-wait", type=float, default=30.0, help="longest wait for a quiet machine (s)"
    )
    ap.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run servers, load generators and this driver at this niceness (e.g. -10 on a "
        "shared machine, as root: emulates a dedicated box; the JSON records it)",
    )
    ap.add_argument("--out", default="", help="JSON path (default bench/results/<ts>.json)")
    ap.add_argument("--whatif", default="", help="experiments from bench/whatif.py, e.g. asyncio")
    ap.add_argument(
        "--set", default="", help="NodeConfig overrides, e.g. tick_s=0.01,heartbeat_ticks=5"
    )
    o = ap.parse_args()
    if o.no_quiet_wait:
        QUIET["enabled"] = 0.0
    QUIET["max_wait_s"] = o.quiet_max_wait
    if o.nice:
        os.nice(o.nice)
        BenchCluster.nice = o.nice
    if o.whatif:
        NODE_ENV["RAFTLEASE_BENCH_WHATIF"] = o.whatif
    for kv in filter(None, o.set.split(",")):
        k, v = kv.split("=", 1)
        NODE_OVERRIDES[k.strip()] = float(v) if "." in v else int(v)
    runs = o.runs or (1 if o.quick else 3)
    only = {w.strip() for w in o.only.split(",") if w.strip()}
    if o.profile and not only:
        selected: list[str] = []
    else:
        selected = [w for w in ("w1", "w2", "w3", "w4", "w5", "w6") if not only or w in only]
        if "w7b" in only:  # opt-in, like W7
            selected.append("w7b")
    if "w7" in only:
        o.w7 = True
    if o.with_etcd:
        from etcd import sidebyside

        sidebyside.main(o, selected, runs, sys.modules[__name__])
        return
    ts = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out_path = Path(o.out) if o.out else RESULTS / f"{ts}.json"
    BenchCluster.log_archive = RESULTS / f"{ts}-logs"
    facts = machine_facts()
    cmd = " ".join([Path(PY).name, *sys.argv])
    w6_note = f" (W6: {o.w6_runs})" if "w6" in selected else ""
    log(
        f"raftlease bench: {cmd}; {runs} run(s){w6_note} of {selected or 'none'}; "
        f"results -> {out_path}"
    )
    per_run: dict[str, list[dict[str, Any]]] = {}
    fns = {
        "w1": run_w1,
        "w2": run_w2,
        "w3": run_w3,
        "w4": run_w4,
        "w5": run_w5,
        "w6": run_w6,
        "w7b": run_w7burst,
    }
    t_all = time.monotonic()
    for w in selected:
        n_runs = o.w6_runs if w == "w6" else runs
        for i in range(n_runs):
            log(f"{w.upper()} run {i + 1}/{n_runs}")
            wait_for_quiet()
            BenchCluster.label = f"{w}-run{i + 1}"
            try:
                r = fns[w](o)
            except Exception as e:  # a broken run is reported, not fatal to the others
                log(f"{w.upper()} run {i + 1} failed: {e}")
                r = {f"{w}_error": str(e)}
            per_run.setdefault(w, []).append(r)
            brief = {k: round(v, 3) for k, v in r.items() if isinstance(v, float)}
            log(f"  {brief}")
    if o.w7:
        log(f"W7: {o.w7_seconds:.0f} s of W2 load, counting leader changes")
        per_run["w7"] = [run_w7(o)]
    profile = None
    if o.profile:
        profile = run_profile(o, RESULTS / f"{ts}-profile")

    summary: dict[str, dict[str, Any]] = {}
    for _w, rs in per_run.items():
        keys = {k for r in rs for k, v in r.items() if isinstance(v, int | float)}
        for k in sorted(keys):
            summary[k] = summarize([r[k] for r in rs if isinstance(r.get(k), int | float)])
    result = {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": cmd,
        "quick": o.quick,
        "runs": runs,
        "machine": facts,
        "keepalive_mode": o.keepalive_mode,
        "w3_both": o.w3_both,
        "w6": {
            "scales": w6_scales(o),
            "clients": o.w6_clients,
            "hold_s": w6_hold(o),
            "procs": o.w6_procs,
            "ttl_ms": W6_TTL_MS,
        },
        "whatif": o.whatif,
        "nice": o.nice,
        "node_overrides": NODE_OVERRIDES,
        "summary": summary,
        "per_run": per_run,
        "profile": profile,
        "elapsed_s": time.monotonic() - t_all,
    }
    out_path.write_text(json.dumps(result, indent=1, default=str))
    m = facts
    print()
    print(
        f"raftlease bench {result['date']} — {m['cpu_model']}, {m['cores_logical']} cores, "
        f"Python {m['python']}, grpcio {m['grpcio']}, commit {m['git_commit'][:10]}"
        f"{' (+local changes)' if m['raftlease_dirty'] else ''}"
    )
    print(f"command: {cmd}   runs per workload: {runs}{w6_note}")
    if o.nice:
        print(f"processes ran at niceness {o.nice} (shared machine; background load is recorded)")
    if o.whatif or NODE_OVERRIDES:
        print(f"WHAT-IF run: experiments {o.whatif or '-'}, node overrides {NODE_OVERRIDES}")
    if "w3" in per_run:
        print(f"W3 keepalive shape: {W3_SHAPES[o.keepalive_mode]}")
        if o.w3_both and o.keepalive_mode != "stream":
            print(f"W3 old shape (w3_stream_*): {W3_SHAPES['stream']}")
    print()
    print(table(summary))
    w6t = w6_table(summary, w6_scales(o)) if "w6" in per_run else ""
    if w6t:
        print()
        print(w6t)
        for r in per_run["w6"]:
            for n in w6_scales(o):
                lab = w6_label(n)
                for what in (
                    "lost_reasons",
                    "stream_failure_codes",
                    "stream_failure_details",
                    "refused",
                    "refused_in_hold",
                    "acquire_errors",
                    "error",
                ):
                    v = r.get(f"w6_{lab}_{what}")
                    if v:
                        print(f"W6 {lab} {what.replace('_', ' ')}: {v}")
    print()
    print(extra_table(summary))
    if profile:
        print()
        print(render_profile(profile))
    print()
    print(f"results: {out_path}")


def render_profile(p: dict[str, Any]) -> str:
    lines: list[str] = []
    for label in ("w2", "w3", "w5"):
        r = p.get(label)
        if not r:
            continue
        lines.append(f"### Leader under {label.upper()}")
        lines.append("")
        lines.append(
            "Leader CPU by thread (% of one core): "
            + ", ".join(f"{k} {v:.1f}" for k, v in r["leader_thread_cpu_pct"].items() if v >= 0.05)
        )
        lines.append("")
        for mode in ("python", "native"):
            m = r.get(mode)
            if not m:
                continue
            lines.append(
                f"{mode} stacks: {m['samples']} GIL-holding samples; flame graph {m['flamegraph']}"
            )
            lines.append("")
            lines.append("| self % | total % | function (by self time) |")
            lines.append("|---|---|---|")
            for f, s_, t in m["top_self"][:15]:
                lines.append(f"| {s_:.1f} | {t:.1f} | `{f}` |")
            lines.append("")
            lines.append("| total % | self % | function (by total time) |")
            lines.append("|---|---|---|")
            for f, s_, t in m["top_total"][:15]:
                lines.append(f"| {t:.1f} | {s_:.1f} | `{f}` |")
            lines.append("")
            lines.append("| self % | area |")
            lines.append("|---|---|")
            for k, v in m["self_by_category"]:
                lines.append(f"| {v:.1f} | {k} |")
            lines.append("")
    pl = p.get("w2_pipeline")
    if pl and pl.get("nodes"):
        lines.append(
            f"### W2 pipeline per node (leader {pl['leader']}; "
            f"{pl['acquisitions_per_s_with_probes']:.0f} acquisitions/s with probes)"
        )
        lines.append("")
        keys = list(next(iter(pl["nodes"].values())).keys())
        lines.append("| node | " + " | ".join(keys) + " |")
        lines.append("|---" * (len(keys) + 1) + "|")
        for nid, st in sorted(pl["nodes"].items()):
            name = f"{nid} (leader)" if nid == pl["leader"] else nid
            lines.append(f"| {name} | " + " | ".join(f"{st[k]:.2f}" for k in keys) + " |")
        lines.append("")
    tl = p.get("w1_timeline")
    if tl and tl.get("median_ms"):
        lines.append(f"### One W1 acquire, step by step ({tl['samples']} acquires, median ms)")
        lines.append("")
        lines.append("| step | median ms | mean ms |")
        lines.append("|---|---|---|")
        for k, v in tl["median_ms"].items():
            lines.append(f"| {k} | {v:.3f} | {tl['mean_ms'][k]:.3f} |")
    return "\n".join(lines)


def _sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # unwinds the with-blocks, so every cluster is stopped


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    signal.signal(signal.SIGTERM, _sigterm)
    main()
