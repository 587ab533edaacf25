"""A writer for the fenced storage service (examples/fenced_grpc_service/README.md)::

    python examples/fenced_grpc_service/client.py write greeting hello
    python examples/fenced_grpc_service/client.py write greeting stale --token 1
    python examples/fenced_grpc_service/client.py demo

``write KEY VALUE`` takes the lease ``--name`` (waiting for it up to 30 s), writes with the
lease's fencing token, prints the token and releases the lease. With ``--token N`` it takes no
lease and writes with token N: what a late request from an old holder looks like. ``demo``
plays the whole story in one process: writer A takes the lease and writes; A is "paused"
(its keepalives stop) until its lease expires; writer B takes the lease and writes; A wakes up
and writes with its old token, and the service refuses it.

Exit codes: 0; 1 when the service refused a write (the gRPC status and the service's
message are printed on stderr). Endpoints: $RAFTLEASE_ENDPOINTS, else 127.0.0.1:7001-7003.
"""

from __future__ import annotations

import argparse
import os
import sys

import grpc
from storage_api import StorageStub

from raftlease import LeaseClient


def fail(err: grpc.RpcError) -> int:
    print(f"write rejected: {err.code().name}: {err.details()}", file=sys.stderr, flush=True)
    return 1


def write(stub: StorageStub, args: argparse.Namespace) -> int:
    if args.token is not None:  # no lease: a late writer replaying an old token
        token = args.token
        stub.write(args.name, token, args.key, args.value)
        print(f"wrote {args.key}={args.value!r} with fencing token {token}", flush=True)
        return 0
    with LeaseClient() as client, client.acquire(args.name, ttl=args.ttl, wait=30.0) as lease:
        print(f"acquired lease {args.name}, fencing token {lease.fencing_token}", flush=True)
        stub.write(args.name, lease.fencing_token, args.key, args.value)
        print(f"wrote {args.key}={args.value!r} with fencing token {lease.fencing_token}")
    return 0


def demo(stub: StorageStub, args: argparse.Namespace) -> int:
    with LeaseClient() as client_a, LeaseClient() as client_b:
        a = client_a.acquire(args.name, ttl=args.ttl, wait=30.0, holder="writer-a")
        print(f"A: acquired lease {args.name}, fencing token {a.fencing_token}", flush=True)
        stub.write(args.name, a.fencing_token, "report", "from A")
        print("A: wrote report='from A'", flush=True)

        a.stop_keepalive()  # A is paused (GC pause, SIGSTOP, VM migration): no more renewals
        print(f"A: paused; its lease expires within {args.ttl:g}s", flush=True)
        with client_b.acquire(args.name, ttl=args.ttl, wait=30.0, holder="writer-b") as b:
            print(f"B: acquired lease {args.name}, fencing token {b.fencing_token}", flush=True)
            stub.write(args.name, b.fencing_token, "report", "from B")
            print("B: wrote report='from B'", flush=True)

            print(f"A: wakes up and writes with its old token {a.fencing_token}", flush=True)
            try:
                stub.write(args.name, a.fencing_token, "report", "late, from A")
            except grpc.RpcError as err:
                print(f"A: write rejected: {err.code().name}: {err.details()}", flush=True)
            else:
                print("A: the late write was ACCEPTED: the service is not fenced", flush=True)
                return 1
        stored = stub.read("report")
        print(f"stored: report={stored['value']!r} (token {stored['token']})", flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--server",
        default=os.environ.get("STORAGE_ADDRESS", "127.0.0.1:50051"),
        help="the storage service (default: $STORAGE_ADDRESS, else 127.0.0.1:50051)",
    )
    parser.add_argument("--name", default="storage-writer", help="lease name (the writer role)")
    parser.add_argument("--ttl", type=float, default=2.0, help="lease TTL in seconds")
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("write", help="write KEY=VALUE under the lease")
    one.add_argument("key")
    one.add_argument("value")
    one.add_argument("--token", type=int, default=None, help="write with this token, no lease")
    commands.add_parser("demo", help="a paused holder's late write is refused")
    args = parser.parse_args()

    with grpc.insecure_channel(args.server) as channel:
        stub = StorageStub(channel)
        try:
            return demo(stub, args) if args.command == "demo" else write(stub, args)
        except grpc.RpcError as err:
            return fail(err)


if __name__ == "__main__":
    raise SystemExit(main())
