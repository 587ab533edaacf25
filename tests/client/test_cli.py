"""The command line without a server: bad arguments give ONE line `raftlease: error: ...`."""

from __future__ import annotations

import argparse

import pytest

from raftlease.cli import main, parse_duration_arg, parse_peers
from raftlease.testing.local import free_port


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error_line(err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("raftlease: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["acquire", "x", "--ttl", "10x"], ["--ttl", "invalid duration '10x'"]),
        (["acquire", "x", "--wait", "-1s"], ["--wait"]),
        (["acquire"], ["name"]),
        (["bogus"], ["invalid choice"]),
        ([], ["required"]),
        (["serve", "--id", "n1"], ["required"]),
        (
            ["serve", "--id", "n1", "--listen", "nope", "--peers", "n1=a:1", "--data-dir", "d"],
            ["HOST:PORT"],
        ),
        (
            ["serve", "--id", "n1", "--listen", "a:1", "--peers", "n1", "--data-dir", "d"],
            ["ID=HOST:PORT"],
        ),
        (["run", "x"], ["no command given"]),
        (["run", "x", "--max-restarts", "-1", "--", "true"], ["--max-restarts"]),
        (["run", "x", "--ttl", "abc", "--", "true"], ["--ttl"]),
        (["cluster", "--nodes", "0"], ["--nodes"]),
        (["cluster", "--metrics-base-port", "65535"], ["--metrics-base-port"]),
        (["member", "add"], ["member add needs ID=HOST:PORT"]),
        (["status", "--bogus"], ["unrecognized arguments"]),
    ],
)
def test_usage_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], needles: list[str]
) -> None:
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert out == ""
    assert_one_error_line(err, *needles)


def test_bad_endpoints_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "holder", "x", "--endpoints", "localhost")
    assert code == 1
    assert_one_error_line(err, "localhost", "HOST:PORT")


@pytest.mark.parametrize(
    "argv",
    [
        ["holder", "x"],
        ["leases"],
        ["status"],
        ["status", "--json"],
        ["acquire", "x", "--ttl", "1s"],
        ["transfer"],
        ["run", "x", "--wait", "1s", "--", "true"],
    ],
)
def test_unreachable_cluster_is_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    dead = f"127.0.0.1:{free_port()}"
    cut = argv.index("--") if "--" in argv else len(argv)  # options go before `-- CMD`
    argv = [*argv[:cut], "--endpoints", dead, "--timeout", "300ms", *argv[cut:]]
    code, _, err = run_cli(capsys, *argv)
    assert code == 1
    lines = [line for line in err.splitlines() if not line.startswith("raftlease run:")]
    assert_one_error_line("\n".join(lines), dead)


def test_run_command_not_found(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "run", "x", "--", "/nonexistent/cmd-xyz")
    assert code == 1
    assert_one_error_line(err, "command not found")


def test_duration_arg() -> None:
    assert parse_duration_arg("2m") == 120.0
    with pytest.raises(argparse.ArgumentTypeError, match="invalid duration"):
        parse_duration_arg("2 minutes")


def test_parse_peers() -> None:
    assert parse_peers("n1=127.0.0.1:7001, n2=127.0.0.1:7002") == {
        "n1": "127.0.0.1:7001",
        "n2": "127.0.0.1:7002",
    }
    for bad in ("", "n1", "=a:1", "n1=a:1,n1=a:2", "n1=a"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_peers(bad)


def test_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in ("cluster", "serve", "acquire", "run", "holder", "leases", "watch", "status"):
        assert command in out
