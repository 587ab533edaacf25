"""Core Raft messages <-> ``raftlease.v1`` protobuf (layer L2).

Protobuf stops here: the core only ever sees the dataclasses of ``raftlease.core.messages``,
and the transport only ever sees ``raft_pb2.PeerMessage``.

This is on the hot path (every heartbeat and every replicated entry passes through it twice),
so it is written out by hand: direct constructor calls with positional arguments when decoding,
fields set in place on the outgoing submessage when encoding (cheaper with upb than building it
apart and copying it in), dispatch by ``match`` with the most frequent kinds first, and no
reflection. Keep it in step with ``raftlease/core/messages.py`` and
``protos/raftlease/v1/raft.proto``; ``tests/test_codec.py`` round-trips every kind.
"""

from __future__ import annotations

from typing import assert_never, cast

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

__all__ = ["message_from_pb", "message_to_pb"]

_KIND_TO_PB: dict[EntryKind, raft_pb2.EntryKind.ValueType] = {
    EntryKind.NORMAL: raft_pb2.ENTRY_KIND_NORMAL,
    EntryKind.NOOP: raft_pb2.ENTRY_KIND_NOOP,
    EntryKind.CONFIG: raft_pb2.ENTRY_KIND_CONFIG,
}
_KIND_FROM_PB: dict[int, EntryKind] = {
    raft_pb2.ENTRY_KIND_NORMAL: EntryKind.NORMAL,
    raft_pb2.ENTRY_KIND_NOOP: EntryKind.NOOP,
    raft_pb2.ENTRY_KIND_CONFIG: EntryKind.CONFIG,
}


def message_to_pb(msg: Message, cluster_id: str) -> raft_pb2.PeerMessage:
    """Encode a core message, with its routing envelope, for the peer transport."""
    pb = raft_pb2.PeerMessage(cluster_id=cluster_id, src=msg.src, dst=msg.dst)
    match msg:
        case AppendEntries():
            ae = pb.append_entries
            ae.SetInParent()
            ae.term = msg.term
            ae.prev_log_index = msg.prev_log_index
            ae.prev_log_term = msg.prev_log_term
            ae.leader_commit = msg.leader_commit
            ae.send_tick = msg.send_tick
            if msg.entries:
                add = ae.entries.add
                kinds = _KIND_TO_PB
                for e in msg.entries:
                    add(index=e.index, term=e.term, kind=kinds[e.kind], data=e.data)
        case AppendEntriesResponse():
            aer = pb.append_entries_response
            aer.SetInParent()
            aer.term = msg.term
            aer.success = msg.success
            aer.match_index = msg.match_index
            aer.last_log_index = msg.last_log_index
            aer.conflict_term = msg.conflict_term
            aer.conflict_index = msg.conflict_index
            aer.send_tick = msg.send_tick
            aer.applied_index = msg.applied_index
        case RequestVote():
            rv = pb.request_vote
            rv.SetInParent()
            rv.term = msg.term
            rv.last_log_index = msg.last_log_index
            rv.last_log_term = msg.last_log_term
            rv.pre_vote = msg.pre_vote
            rv.transfer = msg.transfer
        case RequestVoteResponse():
            rvr = pb.request_vote_response
            rvr.SetInParent()
            rvr.term = msg.term
            rvr.granted = msg.granted
            rvr.pre_vote = msg.pre_vote
        case InstallSnapshot():
            snap = msg.snapshot
            ins = pb.install_snapshot
            ins.SetInParent()
            ins.term = msg.term
            ins.send_tick = msg.send_tick
            s = ins.snapshot
            s.SetInParent()
            s.index = snap.index
            s.term = snap.term
            s.voters.extend(snap.voters)
            s.data = snap.data
            if snap.learners:
                s.learners.extend(snap.learners)
            if snap.addresses:
                s.addresses.update(snap.addresses)
        case InstallSnapshotResponse():
            isr = pb.install_snapshot_response
            isr.SetInParent()
            isr.term = msg.term
            isr.match_index = msg.match_index
            isr.send_tick = msg.send_tick
        case TimeoutNow():
            tn = pb.timeout_now
            tn.SetInParent()
            tn.term = msg.term
        case _:
            assert_never(msg)
    return pb


def message_from_pb(pb: raft_pb2.PeerMessage) -> Message:
    """Decode a peer message into a core message.

    Raises ``ValueError`` if the message has no body or carries an entry of unknown kind; the
    caller drops such a message (a peer speaking a newer or broken protocol).
    """
    src = NodeId(pb.src)
    dst = NodeId(pb.dst)
    # Positional arguments, in field order: about twice as fast as keywords for these frozen
    # dataclasses. tests/test_codec.py pins every dataclass's field order to the proto's (with
    # src and dst after term), so a reordered field fails a test instead of swapping values.
    match pb.WhichOneof("body"):
        case "append_entries":
            ae = pb.append_entries
            entries: tuple[Entry, ...] = ()
            if ae.entries:
                kinds = _KIND_FROM_PB
                try:
                    entries = tuple(
                        [Entry(e.index, e.term, kinds[e.kind], e.data) for e in ae.entries]
                    )
                except KeyError as exc:
                    raise ValueError(
                        f"PeerMessage from {pb.src!r}: log entry of unknown kind {exc.args[0]}"
                    ) from None
            return AppendEntries(
                ae.term,
                src,
                dst,
                ae.prev_log_index,
                ae.prev_log_term,
                entries,
                ae.leader_commit,
                ae.send_tick,
            )
        case "append_entries_response":
            aer = pb.append_entries_response
            return AppendEntriesResponse(
                aer.term,
                src,
                dst,
                aer.success,
                aer.match_index,
                aer.last_log_index,
                aer.conflict_term,
                aer.conflict_index,
                aer.send_tick,
                aer.applied_index,
            )
        case "request_vote":
            rv = pb.request_vote
            return RequestVote(
                rv.term,
                src,
                dst,
                rv.last_log_index,
                rv.last_log_term,
                rv.pre_vote,
                rv.transfer,
            )
        case "request_vote_response":
            rvr = pb.request_vote_response
            return RequestVoteResponse(rvr.term, src, dst, rvr.granted, rvr.pre_vote)
        case "install_snapshot":
            ins = pb.install_snapshot
            s = ins.snapshot
            voters = cast("tuple[NodeId, ...]", tuple(s.voters))
            learners = cast("tuple[NodeId, ...]", tuple(s.learners))
            addresses = cast("tuple[tuple[NodeId, str], ...]", tuple(sorted(s.addresses.items())))
            snapshot = Snapshot(s.index, s.term, voters, s.data, learners, addresses)
            return InstallSnapshot(ins.term, src, dst, snapshot, ins.send_tick)
        case "install_snapshot_response":
            isr = pb.install_snapshot_response
            return InstallSnapshotResponse(isr.term, src, dst, isr.match_index, isr.send_tick)
        case "timeout_now":
            return TimeoutNow(pb.timeout_now.term, src, dst)
        case None:
            raise ValueError(
                f"PeerMessage from {pb.src!r} to {pb.dst!r} has an empty body "
                "(no oneof field set): the sender is broken or speaks a newer protocol"
            )
        case unknown:
            assert_never(unknown)
