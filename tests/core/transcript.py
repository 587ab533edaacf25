"""Datadriven transcripts for the Raft core (a Python take on etcd-raft's interaction tests).

A transcript (``tests/core/testdata/*.txt``) is a list of blocks: ``# comments``, one command
line, ``----``, the expected output, a blank line. The commands drive RaftCores through an
in-memory driver that, after EVERY input, follows the READY CONTRACT (persist, send, apply,
advance); each node persists to a :class:`MemoryStorage` (the simulator's storage, with the
semantics of the SQLite one), and messages wait in one network queue until delivered:

  add-nodes N [election=10..20 heartbeat=2 prevote=true checkquorum=true lease=T
               max-append=N seed=0]
  set-log ID term=T log=1,1,4 [vote=ID commit=N]   crash ID, replace its storage, restart it
  campaign ID | tick ID|all [N] | propose ID DATA | transfer FROM TO | compact ID INDEX
  deliver ID                   step every deliverable message queued for ID, in send order
  stabilize [drop=(1,3),...]   deliver in rounds until quiescent; links 1->3... lose messages
  drop [from=ID] [to=ID]       lose queued messages
  partition 1|2,3 / heal       cut links between groups; cut messages WAIT until heal (as a
                               TCP connection buffers): `drop` them to lose them
  crash ID / restart ID        lose everything volatile / rebuild the core from its storage
  run-ticks N                  N times: tick every node, stabilize; print role changes only
  status                       role, term, vote, leader, last index, commit, applied, lease
  log ID...|all                one line per node: [snap=(i,t)] index/term[:data]... | commit...

Output: each delivered message (``1->2 AppendEntries term=1 prev=(1,1) entries=[2/1]
commit=1``, pairs are (index,term)), ``dropped <message>``, and ``~ 2 follower term=1
leader=1`` whenever a node's role, term or leader changes; N identical consecutive lines
print once with `` (xN)``. Messages to a crashed node are lost when sent. Node N draws its
election timeouts from ``random.Random(f"{seed}/{N}/{incarnation}")``, so runs replay exactly.

Messages are rendered by :func:`fmt_msg`, not by the simulator's one-line
:func:`raftlease.testing.sim.describe`: a transcript shows the term of every entry an append
carries (``entries=[2/1]`` vs ``[2/2]`` is the whole point of the figure-8 scenarios), which
``describe`` (index ranges, plus send ticks) leaves out.
"""

from __future__ import annotations

import itertools
import random
import re
from dataclasses import dataclass, field
from typing import assert_never

from raftlease.config import RaftConfig
from raftlease.core import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    EntryKind,
    HardState,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
    RaftCore,
    RequestVote,
    RequestVoteResponse,
    SoftState,
    TimeoutNow,
)
from raftlease.errors import NotLeader, RaftLeaseError
from raftlease.storage.memory import MemoryStorage
from raftlease.types import NodeId


@dataclass
class Node:
    id: NodeId
    config: RaftConfig
    store: MemoryStorage = field(default_factory=MemoryStorage)  # what it made durable
    core: RaftCore | None = None
    state: list[tuple[int, str]] = field(default_factory=list)  # applied (index, data)
    incarnation: int = 0
    soft: SoftState | None = None


def fmt_msg(m: Message) -> str:
    ents = ",".join(f"{e.index}/{e.term}" for e in getattr(m, "entries", ()))
    match m:
        case RequestVote():
            kind = "PreVote" if m.pre_vote else "RequestVote"
            body = f"{kind} term={m.term} last=({m.last_log_index},{m.last_log_term})"
            body += " transfer" if m.transfer else ""
        case RequestVoteResponse():
            kind = "PreVoteResponse" if m.pre_vote else "RequestVoteResponse"
            body = f"{kind} term={m.term} {'granted' if m.granted else 'rejected'}"
        case AppendEntries():
            prev = f"({m.prev_log_index},{m.prev_log_term})"
            body = (
                f"AppendEntries term={m.term} prev={prev} entries=[{ents}] commit={m.leader_commit}"
            )
        case AppendEntriesResponse() if m.success:
            body = f"AppendEntriesResponse term={m.term} match={m.match_index}"
        case AppendEntriesResponse():
            body = f"AppendEntriesResponse term={m.term} rejected prev={m.match_index}"
            body += f" last={m.last_log_index}"
            body += f" conflict=({m.conflict_index},{m.conflict_term})" if m.conflict_term else ""
        case InstallSnapshot():
            body = f"InstallSnapshot term={m.term} snapshot=({m.snapshot.index},{m.snapshot.term})"
        case InstallSnapshotResponse():
            body = f"InstallSnapshotResponse term={m.term} match={m.match_index}"
        case TimeoutNow():
            body = f"TimeoutNow term={m.term}"
        case _:
            assert_never(m)
    return f"{m.src}->{m.dst} {body}"


def _kw(args: list[str]) -> dict[str, str]:
    return dict(a.split("=", 1) for a in args if "=" in a)


def _encode(state: list[tuple[int, str]]) -> bytes:
    return "\n".join(f"{i} {d}" for i, d in state).encode()


def _decode(data: bytes) -> list[tuple[int, str]]:
    return [(int(i), d) for i, _, d in (ln.partition(" ") for ln in data.decode().splitlines())]


class Cluster:
    def __init__(self) -> None:
        self.nodes: dict[NodeId, Node] = {}
        self.queue: list[Message] = []
        self.groups: list[set[str]] | None = None
        self.seed = "0"
        self.out: list[str] = []
        self.quiet = False  # run-ticks: print role changes only

    def run(self, line: str) -> str:
        """Execute one command line; return its output (``ok`` if it printed nothing)."""
        name, *args = line.split()
        cmd = getattr(self, "cmd_" + name.replace("-", "_"), None)
        if cmd is None:  # a typo must fail the test, not be recorded by --rewrite
            raise NameError(f"unknown transcript command {name!r}")
        self.out = []
        try:
            cmd(args)
        except (RaftLeaseError, ValueError, RuntimeError) as e:
            hint = f" (leader hint {e.leader_hint})" if isinstance(e, NotLeader) else ""
            self.out.append(f"error: {type(e).__name__}: {e}{hint}")
        lines: list[str] = []  # identical consecutive lines collapse into one with " (xN)"
        for ln, n in ((ln, len(list(g))) for ln, g in itertools.groupby(self.out)):
            lines.append(ln if n == 1 else f"{ln} (x{n})")
        return "\n".join(lines) or "ok"

    # --- driver ----------------------------------------------------------------------------
    def _core(self, nid: str) -> RaftCore:
        core = self.nodes[NodeId(nid)].core
        if core is None:
            raise ValueError(f"node {nid} is down")
        return core

    def _up(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.core is not None]

    def _ready(self, n: Node) -> None:
        core = self._core(n.id)
        while core.has_ready():
            rd = core.ready()
            # 1. PERSIST, before any message of this Ready leaves
            n.store.save(rd.hard_state, rd.snapshot, rd.entries)
            self.queue += [m for m in rd.messages if self.nodes[m.dst].core is not None]  # 2.
            if rd.snapshot is not None:  # 3. APPLY
                n.state = _decode(rd.snapshot.data)
            n.state += [
                (e.index, e.data.decode())
                for e in rd.committed_entries
                if e.kind is EntryKind.NORMAL
            ]
            core.advance(rd)  # 4.
        soft = SoftState(core.role, core.leader_id, core.term)
        if soft != n.soft:
            n.soft = soft
            self.out.append(
                f"~ {n.id} {soft.role.value} term={soft.term} leader={soft.leader_id or '-'}"
            )

    def _deliver(self, dsts: list[NodeId], lost: set[tuple[str, str]]) -> bool:
        """Deliver every deliverable message queued for ``dsts`` now, then run their Readies."""
        batch = [m for m in self.queue if m.dst in dsts and self._linked(m.src, m.dst)]
        self.queue = [m for m in self.queue if not (m.dst in dsts and self._linked(m.src, m.dst))]
        for dst in sorted({m.dst for m in batch}, key=int):
            for m in (m for m in batch if m.dst == dst):
                if (m.src, m.dst) in lost:
                    self.out.append(f"dropped {fmt_msg(m)}")
                else:
                    self.out += [] if self.quiet else [fmt_msg(m)]
                    self._core(dst).step(m)
            self._ready(self.nodes[dst])
        return bool(batch)

    def _linked(self, a: str, b: str) -> bool:
        return self.groups is None or any(a in g and b in g for g in self.groups)

    def _start(self, n: Node) -> None:
        n.incarnation += 1
        rng = random.Random(f"{self.seed}/{n.id}/{n.incarnation}")
        s = n.store.load()
        n.core = RaftCore(n.config, rng, s.hard_state, s.snapshot, s.entries)
        n.state = _decode(s.snapshot.data) if s.snapshot is not None else []

    # --- commands --------------------------------------------------------------------------
    def cmd_add_nodes(self, args: list[str]) -> None:
        kw = _kw(args)
        ids = tuple(NodeId(str(i)) for i in range(1, int(args[0]) + 1))
        lo, hi = kw.get("election", "10..20").split("..")
        self.seed = kw.get("seed", "0")
        lease = kw.get("lease")
        for nid in ids:
            cfg = RaftConfig(
                nid,
                ids,
                election_ticks_min=int(lo),
                election_ticks_max=int(hi),
                heartbeat_ticks=int(kw.get("heartbeat", "2")),
                lease_ticks=None if lease is None else int(lease),
                max_entries_per_append=int(kw.get("max-append", "512")),
                pre_vote=kw.get("prevote", "true") == "true",
                check_quorum=kw.get("checkquorum", "true") == "true",
            )
            self.nodes[nid] = n = Node(nid, cfg)
            self._start(n)
            core = self._core(nid)
            n.soft = SoftState(core.role, core.leader_id, core.term)

    def cmd_set_log(self, args: list[str]) -> None:
        kw, n = _kw(args), self.nodes[NodeId(args[0])]
        terms = [int(t) for t in kw["log"].split(",") if t]
        vote = NodeId(kw["vote"]) if "vote" in kw else None
        hs = HardState(int(kw["term"]), vote, int(kw.get("commit", "0")))
        self.cmd_crash(args[:1])
        n.store = MemoryStorage()
        n.store.save(hs, None, tuple(Entry(i, t) for i, t in enumerate(terms, 1)))
        self.cmd_restart(args[:1])

    def cmd_campaign(self, args: list[str]) -> None:
        if not self._core(args[0]).campaign():
            self.out.append("refused: heard from a leader within election_ticks_min ticks")
        self._ready(self.nodes[NodeId(args[0])])

    def cmd_tick(self, args: list[str]) -> None:
        nodes = self._up() if args[0] == "all" else [self.nodes[NodeId(args[0])]]
        for _ in range(int(args[1]) if len(args) > 1 else 1):
            for n in nodes:
                self._core(n.id).tick()
                self._ready(n)

    def cmd_propose(self, args: list[str]) -> None:
        index, term = self._core(args[0]).propose(" ".join(args[1:]).encode())
        self.out.append(f"index={index} term={term}")
        self._ready(self.nodes[NodeId(args[0])])

    def cmd_transfer(self, args: list[str]) -> None:
        self._core(args[0]).transfer_leadership(NodeId(args[1]))
        self._ready(self.nodes[NodeId(args[0])])

    def cmd_compact(self, args: list[str]) -> None:
        n, index = self.nodes[NodeId(args[0])], int(args[1])
        snap = self._core(n.id).compact(index, _encode([s for s in n.state if s[0] <= index]))
        if snap is None:
            self.out.append("already compacted")
            return
        n.store.compact(snap)
        self.out.append(f"snapshot=({snap.index},{snap.term})")

    def cmd_deliver(self, args: list[str]) -> None:
        self._deliver([NodeId(args[0])], set())

    def cmd_stabilize(self, args: list[str]) -> None:
        lost = set(re.findall(r"\((\w+),(\w+)\)", _kw(args).get("drop", "")))
        for _ in range(1000):
            for n in self._up():
                self._ready(n)
            if not self._deliver([n.id for n in self._up()], lost):
                return
        raise RuntimeError("stabilize did not converge in 1000 rounds")

    def cmd_run_ticks(self, args: list[str]) -> None:
        self.quiet = True
        try:
            for _ in range(int(args[0])):
                self.cmd_tick(["all"])
                self.cmd_stabilize([])
        finally:
            self.quiet = False

    def cmd_drop(self, args: list[str]) -> None:
        kw = _kw(args)
        keep: list[Message] = []
        for m in self.queue:
            if kw.get("from", m.src) == m.src and kw.get("to", m.dst) == m.dst:
                self.out.append(f"dropped {fmt_msg(m)}")
            else:
                keep.append(m)
        self.queue = keep

    def cmd_partition(self, args: list[str]) -> None:
        self.groups = [set(g.split(",")) for g in args[0].split("|")]
        if sorted(x for g in self.groups for x in g) != sorted(self.nodes):
            raise ValueError("a partition must list every node exactly once")

    def cmd_heal(self, args: list[str]) -> None:
        self.groups = None

    def cmd_crash(self, args: list[str]) -> None:
        n = self.nodes[NodeId(args[0])]
        n.core, n.soft, n.state = None, None, []
        self.queue = [m for m in self.queue if m.dst != n.id]

    def cmd_restart(self, args: list[str]) -> None:
        n = self.nodes[NodeId(args[0])]
        if n.core is not None:
            raise ValueError(f"node {n.id} is up")
        self._start(n)
        self._ready(n)

    def cmd_status(self, args: list[str]) -> None:
        for n in self.nodes.values():
            if (c := n.core) is None:
                self.out.append(f"{n.id}: down")
                continue
            self.out.append(
                f"{n.id}: {c.role.value} term={c.term} vote={c.voted_for or '-'} "
                f"leader={c.leader_id or '-'} last={c.last_index} commit={c.commit_index} "
                f"applied={c.applied_index} lease={str(c.lease_valid()).lower()}"
            )

    def cmd_log(self, args: list[str]) -> None:
        for nid in [n.id for n in self._up()] if args == ["all"] else args:
            n, log = self.nodes[NodeId(nid)], self._core(nid).log
            ents = [f"{e.index}/{e.term}:{e.data.decode()}".rstrip(":") for e in log.entries]
            snap = [f"snap=({log.snapshot.index},{log.snapshot.term})"] if log.snapshot else []
            state = ",".join(d for _, d in n.state if d)
            tail = f"commit={log.committed} applied={log.applied} state=[{state}]"
            self.out.append(" ".join([f"{nid}:", *snap, *ents, "|", tail]))


# --- files -----------------------------------------------------------------------------------
@dataclass
class Block:
    comments: list[str]
    command: str
    expected: str
    line: int


def parse(text: str) -> list[Block]:
    blocks: list[Block] = []
    comments: list[str] = []
    lines, i = text.splitlines(), 0
    while i < len(lines):
        ln = lines[i]
        if not ln.strip() or ln.startswith("#"):
            comments += [ln] if ln.strip() else []
            i += 1
            continue
        if i + 1 >= len(lines) or lines[i + 1] != "----":
            raise ValueError(f"line {i + 1}: expected '----' after {ln!r}")
        j = i + 2
        while j < len(lines) and lines[j].strip():
            j += 1
        blocks.append(Block(comments, ln, "\n".join(lines[i + 2 : j]), i + 1))
        comments, i = [], j
    return blocks


def run(text: str) -> tuple[str, list[str]]:
    """Run a transcript; return its rewritten text and a description of every mismatch."""
    cluster = Cluster()
    parts: list[str] = []
    diffs: list[str] = []
    for b in parse(text):
        got = cluster.run(b.command)
        parts.append("\n".join([*b.comments, b.command, "----", got]) + "\n")
        if got != b.expected:
            diffs.append(f"line {b.line}: {b.command}\n--- expected\n{b.expected}\n+++ got\n{got}")
    return "\n".join(parts), diffs
