"""Client helpers that need no server: durations, endpoints, backoff, routing, status merge."""

from __future__ import annotations

import random
from typing import Any

import grpc
import pytest

from raftlease.client import DEFAULT_ENDPOINTS, ENDPOINTS_ENV, parse_duration, parse_endpoints
from raftlease.client._common import (
    Attempts,
    Backoff,
    LeaseInfo,
    Router,
    WatchDedup,
    WatchEvent,
    format_duration,
    merge_status,
    metadata_leader_hint,
    seconds_to_ms,
)
from raftlease.client._rpc import rpc_failure
from raftlease.client.errors import InvalidArgument
from raftlease.client.runner import exit_code, restart_delay
from raftlease.errors import ConfigError
from raftlease.v1 import cluster_pb2, lease_pb2


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("10s", 10.0),
        ("500ms", 0.5),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("7", 7.0),
        ("1.5s", 1.5),
        (".25", 0.25),
        (" 3s ", 3.0),
        ("0", 0.0),
        ("250 ms", 0.25),
    ],
)
def test_parse_duration_accepts(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "10x", "-1s", "1d", "ten", "1e3", "nan", "inf", "1s2"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration") as info:
        parse_duration(text)
    assert "ms, s, m or h" in str(info.value)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.25, "250ms"), (10.0, "10s"), (1.5, "1.5s"), (120.0, "2m"), (3600.0, "1h"), (90.0, "90s")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_parse_endpoints_forms() -> None:
    assert parse_endpoints("a:1, b:2 ,,a:1") == ["a:1", "b:2"]
    assert parse_endpoints(["a:1", "b:2,c:3"]) == ["a:1", "b:2", "c:3"]
    assert parse_endpoints("[::1]:7001") == ["[::1]:7001"]
    assert parse_endpoints("node-1.example.com:443") == ["node-1.example.com:443"]


def test_parse_endpoints_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENDPOINTS_ENV, raising=False)
    assert parse_endpoints(None) == list(DEFAULT_ENDPOINTS)
    assert DEFAULT_ENDPOINTS == ("127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003")
    monkeypatch.setenv(ENDPOINTS_ENV, "10.0.0.1:9000,10.0.0.2:9000")
    assert parse_endpoints(None) == ["10.0.0.1:9000", "10.0.0.2:9000"]
    monkeypatch.setenv(ENDPOINTS_ENV, "  ")
    assert parse_endpoints(None) == list(DEFAULT_ENDPOINTS)


@pytest.mark.parametrize("bad", ["localhost", "a:0", "a:70000", "a:b", ":7001", "a b:1", ""])
def test_parse_endpoints_refuses(bad: str) -> None:
    with pytest.raises(ConfigError):
        parse_endpoints(bad)


def test_seconds_to_ms() -> None:
    assert seconds_to_ms("ttl", 1.0) == 1000
    assert seconds_to_ms("ttl", 0.0015) == 2
    assert seconds_to_ms("ttl", 0) == 0
    for bad in (-1.0, float("nan"), float("inf"), "1", True):
        with pytest.raises(InvalidArgument, match="ttl"):
            seconds_to_ms("ttl", bad)


def test_backoff_is_jittered_exponential_and_capped() -> None:
    backoff = Backoff(rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(12)]
    for i, delay in enumerate(delays):
        nominal = min(0.5, 0.01 * 2**i)
        assert nominal / 2 <= delay <= nominal
    assert max(delays) <= 0.5
    backoff.reset()
    assert backoff.next_delay() <= 0.01


def test_router_follows_hint_then_rotates() -> None:
    router = Router(["a:1", "b:2", "c:3"])
    assert router.pick() == "a:1"
    assert router.failed("a:1", "z:9") == "z:9"  # a hint may name an address outside the list
    assert router.pick() == "z:9"
    assert router.failed("z:9", None) in ("a:1", "b:2", "c:3")
    assert router.leader is None
    router.succeeded("b:2")
    assert router.pick() == "b:2"
    assert router.failed("b:2", None) == "c:3"
    assert router.failed("c:3", "c:3") == "a:1"  # a hint naming the failed node is no help


def test_leader_hint_from_metadata() -> None:
    assert metadata_leader_hint((("raftlease-leader", "h:1"),)) == "h:1"
    assert metadata_leader_hint((("raftlease-leader", b"h:2"),)) == "h:2"
    assert metadata_leader_hint((("other", "x"), ("raftlease-leader", ""))) is None
    assert metadata_leader_hint(None) is None


def test_restart_delay_and_exit_code() -> None:
    assert [restart_delay(n) for n in range(1, 9)] == [0, 1, 2, 4, 8, 16, 30, 30]
    assert exit_code(3) == 3
    assert exit_code(-9) == 137
    assert exit_code(-15) == 143


def test_lease_info_and_watch_event_from_pb() -> None:
    pb = lease_pb2.LeaseInfo(
        name="x", lease_id=4, fencing_token=9, holder="h", ttl_ms=1500, remaining_ms=250, waiters=2
    )
    pb.metadata["k"] = "v"
    info = LeaseInfo.from_pb(pb)
    assert (info.ttl, info.remaining, info.metadata, info.waiters) == (1.5, 0.25, {"k": "v"}, 2)
    ev = WatchEvent.from_pb(
        lease_pb2.WatchEvent(kind=lease_pb2.WatchEvent.KIND_EXPIRED, lease=pb, index=12)
    )
    assert (ev.kind, ev.name, ev.index) == ("expired", "x", 12)
    dedup = WatchDedup()
    assert dedup.admit(ev)
    assert not dedup.admit(ev)  # replayed after a reconnect
    assert dedup.admit(WatchEvent("current", "x", info, 3))


def _status(
    node_id: str, leader: str, term: int, nodes: list[cluster_pb2.NodeStatus]
) -> cluster_pb2.StatusResponse:
    return cluster_pb2.StatusResponse(
        cluster_id="c",
        node_id=node_id,
        leader_id=leader,
        term=term,
        nodes=nodes,
        leader_address="127.0.0.1:1" if leader == "n1" else "",
    )


def test_merge_status() -> None:
    ns = cluster_pb2.NodeStatus
    leader_view = [
        ns(
            id="n1",
            address="127.0.0.1:1",
            role="leader",
            term=3,
            commit_index=9,
            applied_index=9,
            last_heard_ms=-1,
            reachable=True,
        ),
        ns(
            id="n2",
            address="127.0.0.1:2",
            role="follower",
            term=3,
            commit_index=9,
            applied_index=8,
            last_heard_ms=15,
            lag=0,
            match_index=9,
            reachable=True,
        ),
        ns(
            id="n3",
            address="127.0.0.1:3",
            role="follower",
            term=3,
            commit_index=5,
            applied_index=5,
            last_heard_ms=4000,
            lag=4,
            match_index=5,
            missed_heartbeats=80,
            reachable=False,
        ),
    ]
    answers: dict[str, cluster_pb2.StatusResponse | str] = {
        "127.0.0.1:1": _status("n1", "n1", 3, leader_view),
        "127.0.0.1:2": _status(
            "n2",
            "n1",
            3,
            [
                ns(
                    id="n2",
                    address="127.0.0.1:2",
                    role="follower",
                    term=3,
                    commit_index=9,
                    applied_index=9,
                    last_heard_ms=-1,
                )
            ],
        ),
        "127.0.0.1:3": "DEADLINE_EXCEEDED: Deadline Exceeded",
    }
    merged = merge_status(list(answers), answers)
    assert merged["leader"] == "n1"
    assert merged["leader_address"] == "127.0.0.1:1"
    assert merged["term"] == 3
    by_id = {n["id"]: n for n in merged["nodes"]}
    assert [n["id"] for n in merged["nodes"]] == ["n1", "n2", "n3"]
    assert by_id["n1"]["role"] == "leader"
    assert by_id["n1"]["last_heard_ms"] == 0
    assert by_id["n2"]["applied_index"] == 9  # its own view wins for its own indexes
    assert by_id["n2"]["last_heard_ms"] == 15  # liveness as seen by the leader
    assert by_id["n3"]["role"] == "unreachable"
    assert by_id["n3"]["last_heard_ms"] == 4000
    assert by_id["n3"]["lag"] == 4
    assert "Deadline" in by_id["n3"]["error"]
    for node in merged["nodes"]:
        for key in ("id", "address", "role", "term", "commit_index", "last_heard_ms"):
            assert key in node


def test_merge_status_without_leader() -> None:
    answers: dict[str, cluster_pb2.StatusResponse | str] = {
        "h:1": _status("n1", "", 2, []),
        "h:2": "UNAVAILABLE: connection refused",
    }
    merged = merge_status(list(answers), answers)
    assert merged["leader"] is None
    roles = {n["address"]: n["role"] for n in merged["nodes"]}
    assert roles == {"h:1": "unknown", "h:2": "unreachable"}
    assert merge_status(["h:9"], {"h:9": "down"})["nodes"][0]["role"] == "unreachable"


class _FakeRpcError(grpc.RpcError):
    def __init__(self, hint: str | None = None) -> None:
        self._hint = hint

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return "not the leader"

    def trailing_metadata(self) -> Any:
        return (("raftlease-leader", self._hint),) if self._hint else ()


def test_attempts_follow_hints_at_once_and_back_off_per_round() -> None:
    router = Router(["a:1", "b:2", "c:3"])
    attempts = Attempts("op", deadline=10.0, rng=random.Random(0), round_size=3)
    nxt, delay = attempts.failed(router, "a:1", rpc_failure(_FakeRpcError("b:2")))
    assert (nxt, delay) == ("b:2", 0.0)  # a fresh hint: no sleep
    delays = []
    target = "b:2"
    for _ in range(9):
        target, delay = attempts.failed(router, target, rpc_failure(_FakeRpcError()))
        delays.append(delay)
    # three attempts per level: 10 ms, then 20 ms, then 40 ms (jittered down to half)
    for i, delay in enumerate(delays):
        nominal = 0.01 * 2 ** (i // 3)
        assert nominal / 2 <= delay <= nominal
    assert "UNAVAILABLE: not the leader" in attempts.last_error
    attempts.note("a:1")
    attempts.note("a:1")
    err = attempts.unavailable(5.0)
    assert err.tried == ("a:1",)
    assert "tried a:1; last error: UNAVAILABLE: not the leader" in str(err)


class _Status(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


def test_a_server_limit_is_not_retried_and_names_the_limit() -> None:
    """RESOURCE_EXHAUSTED is a server limit (docs/operations.md, "Limits"): the caller gets
    LimitExceeded with the server's one line at once, instead of retries until its timeout."""
    from raftlease.client import LimitExceeded
    from raftlease.client._rpc import is_retriable, map_rpc_error

    err = _Status(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "client 127.0.0.1 has 2 Acquire calls waiting: the limit is 2 (--max-waits-per-client)",
    )
    assert not is_retriable(err)
    mapped = map_rpc_error(err)
    assert isinstance(mapped, LimitExceeded)
    assert "--max-waits-per-client" in str(mapped)
    assert is_retriable(_Status(grpc.StatusCode.UNAVAILABLE, "not the leader"))
