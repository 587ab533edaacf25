"""``raftlease run NAME -- CMD``: run CMD as a cluster-wide singleton.

The supervisor loops: wait in the lease's FIFO queue, start CMD only while holding the lease,
and stop CMD *before* the lease could pass to anyone else.

- CMD gets ``RAFTLEASE_FENCING_TOKEN``, ``RAFTLEASE_LEASE_ID`` and ``RAFTLEASE_LEASE_NAME`` in
  its environment; it should pass the token to every resource it writes to.
- If renewals fail so that ``time_left() <= ttl / 3``, CMD gets SIGTERM; at the latest when
  ``time_left() <= lost_margin + 0.1 * ttl`` (or the lease is lost) it gets SIGKILL, and the
  supervisor waits for it to be dead, then goes back to waiting for the lease. Since
  ``time_left()`` is the client's conservative validity (see :class:`~raftlease.client.Lease`),
  CMD is dead before any other holder can be granted the lease.
- A CMD that exits non-zero is restarted while the lease is held, after 1 s, 2 s, 4 s ...
  (capped at 30 s), at most ``max_restarts`` times in total; then the lease is released and
  the supervisor exits with CMD's code. When CMD exits 0 the lease is released and the
  supervisor exits 0.
- SIGTERM/SIGINT are forwarded to CMD (a second one kills it); once it exited the lease is
  released and the supervisor exits with CMD's code (128 + N if CMD died of signal N).
- CMD runs in its own process group (signals go to the whole group) and, on Linux, with
  ``PR_SET_PDEATHSIG = SIGKILL``, so it dies with the supervisor even if the supervisor is
  SIGKILLed (its lease then simply expires).

Status messages go to stderr, one line each, prefixed ``raftlease run:``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shlex
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TextIO

from raftlease.client._common import format_duration
from raftlease.client.aio import AsyncLease, AsyncLeaseClient
from raftlease.client.errors import ClusterUnavailable, LeaseHeld, LeaseLost
from raftlease.errors import RaftLeaseError

__all__ = ["RunnerConfig", "RunnerError", "SingletonRunner", "restart_delay"]

MAX_SERVER_WAIT_S = 3600.0  # the server's MAX_WAIT_MS
SIGNAL_GRACE_S = 10.0  # after forwarding a signal, SIGKILL CMD if it has not exited by then

# Run in the child before exec: die with the parent (Linux), and exec CMD.
_PRELUDE = """\
import ctypes, os, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
except Exception:
    pass
if os.getppid() != int(sys.argv[1]):
    os._exit(137)  # the supervisor already died
try:
    os.execvp(sys.argv[2], sys.argv[2:])
except OSError as exc:
    sys.stderr.write(f"raftlease run: cannot run {sys.argv[2]!r}: {exc}\\n")
    os._exit(127)
"""


class RunnerError(RaftLeaseError):
    """The supervisor cannot do its job (command not found, wait expired, ...)."""


def restart_delay(crashes: int) -> float:
    """Backoff before restart number ``crashes`` (1-based): 1 s, 2 s, 4 s ... capped at 30 s."""
    return float(min(30, 2 ** max(0, crashes - 1)))


def exit_code(returncode: int) -> int:
    """A shell-style exit code: 128 + N for death by signal N."""
    return 128 - returncode if returncode < 0 else returncode


@dataclass
class RunnerConfig:
    """What ``raftlease run`` was asked to do.

    ``wait``: seconds to wait for the lease in total; None = forever.
    """

    name: str
    command: list[str]
    ttl: float = 10.0
    wait: float | None = None
    max_restarts: int = 5
    holder: str | None = None
    endpoints: Sequence[str] | str | None = None
    timeout: float = 5.0
    env: dict[str, str] = field(default_factory=dict)


class SingletonRunner:
    """The ``raftlease run`` supervisor; ``await runner.run()`` returns the exit code."""

    def __init__(self, config: RunnerConfig, *, out: TextIO | None = None) -> None:
        if not config.command:
            raise RunnerError("no command given: use raftlease run NAME -- CMD [ARGS...]")
        if config.max_restarts < 0:
            raise RunnerError(f"--max-restarts must be >= 0, got {config.max_restarts}")
        self.config = config
        self._out = out if out is not None else sys.stderr
        self._signal: int | None = None
        self._signal_event: asyncio.Event | None = None
        self._crashes = 0
        self._last_code = 0
        self._second_signal = False
        self.grants: list[int] = []  # fencing tokens of every grant held, for tests/inspection

    # -- output -----------------------------------------------------------------------------

    def say(self, message: str) -> None:
        print(f"raftlease run: {message}", file=self._out, flush=True)

    @property
    def _cmd_text(self) -> str:
        text = shlex.join(self.config.command)
        return text if len(text) <= 60 else text[:57] + "..."

    # -- signals ----------------------------------------------------------------------------

    def _on_signal(self, signum: int) -> None:
        first = self._signal is None
        self._signal = signum
        if self._signal_event is not None:
            self._signal_event.set()
        if not first:
            self._second_signal = True

    # -- main loop --------------------------------------------------------------------------

    async def run(self) -> int:
        """Supervise until CMD is done; the exit code to use."""
        cfg = self.config
        if shutil.which(cfg.command[0]) is None:
            raise RunnerError(f"command not found: {cfg.command[0]}")
        loop = asyncio.get_running_loop()
        self._signal_event = asyncio.Event()
        handled: list[int] = []
        for signum in (int(signal.SIGTERM), int(signal.SIGINT)):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signum, self._on_signal, signum)
                handled.append(signum)
        try:
            async with AsyncLeaseClient(cfg.endpoints, timeout=cfg.timeout) as client:
                return await self._loop(client)
        finally:
            for signum in handled:
                loop.remove_signal_handler(signum)

    async def _loop(self, client: AsyncLeaseClient) -> int:
        cfg = self.config
        wait_deadline = None if cfg.wait is None else time.monotonic() + cfg.wait
        while True:
            lease = await self._acquire(client, wait_deadline)
            if lease is None:
                assert self._signal is not None
                return 128 + self._signal
            self.grants.append(lease.fencing_token)
            done = await self._hold(lease)
            if done is not None:
                return done
            # The lease is in trouble and CMD is dead: wait for the lease again.
            if wait_deadline is not None:
                wait_deadline = time.monotonic() + (cfg.wait or 0.0)

    async def _acquire(
        self, client: AsyncLeaseClient, wait_deadline: float | None
    ) -> AsyncLease | None:
        """Wait for the lease; None if a signal arrived first."""
        cfg = self.config
        assert self._signal_event is not None
        last_holder: str | None = None
        last_problem = ""
        wait_s = 0.0  # the first try does not queue, so we can say who holds it
        while self._signal is None:
            task = asyncio.ensure_future(
                client.acquire(cfg.name, cfg.ttl, wait_s, holder=cfg.holder)
            )
            sig = asyncio.ensure_future(self._signal_event.wait())
            try:
                await asyncio.wait({task, sig}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sig.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, RaftLeaseError):
                    lease = await task
                    await lease.release()  # granted just as we gave up
                return None
            try:
                lease = task.result()
            except LeaseHeld as err:
                if err.holder != last_holder:
                    self.say(f"waiting for lease {cfg.name} (held by {err.holder or '?'})")
                    last_holder = err.holder
                last_problem = f"held by {err.holder or '?'}"
            except (ClusterUnavailable, LeaseLost) as err:
                if not last_problem.startswith("cluster"):
                    self.say(f"cannot reach the cluster ({err}); retrying")
                last_problem = f"cluster unavailable: {err}"
                if await self._sleep_or_signal(1.0):
                    return None
            else:
                self.say(
                    f"acquired lease {cfg.name} (fencing token {lease.fencing_token}, "
                    f"ttl {format_duration(lease.ttl)})"
                )
                return lease
            if wait_deadline is None:
                wait_s = MAX_SERVER_WAIT_S
            else:
                left = wait_deadline - time.monotonic()
                if left <= 0:
                    raise RunnerError(
                        f"gave up waiting for lease {cfg.name!r} after "
                        f"{format_duration(cfg.wait or 0.0)} ({last_problem})"
                    )
                wait_s = min(left, MAX_SERVER_WAIT_S)
        return None

    async def _sleep_or_signal(self, seconds: float) -> bool:
        """Sleep; True if a signal arrived meanwhile."""
        assert self._signal_event is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._signal_event.wait(), timeout=seconds)
        return self._signal is not None

    async def _release(self, lease: AsyncLease) -> None:
        try:
            await lease.release()
        except RaftLeaseError as err:
            self.say(f"could not release lease {self.config.name}: {err} (it will expire)")

    async def _hold(self, lease: AsyncLease) -> int | None:
        """Run CMD while holding ``lease``. The exit code when done; None to wait again."""
        cfg = self.config
        while True:
            proc = await self._start(lease)
            outcome, code = await self._supervise(proc, lease)
            self._last_code = code
            if outcome == "signal":
                self.say(f"command exited with code {code}; releasing lease {cfg.name}")
                await self._release(lease)
                return code
            if outcome == "lease":
                self.say(f"command stopped (code {code}); waiting for lease {cfg.name} again")
                await self._release(lease)
                return None
            if code == 0:
                await self._release(lease)
                self.say(f"command exited with code 0; released lease {cfg.name}")
                return 0
            self._crashes += 1
            if self._crashes > cfg.max_restarts:
                await self._release(lease)
                self.say(
                    f"command exited with code {code}; restarts exhausted "
                    f"({cfg.max_restarts}); released lease {cfg.name}"
                )
                return code
            delay = restart_delay(self._crashes)
            self.say(
                f"command exited with code {code}; restarting in {format_duration(delay)} "
                f"(restart {self._crashes} of {cfg.max_restarts})"
            )
            pause = await self._pause(lease, delay)
            if pause == "signal":
                await self._release(lease)
                return 128 + (self._signal or 0)
            if pause == "lease":
                self.say(f"lease {cfg.name} in trouble; waiting for it again")
                await self._release(lease)
                return None

    def _thresholds(self, lease: AsyncLease) -> tuple[float, float, float]:
        ttl = lease.ttl
        term_at = ttl / 3.0
        kill_at = lease.lost_margin + 0.1 * ttl
        tick = max(0.005, min(0.05, ttl / 50.0))
        return term_at, kill_at, tick

    async def _pause(self, lease: AsyncLease, seconds: float) -> str:
        """Wait before a restart, watching the lease and signals: "ok", "lease" or "signal"."""
        term_at, _kill_at, tick = self._thresholds(lease)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if self._signal is not None:
                return "signal"
            if lease.lost.is_set() or lease.time_left() <= term_at:
                return "lease"
            await self._sleep_or_signal(min(tick, max(0.0, end - time.monotonic())))
        return "ok"

    async def _start(self, lease: AsyncLease) -> asyncio.subprocess.Process:
        cfg = self.config
        env = dict(os.environ)
        env.update(cfg.env)
        env.update(
            RAFTLEASE_FENCING_TOKEN=str(lease.fencing_token),
            RAFTLEASE_LEASE_ID=str(lease.lease_id),
            RAFTLEASE_LEASE_NAME=cfg.name,
        )
        if sys.platform.startswith("linux"):
            argv = [sys.executable, "-c", _PRELUDE, str(os.getpid()), *cfg.command]
        else:
            argv = list(cfg.command)
        proc = await asyncio.create_subprocess_exec(*argv, env=env, start_new_session=True)
        self.say(f"started {self._cmd_text} (pid {proc.pid}, fencing token {lease.fencing_token})")
        return proc

    def _kill(self, proc: asyncio.subprocess.Process, signum: int) -> None:
        if proc.returncode is not None:
            return
        try:
            os.killpg(proc.pid, signum)
        except ProcessLookupError:
            pass
        except PermissionError:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signum)

    async def _supervise(
        self, proc: asyncio.subprocess.Process, lease: AsyncLease
    ) -> tuple[str, int]:
        """Watch CMD and the lease until CMD exits: ("exited"|"lease"|"signal", exit code)."""
        term_at, kill_at, tick = self._thresholds(lease)
        waiter = asyncio.ensure_future(proc.wait())
        reason = "exited"
        term_sent = killed = False
        forwarded: int | None = None
        forwarded_at = math.inf
        try:
            while not waiter.done():
                now = time.monotonic()
                if self._signal is not None and forwarded is None:
                    forwarded, forwarded_at = self._signal, now
                    reason = "signal"
                    name = signal.Signals(forwarded).name
                    self.say(f"received {name}; forwarding it to the command (pid {proc.pid})")
                    self._kill(proc, forwarded)
                left = lease.time_left()
                if not killed and (lease.lost.is_set() or left <= kill_at):
                    self.say(
                        f"lease {self.config.name} about to expire "
                        f"({format_duration(left)} left); sending SIGKILL to the command"
                    )
                    self._kill(proc, signal.SIGKILL)
                    killed = True
                    if reason == "exited":
                        reason = "lease"
                elif not term_sent and not killed and left <= term_at:
                    self.say(
                        f"lease {self.config.name} renewals failing "
                        f"({format_duration(left)} left); sending SIGTERM to the command"
                    )
                    self._kill(proc, signal.SIGTERM)
                    term_sent = True
                    if reason == "exited":
                        reason = "lease"
                if (
                    not killed
                    and forwarded is not None
                    and (self._second_signal or now - forwarded_at > SIGNAL_GRACE_S)
                ):
                    self.say("the command did not stop; sending SIGKILL")
                    self._kill(proc, signal.SIGKILL)
                    killed = True
                await asyncio.wait({waiter}, timeout=tick)
            returncode = waiter.result()
        finally:
            if not waiter.done():  # cancelled: never leave CMD running without a lease
                self._kill(proc, signal.SIGKILL)
                waiter.cancel()
        return reason, exit_code(returncode)


def run_singleton(config: RunnerConfig, *, out: TextIO | None = None) -> int:
    """Run the supervisor in a fresh event loop; the exit code."""
    return asyncio.run(SingletonRunner(config, out=out).run())
