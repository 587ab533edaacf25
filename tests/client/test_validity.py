"""The client's validity arithmetic (docs/guarantees.md, guarantee 1), with a fake clock.

valid_until = max(valid_until, t_send + ttl * (1 - rho) / (1 + rho)), measured from the moment
the request was SENT; lost fires at valid_until - min(0.05 * ttl, 0.25 s); losing is final.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftlease.client import effective_ttl, lost_margin
from raftlease.client._common import LeaseTimer
from raftlease.errors import ConfigError


def test_effective_ttl_and_margin() -> None:
    assert effective_ttl(10.0, 0.01) == pytest.approx(10.0 * 0.99 / 1.01)
    assert effective_ttl(10.0, 0.0) == 10.0
    assert lost_margin(1.0) == pytest.approx(0.05)
    assert lost_margin(4.0) == pytest.approx(0.2)
    assert lost_margin(10.0) == 0.25
    assert lost_margin(3600.0) == 0.25


def test_timer_counts_from_send_time_not_receive_time() -> None:
    timer = LeaseTimer(10.0, 0.01)
    t_send = 100.0
    timer.on_success(t_send)  # the reply came back much later; that must not matter
    assert timer.valid_until == pytest.approx(100.0 + 10.0 * 0.99 / 1.01)
    assert timer.is_valid(105.0)
    assert not timer.is_valid(timer.valid_until)  # the deadline itself is already invalid
    assert timer.time_left(timer.valid_until + 1) == 0.0


def test_timer_never_moves_backwards() -> None:
    timer = LeaseTimer(10.0, 0.01)
    timer.on_success(100.0)
    later = timer.valid_until
    timer.on_success(90.0)  # a delayed answer to an older renewal
    assert timer.valid_until == later
    timer.on_success(103.0)
    assert timer.valid_until > later
    assert timer.renew_due() == pytest.approx(103.0 + 10.0 / 3)


def test_lost_is_final_and_precedes_expiry() -> None:
    timer = LeaseTimer(1.0, 0.01)
    timer.on_success(0.0)
    assert timer.lost_at() == pytest.approx(timer.valid_until - 0.05)
    assert timer.lost_at() < timer.valid_until
    assert timer.mark_lost()
    assert not timer.mark_lost()
    assert not timer.is_valid(0.1)
    assert timer.time_left(0.1) == 0.0
    before = timer.valid_until
    assert not timer.on_success(0.5)  # a late success cannot revive it
    assert timer.valid_until == before


def test_granted_ttl_replaces_requested() -> None:
    timer = LeaseTimer(10.0, 0.0)
    timer.on_success(0.0, 4.0)
    assert timer.ttl == 4.0
    assert timer.valid_until == 4.0
    assert timer.lost_margin == pytest.approx(0.2)


def test_bad_drift_is_refused() -> None:
    with pytest.raises(ConfigError, match="max_drift"):
        LeaseTimer(1.0, 1.0)


@given(
    ttl=st.floats(1.0, 3600.0),
    rho=st.floats(0.0, 0.1),
    client_rate=st.floats(-1.0, 1.0),
    server_rate=st.floats(-1.0, 1.0),
    send_real=st.floats(0.0, 1e6),
    delay=st.floats(0.0, 100.0),
    client_offset=st.floats(-1e6, 1e6),
)
def test_client_belief_ends_before_the_server_can_expire(
    ttl: float,
    rho: float,
    client_rate: float,
    server_rate: float,
    send_real: float,
    delay: float,
    client_offset: float,
) -> None:
    """Inequality (C1): the client's deadline, in real time, is never after the leader's.

    Client and leader clocks run at rates within [1 - rho, 1 + rho] of real time. The leader
    receives the request `delay` real seconds after it was sent and counts `ttl` on its own
    clock from then; the client counts effective_ttl from the send on its own clock.
    """
    rc = 1.0 + rho * client_rate  # the client's clock rate
    rs = 1.0 + rho * server_rate  # the leader's clock rate
    timer = LeaseTimer(ttl, rho)
    t_send_local = client_offset + send_real * rc
    timer.on_success(t_send_local)
    client_deadline_real = send_real + (timer.valid_until - t_send_local) / rc
    server_expiry_real = send_real + delay + ttl / rs
    assert client_deadline_real <= server_expiry_real + 1e-9 * max(1.0, server_expiry_real)
    assert math.isfinite(timer.lost_at())
