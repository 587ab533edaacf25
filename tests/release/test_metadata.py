"""The version agrees everywhere it is shown, and the declared requirement ranges agree with
the generated code and with the CI pins (constraints.txt). Fast, no network: the install into
clean venvs is test_install.py."""

from __future__ import annotations

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

import raftlease
from raftlease.cli import main

from ._project import (
    changelog_version,
    constraints,
    generated_grpc_versions,
    generated_protobuf_versions,
    lower_bound,
    norm,
    pyproject,
    runtime_requirements,
)


def test_version_is_read_from_the_package() -> None:
    data = pyproject()
    project = data["project"]
    assert isinstance(project, dict)
    assert "version" in project["dynamic"]
    tool = data["tool"]
    assert isinstance(tool, dict)
    assert tool["setuptools"]["dynamic"]["version"] == {"attr": "raftlease.__version__"}
    assert str(Version(raftlease.__version__)) == raftlease.__version__  # normalized PEP 440


def test_changelog_heads_with_the_current_version() -> None:
    assert changelog_version() == raftlease.__version__


def test_cli_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"raftlease {raftlease.__version__}"


def test_lower_bounds_are_what_the_generated_code_needs() -> None:
    """*_pb2_grpc.py raise on a grpcio older than the grpcio-tools that wrote them, and the
    protobuf runtime raises on gencode newer than itself: the lower bounds must be exactly
    those versions (lower would install and then fail at import; higher would refuse
    applications for nothing)."""
    (grpc_version,) = generated_grpc_versions()
    (protobuf_version,) = generated_protobuf_versions()
    bounds = {norm(r.name): lower_bound(r) for r in runtime_requirements()}
    assert bounds["grpcio"] == Version(grpc_version)
    assert bounds["grpcio-health-checking"] == Version(grpc_version)
    assert bounds["protobuf"] == Version(protobuf_version)


def test_runtime_requirements_are_ranges_with_a_major_cap() -> None:
    for req in runtime_requirements():
        operators = sorted(s.operator for s in req.specifier)
        assert operators == ["<", ">="], f"{req}: expected '>=LOW,<NEXT_MAJOR'"


def test_constraints_pin_every_runtime_requirement_inside_its_range() -> None:
    pins = constraints()
    for req in runtime_requirements():
        name = norm(req.name)
        assert name in pins, f"constraints.txt does not pin {name}"
        assert req.specifier.contains(pins[name]), f"constraints.txt: {name}=={pins[name]}"


def test_ci_runs_the_versions_the_code_was_generated_with() -> None:
    """`make verify-proto` regenerates with the pinned grpcio-tools; its gencode versions must
    be the ones in raftlease/v1, so CI tests the lower bounds of grpcio and protobuf."""
    (grpc_version,) = generated_grpc_versions()
    (protobuf_version,) = generated_protobuf_versions()
    pins = constraints()
    assert pins["grpcio-tools"] == Version(grpc_version)
    assert pins["grpcio"] == Version(grpc_version)
    assert pins["protobuf"] == Version(protobuf_version)


def test_dev_pins_agree_with_constraints() -> None:
    """The dev extra pins its tools too; a bump must change both files (pip would refuse the
    install, but this names the pair)."""
    project = pyproject()["project"]
    assert isinstance(project, dict)
    pins = constraints()
    for text in project["optional-dependencies"]["dev"]:
        req = Requirement(text)
        for spec in req.specifier:
            if spec.operator == "==":
                assert pins.get(norm(req.name)) == Version(spec.version), f"{req} vs constraints"
