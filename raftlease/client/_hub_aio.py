"""The asyncio client's keepalives: one task drives the :class:`KeepaliveHub` of every lease
an :class:`~raftlease.client.AsyncLeaseClient` holds (``_hub.py`` decides everything).

Tasks, whatever the number of leases: the hub task (``raftlease-keepalive``, started with
the first lease, stopped by ``close()``), a reader task per open KeepAlive stream (grpc.aio
consumes the request iterator itself), one task per unary Renew in flight (the fallback for
a server without the stream) and one per ``on_lost`` callback that returns an awaitable (the
callback itself is called by the hub task, right after ``lost`` is set; what it returns is
awaited in a task of its own, so that it delays no renewal).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

from raftlease import clock as _clock
from raftlease.client._hub import HubStep, KeepaliveHub
from raftlease.client._hub_io import HubEvents, StreamBase
from raftlease.client._rpc import (
    KeepaliveMessages,
    renew_request,
)
from raftlease.client.errors import ClusterUnavailable

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from raftlease.client.aio import AsyncLease, AsyncLeaseClient
    from raftlease.v1 import lease_pb2

__all__ = ["AsyncKeepalives"]

log = logging.getLogger("raftlease.client")

_MAX_EVENTS = 512  # events handled between two polls at most


class _Stream(StreamBase):
    """One KeepAlive stream: writes go through a queue to the request iterator grpc.aio
    consumes; a reader task turns every answer (and the end) into an event for the hub."""

    def __init__(
        self,
        call_id: int,
        target: str,
        stub: Any,
        post: Callable[[tuple[Any, ...]], None],
    ) -> None:
        self.call_id = call_id
        self.target = target
        self.messages = KeepaliveMessages()  # the hub thread's / task's
        self._post = post
        self._cancelled = False
        self._requests: asyncio.Queue[list[lease_pb2.KeepAliveRequest] | None] = asyncio.Queue()
        self._call = stub.KeepAlive(self._iter_requests())
        self._reader = asyncio.get_running_loop().create_task(
            self._read(), name=f"raftlease-keepalive-stream-{call_id}"
        )

    async def _iter_requests(self) -> AsyncIterator[lease_pb2.KeepAliveRequest]:
        while True:
            batch = await self._requests.get()
            if batch is None:
                return
            for request in batch:
                yield request

    def write(self, batch: list[lease_pb2.KeepAliveRequest]) -> None:
        self._requests.put_nowait(batch)

    def cancel(self) -> None:
        self._cancelled = True
        self._requests.put_nowait(None)
        self._call.cancel()

    async def _read(self) -> None:
        post, call_id = self._post, self.call_id
        try:
            async for resp in self._call:
                post(("answer", call_id, resp))
        except asyncio.CancelledError:
            if not self._cancelled:
                raise
        except grpc.RpcError as err:
            post(("ended", call_id, err))
        except Exception as err:  # pragma: no cover - grpc raising something else
            post(("ended", call_id, err))
        else:
            post(("ended", call_id, None))


class AsyncKeepalives(HubEvents):
    """The hub task of one :class:`AsyncLeaseClient`."""

    def __init__(self, client: AsyncLeaseClient) -> None:
        self._client = client
        self.hub = KeepaliveHub()
        self._events: collections.deque[tuple[Any, ...]] = collections.deque()
        self._kick: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._leases: dict[int, AsyncLease] = {}
        self._calls: dict[int, _Stream | asyncio.Task[None]] = {}
        self._targets: dict[int, str] = {}
        self._callbacks: set[asyncio.Task[None]] = set()
        self._stopped = False

    # -- called from the event loop -------------------------------------------------------

    def _post(self, event: tuple[Any, ...]) -> None:
        self._events.append(event)
        if self._kick is not None:
            self._kick.set()

    def add(self, lease: AsyncLease) -> None:
        if self._stopped:
            raise ClusterUnavailable("the client is closed")
        if self._task is None:
            self._kick = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="raftlease-keepalive"
            )
        self._post(("add", lease))

    def remove(self, lease: AsyncLease) -> None:
        self._post(("remove", lease.lease_id))

    def nudge(self, lease: AsyncLease) -> None:
        self._post(("nudge", lease.lease_id))

    async def aclose(self) -> None:
        """Stop the hub task (after the leases were released); cancel its calls."""
        self._stopped = True
        task = self._task
        if task is None or task.done():
            return
        self._post(("stop",))
        try:
            await asyncio.wait_for(asyncio.shield(task), 2.0)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        except Exception:
            log.exception("raftlease: the keepalive task failed")

    # -- the hub task ---------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while True:
                try:
                    step = self.hub.poll(_clock.boot_monotonic())
                    self._carry_out(step)
                    if not await self._wait(step.wake):
                        return
                except ClusterUnavailable:  # the client was closed under us
                    return
                except Exception:  # a bug: keep the other leases alive
                    log.exception("raftlease: the keepalive hub failed; going on")
                    await asyncio.sleep(0.05)
        finally:
            for call in self._calls.values():
                call.cancel()
            self._calls.clear()

    async def _wait(self, wake: float | None) -> bool:
        """Handle events until ``wake`` (at least one, if any comes); False on stop."""
        kick = self._kick
        assert kick is not None
        if self._events:
            await asyncio.sleep(0)  # let the other tasks run between two bursts
        else:
            kick.clear()
            if wake is None:
                await kick.wait()
            else:
                timeout = max(0.0, wake - _clock.boot_monotonic())
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await kick.wait()
        events = self._events
        for _ in range(_MAX_EVENTS):
            if not events:
                break
            if not self._handle(events.popleft()):
                return False
        return True

    def _carry_out(self, step: HubStep) -> None:
        lost: list[AsyncLease] = []
        for ended in step.ended:  # first every lost lease is marked and signalled ...
            lease = self._leases.pop(ended.lease_id, None)
            if lease is None or ended.lost is None:
                continue
            if lease._signal_lost(ended.lost.reason):
                lost.append(lease)
        for call_id in step.closes:
            self._targets.pop(call_id, None)
            call = self._calls.pop(call_id, None)
            if call is not None:
                call.cancel()
        for write in step.writes:
            stream = self._calls.get(write.call)
            if stream is None:
                conn = self._client._conn(write.target)
                stream = _Stream(write.call, write.target, conn.lease, self._post)
                self._calls[write.call] = stream
                self._targets[write.call] = write.target
            assert isinstance(stream, _Stream)
            requests = stream.messages.requests(
                write.lease_ids, self._health_of, batched=write.batched
            )
            self.hub.stats.messages += len(requests)
            stream.write(requests)
        loop = asyncio.get_running_loop()
        for unary in step.unary:
            request = renew_request(unary.lease_id, self._leases[unary.lease_id]._health)
            self._calls[unary.call] = loop.create_task(
                self._renew(unary.call, unary.lease_id, unary.target, request, unary.timeout)
            )
            self._targets[unary.call] = unary.target
        for lease in lost:  # ... and once the renewals are out, on_lost is called
            result = lease._run_on_lost()
            if result is not None:
                task = loop.create_task(self._await_callback(result))
                self._callbacks.add(task)
                task.add_done_callback(self._callbacks.discard)

    async def _renew(
        self,
        call_id: int,
        lease_id: int,
        target: str,
        request: lease_pb2.RenewRequest,
        attempt_s: float,
    ) -> None:
        try:
            resp = await self._client._conn(target).lease.Renew(request, timeout=attempt_s)
        except grpc.RpcError as err:
            self._post(("unary_failed", call_id, err))
        except ClusterUnavailable:
            return
        else:
            self._post(("unary", call_id, lease_id, resp))

    @staticmethod
    async def _await_callback(result: Awaitable[object]) -> None:
        try:
            await result
        except Exception:
            log.exception("raftlease: on_lost callback raised")
