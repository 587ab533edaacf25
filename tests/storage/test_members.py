"""SqliteStorage records the member set (the voter ids) a data dir was created for, and refuses
to open it for another set, before writing anything, until membership changes exist.

Also: a file created before member sets were recorded adopts the first set it is opened with;
``members=None`` neither records nor checks; the members must include the node itself.
"""

from __future__ import annotations

import json
import sqlite3
from typing import TYPE_CHECKING

import pytest

from raftlease.core.messages import Entry, EntryKind
from raftlease.core.ready import HardState
from raftlease.errors import StorageError
from raftlease.storage.base import DataDirMismatch
from raftlease.storage.sqlite import SqliteStorage
from raftlease.types import NodeId

if TYPE_CHECKING:
    from pathlib import Path

CLUSTER = "c-members"
THREE = ("n1", "n2", "n3")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "raft.db"


def open_db(path: Path, members: tuple[str, ...] | list[str] | None = THREE) -> SqliteStorage:
    return SqliteStorage(path, cluster_id=CLUSTER, node_id="n1", members=members)


def stored_meta(path: Path) -> dict[str, str]:
    conn = sqlite3.connect(path)
    try:
        return dict(conn.execute("SELECT key, value FROM meta").fetchall())
    finally:
        conn.close()


def file_state(path: Path) -> tuple[bytes, int, list[str]]:
    """The file's bytes and mtime, and what is in its directory."""
    return path.read_bytes(), path.stat().st_mtime_ns, sorted(p.name for p in path.parent.iterdir())


def write_some_state(path: Path) -> None:
    with open_db(path) as s:
        s.save(
            HardState(3, NodeId("n1"), 1),
            None,
            [Entry(1, 3, EntryKind.NORMAL, b"grant"), Entry(2, 3, EntryKind.NORMAL, b"renew")],
        )


def test_a_new_file_records_the_sorted_member_set(db: Path) -> None:
    open_db(db, ("n3", "n1", "n2")).close()
    assert json.loads(stored_meta(db)["members"]) == ["n1", "n2", "n3"]


def test_the_same_set_in_any_order_reopens(db: Path) -> None:
    write_some_state(db)
    for order in (THREE, ("n2", "n3", "n1"), ["n3", "n2", "n1", "n1"]):
        with open_db(db, order) as s:
            assert s.load().hard_state == HardState(3, NodeId("n1"), 1)


@pytest.mark.parametrize(
    ("members", "named"),
    [
        (("n1",), "{n1}"),  # shrunk to a 1-node cluster: it would commit alone
        (("n1", "n2", "n3", "n4", "n5"), "{n1, n2, n3, n4, n5}"),
        (("n1", "n2", "n4"), "{n1, n2, n4}"),  # same size, other members
    ],
)
def test_another_member_set_is_refused_naming_both_and_writing_nothing(
    db: Path, members: tuple[str, ...], named: str
) -> None:
    write_some_state(db)
    before = file_state(db)
    with pytest.raises(DataDirMismatch) as info:
        open_db(db, members)
    message = str(info.value)
    assert f"was created for members {{n1, n2, n3}}, refusing to start with members {named}" in (
        message
    )
    assert "membership changes" in message
    assert isinstance(info.value, StorageError)  # every caller that stops on StorageError stops
    assert file_state(db) == before
    with open_db(db) as s:  # the rightful configuration still opens, state intact
        assert [e.data for e in s.load().entries] == [b"grant", b"renew"]


def test_a_file_without_a_recorded_set_adopts_the_first_one(db: Path) -> None:
    write_some_state(db)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DELETE FROM meta WHERE key = 'members'")  # as written before this check
    conn.close()
    with open_db(db) as s:
        assert len(s.load().entries) == 2
    assert json.loads(stored_meta(db)["members"]) == list(THREE)
    with pytest.raises(DataDirMismatch, match=r"created for members \{n1, n2, n3\}"):
        open_db(db, ("n1",))


def test_members_none_neither_records_nor_checks(db: Path) -> None:
    open_db(db, None).close()
    assert "members" not in stored_meta(db)
    open_db(db, THREE).close()  # adopted now
    with open_db(db, None):  # and not checked without a set
        pass


def test_the_members_must_include_the_node(db: Path) -> None:
    with pytest.raises(ValueError, match=r"node_id 'n1' is not one of members \['n2', 'n3'\]"):
        open_db(db, ("n2", "n3"))
    assert not db.exists()


def test_an_unreadable_recorded_set_is_refused(db: Path) -> None:
    open_db(db).close()
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("UPDATE meta SET value = '{\"n1\": 1}' WHERE key = 'members'")
    conn.close()
    with pytest.raises(StorageError, match=r"recorded member set .* is unreadable") as info:
        open_db(db)
    assert not isinstance(info.value, DataDirMismatch)
    assert "Do not restart this node with an empty data dir" in str(info.value)


def test_cluster_and_node_mismatches_are_data_dir_mismatches(db: Path) -> None:
    open_db(db).close()
    with pytest.raises(DataDirMismatch, match="belongs to cluster 'c-members' node 'n1'"):
        SqliteStorage(db, cluster_id="other", node_id="n1", members=THREE)
    with pytest.raises(DataDirMismatch, match="belongs to cluster 'c-members' node 'n1'"):
        SqliteStorage(db, cluster_id=CLUSTER, node_id="n2", members=THREE)
