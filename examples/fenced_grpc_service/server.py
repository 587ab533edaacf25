"""A tiny gRPC storage service whose writes are fenced (examples/fenced_grpc_service/README.md)::

    python examples/fenced_grpc_service/server.py

Every ``Write`` carries the writer's lease name and fencing token. The handler passes them to
:class:`raftlease.client.FencingGuard` before it touches the data: a token lower than the
highest already accepted for that lease is refused with ``FAILED_PRECONDITION`` and the
guard's message (``stale fencing token 5 for lease 'storage-writer': a newer grant (token 8)
has already been seen``). So a writer that was paused, or whose request sat in the network,
cannot overwrite what a newer lease holder wrote. The service needs no connection to the
raftlease cluster: tokens only ever grow, so "lower than one I have seen" means "stale".

The guard keeps the highest tokens in memory, next to this example's in-memory data; a real
service keeps them wherever it keeps the data, and updates both in one transaction
(examples/fenced_scheduler/worker.py does that with SQLite).
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from concurrent import futures

import grpc
from storage_api import SERVICE, Message, decode, encode

from raftlease.client import FencingGuard, StaleToken


class Storage:
    def __init__(self) -> None:
        self.guard = FencingGuard()
        self.lock = threading.Lock()
        self.data: dict[str, tuple[str, int]] = {}  # key -> (value, token that wrote it)

    def write(self, request: Message, context: grpc.ServicerContext) -> Message:
        try:
            lease, token = str(request["lease"]), int(request["token"])
            key, value = str(request["key"]), str(request["value"])
        except (KeyError, TypeError, ValueError) as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad Write request: {err!r}")
        with self.lock:  # check and write as one step, as a database transaction would
            try:
                self.guard.check(lease, token)  # raises StaleToken for an older token
            except StaleToken as err:
                print(f"REJECTED write {key}={value!r} with token {token}: {err}", flush=True)
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(err))
            self.data[key] = (value, token)
        print(f"accepted write {key}={value!r} with token {token}", flush=True)
        return {"highest": self.guard.highest(lease)}

    def read(self, request: Message, context: grpc.ServicerContext) -> Message:
        key = str(request.get("key", ""))
        with self.lock:
            found = self.data.get(key)
        if found is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no value for key {key!r}")
        return {"value": found[0], "token": found[1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--listen",
        default=os.environ.get("STORAGE_ADDRESS", "127.0.0.1:50051"),
        help="address to serve on (default: $STORAGE_ADDRESS, else 127.0.0.1:50051)",
    )
    args = parser.parse_args()

    storage = Storage()
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Write": grpc.unary_unary_rpc_method_handler(
                storage.write, request_deserializer=decode, response_serializer=encode
            ),
            "Read": grpc.unary_unary_rpc_method_handler(
                storage.read, request_deserializer=decode, response_serializer=encode
            ),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(args.listen)
    server.start()
    print(f"storage service listening on {args.listen}", flush=True)

    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    done.wait()
    server.stop(grace=1.0).wait()


if __name__ == "__main__":
    main()
