"""Prometheus metrics of one node (``raftlease serve --metrics HOST:PORT``). Layer L4.

Two halves, both on a per-node :class:`~prometheus_client.CollectorRegistry` (never the global
one, so one process can run several nodes, as the tests do):

- :class:`NodeMetrics` is the node's :class:`~raftlease.observe.NodeObserver`: it counts events
  (elections, heartbeats, lease grants/renewals/releases/expiries) in plain ints and observes
  the histograms (proposal latency, fsync time, renew margin).
- a collector reads the levels (role, term, indexes, leases, waiters, peer status) from the
  node itself when ``/metrics`` is scraped, so nothing is updated on every change.

:func:`start_metrics_server` serves ``/metrics`` from the node's own event loop (asyncio, no
thread): a scrape reads the node's state between two steps of its loop, never during one.

Every metric is documented in docs/operations.md ("Metrics").
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily

from raftlease import __version__
from raftlease.core.messages import AppendEntries
from raftlease.observe import NodeObserver
from raftlease.types import NodeId, Role

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from prometheus_client.metrics_core import Metric

    from raftlease.core.messages import Message
    from raftlease.core.ready import SoftState
    from raftlease.fsm.leases import EventKind
    from raftlease.node import Node

# propose -> applied on the leader: one fsync on a quorum, so milliseconds; seconds means trouble.
PROPOSAL_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# One Storage.save (SQLite commit, synchronous=FULL): fractions of a millisecond on a fast disk.
FSYNC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
# Time a lease had left when its renewal landed. Clients renew every ttl/3, so a healthy holder
# lands with about 2/3 of its TTL left; `raftlease run` stops its command at ttl/3 left.
MARGIN_SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 300.0)
# How long a leader lease was out before a quorum answer renewed it (or the leader stepped down).
LAPSE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
MARGIN_RATIO_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)

READ_TIMEOUT_S = 5.0
MAX_REQUEST_BYTES = 16 * 1024


class NodeMetrics(NodeObserver):
    """The metrics of one node; ``NodeMetrics(node)`` installs itself as ``node.observer``.

    Counters are plain ints, changed on the node's event loop and read by the collector on the
    same loop; the histograms are prometheus_client's (thread-safe: ``on_save`` runs in the
    fsync thread).
    """

    def __init__(self, node: Node, registry: CollectorRegistry | None = None) -> None:
        self.node = node
        self.registry = registry if registry is not None else CollectorRegistry()
        self.peers = sorted(p for p in node.cfg.peers if p != node.id)
        self.heartbeat_ticks = node.cfg.heartbeat_ticks
        self.leader_changes = 0
        self.elections_started = 0
        self.elections_won = 0
        self.lease_counts: dict[str, int] = {"acquired": 0, "released": 0, "expired": 0}
        self.renewals = 0
        self.lease_lapses = 0
        self.heartbeats_sent: dict[NodeId, int] = dict.fromkeys(self.peers, 0)
        self.heartbeat_responses: dict[NodeId, int] = dict.fromkeys(self.peers, 0)
        self.heartbeat_missed: dict[NodeId, int] = dict.fromkeys(self.peers, 0)
        # Leader only: the tick at which the current heartbeat interval of each peer began.
        self._interval_start: dict[NodeId, int] = {}
        self._last_leader: NodeId | None = None
        reg = self.registry
        self.proposal_latency = Histogram(
            "raftlease_proposal_latency_seconds",
            "Time from Node.propose to the entry being applied on this node (the leader).",
            buckets=PROPOSAL_BUCKETS,
            registry=reg,
        )
        self.fsync = Histogram(
            "raftlease_fsync_seconds",
            "Duration of each Storage.save (one group-committed, fsync'd batch).",
            buckets=FSYNC_BUCKETS,
            registry=reg,
        )
        self.renew_margin_seconds = Histogram(
            "raftlease_renew_margin_seconds",
            "Seconds a lease had left on the leader's clock when a renewal of it was served.",
            buckets=MARGIN_SECONDS_BUCKETS,
            registry=reg,
        )
        self.renew_margin_ratio = Histogram(
            "raftlease_renew_margin_ratio",
            "Fraction of its TTL a lease had left when a renewal of it was served.",
            buckets=MARGIN_RATIO_BUCKETS,
            registry=reg,
        )
        self.lease_lapse_seconds = Histogram(
            "raftlease_leader_lease_lapse_seconds",
            "How long each leader-lease lapse lasted (an upper bound: until the loop saw it).",
            buckets=LAPSE_BUCKETS,
            registry=reg,
        )
        reg.register(_NodeCollector(self))
        node.observer = self

    # -- NodeObserver ---------------------------------------------------------------------------

    def on_state_change(self, old: SoftState, new: SoftState) -> None:
        if new.role in (Role.CANDIDATE, Role.LEADER) and (
            new.term != old.term or old.role not in (Role.CANDIDATE, Role.LEADER)
        ):
            # A real election bumps the term; a pre-vote does not and is not counted. A node
            # that won within one Ready (a 1-node cluster) is seen going straight to LEADER.
            self.elections_started += 1
        if new.role is Role.LEADER and old.role is not Role.LEADER:
            self.elections_won += 1
        if new.leader_id is not None and new.leader_id != self._last_leader:
            self.leader_changes += 1
            self._last_leader = new.leader_id
        if new.role is not old.role or new.term != old.term:
            self._interval_start.clear()

    def on_send(self, messages: Sequence[Message]) -> None:
        sent = self.heartbeats_sent
        starts = self._interval_start
        due = False
        for m in messages:
            if type(m) is AppendEntries:
                if not m.entries:
                    dst = m.dst
                    sent[dst] = sent.get(dst, 0) + 1
                start = starts.get(m.dst)
                if start is None:
                    starts[m.dst] = m.send_tick
                elif m.send_tick - start >= self.heartbeat_ticks:
                    due = True
        if due:
            self._close_intervals(messages)

    def _close_intervals(self, messages: Sequence[Message]) -> None:
        """A heartbeat interval of some peers is over: did each of them answer within it?"""
        core = self.node.core
        now = core.tick_count
        heard = {p.id: p.ticks_since_heard for p in core.peer_status()}
        starts = self._interval_start
        for m in messages:
            if type(m) is not AppendEntries:
                continue
            start = starts.get(m.dst)
            if start is None or m.send_tick - start < self.heartbeat_ticks:
                continue
            ago = heard.get(m.dst, -1)
            if ago >= 0 and now - ago >= start:
                self.heartbeat_responses[m.dst] = self.heartbeat_responses.get(m.dst, 0) + 1
            else:
                self.heartbeat_missed[m.dst] = self.heartbeat_missed.get(m.dst, 0) + 1
            starts[m.dst] = m.send_tick

    def on_save(self, seconds: float) -> None:
        self.fsync.observe(seconds)

    def on_proposal_applied(self, seconds: float) -> None:
        self.proposal_latency.observe(seconds)

    def on_renewal(self, remaining_s: float, ttl_s: float) -> None:
        self.renewals += 1
        self.renew_margin_seconds.observe(remaining_s)
        if ttl_s > 0:
            self.renew_margin_ratio.observe(remaining_s / ttl_s)

    def on_lease_event(self, kind: EventKind) -> None:
        self.lease_counts[kind] = self.lease_counts.get(kind, 0) + 1

    def on_lease_lapse(self, seconds: float) -> None:
        self.lease_lapses += 1
        self.lease_lapse_seconds.observe(seconds)

    # -- exposition -----------------------------------------------------------------------------

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """(body, content type) of a scrape, in the format ``accept`` asks for."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _per_peer_counter(name: str, doc: str, values: dict[NodeId, int]) -> CounterMetricFamily:
    c = CounterMetricFamily(name, doc, labels=["peer"])
    for peer in sorted(values):
        c.add_metric([peer], values[peer])
    return c


class _NodeCollector:
    """Reads the node's levels at scrape time, and exports NodeMetrics' plain counters."""

    def __init__(self, metrics: NodeMetrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.m
        node = m.node
        core = node.core
        info = GaugeMetricFamily(
            "raftlease_node_info",
            "Always 1; labels identify the node.",
            labels=["node_id", "cluster_id", "version"],
        )
        info.add_metric([node.id, node.cfg.cluster_id, __version__], 1)
        yield info
        role = GaugeMetricFamily(
            "raftlease_role",
            "1 for this node's current Raft role, 0 for the others.",
            labels=["role"],
        )
        current = node.soft.role
        for r in Role:
            role.add_metric([r.value], 1 if r is current else 0)
        yield role
        yield GaugeMetricFamily("raftlease_term", "Current Raft term.", value=core.term)
        yield GaugeMetricFamily(
            "raftlease_commit_index", "Highest log index known committed.", value=core.commit_index
        )
        yield GaugeMetricFamily(
            "raftlease_applied_index",
            "Highest log index applied to the lease table.",
            value=node.applied_index,
        )
        yield GaugeMetricFamily(
            "raftlease_last_index", "Last index of this node's log.", value=core.last_index
        )
        yield GaugeMetricFamily(
            "raftlease_leader_lease_valid",
            "1 while this node is the leader and may serve renewals and reads, else 0.",
            value=1 if node.lease_ok() else 0,
        )
        yield GaugeMetricFamily(
            "raftlease_leases_active",
            "Leases currently granted (this node's applied lease table).",
            value=len(node.table),
        )
        yield GaugeMetricFamily(
            "raftlease_lease_waiters",
            "Acquires queued behind a held lease (this node's applied lease table).",
            value=len(node.table.queued()),
        )
        heard = GaugeMetricFamily(
            "raftlease_peer_last_heard_seconds",
            "Leader only: seconds since this leader last heard from the peer.",
            labels=["peer"],
        )
        lag = GaugeMetricFamily(
            "raftlease_follower_lag_entries",
            "Leader only: entries in the leader's log the peer has not acknowledged.",
            labels=["peer"],
        )
        if core.role is Role.LEADER:
            tick_s = node.tick_s
            for p in core.peer_status():
                if p.ticks_since_heard >= 0:
                    heard.add_metric([p.id], p.ticks_since_heard * tick_s)
                else:  # not heard from in this term
                    heard.add_metric([p.id], math.inf)
                lag.add_metric([p.id], max(0, core.last_index - p.match_index))
        yield heard
        yield lag
        yield _counter(
            "raftlease_leader_changes",
            "Times this node saw the leader change to a new known leader.",
            m.leader_changes,
        )
        yield _counter(
            "raftlease_elections_started",
            "Elections this node started as a candidate (pre-votes not counted).",
            m.elections_started,
        )
        yield _counter("raftlease_elections_won", "Elections this node won.", m.elections_won)
        yield _counter(
            "raftlease_leader_lease_lapses",
            "Times this node's leader lease ran out while it led, before a quorum answer "
            "renewed it (renewals and reads answered RETRY meanwhile).",
            m.lease_lapses,
        )
        yield _per_peer_counter(
            "raftlease_heartbeats_sent",
            "Empty AppendEntries (heartbeats) this node sent as leader, per peer.",
            m.heartbeats_sent,
        )
        yield _per_peer_counter(
            "raftlease_heartbeat_responses",
            "Heartbeat intervals in which the peer answered this leader, per peer.",
            m.heartbeat_responses,
        )
        yield _per_peer_counter(
            "raftlease_heartbeat_missed",
            "Heartbeat intervals in which the peer did not answer this leader, per peer.",
            m.heartbeat_missed,
        )
        counts = m.lease_counts
        yield _counter(
            "raftlease_lease_grants", "Leases granted (applied on this node).", counts["acquired"]
        )
        yield _counter(
            "raftlease_lease_renewals", "Renewals served by this node as leader.", m.renewals
        )
        yield _counter(
            "raftlease_lease_releases",
            "Leases released (applied on this node).",
            counts["released"],
        )
        yield _counter(
            "raftlease_lease_expiries",
            "Leases that expired (applied on this node).",
            counts["expired"],
        )


# -- HTTP -----------------------------------------------------------------------------------------


async def start_metrics_server(
    metrics: NodeMetrics | None, host: str, port: int
) -> tuple[asyncio.Server, list[NodeMetrics | None]]:
    """Bind ``host:port`` (raises OSError if it cannot) and serve ``GET /metrics`` on the running
    loop. The returned list's one slot holds the NodeMetrics to serve; it may be filled in after
    binding (503 until then), so the port can be taken before the node exists."""
    slot: list[NodeMetrics | None] = [metrics]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_S)
            status, ctype, body = _respond(head, slot[0])
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode("latin-1")
                + (b"" if head.startswith(b"HEAD ") else body)
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    server = await asyncio.start_server(
        handle, host, port, reuse_address=True, limit=MAX_REQUEST_BYTES
    )
    return server, slot


def _respond(head: bytes, metrics: NodeMetrics | None) -> tuple[str, str, bytes]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split()
    text = "text/plain; charset=utf-8"
    if len(parts) != 3 or parts[0] not in ("GET", "HEAD"):
        return "405 Method Not Allowed", text, b"GET /metrics\n"
    path = parts[1].split("?", 1)[0]
    if path not in ("/metrics", "/"):
        return "404 Not Found", text, b"metrics are at /metrics\n"
    if metrics is None:
        return "503 Service Unavailable", text, b"starting\n"
    accept = ""
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "accept":
            accept = value.strip()
    body, ctype = metrics.render(accept)
    return "200 OK", ctype, body


__all__ = ["NodeMetrics", "start_metrics_server"]
