"""`raftlease serve` refuses a misconfiguration that could split a cluster's brain, or cannot
work, with ONE line `raftlease serve: error: ...` on stderr and exit code 2, before anything is
written to the data dir: an --id missing from --peers, a --listen port other than the node's
own --peers entry, an empty --cluster-id, a --tick outside 1ms..100ms, a busy port, and a data
dir created for another member set (or cluster id); several bad settings are all listed on
that one line. A malformed RAFTLEASE_FAILPOINTS is refused the same way, and an armed failpoint
`panic` kills the process (exit 137) at its point. Real `python -m raftlease serve` processes.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from integration.conftest import REPO_ROOT, free_port
from raftlease.testing.local import LocalCluster

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
    port = free_port()
    a, b = f"127.0.0.1:{port}", f"127.0.0.1:{free_port(avoid={port})}"
    argv, needles = bad_settings(case, a, b)
    fresh = tmp_path / "fresh"  # does not exist: must not be created
    assert_refused(serve(*argv, "--data-dir", str(fresh)), *needles)
    assert not fresh.exists()

    existing = tmp_path / "existing"  # exists, empty: must stay empty
    existing.mkdir()
    assert_refused(serve(*argv, "--data-dir", str(existing)), *needles)
    assert list(existing.iterdir()) == []


@pytest.mark.parametrize("busy", ["listen", "peer-listen"])
def test_a_busy_port_is_one_line(tmp_path: Path, busy: str) -> None:
    port = free_port()
    peer_port = free_port(avoid={port})
    address = f"127.0.0.1:{port}"
    data = tmp_path / "data"
    taken, flag = (port, "") if busy == "listen" else (peer_port, "--peer-listen: ")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", taken))
        sock.listen()
        proc = serve(
            *("--id", "n1", "--listen", address, "--peers", f"n1={address}"),
            *("--peer-listen", f"127.0.0.1:{peer_port}", "--data-dir", str(data)),
        )
    line = assert_refused(proc)
    assert line == (
        f"raftlease serve: error: {flag}cannot listen on 127.0.0.1:{taken}: address already in use"
    )
    assert not data.exists()


def _run_until_leader(root: Path, port: int, cluster_id: str) -> None:
    """Run n1 of a 1-node cluster (data in root/n1) until it is the leader (it wrote its vote
    and log); it must then exit 0 on SIGTERM."""
    with LocalCluster(root, ids=["n1"], ports=[port], cluster_id=cluster_id, cwd=REPO_ROOT) as one:
        one.start("n1")
        one.wait_leader(20.0, check_exits=True)
        code = one.terminate("n1", grace=10.0)
    assert code == 0, one.log_tails()


def test_a_data_dir_restarted_with_other_members_is_refused_untouched(tmp_path: Path) -> None:
    ports: list[int] = []
    for _ in range(5):
        ports.append(free_port(avoid=ports))
    addresses = [f"127.0.0.1:{p}" for p in ports]
    me = addresses[0]
    data = tmp_path / "n1"
    common = ["--id", "n1", "--listen", me, "--data-dir", str(data), "--cluster-id", "c-members"]
    _run_until_leader(tmp_path, ports[0], "c-members")  # created by a 1-node cluster
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
    _run_until_leader(tmp_path, ports[0], "c-members")


def test_every_bad_setting_is_listed_on_the_one_line(tmp_path: Path) -> None:
    port = free_port()
    a = f"127.0.0.1:{port}"
    data = tmp_path / "data"
    argv = ["--id", "n4", "--listen", a, "--peers", f"n1={a}", "--cluster-id", ""]
    line = assert_refused(serve(*argv, "--tick", "0", "--data-dir", str(data)))
    assert line.startswith("raftlease serve: error: 3 problems: (1) --id 'n4' is not one of")
    assert "(2) --cluster-id must not be empty" in line
    assert "(3) --tick 0ms is outside the allowed range 1ms..100ms" in line
    assert not data.exists()


# -- failpoints: armed only through RAFTLEASE_FAILPOINTS (raftlease/testing/faults.py) ----------


def serve_with_failpoints(spec: str, data: Path) -> subprocess.CompletedProcess[str]:
    """A 1-node cluster with ``spec`` armed: it elects itself and saves its vote at once."""
    address = f"127.0.0.1:{free_port()}"
    return subprocess.run(
        [
            *(sys.executable, "-m", "raftlease", "serve", "--id", "n1", "--listen", address),
            *("--peers", f"n1={address}", "--data-dir", str(data)),
        ],
        cwd=REPO_ROOT,
        env={**os.environ, "RAFTLEASE_FAILPOINTS": spec},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


def test_a_malformed_failpoint_spec_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    line = assert_refused(serve_with_failpoints("before-save=explode", data))
    assert "RAFTLEASE_FAILPOINTS: bad failpoint 'before-save=explode'" in line
    assert not data.exists()


def test_a_failpoint_panic_kills_the_process_before_the_fsync(tmp_path: Path) -> None:
    proc = serve_with_failpoints("before-save=panic", tmp_path / "data")
    assert proc.returncode == 137, proc.stderr
    assert "failpoint before-save: panic" in proc.stderr
    assert "(persisted)" not in proc.stderr  # died before its first save


def test_a_panic_after_the_vote_save_logs_the_vote_first(tmp_path: Path) -> None:
    proc = serve_with_failpoints("after-vote-save=panic", tmp_path / "data")
    assert proc.returncode == 137, proc.stderr
    lines = proc.stderr.splitlines()
    (vote,) = (
        i for i, t in enumerate(lines) if t.endswith("n1 voted for n1 at term 1 (persisted)")
    )
    assert "failpoint after-vote-save: panic" in lines[vote + 1], proc.stderr
