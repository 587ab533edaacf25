"""A node's security: its TLS credentials, the auth rules, and the interceptor that enforces
them (docs/security.md). Layer L4 (imports grpc).

TLS (:class:`NodeTLS`, from ``serve --tls-cert --tls-key --tls-ca``): the node serves with its
certificate and **requires** every connection to present a certificate signed by the CA
(mutual TLS). One port carries both peer and client traffic, and grpc can only either require
client certificates or not ask for them at all; peers must prove their node id with theirs, so
clients present one too. The node dials its peers with the same certificate, as a client
certificate; the receiving peer checks that it names the sender of every Raft message
(``raftlease.transport.grpc.PeerServicer``).

Auth rules (:class:`AuthRules`, from ``serve --auth-rules FILE``, a TOML file)::

    [tokens]                      # identity = token, or a list of tokens
    alice = "sha256:5e88...42"    # "sha256:<hex>" keeps only the token's SHA-256 digest
    deploy = ["a-long-random-token-1", "a-long-random-token-2"]

    [[grant]]
    identity = "alice"            # a token's identity, a client certificate's, or "*"
    prefix = "billing/"           # names starting with this ("" or left out: every name)
    actions = ["acquire", "read"]

Actions: ``acquire`` (Acquire, Renew, KeepAlive, Release), ``read`` (Get, List, CheckToken,
Watch; List and an all-names Watch show only the names the identity may read) and ``admin``
(every Cluster RPC but Status, e.g. TransferLeadership; prefixes do not apply). Cluster.Status
needs an identity and no grant. Health checks and peer traffic are not subject to the rules.

Identity of a call: a valid bearer token (metadata ``authorization: Bearer TOKEN``) decides it;
an invalid one is refused (UNAUTHENTICATED) even if the certificate would do. Without a token,
the client certificate's ``raftlease://client/NAME`` URI SAN, else its common name. No identity:
UNAUTHENTICATED; an identity without the right grant: PERMISSION_DENIED. Nothing changes
either way.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import ssl
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import grpc

from raftlease.errors import ConfigError
from raftlease.v1 import lease_pb2

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

__all__ = [
    "ACTIONS",
    "CLIENT_URI_PREFIX",
    "NODE_URI_PREFIX",
    "AuthInterceptor",
    "AuthRules",
    "Grant",
    "HandlerCache",
    "NodeTLS",
    "RulesError",
    "TLSError",
    "client_identity",
    "load_node_tls",
    "load_rules",
    "parse_rules",
    "peer_uris",
]

ACTIONS = ("acquire", "read", "admin")
ANY_IDENTITY = "*"
NODE_URI_PREFIX = "raftlease://node/"  # the same as raftlease.certs (tests check)
CLIENT_URI_PREFIX = "raftlease://client/"
MIN_TOKEN_CHARS = 16
TOKEN_DIGEST_PREFIX = "sha256:"

_LEASE = "/raftlease.v1.Lease/"
_CLUSTER = "/raftlease.v1.Cluster/"
_ACQUIRE_BY_NAME = frozenset({"Acquire"})
_ACQUIRE_BY_ID = frozenset({"Renew", "Release"})
_READ_BY_NAME = frozenset({"Get", "CheckToken"})

Ctx = grpc.aio.ServicerContext[Any, Any]
if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]  # generic in the stubs only
_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")


class RulesError(ConfigError):
    """An auth rules file breaks the format; ``problems`` lists every broken rule."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{source}: {'; '.join(problems)}")


class TLSError(ConfigError):
    """A TLS file is missing, unreadable, malformed, or does not fit this node."""


# -- TLS ------------------------------------------------------------------------------------


def _read(flag: str, path: str | os.PathLike[str]) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise TLSError(f"cannot read {flag} {path}: {e.strerror or e}") from None
    if b"-----BEGIN " not in data:
        raise TLSError(f"{flag} {path} is not a PEM file")
    return data


@dataclass(frozen=True)
class NodeTLS:
    """A node's certificate, key and CA (PEM bytes): what it serves with and dials peers with."""

    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes
    node_id: str | None = None  # what the certificate's raftlease://node/ URI names
    # The same files for the plain-TCP peer link (raftlease/transport/tcp.py): mutual TLS,
    # the peer verified against the CA (and, dialing, against the host name it is dialed by).
    server_ssl: ssl.SSLContext | None = None
    client_ssl: ssl.SSLContext | None = None

    def server_credentials(self) -> grpc.ServerCredentials:
        """Mutual TLS: every connection must present a certificate signed by the CA."""
        return grpc.ssl_server_credentials(
            [(self.key_pem, self.cert_pem)],
            root_certificates=self.ca_pem,
            require_client_auth=True,
        )

    def peer_credentials(self) -> grpc.ChannelCredentials:
        """For dialing peers: verify them against the CA, present this node's certificate."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_pem,
            private_key=self.key_pem,
            certificate_chain=self.cert_pem,
        )


def _cert_node_ids(
    cert_pem: bytes, ca_pem: bytes, cert_flag: str, cert_path: str
) -> list[str] | None:
    """The node ids a certificate's URI SANs name, after checking the CA signed it. Needs the
    ``cryptography`` package; without it, None (not checked here: the peers still check)."""
    try:
        from cryptography import x509
    except ImportError:  # pragma: no cover - cryptography is a dependency
        return None
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as e:
        raise TLSError(f"{cert_flag} {cert_path} holds no readable certificate: {e}") from None
    cas = []
    for block in ca_pem.split(b"-----END CERTIFICATE-----"):
        if b"-----BEGIN CERTIFICATE-----" in block:
            try:
                cas.append(x509.load_pem_x509_certificate(block + b"-----END CERTIFICATE-----\n"))
            except ValueError:
                continue
    signed = False
    for ca in cas:
        try:
            cert.verify_directly_issued_by(ca)
        except Exception:  # InvalidSignature, another key type, ...
            continue
        signed = True
        break
    if cas and not signed:
        raise TLSError(
            f"{cert_flag} {cert_path} is not signed by the --tls-ca: peers would refuse this node"
        )
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    return [u.removeprefix(NODE_URI_PREFIX) for u in uris if u.startswith(NODE_URI_PREFIX)]


def load_node_tls(
    cert: str | os.PathLike[str],
    key: str | os.PathLike[str],
    ca: str | os.PathLike[str],
    node_id: str,
) -> NodeTLS:
    """Read and check a node's TLS files (before the node starts). Raises :class:`TLSError`
    for an unreadable or malformed file, a key that does not match the certificate, a
    certificate the CA did not sign, or one that does not name ``node_id`` as its
    ``raftlease://node/<id>`` URI SAN (the others would refuse every message from it)."""
    cert_pem = _read("--tls-cert", cert)
    key_pem = _read("--tls-key", key)
    ca_pem = _read("--tls-ca", ca)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(os.fspath(cert), os.fspath(key))
    except ssl.SSLError as e:
        raise TLSError(
            f"--tls-cert {cert} and --tls-key {key} do not form a pair: {e.reason or e}"
        ) from None
    try:
        context.load_verify_locations(cafile=os.fspath(ca))
    except ssl.SSLError as e:
        raise TLSError(f"--tls-ca {ca} holds no usable CA certificate: {e.reason or e}") from None
    ids = _cert_node_ids(cert_pem, ca_pem, "--tls-cert", os.fspath(cert))
    if ids is not None and ids != [node_id]:
        named = f"names node(s) {', '.join(repr(i) for i in ids)}" if ids else "names no node"
        raise TLSError(
            f"--tls-cert {cert} {named}, not --id {node_id!r}: a node's certificate must carry "
            f"the URI SAN {NODE_URI_PREFIX}{node_id} (raftlease certs makes such certificates); "
            "peers refuse messages from a node whose certificate does not name it"
        )
    # The context that checked the files serves the TCP peer link: it holds the pair and the CA.
    context.verify_mode = ssl.CERT_REQUIRED
    client_ssl = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=ca_pem.decode())
    client_ssl.load_cert_chain(os.fspath(cert), os.fspath(key))
    return NodeTLS(cert_pem, key_pem, ca_pem, node_id, context, client_ssl)


def _auth_values(auth_context: Mapping[str, Any], key: str) -> list[str]:
    out: list[str] = []
    for v in auth_context.get(key, ()) or ():
        out.append(v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v))
    return out


def peer_uris(auth_context: Mapping[str, Any]) -> list[str]:
    """The URI SANs of the peer's certificate (grpc's ``peer_uri`` auth property)."""
    return _auth_values(auth_context, "peer_uri")


def client_identity(auth_context: Mapping[str, Any]) -> str | None:
    """The identity a client certificate proves: its ``raftlease://client/NAME`` URI SAN, else
    its common name; None without a verified certificate."""
    for uri in peer_uris(auth_context):
        if uri.startswith(CLIENT_URI_PREFIX) and len(uri) > len(CLIENT_URI_PREFIX):
            return uri[len(CLIENT_URI_PREFIX) :]
    names = _auth_values(auth_context, "x509_common_name")
    return names[0] if names and names[0] else None


# -- rules ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grant:
    """``identity`` (or ``*``) may do ``actions`` to names starting with ``prefix``."""

    identity: str
    prefix: str
    actions: frozenset[str]


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


@dataclass(frozen=True)
class AuthRules:
    """Tokens (kept as SHA-256 digests) -> identity, and the grants."""

    tokens: Mapping[bytes, str] = field(default_factory=dict)
    grants: tuple[Grant, ...] = ()

    def identity_for_token(self, token: str) -> str | None:
        """The identity of a bearer token, or None if it is not one of ours."""
        want = _digest(token)
        found: str | None = None
        for digest, identity in self.tokens.items():  # compare every one, in constant time
            if hmac.compare_digest(digest, want):
                found = identity
        return found

    def _grants(self, identity: str, action: str) -> list[Grant]:
        return [
            g for g in self.grants if g.identity in (identity, ANY_IDENTITY) and action in g.actions
        ]

    def allowed(self, identity: str, action: str, name: str = "") -> bool:
        """May ``identity`` do ``action`` to ``name``? (admin: regardless of the name)"""
        grants = self._grants(identity, action)
        if action == "admin":
            return bool(grants)
        return any(name.startswith(g.prefix) for g in grants)

    def prefixes(self, identity: str, action: str) -> list[str]:
        return sorted({g.prefix for g in self._grants(identity, action)})


def _problems_of_grant(i: int, raw: object) -> tuple[list[str], Grant | None]:
    where = f"grant {i}"
    if not isinstance(raw, dict):
        return [f"{where} is not a table ([[grant]])"], None
    out: list[str] = []
    unknown = sorted(set(raw) - {"identity", "prefix", "actions"})
    if unknown:
        out.append(f"{where} has unknown key(s) {', '.join(unknown)} (identity, prefix, actions)")
    identity = raw.get("identity")
    if not isinstance(identity, str) or not identity.strip():
        out.append(f'{where} needs identity = "NAME" (or "*" for every identity)')
    prefix = raw.get("prefix", "")
    if not isinstance(prefix, str):
        out.append(f"{where}: prefix must be a string")
    actions = raw.get("actions")
    if not isinstance(actions, list) or not actions or not all(isinstance(a, str) for a in actions):
        out.append(f"{where} needs actions = [...], some of {', '.join(ACTIONS)}")
    else:
        bad = sorted({a for a in actions if a not in ACTIONS})
        if bad:
            out.append(f"{where}: unknown action(s) {', '.join(bad)}; known: {', '.join(ACTIONS)}")
    if out:
        return out, None
    assert isinstance(identity, str)
    assert isinstance(prefix, str)
    assert isinstance(actions, list)
    return [], Grant(identity.strip(), prefix, frozenset(actions))


def _token_digest(identity: str, token: object) -> tuple[bytes | None, str | None]:
    if not isinstance(token, str):
        return None, f"token of {identity!r} must be a string"
    if token.startswith(TOKEN_DIGEST_PREFIX):
        hexpart = token[len(TOKEN_DIGEST_PREFIX) :].strip().lower()
        try:
            digest = bytes.fromhex(hexpart)
        except ValueError:
            digest = b""
        if len(digest) != 32:
            return None, f"token of {identity!r}: {TOKEN_DIGEST_PREFIX} needs 64 hex digits"
        return digest, None
    if len(token) < MIN_TOKEN_CHARS:
        return None, (
            f"token of {identity!r} is shorter than {MIN_TOKEN_CHARS} characters: use a long "
            "random token (python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return _digest(token), None


def parse_rules(text: str, source: str = "auth rules") -> AuthRules:
    """Parse an auth rules file (TOML; the format is in the module docstring). Raises
    :class:`RulesError` listing every problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise RulesError(source, [f"not valid TOML: {e}"]) from None
    problems: list[str] = []
    unknown = sorted(set(data) - {"tokens", "grant"})
    if unknown:
        problems.append(f"unknown section(s) {', '.join(unknown)} (tokens, grant)")
    tokens: dict[bytes, str] = {}
    raw_tokens = data.get("tokens", {})
    if not isinstance(raw_tokens, dict):
        problems.append('tokens must be a table: [tokens] then IDENTITY = "TOKEN"')
        raw_tokens = {}
    for identity, value in raw_tokens.items():
        values = value if isinstance(value, list) else [value]
        if not values:
            problems.append(f"identity {identity!r} has an empty token list")
        for token in values:
            digest, problem = _token_digest(identity, token)
            if problem is not None:
                problems.append(problem)
            elif digest is not None:
                if digest in tokens and tokens[digest] != identity:
                    problems.append(
                        f"one token is given to both {tokens[digest]!r} and {identity!r}"
                    )
                tokens[digest] = identity
    grants: list[Grant] = []
    raw_grants = data.get("grant", [])
    if not isinstance(raw_grants, list):
        problems.append("grant must be an array of tables: [[grant]]")
        raw_grants = []
    for i, raw in enumerate(raw_grants, 1):
        found, grant = _problems_of_grant(i, raw)
        problems += found
        if grant is not None:
            grants.append(grant)
    if problems:
        raise RulesError(source, problems)
    return AuthRules(tokens, tuple(grants))


def load_rules(path: str | os.PathLike[str]) -> AuthRules:
    """Read and parse ``--auth-rules FILE`` (:class:`RulesError` if it cannot be used). A file
    that holds plaintext tokens and that others may read is refused."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise RulesError(f"--auth-rules {path}", [f"cannot read it: {e.strerror or e}"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RulesError(f"--auth-rules {path}", ["not UTF-8 text"]) from None
    rules = parse_rules(text, f"--auth-rules {path}")
    mode = os.stat(path).st_mode
    plaintext = any(
        not str(v).startswith(TOKEN_DIGEST_PREFIX)
        for value in tomllib.loads(text).get("tokens", {}).values()
        for v in (value if isinstance(value, list) else [value])
    )
    if plaintext and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise RulesError(
            f"--auth-rules {path}",
            [
                f"it holds plaintext tokens and its mode is {stat.S_IMODE(mode):o}: chmod 600 "
                f"it, or store the tokens as {TOKEN_DIGEST_PREFIX}<hex> digests"
            ],
        )
    return rules


# -- the interceptor ------------------------------------------------------------------------


def _bearer(metadata: object) -> tuple[bool, str | None]:
    """(an authorization header was sent, its bearer token if well-formed)."""
    for item in metadata or ():  # type: ignore[attr-defined]
        key, value = item[0], item[1]
        if key != "authorization":
            continue
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        scheme, _, token = str(value).strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return True, token.strip()
        return True, None
    return False, None


async def _deny(context: Ctx, code: grpc.StatusCode, message: str) -> NoReturn:
    await context.abort(code, message)
    raise AssertionError("unreachable")  # pragma: no cover - abort always raises


class HandlerCache:
    """The handler an interceptor wrapped, per method. A wrapper depends only on the method
    and the handler it was given (the call is its argument), so it is built once per method
    rather than for every call: rebuilding it (closures, a new method handler) cost every
    call ~20 us. A method whose handler is another object than last time is wrapped anew.
    Only registered methods get here (an unknown one has no handler), so it stays small."""

    def __init__(self) -> None:
        self._by_method: dict[str, tuple[Any, Any]] = {}

    def get(self, method: str, handler: Any, wrap: Callable[[str, Any], Any]) -> Any:
        seen = self._by_method.get(method)
        if seen is not None and seen[0] is handler:
            return seen[1]
        wrapped = wrap(method, handler)
        self._by_method[method] = (handler, wrapped)
        return wrapped


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Enforces :class:`AuthRules` on the Lease and Cluster services (every other service,
    health and RaftPeer, passes through). ``lease_name(lease_id)``: the name of a current
    grant, for the RPCs that name a lease by id (Renew, KeepAlive, Release); set it once the
    node exists."""

    def __init__(
        self, rules: AuthRules, lease_name: Callable[[int], str | None] | None = None
    ) -> None:
        self.rules = rules
        self.lease_name: Callable[[int], str | None] = lease_name or (lambda _lid: None)
        self._wrapped = HandlerCache()

    async def _identity(self, context: Ctx) -> str:
        sent, token = _bearer(context.invocation_metadata())
        if sent:
            identity = self.rules.identity_for_token(token) if token else None
            if identity is None:
                await _deny(
                    context,
                    grpc.StatusCode.UNAUTHENTICATED,
                    "the bearer token is not valid on this cluster (metadata 'authorization: "
                    "Bearer TOKEN')",
                )
            return identity
        identity = client_identity(context.auth_context())
        if identity is None:
            await _deny(
                context,
                grpc.StatusCode.UNAUTHENTICATED,
                "this cluster requires credentials: a bearer token (metadata 'authorization: "
                "Bearer TOKEN'; raftlease --token-file or RAFTLEASE_TOKEN) or a client "
                "certificate whose identity its auth rules name",
            )
        return identity

    async def _require(self, context: Ctx, identity: str, action: str, name: str = "") -> None:
        if self.rules.allowed(identity, action, name):
            return
        if action == "admin":
            await _deny(
                context,
                grpc.StatusCode.PERMISSION_DENIED,
                f"identity {identity!r} may not administer the cluster (no admin grant)",
            )
        prefixes = self.rules.prefixes(identity, action)
        where = (
            f"only names under {', '.join(repr(p) for p in prefixes)}" if prefixes else "no names"
        )
        await _deny(
            context,
            grpc.StatusCode.PERMISSION_DENIED,
            f"identity {identity!r} may not {action} {name!r}: it may {action} {where}",
        )

    async def _require_by_id(self, context: Ctx, identity: str, lease_id: int) -> None:
        name = self.lease_name(lease_id)
        if name is not None:  # unknown ids get the handler's own NOT_FOUND
            await self._require(context, identity, "acquire", name)

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[_Req, _Resp] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[_Req, _Resp] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        wrapped: Any = self._wrapped.get(handler_call_details.method, handler, self._wrap_rpc)
        return wrapped  # type: ignore[no-any-return]

    def _wrap_rpc(self, method: str, handler: Any) -> Any:
        if method.startswith(_LEASE):
            return self._lease(method[len(_LEASE) :], handler)
        if method.startswith(_CLUSTER):
            return self._cluster(method[len(_CLUSTER) :], handler)
        return handler

    def _cluster(self, rpc: str, handler: Any) -> Handler:
        def check(identity: str, context: Ctx) -> Awaitable[None]:
            if rpc == "Status":
                return _done()
            return self._require(context, identity, "admin")

        return self._wrap(handler, check)

    def _lease(self, rpc: str, handler: Any) -> Handler:
        rules = self.rules
        if rpc == "KeepAlive" and handler.stream_stream is not None:
            inner = handler.stream_stream

            async def keepalive(
                requests: AsyncIterator[lease_pb2.KeepAliveRequest], context: Ctx
            ) -> AsyncIterator[lease_pb2.KeepAliveResponse]:
                identity = await self._identity(context)

                async def checked() -> AsyncIterator[lease_pb2.KeepAliveRequest]:
                    async for req in requests:
                        await self._require_by_id(context, identity, req.lease_id)
                        yield req

                async for resp in inner(checked(), context):
                    yield resp

            return grpc.stream_stream_rpc_method_handler(
                keepalive,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if rpc == "Watch" and handler.unary_stream is not None:
            inner_stream = handler.unary_stream

            async def watch(
                request: lease_pb2.WatchRequest, context: Ctx
            ) -> AsyncIterator[lease_pb2.WatchEvent]:
                identity = await self._identity(context)
                if request.name:
                    await self._require(context, identity, "read", request.name)
                elif not rules.prefixes(identity, "read"):
                    await self._require(context, identity, "read", "")
                async for ev in inner_stream(request, context):
                    name = ev.name or ev.lease.name
                    if request.name or rules.allowed(identity, "read", name):
                        yield ev

            return grpc.unary_stream_rpc_method_handler(
                watch,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )

        def check_request(identity: str, context: Ctx, request: Any) -> Awaitable[None]:
            if rpc in _ACQUIRE_BY_NAME:
                return self._require(context, identity, "acquire", request.name)
            if rpc in _ACQUIRE_BY_ID:
                return self._require_by_id(context, identity, request.lease_id)
            if rpc in _READ_BY_NAME:
                return self._require(context, identity, "read", request.name)
            if rpc == "List":
                if rules.prefixes(identity, "read"):
                    return _done()  # answered, filtered below
                return self._require(context, identity, "read", request.prefix)
            return self._require(context, identity, "admin")  # an RPC these rules predate

        def filter_response(identity: str, response: Any) -> Any:
            if rpc == "List" and isinstance(response, lease_pb2.ListResponse):
                kept = [i for i in response.leases if rules.allowed(identity, "read", i.name)]
                if len(kept) != len(response.leases):
                    return lease_pb2.ListResponse(leases=kept)
            return response

        return self._wrap(handler, None, check_request, filter_response)

    def _wrap(
        self,
        handler: Any,
        check: Callable[[str, Ctx], Awaitable[None]] | None,
        check_request: Callable[[str, Ctx, Any], Awaitable[None]] | None = None,
        filter_response: Callable[[str, Any], Any] | None = None,
    ) -> Handler:
        """The same handler, behind authentication and the given checks (unary requests;
        a streaming request is checked for its identity only)."""

        async def gate(context: Ctx, request: Any) -> str:
            identity = await self._identity(context)
            if check is not None:
                await check(identity, context)
            if check_request is not None and request is not None:
                await check_request(identity, context, request)
            return identity

        kw = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            uu = handler.unary_unary

            async def unary_unary(request: Any, context: Ctx) -> Any:
                identity = await gate(context, request)
                response = await uu(request, context)
                return filter_response(identity, response) if filter_response else response

            return grpc.unary_unary_rpc_method_handler(unary_unary, **kw)
        if handler.unary_stream is not None:
            us = handler.unary_stream

            async def unary_stream(request: Any, context: Ctx) -> AsyncIterator[Any]:
                await gate(context, request)
                async for item in us(request, context):
                    yield item

            return grpc.unary_stream_rpc_method_handler(unary_stream, **kw)
        if handler.stream_unary is not None:
            su = handler.stream_unary

            async def stream_unary(requests: Any, context: Ctx) -> Any:
                await gate(context, None)
                return await su(requests, context)

            return grpc.stream_unary_rpc_method_handler(stream_unary, **kw)
        ss = handler.stream_stream

        async def stream_stream(requests: Any, context: Ctx) -> AsyncIterator[Any]:
            await gate(context, None)
            async for item in ss(requests, context):
                yield item

        return grpc.stream_stream_rpc_method_handler(stream_stream, **kw)


async def _done() -> None:
    return None
