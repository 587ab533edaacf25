"""A scheduled job, run by ``raftlease run`` on every machine, that writes to SQLite through a
fence (examples/fenced_scheduler/README.md)::

    raftlease run scheduler --ttl 3s --heartbeat-timeout 2s -- \\
        python examples/fenced_scheduler/worker.py --db scheduler.db

Every ``--every`` seconds it records one job run in the table ``runs``, in one SQLite
transaction that first raises the fence (the table ``fence``: the highest fencing token that
has written, per lease name) to its own token, and writes nothing if a newer token is already
there. So a holder that was paused and acts after its lease passed on is refused, however
late its write arrives: the fencing check is in the same transaction as the write.

The token, the lease name and the heartbeat pipe come from the environment ``raftlease run``
sets (``RAFTLEASE_FENCING_TOKEN``, ``RAFTLEASE_LEASE_NAME``, ``RAFTLEASE_HEARTBEAT_FD``).
``--once`` makes one write and exits (a late write by hand: set ``RAFTLEASE_FENCING_TOKEN``
yourself); ``--show`` prints what each token wrote. Exit codes: 0 (``--once``, ``--show``),
130 after Ctrl-C, and 3 when a write was refused as stale: a newer holder has written, so this
one stops (every later attempt with its token would be refused too).
"""

from __future__ import annotations

import argparse
import os
import socket
import sqlite3
import sys
import time
from pathlib import Path

from raftlease.client.errors import StaleToken
from raftlease.heartbeat import beat, interval

STALE_EXIT = 3

SCHEMA = """
CREATE TABLE IF NOT EXISTS fence (name TEXT PRIMARY KEY, token INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    token INTEGER NOT NULL,
    worker TEXT NOT NULL,
    at REAL NOT NULL
);
"""


def connect(path: str) -> sqlite3.Connection:
    # isolation_level=None: no implicit transactions; fenced_write() opens its own.
    db = sqlite3.connect(path, timeout=10.0, isolation_level=None)
    db.executescript(SCHEMA)
    return db


def fenced_write(db: sqlite3.Connection, name: str, token: int, worker: str) -> int:
    """Record one job run with ``token``, in one transaction that refuses a stale token.

    ``BEGIN IMMEDIATE`` takes the write lock first, so no other writer can move the fence
    between the check and the insert. Raises :class:`StaleToken` (and writes nothing) if a
    newer token has already written under ``name``; else returns the new row's id.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("INSERT OR IGNORE INTO fence (name, token) VALUES (?, ?)", (name, token))
        raised = db.execute(
            "UPDATE fence SET token = ? WHERE name = ? AND token <= ?", (token, name, token)
        )
        if raised.rowcount != 1:
            (highest,) = db.execute("SELECT token FROM fence WHERE name = ?", (name,)).fetchone()
            raise StaleToken(name, token, highest)
        row = db.execute(
            "INSERT INTO runs (name, token, worker, at) VALUES (?, ?, ?, ?)",
            (name, token, worker, time.time()),
        )
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    assert row.lastrowid is not None
    return row.lastrowid


def show(db: sqlite3.Connection) -> None:
    """What each token wrote: runs, first and last time, and which worker."""
    query = (
        "SELECT name, token, worker, COUNT(*), MIN(at), MAX(at) FROM runs "
        "GROUP BY name, token, worker ORDER BY MIN(at)"
    )
    for name, token, worker, count, first, last in db.execute(query):
        span = f"{time.strftime('%H:%M:%S', time.localtime(first))}"
        span += f"-{time.strftime('%H:%M:%S', time.localtime(last))}"
        print(f"{name} token {token}: {count} runs {span} by {worker}")
    for name, token in db.execute("SELECT name, token FROM fence ORDER BY name"):
        print(f"fence {name}: {token}")


def pids(token: int) -> str:
    """This worker's pid, its watchdog's (the parent) and the supervisor's (the watchdog's
    parent), and the token, as shell assignments for the README's kill commands."""
    watchdog = os.getppid()
    try:
        stat = Path(f"/proc/{watchdog}/stat").read_text()
        supervisor = stat.rsplit(")", 1)[1].split()[1]  # the field after the state
    except (OSError, IndexError):
        supervisor = "?"
    return f"WORKER={os.getpid()} WATCHDOG={watchdog} SUP={supervisor} TOKEN={token}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="scheduler.db", help="SQLite file (default %(default)s)")
    parser.add_argument("--every", type=float, default=0.5, help="seconds between job runs")
    parser.add_argument("--once", action="store_true", help="one write, then exit")
    parser.add_argument("--show", action="store_true", help="print what each token wrote")
    args = parser.parse_args()

    db = connect(args.db)
    if args.show:
        show(db)
        return 0
    text = os.environ.get("RAFTLEASE_FENCING_TOKEN", "")
    if not text.isdigit():
        parser.error("RAFTLEASE_FENCING_TOKEN is not set: run me under `raftlease run`")
    token = int(text)
    name = os.environ.get("RAFTLEASE_LEASE_NAME", "scheduler")
    worker = f"{socket.gethostname()}:{os.getpid()}"
    if not args.once:
        print(f"worker started: {pids(token)}", flush=True)
    period = min(args.every, interval() or args.every)  # beat at least every third of timeout
    next_run = time.monotonic()
    while True:
        try:
            job = fenced_write(db, name, token, worker)
        except StaleToken as err:
            print(f"REJECTED: {err}", file=sys.stderr, flush=True)
            return STALE_EXIT
        print(f"job {job}: written with fencing token {token}", flush=True)
        if args.once:
            return 0
        beat(token=token, last_job=job)  # alive, and the status `raftlease holder` shows
        next_run = max(next_run + args.every, time.monotonic())
        while (left := next_run - time.monotonic()) > 0:
            time.sleep(min(period, left))
            beat()


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:  # Ctrl-C: the supervisor forwards SIGINT, then releases
        raise SystemExit(130) from None
