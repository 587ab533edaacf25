"""Data-dir growth under a long churn of grants and releases (issue 13: "the data dir stays
bounded"). A benchmark that prints numbers, not a test.

Starts a local 3-node cluster (real processes, SQLite with fsync), runs ``--ops`` acquire +
release pairs from ``--clients`` threads on distinct names, and samples the size of every
node's data dir (raft.db plus its WAL) as it goes. With log compaction every
``--snapshot-entries`` applied entries, the size should level off instead of growing with the
number of operations.

    .venv/bin/python bench/churn.py --ops 20000 --snapshot-entries 2000
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

from raftlease.client import LeaseClient
from raftlease.testing.local import LocalCluster


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.glob("raft.db*") if f.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ops", type=int, default=20_000, help="acquire+release pairs")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--snapshot-entries", type=int, default=2_000)
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--json", metavar="FILE", default=None)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="raftlease-churn-") as root:
        cluster = LocalCluster(
            root, 3, serve_args=["--snapshot-entries", str(args.snapshot_entries)]
        )
        with cluster:
            cluster.start_all()
            cluster.wait_leader(timeout=20.0)
            done = 0
            lock = threading.Lock()
            per_client = args.ops // args.clients

            def worker(k: int) -> None:
                nonlocal done
                with LeaseClient(cluster.endpoints, timeout=10.0) as client:
                    for i in range(per_client):
                        lease = client.acquire(f"churn-{k}-{i % 50}", ttl=5.0)
                        lease.release()
                        with lock:
                            done += 1

            threads = [threading.Thread(target=worker, args=(k,)) for k in range(args.clients)]
            start = time.monotonic()
            for t in threads:
                t.start()
            samples: list[dict[str, float]] = []
            total = per_client * args.clients
            step = max(1, total // args.samples)
            next_at = 0
            while any(t.is_alive() for t in threads) or next_at <= total:
                with lock:
                    now_done = done
                if now_done >= next_at or not any(t.is_alive() for t in threads):
                    sizes = [dir_bytes(n.data_dir) for n in cluster.nodes.values()]
                    samples.append(
                        {
                            "ops": now_done,
                            "entries": 2 * now_done,
                            "max_node_kib": max(sizes) / 1024,
                            "elapsed_s": time.monotonic() - start,
                        }
                    )
                    next_at = now_done + step
                    if not any(t.is_alive() for t in threads):
                        break
                time.sleep(0.05)
            for t in threads:
                t.join()
    result = {
        "ops": total,
        "clients": args.clients,
        "snapshot_entries": args.snapshot_entries,
        "samples": samples,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    print(f"\n{'ops':>8} {'log entries':>12} {'largest data dir':>17} {'elapsed':>9}")
    for s in samples:
        print(
            f"{int(s['ops']):>8} {int(s['entries']):>12} {s['max_node_kib']:>13.0f} KiB "
            f"{s['elapsed_s']:>8.1f}s"
        )


if __name__ == "__main__":
    main()
