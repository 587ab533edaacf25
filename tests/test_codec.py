"""raftlease.codec: every core message kind survives encode -> wire bytes -> decode unchanged.

Also: the routing envelope (cluster id, src, dst) is written, an empty oneof and an unknown
entry kind are rejected with ValueError, and every message kind has a strategy here (so a
kind added to the core without a codec branch fails this module).
"""

from __future__ import annotations

import dataclasses
import typing

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftlease.codec import message_from_pb, message_to_pb
from raftlease.core.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    EntryKind,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
    RequestVote,
    RequestVoteResponse,
    Snapshot,
    TimeoutNow,
)
from raftlease.types import NodeId
from raftlease.v1 import raft_pb2

if typing.TYPE_CHECKING:
    from google.protobuf.message import Message as ProtoMessage

u64 = st.integers(min_value=0, max_value=2**64 - 1)
node_ids = st.text(max_size=12).map(NodeId)
payloads = st.binary(max_size=64)

entries = st.builds(Entry, index=u64, term=u64, kind=st.sampled_from(EntryKind), data=payloads)
snapshots = st.builds(
    Snapshot,
    index=u64,
    term=u64,
    voters=st.lists(node_ids, max_size=5).map(tuple),
    data=payloads,
    learners=st.lists(node_ids, max_size=3).map(tuple),
    # A map on the wire: distinct ids, decoded in id order.
    addresses=st.dictionaries(node_ids, st.text(max_size=20), max_size=4).map(
        lambda d: tuple(sorted(d.items()))
    ),
)

STRATEGIES: dict[type[Message], st.SearchStrategy[Message]] = {
    RequestVote: st.builds(
        RequestVote,
        term=u64,
        src=node_ids,
        dst=node_ids,
        last_log_index=u64,
        last_log_term=u64,
        pre_vote=st.booleans(),
        transfer=st.booleans(),
    ),
    RequestVoteResponse: st.builds(
        RequestVoteResponse,
        term=u64,
        src=node_ids,
        dst=node_ids,
        granted=st.booleans(),
        pre_vote=st.booleans(),
    ),
    AppendEntries: st.builds(
        AppendEntries,
        term=u64,
        src=node_ids,
        dst=node_ids,
        prev_log_index=u64,
        prev_log_term=u64,
        entries=st.lists(entries, max_size=5).map(tuple),
        leader_commit=u64,
        send_tick=u64,
    ),
    AppendEntriesResponse: st.builds(
        AppendEntriesResponse,
        term=u64,
        src=node_ids,
        dst=node_ids,
        success=st.booleans(),
        match_index=u64,
        last_log_index=u64,
        conflict_term=u64,
        conflict_index=u64,
        send_tick=u64,
        applied_index=u64,
    ),
    InstallSnapshot: st.builds(
        InstallSnapshot,
        term=u64,
        src=node_ids,
        dst=node_ids,
        snapshot=snapshots,
        send_tick=u64,
    ),
    InstallSnapshotResponse: st.builds(
        InstallSnapshotResponse,
        term=u64,
        src=node_ids,
        dst=node_ids,
        match_index=u64,
        send_tick=u64,
    ),
    TimeoutNow: st.builds(TimeoutNow, term=u64, src=node_ids, dst=node_ids),
}


def _roundtrip(msg: Message, cluster_id: str) -> tuple[raft_pb2.PeerMessage, Message]:
    wire = message_to_pb(msg, cluster_id).SerializeToString()
    pb = raft_pb2.PeerMessage.FromString(wire)
    return pb, message_from_pb(pb)


def test_every_message_kind_has_a_strategy() -> None:
    assert set(STRATEGIES) == set(typing.get_args(Message))


@pytest.mark.parametrize("kind", list(STRATEGIES), ids=lambda k: k.__name__)
@given(data=st.data(), cluster_id=st.text(max_size=12))
def test_roundtrip(kind: type[Message], data: st.DataObject, cluster_id: str) -> None:
    msg = data.draw(STRATEGIES[kind])
    pb, back = _roundtrip(msg, cluster_id)
    assert back == msg
    assert type(back) is kind
    assert (pb.cluster_id, pb.src, pb.dst) == (cluster_id, msg.src, msg.dst)


@pytest.mark.parametrize(
    "msg",
    [
        # All-default bodies must still set the oneof, or they would decode as "empty".
        TimeoutNow(term=0, src=NodeId(""), dst=NodeId("")),
        AppendEntriesResponse(term=0, src=NodeId("a"), dst=NodeId("b"), success=False),
        InstallSnapshot(term=0, src=NodeId("a"), dst=NodeId("b"), snapshot=Snapshot(0, 0, ())),
    ],
    ids=lambda m: type(m).__name__,
)
def test_roundtrip_of_all_default_bodies(msg: Message) -> None:
    _, back = _roundtrip(msg, "")
    assert back == msg


def test_empty_body_is_rejected() -> None:
    pb = raft_pb2.PeerMessage(cluster_id="c", src="n1", dst="n2")
    with pytest.raises(ValueError, match="empty body"):
        message_from_pb(pb)


def test_unspecified_entry_kind_is_rejected() -> None:
    pb = raft_pb2.PeerMessage(
        src="n1",
        dst="n2",
        append_entries=raft_pb2.AppendEntriesRequest(
            term=1, entries=[raft_pb2.Entry(index=1, term=1, data=b"x")]
        ),
    )
    with pytest.raises(ValueError, match="unknown kind 0"):
        message_from_pb(pb)


def test_entry_kinds_match_the_wire_numbers() -> None:
    # The proto enum and the core enum agree on names and numbers, so logs stay readable.
    assert {k.name: k.value for k in EntryKind} == {
        name.removeprefix("ENTRY_KIND_"): number
        for name, number in raft_pb2.EntryKind.items()
        if number != raft_pb2.ENTRY_KIND_UNSPECIFIED
    }


PB_BODY: dict[type[Message], type[ProtoMessage]] = {
    RequestVote: raft_pb2.RequestVoteRequest,
    RequestVoteResponse: raft_pb2.RequestVoteResponse,
    AppendEntries: raft_pb2.AppendEntriesRequest,
    AppendEntriesResponse: raft_pb2.AppendEntriesResponse,
    InstallSnapshot: raft_pb2.InstallSnapshotRequest,
    InstallSnapshotResponse: raft_pb2.InstallSnapshotResponse,
    TimeoutNow: raft_pb2.TimeoutNowRequest,
}


@pytest.mark.parametrize("kind", list(PB_BODY), ids=lambda k: k.__name__)
def test_message_field_order_matches_the_proto(kind: type[Message]) -> None:
    # codec.message_from_pb passes positional arguments in proto field order (src and dst
    # right after term); a reordered dataclass field must fail here, not swap values silently.
    proto = [f.name for f in PB_BODY[kind].DESCRIPTOR.fields]
    assert [f.name for f in dataclasses.fields(kind)] == [proto[0], "src", "dst", *proto[1:]]


@pytest.mark.parametrize(
    ("kind", "proto"), [(Entry, raft_pb2.Entry), (Snapshot, raft_pb2.Snapshot)]
)
def test_record_field_order_matches_the_proto(
    kind: type[Entry | Snapshot], proto: type[ProtoMessage]
) -> None:
    assert [f.name for f in dataclasses.fields(kind)] == [f.name for f in proto.DESCRIPTOR.fields]
