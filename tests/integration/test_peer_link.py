"""Real nodes move their Raft messages to the plain-TCP peer link (docs/transport.md), and a
node that takes none (`--peer-listen off`) still works beside them over gRPC.

Checked with each process's own sockets (psutil): who connects to whose TCP-link port.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import psutil  # type: ignore[import-untyped]
import pytest

from integration.conftest import REPO_ROOT, free_port
from raftlease.client import LeaseClient
from raftlease.testing.local import LocalCluster

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.integration


def _links(pids: dict[str, int], link_ports: dict[str, int]) -> set[tuple[str, str]]:
    """(dialer, receiver) for every established connection to a node's TCP-link port."""
    owner = {port: nid for nid, port in link_ports.items()}
    found: set[tuple[str, str]] = set()
    for nid, pid in pids.items():
        for c in psutil.Process(pid).net_connections(kind="tcp"):
            if c.raddr and c.status == psutil.CONN_ESTABLISHED and c.raddr.port in owner:
                found.add((nid, owner[c.raddr.port]))
    return found


def test_tcp_links_carry_raft_and_a_node_with_none_still_works(tmp_path: Path) -> None:
    ids = ["n1", "n2", "n3"]
    ports: list[int] = []
    for _ in range(6):
        ports.append(free_port(avoid=set(ports)))
    link_ports = {"n1": ports[3], "n2": ports[4]}  # n3 takes no TCP link
    with LocalCluster(tmp_path, ids=ids, ports=ports[:3], cwd=REPO_ROOT) as c:
        c.start("n1", "--peer-listen", f"127.0.0.1:{link_ports['n1']}")
        c.start("n2", "--peer-listen", f"127.0.0.1:{link_ports['n2']}")
        c.start("n3", "--peer-listen", "off")
        c.wait_leader(20.0, check_exits=True)
        pids = {nid: node.pid for nid, node in c.nodes.items() if node.pid is not None}
        want = {("n1", "n2"), ("n2", "n1"), ("n3", "n1"), ("n3", "n2")}
        deadline = time.monotonic() + 15.0
        while (got := _links(pids, link_ports)) != want and time.monotonic() < deadline:
            time.sleep(0.2)
        assert got == want, c.log_tails()
        logs = {nid: node.log_path.read_text(errors="replace") for nid, node in c.nodes.items()}
        assert f"peer link: plain TCP on port {link_ports['n1']}" in logs["n1"]
        assert "peer link: gRPC only (--peer-listen off)" in logs["n3"]
        # Nothing fell back: every TCP link that was announced answered.
        assert all("does not answer" not in text for text in logs.values()), c.log_tails()
        # The cluster serves, whichever node leads and whatever path its messages take.
        with LeaseClient(",".join(c.endpoints)) as client:
            tokens = []
            for node_id in ["n3", "n1"]:  # n3 leads: its own sends stay on gRPC
                if client.status()["leader"] != node_id:  # a transfer to itself is refused
                    assert client.transfer_leadership(node_id) == node_id
                with client.acquire("peer-link", ttl=5.0) as lease:
                    tokens.append(lease.fencing_token)
            assert tokens[0] < tokens[1], tokens
