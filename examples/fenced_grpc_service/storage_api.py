"""The wire contract of the example storage service, shared by server.py and client.py.

No .proto and no protoc step: one gRPC service, ``example.Storage``, with two unary methods
whose messages are JSON objects (gRPC carries any bytes; the (de)serializers below are what
generated code would otherwise provide):

- ``Write`` ``{"lease": NAME, "token": N, "key": K, "value": V}`` -> ``{"highest": N}``;
  refused with ``FAILED_PRECONDITION`` when ``token`` is lower than the highest fencing token
  the service has accepted for ``lease``.
- ``Read`` ``{"key": K}`` -> ``{"value": V, "token": N}`` (``NOT_FOUND`` if never written).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import grpc

SERVICE = "example.Storage"
WRITE = f"/{SERVICE}/Write"
READ = f"/{SERVICE}/Read"

Message = dict[str, Any]


def encode(message: Message) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode()


def decode(data: bytes) -> Message:
    message = json.loads(data)
    if not isinstance(message, dict):
        raise ValueError(f"expected a JSON object, got {type(message).__name__}")
    return message


class StorageStub:
    """A client stub, as protoc would generate one: ``write(...)`` and ``read(key)``."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._write = channel.unary_unary(
            WRITE, request_serializer=encode, response_deserializer=decode
        )
        self._read = channel.unary_unary(
            READ, request_serializer=encode, response_deserializer=decode
        )

    def write(self, lease: str, token: int, key: str, value: str, timeout: float = 5.0) -> Message:
        request = {"lease": lease, "token": token, "key": key, "value": value}
        return self._write(request, timeout=timeout)

    def read(self, key: str, timeout: float = 5.0) -> Message:
        return self._read({"key": key}, timeout=timeout)
