#!/usr/bin/env python3
"""Exit 0 when the local raftlease node's gRPC health service reports SERVING, else 1.

    raftlease-healthcheck                      # liveness: service "" (the process serves)
    raftlease-healthcheck raftlease.v1.Ready   # readiness: part of a working cluster

The image's HEALTHCHECK and the Kubernetes exec probes of a TLS deployment use it (plain
Kubernetes `grpc:` probes cannot present a client certificate). It needs nothing but grpcio and
grpcio-health-checking, which raftlease depends on. Settings, from the environment:

    RAFTLEASE_HEALTH_ADDRESS  the node's address (default 127.0.0.1:7001)
    RAFTLEASE_HEALTH_TIMEOUT  seconds to wait for the answer (default 2)
    RAFTLEASE_TLS_CA, RAFTLEASE_TLS_CERT, RAFTLEASE_TLS_KEY
                              when RAFTLEASE_TLS_CA is set: speak TLS, presenting this
                              certificate (a node's own certificate will do: it is valid for
                              client use, and names 127.0.0.1 and localhost)

These are the variables `raftlease serve` reads its TLS settings from, so a container that
configures the server through them configures its health check too. docs/deployment.md.
"""

from __future__ import annotations

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def check(address: str, service: str, timeout: float) -> str:
    """The service's status name (SERVING, NOT_SERVING, ...) or the gRPC error code's name."""
    ca = os.environ.get("RAFTLEASE_TLS_CA", "")
    if ca:
        cert = os.environ.get("RAFTLEASE_TLS_CERT", "")
        key = os.environ.get("RAFTLEASE_TLS_KEY", "")
        creds = grpc.ssl_channel_credentials(
            _read(ca), _read(key) if key else None, _read(cert) if cert else None
        )
        channel = grpc.secure_channel(address, creds)
    else:
        channel = grpc.insecure_channel(address)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            request = health_pb2.HealthCheckRequest(service=service)
            resp = stub.Check(request, timeout=timeout)  # type: ignore[attr-defined]
        except grpc.RpcError as err:
            return str(err.code().name)  # UNAVAILABLE: nothing answers
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status))


def main(argv: list[str]) -> int:
    if len(argv) > 2 or (len(argv) == 2 and argv[1] in ("-h", "--help")):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    service = argv[1] if len(argv) == 2 else ""
    address = os.environ.get("RAFTLEASE_HEALTH_ADDRESS", "127.0.0.1:7001")
    timeout = float(os.environ.get("RAFTLEASE_HEALTH_TIMEOUT", "2"))
    try:
        status = check(address, service, timeout)
    except OSError as err:  # an unreadable certificate or key
        print(f"{address} {service!r}: {err}", file=sys.stderr)
        return 1
    print(f"{address} {service or '(liveness)'}: {status}")
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
