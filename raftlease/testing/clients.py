"""Simulated lease clients and the fenced resource they write to (docs/fault-matrix.md, ME and FT).

A :class:`SimClient` runs the SHIPPED client procedure: the sans-I/O step machines of
``raftlease/client/_protocol.py`` that ``LeaseClient`` and ``AsyncLeaseClient`` drive
(``AcquireMachine``, ``KeepaliveMachine``, ``CallMachine`` for the release, with the real
``Router``, ``Attempts``, ``KeepaliveState`` and ``LeaseTimer``). This module only carries
their actions out over the simulator's network and scheduler (a ``Send*`` becomes a request
plus a timer for its deadline, a ``Sleep`` a scheduled wake-up, on the client's own clock) and
turns the simulator's replies into what the real clients make of gRPC answers:

* **Acquire** ``(name, holder, ttl, wait, request_id)``: one ``request_id`` per logical
  acquire, reused on every retry; sent to the node the router believes leads; UNAVAILABLE
  with a hint is followed at once (at most twice in a row), else the next endpoint after a
  backoff (10 ms doubling to 500 ms once per round of endpoints, jittered); an attempt that
  gets no answer by its deadline is a DEADLINE_EXCEEDED (a late answer to a timed-out attempt
  is ignored: the real call was cancelled, and the server cancels its handler at that
  deadline too). The answer comes when the leader APPLIES the entry. Some acquires wait in
  the server's queue (``p_wait``): each attempt asks for what is left of the wait and lasts
  at most ``wait_left + attempt_us`` (``attempt_us`` is the real client's ``attempt_cap``,
  scaled; ``acquire_timeout_us`` its ``timeout``); a grant whose validity is more than half
  used up is renewed once before the client acts on it (NOT_FOUND then starts a new acquire
  while the wait lasts).
* **Belief.** On a grant the client believes it holds the lease from the moment the answer
  arrives until ``valid_until = t_send + ttl (1 - rho) / (1 + rho)`` on ITS OWN clock, where
  ``t_send`` is the send time of the FIRST attempt of that acquire (a retry may return a
  grant made for an earlier attempt). A renewal every ``ttl / 3`` moves it to
  ``max(valid_until, t_send_renew + ttl (1 - rho) / (1 + rho))``. NOT_FOUND ends the belief
  at once; no success by ``lost_at = valid_until - min(0.05 ttl, 0.25 s)`` raises the lost
  signal (the client stops acting), but the checkers count the belief until
  ``valid_until`` (the belief interval of docs/fault-matrix.md), which a late keepalive
  thread reaches.
* **Behaviour while holding** (drawn per grant): release after a while (the belief ends when
  the Release is sent; the call gives up after the client timeout), stop the keepalive (a
  hung renewer: the lease runs out), crash (the belief ends with the process), or keep
  renewing. Holders write to the fenced resource at random times while their belief is
  valid; some writes arrive late (a holder paused between "check valid" and "write", fault
  matrix row 10).

What the simulator's server does not model, so the client never sees it: in-band renewal
outcomes (the real server answers a keepalive's Renew with RETRY while its leader lease
lapses, NOT_LEADER with a hint from a follower; the simulator answers UNAVAILABLE, which the
machines treat as the real client treats that status from an older server).

Planted client bugs (``ClientParams.bug``), for tests that show the checkers catch them:
``"ack-time"`` (``valid_until = ack time + ttl``: neither the send-time rule nor the drift
margin) and ``"no-margin"`` (``t_send + ttl``: no drift margin).

Every clock reading is local: ``local = offset + rate * real``. The checkers get belief ends
converted to real (virtual) time, which only the simulator knows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeAlias

from raftlease.client._keepalive import RenewAnswer
from raftlease.client._protocol import (
    Acquired,
    AcquireMachine,
    Action,
    CallMachine,
    Failed,
    Held,
    KeepaliveMachine,
    Lost,
    Send,
    SendAcquire,
    SendRenew,
    Sleep,
    Stopped,
)
from raftlease.client._retry import Failure, Router
from raftlease.client._validity import LeaseTimer, effective_ttl
from raftlease.client.errors import (
    ClusterUnavailable,
    InvalidArgument,
    LeaseLost,
    LeaseNotFound,
    RpcFailed,
)
from raftlease.fsm.commands import Acquire
from raftlease.fsm.leases import LeaseRecord
from raftlease.types import NodeId

if TYPE_CHECKING:
    import random
    from collections.abc import Callable, Sequence

    from raftlease.testing.checkers import LeaseCheckers

__all__ = [
    "CLIENT_BUGS",
    "AcquireReq",
    "ClientParams",
    "ClientReply",
    "ClientRequest",
    "FencedResource",
    "ReleaseReq",
    "RenewReq",
    "SimClient",
]

CLIENT_BUGS = ("ack-time", "no-margin")


# ---------------------------------------------------------------------------------- messages
@dataclass(frozen=True, slots=True)
class AcquireReq:
    src: NodeId  # the client's id
    dst: NodeId
    seq: int  # attempt id, unique per client
    cmd: Acquire
    wait_ms: int = 0  # how long the server may keep it in the queue (cmd.wait: > 0)
    timeout_us: int = 0  # the call's deadline (gRPC propagates it); 0: none


@dataclass(frozen=True, slots=True)
class RenewReq:
    src: NodeId
    dst: NodeId
    seq: int
    lease_id: int


@dataclass(frozen=True, slots=True)
class ReleaseReq:
    src: NodeId
    dst: NodeId
    seq: int
    lease_id: int
    timeout_us: int = 0


ClientRequest: TypeAlias = AcquireReq | RenewReq | ReleaseReq

# Reply statuses (the gRPC codes the real server would answer).
OK = "ok"
HELD = "held"  # acquired=False
UNAVAILABLE = "unavailable"  # not the leader / no leader lease / proposal dropped
NOT_FOUND = "not-found"
INVALID = "invalid"
INTERNAL = "internal"  # the server hit a case it does not handle


@dataclass(frozen=True, slots=True)
class ClientReply:
    src: NodeId  # the node
    dst: NodeId  # the client
    seq: int
    status: str
    lease: LeaseRecord | None = None
    hint: NodeId | None = None
    ttl_ms: int = 0


# ---------------------------------------------------------------------------------- params
@dataclass(frozen=True, slots=True)
class ClientParams:
    """The simulated lease workload. Durations in real (virtual) microseconds, except that
    each client measures them on its own clock (so a fast client waits less real time).

    ``rates`` pins each client's clock rate; by default each is drawn in 1 ± ``rate_drift``
    (default: the assumed ``max_drift``). ``max_drift`` is the bound the clients ASSUME
    (default: the cluster's). ``bug`` plants a client bug (see ``CLIENT_BUGS``).
    ``auto=False``: the clients do nothing on their own (no acquires, no hold behaviour);
    a test scripts them with :meth:`SimClient.acquire`, ``release``, ``hang`` and ``crash``.
    """

    count: int = 3
    names: tuple[str, ...] = ("lock-a", "lock-b")
    ttl_ms: tuple[int, int] = (1_000, 1_500)
    think_us: tuple[int, int] = (0, 300_000)  # idle -> next acquire
    held_retry_us: tuple[int, int] = (10_000, 150_000)  # after "held"
    hold_us: tuple[int, int] = (50_000, 1_200_000)  # until the drawn behaviour kicks in
    p_release: float = 0.4
    p_hang: float = 0.35  # stop the keepalive; the lease runs out
    p_crash: float = 0.1  # the belief ends with the process; no release
    crash_down_us: tuple[int, int] = (0, 500_000)
    write_every_us: tuple[int, int] = (10_000, 80_000)
    p_late_write: float = 0.05
    late_write_us: tuple[int, int] = (0, 1_500_000)
    write_delay_us: tuple[int, int] = (0, 2_000)
    attempt_us: int = 500_000  # one Acquire / Release attempt (attempt_cap, scaled)
    acquire_timeout_us: int = 2_000_000  # the client timeout (an acquire's: after the wait)
    p_wait: float = 0.3  # an acquire waits in the queue ...
    wait_us: tuple[int, int] = (100_000, 1_500_000)  # ... this long
    p_crash_waiting: float = 0.05  # ... and dies meanwhile
    rates: tuple[float, ...] | None = None
    rate_drift: float | None = None
    max_drift: float | None = None
    bug: str | None = None
    auto: bool = True

    def __post_init__(self) -> None:
        if self.count < 0 or not self.names:
            raise ValueError("need count >= 0 and at least one name")
        if self.rates is not None and len(self.rates) != self.count:
            raise ValueError(f"need {self.count} client clock rates, got {len(self.rates)}")
        if self.bug is not None and self.bug not in CLIENT_BUGS:
            raise ValueError(f"unknown client bug {self.bug!r}: use one of {CLIENT_BUGS}")


# ---------------------------------------------------------------------------------- resource
class FencedResource:
    """The protected resource: accepts a write iff its token >= the highest token seen."""

    __slots__ = ("accepted", "max_token", "rejected")

    def __init__(self) -> None:
        self.max_token: dict[str, int] = {}
        self.accepted = 0
        self.rejected = 0

    def write(self, name: str, token: int) -> bool:
        if token < self.max_token.get(name, 0):
            self.rejected += 1
            return False
        self.max_token[name] = token
        self.accepted += 1
        return True


# ---------------------------------------------------------------------------------- client
class ClientHost(Protocol):
    """What a client needs from the simulator."""

    @property
    def now(self) -> int: ...

    @property
    def lease_checks(self) -> LeaseCheckers: ...

    def at(self, at_us: int, action: Callable[[], None]) -> None: ...

    def client_send(self, req: ClientRequest) -> None: ...

    def client_gone(self, client: NodeId) -> None: ...

    def resource_write(
        self, client: NodeId, name: str, token: int, lease_id: int, delay_us: int
    ) -> None: ...

    def client_log(self, text: str) -> None: ...


_IDLE = "idle"
_ACQUIRING = "acquiring"
_CONFIRMING = "confirming"  # renewing a grant that waited long, before acting on it
_HOLDING = "holding"
_RELEASING = "releasing"
_DOWN = "down"

# What a timed-out attempt looks like to the protocol (gRPC: DEADLINE_EXCEEDED, retriable).
_NO_ANSWER = Failure("DEADLINE_EXCEEDED: no answer before the attempt's deadline")


class _SimTimer(LeaseTimer):
    """The real client's LeaseTimer, with the validity rule asked of the client, so that
    ``ClientParams.bug`` and tests/sim/planted.py can plant client bugs there."""

    def __init__(self, client: SimClient, ttl: float) -> None:
        super().__init__(ttl, client.rho)
        self._client = client

    def extension(self, t_send: float) -> float:
        return self._client._valid_until_after(t_send, self.ttl)


class SimClient:
    """One simulated client process (see the module docstring)."""

    def __init__(
        self,
        host: ClientHost,
        cid: NodeId,
        node_ids: Sequence[NodeId],
        rate: float,
        max_drift: float,
        params: ClientParams,
        rng: random.Random,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"clock rate must be positive, got {rate}")
        self.host = host
        self.id = cid
        self.rate = rate
        self.rho = max_drift
        self.params = params
        self.rng = rng
        self.offset_s = rng.uniform(0.0, 1_000.0)  # clocks do not agree on the epoch
        self.node_ids = list(node_ids)
        self.router = Router(node_ids, first=rng.randrange(len(node_ids)))
        self.n_nodes = len(node_ids)
        self.phase = _IDLE
        self.epoch = 0  # bumped on every phase change: stale timers check it and stop
        self._seq = 0
        self.cur_seq = -1  # the attempt in flight (one at a time: the machines are serial)
        # the machine the phase drives (raftlease/client/_protocol.py)
        self._acquire: AcquireMachine[LeaseRecord] | None = None  # acquiring, confirming
        self._call: CallMachine | None = None  # releasing
        self._keepalive: KeepaliveMachine | None = None  # holding
        self._status = ""  # the status of the last answer fed to a machine
        self.name = ""
        self.ttl_ms = 0
        self.acquires = 0
        # the held lease
        self.lease: LeaseRecord | None = None
        self.timer: LeaseTimer | None = None
        self.lost = True
        # stats
        self.grants = 0
        self.renewals = 0
        self.releases = 0
        self.crashes = 0
        self.hangs = 0
        self.lost_count = 0
        self.gave_up = 0
        # request id -> how an acquire ended without a grant the client acted on
        self.abandoned: dict[str, str] = {}

    # ------------------------------------------------------------------ clock
    def local(self) -> float:
        """This client's clock (seconds)."""
        return self.offset_s + self.rate * self.host.now / 1e6

    def real_us(self, local_s: float) -> float:
        """The real (virtual) time at which this client's clock reads ``local_s``."""
        return (local_s - self.offset_s) * 1e6 / self.rate

    def _at_local(self, local_s: float, action: Callable[[], None]) -> None:
        # +1 us so the local clock has surely reached local_s when the action runs.
        self.host.at(math.ceil(self.real_us(local_s)) + 1, action)

    def _after_local(self, delay_s: float, action: Callable[[], None]) -> None:
        self._at_local(self.local() + delay_s, action)

    def _guard(self, action: Callable[[], None]) -> Callable[[], None]:
        epoch = self.epoch

        def fire() -> None:
            if self.epoch == epoch:
                action()

        return fire

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _set_phase(self, phase: str) -> None:
        self.phase = phase
        self.epoch += 1
        self.cur_seq = -1

    def _log(self, text: str) -> None:
        self.host.client_log(f"{self.id} {text}")

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._idle(self.params.think_us)

    def _idle(self, span: tuple[int, int]) -> None:
        self._set_phase(_IDLE)
        if self.params.auto:
            delay = self.rng.randint(*span)
            self.host.at(self.host.now + delay, self._guard(self._start_acquire))

    # ------------------------------------------------------------------ scripted use
    @property
    def idle(self) -> bool:
        return self.phase == _IDLE

    @property
    def holding(self) -> bool:
        """Holding a grant it has not lost (its belief may still run out by itself)."""
        return self.phase == _HOLDING and not self.lost

    @property
    def down(self) -> bool:
        return self.phase == _DOWN

    @property
    def acquiring(self) -> bool:
        return self.phase in (_ACQUIRING, _CONFIRMING)

    @property
    def request_id(self) -> str:
        """The request id of the current (or last) acquire's round."""
        return self._acquire.request_id if self._acquire is not None else ""

    @property
    def t_first_send(self) -> float:
        """When the current (or last) acquire's round sent its first attempt (local clock)."""
        return self._acquire.t_first_send if self._acquire is not None else -math.inf

    @property
    def valid_until(self) -> float:
        """The held (or last held) lease's validity end on this client's clock."""
        return self.timer.valid_until if self.timer is not None else -math.inf

    @property
    def keepalive(self) -> bool:
        """The held lease is being renewed (no ``hang()``)."""
        return self._keepalive is not None and self._keepalive.renewing

    def acquire(self, name: str, ttl_ms: int | None = None, wait_us: int = 0) -> None:
        """Start one acquire now (an idle client only); ``wait_us`` > 0 waits in the queue."""
        if self.phase != _IDLE:
            raise RuntimeError(f"{self.id} is {self.phase}, not idle")
        self._start_acquire(name, ttl_ms, wait_us)

    def release(self) -> None:
        self._release()

    def hang(self) -> None:
        """stop_keepalive(): no more renewals; the lease runs out."""
        self._hang()

    def crash(self) -> None:
        """The client process dies: its belief ends with it; it restarts later, fresh."""
        if self.phase == _DOWN:
            return
        self._end_belief("crash")
        if self.phase in (_ACQUIRING, _CONFIRMING):
            self.abandoned[self.request_id] = "crashed while acquiring"
        self.crashes += 1
        self._set_phase(_DOWN)
        self._log("CRASH")
        self.host.client_gone(self.id)  # its connections close: the servers cancel its calls
        down = self.rng.randint(*self.params.crash_down_us)
        self.host.at(self.host.now + down, self._guard(self._restart))

    def _restart(self) -> None:
        self.router = Router(self.node_ids, first=self.rng.randrange(self.n_nodes))
        self._log("RESTART")
        self._idle((0, 1))

    # ------------------------------------------------------------------ driving the machines
    def _poll(self) -> None:
        """A Sleep of the phase's machine is over: ask it what now."""
        now = self.local()
        if self.phase in (_ACQUIRING, _CONFIRMING):
            assert self._acquire is not None
            self._do(self._acquire.poll(now))
        elif self.phase == _RELEASING:
            assert self._call is not None
            self._do(self._call.poll(now))
        elif self.phase == _HOLDING and not self.lost:
            assert self._keepalive is not None
            self._do(self._keepalive.poll(now))

    def _do(self, action: Action[LeaseRecord]) -> None:
        """Carry out what the phase's machine asked for."""
        if isinstance(action, Sleep):
            self._at_local(action.until, self._guard(self._poll))
        elif isinstance(action, Send):
            self._send(action)
        elif isinstance(action, Acquired):
            self._hold(action.grant, action.timer)
        elif isinstance(action, Held):
            self.abandoned[self.request_id] = "answered held"
            self._idle(self.params.held_retry_us)
        elif isinstance(action, Failed):
            self._failed(action.error)
        elif isinstance(action, Lost):
            # Lost at lost_at: the checkers keep the belief until valid_until (a late
            # keepalive thread reaches it; docs/fault-matrix.md). NOT_FOUND ends it at once.
            self._lose(action.reason, cut=not action.timed_out)
        # Stopped: the lease was lost already; nothing to do.

    def _send(self, action: Send) -> None:
        seq = self._next_seq()
        self.cur_seq = seq
        target = NodeId(action.target)
        timeout_us = max(1, int(action.timeout * 1e6))  # the call's deadline (gRPC's)
        if isinstance(action, SendAcquire):
            self._set_phase_keep(_ACQUIRING)
            cmd = Acquire(self.name, self.id, self.ttl_ms, action.wait_ms > 0, action.request_id)
            req: ClientRequest = AcquireReq(self.id, target, seq, cmd, action.wait_ms, timeout_us)
        elif isinstance(action, SendRenew):
            if self.phase == _ACQUIRING:
                self._set_phase_keep(_CONFIRMING)
            req = RenewReq(self.id, target, seq, action.lease_id)
        else:
            assert self.lease is not None
            req = ReleaseReq(self.id, target, seq, self.lease.lease_id, timeout_us)
        self.host.client_send(req)

        def timeout() -> None:
            if self.cur_seq == seq:
                self.cur_seq = -1
                self._status = "timeout"
                self._feed_failure(_NO_ANSWER)

        self._after_local(action.timeout, self._guard(timeout))

    def _set_phase_keep(self, phase: str) -> None:
        """Acquiring <-> confirming: the same acquire goes on (no timers to invalidate)."""
        self.phase = phase

    def _feed_failure(self, failure: Failure) -> None:
        now = self.local()
        if self.phase in (_ACQUIRING, _CONFIRMING):
            assert self._acquire is not None
            if self.phase == _CONFIRMING and failure.not_found:
                self.abandoned[self.request_id] = "expired before use"
            self._do(self._acquire.on_failure(now, failure))
        elif self.phase == _RELEASING:
            assert self._call is not None
            self._do(self._call.on_failure(now, failure))
        elif self.phase == _HOLDING and not self.lost:
            assert self._keepalive is not None
            self._do(self._keepalive.on_failure(now, failure))

    def _failed(self, error: Exception) -> None:
        """The acquire (or the release) is over without a grant."""
        if self.phase == _RELEASING:
            if isinstance(error, ClusterUnavailable):
                self._log(f"release of {self.name} gave up")
            self._idle(self.params.think_us)
            return
        if isinstance(error, ClusterUnavailable):
            self.gave_up += 1
            self.abandoned[self.request_id] = "gave up (client timeout)"
            self._log(f"acquire {self.name} gave up ({self.request_id})")
        elif isinstance(error, LeaseLost):
            self._log(f"grant of {self.request_id} expired before use (LeaseLost)")
        else:
            self.abandoned[self.request_id] = f"answered {self._status}"
            self._log(f"acquire {self.name} ({self.request_id}): {self._status}")
        self._idle(self.params.think_us)

    # ------------------------------------------------------------------ acquire
    def _start_acquire(
        self, name: str | None = None, ttl_ms: int | None = None, wait_us: int | None = None
    ) -> None:
        p = self.params
        if wait_us is None:
            wait_us = self.rng.randint(*p.wait_us) if self.rng.random() < p.p_wait else 0
        self.name = self.rng.choice(p.names) if name is None else name
        self.ttl_ms = self.rng.randint(*p.ttl_ms) if ttl_ms is None else ttl_ms
        self._set_phase(_ACQUIRING)
        now = self.local()
        self._acquire = AcquireMachine(
            self.name,
            ttl_ms=self.ttl_ms,
            wait=wait_us / 1e6,
            timeout=p.acquire_timeout_us / 1e6,
            now=now,
            router=self.router,
            max_drift=self.rho,
            new_request_id=self._new_request_id,
            round_size=self.n_nodes,
            attempt_cap_s=p.attempt_us / 1e6,
            rng=self.rng,
            make_timer=lambda ttl: _SimTimer(self, ttl),
        )
        self._do(self._acquire.poll(now))
        if p.auto and wait_us > 0 and self.rng.random() < p.p_crash_waiting:
            # The process dies while it waits in the queue (its connections close).
            self._after_local(self.rng.uniform(0.0, wait_us / 1e6), self._guard(self.crash))

    def _new_request_id(self) -> str:
        """One per round of an acquire (the real client: ``uuid4().hex``)."""
        self.acquires += 1
        if self.acquires > 1 and self.phase == _CONFIRMING:
            self._log(f"grant for {self.request_id} expired before use; queues again")
        return f"{self.id}-{self.acquires}"

    # ------------------------------------------------------------------ replies
    def on_reply(self, rep: ClientReply) -> None:
        if self.phase == _DOWN or rep.seq != self.cur_seq:
            return  # the answer to an attempt we already gave up on (a cancelled call)
        self.cur_seq = -1
        self._status = rep.status
        if rep.status == UNAVAILABLE:  # not the leader, no leader lease, or refused
            self._feed_failure(Failure(f"UNAVAILABLE from {rep.src}", rep.hint))
        elif self.phase == _ACQUIRING:
            self._on_acquire_answer(rep)
        elif self.phase == _CONFIRMING:
            self._on_confirm_answer(rep)
        elif self.phase == _RELEASING:
            self._on_release_answer(rep)
        elif self.phase == _HOLDING:
            self._on_renew_answer(rep)

    def _on_acquire_answer(self, rep: ClientReply) -> None:
        assert self._acquire is not None
        now = self.local()
        lease = rep.lease
        if rep.status == OK and lease is not None:
            self._do(
                self._acquire.on_granted(
                    now, lease, lease_id=lease.lease_id, ttl=lease.ttl_ms / 1000.0
                )
            )
        elif rep.status == HELD:
            self._do(self._acquire.on_held(now, None))
        else:
            self._feed_failure(_status_failure(rep.status))

    def _on_confirm_answer(self, rep: ClientReply) -> None:
        assert self._acquire is not None
        if rep.status == OK:
            self._do(self._acquire.on_renewed(self.local(), rep.ttl_ms / 1000.0))
        else:
            self._feed_failure(_status_failure(rep.status))

    def _on_release_answer(self, rep: ClientReply) -> None:
        assert self._call is not None
        if rep.status == OK:
            self._call.answered()
            self._idle(self.params.think_us)
        else:
            self._feed_failure(_status_failure(rep.status))

    def _on_renew_answer(self, rep: ClientReply) -> None:
        if self.lost or self.lease is None or self._keepalive is None:
            return
        if rep.status == OK:
            answer = RenewAnswer("RENEWED", ttl=rep.ttl_ms / 1000.0)
        elif rep.status == NOT_FOUND:
            answer = RenewAnswer("NOT_FOUND", message=f"lease {self.lease.lease_id} is not held")
        else:
            self._feed_failure(_status_failure(rep.status))
            return
        action = self._keepalive.on_answer(self.local(), answer)
        if rep.status == OK and not isinstance(action, Lost | Stopped):
            self.renewals += 1
            self.host.lease_checks.on_belief_extend(
                self.id, self.lease.lease_id, self.real_us(self.valid_until)
            )
        self._do(action)

    # ------------------------------------------------------------------ validity arithmetic
    def _effective_s(self, ttl_s: float) -> float:
        return effective_ttl(ttl_s, self.rho)

    def _valid_until_after(self, t_send: float, ttl_s: float) -> float:
        """``LeaseTimer.extension``: the real client's rule, unless a bug is planted."""
        bug = self.params.bug
        if bug == "ack-time":
            return self.local() + ttl_s
        if bug == "no-margin":
            return t_send + ttl_s
        return t_send + self._effective_s(ttl_s)

    def is_valid(self) -> bool:
        return self.phase == _HOLDING and not self.lost and self.local() < self.valid_until

    # ------------------------------------------------------------------ holding
    def _hold(self, lease: LeaseRecord, timer: LeaseTimer) -> None:
        p = self.params
        self._set_phase(_HOLDING)
        self.lease = lease
        self.timer = timer
        self.grants += 1
        self.lost = False
        self._keepalive = KeepaliveMachine(
            f"renew lease {lease.name!r}",
            lease.lease_id,
            timer,
            self.router,
            round_size=self.n_nodes,
            rng=self.rng,
        )
        end_us = self.real_us(self.valid_until)
        checks = self.host.lease_checks
        self._log(
            f"GRANTED {lease.name} token={lease.fencing_token} ({self.request_id}) believes "
            f"until {end_us / 1000:.3f}ms"
        )
        if end_us <= self.host.now:  # the grant ran out before we heard of it
            checks.on_empty_belief(self.id, lease.name, lease.lease_id)
            self.lost = True
            timer.mark_lost()
            self._idle(p.think_us)
            return
        checks.on_belief_start(self.id, lease.name, lease.lease_id, lease.fencing_token, end_us)
        self._do(self._keepalive.poll(self.local()))
        self._schedule_write()
        if not p.auto:
            return
        # What this holder will do after a while.
        hold_s = self.rng.randint(*p.hold_us) / 1e6 / self.rate
        r = self.rng.random()
        if r < p.p_release:
            action = self._release
        elif r < p.p_release + p.p_hang:
            action = self._hang
        elif r < p.p_release + p.p_hang + p.p_crash:
            action = self.crash
        else:
            action = self._release
            hold_s *= 2
        self._after_local(hold_s, self._guard(action))

    def _end_belief(self, why: str, cut: bool = True) -> None:
        if self.phase == _HOLDING and not self.lost and self.lease is not None:
            self.lost = True
            if self.timer is not None:
                self.timer.mark_lost()  # final: a late renewal cannot revive it
            self.host.lease_checks.on_belief_end(self.id, self.lease.lease_id, cut)
            self._log(f"belief in {self.lease.name} token={self.lease.fencing_token} ends: {why}")

    def _lose(self, why: str, cut: bool = True) -> None:
        self.lost_count += 1
        self._end_belief(f"LOST ({why})", cut)
        self._idle(self.params.think_us)

    def _release(self) -> None:
        """release(): the real client's Release call (``_call``: the client timeout, each
        attempt at most ``attempt_us``); NOT_FOUND counts as released."""
        if self.phase != _HOLDING or self.lost:
            return
        self._end_belief("release")  # is_valid() is false from the call on
        self.releases += 1
        self._set_phase(_RELEASING)
        p = self.params
        now = self.local()
        self._call = CallMachine(
            "release",
            now,
            p.acquire_timeout_us / 1e6,
            self.router,
            round_size=self.n_nodes,
            cap=p.attempt_us / 1e6,
            rng=self.rng,
        )
        self._do(self._call.poll(now))

    def _hang(self) -> None:
        """stop_keepalive(): the lease runs out on its own; writes go on while valid."""
        if self.phase == _HOLDING and not self.lost and self._keepalive is not None:
            self.hangs += 1
            self._keepalive.stop_renewing()
            self._log(f"stops renewing {self.name}")

    # ------------------------------------------------------------------ writes
    def _schedule_write(self) -> None:
        delay = self.rng.randint(*self.params.write_every_us) / 1e6
        self._after_local(delay, self._guard(self._write))

    def _write(self) -> None:
        if not self.is_valid() or self.lease is None:
            return
        p = self.params
        if self.rng.random() < p.p_late_write:  # paused between "check valid" and "write"
            delay = self.rng.randint(*p.late_write_us)
        else:
            delay = self.rng.randint(*p.write_delay_us)
        lease = self.lease
        self.host.resource_write(self.id, lease.name, lease.fencing_token, lease.lease_id, delay)
        self._schedule_write()


def _status_failure(status: str) -> Failure:
    """A reply that is not an answer the call can use, as the real client sees its gRPC
    status: NOT_FOUND (the lease is not known), or a status it does not expect."""
    if status == NOT_FOUND:
        return Failure("NOT_FOUND", exc=LeaseNotFound("lease not found"))
    if status == INVALID:
        return Failure("INVALID_ARGUMENT", exc=InvalidArgument("invalid argument"))
    return Failure(f"server answered {status}", exc=RpcFailed(f"server answered {status}"))
