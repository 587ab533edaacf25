"""A local 3-node raftlease cluster of real processes, for the benchmarks.

``BenchCluster`` is a ``raftlease.testing.LocalCluster`` in a fresh temp dir: each node is a
separate ``python`` process with its own data dir (real SQLite, real fsync) on 127.0.0.1,
started with ``python -m raftlease serve``, or through ``bench/_serve.py`` (the same command
line, plus probes, cProfile, what-if patches and NodeConfig overrides) when a node is traced,
profiled or patched or the cluster has overrides. Added here: per-node CPU and RSS (psutil),
a wait for a stable leader, leader changes from the logs, and the log archive.

Everything here is synchronous and runs in the benchmark driver.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from raftlease.testing.local import DEFAULT_LAUNCHER, LocalCluster

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent


def nice_prefix(nice: int) -> list[str]:
    """``nice -n N`` as a command prefix. (Not preexec_fn: forking a process that runs gRPC
    threads and then running Python code in the child can hang the child before exec.)"""
    exe = shutil.which("nice")
    return [exe, "-n", str(nice)] if nice and exe else []


class BenchCluster(LocalCluster):
    """Start, kill, restart and stop a fresh local cluster. Use as a context manager."""

    # Niceness for the server processes (see bench/run.py --nice); 0 = inherit.
    nice = 0

    # When set, the server logs of a cluster that saw more than one election are copied here
    # (one sub-folder per cluster) before its temp dir is removed.
    log_archive: Path | None = None
    label = ""

    def __init__(
        self,
        n: int = 3,
        *,
        cluster_id: str = "bench",
        overrides: dict[str, Any] | None = None,
        keep_dir: bool = False,
        log_level: str = "INFO",
    ) -> None:
        super().__init__(
            tempfile.mkdtemp(prefix="raftlease-bench-"),
            n,
            cluster_id=cluster_id,
            env={
                "RAFTLEASE_LOG_LEVEL": log_level,
                "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            },
            data_dir="{id}/data",
            log_file="{id}/server.log",
            cwd=REPO,
            new_session=True,
            stop_grace=10.0,
        )
        self.keep_dir = keep_dir
        self.overrides = dict(overrides or {})
        self.env_extra: dict[str, dict[str, str]] = {nid: {} for nid in self.nodes}
        self._ps: dict[str, psutil.Process] = {}

    # ------------------------------------------------------------------ processes
    def _launcher(self, nid: str) -> list[str]:
        if self.env_extra[nid] or self.overrides:
            extra = ["--set", json.dumps(self.overrides)] if self.overrides else []
            launcher = [sys.executable, str(BENCH_DIR / "_serve.py"), *extra]
        else:
            launcher = list(DEFAULT_LAUNCHER)
        return nice_prefix(self.nice) + launcher

    def start_node(self, nid: str, env_extra: dict[str, str] | None = None) -> None:
        if env_extra is not None:
            self.env_extra[nid] = dict(env_extra)
        node = self.start(nid, env=self.env_extra[nid], launcher=self._launcher(nid))
        assert node.pid is not None
        self._ps[nid] = psutil.Process(node.pid)

    def start_nodes(self, env_for: dict[str, dict[str, str]] | None = None) -> None:
        for nid in self.nodes:
            self.start_node(nid, (env_for or {}).get(nid))

    def cleanup(self) -> None:
        if self.log_archive is not None and len(self.leader_changes_in_logs()) > 1:
            dest = self.log_archive / f"{self.label or 'cluster'}-{self.root.name}"
            dest.mkdir(parents=True, exist_ok=True)
            for nid, node in self.nodes.items():
                with contextlib.suppress(OSError):
                    shutil.copy(node.log_path, dest / f"{nid}.log")
        if not self.keep_dir:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> BenchCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            self.cleanup()

    # ------------------------------------------------------------------ queries
    def cpu_s(self, nid: str) -> float:
        """user+sys CPU seconds of the node's process (its own accounting, all threads)."""
        ps = self._ps.get(nid)
        if ps is None:
            return 0.0
        t = ps.cpu_times()
        return float(t.user + t.system)

    def rss(self, nid: str) -> int:
        ps = self._ps.get(nid)
        return int(ps.memory_info().rss) if ps is not None else 0

    def cpu_snapshot(self) -> dict[str, float]:
        return {nid: self.cpu_s(nid) for nid, node in self.nodes.items() if node.alive()}

    def wait_stable(self, timeout: float = 30.0, settle: float = 0.0) -> str:
        """Wait until every live node agrees on one leader and the leader sees every live
        peer reachable with lag 0; then wait ``settle`` s and check again. Returns the leader."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            lid = self._stable_leader()
            if lid is not None:
                if settle <= 0:
                    return lid
                time.sleep(settle)
                again = self._stable_leader()
                if again == lid:
                    return lid
                last = f"leader moved from {lid} to {again} while settling"
            else:
                last = "no stable leader"
            time.sleep(0.05)
        raise TimeoutError(f"cluster not stable after {timeout}s: {last} (logs in {self.root})")

    def _stable_leader(self) -> str | None:
        live = [nid for nid, node in self.nodes.items() if node.alive()]
        seen = set()
        lst = None
        for nid in live:
            st = self.status(nid)
            if st is None or not st.leader_id:
                return None
            seen.add(st.leader_id)
            if st.leader_id == nid:
                lst = st
        if len(seen) != 1 or lst is None:
            return None
        by_id = {n.id: n for n in lst.nodes}
        for nid in live:
            n = by_id.get(nid)
            if n is None or (nid != lst.node_id and (not n.reachable or n.lag != 0)):
                return None
        return lst.node_id

    def first_election_after(self, wall: float) -> float | None:
        """Wall-clock time of the first 'became leader' log line after ``wall`` (logging's
        asctime, millisecond resolution), or None."""
        import datetime as dt

        best = None
        for _nid, line in self.leader_changes_in_logs():
            try:
                stamp = dt.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            except ValueError:
                continue
            if stamp > wall and (best is None or stamp < best):
                best = stamp
        return best

    def leader_changes_in_logs(self) -> list[tuple[str, str]]:
        """(node, line) for every 'became leader at term' line in the server logs."""
        out = []
        for nid, node in self.nodes.items():
            for line in node.log_text().splitlines():
                if "became leader at term" in line:
                    out.append((nid, line))
        return out
