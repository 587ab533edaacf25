"""One contender of an election: campaign, lead for --hold seconds (or until the lease is
lost), resign, exit. Run several at once (one per terminal) and kill the leader to watch
another take over:

    python examples/election_contender.py --name scheduler --ttl 2 --hold 60

Endpoints: $RAFTLEASE_ENDPOINTS, else 127.0.0.1:7001-7003. tests/integration/test_election.py
runs this file (and SIGKILLs it while it leads).
"""

from __future__ import annotations

import argparse
import time

from raftlease import LeaseClient


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="scheduler")
    parser.add_argument("--ttl", type=float, default=2.0)
    parser.add_argument("--hold", type=float, default=1.0, help="seconds to lead, then resign")
    parser.add_argument("--holder", default=None, help="identity (default HOSTNAME:PID)")
    args = parser.parse_args()

    with (
        LeaseClient() as client,
        client.election(args.name, ttl=args.ttl, holder=args.holder) as election,
    ):
        print(f"campaigning for {args.name} as {election.identity}", flush=True)
        lease = election.campaign()  # blocks until this process leads
        print(f"LEADING token={lease.fencing_token}", flush=True)
        end = time.monotonic() + args.hold
        while time.monotonic() < end and not lease.lost.wait(0.05):
            pass  # the leader's work goes here; pass lease.fencing_token to what you write
        if lease.lost.is_set():
            print(f"LOST {lease.lost_reason}", flush=True)
            return 1
        election.resign()
        print("RESIGNED", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
