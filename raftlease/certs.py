"""A development certificate authority for TLS between nodes and clients (``raftlease certs``).

    raftlease certs DIR --nodes n1,n2,n3 [--clients alice,bob] [--hosts db1.internal,10.0.0.5]

writes, in ``DIR``:

    ca.crt, ca.key                   the CA (give ca.crt to every node and client; keep ca.key)
    node-n1.crt, node-n1.key, ...    one per node: serves and, as a client certificate, dials
                                     the peers (mutual TLS)
    client-alice.crt, ...            one per client identity (mutual TLS for clients)

Every key is written with mode 0600 (created so: it is never readable by others, not even
briefly); certificates are 0644. ECDSA P-256 keys, SHA-256 signatures.

Identities (what the nodes check):

- a node certificate names its node id as the URI SAN ``raftlease://node/<id>`` (and as its
  common name); a node accepts a Raft message only from the peer whose certificate names the
  message's sender (``raftlease.transport.grpc``);
- a client certificate names its identity as the URI SAN ``raftlease://client/<name>`` (and
  its common name); the auth rules (``raftlease.auth``) grant rights to that name;
- node certificates also carry the DNS and IP SANs clients and peers dial: ``localhost``,
  ``127.0.0.1`` and ``::1`` by default, plus ``--hosts``.

This is a development CA: no revocation, no intermediate, the CA key next to the
certificates. For production, issue certificates from your own CA with the same SANs.
Imports: the ``cryptography`` package only.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from raftlease.types import NAME_PATTERN

if TYPE_CHECKING:
    from collections.abc import Sequence

    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
    from cryptography.x509 import Certificate

__all__ = [
    "CLIENT_URI_PREFIX",
    "DEFAULT_HOSTS",
    "NODE_URI_PREFIX",
    "CertsError",
    "IssuedCerts",
    "client_uri",
    "generate",
    "node_uri",
]

NODE_URI_PREFIX = "raftlease://node/"
CLIENT_URI_PREFIX = "raftlease://client/"
DEFAULT_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
CA_DAYS = 3650
LEAF_DAYS = 825  # the longest validity common TLS clients accept for a leaf certificate

# Node ids and client names go into file names and URIs: keep them to a safe alphabet.
_NAME = NAME_PATTERN


class CertsError(ValueError):
    """Bad input for :func:`generate` (a name, a host, an existing file)."""


def node_uri(node_id: str) -> str:
    return NODE_URI_PREFIX + node_id


def client_uri(name: str) -> str:
    return CLIENT_URI_PREFIX + name


@dataclass(frozen=True)
class IssuedCerts:
    """What :func:`generate` wrote: the CA's files, and ``{name: (cert, key)}`` per node and
    per client."""

    directory: Path
    ca_cert: Path
    ca_key: Path
    nodes: dict[str, tuple[Path, Path]] = field(default_factory=dict)
    clients: dict[str, tuple[Path, Path]] = field(default_factory=dict)

    def files(self) -> list[Path]:
        out = [self.ca_cert, self.ca_key]
        for cert, key in [*self.nodes.values(), *self.clients.values()]:
            out += [cert, key]
        return out


def _check_names(kind: str, names: Sequence[str]) -> list[str]:
    out: list[str] = []
    for raw in names:
        name = raw.strip()
        if not _NAME.match(name):
            raise CertsError(
                f"{kind} name {raw!r} is not valid: use 1-64 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        if name in out:
            raise CertsError(f"{kind} name {name!r} appears twice")
        out.append(name)
    return out


def _san_hosts(hosts: Sequence[str]) -> list[object]:
    from cryptography import x509

    sans: list[object] = []
    for host in hosts:
        host = host.strip()
        if not host:
            continue
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            if not re.match(r"^[A-Za-z0-9*]([A-Za-z0-9.-]*[A-Za-z0-9])?$", host):
                raise CertsError(f"host {host!r} is neither an IP address nor a DNS name") from None
            sans.append(x509.DNSName(host))
    return sans


def _write(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode`` from the start (never wider), refusing to overwrite."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise CertsError(f"{path} already exists: use another directory, or remove it") from None
    try:
        os.fchmod(fd, mode)  # the umask may have narrowed a certificate's mode
        os.write(fd, data)
    finally:
        os.close(fd)


def _new_key() -> EllipticCurvePrivateKey:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: EllipticCurvePrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: Certificate) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def _make_ca(
    common_name: str, now: datetime.datetime
) -> tuple[EllipticCurvePrivateKey, Certificate]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    key = _new_key()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "raftlease development CA"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _make_leaf(
    ca_key: EllipticCurvePrivateKey,
    ca_cert: Certificate,
    common_name: str,
    uri: str,
    hosts: Sequence[str],
    *,
    server: bool,
    now: datetime.datetime,
) -> tuple[EllipticCurvePrivateKey, Certificate]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = _new_key()
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri)]
    sans += [s for s in _san_hosts(hosts) if isinstance(s, x509.GeneralName)]
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if server:
        usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=LEAF_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def generate(
    directory: str | os.PathLike[str],
    nodes: Sequence[str],
    clients: Sequence[str] = (),
    *,
    hosts: Sequence[str] = DEFAULT_HOSTS,
    ca_name: str = "raftlease development CA",
) -> IssuedCerts:
    """Create a CA and one certificate per node and per client in ``directory`` (created with
    mode 0700 if missing). Refuses (:class:`CertsError`, nothing written) bad names, bad hosts,
    no nodes, or a file that already exists. ``hosts``: the DNS names and IP addresses every
    node certificate is valid for (the addresses peers and clients dial)."""
    node_ids = _check_names("node", nodes)
    client_names = _check_names("client", clients)
    if not node_ids:
        raise CertsError("no nodes given: use --nodes n1,n2,n3")
    _san_hosts(hosts)  # refuse a bad host before writing anything
    root = Path(directory)
    planned = [root / "ca.crt", root / "ca.key"]
    for nid in node_ids:
        planned += [root / f"node-{nid}.crt", root / f"node-{nid}.key"]
    for name in client_names:
        planned += [root / f"client-{name}.crt", root / f"client-{name}.key"]
    existing = [p for p in planned if p.exists()]
    if existing:
        raise CertsError(
            f"{existing[0]} already exists: use another directory, or remove the old files"
        )
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key, ca_cert = _make_ca(ca_name, now)
    issued = IssuedCerts(root, root / "ca.crt", root / "ca.key")
    _write(issued.ca_key, _key_pem(ca_key), 0o600)
    _write(issued.ca_cert, _cert_pem(ca_cert), 0o644)
    for nid in node_ids:
        key, cert = _make_leaf(ca_key, ca_cert, nid, node_uri(nid), hosts, server=True, now=now)
        paths = (root / f"node-{nid}.crt", root / f"node-{nid}.key")
        _write(paths[1], _key_pem(key), 0o600)
        _write(paths[0], _cert_pem(cert), 0o644)
        issued.nodes[nid] = paths
    for name in client_names:
        key, cert = _make_leaf(ca_key, ca_cert, name, client_uri(name), (), server=False, now=now)
        paths = (root / f"client-{name}.crt", root / f"client-{name}.key")
        _write(paths[1], _key_pem(key), 0o600)
        _write(paths[0], _cert_pem(cert), 0o644)
        issued.clients[name] = paths
    return issued
