"""Seed sweep: many random fault schedules over SimCluster, each checked after every event.

    python -m raftlease.testing.sweep --seeds 300            # seeds 0..299
    python -m raftlease.testing.sweep --seeds 100 --start 5000
    python -m raftlease.testing.sweep --seed 17 --verbose    # replay one seed with a transcript

Each seed picks a fault mix (cluster size, batching limits, which faults, how often), runs a
few simulated seconds of proposals, compactions and faults (partitions of named shapes,
one-way cuts, crashes of one node / the leader / a majority / everyone, crashes at Ready-loop
failpoints, SIGSTOP-like pauses, lossy, duplicating and slow links, leadership transfers, clocks
at the edges of the drift bound), then heals everything and checks liveness.

The lease workload is on: 2-4 simulated clients (clients.py) acquire (some waiting in the
queue), renew, release, hang and crash over lossy client links that faults also cut, and
write to a fenced resource; the lease checkers (mutual exclusion, fencing) run with the Raft
ones after every event, and after the heal every lease nobody renews must expire in time.
``--no-leases`` turns the clients off. The ``leases:`` line before the last one sums what
the workload did, and counts two server faults that break no safety rule (INTERNAL answers
to retried queued acquires, and "ghost" handovers to waiters whose client went away: see
tests/sim/test_server_bugs.py).

The last line reads ``N seeds passed, M failed`` with the rate and the longest post-heal
election. Exit status 1 if any seed failed; each failure prints its violation and a replay
command.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import random
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raftlease.config import RaftConfig
from raftlease.core.raft import RaftCore
from raftlease.testing.checkers import LeaseStats, SafetyViolation
from raftlease.testing.clients import ClientParams
from raftlease.testing.network import LinkParams
from raftlease.testing.sim import PARTITION_SHAPES, CoreFactory, LivenessResult, SimCluster
from raftlease.types import NodeId

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence
    from types import FrameType

__all__ = [
    "CLIENT_CUTS",
    "SWEEP_SHAPES",
    "FaultMix",
    "SeedResult",
    "main",
    "random_mix",
    "run_seed",
    "schedule_faults",
    "watchdog",
]

MS = 1_000
_DEFAULT_DRIFT = RaftConfig(node_id=NodeId("n1"), voters=(NodeId("n1"),)).max_drift
# Partition shapes of the sweep: the sim's named shapes, plus an isolated leader that keeps
# some clients on its side (they reach only it).
SWEEP_SHAPES = (*PARTITION_SHAPES, "isolate-leader-clients")
# How a client <-> node cut is shaped: the client reaches only the leader, reaches everyone
# but the leader, reaches nobody, or misses a random subset of the nodes.
CLIENT_CUTS = ("leader-only", "not-leader", "all", "some")
_TIMINGS: tuple[dict[str, Any], ...] = (
    {"election_ticks_min": 7, "election_ticks_max": 10, "heartbeat_ticks": 2},  # tightest
    {"election_ticks_min": 15, "election_ticks_max": 30, "heartbeat_ticks": 3},
    {"election_ticks_min": 10, "election_ticks_max": 12, "heartbeat_ticks": 1},  # split votes
    {"max_drift": 0.05},
)


@dataclass(frozen=True, slots=True)
class FaultMix:
    """What one seed does. Weights pick the next fault; 0 disables a kind.

    ``gap_us`` is the (min, max) pause between fault injections; ``shapes`` the partition
    shapes allowed; ``crash_down_us`` how long a crashed node stays down. ``clients`` is the
    lease workload (None, the default here: no clients; :func:`random_mix`, i.e. the sweep,
    always has one); ``w_client`` weighs cuts of client <-> node links (``client_cuts``
    shapes), which ``partition_us`` also times.
    """

    n: int = 3
    duration_us: int = 2_500 * MS
    config: dict[str, Any] = field(default_factory=dict)
    link: LinkParams = field(default_factory=LinkParams)
    gap_us: tuple[int, int] = (50 * MS, 400 * MS)
    w_partition: float = 1.0
    w_crash: float = 1.0
    w_flaky: float = 1.0
    w_transfer: float = 0.3
    w_pause: float = 0.0
    shapes: tuple[str, ...] = SWEEP_SHAPES
    partition_us: tuple[int, int] = (50 * MS, 1_200 * MS)
    crash_down_us: tuple[int, int] = (0, 400 * MS)
    crash_targets: tuple[str, ...] = ("one", "leader", "majority", "all")
    pause_us: tuple[int, int] = (20 * MS, 1_000 * MS)
    flaky_us: tuple[int, int] = (100 * MS, 1_000 * MS)
    flaky_drop: tuple[float, float] = (0.05, 0.4)
    flaky_dup: tuple[float, float] = (0.0, 0.2)
    flaky_delay_max_us: tuple[int, int] = (3 * MS, 60 * MS)
    propose_every_us: tuple[int, int] | None = (5 * MS, 40 * MS)
    compact_every_us: tuple[int, int] | None = (100 * MS, 600 * MS)
    rates: tuple[float, ...] | None = None
    failpoints: dict[str, float] = field(default_factory=dict)
    failpoint_down_us: tuple[int, int] = (0, 200 * MS)
    clients: ClientParams | None = None
    client_link: LinkParams | None = None
    w_client: float = 0.5
    client_cuts: tuple[str, ...] = CLIENT_CUTS

    def describe(self) -> str:
        kinds = [
            name
            for name, w in (
                ("partition", self.w_partition),
                ("crash", self.w_crash),
                ("flaky", self.w_flaky),
                ("transfer", self.w_transfer),
                ("pause", self.w_pause),
                ("client-cut", self.w_client if self.clients is not None else 0.0),
            )
            if w > 0
        ]
        if self.failpoints:
            kinds.append("failpoints")
        cfg = ",".join(f"{k}={v}" for k, v in sorted(self.config.items()))
        c = self.clients
        leases = "clients=0"
        if c is not None:
            leases = f"clients={c.count} names={len(c.names)}"
            if c.rates is not None:
                leases += f" client-rates={[round(r, 4) for r in c.rates]}"
            if c.bug is not None:
                leases += f" client-bug={c.bug}"
        return (
            f"n={self.n} {self.duration_us // MS}ms faults={'+'.join(kinds) or 'none'} "
            f"link={self.link.delay_min_us}-{self.link.delay_max_us}us {leases} {cfg}"
        ).strip()


def random_mix(rng: random.Random) -> FaultMix:
    """A random fault mix, as the sweep uses (every choice from ``rng``)."""
    n = rng.choice((3, 3, 5, 5, 5))
    config: dict[str, Any] = {}
    if rng.random() < 0.4:
        config["max_entries_per_append"] = rng.choice((1, 2, 4))
    if rng.random() < 0.3:
        config["max_inflight"] = rng.choice((1, 2, 8))
    if rng.random() < 0.3:  # timing other than the defaults (10..20 ticks, heartbeat 2, 1 %)
        config.update(rng.choice(_TIMINGS))
    slow = rng.random() < 0.25
    link = LinkParams(
        delay_min_us=rng.choice((100, 500, 1_000)),
        delay_max_us=rng.choice((5_000, 15_000)) if slow else rng.choice((1_000, 3_000)),
    )

    def w() -> float:
        return rng.choice((0.0, 0.5, 1.0, 2.0))

    weights = [w(), w(), w(), rng.choice((0.0, 0.2, 0.5))]
    if not any(weights[:3]):
        weights[rng.randrange(3)] = 1.0
    failpoints: dict[str, float] = {}
    if rng.random() < 0.3:  # crashes inside the Ready loop (TESTING.md row 3)
        failpoints = {
            "leader:before-send": rng.choice((0.002, 0.01)),
            "new-leader:before-send": rng.choice((0.1, 0.3)),
            "commit:before-send": rng.choice((0.01, 0.05)),
            "after-send": rng.choice((0.0, 0.001)),
            "after-apply": rng.choice((0.0, 0.001)),
        }
        # A leader that replicated before its own fsync dies before that fsync. Tied to an
        # earlier choice instead of a new draw, so every seed replays as in earlier versions.
        failpoints["leader:before-save"] = 5 * failpoints["leader:before-send"]
    w_pause = rng.choice((0.0, 0.0, 0.5, 1.0))  # SIGSTOP / SIGCONT (TESTING.md row 9)
    rates = None
    drift = float(config.get("max_drift", _DEFAULT_DRIFT))
    if rng.random() < 0.3:  # every clock at an edge of the drift bound
        rates = tuple(1.0 + rng.choice((-drift, drift)) for _ in range(n))
    # The lease workload (drawn last, so the choices above are those of earlier versions).
    count = rng.randint(2, 4)
    client_rates = None
    if rng.random() < 0.3:  # client clocks at the edges of the drift bound too
        client_rates = tuple(1.0 + rng.choice((-drift, drift)) for _ in range(count))
    clients = ClientParams(
        count=count,
        names=rng.choice((("lock-a",), ("lock-a", "lock-b"))),
        rates=client_rates,
        p_late_write=rng.choice((0.0, 0.05, 0.2)),
    )
    return FaultMix(
        n=n,
        duration_us=rng.randint(2_000, 5_000) * MS,
        config=config,
        link=link,
        gap_us=(rng.choice((20, 50, 100)) * MS, rng.choice((200, 400, 800)) * MS),
        w_partition=weights[0],
        w_crash=weights[1],
        w_flaky=weights[2],
        w_transfer=weights[3],
        w_pause=w_pause,
        compact_every_us=rng.choice((None, (50 * MS, 300 * MS), (200 * MS, 800 * MS))),
        failpoints=failpoints,
        rates=rates,
        clients=clients,
        w_client=rng.choice((0.0, 0.3, 0.7)),
    )


def schedule_faults(
    sim: SimCluster, mix: FaultMix, rng: random.Random, log: Callable[[str], None]
) -> None:
    """Put the mix's faults on the sim's event heap, up to ``mix.duration_us``."""
    kinds = ["partition", "crash", "flaky", "transfer", "pause", "client-cut"]
    w_client = mix.w_client if sim.clients else 0.0
    weights = [mix.w_partition, mix.w_crash, mix.w_flaky, mix.w_transfer, mix.w_pause, w_client]
    if not any(weights):
        return
    state = {"partition_epoch": 0, "flaky_epoch": 0, "client_epoch": 0}

    def end_client_cut(epoch: int) -> Callable[[], None]:
        def fire() -> None:
            if state["client_epoch"] == epoch:
                sim.heal_clients()

        return fire

    def end_partition(epoch: int) -> Callable[[], None]:
        def fire() -> None:
            if state["partition_epoch"] == epoch:
                sim.heal()

        return fire

    def end_flaky(epoch: int) -> Callable[[], None]:
        def fire() -> None:
            if state["flaky_epoch"] == epoch:
                sim.reset_links()
                sim.reset_client_links()

        return fire

    def inject() -> None:
        kind = rng.choices(kinds, weights)[0]
        if kind == "partition":
            sim.heal()
            state["partition_epoch"] += 1
            what = sim.partition(rng.choice(mix.shapes), rng)
            sim.after(rng.randint(*mix.partition_us), end_partition(state["partition_epoch"]))
            log(f"fault: partition {what}")
        elif kind == "crash":
            target = rng.choice(mix.crash_targets)
            up = [node.id for node in sim.nodes if node.up]
            if not up:
                return
            lead = sim.leader()
            if target == "leader" and lead is not None:
                victims = [lead.id]
            elif target == "majority":
                victims = rng.sample(list(sim.ids), len(sim.ids) // 2 + 1)
            elif target == "all":
                victims = list(sim.ids)
            else:
                victims = [rng.choice(up)]
            for v in victims:
                sim.crash_for(v, rng.randint(*mix.crash_down_us))
            log(f"fault: crash {target} {victims}")
        elif kind == "flaky":
            params = LinkParams(
                drop=rng.uniform(*mix.flaky_drop),
                dup=rng.uniform(*mix.flaky_dup),
                delay_min_us=mix.link.delay_min_us,
                delay_max_us=max(mix.link.delay_max_us, rng.randint(*mix.flaky_delay_max_us)),
            )
            pairs = [(a, b) for a in sim.ids for b in sim.ids if a != b]
            links = None if rng.random() < 0.5 else rng.sample(pairs, rng.randint(1, len(pairs)))
            sim.reset_links()
            sim.reset_client_links()
            sim.set_links(params, links)
            if sim.clients and rng.random() < 0.5:
                sim.set_client_links(params)
            state["flaky_epoch"] += 1
            sim.after(rng.randint(*mix.flaky_us), end_flaky(state["flaky_epoch"]))
            log(f"fault: flaky {'all' if links is None else len(links)} links {params}")
        elif kind == "pause":
            lead = sim.leader()
            up = [node.id for node in sim.nodes if node.up]
            if not up:
                return
            victim = lead.id if lead is not None and rng.random() < 0.7 else rng.choice(up)
            sim.pause(victim, rng.randint(*mix.pause_us))
            log(f"fault: pause {victim}")
        elif kind == "client-cut":
            sim.heal_clients()
            state["client_epoch"] += 1
            client = rng.choice(sim.clients).id
            shape = rng.choice(mix.client_cuts)
            lead = sim.leader()
            ids = list(sim.ids)
            if shape == "leader-only" and lead is not None:
                cut = [x for x in ids if x != lead.id]
            elif shape == "not-leader" and lead is not None:
                cut = [lead.id]
            elif shape == "some":
                cut = rng.sample(ids, rng.randint(1, len(ids) - 1))
            else:
                cut = ids
            sim.cut_client(client, cut)
            sim.after(rng.randint(*mix.partition_us), end_client_cut(state["client_epoch"]))
            log(f"fault: client-cut {shape} {client} from {cut}")
        else:
            to = sim.transfer_leadership()
            log(f"fault: transfer leadership to {to}")

    t = 0
    while True:
        t += rng.randint(*mix.gap_us)
        if t >= mix.duration_us:
            break
        sim.at(t, inject)


@dataclass(slots=True)
class SeedResult:
    seed: int
    mix: FaultMix
    violation: SafetyViolation | None = None
    liveness: LivenessResult | None = None
    events: int = 0
    proposed: int = 0
    applied: int = 0
    leases: LeaseStats = field(default_factory=LeaseStats)
    me_violations: list[SafetyViolation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.violation is None


def run_seed(
    seed: int,
    *,
    mix: FaultMix | None = None,
    core_factory: CoreFactory = RaftCore,
    trace: Callable[[str], None] | None = None,
    liveness: bool = True,
    watchdog_s: float | None = 10.0,
    sim_class: type[SimCluster] = SimCluster,
    leases: bool = True,
    check_after_end: bool = True,
    enforce_me: bool = True,
    base_config: Mapping[str, Any] | None = None,
) -> SeedResult:
    """Run one seed's schedule; never raises a SafetyViolation (it is in the result).

    ``sim_class``: a SimCluster subclass (planted server bugs); ``leases=False`` drops the
    mix's clients; ``check_after_end=False`` leaves ME to the overlap rule alone;
    ``enforce_me=False`` only records ME violations (``SeedResult.me_violations``).
    ``base_config``: RaftConfig fields under the mix's own (e.g. the runtime's shipped
    ``heartbeat_ticks``); a timing variant the mix drew still wins.

    ``watchdog_s``: wall-clock seconds after which a seed that stopped making progress (a
    core stuck in a loop) is reported as a ``core-hang`` violation instead of hanging the
    sweep. POSIX main thread only (SIGALRM); ignored elsewhere.
    """
    root = random.Random(seed)
    mix = random_mix(root) if mix is None else mix
    sim_seed = root.getrandbits(64)
    if not leases and mix.clients is not None:
        mix = dataclasses.replace(mix, clients=None)
    if base_config:
        mix = dataclasses.replace(mix, config={**base_config, **mix.config})
    result = SeedResult(seed, mix)
    sim = sim_class(
        mix.n,
        sim_seed,
        config=mix.config,
        core_factory=core_factory,
        rates=mix.rates,
        link=mix.link,
        propose_every_us=mix.propose_every_us,
        compact_every_us=mix.compact_every_us,
        failpoints=mix.failpoints,
        failpoint_down_us=mix.failpoint_down_us,
        clients=mix.clients,
        client_link=mix.client_link,
        trace=trace,
    )
    sim.lease_checks.check_after_end = check_after_end
    sim.lease_checks.enforce_me = enforce_me
    log = trace if trace is not None else _ignore
    log(f"seed {seed}: {mix.describe()}")
    log(f"clock rates: {[round(node.rate, 5) for node in sim.nodes]}")
    if sim.clients:
        log(f"client clock rates: {[round(c.rate, 5) for c in sim.clients]}")
    try:
        with watchdog(sim, watchdog_s):
            schedule_faults(sim, mix, sim.user_rng, sim.note)
            sim.run_until(mix.duration_us)
            if liveness:
                sim.final_heal()
                result.liveness = sim.check_liveness()
                sim.check_lease_expiry()
    except SafetyViolation as v:
        result.violation = v
    result.events = sim.events
    result.proposed = sim.proposed
    result.applied = sim.checkers.max_applied_index
    result.leases = sim.lease_checks.stats
    result.me_violations = sim.lease_checks.me_violations
    return result


def _ignore(_: str) -> None:
    pass


@contextlib.contextmanager
def watchdog(sim: SimCluster, seconds: float | None) -> Iterator[None]:
    """Turn a core call that never returns into a ``core-hang`` SafetyViolation.

    A wall-clock alarm (SIGALRM) fires after ``seconds``; the handler raises inside whatever
    the sim was running, naming the innermost frames. POSIX main thread only; elsewhere (or
    with ``seconds=None``) this does nothing. An outer timer (pytest-timeout) is restored.
    """
    usable = (
        seconds is not None
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
    )
    if not usable or seconds is None:
        yield
        return

    def fire(signum: int, frame: FrameType | None) -> None:
        where = " <- ".join(
            f"{Path(f.filename).name}:{f.lineno} {f.name}"
            for f in reversed(traceback.extract_stack(frame, limit=4))
        )
        raise SafetyViolation(
            "core-hang",
            f"no progress for {seconds}s of wall time at t={sim.now}us (event {sim.events}); "
            f"stuck in {where}",
        )

    started = time.monotonic()
    old_handler = signal.signal(signal.SIGALRM, fire)
    old_delay, old_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        if old_delay > 0:  # someone else's timer (pytest-timeout): give it back what is left
            left = max(old_delay - (time.monotonic() - started), 0.001)
            signal.setitimer(signal.ITIMER_REAL, left, old_interval)


def _load_core(spec: str) -> CoreFactory:
    module, _, attr = spec.partition(":")
    if not attr:
        raise SystemExit(f"--core wants module:Class, got {spec!r}")
    factory: CoreFactory = getattr(importlib.import_module(module), attr)
    return factory


_SETTABLE = frozenset(
    (
        "election_ticks_min",
        "election_ticks_max",
        "heartbeat_ticks",
        "max_entries_per_append",
        "max_inflight",
    )
)


def _parse_set(spec: str) -> dict[str, Any]:
    """``"heartbeat_ticks=3,election_ticks_min=12"`` -> a dict of RaftConfig overrides."""
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key not in _SETTABLE:
            raise ValueError(
                f"--set: bad item {part!r}: expected K=V with K one of {sorted(_SETTABLE)}"
            )
        try:
            out[key] = int(value)
        except ValueError:
            raise ValueError(f"--set: {key} must be an integer, got {value!r}") from None
    return out


def main(argv: Sequence[str] | None = None, core_factory: CoreFactory | None = None) -> int:
    """The CLI. ``core_factory`` (tests only) overrides ``--core``."""
    ap = argparse.ArgumentParser(
        prog="python -m raftlease.testing.sweep",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--seeds", type=int, default=100, help="how many seeds to run")
    ap.add_argument("--start", type=int, default=0, help="first seed (offset)")
    ap.add_argument("--seed", type=int, default=None, help="run only this seed")
    ap.add_argument("--verbose", action="store_true", help="print an event transcript")
    ap.add_argument(
        "--core",
        default=None,
        help="module:Class of the core to test (default raftlease.core.raft:RaftCore)",
    )
    ap.add_argument(
        "--watchdog", type=float, default=10.0, help="wall seconds before a seed is a hang"
    )
    ap.add_argument("--no-leases", action="store_true", help="no lease clients (Raft checks only)")
    ap.add_argument(
        "--set",
        default="",
        metavar="K=V,...",
        help="RaftConfig overrides under every mix's own, e.g. heartbeat_ticks=3 (integers)",
    )
    args = ap.parse_args(argv)
    try:
        base_config = _parse_set(args.set)
    except ValueError as e:
        ap.error(str(e))
    if core_factory is None:
        core_factory = RaftCore if args.core is None else _load_core(args.core)
    core_opt = f" --core {args.core}" if args.core else ""
    if args.no_leases:
        core_opt += " --no-leases"
    if args.set:
        core_opt += f" --set {args.set}"
    totals = LeaseStats()

    seeds = [args.seed] if args.seed is not None else range(args.start, args.start + args.seeds)
    trace = print if args.verbose else None
    failed: list[SeedResult] = []
    worst: SeedResult | None = None
    started = time.perf_counter()
    count = 0
    total = len(seeds)
    every = max(1, total // 10)
    for seed in seeds:
        res = run_seed(
            seed,
            trace=trace,
            core_factory=core_factory,
            watchdog_s=args.watchdog,
            leases=not args.no_leases,
            base_config=base_config,
        )
        count += 1
        for f in dataclasses.fields(LeaseStats):
            setattr(totals, f.name, getattr(totals, f.name) + getattr(res.leases, f.name))
        if not res.ok:
            failed.append(res)
            print(f"seed {seed} FAILED: {res.violation}", flush=True)
        elif res.liveness is not None and (
            worst is None
            or worst.liveness is None
            or res.liveness.election_us > worst.liveness.election_us
        ):
            worst = res
        if args.verbose or count % every == 0 or count == total:
            rate = count / max(time.perf_counter() - started, 1e-9)
            print(f"  {count}/{total} seeds, {len(failed)} failed, {rate:.1f} seeds/s", flush=True)
    elapsed = max(time.perf_counter() - started, 1e-9)
    for res in failed:
        print(f"seed {res.seed}: {res.violation}")
        print(f"  mix: {res.mix.describe()}")
        print(f"  replay: python -m raftlease.testing.sweep --seed {res.seed} --verbose{core_opt}")
    if not args.no_leases:
        t = totals
        print(
            f"leases: {t.grants} grants ({t.beliefs} acted on, {t.handovers} handovers), "
            f"{t.expiries} expiries, {t.releases} releases, {t.renewals} renewals; fenced "
            f"writes: {t.writes_accepted_valid} accepted, {t.writes_accepted_late} accepted "
            f"late, {t.writes_rejected_late} late ones rejected, {t.writes_rejected_valid} "
            f"rejected from a believing holder; {t.server_errors} INTERNAL answers, "
            f"{t.ghost_handovers} ghost handovers"
        )
    longest = "no post-heal election measured"
    if worst is not None and worst.liveness is not None:
        lv = worst.liveness
        longest = (
            f"longest post-heal election {lv.election_ticks:.1f} ticks = "
            f"{lv.election_us / 1000:.1f} ms (seed {worst.seed}, election_ticks_max "
            f"{lv.election_ticks_max})"
        )
    print(
        f"{count - len(failed)} seeds passed, {len(failed)} failed "
        f"({count / elapsed:.1f} seeds/s; {longest})"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
