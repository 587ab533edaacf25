"""Heartbeats from a command run by ``raftlease run`` to its supervisor (docs/singleton.md).

A command run with ``raftlease run NAME --heartbeat-timeout 5s -- CMD`` must prove it is not
hung by writing a line to the file descriptor named in ``RAFTLEASE_HEARTBEAT_FD`` at least
once per timeout; a line may carry a small status payload of ``key=value`` words, which the
supervisor sends as the lease's health payload with its keepalives (so it shows in
``raftlease holder``, ``raftlease leases`` and ``raftlease watch``)::

    from raftlease.heartbeat import beat

    while True:
        last_id = process_next_batch()
        beat(queue_depth=len(queue), last_id=last_id)

From a shell: ``echo "queue_depth=3 last_id=991" >&"$RAFTLEASE_HEARTBEAT_FD"``.

:func:`beat` does nothing (and returns False) when the process was not started by
``raftlease run``, so the same code runs outside it. Standard library only: importing this
module does not import grpc or the client.

The line format (:func:`format_beat`, :func:`parse_beat`): one line per beat, at most
:data:`MAX_LINE_BYTES` bytes of UTF-8 (one ``write``, atomic on a pipe); whitespace-separated
words; a word ``key=value`` (split at the first ``=``, key not empty) is a status entry, any
other word is ignored (``echo beat`` is a bare beat). Values are percent-decoded, so
:func:`format_beat` writes a value with spaces as ``two%20words``. A beat with entries
replaces the status the supervisor reports; a beat without entries keeps it.
"""

from __future__ import annotations

import contextlib
import os
from urllib.parse import quote, unquote

__all__ = [
    "ENV_FD",
    "ENV_TIMEOUT",
    "MAX_LINE_BYTES",
    "beat",
    "enabled",
    "format_beat",
    "interval",
    "parse_beat",
]

ENV_FD = "RAFTLEASE_HEARTBEAT_FD"
"""The write end of the supervisor's heartbeat pipe, set for every command ``raftlease run``
starts (beats carry the status payload even without ``--heartbeat-timeout``)."""

ENV_TIMEOUT = "RAFTLEASE_HEARTBEAT_TIMEOUT"
"""``--heartbeat-timeout`` in seconds, set only when the supervisor enforces one."""

MAX_LINE_BYTES = 4096  # PIPE_BUF on Linux: a write this small is never interleaved

_SAFE = "!\"#$&'()*+,-./:;<>?@[\\]^_`{|}~"  # printable ASCII but space, '%' and '='

_fd: int | None = None  # the descriptor made non-blocking by this process, once


def format_beat(status: dict[str, object] | None = None) -> bytes:
    """One beat line (with its newline) carrying ``status``; values are ``str()``-ed and
    percent-encoded where needed. Raises ValueError for a key that is empty or contains
    whitespace or ``=``, or for a line longer than :data:`MAX_LINE_BYTES`."""
    words = []
    for key, value in (status or {}).items():
        if not key or "=" in key or any(c.isspace() for c in key) or not key.isprintable():
            raise ValueError(f"bad heartbeat status key {key!r}")
        words.append(f"{key}={quote(str(value), safe=_SAFE)}")
    line = (" ".join(words) + "\n").encode("utf-8")
    if len(line) > MAX_LINE_BYTES:
        raise ValueError(f"heartbeat line is {len(line)} bytes; the limit is {MAX_LINE_BYTES}")
    return line


def parse_beat(line: str) -> dict[str, str]:
    """The status entries of one beat line (empty for a bare beat); later keys win."""
    status: dict[str, str] = {}
    for word in line.split():
        key, sep, value = word.partition("=")
        if sep and key:
            status[key] = unquote(value)
    return status


def _channel() -> int | None:
    global _fd
    text = os.environ.get(ENV_FD, "")
    if not text.isdigit():
        return None
    fd = int(text)
    if _fd != fd:
        try:
            os.set_blocking(fd, False)  # never block the worker: a full pipe drops the beat
        except OSError:
            return None
        _fd = fd
    return fd


def enabled() -> bool:
    """True when running under ``raftlease run`` (a heartbeat channel was passed)."""
    return os.environ.get(ENV_FD, "").isdigit()


def interval() -> float | None:
    """A sensible period between beats: a third of ``--heartbeat-timeout``; None when the
    supervisor enforces no timeout (beats then only carry the status)."""
    with contextlib.suppress(ValueError):
        timeout = float(os.environ.get(ENV_TIMEOUT, ""))
        if timeout > 0:
            return timeout / 3.0
    return None


def beat(**status: object) -> bool:
    """Tell the supervisor this process is alive, with an optional status payload
    (``beat(queue_depth=3, last_id=991)``). True if the line was written; False when not run
    by ``raftlease run`` or when the write failed (the pipe is full or closed): it never
    blocks and never raises for I/O. Raises ValueError for a malformed key or a line over
    :data:`MAX_LINE_BYTES`."""
    line = format_beat(status)
    fd = _channel()
    if fd is None:
        return False
    try:
        return os.write(fd, line) == len(line)
    except OSError:
        return False
