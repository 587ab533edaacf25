"""What the release tests read from the repository: pyproject.toml's requirements, the CI pins
of constraints.txt, the versions the generated code in raftlease/v1 asks for, CHANGELOG.md.

(The directory is ``tests/release``, not ``tests/packaging``: ``tests/`` has no
``__init__.py``, so a ``packaging`` package here would shadow the ``packaging`` library.)
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO_ROOT = Path(__file__).resolve().parents[2]
GEN_DIR = REPO_ROOT / "raftlease" / "v1"

# Runtime requirements whose lowest and newest allowed versions the install test exercises.
RUNTIME_EXTRAS = ("uvloop",)


def norm(name: str) -> str:
    """A distribution name in canonical form (``Prometheus_Client`` -> ``prometheus-client``)."""
    return str(canonicalize_name(name))


def pyproject() -> dict[str, object]:
    with (REPO_ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


def _project() -> dict[str, object]:
    project = pyproject()["project"]
    assert isinstance(project, dict)
    return project


def runtime_requirements() -> list[Requirement]:
    """[project].dependencies plus the runtime extras (uvloop), as parsed requirements."""
    project = _project()
    deps = project["dependencies"]
    extras = project["optional-dependencies"]
    assert isinstance(deps, list)
    assert isinstance(extras, dict)
    texts: list[str] = list(deps)
    for extra in RUNTIME_EXTRAS:
        texts += extras[extra]
    return [Requirement(t) for t in texts]


def lower_bound(req: Requirement) -> Version:
    """The version of the requirement's ``>=`` clause (every runtime requirement has one)."""
    lows = [Version(s.version) for s in req.specifier if s.operator == ">="]
    assert len(lows) == 1, f"{req}: expected exactly one >= lower bound"
    return lows[0]


def constraints() -> dict[str, Version]:
    """constraints.txt: canonical name -> pinned version."""
    pins: dict[str, Version] = {}
    for raw in (REPO_ROOT / "constraints.txt").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        assert sep, f"constraints.txt: {raw!r} is not an exact pin"
        pins[norm(name)] = Version(version.strip())
    return pins


def generated_grpc_versions() -> set[str]:
    """GRPC_GENERATED_VERSION of every raftlease/v1/*_pb2_grpc.py (the grpcio they demand)."""
    found = set()
    for path in sorted(GEN_DIR.glob("*_pb2_grpc.py")):
        m = re.search(r"^GRPC_GENERATED_VERSION = '([^']+)'$", path.read_text(), re.M)
        assert m, f"{path.name}: no GRPC_GENERATED_VERSION"
        found.add(m.group(1))
    return found


def generated_protobuf_versions() -> set[str]:
    """The protobuf gencode version of every raftlease/v1/*_pb2.py (the oldest runtime that
    loads them)."""
    found = set()
    for path in sorted(GEN_DIR.glob("*_pb2.py")):
        m = re.search(r"^# Protobuf Python Version: (\S+)$", path.read_text(), re.M)
        assert m, f"{path.name}: no 'Protobuf Python Version' line"
        found.add(m.group(1))
    return found


def changelog_version() -> str:
    """The version of CHANGELOG.md's first release heading (``## X.Y.Z ...``)."""
    text = (REPO_ROOT / "CHANGELOG.md").read_text()
    m = re.search(r"^## \[?(\d+\.\d+\.\d+\S*?)\]?(?:\s|$)", text, re.M)
    assert m, "CHANGELOG.md: no '## X.Y.Z' heading"
    return m.group(1)
