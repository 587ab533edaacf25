"""The pure parts of `raftlease run`'s child checks, with a fake clock: the heartbeat line
format and the child's helper (`raftlease.heartbeat`), the heartbeat deadline, the health-check
failure count, the restart backoff with jitter, the circuit breaker's window, the health
payload bounds, and the checks on the new options."""

from __future__ import annotations

import itertools
import math
import os
import subprocess
import sys

import pytest

from raftlease import heartbeat
from raftlease.cli import main
from raftlease.client._supervise import (
    HealthChecks,
    Heartbeat,
    RestartBreaker,
    backoff_delay,
    fit_health,
)
from raftlease.client.runner import RunnerConfig, RunnerError

# -- the beat line ------------------------------------------------------------------------------


def test_parse_beat_lines() -> None:
    assert heartbeat.parse_beat("") == {}
    assert heartbeat.parse_beat("beat") == {}  # a bare beat: words without '=' are ignored
    assert heartbeat.parse_beat("queue_depth=3 last_id=991\n") == {
        "queue_depth": "3",
        "last_id": "991",
    }
    assert heartbeat.parse_beat("  ok a=1\tb=2  ") == {"a": "1", "b": "2"}
    assert heartbeat.parse_beat("a=1 a=2") == {"a": "2"}  # the later one wins
    assert heartbeat.parse_beat("=x a= url=k=v") == {"a": "", "url": "k=v"}  # split at first '='
    assert heartbeat.parse_beat("msg=two%20words pct=50%") == {"msg": "two words", "pct": "50%"}


def test_format_beat_round_trips() -> None:
    status: dict[str, object] = {"n": 3, "msg": "two words", "p": "100%", "eq": "a=b", "u": "é"}
    line = heartbeat.format_beat(status)
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert heartbeat.parse_beat(line.decode()) == {k: str(v) for k, v in status.items()}
    assert heartbeat.format_beat() == b"\n"
    assert heartbeat.format_beat({"queue_depth": 3, "last_id": 991}) == (
        b"queue_depth=3 last_id=991\n"
    )
    for bad in ("", "a b", "a=b", "a\nb"):
        with pytest.raises(ValueError, match="bad heartbeat status key"):
            heartbeat.format_beat({bad: 1})
    with pytest.raises(ValueError, match="limit is 4096"):
        heartbeat.format_beat({"big": "x" * 5000})


def test_beat_outside_raftlease_run_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(heartbeat.ENV_FD, raising=False)
    monkeypatch.delenv(heartbeat.ENV_TIMEOUT, raising=False)
    assert not heartbeat.enabled()
    assert heartbeat.beat(queue_depth=3) is False
    assert heartbeat.interval() is None


def test_beat_writes_one_line_and_never_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    r, w = os.pipe()
    try:
        monkeypatch.setenv(heartbeat.ENV_FD, str(w))
        monkeypatch.setenv(heartbeat.ENV_TIMEOUT, "1.5")
        assert heartbeat.enabled()
        assert heartbeat.interval() == pytest.approx(0.5)
        assert heartbeat.beat(queue_depth=3, last_id=991) is True
        assert heartbeat.beat() is True
        assert os.read(r, 4096) == b"queue_depth=3 last_id=991\n\n"
        # Nobody reads: the pipe fills up, and a beat is then dropped instead of blocking.
        results = [heartbeat.beat(pad="x" * 1000) for _ in range(200)]
        assert results[0] is True
        assert results[-1] is False
    finally:
        os.close(r)
        os.close(w)
    monkeypatch.setenv(heartbeat.ENV_FD, str(w))  # closed now: still no exception
    assert heartbeat.beat() is False


def test_heartbeat_module_does_not_import_grpc() -> None:
    code = "import sys, raftlease.heartbeat; print('grpc' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


# -- the heartbeat deadline ---------------------------------------------------------------------


def test_heartbeat_deadline_counts_from_start_then_from_each_beat() -> None:
    hb = Heartbeat(timeout=2.0)
    hb.start(100.0)
    assert hb.deadline() == 102.0
    assert not hb.overdue(101.9)
    assert hb.overdue(102.0)  # a child that never beats is hung after the timeout
    assert hb.take("queue_depth=3", 101.0) is True
    assert hb.deadline() == 103.0
    assert hb.silence(102.5) == pytest.approx(1.5)
    assert hb.take("queue_depth=3", 102.0) is False  # same payload: nothing to publish
    assert hb.take("", 102.5) is False  # a bare beat keeps the payload
    assert hb.status == {"queue_depth": "3"}
    assert hb.take("queue_depth=4", 103.0) is True
    assert hb.beats == 4
    hb.start(200.0)  # a restart forgets the old run's beats and status
    assert hb.status == {}
    assert hb.last_beat is None
    assert hb.deadline() == 202.0


def test_no_heartbeat_timeout_is_never_overdue() -> None:
    hb = Heartbeat(timeout=None)
    hb.start(0.0)
    assert hb.deadline() == math.inf
    assert not hb.overdue(1e12)
    assert hb.take("a=1", 5.0)  # beats still carry the status


def test_health_checks_need_retries_failures_in_a_row() -> None:
    checks = HealthChecks(retries=3)
    assert checks.result(False, "refused") is False
    assert checks.result(False, "refused") is False
    assert checks.result(True) is False  # one success resets the count
    assert checks.consecutive == 0
    assert not checks.result(False, "a")
    assert not checks.result(False, "b")
    assert checks.result(False, "c") is True
    assert checks.unhealthy
    assert checks.last_error == "c"


# -- backoff and the breaker --------------------------------------------------------------------


def test_backoff_schedule_and_jitter() -> None:
    # The first restart is immediate; from the second on: base, 2x, 4x ... capped at 30 s.
    assert [backoff_delay(n) for n in range(1, 9)] == [0, 1, 2, 4, 8, 16, 30, 30]
    assert [backoff_delay(n, base=0.1) for n in range(1, 5)] == pytest.approx([0, 0.1, 0.2, 0.4])
    assert backoff_delay(1000) == 30.0  # no overflow
    assert backoff_delay(3, base=0.0) == 0.0
    assert backoff_delay(2, u=0.5) == pytest.approx(1.1)
    assert backoff_delay(7, u=0.999) == pytest.approx(30 * 1.1998)
    assert backoff_delay(0) == 0.0  # not a restart number, but never negative
    # Jitter only stretches: never below the schedule, never above 1.2x.
    for u in (0.0, 0.25, 0.75, 0.9999):
        for n in range(1, 9):
            bare = backoff_delay(n)
            assert bare <= backoff_delay(n, u=u) <= 1.2 * bare


def test_first_restart_is_immediate_and_the_second_waits_the_delay() -> None:
    # Whatever the jitter draw: no wait (no jitter either) for the first, >= base after that.
    for u in (0.0, 0.5, 0.9999):
        for base in (0.1, 1.0, 5.0):
            assert backoff_delay(1, base, u=u) == 0.0
            assert base <= backoff_delay(2, base, u=u) <= 1.2 * base
            assert 2 * base <= backoff_delay(3, base, u=u) <= 2.4 * base


def test_a_crash_loop_never_spins() -> None:
    # The runner's use: the delay before restart number breaker.failures(now). A command that
    # dies at once, with any window: after an immediate restart the next failure waits base,
    # and the delays grow until the breaker opens.
    for window in (math.inf, 60.0):
        b = RestartBreaker(max_restarts=5, window=window)
        now, delays = 0.0, []
        while not b.failure(now):
            delays.append(backoff_delay(b.failures(now), 1.0))
            now += delays[-1] + 0.05  # the restart, then another failure 50 ms later
        assert delays == [0, 1, 2, 4, 8]
    # A window shorter than the delays: the count restarts, but two immediate restarts are
    # always more than a window apart, and between them a restart waits base.
    b = RestartBreaker(max_restarts=5, window=1.0)
    now, immediate = 0.0, []
    for _ in range(20):
        assert not b.failure(now)
        delay = backoff_delay(b.failures(now), 1.0)
        if delay == 0:
            immediate.append(now)
        now += delay + 0.05
    assert len(immediate) == 10  # every other restart
    assert all(later - earlier > 1.0 for earlier, later in itertools.pairwise(immediate))
    # A failure after a quiet window is a first failure again: restarted at once.
    b = RestartBreaker(max_restarts=5, window=10.0)
    delays = []
    for t in (0.0, 1.0, 12.0, 30.0):
        b.failure(t)
        delays.append(backoff_delay(b.failures(t)))
    assert delays == [0, 1, 0, 0]  # at 12 and 30 the earlier failures are over 10 s old


def test_breaker_opens_after_more_than_n_failures_within_the_window() -> None:
    b = RestartBreaker(max_restarts=2, window=10.0)
    assert b.failure(0.0) is False  # the first run failed: restart 1
    assert b.failure(1.0) is False  # restart 2
    assert b.failure(2.0) is True  # a third failure within 10 s: open
    assert b.failures(2.0) == 3


def test_breaker_forgets_failures_older_than_the_window() -> None:
    b = RestartBreaker(max_restarts=2, window=10.0)
    assert [b.failure(t) for t in (0.0, 6.0, 11.0, 17.0, 22.0)] == [False] * 5
    assert b.failures(22.0) == 2  # 17 and 22; 11 is more than 10 s old
    assert b.failure(22.5) is True  # 17, 22, 22.5
    assert b.failures(40.0) == 0  # a quiet window closes it again
    assert b.failure(40.0) is False


def test_breaker_without_window_counts_every_failure() -> None:
    b = RestartBreaker(max_restarts=2)
    assert [b.failure(t * 1e6) for t in range(3)] == [False, False, True]
    assert RestartBreaker(max_restarts=0, window=5.0).failure(0.0) is True


# -- the health payload bounds and the options --------------------------------------------------


def test_fit_health_keeps_what_fits_in_order() -> None:
    status = {f"k{i:02}": "v" for i in range(20)}
    kept, dropped = fit_health(status)
    assert list(kept) == [f"k{i:02}" for i in range(16)]
    assert dropped == [f"k{i:02}" for i in range(16, 20)]
    kept, dropped = fit_health({"a": "x" * 1000, "b": "y" * 100, "c": "z"})
    assert kept == {"a": "x" * 1000, "c": "z"}  # 1001 + 2 bytes; b would pass 1024
    assert dropped == ["b"]
    assert fit_health({"queue_depth": "3"}) == ({"queue_depth": "3"}, [])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"command": []}, "no command given"),
        ({"max_restarts": -1}, "--max-restarts"),
        ({"heartbeat_timeout": 0.0}, "--heartbeat-timeout"),
        ({"health_port": 0}, "--health-port"),
        ({"health_port": 70000}, "--health-port"),
        ({"health_cmd": ""}, "--health-cmd"),
        ({"health_interval": 0.0}, "--health-interval"),
        ({"health_retries": 0}, "--health-retries"),
        ({"kill_grace": -1.0}, "--kill-grace"),
        ({"restart_delay": math.nan}, "--restart-delay"),
        ({"restart_window": 0.0}, "--restart-window"),
    ],
)
def test_config_check_names_the_bad_option(change: dict[str, object], message: str) -> None:
    config = RunnerConfig(name="x", command=["true"])
    config.check()
    for key, value in change.items():
        setattr(config, key, value)
    with pytest.raises(RunnerError, match=message):
        config.check()


def test_cli_refuses_bad_health_options_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "x", "--health-port", "0", "--endpoints", "127.0.0.1:1", "--", "true"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.strip() == "raftlease: error: --health-port must be 1-65535, got 0"
