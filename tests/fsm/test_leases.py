"""raftlease.fsm.leases: the replicated lease table.

Covers every apply rule (grant, idempotent retry, FIFO queue and same-entry handover, release,
expiry including stale expiries, cancelled waits, rejected commands), fencing-token
monotonicity per name, the reads, snapshots (format 2's canonical bytes, format 1 still read,
round trip, garbage in both, shared holder strings and ints), purity of the module's imports,
and two property tests: replicas that apply the same entries (one of them restored from a
snapshot midway) end byte-identical, and a stateful test against a naive model that also
checks "at most one current lease per name; tokens strictly increase per name".
"""

from __future__ import annotations

import ast
import gc
import hashlib
import itertools
import json
import pathlib
import random
import zlib
from collections import defaultdict
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import raftlease.fsm
from raftlease.fsm import (
    Acquire,
    ApplyResult,
    CancelWait,
    Command,
    Expire,
    Expired,
    Granted,
    Held,
    LeaseEvent,
    LeaseRecord,
    LeaseTable,
    NotFound,
    Queued,
    Rejected,
    Release,
    Released,
    WaitCancelled,
    Waiter,
    encode_command,
)
from raftlease.fsm import leases as leases_module
from raftlease.fsm.leases import decompress_snapshot


def acquire(
    name: str, holder: str, request_id: str, *, wait: bool = False, ttl_ms: int = 10_000
) -> Acquire:
    return Acquire(name, holder, ttl_ms, wait, request_id)


def record(
    name: str, index: int, holder: str, request_id: str, ttl_ms: int = 10_000
) -> LeaseRecord:
    return LeaseRecord(name, index, holder, ttl_ms, (), request_id)


class Log:
    """A table plus the next log index, so tests read as a sequence of committed entries."""

    def __init__(self) -> None:
        self.table = LeaseTable()
        self.index = 0

    def apply(self, cmd: Command) -> tuple[ApplyResult, list[LeaseEvent]]:
        self.index += 1
        return self.table.apply(cmd, self.index)

    def entry(self, data: bytes) -> tuple[ApplyResult, list[LeaseEvent]]:
        self.index += 1
        return self.table.apply_entry(data, self.index)

    def result(self, cmd: Command) -> ApplyResult:
        return self.apply(cmd)[0]


def leases_state(table: LeaseTable) -> object:
    """The snapshot without applied_index: what a command may (or may not) change."""
    state = json.loads(table.snapshot())
    return state["leases"]


# --------------------------------------------------------------------------- acquire


def test_free_name_is_granted_with_lease_id_and_token_equal_to_the_entry_index() -> None:
    log = Log()
    log.apply(acquire("other", "x", "r0"))
    result, events = log.apply(Acquire("billing", "w1", 5000, False, "r1", (("zone", "eu"),)))
    lease = LeaseRecord("billing", 2, "w1", 5000, (("zone", "eu"),), "r1")
    assert result == Granted(lease)
    assert events == [LeaseEvent("acquired", "billing", lease, 2)]
    assert log.table.get("billing") == lease
    assert log.table.applied_index == 2


def test_idempotent_retry_returns_the_same_grant_and_changes_nothing() -> None:
    log = Log()
    granted = log.result(acquire("n", "w1", "r1"))
    before = leases_state(log.table)
    result, events = log.apply(acquire("n", "w1", "r1", wait=True, ttl_ms=99_000))
    assert result == granted
    assert events == []
    assert leases_state(log.table) == before


def test_held_without_wait() -> None:
    log = Log()
    log.apply(acquire("n", "w1", "r1"))
    result, events = log.apply(acquire("n", "w2", "r2"))
    assert result == Held(record("n", 1, "w1", "r1"))
    assert events == []
    assert log.table.waiters("n") == ()


def test_the_holder_itself_with_a_new_request_id_is_told_held() -> None:
    log = Log()
    log.apply(acquire("n", "w1", "r1"))
    assert log.result(acquire("n", "w1", "r2")) == Held(record("n", 1, "w1", "r1"))


def test_wait_joins_a_fifo_queue_with_1_based_positions() -> None:
    log = Log()
    log.apply(acquire("n", "w1", "r1"))
    current = record("n", 1, "w1", "r1")
    assert log.result(acquire("n", "w2", "r2", wait=True)) == Queued("n", 1, current)
    assert log.result(acquire("n", "w3", "r3", wait=True, ttl_ms=2000)) == Queued("n", 2, current)
    assert log.result(acquire("n", "w4", "r4", wait=True)) == Queued("n", 3, current)
    assert log.table.waiters("n") == (
        Waiter("w2", 10_000, "r2", ()),
        Waiter("w3", 2000, "r3", ()),
        Waiter("w4", 10_000, "r4", ()),
    )


def test_queued_lists_every_wait_by_name_then_queue_order() -> None:
    log = Log()
    assert log.table.queued() == []
    log.apply(acquire("b", "h", "rb"))
    log.apply(acquire("a", "h", "ra"))
    log.apply(acquire("b", "w", "b2", wait=True))
    log.apply(acquire("b", "w", "b1", wait=True))
    log.apply(acquire("a", "w", "a1", wait=True))
    assert log.table.queued() == [("a", "a1"), ("b", "b2"), ("b", "b1")]
    log.apply(CancelWait("b", "b2"))
    assert log.table.queued() == [("a", "a1"), ("b", "b1")]


def test_retry_of_a_queued_acquire_keeps_its_place() -> None:
    log = Log()
    log.apply(acquire("n", "w1", "r1"))
    log.apply(acquire("n", "w2", "r2", wait=True))
    log.apply(acquire("n", "w3", "r3", wait=True))
    before = leases_state(log.table)
    # Even a retry without wait: the waiter is already queued.
    assert log.result(acquire("n", "w2", "r2")) == Queued("n", 1, record("n", 1, "w1", "r1"))
    assert log.result(acquire("n", "w3", "r3", wait=True)) == Queued(
        "n", 2, record("n", 1, "w1", "r1")
    )
    assert leases_state(log.table) == before


def test_retry_after_the_waiter_was_granted_returns_the_grant() -> None:
    log = Log()
    log.apply(acquire("n", "w1", "r1"))
    log.apply(acquire("n", "w2", "r2", wait=True))
    log.apply(Release(1))
    assert log.result(acquire("n", "w2", "r2", wait=True)) == Granted(record("n", 3, "w2", "r2"))


def test_a_request_id_reused_by_another_holder_is_rejected() -> None:
    # Treating it as a retry would tell w2 it holds w1's lease: two holders at once.
    log = Log()
    log.apply(acquire("n", "w1", "r1"))
    log.apply(acquire("n", "w2", "r2", wait=True))
    before = leases_state(log.table)
    assert log.result(acquire("n", "intruder", "r1")) == Rejected(
        "request_id 'r1' of lease 'n' belongs to holder 'w1', not 'intruder'; "
        "every acquire needs its own request_id"
    )
    assert log.result(acquire("n", "intruder", "r2", wait=True)) == Rejected(
        "request_id 'r2' of lease 'n' belongs to holder 'w2', not 'intruder'; "
        "every acquire needs its own request_id"
    )
    assert leases_state(log.table) == before


def test_request_ids_are_scoped_to_a_name() -> None:
    log = Log()
    log.apply(acquire("a", "w1", "r1"))
    assert log.result(acquire("b", "w2", "r1")) == Granted(record("b", 2, "w2", "r1"))


# --------------------------------------------------------------------------- release


def test_release_frees_the_name() -> None:
    log = Log()
    log.apply(acquire("n", "w1", "r1"))
    result, events = log.apply(Release(1))
    lease = record("n", 1, "w1", "r1")
    assert result == Released(lease, None)
    assert events == [LeaseEvent("released", "n", lease, 2)]
    assert log.table.get("n") is None
    assert log.table.by_lease_id(1) is None
    assert len(log.table) == 0


def test_release_hands_over_to_the_first_waiter_in_the_same_entry() -> None:
    log = Log()
    log.apply(acquire("n", "w1", "r1"))
    log.apply(Acquire("n", "w2", 3000, True, "r2", (("k", "v"),)))
    log.apply(acquire("n", "w3", "r3", wait=True))
    result, events = log.apply(Release(1))
    old = record("n", 1, "w1", "r1")
    new = LeaseRecord("n", 4, "w2", 3000, (("k", "v"),), "r2")
    assert result == Released(old, new)
    assert events == [LeaseEvent("released", "n", old, 4), LeaseEvent("acquired", "n", new, 4)]
    assert log.table.get("n") == new
    assert log.table.by_lease_id(4) == new
    assert log.table.waiters("n") == (Waiter("w3", 10_000, "r3", ()),)


def test_handover_follows_fifo_order() -> None:
    log = Log()
    log.apply(acquire("n", "w0", "r0"))
    for i in range(1, 6):
        log.apply(acquire("n", f"w{i}", f"r{i}", wait=True))
    holders = []
    while (current := log.table.get("n")) is not None:
        holders.append(current.holder)
        log.apply(Release(current.lease_id))
    assert holders == ["w0", "w1", "w2", "w3", "w4", "w5"]
    assert log.table.waiters("n") == ()


def test_release_of_an_unknown_lease_is_not_found_and_changes_nothing() -> None:
    log = Log()
    log.apply(acquire("n", "w1", "r1"))
    before = leases_state(log.table)
    message = "lease 123 is not held (it was released, expired, or never existed)"
    assert log.apply(Release(123)) == (NotFound(message), [])
    assert leases_state(log.table) == before


def test_a_second_release_is_not_found() -> None:
    log = Log()
    log.apply(acquire("n", "w1", "r1"))
    log.apply(Release(1))
    assert log.result(Release(1)) == NotFound(
        "lease 1 is not held (it was released, expired, or never existed)"
    )


def test_an_old_lease_id_cannot_release_the_next_grant() -> None:
    log = Log()
    log.apply(acquire("n", "w1", "r1"))
    log.apply(Release(1))
    log.apply(acquire("n", "w2", "r2"))
    assert isinstance(log.result(Release(1)), NotFound)
    assert log.table.get("n") == record("n", 3, "w2", "r2")


def test_release_touches_only_its_own_name() -> None:
    log = Log()
    log.apply(acquire("a", "w1", "r1"))
    log.apply(acquire("b", "w2", "r2"))
    log.apply(Release(2))
    assert log.table.get("a") == record("a", 1, "w1", "r1")
    assert log.table.get("b") is None


# --------------------------------------------------------------------------- expire


def test_expire_ends_the_current_lease_and_hands_over() -> None:
    log = Log()
    log.apply(acquire("n", "w1", "r1"))
    log.apply(acquire("n", "w2", "r2", wait=True))
    result, events = log.apply(Expire("n", 1))
    old, new = record("n", 1, "w1", "r1"), record("n", 3, "w2", "r2")
    assert result == Expired(old, new)
    assert events == [LeaseEvent("expired", "n", old, 3), LeaseEvent("acquired", "n", new, 3)]


def test_expire_without_waiters_frees_the_name() -> None:
    log = Log()
    log.apply(acquire("n", "w1", "r1"))
    result, events = log.apply(Expire("n", 1))
    assert result == Expired(record("n", 1, "w1", "r1"), None)
    assert [event.kind for event in events] == ["expired"]
    assert log.table.get("n") is None


def test_a_stale_expiry_does_not_end_a_newer_grant() -> None:
    # An old leader proposed Expire(n, 1); meanwhile lease 1 was released and n re-granted.
    log = Log()
    log.apply(acquire("n", "w1", "r1"))
    log.apply(Release(1))
    log.apply(acquire("n", "w2", "r2"))
    before = leases_state(log.table)
    result, events = log.apply(Expire("n", 1))
    assert result == NotFound(
        "lease 1 is not the current lease of 'n' "
        "(it was released, expired, or never existed); nothing expired"
    )
    assert events == []
    assert leases_state(log.table) == before


def test_a_stale_expiry_after_handover_is_ignored() -> None:
    log = Log()
    log.apply(acquire("n", "w1", "r1"))
    log.apply(acquire("n", "w2", "r2", wait=True))
    log.apply(Expire("n", 1))  # hands over to w2 as lease 3
    assert isinstance(log.result(Expire("n", 1)), NotFound)
    assert log.table.get("n") == record("n", 3, "w2", "r2")


def test_expire_with_the_wrong_name_is_not_found() -> None:
    log = Log()
    log.apply(acquire("a", "w1", "r1"))
    assert log.result(Expire("b", 1)) == NotFound(
        "lease 1 is not the current lease of 'b' "
        "(it was released, expired, or never existed); nothing expired"
    )
    assert log.table.get("a") == record("a", 1, "w1", "r1")


# --------------------------------------------------------------------------- cancel wait


def test_cancel_wait_removes_only_that_waiter() -> None:
    log = Log()
    log.apply(acquire("n", "w1", "r1"))
    for i in (2, 3, 4):
        log.apply(acquire("n", f"w{i}", f"r{i}", wait=True))
    assert log.apply(CancelWait("n", "r3")) == (WaitCancelled("n", "r3", found=True), [])
    assert [w.request_id for w in log.table.waiters("n")] == ["r2", "r4"]
    assert log.result(acquire("n", "w4", "r4")) == Queued("n", 2, record("n", 1, "w1", "r1"))
    log.apply(Release(1))
    assert log.table.get("n") == record("n", 7, "w2", "r2")


def test_cancel_wait_of_an_unknown_waiter_changes_nothing() -> None:
    log = Log()
    assert log.result(CancelWait("free", "r1")) == WaitCancelled("free", "r1", found=False)
    log.apply(acquire("n", "w1", "r1"))
    log.apply(acquire("n", "w2", "r2", wait=True))
    before = leases_state(log.table)
    assert log.result(CancelWait("n", "r9")) == WaitCancelled("n", "r9", found=False)
    assert log.result(CancelWait("n", "r1")) == WaitCancelled("n", "r1", found=False)
    assert leases_state(log.table) == before


@pytest.mark.parametrize("end", [Release(1), Expire("n", 1)])
def test_cancelling_the_last_waiter_leaves_no_empty_queue_behind(end: Command) -> None:
    log = Log()
    log.apply(acquire("n", "w1", "r1"))
    without_queue = LeaseTable.restore(log.table.snapshot())
    log.apply(acquire("n", "w2", "r2", wait=True))
    log.apply(CancelWait("n", "r2"))
    assert log.table.waiters("n") == ()
    without_queue.apply(CancelWait("n", "r9"), 3)  # same applied_index, nothing else
    assert log.table == without_queue
    assert log.table.snapshot() == without_queue.snapshot()
    result = log.result(end)
    assert isinstance(result, Released | Expired)
    assert result.next_grant is None
    assert log.table.get("n") is None


# --------------------------------------------------------------------------- fencing tokens


def test_tokens_strictly_increase_per_name_across_grant_release_handover_and_expire() -> None:
    log = Log()
    tokens: list[int] = []

    def note(events: list[LeaseEvent]) -> None:
        tokens.extend(e.lease.fencing_token for e in events if e.kind == "acquired")

    note(log.apply(acquire("n", "w1", "r1"))[1])
    log.apply(acquire("other", "x", "rx"))
    log.apply(acquire("n", "w2", "r2", wait=True))
    log.apply(acquire("n", "w3", "r3", wait=True))
    note(log.apply(Release(1))[1])  # handover to w2
    note(log.apply(Expire("n", 5))[1])  # expiry, handover to w3
    note(log.apply(Release(6))[1])  # free
    note(log.apply(acquire("n", "w4", "r4"))[1])  # fresh grant
    note(log.apply(Expire("n", 8))[1])
    note(log.apply(acquire("n", "w5", "r5"))[1])
    assert tokens == [1, 5, 6, 8, 10]
    assert all(a < b for a, b in itertools.pairwise(tokens))


def test_lease_ids_are_unique_across_names() -> None:
    log = Log()
    ids = [log.result(acquire(f"n{i}", "w", f"r{i}")) for i in range(5)]
    assert [r.lease.lease_id for r in ids if isinstance(r, Granted)] == [1, 2, 3, 4, 5]


# --------------------------------------------------------------------------- rejected commands


@pytest.mark.parametrize(
    ("cmd", "message"),
    [
        (acquire("", "w", "r"), "name must not be empty"),
        (acquire("x" * 300, "w", "r"), "name is 300 bytes; the limit is 256 bytes (UTF-8)"),
        (
            acquire("a\nb", "w", "r"),
            "name must not contain control characters (found U+000A at character 1)",
        ),
        (acquire("n", " ", "r"), "holder must not be only whitespace"),
        (acquire("n", "w", "r", ttl_ms=50), "ttl_ms=50 is below the minimum 1000 ms"),
        (
            acquire("n", "w", "r", ttl_ms=3_600_001),
            "ttl_ms=3600001 is above the maximum 3600000 ms",
        ),
        (acquire("n", "w", ""), "request_id must not be empty"),
        (
            Acquire("n", "w", 1000, False, "r", tuple((f"k{i}", "v") for i in range(17))),
            "metadata has 17 entries; the limit is 16",
        ),
    ],
)
def test_invalid_commands_are_rejected_and_change_nothing(cmd: Command, message: str) -> None:
    log = Log()
    log.apply(acquire("n", "w0", "r0"))
    log.apply(acquire("n", "w1", "r1", wait=True))
    before = leases_state(log.table)
    assert log.apply(cmd) == (Rejected(message), [])
    assert leases_state(log.table) == before
    assert log.table.applied_index == 3
    # The same command as a log entry is rejected the same way.
    assert log.entry(encode_command(cmd)) == (Rejected(message), [])
    assert leases_state(log.table) == before


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            b"\x00garbage",
            "undecodable command: command is not valid JSON: Expecting value: "
            "line 1 column 1 (char 0)",
        ),
        (
            b'{"type":"renew","lease_id":1}',
            "undecodable command: unknown command type 'renew' "
            "(known: acquire, cancel_wait, expire, release)",
        ),
        (b'{"type":"release"}', "undecodable command: release command is missing field 'lease_id'"),
    ],
)
def test_undecodable_entries_are_rejected_and_change_nothing(data: bytes, message: str) -> None:
    log = Log()
    log.apply(acquire("n", "w0", "r0"))
    before = log.table.snapshot()
    assert log.entry(data) == (Rejected(message), [])
    assert log.table.applied_index == 2
    assert log.table.snapshot() == before.replace(b'"applied_index":1', b'"applied_index":2')


def test_apply_entry_decodes_and_applies() -> None:
    log = Log()
    result, events = log.entry(encode_command(acquire("n", "w1", "r1")))
    assert result == Granted(record("n", 1, "w1", "r1"))
    assert [e.kind for e in events] == ["acquired"]


# --------------------------------------------------------------------------- log order


def test_index_must_increase() -> None:
    table = LeaseTable()
    with pytest.raises(ValueError, match=r"^entry index 0 is not above the applied index 0"):
        table.apply(Release(1), 0)
    table.apply(Release(1), 5)  # gaps are fine (no-op and config entries are not applied here)
    assert table.applied_index == 5
    for index in (5, 4):
        with pytest.raises(ValueError, match=r"^entry index") as info:
            table.apply_entry(encode_command(Release(1)), index)
        assert str(info.value) == (
            f"entry index {index} is not above the applied index 5: "
            "entries must be applied exactly once, in log order"
        )
    assert table.applied_index == 5


# --------------------------------------------------------------------------- reads


def test_reads() -> None:
    log = Log()
    for name in ("jobs/b", "jobs/a", "cron", "jobs/c"):
        log.apply(acquire(name, "w", f"r-{name}"))
    log.apply(acquire("cron", "w2", "r2", wait=True))
    table = log.table
    assert len(table) == 4
    assert [lease.name for lease in table.leases()] == ["cron", "jobs/a", "jobs/b", "jobs/c"]
    assert [lease.name for lease in table.leases("jobs/")] == ["jobs/a", "jobs/b", "jobs/c"]
    assert table.leases("nothing") == []
    assert table.get("jobs/a") == record("jobs/a", 2, "w", "r-jobs/a")
    assert table.get("free") is None
    assert table.by_lease_id(3) == record("cron", 3, "w", "r-cron")
    assert table.by_lease_id(5) is None  # index 5 queued a waiter, it granted nothing
    assert table.waiters("cron") == (Waiter("w2", 10_000, "r2", ()),)
    assert table.waiters("jobs/a") == ()
    assert table.waiters("free") == ()
    assert repr(table) == "<LeaseTable applied_index=5 leases=4 waiters=1>"


def test_check_token() -> None:
    log = Log()
    log.apply(acquire("n", "w1", "r1"))
    log.apply(acquire("n", "w2", "r2", wait=True))
    assert log.table.check_token("n", 1)
    assert not log.table.check_token("n", 2)
    assert not log.table.check_token("other", 1)
    assert not log.table.check_token("n", True)  # a bool is not a token
    log.apply(Release(1))
    assert not log.table.check_token("n", 1)  # the old holder is fenced off
    assert log.table.check_token("n", 3)
    log.apply(Release(3))
    assert not log.table.check_token("n", 3)


def test_records_and_results_are_immutable() -> None:
    lease = record("n", 1, "w", "r")
    with pytest.raises(AttributeError):
        lease.holder = "x"  # type: ignore[misc]
    assert not hasattr(lease, "__dict__")


# --------------------------------------------------------------------------- snapshots


def build_busy_table() -> Log:
    log = Log()
    log.apply(acquire("b", "w1", "r1"))
    log.apply(Acquire("a", "wé", 2000, False, "r2", (("zone", "eu"), ("k", "名"))))
    log.apply(acquire("b", "w3", "r3", wait=True))
    log.apply(Acquire("b", "w4", 4000, True, "r4", (("m", "1"),)))
    log.apply(acquire("c", "w5", "r5"))
    log.apply(Release(5))
    log.apply(acquire("b", "w6", "r6", wait=True))
    log.apply(CancelWait("b", "r3"))
    return log


@pytest.mark.parametrize("per_slice", [1, 2, 3, 1000])
def test_a_view_encodes_to_the_snapshot_in_pieces_of_any_size(per_slice: int) -> None:
    table = build_busy_table().table
    pieces = list(table.view().encode(per_slice))
    assert b"".join(pieces) == table.snapshot()
    assert len(pieces) == 2 + -(-len(table) // per_slice)  # header, slices, trailer


@pytest.mark.parametrize("per_slice", [1, 3, 1000])
def test_a_compressed_view_is_one_zlib_stream_of_the_snapshot(per_slice: int) -> None:
    """What nodes keep, store and send: the canonical snapshot as one zlib stream, built
    piece by piece, and restored to an equal table."""
    table = build_busy_table().table
    payload = b"".join(table.view().encode(per_slice, compress=True))
    assert zlib.decompress(payload) == table.snapshot()
    assert decompress_snapshot(payload) == table.snapshot()
    assert decompress_snapshot(table.snapshot()) == table.snapshot()  # plain JSON passes
    restored = LeaseTable.restore(payload)
    assert restored == table
    assert restored.snapshot() == table.snapshot()


def test_a_compressed_snapshot_of_many_leases_is_smaller() -> None:
    log = Log()
    for i in range(2000):
        log.apply(acquire(f"jobs/worker-{i:05d}", f"host-{i % 20}", f"req-{i:08x}"))
    plain = log.table.snapshot()
    payload = b"".join(log.table.view().encode(compress=True))
    assert len(payload) * 3 < len(plain)
    assert LeaseTable.restore(payload) == log.table


def test_a_damaged_compressed_snapshot_is_refused() -> None:
    payload = b"".join(build_busy_table().table.view().encode(compress=True))
    with pytest.raises(ValueError, match="truncated or trailing zlib data"):
        LeaseTable.restore(payload[:-3])
    with pytest.raises(ValueError, match="truncated or trailing zlib data"):
        LeaseTable.restore(payload + b"x")
    damaged = payload[:2] + bytes([payload[2] ^ 0xFF]) + payload[3:]
    with pytest.raises(ValueError, match="invalid lease table snapshot"):
        LeaseTable.restore(damaged)


def test_a_snapshot_that_decompresses_past_the_limit_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    payload = b"".join(build_busy_table().table.view().encode(compress=True))
    monkeypatch.setattr(leases_module, "SNAPSHOT_MAX_BYTES", 50)
    with pytest.raises(ValueError, match="decompresses to more than 50 bytes"):
        LeaseTable.restore(payload)


def test_a_view_stays_as_it_was_while_the_table_changes() -> None:
    """A driver takes a view in one turn and encodes it over many: entries applied
    meanwhile (a grant, a release that hands over, a new waiter) must not show."""
    log = build_busy_table()
    before = log.table.snapshot()
    view = log.table.view()
    log.apply(acquire("d", "w7", "r7"))
    log.apply(Release(1))  # "b" goes to its first waiter
    log.apply(acquire("a", "w8", "r8", wait=True))
    assert log.table.snapshot() != before
    assert b"".join(view.encode(1)) == before
    assert view.applied_index == 8


def test_a_view_refuses_an_empty_slice() -> None:
    with pytest.raises(ValueError, match="per_slice must be >= 1"):
        next(LeaseTable().view().encode(0))


def test_empty_snapshot_bytes() -> None:
    assert LeaseTable().snapshot() == b'{"applied_index":0,"format":2,"leases":[]}'


def test_snapshot_bytes_are_canonical_compact_json() -> None:
    # Format 2: [name, lease_id, holder, ttl_ms, metadata, request_id, waiters] per lease,
    # [holder, ttl_ms, request_id, metadata] per waiter; fencing_token = granted_index = lease_id.
    snapshot = build_busy_table().table.snapshot()
    assert snapshot == FORMAT_2_BUSY


FORMAT_2_BUSY = (
    b'{"applied_index":8,"format":2,"leases":['
    b'["a",2,"w\\u00e9",2000,[["zone","eu"],["k","\\u540d"]],"r2",[]],'
    b'["b",1,"w1",10000,[],"r1",[["w4",4000,"r4",[["m","1"]]],["w6",10000,"r6",[]]]]]}'
)

# What build_busy_table's snapshot was in format 1 (written by earlier versions; data dirs and
# `raftlease snapshot save` files hold it): it must still restore to the same table.
FORMAT_1_BUSY = (
    b'{"applied_index":8,"format":1,"leases":['
    b'{"fencing_token":2,"granted_index":2,"holder":"w\\u00e9","lease_id":2,'
    b'"metadata":[["zone","eu"],["k","\\u540d"]],"name":"a","request_id":"r2",'
    b'"ttl_ms":2000,"waiters":[]},'
    b'{"fencing_token":1,"granted_index":1,"holder":"w1","lease_id":1,"metadata":[],'
    b'"name":"b","request_id":"r1","ttl_ms":10000,"waiters":['
    b'{"holder":"w4","metadata":[["m","1"]],"request_id":"r4","ttl_ms":4000},'
    b'{"holder":"w6","metadata":[],"request_id":"r6","ttl_ms":10000}]}]}'
)


def format_1(table: LeaseTable) -> bytes:
    """``table`` as format 1 (the encoder of earlier versions, kept here to test reading it)."""
    leases = [
        {
            "name": lease.name,
            "lease_id": lease.lease_id,
            "fencing_token": lease.fencing_token,
            "holder": lease.holder,
            "ttl_ms": lease.ttl_ms,
            "metadata": [list(pair) for pair in lease.metadata],
            "granted_index": lease.granted_index,
            "request_id": lease.request_id,
            "waiters": [
                {
                    "holder": w.holder,
                    "ttl_ms": w.ttl_ms,
                    "request_id": w.request_id,
                    "metadata": [list(pair) for pair in w.metadata],
                }
                for w in table.waiters(lease.name)
            ],
        }
        for lease in table.leases()
    ]
    state = {"applied_index": table.applied_index, "format": 1, "leases": leases}
    return json.dumps(state, separators=(",", ":"), sort_keys=True).encode("ascii")


def test_format_1_golden_snapshot_still_restores_to_the_same_table() -> None:
    table = build_busy_table().table
    assert format_1(table) == FORMAT_1_BUSY
    restored = LeaseTable.restore(FORMAT_1_BUSY)
    assert restored == table
    assert restored.waiters("b") == table.waiters("b")
    assert restored.by_lease_id(2) == table.get("a")
    assert restored.snapshot() == FORMAT_2_BUSY  # written back in format 2
    assert restored.state_hash() == table.state_hash()


def test_format_2_golden_snapshot_restores_to_the_same_table() -> None:
    table = build_busy_table().table
    restored = LeaseTable.restore(FORMAT_2_BUSY)
    assert restored == table
    assert restored.waiters("b") == table.waiters("b")
    assert restored.snapshot() == FORMAT_2_BUSY


def big_table(leases: int, holders: int) -> LeaseTable:
    """``leases`` grants (ids and TTLs above 256, so not CPython's cached small ints) under
    ``holders`` holders, each name with a waiter; every string comes from a decoded entry."""
    table = LeaseTable()
    index = 1000
    for i in range(leases):
        index += 1
        cmd = Acquire(f"n{i}", f"holder-{i % holders}", 10_000 + i % 2, False, f"r{i}")
        table.apply_entry(encode_command(cmd), index)
        index += 1
        waiter = Acquire(f"n{i}", f"holder-{(i + 1) % holders}", 10_000, True, f"w{i}")
        table.apply_entry(encode_command(waiter), index)
    return table


def shared_objects(table: LeaseTable) -> None:
    leases = table.leases()
    waiters = [w for lease in leases for w in table.waiters(lease.name)]
    by_holder: dict[str, list[str]] = defaultdict(list)
    for holder in [lease.holder for lease in leases] + [w.holder for w in waiters]:
        by_holder[holder].append(holder)
    for holder, strings in by_holder.items():
        assert len(strings) > 1
        assert all(s is strings[0] for s in strings), f"{holder!r}: {len(strings)} strings"
    ttls = {id(lease.ttl_ms) for lease in leases} | {id(w.ttl_ms) for w in waiters}
    assert len(ttls) == 2  # 10000 and 10001: one int object each
    for lease in leases:
        assert lease.fencing_token is lease.lease_id
        assert lease.granted_index is lease.lease_id
        assert table.by_lease_id(lease.lease_id) is lease
        assert lease.metadata == ()


def test_holders_ttls_and_ids_are_shared_objects_after_apply_and_after_restore() -> None:
    # A client holds many leases under one holder string: memory per lease (issue W6).
    table = big_table(20, holders=3)
    shared_objects(table)
    for data in (table.snapshot(), format_1(table)):
        restored = LeaseTable.restore(data)
        assert restored == table
        shared_objects(restored)
    # Two leases of one holder share the string even when they came in apart.
    table = LeaseTable()
    table.apply_entry(encode_command(acquire("a", "".join(["cli", "ent"]), "r1")), 1)
    table.apply_entry(encode_command(acquire("b", "".join(["cli", "ent"]), "r2")), 2)
    a, b = table.get("a"), table.get("b")
    assert a is not None
    assert b is not None
    assert a.holder is b.holder
    restored_a, restored_b = LeaseTable.restore(table.snapshot()).leases()
    assert restored_a.holder is restored_b.holder is a.holder  # interned: the same object


def test_a_holder_of_a_str_subclass_is_stored_as_a_plain_interned_str() -> None:
    class Name(str):
        pass

    table = LeaseTable()
    result, _ = table.apply(acquire("n", Name("client"), "r1"), 1)
    assert result == Granted(record("n", 1, "client", "r1"))
    lease = table.get("n")
    assert lease is not None
    assert type(lease.holder) is str


def test_ttl_sharing_stops_at_its_limit_and_changes_nothing() -> None:
    table = LeaseTable()
    for i in range(1030):
        table.apply(acquire(f"n{i}", "h", f"r{i}", ttl_ms=1000 + i), i + 1)
    assert len(table._ttls) == 1024
    assert table.get("n1029") == record("n1029", 1030, "h", "r1029", ttl_ms=2029)
    assert LeaseTable.restore(table.snapshot()) == table


def test_a_restored_record_is_a_whole_lease_record() -> None:
    # Restore builds records through their slots, not LeaseRecord(...): every field is set,
    # and the record is the one the constructor makes.
    (lease,) = LeaseTable.restore(
        b'{"applied_index":9,"format":2,"leases":[["n",7,"h",1000,[["k","v"]],"r",[]]]}'
    ).leases()
    assert type(lease) is LeaseRecord
    assert lease == LeaseRecord("n", 7, "h", 1000, (("k", "v"),), "r")
    assert repr(lease) == repr(LeaseRecord("n", 7, "h", 1000, (("k", "v"),), "r"))
    assert hash(lease) == hash(LeaseRecord("n", 7, "h", 1000, (("k", "v"),), "r"))
    with pytest.raises(AttributeError):
        lease.holder = "x"  # type: ignore[misc]


def test_a_big_table_round_trips_in_any_slicing() -> None:
    table = big_table(300, holders=7)
    data = table.snapshot()
    for per_slice in (1, 7, 299, 300, 301):
        assert b"".join(table.view().encode(per_slice)) == data
    restored = LeaseTable.restore(data)
    assert restored == table
    assert restored.snapshot() == data
    assert LeaseTable.restore(format_1(table)) == table


def test_snapshot_round_trip() -> None:
    table = build_busy_table().table
    restored = LeaseTable.restore(table.snapshot())
    assert restored == table
    assert restored.snapshot() == table.snapshot()
    assert restored.state_hash() == table.state_hash()
    assert restored.applied_index == 8
    assert restored.by_lease_id(2) == table.get("a")
    assert restored.waiters("b") == table.waiters("b")
    # And both continue identically.
    for t in (table, restored):
        t.apply(Release(1), 9)
        t.apply(acquire("a", "w9", "r9", wait=True), 10)
    assert restored.snapshot() == table.snapshot()
    assert restored.get("b") == LeaseRecord("b", 9, "w4", 4000, (("m", "1"),), "r4")


@pytest.mark.parametrize("version", [1, 2])
def test_snapshot_does_not_depend_on_insertion_order(version: int) -> None:
    table = build_busy_table().table
    state = json.loads(format_1(table) if version == 1 else table.snapshot())
    state["leases"].reverse()
    reordered = LeaseTable.restore(json.dumps(state, indent=2).encode())
    assert reordered.snapshot() == table.snapshot()
    assert reordered == table


def test_equal_tables_and_unequal_tables() -> None:
    assert LeaseTable() == LeaseTable()
    a, b = build_busy_table().table, build_busy_table().table
    assert a == b
    b.apply(CancelWait("b", "r4"), 9)
    assert a != b
    assert a != "not a table"


def test_waiter_order_matters_for_equality_and_bytes() -> None:
    def table(order: list[str]) -> LeaseTable:
        log = Log()
        log.apply(acquire("n", "w", "r"))
        for request_id in order:
            log.apply(acquire("n", "w", request_id, wait=True))
        return log.table

    assert table(["x", "y"]) != table(["y", "x"])
    assert table(["x", "y"]).snapshot() != table(["y", "x"]).snapshot()


def test_state_hash() -> None:
    table = build_busy_table().table
    assert table.state_hash() == hashlib.sha256(table.snapshot()).hexdigest()
    assert len(table.state_hash()) == 64
    before = table.state_hash()
    table.apply(Release(2), 9)
    assert table.state_hash() != before


def test_restored_table_keeps_log_order_and_tokens_increasing() -> None:
    table = LeaseTable.restore(build_busy_table().table.snapshot())
    with pytest.raises(ValueError, match="not above the applied index 8"):
        table.apply(acquire("z", "w", "r"), 8)
    result, _ = table.apply(acquire("z", "w", "r"), 9)
    assert isinstance(result, Granted)
    assert result.lease.fencing_token == 9


VALID = LeaseTable.restore(build_busy_table().table.snapshot()).snapshot()
LEASE_FIELDS = "[name, lease_id, holder, ttl_ms, metadata, request_id, waiters]"
WAITER_FIELDS = "[holder, ttl_ms, request_id, metadata]"


def mutate(change: str) -> bytes:
    """VALID (format 2) with one thing wrong. Lease 1 is "b": [name, lease_id, holder, ttl_ms,
    metadata, request_id, waiters], with two waiters [holder, ttl_ms, request_id, metadata]."""
    state = json.loads(VALID)
    lease = state["leases"][1]
    match change:
        case "format":
            state["format"] = 3
        case "bool-format":
            state["format"] = True
        case "negative-index":
            state["applied_index"] = -1
        case "extra-field":
            state["extra"] = 1
        case "leases-object":
            state["leases"] = {}
        case "lease-object":
            state["leases"][1] = {"name": "b"}
        case "lease-short":
            lease.pop()
        case "lease-long":
            lease.append([])
        case "duplicate-name":
            state["leases"].append(list(state["leases"][0]))
        case "duplicate-id":
            state["leases"].append(["z", *state["leases"][0][1:6], []])
        case "id-above-index":
            lease[1] = 99
        case "id-zero":
            lease[1] = 0
        case "bool-id":
            lease[1] = True
        case "null-name":
            lease[0] = None
        case "number-holder":
            lease[2] = 7
        case "bool-ttl":
            lease[3] = True
        case "float-ttl":
            lease[3] = 1000.0
        case "metadata-object":
            lease[4] = {"k": "v"}
        case "bad-metadata":
            lease[4] = [["k"]]
        case "number-in-metadata":
            lease[4] = [["k", 1]]
        case "waiters-null":
            lease[6] = None
        case "waiter-object":
            lease[6][0] = {"holder": "w4"}
        case "waiter-missing-field":
            del lease[6][0][1]
        case "waiter-bool-ttl":
            lease[6][1][1] = False
        case "waiter-bad-metadata":
            lease[6][0][3] = [["m", "1", "2"]]
        case "duplicate-waiter":
            lease[6].append(list(lease[6][0]))
        case "waiter-is-holder":
            lease[6][0][2] = lease[5]
        case _:
            raise AssertionError(change)
    return json.dumps(state).encode()


def mutate_format_1(change: str) -> bytes:
    """FORMAT_1_BUSY with one thing wrong: format 1 is still read, and as strictly."""
    state = json.loads(FORMAT_1_BUSY)
    lease = state["leases"][1]
    match change:
        case "lease-array":
            state["leases"][0] = ["a", 2, "w", 2000, [], "r2", []]
        case "missing-field":
            del lease["granted_index"]
        case "duplicate-name":
            state["leases"].append(dict(state["leases"][0]))
        case "duplicate-id":
            state["leases"].append(dict(state["leases"][0], name="z", waiters=[]))
        case "id-above-index":
            lease.update(lease_id=99, fencing_token=99, granted_index=99)
        case "token-differs":
            lease["fencing_token"] = 2
        case "bool-ttl":
            lease["ttl_ms"] = True
        case "bad-metadata":
            lease["metadata"] = [["k"]]
        case "duplicate-waiter":
            lease["waiters"].append(dict(lease["waiters"][0]))
        case "waiter-is-holder":
            lease["waiters"][0]["request_id"] = lease["request_id"]
        case "waiter-missing-field":
            del lease["waiters"][0]["ttl_ms"]
        case _:
            raise AssertionError(change)
    return json.dumps(state).encode()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not JSON: Expecting value: line 1 column 1 (char 0)"),
        (
            b"\xff",
            "not JSON: 'utf-8' codec can't decode byte 0xff in position 0: invalid start byte",
        ),
        (b'{"applied_index":0,"format":2,"leases":[NaN]}', "not JSON: NaN is not allowed"),
        (b"[]", "snapshot must be an object"),
        (b"{}", "snapshot must have exactly the fields ['applied_index', 'format', 'leases']"),
        (b"[" * 100_000, "nested too deeply"),
        (mutate("format"), "format 3 is not supported (expected 1 or 2)"),
        (mutate("bool-format"), "snapshot.format must be int, got bool"),
        (mutate("negative-index"), "applied_index -1 is negative"),
        (
            mutate("extra-field"),
            "snapshot must have exactly the fields ['applied_index', 'format', 'leases']",
        ),
        (mutate("leases-object"), "snapshot.leases must be list, got dict"),
        (mutate("lease-object"), f"leases[1] must be an array of 7 fields {LEASE_FIELDS}"),
        (mutate("lease-short"), f"leases[1] must be an array of 7 fields {LEASE_FIELDS}"),
        (mutate("lease-long"), f"leases[1] must be an array of 7 fields {LEASE_FIELDS}"),
        (mutate("duplicate-name"), "leases[2]: name 'a' appears twice"),
        (mutate("duplicate-id"), "leases[2]: lease_id 2 appears twice"),
        (mutate("id-above-index"), "leases[1].lease_id 99 is outside 1..8"),
        (mutate("id-zero"), "leases[1].lease_id 0 is outside 1..8"),
        (mutate("bool-id"), "leases[1].lease_id must be int, got bool"),
        (mutate("null-name"), "leases[1].name must be str, got NoneType"),
        (mutate("number-holder"), "leases[1].holder must be str, got int"),
        (mutate("bool-ttl"), "leases[1].ttl_ms must be int, got bool"),
        (mutate("float-ttl"), "leases[1].ttl_ms must be int, got float"),
        (mutate("metadata-object"), "leases[1].metadata must be list, got dict"),
        (mutate("bad-metadata"), "leases[1].metadata must hold [str, str] pairs"),
        (mutate("number-in-metadata"), "leases[1].metadata must hold [str, str] pairs"),
        (mutate("waiters-null"), "leases[1].waiters must be list, got NoneType"),
        (
            mutate("waiter-object"),
            f"leases[1].waiters[0] must be an array of 4 fields {WAITER_FIELDS}",
        ),
        (
            mutate("waiter-missing-field"),
            f"leases[1].waiters[0] must be an array of 4 fields {WAITER_FIELDS}",
        ),
        (mutate("waiter-bool-ttl"), "leases[1].waiters[1].ttl_ms must be int, got bool"),
        (
            mutate("waiter-bad-metadata"),
            "leases[1].waiters[0].metadata must hold [str, str] pairs",
        ),
        (mutate("duplicate-waiter"), "leases[1].waiters[2]: request_id 'r4' is not unique"),
        (mutate("waiter-is-holder"), "leases[1].waiters[0]: request_id 'r1' is not unique"),
        # Format 1 (objects with field names), still read as strictly.
        (mutate_format_1("lease-array"), "leases[0] must be an object"),
        (
            mutate_format_1("missing-field"),
            "leases[1] must have exactly the fields ['fencing_token', 'granted_index', "
            "'holder', 'lease_id', 'metadata', 'name', 'request_id', 'ttl_ms', 'waiters']",
        ),
        (mutate_format_1("duplicate-name"), "leases[2]: name 'a' appears twice"),
        (mutate_format_1("duplicate-id"), "leases[2]: lease_id 2 appears twice"),
        (mutate_format_1("id-above-index"), "leases[1].lease_id 99 is outside 1..8"),
        (
            mutate_format_1("token-differs"),
            "leases[1]: lease_id, fencing_token and granted_index differ",
        ),
        (mutate_format_1("bool-ttl"), "leases[1].ttl_ms must be int, got bool"),
        (mutate_format_1("bad-metadata"), "leases[1].metadata must hold [str, str] pairs"),
        (
            mutate_format_1("duplicate-waiter"),
            "leases[1].waiters[2]: request_id 'r4' is not unique",
        ),
        (
            mutate_format_1("waiter-is-holder"),
            "leases[1].waiters[0]: request_id 'r1' is not unique",
        ),
        (
            mutate_format_1("waiter-missing-field"),
            "leases[1].waiters[0] must have exactly the fields "
            "['holder', 'metadata', 'request_id', 'ttl_ms']",
        ),
    ],
)
def test_restore_rejects_garbage_with_a_value_error(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=r"^invalid lease table snapshot: ") as info:
        LeaseTable.restore(data)
    assert str(info.value) == f"invalid lease table snapshot: {message}"


def test_a_failed_restore_leaves_the_garbage_collector_as_it_was() -> None:
    # Restore pauses the cyclic collector while it builds the table.
    assert gc.isenabled()
    with pytest.raises(ValueError, match="is not unique"):
        LeaseTable.restore(mutate("duplicate-waiter"))
    assert gc.isenabled()
    gc.disable()
    try:
        LeaseTable.restore(VALID)
        assert not gc.isenabled()
    finally:
        gc.enable()


@given(st.binary(max_size=300))
def test_restore_fuzz(data: bytes) -> None:
    try:
        LeaseTable.restore(data)
    except ValueError as exc:
        error = exc
    else:
        return
    assert str(error).startswith("invalid lease table snapshot: ")


@pytest.mark.parametrize("valid", [VALID, FORMAT_1_BUSY], ids=["format-2", "format-1"])
@given(data=st.data())
def test_restore_fuzz_mutated_snapshots(valid: bytes, data: st.DataObject) -> None:
    raw = bytearray(valid)
    for _ in range(data.draw(st.integers(1, 3))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    try:
        table = LeaseTable.restore(bytes(raw))
    except ValueError:
        return
    assert LeaseTable.restore(table.snapshot()) == table


# --------------------------------------------------------------------------- purity


ALLOWED_IMPORTS = {
    "__future__",
    "heapq",
    "math",
    "collections",
    "collections.abc",
    "dataclasses",
    "gc",  # leases.py: the collector paused during a snapshot restore
    "hashlib",
    "json",
    "re",
    "sys",  # leases.py: sys.intern of holder strings
    "typing",
    "raftlease.errors",
    "raftlease.types",
    "raftlease.fsm.commands",
    "raftlease.fsm.leases",
    "raftlease.fsm.limits",
    "zlib",  # leases.py: snapshots kept, stored and sent as one zlib stream (pure, in memory)
}


def test_fsm_imports_only_stdlib_types_and_errors() -> None:
    # No clock, I/O, randomness, protobuf or asyncio: each addition here must be justified.
    package = pathlib.Path(raftlease.fsm.__file__).parent
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{path.name}: use absolute imports"
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name in ALLOWED_IMPORTS, f"{path.name} imports {name}"


def test_public_names_are_sorted_and_exported() -> None:
    assert raftlease.fsm.__all__ == sorted(raftlease.fsm.__all__)
    for name in raftlease.fsm.__all__:
        assert hasattr(raftlease.fsm, name)


# --------------------------------------------------------------------------- properties

NAMES = ["a", "b", "c"]
HOLDERS = ["h1", "h2", "h3"]
REQUEST_IDS = [f"r{i}" for i in range(8)]


@dataclass
class History:
    """Lease ids ever granted, so ops can name current and stale leases alike."""

    granted: list[int] = field(default_factory=list)


ops = st.one_of(
    st.tuples(
        st.just("acquire"),
        st.sampled_from(NAMES),
        st.sampled_from(HOLDERS),
        st.sampled_from(REQUEST_IDS),
        st.booleans(),
    ),
    st.tuples(st.just("release"), st.integers(0, 60)),
    st.tuples(st.just("expire"), st.sampled_from(NAMES), st.integers(0, 60)),
    st.tuples(st.just("cancel"), st.sampled_from(NAMES), st.sampled_from(REQUEST_IDS)),
    st.tuples(st.just("release_current"), st.sampled_from(NAMES)),
    st.tuples(st.just("cancel_queued"), st.sampled_from(NAMES), st.integers(0, 5)),
    st.tuples(st.just("invalid"), st.sampled_from(NAMES)),
    st.tuples(st.just("garbage"), st.binary(max_size=8)),
)


def materialize(op: tuple[object, ...], history: History, table: LeaseTable) -> bytes:
    """Turn an abstract op into entry bytes; lease ids pick among ever-granted ids, and the
    "_current"/"_queued" ops pick what ``table`` holds now (so they usually hit)."""

    def pick(n: object) -> int:
        assert isinstance(n, int)
        return history.granted[n % len(history.granted)] if history.granted and n else n

    match op:
        case ("acquire", str(name), str(holder), str(request_id), bool(wait)):
            return encode_command(acquire(name, holder, request_id, wait=wait))
        case ("release", n):
            return encode_command(Release(pick(n)))
        case ("expire", str(name), n):
            return encode_command(Expire(name, pick(n)))
        case ("cancel", str(name), str(request_id)):
            return encode_command(CancelWait(name, request_id))
        case ("release_current", str(name)):
            current = table.get(name)
            return encode_command(Release(current.lease_id if current else 0))
        case ("cancel_queued", str(name), int(n)):
            queue = table.waiters(name)
            request_id = queue[n % len(queue)].request_id if queue else "none"
            return encode_command(CancelWait(name, request_id))
        case ("invalid", str(name)):
            return encode_command(acquire(name, "h1", "r1", ttl_ms=5))
        case ("garbage", bytes(data)):
            return data
    raise AssertionError(op)


@settings(max_examples=200)
@given(st.lists(ops, max_size=60), st.data())
def test_replicas_agree_byte_for_byte_even_when_one_restores_midway(
    operations: list[tuple[object, ...]], data: st.DataObject
) -> None:
    split = data.draw(st.integers(0, len(operations)))
    leader, follower = LeaseTable(), LeaseTable()
    history = History()
    for position, op in enumerate(operations):
        if position == split:  # the follower installs a snapshot, then keeps applying
            follower = LeaseTable.restore(follower.snapshot())
        entry = materialize(op, history, leader)
        index = position + 1
        outcome = leader.apply_entry(entry, index)
        assert follower.apply_entry(entry, index) == outcome
        history.granted.extend(e.lease.lease_id for e in outcome[1] if e.kind == "acquired")
    assert follower.snapshot() == leader.snapshot()
    assert follower.state_hash() == leader.state_hash()
    assert follower == leader


class Model:
    """A naive lease table: lists and linear scans, obviously right."""

    def __init__(self) -> None:
        self.current: dict[str, tuple[int, str, str]] = {}  # name -> (token, holder, rid)
        self.queues: dict[str, list[tuple[str, str]]] = defaultdict(list)  # (holder, rid)

    def end(self, name: str, index: int) -> None:
        del self.current[name]
        if self.queues[name]:
            holder, rid = self.queues[name].pop(0)
            self.current[name] = (index, holder, rid)

    def apply(self, cmd: Command, index: int) -> None:
        match cmd:
            case Acquire(name=name, holder=holder, wait=wait, request_id=rid):
                queued = [q[1] for q in self.queues[name]]
                if name not in self.current:
                    self.current[name] = (index, holder, rid)
                elif self.current[name][2] == rid or rid in queued:
                    pass
                elif wait:
                    self.queues[name].append((holder, rid))
            case Release(lease_id=lease_id):
                for name, (token, _, _) in list(self.current.items()):
                    if token == lease_id:
                        self.end(name, index)
            case Expire(name=name, lease_id=lease_id):
                if name in self.current and self.current[name][0] == lease_id:
                    self.end(name, index)
            case CancelWait(name=name, request_id=rid):
                self.queues[name] = [q for q in self.queues[name] if q[1] != rid]


class LeaseTableMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.table = LeaseTable()
        self.model = Model()
        self.index = 0
        self.last_token: dict[str, int] = {}
        self.granted: list[int] = []

    def step(self, cmd: Command) -> ApplyResult:
        self.index += 1
        result, events = self.table.apply(cmd, self.index)
        self.model.apply(cmd, self.index)
        for event in events:
            assert event.index == self.index
            if event.kind == "acquired":
                token = event.lease.fencing_token
                assert token > self.last_token.get(event.name, 0), "token did not increase"
                self.last_token[event.name] = token
                self.granted.append(token)
        return result

    # Each holder uses its own request ids, as a real client does.
    @rule(
        name=st.sampled_from(NAMES),
        holder=st.sampled_from(HOLDERS),
        attempt=st.integers(0, 3),
        wait=st.booleans(),
    )
    def acquire(self, name: str, holder: str, attempt: int, wait: bool) -> None:
        result = self.step(acquire(name, holder, f"{holder}-{attempt}", wait=wait))
        assert isinstance(result, Granted | Queued | Held)

    @precondition(lambda self: bool(self.granted))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        lease_id = data.draw(st.sampled_from(self.granted))
        was_current = self.table.by_lease_id(lease_id) is not None
        result = self.step(Release(lease_id))
        assert isinstance(result, Released if was_current else NotFound)

    @precondition(lambda self: bool(self.granted))
    @rule(name=st.sampled_from(NAMES), data=st.data())
    def expire(self, name: str, data: st.DataObject) -> None:
        lease_id = data.draw(st.sampled_from(self.granted))
        self.step(Expire(name, lease_id))

    @rule(name=st.sampled_from(NAMES), holder=st.sampled_from(HOLDERS), attempt=st.integers(0, 3))
    def cancel_wait(self, name: str, holder: str, attempt: int) -> None:
        self.step(CancelWait(name, f"{holder}-{attempt}"))

    @rule(name=st.sampled_from(NAMES), n=st.integers(0, 5))
    def cancel_a_queued_waiter(self, name: str, n: int) -> None:
        queue = self.table.waiters(name)
        if queue:
            result = self.step(CancelWait(name, queue[n % len(queue)].request_id))
            assert isinstance(result, WaitCancelled)
            assert result.found

    @rule(name=st.sampled_from(NAMES), expire=st.booleans())
    def end_the_current_lease(self, name: str, expire: bool) -> None:
        current = self.table.get(name)
        if current is not None:
            queue = self.table.waiters(name)
            cmd = Expire(name, current.lease_id) if expire else Release(current.lease_id)
            result = self.step(cmd)
            assert isinstance(result, Expired if expire else Released)
            assert result.lease == current
            next_grant = result.next_grant
            assert (next_grant.request_id if next_grant else None) == (
                queue[0].request_id if queue else None
            )

    @rule(name=st.sampled_from(NAMES))
    def invalid(self, name: str) -> None:
        before = leases_state(self.table)
        self.index += 1
        result, events = self.table.apply_entry(b'{"type":"acquire"}', self.index)
        assert isinstance(result, Rejected)
        assert events == []
        assert leases_state(self.table) == before

    @invariant()
    def at_most_one_current_lease_per_name(self) -> None:
        leases = self.table.leases()
        names = [lease.name for lease in leases]
        assert len(names) == len(set(names)) == len(self.table)
        for lease in leases:
            assert self.table.by_lease_id(lease.lease_id) == lease
            assert lease.lease_id == lease.fencing_token == lease.granted_index
            assert self.table.check_token(lease.name, lease.fencing_token)

    @invariant()
    def matches_the_model(self) -> None:
        for name in NAMES:
            lease = self.table.get(name)
            expected = self.model.current.get(name)
            got = None if lease is None else (lease.fencing_token, lease.holder, lease.request_id)
            assert got == expected
            queue = [(w.holder, w.request_id) for w in self.table.waiters(name)]
            assert queue == self.model.queues[name]
            if lease is None:
                assert queue == [], "waiters on a free name"

    @invariant()
    def snapshot_round_trips(self) -> None:
        restored = LeaseTable.restore(self.table.snapshot())
        assert restored == self.table
        assert restored.snapshot() == self.table.snapshot()
        assert LeaseTable.restore(format_1(self.table)) == self.table  # older snapshots too


TestLeaseTableMachine = LeaseTableMachine.TestCase
TestLeaseTableMachine.settings = settings(max_examples=100, stateful_step_count=40)


def test_long_random_run_keeps_the_invariants() -> None:
    # A plain seeded run, longer than hypothesis explores; the seed is in the failure message.
    seed = 20240611
    rng = random.Random(seed)
    machine = LeaseTableMachine()
    for _ in range(3000):
        choice = rng.random()
        name, holder = rng.choice(NAMES), rng.choice(HOLDERS)
        if choice < 0.4:
            machine.acquire(name, holder, rng.randrange(4), rng.random() < 0.6)
        elif choice < 0.5 and machine.granted:
            machine.step(Release(rng.choice(machine.granted[-10:])))
        elif choice < 0.6 and machine.granted:
            machine.step(Expire(name, rng.choice(machine.granted[-10:])))
        elif choice < 0.8:
            machine.end_the_current_lease(name, expire=rng.random() < 0.5)
        elif choice < 0.9:
            machine.cancel_a_queued_waiter(name, rng.randrange(5))
        else:
            machine.cancel_wait(name, holder, rng.randrange(4))
        machine.at_most_one_current_lease_per_name()
        machine.matches_the_model()
        machine.snapshot_round_trips()
    assert LeaseTable.restore(machine.table.snapshot()) == machine.table, f"seed={seed}"
    assert len(machine.granted) > 100, f"seed={seed}: the run granted too little"
