"""Simulated lease clients and the fenced resource they write to (docs/fault-matrix.md, ME and FT).

A :class:`SimClient` is a deterministic re-statement of the real client's lease protocol
(``raftlease/client/sync.py`` and ``_common.py``) over the simulator's network:

* **Acquire** ``(name, holder, ttl, wait, request_id)``: one ``request_id`` per logical
  acquire, reused on every retry; sent to the node the client believes leads; on "not
  leader" it follows a fresh hint at once (at most twice in a row), else backs off (10 ms
  doubling to 500 ms once per round of endpoints, jittered) and tries the next endpoint; an
  attempt that gets no answer by its deadline counts as a failure (a late answer to a
  timed-out attempt is ignored: the real call was cancelled, and the server cancels its
  handler at that deadline too). The answer comes when the leader APPLIES the entry. Some
  acquires wait in the server's queue (``p_wait``): each attempt asks for what is left of
  the wait and allows ``wait_left + attempt_us``; a grant whose validity is more than half
  used up is renewed once before the client acts on it (sync.py ``_renew_now``; NOT_FOUND
  then starts a new acquire while the wait lasts).
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
  the Release is sent), stop the keepalive (a hung renewer: the lease runs out), crash (the
  belief ends with the process), or keep renewing. Holders write to the fenced resource at
  random times while their belief is valid; some writes arrive late (a holder paused between
  "check valid" and "write", fault matrix row 10).

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
    acquire_timeout_us: int = 2_000_000  # the client timeout (after the wait)
    p_wait: float = 0.3  # an acquire waits in the queue ...
    wait_us: tuple[int, int] = (100_000, 1_500_000)  # ... this long
    p_crash_waiting: float = 0.05  # ... and dies meanwhile
    release_attempts: int = 6
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


class _Router:
    """raftlease.client._common.Router, on node ids."""

    __slots__ = ("ids", "leader", "next")

    def __init__(self, ids: Sequence[NodeId], first: int) -> None:
        self.ids = list(ids)
        self.leader: NodeId | None = None
        self.next = first

    def pick(self) -> NodeId:
        if self.leader is not None:
            return self.leader
        return self.ids[self.next % len(self.ids)]

    def succeeded(self, target: NodeId) -> None:
        self.leader = target

    def failed(self, target: NodeId, hint: NodeId | None) -> NodeId:
        if hint is not None and hint != target:
            self.leader = hint
            return hint
        if self.leader == target or hint == target:
            self.leader = None
        self.next = self.ids.index(target) + 1
        return self.ids[self.next % len(self.ids)]


_IDLE = "idle"
_ACQUIRING = "acquiring"
_CONFIRMING = "confirming"  # renewing a grant that waited long, before acting on it
_HOLDING = "holding"
_RELEASING = "releasing"
_DOWN = "down"

_BACKOFF_START_S = 0.010
_BACKOFF_CAP_S = 0.500


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
        self.router = _Router(node_ids, rng.randrange(len(node_ids)))
        self.n_nodes = len(node_ids)
        self.phase = _IDLE
        self.epoch = 0  # bumped on every phase change: stale timers check it and stop
        self._seq = 0
        # the current Acquire / Release call
        self.cur_seq = -1
        self.cur_target: NodeId = node_ids[0]
        self.failures = 0
        self.hint_follows = 0
        self.attempts = 0
        self.name = ""
        self.request_id = ""
        self.ttl_ms = 0
        self.t_first_send = 0.0
        self.acquire_deadline_us = 0
        self.wait_end = 0.0
        self.acquires = 0
        self.granted: LeaseRecord | None = None  # a grant being confirmed by a renewal
        # the held lease
        self.lease: LeaseRecord | None = None
        self.ttl_s = 0.0
        self.valid_until = -math.inf
        self.last_send = -math.inf
        self.lost = True
        self.keepalive = False
        self.renew_seq = -1
        self.renew_t_send = 0.0
        self.renew_target: NodeId = node_ids[0]
        self.renew_failing = False
        self.renew_failures = 0
        self.renew_hint_follows = 0
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
        self.renew_seq = -1

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
        self.router = _Router(self.router.ids, self.rng.randrange(self.n_nodes))
        self._log("RESTART")
        self._idle((0, 1))

    # ------------------------------------------------------------------ retry policy
    def _backoff_s(self, failures: int) -> float:
        rounds = (failures - 1) // self.n_nodes
        nominal = min(_BACKOFF_CAP_S, _BACKOFF_START_S * (2.0 ** min(rounds, 10)))
        return self.rng.uniform(nominal / 2.0, nominal)

    # ------------------------------------------------------------------ acquire
    def _start_acquire(
        self, name: str | None = None, ttl_ms: int | None = None, wait_us: int | None = None
    ) -> None:
        p = self.params
        if wait_us is None:
            wait_us = self.rng.randint(*p.wait_us) if self.rng.random() < p.p_wait else 0
        self.name = self.rng.choice(p.names) if name is None else name
        self.ttl_ms = self.rng.randint(*p.ttl_ms) if ttl_ms is None else ttl_ms
        now = self.local()
        self.wait_end = now + wait_us / 1e6
        self.acquire_deadline_us = self.host.now + int(wait_us / self.rate) + p.acquire_timeout_us
        self._acquire_once()
        if p.auto and wait_us > 0 and self.rng.random() < p.p_crash_waiting:
            # The process dies while it waits in the queue (its connections close).
            self._after_local(self.rng.uniform(0.0, wait_us / 1e6), self._guard(self.crash))

    def _acquire_once(self) -> None:
        """sync.py ``_acquire_once``: one logical acquire, with one request id."""
        self._set_phase(_ACQUIRING)
        self.acquires += 1
        self.request_id = f"{self.id}-{self.acquires}"
        self.t_first_send = self.local()  # BEFORE the first attempt
        self.failures = 0
        self.hint_follows = 0
        self._send_call()

    def _send_call(self) -> None:
        """(Re)send the current Acquire, Release or confirming Renew attempt."""
        target = self.router.pick()
        seq = self._next_seq()
        self.cur_seq = seq
        self.cur_target = target
        self.attempts += 1
        timeout_s = self.params.attempt_us / 1e6
        if self.phase == _ACQUIRING:
            wait_left = max(0.0, self.wait_end - self.local())
            remaining = (self.acquire_deadline_us - self.host.now) * self.rate / 1e6
            timeout_s = max(0.001, min(remaining, wait_left + timeout_s))
            wait_ms = int(wait_left * 1000)
            cmd = Acquire(self.name, self.id, self.ttl_ms, wait_ms > 0, self.request_id)
            timeout_us = int(timeout_s * 1e6)
            self.host.client_send(AcquireReq(self.id, target, seq, cmd, wait_ms, timeout_us))
        elif self.phase == _CONFIRMING:
            assert self.granted is not None
            self.renew_t_send = self.local()
            self.host.client_send(RenewReq(self.id, target, seq, self.granted.lease_id))
        else:
            assert self.lease is not None
            timeout_us = int(timeout_s * 1e6)
            self.host.client_send(ReleaseReq(self.id, target, seq, self.lease.lease_id, timeout_us))

        def timeout() -> None:
            if self.cur_seq == seq:
                self._call_failed(None)

        self._after_local(timeout_s, self._guard(timeout))

    def _call_failed(self, hint: NodeId | None) -> None:
        target = self.cur_target
        self.router.failed(target, hint)
        self.cur_seq = -1
        if self.phase in (_ACQUIRING, _CONFIRMING) and self.host.now >= self.acquire_deadline_us:
            self.gave_up += 1
            self.abandoned[self.request_id] = "gave up (client timeout)"
            self._log(f"acquire {self.name} gave up ({self.request_id})")
            self._idle(self.params.think_us)
            return
        if self.phase == _RELEASING and self.attempts >= self.params.release_attempts:
            self._log(f"release of {self.name} gave up")
            self._idle(self.params.think_us)
            return
        if hint is not None and hint != target and self.hint_follows < 2:
            self.hint_follows += 1
            self._send_call()
            return
        self.hint_follows = 0
        self.failures += 1
        self._after_local(self._backoff_s(self.failures), self._guard(self._send_call))

    # ------------------------------------------------------------------ replies
    def on_reply(self, rep: ClientReply) -> None:
        if self.phase == _DOWN:
            return
        if rep.seq == self.cur_seq:
            self.cur_seq = -1
            if rep.status == UNAVAILABLE:
                self._call_failed(rep.hint)
                return
            self.router.succeeded(rep.src)
            if self.phase == _ACQUIRING:
                self._on_acquire_answer(rep)
            elif self.phase == _CONFIRMING:
                self._on_confirm_answer(rep)
            elif self.phase == _RELEASING:
                self._idle(self.params.think_us)
        elif rep.seq == self.renew_seq:
            self.renew_seq = -1
            self._on_renew_answer(rep)
        # else: the answer to an attempt we already gave up on (a cancelled call)

    def _on_acquire_answer(self, rep: ClientReply) -> None:
        if rep.status == OK and rep.lease is not None:
            lease = rep.lease
            ttl_s = lease.ttl_ms / 1000.0
            valid_until = self._valid_until_after(self.t_first_send, ttl_s)
            if valid_until - self.local() < ttl_s / 2.0:
                # Waited long in the queue: renew once before acting on it.
                self._set_phase(_CONFIRMING)
                self.granted = lease
                self.failures = 0
                self.hint_follows = 0
                self._send_call()
                return
            self._hold(lease, valid_until, self.t_first_send)
        elif rep.status == HELD:
            self.abandoned[self.request_id] = "answered held"
            self._idle(self.params.held_retry_us)
        else:
            self.abandoned[self.request_id] = f"answered {rep.status}"
            self._log(f"acquire {self.name} ({self.request_id}): {rep.status}")
            self._idle(self.params.think_us)

    def _on_confirm_answer(self, rep: ClientReply) -> None:
        lease = self.granted
        assert lease is not None
        if rep.status == OK:
            ttl_s = (rep.ttl_ms or lease.ttl_ms) / 1000.0
            valid_until = max(
                self._valid_until_after(self.t_first_send, ttl_s),
                self._valid_until_after(self.renew_t_send, ttl_s),
            )
            self._hold(lease, valid_until, self.renew_t_send)
        elif self.local() < self.wait_end:  # NOT_FOUND: it expired before it was ours
            self.abandoned[self.request_id] = "expired before use"
            self._log(f"grant {lease.fencing_token} expired before use; queues again")
            self._acquire_once()
        else:
            self.abandoned[self.request_id] = "expired before use"
            self._log(f"grant {lease.fencing_token} expired before use (LeaseLost)")
            self._idle(self.params.think_us)

    # ------------------------------------------------------------------ validity arithmetic
    def _effective_s(self, ttl_s: float) -> float:
        return ttl_s * (1.0 - self.rho) / (1.0 + self.rho)

    def _valid_until_after(self, t_send: float, ttl_s: float) -> float:
        bug = self.params.bug
        if bug == "ack-time":
            return self.local() + ttl_s
        if bug == "no-margin":
            return t_send + ttl_s
        return t_send + self._effective_s(ttl_s)

    def _lost_at(self) -> float:
        return self.valid_until - min(0.05 * self.ttl_s, 0.25)

    def is_valid(self) -> bool:
        return self.phase == _HOLDING and not self.lost and self.local() < self.valid_until

    # ------------------------------------------------------------------ holding
    def _hold(self, lease: LeaseRecord, valid_until: float, last_send: float) -> None:
        p = self.params
        self._set_phase(_HOLDING)
        self.lease = lease
        self.granted = None
        self.grants += 1
        self.ttl_s = lease.ttl_ms / 1000.0
        self.valid_until = valid_until
        self.last_send = last_send
        self.lost = False
        self.keepalive = True
        self.renew_failing = False
        self.renew_failures = 0
        self.renew_hint_follows = 0
        end_us = self.real_us(self.valid_until)
        checks = self.host.lease_checks
        self._log(
            f"GRANTED {lease.name} token={lease.fencing_token} ({self.request_id}) believes "
            f"until {end_us / 1000:.3f}ms"
        )
        if end_us <= self.host.now:  # the grant ran out before we heard of it
            checks.on_empty_belief(self.id, lease.name, lease.lease_id)
            self.lost = True
            self._idle(p.think_us)
            return
        checks.on_belief_start(self.id, lease.name, lease.lease_id, lease.fencing_token, end_us)
        self._schedule_renew()
        self._schedule_lost_check()
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
            self.host.lease_checks.on_belief_end(self.id, self.lease.lease_id, cut)
            self._log(f"belief in {self.lease.name} token={self.lease.fencing_token} ends: {why}")

    def _lose(self, why: str, cut: bool = True) -> None:
        self.lost_count += 1
        self._end_belief(f"LOST ({why})", cut)
        self._idle(self.params.think_us)

    def _release(self) -> None:
        if self.phase != _HOLDING or self.lost:
            return
        self._end_belief("release")  # is_valid() is false from the call on
        self.releases += 1
        self._set_phase(_RELEASING)
        self.attempts = 0
        self.failures = 0
        self.hint_follows = 0
        self._send_call()

    def _hang(self) -> None:
        """stop_keepalive(): the lease runs out on its own; writes go on while valid."""
        if self.phase == _HOLDING and not self.lost:
            self.hangs += 1
            self.keepalive = False
            self._log(f"stops renewing {self.name}")

    def _schedule_lost_check(self) -> None:
        def check() -> None:
            if self.phase == _HOLDING and not self.lost and self.local() >= self._lost_at():
                why = "no renewal succeeded" if self.keepalive else "keepalive stopped"
                # The checkers keep the belief until valid_until (docs/fault-matrix.md).
                self._lose(why, cut=False)

        self._at_local(self._lost_at(), self._guard(check))

    def _schedule_renew(self) -> None:
        self._at_local(self.last_send + self.ttl_s / 3.0, self._guard(self._renew))

    def _renew(self) -> None:
        if self.phase != _HOLDING or self.lost or not self.keepalive or self.renew_seq != -1:
            return
        now = self.local()
        if not self.renew_failing and now < self.last_send + self.ttl_s / 3.0:
            self._schedule_renew()
            return
        lost_at = self._lost_at()
        budget = min(max(0.2, min(1.0, self.ttl_s / 6.0)), lost_at - now)
        if budget <= 0:
            return  # the lost check fires now
        assert self.lease is not None
        target = self.router.pick()
        seq = self._next_seq()
        self.renew_seq = seq
        self.renew_t_send = now  # BEFORE the request: validity counts from here
        self.renew_target = target
        self.host.client_send(RenewReq(self.id, target, seq, self.lease.lease_id))

        def timeout() -> None:
            if self.renew_seq == seq:
                self.renew_seq = -1
                self._renew_failed(None)

        self._after_local(budget, self._guard(timeout))

    def _renew_failed(self, hint: NodeId | None) -> None:
        target = self.renew_target
        self.router.failed(target, hint)
        self.renew_failing = True
        if hint is not None and hint != target and self.renew_hint_follows < 2:
            self.renew_hint_follows += 1
            self._renew()
            return
        self.renew_hint_follows = 0
        self.renew_failures += 1
        delay = min(self._backoff_s(self.renew_failures), self._lost_at() - self.local())
        self._after_local(max(0.0, delay), self._guard(self._renew))

    def _on_renew_answer(self, rep: ClientReply) -> None:
        if self.phase != _HOLDING or self.lost or self.lease is None:
            return
        if rep.status == UNAVAILABLE:
            self._renew_failed(rep.hint)
            return
        if rep.status == NOT_FOUND:
            self._lose("the server no longer knows the lease")
            return
        self.router.succeeded(rep.src)
        if rep.ttl_ms > 0:
            self.ttl_s = rep.ttl_ms / 1000.0
        self.renewals += 1
        self.valid_until = max(
            self.valid_until, self._valid_until_after(self.renew_t_send, self.ttl_s)
        )
        self.last_send = max(self.last_send, self.renew_t_send)
        self.renew_failing = False
        self.renew_failures = 0
        self.renew_hint_follows = 0
        self.host.lease_checks.on_belief_extend(
            self.id, self.lease.lease_id, self.real_us(self.valid_until)
        )
        self._schedule_renew()
        self._schedule_lost_check()

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
