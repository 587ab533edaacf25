"""TLS and bearer tokens for the clients' channels (docs/security.md).

``LeaseClient(..., tls=..., token=...)`` and ``AsyncLeaseClient`` take:

- ``tls``: a :class:`TLSConfig` (the CA to verify the nodes with, and a client certificate and
  key when the nodes require one: they do whenever they run with TLS), ``True`` (TLS with the
  system's CAs, no client certificate), ``False`` (plaintext), or None (the default): the
  environment's ``RAFTLEASE_TLS_CA``, ``RAFTLEASE_TLS_CERT``, ``RAFTLEASE_TLS_KEY`` if any is
  set, else plaintext, as before;
- ``token``: a bearer token sent with every call (``authorization: Bearer TOKEN``), or None:
  ``RAFTLEASE_TOKEN``, else the contents of the file ``RAFTLEASE_TOKEN_FILE``, else none. A token
  needs TLS: it is refused on a plaintext channel, where anyone on the path could read it.

Files are read when the client is made; a missing or unreadable one is a ``ConfigError``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from raftlease.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = [
    "TLS_CA_ENV",
    "TLS_CERT_ENV",
    "TLS_KEY_ENV",
    "TOKEN_ENV",
    "TOKEN_FILE_ENV",
    "ChannelSecurity",
    "TLSConfig",
    "channel_security",
    "read_token_file",
]

TLS_CA_ENV = "RAFTLEASE_TLS_CA"
TLS_CERT_ENV = "RAFTLEASE_TLS_CERT"
TLS_KEY_ENV = "RAFTLEASE_TLS_KEY"
TOKEN_ENV = "RAFTLEASE_TOKEN"
TOKEN_FILE_ENV = "RAFTLEASE_TOKEN_FILE"


@dataclass(frozen=True)
class TLSConfig:
    """How a client speaks TLS to the nodes.

    ``ca``: PEM file of the CA that signed the nodes' certificates (None: the system's CAs).
    ``cert`` and ``key``: PEM files of this client's certificate and key (both or neither); the
    nodes of a TLS cluster require one (``raftlease certs --clients NAME`` makes them).
    ``server_name``: the name to check the nodes' certificates against instead of the host of
    each endpoint (when dialing by an address the certificates do not list).
    """

    ca: str | os.PathLike[str] | None = None
    cert: str | os.PathLike[str] | None = None
    key: str | os.PathLike[str] | None = None
    server_name: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TLSConfig | None:
        """From ``RAFTLEASE_TLS_CA``/``_CERT``/``_KEY``; None when none of them is set."""
        env = os.environ if environ is None else environ
        ca, cert, key = (env.get(k) or None for k in (TLS_CA_ENV, TLS_CERT_ENV, TLS_KEY_ENV))
        if ca is None and cert is None and key is None:
            return None
        return cls(ca=ca, cert=cert, key=key)


def _read(what: str, path: str | os.PathLike[str]) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(
            f"cannot read the TLS {what} {os.fspath(path)}: {e.strerror or e}"
        ) from None


def read_token_file(path: str | os.PathLike[str]) -> str:
    """A bearer token from a file (surrounding whitespace dropped)."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
        raise ConfigError(f"cannot read the token file {os.fspath(path)}: {reason}") from None
    if not token:
        raise ConfigError(f"the token file {os.fspath(path)} is empty")
    return token


def _env_token(environ: Mapping[str, str]) -> str | None:
    token = (environ.get(TOKEN_ENV) or "").strip()
    if token:
        return token
    path = environ.get(TOKEN_FILE_ENV)
    return read_token_file(path) if path else None


@dataclass(frozen=True)
class ChannelSecurity:
    """The resolved settings: how to open a channel, and what to say when one fails."""

    tls: TLSConfig | None
    token: str | None
    credentials: grpc.ChannelCredentials | None
    options: tuple[tuple[str, Any], ...] = ()

    def sync_channel(self, target: str, options: Sequence[tuple[str, Any]]) -> grpc.Channel:
        if self.credentials is None:
            return grpc.insecure_channel(target, options=list(options))
        return grpc.secure_channel(target, self.credentials, options=[*options, *self.options])

    def aio_channel(self, target: str, options: Sequence[tuple[str, Any]]) -> grpc.aio.Channel:
        if self.credentials is None:
            return grpc.aio.insecure_channel(target, options=list(options))
        return grpc.aio.secure_channel(target, self.credentials, options=[*options, *self.options])

    def explain(self, error: str) -> str:
        """``error`` (a failed attempt's one line), with what the TLS setup may have to do
        with it, if anything."""
        text = error.lower()
        if "certificate_verify_failed" in text or "certificate verify failed" in text:
            return (
                f"{error} (TLS: the node's certificate is not signed by the CA this client "
                "trusts, or does not name the address dialed: give the cluster's CA with "
                f"--tls-ca or {TLS_CA_ENV})"
            )
        if self.tls is None and "socket closed" in text:
            return (
                f"{error} (if the cluster runs with TLS it refuses this plaintext client: give "
                f"its CA and a client certificate, --tls-ca/--tls-cert/--tls-key or "
                f"{TLS_CA_ENV}/{TLS_CERT_ENV}/{TLS_KEY_ENV})"
            )
        if self.tls is not None and "wrong_version_number" in text:
            return f"{error} (TLS: the node does not speak TLS; drop the TLS settings)"
        if self.tls is not None and self.tls.cert is None and "socket closed" in text:
            return (
                f"{error} (TLS: the nodes require a client certificate signed by their CA: "
                f"give one with --tls-cert/--tls-key or {TLS_CERT_ENV}/{TLS_KEY_ENV})"
            )
        return error


def channel_security(
    tls: TLSConfig | bool | None,
    token: str | None,
    environ: Mapping[str, str] | None = None,
) -> ChannelSecurity:
    """Resolve a client's ``tls`` and ``token`` arguments (see the module docstring)."""
    env = os.environ if environ is None else environ
    resolved: TLSConfig | None
    if tls is None:
        resolved = TLSConfig.from_env(env)
    elif tls is True:
        resolved = TLSConfig()
    elif tls is False:
        resolved = None
    elif isinstance(tls, TLSConfig):
        resolved = tls
    else:
        raise ConfigError(f"tls must be a TLSConfig, True, False or None, got {tls!r}")
    if token is None:
        token = _env_token(env)
    else:
        token = str(token).strip()
        if not token:
            raise ConfigError("token must be a non-empty string")
    if resolved is None:
        if token is not None:
            raise ConfigError(
                "a bearer token needs TLS (on a plaintext channel anyone on the path could "
                f"read it): give the cluster's CA (tls=TLSConfig(ca=...), --tls-ca, {TLS_CA_ENV})"
            )
        return ChannelSecurity(None, None, None)
    if (resolved.cert is None) != (resolved.key is None):
        raise ConfigError("a TLS client certificate needs its key, and a key its certificate")
    credentials = grpc.ssl_channel_credentials(
        root_certificates=None if resolved.ca is None else _read("CA file", resolved.ca),
        private_key=None if resolved.key is None else _read("key file", resolved.key),
        certificate_chain=None if resolved.cert is None else _read("certificate", resolved.cert),
    )
    if token is not None:
        credentials = grpc.composite_channel_credentials(
            credentials, grpc.access_token_call_credentials(token)
        )
    options: tuple[tuple[str, Any], ...] = ()
    if resolved.server_name:
        options = (("grpc.ssl_target_name_override", resolved.server_name),)
    return ChannelSecurity(resolved, token, credentials, options)
