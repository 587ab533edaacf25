"""Start one raftlease node for the harness: ``python node_launcher.py [--set JSON] serve ...``.

Everything after ``--set JSON`` is the ``raftlease serve`` command line that
``raftlease.testing.LocalCluster`` builds (this node's own ``--peers`` map, whose peer
addresses are the harness proxies of the directed links this->peer, plus
``--client-addresses``, the real listen addresses, for leader hints). ``JSON`` maps NodeConfig
fields the command line does not have (``snapshot_entries``, ...) to values; they are handed
to ``raftlease.server.main_serve`` along with what the command line gives.
"""

from __future__ import annotations

import functools
import json
import sys


def main(argv: list[str]) -> int:
    overrides = {}
    if argv[:1] == ["--set"]:
        overrides = json.loads(argv[1])
        argv = argv[2:]
    import raftlease.server
    from raftlease.cli import build_parser

    if overrides:  # cmd_serve looks main_serve up when it runs
        raftlease.server.main_serve = functools.partial(raftlease.server.main_serve, **overrides)
    # The serve command itself, without cli.main's error handling: anything main_serve does
    # not handle stays a traceback (the harness tells a crash from a refusal by it).
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
