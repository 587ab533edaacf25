"""A real 3-node raftlease cluster: three `python -m raftlease serve` processes on free
127.0.0.1 ports with temporary data dirs.

`cluster` (function scope) starts the nodes, waits until a leader answers Cluster.Status and
tears everything down with SIGTERM (SIGCONT first, SIGKILL after 5 s). A failed test gets
the tail of every node's log in its report. Every test here is marked `integration`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest

from raftlease.client import LeaseClient
from raftlease.v1 import cluster_pb2, cluster_pb2_grpc

if TYPE_CHECKING:
    from collections.abc import Generator, Iterator

REPO_ROOT = Path(__file__).resolve().parents[2]
LEADER_TIMEOUT_S = 20.0
STOP_GRACE_S = 5.0


def free_ports(count: int) -> list[int]:
    """Distinct free TCP ports on 127.0.0.1 (held open together so they differ)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def node_status(address: str, timeout: float = 0.5) -> cluster_pb2.StatusResponse | None:
    """One node's own Cluster.Status, or None if it does not answer."""
    with grpc.insecure_channel(address) as channel:
        try:
            return cluster_pb2_grpc.ClusterStub(channel).Status(
                cluster_pb2.StatusRequest(), timeout=timeout
            )
        except grpc.RpcError:
            return None


@dataclass
class NodeProc:
    id: str
    address: str
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    stopped: bool = False  # SIGSTOPped

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Cluster:
    """Three (or n) real server processes."""

    def __init__(self, root: Path, n: int = 3) -> None:
        self.root = root
        self.cluster_id = uuid.uuid4().hex
        ports = free_ports(n)
        self.nodes = {
            f"n{i + 1}": NodeProc(
                id=f"n{i + 1}",
                address=f"127.0.0.1:{port}",
                data_dir=root / f"n{i + 1}",
                log_path=root / f"n{i + 1}.log",
            )
            for i, port in enumerate(ports)
        }
        self.endpoints = [node.address for node in self.nodes.values()]
        self.peers = ",".join(f"{n.id}={n.address}" for n in self.nodes.values())

    # -- processes --------------------------------------------------------------------------

    def start(self, node_id: str, *extra: str) -> None:
        """Start ``node_id``'s `serve` process; ``extra`` are more `serve` arguments."""
        node = self.nodes[node_id]
        assert not node.alive(), f"{node_id} is already running"
        env = dict(os.environ)
        env.setdefault("RAFTLEASE_LOG_LEVEL", "INFO")
        with open(node.log_path, "ab") as log:
            node.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "raftlease",
                    "serve",
                    "--id",
                    node.id,
                    "--listen",
                    node.address,
                    "--peers",
                    self.peers,
                    "--data-dir",
                    str(node.data_dir),
                    "--cluster-id",
                    self.cluster_id,
                    *extra,
                ],
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        node.stopped = False

    def start_all(self) -> None:
        for node_id in self.nodes:
            self.start(node_id)

    def signal(self, node_id: str, sig: int) -> None:
        node = self.nodes[node_id]
        assert node.proc is not None
        node.proc.send_signal(sig)
        if sig == signal.SIGSTOP:
            node.stopped = True
        elif sig == signal.SIGCONT:
            node.stopped = False

    def kill(self, node_id: str) -> None:
        """SIGKILL a node and reap it."""
        node = self.nodes[node_id]
        assert node.proc is not None
        node.proc.kill()
        node.proc.wait()
        node.stopped = False

    def terminate(self, node_id: str) -> int | None:
        node = self.nodes[node_id]
        if node.proc is None or node.proc.poll() is not None:
            return None if node.proc is None else node.proc.returncode
        if node.stopped:
            node.proc.send_signal(signal.SIGCONT)
            node.stopped = False
        node.proc.terminate()
        try:
            return node.proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            node.proc.kill()
            node.proc.wait()
            return None

    def terminate_all(self) -> dict[str, int | None]:
        for node in self.nodes.values():  # resume paused nodes first so SIGTERM is handled
            if node.alive() and node.stopped:
                self.signal(node.id, signal.SIGCONT)
        return {node_id: self.terminate(node_id) for node_id in self.nodes}

    # -- observation ------------------------------------------------------------------------

    def leader(self, timeout: float = LEADER_TIMEOUT_S, exclude: set[str] | None = None) -> str:
        """Wait until a running node says it is the leader; its id."""
        exclude = exclude or set()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for node in self.nodes.values():
                if node.id in exclude or not node.alive() or node.stopped:
                    continue
                st = node_status(node.address)
                if st is not None and st.leader_id and st.leader_id == st.node_id:
                    return st.node_id
            time.sleep(0.05)
        raise AssertionError(f"no leader within {timeout}s\n{self.log_tails()}")

    def client(self, *node_ids: str, timeout: float = 10.0) -> LeaseClient:
        endpoints = [self.nodes[i].address for i in node_ids] if node_ids else self.endpoints
        return LeaseClient(endpoints, timeout=timeout)

    def log_tails(self, lines: int = 40) -> str:
        parts = []
        for node in self.nodes.values():
            try:
                text = node.log_path.read_text(encoding="utf-8", errors="replace")
            except OSError:
                text = "(no log)"
            tail = "\n".join(text.splitlines()[-lines:])
            parts.append(f"----- {node.id} ({node.address}) log tail -----\n{tail}")
        return "\n".join(parts)

    def tracebacks(self) -> list[str]:
        found = []
        for node in self.nodes.values():
            if node.log_path.exists() and "Traceback" in node.log_path.read_text(
                encoding="utf-8", errors="replace"
            ):
                found.append(node.id)
        return found


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


_FAILED = pytest.StashKey[bool]()


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """A running 3-node cluster with an elected leader."""
    c = Cluster(tmp_path)
    c.start_all()
    try:
        c.leader()
        yield c
    finally:
        codes = c.terminate_all()
        if request.node.stash.get(_FAILED, True):
            print(f"exit codes: {codes}\n{c.log_tails()}")
