"""raftlease.fsm.commands: the canonical encoding, round trips, and decode never crashing.

decode_command reads bytes straight from the log, so for ANY input it must either return a
command or raise ValueError with a clear message, never another exception type.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftlease.fsm.commands import (
    Acquire,
    CancelWait,
    Command,
    Expire,
    Release,
    decode_command,
    encode_command,
)

ACQUIRE = Acquire("billing", "worker-1", 10_000, True, "req-1", (("zone", "eu"),))


def decode_error(data: bytes) -> str:
    with pytest.raises(ValueError, match=r".") as info:
        decode_command(data)
    assert type(info.value) is ValueError
    return str(info.value)


# --------------------------------------------------------------------------- canonical bytes


@pytest.mark.parametrize(
    ("cmd", "expected"),
    [
        (
            ACQUIRE,
            b'{"holder":"worker-1","metadata":[["zone","eu"]],"name":"billing",'
            b'"request_id":"req-1","ttl_ms":10000,"type":"acquire","wait":true}',
        ),
        (Release(42), b'{"lease_id":42,"type":"release"}'),
        (Expire("billing", 42), b'{"lease_id":42,"name":"billing","type":"expire"}'),
        (
            CancelWait("billing", "req-2"),
            b'{"name":"billing","request_id":"req-2","type":"cancel_wait"}',
        ),
    ],
)
def test_encoding_is_compact_sorted_json_with_a_type_tag(cmd: Command, expected: bytes) -> None:
    assert encode_command(cmd) == expected
    assert decode_command(expected) == cmd


def test_non_ascii_and_lone_surrogates_encode_as_ascii_and_round_trip() -> None:
    cmd = Acquire("名前\ud800", "hé", 1000, False, "r", (("ключ", "\U0001f600"),))
    data = encode_command(cmd)
    assert data.isascii()
    assert decode_command(data) == cmd


def test_commands_are_frozen_and_slotted() -> None:
    with pytest.raises(AttributeError):
        Release(1).lease_id = 2  # type: ignore[misc]
    assert not hasattr(Release(1), "__dict__")


def test_metadata_may_be_omitted() -> None:
    data = b'{"holder":"h","name":"n","request_id":"r","ttl_ms":1000,"type":"acquire","wait":false}'
    assert decode_command(data) == Acquire("n", "h", 1000, False, "r", ())


# --------------------------------------------------------------------------- round trips

texts = st.text(max_size=40)
pairs = st.lists(st.tuples(texts, texts), max_size=4).map(tuple)
ints = st.integers(min_value=-(2**70), max_value=2**70)
commands: st.SearchStrategy[Command] = st.one_of(
    st.builds(Acquire, texts, texts, ints, st.booleans(), texts, pairs),
    st.builds(Release, ints),
    st.builds(Expire, texts, ints),
    st.builds(CancelWait, texts, texts),
)


@given(commands)
def test_round_trip(cmd: Command) -> None:
    data = encode_command(cmd)
    assert decode_command(data) == cmd
    assert encode_command(decode_command(data)) == data


# --------------------------------------------------------------------------- clear errors


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "command is not valid JSON: Expecting value: line 1 column 1 (char 0)"),
        (b"\xff\xfe", "command is not valid UTF-8: invalid start byte at byte 0"),
        (b"[1, 2]", "a command must be a JSON object, got array"),
        (b'"release"', "a command must be a JSON object, got string"),
        (b"null", "a command must be a JSON object, got null"),
        (b'{"lease_id":1}', 'a command needs a string "type" field'),
        (b'{"type":7}', 'a command needs a string "type" field'),
        (
            b'{"type":"renew"}',
            "unknown command type 'renew' (known: acquire, cancel_wait, expire, release)",
        ),
        (b'{"type":"release"}', "release command is missing field 'lease_id'"),
        (
            b'{"type":"release","lease_id":1,"force":true}',
            "release command has unknown field 'force'",
        ),
        (b'{"type":"release","lease_id":"1"}', "release.lease_id must be an integer, got string"),
        (b'{"type":"release","lease_id":true}', "release.lease_id must be an integer, got boolean"),
        (b'{"type":"release","lease_id":1.0}', "release.lease_id must be an integer, got number"),
        (b'{"type":"release","lease_id":1e400}', "release.lease_id must be an integer, got number"),
        (
            b'{"type":"release","lease_id":NaN}',
            "command is not valid JSON: NaN is not allowed",
        ),
        (
            b'{"type":"release","lease_id":-Infinity}',
            "command is not valid JSON: -Infinity is not allowed",
        ),
        (b'{"type":"expire","name":null,"lease_id":1}', "expire.name must be a string, got null"),
        (
            b'{"type":"cancel_wait","name":"n","request_id":{}}',
            "cancel_wait.request_id must be a string, got object",
        ),
        (
            b'{"type":"acquire","name":"n","holder":"h","ttl_ms":1000,"wait":1,"request_id":"r"}',
            "acquire.wait must be a boolean, got number",
        ),
        (
            b'{"type":"acquire","name":"n","holder":"h","ttl_ms":1000,"wait":true,'
            b'"request_id":"r","metadata":{"k":"v"}}',
            "acquire.metadata must be an array of [key, value] pairs",
        ),
        (
            b'{"type":"acquire","name":"n","holder":"h","ttl_ms":1000,"wait":true,'
            b'"request_id":"r","metadata":[["k","v","x"]]}',
            "acquire.metadata must be an array of [key, value] pairs",
        ),
        (
            b'{"type":"acquire","name":"n","holder":"h","ttl_ms":1000,"wait":true,'
            b'"request_id":"r","metadata":[["k",1]]}',
            "acquire.metadata keys and values must be strings",
        ),
    ],
)
def test_decode_errors_say_what_is_wrong(data: bytes, expected: str) -> None:
    assert decode_error(data) == expected


def test_decode_rejects_trailing_data() -> None:
    assert decode_error(b'{"type":"release","lease_id":1} x').startswith(
        "command is not valid JSON: Extra data"
    )


def test_decode_survives_deep_nesting_and_huge_numbers() -> None:
    assert decode_error(b"[" * 200_000) == "command is not valid JSON: nested too deeply"
    assert decode_error(b'{"a":' * 200_000) == "command is not valid JSON: nested too deeply"
    huge = b'{"type":"release","lease_id":' + b"9" * 10_000 + b"}"
    assert decode_error(huge).startswith("command is not valid JSON: Exceeds the limit")


def test_decode_accepts_bytearray_and_memoryview() -> None:
    data = encode_command(Release(3))
    assert decode_command(bytearray(data)) == Release(3)
    assert decode_command(memoryview(data)) == Release(3)


def test_decode_of_a_non_bytes_value_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"^a command must be bytes, got str$"):
        decode_command("{}")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- fuzzing


def decodes_or_value_error(data: bytes) -> None:
    try:
        cmd = decode_command(data)
    except ValueError as exc:
        error = exc
    else:
        assert isinstance(cmd, Acquire | Release | Expire | CancelWait)
        return
    assert type(error) is ValueError
    assert str(error)


@given(st.binary(max_size=512))
def test_fuzz_binary(data: bytes) -> None:
    decodes_or_value_error(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                ["type", "name", "holder", "ttl_ms", "wait", "request_id", "metadata", "lease_id"]
            )
            | st.text(max_size=5),
            children,
            max_size=8,
        )
    ),
    max_leaves=20,
)


@given(json_values)
def test_fuzz_json_shapes(value: object) -> None:
    decodes_or_value_error(json.dumps(value).encode())


@given(
    json_values,
    st.sampled_from(["acquire", "release", "expire", "cancel_wait", "x"]),
    st.dictionaries(
        st.sampled_from(
            ["name", "holder", "ttl_ms", "wait", "request_id", "metadata", "lease_id", "other"]
        ),
        st.one_of(st.integers(), st.text(max_size=5), st.booleans(), st.none(), st.just([])),
    ),
)
def test_fuzz_tagged_objects(value: object, tag: str, fields: dict[str, object]) -> None:
    decodes_or_value_error(json.dumps({"type": tag, **fields, "extra": value}).encode())
    decodes_or_value_error(json.dumps({"type": tag, **fields}).encode())


@given(commands, st.data())
def test_fuzz_mutated_encodings(cmd: Command, data: st.DataObject) -> None:
    raw = bytearray(encode_command(cmd))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(raw) - 1))
        raw[position] = data.draw(st.integers(0, 255))
    decodes_or_value_error(bytes(raw))
    decodes_or_value_error(bytes(raw[: data.draw(st.integers(0, len(raw)))]))
