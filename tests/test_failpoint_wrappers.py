"""Failpoints (raftlease/failpoints.py) and their wrappers (raftlease/testing/faults.py).

The node itself has no failpoint checks: the server wraps its storage, transport and observer
when RAFTLEASE_FAILPOINTS arms something. Checked here: the spec parser; each wrapper hits its
points in the order node.py used to, around the inner call; the observer passes every event on;
the node calls ``on_commit_ready`` after saving and sending a Ready, before applying it; and a
``panic`` in a real process exits 137 at the right side of the fsync (SQLite), writing the vote
line the node would have written first.
"""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from raftlease.clock import ManualClock
from raftlease.core.messages import Entry, EntryKind, Snapshot
from raftlease.core.ready import HardState
from raftlease.failpoints import POINTS, Failpoints
from raftlease.fsm.commands import Acquire
from raftlease.node import Node, NodeConfig
from raftlease.observe import NodeObserver
from raftlease.storage.memory import MemoryStorage
from raftlease.testing.faults import (
    FailpointObserver,
    FailpointStorage,
    FailpointTransport,
    FaultInjector,
)
from raftlease.transport.base import MemoryTransport
from raftlease.types import NodeId

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from raftlease.core.messages import Message

REPO_ROOT = Path(__file__).resolve().parent.parent
N1, N2 = NodeId("n1"), NodeId("n2")


class Recording(Failpoints):
    """Failpoints that record every hit (and whether the hit had last words) into ``log``."""

    __slots__ = ("log",)

    def __init__(self, log: list[str]) -> None:
        super().__init__("")
        self.log = log

    def hit(self, name: str, before_panic: Callable[[], None] | None = None) -> None:
        self.log.append(name + ("+vote-line" if before_panic is not None else ""))


class RecordingStorage(MemoryStorage):
    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self.log = log

    def save(
        self, hard_state: HardState | None, snapshot: Snapshot | None, entries: Sequence[Entry]
    ) -> None:
        self.log.append("SAVE")
        super().save(hard_state, snapshot, entries)

    def compact(self, snapshot: Snapshot) -> None:
        self.log.append("COMPACT")
        super().compact(snapshot)


# -- the spec ------------------------------------------------------------------------------------


def test_spec_parsing() -> None:
    assert not Failpoints("")
    assert not Failpoints("before-save=off")
    fp = Failpoints(" before-save=panic ; after-save=3*sleep(5); before-send=off ")
    assert fp
    assert fp.armed("before-save")
    assert fp.armed("after-save")
    assert not fp.armed("before-send")
    assert not Failpoints.from_env({})
    assert Failpoints.from_env({"RAFTLEASE_FAILPOINTS": "after-vote-save=panic"})
    for bad in ("before-save", "before-save=explode", "before-save=sleep(x)", "=*panic"):
        with pytest.raises(ValueError, match="bad failpoint"):
            Failpoints(bad)


def test_the_documented_points() -> None:
    assert set(POINTS) == {
        "before-save",
        "after-save",
        "after-vote-save",
        "before-send",
        "after-commit-before-apply",
        "before-snapshot-save",
        "after-snapshot-save",
        "before-client-reply",
    }


def test_sleep_fires_on_the_nth_hit_only(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr("raftlease.failpoints.time.sleep", slept.append)
    fp = Failpoints("before-send=2*sleep(30)")
    for _ in range(4):
        fp.hit("before-send")
    fp.hit("after-save")  # not armed
    assert slept == [0.03]


# -- the wrappers --------------------------------------------------------------------------------


def test_storage_save_hits_its_points_around_the_save() -> None:
    log: list[str] = []
    store = FailpointStorage(RecordingStorage(log), Recording(log), N1)
    store.load()
    store.save(HardState(1, None, 0), None, [Entry(1, 1, EntryKind.NOOP)])
    assert log == ["before-save", "SAVE", "after-save"]
    log.clear()
    store.save(HardState(2, N2, 1), None, [])  # a new vote: a panic would write its line
    assert log == ["before-save", "SAVE", "after-save+vote-line", "after-vote-save+vote-line"]
    log.clear()
    store.save(HardState(2, N2, 2), None, [])  # the same vote again: no new line
    assert log == ["before-save", "SAVE", "after-save", "after-vote-save"]
    log.clear()
    snap = Snapshot(1, 1, (N1, N2), b"")
    store.save(HardState(3, None, 1), snap, [])
    assert log == [
        "before-save",
        "before-snapshot-save",
        "SAVE",
        "after-save",
        "after-snapshot-save",
    ]
    log.clear()
    store.compact(snap)
    assert log == ["before-snapshot-save", "COMPACT", "after-snapshot-save"]


def test_storage_remembers_the_loaded_vote() -> None:
    log: list[str] = []
    inner = RecordingStorage(log)
    inner.save(HardState(4, N2, 0), None, [])
    store = FailpointStorage(inner, Recording(log), N1)
    store.load()
    log.clear()
    store.save(HardState(4, N2, 0), None, [])  # the vote it loaded: not new
    assert log == ["before-save", "SAVE", "after-save", "after-vote-save"]


def test_transport_hits_before_send() -> None:
    log: list[str] = []

    class Inner(MemoryTransport):
        def send(self, messages: Sequence[Message]) -> None:
            log.append(f"SEND {len(messages)}")

    t = FailpointTransport(Inner(), Recording(log))
    t.send([])
    assert log == ["before-send", "SEND 0"]
    asyncio.run(t.close())


def test_observer_passes_every_event_on() -> None:
    hooks = {
        name
        for name, _ in inspect.getmembers(NodeObserver, inspect.isfunction)
        if name.startswith("on_")
    }
    overridden = {n for n in hooks if n in vars(FailpointObserver)}
    assert overridden == hooks, "FailpointObserver must pass on every NodeObserver event"

    log: list[str] = []

    class Inner(NodeObserver):
        def __getattribute__(self, name: str) -> Any:
            if name.startswith("on_"):
                return lambda *a: log.append(name)
            return object.__getattribute__(self, name)

    obs = FailpointObserver(Inner(), Recording(log))
    args: dict[str, tuple[Any, ...]] = {
        "on_state_change": (None, None),
        "on_send": ([],),
        "on_save": (0.001,),
        "on_commit_ready": ([],),
        "on_proposal_applied": (0.001,),
        "on_renewal": (1.0, 2.0),
        "on_lease_event": ("acquired",),
        "on_lease_lapse": (0.05,),
    }
    for name in sorted(hooks):
        getattr(obs, name)(*args[name])
    assert log == [
        "after-commit-before-apply",
        "on_commit_ready",
        "on_lease_event",
        "on_lease_lapse",
        "on_proposal_applied",
        "on_renewal",
        "on_save",
        "on_send",
        "on_state_change",
    ]


def test_injector_builds_the_wrappers() -> None:
    log: list[str] = []
    faults = FaultInjector(Recording(log), N1)
    assert isinstance(faults.storage(MemoryStorage()), FailpointStorage)
    assert isinstance(faults.transport(MemoryTransport()), FailpointTransport)
    assert isinstance(faults.observer(NodeObserver()), FailpointObserver)
    faults.hook("before-client-reply")()
    assert log == ["before-client-reply"]


async def test_node_reports_committed_entries_before_applying_them() -> None:
    seen: list[tuple[int, int]] = []  # (first committed index, node's applied index then)

    class Probe(NodeObserver):
        def on_commit_ready(self, entries: Sequence[Entry]) -> None:
            seen.append((entries[0].index, node.applied_index))

    clock = ManualClock(100.0)
    cfg = NodeConfig(node_id=N1, cluster_id="t", peers={N1: "127.0.0.1:7000"}, seed=1)
    node = Node(cfg, MemoryStorage(), MemoryTransport(), clock)
    node.observer = Probe()
    task = asyncio.get_running_loop().create_task(node.run())
    try:
        for _ in range(2000):
            if node.lease_ok():
                break
            clock.advance(cfg.tick_s)
            node._wake.set()
            await asyncio.sleep(0)
        assert node.lease_ok(), "a 1-node cluster elects itself"
        await asyncio.wait_for(node.propose(Acquire("x", "h", 2000, False, "r1")), 5)
    finally:
        node.stop()
        await task
    assert seen, "on_commit_ready was never called"
    assert all(first > applied for first, applied in seen)


# -- panic in a real process: exit 137 on the right side of the fsync --------------------------

_PANIC_SCRIPT = """
import logging, sys
from raftlease.core.ready import HardState
from raftlease.failpoints import Failpoints
from raftlease.storage.sqlite import SqliteStorage
from raftlease.testing.faults import FailpointStorage

logging.basicConfig(level="INFO", format="%(name)s: %(message)s")
inner = SqliteStorage(sys.argv[1], cluster_id="c", node_id="n1", members=["n1", "n2"])
store = FailpointStorage(inner, Failpoints(sys.argv[2]), "n1")
store.load()
store.save(HardState(3, "n2", 0), None, [])
print("survived", flush=True)
"""


def _run_panic(tmp_path: Path, spec: str) -> tuple[subprocess.CompletedProcess[str], HardState]:
    db = tmp_path / "raft.db"
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_PANIC_SCRIPT), str(db), spec],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    from raftlease.storage.sqlite import SqliteStorage

    reopened = SqliteStorage(db, cluster_id="c", node_id="n1", members=["n1", "n2"])
    try:
        return proc, reopened.load().hard_state
    finally:
        reopened.close()


def test_panic_before_save_loses_the_batch(tmp_path: Path) -> None:
    proc, hs = _run_panic(tmp_path, "before-save=panic")
    assert proc.returncode == 137, proc.stderr
    assert "failpoint before-save: panic" in proc.stderr
    assert "survived" not in proc.stdout
    assert "voted for" not in proc.stderr
    assert hs.voted_for is None


def test_panic_after_vote_save_keeps_the_vote_and_logs_it_first(tmp_path: Path) -> None:
    proc, hs = _run_panic(tmp_path, "after-vote-save=panic")
    assert proc.returncode == 137, proc.stderr
    lines = proc.stderr.splitlines()
    vote = lines.index("raftlease.node: n1 voted for n2 at term 3 (persisted)")
    assert lines[vote + 1] == "raftlease.failpoints: failpoint after-vote-save: panic"
    assert (hs.term, hs.voted_for) == (3, "n2")


def test_an_unarmed_save_survives(tmp_path: Path) -> None:
    proc, hs = _run_panic(tmp_path, "before-send=panic")
    assert proc.returncode == 0, proc.stderr
    assert "survived" in proc.stdout
    assert (hs.term, hs.voted_for) == (3, "n2")
