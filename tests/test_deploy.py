"""deploy/: the Kubernetes manifests, the systemd unit, the Containerfile, the Prometheus rules
and the health-check script agree with each other and with the code (docs/deployment.md).

Kubernetes: the StatefulSet's probes use the health service names of raftlease/server.py, its
ports are the config's, the ConfigMap's TOML passes `raftlease serve`'s own checks for every
pod (with the id each pod gets), the peer list names exactly the StatefulSet's pods under its
headless service and namespace, the PDB and the Service select the pods. systemd: every
ExecStart flag is a `raftlease serve` flag. Prometheus: every metric the rules use is one
raftlease/metrics.py defines. No server or cluster is started here (one in-process gRPC
health server for the check script).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from concurrent import futures
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

pytest.importorskip("yaml", reason="PyYAML validates the manifests (a dev dependency)")
import yaml

from raftlease.cli import _prepare_serve, serve_parser
from raftlease.server import LEASE_SERVICE, LIVENESS_SERVICE, READY_SERVICE

if TYPE_CHECKING:
    import argparse

REPO_ROOT = Path(__file__).resolve().parent.parent
DEPLOY = REPO_ROOT / "deploy"
K8S = DEPLOY / "k8s"
UNIT = DEPLOY / "systemd" / "raftlease.service"
CONTAINERFILE = DEPLOY / "Containerfile"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
GUIDE = REPO_ROOT / "docs" / "deployment.md"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("RAFTLEASE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("GRPC_VERBOSITY", os.environ.get("GRPC_VERBOSITY", ""))


# -- helpers ----------------------------------------------------------------------------------


def manifests() -> dict[str, dict[str, Any]]:
    """kind -> the one resource of that kind in deploy/k8s (every file the kustomization
    lists, and nothing else)."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    files = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(kustomization["resources"]) == files
    out: dict[str, dict[str, Any]] = {}
    for name in files:
        for doc in yaml.safe_load_all((K8S / name).read_text(encoding="utf-8")):
            assert doc["kind"] not in out, f"two {doc['kind']}s"
            ns = kustomization["namespace"]
            if doc["kind"] == "Namespace":
                assert doc["metadata"]["name"] == ns
            else:
                assert doc["metadata"]["namespace"] == ns, name
            out[doc["kind"]] = doc
    return out


def container(sts: dict[str, Any]) -> dict[str, Any]:
    containers = sts["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    c: dict[str, Any] = containers[0]
    return c


def config_toml(resources: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    text: str = resources["ConfigMap"]["data"]["raftlease.toml"]
    return text, tomllib.loads(text)


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def prepare(config: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> int:
    """`raftlease serve --config CONFIG` with ``env``: its checks, without starting."""
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    args: argparse.Namespace = serve_parser().parse_args(["--config", str(config)])
    return _prepare_serve(args, {})


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) == {"matchLabels"}, selector  # no matchExpressions here
    return all(labels.get(k) == v for k, v in selector["matchLabels"].items())


# -- Kubernetes -------------------------------------------------------------------------------


def test_probes_use_the_servers_health_service_names_on_the_listen_port() -> None:
    res = manifests()
    c = container(res["StatefulSet"])
    _, cfg = config_toml(res)
    port = port_of(cfg["listen"])
    assert c["readinessProbe"]["grpc"] == {"port": port, "service": READY_SERVICE}
    assert c["livenessProbe"]["grpc"] == {"port": port, "service": LIVENESS_SERVICE}
    assert READY_SERVICE != LIVENESS_SERVICE
    assert LEASE_SERVICE
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"grpc": port, "metrics": port_of(cfg["metrics"])}


def test_the_config_map_passes_serve_checks_for_every_pod(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    res = manifests()
    sts = res["StatefulSet"]
    text, cfg = config_toml(res)
    c = container(sts)
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.labels['apps.kubernetes.io/pod-index']"
    )
    id_template = env["RAFTLEASE_ID"]["value"]
    assert "id" not in cfg  # every pod sets its own
    config_path = Path(env["RAFTLEASE_CONFIG"]["value"])
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    assert mounts["config"] == str(config_path.parent)
    assert volumes["config"]["configMap"]["name"] == res["ConfigMap"]["metadata"]["name"]
    assert config_path.name in res["ConfigMap"]["data"]
    # The data dir is the volume claim's mount.
    claims = [t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]]
    assert claims == ["data"]
    assert mounts["data"] == cfg["data_dir"]

    path = tmp_path / config_path.name
    path.write_text(text, encoding="utf-8")
    for ordinal in range(sts["spec"]["replicas"]):
        node_id = id_template.replace("$(POD_INDEX)", str(ordinal))
        assert prepare(path, {"RAFTLEASE_ID": node_id}, monkeypatch) == 0, capsys.readouterr()
    # ... and the checks do bite: an id the peers do not list is refused
    assert prepare(path, {"RAFTLEASE_ID": "n9"}, monkeypatch) == 2
    assert "is not one of" in capsys.readouterr().err


def test_the_peers_are_the_statefulsets_pods_under_the_headless_service() -> None:
    res = manifests()
    sts, svc = res["StatefulSet"], res["Service"]
    _, cfg = config_toml(res)
    ns = sts["metadata"]["namespace"]
    name, service = sts["metadata"]["name"], sts["spec"]["serviceName"]
    assert service == svc["metadata"]["name"]
    assert svc["spec"]["clusterIP"] == "None"  # headless: one DNS name per pod
    assert svc["spec"]["publishNotReadyAddresses"] is True  # peers resolve before ready
    assert sts["spec"]["podManagementPolicy"] == "Parallel"  # OrderedReady would deadlock
    port = port_of(cfg["listen"])
    replicas = sts["spec"]["replicas"]
    assert replicas in (3, 5)
    assert cfg["peers"] == {
        f"n{i}": f"{name}-{i}.{service}.{ns}.svc:{port}" for i in range(replicas)
    }
    ids = {e["name"]: e.get("value") for e in container(sts)["env"]}
    assert ids["RAFTLEASE_ID"] == "n$(POD_INDEX)"  # pod name-N is node nN
    svc_ports = {p["name"]: (p["port"], p["targetPort"]) for p in svc["spec"]["ports"]}
    assert svc_ports == {
        "grpc": (port, "grpc"),
        "metrics": (port_of(cfg["metrics"]), "metrics"),
    }


def test_selectors_match_the_pods() -> None:
    res = manifests()
    sts = res["StatefulSet"]
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert matches(sts["spec"]["selector"], labels)
    pdb = res["PodDisruptionBudget"]
    assert pdb["spec"]["maxUnavailable"] == 1
    assert "minAvailable" not in pdb["spec"]
    assert matches(pdb["spec"]["selector"], labels)
    assert all(labels.get(k) == v for k, v in res["Service"]["spec"]["selector"].items())
    policy = res["NetworkPolicy"]["spec"]
    assert matches(policy["podSelector"], labels)
    _, cfg = config_toml(res)
    opened = {p["port"] for rule in policy["ingress"] for p in rule["ports"]}
    assert opened == {port_of(cfg["listen"]), port_of(cfg["metrics"])}
    peers_rule = next(r for r in policy["ingress"] if r["ports"][0]["port"] == 7001)
    assert any("podSelector" in f and matches(f["podSelector"], labels) for f in peers_rule["from"])


def test_pods_run_unprivileged_with_resources_and_a_step_down_hook() -> None:
    sts = manifests()["StatefulSet"]
    pod = sts["spec"]["template"]["spec"]
    c = container(sts)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == int(containerfile_arg("UID"))
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"cpu", "memory"} <= set(c["resources"]["requests"])
    assert "memory" in c["resources"]["limits"]
    assert c["lifecycle"]["preStop"]["exec"]["command"] == ["raftlease-step-down"]
    assert "raftlease-step-down" in CONTAINERFILE.read_text(encoding="utf-8")


# -- the three-machine guide's config -------------------------------------------------------


def test_the_guides_node_file_passes_serve_checks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    m = re.search(
        r"^```toml deploy-test file=n1\.toml\n(.*?)^```",
        GUIDE.read_text(encoding="utf-8"),
        re.M | re.S,
    )
    assert m is not None
    path = tmp_path / "n1.toml"
    path.write_text(m.group(1), encoding="utf-8")
    assert prepare(path, {}, monkeypatch) == 0, capsys.readouterr()
    cfg = tomllib.loads(m.group(1))
    assert cfg["data_dir"] == "/var/lib/" + unit_settings()["StateDirectory"][0]


# -- systemd ----------------------------------------------------------------------------------


def unit_settings() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            out.setdefault(key, []).append(value)
    return out


def test_the_units_execstart_flags_are_serve_flags() -> None:
    settings = unit_settings()
    (exec_start,) = settings["ExecStart"]
    argv = shlex.split(exec_start)
    assert argv[0].endswith("/raftlease")
    assert argv[1] == "serve"
    known = {s for a in serve_parser()._actions for s in a.option_strings}
    flags = [a for a in argv[2:] if a.startswith("-")]
    assert flags, argv
    assert set(flags) <= known, set(flags) - known
    assert "--config" in flags
    # every TLS file it names is a credential the unit loads
    creds = {v.split(":", 1)[0] for v in settings["LoadCredential"]}
    named = {a.removeprefix("%d/") for a in argv if a.startswith("%d/")}
    assert named == creds == {"node.crt", "node.key", "ca.crt"}


def test_the_unit_is_hardened_and_restarts_on_failure() -> None:
    s = unit_settings()
    assert s["DynamicUser"] == ["yes"] or s.get("User") == ["raftlease"]
    assert s["StateDirectory"] == ["raftlease"]
    assert s["Restart"] == ["on-failure"]
    assert s["RestartPreventExitStatus"] == ["2"]  # a refused configuration is not retried
    assert int(s["LimitNOFILE"][0]) >= 65536
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices"):
        assert s[key] == ["yes"], key
    assert s["ProtectSystem"] == ["strict"]
    assert s["CapabilityBoundingSet"] == [""]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    # verify insists that ExecStart's binary exists: point it at an existing one
    unit = tmp_path / "raftlease.service"
    unit.write_text(
        UNIT.read_text(encoding="utf-8").replace(
            "/opt/raftlease/bin/raftlease", shutil.which("true") or "/bin/true"
        ),
        encoding="utf-8",
    )
    res = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert res.returncode == 0, res.stderr
    assert "raftlease.service" not in res.stderr, res.stderr  # no warning about the unit


# -- the container image ----------------------------------------------------------------------


def containerfile_arg(name: str) -> str:
    m = re.search(rf"^ARG {name}=(\S+)$", CONTAINERFILE.read_text(encoding="utf-8"), re.M)
    assert m is not None, name
    return m.group(1)


def test_the_containerfile() -> None:
    text = CONTAINERFILE.read_text(encoding="utf-8")
    lines = [ln.strip() for ln in text.replace("\\\n", " ").splitlines()]
    instructions = [ln for ln in lines if ln and not ln.startswith("#")]
    froms = [ln.split()[1] for ln in instructions if ln.startswith("FROM ")]
    assert froms
    assert all(f == "python:3.11-slim" for f in froms)
    (user,) = [ln.split()[1] for ln in instructions if ln.startswith("USER ")]
    assert not user.startswith(("root", "0"))
    assert "EXPOSE 7001 9101" in instructions
    assert 'VOLUME ["/var/lib/raftlease"]' in instructions
    (hc,) = [ln for ln in instructions if ln.startswith("HEALTHCHECK ")]
    assert hc.endswith('CMD ["raftlease-healthcheck"]')  # liveness: no extra binary
    assert 'ENTRYPOINT ["raftlease"]' in instructions
    # every file COPY takes from the build context exists
    for ln in instructions:
        if ln.startswith("COPY ") and "--from=" not in ln:
            sources = [w for w in ln.split()[1:-1] if not w.startswith("--")]
            for src in sources:
                assert (REPO_ROOT / src).exists(), src
    # the image's defaults are the StatefulSet's config path and the ConfigMap's data dir
    res = manifests()
    env = {e["name"]: e.get("value") for e in container(res["StatefulSet"])["env"]}
    assert f"RAFTLEASE_CONFIG={env['RAFTLEASE_CONFIG']}" in text
    assert config_toml(res)[1]["data_dir"] == "/var/lib/raftlease"


def _load_script(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, DEPLOY / "container" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_healthcheck_script(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    hc = _load_script("healthcheck")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        servicer.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        servicer.set(READY_SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
        monkeypatch.setenv("RAFTLEASE_HEALTH_ADDRESS", f"127.0.0.1:{port}")
        assert hc.main(["raftlease-healthcheck"]) == 0
        assert hc.main(["raftlease-healthcheck", READY_SERVICE]) == 1
        servicer.set(READY_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        assert hc.main(["raftlease-healthcheck", READY_SERVICE]) == 0
        out = capsys.readouterr().out.splitlines()
        assert out == [
            f"127.0.0.1:{port} (liveness): SERVING",
            f"127.0.0.1:{port} {READY_SERVICE}: NOT_SERVING",
            f"127.0.0.1:{port} {READY_SERVICE}: SERVING",
        ]
    finally:
        server.stop(None)
    monkeypatch.setenv("RAFTLEASE_HEALTH_TIMEOUT", "0.5")
    assert hc.main(["raftlease-healthcheck"]) == 1  # nothing answers
    assert "UNAVAILABLE" in capsys.readouterr().out


# -- Prometheus -------------------------------------------------------------------------------


def test_the_alert_rules_use_metrics_raftlease_exports() -> None:
    rules = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    source = (REPO_ROOT / "raftlease" / "metrics.py").read_text(encoding="utf-8")
    defined = set(re.findall(r'"(raftlease_\w+)"', source))
    names = []
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
            assert rule["alert"].startswith("Raftlease")
            assert rule["labels"]["severity"] in ("critical", "warning", "info")
            assert rule["annotations"]["summary"]
            used = re.findall(r"\braftlease_\w+", rule["expr"])
            for name in used:
                base = re.sub(r"_(total|bucket|sum|count)$", "", name)
                assert base in defined, f"{rule['alert']}: {name} is not in raftlease/metrics.py"
            names.append(rule["alert"])
    assert len(names) == len(set(names))
    for wanted in (
        "RaftleaseNoLeader",
        "RaftleaseLeaderChanges",
        "RaftleaseHeartbeatsMissed",
        "RaftleaseFollowerLag",
        "RaftleaseRenewalsLate",
        "RaftleaseSlowFsync",
    ):
        assert wanted in names
