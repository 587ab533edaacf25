"""Seeded nemeses, one schedule per fault-matrix row (docs/fault-matrix.md rows 1-4, 8-15, 18,
21; row 18, membership changes, is three runner rows: 18a, 18b, 18c).

Each ``row_N(W)`` injects faults for about W seconds, targeting nodes by role (leader,
followers, majority, all) or at random, and records every fault as a start/stop pair in the
history (process "nemesis"). Everything is healed by ``final_heal`` at the end of the run.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from jharness.util import now

if TYPE_CHECKING:
    from jharness.cluster import Cluster


FAILPOINTS = [
    "before-save",
    "after-save",
    "after-vote-save",
    "before-send",
    "after-commit-before-apply",
    "before-snapshot-save",
    "after-snapshot-save",
]
CORRUPTIONS = [
    "wal-truncate-tail",
    "wal-zero-tail",
    "wal-garbage-tail",
    "db-bitflip-mid",
    "db-truncate-tail",
    "entry-row-bitflip",
]


class Nemesis:
    def __init__(
        self,
        cluster: Cluster,
        rng: random.Random,
        history: Any,
        *,
        ttl: float,
        clients: dict[str, Any] | None = None,
        gates: dict[str, Path] | None = None,
    ) -> None:
        self.c = cluster
        self.rng = rng
        self.h = history
        self.ttl = ttl
        self.E = cluster.e_max
        self.clients = clients or {}
        self.gates = gates or {}
        self.count = 0
        self.counts: dict[str, int] = {}
        self.deadline = 0.0
        self.refused: set[str] = set()
        self.notes: list[str] = []
        self.paused_clients: set[str] = set()
        self.transport_faults: dict[str, str] = {}  # node -> RAFTLEASE_TRANSPORT_FAULTS
        self._tf_fid: int | None = None
        # membership operations (row 18): one record per join / member add / member remove
        self.membership: list[dict[str, Any]] = []

    # -- bookkeeping ------------------------------------------------------------------------
    def start(self, fault: str, **kw: Any) -> int:
        self._fid = getattr(self, "_fid", 0) + 1
        fid = self._fid
        if fault != "final-heal":
            self.count += 1
            self.counts[fault] = self.counts.get(fault, 0) + 1
        self.h.write(
            {
                "t": now(),
                "process": "nemesis",
                "type": "info",
                "f": "start",
                "fault": fault,
                "id": fid,
                **kw,
            }
        )
        return fid

    def stop(self, fid: int, fault: str, **kw: Any) -> None:
        self.h.write(
            {
                "t": now(),
                "process": "nemesis",
                "type": "info",
                "f": "stop",
                "fault": fault,
                "id": fid,
                **kw,
            }
        )

    def left(self) -> float:
        return self.deadline - now()

    def sleep(self, s: float) -> None:
        time.sleep(max(0.0, min(s, self.left() + 0.5)))

    # -- targets ----------------------------------------------------------------------------
    def target(self, how: str) -> list[str]:
        c = self.c
        up = c.up_ids()
        lead = c.leader()
        if how == "leader":
            return [lead] if lead else ([self.rng.choice(up)] if up else [])
        if how == "follower":
            fs = [n for n in up if n != lead]
            return [self.rng.choice(fs)] if fs else []
        if how == "random":
            return [self.rng.choice(up)] if up else []
        if how == "majority":
            k = len(c.ids) // 2 + 1
            first = [lead] if lead else []
            rest = [n for n in c.ids if n != lead]
            self.rng.shuffle(rest)
            return (first + rest)[:k]
        if how == "all":
            return list(c.ids)
        if how == "minority":
            fs = [n for n in c.ids if n != lead]
            return fs[: (len(c.ids) - 1) // 2]
        raise ValueError(how)

    def restart(self, nid: str, **kw: Any) -> None:
        if nid in self.refused:
            return
        self.c.start_node(nid, **kw)

    # -- primitive faults -------------------------------------------------------------------
    def kill_restart(self, how: str, down_for: float | None = None) -> None:
        ts = self.target(how)
        if not ts:
            return
        fid = self.start("kill", targets=ts, role=how)
        for n in ts:
            self.c.kill(n)
        self.sleep(self.rng.uniform(0, 2 * self.E) if down_for is None else down_for)
        for n in ts:
            self.restart(n)
        self.stop(fid, "kill", targets=ts)

    def pause(self, how: str, dur: float) -> None:
        ts = self.target(how)
        if not ts:
            return
        fid = self.start("pause", targets=ts, role=how, seconds=round(dur, 3))
        for n in ts:
            self.c.pause(n)
        time.sleep(dur)
        for n in ts:
            self.c.resume(n)
        self.stop(fid, "pause", targets=ts)

    def cut(self, pairs: list[tuple[str, str]], mode: str = "blackhole") -> None:
        for a, b in pairs:
            self.c.proxies.set(a, b, mode=mode)

    def heal_links(self) -> None:
        self.c.proxies.heal_all()

    def partition(self, shape: str, dur: float, mode: str = "blackhole") -> None:
        ids = list(self.c.ids)
        lead = self.c.leader() or self.rng.choice(ids)
        others = [n for n in ids if n != lead]
        self.rng.shuffle(others)
        if shape == "isolate-leader":
            groups = [[lead], others]
        elif shape == "isolate-follower":
            groups = [[others[0]], [lead, *others[1:]]]
        elif shape == "halves":
            k = len(ids) // 2
            sh = ids[:]
            self.rng.shuffle(sh)
            groups = [sh[:k], sh[k:]]
        else:
            groups = []
        pairs: list[tuple[str, str]] = []
        if shape == "bridge":  # leader-other[0] cut both ways; other[1] sees everyone
            a, b = lead, others[0]
            pairs = [(a, b), (b, a)]
            desc: Any = {"cut": [a, b], "bridge": others[1:]}
        elif shape == "bridge-followers":  # the two followers cannot talk; leader bridges
            a, b = others[0], others[1]
            pairs = [(a, b), (b, a)]
            desc = {"cut": [a, b], "bridge": [lead]}
        else:
            for g in groups:
                for h in groups:
                    if g is h:
                        continue
                    pairs += [(x, y) for x in g for y in h]
            desc = {"groups": groups}
        fid = self.start(
            "partition", shape=shape, mode=mode, seconds=round(dur, 3), leader=lead, **desc
        )
        self.cut(pairs, mode)
        time.sleep(dur)
        for a, b in pairs:
            self.c.proxies.set(a, b, mode="pass")
        self.stop(fid, "partition", shape=shape)

    def one_way(self, src: str, dst: str, dur: float) -> None:
        fid = self.start("one-way", link=f"{src}->{dst}", seconds=round(dur, 3))
        self.c.proxies.set(src, dst, mode="blackhole")
        time.sleep(dur)
        self.c.proxies.set(src, dst, mode="pass")
        self.stop(fid, "one-way", link=f"{src}->{dst}")

    def flaky(self, dur: float) -> None:
        ids = self.c.ids
        links = [(a, b) for a in ids for b in ids if a != b]
        chosen = self.rng.sample(links, self.rng.randint(2, len(links)))
        settings = {}
        for a, b in chosen:
            d = self.rng.uniform(50, 200)
            j = self.rng.uniform(5, 0.5 * d)
            drop = self.rng.choice([0.0, 0.02, 0.05, 0.1])
            self.c.proxies.set(a, b, delay_ms=d, jitter_ms=j, drop=drop)
            settings[f"{a}->{b}"] = f"delay={d:.0f}+-{j:.0f}ms drop={drop}"
        fid = self.start("flaky", links=settings, seconds=round(dur, 3))
        time.sleep(dur)
        for a, b in chosen:
            self.c.proxies.set(a, b, delay_ms=0.0, jitter_ms=0.0, drop=0.0)
        self.stop(fid, "flaky")

    def arm_transport_faults(self) -> None:
        """Message-level faults in every node's peer transport (row 13): before the nodes'
        first start, as the server reads RAFTLEASE_TRANSPORT_FAULTS at start. GrpcTransport
        then duplicates a message with probability dup (the copy right behind it), holds one
        back until the next message it sends (reorder), or drops it. On until final_heal."""
        specs = {}
        for n in self.c.ids:
            dup = self.rng.choice([0.05, 0.1])
            reorder = self.rng.choice([0.05, 0.1])
            drop = self.rng.choice([0.0, 0.02, 0.05])
            specs[n] = f"dup={dup};reorder={reorder}" + (f";drop={drop}" if drop else "")
        self._tf_fid = self.start("transport-faults", targets=list(specs), specs=specs)
        for n, spec in specs.items():
            self.c.nodes[n].transport_faults = spec
        self.transport_faults = specs

    def disarm_transport_faults(self) -> None:
        """Restart every node whose transport injects faults, without them: followers first,
        one at a time, each back and answering before the next goes down."""
        armed = [n for n in self.c.ids if self.c.nodes[n].transport_faults]
        if not armed:
            return
        lead = self.c.leader()
        armed.sort(key=lambda n: n == lead)
        for n in armed:
            node = self.c.nodes[n]
            if node.alive():
                self.c.stop_node(n)
            if n in self.refused or node.state == "refused":
                node.transport_faults = ""
                continue
            self.c.start_node(n, transport_faults="")
            t_end = now() + 5.0
            while now() < t_end:
                s = self.c.latest.get(n) or {}
                if s.get("ok") and s.get("inc") == node.starts:
                    break
                time.sleep(0.05)
        if self._tf_fid is not None:
            self.stop(self._tf_fid, "transport-faults", targets=armed)
            self._tf_fid = None

    def failpoint_crash(self, how: str, fp: str | None = None) -> None:
        ts = self.target(how)
        if not ts:
            return
        n = ts[0]
        fp = fp or self.rng.choice(FAILPOINTS)
        k = self.rng.randint(1, 8) if "snapshot" not in fp else 1
        spec = f"{fp}={k}*panic"
        fid = self.start("failpoint", targets=[n], role=how, failpoint=spec)
        self.c.stop_node(n)  # operator restart to arm the failpoint
        self.restart(n, failpoints=spec)
        t_end = now() + min(4.0, max(1.0, self.left()))
        fired = False
        while now() < t_end:
            node = self.c.nodes[n]
            if not node.alive():
                fired = True
                break
            time.sleep(0.05)
        if not fired:  # not hit yet: disarm with a clean restart
            self.c.stop_node(n)
        else:
            self.sleep(self.rng.uniform(0, 2 * self.E))
        self.restart(n)
        self.stop(fid, "failpoint", targets=[n], fired=fired)

    def corrupt(self, nid: str, kind: str) -> dict[str, Any]:
        """Stop ``nid`` (SIGKILL), damage its storage, restart; classify the outcome."""
        node = self.c.nodes[nid]
        self.c.kill(nid)
        db = node.data_dir / "raft.db"
        wal = node.data_dir / "raft.db-wal"
        info: dict[str, Any] = {"kind": kind}
        rng = self.rng
        if kind.startswith("wal-") and (not wal.exists() or wal.stat().st_size < 64):
            kind = "db-bitflip-mid"
            info["kind"] = kind
            info["note"] = "no WAL left (checkpointed); corrupting the db instead"
        if kind == "wal-truncate-tail":
            cut = rng.randint(1, 1024)
            size = wal.stat().st_size
            os.truncate(wal, max(32, size - cut))
            info["bytes"] = cut
        elif kind == "wal-zero-tail":
            cut = rng.randint(1, 1024)
            size = wal.stat().st_size
            with open(wal, "r+b") as f:
                f.seek(max(32, size - cut))
                f.write(b"\0" * min(cut, size - 32))
            info["bytes"] = cut
        elif kind == "wal-garbage-tail":
            n = rng.randint(1, 1024)
            with open(wal, "ab") as f:
                f.write(bytes(rng.getrandbits(8) for _ in range(n)))
            info["bytes"] = n
        elif kind == "db-bitflip-mid":
            size = db.stat().st_size
            flips = max(1, int(size * 8 * rng.choice([1e-3, 1e-4, 1e-5])))
            with open(db, "r+b") as f:
                for _ in range(flips):
                    pos = rng.randrange(size // 4, size)
                    f.seek(pos)
                    b = f.read(1)
                    f.seek(pos)
                    f.write(bytes([b[0] ^ (1 << rng.randrange(8))]))
            info["flips"] = flips
        elif kind == "db-truncate-tail":
            size = db.stat().st_size
            cut = rng.randint(1, 1024)
            os.truncate(db, max(0, size - cut))
            info["bytes"] = cut
        elif kind == "entry-row-bitflip":
            # flip one bit inside one stored entry's data through SQLite itself: the CRC must
            # catch it (the file stays a valid SQLite database)
            try:
                con = sqlite3.connect(str(db))
                rows = con.execute("SELECT idx, data FROM entries").fetchall()
                if rows:
                    idx, data = rows[rng.randrange(len(rows))]
                    data = bytearray(data)
                    if data:
                        p = rng.randrange(len(data))
                        data[p] ^= 1 << rng.randrange(8)
                    con.execute("UPDATE entries SET data=? WHERE idx=?", (bytes(data), idx))
                    con.commit()
                    info["index"] = idx
                con.close()
            except sqlite3.Error as e:
                info["note"] = f"sqlite refused the edit: {e}"
        self.restart(nid)
        # wait to see whether it stays up
        t_end = now() + 3.0
        while now() < t_end and node.alive():
            time.sleep(0.05)
        if node.alive():
            info["outcome"] = "started"
        else:
            tail = self.c.log_tail(nid)
            info["outcome"] = "refused" if node.state == "refused" else "exited"
            msg = [ln for ln in tail.splitlines() if "error" in ln.lower() or "CRITICAL" in ln]
            info["message"] = msg[-1][:400] if msg else tail[-400:]
            if node.state == "refused":
                self.refused.add(nid)
        return info

    # -- rows ---------------------------------------------------------------------------------
    # -- membership (row 18) -------------------------------------------------------------------
    def _admin(self) -> Any:
        from raftlease import LeaseClient

        live = [self.c.nodes[n].addr for n in self.c.ids if self.c.nodes[n].alive()]
        return LeaseClient(live, timeout=5.0)

    def _voters(self, ml: Any) -> dict[str, list[str]]:
        return {
            "voters": sorted(m.id for m in ml.members if not m.learner),
            "learners": sorted(m.id for m in ml.members if m.learner),
        }

    def join(self, nid: str) -> str | None:
        """Start spare ``nid`` with ``serve --join`` and wait until it answers Status. Its
        peer address for ``member add`` (the harness demux), None if it did not come up."""
        fid = self.start("join", targets=[nid])
        t0 = now()
        addr = self.c.join_node(nid)
        node = self.c.nodes[nid]
        up = False
        while now() - t0 < 15.0 and node.alive():
            s = self.c.latest.get(nid) or {}
            if s.get("ok") and s.get("inc") == node.starts:
                up = True
                break
            time.sleep(0.05)
        rec = {"op": "join", "node": nid, "ok": up, "seconds": round(now() - t0, 3)}
        self.membership.append(rec)
        self.stop(fid, "join", targets=[nid], ok=up, peer_address=addr)
        return addr if up else None

    def member_add(self, nid: str, addr: str) -> bool:
        """``member add nid=addr``: learner, catch-up, promotion (LeaseClient.add_member)."""
        from raftlease.errors import RaftLeaseError

        fid = self.start("member-add", targets=[nid], address=addr)
        t0 = now()
        rec: dict[str, Any] = {"op": "add", "node": nid, "ok": False}
        try:
            with self._admin() as client:
                ml = client.add_member(nid, addr, timeout=30.0)
            rec.update(ok=True, **self._voters(ml))
            self.c.admit(nid)
        except RaftLeaseError as e:
            rec["error"] = f"{type(e).__name__}: {e}"[:300]
            self.notes.append(f"member add {nid}: {rec['error']}")
        rec["seconds"] = round(now() - t0, 3)
        self.membership.append(rec)
        self.stop(fid, "member-add", targets=[nid], **{k: v for k, v in rec.items() if k != "op"})
        return bool(rec["ok"])

    def member_remove(self, nid: str, *, then_stop: bool = True) -> bool:
        """``member remove nid`` (a leader hands over first; the client retries on the new
        leader); on success the node leaves ``c.ids`` and, with ``then_stop``, is stopped
        (SIGTERM). The leader-lease check treats the request like a leadership transfer asked
        of ``nid``: its lease may end as soon as the request reaches it."""
        from raftlease.errors import RaftLeaseError

        lead = self.c.leader()
        fid = self.start("member-remove", targets=[nid], was_leader=nid == lead, leader=lead)
        t0 = now()
        rec: dict[str, Any] = {"op": "remove", "node": nid, "was_leader": nid == lead, "ok": False}
        try:
            with self._admin() as client:
                ml = client.remove_member(nid, timeout=30.0)
            rec.update(ok=True, leader_after=ml.leader_id or None, **self._voters(ml))
        except RaftLeaseError as e:
            rec["error"] = f"{type(e).__name__}: {e}"[:300]
            self.notes.append(f"member remove {nid}: {rec['error']}")
        rec["seconds"] = round(now() - t0, 3)
        self.membership.append(rec)
        self.stop(
            fid, "member-remove", targets=[nid], **{k: v for k, v in rec.items() if k != "op"}
        )
        if rec["ok"]:
            self.c.retire(nid)
            if then_stop and self.c.nodes[nid].alive():
                self.sleep(self.rng.uniform(0.2, 0.6))  # a removed node lingers briefly
                self.c.stop_node(nid)
        return bool(rec["ok"])

    def next_spare(self) -> str | None:
        free = [n for n in self.c.spare_ports if n not in self.c.nodes]
        return free[0] if free else None

    def grow(self) -> bool:
        """Replace-free growth by one: start the next spare with --join, member add it."""
        nid = self.next_spare()
        if nid is None:
            return False
        addr = self.join(nid)
        return addr is not None and self.member_add(nid, addr)

    def run(self, row: int | str, window: float) -> None:
        self.deadline = now() + window
        fn: Callable[[], None] = getattr(self, f"row_{row}")
        fn()

    def row_0(self) -> None:  # no faults (baseline, and the teeth tests)
        self.sleep(self.left())

    def row_1(self) -> None:
        roles = ["leader", "follower", "random"]
        i = 0
        while self.left() > 1.0:
            self.kill_restart(roles[i % 3])
            i += 1
            self.sleep(self.rng.uniform(1.5, 2.5))

    def row_2(self) -> None:
        self.kill_restart("majority")
        self.sleep(self.rng.uniform(2.0, 3.0))
        self.kill_restart("all", down_for=self.rng.uniform(0.2, 1.0))
        while self.left() > 3.0:
            self.sleep(self.rng.uniform(1.5, 2.5))
            self.kill_restart(self.rng.choice(["majority", "all"]))

    def row_3(self) -> None:
        roles = ["leader", "follower", "random"]
        fps = FAILPOINTS[:]
        self.rng.shuffle(fps)
        i = 0
        while self.left() > 1.0:
            self.failpoint_crash(roles[i % 3], fps[i % len(fps)])
            i += 1
            self.sleep(self.rng.uniform(0.8, 1.5))

    def row_4(self) -> None:
        # lose the in-flight, not-yet-fsynced batch: crash just before the fsync, on one node
        # (leader or follower), then on all nodes at once
        self.failpoint_crash("leader", "before-save")
        self.sleep(1.0)
        self.failpoint_crash("follower", "before-save")
        self.sleep(1.0)
        fid = self.start(
            "failpoint", targets=list(self.c.ids), role="all", failpoint="before-save=K*panic (all)"
        )
        specs = {}
        for n in self.c.ids:
            self.c.stop_node(n)
        for n in self.c.ids:
            spec = f"before-save={self.rng.randint(2, 10)}*panic"
            specs[n] = spec
            self.restart(n, failpoints=spec)
        t_end = now() + 4.0
        while now() < t_end and any(self.c.nodes[n].alive() for n in self.c.ids):
            time.sleep(0.05)
        for n in self.c.ids:
            if self.c.nodes[n].alive():
                self.c.stop_node(n)
        self.sleep(self.rng.uniform(0, 2 * self.E))
        for n in self.c.ids:
            self.restart(n)
        self.stop(fid, "failpoint", specs=specs)
        while self.left() > 2.5:
            self.sleep(1.0)
            self.failpoint_crash("random", "before-save")

    def row_8(self) -> None:
        kinds = CORRUPTIONS[:]
        self.rng.shuffle(kinds)
        i = 0
        self.corruptions: list[dict[str, Any]] = []
        while self.left() > 3.5 and i < len(kinds):
            if self.refused:
                break  # one refused (minority) node at a time: keep the majority
            ts = self.target("follower")
            if not ts:
                break
            fid = self.start("corrupt", targets=ts, kind=kinds[i])
            info = self.corrupt(ts[0], kinds[i])
            self.corruptions.append({"node": ts[0], **info})
            self.stop(fid, "corrupt", targets=ts, **info)
            i += 1
            self.sleep(self.rng.uniform(1.0, 2.0))

    def row_9(self) -> None:
        E, L = self.E, self.ttl
        plan = [("leader", 2 * E), ("follower", L), ("all", 0.5 * E), ("leader", 3 * L)]
        extra = [("leader", 0.5 * E), ("follower", 3 * L), ("all", 2 * E), ("leader", L)]
        self.rng.shuffle(extra)
        for how, d in plan + extra:
            if self.left() < d + 0.5:
                continue
            self.pause(how, d)
            self.sleep(self.rng.uniform(0.8, 1.5))

    def row_10(self) -> None:
        # one shared gate: the first client that passes a positive validity check while the
        # gate file exists takes it (unlink is atomic) and SIGSTOPs itself before its write
        gate = next(iter(self.gates.values()))
        while self.left() > 2.0:
            gate.write_text("pause")
            t_end = now() + 4.0
            stopped = None
            while now() < t_end and stopped is None:
                for cid, proc in self.clients.items():
                    try:
                        if psutil.Process(proc.pid).status() == psutil.STATUS_STOPPED:
                            stopped = cid
                            break
                    except psutil.Error:
                        continue
                time.sleep(0.01)
            if stopped is None:
                gate.unlink(missing_ok=True)
                self.sleep(0.3)
                continue
            d = self.rng.uniform(1.3, 2.0) * self.ttl
            fid = self.start("client-pause", targets=[stopped], seconds=round(d, 3))
            self.paused_clients.add(stopped)
            time.sleep(d)
            os.kill(self.clients[stopped].pid, signal.SIGCONT)
            self.paused_clients.discard(stopped)
            self.stop(fid, "client-pause", targets=[stopped])
            self.sleep(self.rng.uniform(0.3, 0.8))

    def row_11(self) -> None:
        L, E = self.ttl, self.E
        plan = [
            ("isolate-leader", self.rng.uniform(2.0, 3.0) * L),
            ("isolate-follower", self.rng.uniform(0.3, 0.8) * E),
            ("bridge", self.rng.uniform(1.0, 2.0) * L),
            ("isolate-leader", self.rng.uniform(0.3, 0.8) * E),
            ("bridge-followers", self.rng.uniform(1.0, 1.5) * L),
            ("halves", self.rng.uniform(1.0, 2.0) * L),
        ]
        for shape, d in plan:
            if self.left() < min(d, 1.0) + 0.5:
                continue
            mode = self.rng.choice(["blackhole", "blackhole", "reset"])
            self.partition(shape, min(d, max(0.2, self.left() - 0.5)), mode)
            self.sleep(self.rng.uniform(1.0, 1.8))

    def row_12(self) -> None:
        while self.left() > 1.5:
            lead = self.c.leader()
            if lead is None:
                self.sleep(0.3)
                continue
            fs = [n for n in self.c.ids if n != lead]
            f = self.rng.choice(fs)
            choice = self.rng.choice(["leader->follower", "follower->leader", "partial"])
            d = min(self.rng.uniform(1.5, 3.0), self.left() - 0.5)
            if choice == "leader->follower":
                self.one_way(lead, f, d)
            elif choice == "follower->leader":
                self.one_way(f, lead, d)
            else:
                self.partition("bridge-followers", d)
            self.sleep(self.rng.uniform(0.8, 1.5))

    def row_13(self) -> None:
        while self.left() > 1.5:
            self.flaky(min(self.rng.uniform(2.0, 4.0), self.left() - 0.5))
            self.sleep(self.rng.uniform(0.3, 0.8))

    def row_14(self) -> None:
        jumps = ["+0.01", "-0.01", "+300", "-300", "+86400", "-3600", "+0.3"]
        while self.left() > 1.5:
            how = self.rng.choice(["leader", "follower", "all"])
            ts = self.target(how)
            mode = self.rng.choice(["bump", "strobe"])
            if mode == "bump":
                spec = self.rng.choice(jumps)
                fid = self.start("clock-jump", targets=ts, role=how, offset=spec)
                for n in ts:
                    self.c.set_wall_offset(n, spec)
                self.sleep(self.rng.uniform(1.5, 2.5))
                for n in ts:
                    self.c.set_wall_offset(n, "+0")
                self.stop(fid, "clock-jump", targets=ts)
            else:
                a, b = self.rng.sample(jumps, 2)
                fid = self.start("clock-strobe", targets=ts, role=how, between=[a, b], period_s=1.0)
                for k in range(3):
                    for n in ts:
                        self.c.set_wall_offset(n, a if k % 2 == 0 else b)
                    self.sleep(1.05)
                for n in ts:
                    self.c.set_wall_offset(n, "+0")
                self.stop(fid, "clock-strobe", targets=ts)
            self.sleep(0.5)

    def row_15(self) -> None:
        # nodes run at rates 1+rho / 1-rho / 1 (set at start by the runner); move the
        # leadership across fast and slow nodes, and pause a follower, under contention
        import grpc
        from raftlease.v1 import cluster_pb2, cluster_pb2_grpc

        while self.left() > 1.5:
            lead = self.c.leader()
            if lead is None:
                self.sleep(0.3)
                continue
            tgt = self.rng.choice([n for n in self.c.ids if n != lead])
            fid = self.start("transfer-leadership", targets=[lead, tgt])
            try:
                with grpc.insecure_channel(self.c.nodes[lead].addr) as ch:
                    cluster_pb2_grpc.ClusterStub(ch).TransferLeadership(
                        cluster_pb2.TransferLeadershipRequest(target_id=tgt), timeout=3.0
                    )
                ok = True
            except grpc.RpcError as e:
                ok = False
                self.notes.append(f"transfer {lead}->{tgt}: {e.code().name}")
            self.stop(fid, "transfer-leadership", ok=ok)
            self.sleep(self.rng.uniform(1.5, 2.5))
            if self.left() > 2.0 and self.rng.random() < 0.5:
                self.pause("follower", self.rng.uniform(0.5, 1.0) * self.ttl)

    def row_21(self) -> None:
        acts = [
            lambda: self.kill_restart(self.rng.choice(["leader", "follower", "random"])),
            lambda: self.failpoint_crash(self.rng.choice(["leader", "follower"])),
            lambda: self.pause(
                self.rng.choice(["leader", "follower"]),
                self.rng.choice([0.5 * self.E, 2 * self.E, self.ttl]),
            ),
            lambda: self.partition(
                self.rng.choice(["isolate-leader", "bridge", "halves"]),
                self.rng.uniform(0.5, 1.5) * self.ttl,
            ),
            lambda: self.flaky(self.rng.uniform(1.5, 3.0)),
            lambda: self.one_way(*self._rand_link(), self.rng.uniform(1.0, 2.5)),
        ]
        if any("FAKETIME_TIMESTAMP_FILE" in n.env_extra for n in self.c.nodes.values()):
            acts.append(lambda: self._jump_once())
        while self.left() > 1.5:
            self.rng.choice(acts)()
            self.sleep(self.rng.uniform(0.5, 1.5))

    def _rand_link(self) -> tuple[str, str]:
        a, b = self.rng.sample(self.c.ids, 2)
        return a, b

    def _jump_once(self) -> None:
        ts = self.target("random")
        spec = self.rng.choice(["+300", "-300", "+0.5"])
        fid = self.start("clock-jump", targets=ts, offset=spec)
        for n in ts:
            self.c.set_wall_offset(n, spec)
        self.sleep(1.5)
        for n in ts:
            self.c.set_wall_offset(n, "+0")
        self.stop(fid, "clock-jump", targets=ts)

    def row_18a(self) -> None:
        """Replace a SIGKILLed node under load: SIGKILL a member (leader or follower), start a
        spare with a new id (--join), member add it (learner, catch-up, promotion), member
        remove the dead one (never restarted). Then SIGKILL + restart an original survivor:
        the quorum now needs the new voter."""
        victim = self.target(self.rng.choice(["leader", "follower"]))
        if not victim:
            return
        dead = victim[0]
        fid = self.start("kill", targets=[dead], role="replace", restart=False)
        self.c.kill(dead)
        self.stop(fid, "kill", targets=[dead], restart=False)
        self.sleep(self.rng.uniform(0.0, 2 * self.E))
        nid = self.next_spare()
        addr = self.join(nid) if nid else None
        if nid is None or addr is None or not self.member_add(nid, addr):
            return
        self.sleep(self.rng.uniform(0.2, 0.8))
        self.member_remove(dead, then_stop=False)  # it is dead already
        self.sleep(self.rng.uniform(1.0, 1.5))
        survivors = [n for n in self.c.ids if n not in self.c.joiners]
        if survivors and self.left() > 1.0:
            n = self.rng.choice(survivors)
            fid = self.start("kill", targets=[n], role="survivor")
            self.c.kill(n)
            self.sleep(self.rng.uniform(0.5, 1.0))  # meanwhile the quorum is {other, new}
            self.restart(n)
            self.stop(fid, "kill", targets=[n])
        self.sleep(self.left())

    def row_18b(self) -> None:
        """Grow 3 -> 5 one server at a time, then shrink back to 3: the first removal takes
        whichever node leads (it hands over first), the second a random other member."""
        for _ in range(2):
            if not self.grow():
                return
            self.sleep(self.rng.uniform(0.8, 1.5))
        lead = self.c.leader()
        if lead is not None:
            self.member_remove(lead)
            self.sleep(self.rng.uniform(0.8, 1.5))
        lead = self.c.leader()
        others = [n for n in self.c.ids if n != lead]
        if others:
            self.member_remove(self.rng.choice(others))
        self.sleep(self.left())

    def row_18c(self) -> None:
        """Remove the leader under load (it hands over first), stop it; grow back to 3 with a
        spare, then remove whichever node leads again and stop it."""
        lead = self.c.wait_leader(5.0)
        if lead is None:
            return
        self.member_remove(lead)
        self.sleep(self.rng.uniform(1.0, 2.0))
        if not self.grow():
            return
        self.sleep(self.rng.uniform(1.0, 2.0))
        lead = self.c.wait_leader(5.0)
        if lead is not None:
            self.member_remove(lead)
        self.sleep(self.left())

    # -- the end ------------------------------------------------------------------------------
    def final_heal(self) -> None:
        """Heal everything: links, pauses, clocks, dead nodes, armed failpoints."""
        fid = self.start("final-heal")
        self.heal_links()
        self.disarm_transport_faults()
        for cid in list(self.paused_clients):
            proc = self.clients.get(cid)
            if proc is not None:
                os.kill(proc.pid, signal.SIGCONT)
        for g in self.gates.values():
            g.unlink(missing_ok=True)
        for nid, node in self.c.nodes.items():
            if node.state == "paused":
                self.c.resume(nid)
            if node.faketime_file.exists():
                self.c.set_wall_offset(nid, "+0")
            if nid not in self.c.ids:
                continue  # removed (or never admitted) nodes stay as they are
            if node.alive() and node.failpoints:
                self.c.stop_node(nid)
            if not node.alive() and nid not in self.refused and node.state != "refused":
                self.c.start_node(nid)
        self.stop(fid, "final-heal", refused=sorted(self.refused))
