"""``status()``: merge every endpoint's own ``Cluster.Status`` answer into one view."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from raftlease.client._values import one_line
from raftlease.v1 import cluster_pb2

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = ["merge_status"]


def _natural_key(text: str) -> tuple[Any, ...]:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text))


def merge_status(
    endpoints: Sequence[str],
    answers: Mapping[str, cluster_pb2.StatusResponse | str],
) -> dict[str, Any]:
    """Merge every endpoint's own ``Cluster.Status`` into one view.

    ``answers`` maps each endpoint to its StatusResponse, or to an error text when it did not
    answer. The result is ``{"leader": id or None, "leader_address", "term", "cluster_id",
    "nodes": [...]}``; each node has ``id, address, role, term, commit_index, applied_index``
    (and ``lease_valid, lease_remaining_ms``: its own leader lease) from its own answer, and
    ``last_heard_ms, match_index, lag, missed_heartbeats, reachable`` as seen by the leader
    (None when no leader answered). Nodes that did not answer have role ``"unreachable"`` and
    an ``error``.
    """
    ok = {ep: a for ep, a in answers.items() if isinstance(a, cluster_pb2.StatusResponse)}

    # The leader: a node that says it leads (highest term wins), else the most-named leader.
    leader: str | None = None
    leader_term = -1
    leader_resp: cluster_pb2.StatusResponse | None = None
    for resp in ok.values():
        if resp.leader_id and resp.leader_id == resp.node_id and resp.term > leader_term:
            leader, leader_term, leader_resp = resp.node_id, resp.term, resp
    leader_address: str | None = None
    if leader is None:
        votes: dict[tuple[int, str], int] = {}
        addresses: dict[str, str] = {}
        for resp in ok.values():
            if resp.leader_id:
                key = (resp.term, resp.leader_id)
                votes[key] = votes.get(key, 0) + 1
                if resp.leader_address:
                    addresses[resp.leader_id] = resp.leader_address
        if votes:
            (_, leader), _count = max(votes.items(), key=lambda kv: (kv[0][0], kv[1]))
            leader_address = addresses.get(leader)
    else:
        assert leader_resp is not None
        leader_address = leader_resp.leader_address or None

    nodes: dict[str, dict[str, Any]] = {}

    def blank(node_id: str, address: str) -> dict[str, Any]:
        return {
            "id": node_id,
            "address": address,
            "role": "unknown",
            "term": None,
            "commit_index": None,
            "applied_index": None,
            "last_heard_ms": None,
            "match_index": None,
            "lag": None,
            "missed_heartbeats": None,
            "reachable": None,
            "lease_valid": None,
            "lease_remaining_ms": None,
            "learner": False,
        }

    # Each node's own view of itself.
    answered: set[str] = set()
    for endpoint, resp in ok.items():
        me = next((n for n in resp.nodes if n.id == resp.node_id), None)
        node_id = resp.node_id or endpoint
        entry = nodes.setdefault(node_id, blank(node_id, endpoint))
        entry["address"] = (me.address if me is not None and me.address else "") or endpoint
        entry["role"] = me.role if me is not None and me.role else "unknown"
        entry["term"] = resp.term if resp.term else (me.term if me is not None else 0)
        entry["commit_index"] = me.commit_index if me is not None else None
        entry["applied_index"] = me.applied_index if me is not None else None
        entry["lease_valid"] = me.lease_valid if me is not None else None
        entry["lease_remaining_ms"] = me.lease_remaining_ms if me is not None else None
        entry["learner"] = me.learner if me is not None else False
        answered.add(node_id)

    # The leader's view of everyone (liveness, lag); nodes we did not query come from here.
    if leader_resp is not None:
        for n in leader_resp.nodes:
            entry = nodes.setdefault(n.id, blank(n.id, n.address))
            if n.id not in answered:
                entry.update(
                    address=n.address or entry["address"],
                    role=n.role or "unknown",
                    term=n.term,
                    commit_index=n.commit_index,
                    applied_index=n.applied_index,
                )
            entry.update(
                last_heard_ms=0 if n.id == leader else n.last_heard_ms,
                match_index=n.match_index,
                lag=n.lag,
                missed_heartbeats=n.missed_heartbeats,
                reachable=True if n.id == leader else n.reachable,
                learner=n.learner,
            )
    else:
        # Without the leader's answer, each node's list still names its peers.
        for resp in ok.values():
            for n in resp.nodes:
                if n.id not in nodes:
                    nodes[n.id] = blank(n.id, n.address)

    # Endpoints that did not answer.
    for endpoint in endpoints:
        error = answers.get(endpoint)
        if not isinstance(error, str):
            continue
        match = next(
            (e for e in nodes.values() if e["address"] == endpoint and e["id"] not in answered),
            None,
        )
        if match is None:
            match = nodes.setdefault(endpoint, blank(endpoint, endpoint))
        match["role"] = "unreachable"
        match["error"] = one_line(error)

    terms = [resp.term for resp in ok.values()]
    # The configuration in force: the leader's, else the newest any node reported.
    config_index = (
        leader_resp.config_index
        if leader_resp is not None
        else max((resp.config_index for resp in ok.values()), default=0)
    )
    cluster_ids = [resp.cluster_id for resp in ok.values() if resp.cluster_id]
    return {
        "leader": leader,
        "leader_address": leader_address,
        "term": max(terms) if terms else None,
        "cluster_id": cluster_ids[0] if cluster_ids else None,
        "config_index": config_index,
        "nodes": [nodes[k] for k in sorted(nodes, key=_natural_key)],
    }
