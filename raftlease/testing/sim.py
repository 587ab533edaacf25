"""SimCluster: a seeded, deterministic discrete-event simulator of a raftlease cluster.

No asyncio, no real time, no global ``random``: one ``random.Random(seed)`` is split, in a
fixed order, into the streams used for clocks, the network, the workload, faults and each
core's election timer (a restarted core gets a fresh stream from the ``restart`` one). The
same seed therefore replays the same run, event for event, with or without tracing.

Time is an integer number of microseconds. Events sit on a heap ordered by (time, seq):
node ticks, message deliveries, and scheduled actions (workload, faults, tests).

Each node has a :class:`MemoryStorage` and a core built from ``storage.load()``. Its clock
ticks every ``tick_us / rate`` real microseconds (``rate`` = 1 ± drift; within the config's
``max_drift`` by default). After EVERY input to a core (tick, message, proposal, transfer) the
driver runs the Ready loop exactly as the READY CONTRACT (core/ready.py) says: save hard
state + snapshot + entries, then send the messages, then apply the snapshot and committed
entries, then ``advance``. The checkers (checkers.py) observe each step as it happens.

Each node also runs the lease service that ships, :class:`raftlease.service.LeaseService`,
exactly as ``raftlease/node.py`` drives it: it applies every committed entry to its lease
table (snapshots carry the state hash followed by ``table.snapshot()``), keeps lease deadlines
on the node's own clock (``local = offset + rate * real``), serves renewals under its leader
lease check, runs each client call's acquire procedure, expires leases, and acts on taking
and losing office. Nothing here restates those rules: the simulator only delivers simulated
clients' requests (clients.py) over their own lossy, partitionable links, translates the
service's outcomes into replies, and models what gRPC does around a handler (a call's
deadline and a client's death cancel it; a node's crash resets its connections).
:class:`LeaseCheckers` checks mutual exclusion and fencing as it happens.

A crash drops the core and everything volatile; messages that reach a down node are lost.
A restart rebuilds the core from ``storage.load()``. Failpoints crash any node inside its
Ready loop (before its fsync, before send, after send, after apply), optionally only at the
moments that matter (a vote just persisted, entries acknowledged but not committed, a
snapshot install, a new leader, a commit). A pause (SIGSTOP) freezes a node while its clock
runs on. The network (network.py) drops (optionally one message kind only), duplicates and
delays per directed link, and partitions by named shapes.

Besides the checkers, the simulator runs rules that need its view of real time and of every
node: ``vote-stickiness`` and ``lease-quorum`` (docs/safety.md step 1 and L1, in real time),
``renew-outside-lease`` and ``transfer-lease`` (S2, T1), and two liveness oracles: a leader
that no quorum reached for 2·E_min + 2 of its ticks must have stepped down (CheckQuorum), and
a fault-free window (:meth:`SimCluster.quiet_window`) must see a valid leader lease within
:meth:`SimCluster.election_bound_us`.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import itertools
import math
import random
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, assert_never

from raftlease.config import RaftConfig
from raftlease.core.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
    RequestVote,
    RequestVoteResponse,
    Snapshot,
    TimeoutNow,
)
from raftlease.core.quorum import quorum_value
from raftlease.core.raft import RaftCore
from raftlease.core.ready import HardState, Ready
from raftlease.errors import NoLeaderLease, NotLeader, ProposalDropped
from raftlease.fsm.keeper import LeaseKeeper
from raftlease.fsm.leases import LeaseRecord, LeaseTable, Rejected, Released
from raftlease.service import Acquired, Call, Internal, LeaseService, NotAcquired, Outcome
from raftlease.storage.memory import MemoryStorage
from raftlease.testing.checkers import Checkers, LeaseCheckers, LivenessViolation, SafetyViolation
from raftlease.testing.clients import (
    HELD,
    INTERNAL,
    INVALID,
    NOT_FOUND,
    OK,
    UNAVAILABLE,
    AcquireReq,
    ClientParams,
    ClientReply,
    ClientRequest,
    FencedResource,
    ReleaseReq,
    RenewReq,
    SimClient,
)
from raftlease.testing.network import LinkParams, SimNetwork
from raftlease.types import NodeId, Role

__all__ = [
    "PARTITION_SHAPES",
    "CoreFactory",
    "LeaseInterval",
    "LivenessResult",
    "SimCluster",
    "SimNode",
    "describe",
]

CoreFactory = Callable[
    [RaftConfig, random.Random, HardState | None, Snapshot | None, tuple[Entry, ...]], RaftCore
]

PARTITION_SHAPES = (
    "isolate-leader",
    "isolate-one",
    "minority",
    "majorities-ring",
    "bridge",
    "one-way",
)

ZERO_HASH = bytes(16)
HASH_LEN = len(ZERO_HASH)  # a snapshot's data: the state hash, then the lease table

FAILPOINTS = ("before-send", "before-save", "after-send", "after-apply")
# Where a failpoint applies: every Ready (""), a leader's, a new leader's first, one with
# committed entries, a follower's, one that persists a vote (a granted vote or a candidate's
# own), a leader's while entries some follower acknowledged are not committed yet, and one
# that installs a snapshot.
FAILPOINT_SCOPES = ("", "leader", "new-leader", "commit", "follower", "vote", "acked", "snapshot")


class _Crashed(Exception):
    """A failpoint crashed the node in the middle of its Ready loop."""


_TICK = 0
_MSG = 1
_ACTION = 2
_CREQ = 3  # a client request reaches a node (index: the node)
_CREP = 4  # a node's answer reaches a client (index: the client)

# An event: (time_us, seq, kind, node index, payload). (time, seq) is unique, so the payload
# is never compared.
_Event = tuple[int, int, int, int, Any]


def state_hash(prev: bytes, e: Entry) -> bytes:
    """The state-machine hash chain: the hash after applying ``e`` on top of ``prev``."""
    h = hashlib.blake2b(prev, digest_size=16)
    h.update(e.index.to_bytes(8, "big"))
    h.update(e.term.to_bytes(8, "big"))
    h.update(bytes((int(e.kind),)))
    h.update(e.data)
    return h.digest()


def describe(m: Message) -> str:
    """A short, stable, one-line rendering of a message (for transcripts)."""
    head = f"{m.src}->{m.dst} t{m.term}"
    match m:
        case RequestVote():
            kind = "PreVote" if m.pre_vote else "RequestVote"
            extra = " transfer" if m.transfer else ""
            return f"{head} {kind} last={m.last_log_index}/{m.last_log_term}{extra}"
        case RequestVoteResponse():
            kind = "PreVoteResp" if m.pre_vote else "VoteResp"
            return f"{head} {kind} {'granted' if m.granted else 'rejected'}"
        case AppendEntries():
            ents = ""
            if m.entries:
                ents = f" entries={m.entries[0].index}..{m.entries[-1].index}"
            return (
                f"{head} Append prev={m.prev_log_index}/{m.prev_log_term}{ents} "
                f"commit={m.leader_commit} st={m.send_tick}"
            )
        case AppendEntriesResponse():
            if m.success:
                return f"{head} AppendResp ok match={m.match_index} st={m.send_tick}"
            return (
                f"{head} AppendResp reject prev={m.match_index} last={m.last_log_index} "
                f"conflict={m.conflict_index}/{m.conflict_term}"
            )
        case InstallSnapshot():
            return f"{head} InstallSnapshot {m.snapshot.index}/{m.snapshot.term}"
        case InstallSnapshotResponse():
            return f"{head} SnapshotResp match={m.match_index}"
        case TimeoutNow():
            return f"{head} TimeoutNow"
        case _:
            assert_never(m)


@dataclass(slots=True)
class SimNode:
    """One simulated server: durable storage, a clock, and (while up) a core."""

    id: NodeId
    index: int
    rate: float
    tick_interval_us: float
    storage: MemoryStorage = field(default_factory=MemoryStorage)
    core: RaftCore | None = None
    up: bool = False
    incarnation: int = 0
    next_tick_us: float = 0.0
    applied_index: int = 0
    state_hash: bytes = ZERO_HASH
    # index -> (term, kind, data) of every entry this node's state machine applied.
    applied_log: dict[int, tuple[int, int, bytes]] = field(default_factory=dict)
    seen_role: Role = Role.FOLLOWER
    seen_term: int = 0
    lease: bool = False
    crashes: int = 0
    # SIGSTOP: while paused the clock runs on but the process does nothing; ticks are missed
    # and messages wait in ``inbox``. ``pause_lease_left``: ticks its lease belief has left.
    paused: bool = False
    missed_ticks: int = 0
    inbox: list[Message | ClientRequest] = field(default_factory=list)
    pause_lease_left: int = 0
    # The lease service that ships (volatile: rebuilt from snapshot + log on boot, as in
    # node.py), and when this node's driver next wakes for it (local seconds; inf: no wake).
    service: LeaseService | None = None
    wake_at: float = math.inf
    deferred: list[Callable[[], None]] = field(default_factory=list)  # timers due while paused
    # The node's monotonic clock: local_s = clock_local_s + rate * (now - clock_real_us) / 1e6.
    clock_real_us: int = 0
    clock_local_s: float = 0.0
    # The CheckQuorum oracle: per peer index, this node's tick count when a message from that
    # peer was last delivered to it (-1: never, in this incarnation); the tick it took office.
    heard_tick: list[int] = field(default_factory=list)
    leader_since_tick: int = 0
    # The stickiness rule: when it last sent an ack that counts toward a leader's lease
    # (real us, -1: never; survives crashes: the window is real time), the shortest real
    # interval between its ticks so far, and the transfer vote requests it was sent.
    acked_at_us: int = -1
    booted_at_us: int = 0  # boot counts as contact with a leader (docs/safety.md R1)
    timeout_now_term: int = 0  # the last term in which it sent TimeoutNow (a transfer)
    # As leader: the highest send tick each peer's delivered answers of its term echoed.
    echoed: dict[NodeId, int] = field(default_factory=dict)
    acked_term: int = 0
    acked_leader: NodeId | None = None
    term_before_vote: int = 0  # its term when it was handed the latest RequestVote
    min_tick_interval_us: float = 0.0
    transfer_asks: set[tuple[NodeId, int]] = field(default_factory=set)

    @property
    def is_leader(self) -> bool:
        return self.core is not None and self.core.role is Role.LEADER

    @property
    def table(self) -> LeaseTable:
        """The lease table of the running service (an empty one while down)."""
        return self.service.table if self.service is not None else LeaseTable()


def _gone(node: SimNode, inc: int) -> bool:
    """Has ``node`` crashed (or crashed and restarted) since incarnation ``inc``?"""
    return not node.up or node.incarnation != inc


def _persists_vote(rd: Ready) -> bool:
    """Does this Ready persist a vote (a granted RequestVote answer, or a candidate's own,
    which goes with its RequestVotes)?"""
    if rd.hard_state is None:
        return False
    for m in rd.messages:
        t = type(m)
        if t is RequestVoteResponse and m.granted and not m.pre_vote:  # type: ignore[union-attr]
            return True
        if t is RequestVote and not m.pre_vote:  # type: ignore[union-attr]
            return True
    return False


def _acked_uncommitted(core: RaftCore | None) -> bool:
    """Has some follower acknowledged entries this leader has not committed yet?"""
    if core is None:
        return False
    committed = core.log.committed
    return any(p.match_index > committed for p in core.progress.values())


@dataclass(frozen=True, slots=True)
class LeaseInterval:
    """A node held a valid leader lease over [start_us, end_us) (end -1: still holds it)."""

    node: NodeId
    term: int
    start_us: int
    end_us: int


@dataclass(frozen=True, slots=True)
class LivenessResult:
    """What the post-heal liveness check measured."""

    election_us: int  # heal -> first valid leader lease
    stable_us: int  # heal -> start of the lease of the leader that then stayed stable
    commit_us: int  # proposal -> applied on every node
    leader: NodeId
    term: int
    disruptions: int  # lease leaders deposed before they proved stable
    tick_us: int
    election_ticks_max: int

    @property
    def election_ticks(self) -> float:
        return self.election_us / self.tick_us

    @property
    def stable_ticks(self) -> float:
        return self.stable_us / self.tick_us


class SimCluster:
    """A whole cluster in one process, driven by virtual time. See the module docstring.

    ``config`` overrides RaftConfig fields (election_ticks_min, lease_ticks, ...) for every
    node. ``rates`` pins each node's clock rate (beyond-bound rates are allowed, for tests
    that must detect violations); by default each rate is drawn in 1 ± ``max_drift``, which
    defaults to the config's ``max_drift``. The workload intervals are (min, max) in us, or
    None to disable: proposals to the leader, compactions, leadership transfers.

    ``failpoints`` crash a node inside its Ready loop (etcd gofail style, fault matrix row 3):
    ``{"[scope:]point": probability}`` with point ``before-send`` (persisted, nothing sent;
    for a leader replicating before its fsync: nothing persisted or sent), ``before-save``
    (a leader sent its AppendEntries early, nothing persisted), ``after-send`` (sent, nothing
    applied) or ``after-apply`` (applied, not advanced), and
    scope ``leader`` (the node is leader), ``new-leader`` (its first Ready as leader),
    ``commit`` (the Ready carries committed entries), ``follower`` (the node is not leader),
    ``vote`` (the Ready persists a vote: a granted RequestVote answer or a candidate's own),
    ``acked`` (a leader some follower acknowledged entries to that are not committed yet;
    these also fire right after the leader steps such an acknowledgement) or
    ``snapshot`` (the Ready installs a snapshot); no scope means every Ready. ``before-save``
    applies to every Ready: nothing of it persisted (and nothing sent, unless the driver
    sends before its fsync). A crashed node restarts after a delay drawn from
    ``failpoint_down_us``.

    ``clients`` starts the simulated lease clients (clients.py); their links to the nodes use
    ``client_link`` (default: ``link``). The lease table and keeper run on every node either
    way. Planted server bugs override :meth:`make_service` or :meth:`make_keeper` in a subclass.
    """

    # Rule ``renew-outside-lease``: a renewal is answered OK only by a node that holds a valid
    # leader lease at that instant (False: leave such bugs to the end-to-end ME checks).
    check_renewals = True

    def __init__(
        self,
        n: int = 3,
        seed: int = 0,
        *,
        config: Mapping[str, Any] | None = None,
        core_factory: CoreFactory = RaftCore,
        tick_us: int = 10_000,
        rates: Sequence[float] | None = None,
        max_drift: float | None = None,
        link: LinkParams | None = None,
        propose_every_us: tuple[int, int] | None = (5_000, 40_000),
        compact_every_us: tuple[int, int] | None = None,
        transfer_every_us: tuple[int, int] | None = None,
        failpoints: Mapping[str, float] | None = None,
        failpoint_down_us: tuple[int, int] = (0, 200_000),
        clients: ClientParams | None = None,
        client_link: LinkParams | None = None,
        trace: Callable[[str], None] | None = None,
    ) -> None:
        if n < 1:
            raise ValueError("n must be >= 1")
        self.seed = seed
        self.tick_us = tick_us
        self.ids: tuple[NodeId, ...] = tuple(NodeId(f"n{i + 1}") for i in range(n))
        self.config_overrides: dict[str, Any] = dict(config or {})
        self.core_factory = core_factory
        self.trace = trace
        probe = self.config_for(self.ids[0])
        probe.validate()
        self.election_ticks_max = probe.election_ticks_max
        self.election_ticks_min = probe.election_ticks_min

        # Every random stream, derived from the one seed in a fixed order.
        root = random.Random(seed)
        self.clock_rng = clock_rng = random.Random(root.getrandbits(64))
        self.net_rng = random.Random(root.getrandbits(64))
        self.workload_rng = random.Random(root.getrandbits(64))
        self.fault_rng = random.Random(root.getrandbits(64))
        self.restart_rng = random.Random(root.getrandbits(64))
        self.user_rng = random.Random(root.getrandbits(64))  # for callers (sweep, tests)
        # Drawn after the streams above, so that adding them changed none of those.
        self.lease_rng = lease_rng = random.Random(root.getrandbits(64))
        client_net_rng = random.Random(root.getrandbits(64))

        drift = probe.max_drift if max_drift is None else max_drift
        if rates is not None and len(rates) != n:
            raise ValueError(f"need {n} clock rates, got {len(rates)}")
        self.nodes: list[SimNode] = []
        for i, nid in enumerate(self.ids):
            rate = rates[i] if rates is not None else 1.0 + clock_rng.uniform(-drift, drift)
            if rate <= 0:
                raise ValueError(f"clock rate must be positive, got {rate}")
            self.nodes.append(
                SimNode(nid, i, rate, tick_us / rate, min_tick_interval_us=tick_us / rate)
            )
        for node in self.nodes:  # clocks do not agree on the epoch
            node.clock_local_s = lease_rng.uniform(0.0, 1_000.0)
        self._by_id = {node.id: node for node in self.nodes}
        self.clean_link = link or LinkParams()
        self.net = SimNetwork(self.ids, self.net_rng, self.clean_link)
        self.checkers = Checkers(self.ids)
        self.lease_checks = LeaseCheckers()
        self.resource = FencedResource()
        self.ghosts: list[tuple[int, str, str]] = []  # (token, request id, why)

        # Lease clients: ids c1, c2, ... on their own network (links client <-> node).
        params = clients if clients is not None else ClientParams(count=0)
        self.client_params = params
        client_ids = tuple(NodeId(f"c{i + 1}") for i in range(params.count))
        self.clean_client_link = client_link or self.clean_link
        self.client_net = SimNetwork(
            (*self.ids, *client_ids), client_net_rng, self.clean_client_link
        )
        rho = probe.max_drift if params.max_drift is None else params.max_drift
        spread = rho if params.rate_drift is None else params.rate_drift
        self.clients: list[SimClient] = []
        for i, cid in enumerate(client_ids):
            crate = (
                params.rates[i]
                if params.rates is not None
                else 1.0 + lease_rng.uniform(-spread, spread)
            )
            crng = random.Random(lease_rng.getrandbits(64))
            self.clients.append(SimClient(self, cid, self.ids, crate, rho, params, crng))
        self._client_index = {c.id: i for i, c in enumerate(self.clients)}

        self.now = 0
        self._heap: list[_Event] = []
        self._seq = itertools.count()
        self.events = 0
        self.next_command = 1
        self.proposed = 0
        self.leader_history: list[tuple[int, NodeId, int]] = []  # (time, node, term)
        self.lease_intervals: list[LeaseInterval] = []
        self._lease_since: dict[NodeId, tuple[int, int]] = {}  # node -> (start, term)
        self.workload_on = True
        self.failpoints: dict[str, float] = {}
        for name, prob in (failpoints or {}).items():
            scope, _, point = name.rpartition(":")
            if point not in FAILPOINTS or scope not in FAILPOINT_SCOPES:
                raise ValueError(
                    f"unknown failpoint {name!r}: use [scope:]point with point in "
                    f"{FAILPOINTS} and scope in {FAILPOINT_SCOPES[1:]}"
                )
            self.failpoints[name] = prob
        self.failpoint_down_us = failpoint_down_us
        self.failpoint_crashes = 0
        # Liveness oracles (see check_quorum_contact and quiet_window).
        self.check_quorum_oracle = True
        # The vote-stickiness rule, strictly: also a vote in a term the voter had already
        # adopted from some other message (a rejected pre-vote answer, a reply to a stale
        # leader) before the RequestVote came. This rule found the core granting such votes
        # (tests/sim/test_oracles.py::test_sticky_voter_adopting_a_term_first); fixed, so the
        # sweep checks it. False checks only votes that raise the voter's term.
        self.strict_stickiness = True
        self.quiet_until = -1  # a fault-free window lasts until then (faults are held back)
        self.quiet_windows = 0
        self.injected: dict[str, int] = {}  # fault kind -> times the schedule injected it
        self._lease_due: tuple[int, int] | None = None  # (window start, deadline) us
        self._held_failpoints: dict[str, float] | None = None

        for node in self.nodes:
            self._boot(node, first=True)
        for client in self.clients:
            client.start()
        if propose_every_us is not None:
            self._every(propose_every_us, self._workload_propose)
        if compact_every_us is not None:
            self._every(compact_every_us, self._workload_compact)
        if transfer_every_us is not None:
            self._every(transfer_every_us, self._workload_transfer)

    # ================================================================ configuration
    def config_for(self, nid: NodeId) -> RaftConfig:
        return RaftConfig(node_id=nid, voters=self.ids, **self.config_overrides)

    def node(self, nid: str) -> SimNode:
        return self._by_id[NodeId(nid)]

    def note(self, text: str) -> None:
        """Add a line to the transcript (if tracing), stamped with the virtual time."""
        self._log(text)

    def _log(self, text: str) -> None:
        if self.trace is not None:
            self.trace(f"[{self.now / 1000:10.3f}ms] {text}")

    # ================================================================ event loop
    def _push(self, at_us: int, kind: int, index: int, payload: Any) -> None:
        heapq.heappush(self._heap, (at_us, next(self._seq), kind, index, payload))

    def at(self, at_us: int, action: Callable[[], None]) -> None:
        """Run ``action`` at virtual time ``at_us`` (not earlier than now)."""
        self._push(max(at_us, self.now), _ACTION, -1, action)

    def after(self, delay_us: int, action: Callable[[], None]) -> None:
        self.at(self.now + delay_us, action)

    def _every(self, span: tuple[int, int], action: Callable[[], None]) -> None:
        lo, hi = span
        rng = self.workload_rng

        def fire() -> None:
            if self.workload_on:
                action()
            self.after(rng.randint(lo, hi), fire)

        self.after(rng.randint(lo, hi), fire)

    def run_until(self, t_us: int) -> None:
        """Process every event up to and including time ``t_us``."""
        heap = self._heap
        while heap and heap[0][0] <= t_us:
            self._dispatch(heapq.heappop(heap))
        if t_us > self.now:
            self.now = t_us

    def run_for(self, us: int) -> None:
        self.run_until(self.now + us)

    def run_until_true(self, pred: Callable[[], bool], limit_us: int) -> bool:
        """Run until ``pred()`` holds (checked after every event) or ``limit_us`` passes."""
        heap = self._heap
        end = self.now + limit_us
        if pred():
            return True
        while heap and heap[0][0] <= end:
            self._dispatch(heapq.heappop(heap))
            if pred():
                return True
        self.now = max(self.now, end)
        return pred()

    def _dispatch(self, ev: _Event) -> None:
        t, _, kind, idx, payload = ev
        self.now = t
        self.checkers.now_us = t
        self.lease_checks.now_us = t
        self.events += 1
        if kind == _TICK:
            node = self.nodes[idx]
            if node.up and node.incarnation == payload and node.paused:
                node.missed_ticks += 1
                if node.lease:
                    node.pause_lease_left -= 1
                    if node.pause_lease_left <= 0:  # its belief ends on its own clock
                        self._set_lease(node, False, 0)
                node.next_tick_us += node.tick_interval_us
                self._push(int(node.next_tick_us), _TICK, idx, payload)
            elif node.up and node.incarnation == payload:
                core = node.core
                assert core is not None
                try:
                    core.tick()
                except SafetyViolation:
                    raise
                except Exception as exc:
                    raise self._core_error(node, "tick", exc) from exc
                self._after_input(node)
                if node.core is not None and node.core.role is Role.LEADER:
                    self.check_quorum_contact(node, node.core)
                    if node.lease:
                        self.check_lease_quorum(node)
                node.next_tick_us += node.tick_interval_us
                self._push(int(node.next_tick_us), _TICK, idx, payload)
        elif kind == _MSG:
            self._deliver(payload)
        elif kind == _ACTION:
            payload()
        elif kind == _CREQ:
            self._deliver_request(payload)
        else:
            rep: ClientReply = payload
            if (rep.src, rep.dst) not in self.client_net.blocked:
                self.clients[idx].on_reply(rep)

    def _core_error(self, node: SimNode, what: str, exc: Exception) -> SafetyViolation:
        tb = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return SafetyViolation(
            "core-error", f"{node.id} raised during {what}: {tb} (at t={self.now}us)"
        )

    # ================================================================ node lifecycle
    def _boot(self, node: SimNode, first: bool) -> None:
        st = node.storage.load()
        rng = random.Random(self.restart_rng.getrandbits(64))
        core = self.core_factory(
            self.config_for(node.id), rng, st.hard_state, st.snapshot, st.entries
        )
        node.core = core
        node.up = True
        node.incarnation += 1
        node.applied_index = st.snapshot.index if st.snapshot is not None else 0
        node.state_hash = st.snapshot.data[:HASH_LEN] if st.snapshot is not None else ZERO_HASH
        node.applied_log = {}  # the state machine is volatile: rebuilt from snapshot + log
        node.paused = False
        node.inbox = []
        node.seen_role = core.role
        node.seen_term = core.term
        node.lease = False
        # node.py: the table comes from the snapshot; the keeper starts empty (a new leader
        # restarts every deadline when it takes office).
        table = LeaseTable.restore(st.snapshot.data[HASH_LEN:]) if st.snapshot is not None else None
        node.service = self.make_service(node, core, table)
        node.wake_at = math.inf
        node.deferred = []
        node.heard_tick = [-1] * len(self.nodes)
        node.booted_at_us = self.now
        node.leader_since_tick = 0
        self.checkers.on_term(node.id, core.term)
        self.checkers.check_boot_log(node.id, st)
        if not first:
            hs = st.hard_state
            self.checkers.check_vote_durable(node.id, hs.term, hs.voted_for)
        self.lease_checks.on_node_boot(node.id, node.applied_index)
        if st.snapshot is not None:
            self.checkers.on_snapshot_applied(node.id, st.snapshot, st.snapshot.data[:HASH_LEN])
        # The clock keeps running while the process is down: a random tick phase.
        phase = self.clock_rng.random()
        node.next_tick_us = self.now + 1 + phase * node.tick_interval_us
        self._push(int(node.next_tick_us), _TICK, node.index, node.incarnation)
        self._log(
            f"{node.id} {'boot' if first else 'RESTART'} term={core.term} "
            f"vote={core.voted_for} commit={core.commit_index} last={core.last_index} "
            f"snap={node.applied_index} rate={node.rate:.4f}"
        )
        if core.has_ready():
            self._after_input(node)

    def set_clock_rate(self, nid: str, rate: float) -> None:
        """Change a node's clock rate from its next tick on (rate skew onset, faketime)."""
        if rate <= 0:
            raise ValueError(f"clock rate must be positive, got {rate}")
        node = self.node(nid)
        node.clock_local_s = self.local_clock(node)  # the clock stays continuous
        node.clock_real_us = self.now
        node.rate = rate
        node.tick_interval_us = self.tick_us / rate
        node.min_tick_interval_us = min(node.min_tick_interval_us, node.tick_interval_us)
        self._log(f"{node.id} clock rate -> {rate}")

    def pause(self, nid: str, pause_us: int) -> None:
        """SIGSTOP a node for ``pause_us``, then SIGCONT it (fault matrix row 9).

        While paused its clock keeps running but nothing happens: ticks are missed and
        arriving messages wait. Its lease belief still ends on its own clock (the checker
        counts it as a holder until then). On resume it does what node.py's loop does: a
        leader first steps its own-term answers that queued up, then every node catches up
        its missed ticks (all as ONE input), then takes the remaining peer messages in
        arrival order, then the client calls. A paused node takes no client calls
        (``leader()`` skips it; requests wait in its inbox) and no compaction.
        """
        node = self.node(nid)
        if not node.up or node.paused or node.core is None:
            return
        node.paused = True
        node.missed_ticks = 0
        node.inbox = []
        node.pause_lease_left = node.core.lease_remaining_ticks() if node.lease else 0
        self._log(f"{node.id} PAUSE for {pause_us / 1000:.1f}ms")
        inc = node.incarnation

        def resume() -> None:
            if node.up and node.paused and node.incarnation == inc:
                self.resume(nid)

        self.after(pause_us, resume)

    def resume(self, nid: str) -> None:
        node = self.node(nid)
        if not node.up or not node.paused:
            return
        node.paused = False
        inc = node.incarnation
        missed, node.missed_ticks = node.missed_ticks, 0
        inbox, node.inbox = node.inbox, []
        self._log(f"{node.id} RESUME: {missed} missed ticks, {len(inbox)} waiting messages")
        core = node.core
        assert core is not None
        requests = [m for m in inbox if isinstance(m, AcquireReq | RenewReq | ReleaseReq)]
        peer = [m for m in inbox if not isinstance(m, AcquireReq | RenewReq | ReleaseReq)]
        later: list[Message] = []
        try:
            # node.py's loop: the missed ticks are caught up BEFORE any peer message is
            # stepped, except a leader's own-term answers, which may go first
            # (RaftCore.steps_before_ticks, the one rule both drivers ask). ONE input:
            # nothing can observe the core in between (node.py computes its lease deadline
            # after both).
            for m in peer:
                if core.role is Role.LEADER and core.steps_before_ticks(m):
                    if (m.src, m.dst) in self.net.blocked:
                        continue
                    if self.trace is not None:
                        self._log(f"deliver {describe(m)} (queued, before the missed ticks)")
                    if (
                        isinstance(m, AppendEntriesResponse | InstallSnapshotResponse)
                        and m.term == core.term
                        and m.send_tick > node.echoed.get(m.src, 0)
                    ):
                        node.echoed[m.src] = m.send_tick
                    core.step(m)
                else:
                    later.append(m)
            for _ in range(missed):
                core.tick()
        except SafetyViolation:
            raise
        except Exception as exc:
            raise self._core_error(node, "resume (queued answers, missed ticks)", exc) from exc
        for m in peer:  # received during the pause: heard "now", after the catch-up
            node.heard_tick[self._by_id[m.src].index] = core.tick_count
        self._after_input(node)
        if node.core is not None and node.core.role is Role.LEADER:
            self.check_quorum_contact(node, node.core)
        for pm in later:
            if _gone(node, inc):  # crashed meanwhile (a failpoint), maybe restarted
                return
            self._deliver(pm)
        deferred, node.deferred = node.deferred, []
        for action in deferred:  # timers that fell due while it was stopped
            if _gone(node, inc):  # crashed meanwhile (a failpoint), maybe restarted
                return
            action()
        for req in requests:  # gRPC handlers run once the loop awaits its first fsync
            if _gone(node, inc):  # crashed meanwhile (a failpoint), maybe restarted
                return
            self._deliver_request(req)

    def crash(self, nid: str) -> None:
        """Kill a node (SIGKILL): the core and everything not in its storage is lost."""
        node = self.node(nid)
        if not node.up:
            return
        node.up = False
        node.core = None
        node.crashes += 1
        self._set_lease(node, False, 0)
        node.seen_role = Role.FOLLOWER
        self._log(f"{node.id} CRASH")
        # Its client connections reset: every call in progress fails UNAVAILABLE at once.
        if node.service is not None:
            for call in node.service.calls():
                req: ClientRequest = call.token
                self._reply(ClientReply(node.id, req.src, req.seq, UNAVAILABLE))
        node.service = None
        self.check_durable(f"crash of {node.id}")

    def restart(self, nid: str) -> None:
        """Restart a crashed node from ``storage.load()`` with a fresh core (no-op if up)."""
        node = self.node(nid)
        if node.up:
            return
        self._boot(node, first=False)
        self.check_durable(f"restart of {node.id}")

    def crash_for(self, nid: str, down_us: int) -> None:
        """Crash now and restart after ``down_us`` (unless restarted before)."""
        node = self.node(nid)
        if not node.up:
            return
        self.crash(nid)
        inc = node.incarnation

        def back() -> None:
            if not node.up and node.incarnation == inc:
                self.restart(nid)

        self.after(down_us, back)

    def check_durable(self, why: str) -> None:
        self.checkers.check_durable({n.id: n.storage.load() for n in self.nodes}, why)

    # ================================================================ inputs and Ready
    def _deliver(self, m: Message) -> None:
        node = self._by_id[m.dst]
        if not node.up or (m.src, m.dst) in self.net.blocked:
            return
        if node.paused:
            node.inbox.append(m)
            return
        core = node.core
        assert core is not None
        node.heard_tick[self._by_id[m.src].index] = core.tick_count
        if (
            (type(m) is AppendEntriesResponse or type(m) is InstallSnapshotResponse)
            and m.term == core.term
            and core.role is Role.LEADER
            and m.send_tick > node.echoed.get(m.src, 0)
        ):
            node.echoed[m.src] = m.send_tick
        if type(m) is RequestVote:
            node.term_before_vote = core.term
            if m.transfer:
                node.transfer_asks.add((m.src, m.term))
        if self.trace is not None:
            self._log(f"deliver {describe(m)}")
        try:
            core.step(m)
        except SafetyViolation:
            raise
        except Exception as exc:
            raise self._core_error(node, f"step({describe(m)})", exc) from exc
        self._after_input(node)

    def _send(self, m: Message) -> None:
        idx = self._by_id[m.dst].index
        for delay in self.net.plan(m.src, m.dst, type(m).__name__, self.now):
            self._push(self.now + delay, _MSG, idx, m)

    def _after_input(self, node: SimNode) -> None:
        core = node.core
        assert core is not None
        chk = self.checkers
        self._duties(node)  # node.py: every loop iteration, before the Ready
        if core.role is Role.LEADER and self.failpoints and self._acked_crash(node, core):
            return
        if core.has_ready():
            try:
                self._ready_loop(node, core)
            except _Crashed:
                return
            except SafetyViolation:
                raise
            except Exception as exc:
                raise self._core_error(node, "the Ready loop", exc) from exc
        term = core.term
        role = core.role
        if term != node.seen_term:
            chk.on_term(node.id, term)
        if role is not node.seen_role or term != node.seen_term:
            if role is Role.LEADER:
                c, _ = chk.committed_probe(term)
                chk.on_become_leader(
                    node.id,
                    term,
                    core.log.last_index,
                    core.log.snapshot_index,
                    core.log.term_at(c) if c > 0 else None,
                )
                self.leader_history.append((self.now, node.id, term))
                node.leader_since_tick = core.tick_count
                node.echoed = {}
            if self.trace is not None:
                self._log(f"{node.id} {node.seen_role.value}->{role.value} term={term}")
            node.seen_role = role
            node.seen_term = term
        valid = role is Role.LEADER and core.lease_valid()
        if valid and node.timeout_now_term == term:
            # Rule ``transfer-lease`` (docs/safety.md, T1): a leader that sent TimeoutNow
            # (whose target may now campaign past stickiness) has no lease for the rest of
            # its term.
            raise self.checkers._fail(
                "transfer-lease",
                f"{node.id} holds a valid leader lease in term {term} after it sent TimeoutNow",
            )
        if valid != node.lease:
            self._set_lease(node, valid, term)
        if node.service is not None:
            self._schedule_wake(node, node.service)

    def _persist(self, node: SimNode, core: RaftCore, rd: Ready) -> None:
        if rd.hard_state is None and rd.snapshot is None and not rd.entries:
            return
        chk = self.checkers
        nid = node.id
        if rd.hard_state is not None:
            chk.on_term(nid, rd.hard_state.term)
        if rd.entries:
            first = rd.entries[0].index
            prev_term = core.log.term_at(first - 1)
            if prev_term is None:
                raise SafetyViolation(
                    "driver",
                    f"{nid} must persist entries from {first} but has no term at "
                    f"{first - 1} (at t={self.now}us)",
                )
            chk.on_save(nid, rd.entries, prev_term)
        if rd.snapshot is not None:
            chk.on_snapshot_durable(nid, rd.snapshot.index, rd.snapshot.term)
        node.storage.save(rd.hard_state, rd.snapshot, rd.entries)

    def _send_all(self, node: SimNode, rd: Ready) -> None:
        chk = self.checkers
        for m in rd.messages:
            t = type(m)
            if t is RequestVoteResponse:
                if m.granted:  # type: ignore[union-attr]
                    if not m.pre_vote:  # type: ignore[union-attr]
                        chk.on_vote_granted(m.src, m.term, m.dst)
                    self._check_sticky(node, m)
            elif t is RequestVote:
                if not m.pre_vote:  # type: ignore[union-attr]
                    chk.on_vote_granted(m.src, m.term, m.src)  # a candidate's vote for itself
                if not m.transfer:  # type: ignore[union-attr]
                    self._check_sticky(node, m)
            elif t is TimeoutNow:
                node.timeout_now_term = m.term
            elif (t is AppendEntriesResponse or t is InstallSnapshotResponse) and m.send_tick:  # type: ignore[union-attr]
                node.acked_at_us = self.now  # it counts toward the leader's lease
                node.acked_term = m.term
                node.acked_leader = m.dst
            self._send(m)

    def _check_sticky(self, node: SimNode, m: Message) -> None:
        """Rule ``vote-stickiness`` (docs/safety.md, step 1): a node that acknowledged a
        leader's AppendEntries or InstallSnapshot (an ack that counts toward that leader's
        lease) neither grants a (pre-)vote to a rival nor starts a campaign of its own for a
        later term, transfers excepted, until ``election_ticks_min`` of its ticks passed:
        (E_min - 1) ticks at its fastest tick rate so far, in real time."""
        at = node.acked_at_us
        if at < 0 or m.term <= node.acked_term:
            return  # a vote in the acknowledged leader's own term cannot elect a rival
        window = (self.election_ticks_min - 1) * node.min_tick_interval_us - 2
        if self.now >= at + window:
            return
        if type(m) is RequestVoteResponse:
            if m.dst == node.acked_leader or (m.dst, m.term) in node.transfer_asks:
                return  # for the acknowledged leader itself (its old lease ends as it runs),
                # or for a transfer (its leader turned the lease off first)
            if not self.strict_stickiness and not m.pre_vote and node.term_before_vote >= m.term:
                return  # see strict_stickiness
        raise self.checkers._fail(
            "vote-stickiness",
            f"{node.id} sent {describe(m)} {(self.now - at) / 1000:.1f}ms after it acknowledged "
            f"a leader (at t={at}us); it must refuse for {window / 1000:.1f}ms "
            f"({self.election_ticks_min - 1} of its ticks)",
        )

    def _set_lease(self, node: SimNode, valid: bool, term: int) -> None:
        if valid == node.lease:
            return
        node.lease = valid
        if valid:
            self._lease_due = None
            self._lease_since[node.id] = (self.now, term)
            self.check_lease_quorum(node)
            self._log(f"{node.id} LEASE start term={term}")
        else:
            start, t = self._lease_since.pop(node.id)
            self.lease_intervals.append(LeaseInterval(node.id, t, start, self.now))
            self._log(f"{node.id} LEASE end term={t}")
        self.checkers.on_lease(node.id, valid)

    def _ready_loop(self, node: SimNode, core: RaftCore) -> None:
        chk = self.checkers
        nid = node.id
        storage = node.storage
        for _ in range(10_000):
            rd = core.ready()
            fps = self.failpoints
            if self._sends_before_persist(storage, rd):
                # A leader replicates BEFORE its own fsync (ready.py, rule 1's exception;
                # node.py does it). ``before-send`` here: persisted, but every message was
                # lost (a crash right after the fsync while the network dropped the sends).
                if fps and self._fails(node, rd, "before-send"):
                    self._persist(node, core, rd)
                    self._crash_now(node)
                self._send_all(node, rd)
                if fps:  # sent, nothing persisted: followers may have what the leader lost
                    self._maybe_fail(node, rd, "before-save")
                self._persist(node, core, rd)
            else:
                # 1. PERSIST (hard state, snapshot, entries) BEFORE sending anything. A crash
                # before the fsync loses this whole Ready (nothing persisted, nothing sent).
                if fps:
                    self._maybe_fail(node, rd, "before-save")
                self._persist(node, core, rd)
                if fps:
                    self._maybe_fail(node, rd, "before-send")
                # 2. SEND.
                self._send_all(node, rd)
            if fps:
                self._maybe_fail(node, rd, "after-send")
            # 3. APPLY the snapshot, then committed entries (node.py ``_apply``).
            svc = node.service
            assert svc is not None
            if rd.snapshot is not None:
                snap = rd.snapshot
                chk.on_snapshot_applied(nid, snap, snap.data[:HASH_LEN])
                node.applied_index = snap.index
                node.state_hash = snap.data[:HASH_LEN]
                svc.apply_snapshot(snap.data[HASH_LEN:], snap.index, self.local_clock(node))
                self.lease_checks.on_table_restored(nid, snap.index, snap.data[HASH_LEN:])
                self._log(f"{nid} installed snapshot {snap.index}/{snap.term}")
            if rd.committed_entries:
                self._apply_entries(node, svc, rd.committed_entries)
            if fps:
                self._maybe_fail(node, rd, "after-apply")
            # 4. ADVANCE, then the soft state (node.py ``_on_soft_state``).
            core.advance(rd)
            soft = rd.soft_state
            if svc.on_soft_state(soft.role, soft.leader_id, soft.term, self.local_clock(node)):
                self._log(f"{nid} soft state: {soft.role.value} leader={soft.leader_id}")
            self._send_replies(node, svc)
            self._duties(node)  # node.py: the next loop iteration
            if not core.has_ready():
                return
        raise SafetyViolation("driver", f"{nid}: Ready loop did not settle (at t={self.now}us)")

    # ================================================================ the lease state machine
    def local_clock(self, node: SimNode) -> float:
        """``node``'s monotonic clock now, in seconds (it runs while the node is down)."""
        return node.clock_local_s + node.rate * (self.now - node.clock_real_us) / 1e6

    def make_keeper(self) -> LeaseKeeper:
        """A fresh LeaseKeeper for a booting node (planted bugs override this)."""
        return LeaseKeeper()

    def make_service(self, node: SimNode, core: RaftCore, table: LeaseTable | None) -> LeaseService:
        """The lease service of a booting node: the shipped class (planted bugs override
        this). Its leader-lease deadline comes from the core's tick arithmetic, as in
        node.py; the simulator ticks exactly at each tick boundary and re-reads the lease
        after every tick, so a tick still ahead maps to "not yet" (inf) and a tick already
        reached to "passed" (-inf). Leader hints are node ids."""

        def tick_time(k: int) -> float:
            return math.inf if k > core.tick_count else -math.inf

        return LeaseService(
            node.id,
            core,
            tick_time,
            {nid: nid for nid in self.ids},
            table=table,
            keeper=self.make_keeper(),
        )

    def lease_ok(self, node: SimNode) -> bool:
        """May ``node`` serve renewals at this instant? (LeaseService.lease_ok)"""
        svc = node.service
        return svc is not None and svc.lease_ok(self.local_clock(node))

    def _duties(self, node: SimNode) -> None:
        """What node.py's loop does on every turn: the leader-lease deadline from the core,
        the service's time-driven duties (expiry, waits that ran out, queues to leave, the
        cancel of inherited waits), and the outcomes those produced."""
        svc = node.service
        if svc is None:
            return
        svc.after_step()
        svc.tick(self.local_clock(node))
        self._send_replies(node, svc)

    def _schedule_wake(self, node: SimNode, svc: LeaseService) -> None:
        """node.py sleeps until the service's next duty: wake the node then (a duty already
        due runs at its next tick, so that a refused proposal cannot spin the scheduler)."""
        at = svc.next_wake()
        local = self.local_clock(node)
        if not (local < at < node.wake_at):
            return
        node.wake_at = at

        inc = node.incarnation

        def wake() -> None:
            if _gone(node, inc) or node.wake_at != at:
                return
            if node.paused:
                node.deferred.append(wake)
                return
            node.wake_at = math.inf
            self._after_input(node)

        # Rounded up, so the node wakes at or after ``at`` (never in the same instant).
        self.after(max(1, math.ceil((at - local) * 1e6 / node.rate)), wake)

    def _apply_entries(self, node: SimNode, svc: LeaseService, entries: Sequence[Entry]) -> None:
        chk = self.checkers
        lchk = self.lease_checks
        nid = node.id
        h = node.state_hash
        applied = node.applied_index
        log = node.applied_log
        for e in entries:
            h = state_hash(h, e)
            chk.on_apply(nid, applied, e, h)
            chk.check_committed(nid, e)
            applied = e.index
            log[applied] = (e.term, int(e.kind), e.data)
        node.state_hash = h
        node.applied_index = applied
        events = svc.apply(entries, self.local_clock(node))
        per_entry: dict[int, int] = {}
        for ev in events:
            per_entry[ev.index] = per_entry.get(ev.index, 0) + 1
        for ev in events:
            lease = ev.lease
            if (
                ev.kind == "acquired"
                and per_entry[ev.index] > 1
                and lease.fencing_token not in lchk.grants
            ):
                self._check_handover(lease)
            lchk.on_lease_event(nid, ev.kind, lease, ev.index)
            if self.trace is not None:
                self._log(
                    f"{nid} applied {ev.kind} {lease.name} token={lease.fencing_token} "
                    f"holder={lease.holder}"
                )
        if self.trace is not None:
            self._log(f"{nid} applied {entries[0].index}..{entries[-1].index}/{entries[-1].term}")

    def _send_replies(self, node: SimNode, svc: LeaseService) -> None:
        """Translate the service's outcomes into replies, as server.py translates them into
        gRPC answers."""
        for call, outcome in svc.take_replies():
            self._reply(self._reply_for(node, call, outcome))

    def _reply_for(self, node: SimNode, call: Call, outcome: Outcome) -> ClientReply:
        req: ClientRequest = call.token
        if isinstance(outcome, Exception):
            return self._unavailable(node, req, outcome)
        if isinstance(outcome, Acquired):
            return ClientReply(node.id, req.src, req.seq, OK, outcome.lease)
        if isinstance(outcome, NotAcquired):
            return ClientReply(node.id, req.src, req.seq, HELD, outcome.current)
        if isinstance(req, ReleaseReq):
            status = OK if isinstance(outcome, Released) else NOT_FOUND
            return ClientReply(node.id, req.src, req.seq, status)
        if isinstance(outcome, Rejected):
            return ClientReply(node.id, req.src, req.seq, INVALID)
        # server.py: ``_abort(INTERNAL, f"unexpected result {result!r}")``: must not happen.
        what = outcome.message if isinstance(outcome, Internal) else repr(outcome)
        self.lease_checks.stats.server_errors += 1
        self._log(f"{node.id} answers {req.src} INTERNAL: {what}")
        return ClientReply(node.id, req.src, req.seq, INTERNAL)

    def _unavailable(self, node: SimNode, req: ClientRequest, e: Exception) -> ClientReply:
        """UNAVAILABLE, with the leader this node names (none when it is the leader itself
        without a valid leader lease: retry there). ProposalDropped: the outcome is unknown."""
        if isinstance(e, NotLeader):
            lid = e.leader_id
        else:
            lid = node.service.leader_id if node.service is not None else None
        hint = NodeId(lid) if lid is not None and lid != node.id else None
        return ClientReply(node.id, req.src, req.seq, UNAVAILABLE, hint=hint)

    def _node_timer(self, node: SimNode, delay_s: float, action: Callable[[], None]) -> None:
        """Run ``action`` after ``delay_s`` on ``node``'s clock, in this incarnation; a paused
        node runs it when it resumes."""
        inc = node.incarnation

        def fire() -> None:
            if not node.up or node.incarnation != inc:
                return
            if node.paused:
                node.deferred.append(action)
            else:
                action()

        self.after(max(0, int(delay_s * 1e6 / node.rate)), fire)

    def _cancel_call(self, node: SimNode, call: Call) -> None:
        """The client went away (deadline, disconnect): gRPC cancels the handler, which
        cancels its call (LeaseService.cancel); no answer is sent."""
        svc = node.service
        if svc is None or call.done:
            return
        svc.cancel(call)
        self._after_input(node)

    def client_gone(self, client: NodeId) -> None:
        """A client process died: its connections close and every node cancels its calls."""
        for node in self.nodes:
            if node.up and node.service is not None:
                for call in node.service.calls():
                    if call.token.src != client:
                        continue
                    if node.paused:
                        node.deferred.append(functools.partial(self._cancel_call, node, call))
                    else:
                        self._cancel_call(node, call)

    def _check_handover(self, lease: LeaseRecord) -> None:
        """A queued acquire was just granted (first apply anywhere): does its client still
        wait for it? If not, its waiter outlived the call (a "ghost" handover): the name is
        blocked until the grant expires, although commands.py says the leader cancels the
        wait when the client goes away."""
        idx = self._client_index.get(NodeId(lease.holder))
        if idx is None:
            return
        c = self.clients[idx]
        if not (c.acquiring and c.request_id == lease.request_id):
            why = c.abandoned.get(lease.request_id, "unknown")
            self.lease_checks.stats.ghost_handovers += 1
            self.ghosts.append((lease.fencing_token, lease.request_id, why))
            self._log(
                f"GHOST handover: {lease.name} token={lease.fencing_token} to "
                f"{lease.request_id}, which {c.id} no longer waits for ({why})"
            )

    # ---------------------------------------------------------------- client traffic
    def client(self, cid: str) -> SimClient:
        return self.clients[self._client_index[NodeId(cid)]]

    def client_send(self, req: ClientRequest) -> None:
        idx = self._by_id[req.dst].index
        for delay in self.client_net.plan(req.src, req.dst, "", self.now):
            self._push(self.now + delay, _CREQ, idx, req)

    def _reply(self, rep: ClientReply) -> None:
        idx = self._client_index[rep.dst]
        for delay in self.client_net.plan(rep.src, rep.dst, "", self.now):
            self._push(self.now + delay, _CREP, idx, rep)

    def client_log(self, text: str) -> None:
        self._log(text)

    def resource_write(
        self, client: NodeId, name: str, token: int, lease_id: int, delay_us: int
    ) -> None:
        """``client`` writes to the fenced resource; the write lands ``delay_us`` later."""

        def land() -> None:
            accepted = self.resource.write(name, token)
            self.lease_checks.on_write(client, name, token, lease_id, accepted)
            if not accepted or self.trace is not None:
                self._log(
                    f"resource {'accepts' if accepted else 'REJECTS'} {client}'s write to "
                    f"{name} token={token}"
                )

        self.after(delay_us, land)

    def _deliver_request(self, req: ClientRequest) -> None:
        node = self._by_id[req.dst]
        if (req.src, req.dst) in self.client_net.blocked:
            return
        if self.clients[self._client_index[req.src]].down:
            return  # its connection closed with the process: the request never arrives
        if not node.up:  # connection refused: the client learns at once
            self._reply(ClientReply(node.id, req.src, req.seq, UNAVAILABLE))
            return
        if node.paused:
            node.inbox.append(req)
            return
        self._serve(node, req)

    def _serve(self, node: SimNode, req: ClientRequest) -> None:
        """server.py's LeaseServicer: the request goes to the node's LeaseService."""
        core = node.core
        svc = node.service
        assert core is not None
        assert svc is not None
        now = self.local_clock(node)
        if isinstance(req, RenewReq):
            try:
                renewed = svc.renew(req.lease_id, None, now)
            except NoLeaderLease as e:
                self._reply(self._unavailable(node, req, e))
                return
            if (
                renewed is not None
                and self.check_renewals
                and node.id not in self.checkers.lease_holders
            ):
                # Rule ``renew-outside-lease`` (docs/safety.md, S2: renewals happen only
                # during the serving leader's lease, which no new leader can overlap).
                raise SafetyViolation(
                    "renew-outside-lease",
                    f"{node.id} (term {core.term}, {core.role.value}) renewed lease "
                    f"{req.lease_id} for {req.src} without a valid leader lease "
                    f"(at t={self.now}us)",
                )
            if renewed is None:
                self._reply(ClientReply(node.id, req.src, req.seq, NOT_FOUND))
            else:
                ttl_ms = renewed.lease.ttl_ms
                self._reply(ClientReply(node.id, req.src, req.seq, OK, ttl_ms=ttl_ms))
            return
        try:
            if isinstance(req, AcquireReq):
                call = svc.acquire(req, req.cmd, req.wait_ms / 1000.0, now)
            else:
                call = svc.release(req, req.lease_id)
        except SafetyViolation:
            raise
        except Exception as exc:
            raise self._core_error(node, "propose", exc) from exc
        if not call.done and req.timeout_us > 0:  # gRPC cancels the handler at its deadline
            self._node_timer(node, req.timeout_us / 1e6, lambda: self._cancel_call(node, call))
        if self.trace is not None:
            if isinstance(req, AcquireReq):
                what = f"Acquire {req.cmd.name} {req.cmd.request_id} wait_ms={req.wait_ms}"
            else:
                what = f"Release {req.lease_id}"
            self._log(f"{node.id} serves {what} from {req.src}")
        self._after_input(node)

    # ---------------------------------------------------------------- client network faults
    def cut_client(self, cid: str, nodes: Sequence[str] | None = None) -> None:
        """Block both directions between client ``cid`` and ``nodes`` (default: all)."""
        c = NodeId(cid)
        for x in nodes if nodes is not None else self.ids:
            self.client_net.blocked.add((c, NodeId(x)))
            self.client_net.blocked.add((NodeId(x), c))
        self._log(f"PARTITION client {cid} from {list(nodes) if nodes is not None else 'all'}")

    def heal_clients(self) -> None:
        self.client_net.heal()
        self._log("HEAL client links")

    def set_client_links(self, params: LinkParams) -> None:
        self.client_net.set_links(params)
        self._log(f"client links -> {params}")

    def reset_client_links(self) -> None:
        self.client_net.reset_links()

    def _sends_before_persist(self, storage: MemoryStorage, rd: Ready) -> bool:
        """Does the driver send this Ready's messages before its fsync? (ready.py rule 1's
        exception, as node.py applies it; a planted driver bug overrides this.)"""
        hs0 = storage.hard_state
        return rd.may_send_before_persist(hs0.term, hs0.voted_for)

    # ---------------------------------------------------------------- liveness oracles
    def check_lease_quorum(self, leader: SimNode) -> None:
        """Rule ``lease-quorum`` (docs/safety.md, L1 and L3), checked when a lease starts and
        at each of the leader's ticks while it holds one:

        * the lease is dated no later than the send ticks echoed by the answers the leader
          was actually delivered (a quorum's, itself included);
        * in real time, a majority (the leader included) cannot vote for a rival: each is
          the leader, down, paused, or inside its stickiness window, which lasts
          (E_min - 1) of its ticks after its last lease-counting ack or its boot.

        A lease counted from the wrong tick outlives the acks and windows that justify it,
        whether or not a rival happens to be elected meanwhile."""
        core = leader.core
        assert core is not None
        acks = [core.tick_count] + [leader.echoed.get(p, 0) for p in core.peers]
        justified = quorum_value(acks, len(core.voters))
        if core.lease_start_tick() > justified:
            raise self.checkers._fail(
                "lease-quorum",
                f"{leader.id} dates its leader lease from tick {core.lease_start_tick()}, but "
                f"the answers it was delivered echo send ticks that justify {justified} at most "
                f"({dict(leader.echoed)}; docs/safety.md L3: an ack is dated by the send tick "
                "it echoes)",
            )
        q = len(self.ids) // 2 + 1
        safe = 0
        now = self.now
        e1 = self.election_ticks_min - 1
        for n in self.nodes:
            if n is leader or not n.up or n.paused:
                safe += 1
                continue
            window = e1 * n.min_tick_interval_us - 2
            if now < max(n.acked_at_us, n.booted_at_us) + window:
                safe += 1
        if safe >= q:
            return
        raise self.checkers._fail(
            "lease-quorum",
            f"{leader.id} holds a valid leader lease but only {safe} node(s) (itself "
            f"included) are sticky, down or paused; last acks at "
            f"{[(n.id, n.acked_at_us) for n in self.nodes]} us",
        )

    def check_quorum_bound_ticks(self) -> int:
        """CheckQuorum's bound, in the leader's own ticks: 2·E_min + 2.

        The core checks its quorum every ``election_ticks_min`` ticks and needs an answer
        from a quorum since the previous check, so any window of 2·E_min + 1 ticks holds a
        complete check interval; one more tick for the message that lands on a boundary."""
        return 2 * self.election_ticks_min + 2

    def check_quorum_contact(self, node: SimNode, core: RaftCore) -> None:
        """A leader that no quorum (itself included) has delivered ANY message to over its
        last :meth:`check_quorum_bound_ticks` ticks must have stepped down (CheckQuorum).

        The oracle is the simulator's own record of deliveries, not the core's: a leader
        cut off by a partition, crashes or pauses of its peers, or a lossy link is caught
        whatever the core believes. Lenient on purpose (any message counts, even ones the
        core ignores), so it never blames a correct core."""
        if not self.check_quorum_oracle or not core.config.check_quorum:
            return
        bound = self.check_quorum_bound_ticks()
        now = core.tick_count
        if now - node.leader_since_tick < bound:
            return
        floor = now - bound
        heard = 1 + sum(1 for t in node.heard_tick if t >= floor)
        if heard >= len(self.ids) // 2 + 1:
            return
        raise LivenessViolation(
            "liveness-checkquorum",
            f"{node.id} is still leader of term {core.term} although only {heard - 1} peer(s) "
            f"reached it in its last {bound} ticks (bound 2*election_ticks_min+2; "
            f"{self._roles()}) (at t={self.now}us)",
        )

    def delay_allowance_us(self) -> int:
        """Message delays in the election bounds: each election attempt waits for two round
        trips (pre-vote, vote) at the slowest link's maximum delay, three attempts; plus one
        straggler at the longest delay any link ever had (sent before the heal)."""
        rtt = 2 * max(p.delay_max_us for p in self.net.links.values())
        return 3 * 2 * rtt + self.net.max_delay_us

    def election_bound_us(self) -> int:
        """How long a cluster whose every node can talk may go without a valid leader lease:
        3·E_max ticks (a pre-vote, a vote and a split vote or two) plus the catch-up
        allowance (a new leader's no-op must commit on a majority) plus the delay allowance,
        as :meth:`check_liveness` allows after the final heal."""
        return (
            3 * self.election_ticks_max * self.tick_us
            + self.catch_up_us()
            + self.delay_allowance_us()
        )

    def quiet_window(self, length_us: int) -> None:
        """A fault-free window: heal every partition and link, restart every crashed node,
        resume every paused one, hold failpoints back; the fault schedule skips its faults
        until ``quiet_until``. A valid leader lease must then exist within
        :meth:`election_bound_us` (else ``liveness-election``), checked at the deadline."""
        if self._held_failpoints is None:
            self._held_failpoints = self.failpoints
        self.failpoints = {}
        self.net.heal()
        self.net.reset_links(pinned=False)
        self.client_net.heal()
        self.client_net.reset_links()
        self.quiet_windows += 1
        for node in self.nodes:
            if not node.up:
                self.restart(node.id)
            elif node.paused:
                self.resume(node.id)
        bound = self.election_bound_us()
        length = max(length_us, bound + self.tick_us)
        self.quiet_until = self.now + length
        self._log(
            f"QUIET window for {length / 1000:.0f}ms (leader lease due in {bound / 1000:.0f}ms)"
        )
        if any(n.lease for n in self.nodes):
            self._lease_due = None
        else:
            self._lease_due = (self.now, self.now + bound)
            due = self._lease_due

            def check() -> None:
                if self._lease_due is due:
                    raise LivenessViolation(
                        "liveness-election",
                        f"no valid leader lease within {bound / 1000:.0f}ms of the fault-free "
                        f"window that began at t={due[0]}us ({self._roles()}) "
                        f"(at t={self.now}us)",
                    )

            self.at(due[1], check)
        end = self.quiet_until

        def over() -> None:
            if self.quiet_until == end and self.workload_on:
                held, self._held_failpoints = self._held_failpoints, None
                self.failpoints = held or {}
                self.net.reset_links()  # the chronic (pinned) link faults come back
                self._log("QUIET window over")

        self.at(end, over)

    def _acked_crash(self, node: SimNode, core: RaftCore) -> bool:
        """The ``acked`` failpoints also fire right after a leader stepped an input that left
        entries acknowledged by some follower but not committed (often no Ready follows)."""
        prob = max((p for k, p in self.failpoints.items() if k.startswith("acked:")), default=0.0)
        if not prob or not _acked_uncommitted(core) or self.fault_rng.random() >= prob:
            return False
        self.failpoint_crashes += 1
        self._log(f"{node.id} FAILPOINT acked (after stepping an acknowledgement)")
        self.crash_for(node.id, self.fault_rng.randint(*self.failpoint_down_us))
        return True

    def _maybe_fail(self, node: SimNode, rd: Ready, point: str) -> None:
        if self._fails(node, rd, point):
            self._crash_now(node)

    def _crash_now(self, node: SimNode) -> None:
        self.crash_for(node.id, self.fault_rng.randint(*self.failpoint_down_us))
        raise _Crashed

    def _fails(self, node: SimNode, rd: Ready, point: str) -> bool:
        """Does failpoint ``point`` fire in this Ready? (logged and counted if it does)"""
        leader = rd.soft_state.role is Role.LEADER
        for scope in FAILPOINT_SCOPES:
            prob = self.failpoints.get(f"{scope}:{point}" if scope else point)
            if prob is None:
                continue
            if scope == "leader" and not leader:
                continue
            if scope == "new-leader" and (not leader or node.seen_role is Role.LEADER):
                continue
            if scope == "commit" and not rd.committed_entries:
                continue
            if scope == "follower" and leader:
                continue
            if scope == "vote" and not _persists_vote(rd):
                continue
            if scope == "acked" and not (leader and _acked_uncommitted(node.core)):
                continue
            if scope == "snapshot" and rd.snapshot is None:
                continue
            if self.fault_rng.random() < prob:
                self.failpoint_crashes += 1
                self._log(f"{node.id} FAILPOINT {scope + ':' if scope else ''}{point}")
                return True
        return False

    # ================================================================ client-side actions
    def leader(self) -> SimNode | None:
        """The running (up, not paused) leader in the highest term, or None."""
        best: SimNode | None = None
        for node in self.nodes:
            core = node.core
            if (
                node.up
                and not node.paused
                and core is not None
                and core.role is Role.LEADER
                and (best is None or (best.core is not None and core.term > best.core.term))
            ):
                best = node
        return best

    def lease_holders(self) -> list[NodeId]:
        return [n.id for n in self.nodes if n.lease]

    def propose(self, data: bytes | None = None) -> tuple[int, int] | None:
        """Propose a command to the current leader; its (index, term), or None if refused.

        The default command is 8 bytes of unique id followed by 8 random bytes.
        """
        node = self.leader()
        if node is None or node.core is None:
            return None
        if data is None:
            data = self.next_command.to_bytes(8, "big") + self.workload_rng.randbytes(8)
            self.next_command += 1
        try:
            where = node.core.propose(data)
        except (NotLeader, ProposalDropped):
            return None
        except SafetyViolation:
            raise
        except Exception as exc:
            raise self._core_error(node, "propose", exc) from exc
        self.proposed += 1
        if self.trace is not None:
            self._log(f"{node.id} propose {data[:8].hex()} -> {where[0]}/{where[1]}")
        self._after_input(node)
        return where

    def compact(self, nid: str) -> Snapshot | None:
        """Snapshot a node at its applied index and compact.

        The payload is the state hash followed by ``table.snapshot()`` (node.py's payload).
        """
        node = self.node(nid)
        core = node.core
        if (
            not node.up
            or node.paused
            or core is None
            or node.applied_index <= core.log.snapshot_index
        ):
            return None
        table = node.table.snapshot()
        try:
            snap = core.compact(node.applied_index, node.state_hash + table)
        except SafetyViolation:
            raise
        except Exception as exc:
            raise self._core_error(node, "compact", exc) from exc
        self.lease_checks.on_snapshot_taken(node.id, snap.index, table)
        self.checkers.on_snapshot_durable(node.id, snap.index)
        node.storage.compact(snap)
        self._log(f"{node.id} compact to {snap.index}/{snap.term}")
        return snap

    def transfer_leadership(self, target: str | None = None) -> NodeId | None:
        """Ask the leader to hand over to ``target`` (a random peer by default)."""
        node = self.leader()
        if node is None or node.core is None:
            return None
        peers = [nid for nid in self.ids if nid != node.id]
        if not peers:
            return None
        to = NodeId(target) if target is not None else self.workload_rng.choice(peers)
        try:
            node.core.transfer_leadership(to)
        except NotLeader:
            return None
        except SafetyViolation:
            raise
        except Exception as exc:
            raise self._core_error(node, "transfer_leadership", exc) from exc
        self._log(f"{node.id} transfer leadership to {to}")
        self._after_input(node)
        return to

    def campaign(self, nid: str) -> None:
        node = self.node(nid)
        if node.up and not node.paused and node.core is not None:
            node.core.campaign()
            self._after_input(node)

    def _workload_propose(self) -> None:
        self.propose()

    def _workload_compact(self) -> None:
        up = [n for n in self.nodes if n.up]
        if up:
            self.compact(self.workload_rng.choice(up).id)

    def _workload_transfer(self) -> None:
        self.transfer_leadership()

    # ================================================================ network faults
    def set_links(self, params: LinkParams, links: Sequence[tuple[str, str]] | None = None) -> None:
        keys = None if links is None else [(NodeId(a), NodeId(b)) for a, b in links]
        self.net.set_links(params, keys)
        self._log(f"links {'all' if links is None else list(links)} -> {params}")

    def reset_links(self) -> None:
        self.net.reset_links()
        self._log("links reset to clean")

    def isolate(self, nid: str) -> None:
        others = [x for x in self.ids if x != nid]
        self.net.split([[NodeId(nid)], others])
        self._log(f"PARTITION isolate {nid}")

    def split(self, groups: Sequence[Sequence[str]]) -> None:
        self.net.split([[NodeId(x) for x in g] for g in groups])
        self._log(f"PARTITION split {[list(g) for g in groups]}")

    def cut(self, src: str, dst: str) -> None:
        self.net.cut(NodeId(src), NodeId(dst))
        self._log(f"PARTITION cut {src}->{dst}")

    def heal(self) -> None:
        """Heal every partition and cut, between nodes and between clients and nodes."""
        self.net.heal()
        self.client_net.heal()
        self._log("HEAL partitions")

    def partition(self, shape: str, rng: random.Random | None = None) -> str:
        """Apply a named partition shape (see PARTITION_SHAPES); returns a description.

        Also ``isolate-leader-clients``: isolate the leader and put each client on its side
        (cut from every other node) with probability 1/2; ``mute-leader`` / ``deaf-leader``:
        the leader's outgoing / incoming links all cut, the other direction open.
        """
        r = rng or self.fault_rng
        ids = list(self.ids)
        n = len(ids)
        if shape in ("isolate-leader", "isolate-leader-clients"):
            lead = self.leader()
            victim = lead.id if lead is not None else r.choice(ids)
            self.isolate(victim)
            if shape == "isolate-leader":
                return f"isolate-leader {victim}"
            # Each client lands on the old leader's side with probability 1/2.
            others = [x for x in ids if x != victim]
            with_leader = [c.id for c in self.clients if r.random() < 0.5]
            for cid in with_leader:
                self.cut_client(cid, others)
            return f"isolate-leader-clients {victim} with {with_leader}"
        if shape == "isolate-one":
            victim = r.choice(ids)
            self.isolate(victim)
            return f"isolate-one {victim}"
        if shape in ("mute-leader", "deaf-leader"):
            # One-way isolation: the leader (or a random node) can no longer send to anyone
            # (mute) or hear anyone (deaf); the other direction still flows.
            lead = self.leader()
            victim = lead.id if lead is not None else r.choice(ids)
            for x in ids:
                if x != victim:
                    self.net.cut(*((victim, x) if shape == "mute-leader" else (x, victim)))
            self._log(f"PARTITION {shape} {victim}")
            return f"{shape} {victim}"
        if shape == "one-way":
            lead = self.leader()
            src = lead.id if lead is not None and r.random() < 0.7 else r.choice(ids)
            dst = r.choice([x for x in ids if x != src])
            self.cut(src, dst)
            return f"one-way {src}->{dst}"
        r.shuffle(ids)
        if shape == "majorities-ring" and n >= 5:
            pairs = [(ids[i], ids[(i + 1) % n]) for i in range(n)]
            self.net.connect_only(pairs)
            self._log(f"PARTITION majorities-ring {ids}")
            return f"majorities-ring {ids}"
        if shape == "bridge" and n >= 3:
            half = (n - 1) // 2
            left, bridge, right = ids[:half], ids[half], ids[half + 1 :]
            self.net.split([[*left, bridge], [bridge, *right]])
            # split() gives the bridge one group only: let it talk to both sides.
            for x in [*left, *right]:
                self.net.blocked.discard((bridge, x))
                self.net.blocked.discard((x, bridge))
            self._log(f"PARTITION bridge {left} <{bridge}> {right}")
            return f"bridge {left}<{bridge}>{right}"
        minority = ids[: max(1, n // 2)]
        self.split([minority, ids[len(minority) :]])
        return f"minority {minority}"

    # ================================================================ heal + liveness
    def final_heal(self) -> None:
        """Stop workload and failpoints, heal partitions, clean links, restart and resume all."""
        self.workload_on = False
        self.failpoints = {}
        self._held_failpoints = None
        self._lease_due = None
        self.net.heal()
        self.net.unpin_all()
        self.client_net.heal()
        self.client_net.reset_links()
        self._log("FINAL HEAL")
        for node in self.nodes:
            if not node.up:
                self.restart(node.id)
            elif node.paused:
                self.resume(node.id)

    def check_liveness(
        self,
        election_bound_ticks: int | None = None,
        stable_bound_ticks: int | None = None,
        stable_ticks: int | None = None,
    ) -> LivenessResult:
        """After :meth:`final_heal`: a lease leader, then a stable one that commits everywhere.

        Bounds, from the heal, with E = election_ticks_max ticks, C = the catch-up
        allowance (:meth:`catch_up_us`: one worst-case round trip per
        ``max_entries_per_append * max_inflight`` entries of backlog, since a new leader's
        lease waits for its no-op to commit on a majority) and D = the delay allowance
        (:meth:`delay_allowance_us`: two round trips, pre-vote and vote, per election
        attempt, for three attempts, plus one straggler):
          * some node holds a valid leader lease within ``election_bound_ticks`` (3·E) + C + D;
          * a STABLE leader's lease starts within ``stable_bound_ticks`` (8·E) + C + D. Stable
            means: a fresh proposal to it is applied on every node (within E + C + the
            longest delay any link had: a straggler may hold up a FIFO link), every node
            reaches the same state hash, and it then stays leader of the same term for
            ``stable_ticks`` (5·E). (Its lease may lapse and come back meanwhile when round
            trips approach ``lease_ticks``.) A leader deposed before that (e.g. by a higher
            term left behind by a partition) counts as a disruption and the wait goes on.
        Raises :class:`LivenessViolation`.
        """
        e = self.election_ticks_max
        t = self.tick_us
        catch_up = self.catch_up_us() + self.delay_allowance_us()
        eb = (3 * e if election_bound_ticks is None else election_bound_ticks) * t + catch_up
        stable_bound = 8 * e if stable_bound_ticks is None else stable_bound_ticks
        deadline = self.now + stable_bound * t + catch_up
        sb = (5 * e if stable_ticks is None else stable_ticks) * t
        t0 = self.now
        first_lease_us = -1
        disruptions = 0
        while True:
            if not self.run_until_true(
                lambda: any(n.lease for n in self.nodes), max(0, deadline - self.now)
            ):
                raise LivenessViolation(
                    "liveness-stable" if first_lease_us >= 0 else "liveness-election",
                    f"no stable leader with a valid lease within {(deadline - t0) // t} ticks "
                    f"of the heal at t={t0}us ({disruptions} disruptions; {self._roles()})",
                )
            if first_lease_us < 0:
                first_lease_us = self.now - t0
                if first_lease_us > eb:
                    raise LivenessViolation(
                        "liveness-election",
                        f"the first leader lease after the heal at t={t0}us began only after "
                        f"{first_lease_us / t:.1f} ticks (bound {eb / t:.1f} ticks, of which "
                        f"{catch_up / t:.1f} catch-up and message delays)",
                    )
            lead = next(n for n in self.nodes if n.lease)
            assert lead.core is not None
            term = lead.core.term
            lease_start = self.now

            def lost(lead: SimNode = lead, term: int = term) -> bool:
                core = lead.core
                return core is None or core.role is not Role.LEADER or core.term != term

            where = self.propose()
            if where is None:
                raise LivenessViolation(
                    "liveness-commit", f"{lead.id} refused a proposal at t={self.now}us"
                )
            index = where[0]
            # A message sent before the heal on a slow link may still hold up a FIFO link.
            allowance = e * t + self.catch_up_us() + self.net.max_delay_us

            def done_or_lost(index: int = index, lost: Callable[[], bool] = lost) -> bool:
                return lost() or all(n.applied_index >= index for n in self.nodes)

            t1 = self.now
            if not self.run_until_true(done_or_lost, allowance):
                raise LivenessViolation(
                    "liveness-commit",
                    f"proposal {where} not applied on every node within "
                    f"{allowance / t:.1f} ticks (applied: "
                    f"{[n.applied_index for n in self.nodes]}; {self._roles()})",
                )
            if lost():
                disruptions += 1
                continue
            commit_us = self.now - t1
            if self.run_until_true(lost, sb):
                disruptions += 1
                continue

            # Lease traffic (client acquires, the leader's expiries) goes on after the heal, so
            # wait (a commit allowance at most) for an instant at which every node applied
            # the same prefix.
            def converged() -> bool:
                return len({(n.applied_index, n.state_hash) for n in self.nodes}) == 1

            if not self.run_until_true(converged, allowance):
                raise LivenessViolation(
                    "liveness-converge",
                    "nodes disagree on (applied index, state hash): "
                    f"{[(n.id, n.applied_index, n.state_hash.hex()[:8]) for n in self.nodes]}",
                )
            return LivenessResult(
                first_lease_us, lease_start - t0, commit_us, lead.id, term, disruptions, t, e
            )

    def check_lease_expiry(self) -> int:
        """After :meth:`check_liveness`: every lease nobody renews is expired in time.

        A lease in the stable leader's table whose holder does not keep it alive (it
        released, lost, crashed, stopped renewing, or never learned of the grant) must be
        gone from that table within ``max_ttl / (1 - max_drift)`` (its deadline on the
        leader's clock, at most one TTL after now) plus two ticks, a commit round trip, the
        longest client-link delay (a renewal still in flight) and the catch-up allowance.
        Skipped if leadership changes meanwhile (a new leader
        restarts every deadline: docs/safety.md S2). Returns how many leases it waited for;
        raises :class:`LivenessViolation` ("liveness-expiry").
        """
        lead = self.leader()
        if lead is None or lead.core is None or not self.clients:
            return 0
        term = lead.core.term
        kept = {
            c.lease.lease_id
            for c in self.clients
            if c.lease is not None and c.holding and c.keepalive
        }
        # A grant whose client is still acquiring it may yet be taken up and renewed.
        taking = {c.request_id for c in self.clients if c.acquiring}
        orphans = [
            r for r in lead.table.leases() if r.lease_id not in kept and r.request_id not in taking
        ]
        if not orphans:
            return 0
        rho = lead.core.config.max_drift
        max_ttl_us = max(r.ttl_ms for r in orphans) * 1_000
        rtt = 2 * max(p.delay_max_us for p in self.net.links.values())
        # A renewal the holder sent before it stopped may still be on a (slow) client link.
        straggler = self.client_net.max_delay_us
        bound = (
            int(max_ttl_us / (1 - rho)) + 2 * self.tick_us + rtt + straggler + self.catch_up_us()
        )
        ids = {r.lease_id for r in orphans}
        t0 = self.now

        def changed() -> bool:
            core = lead.core
            return core is None or core.role is not Role.LEADER or core.term != term

        def done() -> bool:
            return changed() or not any(lead.table.by_lease_id(i) for i in ids)

        if not self.run_until_true(done, bound) and not changed():
            left = [r for r in orphans if lead.table.by_lease_id(r.lease_id) is not None]
            raise LivenessViolation(
                "liveness-expiry",
                f"{lead.id} (term {term}) still holds {len(left)} lease(s) nobody renews "
                f"{(self.now - t0) / 1000:.0f} ms after the check began (bound "
                f"{bound / 1000:.0f} ms): {[(r.name, r.lease_id, r.holder) for r in left]}",
            )
        return len(orphans)

    def catch_up_us(self) -> int:
        """Worst-case time to bring the most lagging node up to the longest log.

        One round trip (at the slowest link's maximum delay, plus a tick for retransmission)
        per ``max_entries_per_append * max_inflight`` entries of backlog, rounded up.
        """
        up = [n.core for n in self.nodes if n.core is not None]
        if not up:
            return 0
        backlog = max(c.log.last_index for c in up) - min(n.applied_index for n in self.nodes)
        cfg = up[0].config
        per_round = cfg.max_entries_per_append * cfg.max_inflight
        rtt = 2 * max(p.delay_max_us for p in self.net.links.values()) + self.tick_us
        return -(-max(backlog, 0) // per_round) * rtt

    def _roles(self) -> str:
        parts = []
        for n in self.nodes:
            if n.core is None:
                parts.append(f"{n.id}=down")
            else:
                parts.append(f"{n.id}={n.core.role.value}/t{n.core.term}")
        return " ".join(parts)

    def lease_history(self) -> list[LeaseInterval]:
        """Closed lease intervals plus the ones still open (end_us = -1), by start time."""
        out = list(self.lease_intervals)
        for nid, (start, term) in self._lease_since.items():
            out.append(LeaseInterval(nid, term, start, -1))
        return sorted(out, key=lambda x: x.start_us)
