"""``raftlease serve --config FILE`` (raftlease/config_file.py): TOML keys and RAFTLEASE_*
variables for every serve option, precedence default < file < environment < flag, unknown keys
and wrong types refused, every problem (file, environment, ServerConfig's rules) listed once
on one line; the example file validates; docs/settings.md is what the generator writes; the
client commands speak seconds and show their defaults. No server is started here."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import pytest

from raftlease import cli
from raftlease.cli import _prepare_serve, main, serve_parser
from raftlease.config_file import (
    NOT_SETTINGS,
    RESERVED_ENV,
    SERVE_SETTINGS,
    resolve_serve_args,
    serve_options,
)
from raftlease.settings import ServerConfig
from raftlease.settings_doc import DOC_PATH, render

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = REPO_ROOT / "examples" / "raftlease.toml"

GOOD = """\
id = "n1"
listen = "127.0.0.1:7001"
data_dir = "/tmp/never-created"
cluster_id = "c1"
tick = "20ms"
[peers]
n1 = "127.0.0.1:7001"
n2 = "127.0.0.1:7002"
n3 = "127.0.0.1:7003"
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No RAFTLEASE_* setting of the caller's shell leaks in; GRPC_VERBOSITY is restored."""
    for name in list(os.environ):
        if name.startswith("RAFTLEASE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("GRPC_VERBOSITY", os.environ.get("GRPC_VERBOSITY", ""))


def write(tmp_path: Path, text: str, name: str = "node.toml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def parse(*argv: str) -> argparse.Namespace:
    return serve_parser().parse_args(list(argv))


def prepare(*argv: str) -> tuple[int, argparse.Namespace, dict[str, float | int]]:
    args = parse(*argv)
    overrides: dict[str, float | int] = {}
    return _prepare_serve(args, overrides), args, overrides


def refusal(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run ``raftlease serve ARGV`` expecting a refusal: its one stderr line."""
    code = main(["serve", *argv])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, err
    assert out == ""
    assert len(lines) == 1, err
    return lines[0]


# -- the file ---------------------------------------------------------------------------------


def test_a_file_sets_every_kind_of_setting(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        GOOD
        + """\
[client_addresses]
n1 = "10.0.0.1:7001"
""",
    )
    text = path.replace(".toml", "2.toml")
    Path(text).write_text(
        GOOD.replace(
            'tick = "20ms"',
            "tick = 0.02\nelection_ticks_min = 30\nmax_drift = 0.02\n"
            'metrics = "127.0.0.1:9109"\nlog_format = "json"\nlog_level = "debug"\n'
            'inherited_wait_grace = "3s"\nsnapshot_entries = 500',
        ),
        encoding="utf-8",
    )
    code, args, overrides = prepare("--config", path)
    assert code == 0
    assert (args.id, args.listen, args.data_dir, args.cluster_id) == (
        "n1",
        "127.0.0.1:7001",
        "/tmp/never-created",
        "c1",
    )
    assert args.peers == {"n1": "127.0.0.1:7001", "n2": "127.0.0.1:7002", "n3": "127.0.0.1:7003"}
    assert args.client_addresses == {"n1": "10.0.0.1:7001"}
    assert overrides == {"tick_s": 0.02}

    code, args, overrides = prepare("--config", text)
    assert code == 0
    assert overrides == {
        "tick_s": 0.02,
        "election_ticks_min": 30,
        "max_drift": 0.02,
        "inherited_wait_grace_s": 3.0,
        "snapshot_entries": 500,
    }
    assert (args.metrics, args.log_format, args.log_level) == ("127.0.0.1:9109", "json", "DEBUG")
    assert not Path("/tmp/never-created").exists()


def test_the_example_file_loads_and_validates() -> None:
    code, args, overrides = prepare("--config", str(EXAMPLE))
    assert code == 0
    assert args.id == "n1"
    assert sorted(args.peers) == ["n1", "n2", "n3"]
    assert args.log_format == "json"
    extra: dict[str, Any] = dict(overrides)
    cfg = ServerConfig(node_id=args.id, cluster_id=args.cluster_id, peers=args.peers, **extra)
    cfg.validate()
    assert (
        cfg.safety_settings()
        == ServerConfig(node_id=args.id, cluster_id="x", peers=args.peers).safety_settings()
    )  # the example spells out the defaults


def test_precedence_default_file_environment_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, GOOD)

    def tick(*argv: str) -> object:
        code, _, overrides = prepare(*argv)
        assert code == 0
        return overrides.get("tick_s")

    base = ["--config", path]
    assert tick(*base) == 0.02  # file over the default
    monkeypatch.setenv("RAFTLEASE_TICK", "30ms")
    assert tick(*base) == 0.03  # environment over the file
    assert tick(*base, "--tick", "40ms") == 0.04  # flag over the environment
    monkeypatch.setenv("RAFTLEASE_TICK", "")  # empty counts as unset
    assert tick(*base) == 0.02
    monkeypatch.delenv("RAFTLEASE_TICK")
    # A flag given with the default's value still wins over the file.
    assert tick(*base, "--tick", "10ms") == 0.01
    # The file path itself may come from the environment.
    monkeypatch.setenv("RAFTLEASE_CONFIG", path)
    assert tick() == 0.02
    # Without any file, the environment alone is enough.
    monkeypatch.delenv("RAFTLEASE_CONFIG")
    for key, value in {
        "ID": "n1",
        "LISTEN": "127.0.0.1:7001",
        "PEERS": "n1=127.0.0.1:7001",
        "DATA_DIR": str(tmp_path / "d"),
        "LOG_FORMAT": "json",
    }.items():
        monkeypatch.setenv(f"RAFTLEASE_{key}", value)
    code, args, overrides = prepare()
    assert code == 0
    assert overrides == {}
    assert (args.id, args.log_format, args.peers) == ("n1", "json", {"n1": "127.0.0.1:7001"})


def test_sources_name_where_a_bad_value_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, GOOD.replace('tick = "20ms"', 'tick = "0ms"'))
    assert "tick 0ms is outside the allowed range 1ms..100ms" in refusal(capsys, "--config", path)
    monkeypatch.setenv("RAFTLEASE_TICK", "500ms")
    line = refusal(capsys, "--config", path)
    assert "RAFTLEASE_TICK 500ms is outside the allowed range" in line
    line = refusal(capsys, "--config", path, "--tick", "1s")
    assert "--tick 1s is outside the allowed range" in line


def test_unknown_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, GOOD + "\n[serve]\nid = 'n1'\n")
    path2 = write(tmp_path, 'tik = "10ms"\n' + GOOD, "typo.toml")
    line = refusal(capsys, "--config", path)
    assert "node.toml: unknown key 'serve' (known keys: auth_rules" in line or (
        "node.toml: unknown key 'serve' (known keys: " in line
    )
    assert "raftlease serve: error: node.toml: unknown key 'serve'" in line
    line = refusal(capsys, "--config", path2)
    assert line == ("raftlease serve: error: typo.toml: unknown key 'tik' (did you mean 'tick'?)")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "tick = true",
            'tick: expected a duration string ("10ms", "2s") or a number of seconds, got a boolean',
        ),
        ("tick = -1", "tick: a duration must be a finite number of seconds >= 0, got -1"),
        ('tick = "10x"', "tick: invalid duration '10x'"),
        ('election_ticks_min = "20"', "election_ticks_min: expected an integer, got a string"),
        ("election_ticks_min = 20.5", "election_ticks_min: expected an integer, got a float"),
        ('max_drift = "1%"', "max_drift: expected a number, got a string"),
        ("cluster_id = 7", "cluster_id: expected a string, got an integer"),
        ('log_format = "xml"', "log_format: 'xml' is not one of text, json"),
        ('log_level = "loud"', "log_level: invalid log level 'loud'"),
        ('metrics = "nope"', "metrics: endpoint 'nope' is not HOST:PORT"),
        ("metrics = [1, 2]", "metrics: expected a string, got an array"),
        ("data_dir = 1979-05-27", "data_dir: expected a string, got a date"),
    ],
)
def test_type_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, message: str
) -> None:
    key = line.split()[0]
    text = "\n".join(x for x in GOOD.splitlines() if not x.startswith(f"{key} ="))
    head, _, tables = text.partition("[peers]")
    path = write(tmp_path, f"{head}{line}\n[peers]{tables}\n")
    got = refusal(capsys, "--config", path)
    assert f"node.toml: {message}" in got, got
    assert "problems" not in got  # just this one


def test_peers_must_be_strings_or_a_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = GOOD.replace('n2 = "127.0.0.1:7002"', "n2 = 7002")
    line = refusal(capsys, "--config", write(tmp_path, text))
    assert 'node.toml: peers: every entry must be a "HOST:PORT" string; n2 is not' in line
    text = GOOD.replace(
        '[peers]\nn1 = "127.0.0.1:7001"\nn2 = "127.0.0.1:7002"\nn3 = "127.0.0.1:7003"\n',
        'peers = "n1=127.0.0.1:7001,n2=127.0.0.1:7002"\n',
    )
    code, args, _ = prepare("--config", write(tmp_path, text, "flat.toml"))
    assert code == 0
    assert sorted(args.peers) == ["n1", "n2"]


def test_environment_errors(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("RAFTLEASE_HEARTBEAT_TICKS", "ten")
    line = refusal(capsys, "--config", write(tmp_path, GOOD))
    assert line == (
        "raftlease serve: error: RAFTLEASE_HEARTBEAT_TICKS='ten': expected an integer, got 'ten'"
    )


def test_unreadable_or_invalid_toml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "absent.toml"
    line = refusal(capsys, "--config", str(missing))
    assert (
        line
        == f"raftlease serve: error: cannot read config file {missing}: No such file or directory"
    )
    bad = write(tmp_path, "id = \n")
    line = refusal(capsys, "--config", bad)
    assert line.startswith(f"raftlease serve: error: config file {bad} is not valid TOML: ")
    assert "line 1" in line


def test_every_problem_is_listed_once_on_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text = GOOD.replace('id = "n1"', 'id = "n4"').replace('tick = "20ms"', "tick = true")
    text = text.replace(
        "[peers]", "heartbeat_ticks = 11\nelection_ticks_max = 20\nbogus = 1\n[peers]"
    )
    monkeypatch.setenv("RAFTLEASE_MAX_DRIFT", "0.5")
    line = refusal(capsys, "--config", write(tmp_path, text), "--cluster-id", "")
    expected = [
        "node.toml: tick: expected a duration",
        "node.toml: unknown key 'bogus' (known keys: ",
        "id 'n4' is not one of peers (n1, n2, n3): list every member in peers",
        "--cluster-id must not be empty",
        "max_drift must be in [0, 0.2), got 0.5; it bounds every clock's rate error",
        "election_ticks_min must be at least 2 * heartbeat_ticks (got 20 < 2 * 11); a follower "
        "must be able to miss one heartbeat before it calls an election",
        "election_ticks_max must be greater than election_ticks_min (got 20 <= 20); each "
        "follower draws its election timeout at random",
    ]
    assert line.startswith(f"raftlease serve: error: {len(expected)} problems: (1) ")
    for i, needle in enumerate(expected, 1):
        assert line.count(needle) == 1, (needle, line)
        assert f"({i}) {needle}" in line, (i, needle, line)


def test_missing_required_settings_say_every_way_to_give_them(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["serve", "--id", "n1", "--data-dir", "d"])
    _, err = capsys.readouterr()
    assert code == 2
    assert err.strip() == (
        "raftlease: error: the following arguments are required: --listen (or listen in "
        "--config, or $RAFTLEASE_LISTEN), --peers (or peers in --config, or $RAFTLEASE_PEERS)"
    )


def test_serve_sets_grpc_verbosity_unless_the_user_did(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, GOOD)
    monkeypatch.delenv("GRPC_VERBOSITY")
    assert prepare("--config", path)[0] == 0
    assert os.environ["GRPC_VERBOSITY"] == "ERROR"
    monkeypatch.setenv("GRPC_VERBOSITY", "DEBUG")
    assert prepare("--config", path)[0] == 0
    assert os.environ["GRPC_VERBOSITY"] == "DEBUG"


# -- the registry and the generated reference -------------------------------------------------


def test_every_serve_option_is_registered_and_defaults_to_none() -> None:
    options = serve_options(serve_parser())
    dests = {o.dest for o in options}
    assert not dests & NOT_SETTINGS
    unregistered = sorted(dests - set(SERVE_SETTINGS))
    assert not unregistered, (
        f"serve options without a line in raftlease/config_file.py SERVE_SETTINGS: {unregistered}"
    )
    stale = sorted(set(SERVE_SETTINGS) - dests)
    assert not stale, f"SERVE_SETTINGS names options serve does not have: {stale}"
    for o in options:
        # A value other than the argparse default is what says "given on the command line".
        assert o.action.default in (None, False), f"{o.flag} must have default=None"
        assert o.env not in RESERVED_ENV
        assert o.key == o.flag[2:].replace("-", "_")
        assert "default" in (o.action.help or "") or "required" in (o.action.help or ""), (
            f"{o.flag}: help must show the default"
        )


def test_settings_reference_is_up_to_date() -> None:
    assert DOC_PATH.read_text(encoding="utf-8") == render(), (
        "docs/settings.md is out of date: run .venv/bin/python -m raftlease.settings_doc"
    )


def test_settings_reference_lists_every_flag_key_and_variable() -> None:
    text = render()
    for o in serve_options(serve_parser()):
        assert f"| `{o.flag}` | `{o.key}` | `{o.env}` |" in text
    assert "| `--tick` | `tick` | `RAFTLEASE_TICK` | 10ms | duration | 1ms..100ms |" in text


def test_cluster_id_default_is_the_clis() -> None:
    assert SERVE_SETTINGS["cluster_id"].default == cli.DEFAULT_CLUSTER_ID


# -- client commands: seconds and defaults ----------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["acquire", "x", "--ttl", "0"], "--ttl 0s is below the minimum 1s"),
        (["acquire", "x", "--ttl", "500ms"], "--ttl 500ms is below the minimum 1s"),
        (["acquire", "x", "--ttl", "2h"], "--ttl 2h is above the maximum 1h"),
        (["acquire", "x", "--wait", "61m"], "--wait 61m is above the maximum 1h"),
        (["probe", "--ttl", "0.5"], "--ttl 500ms is below the minimum 1s"),
        (["run", "x", "--ttl", "0s", "--", "true"], "--ttl 0s is below the minimum 1s"),
    ],
)
def test_client_bounds_speak_seconds(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"raftlease: error: {message}\n"


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    for action in cli.build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


@pytest.mark.parametrize(
    ("command", "dests"),
    [
        ("acquire", {"ttl", "wait", "holder", "metadata", "timeout", "endpoints"}),
        ("run", {"ttl", "wait", "max_restarts", "holder"}),
        ("probe", {"name", "ttl", "wait", "holder"}),
        ("leases", {"prefix"}),
        ("cluster", {"nodes", "data_dir", "base_port", "host"}),
    ],
)
def test_client_help_shows_defaults(command: str, dests: set[str]) -> None:
    parser = _subparsers()[command]
    helps = {a.dest: a.help or "" for a in parser._actions}
    for dest in dests:
        assert "default" in helps[dest], (command, dest, helps[dest])


def test_serve_help_shows_defaults_and_the_config_file(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    for needle in (
        "--config FILE",
        "(default 10ms;",
        "(default 20)",
        "(default text)",
        "(default INFO)",
        "docs/settings.md",
    ):
        assert needle in " ".join(out.split()), needle


def test_resolve_fills_args_in_place_and_names_each_source(tmp_path: Path) -> None:
    args = parse("--config", write(tmp_path, GOOD), "--tick", "40ms")
    res = resolve_serve_args(args, serve_parser(), {"RAFTLEASE_CLUSTER_ID": "from-env"})
    assert (res.problems, res.missing) == ([], [])
    assert (args.tick, args.cluster_id, args.id, args.metrics) == (
        0.04,
        "from-env",
        "n1",
        None,
    )
    assert res.source["tick"] == "--tick"
    assert res.source["cluster_id"] == "RAFTLEASE_CLUSTER_ID"
    assert res.source["id"] == "id"  # the TOML key
    assert res.source["metrics"] == "--metrics"  # not set anywhere: called by its flag
    names = res.names()
    assert (names["tick_s"], names["cluster_id"], names["node_id"]) == (
        "--tick",
        "RAFTLEASE_CLUSTER_ID",
        "id",
    )
