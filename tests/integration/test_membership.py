"""Membership changes, backup and restore on real processes (docs/membership.md).

Every command here is the CLI a user runs (`raftlease member ...`, `serve --join`,
`raftlease snapshot save|restore`), against real `raftlease serve` processes on loopback.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import pytest

from raftlease.client import LeaseClient
from raftlease.testing.local import LocalCluster, free_port

if TYPE_CHECKING:
    from pathlib import Path

    from integration.conftest import Cluster

pytestmark = pytest.mark.integration

RAFTLEASE = [sys.executable, "-m", "raftlease"]


def cli(
    cluster: LocalCluster, *args: str, timeout: float = 90.0
) -> subprocess.CompletedProcess[str]:
    endpoints = ",".join(n.address for n in cluster.nodes.values() if n.alive())
    return subprocess.run(
        [*RAFTLEASE, *args, "--endpoints", endpoints],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def members(cluster: LocalCluster) -> dict[str, Any]:
    out = cli(cluster, "member", "list", "--json")
    assert out.returncode == 0, out.stderr
    parsed: dict[str, Any] = json.loads(out.stdout)
    return parsed


def roles(cluster: LocalCluster) -> dict[str, str]:
    return {m["id"]: m["role"] for m in members(cluster)["members"]}


def test_replace_a_sigkilled_node_while_a_lease_is_held(cluster: Cluster) -> None:
    cluster.leader()
    with cluster.client() as client:
        lease = client.acquire("billing", ttl=30.0)
        n4 = cluster.add_node("n4")
        cluster.start("n4")  # serve --join: waits, without a configuration, to be added
        cluster.kill("n3")
        added = cli(cluster, "member", "add", f"n4={n4.address}")
        assert added.returncode == 0, added.stderr
        assert "n4 is now a voter" in added.stderr
        removed = cli(cluster, "member", "remove", "n3")
        assert removed.returncode == 0, removed.stderr
        assert roles(cluster) == {"n1": "voter", "n2": "voter", "n4": "voter"}
        info = client.holder("billing")
        assert info is not None
        assert info.fencing_token == lease.fencing_token
        lease.release()
    # n4 votes: with n3 gone for good, one original node down still leaves a quorum (n4 + 1).
    survivor = "n1" if cluster.leader() != "n1" else "n2"
    victim = "n2" if survivor == "n1" else "n1"
    cluster.kill(victim)
    assert cluster.leader(exclude={victim, "n3"}) in (survivor, "n4")
    with LeaseClient([cluster.nodes[survivor].address, n4.address], timeout=10.0) as client:
        again = client.acquire("billing", ttl=5.0)
        assert again.fencing_token > lease.fencing_token
        again.release()


def test_remove_the_leader_hands_over_first(cluster: Cluster) -> None:
    leader = cluster.leader()
    started = time.monotonic()
    out = cli(cluster, "member", "remove", leader)
    assert out.returncode == 0, out.stderr
    assert time.monotonic() - started < 5.0
    left = roles(cluster)
    assert leader not in left
    assert len(left) == 2
    new_leader = members(cluster)["leader"]
    assert new_leader in left
    with (
        LeaseClient([cluster.nodes[i].address for i in left], timeout=10.0) as client,
        client.acquire("after-removal", ttl=5.0) as lease,
    ):
        assert lease.is_valid()


def test_learner_shows_in_status_and_is_promoted_on_request(cluster: Cluster) -> None:
    cluster.leader()
    n4 = cluster.add_node("n4")
    cluster.start("n4")
    out = cli(cluster, "member", "add", f"n4={n4.address}", "--learner")
    assert out.returncode == 0, out.stderr
    assert roles(cluster)["n4"] == "learner"
    status = json.loads(cli(cluster, "status", "--json").stdout)
    assert status["config_index"] > 0
    learners = [n["id"] for n in status["nodes"] if n.get("learner")]
    assert learners == ["n4"]
    out = cli(cluster, "member", "promote", "n4")
    assert out.returncode == 0, out.stderr
    assert roles(cluster)["n4"] == "voter"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("member", "remove", "zz"), "zz is not a member (members: n1, n2, n3)"),
        (("member", "promote", "n1"), "n1 is already a voter"),
        (("member", "add", "n2=127.0.0.1:1"), "n2 is already a voter"),
        (("member", "add", "bad/id=127.0.0.1:1"), "may use only letters, digits"),
        (("member", "add", "n9"), "member add needs ID=HOST:PORT"),
    ],
)
def test_bad_membership_requests_get_one_clear_error_and_change_nothing(
    cluster: Cluster, args: tuple[str, ...], message: str
) -> None:
    cluster.leader()
    before = members(cluster)
    out = cli(cluster, *args)
    assert out.returncode != 0
    assert message in out.stderr
    assert len(out.stderr.strip().splitlines()) <= 2  # the progress line, then one error
    assert members(cluster)["members"] == before["members"]
    assert members(cluster)["config_index"] == before["config_index"]


def test_adding_an_address_in_use_and_reusing_a_removed_id_are_refused(cluster: Cluster) -> None:
    cluster.leader()
    used = cluster.nodes["n2"].address
    out = cli(cluster, "member", "add", f"n9={used}")
    assert out.returncode != 0
    assert f"address {used} is already used by member n2" in out.stderr
    assert cli(cluster, "member", "remove", "n3").returncode == 0
    out = cli(cluster, "member", "add", f"n3={cluster.nodes['n3'].address}")
    assert out.returncode != 0
    assert "n3 was a member of this cluster before; a member id is never reused" in out.stderr


def test_join_refuses_the_id_of_a_voter_with_an_empty_data_dir(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.leader()
    port = free_port()
    out = subprocess.run(
        [
            *RAFTLEASE,
            "serve",
            "--id",
            "n2",
            "--listen",
            f"127.0.0.1:{port}",
            "--join",
            ",".join(cluster.endpoints),
            "--data-dir",
            str(tmp_path / "wiped"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 2
    assert "n2 is already a voter of the cluster" in out.stderr
    assert not (tmp_path / "wiped" / "raft.db").exists()


def test_snapshot_save_and_restore_seed_a_new_cluster(cluster: Cluster, tmp_path: Path) -> None:
    cluster.leader()
    with cluster.client() as client:
        held = client.acquire("kept", ttl=60.0)
        token = held.fencing_token
        snap = tmp_path / "backup.snap"
        out = cli(cluster, "snapshot", "save", str(snap))
        assert out.returncode == 0, out.stderr
        assert "1 lease(s)" in out.stdout
    port = free_port()
    restored = tmp_path / "restored"
    out = subprocess.run(
        [
            *RAFTLEASE,
            "snapshot",
            "restore",
            str(snap),
            "--data-dir",
            str(restored / "r1"),
            "--id",
            "r1",
            "--peers",
            f"r1=127.0.0.1:{port}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    cluster_id = out.stdout.split(" of cluster ")[2].split()[0]
    assert cluster_id.endswith(f"-r{cluster_id.rsplit('-r', 1)[1]}")
    again = subprocess.run(
        [*RAFTLEASE, "snapshot", "restore", str(snap), "--data-dir", str(restored / "r1"),
         "--id", "r1", "--peers", f"r1=127.0.0.1:{port}"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert again.returncode != 0
    assert "restore only into a new, empty data dir" in again.stderr
    new = LocalCluster(restored, ids=["r1"], ports=[port], cluster_id=cluster_id)
    with new:
        new.start_all()
        new.wait_leader(timeout=20.0)
        with LeaseClient(new.endpoints, timeout=10.0) as client:
            info = client.holder("kept")
            assert info is not None
            assert info.fencing_token == token
            nxt = client.acquire("fresh", ttl=5.0)
            assert nxt.fencing_token > token  # tokens go on increasing after a restore
            nxt.release()


def test_snapshot_restore_refuses_a_damaged_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.snap"
    bad.write_bytes(b"RAFTLEASE-SNAPSHOT 1\n" + b"x" * 40)
    out = subprocess.run(
        [*RAFTLEASE, "snapshot", "restore", str(bad), "--data-dir", str(tmp_path / "d"),
         "--id", "a", "--peers", "a=127.0.0.1:1"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert out.returncode != 0
    assert "is damaged: its checksum does not match" in out.stderr
    assert not (tmp_path / "d").exists()


def test_a_member_restarts_with_its_old_peers_after_a_change(cluster: Cluster) -> None:
    """Once the log holds a configuration it governs: a node restarted with the --peers it
    was created with (naming the removed n3, not n4) starts, warns, and follows."""
    cluster.leader()
    n4 = cluster.add_node("n4")
    cluster.start("n4")
    assert cli(cluster, "member", "add", f"n4={n4.address}").returncode == 0
    cluster.kill("n3")
    assert cli(cluster, "member", "remove", "n3").returncode == 0
    follower = next(i for i in ("n1", "n2") if i != members(cluster)["leader"])
    cluster.restart(follower)  # same command line: --peers n1, n2, n3
    deadline = time.monotonic() + 20.0
    while "the configuration governs" not in cluster.nodes[follower].log_text():
        assert time.monotonic() < deadline, cluster.nodes[follower].log_text()[-2000:]
        time.sleep(0.1)
    assert roles(cluster) == {"n1": "voter", "n2": "voter", "n4": "voter"}
    status = json.loads(cli(cluster, "status", "--json").stdout)
    me = next(n for n in status["nodes"] if n["id"] == follower)
    assert me["role"] == "follower"
    # The restarted node votes: with the leader gone, two of the three voters are left and
    # both must vote for a new leader, so one is elected only if the restarted node takes part.
    leader = members(cluster)["leader"]
    cluster.kill(leader)
    assert cluster.leader(exclude={leader, "n3"}) in {"n1", "n2", "n4"} - {leader}
