"""Per-request timing probes for one server process (bench only; raftlease/ is not edited).

``install(path, node_id)`` wraps a few functions of the running server so that each records
``(event, time.monotonic(), a, b)`` into a list, written as JSON lines to ``path`` at exit.
``time.monotonic`` is CLOCK_MONOTONIC, shared by every process on the machine, so events of
the leader, the followers and the client line up on one time axis.

Events (``a``/``b`` meaning):
  acq_in / acq_out    Lease.Acquire servicer entered / returned (request_id, -)
  propose             RaftCore.propose appended an entry (index, -)
  ready               Node._handle_ready began (first entry index or -1, last committed or -1)
  save0 / save1       Node._save began / ended in the fsync thread (first, last entry index)
  send_ae / send_aer  transport.send got an AppendEntries with entries / a response (peer, idx)
  enc_ae / enc_aer    the peer link serialized it (peer, idx)
  dec_ae / dec_aer    PeerServicer decoded it on arrival (peer, idx)
  apply0 / apply1     Node._apply began / ended (first, last committed index)

Every wrapper is defensive: if a name moved, that probe is skipped and the server still runs.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import sys
import time
from typing import Any, NoReturn

EVENTS: list[tuple[str, float, Any, Any]] = []


def _rec(ev: str, a: Any = None, b: Any = None) -> None:
    EVENTS.append((ev, time.monotonic(), a, b))


def _dump(path: str, node_id: str) -> None:
    with open(path, "w") as f:
        f.write(json.dumps({"node": node_id}) + "\n")
        for e in EVENTS:
            f.write(json.dumps(e) + "\n")


def install(path: str, node_id: str) -> None:
    atexit.register(_dump, path, node_id)
    # The server leaves with os._exit once everything is closed (no atexit then): dump first.
    real_exit = os._exit

    def _exit(code: int) -> NoReturn:
        _dump(path, node_id)
        real_exit(code)

    os._exit = _exit
    skipped: list[str] = []

    try:
        from raftlease.core import raft
        from raftlease.core.messages import AppendEntries, AppendEntriesResponse
    except ImportError:
        print("trace: raftlease.core not importable; no probes", file=sys.stderr)
        return

    def ae_info(m: Any) -> tuple[str, int] | None:
        if isinstance(m, AppendEntries) and m.entries:
            return "ae", m.entries[-1].index
        if isinstance(m, AppendEntriesResponse) and m.success:
            return "aer", m.match_index
        return None

    # RaftCore.propose
    orig_propose = getattr(raft.RaftCore, "propose", None)
    if orig_propose is not None:

        @functools.wraps(orig_propose)
        def propose(self: Any, data: bytes) -> Any:
            r = orig_propose(self, data)
            _rec("propose", r[0])
            return r

        raft.RaftCore.propose = propose  # type: ignore[method-assign]
    else:
        skipped.append("RaftCore.propose")

    try:
        from raftlease import node as node_mod
    except ImportError:
        node_mod = None  # type: ignore[assignment]
    if node_mod is not None:
        Node = node_mod.Node
        orig_hr = getattr(Node, "_handle_ready", None)
        if orig_hr is not None:

            @functools.wraps(orig_hr)
            async def _handle_ready(self: Any, rd: Any, *args: Any) -> Any:
                first = rd.entries[0].index if rd.entries else -1
                last_c = rd.committed_entries[-1].index if rd.committed_entries else -1
                _rec("ready", first, last_c)
                return await orig_hr(self, rd, *args)

            Node._handle_ready = _handle_ready  # type: ignore[method-assign]
        else:
            skipped.append("Node._handle_ready")
        orig_save = getattr(Node, "_save", None)
        if orig_save is not None:

            @functools.wraps(orig_save)
            def _save(self: Any, rd: Any) -> Any:
                first = rd.entries[0].index if rd.entries else -1
                last = rd.entries[-1].index if rd.entries else -1
                _rec("save0", first, last)
                try:
                    return orig_save(self, rd)
                finally:
                    _rec("save1", first, last)

            Node._save = _save  # type: ignore[method-assign]
        else:
            skipped.append("Node._save")
        orig_apply = getattr(Node, "_apply", None)
        if orig_apply is not None:

            @functools.wraps(orig_apply)
            def _apply(self: Any, rd: Any) -> Any:
                ce = rd.committed_entries
                if not ce:
                    return orig_apply(self, rd)
                _rec("apply0", ce[0].index, ce[-1].index)
                try:
                    return orig_apply(self, rd)
                finally:
                    _rec("apply1", ce[0].index, ce[-1].index)

            Node._apply = _apply  # type: ignore[method-assign]
        else:
            skipped.append("Node._apply")

    try:
        from raftlease.transport import grpc as tgrpc
    except ImportError:
        tgrpc = None  # type: ignore[assignment]
    if tgrpc is not None:
        T = tgrpc.GrpcTransport
        orig_send = getattr(T, "send", None)
        if orig_send is not None:

            @functools.wraps(orig_send)
            def send(self: Any, messages: Any) -> Any:
                for m in messages:
                    info = ae_info(m)
                    if info is not None:
                        _rec("send_" + info[0], m.dst, info[1])
                return orig_send(self, messages)

            T.send = send  # type: ignore[method-assign]
        else:
            skipped.append("GrpcTransport.send")
        orig_enc = getattr(tgrpc, "message_to_pb", None)
        if orig_enc is not None:

            @functools.wraps(orig_enc)
            def message_to_pb(m: Any, cid: str) -> Any:
                info = ae_info(m)
                if info is not None:
                    _rec("enc_" + info[0], m.dst, info[1])
                return orig_enc(m, cid)

            tgrpc.message_to_pb = message_to_pb
        else:
            skipped.append("transport.grpc.message_to_pb")

    try:
        from raftlease import server as srv
    except ImportError:
        srv = None  # type: ignore[assignment]
    from raftlease.transport import grpc as peer_transport  # its PeerServicer decodes
    from raftlease.transport import tcp as tcp_transport  # and so does the TCP link

    for mod, label in ((peer_transport, "grpc"), (tcp_transport, "tcp")):
        orig_dec = getattr(mod, "message_from_pb", None)
        if orig_dec is None:
            skipped.append(f"transport.{label}.message_from_pb")
            continue

        def make(orig: Any) -> Any:
            @functools.wraps(orig)
            def message_from_pb(pb: Any) -> Any:
                m = orig(pb)
                info = ae_info(m)
                if info is not None:
                    _rec("dec_" + info[0], m.src, info[1])
                return m

            return message_from_pb

        mod.message_from_pb = make(orig_dec)  # type: ignore[attr-defined]
    if srv is not None:
        LS = getattr(srv, "LeaseServicer", None)
        orig_acq = getattr(LS, "Acquire", None) if LS is not None else None
        if orig_acq is not None:

            @functools.wraps(orig_acq)
            async def Acquire(self: Any, request: Any, context: Any) -> Any:
                _rec("acq_in", request.request_id)
                try:
                    return await orig_acq(self, request, context)
                finally:
                    _rec("acq_out", request.request_id)

            LS.Acquire = Acquire
        else:
            skipped.append("LeaseServicer.Acquire")
    if skipped:
        print(f"trace: probes skipped (names moved): {skipped}", file=sys.stderr)
