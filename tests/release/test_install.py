"""raftlease as a library: build the sdist from a copy of the source tree, the wheel from that
sdist (so the sdist is proven complete), check what both carry, then install the wheel into
clean venvs with

- ``lowest``: every runtime requirement at its lower bound (pyproject.toml), uvloop extra;
- ``newest``: whatever pip picks today inside the ranges, without the uvloop extra (the
  server must fall back to asyncio's loop),

and in each run ``raftlease --version`` and a script that imports the client and the server
and runs a 3-node cluster (one node serving metrics) through an acquire and a release.

pip needs the package index: the test skips, saying so, when it cannot be reached. pip's
cache serves the wheels after the first run; about 10 s a venv on the project's VM (14 s
with an empty cache).
"""

from __future__ import annotations

import email.parser
import json
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

import raftlease

from ._project import REPO_ROOT, lower_bound, norm, runtime_requirements

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(400)]

INDEX_URL = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple/").rstrip("/") + "/"
STUBS = {f"{m}_pb2{g}.pyi" for m in ("cluster", "lease", "raft") for g in ("", "_grpc")}
# Not copied into the build tree: caches, venvs, run output, VCS data.
COPY_IGNORE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "venv",
    ".*_cache",
    ".hypothesis",
    "__pycache__",
    "*.egg-info",
    "build",
    "dist",
    "data",
    "runs",
    "results",
)


def _clean_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP"}
    }
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PIP_NO_INPUT"] = "1"
    env["RAFTLEASE_LOG_LEVEL"] = "INFO"  # the smoke script reads the event-loop line
    env.pop("RAFTLEASE_EVENT_LOOP", None)
    return env


def _run(argv: list[str | Path], cwd: Path, timeout: float = 240.0) -> str:
    proc = subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"exit {proc.returncode}: {' '.join(map(str, argv))}\n"
            f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}"
        )
    return proc.stdout


@pytest.fixture(scope="module")
def index_reachable() -> None:
    request = urllib.request.Request(INDEX_URL + "grpcio/", method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=10):
            pass
    except (urllib.error.URLError, OSError) as err:
        pytest.skip(
            f"package index {INDEX_URL} unreachable ({err}): installing the wheel with the "
            "lowest and newest grpcio/protobuf needs it"
        )


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sdist (built from a copy of the working tree) and the wheel (built from the
    unpacked sdist), both with the PEP 517 backend of the dev venv's setuptools."""
    root = tmp_path_factory.mktemp("dist")
    src = root / "src"
    shutil.copytree(REPO_ROOT, src, ignore=COPY_IGNORE)
    out = root / "out"
    build = "import sys; from setuptools import build_meta as b; print(b.build_{}(sys.argv[1]))"
    sdist = out / _run([sys.executable, "-c", build.format("sdist"), out], src).splitlines()[-1]
    with tarfile.open(sdist) as tar:
        tar.extractall(root / "unpacked", filter="data")
    (unpacked,) = (root / "unpacked").iterdir()
    wheel = (
        out / _run([sys.executable, "-c", build.format("wheel"), out], unpacked).splitlines()[-1]
    )
    return {"sdist": sdist, "wheel": wheel}


def test_sdist_contents(dists: dict[str, Path]) -> None:
    with tarfile.open(dists["sdist"]) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert "raftlease/py.typed" in names
    assert {f"raftlease/v1/{s}" for s in STUBS} <= names
    protos = {p.relative_to(REPO_ROOT).as_posix() for p in REPO_ROOT.glob("protos/**/*.proto")}
    assert protos
    assert protos <= names
    assert {"pyproject.toml", "README.md", "CHANGELOG.md", "constraints.txt"} <= names
    assert not [n for n in names if n.startswith("tests/") or "__pycache__" in n]


def test_wheel_contents(dists: dict[str, Path]) -> None:
    with zipfile.ZipFile(dists["wheel"]) as whl:
        names = set(whl.namelist())
        info = f"raftlease-{raftlease.__version__}.dist-info"
        meta = email.parser.Parser().parsestr(whl.read(f"{info}/METADATA").decode())
        entry_points = whl.read(f"{info}/entry_points.txt").decode()
    assert "raftlease/py.typed" in names
    assert {f"raftlease/v1/{s}" for s in STUBS} <= names
    assert "raftlease/testing/local.py" in names
    assert "raftlease = raftlease.cli:main" in entry_points
    assert meta["Version"] == raftlease.__version__
    declared = {str(r) for r in runtime_requirements()}
    shipped = {str(Requirement(r)) for r in meta.get_all("Requires-Dist") or []}
    # Runtime requirements as declared; the uvloop extra's one carries its extra marker.
    assert declared - shipped == {str(r) for r in runtime_requirements() if r.name == "uvloop"}
    assert any(r.startswith("uvloop") and 'extra == "uvloop"' in r for r in shipped)
    assert not [r for r in shipped if "==" in r and "extra ==" not in r], "an exact pin"


SMOKE = textwrap.dedent(
    """
    import importlib.metadata
    import importlib.resources
    import json
    import sys
    import urllib.request
    from pathlib import Path

    import raftlease
    import raftlease.client
    import raftlease.server
    from raftlease import LeaseClient
    from raftlease.testing.local import LocalCluster, free_port

    root = Path(sys.argv[1])
    out = {
        "file": raftlease.__file__,
        "version": raftlease.__version__,
        "dist_version": importlib.metadata.version("raftlease"),
        "installed": {
            d.metadata["Name"].lower(): d.version for d in importlib.metadata.distributions()
        },
        "typed": importlib.resources.files("raftlease").joinpath("py.typed").is_file(),
        "stubs": sorted(
            p.name
            for p in importlib.resources.files("raftlease.v1").iterdir()
            if p.name.endswith(".pyi")
        ),
    }
    metrics = f"127.0.0.1:{free_port()}"
    cluster = LocalCluster(root / "cluster", 3, cwd=root)
    try:
        cluster.start("n1", "--metrics", metrics)
        cluster.start("n2")
        cluster.start("n3")
        cluster.wait_leader(30, check_exits=True)
        with LeaseClient(cluster.endpoints, timeout=10.0) as client:
            with client.acquire("smoke", ttl=5.0, wait=10.0) as lease:
                out["token"] = lease.fencing_token
                out["valid"] = lease.is_valid()
            out["holder_after_release"] = client.holder("smoke")
        with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=5) as page:
            text = page.read().decode()
        out["node_info"] = [ln for ln in text.splitlines() if ln.startswith("raftlease_node_info")]
    finally:
        out["exit_codes"] = cluster.stop()
    out["event_loops"] = sorted(
        {
            line.split("event loop: ", 1)[1]
            for node in cluster.nodes.values()
            for line in node.log_text().splitlines()
            if "event loop: " in line
        }
    )
    print(json.dumps(out))
    """
)


def _requirements(variant: str, wheel: Path) -> list[str]:
    if variant == "newest":
        return [str(wheel)]
    pins = [f"{r.name}=={lower_bound(r)}" for r in runtime_requirements()]
    return [f"raftlease[uvloop] @ {wheel.as_uri()}", *pins]


@pytest.mark.usefixtures("index_reachable")
@pytest.mark.parametrize("variant", ["lowest", "newest"])
def test_wheel_installs_and_runs_in_a_clean_venv(
    variant: str, dists: dict[str, Path], tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv], tmp_path, timeout=120)
    py = venv / "bin" / "python"
    pip: list[str | Path] = [py, "-m", "pip", "install", "--quiet", "--only-binary=:all:"]
    _run([*pip, *_requirements(variant, dists["wheel"])], tmp_path)

    version = _run([venv / "bin" / "raftlease", "--version"], tmp_path).strip()
    assert version == f"raftlease {raftlease.__version__}"

    (tmp_path / "smoke.py").write_text(SMOKE)
    # -I: neither the cwd nor PYTHON* variables reach sys.path; only the venv's packages.
    out: dict[str, Any] = json.loads(
        _run([py, "-I", tmp_path / "smoke.py", tmp_path], tmp_path, timeout=120).splitlines()[-1]
    )
    installed = {norm(k): v for k, v in out["installed"].items()}
    print(variant, json.dumps({k: installed[k] for k in sorted(installed)}))

    assert Path(out["file"]).is_relative_to(venv)
    assert out["version"] == out["dist_version"] == raftlease.__version__
    assert out["typed"]
    assert set(out["stubs"]) == STUBS
    assert out["valid"]
    assert out["token"] > 0
    assert out["holder_after_release"] is None
    assert out["exit_codes"] == {"n1": 0, "n2": 0, "n3": 0}
    (info,) = out["node_info"]
    assert f'version="{raftlease.__version__}"' in info

    bounds = {norm(r.name): lower_bound(r) for r in runtime_requirements()}
    if variant == "lowest":
        assert {n: Version(installed[n]) for n in bounds} == bounds
        assert out["event_loops"] == [f"uvloop {installed['uvloop']}"]
    else:
        assert "uvloop" not in installed
        assert out["event_loops"] == ["asyncio (uvloop not installed)"]
        for req in runtime_requirements():
            name = norm(req.name)
            if name != "uvloop":
                assert req.specifier.contains(installed[name]), f"{name}=={installed[name]}"
