"""``raftlease run NAME -- CMD``: run CMD as a cluster-wide singleton.

The supervisor loops: wait in the lease's FIFO queue, start CMD only while holding the lease,
and stop CMD *before* the lease could pass to anyone else. User documentation:
docs/singleton.md.

- CMD gets ``RAFTLEASE_FENCING_TOKEN``, ``RAFTLEASE_LEASE_ID`` and ``RAFTLEASE_LEASE_NAME`` in
  its environment; it should pass the token to every resource it writes to.
- If renewals fail so that ``time_left() <= ttl / 3``, CMD gets SIGTERM; at the latest when
  ``time_left() <= lost_margin + 0.1 * ttl`` (or the lease is lost) its whole tree gets
  SIGKILL, and the supervisor waits until the watchdog confirmed it dead, then goes back to
  waiting for the lease.
- Child checks, besides "the process is alive": a heartbeat (CMD writes one line per beat to
  the pipe named by ``RAFTLEASE_HEARTBEAT_FD``, optionally with ``key=value`` status words,
  see :mod:`raftlease.heartbeat`; enforced with ``heartbeat_timeout``), a TCP port on
  127.0.0.1 that must accept connections (``health_port``) and a shell command that must
  exit 0 (``health_cmd``), both every ``health_interval`` and failing after
  ``health_retries`` failures in a row. The latest status payload rides on the keepalives as
  the lease's health map. A hung or unhealthy CMD gets SIGTERM (and SIGCONT), then SIGKILL
  after ``kill_grace``, and counts as a failure.
- A CMD that fails (exits non-zero, or is killed as hung or unhealthy) is restarted while the
  lease is held: at once after the first failure in ``restart_window``, then after
  ``restart_delay`` (1 s), 2x, 4x ... (capped at 30 s), each stretched by up to 20 % of
  random jitter. The circuit breaker: more than ``max_restarts`` failures within
  ``restart_window`` (default: the supervisor's whole life) releases the lease, so a standby
  elsewhere takes over, and the supervisor exits with CMD's code (1 if that was 0). When CMD
  exits 0 the lease is released and the supervisor exits 0.
- SIGTERM/SIGINT are forwarded to CMD's process group (a second one kills it); once it exited
  the lease is released and the supervisor exits with CMD's code (128 + N if CMD died of
  signal N).
- While it waits for the lease or for the cluster it says so on stderr at once and every
  few seconds. ``wait`` (``--wait``) bounds the wait: then :class:`WaitExpired` (the CLI
  prints it as its one error line and exits 1, as for every other error).

**The watchdog** (:mod:`raftlease.client._watchdog`). Every kill and keepalive of the
supervisor lives in its event loop, so a supervisor that is stopped (Ctrl-Z, SIGSTOP, a
debugger) could otherwise leave CMD running past the lease. So CMD is not the supervisor's
child: a small stdlib-only watchdog process, in its own session, forks CMD, is its child
subreaper, and kills the whole tree (CMD's process group and every descendant, including
ones that called ``setsid()``) and reaps it when the supervisor stops answering its pings in
time, when the supervisor dies (its pipe closes), or on the supervisor's SIGKILL. The
watchdog pings (``P seq``) and notes its own monotonic time ``t`` BEFORE sending; the
supervisor answers with the lease's remaining conservative validity minus the watchdog margin
``min(0.1 * ttl, 0.5 s)``, computed when it read the ping; the watchdog's deadline is ``t +
answer``. No clock reading crosses the pipe, and every delay (pipe, scheduling, a supervisor
stopped between reading the ping and answering) only moves the watchdog's deadline earlier.

Why no two CMDs overlap: the supervisor's ``valid_until`` is conservative (the validity is
counted from before the request was sent, shortened by the drift bound; docs/safety.md), so
no other holder is granted the lease before it. The old tree is dead and reaped by
``valid_until - margin`` whatever the supervisor does (answers, hangs or dies), because the
watchdog measures that deadline on its own clock from an earlier instant. The server hands the
lease to the next holder only after it expired, and the next supervisor starts its CMD (via
its own watchdog) only after that grant. So the next CMD starts after the old tree is dead.
What is not covered: the watchdog itself being SIGSTOPped or SIGKILLed (CMD still dies with it
on SIGKILL through ``PR_SET_PDEATHSIG``, but descendants that left CMD's process group may
not), the whole machine being suspended, and outside Linux the subreaper and ``/proc`` walk
(there only CMD's process group is killed).

Status messages go to stderr, one line each, prefixed ``raftlease run:``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import re
import shlex
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from raftlease import heartbeat as _heartbeat
from raftlease.client import _watchdog
from raftlease.client._common import format_duration, one_line
from raftlease.client._supervise import (
    HealthChecks,
    Heartbeat,
    RestartBreaker,
    backoff_delay,
    fit_health,
)
from raftlease.client.aio import AsyncLease, AsyncLeaseClient
from raftlease.client.errors import ClusterUnavailable, LeaseHeld, LeaseLost
from raftlease.errors import RaftLeaseError

if TYPE_CHECKING:
    from raftlease.client._common import LeaseInfo

__all__ = [
    "RunnerConfig",
    "RunnerError",
    "SingletonRunner",
    "WaitExpired",
    "WaitReport",
    "restart_delay",
    "short_error",
]

MAX_SERVER_WAIT_S = 3600.0  # the server's MAX_WAIT_MS
SIGNAL_GRACE_S = 10.0  # after forwarding a signal, SIGKILL CMD if it has not exited by then
POLL_S = 0.1  # how often the waiting loop looks at signals, the --wait deadline and reports
PROBE_WAIT_S = 1.0  # how long a report waits for its probe (holder / status) before speaking
REPORT_FIRST_S = 0.5  # the first "waiting" line, unless the first answer says more sooner
REPORT_EVERY_S = 5.0  # then one line every this many seconds while waiting
WATCHDOG_PATH = os.path.abspath(_watchdog.__file__)


class RunnerError(RaftLeaseError):
    """The supervisor cannot do its job (command not found, wait expired, ...)."""


class WaitExpired(RunnerError):
    """``--wait`` passed without the lease (the CLI prints one error line and exits 1)."""


def restart_delay(crashes: int) -> float:
    """The default backoff schedule before restart number ``crashes`` (1-based), without
    jitter: 0 (the first restart is immediate), 1 s, 2 s, 4 s ... capped at 30 s
    (:func:`backoff_delay` with its defaults)."""
    return backoff_delay(crashes)


def exit_code(returncode: int) -> int:
    """A shell-style exit code: 128 + N for death by signal N."""
    return 128 - returncode if returncode < 0 else returncode


@dataclass
class RunnerConfig:
    """What ``raftlease run`` was asked to do.

    ``wait``: seconds to wait for the lease in total; None = forever. ``restart_window``:
    the circuit breaker's window in seconds; None = the supervisor's whole life.
    ``heartbeat_timeout``: None = beats are not required (they still carry the status).
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
    heartbeat_timeout: float | None = None
    health_cmd: str | None = None
    health_port: int | None = None
    health_interval: float = 2.0
    health_retries: int = 3
    kill_grace: float = 5.0
    restart_delay: float = 1.0
    restart_window: float | None = None

    def check(self) -> None:
        """Raise :class:`RunnerError` naming the first bad setting."""
        if not self.command:
            raise RunnerError("no command given: use raftlease run NAME -- CMD [ARGS...]")
        problems = [
            (self.max_restarts < 0, f"--max-restarts must be >= 0, got {self.max_restarts}"),
            (
                self.heartbeat_timeout is not None and not self.heartbeat_timeout > 0,
                f"--heartbeat-timeout must be > 0, got {self.heartbeat_timeout}",
            ),
            (
                self.health_port is not None and not 0 < self.health_port < 65536,
                f"--health-port must be 1-65535, got {self.health_port}",
            ),
            (self.health_cmd == "", "--health-cmd must not be empty"),
            (
                not self.health_interval > 0,
                f"--health-interval must be > 0, got {self.health_interval}",
            ),
            (self.health_retries < 1, f"--health-retries must be >= 1, got {self.health_retries}"),
            (not self.kill_grace >= 0, f"--kill-grace must be >= 0, got {self.kill_grace}"),
            (
                not self.restart_delay >= 0,
                f"--restart-delay must be >= 0, got {self.restart_delay}",
            ),
            (
                self.restart_window is not None and not self.restart_window > 0,
                f"--restart-window must be > 0, got {self.restart_window}",
            ),
        ]
        for bad, message in problems:
            if bad:
                raise RunnerError(message)

    def health_timeout(self) -> float:
        """How long one health check may take: the interval, at least 1 s."""
        return max(1.0, self.health_interval)


_GRPC_PREFIX = re.compile(r"^(?:[A-Z_]+: )?(?:ipv[46]:\S+: )?")


def short_error(text: str) -> str:
    """The useful end of a gRPC error text, one line: ``UNAVAILABLE: failed to connect to all
    addresses; last error: UNKNOWN: ipv4:127.0.0.1:7001: Failed to connect to remote host:
    Connection refused`` becomes ``Failed to connect to remote host: Connection refused``."""
    text = one_line(text)
    tail = text.rsplit("last error: ", 1)[-1]
    return _GRPC_PREFIX.sub("", tail, count=1) or text


class WaitReport:
    """What ``raftlease run`` says while it waits for the lease, and when. Pure: the clock is
    passed in.

    ``state`` is ``"unknown"`` (no answer yet), ``"held"`` (someone else holds the lease),
    ``"free"`` (it is free and our queued request should be granted) or ``"unavailable"`` (the
    cluster does not answer, or has no leader); ``detail`` says more. A change learned from an
    answer (:meth:`held`, :meth:`unavailable`) is said at once; otherwise :meth:`due` turns true
    ``first_after`` seconds after the start and then every ``every`` seconds, and the caller
    says :meth:`message` (after a :meth:`refine` from a probe, if it has one).
    """

    def __init__(
        self,
        name: str,
        endpoints: Sequence[str],
        started: float,
        *,
        first_after: float = REPORT_FIRST_S,
        every: float = REPORT_EVERY_S,
    ) -> None:
        self.name = name
        self.endpoints = ",".join(endpoints)
        self.started = started
        self.first_after = first_after
        self.every = every
        self.state = "unknown"
        self.detail = ""
        self.last_said: float | None = None

    @staticmethod
    def holder_detail(holder: str, token: int) -> str:
        return f"held by {holder or '?'}" + (f", token {token}" if token else "")

    @staticmethod
    def from_status(status: dict[str, Any]) -> tuple[str, str]:
        """``(state, detail)`` from :meth:`AsyncLeaseClient.status`'s merged view."""
        nodes = list(status.get("nodes", []))
        answering = [n for n in nodes if n.get("role") != "unreachable"]
        if not answering:
            errors = [f"{n.get('address')}: {short_error(n.get('error', '?'))}" for n in nodes]
            first = errors[0] if errors else "no endpoints"
            more = f"; and {len(errors) - 1} more" if len(errors) > 1 else ""
            return "unavailable", f"no node answers ({first}{more})"
        leader = status.get("leader")
        if leader and any(n.get("id") == leader and n.get("role") == "leader" for n in nodes):
            return "unknown", f"leader {leader} is up; no answer to our request yet"
        return "unavailable", (
            f"no leader ({len(answering)} of {len(nodes)} nodes answer; "
            "an election may be under way)"
        )

    def due(self, now: float) -> bool:
        if self.last_said is None:
            return now - self.started >= self.first_after
        return now - self.last_said >= self.every

    def held(self, holder: str, token: int, now: float) -> str | None:
        """The lease is held: a line to say now if that is news, else None."""
        return self._set("held", self.holder_detail(holder, token), now)

    def unavailable(self, reason: str, now: float) -> str | None:
        """The cluster did not answer: a line to say now if that is news, else None."""
        return self._set("unavailable", short_error(reason), now)

    def refine(self, state: str, detail: str) -> None:
        """What a probe found (said with the next :meth:`message`)."""
        self.state, self.detail = state, detail

    def _set(self, state: str, detail: str, now: float) -> str | None:
        if (state, detail) == (self.state, self.detail):
            return None
        self.refine(state, detail)
        return self.message(now)

    def so_far(self, now: float) -> str:
        elapsed = max(0.0, now - self.started)
        return f"{elapsed:.1f} s" if elapsed < 10 else f"{elapsed:.0f} s"

    def message(self, now: float) -> str:
        """The line to say now (and remember that it was said now)."""
        first = self.last_said is None
        self.last_said = now
        so_far = self.so_far(now)
        if self.state == "unavailable":
            return (
                f"cluster unavailable at {self.endpoints}: {self.detail}; "
                f"retrying ({so_far} so far)"
            )
        if self.state == "held":
            if first:
                return f"waiting for lease {self.name} ({self.detail})"
            return f"still waiting for lease {self.name} ({self.detail}; {so_far} so far)"
        if self.state == "free":
            return (
                f"still waiting for lease {self.name} (it is free; the queue should hand it "
                f"to us shortly; {so_far} so far)"
            )
        detail = self.detail or f"no answer yet from the cluster at {self.endpoints}"
        return f"waiting for lease {self.name}: {detail} ({so_far} so far)"

    def summary(self) -> str:
        """The last known state, for the give-up message."""
        if self.state == "unavailable":
            return f"cluster unavailable at {self.endpoints}: {self.detail}"
        if self.state == "held":
            return self.detail
        if self.state == "free":
            return "it was being handed over"
        return self.detail or f"no answer from the cluster at {self.endpoints}"


class _Watched:
    """The supervisor's end of one watchdog (and so of one run of CMD).

    Answers the watchdog's pings from the event loop (``loop.add_reader``) with the lease's
    remaining validity minus the watchdog margin, forwards signals, and collects the
    watchdog's final report: ``result = (CMD's returncode or None, reason)``. Also reads
    CMD's heartbeat pipe (``heartbeat_r``): each line is a beat, and a changed status payload
    becomes the lease's health map for the following keepalives.
    """

    def __init__(
        self,
        runner: SingletonRunner,
        lease: AsyncLease,
        proc: asyncio.subprocess.Process,
        feed_w: int,
        report_r: int,
        heartbeat_r: int,
    ) -> None:
        self.runner = runner
        self.lease = lease
        self.proc = proc
        self.feed_w = feed_w
        self.report_r = report_r
        self.heartbeat_r = heartbeat_r
        self.margin = _watchdog.watchdog_margin(lease.ttl)
        self.cmd_pid: int | None = None
        self.started_at: float | None = None  # time.monotonic() when the watchdog said R
        self.started = asyncio.Event()
        self.result: tuple[int | None, str] | None = None
        self.killed_for = ""  # "hung" or "unhealthy" once the supervisor acted on it
        self.heartbeat = Heartbeat(runner.config.heartbeat_timeout)
        self.checks = HealthChecks(runner.config.health_retries)
        self._buf = b""
        self._hb_buf = b""
        self._warned_fit = False
        self._loop = asyncio.get_running_loop()
        self._reading = True
        self._loop.add_reader(report_r, self._on_readable)
        self._hb_reading = True
        self._loop.add_reader(heartbeat_r, self._on_heartbeat)

    def _on_heartbeat(self) -> None:
        try:
            data = os.read(self.heartbeat_r, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # every writer closed it (CMD's tree is gone, or CMD closed the fd)
            self._stop_heartbeat()
            return
        self._hb_buf += data
        *lines, self._hb_buf = self._hb_buf.split(b"\n")
        if len(self._hb_buf) > _heartbeat.MAX_LINE_BYTES:  # an endless line: one beat
            lines.append(self._hb_buf[: _heartbeat.MAX_LINE_BYTES])
            self._hb_buf = b""
        now = time.monotonic()
        changed = False
        for raw in lines:
            changed |= self.heartbeat.take(raw.decode("utf-8", "replace"), now)
        if changed:
            self._publish(self.heartbeat.status)

    def _publish(self, status: dict[str, str]) -> None:
        kept, dropped = fit_health(status)
        if dropped and not self._warned_fit:
            self._warned_fit = True
            self.runner.say(
                f"the command's status is over the health payload's limits (16 entries, 1024 "
                f"bytes); dropped {', '.join(dropped[:5])}{' ...' if len(dropped) > 5 else ''}"
            )
        with contextlib.suppress(RaftLeaseError):
            self.lease.set_health(kept)

    def problem(self, now: float) -> str | None:
        """Why CMD counts as hung or unhealthy now, or None."""
        if self.cmd_pid is None or self.result is not None:
            return None
        hb = self.heartbeat
        if hb.timeout is not None and hb.overdue(now):
            last = "no heartbeat yet" if hb.last_beat is None else "no heartbeat"
            return (
                f"hung: {last} for {format_duration(hb.silence(now))} "
                f"(--heartbeat-timeout {format_duration(hb.timeout)})"
            )
        if self.checks.unhealthy:
            return (
                f"unhealthy: {self.checks.consecutive} health checks failed in a row "
                f"({self.checks.last_error})"
            )
        return None

    def _stop_heartbeat(self) -> None:
        if self._hb_reading:
            self._hb_reading = False
            self._loop.remove_reader(self.heartbeat_r)

    def remaining(self) -> float:
        """The answer to a ping read now: seconds the watchdog may let CMD run."""
        if self.lease.lost.is_set():
            return 0.0
        return self.lease.time_left() - self.margin

    def _on_readable(self) -> None:
        try:
            data = os.read(self.report_r, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._stop_reading()
            return
        self._take(data)

    def _take(self, data: bytes) -> None:
        self._buf += data
        *lines, self._buf = self._buf.split(b"\n")
        for raw in lines:
            msg = _watchdog.parse_message(raw.decode("ascii", "replace"))
            if msg is None:
                continue
            kind, fields = msg
            if kind == "P":
                self._send(_watchdog.format_reply(int(fields[0]), self.remaining()))
            elif kind == "R":
                self.cmd_pid = int(fields[0])
                self.started_at = time.monotonic()
                self.started.set()
                self.heartbeat.start(self.started_at)
                self.runner.say(
                    f"started {self.runner._cmd_text} (pid {self.cmd_pid}, fencing token "
                    f"{self.lease.fencing_token}, watchdog pid {self.proc.pid})"
                )
            elif kind == "X":
                code = None if fields[0] in ("-", "None") else int(fields[0])
                self.result = (code, fields[1])

    def _send(self, data: bytes) -> None:
        with contextlib.suppress(OSError):  # the watchdog is gone: its report says why
            os.write(self.feed_w, data)

    def send_signal(self, signum: int) -> None:
        """Forward ``signum`` to CMD's process group; SIGKILL kills and reaps the whole tree."""
        if self.proc.returncode is None:
            self._send(f"S {int(signum)}\n".encode("ascii"))

    async def wait(self) -> int:
        """Wait until the watchdog exited (the tree is dead and reaped); its own exit code."""
        returncode = await self.proc.wait()
        give_up = time.monotonic() + 1.0
        while self._reading:  # the rest of its report (the write end is closed now)
            try:
                data = os.read(self.report_r, 4096)
            except BlockingIOError:
                if time.monotonic() > give_up:
                    break
                await asyncio.sleep(0.001)
                continue
            except OSError:
                data = b""
            if not data:
                break
            self._take(data)
        self._stop_reading()
        return returncode

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self.report_r)

    def close(self) -> None:
        """Close the pipes; a watchdog still running sees EOF and kills the tree."""
        self._stop_reading()
        self._stop_heartbeat()
        for fd in (self.feed_w, self.report_r, self.heartbeat_r):
            with contextlib.suppress(OSError):
                os.close(fd)


class SingletonRunner:
    """The ``raftlease run`` supervisor; ``await runner.run()`` returns the exit code."""

    def __init__(self, config: RunnerConfig, *, out: TextIO | None = None) -> None:
        config.check()
        self.config = config
        self._out = out if out is not None else sys.stderr
        self._signal: int | None = None
        self._signal_event: asyncio.Event | None = None
        window = math.inf if config.restart_window is None else config.restart_window
        self._breaker = RestartBreaker(config.max_restarts, window)
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

    # -- waiting for the lease --------------------------------------------------------------

    async def _acquire(
        self, client: AsyncLeaseClient, wait_deadline: float | None
    ) -> AsyncLease | None:
        """Wait for the lease, saying what we wait for; None if a signal arrived first.

        Raises :class:`WaitExpired` when ``wait_deadline`` passes without the lease.
        """
        cfg = self.config
        report = WaitReport(cfg.name, list(client.endpoints), time.monotonic())
        probe: asyncio.Task[tuple[str, str] | None] | None = None
        probe_started = 0.0
        wait_s = 0.0  # the first try does not queue, so we can say who holds it
        try:
            while self._signal is None:
                task = asyncio.ensure_future(
                    client.acquire(cfg.name, cfg.ttl, wait_s, holder=cfg.holder)
                )
                try:
                    while not task.done():
                        now = time.monotonic()
                        if self._signalled():
                            return None
                        if wait_deadline is not None and now >= wait_deadline:
                            raise self._gave_up(report)
                        if probe is None and report.due(now):
                            probe = asyncio.ensure_future(self._probe(client, report.state))
                            probe_started = now
                        if probe is not None and (
                            probe.done() or now - probe_started >= PROBE_WAIT_S
                        ):
                            found = _probe_result(probe)
                            probe = None
                            if found is not None:
                                report.refine(*found)
                            self.say(report.message(now))
                        await asyncio.wait({task}, timeout=POLL_S)
                finally:
                    if not task.done():
                        task.cancel()
                        with contextlib.suppress(asyncio.CancelledError, RaftLeaseError):
                            granted = await task
                            await granted.release()  # granted just as we gave up
                now = time.monotonic()
                try:
                    lease = task.result()
                except LeaseHeld as err:
                    line = report.held(err.holder, err.fencing_token, now)
                    if line is not None:
                        self.say(line)
                except (ClusterUnavailable, LeaseLost) as err:
                    reason = getattr(err, "last_error", "") or str(err)
                    line = report.unavailable(reason, now)
                    if line is not None:
                        self.say(line)
                    if await self._sleep_or_signal(self._until(wait_deadline, 1.0)):
                        return None
                else:
                    if self._signalled():  # granted as the signal came: do not start CMD
                        await self._release(lease)
                        return None
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
                        raise self._gave_up(report)
                    wait_s = min(left, MAX_SERVER_WAIT_S)
            return None
        finally:
            if probe is not None:
                probe.cancel()

    def _signalled(self) -> bool:
        return self._signal is not None

    @staticmethod
    def _until(deadline: float | None, seconds: float) -> float:
        if deadline is None:
            return seconds
        return max(0.0, min(seconds, deadline - time.monotonic()))

    def _gave_up(self, report: WaitReport) -> WaitExpired:
        cfg = self.config
        return WaitExpired(
            f"gave up waiting for lease {cfg.name} after "
            f"{format_duration(cfg.wait or 0.0)} ({report.summary()})"
        )

    async def _probe(self, client: AsyncLeaseClient, state: str) -> tuple[str, str] | None:
        """Find out more for the next report: who holds the lease, or why the cluster does
        not answer. ``(state, detail)`` for :meth:`WaitReport.refine`, or None."""
        try:
            if state == "held":
                info: LeaseInfo | None = await client.holder(self.config.name)
                if info is None:
                    return ("free", "")
                return ("held", WaitReport.holder_detail(info.holder, info.fencing_token))
            status = await client.status()
        except RaftLeaseError:
            return None
        return WaitReport.from_status(status)

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

    # -- holding it -------------------------------------------------------------------------

    async def _hold(self, lease: AsyncLease) -> int | None:
        """Run CMD while holding ``lease``. The exit code when done; None to wait again."""
        cfg = self.config
        while True:
            lease.set_health({})  # the previous run's status is not this one's
            child = await self._start(lease)
            outcome, code = await self._supervise(child, lease)
            self._last_code = code
            if outcome == "signal":
                self.say(f"command exited with code {code}; releasing lease {cfg.name}")
                await self._release(lease)
                return code
            if outcome == "lease":
                self.say(f"command stopped (code {code}); waiting for lease {cfg.name} again")
                await self._release(lease)
                return None
            if outcome == "exited" and code == 0:
                await self._release(lease)
                self.say(f"command exited with code 0; released lease {cfg.name}")
                return 0
            what = (
                f"command exited with code {code}"
                if outcome == "exited"
                else f"command killed as {child.killed_for} (code {code})"
            )
            now = time.monotonic()
            tripped = self._breaker.failure(now)
            failures = self._breaker.failures(now)
            within = (
                ""
                if cfg.restart_window is None
                else f" within {format_duration(cfg.restart_window)}"
            )
            if tripped:
                await self._release(lease)
                self.say(
                    f"{what}; restarts exhausted: {failures} failures{within} with "
                    f"--max-restarts {cfg.max_restarts}; circuit breaker open: released lease "
                    f"{cfg.name} so a standby can take over"
                )
                return code or 1
            delay = backoff_delay(failures, cfg.restart_delay, u=random.random())
            when = f"in {format_duration(delay)}" if delay > 0 else "now"
            self.say(
                f"{what}; restarting {when} (restart {failures} of {cfg.max_restarts}{within})"
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
        while True:  # checked once even for no wait: never start CMD on a lease in trouble
            if self._signal is not None:
                return "signal"
            if lease.lost.is_set() or lease.time_left() <= term_at:
                return "lease"
            left = end - time.monotonic()
            if left <= 0:
                return "ok"
            await self._sleep_or_signal(min(tick, left))

    async def _start(self, lease: AsyncLease) -> _Watched:
        """Start the watchdog, which starts CMD once it heard from us that the lease holds."""
        cfg = self.config
        env = dict(os.environ)
        env.update(cfg.env)
        env.update(
            RAFTLEASE_FENCING_TOKEN=str(lease.fencing_token),
            RAFTLEASE_LEASE_ID=str(lease.lease_id),
            RAFTLEASE_LEASE_NAME=cfg.name,
        )
        feed_r, feed_w = os.pipe()
        report_r, report_w = os.pipe()
        heartbeat_r, heartbeat_w = os.pipe()  # CMD inherits the write end through the watchdog
        env[_heartbeat.ENV_FD] = str(heartbeat_w)
        env.pop(_heartbeat.ENV_TIMEOUT, None)
        if cfg.heartbeat_timeout is not None:
            env[_heartbeat.ENV_TIMEOUT] = f"{cfg.heartbeat_timeout:g}"
        interval = _watchdog.watchdog_interval(lease.ttl)
        argv = [
            sys.executable,
            "-I",  # isolated: no PYTHON* variables, no user site, no script dir on sys.path
            WATCHDOG_PATH,
            str(feed_r),
            str(report_w),
            f"{interval:.6f}",
            "--",
            *cfg.command,
        ]
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                env=env,
                start_new_session=True,
                pass_fds=(feed_r, report_w, heartbeat_w),
            )
        except BaseException:
            for fd in (feed_w, report_r, heartbeat_r):
                os.close(fd)
            raise
        finally:
            for fd in (feed_r, report_w, heartbeat_w):
                os.close(fd)
        for fd in (feed_w, report_r, heartbeat_r):
            os.set_blocking(fd, False)
        return _Watched(self, lease, proc, feed_w, report_r, heartbeat_r)

    async def _health_loop(self, child: _Watched) -> None:
        """Run the health checks every ``health_interval`` while CMD runs; each result goes
        to ``child.checks``."""
        cfg = self.config
        if cfg.health_cmd is None and cfg.health_port is None:
            return
        await child.started.wait()
        while True:
            await asyncio.sleep(cfg.health_interval)
            if child.result is not None:
                return
            error = ""
            if cfg.health_port is not None:
                error = await self._check_port(cfg.health_port)
            if not error and cfg.health_cmd is not None:
                error = await self._check_cmd(cfg.health_cmd, child)
            if child.checks.result(not error, error) and child.problem(time.monotonic()):
                return

    async def _check_port(self, port: int) -> str:
        """Empty if 127.0.0.1:``port`` accepts a TCP connection in time, else why not."""
        timeout = self.config.health_timeout()
        try:
            _reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port), timeout
            )
        except TimeoutError:
            return f"127.0.0.1:{port}: no connection within {format_duration(timeout)}"
        except OSError as err:
            return f"127.0.0.1:{port}: {err.strerror or err}"
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return ""

    async def _check_cmd(self, command: str, child: _Watched) -> str:
        """Empty if ``sh -c command`` exits 0 in time, else why not (and its last line)."""
        lease = child.lease
        env = dict(os.environ)
        env.update(self.config.env)
        env.update(
            RAFTLEASE_FENCING_TOKEN=str(lease.fencing_token),
            RAFTLEASE_LEASE_ID=str(lease.lease_id),
            RAFTLEASE_LEASE_NAME=self.config.name,
            RAFTLEASE_CHILD_PID=str(child.cmd_pid),
        )
        timeout = self.config.health_timeout()
        proc = await asyncio.create_subprocess_shell(
            command,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            return f"--health-cmd did not finish within {format_duration(timeout)}"
        finally:
            if proc.returncode is None:  # cancelled
                with contextlib.suppress(OSError):
                    os.killpg(proc.pid, signal.SIGKILL)
        if proc.returncode == 0:
            return ""
        lines = out.decode("utf-8", "replace").strip().splitlines()
        tail = f": {one_line(lines[-1])[:200]}" if lines else ""
        return f"--health-cmd exited with code {exit_code(proc.returncode or 0)}{tail}"

    async def _supervise(self, child: _Watched, lease: AsyncLease) -> tuple[str, int]:
        """Watch CMD and the lease until the watchdog reported CMD's tree dead and exited:
        ("exited"|"unhealthy"|"lease"|"signal", exit code)."""
        term_at, kill_at, tick = self._thresholds(lease)
        waiter = asyncio.ensure_future(child.wait())
        checker = asyncio.ensure_future(self._health_loop(child))
        reason = "exited"
        term_sent = killed = False
        forwarded: int | None = None
        forwarded_at = math.inf
        unhealthy_at = math.inf
        try:
            while not waiter.done():
                if child.result is not None:  # the tree is dead; the watchdog is exiting
                    await asyncio.wait({waiter}, timeout=tick)
                    continue
                now = time.monotonic()
                if self._signal is not None and forwarded is None:
                    forwarded, forwarded_at = self._signal, now
                    reason = "signal"
                    name = signal.Signals(forwarded).name
                    pid = child.cmd_pid if child.cmd_pid is not None else child.proc.pid
                    self.say(f"received {name}; forwarding it to the command (pid {pid})")
                    child.send_signal(forwarded)
                left = lease.time_left()
                if not killed and (lease.lost.is_set() or left <= kill_at):
                    self.say(
                        f"lease {self.config.name} about to expire "
                        f"({format_duration(left)} left); sending SIGKILL to the command"
                    )
                    child.send_signal(signal.SIGKILL)
                    killed = True
                    if reason in ("exited", "unhealthy"):
                        reason = "lease"
                elif not term_sent and not killed and left <= term_at:
                    self.say(
                        f"lease {self.config.name} renewals failing "
                        f"({format_duration(left)} left); sending SIGTERM to the command"
                    )
                    child.send_signal(signal.SIGTERM)
                    term_sent = True
                    if reason in ("exited", "unhealthy"):
                        reason = "lease"
                if reason == "exited" and not killed and not term_sent and forwarded is None:
                    why = child.problem(now)
                    if why is not None:
                        reason, unhealthy_at = "unhealthy", now
                        child.killed_for = why.split(":", 1)[0]
                        grace = self.config.kill_grace
                        self.say(
                            f"the command (pid {child.cmd_pid}) is {why}; sending SIGTERM"
                            + (f", SIGKILL in {format_duration(grace)}" if grace > 0 else "")
                        )
                        if grace > 0:
                            child.send_signal(signal.SIGTERM)
                            child.send_signal(signal.SIGCONT)  # a stopped process handles it
                grace_over = now - unhealthy_at >= self.config.kill_grace
                if reason == "unhealthy" and not killed and grace_over:
                    if self.config.kill_grace > 0:
                        self.say("the command did not stop; sending SIGKILL")
                    child.send_signal(signal.SIGKILL)
                    killed = True
                if (
                    not killed
                    and forwarded is not None
                    and (self._second_signal or now - forwarded_at > SIGNAL_GRACE_S)
                ):
                    self.say("the command did not stop; sending SIGKILL")
                    child.send_signal(signal.SIGKILL)
                    killed = True
                await asyncio.wait({waiter}, timeout=tick)
            watchdog_code = waiter.result()
        finally:
            checker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await checker
            if not waiter.done():  # cancelled: never leave CMD running without a lease
                child.send_signal(signal.SIGKILL)
                waiter.cancel()
            child.close()  # EOF: a watchdog still running kills the tree at once
        if child.result is None:
            self.say(f"the watchdog exited unexpectedly (code {watchdog_code})")
            return ("lease" if reason == "exited" else reason), exit_code(watchdog_code)
        returncode, why = child.result
        if why == "deadline":
            self.say(
                f"the watchdog killed the command: lease {self.config.name} was about to "
                "expire with no word from this supervisor"
            )
        if why in ("deadline", "refused", "orphaned", "cancelled") and reason == "exited":
            reason = "lease"
        if returncode is None:  # CMD never started: stopped by a signal, or no time was left
            returncode = -(forwarded if forwarded is not None else int(signal.SIGKILL))
        return reason, exit_code(returncode)


def _probe_result(probe: asyncio.Task[tuple[str, str] | None]) -> tuple[str, str] | None:
    """A finished probe's finding; None if it is still running (then cancelled) or failed."""
    if not probe.done():
        probe.cancel()
        return None
    if probe.cancelled() or probe.exception() is not None:
        return None
    return probe.result()


def run_singleton(config: RunnerConfig, *, out: TextIO | None = None) -> int:
    """Run the supervisor in a fresh event loop; the exit code."""
    return asyncio.run(SingletonRunner(config, out=out).run())
