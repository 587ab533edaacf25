"""Watch on a real 3-node cluster: a handover to a waiter is seen as release THEN acquire.

Client A holds a lease, client B waits for it, A releases. The leader applies one log entry
that ends A's grant and grants B, and its Watch streams send ``released`` (A) and
``acquired`` (B) with that entry's index. Every watcher (the sync client, the async client,
and ``raftlease watch NAME`` as a subprocess) must show both; de-duplicating watch events by
index alone delivered only the release, so "who holds it now" was wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING

import pytest

from raftlease.client import AsyncLeaseClient, Lease, WatchEvent

if TYPE_CHECKING:
    from pathlib import Path

    from integration.conftest import Cluster

pytestmark = pytest.mark.integration

NAME = "handover"
EVENT_TIMEOUT_S = 10.0

# (kind, holder, lease_id, index): what a watcher saw, whichever watcher it was
Seen = tuple[str, str, int, int]

# `raftlease watch` prints: "{kind:<8}  {name}  holder=H token=T lease_id=L  index=I"
_CLI_LINE = re.compile(
    r"^(?P<kind>\w+)\s+(?P<name>\S+)\s+holder=(?P<holder>\S*) token=\d+ "
    r"lease_id=(?P<lease_id>\d+)\s+index=(?P<index>\d+)$"
)


def _seen(event: WatchEvent) -> Seen:
    assert event.lease is not None, event
    return (event.kind, event.lease.holder, event.lease.lease_id, event.index)


def _next(q: queue.Queue[Seen], who: str) -> Seen:
    try:
        return q.get(timeout=EVENT_TIMEOUT_S)
    except queue.Empty:
        raise AssertionError(f"{who}: no watch event within {EVENT_TIMEOUT_S}s") from None


def _changes_after_current(q: queue.Queue[Seen], count: int) -> list[Seen | str]:
    """The next ``count`` changes (a ``current`` re-sent after a reconnect is skipped); a
    ``"timeout"`` entry ends the list if they did not all come within EVENT_TIMEOUT_S."""
    out: list[Seen | str] = []
    deadline = time.monotonic() + EVENT_TIMEOUT_S
    while len(out) < count:
        try:
            seen = q.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            out.append(f"timeout: no further event within {EVENT_TIMEOUT_S}s")
            break
        if seen[0] != "current":
            out.append(seen)
    return out


def _wait_for_waiter(cluster: Cluster, lease: Lease) -> None:
    """Until the leader reports a queued waiter on NAME."""
    deadline = time.monotonic() + EVENT_TIMEOUT_S
    with cluster.client() as probe:
        while time.monotonic() < deadline:
            info = probe.holder(NAME)
            if info is not None and info.lease_id == lease.lease_id and info.waiters >= 1:
                return
            time.sleep(0.02)
    raise AssertionError(f"B never showed up as a waiter on {NAME!r}")


def test_handover_to_a_waiter_is_watched_as_release_then_acquire(
    cluster: Cluster, tmp_path: Path
) -> None:
    endpoints = ",".join(cluster.endpoints)
    queues: dict[str, queue.Queue[Seen]] = {w: queue.Queue() for w in ("sync", "async", "cli")}
    stop_async = threading.Event()

    with cluster.client() as a, cluster.client() as b, cluster.client() as watcher:
        lease_a = a.acquire(NAME, ttl=5.0, holder="A")

        # 1. the sync client
        stream = watcher.watch(NAME)

        def pump_sync() -> None:
            for event in stream:
                queues["sync"].put(_seen(event))

        threading.Thread(target=pump_sync, daemon=True).start()

        # 2. the async client, on its own event loop
        async def watch_async() -> None:
            async with AsyncLeaseClient(cluster.endpoints, timeout=10.0) as client:

                async def pump() -> None:
                    async for event in client.watch(NAME):
                        queues["async"].put(_seen(event))

                task = asyncio.create_task(pump())
                await asyncio.to_thread(stop_async.wait, 60.0)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

        async_thread = threading.Thread(target=asyncio.run, args=(watch_async(),), daemon=True)
        async_thread.start()

        # 3. the CLI
        cli_err = tmp_path / "cli-watch.stderr"
        with open(cli_err, "wb") as err_file:
            cli = subprocess.Popen(
                [sys.executable, "-m", "raftlease", "watch", NAME, "--endpoints", endpoints],
                stdout=subprocess.PIPE,
                stderr=err_file,
                stdin=subprocess.DEVNULL,
                text=True,
            )
        cli_lines: list[str] = []

        def pump_cli() -> None:
            assert cli.stdout is not None
            for line in cli.stdout:
                cli_lines.append(line.rstrip("\n"))
                match = _CLI_LINE.match(line.strip())
                if match is not None and match["name"] == NAME:
                    queues["cli"].put(
                        (
                            match["kind"],
                            match["holder"],
                            int(match["lease_id"]),
                            int(match["index"]),
                        )
                    )

        cli_thread = threading.Thread(target=pump_cli, daemon=True)
        cli_thread.start()

        try:
            # Every watcher is subscribed (it has shown A as the current holder).
            for who, q in queues.items():
                kind, holder, lease_id, _ = _next(q, who)
                assert (kind, holder, lease_id) == ("current", "A", lease_a.lease_id), (
                    who,
                    cli_lines,
                )

            # B queues for the lease; A releases; the leader hands it to B in one entry.
            got: queue.Queue[Lease | BaseException] = queue.Queue()

            def acquire_b() -> None:
                try:
                    got.put(b.acquire(NAME, ttl=5.0, wait=20.0, holder="B"))
                except BaseException as err:  # report it in the test thread
                    got.put(err)

            threading.Thread(target=acquire_b, daemon=True).start()
            _wait_for_waiter(cluster, lease_a)
            lease_a.release()
            result = got.get(timeout=EVENT_TIMEOUT_S)
            if isinstance(result, BaseException):
                raise result
            lease_b = result
            assert lease_b.holder == "B"

            # One log entry ended A's grant and made B's: both events carry its index, which
            # is also B's fencing token. Every watcher must show both, release first.
            index = lease_b.fencing_token
            want: list[Seen | str] = [
                ("released", "A", lease_a.lease_id, index),
                ("acquired", "B", lease_b.lease_id, index),
            ]
            wrong = {}
            for who, q in queues.items():  # check all three before failing, to name them all
                changes = _changes_after_current(q, 2)
                if changes != want:
                    wrong[who] = changes
            assert not wrong, f"expected {want}, got {wrong}; CLI printed {cli_lines}"
            lease_b.release()
        finally:
            stop_async.set()  # the sync stream ends when its client closes
            if cli.poll() is None:
                cli.send_signal(signal.SIGTERM)
            code: int | None
            try:
                code = cli.wait(timeout=10.0)
            except subprocess.TimeoutExpired:
                cli.kill()
                cli.wait()
                code = None
            cli_thread.join(timeout=5.0)
            if cli.stdout is not None:
                cli.stdout.close()
            async_thread.join(timeout=10.0)
    assert code == 0, cli_err.read_text(errors="replace")
    assert not async_thread.is_alive()
