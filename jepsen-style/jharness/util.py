"""Small shared helpers: the reference clock, JSONL files."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent  # jepsen-style/
REPO = HERE.parent


def now() -> float:
    """The reference clock: CLOCK_MONOTONIC, shared by every process on this machine."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


class JsonlWriter:
    """Append-only JSON-lines file, flushed per line, safe to share between threads."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._f = open(self.path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
        self._lock = threading.Lock()

    def write(self, obj: dict[str, Any]) -> None:
        line = json.dumps(obj, separators=(",", ":"), sort_keys=True, default=str)
        with self._lock:
            if not self._f.closed:
                self._f.write(line + "\n")

    def close(self) -> None:
        with self._lock:
            self._f.close()


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    p = Path(path)
    if not p.exists():
        return out
    with open(p, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # a line torn by a SIGKILL
    return out
