"""Small shared types. Imports: stdlib only (layer L0)."""

from __future__ import annotations

import enum
from typing import NewType

NodeId = NewType("NodeId", str)


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre_candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"
