"""Leader election on a real 3-node cluster (raftlease/client/election.py, aelection.py).

Two contenders campaign; one leads; the other takes over when the leader resigns (at once:
the same log entry ends one term and starts the next) or when the leader's process is
SIGKILLed (within the TTL plus a little). observe() sees every change in order, including a
direct handover. The callback runner fires its callbacks in order and campaigns again; the
asyncio leadership block is cancelled before its lease could pass on; a campaign with
wait=None queues again past the server's cap on one wait (a tiny cap is injected here); and
every Python block of docs/election.md, and the examples/, run as written.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from raftlease import clock as _clock
from raftlease.client import (
    AsyncLease,
    AsyncLeaseClient,
    Election,
    ElectionClosed,
    LeadershipLost,
    Lease,
    LeaseClient,
    LeaseHeld,
    current_lease,
)
from raftlease.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable

    from integration.conftest import Cluster

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
TTL = 2.0
STEP_TIMEOUT_S = 10.0

Seen = tuple[str, int] | None  # (identity, fencing token) of a leader, or None: no leader


class Observer:
    """observe() of an election on a thread of its own; close() ends it."""

    def __init__(self, client: LeaseClient, name: str) -> None:
        self.election = client.election(name, holder="observer")
        self.changes: queue.Queue[Seen] = queue.Queue()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with contextlib.suppress(ElectionClosed):
            for leader in self.election.observe():
                self.changes.put(
                    None if leader is None else (leader.identity, leader.fencing_token)
                )

    def next(self) -> Seen:
        try:
            return self.changes.get(timeout=STEP_TIMEOUT_S)
        except queue.Empty:
            raise AssertionError(f"observe(): no change within {STEP_TIMEOUT_S}s") from None

    def close(self) -> None:
        self.election.close()
        self.thread.join(5.0)
        assert not self.thread.is_alive(), "observe() did not end when its election closed"


class Campaign:
    """election.campaign(...) on a thread; records the lease (or error) and when."""

    def __init__(self, election: Election, wait: float | None = None) -> None:
        self.lease: Lease | None = None
        self.error: BaseException | None = None
        self.won_at = 0.0
        self.done = threading.Event()
        self.started = time.monotonic()

        def run() -> None:
            try:
                self.lease = election.campaign(wait)
                self.won_at = time.monotonic()
            except BaseException as err:
                self.error = err
                self.won_at = time.monotonic()
            finally:
                self.done.set()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def result(self, timeout: float = STEP_TIMEOUT_S) -> Lease:
        assert self.done.wait(timeout), f"campaign did not end within {timeout}s"
        if self.error is not None:
            raise self.error
        assert self.lease is not None
        return self.lease


def wait_for_waiter(client: LeaseClient, name: str) -> None:
    deadline = time.monotonic() + STEP_TIMEOUT_S
    while time.monotonic() < deadline:
        info = client.holder(name)
        if info is not None and info.waiters >= 1:
            return
        time.sleep(0.02)
    raise AssertionError(f"no contender queued for {name} within {STEP_TIMEOUT_S}s")


def test_resign_hands_over_at_once_and_observe_sees_every_change(cluster: Cluster) -> None:
    with cluster.client() as client:
        observer = Observer(client, "sched")
        a = client.election("sched", ttl=TTL, holder="A", metadata={"addr": "a:80"})
        b = client.election("sched", ttl=TTL, holder="B")
        lease_a = a.campaign()
        assert a.is_leader()
        assert observer.next() == ("A", lease_a.fencing_token)
        leader = b.leader()
        assert leader is not None
        assert (leader.identity, leader.fencing_token, leader.metadata) == (
            "A",
            lease_a.fencing_token,
            {"addr": "a:80"},
        )

        waiting = Campaign(b)
        wait_for_waiter(client, "sched")
        assert not waiting.done.is_set()
        resigned_at = time.monotonic()
        a.resign()
        assert lease_a.lost.is_set()
        assert not a.is_leader()
        lease_b = waiting.result()
        takeover = waiting.won_at - resigned_at
        print(f"takeover after resign: {takeover * 1000:.0f} ms")
        assert takeover < 1.0
        assert lease_b.fencing_token > lease_a.fencing_token
        # the handover is one log entry: released (A) then acquired (B), both delivered
        assert observer.next() is None
        assert observer.next() == ("B", lease_b.fencing_token)
        b.resign()
        assert observer.next() is None
        assert a.leader() is None
        observer.close()
        a.close()
        b.close()


def test_sigkill_of_the_leading_process_hands_over_within_ttl(cluster: Cluster) -> None:
    env = dict(os.environ, RAFTLEASE_ENDPOINTS=",".join(cluster.endpoints))
    proc = subprocess.Popen(
        [
            sys.executable,
            str(REPO_ROOT / "examples" / "election_contender.py"),
            "--name",
            "sched",
            "--ttl",
            str(TTL),
            "--hold",
            "60",
            "--holder",
            "doomed",
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout

    def read() -> None:
        for line in stdout:
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 20.0
        token = 0
        while not token:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            match = re.match(r"LEADING token=(\d+)", line)
            token = int(match.group(1)) if match else 0
        with cluster.client() as client:
            observer = Observer(client, "sched")
            assert observer.next() == ("doomed", token)
            b = client.election("sched", ttl=TTL, holder="B")
            waiting = Campaign(b)
            wait_for_waiter(client, "sched")
            killed_at = time.monotonic()
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            lease_b = waiting.result(TTL + 5.0)
            takeover = waiting.won_at - killed_at
            print(f"takeover after SIGKILL of the leader (ttl {TTL}s): {takeover:.2f} s")
            # not before the old term could have ended (renewed at most ttl/3 before the
            # kill), and within TTL plus a second
            assert TTL / 2 <= takeover <= TTL + 1.0
            assert lease_b.fencing_token > token
            assert observer.next() is None  # expired ...
            assert observer.next() == ("B", lease_b.fencing_token)  # ... and handed to B
            observer.close()
            b.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(5.0)
        stdout.close()


def test_campaign_forever_requeues_past_the_server_cap(cluster: Cluster) -> None:
    cap = 0.3  # stands for the server's 1 h cap on one wait in the queue
    with cluster.client() as client:
        a = client.election("cap", ttl=TTL, holder="A")
        lease_a = a.campaign()
        b = client.election("cap", ttl=TTL, holder="B", max_wait=cap)
        waiting = Campaign(b, wait=None)
        time.sleep(1.6)  # about five waits of `cap` in the queue
        assert not waiting.done.is_set()
        a.resign()
        lease_b = waiting.result()
        assert lease_b.fencing_token > lease_a.fencing_token
        # queued again after every wait ran out, and did not spin doing so
        assert 4 <= b.attempts <= 10, b.attempts

        # a finite wait longer than the cap: queues again too, then gives up on time
        c = client.election("cap", ttl=TTL, holder="C", max_wait=cap)
        started = time.monotonic()
        with pytest.raises(LeaseHeld) as info:
            c.campaign(wait=1.0)
        took = time.monotonic() - started
        assert 0.9 <= took <= 2.5, took
        assert info.value.holder == "B"
        assert 3 <= c.attempts <= 6, c.attempts
        for e in (a, b, c):
            e.close()


def test_close_stops_a_campaign_blocked_in_the_queue(cluster: Cluster) -> None:
    with cluster.client() as client:
        a = client.election("q", ttl=TTL, holder="A")
        a.campaign()
        b = client.election("q", ttl=TTL, holder="B")
        waiting = Campaign(b)
        wait_for_waiter(client, "q")
        closed_at = time.monotonic()
        b.close()
        assert waiting.done.wait(2.0), "close() did not stop the campaign"
        assert isinstance(waiting.error, ElectionClosed), waiting.error
        assert waiting.won_at - closed_at < 1.5
        deadline = time.monotonic() + 5.0  # the cluster dropped the queued request
        while (info := client.holder("q")) is not None and info.waiters:
            assert time.monotonic() < deadline, "the closed campaign is still queued"
            time.sleep(0.05)
        a.close()
        assert client.holder("q") is None


def test_run_for_leadership_callbacks_in_order_and_requeue(cluster: Cluster) -> None:
    events: dict[str, list[tuple[str, object]]] = {"A": [], "B": []}
    started = {"A": threading.Event(), "B": threading.Event()}

    def make(
        who: str,
    ) -> tuple[Callable[[Lease], None], Callable[[], None], Callable[[str], None]]:
        def on_started(lease: Lease) -> None:
            events[who].append(("started", lease.fencing_token))
            started[who].set()
            if who == "A" and len([e for e in events["A"] if e[0] == "started"]) == 1:
                time.sleep(0.3)  # A's first term: the callback returns, the term ends
                return
            lease.lost.wait(STEP_TIMEOUT_S * 2)

        return (
            on_started,
            lambda: events[who].append(("stopped", None)),
            lambda identity: events[who].append(("new_leader", identity)),
        )

    with cluster.client() as client:
        on_started_a, on_stopped_a, on_new_a = make("A")
        runner_a = client.run_for_leadership(
            "jobs",
            on_started_leading=on_started_a,
            on_stopped_leading=on_stopped_a,
            on_new_leader=on_new_a,
            ttl=TTL,
            holder="A",
        )
        assert started["A"].wait(STEP_TIMEOUT_S)
        started["A"].clear()
        on_started_b, on_stopped_b, on_new_b = make("B")
        with client.run_for_leadership(
            "jobs",
            on_started_leading=on_started_b,
            on_stopped_leading=on_stopped_b,
            on_new_leader=on_new_b,
            ttl=TTL,
            holder="B",
        ) as runner_b:
            assert started["B"].wait(STEP_TIMEOUT_S), events  # A's term ended: B leads
            assert runner_b.is_leader()
            # on_new_leader comes from B's watch stream, which may deliver B's own grant a
            # moment after on_started_leading ran: wait for it before stopping B.
            deadline = time.monotonic() + STEP_TIMEOUT_S
            while ("new_leader", "B") not in events["B"]:
                assert time.monotonic() < deadline, events
                time.sleep(0.01)
        # leaving `with` stopped B: A, queued again, leads a second term
        assert started["A"].wait(STEP_TIMEOUT_S), events
        assert runner_a.terms == 2
        # As for B: A's watch may report its own second grant just after on_started_leading.
        deadline = time.monotonic() + STEP_TIMEOUT_S
        while events["A"].count(("new_leader", "A")) < 2:
            assert time.monotonic() < deadline, events
            time.sleep(0.01)
        assert runner_a.stop(timeout=STEP_TIMEOUT_S)
        assert client.holder("jobs") is None

    def kinds(who: str, kind_filter: set[str]) -> list[tuple[str, object]]:
        return [e for e in events[who] if e[0] in kind_filter]

    life = {"started", "stopped"}
    a_life, b_life = kinds("A", life), kinds("B", life)
    assert [k for k, _ in a_life] == ["started", "stopped", "started", "stopped"], events
    assert [k for k, _ in b_life] == ["started", "stopped"], events
    token_a1, token_b, token_a2 = a_life[0][1], b_life[0][1], a_life[2][1]
    assert isinstance(token_a1, int)
    assert isinstance(token_b, int)
    assert isinstance(token_a2, int)
    assert token_a1 < token_b < token_a2
    # every new leader observed, ourselves included, in order
    assert [i for _, i in kinds("A", {"new_leader"})] == ["A", "B", "A"], events
    assert [i for _, i in kinds("B", {"new_leader"})][:2] == ["A", "B"], events


def _work_until_check_fails(lease: Lease) -> None:
    while True:
        lease.check()
        time.sleep(0.02)


def _sleep_while_leading(client: LeaseClient) -> None:
    with client.leadership("blk", ttl=TTL, interrupt="signal") as lease:
        lease.stop_keepalive()
        time.sleep(30)


def _finish_after_loss(client: LeaseClient) -> None:
    with client.leadership("blk", ttl=TTL) as lease:
        lease.stop_keepalive()
        assert lease.lost.wait(TTL + 1.0)
        with pytest.raises(LeadershipLost):
            lease.check()


def test_singleton_runs_only_while_leading_and_again_after_regaining(cluster: Cluster) -> None:
    runs: list[tuple[str, int, bool]] = []
    second = threading.Event()

    def job(tag: str) -> None:
        lease = current_lease()
        assert lease is not None
        runs.append((tag, lease.fencing_token, lease.is_valid()))
        if len(runs) == 1:
            lease.stop_keepalive()  # the first term is lost ...
            with pytest.raises(LeadershipLost):
                _work_until_check_fails(lease)
            return
        second.set()  # ... and the job runs again in the next one
        lease.lost.wait(STEP_TIMEOUT_S * 2)

    with cluster.client() as client:
        runner = client.singleton("single", job, "compact", ttl=TTL)
        assert second.wait(STEP_TIMEOUT_S), runs
        assert runner.stop(timeout=STEP_TIMEOUT_S)
    assert [(tag, ok) for tag, _, ok in runs] == [("compact", True), ("compact", True)]
    assert runs[1][1] > runs[0][1]


def test_sync_leadership_block_signal_and_cooperative_modes(cluster: Cluster) -> None:
    assert threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGUSR1)
    with cluster.client() as client:
        # interrupt="signal": a blocking sleep in the main thread is interrupted
        started = time.monotonic()
        with pytest.raises(LeadershipLost, match="keepalives stopped"):
            _sleep_while_leading(client)
        took = time.monotonic() - started
        print(f"signal interrupt after {took:.2f} s (ttl {TTL}s)")
        assert took < TTL + 0.5
        assert signal.getsignal(signal.SIGUSR1) == before
        assert client.holder("blk") is None  # resigned on the way out

        # default: not interrupted; the loss is raised when the block ends
        with pytest.raises(LeadershipLost):
            _finish_after_loss(client)
        assert current_lease() is None

        # a normal block: no exception, resigned after
        with client.leadership("blk", ttl=TTL) as lease:
            assert current_lease() is lease
            lease.check()
        assert client.holder("blk") is None

        # signal mode needs the main thread
        errors: list[BaseException] = []

        def in_thread() -> None:
            try:
                with client.leadership("blk", interrupt="signal"):
                    pass
            except ConfigError as err:
                errors.append(err)

        t = threading.Thread(target=in_thread)
        t.start()
        t.join(5.0)
        assert len(errors) == 1


async def test_async_leadership_block_is_cancelled_before_the_lease_passes(
    cluster: Cluster,
) -> None:
    async with AsyncLeaseClient(cluster.endpoints) as client:
        cancelled_at: list[float] = []
        leases: list[AsyncLease] = []

        async def block() -> None:
            async with client.leadership("alb", ttl=TTL) as lease:
                leases.append(lease)
                lease.stop_keepalive()  # renewals stop: the lease will be lost
                try:
                    await asyncio.sleep(30)
                except asyncio.CancelledError:
                    cancelled_at.append(_clock.boot_monotonic())
                    raise

        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(LeadershipLost) as info:
            await block()
        (lease,) = leases
        took = loop.time() - started
        print(f"asyncio block cancelled after {took:.2f} s (ttl {TTL}s)")
        assert cancelled_at, "the block was not cancelled"
        assert cancelled_at[0] < lease.valid_until  # before anyone else could be granted it
        assert took < TTL
        assert isinstance(info.value.__cause__, asyncio.CancelledError)
        assert not lease.is_valid()
        assert asyncio.current_task() is not None
        assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
        other = await client.acquire("alb", ttl=TTL, holder="next")  # resigned on the way out
        await other.release()

        # a cancellation from elsewhere stays a CancelledError, and resigns too
        async def body() -> None:
            async with client.leadership("alb", ttl=TTL):
                await asyncio.sleep(30)

        task = asyncio.create_task(body())
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await client.holder("alb") is None


async def test_async_runner_cancels_the_term_on_loss_and_campaigns_again(
    cluster: Cluster,
) -> None:
    events: list[tuple[str, object]] = []
    second = asyncio.Event()

    async def lead(lease: AsyncLease) -> None:
        events.append(("started", lease.fencing_token))
        if len([e for e in events if e[0] == "started"]) == 1:
            lease.stop_keepalive()  # lose the first term
        else:
            second.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            events.append(("cancelled", lease.fencing_token))
            raise

    async def on_stopped() -> None:
        events.append(("stopped", None))

    async with AsyncLeaseClient(cluster.endpoints) as client:
        runner = client.run_for_leadership(
            "arun",
            on_started_leading=lead,
            on_stopped_leading=on_stopped,
            on_new_leader=lambda identity: events.append(("new_leader", identity)),
            ttl=TTL,
            holder="E",
        )
        await asyncio.wait_for(second.wait(), STEP_TIMEOUT_S)
        assert runner.is_leader()
        await runner.stop()
        assert not runner.is_leader()
        assert await client.holder("arun") is None

    life = [e for e in events if e[0] != "new_leader"]
    assert [k for k, _ in life] == [
        "started",
        "cancelled",
        "stopped",
        "started",
        "cancelled",
        "stopped",
    ], events
    assert life[0][1] == life[1][1]
    assert life[3][1] == life[4][1]
    assert isinstance(life[0][1], int)
    assert isinstance(life[3][1], int)
    assert life[3][1] > life[0][1]
    assert [i for k, i in events if k == "new_leader"] == ["E", "E"], events


async def test_async_election_campaign_resign_observe(cluster: Cluster) -> None:
    async with AsyncLeaseClient(cluster.endpoints) as client:
        changes: asyncio.Queue[Seen] = asyncio.Queue()

        async def observe() -> None:
            async for leader in client.election("ae").observe():
                await changes.put(
                    None if leader is None else (leader.identity, leader.fencing_token)
                )

        observer = asyncio.create_task(observe())
        a = client.election("ae", ttl=TTL, holder="A")
        b = client.election("ae", ttl=TTL, holder="B")
        lease_a = await a.campaign()
        assert await a.campaign() is lease_a  # already leading
        assert await asyncio.wait_for(changes.get(), STEP_TIMEOUT_S) == ("A", lease_a.fencing_token)
        waiting = asyncio.create_task(b.campaign())
        for _ in range(200):
            info = await client.holder("ae")
            if info is not None and info.waiters:
                break
            await asyncio.sleep(0.02)
        await a.resign()
        lease_b = await asyncio.wait_for(waiting, 2.0)
        leader = await a.leader()
        assert leader is not None
        assert leader.identity == "B"
        assert await asyncio.wait_for(changes.get(), STEP_TIMEOUT_S) is None
        assert await asyncio.wait_for(changes.get(), STEP_TIMEOUT_S) == ("B", lease_b.fencing_token)
        observer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await observer
        await b.close()
        with pytest.raises(ElectionClosed):
            await b.campaign()


def _doc_blocks() -> list[str]:
    text = (REPO_ROOT / "docs" / "election.md").read_text(encoding="utf-8")
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)


def _run_python(cluster: Cluster, args: list[str], timeout: float = 30.0) -> str:
    env = dict(os.environ, RAFTLEASE_ENDPOINTS=",".join(cluster.endpoints))
    out = subprocess.run(
        [sys.executable, *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert out.returncode == 0, f"{args[:2]} exited {out.returncode}:\n{out.stdout}\n{out.stderr}"
    assert "Traceback" not in out.stderr, out.stderr
    return out.stdout


def test_docs_election_examples_run_as_written(cluster: Cluster) -> None:
    blocks = _doc_blocks()
    assert len(blocks) >= 5
    outputs = [_run_python(cluster, ["-c", block]) for block in blocks]
    joined = "\n".join(outputs)
    for needle in (
        "leading, fencing token",
        "after resigning: None",
        "interrupted: leadership of 'compactor'",
        "stopped: lease 'compactor'",
        "started leading, token",
        "new leader:",
        "stopped leading",
        "compacting events with fencing token",
    ):
        assert needle in joined, joined


def test_examples_run(cluster: Cluster) -> None:
    out = _run_python(
        cluster, [str(REPO_ROOT / "examples" / "election_contender.py"), "--hold", "0.3"]
    )
    assert re.search(r"LEADING token=\d+\nRESIGNED", out), out
    out = _run_python(cluster, [str(REPO_ROOT / "examples" / "election_asyncio.py")])
    assert "alpha: leading" in out, out
    assert "beta: leading" in out, out
    assert "gamma: leadership of 'compactor'" in out, out
