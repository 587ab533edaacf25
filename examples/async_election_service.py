"""An asyncio service that does its work only while it leads the election ``--name``, with the
callback API (``AsyncLeaseClient.run_for_leadership``, docs/election.md). Run two copies, one
per terminal; one leads, the other waits; kill the leader and the other takes over::

    python examples/async_election_service.py --name reports --holder alpha
    python examples/async_election_service.py --name reports --holder beta

It prints ``LEADING token=N`` when its term starts, ``working ...`` once a second while it
leads, ``STOPPED LEADING`` when the term ends, and ``NEW LEADER <identity>`` for every new
leader it observes (itself included). Ctrl-C (or SIGTERM) resigns, so the other copy takes
over at once; a SIGKILLed leader is replaced once its lease expires (within ``--ttl``).

Endpoints: $RAFTLEASE_ENDPOINTS, else 127.0.0.1:7001-7003. tests/integration/test_examples.py
runs two copies and SIGKILLs the leader (examples/README: docs/examples.md).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from typing import TYPE_CHECKING

from raftlease import AsyncLeaseClient

if TYPE_CHECKING:
    from raftlease.client import AsyncLease


def say(text: str) -> None:
    print(text, flush=True)


async def lead(lease: AsyncLease) -> None:
    """The leader's work: runs as a task, cancelled as soon as the lease may be lost (before it
    can pass on). Pass ``lease.fencing_token`` with everything it writes."""
    say(f"LEADING token={lease.fencing_token}")
    beat = 0
    while True:
        beat += 1
        say(f"working: step {beat} with fencing token {lease.fencing_token}")
        await asyncio.sleep(1.0)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="reports", help="election name (default %(default)s)")
    parser.add_argument("--holder", default=None, help="identity (default HOSTNAME:PID)")
    parser.add_argument("--ttl", type=float, default=3.0, help="lease TTL in seconds")
    args = parser.parse_args()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    async with AsyncLeaseClient() as client:
        runner = client.run_for_leadership(
            args.name,
            on_started_leading=lead,
            on_stopped_leading=lambda: say("STOPPED LEADING"),
            on_new_leader=lambda identity: say(f"NEW LEADER {identity}"),
            ttl=args.ttl,
            holder=args.holder,
        )
        say(f"campaigning for {args.name} as {runner.election.identity} (pid {os.getpid()})")
        async with runner:  # leaving it cancels the term, resigns and stops campaigning
            await stop.wait()
        say("resigned, exiting")


if __name__ == "__main__":
    asyncio.run(main())
