"""Configuration of the deterministic core, validated up front. Imports: types, errors (L0).

:meth:`RaftConfig.problems` lists every broken rule, one message each, naming the rule;
:meth:`RaftConfig.validate` raises them all at once as :class:`InvalidConfig` (a
:class:`ConfigError`). Nothing here uses ``assert`` (it vanishes under ``python -O``).
The server's own settings (tick length, addresses, ...) are ``raftlease.settings.ServerConfig``,
which derives a RaftConfig from them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

from raftlease.errors import ConfigError
from raftlease.types import NodeId

if TYPE_CHECKING:
    from collections.abc import Iterable

#: Bound on every clock's rate error (1 %), for the core and the server alike: it sizes the
#: leader lease, so every member must use the same value (docs/safety.md, L1).
DEFAULT_MAX_DRIFT = 0.01


class InvalidConfig(ConfigError):
    """A configuration broke one or more rules. ``problems``: one message per broken rule, in
    rule order; ``str()`` is those messages, one a line (just the message when there is one)."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


def lease_margin_ticks(election_ticks_min: int) -> int:
    """Real-time slack, in ticks, kept between the end of the leader's lease and the end of the
    followers' vote stickiness: a fifth of the minimum election timeout, at least 2 ticks
    (40 ms at the server's 10 ms ticks and 200 ms minimum election timeout)."""
    return max(2, math.ceil(election_ticks_min / 5))


def max_safe_lease_ticks(election_ticks_min: int, max_drift: float) -> int:
    """The largest leader-lease window (in ticks) that is safe for these settings.

    A follower that heard from the leader refuses votes for ``election_ticks_min`` of its own
    ticks; with one tick lost to granularity that is at least ``(E - 1) * tick / (1 + rho)``
    real seconds after the leader *sent* the heartbeat. The leader uses its lease for
    ``lease_ticks`` of its own ticks counted from that send, i.e. at most
    ``lease_ticks * tick / (1 - rho)`` real seconds. We require the lease to end at least
    :func:`lease_margin_ticks` real ticks before the stickiness can:

        lease_ticks / (1 - rho) + margin  <=  (E - 1) / (1 + rho)

    so that a message dated a few ticks early, or a scheduling delay nobody foresaw, cannot
    eat the whole margin. Exact rational arithmetic: no float rounding can make it unsafe.
    See docs/safety.md, inequality (L1).
    """
    rho = Fraction(max_drift)
    e = election_ticks_min
    bound = (1 - rho) * (Fraction(e - 1) / (1 + rho) - lease_margin_ticks(e))
    return math.floor(bound)


@dataclass(frozen=True, slots=True)
class RaftConfig:
    """Settings of the deterministic core. All durations are in ticks of the local clock.

    The defaults below are the bare core's (the simulator, the core's tests). A server never
    uses the timing defaults: ``ServerConfig.raft_config()`` passes node id, voters, election
    and heartbeat ticks and ``max_drift`` explicitly and leaves only the rest to these.

    node_id: this node's id; must be one of ``voters`` (unless ``voters`` is empty).
    voters: the bootstrap voters, this node included (1, 3 or 5 typical): the configuration
        until the log holds another (membership changes). Empty for a node that joins an
        existing cluster: it has no configuration, never campaigns and refuses votes until
        the leader replicates one that contains it.
    election_ticks_min / election_ticks_max: a follower that hears nothing from a leader for a
        random number of ticks drawn from [min, max) starts a (pre-)election. Default 10..20.
        Also: a node that heard from a live leader within ``election_ticks_min`` ticks refuses
        votes (leader stickiness), and a leader that has not heard from a quorum within
        ``election_ticks_min`` ticks steps down (CheckQuorum).
    heartbeat_ticks: the leader sends AppendEntries to every peer this often. Default 2; at most
        half of ``election_ticks_min`` (a follower then waits out at least one lost heartbeat
        before it asks for pre-votes), and below the leader-lease window, which is renewed by
        the answers to heartbeats.
    lease_ticks: the leader-lease window: the leader serves lease operations only while a
        quorum acknowledged a heartbeat it sent within the last ``lease_ticks`` ticks. ``None``
        (default) picks :func:`max_safe_lease_ticks`. A larger value is refused.
    max_drift: bound on every clock's rate error (0.01 = 1 %). Used only to size the lease.
    max_entries_per_append: batching limit for one AppendEntries.
    max_inflight: pipelining limit: AppendEntries sent to one peer without an answer.
    pre_vote / check_quorum: the two liveness/safety extensions; both on by default. The leader
        lease needs both (:meth:`validate` refuses a lease without them).
    """

    node_id: NodeId
    voters: tuple[NodeId, ...]
    election_ticks_min: int = 10
    election_ticks_max: int = 20
    heartbeat_ticks: int = 2
    lease_ticks: int | None = None
    max_drift: float = DEFAULT_MAX_DRIFT
    max_entries_per_append: int = 512
    max_inflight: int = 64
    pre_vote: bool = True
    check_quorum: bool = True

    def validate(self) -> None:
        """Raise :class:`InvalidConfig` listing every broken rule (see :meth:`problems`)."""
        problems = self.problems()
        if problems:
            raise InvalidConfig(problems)

    def problems(self) -> list[str]:
        """One message per broken rule, in rule order; empty when the configuration is valid."""
        return self.membership_problems() + self.timing_problems()

    def membership_problems(self) -> list[str]:
        """The rules about ``node_id`` and ``voters``."""
        out: list[str] = []
        if not self.node_id:
            out.append("node_id must be a non-empty string")
        if len(set(self.voters)) != len(self.voters):
            out.append(f"voters must be distinct, got {list(self.voters)}")
        if self.node_id and self.voters and self.node_id not in self.voters:
            out.append(f"node_id {self.node_id!r} must be one of voters {list(self.voters)}")
        return out

    def timing_problems(self) -> list[str]:
        """Every other rule: the timing inequalities of the safety argument (docs/safety.md)
        and the batching limits. A rule that cannot be evaluated because another one is broken
        (the lease bound with an out-of-range ``max_drift``) is skipped, not reported twice."""
        out: list[str] = []
        drift_ok = 0.0 <= self.max_drift < 0.2  # False for NaN too
        if not drift_ok:
            out.append(f"max_drift must be in [0, 0.2), got {self.max_drift}")
        if self.heartbeat_ticks < 1:
            out.append(f"heartbeat_ticks must be >= 1, got {self.heartbeat_ticks}")
        elif self.election_ticks_min < 2 * self.heartbeat_ticks:
            out.append(
                "election_ticks_min must be at least 2 * heartbeat_ticks "
                f"(got {self.election_ticks_min} < 2 * {self.heartbeat_ticks})"
            )
        if self.election_ticks_max <= self.election_ticks_min:
            out.append(
                "election_ticks_max must be greater than election_ticks_min "
                f"(got {self.election_ticks_max} <= {self.election_ticks_min})"
            )
        if self.max_entries_per_append < 1:
            out.append("max_entries_per_append must be >= 1")
        if self.max_inflight < 1:
            out.append("max_inflight must be >= 1")
        if self.lease_ticks is not None:
            if not (self.pre_vote and self.check_quorum):
                out.append("a leader lease needs pre_vote and check_quorum enabled")
            if self.lease_ticks < 1:
                out.append(f"lease_ticks must be >= 1, got {self.lease_ticks}")
            elif drift_ok and self.lease_ticks > (
                safe := max_safe_lease_ticks(self.election_ticks_min, self.max_drift)
            ):
                out.append(
                    f"lease_ticks={self.lease_ticks} is unsafe: it must be at most "
                    f"{safe} = floor((1-max_drift)*((election_ticks_min-1)/(1+max_drift) - "
                    f"{lease_margin_ticks(self.election_ticks_min)})) "
                    f"for election_ticks_min={self.election_ticks_min}, "
                    f"max_drift={self.max_drift}"
                )
        elif (
            drift_ok
            and self.pre_vote
            and self.check_quorum
            and max_safe_lease_ticks(self.election_ticks_min, self.max_drift) < 1
        ):
            out.append(
                f"election_ticks_min={self.election_ticks_min} leaves no safe leader-lease "
                f"window at max_drift={self.max_drift}; raise election_ticks_min"
            )
        lease = self.effective_lease_ticks if drift_ok or self.lease_ticks is not None else 0
        if 1 <= lease <= self.heartbeat_ticks:
            out.append(
                f"the leader lease ({lease} ticks) must outlast one heartbeat interval "
                f"({self.heartbeat_ticks} ticks), or it lapses between heartbeats even on an "
                "idle network; raise election_ticks_min or lower heartbeat_ticks"
            )
        return out

    @property
    def effective_lease_ticks(self) -> int:
        """The lease window in use: ``lease_ticks`` or the largest safe one (0 = no lease)."""
        if self.lease_ticks is not None:
            return self.lease_ticks
        if not (self.pre_vote and self.check_quorum):
            return 0
        return max(0, max_safe_lease_ticks(self.election_ticks_min, self.max_drift))
