#!/usr/bin/env python3
"""Hand leadership away if the local node leads; do nothing otherwise. Always exits 0.

Run just before a node is stopped on purpose (the Kubernetes StatefulSet's preStop hook), so a
rolling restart moves leadership once, by `raftlease transfer`, instead of leaving the cluster
leaderless for an election timeout when the leader's turn comes. The same as, by hand:

    raftlease status          # is this node the leader?
    raftlease transfer        # then hand over to the most up-to-date follower

Settings, from the environment: RAFTLEASE_ID (this node's id, required),
RAFTLEASE_HEALTH_ADDRESS (the node's address, default 127.0.0.1:7001), and the client TLS
variables RAFTLEASE_TLS_CA / RAFTLEASE_TLS_CERT / RAFTLEASE_TLS_KEY (a node's certificate is
valid for client use; with auth rules, its id needs the `admin` action). docs/deployment.md.
"""

from __future__ import annotations

import os
import sys

from raftlease.client import LeaseClient
from raftlease.errors import RaftLeaseError


def main() -> int:
    node_id = os.environ.get("RAFTLEASE_ID", "")
    address = os.environ.get("RAFTLEASE_HEALTH_ADDRESS", "127.0.0.1:7001")
    if not node_id:
        print("step-down: RAFTLEASE_ID is not set; nothing done", file=sys.stderr)
        return 0
    try:
        with LeaseClient([address], timeout=5.0) as client:
            leader = client.status()["leader"]
            if leader != node_id:
                print(f"step-down: {node_id} is not the leader ({leader or 'none'}); nothing to do")
                return 0
            print(f"step-down: {node_id} leads; leader is now {client.transfer_leadership()}")
    except RaftLeaseError as err:  # never hold up the shutdown: an election follows instead
        print(f"step-down: {err}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
