"""The checkers: ME (client beliefs, plus the leader-lease exclusion reported on its own as
``leader_lease``), FT, NAL, LIV, RI over one run's files. Each returns a dict with
``verdict`` (valid / invalid / unknown), ``counts``, ``first`` (the first counterexample, or
None), ``violations`` (up to 20, for the report) and ``notes``. A check that cannot decide
says "unknown", never "valid".
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sqlite3
from collections import defaultdict
from pathlib import Path
from typing import Any

RHO = 0.01
LEADER_RE = re.compile(r"\b(\S+) became leader at term (\d+)")
# raftlease.node logs this once per durable vote, after the fsync (NEEDS.md hook 1)
VOTE_RE = re.compile(r"\b(\S+) voted for (\S+) at term (\d+) \(persisted\)[ \t]*$", re.M)
START_RE = re.compile(r"^=== harness: start #(\d+) ", re.M)
NO_VOTES = (
    "no '<id> voted for <id> at term N (persisted)' line in any node log: vote durability unknown"
)


def result(
    violations: list[dict[str, Any]],
    counts: dict[str, Any],
    notes: list[str],
    unknown: str | None = None,
) -> dict[str, Any]:
    if violations:
        verdict = "invalid"
    elif unknown:
        verdict = "unknown"
        notes = [*notes, unknown]
    else:
        verdict = "valid"
    return {
        "verdict": verdict,
        "counts": counts,
        "first": violations[0] if violations else None,
        "violations": violations[:20],
        "notes": notes,
    }


# ---------------------------------------------------------------------------------------------
# ME: belief exclusion


def check_me(history: list[dict[str, Any]]) -> dict[str, Any]:
    beliefs = [e for e in history if e.get("f") == "belief"]
    acks = [e for e in history if e.get("f") == "acquire" and e["type"] == "ok"]
    have = {(e["process"], e["token"]) for e in beliefs}
    missing = [(e["process"], e["token"]) for e in acks if (e["process"], e["token"]) not in have]
    by_name: dict[str, list[dict[str, Any]]] = defaultdict(list)
    empty = 0
    for b in beliefs:
        if b["end"] <= b["start"]:
            empty += 1
            continue
        by_name[b["name"]].append(b)
    violations = []
    for name, bs in by_name.items():
        bs.sort(key=lambda b: b["start"])
        cur = None
        for b in bs:
            if cur is not None and b["start"] < cur["end"] and b["token"] != cur["token"]:
                violations.append(
                    {
                        "name": name,
                        "a": {k: cur[k] for k in ("process", "token", "start", "end")},
                        "b": {k: b[k] for k in ("process", "token", "start", "end")},
                        "overlap_s": round(min(cur["end"], b["end"]) - b["start"], 4),
                        "t": b["start"],
                    }
                )
            if cur is None or b["end"] > cur["end"]:
                cur = b
    # self-check of the harness: every positive validity check of a correct client must lie
    # inside the belief interval recorded for that grant
    bel = {(b["process"], b["token"]): b for b in beliefs}
    inconsistent = []
    for e in history:
        if e.get("f") == "check" and e.get("valid"):
            b = bel.get((e["process"], e["token"]))
            if (
                b is not None
                and not b.get("broken")
                and not (b["start"] <= e.get("t_check", e["t"]) <= b["end"])
            ):
                inconsistent.append({"process": e["process"], "token": e["token"], "t": e["t"]})
    counts = {
        "beliefs": len(beliefs),
        "empty_beliefs": empty,
        "names": len(by_name),
        "acks_without_belief": len(missing),
        "checks_outside_belief": len(inconsistent),
    }
    notes = [
        "belief = [ack, min(valid_until, lost, release call)), valid_until = send + "
        "ttl*(1-rho)/(1+rho) as kept by LeaseClient, converted to the reference clock"
    ]
    unknown = None
    if inconsistent:
        unknown = (
            f"harness self-check failed: {len(inconsistent)} positive validity checks "
            f"lie outside their recorded belief, first {inconsistent[0]}"
        )
    elif missing:
        unknown = f"{len(missing)} acknowledged grants have no recorded belief (client died?)"
    elif not beliefs:
        unknown = "no lease was ever granted: nothing to check"
    return result(violations, counts, notes, unknown)


# ---------------------------------------------------------------------------------------------
# ME, leader leases: at most one node believes its leader lease is valid at any instant


def _revocations(
    history: list[dict[str, Any]],
) -> tuple[
    dict[tuple[str, int], float], dict[str, list[tuple[float, float]]], set[tuple[str, int]]
]:
    """Harness actions after which a node may legitimately stop believing its lease early.

    - ``node-stop`` (SIGKILL/SIGTERM by the harness): the incarnation believes nothing after
      the signal; ``t_signal`` is taken before the signal is sent.
    - ``transfer-leadership`` (row 15): the leader drops its lease as soon as it processes the
      request (``lead_transferee`` set), which is after the harness sent it (nemesis start)
      and before the RPC returned (nemesis stop).
    - ``member-remove`` (row 18): removing the leader makes it hand over first (a transfer),
      so the node being removed is treated like the node asked to transfer, over the whole
      MemberRemove call (the client's retry on the new leader included).
    - ``node-exit`` without a harness signal (failpoint panic, refusal, crash): died at an
      unknown instant; handled by the caller from that incarnation's last answer.
    """
    signalled: dict[tuple[str, int], float] = {}
    self_exit: set[tuple[str, int]] = set()
    starts: dict[int, dict[str, Any]] = {}
    transfers: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for e in history:
        f = e.get("f")
        if e.get("process") == "cluster" and f == "node-stop" and "inc" in e:
            key = (e["node"], int(e["inc"]))
            t_sig = float(e.get("t_signal", e["t"]))
            signalled[key] = min(signalled.get(key, t_sig), t_sig)
        elif e.get("process") == "cluster" and f == "node-exit" and "inc" in e:
            self_exit.add((e["node"], int(e["inc"])))
        elif e.get("process") == "nemesis" and e.get("fault") in (
            "transfer-leadership",
            "member-remove",
        ):
            if f == "start":
                starts[e["id"]] = e
            elif f == "stop" and e["id"] in starts:
                st = starts.pop(e["id"])
                for n in (st.get("targets") or [])[:1]:  # the node asked to hand over
                    transfers[n].append((st["t"], e["t"]))
    for st in starts.values():  # no stop recorded: open until the end
        for n in (st.get("targets") or [])[:1]:
            transfers[n].append((st["t"], math.inf))
    return signalled, transfers, self_exit


def leader_lease_intervals(
    status: list[dict[str, Any]], history: list[dict[str, Any]], rho: float = RHO
) -> tuple[list[dict[str, Any]], dict[str, Any], list[dict[str, Any]]]:
    """Sound per-node intervals of leader-lease belief, in harness CLOCK_MONOTONIC.

    Returns (intervals, counts, points): ``points`` are the lease_valid samples that gave no
    interval; each still proves the node believed its lease valid at SOME instant in [t0, t1].

    A status sample sent at t0 and answered at t1 with ``lease_valid`` and
    ``lease_remaining_ms`` = r: the node read its clock at some s in [t0, t1] and believed its
    lease valid until its own clock advanced r more. r is on the node's clock, whose rate is
    within [1 - rho, 1 + rho] of real time (row 15 runs nodes at 1.01 / 0.99), so the belief
    lasts at least r / (1 + rho) >= r * (1 - rho) real seconds past s >= t0. Certain belief:
    [t1, t0 + r * (1 - rho)] (empty -> skipped). A node gives its lease up early when it
    dies or hands over leadership, so the interval is cut at the harness's signal to that
    incarnation, at the start of a transfer asked of that node (a sample sent during the
    transfer RPC is skipped), and, for an incarnation that exited by itself, at the send
    time of its last answer. Nothing else ends a valid lease early in a correct server
    (CheckQuorum needs a quorum silent for longer than the lease; a higher term needs votes of
    followers that are sticky while it runs). Only CLOCK_MONOTONIC readings are used (row
    14's wall-clock jumps cannot matter), and a SIGSTOPped node answers nothing (row 9), so it
    yields no sample.
    """
    signalled, transfers, self_exit = _revocations(history)
    last_ok_t0: dict[tuple[str, int], float] = {}
    for s in status:
        if s.get("ok") and "inc" in s:
            key = (s["node"], int(s["inc"]))
            last_ok_t0[key] = max(last_ok_t0.get(key, -math.inf), float(s.get("t0", s["t"])))
    counts: dict[str, Any] = {
        "samples": 0,
        "samples_without_lease_fields": 0,
        "lease_valid_samples": 0,
        "intervals": 0,
        "empty_skipped": 0,
        "skipped_in_transfer": 0,
        "cut_by_transfer": 0,
        "cut_by_signal": 0,
        "cut_by_self_exit": 0,
        "max_rtt_ms": 0.0,
    }
    out: list[dict[str, Any]] = []
    points: list[dict[str, Any]] = []
    for s in status:
        if not s.get("ok"):
            continue
        counts["samples"] += 1
        if "lease_valid" not in s or "t1" not in s or "inc" not in s:
            counts["samples_without_lease_fields"] += 1
            continue
        if not s["lease_valid"]:
            continue
        counts["lease_valid_samples"] += 1
        n, inc = s["node"], int(s["inc"])
        t0, t1 = float(s.get("t0", s["t"])), float(s["t1"])
        counts["max_rtt_ms"] = max(counts["max_rtt_ms"], round((t1 - t0) * 1000, 3))
        r = float(s.get("lease_remaining_ms") or 0) / 1000.0
        end = t0 + r * (1.0 - rho)
        why = "remaining"
        point = {"node": n, "inc": inc, "term": s.get("term"), "t0": t0, "t1": t1}
        if any(a <= t0 <= b for a, b in transfers.get(n, [])):
            counts["skipped_in_transfer"] += 1
            points.append({**point, "why": "sent during a leadership transfer"})
            continue
        for a, _b in transfers.get(n, []):
            if t0 < a < end:
                end, why = a, "transfer"
        t_sig = signalled.get((n, inc))
        if t_sig is not None and t_sig < end:
            end, why = t_sig, "signal"
        if (n, inc) in self_exit and (n, inc) not in signalled:
            cut = last_ok_t0.get((n, inc), t0)
            if cut < end:
                end, why = cut, "self-exit"
        if end <= t1:
            counts["empty_skipped"] += 1
            points.append({**point, "why": f"empty interval (cut: {why})"})
            continue
        if why == "transfer":
            counts["cut_by_transfer"] += 1
        elif why == "signal":
            counts["cut_by_signal"] += 1
        elif why == "self-exit":
            counts["cut_by_self_exit"] += 1
        counts["intervals"] += 1
        out.append(
            {
                "node": n,
                "inc": inc,
                "term": s.get("term"),
                "start": t1,
                "end": end,
                "t0": t0,
                "t1": t1,
                "remaining_ms": s.get("lease_remaining_ms"),
                "cut": why,
            }
        )
    return out, counts, points


def check_leader_lease(
    status: list[dict[str, Any]], history: list[dict[str, Any]], rho: float = RHO
) -> dict[str, Any]:
    ivs, counts, points = leader_lease_intervals(status, history, rho)
    ivs.sort(key=lambda i: i["start"])
    violations: list[dict[str, Any]] = []
    latest: dict[str, dict[str, Any]] = {}  # per node: its interval reaching furthest so far
    min_gap = math.inf  # closest approach of two different nodes' intervals (handover margin)
    n_viol = 0
    for b in ivs:
        for n, a in latest.items():
            if n == b["node"]:
                continue
            gap = b["start"] - a["end"]
            if gap < 0:
                n_viol += 1
                if len(violations) < 20:
                    violations.append(
                        {
                            "kind": "two nodes believe a valid leader lease at once",
                            "a": a,
                            "b": b,
                            "overlap_s": round(min(a["end"], b["end"]) - b["start"], 4),
                            "t": b["start"],
                        }
                    )
            else:
                min_gap = min(min_gap, gap)
        cur = latest.get(b["node"])
        if cur is None or b["end"] > cur["end"]:
            latest[b["node"]] = b
    # a lease_valid answer with no interval of its own (slow answer, transfer, cut) still
    # proves belief at some instant of [t0, t1]: inside another node's certain interval that
    # covers all of [t0, t1], both believed at once
    for pt in points:
        for a in ivs:
            if a["start"] > pt["t0"]:
                break
            if a["node"] != pt["node"] and a["end"] >= pt["t1"]:
                n_viol += 1
                if len(violations) < 20:
                    violations.append(
                        {
                            "kind": "a node answered lease_valid inside another node's "
                            "certain leader-lease interval",
                            "a": a,
                            "b": pt,
                            "t": pt["t0"],
                        }
                    )
                break
    violations.sort(key=lambda v: v["t"])
    counts["points_checked"] = len(points)
    counts["nodes_with_lease"] = sorted({i["node"] for i in ivs})
    counts["covered_s"] = round(sum(i["end"] - i["start"] for i in ivs), 3)
    counts["min_handover_gap_ms"] = None if min_gap == math.inf else round(min_gap * 1000, 1)
    counts["overlaps"] = n_viol
    notes = [
        "certain belief per status sample = [t1, t0 + lease_remaining_ms*(1-rho)] (t0 sent, "
        "t1 answered; remaining on the node's clock, rate within 1+-rho), cut at harness "
        "signals, leadership-transfer requests and self-exits; overlap of two nodes = violation",
        "a lease_valid answer without an interval of its own (slow, cut, during a transfer) "
        "is a violation if another node's certain interval covers its whole [t0, t1]",
    ]
    unknown = None
    if counts["samples"] and counts["samples_without_lease_fields"] == counts["samples"]:
        unknown = "status samples carry no lease_valid / t1 / inc: cannot decide"
    elif not ivs:
        unknown = (
            "no status sample gave a non-empty certain leader-lease interval "
            f"({counts['lease_valid_samples']} lease_valid samples): nothing to check"
        )
    return result(violations, counts, notes, unknown)


# ---------------------------------------------------------------------------------------------
# FT: fencing


def check_ft(history: list[dict[str, Any]], resource_log: list[dict[str, Any]]) -> dict[str, Any]:
    violations: list[dict[str, Any]] = []
    # 1. the resource never accepted a token lower than one it accepted before
    maxacc: dict[str, tuple[int, dict[str, Any]]] = {}
    rejected = 0
    for r in sorted(resource_log, key=lambda r: r["order"]):
        if not r["accepted"]:
            rejected += 1
            continue
        prev = maxacc.get(r["name"])
        if prev is not None and r["token"] < prev[0]:
            violations.append(
                {
                    "kind": "stale write accepted",
                    "name": r["name"],
                    "token": r["token"],
                    "after_token": prev[0],
                    "client": r["client"],
                    "t": r["t"],
                    "earlier_client": prev[1]["client"],
                }
            )
        if prev is None or r["token"] >= prev[0]:
            maxacc[r["name"]] = (r["token"], r)
    # 2. no accepted write lost: every write acked to a client is in the resource's log
    accepted = {(r["client"], r["wseq"]) for r in resource_log if r["accepted"]}
    acked_writes = [e for e in history if e.get("f") == "write" and e["type"] == "ok"]
    for e in acked_writes:
        if (e["process"], e["wseq"]) not in accepted:
            violations.append(
                {
                    "kind": "acknowledged write lost",
                    "client": e["process"],
                    "wseq": e["wseq"],
                    "t": e["t"],
                }
            )
    # 3. grant tokens unique and increasing in real-time order, per name
    inv: dict[tuple[str, str], float] = {}
    grants: list[dict[str, Any]] = []
    for e in history:
        if e.get("f") != "acquire":
            continue
        key = (e["process"], e["name"])
        if e["type"] == "invoke":
            inv[key] = e["t"]
        elif e["type"] == "ok":
            grants.append(
                {
                    "process": e["process"],
                    "name": e["name"],
                    "token": e["token"],
                    "invoke": inv.get(key, e["t"]),
                    "ok": e["t"],
                }
            )
    by_name: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for g in grants:
        by_name[g["name"]].append(g)
    for name, gs in by_name.items():
        seen: dict[int, dict[str, Any]] = {}
        for g in gs:
            o = seen.get(g["token"])
            if o is not None and o["process"] != g["process"]:
                violations.append(
                    {
                        "kind": "token granted twice",
                        "name": name,
                        "token": g["token"],
                        "a": o["process"],
                        "b": g["process"],
                        "t": g["ok"],
                    }
                )
            seen[g["token"]] = g
        gs_ok = sorted(gs, key=lambda g: g["ok"])
        for b in gs:
            for a in gs_ok:
                if a["ok"] >= b["invoke"]:
                    break
                if a is not b and a["token"] >= b["token"] and a["token"] != b["token"]:
                    violations.append(
                        {
                            "kind": "token regressed in real-time order",
                            "name": name,
                            "earlier": a["token"],
                            "earlier_by": a["process"],
                            "later": b["token"],
                            "later_by": b["process"],
                            "t": b["ok"],
                        }
                    )
                    break
    late = [e for e in history if e.get("f") == "resumed"]
    counts = {
        "resource_writes": len(resource_log),
        "rejected_stale": rejected,
        "acked_writes": len(acked_writes),
        "grants": len(grants),
        "client_pauses_resumed": len(late),
    }
    unknown = None if grants else "no grant acknowledged: nothing to check"
    return result(violations, counts, [], unknown)


# ---------------------------------------------------------------------------------------------
# log dumps (for NAL and RI)


def dump_node_db(path: Path) -> dict[str, Any]:
    """Read a stopped node's raft.db read-only (the WAL is merged by SQLite on read)."""
    out: dict[str, Any] = {"path": str(path), "ok": False}
    if not path.exists():
        out["error"] = "no raft.db"
        return out
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2.0)
        hs = con.execute("SELECT term, voted_for, commit_index FROM hard_state").fetchall()
        snap = con.execute("SELECT idx, term, data FROM snapshot").fetchall()
        rows = con.execute("SELECT idx, term, kind, data FROM entries ORDER BY idx").fetchall()
        con.close()
    except sqlite3.Error as e:
        out["error"] = f"sqlite: {e}"
        return out
    out["ok"] = True
    out["hard_state"] = (
        {"term": hs[0][0], "voted_for": hs[0][1], "commit": hs[0][2]} if hs else None
    )
    out["snapshot"] = (
        {"idx": snap[0][0], "term": snap[0][1], "data": bytes(snap[0][2])} if snap else None
    )
    out["entries"] = [(int(i), int(t), int(k), bytes(d)) for i, t, k, d in rows]
    return out


def replay(dump: dict[str, Any], upto: int) -> dict[str, Any]:
    """Apply a node's committed log (snapshot + entries <= upto) to a fresh LeaseTable."""
    from raftlease.core.messages import EntryKind
    from raftlease.fsm.leases import LeaseTable

    snap = dump.get("snapshot")
    table = LeaseTable.restore(snap["data"]) if snap else LeaseTable()
    base = snap["idx"] if snap else 0
    grants: dict[int, dict[str, Any]] = {}
    ended: dict[int, tuple[str, int]] = {}
    last = base
    for idx, _term, kind, data in dump["entries"]:
        if idx <= base or idx > upto:
            continue
        last = idx
        if kind != int(EntryKind.NORMAL):
            continue
        try:
            _res, events = table.apply_entry(data, idx)
        except Exception as e:
            return {"error": f"apply of entry {idx} raised {type(e).__name__}: {e}"}
        for ev in events:
            lease = ev.lease
            if ev.kind == "acquired":
                grants[lease.fencing_token] = {
                    "name": lease.name,
                    "holder": lease.holder,
                    "index": ev.index,
                }
            else:
                ended[lease.lease_id] = (ev.kind, ev.index)
    held = {r.name: r.fencing_token for r in table.leases()}
    return {
        "base": base,
        "last": last,
        "grants": grants,
        "ended": ended,
        "hash": table.state_hash(),
        "held": held,
    }


def check_nal(
    history: list[dict[str, Any]],
    dumps: dict[str, dict[str, Any]],
    commit: int | None,
    skipped: dict[str, str],
) -> dict[str, Any]:
    notes: list[str] = []
    violations: list[dict[str, Any]] = []
    if commit is None:
        return result([], {}, notes, "final commit index unknown (no leader at the end)")
    usable = {n: d for n, d in dumps.items() if d.get("ok")}
    for n, d in dumps.items():
        if not d.get("ok"):
            notes.append(f"{n}: log not readable: {d.get('error')}")
    for n, why in skipped.items():
        notes.append(f"{n}: not checked: {why}")
    if not usable:
        return result([], {}, notes, "no node log could be read")
    reps: dict[str, dict[str, Any]] = {}
    for n, d in usable.items():
        last = d["entries"][-1][0] if d["entries"] else (d["snapshot"] or {}).get("idx", 0)
        if last < commit:
            notes.append(f"{n}: log ends at {last} < final commit {commit} (lagging)")
            continue
        rep = replay(d, commit)
        if "error" in rep:
            violations.append({"kind": "replay failed", "node": n, "error": rep["error"]})
            continue
        reps[n] = rep
    if not reps:
        return result(violations, {}, notes, "no node holds the whole committed log")
    grants = [e for e in history if e.get("f") == "acquire" and e["type"] == "ok"]
    verified = compacted = 0
    for g in grants:
        tok = g["token"]
        if tok > commit:
            violations.append(
                {
                    "kind": "acked grant beyond the final commit index",
                    "token": tok,
                    "name": g["name"],
                    "commit": commit,
                    "t": g["t"],
                }
            )
            continue
        found_any = False
        for n, rep in reps.items():
            if tok <= rep["base"]:
                continue
            got = rep["grants"].get(tok)
            if got is None or got["name"] != g["name"] or got["holder"] != g["process"]:
                violations.append(
                    {
                        "kind": "acked grant missing from committed log",
                        "node": n,
                        "token": tok,
                        "name": g["name"],
                        "holder": g["process"],
                        "log_has": got,
                        "t": g["t"],
                    }
                )
            else:
                found_any = True
        if found_any:
            verified += 1
        elif all(tok <= rep["base"] for rep in reps.values()):
            compacted += 1
    # acknowledged releases: the lease must have ended in the log
    rel_ok = [e for e in history if e.get("f") == "release" and e["type"] == "ok"]
    rel_verified = 0
    for e in rel_ok:
        lid = e["lease_id"]
        for n, rep in reps.items():
            if lid <= rep["base"]:
                continue
            if lid not in rep["ended"]:
                violations.append(
                    {
                        "kind": "acked release not in committed log",
                        "node": n,
                        "lease_id": lid,
                        "name": e["name"],
                        "t": e["t"],
                    }
                )
            else:
                rel_verified += 1
                break
    # tokens per name strictly increase along the log (grants in index order)
    for n, rep in reps.items():
        lastt: dict[str, int] = {}
        for tok in sorted(rep["grants"]):
            nm = rep["grants"][tok]["name"]
            if tok <= lastt.get(nm, 0):
                violations.append({"kind": "token regressed in log", "node": n, "token": tok})
            lastt[nm] = tok
    # linearizable reads (partial WGL): a read must not miss a grant acked before it started,
    # nor return a grant whose acquire began after the read finished
    rd_violations = check_reads(history)
    violations += rd_violations
    counts = {
        "final_commit": commit,
        "nodes_checked": sorted(reps),
        "acked_grants": len(grants),
        "verified_in_log": verified,
        "compacted": compacted,
        "acked_releases": len(rel_ok),
        "releases_verified": rel_verified,
        "reads": sum(1 for e in history if e.get("f") == "read" and e["type"] == "ok"),
    }
    if compacted:
        notes.append(f"{compacted} grants lie below every node's snapshot (compacted)")
    return result(violations, counts, notes)


def check_reads(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    grants_by_name: dict[str, list[tuple[float, float, int, str]]] = defaultdict(list)
    ends: dict[int, float] = {}  # token -> earliest time it is known to have ended (release ok)
    inv: dict[tuple[str, str, str], float] = {}
    reads = []
    for e in history:
        f = e.get("f")
        if f not in ("acquire", "read", "release"):
            continue
        key = (e["process"], f, e.get("name", ""))
        if e["type"] == "invoke":
            inv[key] = e["t"]
        elif e["type"] == "ok":
            t0 = inv.get(key, e["t"])
            if f == "acquire":
                grants_by_name[e["name"]].append((t0, e["t"], e["token"], e["process"]))
            elif f == "read":
                reads.append((t0, e["t"], e["name"], e.get("token"), e["process"]))
            else:
                ends.setdefault(e["token"], e["t"])
    for t0, t1, name, tok, proc in reads:
        gs = grants_by_name.get(name, [])
        acked_before = [g for g in gs if g[1] < t0]
        if acked_before:
            newest = max(acked_before, key=lambda g: g[2])
            if tok is not None and tok < newest[2]:
                out.append(
                    {
                        "kind": "stale read",
                        "name": name,
                        "read_token": tok,
                        "newer_grant": newest[2],
                        "by": proc,
                        "t": t1,
                    }
                )
        if tok is not None:
            src = [g for g in gs if g[2] == tok]
            if src and src[0][0] > t1:
                out.append(
                    {
                        "kind": "read from the future",
                        "name": name,
                        "token": tok,
                        "by": proc,
                        "t": t1,
                    }
                )
            rel = ends.get(tok)
            if rel is not None and rel < t0:
                out.append(
                    {
                        "kind": "read returned a released grant",
                        "name": name,
                        "token": tok,
                        "by": proc,
                        "t": t1,
                    }
                )
    return out


# ---------------------------------------------------------------------------------------------
# RI: Raft invariants


def check_votes(node_logs: dict[str, str]) -> dict[str, Any]:
    """Vote durability: per (node, term) at most one distinct voted-for, over the node's whole
    log (every incarnation; ``=== harness: start #k`` markers split them). Reads the line
    raftlease.node writes after each vote's fsync: "<id> voted for <id> at term <T>
    (persisted)". A vote persisted just before a SIGKILL may miss its line; a line is never
    written for a vote that is not durable, so a double vote here is a real one."""
    violations: list[dict[str, Any]] = []
    notes: list[str] = []
    seen: dict[tuple[str, int], dict[str, dict[str, Any]]] = defaultdict(dict)
    n_votes = 0
    repeats = 0
    foreign = 0
    for n, text in node_logs.items():
        marks = [(m.start(), int(m.group(1))) for m in START_RE.finditer(text)]
        for m in VOTE_RE.finditer(text):
            voter, cand, term = m.group(1), m.group(2), int(m.group(3))
            if voter != n:
                foreign += 1
                continue
            n_votes += 1
            inc = 0
            for pos, k in marks:
                if pos > m.start():
                    break
                inc = k
            line_start = text.rfind("\n", 0, m.start()) + 1
            line = text[line_start : m.end()]
            votes = seen[(n, term)]
            if cand in votes:
                if votes[cand]["incarnation"] != inc:
                    repeats += 1
                continue
            votes[cand] = {"voted_for": cand, "incarnation": inc, "line": line[:300]}
            if len(votes) == 2:
                violations.append(
                    {
                        "kind": "two votes in one term (vote not durable across restarts?)",
                        "node": n,
                        "term": term,
                        "votes": list(votes.values()),
                    }
                )
    if foreign:
        notes.append(f"{foreign} vote lines name another voter than the log's node: ignored")
    counts = {
        "votes_seen": n_votes,
        "node_terms": len(seen),
        "same_vote_relogged_after_restart": repeats,
        "nodes_with_votes": sorted({n for n, _ in seen}),
    }
    unknown = None
    if not n_votes:
        unknown = NO_VOTES
    return result(violations, counts, notes, unknown)


def known_commit(node: str, dump: dict[str, Any], status: list[dict[str, Any]]) -> int:
    """The highest index ``node`` is known to have committed: its persisted commit index or
    the highest commit it reported in a status sample. Used for a node that left the cluster
    (row 18): its log is committed, hence comparable with the members', only up to there."""
    best = int((dump.get("hard_state") or {}).get("commit") or 0)
    for s in status:
        if s.get("node") == node and s.get("ok") and s.get("commit") is not None:
            best = max(best, int(s["commit"]))
    return best


def check_ri(
    node_logs: dict[str, str],
    status: list[dict[str, Any]],
    dumps: dict[str, dict[str, Any]],
    commit: int | None,
    exits: list[dict[str, Any]],
    allow_refusal: bool,
    commit_caps: dict[str, int] | None = None,
) -> dict[str, Any]:
    """``commit_caps``: per node that left the cluster (row 18), the highest index it is
    known to have committed (:func:`known_commit`); its entries are compared up to there only
    (its log may end early, or hold an uncommitted tail a later leader overwrote). Votes,
    leaders per term and terms are checked over every node's log, ids being never reused."""
    caps = commit_caps or {}
    violations: list[dict[str, Any]] = []
    notes: list[str] = []
    leaders: dict[int, set[str]] = defaultdict(set)
    tracebacks = 0
    for n, text in node_logs.items():
        for m in LEADER_RE.finditer(text):
            leaders[int(m.group(2))].add(m.group(1))
        # split into incarnations; a Traceback after the harness's SIGTERM marker happened
        # during graceful shutdown (reported as such, still a violation: Jepsen log pattern)
        pos = 0
        while True:
            i = text.find("Traceback (most recent call last)", pos)
            if i < 0:
                break
            tracebacks += 1
            start = text.rfind("=== harness: start", 0, i)
            term = text.rfind("=== harness: SIGTERM", 0, i)
            phase = "during graceful shutdown (after SIGTERM)" if term > start else "while serving"
            j = text.rfind("\n", 0, max(0, text.rfind("\n", 0, i)))
            violations.append(
                {
                    "kind": f"Traceback in node log {phase}",
                    "node": n,
                    "excerpt": text[j + 1 : i + 900],
                }
            )
            nxt = text.find("=== harness:", i)
            pos = nxt if nxt > 0 else len(text)
    for term, who in sorted(leaders.items()):
        if len(who) > 1:
            violations.append(
                {"kind": "two leaders in one term", "term": term, "nodes": sorted(who)}
            )
    # per-node term never decreases (status samples, across restarts)
    last: dict[str, tuple[float, int]] = {}
    for s in sorted(status, key=lambda s: s["t"]):
        if not s.get("ok"):
            continue
        n, term = s["node"], s.get("term")
        if term is None:
            continue
        prev = last.get(n)
        if prev is not None and term < prev[1]:
            violations.append(
                {"kind": "term decreased", "node": n, "from": prev[1], "to": term, "t": s["t"]}
            )
        last[n] = (s["t"], term)
    # Log Matching / State Machine Safety: committed prefixes equal on every node
    usable = {n: d for n, d in dumps.items() if d.get("ok")}
    compared = 0
    if commit is not None and len(usable) >= 2:
        logs = {}
        for n, d in usable.items():
            base = d["snapshot"]["idx"] if d.get("snapshot") else 0
            upto = min(commit, caps.get(n, commit))
            logs[n] = {
                i: (t, k, hashlib.sha256(data).hexdigest()[:16])
                for i, t, k, data in d["entries"]
                if base < i <= upto
            }
        names = sorted(logs, key=lambda n: (n in caps, n))  # a current member is the reference
        ref = names[0]
        for n in names[1:]:
            common = set(logs[ref]) & set(logs[n])
            compared += len(common)
            for i in sorted(common):
                if logs[ref][i] != logs[n][i]:
                    violations.append(
                        {
                            "kind": "committed entries differ",
                            "index": i,
                            ref: logs[ref][i],
                            n: logs[n][i],
                        }
                    )
                    break
    for e in exits:
        if e.get("unexpected"):
            violations.append({"kind": "unexpected node exit", **e})
        elif e.get("refused") and not allow_refusal:
            violations.append({"kind": "node refused to start outside a corruption row", **e})
    # vote durability: <= 1 distinct votedFor per (node, term) across restarts
    votes = check_votes(node_logs)
    violations += votes["violations"]
    notes += [x for x in votes["notes"] if x != NO_VOTES]
    counts = {
        "terms_with_leader": len(leaders),
        "max_term": max(leaders, default=0),
        "tracebacks": tracebacks,
        "entries_compared": compared,
        "status_samples": sum(1 for s in status if s.get("ok")),
        "votes_seen": votes["counts"]["votes_seen"],
        "vote_node_terms": votes["counts"]["node_terms"],
    }
    if caps:
        counts["compared_up_to_own_commit"] = dict(sorted(caps.items()))
    notes.append(
        "CommittedIsDurable (reported commit <= fsynced index) is not observable from outside"
    )
    notes.append("leader-lease exclusion is checked separately: see the leader_lease check")
    unknown = None
    if not leaders:
        unknown = "no 'became leader' line in any node log"
    elif votes["verdict"] == "unknown":
        unknown = NO_VOTES
    out = result(violations, counts, notes, unknown)
    out["vote_durability"] = {
        "verdict": votes["verdict"],
        "counts": votes["counts"],
        "first": votes["first"],
    }
    return out


# ---------------------------------------------------------------------------------------------
# LIV: from the runner's final-phase measurements


def check_liv(final: dict[str, Any]) -> dict[str, Any]:
    violations: list[dict[str, Any]] = []
    notes = list(final.get("notes", []))
    unknown = None
    st = final.get("stable_leader")
    if st is None:
        unknown = "stable-leader phase did not run"
    else:
        if not st.get("ok"):
            violations.append({"kind": "no stable leader after heal", **st})
        elif st["elected_after_s"] > st["bound_s"]:
            violations.append({"kind": "stable leader too late", **st})
    for n, h in (final.get("health") or {}).items():
        if h != "SERVING":
            violations.append({"kind": "health not SERVING", "node": n, "status": h})
    probe = final.get("dead_holder")
    if probe is None:
        unknown = unknown or "dead-holder probe did not run"
    elif not probe.get("ok"):
        violations.append({"kind": "dead holder's lease not re-acquired", **probe})
    elif probe["reacquired_after_s"] > probe["bound_s"]:
        violations.append({"kind": "dead holder's lease re-acquired too late", **probe})
    conv = final.get("convergence")
    if conv is not None and not conv.get("ok"):
        violations.append({"kind": "applied state did not converge", **conv})
    fr = final.get("final_read")
    if fr is not None and not fr.get("ok"):
        violations.append({"kind": "final read failed", **fr})
    mem = final.get("membership")
    if mem is not None:
        for op in mem.get("ops") or []:
            if not op.get("ok"):
                violations.append({"kind": f"membership change failed: {op['op']}", **op})
        if not mem.get("ok"):
            violations.append(
                {
                    "kind": "final configuration differs from the harness's member set",
                    **{k: v for k, v in mem.items() if k != "ops"},
                }
            )
    hashes = final.get("state_hashes") or {}
    if len(set(hashes.values())) > 1:
        violations.append({"kind": "applied-state hashes differ", "hashes": hashes})
    counts = {
        k: final.get(k) for k in ("stable_leader", "dead_holder", "convergence", "membership")
    }
    return result(violations, counts, notes, unknown)


def load_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)
