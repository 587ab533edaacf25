"""The seed sweep: a normal run of 40 random fault schedules, and the CLI's contract
(progress, the final ``N seeds passed, M failed`` line, exit status, replay commands)."""

from __future__ import annotations

import re

import pytest

from raftlease.testing.sweep import main, run_seed

from .planted import VoteWithoutLogCheckCore

SWEEP_SEEDS = range(40)


def test_sweep_40_seeds() -> None:
    failures = []
    for seed in SWEEP_SEEDS:
        result = run_seed(seed, watchdog_s=10)
        if not result.ok:
            failures.append(
                f"seed {seed}: {result.violation}\n  mix: {result.mix.describe()}\n"
                f"  replay: python -m raftlease.testing.sweep --seed {seed} --verbose"
            )
    assert not failures, "\n".join(failures)


def test_cli_passing_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seeds", "3", "--start", "5"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert re.fullmatch(
        r"3 seeds passed, 0 failed \([\d.]+ seeds/s; longest post-heal election "
        r"[\d.]+ ticks = [\d.]+ ms \(seed \d+, election_ticks_max \d+\)\)",
        last,
    ), last


def test_cli_failing_run_prints_violation_and_replay(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seeds", "10"], core_factory=VoteWithoutLogCheckCore) == 1
    out = capsys.readouterr().out
    assert re.search(r"^seed \d+: [a-z-]+: ", out, re.MULTILINE), out
    assert "replay: python -m raftlease.testing.sweep --seed " in out
    assert re.search(r"^\d+ seeds passed, [1-9]\d* failed \(", out.splitlines()[-1])


def test_cli_verbose_replay_prints_a_transcript(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seed", "3", "--verbose"]) == 0
    out = capsys.readouterr().out
    assert "FINAL HEAL" in out
    assert "deliver n" in out
    assert "LEASE start" in out
    assert out.strip().splitlines()[-1].startswith("1 seeds passed, 0 failed")


def test_base_config_sits_under_the_mix_own_timing() -> None:
    plain = run_seed(3, watchdog_s=10)
    shipped = run_seed(3, watchdog_s=10, base_config={"heartbeat_ticks": 3})
    assert shipped.ok, shipped.violation
    want = {"heartbeat_ticks": 3, **plain.mix.config}  # a drawn timing variant still wins
    assert shipped.mix.config == want


def test_cli_set_refuses_unknown_keys_and_non_integers(capsys: pytest.CaptureFixture[str]) -> None:
    for bad, says in (("foo=1", "bad item 'foo=1'"), ("heartbeat_ticks=x", "must be an integer")):
        with pytest.raises(SystemExit) as exc:
            main(["--seeds", "1", "--set", bad])
        assert exc.value.code == 2
        assert says in capsys.readouterr().err
