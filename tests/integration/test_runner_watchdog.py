"""`raftlease run` when the supervisor itself stops or dies: the watchdog kills CMD's whole
tree before the lease can pass on, and the supervisor says what it waits for.

Every test starts real processes (a 3-node cluster, `python -m raftlease run` supervisors,
their watchdogs and commands) and, even when it fails, kills every process it started: the
supervisors by pid, and every process whose command line names the test's temporary
directory (commands, their descendants and the watchdogs).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from integration.conftest import REPO_ROOT, free_port

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from integration.conftest import Cluster

pytestmark = pytest.mark.integration

TTL = "2s"

# Appends "<fencing token> <time.time()>" to one shared file every 10 ms.
WRITER = """\
import os, sys, time
path = sys.argv[1]
token = os.environ["RAFTLEASE_FENCING_TOKEN"]
while True:
    with open(path, "a") as f:
        f.write(f"{token} {time.time():.6f}\\n")
    time.sleep(0.01)
"""

# A command whose descendants leave its process group: a child that calls setpgid(0, 0) and
# a daemon (setsid() then a second fork, so it is re-parented). Each writes "<kind> <pid>".
ESCAPER = """\
import os, sys, time
out = sys.argv[1]
def note(kind):
    with open(out, "a") as f:
        f.write(f"{kind} {os.getpid()}\\n")
def forever():
    while True:
        time.sleep(0.05)
if os.fork() == 0:
    os.setpgid(0, 0)
    note("pgid")
    forever()
middle = os.fork()
if middle == 0:
    os.setsid()
    if os.fork() == 0:
        note("daemon")
        forever()
    os._exit(0)
os.waitpid(middle, 0)
note("cmd")
forever()
"""


class Procs:
    """The supervisors a test started; `cleanup()` kills them and everything under `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)
        self.procs: list[subprocess.Popen[bytes]] = []

    def runner(
        self, endpoints: list[str], name: str, log: Path, *args: str, ttl: str = TTL
    ) -> subprocess.Popen[bytes]:
        """`raftlease run NAME --ttl TTL ... -- python ARGS...`, stdout+stderr to `log`."""
        with open(log, "ab") as log_file:
            proc = subprocess.Popen(
                [
                    sys.executable, "-m", "raftlease", "run", name, "--ttl", ttl,
                    "--endpoints", ",".join(endpoints), "--", sys.executable, *args,
                ],
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.procs.append(proc)
        return proc

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGCONT)
                    proc.kill()
                proc.wait()
        for pid in pids_mentioning(self.marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    p = Procs(tmp_path)
    try:
        yield p
    finally:
        p.cleanup()


def describe(pids: list[int]) -> str:
    out = []
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().split()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")[:200]
        except OSError:
            continue
        out.append(f"{pid} state {stat[2]} ppid {stat[3]}: {cmd.decode(errors='replace')}")
    return "; ".join(out)


def pids_mentioning(text: str) -> list[int]:
    """Processes (not this one) whose command line contains `text` (Linux /proc)."""
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
    """True if the process exists and is not a zombie."""
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


def rows(path: Path) -> list[tuple[int, float]]:
    """The (token, time) lines of the writers' file (a torn last line is skipped)."""
    out: list[tuple[int, float]] = []
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit():
            try:
                out.append((int(parts[0]), float(parts[1])))
            except ValueError:
                continue
    return out


def read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def test_sigstop_of_the_supervisor_never_lets_two_commands_overlap(
    cluster: Cluster, tmp_path: Path, procs: Procs
) -> None:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    out = tmp_path / "tokens.txt"
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    a = procs.runner(cluster.endpoints, "sigstop", log_a, str(script), str(out))
    wait_for(lambda: len(rows(out)) >= 5, 15, "the first supervisor's command to write")
    token1 = rows(out)[0][0]
    b = procs.runner(cluster.endpoints, "sigstop", log_b, str(script), str(out))
    wait_for(lambda: "waiting for lease sigstop" in read(log_b), 15, "the standby to wait")
    time.sleep(0.5)
    assert {t for t, _ in rows(out)} == {token1}

    a.send_signal(signal.SIGSTOP)  # the active supervisor freezes: no keepalive, no kill
    t_stop = time.monotonic()
    try:
        wait_for(lambda: any(t != token1 for t, _ in rows(out)), 10, "the standby to take over")
        takeover = time.monotonic() - t_stop
        time.sleep(max(0.0, 6.0 - (time.monotonic() - t_stop)))
    finally:
        a.send_signal(signal.SIGCONT)
    wait_for(lambda: "waiting for lease sigstop" in read(log_a), 15, "A to wait again")
    a.send_signal(signal.SIGTERM)  # the waiting one first, so it cannot take over
    assert a.wait(timeout=15) == 128 + signal.SIGTERM, read(log_a)
    b.send_signal(signal.SIGTERM)
    assert b.wait(timeout=15) == 128 + signal.SIGTERM, read(log_b)  # forwarded to the writer

    data = rows(out)
    tokens = [t for t, _ in data]
    token2 = next(t for t in tokens if t != token1)
    assert token2 > token1
    first2 = tokens.index(token2)
    last1 = max(ts for t, ts in data if t == token1)
    start2 = min(ts for t, ts in data if t == token2)
    overlap = f"the old command wrote for {last1 - start2:.3f}s after the new one started"
    assert set(tokens[:first2]) == {token1}
    assert token1 not in tokens[first2:], overlap
    assert last1 < start2, overlap
    print(
        f"\nSIGSTOP of the holder: takeover after {takeover:.2f}s; the old command's last line "
        f"{start2 - last1:.3f}s before the new command's first (ttl {TTL})"
    )
    assert not pids_mentioning(str(script)), "a writer is still running"
    assert "the watchdog killed the command" in read(log_a)


@pytest.mark.parametrize("how", ["sigkill", "sigstop"])
def test_descendants_that_left_the_process_group_die_too(
    cluster: Cluster, tmp_path: Path, procs: Procs, how: str
) -> None:
    script = tmp_path / "escaper.py"
    script.write_text(ESCAPER)
    out = tmp_path / "pids.txt"
    log = tmp_path / "runner.log"
    sup = procs.runner(cluster.endpoints, f"escape-{how}", log, str(script), str(out))

    def pids() -> dict[str, int]:
        return {k: int(v) for k, v in (line.split() for line in read(out).splitlines())}

    wait_for(lambda: len(pids()) == 3, 15, "the command and its two escaped descendants")
    found = pids()
    assert all(running(pid) for pid in found.values()), found
    assert os.getpgid(found["pgid"]) != os.getpgid(found["cmd"])
    assert os.getsid(found["daemon"]) != os.getsid(found["cmd"])

    if how == "sigkill":
        sup.kill()
        sup.wait()
        limit = 1.0  # the watchdog sees its pipe close at once
    else:
        sup.send_signal(signal.SIGSTOP)
        limit = 2.0  # before the lease's validity (ttl 2 s) runs out
    t0 = time.monotonic()
    took = wait_for(lambda: not any(running(p) for p in found.values()), limit + 1.0, "deaths")
    print(f"\n{how} of the supervisor: command tree dead after {took:.2f}s")
    assert took < limit
    if how == "sigstop":
        assert took > 0.5  # it was the deadline, not something else, that killed them
        sup.send_signal(signal.SIGCONT)
        wait_for(lambda: "the watchdog killed the command" in read(log), 10, "the report")
        sup.send_signal(signal.SIGTERM)
        assert sup.wait(timeout=15) == 128 + signal.SIGTERM, read(log)
    assert time.monotonic() - t0 < 20
    wait_for(lambda: not pids_mentioning(str(script)), 2, "the watchdog to exit too")


def test_wait_says_what_it_waits_for_and_gives_up(tmp_path: Path) -> None:
    ports: list[int] = []
    for _ in range(3):
        ports.append(free_port(avoid=ports))
    endpoints = ",".join(f"127.0.0.1:{port}" for port in ports)  # nothing listens
    lines: list[tuple[float, str]] = []
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "raftlease", "run", "--wait", "2s", "x", "--endpoints",
         endpoints, "--", "true"],
        cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        stream = proc.stdout

        def pump() -> None:
            for line in stream:
                lines.append((time.monotonic() - t0, line.rstrip("\n")))

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        code = proc.wait(timeout=15)
        elapsed = time.monotonic() - t0
        reader.join(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    text = "\n".join(line for _, line in lines)
    print(f"\n{text}\n(exit {code} after {elapsed:.2f}s)")
    assert code == 1, text
    assert lines, "nothing was said"
    first_at, first = lines[0]
    assert first.startswith(f"raftlease run: cluster unavailable at {endpoints}: "), first
    assert "retrying" in first
    so_far = float(first.rsplit("(", 1)[1].split()[0])
    assert so_far <= 1.0, first  # said within a second of starting to wait
    assert first_at < 3.0  # including the interpreter's start
    last = lines[-1][1]
    assert last.startswith("raftlease: error: gave up waiting for lease x after 2s ("), last
    assert f"cluster unavailable at {endpoints}: " in last
    assert all(line.startswith("raftlease run: ") for _, line in lines[:-1]), text
    assert 2.0 <= elapsed < 6.0


class WatchdogDriver:
    """The supervisor's side of the watchdog protocol, by hand, for a watchdog run alone."""

    def __init__(self, *command: str, interval: float = 0.05) -> None:
        from raftlease.client.runner import WATCHDOG_PATH

        feed_r, self.feed_w = os.pipe()
        self.report_r, report_w = os.pipe()
        self.proc = subprocess.Popen(
            [sys.executable, "-I", WATCHDOG_PATH, str(feed_r), str(report_w), str(interval),
             "--", *command],
            pass_fds=(feed_r, report_w), start_new_session=True, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        os.close(feed_r)
        os.close(report_w)
        self.buf = b""
        self.cmd_pid: int | None = None

    def next(self, timeout: float = 5.0) -> tuple[str, list[str]]:
        """The next line from the watchdog (blocking)."""
        import select

        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.report_r], [], [], max(0.0, left))
            assert ready, "the watchdog said nothing"
            data = os.read(self.report_r, 4096)
            assert data, "the watchdog closed its report pipe"
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        kind, *fields = line.decode().split()
        if kind == "R":
            self.cmd_pid = int(fields[0])
        return kind, fields

    def send(self, text: str) -> None:
        os.write(self.feed_w, text.encode())

    def answer(self, seconds: float) -> None:
        kind, fields = self.next()
        assert kind == "P", (kind, fields)
        self.send(f"D {fields[0]} {seconds}\n")

    def close(self) -> None:
        for fd in (self.feed_w, self.report_r):
            with contextlib.suppress(OSError):
                os.close(fd)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self.cmd_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.cmd_pid, signal.SIGKILL)


def test_watchdog_alone_deadline_signals_and_refusal() -> None:
    # Fed, then starved: it kills CMD within the last answer and reports it.
    wd = WatchdogDriver("sleep", "30")
    try:
        wd.answer(0.5)
        assert wd.next()[0] == "R"
        assert wd.cmd_pid is not None
        assert running(wd.cmd_pid)
        for _ in range(5):
            wd.answer(0.5)
        t0 = time.monotonic()
        kind, fields = wd.next()  # a ping we do not answer, then the report
        if kind == "P":
            kind, fields = wd.next()
        took = time.monotonic() - t0
        assert (kind, fields) == ("X", ["-9", "deadline"])
        assert took <= 0.5 + 0.2
        assert not running(wd.cmd_pid)
        assert wd.proc.wait(timeout=5) == 0
    finally:
        wd.close()

    # A forwarded SIGTERM reaches CMD's group; CMD's own exit is reported as such.
    wd = WatchdogDriver("sleep", "30")
    try:
        wd.answer(5.0)
        assert wd.next()[0] == "R"
        wd.send("S 15\n")
        kind, fields = wd.next()
        while kind == "P":
            wd.send(f"D {fields[0]} 5\n")
            kind, fields = wd.next()
        assert (kind, fields) == ("X", ["-15", "exited"])
    finally:
        wd.close()

    # No time left at the first answer: CMD is never started.
    wd = WatchdogDriver("sleep", "30")
    try:
        wd.answer(0.0)
        assert wd.next() == ("X", ["-", "refused"])
        assert wd.cmd_pid is None
    finally:
        wd.close()

    # The supervisor's end closes (it died): the tree dies at once.
    wd = WatchdogDriver("sleep", "30")
    try:
        wd.answer(30.0)
        assert wd.next()[0] == "R"
        pid = wd.cmd_pid
        assert pid is not None
        os.close(wd.feed_w)
        kind, fields = wd.next()
        while kind == "P":
            kind, fields = wd.next()
        assert (kind, fields) == ("X", ["-9", "orphaned"])
        assert not running(pid)
    finally:
        wd.close()
