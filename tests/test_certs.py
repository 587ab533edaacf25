"""``raftlease certs`` (raftlease/certs.py): the development CA, node and client certificates,
their SANs and key usages, file modes, refusals; and ``load_node_tls``, which checks a node's
files before it starts (raftlease/auth.py)."""

from __future__ import annotations

import datetime
import os
import stat
from typing import TYPE_CHECKING

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from raftlease import auth, certs
from raftlease.cli import main
from raftlease.transport import grpc as transport_grpc

if TYPE_CHECKING:
    from pathlib import Path


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _sans(cert: x509.Certificate) -> x509.SubjectAlternativeName:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(scope="module")
def issued(tmp_path_factory: pytest.TempPathFactory) -> certs.IssuedCerts:
    root = tmp_path_factory.mktemp("certs") / "pki"
    return certs.generate(
        root,
        ["n1", "n2", "n3"],
        ["alice", "bob"],
        hosts=[*certs.DEFAULT_HOSTS, "db1.internal", "10.0.0.5"],
    )


def test_files_and_modes(issued: certs.IssuedCerts) -> None:
    names = sorted(p.name for p in issued.directory.iterdir())
    assert names == sorted(
        ["ca.crt", "ca.key"]
        + [f"node-{n}.{x}" for n in ("n1", "n2", "n3") for x in ("crt", "key")]
        + [f"client-{n}.{x}" for n in ("alice", "bob") for x in ("crt", "key")]
    )
    assert _mode(issued.directory) == 0o700
    for path in issued.files():
        assert _mode(path) == (0o600 if path.suffix == ".key" else 0o644), path


def test_ca_is_a_ca(issued: certs.IssuedCerts) -> None:
    ca = _load(issued.ca_cert)
    basic = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert basic.ca
    assert ca.subject == ca.issuer
    assert ca.not_valid_after_utc > datetime.datetime.now(datetime.UTC) + datetime.timedelta(
        days=365
    )


def test_node_certificate_names_its_node_and_hosts(issued: certs.IssuedCerts) -> None:
    ca = _load(issued.ca_cert)
    for nid, (cert_path, _key) in issued.nodes.items():
        cert = _load(cert_path)
        cert.verify_directly_issued_by(ca)
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == nid
        sans = _sans(cert)
        assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [
            f"raftlease://node/{nid}"
        ]
        assert sorted(sans.get_values_for_type(x509.DNSName)) == ["db1.internal", "localhost"]
        assert sorted(str(ip) for ip in sans.get_values_for_type(x509.IPAddress)) == sorted(
            ["127.0.0.1", "::1", "10.0.0.5"]
        )
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_client_certificate_names_its_identity_only(issued: certs.IssuedCerts) -> None:
    ca = _load(issued.ca_cert)
    cert = _load(issued.clients["alice"][0])
    cert.verify_directly_issued_by(ca)
    sans = _sans(cert)
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == ["raftlease://client/alice"]
    assert sans.get_values_for_type(x509.IPAddress) == []
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]  # cannot serve as a node


def test_every_layer_uses_the_same_node_uri() -> None:
    assert certs.NODE_URI_PREFIX == auth.NODE_URI_PREFIX == transport_grpc.NODE_URI_PREFIX
    assert certs.CLIENT_URI_PREFIX == auth.CLIENT_URI_PREFIX


@pytest.mark.parametrize(
    ("nodes", "clients", "hosts", "message"),
    [
        ([], [], certs.DEFAULT_HOSTS, "no nodes given"),
        (["n1", "n1"], [], certs.DEFAULT_HOSTS, "appears twice"),
        (["../n1"], [], certs.DEFAULT_HOSTS, "is not valid"),
        (["n1"], ["al ice"], certs.DEFAULT_HOSTS, "is not valid"),
        (["n1"], [], ["bad host!"], "neither an IP address nor a DNS name"),
    ],
)
def test_refuses_bad_input_and_writes_nothing(
    tmp_path: Path, nodes: list[str], clients: list[str], hosts: list[str], message: str
) -> None:
    with pytest.raises(certs.CertsError, match=message):
        certs.generate(tmp_path / "pki", nodes, clients, hosts=hosts)
    assert not (tmp_path / "pki").exists()


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    certs.generate(tmp_path, ["n1"])
    before = (tmp_path / "ca.key").read_bytes()
    with pytest.raises(certs.CertsError, match="already exists"):
        certs.generate(tmp_path, ["n1", "n2"])
    assert (tmp_path / "ca.key").read_bytes() == before
    assert not (tmp_path / "node-n2.crt").exists()


def test_keys_are_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        issued = certs.generate(tmp_path / "pki", ["n1"], ["c"])
    finally:
        os.umask(old)
    for path in issued.files():
        assert _mode(path) == (0o600 if path.suffix == ".key" else 0o644), path


def test_cli_certs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "pki"
    assert main(["certs", str(out_dir), "--nodes", "n1,n2", "--clients", "ops"]) == 0
    out = capsys.readouterr().out
    assert "node-n2.key  (mode 0600)" in out
    assert "client-ops.crt" in out
    assert _mode(out_dir / "node-n1.key") == 0o600
    # A bad name: one error line, exit 2, nothing written.
    assert main(["certs", str(tmp_path / "other"), "--nodes", "n 1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("raftlease: error: node name 'n 1' is not valid")
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "other").exists()


# -- load_node_tls: what `serve --tls-*` checks before it starts ------------------------------


def test_load_node_tls_accepts_the_nodes_own_files(issued: certs.IssuedCerts) -> None:
    cert, key = issued.nodes["n1"]
    tls = auth.load_node_tls(cert, key, issued.ca_cert, "n1")
    assert tls.node_id == "n1"
    assert tls.cert_pem == cert.read_bytes()


def test_load_node_tls_refuses_another_nodes_certificate(issued: certs.IssuedCerts) -> None:
    cert, key = issued.nodes["n2"]
    with pytest.raises(auth.TLSError, match=r"names node\(s\) 'n2', not --id 'n1'"):
        auth.load_node_tls(cert, key, issued.ca_cert, "n1")


def test_load_node_tls_refuses_a_client_certificate(issued: certs.IssuedCerts) -> None:
    cert, key = issued.clients["alice"]
    with pytest.raises(auth.TLSError, match="names no node"):
        auth.load_node_tls(cert, key, issued.ca_cert, "alice")


def test_load_node_tls_refuses_a_certificate_of_another_ca(
    issued: certs.IssuedCerts, tmp_path: Path
) -> None:
    other = certs.generate(tmp_path / "other", ["n1"])
    cert, key = other.nodes["n1"]
    with pytest.raises(auth.TLSError, match="not signed by the --tls-ca"):
        auth.load_node_tls(cert, key, issued.ca_cert, "n1")


def test_load_node_tls_refuses_a_key_of_another_certificate(issued: certs.IssuedCerts) -> None:
    with pytest.raises(auth.TLSError, match="do not form a pair"):
        auth.load_node_tls(issued.nodes["n1"][0], issued.nodes["n2"][1], issued.ca_cert, "n1")


def test_load_node_tls_refuses_missing_and_non_pem_files(
    issued: certs.IssuedCerts, tmp_path: Path
) -> None:
    cert, key = issued.nodes["n1"]
    with pytest.raises(auth.TLSError, match="cannot read --tls-ca"):
        auth.load_node_tls(cert, key, tmp_path / "missing.crt", "n1")
    junk = tmp_path / "junk.crt"
    junk.write_text("hello\n")
    with pytest.raises(auth.TLSError, match="is not a PEM file"):
        auth.load_node_tls(junk, key, issued.ca_cert, "n1")
