#!/usr/bin/env python3
"""raftlease jepsen-style runner: real processes, real faults, lease-safety checkers.

    python jepsen-style/runner.py --quick              # CI suite: every listed row once
    python jepsen-style/runner.py --rows 1,9,11 --seed 7 --duration 20
    python jepsen-style/runner.py --long --seeds 10    # many-seed sweep of every row
    python jepsen-style/runner.py --rows 0 --broken-client hold-past --expect-invalid ME
    python jepsen-style/runner.py --rows 10 --broken-resource --expect-invalid FT
    python jepsen-style/runner.py --membership   # rows 18a, 18b, 18c (membership changes)

Each run writes jepsen-style/runs/<timestamp>-row<R>-s<seed>/ with history.jsonl,
status.jsonl, resource.jsonl, nodes/<id>/node.log (+ data/raft.db), results.json and
report.html. Exit status: 0 if every run passed (every "M" check valid, none unknown; with
--expect-invalid, the named checks invalid), 1 otherwise. See README.md in this folder.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from jharness import checkers, report
from jharness.cluster import FAKETIME_LIB, Cluster
from jharness.fenced import FencedResource
from jharness.nemesis import Nemesis
from jharness.util import HERE, REPO, JsonlWriter, now, read_jsonl

RHO = 0.01
TTL = 1.5  # lease TTL L used by the workload (the server's minimum is 1 s)
N_CLIENTS = 4
NAMES = ["alpha", "beta"]
# leader_lease is ME's second half (<= 1 node believes its leader lease valid at an instant),
# reported on its own so that row 10's "ME may be violated" does not cover it
CHECKS = ["ME", "leader_lease", "FT", "NAL", "LIV", "RI"]

Row = int | str  # matrix row; row 18 (membership changes) has three schedules: 18a, 18b, 18c

ROWS: dict[Row, dict[str, Any]] = {
    0: {"title": "no faults (baseline)"},
    1: {"title": "SIGKILL one node (leader/follower/random) + restart after 0-2E"},
    2: {"title": "SIGKILL majority / all + cold restart"},
    3: {
        "title": "crash at failpoints (save, vote, send, apply, snapshot)",
        "overrides": {"snapshot_entries": 20},
    },
    4: {"title": "lose the un-fsynced batch (crash before fsync) on 1 node / all"},
    8: {
        "title": "torn / corrupt WAL tail, bit flips, truncation (minority node)",
        "allow_refusal": True,
    },
    9: {"title": "pause server (SIGSTOP) leader/follower/all for 0.5E, 2E, L, 3L"},
    10: {
        "title": "pause a lease-holding CLIENT past its TTL between check and write",
        "expect": {"ME": "X"},
        "gates": True,
    },
    11: {
        "title": "partitions: isolate leader/follower, bridge, halves; short and long "
        "(until snapshot)",
        "overrides": {"snapshot_entries": 30},
    },
    12: {"title": "one-way links and partial connectivity"},
    13: {
        "title": "flaky network: delay 50-200 ms +-jitter, connection drops; message-level "
        "duplication, reordering and drops of peer messages (transport hook)",
        "transport_faults": True,
    },
    14: {
        "title": "wall-clock jumps and strobe (libfaketime, monotonic untouched)",
        "faketime": True,
    },
    15: {
        "title": "monotonic rate skew within rho (1.01 / 0.99) on nodes and clients, "
        "leadership moved across them",
        "node_rates": {"n1": 1.01, "n2": 0.99},
        "client_rates": {"c1": 1.01, "c2": 0.99},
    },
    "18a": {
        "title": "replace a SIGKILLed node under load: serve --join a new id, member add, "
        "member remove the dead one; then SIGKILL + restart a survivor",
        "spares": 1,
    },
    "18b": {
        "title": "grow 3 -> 5 (serve --join + member add, one at a time) and shrink back "
        "(member remove the leader, then another member; each stopped) while clients contend",
        "spares": 2,
    },
    "18c": {
        "title": "remove the leader under load (it hands over first), stop it; add a new node; "
        "remove the new leader again",
        "spares": 1,
    },
    21: {
        "title": "random mix of rows 1, 3, 9, 11-15",
        "faketime": True,
        "overrides": {"snapshot_entries": 40},
        "node_rates": {"n1": 1.01},
        "client_rates": {"c3": 0.99},
    },
}
QUICK_ROWS: list[Row] = [1, 2, 3, 4, 8, 9, 10, 11, 12, 13, 14, 15, "18a", 21]
MEMBERSHIP_ROWS: list[Row] = ["18a", "18b", "18c"]
ALL_ROWS: list[Row] = [*QUICK_ROWS, "18b", "18c"]


def parse_row(text: str) -> Row:
    text = text.strip()
    return int(text) if text.isdigit() else text


def row_key(row: Row) -> int:
    """An int per row for seeding (18a -> 181, ...): int rows keep their old seeds."""
    if isinstance(row, int):
        return row
    return int(row[:-1]) * 10 + ord(row[-1]) - ord("a") + 1


# ---------------------------------------------------------------------------------------------
def ensure_faketime(allow_install: bool) -> str | None:
    """Return None if libfaketime is usable, else why not. Installs it (apt) when allowed."""
    if os.path.exists(FAKETIME_LIB):
        return None
    if allow_install and os.geteuid() == 0 and shutil.which("apt-get"):
        print(
            "jepsen: row 14 needs libfaketime; installing Debian package 'faketime' "
            "(apt-get install -y faketime)",
            flush=True,
        )
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        r = subprocess.run(
            ["apt-get", "install", "-y", "-qq", "faketime"], env=env, capture_output=True, text=True
        )
        if r.returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
            subprocess.run(
                ["apt-get", "install", "-y", "-qq", "faketime"], env=env, capture_output=True
            )
    if os.path.exists(FAKETIME_LIB):
        return None
    return (
        f"libfaketime not found at {FAKETIME_LIB} and could not be installed "
        "(apt-get install faketime, as root)"
    )


def wall_clock_scan() -> str:
    """Row 14's static half: raftlease must not read the wall clock for decisions."""
    import re

    pat = re.compile(
        r"\btime\.time(_ns)?\(|datetime\.(now|utcnow|today)\(|CLOCK_REALTIME"
        r"|\btime\.localtime\(|\btime\.gmtime\("
    )
    hits = []
    for p in sorted((REPO / "raftlease").rglob("*.py")):
        if "testing" in p.parts or p.parent.name == "v1":
            continue
        for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1):
            if pat.search(line) and not line.lstrip().startswith("#"):
                hits.append(f"{p.relative_to(REPO)}:{i}")
    if hits:
        return "static scan: wall-clock reads in raftlease/: " + ", ".join(hits[:10])
    return (
        "static scan: no wall-clock reads (time.time, datetime.now, CLOCK_REALTIME) in "
        "raftlease/ outside testing/; only log timestamps use the wall clock"
    )


class Run:
    def __init__(self, row: Row, seed: int, window: float, opts: argparse.Namespace) -> None:
        self.row = row
        self.seed = seed
        self.window = window
        self.opts = opts
        self.spec = ROWS[row]
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = Path(opts.runs_dir)
        self.dir = base / f"{stamp}-row{row}-s{seed}"
        k = 1
        while self.dir.exists():
            k += 1
            self.dir = base / f"{stamp}-row{row}-s{seed}-{k}"
        self.dir.mkdir(parents=True)
        self.rng = random.Random(seed * 1000 + row_key(row))
        self.final: dict[str, Any] = {"notes": []}
        self.clients: dict[str, subprocess.Popen[bytes]] = {}
        self.gates: dict[str, Path] = {}
        # Cluster.check_links after start-up and at the end: the proxies carry the TCP links
        self.links_checks: dict[str, dict[str, Any]] = {}

    # -- phases -----------------------------------------------------------------------------
    def execute(self) -> dict[str, Any]:
        t_begin = now()
        self.hist = JsonlWriter(self.dir / "history-harness.jsonl")
        self.hist.write(
            {
                "t": t_begin,
                "process": "harness",
                "type": "info",
                "f": "run-start",
                "row": self.row,
                "seed": self.seed,
                "window": self.window,
            }
        )
        skip = None
        if self.spec.get("faketime"):
            skip = ensure_faketime(not self.opts.no_install)
        node_env: dict[str, dict[str, str]] = {}
        for n, r in (self.spec.get("node_rates") or {}).items():
            node_env.setdefault(n, {})["RAFTLEASE_CLOCK_RATE"] = str(r)
        self.resource = FencedResource(
            str(self.dir / "resource.jsonl"), broken=self.opts.broken_resource
        )
        self.cluster = Cluster(
            self.dir,
            seed=self.seed,
            history=self.hist,
            overrides=self.spec.get("overrides"),
            node_env=node_env,
            spares=int(self.spec.get("spares", 0)),
            faketime_nodes=("n1", "n2", "n3") if self.spec.get("faketime") and not skip else (),
        )
        c = self.cluster
        self.nem = Nemesis(c, self.rng, self.hist, ttl=TTL)
        error = None
        try:
            if self.spec.get("transport_faults"):
                # on from the first start (the server reads it at start) until final_heal
                # restarts the nodes without it
                self.nem.arm_transport_faults()
            for nid in list(c.ids):
                c.start_node(nid)
            c.start_background()
            lead = c.wait_leader(15.0)
            if lead is None:
                raise RuntimeError("no leader elected within 15 s of start")
            links = self.links_checks["start"] = c.check_links(10.0)
            if not links["ok"]:
                # the row's faults would not cut the Raft traffic: do not run it
                raise RuntimeError(f"peer links are not all proxied: {json.dumps(links)[:600]}")
            self.start_clients()
            time.sleep(1.0)  # healthy traffic before the first fault
            self.nem.clients = self.clients
            self.nem.gates = self.gates
            if self.row == 14:
                self.final["notes"].append(wall_clock_scan())
            if skip:
                self.final["notes"].append(f"row {self.row} faults skipped: {skip}")
                self.nem.run(0, self.window)
            else:
                self.nem.run(self.row, self.window)
            self.nem.final_heal()
            self.t_heal = now()
            time.sleep(1.5)  # clients keep going briefly after the heal (Jepsen final phase)
            self.stop_clients()
            self.final_phase()
        except Exception as e:
            error = f"{type(e).__name__}: {e}"
            traceback.print_exc()
            self.final["notes"].append(f"harness error: {error}")
        finally:
            self.stop_clients()
            c.shutdown()
            self.resource.close()
            self.hist.close()
        return self.check(error, skip, time.time())

    def start_clients(self) -> None:
        c = self.cluster
        stop_file = self.dir / "clients.stop"
        self.stop_file = stop_file
        rates = self.spec.get("client_rates") or {}
        gdir = self.dir / "gates"
        gdir.mkdir(exist_ok=True)
        for i in range(N_CLIENTS):
            cid = f"c{i + 1}"
            cfg = {
                "id": cid,
                "seed": self.seed * 100 + i,
                "history": str(self.dir / f"history-{cid}.jsonl"),
                # every node address of the run, spares to be added included
                "endpoints": c.client_endpoints,
                "names": NAMES,
                "ttl": TTL,
                "duration": self.window + 60.0,
                "stop_file": str(stop_file),
                "resource_port": self.resource.port,
                "repo": str(REPO),
                "clock_rate": rates.get(cid, 1.0),
                "broken": self.opts.broken_client or "",
                "client_timeout": 2.0,
            }
            if self.spec.get("gates"):
                self.gates[cid] = gdir / "pause-next-writer"  # one gate shared by all clients
                cfg["gate_file"] = str(self.gates[cid])
            cfg_path = self.dir / f"client-{cid}.json"
            cfg_path.write_text(json.dumps(cfg, indent=1))
            env = {**os.environ, "PYTHONPATH": str(REPO)}
            env.pop("RAFTLEASE_FAILPOINTS", None)
            env.pop("RAFTLEASE_CLOCK_RATE", None)
            logf = open(self.dir / f"client-{cid}.log", "ab")  # noqa: SIM115
            self.clients[cid] = subprocess.Popen(
                [sys.executable, str(HERE / "workload.py"), str(cfg_path)],
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
            logf.close()

    def stop_clients(self) -> None:
        if not self.clients:
            return
        if hasattr(self, "stop_file"):
            self.stop_file.write_text("stop")
        for p in self.clients.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGCONT)
        deadline = now() + 3 * TTL + 6.0
        for cid, p in self.clients.items():
            try:
                p.wait(max(0.1, deadline - now()))
            except subprocess.TimeoutExpired:
                self.final["notes"].append(f"client {cid} did not stop in time: killed")
                p.kill()
                p.wait(5)
        self.clients_done = True

    # -- final phase: LIV measurements --------------------------------------------------------
    def final_phase(self) -> None:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc
        from raftlease import LeaseClient

        c = self.cluster
        E = c.e_max
        want = [n for n in c.ids if c.nodes[n].state != "refused"]
        # 1. all (non-refused) nodes up and answering
        t0 = now()
        while now() - t0 < 10.0:
            fresh = c.fresh(0.3)
            if all(n in fresh and fresh[n]["t"] > self.t_heal for n in want):
                break
            time.sleep(0.05)
        t_up = now()
        # 2. a stable leader within 3E (+ slack), keeping its term for 5E
        slack = 1.0
        bound = 3 * E + slack
        hold = 5 * E
        stable: dict[str, Any] = {
            "ok": False,
            "bound_s": round(bound, 3),
            "hold_s": hold,
            "nodes": want,
        }
        cand = None
        since = None
        t_end = t_up + bound + hold + 3.0
        while now() < t_end:
            fresh = c.fresh(0.3)
            views = {(fresh[n].get("leader"), fresh[n].get("term")) for n in want if n in fresh}
            have_all = all(n in fresh for n in want)
            view = next(iter(views)) if len(views) == 1 and have_all else None
            if view is not None and view[0] is not None:
                if view != cand:
                    cand, since = view, now()
                if now() - since >= hold:
                    stable.update(
                        ok=True,
                        leader=cand[0],
                        term=cand[1],
                        elected_after_s=round(since - t_up, 3),
                        held_s=round(now() - since, 3),
                    )
                    break
            else:
                cand, since = None, None
            time.sleep(0.05)
        if not stable["ok"]:
            stable["last_views"] = {n: c.latest.get(n) for n in want}
        self.final["stable_leader"] = stable
        # 3. health
        health = {}
        for n in want:
            try:
                with grpc.insecure_channel(c.nodes[n].addr) as ch:
                    r = health_pb2_grpc.HealthStub(ch).Check(
                        health_pb2.HealthCheckRequest(service=""), timeout=2.0
                    )
                    health[n] = health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)
            except grpc.RpcError as e:
                health[n] = f"error {e.code().name}"
        self.final["health"] = health
        # 4. a dead holder's lease is free again within L(1+rho) + 3E + slack
        probe_name = f"liv-probe-{self.seed}"
        probe: dict[str, Any] = {
            "ok": False,
            "name": probe_name,
            "bound_s": round(TTL * (1 + RHO) + 3 * E + 0.5, 3),
        }
        try:
            with (
                LeaseClient(c.endpoints, timeout=5.0) as dead,
                LeaseClient(c.endpoints, timeout=5.0) as fresh_client,
            ):
                lease = dead.acquire(probe_name, ttl=TTL, holder="dead-holder")
                lease.stop_keepalive()  # the holder "dies" right after the grant ack
                t_dead = now()
                got = fresh_client.acquire(probe_name, ttl=TTL, wait=4 * TTL, holder="successor")
                t_got = now()
                probe.update(
                    ok=True,
                    reacquired_after_s=round(t_got - t_dead, 3),
                    dead_token=lease.fencing_token,
                    new_token=got.fencing_token,
                )
                if got.fencing_token <= lease.fencing_token:
                    probe.update(ok=False, error="successor token not greater")
                got.release()
                # 5. final linearizable read
                try:
                    infos = fresh_client.leases()
                    self.final["final_read"] = {
                        "ok": True,
                        "leases": {i.name: i.fencing_token for i in infos},
                    }
                except Exception as e:
                    self.final["final_read"] = {"ok": False, "error": str(e)[:300]}
        except Exception as e:
            probe["error"] = f"{type(e).__name__}: {e}"[:400]
        self.final["dead_holder"] = probe
        # 5b. membership: the configuration the cluster reports = the harness's member set
        if c.joiners or c.removed:
            mem: dict[str, Any] = {
                "ok": False,
                "expected_voters": sorted(c.ids),
                "removed": list(c.removed),
                "ops": list(self.nem.membership),
            }
            try:
                with LeaseClient(c.endpoints, timeout=5.0) as admin:
                    ml = admin.members()
                voters = sorted(m.id for m in ml.members if not m.learner)
                learners = sorted(m.id for m in ml.members if m.learner)
                mem.update(voters=voters, learners=learners, committed=ml.committed)
                mem["ok"] = voters == sorted(c.ids) and not learners and bool(ml.committed)
            except Exception as e:
                mem["error"] = f"{type(e).__name__}: {e}"[:300]
            self.final["membership"] = mem
        # 6. final commit index and convergence of applied state
        lead = c.leader()
        commit = None
        if lead is not None:
            commit = c.latest[lead].get("commit")
        conv: dict[str, Any] = {"ok": False, "commit": commit}
        if commit is not None:
            t0 = now()
            while now() - t0 < 5.0:
                fresh = c.fresh(0.3)
                if all(n in fresh and (fresh[n].get("applied") or 0) >= commit for n in want):
                    conv.update(ok=True, after_s=round(now() - t0, 3))
                    break
                time.sleep(0.05)
            if not conv["ok"]:
                conv["applied"] = {n: (c.latest.get(n) or {}).get("applied") for n in want}
        self.final["convergence"] = conv
        self.final["final_commit"] = commit
        # 7. restarted nodes and joiners dialed their peers' TCP links through the proxies too
        self.links_checks["end"] = c.check_links(5.0)

    # -- checks & report -----------------------------------------------------------------------
    def check(self, error: str | None, skip: str | None, wall_end: float) -> dict[str, Any]:
        d = self.dir
        history: list[dict[str, Any]] = []
        for p in sorted(d.glob("history-*.jsonl")):
            history += read_jsonl(p)
        history.sort(key=lambda e: e["t"])
        with open(d / "history.jsonl", "w", encoding="utf-8") as f:
            for e in history:
                f.write(json.dumps(e, separators=(",", ":"), default=str) + "\n")
        resource_log = read_jsonl(d / "resource.jsonl")
        status = read_jsonl(d / "status.jsonl")
        c = self.cluster
        node_logs = {
            n: c.nodes[n].log_path.read_text(errors="replace")
            if c.nodes[n].log_path.exists()
            else ""
            for n in c.all_ids
        }
        commit = self.final.get("final_commit")
        dumps = {}  # current members: NAL, state hashes, RI
        others = {}  # removed (or never admitted) nodes: RI only, up to their own commit
        caps: dict[str, int] = {}
        skipped = {}
        for n in c.all_ids:
            if c.nodes[n].state == "refused":
                skipped[n] = "refused to start after corruption (kept down)"
                continue
            dmp = checkers.dump_node_db(c.nodes[n].data_dir / "raft.db")
            if n in c.ids:
                dumps[n] = dmp
                continue
            others[n] = dmp
            skipped[n] = (
                "removed from the configuration (member remove)"
                if n in c.removed
                else "never became a member"
            )
            caps[n] = checkers.known_commit(n, dmp, status)
        # applied-state hashes at the final commit, from the dumps
        hashes = {}
        if commit is not None:
            for n, dmp in dumps.items():
                if not dmp.get("ok"):
                    continue
                base = (dmp.get("snapshot") or {}).get("idx", 0)
                if base > commit:  # compacted past the comparison point after it was taken
                    self.final["notes"].append(
                        f"{n}: snapshot at {base} > final commit {commit}: no state hash"
                    )
                    continue
                rep = checkers.replay(dmp, commit)
                if "hash" in rep and rep["last"] >= commit:
                    hashes[n] = rep["hash"][:16]
        self.final["state_hashes"] = hashes
        allow_ref = bool(self.spec.get("allow_refusal"))
        results: dict[str, Any] = {
            "ME": checkers.check_me(history),
            "leader_lease": checkers.check_leader_lease(status, history, RHO),
            "FT": checkers.check_ft(history, resource_log),
            "NAL": checkers.check_nal(history, dumps, commit, skipped),
            "LIV": checkers.check_liv(self.final),
            "RI": checkers.check_ri(
                node_logs, status, {**dumps, **others}, commit, c.exits, allow_ref, caps
            ),
        }
        if error:
            for k in ("LIV",):
                if results[k]["verdict"] == "valid":
                    results[k]["verdict"] = "unknown"
                results[k]["notes"].append(f"harness error: {error}")
        expect = dict.fromkeys(CHECKS, "M")
        expect.update(self.spec.get("expect", {}))
        want_invalid = set(self.opts.expect_invalid or [])
        failed = []
        for k in CHECKS:
            v = results[k]["verdict"]
            if k in want_invalid:
                if v != "invalid":
                    failed.append(f"{k} expected invalid (teeth), got {v}")
            elif v == "unknown":
                failed.append(f"{k} unknown")
            elif v == "invalid" and expect[k] == "M":
                failed.append(f"{k} invalid")
        if skip:
            failed.append(f"row skipped: {skip}")
        for when, lc in self.links_checks.items():
            if not lc["ok"]:
                failed.append(
                    f"peer links not all proxied ({when}): no TCP traffic on "
                    f"{lc['no_tcp_traffic']}, bypasses {lc['bypasses'][:3]}"
                )
        ops = [
            e
            for e in history
            if e.get("type") in ("ok", "fail", "info") and e.get("process", "").startswith("c")
        ]
        summary = {
            "row": self.row,
            "title": self.spec["title"],
            "seed": self.seed,
            "window_s": self.window,
            "ttl_s": TTL,
            "rho": RHO,
            "e_max_s": c.e_max,
            "broken_client": self.opts.broken_client or None,
            "broken_resource": bool(self.opts.broken_resource),
            "expect": expect,
            "expect_invalid": sorted(want_invalid),
            "passed": not failed,
            "failures": failed,
            "faults_injected": self.nem.count,
            "faults_by_kind": self.nem.counts,
            "transport_faults": self.nem.transport_faults,
            "nemesis_notes": self.nem.notes,
            "corruptions": getattr(self.nem, "corruptions", []),
            "membership": self.nem.membership,
            "members_final": list(c.ids),
            "removed": list(c.removed),
            "demux_connections": dict(c.proxies.demux_hits),
            "demux_unknown": list(c.demux_unknown),
            "ops": len(ops),
            "final": dict(self.final),
            "checks": results,
            "proxy_stats": c.proxies.stats(),
            "links_checks": self.links_checks,
            "exits": c.exits,
            "reproduce": self.reproduce(),
            "dir": str(d),
        }
        with open(d / "results.json", "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=1, default=str)
        try:
            report.write_report(d, summary, history, status, resource_log)
        except Exception:
            traceback.print_exc()
            summary["failures"].append("report.html could not be written")
            summary["passed"] = False
        if summary["passed"] and not self.opts.keep_all:
            for n in c.all_ids:  # keep logs/history/report; drop the databases of passing runs
                shutil.rmtree(c.nodes[n].data_dir, ignore_errors=True)
        return summary

    def reproduce(self) -> str:
        o = self.opts
        parts = [
            "python jepsen-style/runner.py",
            f"--rows {self.row}",
            f"--seed {self.seed}",
            f"--duration {self.window:g}",
        ]
        if o.broken_client:
            parts.append(f"--broken-client {o.broken_client}")
        if o.broken_resource:
            parts.append("--broken-resource")
        if o.expect_invalid:
            parts.append("--expect-invalid " + ",".join(o.expect_invalid))
        return " ".join(parts)


def links_line(stats: dict[str, dict[str, Any]]) -> str:
    """One line on what the link proxies carried, per connection kind (gRPC set-up or
    fallback, plain-TCP link): links that carried bytes, connections, bytes forwarded."""
    parts = []
    for kind in ("tcp", "grpc"):
        have = [s[kind] for s in stats.values() if kind in s]
        used = sum(1 for k in have if k["fwd"])
        conns = sum(k["conns"] for k in have)
        fwd = sum(k["fwd"] for k in have)
        dropped = sum(k["dropped"] for k in have)
        parts.append(
            f"{kind} {used}/{len(have)} links carried {fwd} B over {conns} conns"
            f" ({dropped} B dropped)"
        )
    return "; ".join(parts)


# ---------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="CI suite: every listed row once")
    ap.add_argument("--long", action="store_true", help="many-seed sweep (see --seeds)")
    ap.add_argument(
        "--membership",
        action="store_true",
        help="membership rows only (18a, 18b, 18c); with --long: swept over --seeds",
    )
    ap.add_argument(
        "--rows", default="", help="comma-separated matrix rows (0 = no faults; 18a, 18b, 18c)"
    )
    ap.add_argument("--seed", type=int, default=None, help="base seed (default: random)")
    ap.add_argument("--seeds", type=int, default=5, help="seeds per row with --long")
    ap.add_argument(
        "--duration",
        type=float,
        default=None,
        help="nemesis window in seconds (quick: 10, long: 30, else 15)",
    )
    ap.add_argument(
        "--broken-client",
        default="",
        choices=["", "hold-past", "ignore-margin"],
        help="run a deliberately broken workload client (teeth)",
    )
    ap.add_argument(
        "--broken-resource",
        action="store_true",
        help="the fenced resource accepts stale tokens (teeth)",
    )
    ap.add_argument(
        "--expect-invalid",
        default="",
        help="checks that MUST come out invalid (teeth), e.g. ME or FT",
    )
    ap.add_argument("--runs-dir", default=str(HERE / "runs"))
    ap.add_argument("--keep-all", action="store_true", help="keep raft.db of passing runs too")
    ap.add_argument("--no-install", action="store_true", help="never apt-get install faketime")
    o = ap.parse_args(argv)
    o.expect_invalid = [x.strip() for x in o.expect_invalid.split(",") if x.strip()]
    rows: list[Row]
    if o.rows:
        rows = [parse_row(x) for x in o.rows.split(",") if x.strip()]
    elif o.membership:
        rows = MEMBERSHIP_ROWS
    elif o.long:
        rows = ALL_ROWS
    elif o.quick:
        rows = QUICK_ROWS
    else:
        rows = [0]
    for r in rows:
        if r not in ROWS:
            ap.error(f"row {r} is not implemented; rows: {', '.join(map(str, ROWS))}")
    seed = o.seed if o.seed is not None else random.randrange(1, 1_000_000)
    window = o.duration or (30.0 if o.long else 10.0 if o.quick or o.membership else 15.0)
    seeds = [seed + i for i in range(o.seeds)] if o.long else [seed]
    summaries = []
    t0 = time.time()
    for s in seeds:
        for r in rows:
            print(
                f"jepsen: row {r} ({ROWS[r]['title']}) seed {s} window {window:g}s ...", flush=True
            )
            run = Run(r, s, window, o)
            summ = run.execute()
            summaries.append(summ)
            verdicts = " ".join(f"{k}={summ['checks'][k]['verdict']}" for k in CHECKS)
            status = "PASS" if summ["passed"] else "FAIL"
            print(
                f"jepsen: {status} row {r} seed {s}: {verdicts}; faults={summ['faults_injected']}"
                f" ops={summ['ops']} ({time.time() - t0:.0f}s elapsed)",
                flush=True,
            )
            print(f"jepsen:   proxies: {links_line(summ['proxy_stats'])}", flush=True)
            if not summ["passed"]:
                print(f"jepsen:   failures: {'; '.join(summ['failures'])}", flush=True)
                for k in CHECKS:
                    first = summ["checks"][k]["first"]
                    if first and k not in o.expect_invalid:
                        print(
                            f"jepsen:   {k} first counterexample: "
                            f"{json.dumps(first, default=str)[:600]}",
                            flush=True,
                        )
                print(f"jepsen:   kept {summ['dir']}", flush=True)
                print(f"jepsen:   reproduce: {summ['reproduce']}", flush=True)
    passed = sum(1 for s in summaries if s["passed"])
    failed = len(summaries) - passed
    faults = sum(s["faults_injected"] for s in summaries)
    print(
        f"jepsen: {len(summaries)} runs, {faults} faults injected, {time.time() - t0:.0f}s",
        flush=True,
    )
    print(f"jepsen: {passed} passed, {failed} failed", flush=True)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # skip interpreter teardown: daemon threads (proxy loop, pollers) and grpc channels must
    # not turn a finished run's verdict into a crash at exit
    os._exit(code)
