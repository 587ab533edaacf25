"""Pure quorum arithmetic (no state)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable


def quorum_size(voters: int) -> int:
    """Smallest majority of ``voters``."""
    return voters // 2 + 1


def quorum_value(values: Iterable[int], voters: int) -> int:
    """The largest value that at least a majority of ``voters`` have reached.

    ``values`` holds one number per voter (missing voters count as 0). Used for the commit
    index (over match indexes) and for the leader lease (over acknowledged send ticks).
    """
    ordered = sorted(values, reverse=True)
    q = quorum_size(voters)
    if len(ordered) < q:
        return 0
    return ordered[q - 1]
