"""Leader election for the blocking client: :class:`Election`, the ``leadership()`` block and
:class:`LeadershipRunner` (``run_for_leadership`` / ``singleton``).

Everything is built on the public surface of :class:`~raftlease.client.sync.LeaseClient`:
``acquire`` with ``wait`` (the server's FIFO queue), ``Lease.lost`` / ``on_lost``,
``release``, ``holder`` and ``watch``. See docs/election.md.

An :class:`Election` talks to the cluster through its own :class:`LeaseClient` (a *session*
with the same endpoints and settings as the client that created it), so that
:meth:`Election.close` can cut a campaign that is blocked in the server's queue from any
thread: closing the session cancels the call, and the server drops the queued request.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import signal
import threading
import time
from typing import TYPE_CHECKING, Literal

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
from raftlease.client.sync import Lease, LeaseClient
from raftlease.errors import ConfigError, RaftLeaseError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from types import FrameType, TracebackType

__all__ = [
    "Election",
    "Leadership",
    "LeadershipRunner",
    "current_lease",
]

log = logging.getLogger("raftlease.client")

_CURRENT: contextvars.ContextVar[Lease | None] = contextvars.ContextVar(
    "raftlease_current_lease", default=None
)


def current_lease() -> Lease | None:
    """The lease of the leadership the calling code runs under, or None.

    Set inside a ``leadership()`` block and in the worker thread of ``run_for_leadership`` /
    ``singleton``, so a function run as a singleton can call ``current_lease().check()``
    without being passed the lease.
    """
    return _CURRENT.get()


class Election:
    """One contender in the election ``name`` (the lease of that name).

    ``campaign(wait)`` blocks until this contender leads and returns the :class:`Lease`;
    ``resign()`` gives leadership up; ``leader()`` says who leads now; ``observe()`` iterates
    over leadership changes. Use it as a context manager (or call :meth:`close`) to resign and
    close its session; closing the :class:`LeaseClient` that created it closes it too.

    ``max_wait`` is the longest single wait in the server's queue (default and maximum: the
    server's cap of 1 h); a longer campaign queues again, transparently. Only tests need to
    change it.
    """

    def __init__(
        self,
        client: LeaseClient,
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
        self.attempts = 0  # queue entries made by campaigns so far (tests read it)
        self._session = LeaseClient(client.endpoints, **client.session_options())
        self._lease: Lease | None = None
        self._closed = threading.Event()
        self._lock = threading.Lock()  # guards _lease
        # Held while releasing and closing, so that close() (e.g. from stop() on another
        # thread) does not shut the session under a release still in flight.
        self._ending = threading.Lock()

    # -- state ------------------------------------------------------------------------------

    @property
    def lease(self) -> Lease | None:
        """The lease of the current term (None if not leading; it may be lost: check it)."""
        return self._lease

    def is_leader(self) -> bool:
        """True while this contender holds a valid lease."""
        lease = self._lease
        return lease is not None and lease.is_valid()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    # -- campaign / resign ------------------------------------------------------------------

    def campaign(
        self, wait: float | None = None, *, on_lost: Callable[[Lease], object] | None = None
    ) -> Lease:
        """Block until this contender leads; the lease of its term.

        ``wait`` bounds the wait in seconds (None: forever; the server's 1 h cap on one wait
        is handled by queueing again). Raises :class:`LeaseHeld` when ``wait`` passed without
        leadership, :class:`ClusterUnavailable` when it passed while no leader answered (with
        ``wait=None`` an unavailable cluster is retried, with backoff, until it answers),
        :class:`ElectionClosed` when :meth:`close` was called meanwhile (from any thread).
        Already leading with a valid lease: returns that lease. ``on_lost(lease)`` is called
        on the keepalive thread if the lease is lost (not when it is released).
        """
        limit = check_wait(wait)
        held = self._lease
        if held is not None and held.is_valid():
            return held
        plan = CampaignPlan(limit, _clock.boot_monotonic(), self.max_wait)
        last: RaftLeaseError | None = None
        while True:
            if self._closed.is_set():
                raise ElectionClosed(f"election {self.name!r} was closed")
            now = _clock.boot_monotonic()
            chunk = plan.next_wait(now)
            if chunk is None:
                assert last is not None
                raise last
            self.attempts += 1
            try:
                lease = self._session.acquire(
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
                if self._closed.is_set():
                    raise ElectionClosed(f"election {self.name!r} was closed") from None
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
                with self._lock:
                    closed = self._closed.is_set()
                    if not closed:
                        self._lease = lease
                if closed:  # granted as we were closed: give it back at once
                    self._release_quietly(lease)
                    raise ElectionClosed(f"election {self.name!r} was closed")
                return lease
            if delay > 0 and self._closed.wait(delay):
                raise ElectionClosed(f"election {self.name!r} was closed")

    def resign(self) -> None:
        """Give leadership up (release the lease); nothing if not leading. Idempotent.

        Raises ClusterUnavailable if no leader confirmed the release (the lease then simply
        expires after its TTL); the lease is no longer trusted either way.
        """
        with self._ending:
            with self._lock:
                lease, self._lease = self._lease, None
            if lease is not None:
                lease.release()

    # -- reads ------------------------------------------------------------------------------

    def leader(self) -> Leader | None:
        """Who leads now (a linearizable read through ``holder()``), or None."""
        self._check_open()
        info = self._session.holder(self.name)
        return None if info is None else Leader.from_info(info)

    def observe(self) -> Iterator[Leader | None]:
        """Iterate over leadership changes, forever: first who leads when called (nothing if
        nobody does), then every new leader (a :class:`Leader`) and every moment the election
        has none (None), in log order, including a lease that passes directly from a
        resigning leader to a waiter (None, then the new leader). Built on ``watch()``;
        raises ClusterUnavailable if no node served the watch for the client's timeout, and
        ends when the election is closed. Close the iterator (or break out of it) to stop."""
        self._check_open()
        return self._observe()

    def _observe(self) -> Iterator[Leader | None]:
        tracker = LeaderTracker(self.name)
        events = self._session.watch(self.name)
        try:
            for event in events:
                yield from tracker.feed(event)
        except ClusterUnavailable:
            if self._closed.is_set():
                return
            raise
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()

    # -- lifecycle --------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed.is_set():
            raise ElectionClosed(f"election {self.name!r} was closed")

    def _release_quietly(self, lease: Lease) -> None:
        try:
            lease.release()
        except RaftLeaseError as err:
            log.warning("raftlease: could not release lease %r: %s", lease.name, err)

    def close(self) -> None:
        """Resign (best effort), stop any campaign or observe() in progress, close the
        session. Safe to call from any thread, more than once."""
        self._closed.set()  # at once: a campaign in progress stops
        with self._ending:
            with self._lock:
                lease, self._lease = self._lease, None
            if lease is not None:
                self._release_quietly(lease)
            self._session.close()

    def __enter__(self) -> Election:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Election(name={self.name!r}, identity={self.identity!r}, ttl={self.ttl}, "
            f"leading={self.is_leader()})"
        )


# ---------------------------------------------------------------------------------------------
# with client.leadership(NAME) as lease:


class Leadership:
    """``with client.leadership(NAME, ttl=...) as lease:``: campaign, run the block while
    leading, resign on exit.

    A thread cannot be interrupted from outside in Python, so by default the block is NOT
    interrupted: it must look at ``lease.lost``, ``lease.is_valid()`` or call
    ``lease.check()`` (raises :class:`LeadershipLost`) between steps. If the lease was lost
    while the block ran and the block ended normally, leaving it raises
    :class:`LeadershipLost`, so the loss is never silent.

    ``interrupt="signal"`` (main thread only): when the lease is lost, or its validity left
    drops under ``margin`` seconds, the keepalive side sends ``signum`` (default SIGUSR1) to
    the main thread with ``signal.pthread_kill``; the handler raises :class:`LeadershipLost`
    there, wherever the block is (a blocking ``time.sleep`` or socket read is interrupted).
    Limits: see docs/election.md ("Interrupting a thread").
    """

    def __init__(
        self,
        client: LeaseClient,
        name: str,
        *,
        ttl: float = 10.0,
        wait: float | None = None,
        holder: str | None = None,
        metadata: Mapping[str, str] | None = None,
        interrupt: Literal["signal"] | None = None,
        margin: float = 0.0,
        signum: int | None = None,
        max_wait: float | None = None,
    ) -> None:
        if interrupt not in (None, "signal"):
            raise ConfigError(f"interrupt must be None or 'signal', got {interrupt!r}")
        if not margin >= 0:  # also refuses NaN
            raise ConfigError(f"margin must be seconds >= 0, got {margin!r}")
        self._client = client
        self._name = name
        self._ttl = ttl
        self._wait = check_wait(wait)
        self._holder = holder
        self._metadata = metadata
        self._interrupt = interrupt
        self._margin = float(margin)
        self._signum = signal.SIGUSR1 if signum is None else signum
        self._max_wait = max_wait
        self._election: Election | None = None
        self._lease: Lease | None = None
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._fired = False  # the monitor decided the block must stop
        self._raised = False  # the signal handler raised LeadershipLost in the block
        self._exiting = False
        self._handled = threading.Event()  # our signal handler ran (signal mode)
        self._old_handler: Callable[[int, FrameType | None], object] | int | None = None
        self._monitor: threading.Thread | None = None
        self._token: contextvars.Token[Lease | None] | None = None

    def __enter__(self) -> Lease:
        if (
            self._interrupt == "signal"
            and threading.current_thread() is not threading.main_thread()
        ):
            raise ConfigError('leadership(interrupt="signal") works only in the main thread')
        election = self._client.election(
            self._name,
            ttl=self._ttl,
            holder=self._holder,
            metadata=self._metadata,
            max_wait=self._max_wait,
        )
        self._election = election
        try:
            lease = election.campaign(self._wait, on_lost=lambda _lease: self._wake.set())
        except BaseException:
            election.close()
            raise
        self._lease = lease
        if self._interrupt == "signal":
            self._old_handler = signal.signal(self._signum, self._on_signal)
        self._monitor = threading.Thread(
            target=self._watch_lease,
            args=(lease, threading.main_thread().ident),
            name=f"raftlease-leadership-{self._name}",
            daemon=True,
        )
        self._monitor.start()
        self._token = _CURRENT.set(lease)
        return lease

    def _should_stop(self, lease: Lease) -> bool:
        return lease.lost.is_set() or lease.time_left() <= self._margin

    def _exiting_locked(self) -> bool:
        return self._exiting  # a call: mypy must not narrow the flag across lock sections

    def _watch_lease(self, lease: Lease, main_ident: int | None) -> None:
        while True:
            with self._lock:
                if self._exiting_locked():
                    return
            if self._should_stop(lease):
                break
            self._wake.wait(max(0.005, lease.time_left() - self._margin))
            self._wake.clear()
        with self._lock:
            if self._exiting_locked():
                return
            self._fired = True
            if self._interrupt == "signal" and main_ident is not None:
                signal.pthread_kill(main_ident, self._signum)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._handled.set()
        if self._fired and not self._exiting and not self._raised:
            self._raised = True
            raise LeadershipLost(self._lost_message())
        old = self._old_handler
        if callable(old) and not self._fired:
            old(signum, frame)

    def _lost_message(self) -> str:
        lease = self._lease
        reason = lease.lost_reason if lease is not None and lease.lost_reason else ""
        if lease is not None and not lease.lost.is_set():
            reason = f"less than {format_duration(self._margin)} of validity left"
        token = lease.fencing_token if lease is not None else "?"
        return f"leadership of {self._name!r} (token {token}) lost: {reason or 'expired'}"

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with self._lock:
            self._exiting = True
        self._wake.set()
        if self._interrupt == "signal":
            if self._fired and not self._handled.is_set():
                # The signal is on its way: let it arrive while our handler (now a no-op)
                # is still installed; a sleep is interrupted by it.
                deadline = time.monotonic() + 1.0
                while not self._handled.is_set() and time.monotonic() < deadline:
                    time.sleep(0.001)
            old = self._old_handler
            signal.signal(self._signum, signal.SIG_DFL if old is None else old)
        if self._token is not None:
            _CURRENT.reset(self._token)
            self._token = None
        lease = self._lease
        lost = self._fired or (lease is not None and lease.lost.is_set())
        if self._election is not None:
            self._election.close()
        if self._monitor is not None:
            self._monitor.join(timeout=1.0)
        if lost and exc_type is None:
            raise LeadershipLost(self._lost_message())


# ---------------------------------------------------------------------------------------------
# run_for_leadership / singleton


class LeadershipRunner:
    """Campaigns, leads, and campaigns again: what ``run_for_leadership`` returns (started).

    Each term: :meth:`Election.campaign` (forever), then ``on_started_leading(lease)`` runs in
    a worker thread. The term ends when the lease is lost, when ``on_started_leading``
    returns (or raises: logged), or on :meth:`stop`. Then the lease is released,
    ``on_stopped_leading()`` is called on the runner's thread at once (the worker may still be
    running: threads cannot be interrupted, so it must watch ``lease.lost`` /
    ``lease.check()``), and once the worker has returned the runner campaigns again, unless
    ``requeue=False`` or it was stopped. A term shorter than 1 s is followed by a pause
    (100 ms doubling to 5 s) so a callback that returns at once cannot spin.

    ``on_new_leader(identity)`` is called (on an observer thread) for every new leader
    observed, this contender included. Callback exceptions are logged, never raised.

    Stop it with :meth:`stop`, by leaving ``with`` (it is a context manager), or by closing
    the client.
    """

    def __init__(
        self,
        election: Election,
        on_started_leading: Callable[[Lease], object],
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
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._pacer = RequeuePacer()
        self._thread = threading.Thread(
            target=self._main, name=f"raftlease-leader-{election.name}", daemon=True
        )
        self._observer: threading.Thread | None = None
        self._worker: threading.Thread | None = None

    @property
    def lease(self) -> Lease | None:
        """The current term's lease, or None."""
        return self.election.lease

    def is_leader(self) -> bool:
        return self.election.is_leader()

    def start(self) -> LeadershipRunner:
        if self._on_new_leader is not None:
            self._observer = threading.Thread(
                target=self._observe, name=f"raftlease-observe-{self.election.name}", daemon=True
            )
            self._observer.start()
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> bool:
        """Resign, stop campaigning and observing; wait up to ``timeout`` seconds (None:
        forever) for the runner, and the worker of the last term, to finish. True if they
        did."""
        self._stopping.set()
        self._wake.set()
        self.election.close()
        return self.join(timeout)

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the runner ended (requeue=False, or stopped); True if it did."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in (self._thread, self._observer):
            if thread is None or not thread.ident:
                continue
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(t is not None and t.is_alive() for t in (self._thread, self._observer))

    def __enter__(self) -> LeadershipRunner:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- threads ----------------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[[], object]) -> None:
        try:
            fn()
        except Exception:
            log.exception("raftlease: %s callback of election %r raised", what, self.election.name)

    def _work(self, lease: Lease, done: threading.Event) -> None:
        _CURRENT.set(lease)  # this thread's own context
        try:
            self._call("on_started_leading", lambda: self._on_started(lease))
        finally:
            done.set()
            self._wake.set()

    def _main(self) -> None:
        election = self.election
        try:
            while not self._stopping.is_set():
                try:
                    lease = election.campaign(None, on_lost=lambda _lease: self._wake.set())
                except ElectionClosed:
                    break
                except RaftLeaseError as err:  # e.g. InvalidArgument: retrying cannot help
                    log.error("raftlease: campaign for %r failed: %s", election.name, err)
                    break
                self.terms += 1
                started = time.monotonic()
                done = threading.Event()
                worker = threading.Thread(
                    target=self._work,
                    args=(lease, done),
                    name=f"raftlease-leading-{election.name}",
                    daemon=True,
                )
                self._worker = worker
                worker.start()
                while True:
                    self._wake.clear()
                    if lease.lost.is_set() or done.is_set() or self._stopping.is_set():
                        break
                    self._wake.wait(1.0)
                try:
                    election.resign()
                except RaftLeaseError as err:
                    log.warning("raftlease: could not resign %r: %s", election.name, err)
                if self._on_stopped is not None:
                    self._call("on_stopped_leading", self._on_stopped)
                waited = 0.0
                while worker.is_alive():
                    worker.join(5.0)
                    waited += 5.0
                    if worker.is_alive():
                        log.warning(
                            "raftlease: on_started_leading of %r still running %.0f s after "
                            "leadership ended; it should watch lease.lost",
                            election.name,
                            waited,
                        )
                if not self.requeue:
                    break
                delay = self._pacer.after_term(time.monotonic() - started)
                if delay > 0 and self._stopping.wait(delay):
                    break
        finally:
            self._stopping.set()
            election.close()

    def _observe(self) -> None:
        callback = self._on_new_leader
        assert callback is not None
        while not self._stopping.is_set():
            try:
                for leader in self.election.observe():
                    if self._stopping.is_set():
                        return
                    if leader is not None:
                        self._call("on_new_leader", functools.partial(callback, leader.identity))
            except ElectionClosed:
                return
            except RaftLeaseError as err:
                if self._stopping.is_set():
                    return
                log.warning("raftlease: observing %r: %s", self.election.name, err)
            self._stopping.wait(0.5)
