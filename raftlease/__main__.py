"""``python -m raftlease``: the same as the ``raftlease`` console script."""

from raftlease.cli import main

raise SystemExit(main())
