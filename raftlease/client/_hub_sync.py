"""The blocking client's keepalives: one thread drives the :class:`KeepaliveHub` of every
lease a :class:`~raftlease.client.LeaseClient` holds (``_hub.py`` decides everything).

Threads, whatever the number of leases: the hub thread (``raftlease-keepalive``, started
with the first lease, stopped by ``close()``), which also runs the ``on_lost`` callbacks (as
the per-lease keepalive threads did; after the step's renewals are written); and per open
KeepAlive stream (normally one, to the leader) a reader thread and grpc's own request-writer
thread. Unary Renews (the fallback) use grpc futures: no thread.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import TYPE_CHECKING, Any

import grpc

from raftlease import clock as _clock
from raftlease.client._hub import HubStep, KeepaliveHub
from raftlease.client._hub_io import HubEvents, StreamBase
from raftlease.client._keepalive import safe_callback
from raftlease.client._rpc import (
    KeepaliveMessages,
    renew_request,
)
from raftlease.client.errors import ClusterUnavailable

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from raftlease.client.sync import Lease, LeaseClient
    from raftlease.v1 import lease_pb2

__all__ = ["SyncKeepalives"]

log = logging.getLogger("raftlease.client")

# Events handled between two polls at most (a poll declares losses and fails stalled calls:
# a flood of answers must not hold it back).
_MAX_EVENTS = 512


class _Stream(StreamBase):
    """One KeepAlive stream: writes go through a queue to grpc's request iterator; a reader
    thread turns every answer (and the end) into an event for the hub thread."""

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
        self._requests: queue.SimpleQueue[list[lease_pb2.KeepAliveRequest] | None] = (
            queue.SimpleQueue()
        )
        self._call = stub.KeepAlive(self._iter_requests())
        self._reader = threading.Thread(
            target=self._read, name=f"raftlease-keepalive-stream-{call_id}", daemon=True
        )
        self._reader.start()

    def _iter_requests(self) -> Iterator[lease_pb2.KeepAliveRequest]:
        while True:
            batch = self._requests.get()
            if batch is None:
                return
            yield from batch

    def write(self, batch: list[lease_pb2.KeepAliveRequest]) -> None:
        self._requests.put(batch)

    def cancel(self) -> None:
        self._requests.put(None)
        self._call.cancel()

    def _read(self) -> None:
        post, call_id = self._post, self.call_id
        try:
            for resp in self._call:
                post(("answer", call_id, resp))
        except grpc.RpcError as err:
            post(("ended", call_id, err))
        except Exception as err:  # pragma: no cover - grpc raising something else
            post(("ended", call_id, err))
        else:
            post(("ended", call_id, None))


class SyncKeepalives(HubEvents):
    """The hub thread of one :class:`LeaseClient`."""

    def __init__(self, client: LeaseClient) -> None:
        self._client = client
        self.hub = KeepaliveHub()
        self._events: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._leases: dict[int, Lease] = {}  # the hub thread's
        self._calls: dict[int, _Stream | grpc.Future[Any]] = {}  # the hub thread's
        self._targets: dict[int, str] = {}
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stopped = False

    # -- called from any thread -----------------------------------------------------------

    def add(self, lease: Lease) -> None:
        with self._lock:
            if self._stopped:
                raise ClusterUnavailable("the client is closed")
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="raftlease-keepalive", daemon=True
                )
                self._thread.start()
        self._events.put(("add", lease))

    def remove(self, lease: Lease) -> None:
        self._events.put(("remove", lease.lease_id))

    def nudge(self, lease: Lease) -> None:
        self._events.put(("nudge", lease.lease_id))

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the hub thread (after the leases were released); cancel its streams."""
        with self._lock:
            self._stopped = True
            thread = self._thread
        self._events.put(("stop",))
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # -- the hub thread -------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                try:
                    step = self.hub.poll(_clock.boot_monotonic())
                    self._carry_out(step)
                    if not self._wait(step.wake):
                        return
                except ClusterUnavailable:  # the client was closed under us
                    return
                except Exception:  # a bug: keep the other leases alive
                    log.exception("raftlease: the keepalive hub failed; going on")
                    if not self._wait(_clock.boot_monotonic() + 0.05):
                        return
        finally:
            for call in self._calls.values():
                call.cancel()
            self._calls.clear()

    def _wait(self, wake: float | None) -> bool:
        """Handle events until ``wake`` (at least one, if any comes); False on stop."""
        timeout = None if wake is None else max(0.0, wake - _clock.boot_monotonic())
        try:
            event = self._events.get(timeout=timeout)
        except queue.Empty:
            return True
        for _ in range(_MAX_EVENTS):
            if not self._handle(event):
                return False
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return True
        return self._handle(event)

    def _unary_done(self, call_id: int, lease_id: int) -> Callable[[grpc.Future[Any]], None]:
        def done(future: grpc.Future[Any]) -> None:
            if future.cancelled():
                return  # cancelled by the hub thread itself (a stop)
            err = future.exception()
            if err is None:
                self._events.put(("unary", call_id, lease_id, future.result()))
            else:
                self._events.put(("unary_failed", call_id, err))

        return done

    def _carry_out(self, step: HubStep) -> None:
        callbacks: list[Callable[[], object]] = []
        for ended in step.ended:  # first every lost lease is marked and signalled ...
            lease = self._leases.pop(ended.lease_id, None)
            if lease is not None and ended.lost is not None:
                lease._declare_lost(ended.lost.reason, run=callbacks.append)
        for call_id in step.closes:
            self._targets.pop(call_id, None)
            call = self._calls.pop(call_id, None)
            if call is not None:
                call.cancel()
        for write in step.writes:
            stream = self._calls.get(write.call)
            if stream is None:
                conn = self._client._conn(write.target)
                stream = _Stream(write.call, write.target, conn.lease, self._events.put)
                self._calls[write.call] = stream
                self._targets[write.call] = write.target
            assert isinstance(stream, _Stream)
            requests = stream.messages.requests(
                write.lease_ids, self._health_of, batched=write.batched
            )
            self.hub.stats.messages += len(requests)
            stream.write(requests)
        for unary in step.unary:
            lease = self._leases[unary.lease_id]
            conn = self._client._conn(unary.target)
            future = conn.lease.Renew.future(
                renew_request(unary.lease_id, lease._health), timeout=unary.timeout
            )
            self._calls[unary.call] = future
            self._targets[unary.call] = unary.target
            future.add_done_callback(self._unary_done(unary.call, unary.lease_id))
        for callback in callbacks:  # ... and once the renewals are out, on_lost is called
            safe_callback(callback)
