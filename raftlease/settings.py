"""One node's server settings, validated as a whole. Imports: config, errors, types (layer L0).

:class:`ServerConfig` holds everything a server node is started with (``raftlease serve``'s
flags, or a test's or the benchmark's arguments) and is the ONE place where each server default
is declared. :meth:`ServerConfig.raft_config` derives the core's :class:`RaftConfig` from it
(the core's own defaults apply only to what a server does not set: lease window, batching,
PreVote/CheckQuorum).

:meth:`ServerConfig.problems` lists every broken rule, one message each: the server's own
rules (membership, cluster id, tick range, addresses of members only, ...) and the core's
timing rules (the inequalities of docs/safety.md that ``RaftConfig.validate`` enforces).
:meth:`ServerConfig.validate` raises them all at once as :class:`InvalidConfig` (a
``ConfigError``), one problem a line. Messages name fields by their field names (``node_id``,
``tick_s``); pass ``names`` to name them as the caller's users know them (server.py passes the
``serve`` flags: ``--id``, ``--tick``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Final

from raftlease.config import DEFAULT_MAX_DRIFT, InvalidConfig, RaftConfig
from raftlease.types import NodeId

if TYPE_CHECKING:
    from collections.abc import Mapping

TICK_MIN_S: Final = 0.001  # the shortest tick a server accepts (0 cannot run)
TICK_MAX_S: Final = 0.1  # the longest: with 20-40 tick elections, coarser means slow failover
#: The bounds of ``max_request_bytes``; the upper one is the transport's message cap
#: (``raftlease.transport.grpc.MAX_MESSAGE_BYTES``, which this layer may not import; the
#: limits tests keep the two equal).
REQUEST_BYTES_MIN: Final = 1024
REQUEST_BYTES_MAX: Final = 64 * 1024 * 1024

#: How long a new leader keeps queued acquires whose client has not re-attached. The lease
#: service's own default (``raftlease.fsm.keeper.INHERITED_WAIT_GRACE_S``, which this layer may
#: not import) is the same 2 s; tests/test_settings.py keeps the two equal.
INHERITED_WAIT_GRACE_S: Final = 2.0

#: The RaftConfig fields a ServerConfig sets itself; ``raft_overrides`` may set any other.
_DERIVED = frozenset(
    {"node_id", "voters", "election_ticks_min", "election_ticks_max", "heartbeat_ticks"}
    | {"max_drift"}
)


def fmt_seconds(seconds: float) -> str:
    """``0.01`` -> ``10ms``, ``10.0`` -> ``10s`` (as ``--tick`` is written)."""
    if not math.isfinite(seconds):
        return str(seconds)
    return f"{seconds:g}s" if seconds >= 1.0 else f"{seconds * 1000:g}ms"


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Settings of one server node. Every member must use the same timings (tick_s,
    election/heartbeat ticks, max_drift): peers compare :meth:`safety_settings` when a link
    opens and refuse a mismatch.

    node_id: this node's id; must be one of ``peers``.
    cluster_id: the same non-empty id on every member (messages of another cluster are
        refused).
    peers: every voter, this node included -> HOST:PORT for peer traffic.
    client_addresses: where clients reach each member (leader hints, status); defaults to
        ``peers``; differs when peer links go through proxies (the jepsen-style harness). Only
        members may be named.
    tick_s: seconds per core tick (default 0.01; 1 ms..100 ms). With election 20..40 ticks and
        heartbeat 10 ticks that is a 200..400 ms election timeout and 100 ms heartbeats.
    election_ticks_min / election_ticks_max: the randomized election timeout, in ticks
        (default 20..40). Also leader stickiness and CheckQuorum (see RaftConfig).
    heartbeat_ticks: 10 here, half the minimum election timeout (the most the rules allow). On
        this project's 2-core VM heartbeats are most of an idle cluster's CPU (W5: 4.1-4.5 % of
        a core at 40 ms, 2.9-3.5 % at 60 ms, 2.8 % at 100 ms), and a longer heartbeat does not
        slow failover: a follower's election timer runs from the last heartbeat it heard, so on
        average it fires sooner after the leader dies (W4 median 0.31 s at 60 ms, 0.28 s at
        100 ms; docs/benchmarks.md). The fine tick (10 ms rather than 20 ms) keeps the leader
        lease 14 ticks = 140 ms long, 40 ms more than a heartbeat interval, so it does not lapse
        between heartbeats.
    max_drift: bound on every clock's rate error (default 0.01 = 1 %); sizes the leader lease.
    snapshot_entries: take a snapshot and compact the log after this many applied entries
        (default 10 000; at least 1).
    inherited_wait_grace_s: a new leader cancels every queued acquire whose client has not
        re-attached (retried with its request id) this long after it took office (default 2 s).
    max_request_bytes: the largest client request (Lease and Cluster services) a node
        decodes, in bytes (default 1 MiB; 1 KiB..64 MiB). Peer messages may be as large as the
        transport's 64 MiB cap (an InstallSnapshot carries the whole lease table).
    max_waits_per_client: Acquire calls with a wait one client may have open at once
        (default 10 000; a client is its auth identity, else its network host).
    max_streams_per_client: Watch and KeepAlive streams one client may have open at once
        (default 20 000: the W6 benchmark keeps 10 000 leases alive, a stream each).
    max_leases_per_holder: leases one holder string may hold at once (default 100 000: the
        whole W6 goal of 100 clients x 1000 leases could run under one holder).
    seed: seed of the election-timeout randomness (None: from the OS).
    raft_overrides: other RaftConfig fields (lease_ticks, max_entries_per_append,
        max_inflight, pre_vote, check_quorum); RaftConfig's defaults otherwise.
    peer_listen: where this node takes plain-TCP peer links (raftlease/transport/tcp.py):
        "auto" (default) a free port on the host it listens on, announced to each peer over
        its gRPC link; "HOST:PORT" a fixed one (firewalls); "off": none, Raft messages to
        this node stay on gRPC. With TLS the link is mutual TLS with the node's certificate.
    peer_links: where to dial a peer's TCP link instead of the port it announces, on the
        host of its peer address (proxies, NAT; the jepsen-style harness).
    """

    node_id: NodeId
    cluster_id: str
    peers: dict[NodeId, str]
    client_addresses: dict[NodeId, str] = field(default_factory=dict)
    tick_s: float = 0.01
    election_ticks_min: int = 20
    election_ticks_max: int = 40
    heartbeat_ticks: int = 10
    max_drift: float = DEFAULT_MAX_DRIFT
    snapshot_entries: int = 10_000
    inherited_wait_grace_s: float = INHERITED_WAIT_GRACE_S
    max_request_bytes: int = 1024 * 1024
    max_waits_per_client: int = 10_000
    max_streams_per_client: int = 20_000
    max_leases_per_holder: int = 100_000
    seed: int | None = None
    raft_overrides: dict[str, Any] = field(default_factory=dict)
    peer_listen: str = "auto"
    peer_links: dict[NodeId, str] = field(default_factory=dict)
    # Joining an existing cluster (`serve --join`): no bootstrap configuration; ``peers`` is
    # only an address book until the leader replicates a configuration containing this node.
    join: bool = False

    def safety_settings(self) -> str:
        """The settings the safety argument compares across nodes (docs/safety.md, L1), as
        one line. Peers exchange it when a link opens and refuse a mismatch: a rolling change
        of the tick length, say, would otherwise break (L1) silently."""
        rc = self.raft_config()
        return (
            f"tick={self.tick_s * 1000:g}ms election={rc.election_ticks_min}-"
            f"{rc.election_ticks_max} heartbeat={rc.heartbeat_ticks} "
            f"lease={rc.effective_lease_ticks} max_drift={rc.max_drift:g}"
        )

    def raft_config(self) -> RaftConfig:
        """The core's configuration (not validated here: see :meth:`validate`)."""
        return RaftConfig(
            node_id=self.node_id,
            voters=() if self.join else tuple(sorted(self.peers)),
            election_ticks_min=self.election_ticks_min,
            election_ticks_max=self.election_ticks_max,
            heartbeat_ticks=self.heartbeat_ticks,
            max_drift=self.max_drift,
            **self.raft_overrides,
        )

    def validate(self, names: Mapping[str, str] | None = None) -> None:
        """Raise :class:`InvalidConfig` listing every broken rule (see :meth:`problems`)."""
        problems = self.problems(names)
        if problems:
            raise InvalidConfig(problems)

    def problems(self, names: Mapping[str, str] | None = None) -> list[str]:
        """One message per broken rule, in rule order; empty when these settings are valid.

        ``names`` maps field names to what the messages call them (e.g. ``{"node_id":
        "--id"}``); a field not in it is called by its name.
        """

        def name(f: str) -> str:
            return (names or {}).get(f, f)

        out: list[str] = []
        # -- membership (RaftConfig's membership rules, in the server's words)
        if not self.node_id:
            out.append(f"{name('node_id')} must not be empty")
        elif self.node_id not in self.peers:
            out.append(
                f"{name('node_id')} {self.node_id!r} is not one of {name('peers')} "
                f"({', '.join(sorted(self.peers))}): list every member in {name('peers')}, "
                "this node included, identically on every node"
            )
        strangers = sorted(set(self.client_addresses) - set(self.peers))
        if strangers:
            out.append(
                f"{name('client_addresses')} names {', '.join(strangers)}, not one of "
                f"{name('peers')} ({', '.join(sorted(self.peers))}): give addresses of "
                "members only"
            )
        if self.peer_listen not in ("auto", "off") and ":" not in self.peer_listen:
            out.append(
                f"{name('peer_listen')} must be HOST:PORT, auto or off, got {self.peer_listen!r}"
            )
        if not self.cluster_id.strip():
            out.append(
                f"{name('cluster_id')} must not be empty: give every member the same non-empty id"
            )
        # -- time
        if not TICK_MIN_S <= self.tick_s <= TICK_MAX_S:  # also refuses NaN
            out.append(
                f"{name('tick_s')} {fmt_seconds(self.tick_s)} is outside the allowed range "
                f"{fmt_seconds(TICK_MIN_S)}..{fmt_seconds(TICK_MAX_S)} (default "
                f"{fmt_seconds(_DEFAULTS['tick_s'])}; elections take "
                f"{self.election_ticks_min}-{self.election_ticks_max} ticks, heartbeats "
                f"every {self.heartbeat_ticks})"
            )
        unknown = sorted(set(self.raft_overrides) - _RAFT_FIELDS)
        derived = sorted(set(self.raft_overrides) & _DERIVED)
        if unknown or derived:
            settable = ", ".join(sorted(_RAFT_FIELDS - _DERIVED))
            out.append(
                f"{name('raft_overrides')} may set only {settable}; got "
                f"{', '.join(unknown + derived)}"
            )
        # The core's timing rules: the inequalities of the safety argument (docs/safety.md).
        usable = {k: v for k, v in self.raft_overrides.items() if k not in unknown + derived}
        core = replace(self, raft_overrides=usable) if usable != self.raft_overrides else self
        rc = core.raft_config()
        out += [_with_reason(p) for p in rc.timing_problems()]
        if rc.lease_ticks is None and not (rc.pre_vote and rc.check_quorum):
            # The core allows a node without a leader lease; a server cannot work without one.
            out.append(
                f"{name('raft_overrides')} turns off "
                f"{' and '.join(k for k in ('pre_vote', 'check_quorum') if not getattr(rc, k))}"
                ": a server serves renewals and reads only under its leader lease, which needs "
                "both (PreVote keeps a rejoining node from deposing the leader, CheckQuorum "
                "steps a cut-off leader down); leave them on"
            )
        # -- the rest
        if self.snapshot_entries < 1:
            out.append(f"{name('snapshot_entries')} must be >= 1, got {self.snapshot_entries}")
        if not REQUEST_BYTES_MIN <= self.max_request_bytes <= REQUEST_BYTES_MAX:
            out.append(
                f"{name('max_request_bytes')} must be {REQUEST_BYTES_MIN}..{REQUEST_BYTES_MAX} "
                f"bytes (the transport's message cap), got {self.max_request_bytes}"
            )
        for f in ("max_waits_per_client", "max_streams_per_client", "max_leases_per_holder"):
            value = getattr(self, f)
            if value < 1:
                out.append(f"{name(f)} must be >= 1, got {value}")
        if not 0.0 <= self.inherited_wait_grace_s < math.inf:
            out.append(
                f"{name('inherited_wait_grace_s')} must be a finite number of seconds >= 0, "
                f"got {self.inherited_wait_grace_s}"
            )
        return out


#: Why each timing rule of RaftConfig exists (docs/safety.md), appended to the core's message
#: (which says what is wrong) when a server reports it. Keyed by the start of that message.
_REASONS: Final = (
    (
        "max_drift must be",
        "it bounds every clock's rate error (0.01 = 1 %) and sizes the leader lease (L1)",
    ),
    ("heartbeat_ticks must be >= 1", "the leader sends a heartbeat every heartbeat_ticks ticks"),
    (
        "election_ticks_min must be at least 2 * heartbeat_ticks",
        "a follower must be able to miss one heartbeat before it calls an election, or a "
        "single lost message deposes a healthy leader",
    ),
    (
        "election_ticks_max must be greater than election_ticks_min",
        "each follower draws its election timeout at random from [min, max), so that they do "
        "not all stand at once and split the vote",
    ),
    (
        "lease_ticks=",
        "a longer leader lease could still be in force when the followers' vote stickiness "
        "(election_ticks_min ticks, less drift) ends and they elect a new leader",
    ),
    (
        "election_ticks_min=",
        "the leader lease must end a margin (a fifth of election_ticks_min, at least 2 ticks) "
        "before the followers' vote stickiness does, both counted with max_drift against them",
    ),
    (
        "a leader lease needs pre_vote and check_quorum",
        "without them a follower may vote for a new leader while the old lease still runs",
    ),
)


def _with_reason(problem: str) -> str:
    """A core timing problem, with why the rule exists when the core's message does not say."""
    for start, reason in _REASONS:
        if problem.startswith(start):
            return f"{problem}; {reason}"
    return problem


_RAFT_FIELDS = frozenset(f.name for f in fields(RaftConfig))
_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(ServerConfig)}

__all__ = [
    "INHERITED_WAIT_GRACE_S",
    "REQUEST_BYTES_MAX",
    "REQUEST_BYTES_MIN",
    "TICK_MAX_S",
    "TICK_MIN_S",
    "InvalidConfig",
    "ServerConfig",
]
