"""Leader election for the asyncio client: :class:`AsyncElection`, the ``async with
client.leadership(NAME)`` block and :class:`AsyncLeadershipRunner` (``run_for_leadership`` /
``singleton``). The same semantics as :mod:`raftlease.client.election`, with task
cancellation doing what threads cannot: the code that needs leadership is *cancelled* when
the lease is lost. See docs/election.md.

Built on the public surface of :class:`~raftlease.client.aio.AsyncLeaseClient`; a campaign
is stopped by cancelling the task that awaits it (the server drops the queued request when
the call is cancelled).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import logging
from typing import TYPE_CHECKING, Any

from raftlease import clock as _clock
from raftlease.client._common import default_holder, format_duration
from raftlease.client._election_base import (
    CampaignPlan,
    ElectionClosed,
    Leader,
    LeadershipLost,
    LeaderTracker,
    RequeuePacer,
    check_max_wait,
    check_wait,
)
from raftlease.client.errors import ClusterUnavailable, LeaseHeld, LeaseLost
from raftlease.errors import ConfigError, RaftLeaseError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
    from types import TracebackType

    from raftlease.client.aio import AsyncLease, AsyncLeaseClient

__all__ = [
    "AsyncElection",
    "AsyncLeadership",
    "AsyncLeadershipRunner",
    "current_async_lease",
]

log = logging.getLogger("raftlease.client")

_CURRENT: contextvars.ContextVar[AsyncLease | None] = contextvars.ContextVar(
    "raftlease_current_async_lease", default=None
)


def current_async_lease() -> AsyncLease | None:
    """The lease of the leadership the calling task runs under (inside an ``async with
    client.leadership()`` block, or in the task of ``run_for_leadership`` / ``singleton``),
    or None."""
    return _CURRENT.get()


async def _maybe_await(result: object) -> None:
    if inspect.isawaitable(result):
        await result


async def _cleanup(coro: Coroutine[Any, Any, None]) -> None:
    """Run a release to its end even when the current task is being cancelled.

    ``AsyncLease.release()`` gives up (re-raises) when the task calling it has a
    cancellation pending, which is exactly when a cancelled block or runner resigns. In a
    task of its own it completes; a further cancellation of ours still propagates at once
    (the release goes on in the background).
    """
    await asyncio.shield(asyncio.ensure_future(coro))


class AsyncElection:
    """One contender in the election ``name``, on an :class:`AsyncLeaseClient`: the same
    methods as :class:`raftlease.client.election.Election`, as coroutines (``observe()`` is
    an async iterator). Cancel the task awaiting :meth:`campaign` to stop campaigning.
    ``async with`` it (or ``await close()``) to resign on exit."""

    def __init__(
        self,
        client: AsyncLeaseClient,
        name: str,
        *,
        ttl: float = 10.0,
        holder: str | None = None,
        metadata: Mapping[str, str] | None = None,
        max_wait: float | None = None,
    ) -> None:
        self.name = name
        self.ttl = ttl
        self.identity = default_holder() if holder is None else holder
        self.metadata = dict(metadata or {})
        self.max_wait = check_max_wait(max_wait)
        self.attempts = 0
        self._client = client
        self._lease: AsyncLease | None = None
        self._closed = asyncio.Event()

    @property
    def lease(self) -> AsyncLease | None:
        """The lease of the current term (None if not leading; it may be lost: check it)."""
        return self._lease

    def is_leader(self) -> bool:
        lease = self._lease
        return lease is not None and lease.is_valid()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def _check_open(self) -> None:
        if self._closed.is_set():
            raise ElectionClosed(f"election {self.name!r} was closed")

    async def campaign(
        self,
        wait: float | None = None,
        *,
        on_lost: Callable[[AsyncLease], object] | None = None,
    ) -> AsyncLease:
        """Wait until this contender leads; the lease of its term. See
        :meth:`raftlease.client.election.Election.campaign`."""
        limit = check_wait(wait)
        held = self._lease
        if held is not None and held.is_valid():
            return held
        plan = CampaignPlan(limit, _clock.boot_monotonic(), self.max_wait)
        last: RaftLeaseError | None = None
        while True:
            self._check_open()
            now = _clock.boot_monotonic()
            chunk = plan.next_wait(now)
            if chunk is None:
                assert last is not None
                raise last
            self.attempts += 1
            try:
                lease = await self._client.acquire(
                    self.name,
                    self.ttl,
                    chunk,
                    holder=self.identity,
                    metadata=self.metadata,
                    on_lost=on_lost,
                )
            except LeaseHeld as err:
                last = err
                delay = plan.after_held(chunk, _clock.boot_monotonic() - now)
            except (ClusterUnavailable, LeaseLost) as err:
                self._check_open()
                last = err
                delay = plan.after_unavailable()
                if limit is None:
                    log.warning(
                        "raftlease: campaign for %r: %s; retrying in %s",
                        self.name,
                        err,
                        format_duration(delay),
                    )
            else:
                if self._closed.is_set():
                    await self._release_quietly(lease)
                    self._check_open()
                self._lease = lease
                return lease
            if delay > 0:
                await asyncio.sleep(delay)

    async def resign(self) -> None:
        """Give leadership up (release the lease); nothing if not leading. Idempotent."""
        lease, self._lease = self._lease, None
        if lease is not None:
            await lease.release()

    async def leader(self) -> Leader | None:
        """Who leads now (a linearizable read through ``holder()``), or None."""
        self._check_open()
        info = await self._client.holder(self.name)
        return None if info is None else Leader.from_info(info)

    async def observe(self) -> AsyncIterator[Leader | None]:
        """Async-iterate over leadership changes; see
        :meth:`raftlease.client.election.Election.observe`."""
        self._check_open()
        tracker = LeaderTracker(self.name)
        events = self._client.watch(self.name)
        try:
            async for event in events:
                for change in tracker.feed(event):
                    yield change
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _release_quietly(self, lease: AsyncLease) -> None:
        try:
            await lease.release()
        except RaftLeaseError as err:
            log.warning("raftlease: could not release lease %r: %s", lease.name, err)

    async def close(self) -> None:
        """Resign (best effort); later campaigns raise :class:`ElectionClosed`."""
        self._closed.set()
        lease, self._lease = self._lease, None
        if lease is not None:
            await self._release_quietly(lease)

    async def __aenter__(self) -> AsyncElection:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return (
            f"AsyncElection(name={self.name!r}, identity={self.identity!r}, ttl={self.ttl}, "
            f"leading={self.is_leader()})"
        )


# ---------------------------------------------------------------------------------------------
# async with client.leadership(NAME) as lease:


class AsyncLeadership:
    """``async with client.leadership(NAME, ttl=...) as lease:``: campaign, run the block
    while leading, resign on exit.

    When the lease is lost (its ``lost`` event, set ``lost_margin`` before its validity ends)
    or, with ``margin > 0``, when less than ``margin`` seconds of validity are left, the task
    running the block is cancelled, like ``asyncio.timeout`` does, and the block ends with
    :class:`LeadershipLost` instead of ``CancelledError`` (a cancellation from elsewhere still
    propagates as ``CancelledError``). If the block ended normally although the lease was
    lost (it swallowed the cancellation), leaving it raises :class:`LeadershipLost` too.
    Cancellation lands at the block's next ``await``: code that does not await (CPU-bound,
    blocking calls) is not interrupted, and stalls the keepalive task as well.
    """

    def __init__(
        self,
        client: AsyncLeaseClient,
        name: str,
        *,
        ttl: float = 10.0,
        wait: float | None = None,
        holder: str | None = None,
        metadata: Mapping[str, str] | None = None,
        margin: float = 0.0,
        max_wait: float | None = None,
    ) -> None:
        if not margin >= 0:  # also refuses NaN
            raise ConfigError(f"margin must be seconds >= 0, got {margin!r}")
        self._client = client
        self._name = name
        self._ttl = ttl
        self._wait = check_wait(wait)
        self._holder = holder
        self._metadata = metadata
        self._margin = float(margin)
        self._max_wait = max_wait
        self._election: AsyncElection | None = None
        self._lease: AsyncLease | None = None
        self._task: asyncio.Task[Any] | None = None
        self._cancelling = 0
        self._monitor: asyncio.Task[None] | None = None
        self._fired = False
        self._exiting = False
        self._token: contextvars.Token[AsyncLease | None] | None = None

    async def __aenter__(self) -> AsyncLease:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("leadership() must be used inside a task")
        election = self._client.election(
            self._name,
            ttl=self._ttl,
            holder=self._holder,
            metadata=self._metadata,
            max_wait=self._max_wait,
        )
        self._election = election
        try:
            lease = await election.campaign(self._wait)
        except BaseException:
            await election.close()
            raise
        self._lease = lease
        self._task = task
        self._cancelling = task.cancelling()
        self._monitor = asyncio.get_running_loop().create_task(
            self._watch_lease(lease), name=f"raftlease-leadership-{self._name}"
        )
        self._token = _CURRENT.set(lease)
        return lease

    async def _watch_lease(self, lease: AsyncLease) -> None:
        while not (lease.lost.is_set() or lease.time_left() <= self._margin):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    lease.lost.wait(), timeout=max(0.005, lease.time_left() - self._margin)
                )
        if not self._exiting and self._task is not None:
            self._fired = True
            self._task.cancel()

    def _lost_message(self) -> str:
        lease = self._lease
        reason = lease.lost_reason if lease is not None and lease.lost_reason else ""
        if lease is not None and not lease.lost.is_set():
            reason = f"less than {format_duration(self._margin)} of validity left"
        token = lease.fencing_token if lease is not None else "?"
        return f"leadership of {self._name!r} (token {token}) lost: {reason or 'expired'}"

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exiting = True
        monitor = self._monitor
        if monitor is not None and not monitor.done():
            monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await monitor
        if self._token is not None:
            _CURRENT.reset(self._token)
            self._token = None
        lease = self._lease
        lost = self._fired or (lease is not None and lease.lost.is_set())
        ours = False
        if self._fired and self._task is not None:
            # Like asyncio.timeout: the cancellation is ours if no other one is pending.
            ours = self._task.uncancel() <= self._cancelling
        if self._election is not None:
            await _cleanup(self._election.close())
        if ours and exc_type is not None and issubclass(exc_type, asyncio.CancelledError):
            raise LeadershipLost(self._lost_message()) from exc
        if lost and exc_type is None:
            raise LeadershipLost(self._lost_message())


# ---------------------------------------------------------------------------------------------
# run_for_leadership / singleton


class AsyncLeadershipRunner:
    """Campaigns, leads, and campaigns again (asyncio): what ``run_for_leadership`` returns,
    already running as a task.

    Each term: :meth:`AsyncElection.campaign` (forever), then ``on_started_leading(lease)``
    runs as a task (a coroutine function; a plain function is called in that task). The term
    ends when the lease is lost (the task is cancelled, and awaited), when the task returns
    (or raises: logged), or on :meth:`stop`. Then the lease is released,
    ``on_stopped_leading()`` is called (awaited if it returns an awaitable), and the runner
    campaigns again unless ``requeue=False`` or it was stopped (a term shorter than 1 s is
    followed by a pause, 100 ms doubling to 5 s). ``on_new_leader(identity)`` is called for
    every new leader observed, this contender included.

    ``await runner.stop()``, ``async with`` the runner, or ``await runner.wait()`` for it to
    end by itself (``requeue=False``).
    """

    def __init__(
        self,
        election: AsyncElection,
        on_started_leading: Callable[[AsyncLease], object],
        on_stopped_leading: Callable[[], object] | None = None,
        on_new_leader: Callable[[str], object] | None = None,
        *,
        requeue: bool = True,
    ) -> None:
        self.election = election
        self.requeue = requeue
        self.terms = 0
        self._on_started = on_started_leading
        self._on_stopped = on_stopped_leading
        self._on_new_leader = on_new_leader
        self._pacer = RequeuePacer()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._observer: asyncio.Task[None] | None = None

    @property
    def lease(self) -> AsyncLease | None:
        return self.election.lease

    def is_leader(self) -> bool:
        return self.election.is_leader()

    def start(self) -> AsyncLeadershipRunner:
        loop = asyncio.get_running_loop()
        if self._on_new_leader is not None:
            self._observer = loop.create_task(
                self._observe(), name=f"raftlease-observe-{self.election.name}"
            )
        self._task = loop.create_task(self._main(), name=f"raftlease-leader-{self.election.name}")
        return self

    async def stop(self) -> None:
        """Cancel the current term (its task is cancelled and awaited), resign, stop
        campaigning and observing."""
        self._stopping = True
        for task in (self._task, self._observer):
            if task is not None and not task.done():
                task.cancel()
        await self.wait()
        await _cleanup(self.election.close())

    async def wait(self) -> None:
        """Until the runner ended (requeue=False, or stopped)."""
        for task in (self._task, self._observer):
            if task is None:
                continue
            if task is self._observer and self._task is not None and not self._task.done():
                continue  # the observer runs as long as the runner
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._observer is not None and not self._observer.done():
            self._observer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._observer

    async def __aenter__(self) -> AsyncLeadershipRunner:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _call(self, what: str, fn: Callable[[], object]) -> None:
        try:
            await _maybe_await(fn())
        except Exception:
            log.exception("raftlease: %s callback of election %r raised", what, self.election.name)

    async def _work(self, lease: AsyncLease) -> None:
        _CURRENT.set(lease)  # this task's own context
        await self._call("on_started_leading", lambda: self._on_started(lease))

    async def _main(self) -> None:
        election = self.election
        try:
            while not self._stopping:
                try:
                    lease = await election.campaign(None)
                except ElectionClosed:
                    return
                except RaftLeaseError as err:
                    log.error("raftlease: campaign for %r failed: %s", election.name, err)
                    return
                self.terms += 1
                started = asyncio.get_running_loop().time()
                await self._lead(lease)
                if not self.requeue or self._stopping:
                    return
                delay = self._pacer.after_term(asyncio.get_running_loop().time() - started)
                if delay > 0:
                    await asyncio.sleep(delay)
        finally:
            await _cleanup(election.close())

    async def _lead(self, lease: AsyncLease) -> None:
        loop = asyncio.get_running_loop()
        work = loop.create_task(self._work(lease), name=f"raftlease-leading-{self.election.name}")
        lost = loop.create_task(lease.lost.wait())
        try:
            await asyncio.wait({work, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
            if not work.done():
                work.cancel()
            # Wait for the leading task to end (it was cancelled if still running); a second
            # cancellation of ours (stop() while we wait) does not abandon it.
            while not work.done():
                try:
                    await asyncio.wait({work})
                except asyncio.CancelledError:
                    self._stopping = True
            try:
                await _cleanup(self.election.resign())
            except RaftLeaseError as err:
                log.warning("raftlease: could not resign %r: %s", self.election.name, err)
            if self._on_stopped is not None:
                on_stopped = self._on_stopped
                await self._call("on_stopped_leading", on_stopped)

    async def _observe(self) -> None:
        callback = self._on_new_leader
        assert callback is not None
        while not self._stopping:
            try:
                async for leader in self.election.observe():
                    if leader is not None:
                        await self._call(
                            "on_new_leader", functools.partial(callback, leader.identity)
                        )
            except ElectionClosed:
                return
            except RaftLeaseError as err:
                log.warning("raftlease: observing %r: %s", self.election.name, err)
            await asyncio.sleep(0.5)
