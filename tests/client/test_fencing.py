"""FencingGuard: the highest token per name wins; older tokens raise StaleToken."""

from __future__ import annotations

import threading

import pytest

from raftlease.client import FencingGuard, InvalidArgument, StaleToken
from raftlease.errors import RaftLeaseError


def test_guard_accepts_increasing_and_equal_tokens() -> None:
    guard = FencingGuard()
    assert guard.highest("a") is None
    guard.check("a", 5)
    guard.check("a", 5)  # the current holder may write again
    guard.check("a", 7)
    assert guard.highest("a") == 7
    guard.check("b", 1)  # names are independent
    assert guard.highest("b") == 1


def test_guard_rejects_stale_token() -> None:
    guard = FencingGuard()
    guard.check("a", 7)
    with pytest.raises(StaleToken) as info:
        guard.check("a", 6)
    err = info.value
    assert isinstance(err, RaftLeaseError)
    assert (err.name, err.token, err.highest) == ("a", 6, 7)
    assert "stale fencing token 6" in str(err)
    assert "7" in str(err)
    assert guard.highest("a") == 7  # a refused token changes nothing


@pytest.mark.parametrize("bad", [-1, 1.5, "3", True, None])
def test_guard_refuses_non_tokens(bad: object) -> None:
    with pytest.raises(InvalidArgument):
        FencingGuard().check("a", bad)  # type: ignore[arg-type]


def test_guard_is_atomic_under_threads() -> None:
    """Many threads race; the accepted tokens, in acceptance order, never decrease."""
    guard = FencingGuard()
    accepted: list[int] = []
    lock = threading.Lock()

    def worker(tokens: list[int]) -> None:
        for token in tokens:
            try:
                with lock:  # record acceptance order together with the check
                    guard.check("x", token)
                    accepted.append(token)
            except StaleToken:
                pass

    threads = [threading.Thread(target=worker, args=(list(range(i, 2000, 7)),)) for i in range(7)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert accepted == sorted(accepted)
    assert guard.highest("x") == max(accepted)


def test_guard_check_without_outer_lock_keeps_the_maximum() -> None:
    guard = FencingGuard()
    barrier = threading.Barrier(8)

    wrong: list[tuple[int, int]] = []

    def worker(base: int) -> None:
        barrier.wait()
        for token in range(base, 5000, 8):
            try:
                guard.check("y", token)
            except StaleToken as err:
                if err.highest <= token:
                    wrong.append((token, err.highest))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not wrong
    assert guard.highest("y") == 4999
