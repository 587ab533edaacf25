"""A real 3-node raftlease cluster: three `python -m raftlease serve` processes on free
127.0.0.1 ports with temporary data dirs (raftlease.testing.LocalCluster).

`cluster` (function scope) starts the nodes, waits until a leader answers Cluster.Status and
tears everything down with SIGTERM (SIGCONT first, SIGKILL after 5 s). A failed test gets
the tail of every node's log in its report. Every test here is marked `integration`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from raftlease.client import LeaseClient
from raftlease.testing.local import LocalCluster, free_port, node_status

if TYPE_CHECKING:
    from collections.abc import Generator, Iterator

__all__ = ["REPO_ROOT", "Cluster", "free_port", "node_status"]

REPO_ROOT = Path(__file__).resolve().parents[2]
LEADER_TIMEOUT_S = 20.0


class Cluster(LocalCluster):
    """Three (or n) real server processes: data in ``root/nI``, output in ``root/nI.log``."""

    def __init__(self, root: Path, n: int = 3) -> None:
        level = os.environ.get("RAFTLEASE_LOG_LEVEL", "INFO")
        super().__init__(root, n, cwd=REPO_ROOT, env={"RAFTLEASE_LOG_LEVEL": level})

    def leader(self, timeout: float = LEADER_TIMEOUT_S, exclude: set[str] | None = None) -> str:
        """Wait until a running node says it is the leader; its id."""
        return self.wait_leader(timeout, exclude=exclude or ())

    def client(self, *node_ids: str, timeout: float = 10.0) -> LeaseClient:
        endpoints = [self.nodes[i].address for i in node_ids] if node_ids else self.endpoints
        return LeaseClient(endpoints, timeout=timeout)

    def terminate_all(self) -> dict[str, int | None]:
        return self.stop()


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
