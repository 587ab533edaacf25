"""Launch one raftlease node for the benchmarks: ``raftlease serve`` plus probes.

    python bench/_serve.py [--set JSON] serve --id ID --listen ... (the serve command line)

``BenchCluster`` (bench/cluster.py) passes this script as its LocalCluster launcher. JSON
maps NodeConfig fields the command line does not have to values; they are handed to
``raftlease.server.main_serve`` along with what the command line gives.
Environment:
  RAFTLEASE_BENCH_TRACE=PATH     record per-request timing probes (bench/probes.py) into PATH
  RAFTLEASE_BENCH_CPROFILE=PATH  run the server under cProfile, stats written to PATH on exit
  RAFTLEASE_BENCH_WHATIF=A,B     apply what-if experiments (bench/whatif.py) first
  RAFTLEASE_BENCH_LEASEWATCH=PATH  leader-lease lapses and ack delays (bench/leasewatch.py)
  RAFTLEASE_BENCH_GC=A,B,C       the collector's thresholds instead of the server's
                                 (raftlease.server.GC_THRESHOLDS); 700,10,10 is CPython's
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv: list[str]) -> int:
    overrides = {}
    if argv[:1] == ["--set"]:
        overrides = json.loads(argv[1])
        argv = argv[2:]
    node_id = argv[argv.index("--id") + 1]
    trace_path = os.environ.get("RAFTLEASE_BENCH_TRACE")
    if trace_path:
        import probes  # bench/probes.py

        probes.install(trace_path, node_id)

    whatif = os.environ.get("RAFTLEASE_BENCH_WHATIF", "")
    if whatif:
        import whatif as wi  # bench/whatif.py

        wi.install([w.strip() for w in whatif.split(",")])

    gc_thresholds = os.environ.get("RAFTLEASE_BENCH_GC")
    if gc_thresholds:  # an experiment: the collector's thresholds, e.g. 700,10,10 (CPython's)
        import raftlease.server as srv

        chosen = tuple(int(x) for x in gc_thresholds.split(","))
        srv.tune_collector = functools.partial(srv.tune_collector, chosen)

    lease_watch = os.environ.get("RAFTLEASE_BENCH_LEASEWATCH")
    if lease_watch:
        import leasewatch  # bench/leasewatch.py

        leasewatch.install(lease_watch)

    import raftlease.server
    from raftlease.cli import build_parser

    if overrides:  # cmd_serve looks main_serve up when it runs
        raftlease.server.main_serve = functools.partial(raftlease.server.main_serve, **overrides)
    # The serve command itself, without cli.main's error handling: anything main_serve does
    # not handle stays a traceback in the node's log.
    args = build_parser().parse_args(argv)

    prof_path = os.environ.get("RAFTLEASE_BENCH_CPROFILE")
    if not prof_path:
        return int(args.func(args))
    import cProfile

    prof = cProfile.Profile()
    prof.enable()
    try:
        return int(args.func(args))
    finally:
        prof.disable()
        prof.dump_stats(prof_path)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
