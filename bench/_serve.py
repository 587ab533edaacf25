"""Launch one raftlease node for the benchmarks: ``raftlease.server.main_serve`` plus probes.

    python bench/_serve.py NODE_ID LISTEN ID=HOST:PORT,... DATA_DIR CLUSTER_ID [OVERRIDES]

OVERRIDES is a Python dict literal of NodeConfig fields (``{}`` for the defaults).
Environment:
  RAFTLEASE_BENCH_TRACE=PATH     record per-request timing probes (bench/probes.py) into PATH
  RAFTLEASE_BENCH_CPROFILE=PATH  run the server under cProfile, stats written to PATH on exit
  RAFTLEASE_BENCH_WHATIF=A,B     apply what-if experiments (bench/whatif.py) first
"""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    node_id, listen, peers_s, data_dir, cluster_id = sys.argv[1:6]
    overrides = ast.literal_eval(sys.argv[6]) if len(sys.argv) > 6 else {}
    peers = dict(p.split("=", 1) for p in peers_s.split(","))
    trace_path = os.environ.get("RAFTLEASE_BENCH_TRACE")
    if trace_path:
        import probes  # bench/probes.py

        probes.install(trace_path, node_id)

    whatif = os.environ.get("RAFTLEASE_BENCH_WHATIF", "")
    if whatif:
        import whatif as wi  # bench/whatif.py

        wi.install([w.strip() for w in whatif.split(",")])

    from raftlease.server import main_serve

    prof_path = os.environ.get("RAFTLEASE_BENCH_CPROFILE")
    if prof_path:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
        try:
            main_serve(node_id, listen, peers, data_dir, cluster_id, **overrides)
        finally:
            prof.disable()
            prof.dump_stats(prof_path)
    else:
        main_serve(node_id, listen, peers, data_dir, cluster_id, **overrides)


if __name__ == "__main__":
    main()
