"""raftlease.fsm.limits: every bound, the exact messages users see, and the Cc rule."""

from __future__ import annotations

import sys
import unicodedata
from typing import TYPE_CHECKING

import pytest

from raftlease.errors import RaftLeaseError
from raftlease.fsm import limits
from raftlease.fsm.limits import (
    InvalidArgument,
    validate_health,
    validate_holder,
    validate_metadata,
    validate_name,
    validate_request_id,
    validate_ttl_ms,
    validate_wait_ms,
)

if TYPE_CHECKING:
    from collections.abc import Callable


def message(validator: Callable[[object], object], value: object) -> str:
    with pytest.raises(InvalidArgument) as info:
        validator(value)
    return str(info.value)


def test_constants() -> None:
    assert limits.MAX_NAME_BYTES == 256
    assert limits.MAX_HOLDER_BYTES == 256
    assert limits.MIN_TTL_MS == 1000
    assert limits.MAX_TTL_MS == 3_600_000
    assert limits.MAX_WAIT_MS == 3_600_000
    assert limits.MAX_METADATA_ENTRIES == 16
    assert limits.MAX_METADATA_BYTES == 4096
    assert limits.MAX_HEALTH_ENTRIES == 16
    assert limits.MAX_HEALTH_BYTES == 1024
    assert limits.MAX_REQUEST_ID_BYTES == 128


def test_invalid_argument_is_a_raftlease_error_and_a_value_error() -> None:
    assert issubclass(InvalidArgument, RaftLeaseError)
    assert issubclass(InvalidArgument, ValueError)


# --------------------------------------------------------------------------- names and holders


@pytest.mark.parametrize(
    "value", ["a", "billing", "x" * 256, "é" * 128, "jobs/billing-eu", " padded ", "名前"]
)
def test_name_accepts_and_returns_valid_names(value: str) -> None:
    assert validate_name(value) == value
    assert validate_holder(value) == value


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", "name must not be empty"),
        ("x" * 300, "name is 300 bytes; the limit is 256 bytes (UTF-8)"),
        ("x" * 257, "name is 257 bytes; the limit is 256 bytes (UTF-8)"),
        ("é" * 129, "name is 258 bytes; the limit is 256 bytes (UTF-8)"),
        ("a\nb", "name must not contain control characters (found U+000A at character 1)"),
        ("\x00", "name must not contain control characters (found U+0000 at character 0)"),
        ("ab\x7f", "name must not contain control characters (found U+007F at character 2)"),
        ("a\x85", "name must not contain control characters (found U+0085 at character 1)"),
        ("   ", "name must not be only whitespace"),
        ("\u3000\u2003", "name must not be only whitespace"),
        (
            "a\ud800",
            "name is not valid Unicode: it contains the lone surrogate U+D800 at character 1",
        ),
        (5, "name must be a string, got int"),
        (None, "name must be a string, got NoneType"),
        (b"billing", "name must be a string, got bytes"),
    ],
)
def test_name_rejections(value: object, expected: str) -> None:
    assert message(validate_name, value) == expected


def test_holder_follows_the_name_rules_with_its_own_field_name() -> None:
    assert message(validate_holder, "") == "holder must not be empty"
    assert message(validate_holder, "h" * 257) == (
        "holder is 257 bytes; the limit is 256 bytes (UTF-8)"
    )
    assert message(validate_holder, "h\t") == (
        "holder must not contain control characters (found U+0009 at character 1)"
    )
    assert message(validate_holder, " ") == "holder must not be only whitespace"
    assert message(validate_holder, 1.0) == "holder must be a string, got float"


def test_control_characters_are_exactly_unicode_category_cc() -> None:
    # The validators use a fast character class; check it against this Python's database.
    cc = {cp for cp in range(sys.maxunicode + 1) if unicodedata.category(chr(cp)) == "Cc"}
    assert cc == set(range(0x20)) | set(range(0x7F, 0xA0))
    for cp in range(0x800):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        value = "x" + chr(cp)
        if cp in cc:
            assert message(validate_name, value).startswith(
                "name must not contain control characters"
            )
        else:
            assert validate_name(value) == value


# --------------------------------------------------------------------------- request ids


def test_request_id_rules() -> None:
    assert validate_request_id("r" * 128) == "r" * 128
    assert validate_request_id("7f1c2e1e-8a51-4cbe-9d2b-0b1c3a4f5e6d") != ""
    assert message(validate_request_id, "") == "request_id must not be empty"
    assert message(validate_request_id, "r" * 129) == (
        "request_id is 129 bytes; the limit is 128 bytes (UTF-8)"
    )
    assert message(validate_request_id, "r\r") == (
        "request_id must not contain control characters (found U+000D at character 1)"
    )
    assert message(validate_request_id, 7) == "request_id must be a string, got int"


# --------------------------------------------------------------------------- durations


@pytest.mark.parametrize("value", [1000, 1001, 60_000, 3_600_000])
def test_ttl_accepts_the_inclusive_range(value: int) -> None:
    assert validate_ttl_ms(value) == value


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (50, "ttl_ms=50 is below the minimum 1000 ms"),
        (999, "ttl_ms=999 is below the minimum 1000 ms"),
        (0, "ttl_ms=0 is below the minimum 1000 ms"),
        (-5, "ttl_ms=-5 is below the minimum 1000 ms"),
        (3_600_001, "ttl_ms=3600001 is above the maximum 3600000 ms"),
        (True, "ttl_ms must be an integer number of milliseconds, got bool True"),
        (1500.0, "ttl_ms must be an integer number of milliseconds, got float 1500.0"),
        ("10s", "ttl_ms must be an integer number of milliseconds, got str '10s'"),
    ],
)
def test_ttl_rejections(value: object, expected: str) -> None:
    assert message(validate_ttl_ms, value) == expected


def test_wait_ms_rules() -> None:
    assert validate_wait_ms(0) == 0
    assert validate_wait_ms(3_600_000) == 3_600_000
    assert message(validate_wait_ms, -1) == "wait_ms=-1 is below the minimum 0 ms"
    assert message(validate_wait_ms, 3_600_001) == (
        "wait_ms=3600001 is above the maximum 3600000 ms"
    )
    assert message(validate_wait_ms, None) == (
        "wait_ms must be an integer number of milliseconds, got NoneType None"
    )


# --------------------------------------------------------------------------- metadata, health


def test_metadata_accepts_mappings_and_pairs_and_returns_pairs_in_order() -> None:
    assert validate_metadata({}) == ()
    assert validate_metadata(()) == ()
    assert validate_metadata({"b": "2", "a": "1"}) == (("b", "2"), ("a", "1"))
    assert validate_metadata([("k", "v"), ["x", ""]]) == (("k", "v"), ("x", ""))


def test_metadata_bounds_are_inclusive() -> None:
    sixteen = {f"k{i:02d}": "v" for i in range(16)}
    assert len(validate_metadata(sixteen)) == 16
    # 4096 bytes exactly: key "k" (1 byte) + value of 4095 bytes.
    assert validate_metadata({"k": "v" * 4095}) == (("k", "v" * 4095),)
    assert validate_metadata({"k": "é" * 2047 + "v"}) != ()  # 1 + 4094 + 1 = 4096 bytes


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            {f"k{i:02d}": "v" for i in range(17)},
            "metadata has 17 entries; the limit is 16",
        ),
        (
            {"k": "v" * 4096},
            "metadata is 4097 bytes (keys plus values, UTF-8); the limit is 4096 bytes",
        ),
        (
            {"ké": "é" * 2047},
            "metadata is 4097 bytes (keys plus values, UTF-8); the limit is 4096 bytes",
        ),
        ({3: "v"}, "metadata keys must be strings, got int 3"),
        ({"k": 3}, "metadata value of key 'k' must be a string, got int"),
        ([("k", "1"), ("k", "2")], "metadata key 'k' appears more than once"),
        ([("k", "1", "x")], "metadata entries must be (key, value) pairs, got ('k', '1', 'x')"),
        (["kv"], "metadata entries must be (key, value) pairs, got 'kv'"),
        (5, "metadata must be a mapping or a sequence of (key, value) pairs, got int"),
        ("k=v", "metadata must be a mapping or a sequence of (key, value) pairs, got str"),
        (
            {"k\ud800": "v"},
            "metadata key 'k\\ud800' is not valid Unicode: it contains the lone surrogate "
            "U+D800 at character 1",
        ),
    ],
)
def test_metadata_rejections(value: object, expected: str) -> None:
    assert message(validate_metadata, value) == expected


def test_health_rules() -> None:
    assert validate_health({"queue_depth": "12", "last_id": "9"}) == (
        ("queue_depth", "12"),
        ("last_id", "9"),
    )
    assert validate_health({"k": "v" * 1023}) == (("k", "v" * 1023),)
    assert message(validate_health, {"k": "v" * 1024}) == (
        "health is 1025 bytes (keys plus values, UTF-8); the limit is 1024 bytes"
    )
    assert message(validate_health, {str(i): "" for i in range(17)}) == (
        "health has 17 entries; the limit is 16"
    )
    assert message(validate_health, {"k": None}) == (
        "health value of key 'k' must be a string, got NoneType"
    )
