"""Layering: the core stays pure, every package imports only what the table allows, and
``import raftlease`` stays light.

- Importing ``raftlease.core`` and ``raftlease.config`` in a fresh interpreter adds none of
  the forbidden modules (asyncio, grpc, protobuf, socket, sqlite3, threading, time) beyond what
  a bare interpreter already has loaded (``time`` usually is, at startup).
- Because a baseline can hide a module, the core's source is also checked for direct imports
  of those modules (and of ``random``'s global functions: only ``random.Random`` is allowed).
- The import table (``ALLOWED``): which raftlease package or top-level module may import which.
  Every import statement counts there: at module level, inside functions (a lazy import still
  runs) and under ``if TYPE_CHECKING:`` (a type-only import is still a dependency on that
  layer). ``NO_GRPC`` packages must not load grpc: here only imports that run count (module
  and function level, not TYPE_CHECKING), followed through raftlease modules (importing
  ``a.b.c`` also runs ``a`` and ``a.b``); the generated ``raftlease.v1.*_pb2_grpc`` modules
  import grpc. ``importlib.import_module`` calls are not seen (the root package's lazy client
  loader is covered by the fresh-interpreter check below). Every violation is listed in one
  assertion message.
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


# ---------------------------------------------------------------------------- the import table

PKG_DIR = REPO_ROOT / "raftlease"
ROOT = "raftlease"  # the package's own __init__ (``from raftlease import __version__``)

# Unit -> the other units it may import. A unit is a top-level module or a subpackage of
# raftlease; imports inside a unit are free. Reading down the table goes up the layers.
ALLOWED: dict[str, frozenset[str]] = {
    name: frozenset(deps)
    for name, deps in {
        # L0: shared vocabulary.
        "types": (),
        "errors": ("types",),
        "config": ("errors", "types"),
        "settings": ("config", "errors", "types"),  # ServerConfig
        "logs": (),  # the node's log formats (stdlib only)
        "config_file": ("settings",),  # serve --config FILE and RAFTLEASE_* variables
        "clock": ("errors", "types"),
        "heartbeat": (),  # what a `raftlease run` child imports to beat (stdlib only)
        "failpoints": ("errors", "types"),
        "v1": (),  # generated protobuf/grpc modules
        # Pure: no I/O, no clock, no grpc or protobuf.
        "core": ("config", "errors", "types"),
        "fsm": ("errors", "types"),
        "service": ("config", "core", "errors", "fsm", "types"),
        # L2/L3: storage, wire codec, the asyncio driver and its observer hook.
        "storage": ("config", "core", "errors", "types"),
        "codec": ("core", "types", "v1"),
        "observe": ("core", "fsm", "types"),
        "transport": ("codec", "config", "core", "errors", "types", "v1"),
        "node": (
            "clock",
            "config",
            "core",
            "errors",
            "fsm",
            "observe",
            "service",
            "settings",
            "storage",
            "transport",
            "types",
        ),
        # testing/faults.py wraps a node's storage and transport (their Protocols only); the
        # simulated clients drive the shipped client's pure step machines (client/_protocol
        # and what it imports: no grpc, see NO_GRPC).
        "testing": (
            "client",
            "clock",
            "config",
            "core",
            "errors",
            "failpoints",
            "fsm",
            "observe",
            "service",
            "storage",
            "transport",
            "types",
        ),
        # LocalCluster: starts real `raftlease serve` processes and polls their Status over
        # gRPC (tests, jepsen-style, bench and `raftlease cluster` share it).
        "testing.local": ("errors", "types", "v1"),
        # L4: the gRPC server and what runs it. The server leaves the wire format to the
        # transport (no codec) and never imports a client.
        "metrics": (ROOT, "clock", "config", "core", "errors", "fsm", "node", "observe", "types"),
        # A node's TLS credentials and the auth rules' interceptor (docs/security.md); the
        # development CA of `raftlease certs` (the cryptography package, and the name rule
        # node ids share).
        "auth": ("errors", "v1"),
        "certs": ("types",),
        # The server reads RAFTLEASE_FAILPOINTS and, only when it arms something, wraps the
        # node's seams with raftlease.testing.faults (imported then, never otherwise).
        "server": (
            "auth",
            "clock",
            "config",
            "core",
            "errors",
            "failpoints",
            "fsm",
            "logs",
            "metrics",
            "node",
            "observe",
            "service",
            "settings",
            "storage",
            "testing",
            "transport",
            "types",
            "v1",
        ),
        # Clients: gRPC only, never the node, the server or storage.
        "client": ("clock", "config", "errors", "fsm", "heartbeat", "types", "v1"),
        ROOT: ("client", "errors", "types"),
        "cli": (
            ROOT,
            "certs",
            "cli_members",
            "client",
            "config",
            "config_file",
            "errors",
            "logs",
            "server",
            "settings",
            "testing.local",
            "types",
        ),
        # `raftlease member|snapshot`: the CLI's helpers, the client, and (for snapshot
        # restore, which writes a new data dir) the core's values, the table and storage.
        "cli_members": (
            "cli",
            "client",
            "core",
            "errors",
            "fsm",
            "storage",
            "types",
            "v1",
        ),
        "settings_doc": ("cli", "config_file"),  # writes docs/settings.md
        "__main__": ("cli",),
    }.items()
}

# Units that may be absent (created by work in progress); any other row needs its unit.
OPTIONAL_UNITS = frozenset({"service"})

# Units that never load grpc, directly or through any raftlease module they import.
NO_GRPC = frozenset(
    {"clock", "codec", "config", "core", "errors", "fsm", "node", "service", "settings"}
    | {"storage", "testing", "types"}
    | {"config_file", "logs"}
    | {"heartbeat"}
)
GRPC_ROOTS = ("grpc", "grpc_health")


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


# Modules that form a unit of their own inside a subpackage.
SUBUNITS = ("raftlease.testing.local",)


def _unit_of(module: str) -> str:
    """``raftlease.core.raft`` -> ``core``; ``raftlease`` -> ROOT; a SUBUNITS module ->
    its dotted name below raftlease (``testing.local``)."""
    for sub in SUBUNITS:
        if module == sub or module.startswith(sub + "."):
            return sub.partition(".")[2]
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ROOT


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path, module: str | None = None) -> list[tuple[int, str, bool]]:
    """(line, imported module, runs) for every import statement in a source file.

    ``runs`` is False under ``if TYPE_CHECKING:`` (and in the else of ``if not
    TYPE_CHECKING:``). ``from P import x`` yields ``P.x`` when that is a module of the
    repository, else ``P``. Relative imports are resolved.
    """
    module = module or _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[int, str, bool]] = []

    def resolve(node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        base = package.split(".")
        base = base[: len(base) - (node.level - 1)]
        return ".".join([*base, *([node.module] if node.module else [])])

    def visit(stmts: list[ast.stmt], runs: bool) -> None:
        for stmt in stmts:
            if isinstance(stmt, ast.Import):
                found.extend((stmt.lineno, a.name, runs) for a in stmt.names)
            elif isinstance(stmt, ast.ImportFrom):
                base = resolve(stmt)
                for a in stmt.names:
                    sub = f"{base}.{a.name}"
                    is_module = (REPO_ROOT / Path(*sub.split("."))).with_suffix(
                        ".py"
                    ).is_file() or (REPO_ROOT / Path(*sub.split(".")) / "__init__.py").is_file()
                    item = (stmt.lineno, sub if is_module else base, runs)
                    if item not in found:  # `from P import x, y` of one module: once
                        found.append(item)
            elif isinstance(stmt, ast.If) and _is_type_checking(stmt.test):
                visit(stmt.body, False)
                visit(stmt.orelse, runs)
            elif (
                isinstance(stmt, ast.If)
                and isinstance(stmt.test, ast.UnaryOp)
                and isinstance(stmt.test.op, ast.Not)
                and _is_type_checking(stmt.test.operand)
            ):
                visit(stmt.body, runs)
                visit(stmt.orelse, False)
            else:
                # Function and class bodies, try/with/for/while/if/match blocks.
                for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                    for child in getattr(stmt, field, ()):
                        if isinstance(child, ast.stmt):
                            visit([child], runs)
                        else:  # an except handler or a match case
                            visit(child.body, runs)

    visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)).body, True)
    return found


def _sources() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PKG_DIR.rglob("*.py"))}


def _with_parents(module: str) -> list[str]:
    """What importing ``module`` runs: ``a.b.c`` -> ``a``, ``a.b``, ``a.b.c``."""
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def _table_violations(sources: dict[str, Path]) -> list[str]:
    bad: list[str] = []
    units = {_unit_of(m) for m in sources}
    for unit in sorted(units - set(ALLOWED)):
        bad.append(f"raftlease unit {unit!r} has no row in ALLOWED: add one")
    for unit in sorted(set(ALLOWED) - units - OPTIONAL_UNITS):
        bad.append(f"ALLOWED has a row for {unit!r}, which does not exist: remove it")
    for module, path in sources.items():
        unit = _unit_of(module)
        allowed = ALLOWED.get(unit, frozenset())
        for line, imported, runs in _imports(path):
            if imported != ROOT and not imported.startswith(ROOT + "."):
                continue
            target = _unit_of(imported)
            if target != unit and target not in allowed:
                kind = "" if runs else " (under TYPE_CHECKING)"
                bad.append(
                    f"{path.relative_to(REPO_ROOT)}:{line}: {unit} imports {imported}{kind}; "
                    f"{unit} may import {sorted(allowed) or 'no other raftlease unit'}"
                )
    return bad


def _grpc_violations(sources: dict[str, Path]) -> list[str]:
    runtime: dict[str, list[str]] = {}  # module -> raftlease modules its imports run
    direct: dict[str, str] = {}  # module -> "file:line: import grpc..."
    for module, path in sources.items():
        deps: list[str] = []
        for line, imported, runs in _imports(path):
            if not runs:
                continue
            if imported.split(".")[0] in GRPC_ROOTS:
                direct.setdefault(
                    module, f"{path.relative_to(REPO_ROOT)}:{line} imports {imported}"
                )
            elif imported.split(".")[0] == ROOT:
                deps.extend(m for m in _with_parents(imported) if m in sources and m != module)
        runtime[module] = deps
    bad: list[str] = []
    for module in sorted(m for m in sources if _unit_of(m) in NO_GRPC):
        # Breadth-first: the shortest chain of imports from `module` to one that loads grpc.
        chain: dict[str, str | None] = dict.fromkeys(_with_parents(module))
        queue = list(chain)
        while queue:
            current = queue.pop(0)
            if current in direct:
                hops = [current]
                while (prev := chain[hops[-1]]) is not None:
                    hops.append(prev)
                via = " -> ".join(reversed(hops))
                bad.append(f"{module} loads grpc: {via}; {direct[current]}")
                break
            for dep in runtime.get(current, ()):
                if dep not in chain:
                    chain[dep] = current
                    queue.append(dep)
    return bad


def test_import_table() -> None:
    sources = _sources()
    bad = _table_violations(sources) + _grpc_violations(sources)
    assert not bad, f"{len(bad)} layering violation(s):\n" + "\n".join(bad)


_PARSER_SAMPLE = """
from typing import TYPE_CHECKING
import raftlease.errors
from raftlease.core import raft, RaftCore
from . import base
from ..codec import message_to_pb
if TYPE_CHECKING:
    from raftlease.node import Node
else:
    from raftlease import clock
if not TYPE_CHECKING:
    import grpc
def f():
    try:
        from raftlease.server import serve
    except ImportError:
        import raftlease.metrics
class C:
    def g(self):
        with x:
            from raftlease.fsm import limits
"""


def test_import_parser_sees_every_kind_of_import(tmp_path: Path) -> None:
    """The parser finds imports at any depth, tells TYPE_CHECKING apart, resolves relatives."""
    path = tmp_path / "mod.py"
    path.write_text(_PARSER_SAMPLE, encoding="utf-8")
    found = [(m, runs) for _, m, runs in _imports(path, "raftlease.transport.mod")]
    assert found == [
        ("typing", True),
        ("raftlease.errors", True),
        ("raftlease.core.raft", True),
        ("raftlease.core", True),
        ("raftlease.transport.base", True),
        ("raftlease.codec", True),
        ("raftlease.node", False),
        ("raftlease.clock", True),
        ("grpc", True),
        ("raftlease.server", True),
        ("raftlease.metrics", True),
        ("raftlease.fsm.limits", True),
    ]


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
