"""Soak under W2 load and catch a hung node: if a live node stops answering Cluster.Status
for ``--hang-s`` seconds, dump its Python stacks (py-spy dump, with and without native frames)
into bench/results/<ts>-soak/ and stop.

    .venv/bin/python bench/soak.py --seconds 600 [--nice -10]

Found by W7: a leader that stopped answering right after "snapshot at index N" while the
other two elected a new leader; its clients then timed out for the rest of the run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cluster import BENCH_DIR, REPO, BenchCluster, nice_prefix


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--hang-s", type=float, default=3.0)
    ap.add_argument("--nice", type=int, default=0)
    ap.add_argument("--set", default="", help="NodeConfig overrides, e.g. snapshot_entries=2000")
    o = ap.parse_args()
    overrides = {}
    for kv in filter(None, o.set.split(",")):
        k, v = kv.split("=", 1)
        overrides[k] = float(v) if "." in v else int(v)
    out = BENCH_DIR / "results" / (dt.datetime.now().strftime("%Y%m%d-%H%M%S") + "-soak")
    out.mkdir(parents=True, exist_ok=True)
    BenchCluster.nice = o.nice
    c = BenchCluster(overrides=overrides)
    spy = str(Path(sys.executable).parent / "py-spy")
    report: dict[str, object] = {"hung": None}
    with c:
        c.start_nodes()
        leader = c.wait_stable(30, settle=0.5)
        load = subprocess.Popen(
            [
                *nice_prefix(o.nice),
                sys.executable,
                str(BENCH_DIR / "loadgen.py"),
                "w2",
                "--target",
                c.nodes[leader].address,
                "--duration",
                str(o.seconds),
                "--warmup",
                "0",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=str(REPO),
        )
        last_ok = {nid: time.monotonic() for nid in c.nodes}
        t_end = time.monotonic() + o.seconds
        stop = threading.Event()
        try:
            while time.monotonic() < t_end and load.poll() is None and not stop.is_set():
                for nid, np in c.nodes.items():
                    if not np.alive():
                        continue
                    if c.status(nid, timeout=1.0) is not None:
                        last_ok[nid] = time.monotonic()
                    elif time.monotonic() - last_ok[nid] > o.hang_s:
                        pid = np.proc.pid  # type: ignore[union-attr]
                        print(f"{nid} (pid {pid}) has not answered for {o.hang_s}s: dumping")
                        for flag in ([], ["--native"]):
                            r = subprocess.run(
                                [spy, "dump", "--pid", str(pid), *flag],
                                capture_output=True,
                                text=True,
                                check=False,
                            )
                            name = "native" if flag else "python"
                            (out / f"{nid}-{name}.txt").write_text(r.stdout + r.stderr)
                        report["hung"] = {
                            "node": nid,
                            "after_s": o.seconds - (t_end - time.monotonic()),
                        }
                        stop.set()
                        break
                time.sleep(0.5)
        finally:
            load.terminate()
            load.wait()
            c.stop()
            for nid, np in c.nodes.items():
                shutil.copy(np.log_path, out / f"{nid}.log")
    (out / "report.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report), "->", out)


if __name__ == "__main__":
    main()
