"""The command line against a real cluster: `raftlease run` as a singleton supervisor, and
`raftlease status --json` / `holder --json` / `leases --json`."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from integration.conftest import REPO_ROOT

if TYPE_CHECKING:
    from integration.conftest import Cluster

pytestmark = pytest.mark.integration

# Appends "<token> <pid>" to a file every 50 ms while it runs; exits 0 on SIGTERM.
WRITER = """\
import os, signal, sys, time
path = sys.argv[1]
token = os.environ["RAFTLEASE_FENCING_TOKEN"]
assert os.environ["RAFTLEASE_LEASE_NAME"] and int(os.environ["RAFTLEASE_LEASE_ID"]) > 0
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
while True:
    with open(path, "a") as f:
        f.write(f"{token} {os.getpid()}\\n")
    time.sleep(0.05)
"""


def cli(cluster: Cluster, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    argv = list(args)
    cut = argv.index("--") if "--" in argv else len(argv)  # options go before `-- CMD`
    argv[cut:cut] = ["--endpoints", ",".join(cluster.endpoints)]
    return subprocess.run(
        [sys.executable, "-m", "raftlease", *argv],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_runner(
    cluster: Cluster, name: str, script: Path, out: Path, log: Path, *extra: str
) -> subprocess.Popen[bytes]:
    with open(log, "ab") as log_file:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "raftlease",
                "run",
                name,
                "--ttl",
                "2s",
                "--endpoints",
                ",".join(cluster.endpoints),
                *extra,
                "--",
                sys.executable,
                str(script),
                str(out),
            ],
            cwd=REPO_ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )


def running(pid: int) -> bool:
    """True if the process exists and is not a zombie (Linux /proc, else kill(pid, 0))."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def tokens_written(path: Path) -> list[tuple[int, int]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            rows.append((int(parts[0]), int(parts[1])))
    return rows


def wait_for(predicate: object, timeout: float, what: str) -> float:
    assert callable(predicate)
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if predicate():
            return time.monotonic() - t0
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_run_singleton_takeover(cluster: Cluster, tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    out = tmp_path / "tokens.txt"
    log1, log2 = tmp_path / "runner1.log", tmp_path / "runner2.log"
    first = start_runner(cluster, "singleton", script, out, log1)
    second: subprocess.Popen[bytes] | None = None
    try:
        wait_for(lambda: len(tokens_written(out)) >= 3, 15, "the first runner's command")
        token1, pid1 = tokens_written(out)[0]
        second = start_runner(cluster, "singleton", script, out, log2)
        wait_for(lambda: "waiting for lease singleton" in log2.read_text(), 15, "runner 2 to wait")
        time.sleep(0.5)
        assert {t for t, _ in tokens_written(out)} == {token1}  # only one instance ran
        first.send_signal(signal.SIGKILL)  # kill the holder: no release, no forwarding
        first.wait()
        t_kill = time.monotonic()
        takeover = wait_for(
            lambda: any(t != token1 for t, _ in tokens_written(out)), 20, "runner 2 to take over"
        )
        print(f"\nraftlease run: takeover {takeover:.3f}s after SIGKILL of the holder (ttl 2s)")
        rows = tokens_written(out)
        new_tokens = [t for t, _ in rows if t != token1]
        assert min(new_tokens) > token1
        # The old command died with its supervisor (PDEATHSIG), and before the new one wrote.
        first_new = next(i for i, (t, _) in enumerate(rows) if t != token1)
        assert all(t != token1 for t, _ in rows[first_new:])
        assert [t for t, _ in rows] == sorted(t for t, _ in rows)
        assert not running(pid1)  # dead (or a zombie awaiting its new parent's reap)
        assert time.monotonic() - t_kill < 2.0 + 3.0
        # SIGTERM to the supervisor: forwarded, the command exits 0, the lease is released.
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=10) == 0
        text = log2.read_text()
        assert "received SIGTERM" in text
        assert "acquired lease singleton" in text
        for line in text.splitlines():
            assert line.startswith("raftlease run:"), line
        holder = cli(cluster, "holder", "singleton", "--json")
        assert holder.returncode == 0, holder.stderr
        assert json.loads(holder.stdout) is None
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


def test_run_exit_codes_and_restarts(cluster: Cluster, tmp_path: Path) -> None:
    ok = cli(cluster, "run", "job", "--ttl", "2s", "--", sys.executable, "-c", "print('hi')")
    assert ok.returncode == 0, ok.stderr
    assert "hi" in ok.stdout
    counter = tmp_path / "count"
    crash = f"open({str(counter)!r}, 'a').write('x'); raise SystemExit(3)"
    t0 = time.monotonic()
    bad = cli(
        cluster, "run", "job", "--ttl", "2s", "--max-restarts", "2", "--",
        sys.executable, "-c", crash,
    )  # fmt: skip
    elapsed = time.monotonic() - t0
    assert bad.returncode == 3, bad.stderr
    assert counter.read_text() == "xxx"  # the first run and two restarts
    assert elapsed >= 1.0  # no backoff for the first restart, then 1 s
    assert "restarting now (restart 1 of 2)" in bad.stderr, bad.stderr
    # the default --restart-delay 1s stretched by up to 20 % of jitter: "1s" .. "1.2s"
    assert re.search(r"restarting in 1(\.[0-9]+)?s \(restart 2 of 2\)", bad.stderr), bad.stderr
    assert "restarts exhausted" in bad.stderr
    free = cli(cluster, "holder", "job")
    assert free.returncode == 0
    assert "job is free" in free.stdout


def test_status_json_shape(cluster: Cluster) -> None:
    result = cli(cluster, "status", "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["leader"] in cluster.nodes
    assert len(status["nodes"]) == 3
    for node in status["nodes"]:
        for key in ("id", "address", "role", "term", "commit_index", "last_heard_ms"):
            assert key in node, node
        assert node["address"] == cluster.nodes[node["id"]].address
        assert isinstance(node["last_heard_ms"], int)
        assert node["last_heard_ms"] < 1000
    roles = sorted(n["role"] for n in status["nodes"])
    assert roles == ["follower", "follower", "leader"]
    lead = next(n for n in status["nodes"] if n["role"] == "leader")
    assert lead["lease_valid"] is True  # its own leader lease, from its own answer
    assert all(n["lease_valid"] is False for n in status["nodes"] if n is not lead)

    human = cli(cluster, "status")
    assert human.returncode == 0
    assert human.stdout.splitlines()[1].split()[:3] == ["ID", "ADDRESS", "ROLE"]

    follower = next(n["id"] for n in status["nodes"] if n["role"] == "follower")
    cluster.kill(follower)
    later = json.loads(cli(cluster, "status", "--json").stdout)
    by_id = {n["id"]: n for n in later["nodes"]}
    assert by_id[follower]["role"] == "unreachable"
    assert later["leader"] == status["leader"]

    with subprocess.Popen(
        [sys.executable, "-m", "raftlease", "acquire", "cli-lease", "--ttl", "3s",
         "--holder", "cli", "--endpoints", ",".join(cluster.endpoints)],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as acquired:  # fmt: skip
        assert acquired.stdout is not None
        line = acquired.stdout.readline()
        assert line.startswith("acquired lease cli-lease: fencing_token=")
        leases = json.loads(cli(cluster, "leases", "--json").stdout)
        assert [(i["name"], i["holder"]) for i in leases] == [("cli-lease", "cli")]
        table = cli(cluster, "leases").stdout.splitlines()
        assert table[0].split()[:3] == ["NAME", "HOLDER", "TOKEN"]
        acquired.send_signal(signal.SIGINT)
        assert acquired.wait(timeout=10) == 0
        assert "released lease cli-lease" in acquired.stdout.read()
    assert json.loads(cli(cluster, "holder", "cli-lease", "--json").stdout) is None
