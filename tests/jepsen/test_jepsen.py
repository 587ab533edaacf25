"""pytest wrappers around jepsen-style/runner.py.

The checker unit tests (synthetic histories) run in the fast suite; the real-process scenarios
are marked ``integration`` (each ~20-30 s): a tiny kill/restart scenario that must pass, and
two teeth tests that run a deliberately broken client / fenced resource and assert that the
ME / FT checkers report the violation.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

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


# ---------------------------------------------------------------------- real-process scenarios
@pytest.mark.integration
def test_tiny_kill_restart_scenario_passes(tmp_path: Path) -> None:
    rc, s, out = run_runner(tmp_path, "--rows", "1", "--seed", "5", "--duration", "6")
    verdicts = {k: v["verdict"] for k, v in s["checks"].items()}
    assert rc == 0, f"{verdicts}\n{out[-3000:]}"
    assert s["faults_injected"] >= 2
    assert (Path(s["dir"]) / "report.html").exists()


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
