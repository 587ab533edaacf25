"""Small shared types. Imports: stdlib only (layer L0)."""

from __future__ import annotations

import enum
import re
from typing import NewType

NodeId = NewType("NodeId", str)

#: A member id (and a certificate's node or client name): 1-64 letters, digits, '.', '_' or
#: '-', starting with a letter or digit: what a data dir, a log line, a metric label and a
#: certificate's URI SAN carry without quoting.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
NAME_MAX = 64


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre_candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"
