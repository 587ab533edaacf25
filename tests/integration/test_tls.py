"""TLS, peer identity and auth rules on real 3-node clusters (docs/security.md).

One TLS cluster (mutual TLS, no rules) and one with auth rules serve the whole module; each
test uses its own lease names. The test that lets a certified member bump the term runs last
in its cluster's group (it makes the cluster re-elect).

- a TLS cluster elects a leader and grants leases to clients with the CA and a client
  certificate (sync, asyncio and CLI clients, flags and environment variables);
- a plaintext client, one without the CA, one without a client certificate: refused, with one
  clear error line;
- a peer with another CA's certificate cannot join nor change the term; a client certificate
  or another member's certificate cannot send Raft messages (a RequestVote at term 1000 with
  the transfer flag, which the same message from the certified member does apply);
- ``serve`` refuses a certificate of another node, and auth rules without TLS (exit 2, one
  line);
- auth rules: no token / no grant -> PERMISSION_DENIED, a wrong token -> UNAUTHENTICATED,
  another prefix -> PERMISSION_DENIED, the right prefix -> granted; nothing changes when
  refused; List shows only readable names; TransferLeadership needs admin.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import grpc
import psutil  # type: ignore[import-untyped]
import pytest

from raftlease.certs import IssuedCerts, generate
from raftlease.client import (
    AsyncLeaseClient,
    ClusterUnavailable,
    LeaseClient,
    PermissionDenied,
    TLSConfig,
    Unauthenticated,
)
from raftlease.codec import message_to_pb
from raftlease.core.messages import RequestVote
from raftlease.settings import ServerConfig
from raftlease.testing.local import LocalCluster, free_port
from raftlease.transport.grpc import SETTINGS_METADATA_KEY
from raftlease.types import NodeId
from raftlease.v1 import cluster_pb2, cluster_pb2_grpc, raft_pb2, raft_pb2_grpc

from .conftest import REPO_ROOT

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from raftlease.v1.cluster_pb2 import StatusResponse

pytestmark = pytest.mark.integration

DEPLOY = "deploy-token-0123456789abcdef"
READER = "reader-token-0123456789abcdef"
OPS = "ops-token-0123456789abcdef"
RULES = f"""
[tokens]
deploy = "{DEPLOY}"
reader = "{READER}"
ops = "{OPS}"

[[grant]]
identity = "deploy"
prefix = "jobs/"
actions = ["acquire", "read"]

[[grant]]
identity = "reader"
prefix = "jobs/"
actions = ["read"]

[[grant]]
identity = "alice"          # her client certificate
prefix = ""
actions = ["acquire", "read"]

[[grant]]
identity = "ops"
actions = ["admin"]
"""


class Pki:
    def __init__(self, root: Path) -> None:
        self.a: IssuedCerts = generate(root / "a", ["n1", "n2", "n3"], ["alice", "app"])
        self.b: IssuedCerts = generate(root / "b", ["n3"], ["mallory"])  # another CA

    def client(self, name: str = "alice", *, ca: bool = True, cert: bool = True) -> TLSConfig:
        crt, key = self.a.clients[name]
        return TLSConfig(
            ca=self.a.ca_cert if ca else None, cert=crt if cert else None, key=key if cert else None
        )

    def node_args(self, node_id: str, issued: IssuedCerts | None = None) -> list[str]:
        issued = issued or self.a
        crt, key = issued.nodes[node_id]
        return ["--tls-cert", str(crt), "--tls-key", str(key), "--tls-ca", str(issued.ca_cert)]

    def credentials(self, name: str, issued: IssuedCerts | None = None) -> grpc.ChannelCredentials:
        issued = issued or self.a
        crt, key = issued.clients[name] if name in issued.clients else issued.nodes[name]
        return grpc.ssl_channel_credentials(
            issued.ca_cert.read_bytes(), key.read_bytes(), crt.read_bytes()
        )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def _start(root: Path, pki: Pki, *extra: str) -> LocalCluster:
    creds = pki.credentials("app")
    cluster = LocalCluster(
        root,
        cwd=REPO_ROOT,
        env={"RAFTLEASE_LOG_LEVEL": os.environ.get("RAFTLEASE_LOG_LEVEL", "INFO")},
        channel_factory=lambda address: grpc.secure_channel(address, creds),
    )
    for nid in cluster.ids:
        cluster.start(nid, *pki.node_args(nid), *extra)
    try:
        cluster.wait_leader(20.0)
    except Exception:
        cluster.stop()
        raise
    return cluster


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[LocalCluster]:
    cluster = _start(tmp_path_factory.mktemp("tls"), pki)
    try:
        yield cluster
    finally:
        cluster.stop()
        print(cluster.log_tails(15))


def _status(cluster: LocalCluster) -> StatusResponse:
    st = cluster.wait_leader_status(10.0)
    return st


def _max_term(cluster: LocalCluster) -> int:
    terms = [st.term for nid in cluster.ids if (st := cluster.status(nid)) is not None]
    return max(terms)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTLEASE_TLS")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "raftlease", *args],
        cwd=REPO_ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# -- a TLS cluster ----------------------------------------------------------------------------


def test_tls_cluster_elects_a_leader_and_grants_leases(tls_cluster: LocalCluster, pki: Pki) -> None:
    st = _status(tls_cluster)
    assert st.leader_id
    assert (
        "security: mutual TLS (peers checked by certificate)" in tls_cluster.nodes["n1"].log_text()
    )
    with LeaseClient(tls_cluster.endpoints, tls=pki.client("alice")) as client:
        with client.acquire("tls/a", ttl=5.0) as lease:
            assert lease.fencing_token > 0
            assert lease.is_valid()
            info = client.holder("tls/a")
            assert info is not None
            assert info.fencing_token == lease.fencing_token
            lease.renew()
        assert client.holder("tls/a") is None
        status = client.status()
        assert status["leader"]

    async def async_client() -> int:
        async with AsyncLeaseClient(tls_cluster.endpoints, tls=pki.client("app")) as client:
            lease = await client.acquire("tls/async", ttl=5.0)
            token = lease.fencing_token
            await lease.release()
            return token

    assert asyncio.run(async_client()) > 0


def test_tls_nodes_carry_raft_over_the_tcp_link_with_mutual_tls(
    tls_cluster: LocalCluster, pki: Pki
) -> None:
    """Each node announces a TLS TCP link, and every peer dials it (docs/transport.md)."""
    link_ports: dict[str, int] = {}
    for nid, node in tls_cluster.nodes.items():
        m = re.search(r"peer link: TCP with mutual TLS on port (\d+)", node.log_text())
        assert m, node.log_text()[-2000:]
        link_ports[nid] = int(m.group(1))
    owner = {port: nid for nid, port in link_ports.items()}
    want = {(a, b) for a in link_ports for b in link_ports if a != b}
    got: set[tuple[str, str]] = set()
    deadline = time.monotonic() + 15.0
    while got != want and time.monotonic() < deadline:
        got = set()
        for nid, node in tls_cluster.nodes.items():
            assert node.pid is not None
            for c in psutil.Process(node.pid).net_connections(kind="tcp"):
                if c.raddr and c.status == psutil.CONN_ESTABLISHED and c.raddr.port in owner:
                    got.add((nid, owner[c.raddr.port]))
        time.sleep(0.2)
    assert got == want
    for node in tls_cluster.nodes.values():
        assert "does not answer" not in node.log_text()
    # A client's certificate (signed by the same CA) is refused on the TCP link too.
    import socket
    import ssl

    crt, key = pki.a.clients["alice"]
    ctx = ssl.create_default_context(cafile=str(pki.a.ca_cert))
    ctx.load_cert_chain(str(crt), str(key))
    with (
        socket.create_connection(("127.0.0.1", link_ports["n1"]), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as conn,
    ):
        data = b""
        while chunk := conn.recv(4096):
            data += chunk
    assert b"PERMISSION_DENIED" in data
    assert b"names no node" in data


def test_cli_with_tls_flags_and_environment(tls_cluster: LocalCluster, pki: Pki) -> None:
    crt, key = pki.a.clients["alice"]
    endpoints = ",".join(tls_cluster.endpoints)
    flags = ["--tls-ca", str(pki.a.ca_cert), "--tls-cert", str(crt), "--tls-key", str(key)]
    done = _cli("probe", "--name", "tls/probe", "--endpoints", endpoints, *flags)
    assert done.returncode == 0, done.stderr
    assert "ok" in done.stdout
    env = {
        "RAFTLEASE_TLS_CA": str(pki.a.ca_cert),
        "RAFTLEASE_TLS_CERT": str(crt),
        "RAFTLEASE_TLS_KEY": str(key),
    }
    done = _cli("holder", "tls/cli", "--endpoints", endpoints, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "tls/cli is free"
    # A plaintext CLI client: one error line that says what to do.
    done = _cli("holder", "tls/cli", "--endpoints", endpoints, "--timeout", "1s")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("raftlease: error: get 'tls/cli': no leader answered within 1s")
    assert "if the cluster runs with TLS it refuses this plaintext client" in lines[0]


def test_plaintext_client_fails_with_a_clear_error(tls_cluster: LocalCluster) -> None:
    with (
        LeaseClient(tls_cluster.endpoints, timeout=1.5, tls=False) as client,
        pytest.raises(ClusterUnavailable) as info,
    ):
        client.acquire("tls/plain", ttl=5.0)
    message = str(info.value)
    assert "no leader answered within 1.5s" in message
    assert "if the cluster runs with TLS it refuses this plaintext client" in message


def test_client_without_the_ca_fails_with_a_clear_error(
    tls_cluster: LocalCluster, pki: Pki
) -> None:
    with (
        LeaseClient(tls_cluster.endpoints, timeout=1.5, tls=pki.client(ca=False)) as client,
        pytest.raises(ClusterUnavailable) as info,
    ):
        client.holder("tls/x")
    assert "CERTIFICATE_VERIFY_FAILED" in str(info.value)
    assert "the node's certificate is not signed by the CA this client trusts" in str(info.value)
    with (
        LeaseClient(tls_cluster.endpoints, timeout=1.5, tls=pki.client(cert=False)) as client,
        pytest.raises(ClusterUnavailable) as info,
    ):
        client.holder("tls/x")
    assert "the nodes require a client certificate signed by their CA" in str(info.value)


def test_serve_refuses_another_nodes_certificate_and_rules_without_tls(
    tmp_path: Path, pki: Pki
) -> None:
    port = free_port()
    base = [
        "serve",
        "--id",
        "n1",
        "--listen",
        f"127.0.0.1:{port}",
        "--peers",
        f"n1=127.0.0.1:{port}",
        "--data-dir",
        str(tmp_path / "n1"),
    ]
    done = _cli(*base, *pki.node_args("n3"))  # n3's certificate for n1
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"raftlease serve: error: --tls-cert {pki.a.nodes['n3'][0]} names node(s) 'n3', not "
        f"--id 'n1': a node's certificate must carry the URI SAN raftlease://node/n1 "
        "(raftlease certs makes such certificates); peers refuse messages from a node whose "
        "certificate does not name it"
    ]
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    rules.chmod(0o600)
    done = _cli(*base, "--auth-rules", str(rules))
    assert done.returncode == 2
    assert "needs TLS (--tls-cert, --tls-key, --tls-ca)" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "n1").exists()


def test_a_node_of_another_ca_cannot_join(
    tls_cluster: LocalCluster, pki: Pki, tmp_path: Path
) -> None:
    """A stranger with another CA's certificate, posing as n3 with the cluster's id, dials
    n1 and n2 and campaigns: the handshakes fail both ways, it never hears a leader, and the
    cluster's term does not move."""
    term = _max_term(tls_cluster)
    port = free_port()
    peers = dict(tls_cluster.addresses)
    peers["n3"] = f"127.0.0.1:{port}"
    log_path = tmp_path / "stranger.log"
    cmd = [
        sys.executable,
        "-m",
        "raftlease",
        "serve",
        "--id",
        "n3",
        "--listen",
        peers["n3"],
        "--peers",
        ",".join(f"{k}={v}" for k, v in peers.items()),
        "--data-dir",
        str(tmp_path / "stranger"),
        "--cluster-id",
        tls_cluster.cluster_id,
        *pki.node_args("n3", pki.b),
    ]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        channel = grpc.secure_channel(peers["n3"], pki.credentials("mallory", pki.b))
        stub = cluster_pb2_grpc.ClusterStub(channel)
        deadline = time.monotonic() + 15
        seen: cluster_pb2.StatusResponse | None = None
        while time.monotonic() < deadline:  # wait until it runs, then let it campaign
            try:
                seen = stub.Status(cluster_pb2.StatusRequest(), timeout=0.5)
                break
            except grpc.RpcError:
                time.sleep(0.1)
        assert seen is not None, log_path.read_text()
        time.sleep(3.0)  # 7+ election timeouts
        stranger = stub.Status(cluster_pb2.StatusRequest(), timeout=1.0)
        channel.close()
        assert stranger.leader_id == "", "the stranger heard a leader"
        assert _max_term(tls_cluster) == term
        assert _status(tls_cluster).leader_id
    finally:
        proc.terminate()
        proc.wait(10)


def _vote(cluster: LocalCluster, src: str, dst: str, term: int) -> raft_pb2.PeerBatch:
    """A RequestVote with the transfer flag (no leader stickiness): applied, it makes ``dst``
    adopt ``term``."""
    msg = RequestVote(
        term=term,
        src=NodeId(src),
        dst=NodeId(dst),
        last_log_index=10**9,
        last_log_term=term - 1,
        transfer=True,
    )
    return raft_pb2.PeerBatch(messages=[message_to_pb(msg, cluster.cluster_id)])


def _send(cluster: LocalCluster, dst: str, creds: grpc.ChannelCredentials, batch: Any) -> Any:
    cfg = ServerConfig(
        node_id=NodeId(dst),
        cluster_id=cluster.cluster_id,
        peers={NodeId(k): v for k, v in cluster.addresses.items()},
    )
    metadata = ((SETTINGS_METADATA_KEY, cfg.safety_settings()),)
    with grpc.secure_channel(cluster.nodes[dst].address, creds) as channel:
        stub = raft_pb2_grpc.RaftPeerStub(channel)
        try:
            return stub.Send(iter([batch]), metadata=metadata, timeout=3.0)
        except grpc.RpcError as e:
            return e


def test_only_the_certified_member_may_send_its_messages(
    tls_cluster: LocalCluster, pki: Pki
) -> None:
    st = _status(tls_cluster)
    dst = st.leader_id
    src = next(n for n in tls_cluster.ids if n != dst)
    other = next(n for n in tls_cluster.ids if n not in (dst, src))
    term = _max_term(tls_cluster)
    batch = _vote(tls_cluster, src, dst, term + 1000)

    # Another CA's certificate: the handshake fails.
    err = _send(tls_cluster, dst, pki.credentials("mallory", pki.b), batch)
    assert isinstance(err, grpc.RpcError)
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    # A client's certificate of the right CA: it names no node.
    err = _send(tls_cluster, dst, pki.credentials("alice"), batch)
    assert isinstance(err, grpc.RpcError)
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "names no node" in (err.details() or "")
    # Another member's certificate, the message claiming to be from `src`.
    err = _send(tls_cluster, dst, pki.credentials(other), batch)
    assert isinstance(err, grpc.RpcError)
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert f"a message from '{src}' came over a link whose certificate names node '{other}'" in (
        err.details() or ""
    )
    time.sleep(0.5)
    assert _max_term(tls_cluster) == term
    assert _status(tls_cluster).leader_id == dst

    # Control: the very same message over `src`'s own certificate is taken (the term jumps).
    summary = _send(tls_cluster, dst, pki.credentials(src), batch)
    assert isinstance(summary, raft_pb2.SendSummary), summary
    assert summary.received == 1
    deadline = time.monotonic() + 5
    while _max_term(tls_cluster) < term + 1000 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _max_term(tls_cluster) >= term + 1000
    assert _status(tls_cluster).leader_id  # and it elects a leader again


# -- auth rules -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def auth_cluster(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[LocalCluster]:
    root = tmp_path_factory.mktemp("auth")
    rules = root / "rules.toml"
    rules.write_text(RULES)
    rules.chmod(0o600)
    cluster = _start(root, pki, "--auth-rules", str(rules))
    try:
        yield cluster
    finally:
        cluster.stop()
        print(cluster.log_tails(15))


def test_token_auth(auth_cluster: LocalCluster, pki: Pki) -> None:
    endpoints = auth_cluster.endpoints
    app = pki.client("app")  # a certificate whose identity has no grant

    with LeaseClient(endpoints, tls=app) as client, pytest.raises(PermissionDenied) as denied:
        client.acquire("jobs/a", ttl=5.0)  # no token
    assert str(denied.value) == (
        "permission denied: identity 'app' may not acquire 'jobs/a': it may acquire no names"
    )
    with (
        LeaseClient(endpoints, tls=app, token="not-the-right-token-0123") as client,
        pytest.raises(Unauthenticated, match="the bearer token is not valid"),
    ):
        client.acquire("jobs/a", ttl=5.0)
    with LeaseClient(endpoints, tls=app, token=DEPLOY) as deploy:
        with pytest.raises(PermissionDenied, match="only names under 'jobs/'"):
            deploy.acquire("other/a", ttl=5.0)
        lease = deploy.acquire("jobs/a", ttl=5.0)
        assert lease.fencing_token > 0
        with LeaseClient(endpoints, tls=pki.client("alice")) as alice:
            # Nothing changed where refused; alice (by her certificate) reads everything.
            assert alice.holder("other/a") is None
            held = alice.holder("jobs/a")
            assert held is not None
            assert held.fencing_token == lease.fencing_token
            alice_lease = alice.acquire("alice/b", ttl=5.0)
            with LeaseClient(endpoints, tls=app, token=READER) as reader:
                info = reader.holder("jobs/a")
                assert info is not None
                assert info.fencing_token == lease.fencing_token
                with pytest.raises(PermissionDenied, match="it may acquire no names"):
                    reader.acquire("jobs/b", ttl=5.0)
                with pytest.raises(PermissionDenied, match="may not read 'alice/b'"):
                    reader.holder("alice/b")
                assert [i.name for i in reader.leases()] == ["jobs/a"]  # alice/b hidden
            assert sorted(i.name for i in alice.leases()) == ["alice/b", "jobs/a"]
            alice_lease.release()
        lease.release()
        with pytest.raises(PermissionDenied, match="may not administer the cluster"):
            deploy.transfer_leadership()
    with LeaseClient(endpoints, tls=app, token=OPS) as ops:
        assert ops.transfer_leadership()


def test_cli_token_file(auth_cluster: LocalCluster, pki: Pki, tmp_path: Path) -> None:
    crt, key = pki.a.clients["app"]
    flags = ["--tls-ca", str(pki.a.ca_cert), "--tls-cert", str(crt), "--tls-key", str(key)]
    endpoints = ",".join(auth_cluster.endpoints)
    token_file = tmp_path / "token"
    token_file.write_text(DEPLOY + "\n")
    done = _cli(
        "holder", "jobs/cli", "--endpoints", endpoints, *flags, "--token-file", str(token_file)
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "jobs/cli is free"
    done = _cli("holder", "jobs/cli", "--endpoints", endpoints, *flags)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "raftlease: error: permission denied: identity 'app' may not read 'jobs/cli': it may "
        "read no names"
    ]
