"""Peers compare their safety settings when a link opens (docs/safety.md, L1).

A node started with another tick length than its peers would silently break the leader-lease
inequality: its stickiness and lease windows would be counted in other units. Each side of a
peer link refuses the other, logs why, and the odd node changes no term in the cluster.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

from .conftest import Cluster, node_status

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Three nodes, none started."""
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.terminate_all()


def test_a_node_with_another_tick_is_refused_by_its_peers(cluster: Cluster) -> None:
    cluster.start("n1")
    cluster.start("n2")
    leader = cluster.leader()
    term = node_status(cluster.nodes[leader].address)
    assert term is not None
    cluster.start("n3", "--tick", "20ms")
    deadline = time.monotonic() + 15.0
    want = "safety settings differ"
    logs: dict[str, str] = {}
    while time.monotonic() < deadline:
        logs = {i: n.log_path.read_text(errors="replace") for i, n in cluster.nodes.items()}
        if all(want in text for text in logs.values()) and "refused us" in logs["n3"]:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"no refusal logged on both sides:\n{cluster.log_tails()}")
    time.sleep(1.5)  # n3 keeps campaigning on its own timer meanwhile
    logs = {i: n.log_path.read_text(errors="replace") for i, n in cluster.nodes.items()}
    # Both sides say what differs.
    assert "tick=20ms" in logs["n1"]
    assert "tick=10ms" in logs["n1"]
    assert "refused us" in logs["n3"]
    # n3 disturbed nothing: same leader, same term, and n3 knows no leader.
    now = node_status(cluster.nodes[leader].address)
    assert now is not None
    assert now.term == term.term
    assert cluster.leader() == leader
    odd = node_status(cluster.nodes["n3"].address)
    assert odd is not None
    assert odd.leader_id == ""


def test_same_settings_join(cluster: Cluster) -> None:
    """The control: with the same tick given explicitly, n3 joins and nothing is refused."""
    cluster.start("n1")
    cluster.start("n2")
    leader = cluster.leader()
    cluster.start("n3", "--tick", "10ms")
    deadline = time.monotonic() + 15.0
    while time.monotonic() < deadline:
        st = node_status(cluster.nodes["n3"].address)
        if st is not None and st.leader_id == leader:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"n3 never followed {leader}:\n{cluster.log_tails()}")
    assert all(
        "safety settings differ" not in n.log_path.read_text(errors="replace")
        for n in cluster.nodes.values()
    )
