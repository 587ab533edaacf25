"""A real 3-node cluster of ``python -m raftlease serve --config FILE`` processes, each given
nothing but its TOML file: the example block of docs/operations.md ("Configuration file and
logs"), with its ports and paths replaced. The nodes elect a leader, every line of their
output is a JSON object (``log_format = "json"``: no gRPC C-core line, no stray text) carrying
node and term, and SIGTERM stops them with exit code 0."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import pytest

from integration.conftest import REPO_ROOT, free_port, node_status

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.integration

LEADER_TIMEOUT_S = 20.0
DOC = REPO_ROOT / "docs" / "operations.md"


def doc_example() -> str:
    """The first ```toml block of the section "Configuration file and logs"."""
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("## Configuration file and logs") :]
    match = re.search(r"```toml\n(.*?)```", section, re.S)
    assert match is not None, "no ```toml block in the section"
    return match.group(1)


def node_file(example: str, node: str, ports: dict[str, int], data_dir: Path) -> str:
    """The example, for ``node``, with free ports and a temporary data dir."""
    text = example.replace('id = "n1"', f'id = "{node}"')
    text = re.sub(r'(?m)^data_dir = ".*"$', f'data_dir = "{data_dir}"', text)
    text = text.replace('listen = "127.0.0.1:7001"', f'listen = "127.0.0.1:{ports[node]}"')
    for nid, port in ports.items():
        text = text.replace(
            f'{nid} = "127.0.0.1:{7000 + int(nid[1:])}"', f'{nid} = "127.0.0.1:{port}"'
        )
    assert "700" not in text.replace(str(ports[node]), ""), text  # every port was replaced
    return text


def test_a_cluster_from_config_files_elects_a_leader_and_logs_json(tmp_path: Path) -> None:
    example = doc_example()
    assert 'log_format = "json"' in example
    ids = ["n1", "n2", "n3"]
    ports: dict[str, int] = {}
    for nid in ids:
        ports[nid] = free_port(avoid=set(ports.values()))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAFTLEASE_", "GRPC_"))}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs: dict[str, Path] = {}
    try:
        for nid in ids:
            config = tmp_path / f"{nid}.toml"
            config.write_text(node_file(example, nid, ports, tmp_path / nid), encoding="utf-8")
            logs[nid] = tmp_path / f"{nid}.log"
            with open(logs[nid], "wb") as out:
                procs[nid] = subprocess.Popen(
                    [sys.executable, "-m", "raftlease", "serve", "--config", str(config)],
                    cwd=REPO_ROOT,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
        leader = None
        deadline = time.monotonic() + LEADER_TIMEOUT_S
        while leader is None and time.monotonic() < deadline:
            for nid in ids:
                assert procs[nid].poll() is None, logs[nid].read_text()
                st = node_status(f"127.0.0.1:{ports[nid]}")
                if st is not None and st.leader_id and st.leader_id == st.node_id == nid:
                    leader = nid
            time.sleep(0.1)
        assert leader is not None, {n: p.read_text() for n, p in logs.items()}
        assert (tmp_path / leader / "raft.db").exists()
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = {nid: proc.wait(timeout=15) for nid, proc in procs.items()}
    assert codes == dict.fromkeys(ids, 0), codes

    for nid in ids:
        lines = logs[nid].read_text(encoding="utf-8").splitlines()
        assert lines, f"{nid} wrote nothing"
        records = []
        for line in lines:
            try:
                records.append(json.loads(line))
            except ValueError:
                pytest.fail(f"{nid}: not a JSON line: {line!r}")
        for rec in records:
            assert {"ts", "level", "logger", "msg", "node"} <= set(rec), rec
            assert rec["node"] == nid
        assert any(r["msg"].startswith(f"node {nid} of cluster demo listening") for r in records)
        assert records[-1]["msg"] == f"node {nid} stopped"
    leader_lines = [
        json.loads(line)
        for line in logs[leader].read_text(encoding="utf-8").splitlines()
        if "became leader at term" in line
    ]
    assert leader_lines, "the leader did not log its election"
    term = int(leader_lines[-1]["msg"].rsplit(" ", 1)[1])
    assert leader_lines[-1]["term"] == term >= 1
