"""docs/deployment.md, run: every ```sh deploy-test block of the guide, in order, as the
admin machine would (certificates, per-node TOML files, the systemd unit installed and started
on three "machines", status, probe, health checks, metrics, a rolling restart with
`raftlease transfer`, `snapshot save`, and a restore into a new cluster), so the guide cannot
rot.

The three machines are 127.0.0.11-13 instead of the guide's 10.0.0.11-13 (Linux routes all of
127/8 to loopback). `ssh root@HOST CMD`, `scp FILES root@HOST:DIR` and `systemctl` are
stand-ins (one script, written to a temporary bin directory first on PATH): each machine has
its own /etc, /var/lib/raftlease, /root and /run under the test's directory, and
`systemctl start raftlease` runs the ExecStart= line of the unit file the guide installed
(deploy/systemd/raftlease.service), with %d the directory holding its LoadCredential= copies,
its Environment= and nothing of the caller's environment, as systemd would.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from integration.conftest import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DOC = REPO_ROOT / "docs" / "deployment.md"
DEPLOY = REPO_ROOT / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
HOSTS = ("127.0.0.11", "127.0.0.12", "127.0.0.13")
PORTS = (7001, 7002, 9101)
BLOCK = re.compile(r"^```(\w+) deploy-test(?: file=(\S+))?\n(.*?)^```", re.M | re.S)
BLOCK_TIMEOUT_S = 60.0

# One script for ssh, scp and systemctl (it looks at the name it was called by).
MACHINE_SHIM = r'''
import os, re, shlex, shutil, signal, subprocess, sys, time
from pathlib import Path

MACHINES = Path(os.environ["RL_MACHINES"])
VENV_BIN = os.environ["RL_VENV_BIN"]
UNIT = "raftlease"
PATHS = re.compile(r"(?<![\w.~-])(/etc/|/var/lib/|/root/|/run/)")


def rewrite(text, machine):
    """The machine's own paths: /etc/x -> MACHINE/etc/x, /opt/raftlease/bin -> the venv."""
    text = text.replace("/opt/raftlease/bin/", VENV_BIN + "/")
    return PATHS.sub(lambda m: f"{machine}{m.group(1)}", text)


def machine_of(target):
    user, _, host = target.partition("@")
    assert user == "root" and host, target
    machine = MACHINES / host
    (machine / "root").mkdir(parents=True, exist_ok=True)
    return machine


def ssh(args):
    machine = machine_of(args[0])
    env = dict(os.environ, RL_MACHINE=str(machine))
    cmd = rewrite(" ".join(args[1:]), machine)
    return subprocess.run(["bash", "-c", cmd], cwd=machine / "root", env=env).returncode


def scp(args):
    target, _, dest = args[-1].partition(":")
    machine = machine_of(target)
    dest_path = Path(rewrite(dest, machine))
    for src in args[:-1]:
        out = dest_path / Path(src).name if dest.endswith("/") else dest_path
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, out)
        shutil.copymode(src, out)
    return 0


def running(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def start(machine):
    pidfile = machine / "run" / f"{UNIT}.pid"
    if pidfile.exists() and running(int(pidfile.read_text())):
        return 0
    unit = (machine / "etc/systemd/system" / f"{UNIT}.service").read_text()
    settings = [line.strip().split("=", 1) for line in unit.splitlines() if "=" in line
                and not line.lstrip().startswith("#")]
    creds = machine / "run/credentials" / f"{UNIT}.service"
    creds.mkdir(parents=True, exist_ok=True)
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    for key, value in settings:
        if key == "LoadCredential":
            name, src = value.split(":", 1)
            shutil.copyfile(rewrite(src, machine), creds / name)
            os.chmod(creds / name, 0o400)
        elif key == "StateDirectory":
            state = machine / "var/lib" / value
            state.mkdir(parents=True, exist_ok=True)
            state.chmod(0o700)
        elif key == "Environment":
            k, v = value.split("=", 1)
            env[k] = v
    exec_start = next(value for key, value in settings if key == "ExecStart")
    argv = shlex.split(rewrite(exec_start.replace("%d", str(creds)), machine))
    # The machine's paths inside the config file too (data_dir): the node reads a rewritten copy.
    i = argv.index("--config") + 1
    config = machine / "run" / f"{UNIT}.toml"
    config.write_text(rewrite(Path(argv[i]).read_text(), machine))
    argv[i] = str(config)
    with open(machine / "journal.log", "ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                env=env, cwd="/", start_new_session=True)
    pidfile.write_text(str(proc.pid))
    return 0


def stop(machine):
    pidfile = machine / "run" / f"{UNIT}.pid"
    if not pidfile.exists():
        return 0
    pid = int(pidfile.read_text())
    if running(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20  # TimeoutStopSec
        while running(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if running(pid):
            os.kill(pid, signal.SIGKILL)
    pidfile.unlink()
    return 0


def systemctl(args):
    machine = Path(os.environ["RL_MACHINE"])
    words = [a for a in args if not a.startswith("--")]
    if words == ["daemon-reload"]:
        return 0
    verb, unit = words
    assert unit in (UNIT, f"{UNIT}.service"), args
    if verb == "enable":
        return start(machine) if "--now" in args else 0
    if verb == "start":
        return start(machine)
    if verb == "stop":
        return stop(machine)
    if verb == "restart":
        stop(machine)
        return start(machine)
    raise SystemExit(f"systemctl stand-in: {args} not supported")


sys.exit({"ssh": ssh, "scp": scp, "systemctl": systemctl}[Path(sys.argv[0]).name](sys.argv[1:]))
'''


def guide_blocks() -> list[tuple[str, str | None, str]]:
    """(language, file name or None, text) of every ```LANG deploy-test block, in order."""
    text = DOC.read_text(encoding="utf-8")
    return [(m.group(1), m.group(2), m.group(3)) for m in BLOCK.finditer(text)]


def localize(text: str) -> str:
    """The guide's 10.0.0.1N machines are 127.0.0.1N here."""
    return text.replace("10.0.0.", "127.0.0.")


def install_shims(bin_dir: Path) -> None:
    bin_dir.mkdir()
    script = bin_dir / "machine-shim.py"
    script.write_text(f"#!{sys.executable}\n{MACHINE_SHIM}", encoding="utf-8")
    script.chmod(0o755)
    for name in ("ssh", "scp", "systemctl"):
        (bin_dir / name).symlink_to(script)


def stop_machines(machines: Path) -> None:
    """SIGTERM (then SIGKILL) every node a stand-in systemctl left running."""
    for pidfile in machines.glob("*/run/raftlease.pid"):
        pid = int(pidfile.read_text())
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def test_the_guide_has_the_blocks_this_test_expects() -> None:
    blocks = guide_blocks()
    assert [f for _, f, _ in blocks if f] == ["n1.toml"]
    joined = "\n".join(text for _, _, text in blocks)
    for step in (
        "raftlease certs",
        "systemctl enable --now raftlease",
        "raftlease status",
        "raftlease probe",
        "healthcheck.py raftlease.v1.Ready",
        "/metrics",
        "raftlease transfer",
        "systemctl restart raftlease",
        "raftlease snapshot save",
        "raftlease snapshot restore",
    ):
        assert step in joined, f"no deploy-test block runs {step!r}"


def test_the_deployment_guide_runs_as_written(tmp_path: Path) -> None:
    yaml = pytest.importorskip("yaml", reason="PyYAML reads the alert rules (a dev dependency)")
    busy = [f"{h}:{p}" for h in HOSTS for p in PORTS if not _port_free(h, p)]
    assert not busy, f"ports the guide uses are busy: {busy}"
    admin = tmp_path / "admin"
    admin.mkdir()
    machines = tmp_path / "machines"
    machines.mkdir()
    shims = tmp_path / "bin"
    install_shims(shims)
    venv_bin = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAFTLEASE_", "GRPC_"))}
    env.update(
        HOME=str(admin),
        PATH=os.pathsep.join([str(shims), str(venv_bin), env.get("PATH", "/usr/bin:/bin")]),
        RL_MACHINES=str(machines),
        RL_VENV_BIN=str(venv_bin),
    )
    outputs: list[str] = []
    try:
        for lang, file, text in guide_blocks():
            text = localize(text)
            if file is not None:
                assert lang == "toml"
                (admin / "raftlease-deploy").mkdir(exist_ok=True)
                (admin / "raftlease-deploy" / file).write_text(text, encoding="utf-8")
                continue
            assert lang == "sh"
            started = time.monotonic()
            res = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", text],
                cwd=REPO_ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=BLOCK_TIMEOUT_S,
                check=False,
            )
            took = time.monotonic() - started
            journals = {
                p.parent.name: p.read_text()[-3000:] for p in machines.glob("*/journal.log")
            }
            assert res.returncode == 0, (text, res.stdout, res.stderr, journals)
            outputs.append(res.stdout)
            print(f"--- block ({took:.1f} s):\n{text}\n--- output:\n{res.stdout}{res.stderr}")
        scrape = _scrape("127.0.0.11:9101")
        step_down = _container_scripts_with_a_nodes_own_certificate(machines, env)
    finally:
        stop_machines(machines)

    out = "\n".join(outputs)
    assert "cluster prod-leases  leader n" in out  # the first status
    assert re.search(r"^total +[\d.]+ ms  ok$", out, re.M), "raftlease probe did not succeed"
    assert "127.0.0.12:7001 (liveness): SERVING" in out
    assert "127.0.0.12:7001 raftlease.v1.Ready: SERVING" in out
    assert 'raftlease_role{role="leader"}' in out  # the metrics block
    assert all(f"n{i} is back" in out for i in (1, 2, 3)), out
    assert "leader is now n" in out, "the rolling restart never moved leadership"
    assert "saved snapshot of cluster prod-leases" in out
    assert "as node n3 of cluster prod-leases-2" in out
    final = outputs[-1]
    assert "cluster prod-leases-2  leader n" in final, final

    for host in HOSTS:
        journal = (machines / host / "journal.log").read_text(encoding="utf-8")
        assert "mutual TLS (peers checked by certificate)" in journal, journal[-2000:]
        assert "raftlease serve: error" not in journal, journal[-2000:]  # no refusal
        # the TLS key stayed root-only on the machine, the service got a copy
        key = machines / host / "etc/raftlease/tls/node.key"
        assert key.stat().st_mode & 0o077 == 0
        assert not (machines / host / "root" / f"node-n{HOSTS.index(host) + 1}.key").exists()

    assert "leads; leader is now" in step_down
    # Every metric the alert rules use is exported, under the name and type they assume.
    _check_alert_metrics(scrape, yaml.safe_load(ALERTS.read_text(encoding="utf-8")))


def _container_scripts_with_a_nodes_own_certificate(machines: Path, env: dict[str, str]) -> str:
    """deploy/container's health check and preStop step-down, configured as a TLS container
    would be (the node's RAFTLEASE_TLS_* variables), against the current leader: the check
    passes, and the step-down hands leadership to another node."""
    status = subprocess.run(
        ["raftlease", "status", "--json"], env=_admin_env(env), capture_output=True, text=True
    )
    leader = json.loads(status.stdout)["leader"]
    host = HOSTS[int(leader[1:]) - 1]
    tls = machines / host / "etc" / "raftlease" / "tls"
    node_env = {k: v for k, v in env.items() if not k.startswith("RAFTLEASE_")}
    node_env.update(
        RAFTLEASE_ID=leader,
        RAFTLEASE_HEALTH_ADDRESS=f"{host}:7001",
        RAFTLEASE_TLS_CA=str(tls / "ca.crt"),
        RAFTLEASE_TLS_CERT=str(tls / "node.crt"),
        RAFTLEASE_TLS_KEY=str(tls / "node.key"),
    )
    container = DEPLOY / "container"
    for args in ([], ["raftlease.v1.Ready"]):
        # A leader that has just been elected is not Ready until its leader lease is valid
        # (up to an election timeout later), as a probe that runs every few seconds sees.
        deadline = time.monotonic() + 10.0
        while True:
            check = subprocess.run(
                [sys.executable, str(container / "healthcheck.py"), *args],
                env=node_env,
                capture_output=True,
                text=True,
            )
            if check.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert check.returncode == 0, (check.stdout, check.stderr)
    res = subprocess.run(
        [sys.executable, str(container / "step-down.py")],
        env=node_env,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"step-down: {leader} leads; leader is now n"), res
    assert not res.stdout.rstrip().endswith(leader), res.stdout
    return res.stdout


def _admin_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` with the client settings the guide's ~/raftlease.env exports."""
    pki = Path(env["HOME"]) / "raftlease-pki"
    return dict(
        env,
        RAFTLEASE_ENDPOINTS=",".join(f"{h}:7001" for h in HOSTS),
        RAFTLEASE_TLS_CA=str(pki / "ca.crt"),
        RAFTLEASE_TLS_CERT=str(pki / "client-ops.crt"),
        RAFTLEASE_TLS_KEY=str(pki / "client-ops.key"),
    )


def _scrape(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as resp:
        body: bytes = resp.read()
    return body.decode("utf-8")


def _check_alert_metrics(scrape: str, rules: dict[str, Any]) -> None:
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", scrape, re.M))
    used = {
        name
        for group in rules["groups"]
        for rule in group["rules"]
        for name in re.findall(r"\braftlease_\w+", rule["expr"])
    }
    assert used
    for name in sorted(used):
        base = re.sub(r"_(total|bucket|sum|count)$", "", name)
        kind = types.get(base, types.get(name))
        assert kind is not None, f"alerts.yml uses {name}, which no node exports"
        if kind == "counter":
            assert name == f"{base}_total", f"{name}: counters are exported as {base}_total"
        elif kind == "histogram":
            assert name != base, f"{name} is a histogram: use {base}_bucket/_sum/_count"
        else:
            assert name == base, f"{name}: {base} is a {kind}"
