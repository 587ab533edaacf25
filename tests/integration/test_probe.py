"""`raftlease probe`: a synthetic acquire / renew / check-token / release transaction.

On a live cluster it prints each step's latency and the total and exits 0 (text and
--json); against an endpoint where nothing listens it exits 1 with ONE error line naming
the step that failed, within about --timeout.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from integration.conftest import Cluster

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
STEPS = ["acquire", "renew", "check_token", "release"]


def probe(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "raftlease", "probe", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_probe_succeeds_on_a_live_cluster(cluster: Cluster) -> None:
    endpoints = ",".join(cluster.endpoints)
    out = probe("--endpoints", endpoints)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == [*STEPS, "total"], out.stdout
    assert re.fullmatch(r"acquire\s+\d+\.\d\d ms  fencing_token=\d+", lines[0]), lines[0]
    for line in lines[1:4]:
        assert re.fullmatch(r"\w+\s+\d+\.\d\d ms", line), line
    assert re.fullmatch(r"total\s+\d+\.\d\d ms  ok", lines[4]), lines[4]
    ms = [float(line.split()[1]) for line in lines]
    assert ms[4] >= sum(ms[:4]) - 0.05

    out = probe("--endpoints", endpoints, "--json", "--name", "canary-2", "--ttl", "3s")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["ok"] is True
    assert report["name"] == "canary-2"
    assert [s["step"] for s in report["steps"]] == STEPS
    assert all(s["ms"] > 0 for s in report["steps"])
    assert report["total_ms"] >= sum(s["ms"] for s in report["steps"]) - 0.05
    assert isinstance(report["fencing_token"], int)

    with cluster.client() as client:  # released: nothing left behind
        assert client.holder("canary") is None
        assert client.holder("canary-2") is None


def test_probe_fails_with_one_line_against_a_dead_endpoint() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    out = probe("--endpoints", f"127.0.0.1:{port}", "--timeout", "1s")
    took = time.monotonic() - started
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("raftlease: error: probe canary failed at acquire after "), lines
    assert f"127.0.0.1:{port}" in lines[0]
    assert took < 10.0

    out = probe("--endpoints", f"127.0.0.1:{port}", "--timeout", "1s", "--json")
    assert out.returncode == 1
    report = json.loads(out.stdout)
    assert report["ok"] is False
    assert report["failed_step"] == "acquire"
    assert len(out.stderr.strip().splitlines()) == 1
