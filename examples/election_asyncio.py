"""asyncio: a leader's work runs as a task that is cancelled when leadership is lost.

Two runners compete for "compactor"; each leads for a short term, hands over, and queues
again (requeue). on_new_leader sees every change. Runs for about 3 seconds.

Endpoints: $RAFTLEASE_ENDPOINTS, else 127.0.0.1:7001-7003.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from raftlease import AsyncLeaseClient, LeadershipLost

if TYPE_CHECKING:
    from raftlease.client import AsyncLeadershipRunner, AsyncLease


async def main() -> None:
    async with AsyncLeaseClient() as client:

        def runner(who: str) -> AsyncLeadershipRunner:
            async def lead(lease: AsyncLease) -> None:
                print(f"{who}: leading with token {lease.fencing_token}")
                await asyncio.sleep(1.0)  # the term ends when this returns (or is cancelled)

            return client.run_for_leadership(
                "compactor",
                on_started_leading=lead,
                on_stopped_leading=lambda: print(f"{who}: stopped leading"),
                on_new_leader=lambda identity: print(f"{who}: new leader is {identity}"),
                ttl=2.0,
                holder=who,
            )

        first, second = runner("alpha"), runner("beta")
        await asyncio.sleep(3.0)
        for r in (first, second):
            await r.stop()

        # A block that runs only while leading: cancelled, then LeadershipLost, when the
        # lease is lost (here we stop its keepalives to make that happen).
        try:
            async with client.leadership("compactor", ttl=2.0, holder="gamma") as lease:
                lease.stop_keepalive()
                await asyncio.sleep(60)
        except LeadershipLost as err:
            print(f"gamma: {err}")


if __name__ == "__main__":
    asyncio.run(main())
