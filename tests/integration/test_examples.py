"""The examples/ run as written (docs/examples.md), against a real 3-node cluster.

The commands come from the examples' own READMEs (docs/examples.md for the asyncio service),
so the documentation cannot drift from what is tested: lines of an indented block that start
with a prompt (``one$ ``, ``two$ ``, ``$ ``) are commands, run from a scratch directory that
links ``examples/`` (so relative paths and ``scheduler.db`` land there), with the
virtualenv's ``bin`` first on PATH (``python``, ``raftlease``) and ``RAFTLEASE_ENDPOINTS``
pointing at the cluster. Commands that use shell variables (``kill -KILL $SUP``) run under
``bash -c`` with the variables the README tells the reader to copy.

- fenced_scheduler: two ``raftlease run`` supervisors on one lease, only one writes; SIGKILL
  of the active supervisor, the standby writes within the TTL plus slack; a hung worker is
  restarted in place with the same token; the whole active "machine" paused, the standby
  takes over, and the resumed worker's late write is refused by the fence; a late write by
  hand with the old token is refused; the table's tokens never go down.
- async_election_service.py: two copies, one leads; SIGKILL it, the other leads; Ctrl-C
  hands over at once.
- fenced_grpc_service: writes under the lease are accepted, a stale token is refused with
  FAILED_PRECONDITION and the fencing message; ``demo`` shows a paused holder refused.

One cluster serves the module (the examples use different lease names). Every process a
test started is killed at its end, including stopped ones (SIGCONT first).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from integration.conftest import REPO_ROOT, Cluster, free_port

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

pytestmark = pytest.mark.integration

EXAMPLES = REPO_ROOT / "examples"
SCHEDULER_README = EXAMPLES / "fenced_scheduler" / "README.md"
GRPC_README = EXAMPLES / "fenced_grpc_service" / "README.md"
EXAMPLES_DOC = REPO_ROOT / "docs" / "examples.md"

TTL_S = 3.0  # --ttl of the scheduler's commands and the async service's default
SLACK_S = 4.0  # takeover within TTL + SLACK (a loaded 2-core machine, cluster and all)
STEP_S = 15.0  # any other step

PROMPT = re.compile(r"^ {4}(\w*)\$ (.+)$", re.MULTILINE)
STARTED = re.compile(r"worker started: (WORKER=\d+ WATCHDOG=\d+ SUP=\d+ TOKEN=\d+)")


def commands(doc: Path) -> list[tuple[str, str]]:
    """(prompt, command) of every prompt line of an indented block of ``doc``."""
    return PROMPT.findall(doc.read_text(encoding="utf-8"))


def prompted(doc: Path, prompt: str) -> list[str]:
    return [cmd for p, cmd in commands(doc) if p == prompt]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    c.start_all()
    try:
        c.leader()
        yield c
    finally:
        codes = c.terminate_all()
        print(f"exit codes: {codes}\n{c.log_tails()}")


class Shell:
    """Runs README commands in ``workdir`` (with ``examples`` linked in) against ``cluster``;
    ``cleanup()`` kills everything started there."""

    def __init__(self, workdir: Path, cluster: Cluster, **env: str) -> None:
        self.workdir = workdir
        (workdir / "examples").symlink_to(EXAMPLES, target_is_directory=True)
        bindir = str(Path(sys.executable).parent)
        self.env = dict(
            os.environ,
            PATH=f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
            RAFTLEASE_ENDPOINTS=",".join(cluster.endpoints),
            **env,
        )
        self.procs: list[subprocess.Popen[bytes]] = []
        self.pids: set[int] = set()  # more processes to kill: workers, watchdogs

    def start(self, command: str, log: str) -> tuple[subprocess.Popen[bytes], Path]:
        """A long-running command (no shell: the process is the command), output to ``log``."""
        path = self.workdir / log
        with open(path, "ab") as out:
            proc = subprocess.Popen(
                shlex.split(command),
                cwd=self.workdir,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        return proc, path

    def run(self, command: str, **variables: str) -> subprocess.CompletedProcess[str]:
        """A short command under ``bash -c`` with shell variables set."""
        return subprocess.run(
            ["bash", "-c", command],
            cwd=self.workdir,
            env=dict(self.env, **variables),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def cleanup(self) -> None:
        pids = self.pids | {p.pid for p in self.procs if p.poll() is None}
        for pid in pids | set(processes_in(self.workdir)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
        for proc in self.procs:
            proc.wait()


def processes_in(workdir: Path) -> list[int]:
    """Processes (not this one) whose working directory is ``workdir`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if Path(os.readlink(entry / "cwd")) == workdir:
                    found.append(int(entry.name))
    return found


@pytest.fixture
def shell(tmp_path: Path, cluster: Cluster) -> Iterator[Shell]:
    sh = Shell(tmp_path, cluster, STORAGE_ADDRESS=f"127.0.0.1:{free_port()}")
    try:
        yield sh
    finally:
        sh.cleanup()


def wait_for(what: str, predicate: Callable[[], object], timeout: float = STEP_S) -> float:
    """Poll ``predicate`` every 20 ms until true; the seconds it took."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.02)
    return time.monotonic() - start


def text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def count(path: Path, needle: str) -> int:
    return text(path).count(needle)


# -- fenced_scheduler -----------------------------------------------------------------------

KILL = "kill -KILL $SUP"
HANG = "kill -STOP $WORKER"
PAUSE_MACHINE = "kill -STOP $SUP $WATCHDOG $WORKER"
RESUME_WORKER = "kill -CONT $WORKER"
RESUME_REST = "kill -CONT $WATCHDOG $SUP"
PAUSE_SUPERVISOR = "kill -STOP $SUP"
RESUME_SUPERVISOR = "kill -CONT $SUP"
LATE_WRITE = (
    "RAFTLEASE_FENCING_TOKEN=$TOKEN python examples/fenced_scheduler/worker.py "
    "--db scheduler.db --once"
)
SHOW = "python examples/fenced_scheduler/worker.py --db scheduler.db --show"


def started(log: Path) -> dict[str, str]:
    """The variables of the last ``worker started:`` line of ``log`` (WORKER, SUP, ...)."""
    found = STARTED.findall(text(log))
    assert found, f"no 'worker started:' line in {log.name}:\n{text(log)}"
    return dict(word.split("=") for word in found[-1].split())


def took_over(log: Path, above: int) -> bool:
    """Has the worker of ``log``'s last ``worker started:`` line, with a token above
    ``above``, written?"""
    found = STARTED.findall(text(log))
    if not found or int(found[-1].rpartition("TOKEN=")[2]) <= above:
        return False
    return "job " in text(log).rpartition("worker started")[2]


def rows(db: Path) -> list[tuple[int, int]]:
    """(id, token) of every job run, in commit order."""
    with contextlib.closing(sqlite3.connect(db, timeout=10.0)) as conn:
        return list(conn.execute("SELECT id, token FROM runs ORDER BY id"))


def writes_with(db: Path, token: int) -> int:
    return sum(1 for _, t in rows(db) if t == token)


def test_fenced_scheduler_runs_as_written(shell: Shell) -> None:
    run_one, run_two = prompted(SCHEDULER_README, "one"), prompted(SCHEDULER_README, "two")
    assert len(run_one) == 1, run_one
    assert run_one == run_two, "terminal 1 and terminal 2 run the same command"
    run = run_one[0]
    assert f"--ttl {TTL_S:g}s" in run, run
    documented = prompted(SCHEDULER_README, "")
    for cmd in (
        KILL, HANG, PAUSE_MACHINE, RESUME_WORKER, RESUME_REST, LATE_WRITE, SHOW,
        PAUSE_SUPERVISOR, RESUME_SUPERVISOR,
    ):  # fmt: skip
        assert cmd in documented, f"README no longer shows `$ {cmd}`: {documented}"
    db = shell.workdir / "scheduler.db"

    # Two supervisors on one lease: the first runs the worker, the second waits.
    one, one_log = shell.start(run, "one.log")
    wait_for("terminal 1's first job", lambda: "job " in text(one_log))
    a = started(one_log)
    shell.pids |= {int(a["WORKER"]), int(a["WATCHDOG"])}
    assert int(a["SUP"]) == one.pid, a
    two, two_log = shell.start(run, "two.log")
    wait_for("terminal 2 to wait", lambda: "waiting for lease scheduler" in text(two_log))
    time.sleep(1.0)
    assert "worker started" not in text(two_log), text(two_log)
    assert {t for _, t in rows(db)} == {int(a["TOKEN"])}, "only terminal 1 writes"

    # Kill: SIGKILL the active supervisor; the standby writes within the TTL plus slack.
    t0 = time.monotonic()
    assert shell.run(KILL, **a).returncode == 0
    took = wait_for(
        "the standby's first write",
        lambda: took_over(two_log, int(a["TOKEN"])),
        timeout=TTL_S + SLACK_S,
    )
    assert one.wait(5) == -signal.SIGKILL
    b = started(two_log)
    shell.pids |= {int(b["WORKER"]), int(b["WATCHDOG"])}
    assert int(b["TOKEN"]) > int(a["TOKEN"])
    print(f"kill: standby wrote {took:.2f}s after SIGKILL ({time.monotonic() - t0:.2f}s)")
    _, one_log = shell.start(run, "one-again.log")  # terminal 1 again: the new standby
    wait_for("terminal 1 to wait", lambda: "waiting for lease scheduler" in text(one_log))

    # Hang: stop the worker; its supervisor restarts it in place, same token.
    starts = count(two_log, "worker started")
    assert shell.run(HANG, **b).returncode == 0
    wait_for(
        "the hung worker to be restarted",
        lambda: (
            "is hung: no heartbeat" in text(two_log) and count(two_log, "worker started") > starts
        ),
    )
    b2 = started(two_log)
    shell.pids |= {int(b2["WORKER"]), int(b2["WATCHDOG"])}
    assert b2["TOKEN"] == b["TOKEN"], (b, b2)
    assert b2["WORKER"] != b["WORKER"], (b, b2)
    jobs = count(two_log, "job ")
    wait_for("the restarted worker to write", lambda: count(two_log, "job ") > jobs)
    assert "worker started" not in text(one_log), "the standby kept waiting"

    # Pause the whole active machine (just after a write, so it holds no SQLite lock), then
    # resume the worker first: its late write is refused by the fence.
    jobs = count(two_log, "job ")
    wait_for("the next write", lambda: count(two_log, "job ") > jobs)
    assert shell.run(PAUSE_MACHINE, **b2).returncode == 0
    took = wait_for(
        "the standby's write after the pause",
        lambda: took_over(one_log, int(b2["TOKEN"])),
        timeout=TTL_S + SLACK_S,
    )
    c = started(one_log)
    shell.pids |= {int(c["WORKER"]), int(c["WATCHDOG"])}
    print(f"machine pause: standby wrote {took:.2f}s after SIGSTOP")
    old, new = int(b2["TOKEN"]), int(c["TOKEN"])
    assert new > old
    writes_before = writes_with(db, old)
    assert shell.run(RESUME_WORKER, **b2).returncode == 0
    refused = f"REJECTED: stale fencing token {old} for lease 'scheduler': a newer grant"
    wait_for("the late write to be refused", lambda: refused in text(two_log))
    assert shell.run(RESUME_REST, **b2).returncode == 0
    wait_for(
        "terminal 2 to wait again",
        lambda: "waiting for lease scheduler again" in text(two_log),
    )
    assert writes_with(db, old) == writes_before, "the late write changed nothing"

    # A late write by hand, with the old token: refused, exit code 3, nothing written.
    late = shell.run(LATE_WRITE, **b2)
    assert late.returncode == 3, late
    assert refused in late.stderr, late.stderr
    assert writes_with(db, old) == writes_before

    # Pause the supervisor: its watchdog kills the worker before the lease can pass on, and
    # the standby takes over; resumed, the supervisor waits again.
    assert shell.run(PAUSE_SUPERVISOR, **c).returncode == 0
    took = wait_for(
        "the standby's write after the supervisor's pause",
        lambda: took_over(two_log, new),
        timeout=TTL_S + SLACK_S,
    )
    print(f"supervisor pause: standby wrote {took:.2f}s after SIGSTOP")
    d = started(two_log)
    shell.pids |= {int(d["WORKER"]), int(d["WATCHDOG"])}
    assert int(d["TOKEN"]) > new
    assert not alive(int(c["WORKER"])), "the watchdog killed the paused holder's worker"
    assert shell.run(RESUME_SUPERVISOR, **c).returncode == 0
    wait_for(
        "terminal 1 to wait again",
        lambda: "waiting for lease scheduler again" in text(one_log),
    )

    # Ctrl-C: the worker stops, the lease is released, the standby takes over at once.
    two.send_signal(signal.SIGINT)
    took = wait_for(
        "terminal 1 to take over after Ctrl-C",
        lambda: took_over(one_log, int(d["TOKEN"])),
    )
    assert took < TTL_S, f"a released lease passes on at once, not after the TTL ({took:.2f}s)"
    assert two.wait(STEP_S) == 130  # the worker's code after a forwarded SIGINT
    e = started(one_log)
    shell.pids |= {int(e["WORKER"]), int(e["WATCHDOG"])}

    shown = shell.run(SHOW)
    assert shown.returncode == 0, shown
    assert f"fence scheduler: {e['TOKEN']}" in shown.stdout, shown.stdout
    tokens = [t for _, t in rows(db)]
    assert tokens == sorted(tokens), "the table never saw a token lower than an earlier one"
    assert set(tokens) == {int(x["TOKEN"]) for x in (a, b, c, d, e)}, set(tokens)
    for log in (one_log, shell.workdir / "one.log"):
        assert "REJECTED" not in text(log), text(log)
    assert count(two_log, "REJECTED") == 1, text(two_log)
    everything = "".join(text(p) for p in shell.workdir.glob("*.log"))
    assert "Traceback" not in everything, everything


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# -- async_election_service.py ---------------------------------------------------------------


def test_async_election_service_runs_as_written(shell: Shell) -> None:
    runs = [cmd for cmd in prompted(EXAMPLES_DOC, "") if "async_election_service.py" in cmd]
    assert len(runs) == 2, runs
    docstring = text(EXAMPLES / "async_election_service.py")
    for cmd in runs:
        assert f"    {cmd}\n" in docstring, f"the module docstring shows `{cmd}`"
    first, second = runs

    alpha, alpha_log = shell.start(first, "alpha.log")
    wait_for("alpha to lead", lambda: "LEADING token=" in text(alpha_log))
    beta, beta_log = shell.start(second, "beta.log")
    wait_for("beta to see alpha", lambda: "NEW LEADER alpha" in text(beta_log))
    time.sleep(0.5)
    assert "LEADING" not in text(beta_log), text(beta_log)

    alpha.kill()
    took = wait_for(
        "beta to lead", lambda: "LEADING token=" in text(beta_log), timeout=TTL_S + SLACK_S
    )
    print(f"async service: beta leads {took:.2f}s after alpha's SIGKILL")
    both = text(alpha_log) + text(beta_log)
    tokens = [int(t) for t in re.findall(r"LEADING token=(\d+)", both)]
    assert len(tokens) == 2, both
    assert tokens[1] > tokens[0], tokens
    wait_for("beta's work", lambda: "working: step 1 with fencing token" in text(beta_log))

    # Ctrl-C resigns: a waiting copy leads at once, not after a TTL.
    _, again_log = shell.start(first, "alpha-again.log")
    wait_for("alpha to wait", lambda: "NEW LEADER beta" in text(again_log))
    beta.send_signal(signal.SIGINT)
    took = wait_for("alpha to lead again", lambda: "LEADING token=" in text(again_log))
    assert took < TTL_S, f"a resignation hands over at once, not after the TTL ({took:.2f}s)"
    assert beta.wait(STEP_S) == 0
    out = text(beta_log)
    assert "STOPPED LEADING" in out, out
    assert "resigned, exiting" in out, out
    assert "Traceback" not in out + text(alpha_log) + text(again_log)


# -- fenced_grpc_service ----------------------------------------------------------------------


def test_fenced_grpc_service_runs_as_written(shell: Shell) -> None:
    [serve] = prompted(GRPC_README, "one")
    client_cmds = prompted(GRPC_README, "two")
    writes = [cmd for cmd in client_cmds if " write " in cmd and "--token" not in cmd]
    [stale] = [cmd for cmd in client_cmds if "--token" in cmd]
    [demo] = [cmd for cmd in client_cmds if cmd.endswith(" demo")]
    assert len(writes) == 2, client_cmds

    server, server_log = shell.start(serve, "server.log")
    wait_for("the service to listen", lambda: "listening on" in text(server_log))

    tokens = []
    for cmd in writes:
        out = shell.run(cmd)
        assert out.returncode == 0, out
        tokens.append(int(re.findall(r"with fencing token (\d+)", out.stdout)[-1]))
    first, second = tokens
    assert second > first, tokens

    # The README's stale write uses the first write's token, as its sample output shows.
    stale_cmd = re.sub(r"--token \d+", f"--token {first}", stale)
    out = shell.run(stale_cmd)
    assert out.returncode == 1, out
    assert (
        f"write rejected: FAILED_PRECONDITION: stale fencing token {first} for lease "
        f"'storage-writer': a newer grant (token {second}) has already been seen"
    ) in out.stderr, out.stderr

    out = shell.run(demo)  # a paused holder's late write, in one process
    assert out.returncode == 0, out
    assert re.search(
        r"A: write rejected: FAILED_PRECONDITION: stale fencing token (\d+) "
        r"for lease 'storage-writer': a newer grant \(token (\d+)\)",
        out.stdout,
    ), out.stdout
    assert "stored: report='from B'" in out.stdout, out.stdout
    log = text(server_log)
    assert log.count("REJECTED write") == 2, log
    assert server.poll() is None, log


def test_docs_examples_md_shows_the_readmes_commands() -> None:
    """docs/examples.md repeats some README commands: they must stay identical."""
    readme_commands = {cmd for doc in (SCHEDULER_README, GRPC_README) for _, cmd in commands(doc)}
    repeated = [cmd for _, cmd in commands(EXAMPLES_DOC) if "examples/fenced_" in cmd]
    assert len(repeated) >= 5, repeated
    for cmd in repeated:
        assert cmd in readme_commands, f"docs/examples.md shows `{cmd}`, no README does"
    listed = set(re.findall(r"\]\(\.\./examples/([\w.]+)", text(EXAMPLES_DOC)))
    present = {p.name for p in EXAMPLES.iterdir() if not p.name.startswith((".", "__"))}
    assert listed == present, (
        f"docs/examples.md lists {sorted(listed)}, examples/ has {sorted(present)}"
    )
