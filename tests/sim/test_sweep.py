"""The seed sweep: a normal run of 40 random fault schedules, and the CLI's contract
(progress, the final ``N seeds passed, M failed`` line, exit status, replay commands)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from raftlease.testing.sweep import main, run_seed, swarm_mix

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
    assert main(["--seeds", "20"], core_factory=VoteWithoutLogCheckCore) == 1
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


# --------------------------------------------------------------------------- swarm testing
def test_each_seed_draws_its_own_swarm_mix_and_reports_it() -> None:
    results = [run_seed(seed, watchdog_s=10) for seed in range(6)]
    assert all(r.ok for r in results), [str(r.violation) for r in results if not r.ok]
    drawn = {r.drew for r in results}
    assert len(drawn) == len(results)  # six seeds, six different mixes
    for r in results:
        assert r.drew, "every swarm seed says what it drew"
        assert r.faults().startswith("injected: ")
    assert any(r.injected for r in results)
    # Deterministic: the same seed draws the same mix and runs the same events.
    again = run_seed(3, watchdog_s=10)
    assert (again.drew, again.events, again.injected) == (
        results[3].drew,
        results[3].events,
        results[3].injected,
    )


def test_swarm_explores_every_dimension() -> None:
    """Over 200 draws, every fault dimension is drawn both on and off, including the crash
    points that matter, one-way per-message-type loss, and delays beyond an election."""
    import random

    text = []
    for seed in range(200):
        mix = swarm_mix(random.Random(seed))
        text.append(" | ".join(mix.drew))
        assert mix.rates is None or all(
            abs(r - 1.0) <= float(mix.config.get("max_drift", 0.01)) + 1e-12 for r in mix.rates
        ), "the default sweep keeps clocks within the drift bound"
    joined = "\n".join(text)
    for needle in (
        "partition",
        "crash",
        "down 0-2ms",
        "flaky",
        "AppendEntries ",
        "one-link 1.0",
        "delay<=100-",
        "pause",
        "skew",
        "quiet",
        "vote:before-save",
        "acked:after-send",
        "snapshot:before-save",
        "follower:before-save",
        "chronic",
        "client-link",
    ):
        assert needle in joined, needle
    for dim in ("partition", "crash", "flaky", "pause", "failpoints"):
        off = sum(1 for t in text if dim not in t)
        assert 10 < off < 190, (dim, off)


def test_cli_mix_option(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2]))
    assert main(["--seeds", "2", "--mix", "random"]) == 0
    assert main(["--seeds", "1", "--mix", "tests.sim.test_planted:MIX_DEAF_FOLLOWER"]) == 0
    with pytest.raises(SystemExit):
        main(["--seeds", "1", "--mix", "nope"])
    capsys.readouterr()


def test_verbose_prints_what_the_seed_drew(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seed", "5", "--verbose"]) == 0
    out = capsys.readouterr().out
    assert "  drew " in out
    assert "seed 5: injected: " in out
