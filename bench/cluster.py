"""A local 3-node raftlease cluster of real processes, for the benchmarks.

Each node is a separate ``python`` process with its own fresh data dir (real SQLite, real
fsync) listening on 127.0.0.1. Nodes are started with the ``raftlease serve`` CLI when it
exists, else through ``bench/_serve.py`` (which calls ``raftlease.server.main_serve``). The
launcher is always used when a node must be traced or profiled with cProfile.

Everything here is synchronous and runs in the benchmark driver.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import psutil

from raftlease.v1 import cluster_pb2, cluster_pb2_grpc

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def cli_available() -> bool:
    """Does ``python -m raftlease serve`` exist (raftlease/cli.py with a serve command)?"""
    try:
        spec = importlib.util.find_spec("raftlease.cli")
    except (ImportError, ValueError):
        return False
    if spec is None or spec.origin is None:
        return False
    try:
        return "serve" in Path(spec.origin).read_text()
    except OSError:
        return False


@dataclass
class NodeProc:
    node_id: str
    address: str
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    ps: psutil.Process | None = None
    env_extra: dict[str, str] = field(default_factory=dict)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cpu_s(self) -> float:
        """user+sys CPU seconds of this process (its own accounting, all threads)."""
        if self.ps is None:
            return 0.0
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    def rss(self) -> int:
        return int(self.ps.memory_info().rss) if self.ps is not None else 0


def nice_prefix(nice: int) -> list[str]:
    """``nice -n N`` as a command prefix. (Not preexec_fn: forking a process that runs gRPC
    threads and then running Python code in the child can hang the child before exec.)"""
    exe = shutil.which("nice")
    return [exe, "-n", str(nice)] if nice and exe else []


class LocalCluster:
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
        use_cli: bool | None = None,
        keep_dir: bool = False,
        log_level: str = "INFO",
    ) -> None:
        self.cluster_id = cluster_id
        self.root = Path(tempfile.mkdtemp(prefix="raftlease-bench-"))
        self.keep_dir = keep_dir
        self.overrides = dict(overrides or {})
        self.use_cli = cli_available() if use_cli is None else use_cli
        self.log_level = log_level
        ports = free_ports(n)
        self.nodes: dict[str, NodeProc] = {}
        for i, port in enumerate(ports, start=1):
            nid = f"n{i}"
            d = self.root / nid
            self.nodes[nid] = NodeProc(nid, f"127.0.0.1:{port}", d / "data", d / "server.log")
        self.peers = {nid: np.address for nid, np in self.nodes.items()}
        self._channels: dict[str, grpc.Channel] = {}

    # ------------------------------------------------------------------ processes
    def _command(self, np: NodeProc) -> list[str]:
        launcher_needed = bool(np.env_extra) or bool(self.overrides) or not self.use_cli
        if launcher_needed:
            return [
                sys.executable,
                str(BENCH_DIR / "_serve.py"),
                np.node_id,
                np.address,
                ",".join(f"{k}={v}" for k, v in self.peers.items()),
                str(np.data_dir),
                self.cluster_id,
                repr(self.overrides),
            ]
        return [
            sys.executable,
            "-m",
            "raftlease",
            "serve",
            "--id",
            np.node_id,
            "--listen",
            np.address,
            "--peers",
            ",".join(f"{k}={v}" for k, v in self.peers.items()),
            "--data-dir",
            str(np.data_dir),
            "--cluster-id",
            self.cluster_id,
        ]

    def start_node(self, nid: str, env_extra: dict[str, str] | None = None) -> None:
        np = self.nodes[nid]
        if env_extra is not None:
            np.env_extra = dict(env_extra)
        np.data_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["RAFTLEASE_LOG_LEVEL"] = self.log_level
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        env.update(np.env_extra)
        logf = open(np.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            np.proc = subprocess.Popen(
                nice_prefix(self.nice) + self._command(np),
                stdout=logf,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=str(REPO),
                start_new_session=True,
            )
        finally:
            logf.close()
        np.ps = psutil.Process(np.proc.pid)

    def start(self, env_for: dict[str, dict[str, str]] | None = None) -> None:
        for nid in self.nodes:
            self.start_node(nid, (env_for or {}).get(nid))

    def kill(self, nid: str) -> None:
        np = self.nodes[nid]
        if np.proc is not None and np.proc.poll() is None:
            np.proc.send_signal(signal.SIGKILL)
            np.proc.wait()
        self._drop_channel(nid)

    def terminate(self, nid: str, timeout: float = 10.0) -> None:
        np = self.nodes[nid]
        if np.proc is None:
            return
        if np.proc.poll() is None:
            np.proc.send_signal(signal.SIGTERM)
            try:
                np.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                np.proc.send_signal(signal.SIGKILL)
                np.proc.wait()
        self._drop_channel(nid)

    def stop(self) -> None:
        # Signal every node first, so the survivors do not elect a leader during shutdown.
        for np in self.nodes.values():
            if np.proc is not None and np.proc.poll() is None:
                np.proc.send_signal(signal.SIGTERM)
        for nid in self.nodes:
            self.terminate(nid)
        for ch in self._channels.values():
            ch.close()
        self._channels.clear()

    def cleanup(self) -> None:
        if self.log_archive is not None and len(self.leader_changes_in_logs()) > 1:
            dest = self.log_archive / f"{self.label or 'cluster'}-{self.root.name}"
            dest.mkdir(parents=True, exist_ok=True)
            for nid, np in self.nodes.items():
                with contextlib.suppress(OSError):
                    shutil.copy(np.log_path, dest / f"{nid}.log")
        if not self.keep_dir:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            self.cleanup()

    # ------------------------------------------------------------------ queries
    def _channel(self, nid: str) -> grpc.Channel:
        ch = self._channels.get(nid)
        if ch is None:
            ch = grpc.insecure_channel(self.nodes[nid].address)
            self._channels[nid] = ch
        return ch

    def _drop_channel(self, nid: str) -> None:
        ch = self._channels.pop(nid, None)
        if ch is not None:
            ch.close()

    def status(self, nid: str, timeout: float = 0.5) -> cluster_pb2.StatusResponse | None:
        if not self.nodes[nid].alive:
            return None
        stub = cluster_pb2_grpc.ClusterStub(self._channel(nid))
        try:
            return stub.Status(cluster_pb2.StatusRequest(), timeout=timeout)
        except grpc.RpcError:
            return None

    def leader(self) -> str | None:
        """The id of a node that says it is the leader (and is alive), else None."""
        for nid in self.nodes:
            st = self.status(nid)
            if st is not None and st.leader_id == nid:
                return nid
        return None

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
        live = [nid for nid, np in self.nodes.items() if np.alive]
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

    def cpu_snapshot(self) -> dict[str, float]:
        return {nid: np.cpu_s() for nid, np in self.nodes.items() if np.alive}

    def endpoints(self) -> list[str]:
        return [np.address for np in self.nodes.values()]

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
        for nid, np in self.nodes.items():
            with contextlib.suppress(OSError):
                for line in np.log_path.read_text(errors="replace").splitlines():
                    if "became leader at term" in line:
                        out.append((nid, line))
        return out
