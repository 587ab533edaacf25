"""A worker for ``raftlease run`` that proves it is alive and reports its progress
(docs/singleton.md, "Child checks")::

    raftlease run billing --ttl 5s --heartbeat-timeout 3s -- python examples/heartbeat_worker.py

Each loop does one unit of work, then beats with a small status payload; the supervisor sends
it as the lease's health map, so ``raftlease holder billing`` shows ``queue_depth`` and
``last_id``. Outside ``raftlease run``, :func:`raftlease.heartbeat.beat` does nothing.
"""

from __future__ import annotations

import os
import time

from raftlease.heartbeat import beat, interval


def main() -> None:
    token = int(os.environ.get("RAFTLEASE_FENCING_TOKEN", "0"))
    period = interval() or 1.0  # a third of --heartbeat-timeout
    last_id = 990
    while True:
        last_id += 1  # stands for one unit of work, written with `token` to its resource
        beat(queue_depth=last_id % 5, last_id=last_id, token=token)
        time.sleep(period)


if __name__ == "__main__":
    main()
