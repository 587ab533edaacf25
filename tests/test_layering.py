"""Layering: the core stays pure, and ``import raftlease`` stays light.

- Importing ``raftlease.core`` and ``raftlease.config`` in a fresh interpreter adds none of
  the forbidden modules (asyncio, grpc, protobuf, socket, sqlite3, threading, time) beyond what
  a bare interpreter already has loaded (``time`` usually is, at startup).
- Because a baseline can hide a module, the core's source is also checked for direct imports
  of those modules (and of ``random``'s global functions: only ``random.Random`` is allowed).
- ``import raftlease`` does not import grpc or protobuf (the clients load lazily).
- ``raftlease.__all__`` is sorted.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import raftlease

REPO_ROOT = Path(__file__).resolve().parent.parent
CORE_DIR = REPO_ROOT / "raftlease" / "core"

FORBIDDEN = ("asyncio", "grpc", "google.protobuf", "socket", "sqlite3", "threading", "time")

# These stdlib modules pull in `threading` (and `time`) themselves; if the core uses them, what
# they load is theirs, not the core's. Direct imports are still caught by the source check.
ALLOWED_CARRIERS = ("logging",)

_LIST_MODULES = "import sys, json; {imports}; print(json.dumps(sorted(sys.modules)))"


def _modules_after(*imports: str) -> set[str]:
    """The names in sys.modules of a fresh interpreter after running the given imports."""
    code = _LIST_MODULES.format(imports="; ".join(imports) or "pass")
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, f"{imports} failed in a fresh interpreter:\n{out.stderr}"
    return set(json.loads(out.stdout))


def _forbidden_in(modules: set[str]) -> set[str]:
    return {m for m in modules for f in FORBIDDEN if m == f or m.startswith(f + ".")}


def test_core_and_config_import_no_io_clock_or_rpc_modules() -> None:
    baseline = _modules_after()
    loaded = _modules_after("import raftlease.core", "import raftlease.config")
    allowed = set(baseline)
    for carrier in ALLOWED_CARRIERS:
        if carrier in loaded:
            allowed |= _modules_after(f"import {carrier}")
    added = _forbidden_in(loaded - allowed)
    roots = sorted(m for m in added if m.rpartition(".")[0] not in added)
    assert not added, f"importing raftlease.core/raftlease.config loaded {roots}"


def _direct_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import statement in a source file, including nested ones."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            if node.module == "random":
                # `from random import Random` is the injected-RNG pattern; anything else
                # (random.random, shuffle, ...) is the global RNG.
                found.extend(
                    (node.lineno, f"random.{alias.name}")
                    for alias in node.names
                    if alias.name != "Random"
                )
            else:
                found.append((node.lineno, node.module))
    return found


def test_core_source_has_no_forbidden_direct_imports() -> None:
    sources = [*sorted(CORE_DIR.rglob("*.py")), REPO_ROOT / "raftlease" / "config.py"]
    bad = [
        f"{path.relative_to(REPO_ROOT)}:{line}: {module}"
        for path in sources
        for line, module in _direct_imports(path)
        if module.startswith("random.") or _forbidden_in({module})
    ]
    assert not bad, "forbidden imports in the core:\n" + "\n".join(bad)


def test_import_raftlease_does_not_import_grpc() -> None:
    loaded = _modules_after("import raftlease")
    heavy = {m for m in loaded if m.split(".")[0] == "grpc" or m.startswith("google.protobuf")}
    assert not heavy, f"`import raftlease` loaded {sorted(heavy)}"


def test_all_is_sorted() -> None:
    assert raftlease.__all__ == sorted(raftlease.__all__)


def test_all_names_resolve_lazily_listed() -> None:
    # Every public name is either defined eagerly or known to the lazy loader.
    lazy = set(vars(raftlease).get("_LAZY", {}))
    missing = [n for n in raftlease.__all__ if n not in vars(raftlease) and n not in lazy]
    assert not missing, f"__all__ names with no definition: {missing}"
