"""Start one raftlease node for the harness: ``python node_launcher.py CONFIG.json``.

The config gives ``node_id``, ``listen``, ``peers`` (this node's own map: every peer address is
the harness proxy of the directed link this->peer), ``client_addresses`` (the real listen
addresses, for leader hints), ``data_dir``, ``cluster_id`` and NodeConfig ``overrides``.
We call ``raftlease.server.main_serve`` directly because it takes a per-node peer map plus
``client_addresses``; the ``raftlease serve`` CLI is used by nothing here.
"""

from __future__ import annotations

import json
import sys


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as f:
        cfg = json.load(f)
    from raftlease.server import main_serve

    main_serve(
        cfg["node_id"],
        cfg["listen"],
        cfg["peers"],
        cfg["data_dir"],
        cfg["cluster_id"],
        client_addresses=cfg["client_addresses"],
        **cfg.get("overrides", {}),
    )


if __name__ == "__main__":
    main()
