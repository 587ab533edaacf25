"""`raftlease serve` refuses a misconfiguration that could split a cluster's brain, or cannot
work, with ONE line `raftlease serve: error: ...` on stderr and exit code 2, before anything is
written to the data dir: an --id missing from --peers, a --listen port other than the node's
own --peers entry, an empty --cluster-id, a --tick outside 1ms..100ms, a busy port, and a data
dir created for another member set (or cluster id). Real `python -m raftlease serve` processes.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import pytest

from integration.conftest import REPO_ROOT, free_ports, node_status

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.integration

RUN_TIMEOUT_S = 30.0  # a refusal takes ~1 s; the old code served until killed


def serve(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "raftlease", "serve", *argv],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


def assert_refused(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("raftlease serve: error: "), lines[0]
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert proc.stdout == ""
    return lines[0]


def snapshot_dir(path: Path) -> dict[str, tuple[bytes, int]]:
    """Every file in ``path``: its bytes and mtime."""
    return {
        p.name: (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(path.iterdir())
        if p.is_file()
    }


def bad_settings(case: str, a: str, b: str) -> tuple[list[str], list[str]]:
    """(serve arguments but --data-dir, what the error line must say) for one refusal; ``a``
    and ``b`` are two free addresses."""
    one = ["--id", "n1", "--listen", a, "--peers", f"n1={a}"]
    cases = {
        "id-not-in-peers": (
            ["--id", "n4", "--listen", a, "--peers", f"n1={a},n2={b}"],
            ["--id 'n4' is not one of --peers (n1, n2)"],
        ),
        "listen-port-differs": (
            ["--id", "n1", "--listen", b, "--peers", f"n1={a},n2=127.0.0.1:1"],
            [f"--listen {b} does not match this node's own --peers entry n1={a}"],
        ),
        "empty-cluster-id": ([*one, "--cluster-id", ""], ["--cluster-id must not be empty"]),
        "tick-0": ([*one, "--tick", "0"], ["--tick 0ms is outside the allowed range 1ms..100ms"]),
        "tick-10s": (
            [*one, "--tick", "10s"],
            ["--tick 10s is outside the allowed range 1ms..100ms"],
        ),
    }
    return cases[case]


@pytest.mark.parametrize(
    "case", ["id-not-in-peers", "listen-port-differs", "empty-cluster-id", "tick-0", "tick-10s"]
)
def test_bad_settings_are_refused_before_the_data_dir_is_touched(tmp_path: Path, case: str) -> None:
    a, b = (f"127.0.0.1:{p}" for p in free_ports(2))
    argv, needles = bad_settings(case, a, b)
    fresh = tmp_path / "fresh"  # does not exist: must not be created
    assert_refused(serve(*argv, "--data-dir", str(fresh)), *needles)
    assert not fresh.exists()

    existing = tmp_path / "existing"  # exists, empty: must stay empty
    existing.mkdir()
    assert_refused(serve(*argv, "--data-dir", str(existing)), *needles)
    assert list(existing.iterdir()) == []


def test_a_busy_port_is_one_line(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    address = f"127.0.0.1:{port}"
    data = tmp_path / "data"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        proc = serve(
            "--id", "n1", "--listen", address, "--peers", f"n1={address}", "--data-dir", str(data)
        )
    line = assert_refused(proc)
    assert line == f"raftlease serve: error: cannot listen on {address}: address already in use"
    assert not data.exists()


def _run_until_leader(argv: list[str], address: str) -> None:
    """Start a node, wait until it is the leader (it wrote its vote and log), SIGTERM it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "raftlease", "serve", *argv],
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline:
            st = node_status(address)
            if st is not None and st.leader_id == st.node_id == "n1":
                break
            assert proc.poll() is None, proc.communicate()[0].decode()
            time.sleep(0.05)
        else:
            raise AssertionError("the 1-node cluster elected no leader")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0, out.decode()


def test_a_data_dir_restarted_with_other_members_is_refused_untouched(tmp_path: Path) -> None:
    ports = free_ports(5)
    addresses = [f"127.0.0.1:{p}" for p in ports]
    me = addresses[0]
    data = tmp_path / "n1"
    common = ["--id", "n1", "--listen", me, "--data-dir", str(data), "--cluster-id", "c-members"]
    _run_until_leader([*common, "--peers", f"n1={me}"], me)  # created by a 1-node cluster
    before = snapshot_dir(data)
    assert "raft.db" in before

    five = ",".join(f"n{i + 1}={addr}" for i, addr in enumerate(addresses))
    proc = serve(*common, "--peers", five)
    line = assert_refused(proc, "was created for members {n1}", "{n1, n2, n3, n4, n5}")
    assert "membership changes" in line
    assert snapshot_dir(data) == before

    three = ",".join(f"n{i + 1}={addr}" for i, addr in enumerate(addresses[:3]))
    os.utime(data / "raft.db", ns=(1, 1))  # mtime far in the past: any write would move it
    before = snapshot_dir(data)
    assert_refused(serve(*common, "--peers", three), "{n1}", "{n1, n2, n3}")
    assert snapshot_dir(data) == before

    other_cluster = [*common[:-1], "c-other", "--peers", f"n1={me}"]
    assert_refused(serve(*other_cluster), "belongs to cluster 'c-members'")
    assert snapshot_dir(data) == before

    # Nothing was damaged: the data dir's own configuration still starts.
    _run_until_leader([*common, "--peers", f"n1={me}"], me)
