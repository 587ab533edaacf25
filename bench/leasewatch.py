"""Leader-lease probe for the benchmarks (installed by bench/_serve.py, bench only).

    RAFTLEASE_BENCH_LEASEWATCH=PATH   write this node's figures to PATH (JSON, when the node
                                      stops)

Monkeypatches a node so that the same measurement runs on any commit (the baseline has no
lapse counter of its own). What it records, on the leader, on the node's own clock:

- ``lapses``: times the leader lease ran out while the node led (the deadline computed by
  ``LeaseService.after_step`` passed before a newer quorum acknowledgement moved it), with
  how long each lasted (an upper bound: until the loop next saw a valid deadline, or lost
  leadership); the same rule as ``raftlease_leader_lease_lapses_total`` where that exists.
- ``send_lag_ms``: from an AppendEntries' send tick (``tick_time(send_tick)``) to the moment
  the node hands it to the transport (leader loop lateness + the leader's own fsync when it
  sends after it).
- ``ack_at_receive_ms``: from that send tick to the moment the answer reaches
  ``Node.receive`` (send lag + link + follower + return link).
- ``ack_at_step_ms``: from that send tick to the moment the core steps the answer (adds the
  leader's inbox wait). The lease lapses when no quorum answer to a message sent in the last
  ``lease_ticks`` is stepped: with heartbeats every 10 ticks and a 14-tick lease, an idle
  leader has ~40 ms for this figure.
- ``ticks_replayed``: how many ticks each catch-up replayed (1 = on time).
- ``turnaround_ms`` (followers): from an AppendEntries reaching ``Node.receive`` to its
  answer being handed to the transport (inbox wait + step + fsync).
- ``loop_lag_ms``: how late a 5 ms ``asyncio.sleep`` on the node's loop wakes (event-loop
  lag: anything that holds the loop), and the wall times of lags above 50 ms.
- ``snapshot_ms``: each ``Node._maybe_snapshot`` that took a snapshot (it runs on the loop).
- ``ack_gaps``: on the leader, silences above 60 ms between two answers stepped from any
  follower (wall time at the end of the gap, ms); ``ae_gaps``: on a follower, silences above
  60 ms between two AppendEntries reaching ``Node.receive``.
- ``gc_ms``: garbage-collector pauses above 5 ms (generation, wall time, ms); at exit,
  ``gc_tracked`` (objects the collector tracks) and ``gc_types`` (the 30 commonest types);
  ``gc_runs`` and ``gc_collected``: collections and cyclic garbage freed, per generation.
  With ``RAFTLEASE_BENCH_TRACEMALLOC=1`` also, at exit, ``tracemalloc_total`` and
  ``tracemalloc_top``: Python's allocations by source line (slow: measurements only).
- ``slow_saves``: ``Storage.save`` calls (one fsync'd batch, on the fsync thread) above 50 ms
  (wall time at the end, ms); ``save_ms``: all of them.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import time
from typing import Any

_state: dict[str, Any] = {}


def _pcts(xs: list[float]) -> dict[str, float]:
    if not xs:
        return {"n": 0}
    s = sorted(xs)
    n = len(s)

    def q(p: float) -> float:
        return s[min(n - 1, int(p * n))]

    return {
        "n": n,
        "p50": q(0.5),
        "p90": q(0.9),
        "p99": q(0.99),
        "p999": q(0.999),
        "max": s[-1],
    }


def _smaps_rollup() -> dict[str, int]:
    """/proc/self/smaps_rollup in bytes (Rss, Anonymous, ...): where the RSS is."""
    out: dict[str, int] = {}
    try:
        with open("/proc/self/smaps_rollup") as f:
            for line in f:
                parts = line.split()
                if len(parts) == 3 and parts[2] == "kB":
                    out[parts[0].rstrip(":")] = int(parts[1]) * 1024
    except OSError:
        pass
    return out


def _pymalloc_stats() -> dict[str, int]:
    """The totals of ``sys._debugmallocstats()`` (CPython's small-object allocator): bytes in
    blocks in use, free in its pools and arenas, and its arenas' total."""
    import sys
    import tempfile

    out: dict[str, int] = {}
    with tempfile.TemporaryFile(mode="w+") as tmp:
        saved = os.dup(2)
        try:
            os.dup2(tmp.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        for line in tmp:
            key, eq, value = line.rpartition("=")
            value = value.strip().replace(",", "")
            if eq and value.isdigit() and ("bytes" in key or "arenas" in key):
                out[key.strip(" #")] = int(value)
    return out


def install(path: str) -> None:
    from raftlease.core.messages import AppendEntries, AppendEntriesResponse
    from raftlease.core.raft import RaftCore
    from raftlease.node import Node
    from raftlease.service.lease_service import LeaseService
    from raftlease.types import Role

    st: dict[str, Any] = {
        "node": None,
        "valid_until": None,
        "lapses": [],  # (wall time at start, duration s)
        "send_lag_ms": [],
        "ack_at_receive_ms": [],
        "ack_at_step_ms": [],
        "ticks_replayed": [],
        "turnaround_ms": [],
        "arrived": {},
        "loop_lag_ms": [],
        "big_lags": [],
        "snapshot_ms": [],
        "ack_gaps": [],
        "ae_gaps": [],
        "last_ack": None,
        "last_ae": None,
        "gc_ms": [],
        "gc_t0": 0.0,
        "gc_collected": {},  # generation -> unreachable objects freed (cyclic garbage)
        "gc_runs": {},  # generation -> collections
        "save_ms": [],
        "slow_saves": [],
    }
    _state.update(st)

    def dump() -> None:
        node = _state["node"]
        out = {
            "node": node.id if node is not None else None,
            "lapses": len(_state["lapses"]),
            "lapse_s": [d for _, d in _state["lapses"]],
            "lapse_at": [t for t, _ in _state["lapses"]],
            "send_lag_ms": _pcts(_state["send_lag_ms"]),
            "ack_at_receive_ms": _pcts(_state["ack_at_receive_ms"]),
            "ack_at_step_ms": _pcts(_state["ack_at_step_ms"]),
            "ticks_replayed": _pcts(_state["ticks_replayed"]),
            "turnaround_ms": _pcts(_state["turnaround_ms"]),
            "loop_lag_ms": _pcts(_state["loop_lag_ms"]),
            "big_lags": _state["big_lags"][-50:],
            "snapshot_ms": _state["snapshot_ms"],
            "ack_gaps": _state["ack_gaps"][-100:],
            "ae_gaps": _state["ae_gaps"][-100:],
            "gc_ms": _state["gc_ms"][-100:],
            "save_ms": _pcts(_state["save_ms"]),
            "slow_saves": _state["slow_saves"][-100:],
            "leader_changes": node.leader_changes if node is not None else 0,
            "gc_tracked": _state.get("gc_tracked"),
            "gc_collected": _state["gc_collected"],
            "gc_runs": _state["gc_runs"],
            "gc_types": _state.get("gc_types"),
            "smaps": _state.get("smaps"),
            "pymalloc": _state.get("pymalloc"),
            "tracemalloc_total": _state.get("tracemalloc_total"),
            "tracemalloc_top": _state.get("tracemalloc_top"),
        }
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(out, f)
        os.replace(tmp, path)

    import tracemalloc

    if os.environ.get("RAFTLEASE_BENCH_TRACEMALLOC"):
        tracemalloc.start(1)

    def final_dump() -> None:
        import collections

        if tracemalloc.is_tracing():
            snap = tracemalloc.take_snapshot()
            _state["tracemalloc_total"] = sum(st.size for st in snap.statistics("filename"))
            _state["tracemalloc_top"] = [
                (str(st.traceback), st.size, st.count) for st in snap.statistics("lineno")[:40]
            ]

        _state["smaps"] = _smaps_rollup()
        _state["pymalloc"] = _pymalloc_stats()
        counts = collections.Counter(type(o).__name__ for o in gc.get_objects())
        _state["gc_types"] = counts.most_common(30)
        _state["gc_tracked"] = sum(counts.values())
        dump()

    atexit.register(final_dump)  # the server leaves with os._exit: also when run() ends

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            _state["gc_t0"] = time.perf_counter()
        else:
            ms = 1000.0 * (time.perf_counter() - _state["gc_t0"])
            gen = info.get("generation", 0)
            col = _state["gc_collected"]
            col[gen] = col.get(gen, 0) + info.get("collected", 0)
            runs = _state["gc_runs"]
            runs[gen] = runs.get(gen, 0) + 1
            if ms > 5.0:
                _state["gc_ms"].append((info.get("generation"), time.time(), ms))

    gc.callbacks.append(on_gc)

    orig_init = Node.__init__

    def init(self: Node, *a: Any, **kw: Any) -> None:
        orig_init(self, *a, **kw)
        _state["node"] = self

    Node.__init__ = init  # type: ignore[method-assign]

    orig_after = LeaseService.after_step

    def after_step(self: LeaseService) -> None:
        orig_after(self)
        node = _state["node"]
        if node is None or node.service is not self:
            return
        now = node.clock.monotonic()
        d = self.lease_deadline
        until = _state["valid_until"]
        if d > now:
            if until is not None and now >= until:
                _state["lapses"].append((time.time() - (now - until), now - until))
            _state["valid_until"] = d
        elif until is not None:
            if now >= until:
                _state["lapses"].append((time.time() - (now - until), now - until))
            _state["valid_until"] = None  # lapsed, or gave the lease up (step-down)
        # No flush while the node runs: sorting the long series for the percentiles held
        # every node's loop at once, 100-450 ms after 10 minutes of W2 load, and showed up
        # as lapses and elections of its own. The figures are written when run() ends.

    LeaseService.after_step = after_step  # type: ignore[method-assign]

    orig_receive = Node.receive

    def receive(self: Node, m: Any) -> None:
        if type(m) is AppendEntries:
            now = self.clock.monotonic()
            _state["arrived"][(m.src, m.send_tick)] = now
            last = _state["last_ae"]
            if last is not None and now - last > 0.06:
                _state["ae_gaps"].append((time.time(), 1000.0 * (now - last)))
            _state["last_ae"] = now
        if type(m) is AppendEntriesResponse and m.send_tick > 0 and self.core.role is Role.LEADER:
            _state["ack_at_receive_ms"].append(
                1000.0 * (self.clock.monotonic() - self._tick_time(m.send_tick))
            )
        orig_receive(self, m)

    Node.receive = receive  # type: ignore[method-assign]

    orig_step = RaftCore.step

    def step(self: RaftCore, m: Any) -> None:
        node = _state["node"]
        if (
            node is not None
            and type(m) is AppendEntriesResponse
            and m.send_tick > 0
            and self.role is Role.LEADER
            and m.term == self.term
        ):
            now = node.clock.monotonic()
            _state["ack_at_step_ms"].append(1000.0 * (now - node._tick_time(m.send_tick)))
            last = _state["last_ack"]
            if last is not None and now - last > 0.06:
                _state["ack_gaps"].append((time.time(), 1000.0 * (now - last)))
            _state["last_ack"] = now
        orig_step(self, m)

    RaftCore.step = step  # type: ignore[method-assign]

    orig_send = Node._send

    def send(self: Node, rd: Any) -> None:
        arrived = _state["arrived"]
        if arrived:
            now = self.clock.monotonic()
            for m in rd.messages:
                if type(m) is AppendEntriesResponse:
                    t = arrived.pop((m.dst, m.send_tick), None)
                    if t is not None:
                        _state["turnaround_ms"].append(1000.0 * (now - t))
            if len(arrived) > 10_000:
                arrived.clear()
        if self.core.role is Role.LEADER:
            now = self.clock.monotonic()
            seen: set[int] = set()
            for m in rd.messages:
                if type(m) is AppendEntries and m.send_tick not in seen:
                    seen.add(m.send_tick)
                    _state["send_lag_ms"].append(1000.0 * (now - self._tick_time(m.send_tick)))
        orig_send(self, rd)

    Node._send = send  # type: ignore[method-assign]

    orig_sync = Node._sync_ticks

    def sync(self: Node, due: int) -> None:
        behind = due - self._ticks_done
        if behind > 0 and self.core.role is Role.LEADER:
            _state["ticks_replayed"].append(float(behind))
        orig_sync(self, due)

    Node._sync_ticks = sync  # type: ignore[method-assign]

    orig_save = Node._save

    def save(self: Node, rd: Any) -> None:
        t0 = time.monotonic()
        orig_save(self, rd)
        ms = 1000.0 * (time.monotonic() - t0)
        _state["save_ms"].append(ms)
        if ms > 50.0:
            _state["slow_saves"].append((time.time(), ms))

    Node._save = save  # type: ignore[method-assign]

    orig_snap = Node._maybe_snapshot

    def maybe_snapshot(self: Node) -> None:
        before = self._last_snapshot_index
        t0 = time.monotonic()
        orig_snap(self)
        if self._last_snapshot_index != before:
            _state["snapshot_ms"].append((time.time(), 1000.0 * (time.monotonic() - t0)))

    Node._maybe_snapshot = maybe_snapshot  # type: ignore[method-assign]

    orig_run = Node.run

    async def run(self: Node) -> None:
        import asyncio

        async def lag_monitor() -> None:
            loop = asyncio.get_running_loop()
            while True:
                t0 = loop.time()
                await asyncio.sleep(0.005)
                lag = 1000.0 * (loop.time() - t0 - 0.005)
                _state["loop_lag_ms"].append(lag)
                if lag > 50.0:
                    _state["big_lags"].append((time.time(), lag))

        mon = asyncio.get_running_loop().create_task(lag_monitor())
        if os.environ.get("RAFTLEASE_BENCH_TRIM"):  # experiment: glibc's malloc_trim every 5 s
            import ctypes

            libc = ctypes.CDLL("libc.so.6")

            async def trimmer() -> None:
                while True:
                    await asyncio.sleep(5.0)
                    libc.malloc_trim(0)

            trim_task = asyncio.get_running_loop().create_task(trimmer())
            trim_task.add_done_callback(lambda _t: None)
        try:
            await orig_run(self)
        finally:
            mon.cancel()
            if _state["node"] is self:
                final_dump()

    Node.run = run  # type: ignore[method-assign]
