"""Takeover benchmark of `raftlease run`: time from a fault to the work running again.

    .venv/bin/python bench/takeover.py                       # 5 trials per row (~5 min)
    .venv/bin/python bench/takeover.py --trials 3 --ttls 2   # fewer
    .venv/bin/python bench/takeover.py --json-out bench/results/takeover.json

A fresh local 3-node cluster (real `raftlease serve` processes); per trial a fresh lease name
and two `raftlease run` supervisors on it, A (active) and B (standby, queued), both running
the same worker. The worker sends a datagram "<fencing token> <pid>" every 10 ms to a
"resource" in this process (a Unix datagram socket) that accepts a write only through
`FencingGuard.check` (raftlease.client.fencing), and beats every 50 ms
(raftlease.heartbeat.beat). Faults, each measured from the moment just before the signal:

- `kill`: SIGKILL of A, the active supervisor. A's watchdog kills its worker at once; B gets
  the lease when it expires. Measured: the first accepted write of B's worker (a higher
  token).
- `hang`: SIGSTOP of A's worker (a hung worker). A stops receiving beats and after
  `--heartbeat-timeout` sends SIGTERM + SIGCONT (SIGKILL after `--kill-grace`) and restarts
  it under the same lease, at once: it is A's first failure, and only later failures within
  the window wait `--restart-delay` and more. Measured: the first accepted write of the new
  worker (a new pid). B stays queued.
- `pause`: SIGSTOP of A, the active supervisor (a paused holder). A's watchdog kills A's worker
  before the lease could pass; B gets the lease when it expires. Measured: the first accepted
  write of B's worker. Then A is resumed (SIGCONT) and the paused holder's late write is
  delivered: one write with A's token, sent by this script as the delayed message of a
  resumed holder (A's own worker is dead by design, so it cannot send it itself). Counted:
  late writes (the injected one plus any real write with A's token after B's first) and how
  many the fencing guard rejected.

Prints one JSON object (every trial) and a table: median and max per fault and TTL, against
the goal (TTL + 0.3 s after a crash or pause, heartbeat timeout + 0.3 s after a hang).
Timing never sets the exit code; a trial that fails to take over makes it 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from raftlease.client._values import parse_duration  # noqa: E402
from raftlease.client.errors import StaleToken  # noqa: E402
from raftlease.client.fencing import FencingGuard  # noqa: E402
from raftlease.testing.local import LocalCluster  # noqa: E402

WORKER = """\
import os, socket, sys, time
from raftlease.heartbeat import beat
addr = sys.argv[1]
msg = f"{os.environ['RAFTLEASE_FENCING_TOKEN']} {os.getpid()}".encode()
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
n = 0
while True:
    try:
        s.sendto(msg, addr)
    except OSError:
        pass
    if n % 5 == 0:
        beat(writes=n)
    n += 1
    time.sleep(0.01)
"""

SLACK_S = 0.3  # the goal: takeover within TTL (or heartbeat timeout) + 0.3 s


@dataclass
class Write:
    t: float  # time.monotonic() at the resource
    token: int
    pid: int
    accepted: bool


@dataclass
class Resource:
    """A fenced resource: every write goes through FencingGuard.check at arrival."""

    path: str
    name: str = "resource"
    guard: FencingGuard = field(default_factory=FencingGuard)
    writes: list[Write] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                data = self.sock.recv(256)
            except TimeoutError:
                continue
            except OSError:
                return
            self.write(data)

    def write(self, data: bytes) -> bool:
        now = time.monotonic()
        try:
            token_text, pid_text = data.decode().split()
            token, pid = int(token_text), int(pid_text)
        except ValueError:
            return False
        with self.lock:
            try:
                self.guard.check(self.name, token)
                accepted = True
            except StaleToken:
                accepted = False
            self.writes.append(Write(now, token, pid, accepted))
        return accepted

    def snapshot(self) -> list[Write]:
        with self.lock:
            return list(self.writes)

    def close(self) -> None:
        self.stop.set()
        self.sock.close()
        self.thread.join(timeout=2)


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


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.005)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


class Trial:
    def __init__(self, args: argparse.Namespace, endpoints: str, root: Path, label: str) -> None:
        self.args = args
        self.endpoints = endpoints
        self.dir = root / label
        self.dir.mkdir(parents=True)
        self.name = label
        self.worker = self.dir / "worker.py"
        self.worker.write_text(WORKER)
        self.resource = Resource(str(self.dir / "res.sock"), name=label)
        self.procs: list[subprocess.Popen[bytes]] = []

    def supervisor(self, tag: str, ttl: float) -> subprocess.Popen[bytes]:
        a = self.args
        log = open(self.dir / f"{tag}.log", "ab")  # noqa: SIM115 - closed with the trial
        proc = subprocess.Popen(
            [sys.executable, "-m", "raftlease", "run", self.name, "--ttl", f"{ttl}s",
             "--endpoints", self.endpoints, "--heartbeat-timeout", a.heartbeat_timeout,
             "--kill-grace", a.kill_grace, "--restart-delay", a.restart_delay,
             "--", sys.executable, str(self.worker), self.resource.path],
            cwd=REPO, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        self.procs.append(proc)
        return proc

    def log(self, tag: str) -> str:
        path = self.dir / f"{tag}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGCONT)
                    proc.kill()
                proc.wait()
        for pid in pids_mentioning(str(self.worker)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
        self.resource.close()


def run_trial(
    args: argparse.Namespace, endpoints: str, root: Path, fault: str, ttl: float, i: int
) -> dict[str, Any]:
    trial = Trial(args, endpoints, root, f"{fault}-{ttl:g}s-{i}")
    res = trial.resource
    try:
        a = trial.supervisor("a", ttl)
        wait_for(lambda: res.snapshot(), 20, "A's worker to write")
        first = res.snapshot()[0]
        token_a, pid_a = first.token, first.pid
        trial.supervisor("b", ttl)
        wait_for(lambda: "waiting for lease" in trial.log("b"), 20, "B to queue")
        time.sleep(0.5)  # steady state: a few renewals, beats and writes
        assert all(w.token == token_a for w in res.snapshot()), "B's worker ran"
        out: dict[str, Any] = {"fault": fault, "ttl_s": ttl, "trial": i, "token_a": token_a}

        if fault == "hang":
            t0 = time.monotonic()
            os.kill(pid_a, signal.SIGSTOP)

            def restarted() -> Write | None:
                return next((w for w in res.snapshot() if w.t > t0 and w.pid != pid_a), None)

            wait_for(restarted, 30, "A to restart its worker")
            w = restarted()
            assert w is not None
            out["takeover_s"] = w.t - t0
            out["same_token"] = w.token == token_a
            out["holder"] = "a" if w.token == token_a else "b"
            return out

        t0 = time.monotonic()
        os.kill(a.pid, signal.SIGKILL if fault == "kill" else signal.SIGSTOP)

        def taken() -> Write | None:
            return next((w for w in res.snapshot() if w.token > token_a and w.accepted), None)

        wait_for(taken, 30, "B to take over")
        w = taken()
        assert w is not None
        out["takeover_s"] = w.t - t0
        out["token_b"] = w.token
        last_a = max(x.t for x in res.snapshot() if x.token == token_a)
        out["gap_s"] = w.t - last_a  # the old worker's last write before the new one's first
        if fault == "pause":
            time.sleep(0.2)
            a.send_signal(signal.SIGCONT)
            wait_for(lambda: "waiting for lease" in trial.log("a").split("acquired")[-1], 20,
                     "A to wait again after its resume")  # fmt: skip
            late_accepted = res.write(f"{token_a} {pid_a}".encode())  # the delayed message
            late = [x for x in res.snapshot() if x.token == token_a and x.t > w.t]
            out["late_writes"] = len(late)
            out["late_rejected"] = sum(1 for x in late if not x.accepted)
            out["injected_accepted"] = late_accepted
            out["a_said_killed"] = "the watchdog killed the command" in trial.log("a")
        return out
    except (TimeoutError, AssertionError) as err:
        return {"fault": fault, "ttl_s": ttl, "trial": i, "error": str(err),
                "log_a": trial.log("a")[-2000:], "log_b": trial.log("b")[-2000:]}  # fmt: skip
    finally:
        trial.cleanup()


def summarize(results: list[dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    hb = parse_duration(args.heartbeat_timeout)
    rows = []
    for fault in args.faults:
        for ttl in args.ttls:
            these = [r for r in results if r["fault"] == fault and r["ttl_s"] == ttl]
            ok = [r["takeover_s"] for r in these if "takeover_s" in r]
            goal = (hb if fault == "hang" else ttl) + SLACK_S
            row: dict[str, Any] = {
                "fault": fault,
                "ttl_s": ttl,
                "trials": len(these),
                "failed": len(these) - len(ok),
                "median_s": round(statistics.median(ok), 3) if ok else None,
                "min_s": round(min(ok), 3) if ok else None,
                "max_s": round(max(ok), 3) if ok else None,
                "goal_s": round(goal, 3),
                "median_meets_goal": bool(ok) and statistics.median(ok) <= goal,
                "max_meets_goal": bool(ok) and max(ok) <= goal,
            }
            if fault == "pause":
                row["late_writes"] = sum(r.get("late_writes", 0) for r in these)
                row["late_rejected"] = sum(r.get("late_rejected", 0) for r in these)
            rows.append(row)
    return rows


def table(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    what = {
        "kill": "SIGKILL of the active supervisor",
        "hang": f"SIGSTOP of the worker (--heartbeat-timeout {args.heartbeat_timeout})",
        "pause": "SIGSTOP of the active supervisor",
    }
    lines = [
        "| fault | TTL | median | max | goal | late writes rejected |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        late = f"{r['late_rejected']} / {r['late_writes']}" if "late_writes" in r else ""
        failed = f" ({r['failed']} of {r['trials']} failed)" if r["failed"] else ""
        med = "-" if r["median_s"] is None else f"{r['median_s']:.2f} s"
        mx = "-" if r["max_s"] is None else f"{r['max_s']:.2f} s"
        lines.append(
            f"| {what[r['fault']]}{failed} | {r['ttl_s']:g} s | {med} | {mx} | "
            f"≤ {r['goal_s']:.2f} s | {late} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--trials", type=int, default=5, help="trials per fault and TTL (default 5)")
    p.add_argument("--ttls", default="2,5", help="lease TTLs in seconds (default 2,5)")
    p.add_argument("--faults", default="kill,hang,pause", help="default kill,hang,pause")
    p.add_argument("--heartbeat-timeout", default="1s", help="for the hang fault (default 1s)")
    p.add_argument("--kill-grace", default="500ms", help="(default 500ms)")
    p.add_argument(
        "--restart-delay",
        default="1s",
        help="(default 1s, as raftlease run's; a hang trial's one restart does not wait it)",
    )
    p.add_argument("--json-out", default=None, help="also write the JSON here")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data)")
    args = p.parse_args(argv)
    args.ttls = [float(t) for t in args.ttls.split(",")]
    args.faults = [f.strip() for f in args.faults.split(",")]
    bad = set(args.faults) - {"kill", "hang", "pause"}
    if bad:
        p.error(f"unknown faults: {', '.join(sorted(bad))}")

    root = Path(tempfile.mkdtemp(prefix="raftlease-takeover-"))
    cluster = LocalCluster(
        root / "cluster", 3, cwd=REPO, env={"RAFTLEASE_LOG_LEVEL": "WARNING"}, new_session=True
    )
    results: list[dict[str, Any]] = []
    started = time.time()
    try:
        cluster.start_all()
        cluster.wait_leader(30)
        endpoints = ",".join(cluster.endpoints)
        for fault in args.faults:
            for ttl in args.ttls:
                for i in range(args.trials):
                    r = run_trial(args, endpoints, root, fault, ttl, i)
                    results.append(r)
                    took = f"{r['takeover_s']:.3f}s" if "takeover_s" in r else r.get("error")
                    print(f"# {fault} ttl {ttl:g}s trial {i}: {took}", file=sys.stderr, flush=True)
    finally:
        cluster.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    rows = summarize(results, args)
    report = {
        "bench": "takeover",
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "command": " ".join([".venv/bin/python", "bench/takeover.py", *(argv or sys.argv[1:])]),
        "settings": {
            "heartbeat_timeout": args.heartbeat_timeout,
            "kill_grace": args.kill_grace,
            "restart_delay": args.restart_delay,
            "trials": args.trials,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "summary": rows,
        "trials": results,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n")
    print("\n" + table(rows, args))
    return 1 if any(r["failed"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
