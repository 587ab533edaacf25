"""A local 3-member etcd cluster of real processes, for the side-by-side benchmarks.

``EtcdCluster`` mirrors what ``bench/cluster.py``'s ``BenchCluster`` gives the raftlease
workloads: members e1..e3 on free 127.0.0.1 ports (client and peer URLs), each with its own
data dir in a fresh temp dir (etcd's default fsync of its WAL), etcd's default timing
(``--heartbeat-interval 100 --election-timeout 1000``, written out on the command line),
per-member CPU and RSS from psutil, a stable-leader wait through ``Maintenance.Status``,
SIGKILL and restart of one member (a restarted member rejoins from its data dir), and leader
elections read from the members' logs (zap: "... became leader at term N").

The binary is ``etcd`` on PATH (Debian: ``apt-get install etcd-server``) unless given.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent / "gen"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cluster import nice_prefix  # bench/cluster.py
from etcdpb import rpc_pb2, rpc_pb2_grpc

from raftlease.testing.local import free_port

HEARTBEAT_MS = 100  # etcd's defaults, spelled out
ELECTION_MS = 1000


def etcd_binary() -> str | None:
    return shutil.which("etcd")


def etcd_version(binary: str) -> str:
    with contextlib.suppress(Exception):
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
        for line in out.stdout.splitlines():
            if line.startswith("etcd Version:"):
                return line.split(":", 1)[1].strip()
    return "unknown"


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    ps: psutil.Process | None = None
    member_id: int = 0
    starts: list[float] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class EtcdCluster:
    """Start, kill, restart and stop a fresh local etcd cluster. Use as a context manager."""

    nice = 0

    def __init__(self, n: int = 3, binary: str | None = None) -> None:
        self.binary = binary or etcd_binary() or "etcd"
        self.root = Path(tempfile.mkdtemp(prefix="etcd-bench-"))
        used: set[int] = set()
        self.nodes: dict[str, Member] = {}
        for i in range(1, n + 1):
            cp = free_port(avoid=used)
            used.add(cp)
            pp = free_port(avoid=used)
            used.add(pp)
            name = f"e{i}"
            (self.root / name).mkdir()
            self.nodes[name] = Member(
                name, cp, pp, self.root / name / "data", self.root / name / "etcd.log"
            )
        self.token = f"bench-{os.getpid()}-{int(time.time())}"
        self._channels: dict[str, grpc.Channel] = {}

    @property
    def endpoints(self) -> list[str]:
        return [m.address for m in self.nodes.values()]

    # ------------------------------------------------------------------ processes
    def command(self, name: str) -> list[str]:
        m = self.nodes[name]
        initial = ",".join(f"{x.name}=http://127.0.0.1:{x.peer_port}" for x in self.nodes.values())
        return [
            *nice_prefix(self.nice),
            self.binary,
            "--name",
            name,
            "--data-dir",
            str(m.data_dir),
            "--listen-client-urls",
            f"http://{m.address}",
            "--advertise-client-urls",
            f"http://{m.address}",
            "--listen-peer-urls",
            f"http://127.0.0.1:{m.peer_port}",
            "--initial-advertise-peer-urls",
            f"http://127.0.0.1:{m.peer_port}",
            "--initial-cluster",
            initial,
            "--initial-cluster-token",
            self.token,
            "--initial-cluster-state",
            "new",  # ignored when the data dir already holds a WAL (a restart)
            "--heartbeat-interval",
            str(HEARTBEAT_MS),
            "--election-timeout",
            str(ELECTION_MS),
            "--logger",
            "zap",
            "--log-outputs",
            "stderr",
        ]

    def start_node(self, name: str) -> None:
        m = self.nodes[name]
        with open(m.log_path, "ab") as logf:
            m.proc = subprocess.Popen(
                self.command(name),
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        m.starts.append(time.time())
        # With a nice prefix the pid is nice's until it execs etcd: the same process.
        m.ps = psutil.Process(m.proc.pid)
        self._drop_channel(name)

    def start_nodes(self) -> None:
        for name in self.nodes:
            self.start_node(name)

    def kill(self, name: str) -> None:
        m = self.nodes[name]
        if m.proc is not None and m.proc.poll() is None:
            m.proc.send_signal(signal.SIGKILL)
            m.proc.wait()
        self._drop_channel(name)

    def stop(self) -> None:
        for m in self.nodes.values():
            if m.proc is not None and m.proc.poll() is None:
                m.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for m in self.nodes.values():
            if m.proc is None:
                continue
            try:
                m.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                m.proc.kill()
                m.proc.wait()
        for name in list(self._channels):
            self._drop_channel(name)

    def __enter__(self) -> EtcdCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    # ------------------------------------------------------------------ queries
    def cpu_s(self, name: str) -> float:
        ps = self.nodes[name].ps
        if ps is None:
            return 0.0
        try:
            t = ps.cpu_times()
        except psutil.Error:
            return 0.0
        return float(t.user + t.system)

    def rss(self, name: str) -> int:
        ps = self.nodes[name].ps
        return int(ps.memory_info().rss) if ps is not None else 0

    def cpu_snapshot(self) -> dict[str, float]:
        return {n: self.cpu_s(n) for n, m in self.nodes.items() if m.alive()}

    def _channel(self, name: str) -> grpc.Channel:
        ch = self._channels.get(name)
        if ch is None:
            ch = grpc.insecure_channel(self.nodes[name].address)
            self._channels[name] = ch
        return ch

    def _drop_channel(self, name: str) -> None:
        ch = self._channels.pop(name, None)
        if ch is not None:
            ch.close()

    def status(self, name: str, timeout: float = 0.5) -> Any:
        try:
            st = rpc_pb2_grpc.MaintenanceStub(self._channel(name)).Status(
                rpc_pb2.StatusRequest(), timeout=timeout
            )
        except grpc.RpcError:
            return None
        self.nodes[name].member_id = st.header.member_id
        return st

    def name_of(self, member_id: int) -> str | None:
        for n, m in self.nodes.items():
            if m.member_id == member_id:
                return n
        return None

    def _stable_leader(self) -> str | None:
        live = [n for n, m in self.nodes.items() if m.alive()]
        leaders = set()
        index = set()
        for n in live:
            st = self.status(n)
            if st is None or not st.leader:
                return None
            leaders.add(st.leader)
            index.add(st.raftIndex)
        if len(leaders) != 1 or len(index) != 1:
            return None
        name = self.name_of(leaders.pop())
        return name if name in live else None

    def wait_stable(self, timeout: float = 30.0, settle: float = 0.0) -> str:
        """Every live member names the same leader, one of them, at the same raft index;
        then again after ``settle`` s. Returns the leader's name."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            for n, m in self.nodes.items():
                if m.proc is not None and m.proc.poll() is not None and n not in self._killed():
                    raise RuntimeError(f"etcd {n} exited: {self.log_tail(n)}")
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
        raise TimeoutError(f"etcd cluster not stable after {timeout}s: {last} ({self.root})")

    def _killed(self) -> set[str]:
        return {
            n
            for n, m in self.nodes.items()
            if m.proc is not None and m.proc.returncode == -signal.SIGKILL
        }

    def log_tail(self, name: str, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.nodes[name].log_path.read_text().splitlines()[-lines:])
        return ""

    def elections(self) -> list[tuple[str, float]]:
        """(member, wall time) of every 'became leader at term' line in the members' logs."""
        out = []
        for n, m in self.nodes.items():
            with contextlib.suppress(OSError):
                for line in m.log_path.read_text().splitlines():
                    if "became leader at term" not in line:
                        continue
                    with contextlib.suppress(ValueError, KeyError):
                        ts = json.loads(line)["ts"]
                        out.append((n, _parse_ts(ts)))
        return sorted(out, key=lambda x: x[1])

    def first_election_after(self, wall: float) -> float | None:
        later = [t for _n, t in self.elections() if t > wall]
        return min(later) if later else None


def _parse_ts(ts: str) -> float:
    # zap: 2026-12-03T08:30:01.123+0000 (or an ISO string with a colon in the offset)
    for fmt in ("%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S%z"):
        with contextlib.suppress(ValueError):
            return dt.datetime.strptime(ts, fmt).timestamp()
    return dt.datetime.fromisoformat(ts).timestamp()
