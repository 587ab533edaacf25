"""SimCluster (:class:`SimCluster`): the whole simulated cluster, built from the layers of
this package. Its constructor splits the seed into every random stream, in a fixed order,
builds the nodes, the networks and the clients, and boots the nodes."""

from __future__ import annotations

import itertools
import random
from typing import TYPE_CHECKING, Any

from raftlease.core.raft import RaftCore
from raftlease.testing.checkers import Checkers, LeaseCheckers
from raftlease.testing.clients import ClientParams, FencedResource, SimClient
from raftlease.testing.network import LinkParams, SimNetwork
from raftlease.testing.sim.members import SimMembers
from raftlease.testing.sim.model import FAILPOINT_SCOPES, FAILPOINTS, CoreFactory, SimNode
from raftlease.types import NodeId

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence


class SimCluster(SimMembers):
    """A whole cluster in one process, driven by virtual time. See the package docstring.

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

    ``spares``: nodes beyond the ``n`` bootstrap voters (ids n{n+1}, ...) that boot with an
    empty configuration (joining nodes); with ``member_every_us`` the membership operator
    (members.py) adds them as learners, promotes them and removes voters, through the
    leader's LeaseService, every (min, max) us. Their clocks and the operator's choices come
    from a stream of their own, so the other streams draw as without them.
    """

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
        spares: int = 0,
        member_every_us: tuple[int, int] | None = None,
        member_remove_leader: float = 0.4,
        member_retire: float = 0.3,
        member_burst: float = 0.3,
        member_eager: float = 0.3,
    ) -> None:
        if n < 1:
            raise ValueError("n must be >= 1")
        self.seed = seed
        self.tick_us = tick_us
        self.voter_ids = tuple(NodeId(f"n{i + 1}") for i in range(n))
        self.spare_ids = tuple(NodeId(f"n{i + 1}") for i in range(n, n + spares))
        self.ids = self.voter_ids + self.spare_ids
        self.config_overrides = dict(config or {})
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
        self.member_rng = member_rng = random.Random(root.getrandbits(64))

        drift = probe.max_drift if max_drift is None else max_drift
        if rates is not None and len(rates) != n:
            raise ValueError(f"need {n} clock rates, got {len(rates)}")
        self.nodes = []
        for i, nid in enumerate(self.ids):
            if i >= n:  # a spare: its own stream
                rate = 1.0 + member_rng.uniform(-drift, drift)
            elif rates is not None:
                rate = rates[i]
            else:
                rate = 1.0 + clock_rng.uniform(-drift, drift)
            if rate <= 0:
                raise ValueError(f"clock rate must be positive, got {rate}")
            self.nodes.append(
                SimNode(nid, i, rate, tick_us / rate, min_tick_interval_us=tick_us / rate)
            )
        for node in self.nodes:  # clocks do not agree on the epoch
            rng = lease_rng if node.index < n else member_rng
            node.clock_local_s = rng.uniform(0.0, 1_000.0)
        self._by_id = {node.id: node for node in self.nodes}
        self.clean_link = link or LinkParams()
        self.net = SimNetwork(self.ids, self.net_rng, self.clean_link)
        self.checkers = Checkers(self.voter_ids)
        self.lease_checks = LeaseCheckers()
        self.resource = FencedResource()
        self.ghosts = []

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
        self.clients = []
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
        self._heap = []
        self._seq = itertools.count()
        self.events = 0
        self.next_command = 1
        self.proposed = 0
        self.leader_history = []
        self.member_stats = {}
        self.member_log = []
        self._member_seq = 0
        self.spares_left = list(self.spare_ids)
        self.member_remove_leader = member_remove_leader
        self.member_retire = member_retire
        self.member_burst = member_burst
        self.member_eager = member_eager
        self.lease_intervals = []
        self._lease_since = {}
        self.workload_on = True
        self.failpoints = {}
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
        self._lease_due = None  # (window start, deadline) us
        self._held_failpoints = None

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
        if member_every_us is not None and spares:
            lo, hi = member_every_us
            rng = self.member_rng

            def step() -> None:
                self.member_step()
                self.after(rng.randint(lo, hi), step)

            self.after(rng.randint(lo, hi), step)
