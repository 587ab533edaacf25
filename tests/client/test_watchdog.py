"""The pure parts of `raftlease run`'s watchdog and waiting reports, with a fake clock: the
deadline bookkeeping (`Feed`), the pipe protocol, the descendant walk, the margins, and what
the supervisor says while it waits (`WaitReport`)."""

from __future__ import annotations

import math

import pytest

from raftlease.client._common import lost_margin
from raftlease.client._watchdog import (
    Feed,
    descendants,
    format_reply,
    parse_message,
    watchdog_interval,
    watchdog_margin,
)
from raftlease.client.runner import WaitReport, short_error

# -- Feed: the deadline counts from the ping's send time --------------------------------------


def test_no_deadline_before_the_first_answer() -> None:
    feed = Feed(interval=0.2)
    assert not feed.fed
    assert not feed.expired(1e9)  # nothing started, nothing to kill
    assert feed.ping(10.0) == 1
    assert feed.ping(10.5) is None  # one ping outstanding at a time
    assert feed.wake_in(10.5) == 1.0  # just waits for the answer


def test_deadline_is_ping_time_plus_answer_not_read_time() -> None:
    feed = Feed(interval=0.2)
    seq = feed.ping(10.0)
    assert seq is not None
    # The answer arrives 3 s late (a stalled pipe or supervisor): the deadline still counts
    # from 10.0, never from 13.0, so a late answer can only make the watchdog kill earlier.
    assert feed.reply(seq, 1.5, now=13.0)
    assert feed.fed
    assert feed.deadline == pytest.approx(11.5)
    assert feed.expired(13.0)


def test_pings_follow_every_interval_and_extend_the_deadline() -> None:
    feed = Feed(interval=0.25)
    assert feed.ping(0.0) == 1
    assert feed.reply(1, 1.8, now=0.001)
    assert feed.ping(0.1) is None  # not due before t_ping + interval
    assert feed.wake_in(0.1) == pytest.approx(0.15)
    assert feed.ping(0.25) == 2
    assert feed.reply(2, 1.8, now=0.26)
    assert feed.deadline == pytest.approx(2.05)
    assert not feed.expired(2.0)
    assert feed.expired(2.05)


def test_unanswered_ping_lets_the_deadline_pass() -> None:
    feed = Feed(interval=0.25)
    feed.ping(0.0)
    feed.reply(1, 1.0, now=0.0)
    assert feed.ping(0.25) == 2  # the supervisor stops answering here
    assert feed.wake_in(0.5) == pytest.approx(0.5)  # wakes for the deadline, not for a ping
    assert feed.ping(0.9) is None
    assert not feed.expired(0.99)
    assert feed.expired(1.0)


def test_a_shorter_answer_moves_the_deadline_earlier() -> None:
    feed = Feed(interval=0.1)
    feed.ping(0.0)
    feed.reply(1, 5.0, now=0.0)
    feed.ping(0.1)
    feed.reply(2, 0.0, now=0.1)  # the lease is lost: kill now
    assert feed.expired(0.1)


@pytest.mark.parametrize(("seq", "seconds"), [(2, 1.0), (0, 1.0), (1, math.nan)])
def test_stale_unknown_or_bad_answers_are_ignored(seq: int, seconds: float) -> None:
    feed = Feed(interval=0.1)
    feed.ping(0.0)
    assert not feed.reply(seq, seconds, now=0.0)
    assert not feed.fed
    assert feed.outstanding == 1
    assert feed.reply(1, 1.0, now=0.0)
    assert not feed.reply(1, 9.0, now=0.0)  # answered already: a duplicate changes nothing
    assert feed.deadline == pytest.approx(1.0)


# -- the protocol -----------------------------------------------------------------------------


def test_protocol_lines() -> None:
    assert format_reply(7, 1.25) == b"D 7 1.250000\n"
    assert parse_message(format_reply(7, -0.5).decode()) == ("D", ("7", "-0.500000"))
    assert parse_message("P 3") == ("P", ("3",))
    assert parse_message("R 4242\n") == ("R", ("4242",))
    assert parse_message("X - refused") == ("X", ("-", "refused"))
    assert parse_message("X -9 deadline") == ("X", ("-9", "deadline"))
    assert parse_message("S 15") == ("S", ("15",))
    for bad in ("", "Q 1", "P", "D 1", "X 0", "S 1 2", "P 1 2"):
        assert parse_message(bad) is None, bad


# -- the descendant walk ----------------------------------------------------------------------


def test_descendants_parents_before_children() -> None:
    table = {
        10: 1,  # the watchdog
        11: 10,  # CMD
        12: 11,  # CMD's child
        13: 12,  # a grandchild
        14: 10,  # an orphan re-parented to the watchdog (it called setsid and lost its parent)
        20: 1,  # unrelated
        21: 20,
    }
    assert descendants(10, table) == [11, 14, 12, 13]
    assert descendants(11, table) == [12, 13]
    assert descendants(13, table) == []
    assert descendants(99, table) == []


def test_descendants_survive_a_cycle_in_a_torn_table() -> None:
    assert descendants(1, {2: 1, 3: 4, 4: 3}) == [2]
    assert descendants(1, {2: 1, 3: 2, 1: 3}) == [2, 3]


# -- margins ----------------------------------------------------------------------------------


@pytest.mark.parametrize("ttl", [1.0, 2.0, 5.0, 10.0, 60.0, 3600.0])
def test_the_watchdog_is_the_backstop_of_the_supervisors_own_kill(ttl: float) -> None:
    margin = watchdog_margin(ttl)
    supervisor_kill_at = lost_margin(ttl) + 0.1 * ttl  # SingletonRunner._thresholds
    assert 0 < margin < supervisor_kill_at
    assert margin >= min(0.1, 0.1 * ttl)  # time enough to kill and reap
    interval = watchdog_interval(ttl)
    assert 0 < interval <= ttl / 10
    assert interval <= 0.25


# -- WaitReport: what `raftlease run` says while it waits -------------------------------------

EPS = ["127.0.0.1:7001", "127.0.0.1:7002"]


def test_held_is_said_at_once_then_every_few_seconds() -> None:
    report = WaitReport("billing", EPS, started=100.0)
    assert (
        report.held("host:1", 42, 100.01) == "waiting for lease billing (held by host:1, token 42)"
    )
    assert report.held("host:1", 42, 101.0) is None  # no news
    assert not report.due(104.9)
    assert report.due(105.01)
    assert report.message(105.01) == (
        "still waiting for lease billing (held by host:1, token 42; 5.0 s so far)"
    )
    assert not report.due(106.0)
    report.refine("held", WaitReport.holder_detail("host:2", 43))
    assert report.due(110.02)
    assert report.message(112.4) == (
        "still waiting for lease billing (held by host:2, token 43; 12 s so far)"
    )
    assert report.summary() == "held by host:2, token 43"
    line = report.held("host:3", 44, 113.0)
    assert line is not None
    assert "held by host:3, token 44" in line


def test_unknown_is_said_after_half_a_second() -> None:
    report = WaitReport("x", EPS, started=0.0)
    assert not report.due(0.4)
    assert report.due(0.5)
    assert report.message(0.5) == (
        "waiting for lease x: no answer yet from the cluster at "
        "127.0.0.1:7001,127.0.0.1:7002 (0.5 s so far)"
    )
    assert report.summary() == "no answer from the cluster at 127.0.0.1:7001,127.0.0.1:7002"


def test_unavailable_names_the_endpoints_and_the_reason() -> None:
    report = WaitReport("x", EPS, started=0.0)
    grpc_text = (
        "UNAVAILABLE: failed to connect to all addresses; last error: UNKNOWN: "
        "ipv4:127.0.0.1:7001: Failed to connect to remote host: Connection refused"
    )
    assert report.unavailable(grpc_text, 12.3) == (
        "cluster unavailable at 127.0.0.1:7001,127.0.0.1:7002: Failed to connect to remote "
        "host: Connection refused; retrying (12 s so far)"
    )
    assert report.unavailable(grpc_text, 13.0) is None
    assert report.summary().startswith("cluster unavailable at 127.0.0.1:7001,127.0.0.1:7002: ")


def test_short_error() -> None:
    assert short_error("DEADLINE_EXCEEDED: Deadline Exceeded") == "Deadline Exceeded"
    assert short_error("plain\ntext") == "plain text"
    assert short_error("last error: ") == "last error:"


def test_from_status() -> None:
    down = {
        "leader": None,
        "nodes": [
            {"id": "a", "address": "h:1", "role": "unreachable", "error": "UNAVAILABLE: x"},
            {"id": "b", "address": "h:2", "role": "unreachable", "error": "UNAVAILABLE: y"},
        ],
    }
    assert WaitReport.from_status(down) == ("unavailable", "no node answers (h:1: x; and 1 more)")
    no_leader = {
        "leader": None,
        "nodes": [
            {"id": "n1", "role": "follower"},
            {"id": "n2", "role": "candidate"},
            {"id": "n3", "address": "h:3", "role": "unreachable", "error": "e"},
        ],
    }
    state, detail = WaitReport.from_status(no_leader)
    assert state == "unavailable"
    assert detail.startswith("no leader (2 of 3 nodes answer")
    led = {"leader": "n1", "nodes": [{"id": "n1", "role": "leader"}]}
    assert WaitReport.from_status(led) == (
        "unknown",
        "leader n1 is up; no answer to our request yet",
    )
