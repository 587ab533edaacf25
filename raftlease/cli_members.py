"""``raftlease member`` and ``raftlease snapshot``: membership changes, backup and restore.

Registered by :func:`raftlease.cli.build_parser` (``register``); the procedures they serve
(replace a dead node, move a cluster, back up and restore) are in docs/membership.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable

    from raftlease.client._models import MemberList
    from raftlease.v1 import cluster_pb2

#: First line of a snapshot file; then the SnapshotResponse message, then its SHA-256.
SNAPSHOT_MAGIC = b"RAFTLEASE-SNAPSHOT 1\n"
_DIGEST = 32


def register(
    add: Callable[..., argparse.ArgumentParser], json_flag: argparse.ArgumentParser
) -> None:
    from raftlease.cli import parse_duration_arg, parse_peers

    p = add(
        "member",
        cmd_member,
        "list, add, promote or remove cluster members (one server at a time)",
        json_flag,
    )
    p.add_argument(
        "action",
        choices=("list", "add", "promote", "remove"),
        help="list | add ID=HOST:PORT [--learner] | promote ID | remove ID",
    )
    p.add_argument("member", nargs="?", default=None, metavar="ID[=HOST:PORT]")
    p.add_argument(
        "--learner",
        action="store_true",
        help="add: stop once it is a learner (replicated to, not voting); promote it later",
    )
    p.add_argument(
        "--catch-up-timeout",
        type=parse_duration_arg,
        default=60.0,
        metavar="DURATION",
        help="add: how long the new member may take to catch up before promotion (default 60s)",
    )

    p = add(
        "snapshot",
        cmd_snapshot,
        "save a consistent snapshot from the leader, or restore one into a new data dir",
    )
    p.add_argument("action", choices=("save", "restore"), help="save FILE | restore FILE ...")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--data-dir", default=None, metavar="DIR", help="restore: the new data dir")
    p.add_argument("--id", default=None, help="restore: this node's id in the new cluster")
    p.add_argument(
        "--peers",
        type=parse_peers,
        default=None,
        metavar="ID=HOST:PORT,...",
        help="restore: every member of the new cluster (default: the snapshot's members)",
    )
    p.add_argument(
        "--cluster-id",
        default=None,
        help="restore: the new cluster's id (default: the snapshot's cluster id + '-r' + its "
        "index, the same on every node restored from one file)",
    )


# ------------------------------------------------------------------------------- member


def _print_members(ml: MemberList, as_json: bool) -> None:
    if as_json:
        print(
            json.dumps(
                {
                    "config_index": ml.config_index,
                    "committed": ml.committed,
                    "leader": ml.leader_id,
                    "members": [
                        {
                            "id": m.id,
                            "peer_address": m.peer_address,
                            "role": "learner" if m.learner else "voter",
                            "lag": m.lag,
                        }
                        for m in ml.members
                    ],
                },
                indent=2,
            )
        )
        return
    from raftlease.cli import _table

    rows = [
        (
            m.id + (" *" if m.id == ml.leader_id else ""),
            m.peer_address,
            "learner" if m.learner else "voter",
            "?" if m.lag is None else m.lag,
        )
        for m in ml.members
    ]
    _table(("ID", "PEER ADDRESS", "ROLE", "LAG"), rows, sys.stdout)
    state = "committed" if ml.committed else "not committed yet"
    print(f"configuration at log index {ml.config_index} ({state}); * = leader")


def cmd_member(args: argparse.Namespace) -> int:
    from raftlease.cli import UsageError, _client, _key_value

    action, target = args.action, args.member
    if action == "list":
        if target is not None:
            raise UsageError("member list takes no member argument")
    elif target is None:
        form = "ID=HOST:PORT" if action == "add" else "ID"
        raise UsageError(f"member {action} needs {form}")
    with _client(args) as client:
        if action == "list":
            ml = client.members()
        elif action == "add":
            if "=" not in target:
                raise UsageError(f"member add needs ID=HOST:PORT, got {target!r}")
            node_id, address = _key_value(target)
            what = "learner" if args.learner else "voter"
            print(f"adding {node_id} at {address} as a {what}...", file=sys.stderr, flush=True)
            ml = client.add_member(
                node_id,
                address,
                learner=args.learner,
                timeout=max(args.timeout, args.catch_up_timeout + 5.0),
            )
            print(f"{node_id} is now a {what}", file=sys.stderr)
        elif action == "promote":
            ml = client.promote_member(target, timeout=max(args.timeout, 30.0))
            print(f"{target} is now a voter", file=sys.stderr)
        else:
            ml = client.remove_member(target, timeout=max(args.timeout, 30.0))
            print(f"{target} removed", file=sys.stderr)
    _print_members(ml, args.json)
    return 0


# ------------------------------------------------------------------------------- snapshot


def write_snapshot(path: str, resp: cluster_pb2.SnapshotResponse) -> int:
    """Write ``resp`` to ``path`` atomically (temp file, fsync, rename); returns the size."""
    body = resp.SerializeToString()
    blob = SNAPSHOT_MAGIC + body + hashlib.sha256(body).digest()
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(blob)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return len(blob)


def read_snapshot(path: str) -> cluster_pb2.SnapshotResponse:
    """Read a snapshot file; ValueError if it is not one or is damaged."""
    from raftlease.v1 import cluster_pb2

    blob = Path(path).read_bytes()
    if not blob.startswith(SNAPSHOT_MAGIC) or len(blob) < len(SNAPSHOT_MAGIC) + _DIGEST:
        raise ValueError(f"{path} is not a raftlease snapshot file")
    body, digest = blob[len(SNAPSHOT_MAGIC) : -_DIGEST], blob[-_DIGEST:]
    if hashlib.sha256(body).digest() != digest:
        raise ValueError(f"{path} is damaged: its checksum does not match")
    resp = cluster_pb2.SnapshotResponse()
    resp.ParseFromString(body)
    return resp


def restore_snapshot(
    resp: cluster_pb2.SnapshotResponse,
    data_dir: str,
    node_id: str,
    peers: dict[str, str],
    cluster_id: str,
) -> Path:
    """Seed a brand-new data dir for ``node_id`` of a new cluster whose members are
    ``peers``, from a snapshot. Raises ValueError (nothing written) on bad input."""
    from raftlease.core.membership import Membership
    from raftlease.core.messages import Snapshot
    from raftlease.core.ready import HardState
    from raftlease.fsm.leases import LeaseTable
    from raftlease.storage.sqlite import SqliteStorage
    from raftlease.types import NodeId

    if node_id not in peers:
        raise ValueError(f"--id {node_id} is not one of the members {sorted(peers)}")
    db = Path(data_dir) / "raft.db"
    if db.exists():
        raise ValueError(f"{db} exists: restore only into a new, empty data dir")
    LeaseTable.restore(resp.data)  # refuse a table this version cannot read, before writing
    m = Membership.of({NodeId(k): v for k, v in peers.items()})
    snap = Snapshot(resp.index, resp.term, m.voters, resp.data, m.learners, m.addresses)
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    with SqliteStorage(db, cluster_id=cluster_id, node_id=node_id, members=list(peers)) as st:
        st.save(HardState(resp.term, None, resp.index), snap, [])
    return db


def cmd_snapshot(args: argparse.Namespace) -> int:
    from raftlease.cli import UsageError, _client, _fail

    if args.action == "save":
        with _client(args) as client:
            resp = client.snapshot()
        size = write_snapshot(args.file, resp)
        members = ", ".join(f"{m.id}{' (learner)' if m.learner else ''}" for m in resp.members)
        from raftlease.fsm.leases import LeaseTable

        leases = len(LeaseTable.restore(resp.data))
        print(
            f"saved snapshot of cluster {resp.cluster_id} at index {resp.index} (term "
            f"{resp.term}): {leases} lease(s), members {members}; {size} bytes to {args.file}"
        )
        return 0
    missing = [f for f in ("data_dir", "id") if getattr(args, f) is None]
    if missing:
        raise UsageError(
            "snapshot restore needs " + " and ".join("--" + f.replace("_", "-") for f in missing)
        )
    try:
        resp = read_snapshot(args.file)
    except OSError as e:
        return _fail(f"cannot read {args.file}: {e.strerror or e}")
    peers: dict[str, Any] = (
        dict(args.peers)
        if args.peers
        else {m.id: m.peer_address for m in resp.members if not m.learner}
    )
    cluster_id = args.cluster_id or f"{resp.cluster_id}-r{resp.index}"
    db = restore_snapshot(resp, args.data_dir, args.id, peers, cluster_id)
    print(
        f"restored index {resp.index} (term {resp.term}) of cluster {resp.cluster_id} into "
        f"{db} as node {args.id} of cluster {cluster_id} with members "
        f"{', '.join(f'{k}={v}' for k, v in sorted(peers.items()))}\n"
        f"start it with: raftlease serve --id {args.id} --cluster-id {cluster_id} "
        f"--data-dir {args.data_dir} --listen {peers[args.id]} --peers "
        + ",".join(f"{k}={v}" for k, v in sorted(peers.items()))
    )
    return 0


# ------------------------------------------------------------------------------- serve --join


def prepare_join(args: argparse.Namespace) -> int:
    """``serve --join``: fill in --peers (and --cluster-id) from the running cluster. 0 to go
    on; else the exit code after one line on stderr. A node whose data dir is new may join
    only under an id that is not a voter already: a voter's id with an empty data dir is a
    wiped node, whose forgotten vote could elect two leaders in one term."""
    from raftlease.client import LeaseClient
    from raftlease.errors import RaftLeaseError

    def refuse(message: str) -> int:
        print(f"raftlease serve: error: {message}", file=sys.stderr, flush=True)
        return 2

    if args.id is None or args.listen is None:
        return refuse("--join needs --id and --listen")
    try:
        with LeaseClient(args.join, timeout=max(args.timeout, 10.0)) as client:
            ml = client.members()
            cluster_id = client.status().get("cluster_id", "")
    except RaftLeaseError as e:
        return refuse(f"cannot reach the cluster at {','.join(args.join)} to join it: {e}")
    fresh = args.data_dir is None or not (Path(args.data_dir) / "raft.db").exists()
    if fresh and args.id in ml.voters:
        return refuse(
            f"{args.id} is already a voter of the cluster and {args.data_dir} holds no data: "
            "a node that lost its data must not come back under its old id. Remove it "
            f"(`raftlease member remove {args.id}`) and add the new machine under a new id"
        )
    if args.cluster_id is not None and cluster_id and args.cluster_id != cluster_id:
        return refuse(f"--cluster-id {args.cluster_id} but the cluster at --join is {cluster_id}")
    if args.cluster_id is None and cluster_id:
        args.cluster_id = cluster_id
    peers = ml.addresses()
    peers.update(dict(args.peers or {}))
    peers[args.id] = args.listen
    args.peers = peers
    return 0
