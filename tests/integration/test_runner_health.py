"""`raftlease run`'s child checks on a real 3-node cluster: the heartbeat (a child that stops
beating is killed and restarted), its status payload as the lease's health map (seen by
`holder` and `leases`), a failing health command and a closed health port (the child is
restarted), the restart backoff (the first restart at once, the second after
`--restart-delay`) and the circuit breaker (after N fast failures the lease goes to a
standby).

Every test kills what it started, even when it fails: the supervisors by pid, and every
process whose command line names the test's temporary directory.
"""

from __future__ import annotations

import contextlib
import functools
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

from integration.conftest import REPO_ROOT, free_port

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from integration.conftest import Cluster

pytestmark = pytest.mark.integration

# Notes "<kind> <pid> <time> <token>" lines in OUT. The first run beats every 0.1 s with
# queue_depth=3 last_id=991 until the file HANG exists, then notes "hang" with the time of its
# last beat and sleeps (alive, but hung). Later runs beat queue_depth=0 last_id=992 forever.
BEATER = """\
import os, sys, time
from raftlease.heartbeat import beat
out, hang = sys.argv[1], sys.argv[2]
first = not os.path.exists(out)
token = os.environ["RAFTLEASE_FENCING_TOKEN"]
def note(kind, t=None):
    with open(out, "a") as f:
        f.write(f"{kind} {os.getpid()} {t or time.time():.6f} {token}\\n")
note("start")
last = None
while not (first and os.path.exists(hang)):
    assert beat(queue_depth=3 if first else 0, last_id=991 if first else 992)
    last = time.time()
    time.sleep(0.1)
note("hang", last)
time.sleep(3600)
"""

# Creates OK/ok-<pid> (what the health command tests) and, unless a run already did, removes
# it after 1 s while it keeps running; notes "start" and "broken" lines.
SICK = """\
import os, sys, time
out, okdir = sys.argv[1], sys.argv[2]
def note(kind):
    with open(out, "a") as f:
        f.write(f"{kind} {os.getpid()} {time.time():.6f}\\n")
def seen(kind):
    return os.path.exists(out) and any(l.startswith(kind) for l in open(out))
marker = os.path.join(okdir, f"ok-{os.getpid()}")
open(marker, "w").close()
note("start")
if not seen("broken"):
    time.sleep(1.0)
    os.remove(marker)
    note("broken")
time.sleep(3600)
"""

# Listens on 127.0.0.1:PORT; unless a run already did, closes the listener after 1 s and
# keeps running.
LISTENER = """\
import os, socket, sys, time
out, port = sys.argv[1], int(sys.argv[2])
def note(kind):
    with open(out, "a") as f:
        f.write(f"{kind} {os.getpid()} {time.time():.6f}\\n")
def seen(kind):
    return os.path.exists(out) and any(l.startswith(kind) for l in open(out))
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port))
s.listen(16)
note("start")
if not seen("broken"):
    time.sleep(1.0)
    s.close()
    note("broken")
time.sleep(3600)
"""

# Notes "start <pid> <time> <token>", works for 0.7 s, notes "exit <pid> <time> <token>" and
# fails with code 3.
FAILER = """\
import os, sys, time
def note(kind):
    with open(sys.argv[1], "a") as f:
        token = os.environ["RAFTLEASE_FENCING_TOKEN"]
        f.write(f"{kind} {os.getpid()} {time.time():.6f} {token}\\n")
note("start")
time.sleep(0.7)
note("exit")
sys.exit(3)
"""


class Supervisors:
    """`raftlease run` processes; `cleanup()` kills them and everything naming `marker`."""

    def __init__(self, marker: Path, endpoints: list[str]) -> None:
        self.marker = str(marker)
        self.endpoints = ",".join(endpoints)
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self, name: str, log: Path, opts: list[str], cmd: list[str]
    ) -> subprocess.Popen[bytes]:
        with open(log, "ab") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "raftlease", "run", name, "--ttl", "2s",
                 "--endpoints", self.endpoints, *opts, "--", sys.executable, *cmd],
                cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=log_file,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.procs.append(proc)
        return proc

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()
        for pid in pids_mentioning(self.marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def sups(tmp_path: Path, cluster: Cluster) -> Iterator[Supervisors]:
    s = Supervisors(tmp_path, cluster.endpoints)
    try:
        yield s
    finally:
        s.cleanup()


def pids_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if text.encode() in cmdline:
            found.append(int(entry.name))
    return found


def running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if predicate():
            return time.monotonic() - t0
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def notes(path: Path, kind: str) -> list[list[str]]:
    """The fields after the kind of every complete `kind ...` line."""
    return [
        line.split()[1:]
        for line in read(path).splitlines()
        if line.startswith(kind + " ") and len(line.split()) >= 3
    ]


def starts(path: Path, n: int) -> bool:
    return len(notes(path, "start")) >= n


def cli(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "raftlease", *args, "--endpoints", ",".join(cluster.endpoints)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def test_status_payload_shows_and_a_child_that_stops_beating_is_restarted(
    cluster: Cluster, sups: Supervisors, tmp_path: Path
) -> None:
    script = tmp_path / "beater.py"
    script.write_text(BEATER)
    out, hang, log = tmp_path / "out.txt", tmp_path / "hang", tmp_path / "sup.log"
    timeout = 1.0
    sup = sups.start(
        "beater", log,  # the default --restart-delay 1s: the first restart does not wait it
        ["--heartbeat-timeout", "1s", "--kill-grace", "1s"],
        [str(script), str(out), str(hang)],
    )  # fmt: skip
    wait_for(lambda: notes(out, "start"), 15, "the command to start")

    # The status payload rides on the keepalives: holder() and the CLI show it.
    with cluster.client() as client:
        wait_for(
            lambda: (
                (info := client.holder("beater")) is not None
                and info.health == {"queue_depth": "3", "last_id": "991"}
            ),
            5,
            "the status payload in holder()",
        )
        holder = cli(cluster, "holder", "beater")
        assert holder.returncode == 0, holder.stderr
        assert "health         last_id=991,queue_depth=3" in holder.stdout, holder.stdout
        as_json = json.loads(cli(cluster, "holder", "beater", "--json").stdout)
        assert as_json["health"] == {"queue_depth": "3", "last_id": "991"}
        leases = cli(cluster, "leases").stdout
        assert "last_id=991,queue_depth=3" in leases, leases

        hang.touch()  # the first run stops beating but stays alive
        wait_for(lambda: len(notes(out, "start")) >= 2, 15, "a restart")
        first_pid, second_start = notes(out, "start")[0][0], float(notes(out, "start")[1][1])
        last_beat = float(notes(out, "hang")[0][1])
        took = second_start - last_beat
        print(f"\nlast beat -> new run started: {took:.3f}s (heartbeat timeout {timeout}s)")
        # Killed at timeout (+ the loop's tick), restarted at once (no backoff for a first
        # failure, though --restart-delay is 1s), plus an interpreter start on a shared
        # machine. Waiting the 1-1.2 s backoff would take more than timeout + 1 s.
        assert timeout < took <= timeout + 1.0
        assert not running(int(first_pid))
        wait_for(
            lambda: (
                (info := client.holder("beater")) is not None
                and info.health == {"queue_depth": "0", "last_id": "992"}
            ),
            5,
            "the new run's payload",
        )
    text = read(log)
    assert "is hung: no heartbeat for " in text, text
    assert "(--heartbeat-timeout 1s); sending SIGTERM, SIGKILL in 1s" in text, text
    assert "command killed as hung (code 143); restarting now (restart 1 of 5)" in text, text
    sup.send_signal(signal.SIGTERM)
    assert sup.wait(timeout=15) == 128 + signal.SIGTERM, text


def test_failing_health_command_or_closed_port_restarts_the_child(
    cluster: Cluster, sups: Supervisors, tmp_path: Path
) -> None:
    sick, listener = tmp_path / "sick.py", tmp_path / "listener.py"
    sick.write_text(SICK)
    listener.write_text(LISTENER)
    okdir = tmp_path / "ok"
    okdir.mkdir()
    out_cmd, out_port = tmp_path / "cmd.txt", tmp_path / "port.txt"
    log_cmd, log_port = tmp_path / "cmd.log", tmp_path / "port.log"
    port = free_port()
    common = ["--health-interval", "300ms", "--health-retries", "3", "--kill-grace", "500ms",
              "--restart-delay", "100ms"]  # fmt: skip
    health_cmd = f"test -e {okdir}/ok-$RAFTLEASE_CHILD_PID || {{ echo no marker; exit 1; }}"
    a = sups.start(
        "hc-cmd",
        log_cmd,
        [*common, "--health-cmd", health_cmd],
        [str(sick), str(out_cmd), str(okdir)],
    )
    b = sups.start(
        "hc-port", log_port, [*common, "--health-port", str(port)],
        [str(listener), str(out_port), str(port)],
    )  # fmt: skip
    for out, what in ((out_cmd, "--health-cmd"), (out_port, "--health-port")):
        wait_for(functools.partial(notes, out, "broken"), 20, f"the {what} child to break")
        wait_for(functools.partial(starts, out, 2), 10, f"a {what} restart")
        broken = float(notes(out, "broken")[0][1])
        restarted = float(notes(out, "start")[-1][1])
        print(f"\n{what}: broken -> new run started: {restarted - broken:.3f}s")
        # 3 failed checks 0.3 s apart, SIGTERM, a 0.1 s backoff, an interpreter start.
        assert 0.6 < restarted - broken < 4.0
        assert not running(int(notes(out, "start")[0][0]))
    text_cmd, text_port = read(log_cmd), read(log_port)
    failed = "is unhealthy: 3 health checks failed in a row"
    assert f"{failed} (--health-cmd exited with code 1: no marker)" in text_cmd, text_cmd
    assert f"{failed} (127.0.0.1:{port}: " in text_port, text_port
    assert "command killed as unhealthy" in text_cmd
    for sup in (a, b):
        sup.send_signal(signal.SIGTERM)
        assert sup.wait(timeout=15) == 128 + signal.SIGTERM


def test_first_restart_is_immediate_and_the_second_waits_the_delay(
    sups: Supervisors, tmp_path: Path
) -> None:
    failer = tmp_path / "failer.py"
    failer.write_text(FAILER)
    out, log = tmp_path / "out.txt", tmp_path / "sup.log"
    sup = sups.start(  # the default --restart-delay 1s
        "backoff", log, ["--max-restarts", "2", "--restart-window", "1m"],
        [str(failer), str(out)],
    )  # fmt: skip
    code = sup.wait(timeout=30)
    text = read(log)
    assert code == 3, text
    starts_at = [float(row[1]) for row in notes(out, "start")]
    exits_at = [float(row[1]) for row in notes(out, "exit")]
    assert len(starts_at) == len(exits_at) == 3, text  # the first run and two restarts
    first, second = starts_at[1] - exits_at[0], starts_at[2] - exits_at[1]
    print(f"\nexit -> restart: first {first:.3f}s, second {second:.3f}s (--restart-delay 1s)")
    # From the "exit" note to the next "start" note: the exit seen by the supervisor, a new
    # watchdog and an interpreter start (about 0.1-0.3 s on a shared machine, more under
    # load, the same for both restarts), plus the backoff: none for the first failure in
    # the window, 1-1.2 s for the second. The messages above say which wait was chosen.
    assert second >= 1.0, text
    assert second - first > 0.5, text
    assert "command exited with code 3; restarting now (restart 1 of 2 within 1m)" in text
    assert re.search(
        r"command exited with code 3; restarting in 1(\.[0-9]+)?s \(restart 2 of 2 within 1m\)",
        text,
    ), text
    assert "restarts exhausted: 3 failures within 1m with --max-restarts 2" in text, text


def test_breaker_releases_the_lease_to_a_standby(
    cluster: Cluster, sups: Supervisors, tmp_path: Path
) -> None:
    failer, beater = tmp_path / "failer.py", tmp_path / "beater.py"
    failer.write_text(FAILER)
    beater.write_text(BEATER)
    out_a, out_b = tmp_path / "a.txt", tmp_path / "b.txt"
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    a = sups.start(
        "breaker", log_a,
        ["--max-restarts", "2", "--restart-window", "30s", "--restart-delay", "100ms"],
        [str(failer), str(out_a)],
    )  # fmt: skip
    wait_for(lambda: "acquired lease breaker" in read(log_a), 15, "A to hold the lease")
    b = sups.start("breaker", log_b, [], [str(beater), str(out_b), str(tmp_path / "never")])
    code_a = a.wait(timeout=30)
    t_exit = time.time()
    text_a = read(log_a)
    assert code_a == 3, text_a
    assert len(notes(out_a, "start")) == 3, text_a  # the first run and two restarts
    assert "restarting now (restart 1 of 2 within 30s)" in text_a, text_a
    assert re.search(r"restarting in 1[0-2][0-9]ms \(restart 2 of 2 within 30s\)", text_a), text_a
    assert (
        "command exited with code 3; restarts exhausted: 3 failures within 30s with "
        "--max-restarts 2; circuit breaker open: released lease breaker so a standby can "
        "take over"
    ) in text_a, text_a
    assert "waiting for lease breaker" in read(log_b), "B was not queued in time"
    wait_for(lambda: notes(out_b, "start"), 10, "the standby's command")
    start_b = notes(out_b, "start")[0]
    print(f"\nbreaker open -> standby's command started: {float(start_b[1]) - t_exit:.3f}s")
    assert float(start_b[1]) - t_exit < 3.0
    assert int(start_b[2]) > max(int(row[2]) for row in notes(out_a, "start"))
    b.send_signal(signal.SIGTERM)
    assert b.wait(timeout=15) == 128 + signal.SIGTERM
