"""Per-peer replication progress, kept by the leader (etcd's Progress, simplified)."""

from __future__ import annotations

import enum
from collections import deque


class ProgressState(enum.Enum):
    PROBE = "probe"  # next_index unknown: one AppendEntries at a time until one succeeds
    REPLICATE = "replicate"  # pipelining: send optimistically, up to max_inflight unacked
    SNAPSHOT = "snapshot"  # an InstallSnapshot is on its way


class Progress:
    __slots__ = (
        "ack_tick",
        "applied_index",
        "beat_tick",
        "hb_match",
        "inflight",
        "last_heard_tick",
        "last_snapshot_tick",
        "lost_entries",
        "match_index",
        "match_tick",
        "next_index",
        "probe_sent",
        "recent_active",
        "state",
    )

    def __init__(self, next_index: int) -> None:
        self.match_index = 0
        self.next_index = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False  # PROBE: an append is outstanding; wait for its answer
        self.inflight: deque[int] = deque()  # REPLICATE: last index of each unacked append
        self.recent_active = False  # heard anything since the last CheckQuorum round
        self.ack_tick = -1  # highest own send_tick this peer acknowledged in this term
        self.last_heard_tick = -1
        self.last_snapshot_tick = -(10**9)
        self.applied_index = 0
        self.match_tick = -1  # own tick at which match_index last rose
        self.lost_entries = 0  # times this follower's log was found shorter than its match
        self.hb_match = -1  # match_index at the previous heartbeat (loss detection)
        self.beat_tick = -1  # own tick of the last empty append at the match point sent

    def become_probe(self) -> None:
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.inflight.clear()
        self.next_index = max(self.next_index, self.match_index + 1)

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.inflight.clear()
        self.next_index = self.match_index + 1

    def free_inflight(self, upto: int) -> None:
        inflight = self.inflight
        while inflight and inflight[0] <= upto:
            inflight.popleft()
