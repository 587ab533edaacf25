"""Node lifecycle and faults (:class:`SimFaults`): boot, crash, restart, pause / resume
(SIGSTOP / SIGCONT), clock rates, failpoints inside the Ready loop, partitions and link
faults between nodes and between clients and nodes.

A crash drops the core and everything volatile; messages that reach a down node are lost.
A restart rebuilds the core from ``storage.load()``. Failpoints crash any node inside its
Ready loop (before its fsync, before send, after send, after apply), optionally only at the
moments that matter (a vote just persisted, entries acknowledged but not committed, a
snapshot install, a new leader, a commit). A pause freezes a node while its clock runs on.
The network (network.py) drops (optionally one message kind only), duplicates and delays
per directed link, and partitions by named shapes (:data:`PARTITION_SHAPES`).
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING

from raftlease.core.messages import (
    AppendEntriesResponse,
    InstallSnapshotResponse,
    RequestVote,
    RequestVoteResponse,
)
from raftlease.fsm.leases import LeaseTable
from raftlease.testing.checkers import SafetyViolation
from raftlease.testing.clients import UNAVAILABLE, AcquireReq, ClientReply, ReleaseReq, RenewReq
from raftlease.testing.sim.driver import SimDriver
from raftlease.testing.sim.model import (
    FAILPOINT_SCOPES,
    HASH_LEN,
    ZERO_HASH,
    CoreFactory,
    Crashed,
    MemberChange,
    describe,
    gone,
)
from raftlease.testing.sim.scheduler import TICK
from raftlease.types import NodeId, Role

if TYPE_CHECKING:
    from collections.abc import Sequence

    from raftlease.core.messages import Message
    from raftlease.core.raft import RaftCore
    from raftlease.core.ready import Ready
    from raftlease.testing.clients import ClientRequest
    from raftlease.testing.network import LinkParams
    from raftlease.testing.sim.model import SimNode


def _ms(span: tuple[int, int]) -> str:
    return f"{span[0] / 1000:.0f}-{span[1] / 1000:.0f}ms"


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


class SimFaults(SimDriver):
    """Lifecycle and fault injection (see the module docstring)."""

    core_factory: CoreFactory
    clock_rng: random.Random
    fault_rng: random.Random
    restart_rng: random.Random
    failpoint_down_us: tuple[int, int]
    failpoint_crashes: int

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
        node.snapshot_job = None
        node.paused = False
        node.stopped = False
        node.saving = None
        node.saved = False
        node.leader_stepped_us = -1
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
        node.config_index = core.config_index
        node.config_since_tick = 0
        node.removed_since_tick = -1
        self.checkers.on_durable_config(node.id, core.membership)
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
        self._push(int(node.next_tick_us), TICK, node.index, node.incarnation)
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

    def slow_disk(self, nids: Sequence[str], for_us: int, save_us: tuple[int, int]) -> None:
        """For ``for_us``, every save of these nodes takes a random time from ``save_us``
        (one disk stalling, or a disk the nodes share stalling for all of them at once, as
        on the project's benchmark VM: 0.2-1.9 s). Meanwhile a node takes ticks and what
        RaftCore.steps_while_saving admits, as node.py's save window does; a crash loses the
        save in progress."""
        for nid in nids:
            node = self.node(nid)
            node.slow_until_us = self.now + for_us
            node.slow_save_us = save_us
        self._log(f"SLOW DISK {list(nids)} for {for_us / 1000:.0f}ms: saves {_ms(save_us)}")

    def heal_disks(self) -> None:
        """Disks save at once again; a save still running ends now (not up to 2 s later,
        which a liveness bound after a heal does not allow for; a stopped node sees it when
        it resumes)."""
        for node in self.nodes:
            node.slow_until_us = 0
            if node.up and node.saving is not None and node.save_done is not None:
                node.save_done()

    def pause(self, nid: str, pause_us: int) -> None:
        """SIGSTOP a node for ``pause_us``, then SIGCONT it (fault matrix row 9).

        While paused its clock keeps running but nothing happens: ticks are missed and
        arriving messages wait. Its lease belief still ends on its own clock (the checker
        counts it as a holder until then). On resume it does what node.py's loop does: a
        leader first steps its own-term answers that queued up, then every node catches up
        its missed ticks (all as ONE input), then takes the remaining peer messages in
        arrival order, then the client calls. A paused node takes no client calls
        (``leader()`` skips it; requests wait in its inbox) and no compaction.

        A node stopped inside a slow save (its save window) takes no ticks and no messages
        either; the fsync it started runs on in the kernel and ends on time (durable: a crash
        after that keeps it), but the node finishes the Ready only once resumed.
        """
        node = self.node(nid)
        if not node.up or node.stopped or node.core is None:
            return
        node.paused = True
        node.stopped = True
        node.missed_ticks = 0
        node.pause_lease_left = node.core.lease_remaining_ticks() if node.lease else 0
        saving = " (saving)" if node.saving is not None else ""
        self._log(f"{node.id} PAUSE for {pause_us / 1000:.1f}ms{saving}")
        inc = node.incarnation

        def resume() -> None:
            if node.up and node.stopped and node.incarnation == inc:
                self.resume(nid)

        self.after(pause_us, resume)

    def resume(self, nid: str) -> None:
        """SIGCONT, and the end of a slow save (``SimDriver._slow_save``).

        A node stopped inside a save whose fsync ended meanwhile first finishes that Ready
        (node.py's ``_handle_ready`` goes on), then resumes as any node. If the save still
        runs, its save window goes on: the missed ticks are caught up and the messages the
        core admits stepped, as below; the rest waits for the end of the save."""
        node = self.node(nid)
        if not node.up or not node.paused:
            return
        if node.stopped:
            node.stopped = False
            if node.saving is not None and node.saved and node.save_done is not None:
                node.save_done()  # finishes the Ready, then resumes (the branch below)
                return
        elif node.saving is not None:
            return  # in its save window, not stopped: the end of the save resumes it
        window = node.saving is not None  # stopped in a save that still runs: it goes on
        node.paused = window
        inc = node.incarnation
        missed, node.missed_ticks = node.missed_ticks, 0
        inbox, node.inbox = node.inbox, []
        self._log(f"{node.id} RESUME: {missed} missed ticks, {len(inbox)} waiting messages")
        core = node.core
        assert core is not None
        requests = [m for m in inbox if isinstance(m, AcquireReq | RenewReq | ReleaseReq)]
        peer = [m for m in inbox if not isinstance(m, AcquireReq | RenewReq | ReleaseReq)]
        first: list[Message] = []
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
                    first.append(m)
                else:
                    later.append(m)
            for _ in range(missed):
                core.tick()
        except SafetyViolation:
            raise
        except Exception as exc:
            raise self._core_error(node, "resume (queued answers, missed ticks)", exc) from exc
        # Received during the pause: heard "now", after the catch-up (in a save window that
        # goes on, only what is stepped: _deliver dates the rest if it is admitted).
        for m in first if window else peer:
            node.heard_tick[self._by_id[m.src].index] = core.tick_count
        self._after_input(node)
        if node.core is not None and node.core.role is Role.LEADER:
            self.check_quorum_contact(node, node.core)
        for pm in later:
            if gone(node, inc):  # crashed meanwhile (a failpoint), maybe restarted
                return
            self._deliver(pm)
        if window:  # the rest waits for the end of the save
            node.inbox.extend(requests)
            return
        deferred, node.deferred = node.deferred, []
        for action in deferred:  # timers that fell due while it was stopped
            if gone(node, inc):  # crashed meanwhile (a failpoint), maybe restarted
                return
            action()
        for req in requests:  # gRPC handlers run once the loop awaits its first fsync
            if gone(node, inc):  # crashed meanwhile (a failpoint), maybe restarted
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
                if isinstance(call.token, MemberChange):
                    continue  # the operator's call: its outcome is unknown
                req: ClientRequest = call.token
                self._reply(ClientReply(node.id, req.src, req.seq, UNAVAILABLE))
        node.service = None
        # A term it moved to while a save was running (a tick can start an election in the
        # save window) was never durable: it comes back with its stored term. (The durable
        # term never goes back: SimDriver._persist checks that.)
        self.checkers.max_term[node.id] = node.storage.hard_state.term
        self.check_durable(f"crash of {node.id}")

    def restart(self, nid: str) -> None:
        """Restart a crashed node from ``storage.load()`` with a fresh core (no-op if up, or
        retired: removed from the configuration and shut down for good)."""
        node = self.node(nid)
        if node.up or node.retired:
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

    # ================================================================ failpoints
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
        raise Crashed

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
