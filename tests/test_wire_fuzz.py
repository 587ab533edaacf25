"""Fuzz the client wire API of a real 3-node cluster (issue 14).

Hypothesis draws requests of every method of the ``Lease`` and ``Cluster`` services, built
field by field from the protobuf descriptors: extreme integers (0, 2^31, 2^32, 2^63, 2^64-1,
...), empty, oversized and non-ASCII strings, random map entries, names and ids that exist
and ones that do not. Each one is sent, to the leader or a follower, of a cluster of real
``raftlease serve`` processes on loopback, and then:

* the answer is a normal status: never UNKNOWN or INTERNAL (an unhandled exception);
* a request refused with INVALID_ARGUMENT or RESOURCE_EXHAUSTED changed nothing: the leases
  (List), the members (MemberList) and the leader and term (Status) are what they were;
* after the run every node is alive, the leader and its term are unchanged, and no node
  logged a traceback.

Requests that would legitimately disturb the cluster (transfer the leadership, remove,
promote or add a real member) are turned into ones that cannot (another target id, no peer
address). Bounded: 200 examples, about 15 s.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftlease.server import member_id_problems
from raftlease.testing.local import LocalCluster
from raftlease.v1 import cluster_pb2, cluster_pb2_grpc, lease_pb2, lease_pb2_grpc

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from google.protobuf.message import Message

pytestmark = pytest.mark.integration

MEMBERS = ("n1", "n2", "n3")
SEED_NAME = "seed"
TIMEOUT_S = 3.0
#: Codes that mean the server did not handle a request: an exception escaped a handler.
BROKEN = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.DATA_LOSS}
#: Codes that promise the request changed nothing.
REFUSED = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED}

# -- strategies from the descriptors ---------------------------------------------------------

_EDGE_INTS: tuple[int, ...] = (0, 1, 2, 7, 255, 256, 999, 1000, 2**31 - 1, 2**31, 2**32 - 1, 2**32)
_EDGE_INTS += (3_600_000, 3_600_001, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1)
_RANGES = {
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_ENUM: (-(2**31), 2**31 - 1),
}
_WORDS = (
    "",
    " ",
    "\t",
    SEED_NAME,
    *MEMBERS,
    "n4",
    "a",
    "127.0.0.1:1",
    "[::1]:7001",
    "host:",
    ":7001",
    "x:65536",
    "a" * 256,
    "a" * 257,
    "é" * 128,
    "é" * 129,
    "\x00",
    "a\nb",
    "\u202e\ufeff",
    "😀" * 70,
    "\U0010ffff",
)


def ints(lo: int, hi: int) -> st.SearchStrategy[int]:
    edges = [v for v in _EDGE_INTS if lo <= v <= hi] + [v for v in (lo, hi, -1) if lo <= v]
    return st.one_of(st.sampled_from(edges), st.integers(lo, hi))


def strings() -> st.SearchStrategy[str]:
    char = st.characters(codec="utf-8")
    huge = st.builds(
        lambda c, n: c * n, char, st.sampled_from([300, 1025, 4097, 70_000, 1_100_000])
    )
    return st.one_of(
        st.sampled_from(_WORDS),
        st.text(char, max_size=40),
        st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=12),
        huge,
    )


def field_value(f: Any) -> st.SearchStrategy[Any]:
    """Values of one field (``f``: a FieldDescriptor; upb's own type at run time)."""
    one: st.SearchStrategy[Any]
    if f.message_type is not None and f.message_type.GetOptions().map_entry:
        key = field_value(f.message_type.fields_by_name["key"])
        value = field_value(f.message_type.fields_by_name["value"])
        return st.dictionaries(key, value, max_size=20)
    if f.type == FieldDescriptor.TYPE_MESSAGE:
        one = messages(f.message_type)
    elif f.type == FieldDescriptor.TYPE_STRING:
        one = strings()
    elif f.type == FieldDescriptor.TYPE_BYTES:
        one = st.binary(max_size=2048)
    elif f.type == FieldDescriptor.TYPE_BOOL:
        one = st.booleans()
    elif f.type in _RANGES:
        one = ints(*_RANGES[f.type])
    else:  # pragma: no cover - a field type the request messages do not use yet
        raise AssertionError(f"no strategy for {f.full_name} (type {f.type})")
    if f.is_repeated:
        return st.lists(one, max_size=5)
    return one


def messages(desc: Any) -> st.SearchStrategy[dict[str, Any]]:
    """Keyword arguments for ``desc``'s class: every field set or left out."""
    optional = {f.name: field_value(f) for f in desc.fields}
    return st.fixed_dictionaries({}, optional=optional)


# Every method of both client services: (service, method, request class, streaming kind).
METHODS: list[tuple[str, str, type[Message], str]] = []
for _module, _service in ((lease_pb2, "Lease"), (cluster_pb2, "Cluster")):
    for _m in _module.DESCRIPTOR.services_by_name[_service].methods:
        _cls = getattr(_module, _m.input_type.name)
        _kind = ("stream" if _m.client_streaming else "unary") + (
            "_stream" if _m.server_streaming else "_unary"
        )
        METHODS.append((_service, _m.name, _cls, _kind))


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, Message | list[Message], str]:
    service, method, cls, kind = draw(st.sampled_from(METHODS))
    if kind.startswith("stream"):
        msgs = draw(st.lists(messages(cls.DESCRIPTOR), min_size=0, max_size=4))
        return service, method, [cls(**m) for m in msgs], kind
    return service, method, cls(**draw(messages(cls.DESCRIPTOR))), kind


def defuse(method: str, request: Any) -> None:
    """Turn a request that could legitimately change the membership or the leadership into
    one that cannot: those are not what this test is about."""
    if method == "TransferLeadership" and request.target_id in ("", *MEMBERS):
        request.target_id = "zz" + request.target_id
    elif method in ("MemberRemove", "MemberPromote") and request.id in MEMBERS:
        request.id = "zz" + request.id
    elif method == "MemberAdd" and not member_id_problems(request.id):
        request.peer_address = ""  # refused: the address is required


# -- the cluster --------------------------------------------------------------------------------


class Target:
    """Sync stubs on every node."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.channels = {
            nid: grpc.insecure_channel(node.address, options=[("grpc.enable_retries", 0)])
            for nid, node in cluster.nodes.items()
        }
        self.lease = {nid: lease_pb2_grpc.LeaseStub(ch) for nid, ch in self.channels.items()}
        self.admin = {nid: cluster_pb2_grpc.ClusterStub(ch) for nid, ch in self.channels.items()}

    def close(self) -> None:
        for ch in self.channels.values():
            ch.close()

    def state(self, leader: str) -> tuple[object, ...]:
        """What no refused request may change, read on the leader."""
        listed = self.lease[leader].List(lease_pb2.ListRequest(), timeout=TIMEOUT_S)
        leases = sorted(
            (
                i.name,
                i.lease_id,
                i.fencing_token,
                i.holder,
                i.ttl_ms,
                sorted(i.metadata.items()),
                sorted(i.health.items()),
            )
            for i in listed.leases
        )
        members = self.admin[leader].MemberList(cluster_pb2.MemberListRequest(), timeout=TIMEOUT_S)
        shape = [(m.id, m.peer_address, m.learner) for m in members.members]
        status = self.admin[leader].Status(cluster_pb2.StatusRequest(), timeout=TIMEOUT_S)
        return (
            tuple(leases),
            tuple(shape),
            members.config_index,
            status.leader_id,
            status.term,
        )

    def send(self, node: str, service: str, method: str, request: Any, kind: str) -> Any:
        """Make the call; the answer (unary), the answers (streams), or the RpcError."""
        stub = getattr(self.lease[node] if service == "Lease" else self.admin[node], method)
        try:
            if kind == "unary_unary":
                return stub(request, timeout=TIMEOUT_S)
            if kind == "unary_stream":
                out = []
                call = stub(request, timeout=0.4)
                try:
                    out.extend(call)
                except grpc.RpcError as e:
                    if e.code() != grpc.StatusCode.DEADLINE_EXCEEDED:  # still open: fine
                        raise
                return out
            return list(stub(iter(request), timeout=TIMEOUT_S))
        except grpc.RpcError as e:
            return e


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalCluster, str]]:
    root: Path = tmp_path_factory.mktemp("wire-fuzz")
    level = os.environ.get("RAFTLEASE_LOG_LEVEL", "INFO")
    cluster = LocalCluster(root, 3, env={"RAFTLEASE_LOG_LEVEL": level})
    cluster.start_all()
    try:
        leader = cluster.wait_leader(20.0)
        yield cluster, leader
    finally:
        codes = cluster.stop()
        print(f"exit codes: {codes}\n{cluster.log_tails()}")


def test_every_request_gets_a_normal_answer_and_refusals_change_nothing(
    running: tuple[LocalCluster, str],
) -> None:
    cluster, leader = running
    target = Target(cluster)
    try:
        seed = target.lease[leader].Acquire(
            lease_pb2.AcquireRequest(
                name=SEED_NAME, holder="fuzz", ttl_ms=3_600_000, request_id="seed-1"
            ),
            timeout=10,
        )
        assert seed.acquired
        term = target.state(leader)[-1]
        nodes = list(MEMBERS)
        seen: dict[str, set[str]] = {}

        @settings(
            max_examples=200,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(req=requests(), on=st.sampled_from([leader, leader, leader, *nodes]))
        def one(req: tuple[str, str, Any, str], on: str) -> None:
            service, method, request, kind = req
            if kind.endswith("unary") and kind.startswith("unary"):
                defuse(method, request)
            before = target.state(leader)
            answer = target.send(on, service, method, request, kind)
            code = answer.code() if isinstance(answer, grpc.RpcError) else grpc.StatusCode.OK
            seen.setdefault(f"{service}.{method}", set()).add(code.name)
            if isinstance(answer, grpc.RpcError):
                assert code not in BROKEN, f"{service}.{method} -> {code}: {answer.details()}"
                if code in REFUSED:
                    assert target.state(leader) == before, (
                        f"{service}.{method} was refused ({code}) but changed the state"
                    )
            elif (
                method == "Acquire"
                and answer.acquired
                and answer.lease.name != SEED_NAME
                and answer.lease.holder != "fuzz"
            ):
                target.lease[leader].Release(
                    lease_pb2.ReleaseRequest(lease_id=answer.lease.lease_id), timeout=TIMEOUT_S
                )

        one()
        print("codes seen:", {k: sorted(v) for k, v in sorted(seen.items())})
        assert len(seen) == len(METHODS), f"methods never drawn: {METHODS} vs {sorted(seen)}"
        for nid in MEMBERS:
            assert cluster.nodes[nid].alive(), f"{nid} died:\n{cluster.log_tails()}"
        final = target.state(leader)
        assert (final[-2], final[-1]) == (leader, term), "the leadership moved during the fuzz"
        for nid in MEMBERS:
            text = cluster.nodes[nid].log_text()
            assert "Traceback" not in text, f"{nid} logged a traceback:\n{text[-4000:]}"
    finally:
        target.close()
