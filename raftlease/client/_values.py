"""Values the user hands the clients, and how the clients show values back: endpoints,
durations, the default holder identity, str maps, fencing tokens, one-line error texts.

No I/O beyond reading the environment (``RAFTLEASE_ENDPOINTS``) and the host name.
"""

from __future__ import annotations

import math
import os
import re
import socket
from collections.abc import Mapping, Sequence

from raftlease.client.errors import InvalidArgument
from raftlease.errors import ConfigError
from raftlease.fsm.limits import MAX_TTL_MS, MAX_WAIT_MS, MIN_TTL_MS

__all__ = [
    "DEFAULT_ENDPOINTS",
    "ENDPOINTS_ENV",
    "TTL_BOUNDS_S",
    "WAIT_BOUNDS_S",
    "bound_problem",
    "check_str_map",
    "check_token_value",
    "default_holder",
    "format_duration",
    "one_line",
    "parse_duration",
    "parse_endpoints",
    "seconds_to_ms",
]

ENDPOINTS_ENV = "RAFTLEASE_ENDPOINTS"
DEFAULT_ENDPOINTS = ("127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003")


_ENDPOINT = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+):(\d{1,5})$")


def parse_endpoints(value: Sequence[str] | str | None) -> list[str]:
    """Normalize endpoints to a non-empty, de-duplicated list of ``HOST:PORT`` strings.

    ``value`` may be a comma-separated string, a sequence of such strings, or ``None`` (then
    the environment variable ``RAFTLEASE_ENDPOINTS`` is used if set, else the three local
    default ports 7001-7003). Raises :class:`ConfigError` naming the bad entry.
    """
    if value is None:
        env = os.environ.get(ENDPOINTS_ENV, "").strip()
        value = env if env else list(DEFAULT_ENDPOINTS)
    parts = [value] if isinstance(value, str) else list(value)
    out: list[str] = []
    for part in parts:
        if not isinstance(part, str):
            raise ConfigError(f"endpoints must be strings, got {type(part).__name__}")
        for raw in part.split(","):
            endpoint = raw.strip()
            if not endpoint:
                continue
            match = _ENDPOINT.match(endpoint)
            if match is None or not 1 <= int(match.group(1)) <= 65535:
                raise ConfigError(
                    f"endpoint {endpoint!r} is not HOST:PORT (e.g. 127.0.0.1:7001, a port 1-65535)"
                )
            if endpoint not in out:
                out.append(endpoint)
    if not out:
        raise ConfigError("no endpoints given: pass HOST:PORT[,HOST:PORT...]")
    return out


_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str) -> float:
    """Parse ``10s``, ``500ms``, ``2m``, ``1h``, ``1.5s`` or a bare number of seconds.

    Returns seconds as a float. Raises :class:`ValueError` with a message saying what is
    accepted; negative, infinite and non-numeric values are refused.
    """
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(
            f"invalid duration {text!r}: use a number with an optional unit ms, s, m or h "
            "(e.g. 10s, 500ms, 2m, 1h; a bare number means seconds)"
        )
    value = float(match.group(1)) * _UNIT_S[match.group(2)]
    if not math.isfinite(value):
        raise ValueError(f"invalid duration {text!r}: too large")
    return value


def format_duration(seconds: float) -> str:
    """A short human form of a duration: ``250ms``, ``10s``, ``1.5s``, ``2m``, ``1h``."""
    if seconds < 1.0:
        return f"{round(seconds * 1000)}ms"
    if seconds < 60.0 or seconds % 60:
        text = f"{seconds:.3f}".rstrip("0").rstrip(".")
        return f"{text}s"
    if seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    return f"{int(seconds // 60)}m"


#: The server's bounds (raftlease/fsm/limits.py), in seconds: what a user types.
TTL_BOUNDS_S = (MIN_TTL_MS / 1000.0, MAX_TTL_MS / 1000.0)
WAIT_BOUNDS_S = (0.0, MAX_WAIT_MS / 1000.0)


def bound_problem(flag: str, seconds: float, bounds: tuple[float, float]) -> str | None:
    """Why ``seconds`` is outside ``bounds`` (inclusive), in seconds as the user wrote them:
    ``--ttl 0s is below the minimum 1s``; None when it is inside. The command line checks
    this before sending, so it never shows the wire's ``ttl_ms=0 ... 1000 ms``."""
    low, high = bounds
    if seconds < low:
        return f"{flag} {_fmt(seconds)} is below the minimum {_fmt(low)}"
    if seconds > high:
        return f"{flag} {_fmt(seconds)} is above the maximum {_fmt(high)}"
    return None


def _fmt(seconds: float) -> str:
    return "0s" if seconds == 0 else format_duration(seconds)


def default_holder() -> str:
    """The default holder identity: ``HOSTNAME:PID``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def seconds_to_ms(field_name: str, seconds: object) -> int:
    """Convert a duration in seconds to whole milliseconds for the wire.

    Only what cannot be encoded is refused here (negative, NaN, infinite, not a number); the
    server checks the documented bounds and answers ``INVALID_ARGUMENT`` naming them.
    """
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise InvalidArgument(
            f"{field_name} must be a number of seconds, got {type(seconds).__name__}"
        )
    if not math.isfinite(seconds) or seconds < 0:
        raise InvalidArgument(
            f"{field_name} must be a finite number of seconds >= 0, got {seconds}"
        )
    return round(seconds * 1000)


def check_str_map(field_name: str, value: object) -> dict[str, str]:
    """A copy of a str->str mapping (``None`` is empty); refuses other types locally."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidArgument(f"{field_name} must be a mapping of str to str")
    out: dict[str, str] = {}
    items: list[tuple[object, object]] = list(value.items())
    for key, val in items:
        if not isinstance(key, str) or not isinstance(val, str):
            raise InvalidArgument(
                f"{field_name} must map str to str, got {type(key).__name__}: {type(val).__name__}"
            )
        out[key] = val
    return out


def check_token_value(token: object) -> int:
    """A fencing token: an int >= 0; anything else raises InvalidArgument."""
    if isinstance(token, bool) or not isinstance(token, int) or token < 0:
        raise InvalidArgument(f"fencing token must be an integer >= 0, got {token!r}")
    return token


def one_line(text: str) -> str:
    """Collapse whitespace (gRPC connection errors span lines) into one line."""
    return " ".join(text.split())
