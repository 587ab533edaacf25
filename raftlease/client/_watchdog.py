"""The watchdog of ``raftlease run``: the parent of CMD, which kills CMD's whole process tree
unless the supervisor keeps proving, over a pipe, that the lease is still valid.

The supervisor starts this file as a script (``python -I _watchdog.py FEED_FD REPORT_FD
INTERVAL -- CMD ARGS...``, in its own session); it imports only the standard library, so it
starts quickly and does not depend on the supervisor's event loop, threads or gRPC.

Protocol (one ASCII line per message, no clock readings ever cross the pipe):

- watchdog -> supervisor on REPORT_FD: ``P <seq>`` (a ping; the watchdog notes its own
  ``CLOCK_MONOTONIC`` reading ``t_seq`` BEFORE writing it), ``R <pid>`` (CMD started as pid),
  ``X <returncode|-> <reason>`` (the last line: every process of the tree is dead and reaped;
  returncode is CMD's, negative for death by signal, ``-`` if CMD never started; reason is
  ``exited``, ``deadline``, ``killed``, ``orphaned``, ``refused`` (the first answer said the
  lease has no time left) or ``cancelled`` (a signal came before CMD was started)).
- supervisor -> watchdog on FEED_FD: ``D <seq> <seconds>`` (the answer to ping ``seq``: the
  lease may be trusted for ``seconds`` more, counted from when the supervisor READ the ping,
  already shortened by the watchdog margin) and ``S <signum>`` (send a signal to CMD's process
  group; ``S 9`` kills the whole tree).

Because the supervisor reads ping ``seq`` after the watchdog took ``t_seq``, the watchdog's
deadline ``t_seq + seconds`` is never later than the supervisor's own: delays in the pipe,
in scheduling, or a supervisor stopped mid-way only make the watchdog kill EARLIER. CMD is
not started before the first answer arrives. When the deadline passes unanswered, when the
feed pipe closes (the supervisor died), on ``S 9``, or on SIGTERM/SIGINT/SIGHUP to the
watchdog itself, it SIGKILLs CMD's process group and every descendant it can find, reaps
them all, reports ``X`` and exits. It is a child subreaper (Linux ``PR_SET_CHILD_SUBREAPER``),
so descendants that called ``setsid()``/``setpgid()`` and lost their parent re-parent to it and
are found by a walk of ``/proc``; it also reaps them while CMD runs. When CMD exits by itself,
its leftover descendants are killed too, so nothing of the tree outlives the report.

CMD itself runs in its own process group (signals forwarded by the supervisor go to that
group) with ``PR_SET_PDEATHSIG = SIGKILL``, so it dies even if the watchdog is SIGKILLed.

CMD inherits the write end of the supervisor's heartbeat pipe (the descriptor named by
``RAFTLEASE_HEARTBEAT_FD``, see :mod:`raftlease.heartbeat`); the watchdog closes its own copy
once CMD is forked and never reads or writes it.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import signal
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = [
    "Feed",
    "descendants",
    "format_reply",
    "parse_message",
    "watchdog_interval",
    "watchdog_margin",
]

PR_SET_PDEATHSIG = 1


# The watchdog's clock: CLOCK_BOOTTIME where it exists, like raftlease.clock.boot_monotonic
# (this script runs by path and imports nothing of raftlease). CLOCK_MONOTONIC stops while the
# machine is suspended, which would let CMD outlive the lease after a resume.
def _now() -> float:
    if hasattr(time, "CLOCK_BOOTTIME"):
        return time.clock_gettime(time.CLOCK_BOOTTIME)
    return time.monotonic()


PR_SET_CHILD_SUBREAPER = 36
HEARTBEAT_FD_ENV = "RAFTLEASE_HEARTBEAT_FD"  # raftlease.heartbeat.ENV_FD (no import here)
_REAP_POLL_S = 0.002


def watchdog_margin(ttl: float) -> float:
    """How much earlier than the lease's conservative validity the watchdog kills CMD's tree:
    ``min(0.1 * ttl, 0.5 s)``. It covers the kill and the reap (milliseconds) with room to
    spare. It is always smaller than the supervisor's own SIGKILL point (``lost_margin + 0.1 *
    ttl``), so while the supervisor runs, the watchdog is only the backstop."""
    return min(0.1 * ttl, 0.5)


def watchdog_interval(ttl: float) -> float:
    """How often the watchdog pings: ``min(ttl / 10, 0.25 s)``, well inside a renewal period."""
    return max(0.01, min(ttl / 10.0, 0.25))


@dataclass
class Feed:
    """The watchdog's deadline bookkeeping; pure: every method takes the monotonic time.

    One ping is outstanding at a time. ``reply(seq, seconds)`` to the outstanding ping sets the
    deadline to ``t_ping + seconds`` (it may move it earlier, e.g. ``seconds <= 0`` kills at
    once); answers to anything else are ignored. Until the first answer there is no deadline
    (``fed`` is False: CMD has not been started, and ``expired`` is False).
    """

    interval: float
    seq: int = 0
    outstanding: int | None = None
    sent_at: float = -math.inf
    deadline: float = -math.inf
    next_ping: float = -math.inf
    fed: bool = False

    def ping(self, now: float) -> int | None:
        """The seq of a ping to send now (its time is ``now``), or None if none is due."""
        if self.outstanding is not None or now < self.next_ping:
            return None
        self.seq += 1
        self.outstanding = self.seq
        self.sent_at = now
        return self.seq

    def reply(self, seq: int, seconds: float, now: float) -> bool:
        """Record the answer to ping ``seq``; False (and no change) if it is not outstanding."""
        if self.outstanding is None or seq != self.outstanding or math.isnan(seconds):
            return False
        self.deadline = self.sent_at + seconds
        self.outstanding = None
        self.next_ping = max(now, self.sent_at + self.interval)
        self.fed = True
        return True

    def expired(self, now: float) -> bool:
        return self.fed and now >= self.deadline

    def wake_in(self, now: float) -> float:
        """Seconds until something is due (a ping or the deadline); never negative."""
        due = self.deadline if self.fed else math.inf
        if self.outstanding is None:
            due = min(due, self.next_ping)
        return max(0.0, due - now) if due < math.inf else 1.0


def format_reply(seq: int, seconds: float) -> bytes:
    return f"D {seq} {seconds:.6f}\n".encode("ascii")


def parse_message(line: str) -> tuple[str, tuple[str, ...]] | None:
    """Split one protocol line into its letter and fields; None if it is malformed."""
    parts = line.split()
    arity = {"P": 1, "R": 1, "X": 2, "D": 2, "S": 1}
    if not parts or parts[0] not in arity or len(parts) != arity[parts[0]] + 1:
        return None
    return parts[0], tuple(parts[1:])


def descendants(root: int, parent_of: Mapping[int, int]) -> list[int]:
    """Every pid below ``root`` in the ``pid -> ppid`` table, parents before children."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parent_of.items():
        children.setdefault(ppid, []).append(pid)
    out: list[int] = []
    todo = sorted(children.get(root, []))
    seen = {root}
    while todo:
        pid = todo.pop(0)
        if pid in seen:
            continue
        seen.add(pid)
        out.append(pid)
        todo.extend(sorted(children.get(pid, [])))
    return out


def process_table() -> dict[int, int]:
    """``pid -> ppid`` of every process in ``/proc`` (empty where there is no /proc)."""
    table: dict[int, int] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return table
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rpartition(b")")[2].split()
        if len(fields) >= 2 and fields[1].isdigit():
            table[int(name)] = int(fields[1])
    return table


def _prctl(option: int, value: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        return int(ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


# ---------------------------------------------------------------------------------------------
# The process (everything below does I/O)


class _Watchdog:
    def __init__(self, feed_fd: int, report_fd: int, interval: float, argv: list[str]) -> None:
        self.feed_fd = feed_fd
        self.report_fd = report_fd
        self.argv = argv
        self.feed = Feed(interval)
        self.me = os.getpid()
        self.cmd_pid: int | None = None
        self.cmd_status: int | None = None  # a returncode: negative for death by signal
        self.stop_reason: str | None = None
        self.wake_r, self.wake_w = os.pipe()
        for fd in (self.wake_r, self.wake_w):
            os.set_blocking(fd, False)

    # -- signals --------------------------------------------------------------------------

    def install_signals(self) -> None:
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_stop)

    def _on_stop(self, signum: int, _frame: object) -> None:
        if self.stop_reason is None:
            self.stop_reason = "killed"

    # -- I/O ------------------------------------------------------------------------------

    def send(self, text: str) -> bool:
        try:
            os.write(self.report_fd, text.encode("ascii"))
        except OSError:
            return False
        return True

    def start_cmd(self) -> None:
        # Signals our handlers catch stay blocked across the fork until the child has reset
        # them to the default, so a signal forwarded at once is not swallowed by our handler.
        caught = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, caught)
        pid = os.fork()
        if pid == 0:  # the child: own process group, die with the watchdog, exec CMD
            try:
                signal.set_wakeup_fd(-1)
                for signum in caught:
                    signal.signal(signum, signal.SIG_DFL)
                for name in ("SIGPIPE", "SIGXFSZ"):  # Python ignores these; exec keeps that
                    if hasattr(signal, name):
                        signal.signal(getattr(signal, name), signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
                os.setpgid(0, 0)
                _prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
                if os.getppid() != self.me:
                    os._exit(137)  # the watchdog already died
                os.execvp(self.argv[0], self.argv)
            except OSError as exc:
                sys.stderr.write(f"raftlease run: cannot run {self.argv[0]!r}: {exc}\n")
                sys.stderr.flush()
            finally:
                os._exit(127)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        self.close_heartbeat()
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)  # also from here, so the group exists before any signal
        self.cmd_pid = pid
        self.send(f"R {pid}\n")

    def close_heartbeat(self) -> None:
        """Close our copy of CMD's heartbeat pipe (``RAFTLEASE_HEARTBEAT_FD``, passed through
        to CMD): only CMD's tree writes to it, so the supervisor sees EOF once that is gone."""
        text = os.environ.get(HEARTBEAT_FD_ENV, "")
        if text.isdigit() and int(text) not in (self.feed_fd, self.report_fd):
            with contextlib.suppress(OSError):
                os.close(int(text))

    def reap(self) -> bool:
        """Reap every exited child (CMD or an adopted orphan); False once none is left."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return False
            if pid == 0:
                return True
            if pid == self.cmd_pid:
                self.cmd_status = _returncode(status)

    def kill_tree(self) -> None:
        """SIGKILL CMD's group and every descendant, until all of them are reaped."""
        if self.cmd_pid is not None and self.cmd_status is None:
            with contextlib.suppress(OSError):
                os.killpg(self.cmd_pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                os.kill(self.cmd_pid, signal.SIGKILL)
        while True:
            victims = descendants(self.me, process_table())
            for pid in victims:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            left = self.reap()
            if not left and not victims:
                return
            time.sleep(_REAP_POLL_S)

    def forward(self, signum: int) -> None:
        if self.cmd_pid is None or self.cmd_status is not None:
            return
        try:
            os.killpg(self.cmd_pid, signum)
        except ProcessLookupError:
            pass
        except PermissionError:
            with contextlib.suppress(OSError):
                os.kill(self.cmd_pid, signum)

    def handle(self, line: str, now: float) -> bool:
        """Act on one line from the supervisor; True once the watchdog should stop."""
        self._handle(line, now)
        return self.stop_reason is not None

    def _handle(self, line: str, now: float) -> None:
        msg = parse_message(line)
        if msg is None:
            return
        kind, fields = msg
        try:
            if kind == "D":
                seconds = float(fields[1])
                if not self.feed.reply(int(fields[0]), seconds, now):
                    return
                if self.cmd_pid is None and self.stop_reason is None:
                    if seconds <= 0:
                        self.stop_reason = "refused"
                    else:
                        self.start_cmd()
            elif kind == "S":
                signum = int(fields[0])
                if self.cmd_pid is None:  # a stop before the start: do not start it at all
                    self.stop_reason = self.stop_reason or "cancelled"
                elif signum == signal.SIGKILL:
                    self.stop_reason = self.stop_reason or "killed"
                else:
                    self.forward(signum)
        except ValueError:
            return

    def loop(self) -> None:
        buf = b""
        while self.stop_reason is None:
            now = _now()
            if self.feed.expired(now):
                self.stop_reason = "deadline"
                break
            seq = self.feed.ping(now)
            if seq is not None and not self.send(f"P {seq}\n"):
                self.stop_reason = "orphaned"
                break
            try:
                ready, _, _ = select.select(
                    [self.feed_fd, self.wake_r], [], [], self.feed.wake_in(_now())
                )
            except InterruptedError:  # pragma: no cover - PEP 475 retries
                continue
            if self.wake_r in ready:
                with contextlib.suppress(OSError):
                    while os.read(self.wake_r, 512):
                        pass
            if self.cmd_pid is not None:
                self.reap()
                if self.cmd_status is not None:
                    self.stop_reason = "exited"
                    break
            if self.feed_fd in ready:
                try:
                    data = os.read(self.feed_fd, 4096)
                except BlockingIOError:
                    data = None
                if data == b"":
                    self.stop_reason = "orphaned"
                    break
                buf += data or b""
                *lines, buf = buf.split(b"\n")
                now = _now()
                for raw in lines:
                    if self.handle(raw.decode("ascii", "replace"), now):
                        break

    def run(self) -> int:
        self.install_signals()
        try:
            self.loop()
        finally:
            self.kill_tree()
        code = "-" if self.cmd_pid is None else str(self.cmd_status)
        self.send(f"X {code} {self.stop_reason or 'killed'}\n")
        return 0


def _returncode(status: int) -> int:
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 255


def _parse_argv(argv: Iterable[str]) -> tuple[int, int, float, list[str]]:
    args = list(argv)
    if len(args) < 5 or args[3] != "--":
        raise SystemExit("usage: _watchdog.py FEED_FD REPORT_FD INTERVAL -- CMD [ARGS...]")
    return int(args[0]), int(args[1]), float(args[2]), args[4:]


def main(argv: list[str]) -> int:
    feed_fd, report_fd, interval, command = _parse_argv(argv)
    for fd in (feed_fd, report_fd):
        os.set_inheritable(fd, False)  # CMD must not hold the pipes (EOF means "supervisor gone")
    os.set_blocking(feed_fd, False)
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    return _Watchdog(feed_fd, report_fd, interval, command).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
