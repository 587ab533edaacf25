"""The server's event loop choice (RAFTLEASE_EVENT_LOOP): uvloop by default, asyncio on request,
and a bad value refused before anything is created."""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import socket
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from raftlease.clock import MonotonicClock
from raftlease.node import Node, NodeConfig
from raftlease.server import event_loop_factory
from raftlease.storage.memory import MemoryStorage
from raftlease.transport.base import MemoryTransport
from raftlease.types import NodeId

if TYPE_CHECKING:
    from pathlib import Path


def test_default_is_uvloop_when_installed() -> None:
    uvloop = pytest.importorskip("uvloop")
    factory, name = event_loop_factory("auto")
    assert factory is not None
    assert name == f"uvloop {importlib.metadata.version('uvloop')}"
    loop = factory()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()


def test_asyncio_on_request() -> None:
    assert event_loop_factory("asyncio") == (None, "asyncio")
    assert event_loop_factory(" AsyncIO ") == (None, "asyncio")


def test_environment_variable_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAFTLEASE_EVENT_LOOP", "asyncio")
    assert event_loop_factory() == (None, "asyncio")


def test_bad_value_is_refused() -> None:
    with pytest.raises(SystemExit) as exc:
        event_loop_factory("tokio")
    assert str(exc.value) == (
        "raftlease: error: RAFTLEASE_EVENT_LOOP='tokio': expected one of auto, uvloop, asyncio"
    )


def test_serve_with_a_bad_value_exits_and_creates_nothing(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    data = tmp_path / "data"
    addr = f"127.0.0.1:{port}"
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "raftlease", "serve", "--id", "n1", "--listen", addr),
            *("--peers", f"n1={addr}", "--data-dir", str(data)),
        ],
        env={**os.environ, "RAFTLEASE_EVENT_LOOP": "tokio"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1] == (
        "raftlease: error: RAFTLEASE_EVENT_LOOP='tokio': expected one of auto, uvloop, asyncio"
    )
    assert "Traceback" not in proc.stderr
    assert not data.exists()


@pytest.mark.parametrize("choice", ["asyncio", "uvloop"])
def test_an_idle_node_sleeps_between_timers(choice: str) -> None:
    """A lone leader (no peers, nothing to do) wakes for its heartbeat timer, 10 times a
    second, and nothing else. uvloop's timers have 1 ms resolution and can fire up to 1 ms
    early; a loop that then re-armed a sub-millisecond timer would spin (call_soon) until
    the clock caught up, costing idle CPU (W5): 37 wake-ups a second before the fix."""
    if choice == "uvloop":
        pytest.importorskip("uvloop")
    factory, _ = event_loop_factory(choice)
    seconds = 1.0

    cfg = NodeConfig(
        node_id=NodeId("n1"), cluster_id="t", peers={NodeId("n1"): "127.0.0.1:1"}, seed=1
    )

    async def run() -> tuple[int, int]:
        node = Node(cfg, MemoryStorage(), MemoryTransport(), MonotonicClock())
        task = asyncio.get_running_loop().create_task(node.run())
        await asyncio.sleep(0.5)  # elected (a lone voter), noop committed
        assert node.is_leader
        before = node.sleeps
        await asyncio.sleep(seconds)
        after = node.sleeps
        node.stop()
        await task
        return before, after

    with asyncio.Runner(loop_factory=factory) as runner:
        before, after = runner.run(run())
    heartbeats = seconds / (cfg.tick_s * cfg.heartbeat_ticks)
    assert after - before <= 2 * heartbeats + 2, (before, after)
