"""``raftlease serve --config FILE``: serve settings from a TOML file, the environment and flags.

Every ``serve`` option ``--some-flag`` is also the TOML key ``some_flag`` and the environment
variable ``RAFTLEASE_SOME_FLAG``. Precedence, lowest first: the default, the file, the
environment, the command line. The mapping is read off the ``serve`` parser itself, so an
option added to ``serve`` later (TLS, join) works in the file and the environment at once;
its one line in :data:`SERVE_SETTINGS` (default, unit and bound, for help and
docs/settings.md) is the only registration, and tests/test_config_file.py asks for it.

For that to work a ``serve`` option must have ``default=None`` (``store_true`` flags: False):
a value other than the argparse default is what says "given on the command line", and the
real default (:attr:`SettingDoc.default`) is applied after the file and environment, by the
command or by ServerConfig.

TOML values are checked against the option: strings go through the same parser as the
command line (``"10ms"``, ``"127.0.0.1:7001"``), durations may also be a number of seconds,
integers must be integers, ``peers`` and ``client_addresses`` may be a table ``{n1 =
"HOST:PORT"}`` or the flag's ``ID=HOST:PORT,...`` string, flags are ``true``/``false``. Unknown
keys are errors (with a suggestion). Every problem (file, environment, missing settings) is
collected, not just the first; ``serve`` then adds ServerConfig's own rules and refuses with
all of them on one line.

Relative paths in the file (``data_dir``) are relative to the working directory, as on the
command line. Imports: settings (L0) and the standard library.
"""

from __future__ import annotations

import argparse
import difflib
import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from raftlease.settings import (
    INHERITED_WAIT_GRACE_S,
    REQUEST_BYTES_MAX,
    REQUEST_BYTES_MIN,
    TICK_MAX_S,
    TICK_MIN_S,
    ServerConfig,
)
from raftlease.settings import fmt_seconds as _fmt_s

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "CONFIG_ENV",
    "ENV_PREFIX",
    "NOT_SETTINGS",
    "SERVE_SETTINGS",
    "Option",
    "Resolution",
    "SettingDoc",
    "read_toml",
    "resolve_serve_args",
    "serve_options",
]

ENV_PREFIX: Final = "RAFTLEASE_"
CONFIG_ENV: Final = "RAFTLEASE_CONFIG"  # --config's own variable (a file cannot name a file)

#: Options of the ``serve`` parser that are not settings: the config file itself, and the
#: client options every command inherits (serve does not use them).
NOT_SETTINGS: Final = frozenset({"help", "config", "endpoints", "timeout"})

#: Variables raftlease already reads for other purposes; no setting may take their names.
RESERVED_ENV: Final = frozenset(
    {"RAFTLEASE_ENDPOINTS", "RAFTLEASE_EVENT_LOOP", "RAFTLEASE_FAILPOINTS"}
    | {"RAFTLEASE_CLOCK_RATE", "RAFTLEASE_STORAGE", "RAFTLEASE_TRANSPORT_FAULTS"}
    | {"RAFTLEASE_LEASE_NAME", "RAFTLEASE_LEASE_ID", "RAFTLEASE_FENCING_TOKEN"}
)

_SERVER_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(ServerConfig)}


@dataclass(frozen=True, slots=True)
class SettingDoc:
    """What help and docs/settings.md say about one ``serve`` setting.

    default: the default as users write it (``10ms``, ``off``), or ``required``.
    unit / bound: free text for the reference (``-`` when there is none).
    kind: how a TOML value is read: ``scalar`` (a string through the flag's parser, or the
        TOML type the flag's ``type`` asks for), ``duration`` (also a number of seconds),
        ``map`` (also a table of strings).
    field: the ServerConfig field it sets, if any (passed to main_serve by that name, and
        what ServerConfig's messages call it is replaced by where the value came from).
    """

    default: str
    unit: str = "-"
    bound: str = "-"
    kind: str = "scalar"
    field: str | None = None

    @property
    def required(self) -> bool:
        return self.default == "required"


def _d(name: str) -> str:
    """ServerConfig's default of ``name``, as a user writes it."""
    value = _SERVER_DEFAULTS[name]
    return _fmt_s(value) if name.endswith("_s") else str(value)


#: One line per ``serve`` option (by argparse dest). A new option needs its line here.
SERVE_SETTINGS: Final[dict[str, SettingDoc]] = {
    "id": SettingDoc("required", "string", "one of peers", field="node_id"),
    "listen": SettingDoc("required", "HOST:PORT", "the port of this node's peers entry"),
    "peers": SettingDoc("required", "ID=HOST:PORT,...", "includes id", "map", "peers"),
    "data_dir": SettingDoc("required", "path", "created for this cluster, node and members"),
    "cluster_id": SettingDoc("raftlease", "string", "non-empty", field="cluster_id"),
    "client_addresses": SettingDoc(
        "peers", "ID=HOST:PORT,...", "members only", "map", "client_addresses"
    ),
    "peer_listen": SettingDoc(
        _d("peer_listen"), "HOST:PORT, auto or off", "not --listen", field="peer_listen"
    ),
    "peer_links": SettingDoc("announced", "ID=HOST:PORT,...", "-", "map", "peer_links"),
    "join": SettingDoc("off", "HOST:PORT,...", "addresses of the running cluster"),
    "tick": SettingDoc(
        _d("tick_s"),
        "duration",
        f"{_fmt_s(TICK_MIN_S)}..{_fmt_s(TICK_MAX_S)}",
        "duration",
        "tick_s",
    ),
    "election_ticks_min": SettingDoc(
        _d("election_ticks_min"), "ticks", ">= 2 * heartbeat_ticks", field="election_ticks_min"
    ),
    "election_ticks_max": SettingDoc(
        _d("election_ticks_max"), "ticks", "> election_ticks_min", field="election_ticks_max"
    ),
    "heartbeat_ticks": SettingDoc(
        _d("heartbeat_ticks"),
        "ticks",
        ">= 1, < the leader lease (14 ticks at the defaults)",
        field="heartbeat_ticks",
    ),
    "max_drift": SettingDoc(
        _d("max_drift"), "fraction (0.01 = 1 %)", "0 <= x < 0.2", field="max_drift"
    ),
    "snapshot_entries": SettingDoc(
        _d("snapshot_entries"), "log entries", ">= 1", field="snapshot_entries"
    ),
    "inherited_wait_grace": SettingDoc(
        _fmt_s(INHERITED_WAIT_GRACE_S), "duration", ">= 0", "duration", "inherited_wait_grace_s"
    ),
    "max_request_bytes": SettingDoc(
        _d("max_request_bytes"),
        "bytes",
        f"{REQUEST_BYTES_MIN}..{REQUEST_BYTES_MAX}",
        field="max_request_bytes",
    ),
    "max_waits_per_client": SettingDoc(
        _d("max_waits_per_client"), "Acquire calls", ">= 1", field="max_waits_per_client"
    ),
    "max_streams_per_client": SettingDoc(
        _d("max_streams_per_client"), "streams", ">= 1", field="max_streams_per_client"
    ),
    "max_leases_per_holder": SettingDoc(
        _d("max_leases_per_holder"), "leases", ">= 1", field="max_leases_per_holder"
    ),
    "metrics": SettingDoc("off", "HOST:PORT", "not the listen address"),
    "tls_cert": SettingDoc("off (plaintext)", "path (PEM)", "with tls_key and tls_ca"),
    "tls_key": SettingDoc("off", "path (PEM)", "with tls_cert and tls_ca"),
    "tls_ca": SettingDoc("off", "path (PEM)", "with tls_cert and tls_key"),
    "auth_rules": SettingDoc("off (all allowed)", "path (TOML)", "needs TLS"),
    "log_format": SettingDoc("text", "text or json", "-"),
    "log_level": SettingDoc("INFO", "level", "DEBUG, INFO, WARNING, ERROR, CRITICAL"),
}


@dataclass(frozen=True, slots=True)
class Option:
    """One ``serve`` setting: its flag, TOML key, environment variable and argparse action."""

    dest: str
    flag: str
    key: str
    env: str
    action: argparse.Action
    doc: SettingDoc | None

    @property
    def takes_value(self) -> bool:
        return self.action.nargs != 0


def serve_options(parser: argparse.ArgumentParser) -> list[Option]:
    """The settings of the ``serve`` parser, in the order of its options."""
    out: list[Option] = []
    # argparse keeps a parser's actions in a private list; reading it is the only way to
    # enumerate them.
    for action in parser._actions:
        flags = [s for s in action.option_strings if s.startswith("--")]
        if not flags or action.dest in NOT_SETTINGS:
            continue
        out.append(
            Option(
                dest=action.dest,
                flag=flags[0],
                key=action.dest,
                env=ENV_PREFIX + action.dest.upper(),
                action=action,
                doc=SERVE_SETTINGS.get(action.dest),
            )
        )
    return out


class _Bad(Exception):
    """A value that cannot be used; the message says why (without naming where it came from)."""


def _toml_type(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return f"a {type(value).__name__}"  # dates and times


def _parse(option: Option, text: str) -> object:
    """``text`` through the option's own parser (as the command line would), then choices."""
    action = option.action
    convert = action.type
    try:
        if convert is int:
            try:
                value: object = int(text)
            except ValueError:
                raise _Bad(f"expected an integer, got {text!r}") from None
        elif convert is float:
            try:
                value = float(text)
            except ValueError:
                raise _Bad(f"expected a number, got {text!r}") from None
        elif callable(convert):
            value = convert(text)
        else:
            value = text
    except (argparse.ArgumentTypeError, ValueError, TypeError) as err:
        raise _Bad(str(err)) from None
    if action.choices is not None and value not in action.choices:
        choices = ", ".join(str(c) for c in action.choices)
        raise _Bad(f"{text!r} is not one of {choices}")
    return value


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _switch_value(option: Option, on: bool) -> object:
    """The value a ``store_true``-like flag takes when set (``on``) or not."""
    return option.action.const if on else option.action.default


def _from_env(option: Option, text: str) -> object:
    if not option.takes_value:
        word = text.strip().lower()
        if word not in _TRUE | _FALSE:
            raise _Bad(f"expected true or false (1/0, yes/no, on/off), got {text!r}")
        return _switch_value(option, word in _TRUE)
    return _parse(option, text)


def _from_toml(option: Option, value: object) -> object:
    kind = option.doc.kind if option.doc is not None else "scalar"
    convert = option.action.type
    if not option.takes_value:
        if not isinstance(value, bool):
            raise _Bad(f"expected true or false, got {_toml_type(value)}")
        return _switch_value(option, value)
    if isinstance(value, bool):
        raise _Bad(f"expected {_expected(option, kind)}, got a boolean")
    if kind == "duration" and isinstance(value, int | float):
        if not (math.isfinite(value) and value >= 0):
            raise _Bad(f"a duration must be a finite number of seconds >= 0, got {value}")
        return float(value)
    if kind == "map" and isinstance(value, dict):
        bad = sorted(k for k, v in value.items() if not isinstance(v, str))
        if bad:
            raise _Bad(f'every entry must be a "HOST:PORT" string; {", ".join(bad)} is not')
        return _parse(option, ",".join(f"{k}={v}" for k, v in value.items()))
    if convert is int and isinstance(value, int):
        return _parse(option, str(value))
    if convert is float and isinstance(value, int | float):
        return _parse(option, repr(float(value)))
    if isinstance(value, str) and convert not in (int, float):
        return _parse(option, value)
    raise _Bad(f"expected {_expected(option, kind)}, got {_toml_type(value)}")


def _expected(option: Option, kind: str) -> str:
    if option.action.type is int:
        return "an integer"
    if option.action.type is float:
        return "a number"
    if kind == "duration":
        return 'a duration string ("10ms", "2s") or a number of seconds'
    if kind == "map":
        return 'a table of ID = "HOST:PORT" or an "ID=HOST:PORT,..." string'
    return "a string"


def read_toml(path: str | Path) -> tuple[dict[str, Any] | None, list[str]]:
    """The TOML document at ``path`` and [], or None and the one problem that stops it."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f), []
    except OSError as err:
        return None, [f"cannot read config file {path}: {err.strerror or err}"]
    except tomllib.TOMLDecodeError as err:
        return None, [f"config file {path} is not valid TOML: {err}"]


@dataclass
class Resolution:
    """What :func:`resolve_serve_args` found.

    problems: one message per problem of the file or the environment, in order.
    missing: the required options nobody set (and no problem explains).
    source: dest -> where its value came from, as messages should call it: the flag, the
        environment variable, or the TOML key; the flag when it is the default.
    config_path: the file read, if any.
    """

    problems: list[str] = field(default_factory=list)
    missing: list[Option] = field(default_factory=list)
    source: dict[str, str] = field(default_factory=dict)
    options: list[Option] = field(default_factory=list)
    config_path: str | None = None

    def names(self) -> dict[str, str]:
        """ServerConfig field -> what its messages should call it (see ServerConfig.problems)."""
        return {
            o.doc.field: self.source.get(o.dest, o.flag)
            for o in self.options
            if o.doc is not None and o.doc.field is not None
        }

    def server_overrides(self, args: argparse.Namespace, skip: set[str]) -> dict[str, Any]:
        """ServerConfig field -> value for every option that sets one and has a value, but
        the fields in ``skip`` (those the caller passes by name)."""
        out: dict[str, Any] = {}
        for o in self.options:
            fld = o.doc.field if o.doc is not None else None
            value = getattr(args, o.dest, None)
            if fld is not None and fld not in skip and value is not None:
                out[fld] = value
        return out


def _given(option: Option, args: argparse.Namespace) -> bool:
    value = getattr(args, option.dest, None)
    return value is not None and value != option.action.default


def resolve_serve_args(
    args: argparse.Namespace, parser: argparse.ArgumentParser, environ: Mapping[str, str]
) -> Resolution:
    """Fill every ``serve`` setting of ``args`` in place: the command line's value where one
    was given, else the environment's (``RAFTLEASE_<DEST>``, an empty value counts as unset),
    else the config file's (``args.config`` or ``RAFTLEASE_CONFIG``), else the option's
    argparse default (None: the command or ServerConfig applies the real default)."""
    res = Resolution(options=serve_options(parser))
    by_key = {o.key: o for o in res.options}
    bad: set[str] = set()
    from_file: dict[str, object] = {}
    path = getattr(args, "config", None) or environ.get(CONFIG_ENV) or None
    if path:
        res.config_path = path
        name = Path(path).name
        data, res.problems = read_toml(path)
        if data is None:
            return res  # nothing else is worth saying about settings we could not read
        for key, raw in data.items():
            option = by_key.get(key)
            if option is None:
                close = difflib.get_close_matches(key, list(by_key), n=1)
                hint = (
                    f"did you mean {close[0]!r}?"
                    if close
                    else f"known keys: {', '.join(sorted(by_key))}"
                )
                res.problems.append(f"{name}: unknown key {key!r} ({hint})")
                continue
            try:
                from_file[option.dest] = _from_toml(option, raw)
            except _Bad as err:
                res.problems.append(f"{name}: {key}: {err}")
                bad.add(option.dest)
    for option in res.options:
        text = environ.get(option.env, "")
        if _given(option, args):
            res.source[option.dest] = option.flag
            continue
        if text.strip():
            try:
                setattr(args, option.dest, _from_env(option, text))
                res.source[option.dest] = option.env
            except _Bad as err:
                res.problems.append(f"{option.env}={text!r}: {err}")
                bad.add(option.dest)
                setattr(args, option.dest, option.action.default)
                res.source[option.dest] = option.env
            continue
        if option.dest in from_file:
            setattr(args, option.dest, from_file[option.dest])
            res.source[option.dest] = option.key
            continue
        setattr(args, option.dest, option.action.default)
        res.source[option.dest] = option.flag
        if option.doc is not None and option.doc.required and option.dest not in bad:
            res.missing.append(option)
    for option in res.options:
        if option.env in RESERVED_ENV:  # a programming error: caught by the tests
            raise RuntimeError(f"serve option {option.flag} would read {option.env}")
    return res
