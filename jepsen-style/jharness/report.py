"""report.html: one self-contained page (inline SVG and CSS, no scripts, no external files).

Top: verdicts per check with the first counterexample. Then the timeline: node roles and
terms over time (from Cluster.Status samples; a thin dark strip under a node's lane = its
certain leader-lease belief, as the leader_lease check uses it), nemesis windows shaded, each
lease's believed holders as bars labelled with client and fencing token (violations outlined
in red), fenced writes as ticks (accepted green, rejected red). Then latency and availability
plots.
"""

from __future__ import annotations

import html
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from jharness.checkers import leader_lease_intervals

W = 1180  # plot width (px) inside the SVG
LEFT = 110  # label column
ROLE_COLORS = {
    "leader": "#2e9d4a",
    "follower": "#9cc3e6",
    "candidate": "#f0a030",
    "pre_candidate": "#f6cf7a",
    "unknown": "#cccccc",
    "down": "#555555",
    "paused": "#9b59b6",
    "refused": "#000000",
    "noanswer": "#dddddd",
}
CLIENT_COLORS = ["#1f77b4", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f", "#bcbd22"]
VERDICT_COLORS = {"valid": "#2e9d4a", "invalid": "#d62728", "unknown": "#e69b00"}
FAULT_COLORS = {
    "kill": "#d62728",
    "pause": "#9b59b6",
    "partition": "#1f77b4",
    "one-way": "#17becf",
    "flaky": "#bcbd22",
    "failpoint": "#e377c2",
    "corrupt": "#8c564b",
    "clock-jump": "#ff7f0e",
    "clock-strobe": "#ff7f0e",
    "client-pause": "#7f7f7f",
    "transfer-leadership": "#2ca02c",
    "transport-faults": "#6b6ecf",
    "join": "#637939",
    "member-add": "#31a354",
    "member-remove": "#843c39",
    "final-heal": "#2ca02c",
}


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


class Scale:
    def __init__(self, t0: float, t1: float) -> None:
        self.t0, self.t1 = t0, max(t1, t0 + 1e-3)

    def x(self, t: float) -> float:
        return LEFT + (t - self.t0) / (self.t1 - self.t0) * W


def _axis(s: Scale, y: float, h: float) -> str:
    out = []
    span = s.t1 - s.t0
    step = 1.0 if span <= 30 else 2.0 if span <= 60 else 5.0 if span <= 150 else 10.0
    k = 0.0
    while k <= span + 1e-9:
        x = s.x(s.t0 + k)
        out.append(f'<line x1="{x:.1f}" y1="{y}" x2="{x:.1f}" y2="{y + h}" stroke="#eee"/>')
        out.append(
            f'<text x="{x:.1f}" y="{y + h + 12}" font-size="9" text-anchor="middle" '
            f'fill="#666">{k:g}s</text>'
        )
        k += step
    return "".join(out)


def node_segments(status: list[dict[str, Any]], node: str) -> list[tuple[float, float, str, Any]]:
    segs: list[list[Any]] = []
    for s in status:
        if s["node"] != node:
            continue
        st = s.get("state", "up")
        if s.get("ok"):
            key, term = s.get("role", "unknown"), s.get("term")
        elif st in ("down", "paused", "refused"):
            key, term = st, None
        else:
            key, term = "noanswer", None
        t = s["t"]
        if segs and segs[-1][2] == key and segs[-1][3] == term and t - segs[-1][1] < 0.5:
            segs[-1][1] = t + 0.1
        else:
            if segs:
                segs[-1][1] = min(segs[-1][1], t)
            segs.append([t, t + 0.1, key, term])
    return [tuple(x) for x in segs]  # type: ignore[misc]


def timeline(
    summary: dict[str, Any],
    history: list[dict[str, Any]],
    status: list[dict[str, Any]],
    resource_log: list[dict[str, Any]],
) -> str:
    t_start = next((e["t"] for e in history if e.get("f") == "run-start"), None)
    ts = [e["t"] for e in history] + [s["t"] for s in status]
    if not ts:
        return "<p>no events</p>"
    t0 = t_start if t_start is not None else min(ts)
    s = Scale(t0, max(ts))
    nodes = sorted({x["node"] for x in status})
    names = sorted({e["name"] for e in history if e.get("f") == "belief"})
    clients = sorted(
        {
            e["process"]
            for e in history
            if e.get("process", "").startswith("c") and e.get("process") != "cluster"
        }
    )
    ccolor = {c: CLIENT_COLORS[i % len(CLIENT_COLORS)] for i, c in enumerate(clients)}
    lane_h = 22
    y = 40
    parts: list[str] = []
    # nemesis windows first (background)
    starts: dict[int, dict[str, Any]] = {}
    windows = []
    for e in history:
        if e.get("process") != "nemesis":
            continue
        if e["f"] == "start":
            starts[e["id"]] = e
        elif e["f"] == "stop" and e["id"] in starts:
            windows.append((starts.pop(e["id"]), e))
    for st in starts.values():
        windows.append((st, {"t": s.t1}))
    node_top = y
    n_rows = len(nodes) + sum(len(clients) for _ in names) + 2
    total_h = y + n_rows * lane_h + len(names) * 18 + 60
    label_rows = [0.0, 0.0, 0.0]
    for a, b in windows:
        if a["fault"] == "final-heal":
            continue
        x1, x2 = s.x(a["t"]), max(s.x(b["t"]), s.x(a["t"]) + 2)
        col = FAULT_COLORS.get(a["fault"], "#999")
        tgt = a.get("targets") or a.get("shape") or a.get("link") or ""
        if isinstance(tgt, list):
            tgt = ",".join(map(str, tgt))
        label = f"{a['fault']} {tgt}".strip()
        detail = json.dumps(
            {k: v for k, v in a.items() if k not in ("process", "type")}, default=str
        )
        parts.append(
            f'<rect x="{x1:.1f}" y="22" width="{x2 - x1:.1f}" height="{total_h - 40}" '
            f'fill="{col}" fill-opacity="0.13"><title>{esc(detail)}</title></rect>'
        )
        row = next((i for i, r in enumerate(label_rows) if r <= x1), 0)
        label_rows[row] = x1 + 7 * len(label) + 6
        parts.append(
            f'<text x="{x1 + 2:.1f}" y="{10 + 9 * row}" font-size="9" fill="{col}">'
            f"{esc(label)}</text>"
        )
    heal = next((a for a, _ in windows if a["fault"] == "final-heal"), None)
    if heal:
        x = s.x(heal["t"])
        parts.append(
            f'<line x1="{x:.1f}" y1="22" x2="{x:.1f}" y2="{total_h - 18}" '
            f'stroke="#2ca02c" stroke-dasharray="4,3"/>'
        )
        parts.append(
            f'<text x="{x + 3:.1f}" y="{total_h - 22}" font-size="9" fill="#2ca02c">'
            f"final heal</text>"
        )
    # node lanes
    lease_ivs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    try:
        for iv in leader_lease_intervals(status, history)[0]:
            lease_ivs[iv["node"]].append(iv)
    except (KeyError, TypeError, ValueError):
        pass  # an old status.jsonl: no lease strip
    parts.append(
        f'<text x="4" y="{y - 4}" font-size="11" font-weight="bold">nodes (role, term)</text>'
    )
    for n in nodes:
        parts.append(f'<text x="4" y="{y + 15}" font-size="11">{esc(n)}</text>')
        for a, b, key, term in node_segments(status, n):
            x1, x2 = s.x(a), s.x(b)
            col = ROLE_COLORS.get(key, "#ccc")
            tip = f"{n} {key}" + (f" term {term}" if term is not None else "")
            parts.append(
                f'<rect x="{x1:.1f}" y="{y + 3}" width="{max(0.5, x2 - x1):.1f}" '
                f'height="{lane_h - 6}" fill="{col}"><title>{esc(tip)}</title></rect>'
            )
            if key == "leader" and x2 - x1 > 24:
                parts.append(
                    f'<text x="{x1 + 2:.1f}" y="{y + 15}" font-size="9" fill="#fff">T{term}</text>'
                )
        for iv in lease_ivs.get(n, []):  # certain leader-lease belief (leader_lease check)
            x1, x2 = s.x(iv["start"]), s.x(iv["end"])
            parts.append(
                f'<rect x="{x1:.1f}" y="{y + lane_h - 4}" width="{max(0.5, x2 - x1):.1f}" '
                f'height="3" fill="#0b4d1c"><title>{esc(n)} leader lease certainly valid '
                f"{iv['start'] - t0:.3f}s..{iv['end'] - t0:.3f}s</title></rect>"
            )
        y += lane_h
    y += 16
    # lease lanes
    me = summary["checks"]["ME"]
    bad = set()
    for v in me.get("violations", []):
        bad.add((v["name"], v["a"]["process"], v["a"]["token"]))
        bad.add((v["name"], v["b"]["process"], v["b"]["token"]))
    writes = defaultdict(list)
    for r in resource_log:
        writes[(r["name"], r["client"])].append(r)
    pauses = [e for e in history if e.get("f") == "pause-gate"]
    for name in names:
        parts.append(
            f'<text x="4" y="{y + 10}" font-size="11" font-weight="bold">lease {esc(name)}</text>'
        )
        y += 14
        for c in clients:
            parts.append(
                f'<text x="14" y="{y + 14}" font-size="10" fill="{ccolor[c]}">{esc(c)}</text>'
            )
            for b in (
                e
                for e in history
                if e.get("f") == "belief" and e["name"] == name and e["process"] == c
            ):
                if b["end"] <= b["start"]:
                    continue
                x1, x2 = s.x(b["start"]), s.x(b["end"])
                is_bad = (name, c, b["token"]) in bad
                stroke = ' stroke="#d62728" stroke-width="2.5"' if is_bad else ""
                tip = (
                    f"{c} holds {name} token {b['token']} from {b['start'] - t0:.3f}s to "
                    f"{b['end'] - t0:.3f}s ({b.get('reason')})"
                )
                parts.append(
                    f'<rect x="{x1:.1f}" y="{y + 3}" width="{max(1, x2 - x1):.1f}" '
                    f'height="{lane_h - 6}" fill="{ccolor[c]}" fill-opacity="0.75"'
                    f"{stroke}><title>{esc(tip)}</title></rect>"
                )
                if x2 - x1 > 26:
                    parts.append(
                        f'<text x="{x1 + 2:.1f}" y="{y + 15}" font-size="9" '
                        f'fill="#fff">#{b["token"]}</text>'
                    )
            for w in writes.get((name, c), []):
                x = s.x(w["t"])
                if w["accepted"]:
                    parts.append(
                        f'<line x1="{x:.1f}" y1="{y + 1}" x2="{x:.1f}" '
                        f'y2="{y + lane_h - 1}" stroke="#2e9d4a" stroke-width="1.2">'
                        f"<title>write token {w['token']} accepted</title></line>"
                    )
                else:
                    parts.append(
                        f'<text x="{x:.1f}" y="{y + 16}" font-size="13" fill="#d62728" '
                        f'text-anchor="middle" font-weight="bold">x<title>write token '
                        f"{w['token']} REJECTED (max seen {w['max_before']})</title>"
                        f"</text>"
                    )
            for p in pauses:
                if p["process"] == c and p["name"] == name:
                    x = s.x(p["t"])
                    parts.append(
                        f'<text x="{x:.1f}" y="{y + 9}" font-size="9" fill="#7f7f7f">⏸</text>'
                    )
            y += lane_h
        y += 4
    for v in me.get("violations", []):
        x = s.x(v["t"])
        parts.append(
            f'<line x1="{x:.1f}" y1="{node_top}" x2="{x:.1f}" y2="{y}" stroke="#d62728" '
            f'stroke-width="1.5"><title>{esc(json.dumps(v, default=str))}</title></line>'
        )
    for k in ("leader_lease", "FT", "NAL", "RI"):
        if k not in summary["checks"]:
            continue
        for v in summary["checks"][k].get("violations", []):
            if "t" in v:
                x = s.x(v["t"])
                parts.append(
                    f'<line x1="{x:.1f}" y1="{node_top}" x2="{x:.1f}" y2="{y}" '
                    f'stroke="#d62728" stroke-dasharray="2,2"><title>{k}: '
                    f"{esc(json.dumps(v, default=str))}</title></line>"
                )
    parts.insert(0, _axis(s, 22, y - 22))
    height = y + 30
    legend = " ".join(
        f'<span class="sw" style="background:{c}"></span>{esc(k)}' for k, c in ROLE_COLORS.items()
    )
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{LEFT + W + 20}" height="{height}" '
        f'font-family="sans-serif">{"".join(parts)}</svg>'
    )
    return (
        f'<div class="legend">{legend} &nbsp; shaded = fault window; green tick = accepted '
        f"write; red x = rejected (stale) write; red outline/line = violation</div>{svg}"
    )


def latency_plot(history: list[dict[str, Any]], t0: float, t1: float) -> str:
    pts2 = []
    inv: dict[tuple[str, str], float] = {}
    for e in history:
        f = e.get("f")
        if f not in ("acquire", "read", "release", "write"):
            continue
        key = (e["process"], f)
        if e["type"] == "invoke":
            inv[key] = e["t"]
        elif key in inv:
            t_inv = inv.pop(key)
            pts2.append((t_inv, max(0.0005, e["t"] - t_inv), f, e["type"]))
    s = Scale(t0, t1)
    h = 160
    import math

    lo, hi = math.log10(0.0005), math.log10(20.0)

    def yv(lat: float) -> float:
        v = (math.log10(min(max(lat, 0.0005), 20.0)) - lo) / (hi - lo)
        return 10 + (1 - v) * h

    cols = {"ok": "#2e9d4a", "fail": "#f0a030", "info": "#d62728"}
    marks = {"acquire": "circle", "read": "rect", "release": "tri", "write": "x"}
    parts = [_axis(s, 10, h)]
    for ms, lab in ((1, "1ms"), (10, "10ms"), (100, "100ms"), (1000, "1s"), (10000, "10s")):
        yy = yv(ms / 1000)
        parts.append(
            f'<line x1="{LEFT}" y1="{yy:.1f}" x2="{LEFT + W}" y2="{yy:.1f}" '
            f'stroke="#eee"/><text x="{LEFT - 4}" y="{yy + 3:.1f}" font-size="9" '
            f'text-anchor="end" fill="#666">{lab}</text>'
        )
    for t, lat, f, typ in pts2:
        x, yy = s.x(t), yv(lat)
        c = cols.get(typ, "#999")
        if marks[f] == "circle":
            parts.append(f'<circle cx="{x:.1f}" cy="{yy:.1f}" r="2.2" fill="{c}"/>')
        elif marks[f] == "rect":
            parts.append(
                f'<rect x="{x - 2:.1f}" y="{yy - 2:.1f}" width="4" height="4" fill="{c}"/>'
            )
        elif marks[f] == "tri":
            parts.append(f'<path d="M{x:.1f},{yy - 3:.1f} l3,5 l-6,0 z" fill="{c}"/>')
        else:
            parts.append(
                f'<path d="M{x - 2:.1f},{yy - 2:.1f} l4,4 M{x + 2:.1f},{yy - 2:.1f} '
                f'l-4,4" stroke="{c}"/>'
            )
    parts.append('<text x="4" y="20" font-size="11" font-weight="bold">latency</text>')
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{LEFT + W + 20}" height="{h + 30}" '
        f'font-family="sans-serif">{"".join(parts)}</svg>'
    )
    return (
        '<div class="legend">● acquire ■ read ▲ release × write; green ok, orange fail '
        "(definite, e.g. held), red info (indeterminate: timeout/unavailable); log scale</div>"
        + svg
    )


def availability_plot(history: list[dict[str, Any]], t0: float, t1: float) -> str:
    buckets: dict[int, dict[str, int]] = defaultdict(lambda: {"ok": 0, "fail": 0, "info": 0})
    for e in history:
        if e.get("f") in ("acquire", "read", "release") and e["type"] in ("ok", "fail", "info"):
            b = int(e["t"] - t0)
            buckets[b][e["type"]] += 1
    s = Scale(t0, t1)
    h = 90
    parts = [_axis(s, 10, h)]
    mx = max((sum(v.values()) for v in buckets.values()), default=1)
    for b, v in sorted(buckets.items()):
        x1, x2 = s.x(t0 + b), s.x(t0 + b + 1)
        yb = 10 + h
        for typ, col in (("ok", "#2e9d4a"), ("fail", "#f0a030"), ("info", "#d62728")):
            hh = v[typ] / mx * h
            if hh > 0:
                parts.append(
                    f'<rect x="{x1 + 1:.1f}" y="{yb - hh:.1f}" width="{x2 - x1 - 2:.1f}" '
                    f'height="{hh:.1f}" fill="{col}"><title>{b}s: {v}</title></rect>'
                )
                yb -= hh
    parts.append('<text x="4" y="20" font-size="11" font-weight="bold">availability</text>')
    parts.append(f'<text x="4" y="34" font-size="9" fill="#666">ops/s (max {mx})</text>')
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{LEFT + W + 20}" height="{h + 30}" '
        f'font-family="sans-serif">{"".join(parts)}</svg>'
    )
    return (
        '<div class="legend">completed client ops per second: green ok, orange fail '
        "(definite refusal, e.g. lease held), red indeterminate</div>" + svg
    )


def write_report(
    d: Path,
    summary: dict[str, Any],
    history: list[dict[str, Any]],
    status: list[dict[str, Any]],
    resource_log: list[dict[str, Any]],
) -> None:
    t0 = next((e["t"] for e in history if e.get("f") == "run-start"), None)
    ts = [e["t"] for e in history] + [s["t"] for s in status]
    if t0 is None:
        t0 = min(ts) if ts else 0.0
    t1 = max(ts) if ts else t0 + 1
    rows = []
    for k, v in summary["checks"].items():
        col = VERDICT_COLORS.get(v["verdict"], "#999")
        exp = summary["expect"].get(k, "M")
        if k in summary.get("expect_invalid", []):
            exp = "teeth: must be invalid"
        first = json.dumps(v["first"], default=str, indent=1) if v["first"] else ""
        notes = "<br>".join(esc(n) for n in v.get("notes", []))
        rows.append(
            f'<tr><td><b>{k}</b></td><td>{esc(exp)}</td><td style="color:{col};font-weight:bold">'
            f"{esc(v['verdict'])}</td><td><code>{esc(json.dumps(v['counts'], default=str))}"
            f"</code></td><td><pre>{esc(first[:1500])}</pre><small>{notes}</small></td></tr>"
        )
    ok = summary["passed"]
    banner = ("#2e9d4a", "PASS") if ok else ("#d62728", "FAIL")
    nem = [e for e in history if e.get("process") == "nemesis"]
    nem_rows = "".join(
        f"<tr><td>{e['t'] - t0:.3f}</td><td>{esc(e['f'])}</td><td>{esc(e['fault'])}</td>"
        f"<td><code>{esc(json.dumps({k: v for k, v in e.items() if k not in ('t', 'f', 'fault', 'process', 'type', 'id')}, default=str))}</code></td></tr>"
        for e in nem
    )
    cl = [e for e in history if e.get("process") == "cluster"]
    cl_rows = "".join(
        f"<tr><td>{e['t'] - t0:.3f}</td><td>{esc(e['f'])}</td><td><code>"
        f"{esc(json.dumps({k: v for k, v in e.items() if k not in ('t', 'f', 'process', 'type')}, default=str))}"
        f"</code></td></tr>"
        for e in cl
    )
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>raftlease jepsen row {summary["row"]} seed {summary["seed"]}</title>
<style>
body {{ font-family: sans-serif; margin: 16px; color: #222; }}
table {{ border-collapse: collapse; margin: 8px 0; }}
td, th {{ border: 1px solid #ddd; padding: 3px 6px; vertical-align: top; font-size: 12px; }}
pre {{ margin: 0; font-size: 11px; max-width: 640px; white-space: pre-wrap; }}
.banner {{ color: #fff; padding: 6px 12px; display: inline-block; font-weight: bold; }}
.legend {{ font-size: 11px; color: #444; margin: 4px 0; }}
.sw {{ display: inline-block; width: 10px; height: 10px; margin: 0 3px 0 8px; }}
details {{ margin: 8px 0; }}
</style></head><body>
<h2>raftlease jepsen-style: row {summary["row"]} &mdash; {esc(summary["title"])}</h2>
<div><span class="banner" style="background:{banner[0]}">{banner[1]}</span>
 seed <b>{summary["seed"]}</b>, fault window {summary["window_s"]} s, TTL {summary["ttl_s"]} s,
 rho {summary["rho"]}, E_max {summary["e_max_s"]} s, {summary["faults_injected"]} faults injected,
 {summary["ops"]} client ops.
 {"<b>broken client: " + esc(summary["broken_client"]) + "</b>" if summary["broken_client"] else ""}
 {"<b>broken resource (accepts stale tokens)</b>" if summary["broken_resource"] else ""}</div>
<div>reproduce: <code>{esc(summary["reproduce"])}</code></div>
{'<div style="color:#d62728">failures: ' + esc("; ".join(summary["failures"])) + "</div>" if summary["failures"] else ""}
<h3>Checks</h3>
<table><tr><th>check</th><th>expect</th><th>verdict</th><th>counts</th><th>first counterexample / notes</th></tr>
{"".join(rows)}</table>
<h3>Timeline</h3>
{timeline(summary, history, status, resource_log)}
<h3>Latency</h3>
{latency_plot(history, t0, t1)}
<h3>Availability</h3>
{availability_plot(history, t0, t1)}
<details><summary>Faults ({len(nem)} events)</summary><table>
<tr><th>t (s)</th><th>event</th><th>fault</th><th>details</th></tr>{nem_rows}</table></details>
<details><summary>Cluster events ({len(cl)})</summary><table>
<tr><th>t (s)</th><th>event</th><th>details</th></tr>{cl_rows}</table></details>
<details><summary>Final phase (LIV measurements)</summary><pre>{esc(json.dumps(summary["final"], indent=1, default=str))}</pre></details>
</body></html>
"""
    (d / "report.html").write_text(page, encoding="utf-8")
