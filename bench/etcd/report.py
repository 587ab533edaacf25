"""Reprint the tables of a ``bench/run.py --with-etcd`` run from its JSON.

.venv/bin/python bench/etcd/report.py bench/results/<timestamp>-etcd.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from etcd import sidebyside

if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    sidebyside.report(json.loads(Path(sys.argv[1]).read_text()))
