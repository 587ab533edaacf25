"""Offline analysis for bench/run.py: collapsed stacks -> top tables and flame graph SVGs,
and the per-acquire timeline joined from bench/probes.py traces.
"""

from __future__ import annotations

import bisect
import html
import json
import re
import statistics
from collections import defaultdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

# ------------------------------------------------------------------ collapsed stacks


def read_collapsed(path: Path) -> list[tuple[list[str], int]]:
    """py-spy ``--format raw`` output: ``frame;frame;... COUNT`` per line, root first."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        line = line.strip()
        if not line:
            continue
        stack, _, n = line.rpartition(" ")
        try:
            count = int(n)
        except ValueError:
            continue
        out.append((stack.split(";"), count))
    return out


_THREAD = re.compile(r"^(process \d+:.*|thread \((0x)?[0-9A-Fa-f]+\).*)$")
_NATIVE_ADDR = re.compile(r"^0x[0-9a-fA-F]+ \((?:.*/)?([^/]+?)(?:\.cpython[^)]*|\.abi3[^)]*)?\)$")
# Frames every sample of the loop thread passes through: dropped from the "total" ranking.
BOILERPLATE = (
    "<frozen runpy>",
    "(raftlease/__main__.py)",
    "main (raftlease/cli.py)",
    "cmd_serve (raftlease/cli.py)",
    "main_serve (raftlease/server.py)",
    "(asyncio/runners.py)",
    "BaseEventLoop.run_forever",
    "BaseEventLoop.run_until_complete",
    "BaseEventLoop._run_once",
    "Handle._run (asyncio/events.py)",
    "Thread._bootstrap",
    "Thread.run (threading.py)",
    "_serve.py)",
    "task_step",
    "task_wakeup",
    "context_run",
    "_PyEval",
    "PyObject_Vectorcall",
    "cfunction_",
    "method_vectorcall",
    "_PyObject_",
    "(libpython",
)


def _norm(f: str) -> str:
    m = _NATIVE_ADDR.match(f)
    if m:
        return f"[native {m.group(1)}]"
    return f


def _clean(frames: list[str]) -> list[str]:
    out = []
    for f in frames:
        if _THREAD.match(f):
            continue
        f = _norm(f)
        if out and out[-1] == f and f.startswith("[native"):
            continue  # collapse runs of anonymous native frames of one library
        out.append(f)
    return out


def top_functions(
    stacks: list[tuple[list[str], int]], n: int = 15
) -> tuple[int, list[tuple[str, float, float]], list[tuple[str, float, float]]]:
    """(total samples, top by self, top by total); rows are (function, self %, total %)."""
    total = sum(c for _, c in stacks)
    selfc: dict[str, int] = defaultdict(int)
    totc: dict[str, int] = defaultdict(int)
    for frames, c in stacks:
        fr = _clean(frames)
        if not fr:
            continue
        selfc[fr[-1]] += c
        for f in set(fr):
            totc[f] += c
    if total == 0:
        return 0, [], []

    def row(f: str) -> tuple[str, float, float]:
        return f, 100.0 * selfc.get(f, 0) / total, 100.0 * totc.get(f, 0) / total

    by_self = [row(f) for f, _ in sorted(selfc.items(), key=lambda kv: -kv[1])[:n]]
    ranked = [f for f, _ in sorted(totc.items(), key=lambda kv: -kv[1])]
    by_total = [row(f) for f in ranked if not any(b in f for b in BOILERPLATE)][:n]
    return total, by_self, by_total


_CATS = [
    ("syscalls: sendmsg/recvmsg/write/epoll (libc)", ("(libc.so", "(libpthread")),
    ("SQLite engine (libsqlite3, _sqlite3)", ("libsqlite3", "_sqlite3", "sqlite3")),
    ("raftlease.core (Raft state machine)", ("raftlease/core/",)),
    ("raftlease.fsm (lease table)", ("raftlease/fsm/",)),
    ("raftlease.storage (Python side of save)", ("raftlease/storage/",)),
    ("raftlease.codec (protobuf <-> dataclass)", ("raftlease/codec.py",)),
    ("raftlease.server (servicers)", ("raftlease/server.py",)),
    ("raftlease.node (Ready loop)", ("raftlease/node.py",)),
    ("raftlease.transport (peer links)", ("raftlease/transport/",)),
    ("grpc (cygrpc C-core, grpc/aio)", ("grpc/", "cygrpc", "_cython", "libgrpc")),
    ("protobuf (upb)", ("google/protobuf", "protobuf", "_message", "upb")),
    ("asyncio event loop (Python + _asyncio C)", ("asyncio", "selectors.py", "select")),
    ("CPython interpreter / runtime", ("libpython", "python3.11")),
    ("concurrent.futures / threading", ("concurrent/", "threading.py")),
    ("uuid / logging / json", ("uuid.py", "logging/", "json/")),
]


def self_by_category(stacks: list[tuple[list[str], int]]) -> list[tuple[str, float]]:
    """Self samples grouped by the file of the leaf frame (rough CPU attribution)."""
    total = sum(c for _, c in stacks)
    acc: dict[str, int] = defaultdict(int)
    for frames, c in stacks:
        fr = _clean(frames)
        if not fr:
            continue
        leaf = fr[-1]
        for cat, keys in _CATS:
            if any(k in leaf for k in keys):
                acc[cat] += c
                break
        else:
            acc["other"] += c
    if total == 0:
        return []
    return sorted(((k, 100.0 * v / total) for k, v in acc.items()), key=lambda kv: -kv[1])


def flame_svg(stacks: list[tuple[list[str], int]], title: str, path: Path) -> None:
    """A small, dependency-free icicle/flame graph (root at the bottom), hover for details."""
    root: dict[str, Any] = {"n": 0, "c": {}}
    for frames, c in stacks:
        node = root
        node["n"] += c
        for f in _clean(frames):
            node = node["c"].setdefault(f, {"n": 0, "c": {}})
            node["n"] += c
    total = root["n"] or 1
    width, row_h = 1400.0, 16
    rects: list[tuple[float, int, float, str, int]] = []
    max_depth = 0

    def walk(node: dict[str, Any], x: float, depth: int) -> None:
        nonlocal max_depth
        for name, child in sorted(node["c"].items()):
            w = width * child["n"] / total
            if w >= 0.3:
                rects.append((x, depth, w, name, child["n"]))
                max_depth = max(max_depth, depth)
                walk(child, x, depth + 1)
            x += w

    walk(root, 0.0, 0)
    height = (max_depth + 3) * row_h + 30
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{int(width)}" height="{height}" '
        'font-family="monospace" font-size="11">',
        f'<text x="5" y="15">{html.escape(title)} ({total} samples)</text>',
    ]
    for x, depth, w, name, n in rects:
        y = height - (depth + 1) * row_h - 5
        hue = (hash(name.split(" (")[-1]) % 60) + 0
        pct = 100.0 * n / total
        label = html.escape(name)
        parts.append(
            f"<g><title>{label} — {n} samples ({pct:.1f}%)</title>"
            f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row_h - 1}" '
            f'fill="hsl({hue},80%,60%)"/>'
        )
        chars = int(w / 7)
        if chars >= 3:
            text = name if len(name) <= chars else name[: chars - 2] + ".."
            parts.append(f'<text x="{x + 2:.1f}" y="{y + 12}">{html.escape(text)}</text>')
        parts.append("</g>")
    parts.append("</svg>")
    path.write_text("\n".join(parts))


# ------------------------------------------------------------------ W1 timeline


def _load_trace(path: Path) -> tuple[str, list[tuple[str, float, Any, Any]]]:
    lines = path.read_text().splitlines()
    node = json.loads(lines[0])["node"]
    return node, [tuple(json.loads(x)) for x in lines[1:]]  # type: ignore[misc]


def acquire_timeline(
    leader: str, trace_files: list[Path], client: list[tuple[str, float, float, int]]
) -> dict[str, Any]:
    """Join the client's (request_id, t_send, t_recv, index) with every node's probes and
    return the median duration of each step of one acquire, in ms."""
    per_node: dict[str, list[tuple[str, float, Any, Any]]] = {}
    for p in trace_files:
        node, evs = _load_trace(p)
        per_node[node] = evs
    L = per_node.get(leader, [])
    acq_in: dict[str, float] = {}
    acq_out: dict[str, float] = {}
    first: dict[tuple[str, Any], float] = {}
    ready_with_entry: dict[int, float] = {}
    save_rng: list[tuple[int, int, float, float]] = []
    apply_rng: list[tuple[int, int, float]] = []
    save0: dict[tuple[int, int], float] = {}
    for ev, t, a, b in L:
        if ev == "acq_in":
            acq_in[a] = t
        elif ev == "acq_out":
            acq_out[a] = t
        elif ev == "ready" and a != -1:
            ready_with_entry.setdefault(a, t)
        elif ev == "save0":
            save0[(a, b)] = t
        elif ev == "save1" and a != -1:
            save_rng.append((a, b, save0.get((a, b), t), t))
        elif ev == "apply0":
            apply_rng.append((a, b, t))
        elif ev == "propose":
            first.setdefault((ev, a), t)
    followers = {n: evs for n, evs in per_node.items() if n != leader}
    f_save: dict[str, list[tuple[int, int, float, float]]] = defaultdict(list)
    for n, evs in followers.items():
        s0: dict[tuple[int, int], float] = {}
        for ev, t, a, b in evs:
            if ev == "save0":
                s0[(a, b)] = t
            elif ev == "save1" and a != -1:
                f_save[n].append((a, b, s0.get((a, b), t), t))

    def covering(rngs: list[tuple[int, int, float, float]], i: int) -> tuple[float, float] | None:
        for a, b, t0, t1 in rngs:
            if a <= i <= b:
                return t0, t1
        return None

    idx_leader = _EventIndex(L)
    idx_f = {n: _EventIndex(evs) for n, evs in followers.items()}
    steps: dict[str, list[float]] = defaultdict(list)
    for rid, t_send, t_recv, idx in client:
        if rid not in acq_in or rid not in acq_out:
            continue
        t_prop = first.get(("propose", idx))
        t_ready = ready_with_entry.get(idx)
        sv = covering(save_rng, idx)
        if t_prop is None or t_ready is None or sv is None:
            continue
        # The first follower whose acknowledgement of idx reached the leader commits it.
        best = None
        for n in followers:
            t_dec_aer = idx_leader.first("dec_aer", n, idx)
            if t_dec_aer is not None and (best is None or t_dec_aer < best[1]):
                best = (n, t_dec_aer)
        if best is None:
            continue
        fn, t_ack = best
        t_send_ae = idx_leader.first("send_ae", fn, idx)
        t_enc_ae = idx_leader.first("enc_ae", fn, idx)
        t_fdec = idx_f[fn].first("dec_ae", leader, idx)
        fsv = covering(f_save[fn], idx)
        t_fsend = idx_f[fn].first("send_aer", leader, idx)
        t_apply = next((t for a, b, t in apply_rng if a <= idx <= b), None)
        if None in (t_send_ae, t_enc_ae, t_fdec, fsv, t_fsend, t_apply):
            continue
        assert fsv is not None
        assert t_apply is not None
        ms = 1000.0
        steps["1 client -> leader servicer (client stub, HTTP/2, server dispatch)"].append(
            (acq_in[rid] - t_send) * ms
        )
        steps["2 servicer -> core.propose (validate, queue op, wake Ready loop)"].append(
            (t_prop - acq_in[rid]) * ms
        )
        steps["3 propose -> Ready handed out (rest of loop iteration)"].append(
            (t_ready - t_prop) * ms
        )
        steps["4 Ready -> leader fsync starts (executor hop)"].append((sv[0] - t_ready) * ms)
        steps["5 leader SQLite save + fsync"].append((sv[1] - sv[0]) * ms)
        steps["6 fsync done -> transport.send (back on the loop)"].append(
            (t_send_ae - sv[1]) * ms  # type: ignore[operator]
        )
        steps["7 transport.send -> link serializes AppendEntries"].append(
            (t_enc_ae - t_send_ae) * ms  # type: ignore[operator]
        )
        steps["8 serialized -> follower decoded (gRPC stream, network)"].append(
            (t_fdec - t_enc_ae) * ms  # type: ignore[operator]
        )
        steps["9 follower: decoded -> fsync starts (loop, step, executor hop)"].append(
            (fsv[0] - t_fdec) * ms  # type: ignore[operator]
        )
        steps["10 follower SQLite save + fsync"].append((fsv[1] - fsv[0]) * ms)
        steps["11 follower: fsync done -> response sent"].append(
            (t_fsend - fsv[1]) * ms  # type: ignore[operator]
        )
        steps["12 response -> leader decoded it (serialize, gRPC, network)"].append(
            (t_ack - t_fsend) * ms  # type: ignore[operator]
        )
        steps["13 leader: ack decoded -> apply (step, commit, Ready)"].append(
            (t_apply - t_ack) * ms
        )
        steps["14 apply -> servicer returns (future, build response)"].append(
            (acq_out[rid] - t_apply) * ms
        )
        steps["15 servicer returns -> client has the reply"].append((t_recv - acq_out[rid]) * ms)
        steps["total (client-measured acquire)"].append((t_recv - t_send) * ms)
    out: dict[str, Any] = {"samples": len(steps.get("total (client-measured acquire)", []))}
    out["median_ms"] = {k: statistics.median(v) for k, v in sorted(steps.items(), key=_step_key)}
    out["mean_ms"] = {k: statistics.fmean(v) for k, v in sorted(steps.items(), key=_step_key)}
    return out


def _step_key(kv: tuple[str, Any]) -> tuple[int, str]:
    head = kv[0].split(" ", 1)[0]
    return (int(head) if head.isdigit() else 99, kv[0])


class _EventIndex:
    """For each (event, peer): times in order and the running max of the index, so "the first
    time an event covered index >= i" is one bisect."""

    def __init__(self, evs: list[tuple[str, float, Any, Any]]) -> None:
        acc: dict[tuple[str, Any], tuple[list[int], list[float]]] = {}
        for e, t, a, b in evs:
            if not isinstance(b, int):
                continue
            idxs, times = acc.setdefault((e, a), ([], []))
            idxs.append(max(b, idxs[-1]) if idxs else b)
            times.append(t)
        self.acc = acc

    def first(self, ev: str, peer: Any, idx: int) -> float | None:
        got = self.acc.get((ev, peer))
        if got is None:
            return None
        idxs, times = got
        pos = bisect.bisect_left(idxs, idx)
        return times[pos] if pos < len(times) else None


# ------------------------------------------------------------------ W2 pipeline


def pipeline_stats(trace_files: list[Path], t0: float, t1: float) -> dict[str, Any]:
    """Per node, inside [t0, t1]: fsyncs/s, entries per fsync, fsync time, how busy the fsync
    thread was, Readies/s, entries per AppendEntries, commits (applies)/s and entries each."""
    out: dict[str, Any] = {}
    wall = t1 - t0
    for p in trace_files:
        node, evs = _load_trace(p)
        saves = []
        s0: dict[tuple[Any, Any], float] = {}
        readies = applies = applied = ae_msgs = ae_entries = 0
        last_ae: dict[Any, int] = {}
        for ev, t, a, b in evs:
            if not (t0 <= t <= t1):
                if ev == "send_ae":
                    last_ae[a] = b
                continue
            if ev == "save0":
                s0[(a, b)] = t
            elif ev == "save1":
                start = s0.pop((a, b), None)
                if start is not None:
                    saves.append((t - start, 0 if a == -1 else b - a + 1))
            elif ev == "ready":
                readies += 1
            elif ev == "apply0":
                applies += 1
                applied += b - a + 1
            elif ev == "send_ae":
                prev = last_ae.get(a)
                ae_msgs += 1
                if prev is not None and b > prev:
                    ae_entries += b - prev
                last_ae[a] = b
        if not saves:
            continue
        durs = sorted(d for d, _ in saves)
        out[node] = {
            "fsyncs_per_s": len(saves) / wall,
            "entries_per_fsync": statistics.fmean(n for _, n in saves),
            "fsync_ms_p50": 1000 * durs[len(durs) // 2],
            "fsync_ms_p90": 1000 * durs[int(len(durs) * 0.9)],
            "fsync_thread_busy_pct": 100 * sum(durs) / wall,
            "readies_per_s": readies / wall,
            "commits_per_s": applies / wall,
            "entries_per_commit": applied / applies if applies else 0.0,
            "append_msgs_per_s": ae_msgs / wall,
            "entries_per_append_msg": ae_entries / ae_msgs if ae_msgs else 0.0,
        }
    return out
