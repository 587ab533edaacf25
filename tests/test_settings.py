"""ServerConfig (raftlease/settings.py): the server's one validated configuration.

Its defaults, the RaftConfig it derives, the safety-settings line peers compare on the wire
(unchanged), and validate(): one message per broken rule, all of them at once, named by field
or by the serve flags; and the server's start-up checks built on it (check_serve_settings,
check_server_config, ServeRefused).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest

from raftlease.config import InvalidConfig, RaftConfig
from raftlease.errors import ConfigError
from raftlease.fsm.keeper import INHERITED_WAIT_GRACE_S
from raftlease.node import NodeConfig
from raftlease.server import (
    SERVE_FLAGS,
    ServeRefused,
    check_serve_settings,
    check_server_config,
    listen_problems,
)
from raftlease.settings import TICK_MAX_S, TICK_MIN_S, ServerConfig
from raftlease.types import NodeId

N1, N2, N3 = NodeId("n1"), NodeId("n2"), NodeId("n3")
PEERS = {N1: "127.0.0.1:7001", N2: "127.0.0.1:7002", N3: "127.0.0.1:7003"}


def cfg(**kw: Any) -> ServerConfig:
    kw.setdefault("node_id", N1)
    kw.setdefault("cluster_id", "c")
    kw.setdefault("peers", PEERS)
    return ServerConfig(**kw)


def test_defaults() -> None:
    c = cfg()
    assert (c.tick_s, c.election_ticks_min, c.election_ticks_max, c.heartbeat_ticks) == (
        0.01,
        20,
        40,
        10,
    )
    assert (c.max_drift, c.snapshot_entries, c.seed) == (0.01, 10_000, None)
    assert c.client_addresses == {}
    assert c.raft_overrides == {}
    assert c.inherited_wait_grace_s == INHERITED_WAIT_GRACE_S  # the lease service's default
    assert c.problems() == []
    c.validate()


def test_nodeconfig_is_serverconfig() -> None:
    assert NodeConfig is ServerConfig


def test_safety_settings_line_is_unchanged() -> None:
    # Peers compare this string when a link opens: it must not change.
    assert cfg().safety_settings() == (
        "tick=10ms election=20-40 heartbeat=10 lease=14 max_drift=0.01"
    )
    assert cfg(tick_s=0.02).safety_settings() == (
        "tick=20ms election=20-40 heartbeat=10 lease=14 max_drift=0.01"
    )
    assert cfg(raft_overrides={"lease_ticks": 12}).safety_settings() == (
        "tick=10ms election=20-40 heartbeat=10 lease=12 max_drift=0.01"
    )


def test_raft_config_is_derived() -> None:
    rc = cfg(node_id=N2, heartbeat_ticks=5, max_drift=0.02, raft_overrides={"max_inflight": 8})
    expected = RaftConfig(
        node_id=N2,
        voters=(N1, N2, N3),
        election_ticks_min=20,
        election_ticks_max=40,
        heartbeat_ticks=5,
        max_drift=0.02,
        max_inflight=8,
    )
    assert rc.raft_config() == expected
    # What a server does not set comes from RaftConfig's defaults, declared there only.
    core_defaults = RaftConfig(N1, (N1,))
    assert cfg().raft_config().max_entries_per_append == core_defaults.max_entries_per_append
    assert cfg().raft_config().lease_ticks is None


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"node_id": NodeId("")}, "node_id must not be empty"),
        (
            {"node_id": NodeId("n4")},
            "node_id 'n4' is not one of peers (n1, n2, n3): list every member in peers, this "
            "node included, identically on every node",
        ),
        (
            {"client_addresses": {N1: "h:1", NodeId("n9"): "h:9"}},
            "client_addresses names n9, not one of peers (n1, n2, n3): give addresses of "
            "members only",
        ),
        (
            {"cluster_id": "  "},
            "cluster_id must not be empty: give every member the same non-empty id",
        ),
        (
            {"tick_s": 0.0},
            "tick_s 0ms is outside the allowed range 1ms..100ms (default 10ms; elections take "
            "20-40 ticks, heartbeats every 10)",
        ),
        (
            {"tick_s": math.nan},
            "tick_s nan is outside the allowed range 1ms..100ms (default 10ms; elections take "
            "20-40 ticks, heartbeats every 10)",
        ),
        (
            {"raft_overrides": {"bogus": 1, "heartbeat_ticks": 2}},
            "raft_overrides may set only check_quorum, lease_ticks, max_entries_per_append, "
            "max_inflight, pre_vote; got bogus, heartbeat_ticks",
        ),
        # The core's timing rules, each with why it exists (the server's reason appended).
        (
            {"heartbeat_ticks": 11},
            "election_ticks_min must be at least 2 * heartbeat_ticks (got 20 < 2 * 11); a "
            "follower must be able to miss one heartbeat before it calls an election, or a "
            "single lost message deposes a healthy leader",
        ),
        (
            {"election_ticks_max": 20},
            "election_ticks_max must be greater than election_ticks_min (got 20 <= 20); each "
            "follower draws its election timeout at random from [min, max), so that they do "
            "not all stand at once and split the vote",
        ),
        (
            {"max_drift": 0.5},
            "max_drift must be in [0, 0.2), got 0.5; it bounds every clock's rate error "
            "(0.01 = 1 %) and sizes the leader lease (L1)",
        ),
        (
            {"raft_overrides": {"lease_ticks": 15}},
            "lease_ticks=15 is unsafe: it must be at most 14 = floor((1-max_drift)*("
            "(election_ticks_min-1)/(1+max_drift) - 4)) for election_ticks_min=20, "
            "max_drift=0.01; a longer leader lease could still be in force when the "
            "followers' vote stickiness (election_ticks_min ticks, less drift) ends and they "
            "elect a new leader",
        ),
        (
            {"election_ticks_min": 3, "election_ticks_max": 6, "heartbeat_ticks": 1},
            "election_ticks_min=3 leaves no safe leader-lease window at max_drift=0.01; raise "
            "election_ticks_min; the leader lease must end a margin (a fifth of "
            "election_ticks_min, at least 2 ticks) before the followers' vote stickiness does, "
            "both counted with max_drift against them",
        ),
        # Not a core rule: the core runs without a leader lease, a server cannot.
        (
            {"raft_overrides": {"check_quorum": False}},
            "raft_overrides turns off check_quorum: a server serves renewals and reads only "
            "under its leader lease, which needs both (PreVote keeps a rejoining node from "
            "deposing the leader, CheckQuorum steps a cut-off leader down); leave them on",
        ),
        ({"snapshot_entries": 0}, "snapshot_entries must be >= 1, got 0"),
        (
            {"inherited_wait_grace_s": -1.0},
            "inherited_wait_grace_s must be a finite number of seconds >= 0, got -1.0",
        ),
    ],
)
def test_each_rule_has_one_message(kw: dict[str, Any], message: str) -> None:
    c = cfg(**kw)
    assert c.problems() == [message]
    with pytest.raises(ConfigError) as exc:
        c.validate()
    assert str(exc.value) == message


def test_every_broken_rule_is_listed_once_one_a_line() -> None:
    bad = cfg(
        node_id=NodeId("n4"),
        cluster_id="",
        tick_s=0.5,
        election_ticks_min=8,
        election_ticks_max=8,
        heartbeat_ticks=5,
    )
    with pytest.raises(InvalidConfig) as exc:
        bad.validate()
    assert str(exc.value).splitlines() == list(exc.value.problems) == bad.problems()
    assert bad.problems() == [
        # one message for the node id, not RaftConfig's "must be one of voters" as well
        "node_id 'n4' is not one of peers (n1, n2, n3): list every member in peers, this node "
        "included, identically on every node",
        "cluster_id must not be empty: give every member the same non-empty id",
        "tick_s 500ms is outside the allowed range 1ms..100ms (default 10ms; elections take "
        "8-8 ticks, heartbeats every 5)",
        "election_ticks_min must be at least 2 * heartbeat_ticks (got 8 < 2 * 5); a follower "
        "must be able to miss one heartbeat before it calls an election, or a single lost "
        "message deposes a healthy leader",
        "election_ticks_max must be greater than election_ticks_min (got 8 <= 8); each "
        "follower draws its election timeout at random from [min, max), so that they do not "
        "all stand at once and split the vote",
        "the leader lease (4 ticks) must outlast one heartbeat interval (5 ticks), or it lapses "
        "between heartbeats even on an idle network; raise election_ticks_min or lower "
        "heartbeat_ticks",
    ]


def test_names_map_fields_to_the_callers_words() -> None:
    bad = cfg(node_id=NodeId("n4"), tick_s=1.0)
    assert bad.problems(SERVE_FLAGS) == [
        "--id 'n4' is not one of --peers (n1, n2, n3): list every member in --peers, this node "
        "included, identically on every node",
        "--tick 1s is outside the allowed range 1ms..100ms (default 10ms; elections take 20-40 "
        "ticks, heartbeats every 10)",
    ]


def test_tick_range_bounds_are_inclusive() -> None:
    assert cfg(tick_s=TICK_MIN_S).problems() == []
    assert cfg(tick_s=TICK_MAX_S).problems() == []
    assert len(cfg(tick_s=TICK_MAX_S * 1.01).problems()) == 1


def test_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg().tick_s = 0.02  # type: ignore[misc]


# -- the server's start-up checks on top of ServerConfig -------------------------------------


def test_check_serve_settings_keeps_its_refusal_messages() -> None:
    with pytest.raises(ServeRefused, match=r"^--id 'n4' is not one of --peers \(n1, n2\): "):
        check_serve_settings("n4", "h:1", {"n1": "h:1", "n2": "h:2"}, "c")
    with pytest.raises(ServeRefused) as exc:
        check_serve_settings("n1", "h:2", {"n1": "h:1"}, "c")
    assert str(exc.value) == (
        "--listen h:2 does not match this node's own --peers entry n1=h:1: the port must be "
        "the one the others reach this node on"
    )
    with pytest.raises(ServeRefused, match=r"^--cluster-id must not be empty"):
        check_serve_settings("n1", "h:1", {"n1": "h:1"}, "")
    with pytest.raises(ServeRefused, match=r"^--tick 0ms is outside the allowed range 1ms\.\."):
        check_serve_settings("n1", "h:1", {"n1": "h:1"}, "c", tick_s=0.0)
    check_serve_settings("n1", "h:1", {"n1": "h:1"}, "c", {"n1": "proxy:1"}, 0.01)


def test_server_refusal_lists_every_problem_on_one_line() -> None:
    bad = ServerConfig(
        node_id=N1,
        cluster_id="",
        peers={N1: "h:1"},
        client_addresses={N1: "h:3"},
        tick_s=0.0,
    )
    assert listen_problems(bad, "h:1") == [
        "--listen h:1 does not match this node's own --client-addresses entry n1=h:3: the "
        "port must be the one the others reach this node on"
    ]
    with pytest.raises(ServeRefused) as exc:
        check_server_config(bad, "h:1")
    assert exc.value.problems[0].startswith("--cluster-id must not be empty")
    assert exc.value.problems[1].startswith("--tick 0ms is outside")
    assert exc.value.problems[2].startswith("--listen h:1 does not match")
    assert str(exc.value).startswith("3 problems: (1) --cluster-id must not be empty")
    assert "; (2) --tick 0ms" in str(exc.value)
    assert "\n" not in str(exc.value)


def test_listen_that_is_not_host_port() -> None:
    assert listen_problems(cfg(), "nope") == ["'nope' is not HOST:PORT"]
