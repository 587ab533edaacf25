"""pytest wrappers around jepsen-style/runner.py.

The checker unit tests (synthetic histories, including the teeth of the leader-lease and
vote-durability checks: planted violations must come out invalid, clean inputs valid, and
undecidable inputs unknown) run in the fast suite; the real-process scenarios
are marked ``integration`` (each ~20-30 s): a tiny kill/restart scenario that must pass, and
two teeth tests that run a deliberately broken client / fenced resource and assert that the
ME / FT checkers report the violation.
"""

from __future__ import annotations

import importlib
import json
import socket
import socketserver
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from raftlease.testing.local import free_port

ROOT = Path(__file__).resolve().parents[2]
JDIR = ROOT / "jepsen-style"
RUNNER = JDIR / "runner.py"
sys.path.insert(0, str(JDIR))

# jepsen-style/ is a folder of scripts, not a package: load its checkers by path.
checkers: Any = importlib.import_module("jharness.checkers")


def run_runner(
    tmp_path: Path, *args: str, timeout: float = 110.0
) -> tuple[int, dict[str, Any], str]:
    proc = subprocess.run(
        [sys.executable, str(RUNNER), "--runs-dir", str(tmp_path), "--no-install", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(ROOT),
    )
    results = sorted(tmp_path.glob("*/results.json"))
    assert results, f"no results.json written\n{proc.stdout}\n{proc.stderr}"
    summary = json.loads(results[-1].read_text())
    return proc.returncode, summary, proc.stdout + proc.stderr


# ---------------------------------------------------------------------------------- unit tests
class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(4096):
            self.request.sendall(data)


def _echo_server() -> socketserver.ThreadingTCPServer:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _closed(sock: socket.socket) -> bool:
    """True once the proxy closed ``sock`` (EOF or reset), False if it is silent."""
    try:
        return sock.recv(16) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_proxy_link_state_governs_both_connections_of_a_link() -> None:
    # A directed link proxies the gRPC connection AND the plain-TCP peer link: one state
    # (blackhole, heal, reset) acts on both, and both count into the link's stats.
    proxy: Any = importlib.import_module("jharness.proxy")
    grpc_target, tcp_target = _echo_server(), _echo_server()
    hub = proxy.ProxyHub(seed=1)
    port = free_port()
    tcp_port = free_port(avoid=[port])
    try:
        hub.add_link(
            "a",
            "b",
            port,
            grpc_target.server_address[1],
            tcp_port=tcp_port,
            tcp_target_port=tcp_target.server_address[1],
        )
        conns = {}
        for kind, p in (("grpc", port), ("tcp", tcp_port)):
            sock = socket.create_connection(("127.0.0.1", p), timeout=2.0)
            sock.sendall(b"hello")
            assert sock.recv(16) == b"hello"
            conns[kind] = sock
        st = hub.stats()["a->b"]
        assert st["grpc"]["conns"] == st["tcp"]["conns"] == 1
        assert st["tcp"]["fwd"] == 10  # both directions of the TCP link's connection
        hub.set("a", "b", mode="blackhole")
        for sock in conns.values():
            sock.settimeout(0.3)
            sock.sendall(b"lost")
            assert not _closed(sock)  # silent: the bytes went nowhere
        assert hub.stats()["a->b"]["tcp"]["dropped"] == 4
        hub.set("a", "b", mode="pass")  # heal: connections that lost bytes are closed
        for sock in conns.values():
            sock.settimeout(2.0)
            assert _closed(sock)
            sock.close()
        hub.set("a", "b", mode="reset")  # new connections on either port are closed at once
        for p in (port, tcp_port):
            with socket.create_connection(("127.0.0.1", p), timeout=2.0) as sock:
                assert _closed(sock)
        assert hub.stats()["a->b"]["tcp"]["conns"] == 2
    finally:
        hub.close()
        for server in (grpc_target, tcp_target):
            server.shutdown()
            server.server_close()


def _belief(p: str, tok: int, a: float, b: float, name: str = "x") -> dict[str, Any]:
    return {
        "t": b,
        "process": p,
        "type": "info",
        "f": "belief",
        "name": name,
        "token": tok,
        "start": a,
        "end": b,
    }


def _ack(p: str, tok: int, t: float, name: str = "x") -> list[dict[str, Any]]:
    return [
        {"t": t - 0.01, "process": p, "type": "invoke", "f": "acquire", "name": name},
        {
            "t": t,
            "process": p,
            "type": "ok",
            "f": "acquire",
            "name": name,
            "token": tok,
            "lease_id": tok,
        },
    ]


def test_me_detects_overlap_and_accepts_disjoint() -> None:
    h = (
        _ack("c1", 5, 1.0)
        + _ack("c2", 9, 2.5)
        + [_belief("c1", 5, 1.0, 2.0), _belief("c2", 9, 2.5, 3.0)]
    )
    assert checkers.check_me(h)["verdict"] == "valid"
    h2 = (
        _ack("c1", 5, 1.0)
        + _ack("c2", 9, 1.5)
        + [_belief("c1", 5, 1.0, 2.0), _belief("c2", 9, 1.5, 3.0)]
    )
    r = checkers.check_me(h2)
    assert r["verdict"] == "invalid"
    assert r["first"]["overlap_s"] == pytest.approx(0.5)


def test_me_unknown_without_beliefs_or_with_missing_belief() -> None:
    assert checkers.check_me([])["verdict"] == "unknown"
    assert checkers.check_me(_ack("c1", 5, 1.0))["verdict"] == "unknown"


def test_ft_flags_stale_accept_lost_write_and_token_regression() -> None:
    h = _ack("c1", 5, 1.0) + _ack("c2", 9, 2.0)
    log = [
        {
            "order": 1,
            "t": 1.1,
            "name": "x",
            "token": 5,
            "client": "c1",
            "wseq": 1,
            "accepted": True,
            "max_before": 0,
        },
        {
            "order": 2,
            "t": 2.1,
            "name": "x",
            "token": 9,
            "client": "c2",
            "wseq": 1,
            "accepted": True,
            "max_before": 5,
        },
    ]
    assert checkers.check_ft(h, log)["verdict"] == "valid"
    stale = [
        *log,
        {
            "order": 3,
            "t": 3.0,
            "name": "x",
            "token": 5,
            "client": "c1",
            "wseq": 2,
            "accepted": True,
            "max_before": 9,
        },
    ]
    assert checkers.check_ft(h, stale)["first"]["kind"] == "stale write accepted"
    lost = [
        *h,
        {"t": 4.0, "process": "c2", "type": "ok", "f": "write", "name": "x", "token": 9, "wseq": 7},
    ]
    assert checkers.check_ft(lost, log)["first"]["kind"] == "acknowledged write lost"
    regress = _ack("c1", 9, 1.0) + _ack("c2", 5, 2.0)
    assert checkers.check_ft(regress, log)["verdict"] == "invalid"


def test_reads_check_flags_stale_read() -> None:
    h = (
        _ack("c1", 5, 1.0)
        + _ack("c2", 9, 2.0)
        + [
            {"t": 3.0, "process": "c3", "type": "invoke", "f": "read", "name": "x"},
            {"t": 3.1, "process": "c3", "type": "ok", "f": "read", "name": "x", "token": 5},
        ]
    )
    out = checkers.check_reads(h)
    assert out
    assert out[0]["kind"] == "stale read"


def test_ri_flags_two_leaders_in_a_term_and_term_regression() -> None:
    logs = {"n1": "n1 became leader at term 3\n", "n2": "n2 became leader at term 3\n"}
    r = checkers.check_ri(logs, [], {}, None, [], False)
    assert r["first"]["kind"] == "two leaders in one term"
    status = [
        {"t": 1.0, "node": "n1", "ok": True, "term": 4},
        {"t": 2.0, "node": "n1", "ok": True, "term": 2},
    ]
    r = checkers.check_ri({"n1": "n1 became leader at term 4\n"}, status, {}, None, [], False)
    assert r["first"]["kind"] == "term decreased"


# ------------------------------------------- teeth: leader-lease exclusion and vote durability
def _st(
    node: str, t0: float, rtt: float, rem_ms: int, valid: bool = True, inc: int = 1
) -> dict[str, Any]:
    """One status.jsonl sample as the poller writes it."""
    return {
        "t": t0,
        "t0": t0,
        "t1": t0 + rtt,
        "node": node,
        "inc": inc,
        "state": "up",
        "ok": True,
        "role": "leader" if valid else "follower",
        "term": 3,
        "lease_valid": valid,
        "lease_remaining_ms": rem_ms if valid else 0,
    }


def _cluster_ev(f: str, t: float, **kw: Any) -> dict[str, Any]:
    return {"t": t, "process": "cluster", "type": "info", "f": f, **kw}


def _nem(f: str, t: float, fid: int, fault: str, **kw: Any) -> dict[str, Any]:
    return {"t": t, "process": "nemesis", "type": "info", "f": f, "fault": fault, "id": fid, **kw}


def test_leader_lease_teeth_overlap_is_invalid_handover_is_valid() -> None:
    # n1 leads until ~1.15, n2 takes over from 1.30: disjoint certain intervals
    ok = [_st("n1", 1.0 + 0.1 * k, 0.002, 140) for k in range(2)]
    ok += [_st("n2", 1.3 + 0.1 * k, 0.002, 140) for k in range(3)]
    ok.append(_st("n3", 1.3, 0.002, 0, valid=False))
    r = checkers.check_leader_lease(ok, [])
    assert r["verdict"] == "valid", r
    assert r["counts"]["intervals"] == 5
    assert r["counts"]["nodes_with_lease"] == ["n1", "n2"]
    assert r["counts"]["min_handover_gap_ms"] > 0
    # n2 certainly believes from 1.202 while n1 certainly believes until 1.1 + 0.1386
    bad = [*ok, _st("n2", 1.2, 0.002, 140)]
    r = checkers.check_leader_lease(bad, [])
    assert r["verdict"] == "invalid"
    v = r["first"]
    assert {v["a"]["node"], v["b"]["node"]} == {"n1", "n2"}
    assert v["overlap_s"] == pytest.approx(1.1 + 0.14 * 0.99 - 1.202, abs=1e-6)


def test_leader_lease_uses_sound_intervals_only() -> None:
    # remaining is on the node's clock: the margin rho is taken off (0.99 * 140 ms), and the
    # interval starts at the answer, so an answer just after the other's bound is no overlap
    a = _st("n1", 1.0, 0.001, 140)  # certain until 1.0 + 0.1386
    b = _st("n2", 1.137, 0.0017, 140)  # certain from 1.1387
    assert checkers.check_leader_lease([a, b], [])["verdict"] == "valid"
    assert checkers.check_leader_lease([a, _st("n2", 1.137, 0.0010, 140)], [])["verdict"] == (
        "invalid"
    )
    # a slow answer (RTT >= the remaining time) gives no certain interval at all
    slow = _st("n2", 1.05, 0.2, 140)
    r = checkers.check_leader_lease([a, slow], [])
    assert r["verdict"] == "valid"
    assert r["counts"]["empty_skipped"] == 1


def test_leader_lease_cut_at_transfer_signal_and_self_exit() -> None:
    a = _st("n1", 1.0, 0.002, 140)
    b = _st("n2", 1.06, 0.002, 140)  # overlaps a's 1.0..1.1386 unless n1 gave its lease up
    assert checkers.check_leader_lease([a, b], [])["verdict"] == "invalid"
    transfer = [
        _nem("start", 1.03, 7, "transfer-leadership", targets=["n1", "n2"]),
        _nem("stop", 1.09, 7, "transfer-leadership", ok=True),
    ]
    during = _st("n1", 1.05, 0.002, 140)  # sent during the transfer RPC: skipped
    r = checkers.check_leader_lease([a, during, b], transfer)
    assert r["verdict"] == "valid", r
    assert r["counts"]["cut_by_transfer"] == 1
    assert r["counts"]["skipped_in_transfer"] == 1
    # a transfer asked of the OTHER node cuts nothing
    other = [
        _nem("start", 1.03, 8, "transfer-leadership", targets=["n3", "n2"]),
        _nem("stop", 1.04, 8, "transfer-leadership", ok=False),
    ]
    assert checkers.check_leader_lease([a, b], other)["verdict"] == "invalid"
    killed = [_cluster_ev("node-stop", 1.051, node="n1", inc=1, signal="SIGKILL", t_signal=1.05)]
    r = checkers.check_leader_lease([a, b], killed)
    assert r["verdict"] == "valid"
    assert r["counts"]["cut_by_signal"] == 1
    # the kill of an EARLIER incarnation does not cut this one
    old = [_cluster_ev("node-stop", 0.5, node="n1", inc=0, signal="SIGKILL", t_signal=0.5)]
    assert checkers.check_leader_lease([a, b], old)["verdict"] == "invalid"
    # died by itself (failpoint panic) after its last answer: cut at that answer's send time
    a2 = _st("n1", 1.02, 0.002, 140)
    crashed = [_cluster_ev("node-exit", 1.2, node="n1", inc=1, code=137, failpoint=True)]
    r = checkers.check_leader_lease([a, a2, b], crashed)
    assert r["verdict"] == "valid"
    assert r["counts"]["cut_by_self_exit"] == 1


def test_leader_lease_points_without_interval_still_count() -> None:
    # n2 answered lease_valid while n1 certainly held its lease; n2's own interval is cut away
    # (a transfer was asked of n2), but the answer alone proves n2 believed at that instant
    a = _st("n1", 1.0, 0.002, 140)  # certain 1.002 .. 1.1386
    transfer_n2 = [
        _nem("start", 1.03, 9, "transfer-leadership", targets=["n2", "n3"]),
        _nem("stop", 1.09, 9, "transfer-leadership", ok=True),
    ]
    r = checkers.check_leader_lease([a, _st("n2", 1.05, 0.002, 140)], transfer_n2)
    assert r["verdict"] == "invalid"
    assert r["first"]["b"]["node"] == "n2"
    assert r["counts"]["points_checked"] == 1
    # the old leader answering during its own transfer, before the new leader's interval: fine
    transfer_n1 = [
        _nem("start", 1.03, 9, "transfer-leadership", targets=["n1", "n2"]),
        _nem("stop", 1.09, 9, "transfer-leadership", ok=True),
    ]
    old = _st("n1", 1.04, 0.002, 140)
    new = _st("n2", 1.06, 0.002, 140)
    assert checkers.check_leader_lease([a, old, new], transfer_n1)["verdict"] == "valid"
    # ... but answering valid AFTER the new leader's certain interval began is caught
    late = _st("n1", 1.07, 0.002, 140)
    r = checkers.check_leader_lease([a, old, new, late], transfer_n1)
    assert r["verdict"] == "invalid"
    assert r["first"]["b"]["node"] == "n1"


def test_leader_lease_unknown_when_it_cannot_decide() -> None:
    assert checkers.check_leader_lease([], [])["verdict"] == "unknown"
    old_format = [{"t": 1.0, "node": "n1", "ok": True, "role": "leader", "term": 2}]
    assert checkers.check_leader_lease(old_format, [])["verdict"] == "unknown"
    never_valid = [_st("n1", 1.0, 0.002, 0, valid=False)]
    assert checkers.check_leader_lease(never_valid, [])["verdict"] == "unknown"


def _vote(node: str, cand: str, term: int) -> str:
    stamp = f"2026-12-01 07:51:13,725 {node} INFO raftlease.node:"
    return f"{stamp} {node} voted for {cand} at term {term} (persisted)\n"


def test_votes_teeth_double_vote_across_restart_is_invalid() -> None:
    good = {
        "n1": "=== harness: start #1 of n1 at t=1.000 failpoints='' ===\n"
        + _vote("n1", "n3", 1)
        + _vote("n1", "n1", 3)
        + "=== harness: start #2 of n1 at t=5.000 failpoints='' ===\n"
        + _vote("n1", "n1", 3)  # the same vote again after a restart: fine
        + _vote("n1", "n2", 4),
        "n2": "=== harness: start #1 of n2 at t=1.000 failpoints='' ===\n"
        + _vote("n2", "n3", 1)
        + "2026-12-01 07:51:13,7 n2 INFO raftlease.node: n2 voted for n1 at ter",  # torn
    }
    r = checkers.check_votes(good)
    assert r["verdict"] == "valid", r
    assert r["counts"]["votes_seen"] == 5
    assert r["counts"]["same_vote_relogged_after_restart"] == 1
    bad = dict(good)
    bad["n1"] = good["n1"] + _vote("n1", "n3", 4)  # term 4 again, another candidate
    r = checkers.check_votes(bad)
    assert r["verdict"] == "invalid"
    assert r["first"]["node"] == "n1"
    assert r["first"]["term"] == 4
    assert [v["voted_for"] for v in r["first"]["votes"]] == ["n2", "n3"]
    assert [v["incarnation"] for v in r["first"]["votes"]] == [2, 2]
    # and RI reports it, with the sub-check verdict alongside
    leaders = "n3 became leader at term 1\n"
    ri = checkers.check_ri({**bad, "n3": leaders}, [], {}, None, [], False)
    assert ri["verdict"] == "invalid"
    assert ri["first"]["kind"].startswith("two votes in one term")
    assert ri["vote_durability"]["verdict"] == "invalid"
    ri = checkers.check_ri({**good, "n3": leaders}, [], {}, None, [], False)
    assert ri["verdict"] == "valid", ri
    assert ri["counts"]["votes_seen"] == 5


def test_votes_unknown_without_vote_lines() -> None:
    logs = {"n1": "n1 became leader at term 1\n", "n2": ""}
    assert checkers.check_votes(logs)["verdict"] == "unknown"
    ri = checkers.check_ri(logs, [], {}, None, [], False)
    assert ri["verdict"] == "unknown"
    assert ri["vote_durability"]["verdict"] == "unknown"


# ------------------------------------------------- membership (row 18): checkers know it
def test_leader_lease_cut_at_member_remove_of_the_leader() -> None:
    # removing the leader makes it hand over first: like a transfer asked of that node
    a = _st("n1", 1.0, 0.002, 140)
    b = _st("n2", 1.06, 0.002, 140)
    removal = [
        _nem("start", 1.03, 3, "member-remove", targets=["n1"], was_leader=True),
        _nem("stop", 1.05, 3, "member-remove", targets=["n1"], ok=True),
    ]
    r = checkers.check_leader_lease([a, b], removal)
    assert r["verdict"] == "valid", r
    assert r["counts"]["cut_by_transfer"] == 1
    # removing ANOTHER node cuts nothing of n1's lease
    other = [
        _nem("start", 1.03, 4, "member-remove", targets=["n3"]),
        _nem("stop", 1.04, 4, "member-remove", targets=["n3"], ok=True),
    ]
    assert checkers.check_leader_lease([a, b], other)["verdict"] == "invalid"


def _dump(entries: list[tuple[int, int, bytes]], commit: int = 0) -> dict[str, Any]:
    return {
        "ok": True,
        "hard_state": {"term": 2, "voted_for": None, "commit": commit},
        "snapshot": None,
        "entries": [(i, t, 0, d) for i, t, d in entries],
    }


def test_ri_compares_a_removed_node_only_up_to_its_own_commit() -> None:
    logs = {"n1": "n1 became leader at term 1\n", "n2": _vote("n2", "n1", 1), "n4": ""}
    common = [(1, 1, b"a"), (2, 1, b"b")]
    members = {"n1": _dump([*common, (3, 2, b"c")]), "n4": _dump([*common, (3, 2, b"c")])}
    # n2 left after committing 2; its uncommitted index 3 was overwritten by a later leader
    gone = _dump([*common, (3, 1, b"x")], commit=2)
    status = [{"t": 1.0, "node": "n2", "ok": True, "term": 1, "commit": 1}]
    cap = checkers.known_commit("n2", gone, status)
    assert cap == 2
    r = checkers.check_ri(logs, status, {**members, "n2": gone}, 3, [], False, {"n2": cap})
    assert r["verdict"] == "valid", r
    assert r["counts"]["compared_up_to_own_commit"] == {"n2": 2}
    # without the cap the tail counts as committed and differs: caught
    r = checkers.check_ri(logs, status, {**members, "n2": gone}, 3, [], False)
    assert r["first"]["kind"] == "committed entries differ"
    # a divergence inside its committed prefix is caught with the cap too
    bad = _dump([(1, 1, b"a"), (2, 1, b"Z")], commit=2)
    r = checkers.check_ri(logs, status, {**members, "n2": bad}, 3, [], False, {"n2": 2})
    assert r["first"]["kind"] == "committed entries differ"


def test_liv_flags_failed_membership_change_and_wrong_final_configuration() -> None:
    stable = {"ok": True, "bound_s": 2.2, "elected_after_s": 0.1}
    probe = {"ok": True, "reacquired_after_s": 1.5, "bound_s": 3.2}
    ok_ops = [{"op": "add", "node": "n4", "ok": True}, {"op": "remove", "node": "n3", "ok": True}]
    good = {"ok": True, "expected_voters": ["n1", "n2", "n4"], "voters": ["n1", "n2", "n4"]}
    final = {"stable_leader": stable, "dead_holder": probe, "membership": {**good, "ops": ok_ops}}
    assert checkers.check_liv(final)["verdict"] == "valid"
    failed = [*ok_ops, {"op": "remove", "node": "n1", "ok": False, "error": "ABORTED"}]
    final["membership"] = {**good, "ops": failed}
    r = checkers.check_liv(final)
    assert r["first"]["kind"] == "membership change failed: remove"
    final["membership"] = {**good, "ok": False, "voters": ["n1", "n2", "n3", "n4"], "ops": ok_ops}
    r = checkers.check_liv(final)
    assert r["first"]["kind"] == "final configuration differs from the harness's member set"


# ---------------------------------------------------------------------- real-process scenarios
@pytest.mark.integration
def test_tiny_kill_restart_scenario_passes(tmp_path: Path) -> None:
    rc, s, out = run_runner(tmp_path, "--rows", "1", "--seed", "5", "--duration", "6")
    verdicts = {k: v["verdict"] for k, v in s["checks"].items()}
    assert rc == 0, f"{verdicts}\n{out[-3000:]}"
    assert s["faults_injected"] >= 2
    assert (Path(s["dir"]) / "report.html").exists()
    # the nodes' plain-TCP peer links went through the link proxies, never around them
    for when in ("start", "end"):
        assert s["links_checks"][when]["ok"], s["links_checks"]
        assert not s["links_checks"][when]["bypasses"]
    assert sum(v["tcp"]["fwd"] for v in s["proxy_stats"].values()) > 0


@pytest.mark.integration
def test_teeth_me_catches_client_holding_past_its_lease(tmp_path: Path) -> None:
    rc, s, out = run_runner(
        tmp_path,
        "--rows",
        "0",
        "--seed",
        "6",
        "--duration",
        "6",
        "--broken-client",
        "hold-past",
        "--expect-invalid",
        "ME",
    )
    assert s["checks"]["ME"]["verdict"] == "invalid", out[-3000:]
    assert s["checks"]["ME"]["first"]["overlap_s"] > 0
    assert rc == 0, out[-3000:]


@pytest.mark.integration
def test_teeth_ft_catches_resource_accepting_stale_tokens(tmp_path: Path) -> None:
    rc, s, out = run_runner(
        tmp_path,
        "--rows",
        "10",
        "--seed",
        "7",
        "--duration",
        "9",
        "--broken-resource",
        "--expect-invalid",
        "FT",
    )
    assert s["checks"]["FT"]["verdict"] == "invalid", out[-3000:]
    assert s["checks"]["FT"]["first"]["kind"] == "stale write accepted"
    assert rc == 0, out[-3000:]
