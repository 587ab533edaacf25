"""Auth rules (raftlease/auth.py): the TOML parser, who may do what, the interceptor in front
of an in-process gRPC server, the client's TLS/token settings (raftlease/client/_tls.py) and
what ``serve`` refuses about its security flags (``server.load_security``).

The interceptor tests run a real grpc.aio server on loopback with TLS, a fake Lease service
that records what reaches it (so "refused" also means "nothing reached the handler") and a
fake Cluster service."""

from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from raftlease import certs
from raftlease.auth import (
    AuthInterceptor,
    AuthRules,
    HandlerCache,
    RulesError,
    client_identity,
    load_rules,
    parse_rules,
)
from raftlease.client._tls import TLSConfig, channel_security
from raftlease.errors import ConfigError
from raftlease.server import ServeRefused, load_security
from raftlease.v1 import cluster_pb2, cluster_pb2_grpc, lease_pb2, lease_pb2_grpc

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

DEPLOY = "deploy-token-0123456789"
READER = "reader-token-0123456789"
OPS = "ops-token-0123456789abcd"

RULES = f"""
# who may do what
[tokens]
deploy = "{DEPLOY}"
reader = "sha256:{hashlib.sha256(READER.encode()).hexdigest()}"
ops = ["{OPS}", "ops-second-token-0123456789"]

[[grant]]
identity = "deploy"
prefix = "jobs/"
actions = ["acquire", "read"]

[[grant]]
identity = "reader"
prefix = "jobs/"
actions = ["read"]

[[grant]]
identity = "alice"
prefix = "alice/"
actions = ["acquire", "read"]

[[grant]]
identity = "ops"
actions = ["admin"]

[[grant]]
identity = "*"
prefix = "public/"
actions = ["read"]
"""


@pytest.fixture(scope="module")
def rules() -> AuthRules:
    return parse_rules(RULES)


# -- the parser ----------------------------------------------------------------------------


def test_tokens_map_to_identities(rules: AuthRules) -> None:
    assert rules.identity_for_token(DEPLOY) == "deploy"
    assert rules.identity_for_token(READER) == "reader"  # stored as a digest only
    assert rules.identity_for_token(OPS) == "ops"
    assert rules.identity_for_token("ops-second-token-0123456789") == "ops"
    assert rules.identity_for_token(DEPLOY + "x") is None
    assert rules.identity_for_token("") is None


def test_grants(rules: AuthRules) -> None:
    assert rules.allowed("deploy", "acquire", "jobs/a")
    assert rules.allowed("deploy", "read", "jobs/a")
    assert not rules.allowed("deploy", "acquire", "job")  # a prefix, not a substring
    assert not rules.allowed("deploy", "acquire", "other/jobs/a")
    assert not rules.allowed("reader", "acquire", "jobs/a")
    assert rules.allowed("reader", "read", "jobs/a")
    assert rules.allowed("anyone", "read", "public/x")  # "*": every identity
    assert not rules.allowed("anyone", "acquire", "public/x")
    assert rules.allowed("ops", "admin")
    assert not rules.allowed("deploy", "admin")
    assert not rules.allowed("ops", "acquire", "jobs/a")  # admin is not a lease right
    assert rules.prefixes("reader", "read") == ["jobs/", "public/"]
    assert rules.prefixes("nobody", "acquire") == []


def test_an_empty_file_grants_nothing() -> None:
    rules = parse_rules("")
    assert not rules.allowed("alice", "read", "x")
    assert rules.identity_for_token(DEPLOY) is None


def test_every_problem_is_reported_at_once() -> None:
    text = """
[tokens]
short = "abc"
bad_digest = "sha256:1234"
a = "the-same-token-0123456789"
b = "the-same-token-0123456789"

[[grant]]
identity = "x"
actions = ["acquire", "write"]
colour = "red"

[[grant]]
prefix = "p/"
actions = []

[extra]
"""
    with pytest.raises(RulesError) as info:
        parse_rules(text, "rules.toml")
    problems = info.value.problems
    joined = " | ".join(problems)
    assert "unknown section(s) extra" in joined
    assert "'short' is shorter than 16 characters" in joined
    assert "sha256: needs 64 hex digits" in joined
    assert "one token is given to both 'a' and 'b'" in joined
    assert "unknown action(s) write" in joined
    assert "unknown key(s) colour" in joined
    assert 'grant 2 needs identity = "NAME"' in joined
    assert "grant 2 needs actions" in joined
    assert len(problems) == 8
    assert str(info.value).startswith("rules.toml: ")


def test_invalid_toml() -> None:
    with pytest.raises(RulesError, match="not valid TOML"):
        parse_rules("[tokens\n")


def test_load_rules_refuses_readable_plaintext_tokens(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(RULES)
    path.chmod(0o644)
    with pytest.raises(RulesError, match="plaintext tokens and its mode is 644"):
        load_rules(path)
    path.chmod(0o600)
    assert load_rules(path).identity_for_token(DEPLOY) == "deploy"
    # Digests only: others may read it.
    digests = tmp_path / "digests.toml"
    digests.write_text(
        f'[tokens]\nx = "sha256:{hashlib.sha256(b"x" * 20).hexdigest()}"\n'
        '[[grant]]\nidentity = "x"\nactions = ["read"]\n'
    )
    digests.chmod(0o644)
    assert load_rules(digests).identity_for_token("x" * 20) == "x"
    with pytest.raises(RulesError, match="cannot read it"):
        load_rules(tmp_path / "missing.toml")


def test_interceptors_wrap_each_method_once() -> None:
    built: list[tuple[str, object]] = []

    def wrap(method: str, handler: object) -> tuple[str, str, object]:
        built.append((method, handler))
        return ("wrapped", method, handler)

    cache = HandlerCache()
    acquire, release = object(), object()
    for _ in range(3):
        assert cache.get("/raftlease.v1.Lease/Acquire", acquire, wrap) == (
            "wrapped",
            "/raftlease.v1.Lease/Acquire",
            acquire,
        )
    assert built == [("/raftlease.v1.Lease/Acquire", acquire)]
    cache.get("/raftlease.v1.Lease/Release", release, wrap)
    # Another handler for the same method is wrapped anew, never served another's wrapper;
    # one entry per method, so the cache stays as small as the service.
    other = object()
    assert cache.get("/raftlease.v1.Lease/Acquire", other, wrap)[2] is other
    assert built[-1] == ("/raftlease.v1.Lease/Acquire", other)
    assert len(cache._by_method) == 2
    assert cache.get("/raftlease.v1.Lease/Acquire", acquire, wrap)[2] is acquire


def test_client_identity_from_the_auth_context() -> None:
    assert (
        client_identity({"peer_uri": [b"raftlease://client/alice"], "x509_common_name": [b"al"]})
        == "alice"
    )
    assert client_identity({"x509_common_name": [b"legacy-app"]}) == "legacy-app"
    # A node certificate: no client URI, its common name.
    assert client_identity({"peer_uri": [b"raftlease://node/n1"], "x509_common_name": [b"n1"]})
    assert client_identity({"transport_security_type": [b"ssl"]}) is None


# -- the interceptor, in front of a real in-process server ------------------------------------


class FakeLease:
    """Records every call that got through; holds name -> lease id."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.ids = {"jobs/a": 11, "alice/x": 12, "public/p": 13, "other/z": 14}

    def name_of(self, lease_id: int) -> str | None:
        return next((n for n, i in self.ids.items() if i == lease_id), None)

    def _info(self, name: str) -> lease_pb2.LeaseInfo:
        return lease_pb2.LeaseInfo(name=name, lease_id=self.ids.get(name, 0), holder="h")

    async def acquire(self, req: lease_pb2.AcquireRequest, ctx: Any) -> lease_pb2.AcquireResponse:
        self.calls.append(("Acquire", req.name))
        return lease_pb2.AcquireResponse(acquired=True, lease=self._info(req.name))

    async def release(self, req: lease_pb2.ReleaseRequest, ctx: Any) -> lease_pb2.ReleaseResponse:
        self.calls.append(("Release", str(req.lease_id)))
        return lease_pb2.ReleaseResponse(released=True)

    async def get(self, req: lease_pb2.GetRequest, ctx: Any) -> lease_pb2.GetResponse:
        self.calls.append(("Get", req.name))
        return lease_pb2.GetResponse(held=True, lease=self._info(req.name))

    async def list_(self, req: lease_pb2.ListRequest, ctx: Any) -> lease_pb2.ListResponse:
        self.calls.append(("List", req.prefix))
        names = sorted(n for n in self.ids if n.startswith(req.prefix))
        return lease_pb2.ListResponse(leases=[self._info(n) for n in names])

    async def watch(
        self, req: lease_pb2.WatchRequest, ctx: Any
    ) -> AsyncIterator[lease_pb2.WatchEvent]:
        self.calls.append(("Watch", req.name))
        for name in [req.name] if req.name else sorted(self.ids):
            yield lease_pb2.WatchEvent(
                kind=lease_pb2.WatchEvent.KIND_CURRENT, name=name, lease=self._info(name)
            )

    async def keepalive(
        self, reqs: AsyncIterator[lease_pb2.KeepAliveRequest], ctx: Any
    ) -> AsyncIterator[lease_pb2.KeepAliveResponse]:
        async for req in reqs:
            self.calls.append(("KeepAlive", str(req.lease_id)))
            yield lease_pb2.KeepAliveResponse(lease_id=req.lease_id, ttl_ms=1000)

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        def uu(fn: Any, req: Any, resp: Any) -> Any:
            return grpc.unary_unary_rpc_method_handler(
                fn, request_deserializer=req.FromString, response_serializer=resp.SerializeToString
            )

        lease = grpc.method_handlers_generic_handler(
            "raftlease.v1.Lease",
            {
                "Acquire": uu(self.acquire, lease_pb2.AcquireRequest, lease_pb2.AcquireResponse),
                "Release": uu(self.release, lease_pb2.ReleaseRequest, lease_pb2.ReleaseResponse),
                "Get": uu(self.get, lease_pb2.GetRequest, lease_pb2.GetResponse),
                "List": uu(self.list_, lease_pb2.ListRequest, lease_pb2.ListResponse),
                "Watch": grpc.unary_stream_rpc_method_handler(
                    self.watch,
                    request_deserializer=lease_pb2.WatchRequest.FromString,
                    response_serializer=lease_pb2.WatchEvent.SerializeToString,
                ),
                "KeepAlive": grpc.stream_stream_rpc_method_handler(
                    self.keepalive,
                    request_deserializer=lease_pb2.KeepAliveRequest.FromString,
                    response_serializer=lease_pb2.KeepAliveResponse.SerializeToString,
                ),
            },
        )

        async def status(req: Any, ctx: Any) -> cluster_pb2.StatusResponse:
            self.calls.append(("Status", ""))
            return cluster_pb2.StatusResponse(node_id="n1")

        async def transfer(req: Any, ctx: Any) -> cluster_pb2.TransferLeadershipResponse:
            self.calls.append(("TransferLeadership", ""))
            return cluster_pb2.TransferLeadershipResponse(leader_id="n2")

        cluster = grpc.method_handlers_generic_handler(
            "raftlease.v1.Cluster",
            {
                "Status": uu(status, cluster_pb2.StatusRequest, cluster_pb2.StatusResponse),
                "TransferLeadership": uu(
                    transfer,
                    cluster_pb2.TransferLeadershipRequest,
                    cluster_pb2.TransferLeadershipResponse,
                ),
            },
        )
        return [lease, cluster]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> certs.IssuedCerts:
    return certs.generate(tmp_path_factory.mktemp("pki") / "ca", ["n1"], ["alice"])


class Server:
    def __init__(self, fake: FakeLease, port: int, pki: certs.IssuedCerts) -> None:
        self.fake = fake
        self.address = f"127.0.0.1:{port}"
        self.pki = pki

    def channel(self, *, client_cert: bool = False) -> grpc.aio.Channel:
        key = cert = None
        if client_cert:
            cert_path, key_path = self.pki.clients["alice"]
            cert, key = cert_path.read_bytes(), key_path.read_bytes()
        creds = grpc.ssl_channel_credentials(self.pki.ca_cert.read_bytes(), key, cert)
        return grpc.aio.secure_channel(self.address, creds)


async def _server(
    rules: AuthRules, pki: certs.IssuedCerts, *, require_client_auth: bool
) -> tuple[grpc.aio.Server, Server]:
    fake = FakeLease()
    interceptor = AuthInterceptor(rules, fake.name_of)
    server = grpc.aio.server(interceptors=[interceptor])
    server.add_generic_rpc_handlers(fake.handlers())
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    cert, key = pki.nodes["n1"]
    creds = grpc.ssl_server_credentials(
        [(key.read_bytes(), cert.read_bytes())],
        root_certificates=pki.ca_cert.read_bytes(),
        require_client_auth=require_client_auth,
    )
    port = server.add_secure_port("127.0.0.1:0", creds)
    await server.start()
    return server, Server(fake, port, pki)


@pytest.fixture
async def srv(rules: AuthRules, pki: certs.IssuedCerts) -> AsyncIterator[Server]:
    """Server-only TLS (no client certificates asked for): identity from tokens only."""
    server, handle = await _server(rules, pki, require_client_auth=False)
    try:
        yield handle
    finally:
        await server.stop(None)


def _bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


async def _code(call: Any) -> tuple[grpc.StatusCode, str]:
    try:
        await call
    except grpc.aio.AioRpcError as e:
        return e.code(), e.details() or ""
    return grpc.StatusCode.OK, ""


async def test_no_credentials_is_unauthenticated_and_changes_nothing(srv: Server) -> None:
    async with srv.channel() as ch:
        stub = lease_pb2_grpc.LeaseStub(ch)
        code, details = await _code(stub.Acquire(lease_pb2.AcquireRequest(name="jobs/a")))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        assert details.startswith("this cluster requires credentials: a bearer token")
        code, _ = await _code(stub.Get(lease_pb2.GetRequest(name="public/p")))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        code, _ = await _code(cluster_pb2_grpc.ClusterStub(ch).Status(cluster_pb2.StatusRequest()))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        # Health checks are not subject to the rules.
        health_stub: Any = health_pb2_grpc.HealthStub(ch)
        resp = await health_stub.Check(health_pb2.HealthCheckRequest())
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
    assert srv.fake.calls == []


@pytest.mark.parametrize("header", ["Bearer not-a-valid-token-at-all", "Basic dXNlcjpwdw==", "x"])
async def test_a_bad_token_is_unauthenticated(srv: Server, header: str) -> None:
    async with srv.channel() as ch:
        call = lease_pb2_grpc.LeaseStub(ch).Acquire(
            lease_pb2.AcquireRequest(name="jobs/a"), metadata=(("authorization", header),)
        )
        code, details = await _code(call)
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert "bearer token is not valid" in details
    assert srv.fake.calls == []


async def test_acquire_needs_a_grant_for_the_name(srv: Server) -> None:
    async with srv.channel() as ch:
        stub = lease_pb2_grpc.LeaseStub(ch)
        code, details = await _code(
            stub.Acquire(lease_pb2.AcquireRequest(name="other/x"), metadata=_bearer(DEPLOY))
        )
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert details == (
            "identity 'deploy' may not acquire 'other/x': it may acquire only names under 'jobs/'"
        )
        assert srv.fake.calls == []
        code, details = await _code(
            stub.Acquire(lease_pb2.AcquireRequest(name="jobs/b"), metadata=_bearer(READER))
        )
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert "it may acquire no names" in details
        assert srv.fake.calls == []
        resp = await stub.Acquire(lease_pb2.AcquireRequest(name="jobs/b"), metadata=_bearer(DEPLOY))
        assert resp.acquired
    assert srv.fake.calls == [("Acquire", "jobs/b")]


async def test_reads(srv: Server) -> None:
    async with srv.channel() as ch:
        stub = lease_pb2_grpc.LeaseStub(ch)
        resp = await stub.Get(lease_pb2.GetRequest(name="jobs/a"), metadata=_bearer(READER))
        assert resp.lease.name == "jobs/a"
        code, _ = await _code(
            stub.Get(lease_pb2.GetRequest(name="alice/x"), metadata=_bearer(READER))
        )
        assert code == grpc.StatusCode.PERMISSION_DENIED
        # List and an all-names Watch show only what the identity may read.
        listed = await stub.List(lease_pb2.ListRequest(), metadata=_bearer(READER))
        assert [i.name for i in listed.leases] == ["jobs/a", "public/p"]
        events = [
            e.name async for e in stub.Watch(lease_pb2.WatchRequest(), metadata=_bearer(READER))
        ]
        assert events == ["jobs/a", "public/p"]
        code, _ = await _code(
            stub.Watch(lease_pb2.WatchRequest(name="other/z"), metadata=_bearer(READER)).read()
        )
        assert code == grpc.StatusCode.PERMISSION_DENIED
        # ops may administer but read nothing but public/
        listed = await stub.List(lease_pb2.ListRequest(), metadata=_bearer(OPS))
        assert [i.name for i in listed.leases] == ["public/p"]


async def test_renewals_and_releases_are_checked_by_the_leases_name(srv: Server) -> None:
    async with srv.channel() as ch:
        stub = lease_pb2_grpc.LeaseStub(ch)
        alice_lease = srv.fake.ids["alice/x"]
        code, details = await _code(
            stub.Release(lease_pb2.ReleaseRequest(lease_id=alice_lease), metadata=_bearer(DEPLOY))
        )
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert "'alice/x'" in details
        # An unknown id reaches the handler (the node answers NOT_FOUND itself).
        await stub.Release(lease_pb2.ReleaseRequest(lease_id=999), metadata=_bearer(DEPLOY))
        await stub.Release(lease_pb2.ReleaseRequest(lease_id=11), metadata=_bearer(DEPLOY))
        assert srv.fake.calls == [("Release", "999"), ("Release", "11")]
        srv.fake.calls.clear()

        call = stub.KeepAlive(metadata=_bearer(DEPLOY))
        await call.write(lease_pb2.KeepAliveRequest(lease_id=11))
        answer: Any = await call.read()
        assert answer.lease_id == 11
        await call.write(lease_pb2.KeepAliveRequest(lease_id=alice_lease))
        code, details = await _code(call.read())
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert "'alice/x'" in details
    assert srv.fake.calls == [("KeepAlive", "11")]


async def test_cluster_admin(srv: Server) -> None:
    async with srv.channel() as ch:
        stub = cluster_pb2_grpc.ClusterStub(ch)
        status = await stub.Status(cluster_pb2.StatusRequest(), metadata=_bearer(READER))
        assert status.node_id == "n1"
        code, details = await _code(
            stub.TransferLeadership(
                cluster_pb2.TransferLeadershipRequest(), metadata=_bearer(DEPLOY)
            )
        )
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert "may not administer the cluster" in details
        resp = await stub.TransferLeadership(
            cluster_pb2.TransferLeadershipRequest(), metadata=_bearer(OPS)
        )
        assert resp.leader_id == "n2"
    assert srv.fake.calls == [("Status", ""), ("TransferLeadership", "")]


async def test_client_certificate_identity(rules: AuthRules, pki: certs.IssuedCerts) -> None:
    server, srv = await _server(rules, pki, require_client_auth=True)
    try:
        async with srv.channel(client_cert=True) as ch:
            stub = lease_pb2_grpc.LeaseStub(ch)
            resp = await stub.Acquire(lease_pb2.AcquireRequest(name="alice/y"))
            assert resp.acquired
            code, details = await _code(stub.Acquire(lease_pb2.AcquireRequest(name="jobs/y")))
            assert code == grpc.StatusCode.PERMISSION_DENIED
            assert details.startswith("identity 'alice' may not acquire 'jobs/y'")
            # A token, when sent, decides the identity.
            resp = await stub.Acquire(
                lease_pb2.AcquireRequest(name="jobs/y"), metadata=_bearer(DEPLOY)
            )
            assert resp.acquired
        async with srv.channel(client_cert=False) as ch:  # no certificate: the handshake fails
            code, _ = await _code(
                lease_pb2_grpc.LeaseStub(ch).Get(lease_pb2.GetRequest(name="alice/y"), timeout=2)
            )
            assert code == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(None)
    assert srv.fake.calls == [("Acquire", "alice/y"), ("Acquire", "jobs/y")]


# -- the client's TLS and token settings --------------------------------------------------------


@pytest.fixture
def no_security_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (
        "RAFTLEASE_TLS_CA",
        "RAFTLEASE_TLS_CERT",
        "RAFTLEASE_TLS_KEY",
        "RAFTLEASE_TOKEN",
        "RAFTLEASE_TOKEN_FILE",
    ):
        monkeypatch.delenv(var, raising=False)


def test_client_defaults_to_plaintext(no_security_env: None) -> None:
    sec = channel_security(None, None)
    assert sec.credentials is None
    assert sec.tls is None
    assert sec.token is None


def test_client_tls_from_the_environment(pki: certs.IssuedCerts, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(DEPLOY + "\n")
    env = {"RAFTLEASE_TLS_CA": str(pki.ca_cert), "RAFTLEASE_TOKEN_FILE": str(token_file)}
    sec = channel_security(None, None, env)
    assert sec.tls == TLSConfig(ca=str(pki.ca_cert))
    assert sec.token == DEPLOY
    assert sec.credentials is not None
    assert channel_security(None, "explicit-token-0123456", env).token == "explicit-token-0123456"
    assert channel_security(False, None, {"RAFTLEASE_TLS_CA": str(pki.ca_cert)}).tls is None


def test_client_refusals(pki: certs.IssuedCerts, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="a bearer token needs TLS"):
        channel_security(False, DEPLOY, {})
    with pytest.raises(ConfigError, match="needs its key"):
        channel_security(TLSConfig(ca=pki.ca_cert, cert=pki.clients["alice"][0]), None, {})
    with pytest.raises(ConfigError, match="cannot read the TLS CA file"):
        channel_security(TLSConfig(ca=tmp_path / "missing.crt"), None, {})
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        channel_security(
            None, None, {"RAFTLEASE_TLS_CA": str(pki.ca_cert), "RAFTLEASE_TOKEN_FILE": str(empty)}
        )


def test_client_failure_hints(pki: certs.IssuedCerts) -> None:
    plain = channel_security(False, None, {})
    assert "refuses this plaintext client" in plain.explain("UNAVAILABLE: ...: Socket closed")
    assert plain.explain("UNAVAILABLE: connection refused") == "UNAVAILABLE: connection refused"
    no_cert = channel_security(TLSConfig(ca=pki.ca_cert), None, {})
    assert "require a client certificate" in no_cert.explain("UNAVAILABLE: Socket closed")
    assert "not signed by the CA" in no_cert.explain("... CERTIFICATE_VERIFY_FAILED: ...")


# -- what serve refuses about its security flags ---------------------------------------------


def test_serve_refuses_incomplete_or_unusable_security(
    pki: certs.IssuedCerts, tmp_path: Path
) -> None:
    cert, key = (str(p) for p in pki.nodes["n1"])
    ca = str(pki.ca_cert)
    with pytest.raises(ServeRefused, match="TLS needs --tls-cert, --tls-key and --tls-ca together"):
        load_security("n1", cert, key, None, None)
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    os.chmod(rules, 0o600)
    with pytest.raises(ServeRefused, match=r"--auth-rules .* needs TLS"):
        load_security("n1", None, None, None, str(rules))
    with pytest.raises(ServeRefused, match="not --id 'n2'"):
        load_security("n2", cert, key, ca, None)
    bad = tmp_path / "bad.toml"
    bad.write_text('[[grant]]\nidentity = "x"\nactions = ["fly"]\n')
    with pytest.raises(ServeRefused, match="unknown action"):
        load_security("n1", cert, key, ca, str(bad))
    tls, auth_rules = load_security("n1", cert, key, ca, str(rules))
    assert tls is not None
    assert auth_rules is not None
    assert auth_rules.identity_for_token(DEPLOY) == "deploy"
    assert load_security("n1", None, None, None, None) == (None, None)
