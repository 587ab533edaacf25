"""The node's log: one line per event, as text (the default) or one JSON object per line.

``raftlease serve --log-format json`` (or ``RAFTLEASE_LOG_FORMAT=json``) writes each record as
one JSON object on one line::

    {"ts": "2026-12-03T10:00:00.123Z", "level": "INFO", "logger": "raftlease.node",
     "msg": "n1 became leader at term 3", "node": "n1", "term": 3}

with ``lease`` (and ``lease_id``, ``holder``) on the records about one lease, ``exc`` (the
traceback, as one string) when there is one, and any other ``extra=`` field of the record.
``term`` is the node's current term when the record was made (absent before the node exists).

The text format is unchanged from earlier versions (``ASCTIME NODE LEVEL LOGGER: MESSAGE``):
tools read it (the jepsen-style checker anchors its vote regex at the end of the line, the
benchmark parses the timestamp), so nothing is appended to it.

gRPC's C core logs through its own channel (absl, ``GRPC_VERBOSITY`` / ``GRPC_TRACE``), straight
to stderr and in its own format; :func:`quiet_grpc_core` sets ``GRPC_VERBOSITY=ERROR`` unless
the user set it, before grpc is imported, so only its errors reach the node's log.

Standard library only (no clock reads for decisions: ``ts`` is logging's own ``created``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Callable, MutableMapping

__all__ = [
    "LOG_FORMATS",
    "LOG_LEVELS",
    "JsonFormatter",
    "NodeContext",
    "configure_logging",
    "parse_log_level",
    "quiet_grpc_core",
    "set_term_source",
    "text_format",
]

LOG_FORMATS: Final = ("text", "json")
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: What serve sets GRPC_VERBOSITY to when the environment does not say (C-core errors only).
GRPC_VERBOSITY_DEFAULT: Final = "ERROR"

# Attributes every LogRecord has; anything else on a record came from ``extra=`` (or from a
# filter) and is written as a field of its own.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
_RENAMED = {"node_id": "node"}
_FIRST = ("node", "term", "lease")  # so a record's extra node id does not repeat the node field


def text_format(node_id: str) -> str:
    """The text format (unchanged): ``ASCTIME NODE LEVEL LOGGER: MESSAGE``."""
    return f"%(asctime)s {node_id} %(levelname)s %(name)s: %(message)s"


def parse_log_level(text: str) -> str:
    """``info`` -> ``INFO``; ValueError naming the accepted levels otherwise."""
    level = text.strip().upper()
    if level not in LOG_LEVELS:
        raise ValueError(f"invalid log level {text!r}: use one of {', '.join(LOG_LEVELS)}")
    return level


class NodeContext(logging.Filter):
    """Adds ``node`` (this process's node id) and ``term`` (from the term source, once the node
    exists) to every record that does not carry them already. Installed on the handler, so it
    sees records of every logger (grpc's Python loggers included)."""

    def __init__(self, node_id: str) -> None:
        super().__init__()
        self.node_id = node_id
        self.term: Callable[[], int] | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        fields: MutableMapping[str, Any] = record.__dict__
        fields.setdefault("node", self.node_id)
        if self.term is not None and "term" not in fields:
            with contextlib.suppress(Exception):  # a line must never fail for its context
                fields["term"] = self.term()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: ts (UTC, ISO 8601, milliseconds), level,
    logger, msg, then node, term, lease and every other extra field of the record, then exc."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, tz=UTC)
        out: dict[str, Any] = {
            "ts": stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = record.__dict__
        for key in _FIRST:  # node, term, lease first, where the record has them
            if key in fields:
                out[key] = fields[key]
        for key, value in fields.items():
            if key not in _STANDARD and not key.startswith("_"):
                out.setdefault(_RENAMED.get(key, key), value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False, separators=(",", ":"))


_context: NodeContext | None = None


def configure_logging(
    node_id: str, log_format: str = "text", level: str = "INFO", stream: Any = None
) -> logging.Handler:
    """Send every record of this process to ``stream`` (default stderr) in ``log_format``,
    from ``level`` up; replaces the root logger's handlers. Returns the handler."""
    global _context
    if log_format not in LOG_FORMATS:
        raise ValueError(f"invalid log format {log_format!r}: use one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    _context = NodeContext(node_id)
    handler.addFilter(_context)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(text_format(node_id)))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(parse_log_level(level))
    logging.captureWarnings(True)  # a Python warning is a log record too, not a stray line
    return handler


def set_term_source(term: Callable[[], int] | None) -> None:
    """From now on, records carry ``term=term()`` (the node's current term); None stops it.
    A no-op unless :func:`configure_logging` ran (a node embedded in another program)."""
    if _context is not None:
        _context.term = term


def quiet_grpc_core(environ: MutableMapping[str, str] | None = None) -> None:
    """Keep gRPC's C-core lines out of the node's log unless asked for: set
    ``GRPC_VERBOSITY=ERROR`` when the environment does not set it. Must run before grpc is
    imported (the C core reads it once). ``GRPC_TRACE`` is left alone: setting it is asking."""
    env = os.environ if environ is None else environ
    if not env.get("GRPC_VERBOSITY"):
        env["GRPC_VERBOSITY"] = GRPC_VERBOSITY_DEFAULT
