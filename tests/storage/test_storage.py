"""Storage: MemoryStorage and SqliteStorage against the Storage protocol, and each other.

Covers: save/load round trips, suffix replacement, snapshot install (keeping a continuing log
or dropping all of it), compaction, hard-state-only saves and refused (malformed) calls, for
both implementations; for SQLite also reopen, ownership and format checks, garbage files,
checksum failures (any corrupt entry refused, the last one included), a property test holding
SqliteStorage to MemoryStorage, and a real SIGKILL test that acknowledged saves are durable.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftlease.core.messages import Entry, EntryKind, Snapshot
from raftlease.core.ready import HardState
from raftlease.errors import StorageError
from raftlease.storage.base import LoadedState, Storage
from raftlease.storage.memory import MemoryStorage
from raftlease.storage.sqlite import SqliteStorage
from raftlease.types import NodeId

AnyStorage = MemoryStorage | SqliteStorage
Opener = Callable[[], AnyStorage]

REPO_ROOT = Path(__file__).resolve().parents[2]
CLUSTER = "c-test"
NODE = "n1"


def ents(first: int, last: int, term: int = 1, tag: str = "") -> list[Entry]:
    """Entries first..last (inclusive) at ``term``, each with recognisable data."""
    return [
        Entry(i, term, EntryKind.NORMAL, f"{tag}{i}@{term}".encode())
        for i in range(first, last + 1)
    ]


def snap(index: int, term: int, data: bytes = b"state") -> Snapshot:
    return Snapshot(index, term, (NodeId("n1"), NodeId("n2"), NodeId("n3")), data)


def indices(state: LoadedState) -> list[int]:
    return [e.index for e in state.entries]


def raw(path: Path) -> sqlite3.Connection:
    """A plain connection for tampering with a closed storage file."""
    return sqlite3.connect(path, isolation_level=None)


@pytest.fixture(params=["memory", "sqlite"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens the storage under test. For SQLite every call closes the previous handle and
    reopens the file (a restart); for memory it returns the same object (a simulated crash)."""
    handles: list[AnyStorage] = []
    memory = MemoryStorage()

    def open_storage() -> AnyStorage:
        if request.param == "memory":
            return memory
        for h in handles:
            h.close()
        s = SqliteStorage(tmp_path / "node.db", cluster_id=CLUSTER, node_id=NODE)
        handles.append(s)
        return s

    yield open_storage
    for h in handles:
        h.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "node.db"


def open_sqlite(path: Path) -> SqliteStorage:
    return SqliteStorage(path, cluster_id=CLUSTER, node_id=NODE)


# -- shared semantics -------------------------------------------------------------------------


def test_new_storage_loads_empty(opener: Opener) -> None:
    assert opener().load() == LoadedState(HardState(), None, ())


def test_round_trip_survives_restart(opener: Opener) -> None:
    s = opener()
    hs = HardState(term=3, voted_for=NodeId("n2"), commit=2)
    entries = [
        Entry(1, 1, EntryKind.NOOP, b""),
        Entry(2, 2, EntryKind.NORMAL, b"\x00\xffbinary"),
        Entry(3, 3, EntryKind.NORMAL, bytes(range(256)) * 4),
    ]
    s.save(hs, None, entries)
    expected = LoadedState(hs, None, tuple(entries))
    assert s.load() == expected
    assert opener().load() == expected


def test_hard_state_only_saves_keep_the_log(opener: Opener) -> None:
    s = opener()
    s.save(HardState(1, None, 0), None, ents(1, 3))
    s.save(HardState(2, NodeId("n3"), 0), None, [])
    s.save(HardState(2, NodeId("n3"), 3), None, ())
    s = opener()
    state = s.load()
    assert state.hard_state == HardState(2, NodeId("n3"), 3)
    assert state.entries == tuple(ents(1, 3))


def test_empty_save_is_a_no_op(opener: Opener) -> None:
    s = opener()
    s.save(HardState(1), None, ents(1, 2))
    s.save(None, None, [])
    assert opener().load() == LoadedState(HardState(1), None, tuple(ents(1, 2)))


def test_conflicting_suffix_is_replaced(opener: Opener) -> None:
    s = opener()
    s.save(None, None, ents(1, 5, term=1))
    s.save(None, None, ents(4, 4, term=2))  # shorter than what it replaces: 5 must go too
    assert opener().load().entries == (*ents(1, 3, term=1), *ents(4, 4, term=2))


def test_appends_extend_and_replacement_can_start_at_the_first_entry(opener: Opener) -> None:
    s = opener()
    s.save(None, None, ents(1, 2))
    s.save(None, None, ents(3, 4))
    assert indices(s.load()) == [1, 2, 3, 4]
    s.save(None, None, ents(1, 2, term=5))
    assert opener().load().entries == tuple(ents(1, 2, term=5))


def test_snapshot_install_drops_covered_entries_and_keeps_a_continuing_log(
    opener: Opener,
) -> None:
    s = opener()
    s.save(None, None, ents(1, 10, term=1))
    s.save(HardState(2, None, 6), snap(6, 1), [])
    state = opener().load()
    assert state.snapshot == snap(6, 1)
    assert state.entries == tuple(ents(7, 10))
    assert state.hard_state == HardState(2, None, 6)


@pytest.mark.parametrize(
    ("snapshot", "why"),
    [(snap(6, 2), "term differs at its index"), (snap(15, 1), "beyond the last entry")],
)
def test_snapshot_install_drops_everything_when_the_log_does_not_continue_it(
    opener: Opener, snapshot: Snapshot, why: str
) -> None:
    s = opener()
    s.save(None, None, ents(1, 10, term=1))
    s.save(None, snapshot, [])
    state = opener().load()
    assert state.snapshot == snapshot, why
    assert state.entries == (), why


def test_snapshot_and_entries_in_one_save(opener: Opener) -> None:
    s = opener()
    s.save(None, None, ents(1, 10, term=1))
    s.save(HardState(3, None, 20), snap(20, 3), ents(21, 22, term=3))
    state = opener().load()
    assert state.snapshot == snap(20, 3)
    assert state.entries == tuple(ents(21, 22, term=3))


def test_compact_drops_entries_at_or_below_the_snapshot(opener: Opener) -> None:
    s = opener()
    s.save(HardState(1, None, 8), None, ents(1, 10))
    s.compact(snap(5, 1))
    assert indices(s.load()) == [6, 7, 8, 9, 10]
    s.compact(snap(3, 1))  # older than the stored snapshot: ignored
    s.compact(snap(5, 1, data=b"other"))  # same index: ignored
    s.compact(snap(10, 1))
    state = opener().load()
    assert state.snapshot == snap(10, 1)
    assert state.entries == ()
    s = opener()
    s.save(None, None, ents(11, 12))
    assert indices(opener().load()) == [11, 12]


def test_compact_refuses_a_snapshot_the_log_does_not_hold(opener: Opener) -> None:
    s = opener()
    s.save(None, None, ents(1, 5, term=2))
    before = s.load()
    with pytest.raises(StorageError, match="cannot compact to index 3 term 1"):
        s.compact(snap(3, 1))
    with pytest.raises(StorageError, match="cannot compact to index 9"):
        s.compact(snap(9, 2))
    assert opener().load() == before


@pytest.mark.parametrize(
    ("hard_state", "snapshot", "entries", "message"),
    [
        (None, None, ents(8, 9), "leaving a gap after the last stored index 5"),
        (None, None, [*ents(4, 4), *ents(6, 6)], "not contiguous"),
        (None, None, ents(3, 4), "at or below the snapshot index 3"),
        (None, snap(2, 1), [], "older than the stored snapshot at index 3"),
        (HardState(9), snap(4, 1), ents(4, 5), "at or below the snapshot index 4"),
        (HardState(9), snap(5, 1), ents(7, 7), "leaving a gap after the last stored index 5"),
        (HardState(9), snap(7, 1), ents(9, 9), "leaving a gap after the last stored index 7"),
    ],
)
def test_malformed_saves_are_refused_and_change_nothing(
    opener: Opener,
    hard_state: HardState | None,
    snapshot: Snapshot | None,
    entries: list[Entry],
    message: str,
) -> None:
    s = opener()
    s.save(HardState(1), None, ents(1, 5))
    s.compact(snap(3, 1))
    before = s.load()
    with pytest.raises(StorageError, match=message):
        s.save(hard_state, snapshot, entries)
    assert s.load() == before
    assert opener().load() == before


def test_memory_and_sqlite_satisfy_the_protocol(db: Path) -> None:
    with open_sqlite(db) as s:
        implementations: list[Storage] = [MemoryStorage(), s]
        for impl in implementations:
            impl.save(HardState(1), None, ents(1, 1))
            assert indices(impl.load()) == [1]


# -- MemoryStorage ----------------------------------------------------------------------------


def test_memory_copy_is_independent() -> None:
    a = MemoryStorage()
    a.save(HardState(1), None, ents(1, 3))
    b = a.copy()
    b.save(HardState(2), snap(2, 1), ents(3, 4, term=2))
    assert a.load() == LoadedState(HardState(1), None, tuple(ents(1, 3)))
    assert b.load() == LoadedState(HardState(2), snap(2, 1), tuple(ents(3, 4, term=2)))
    assert (b.first_index, b.last_index) == (3, 4)
    a.close()
    assert a.load().hard_state == HardState(1)  # still usable after close (simulated restart)


# -- SqliteStorage: opening -------------------------------------------------------------------


def test_sqlite_uses_wal_and_full_sync(db: Path) -> None:
    with open_sqlite(db) as s:
        s.save(HardState(1), None, ents(1, 1))
        assert s.path == os.fspath(db)
    conn = raw(db)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert tables == {"meta", "hard_state", "entries", "snapshot"}
        meta = dict(conn.execute("SELECT key, value FROM meta"))
        assert meta == {"format_version": "1", "cluster_id": CLUSTER, "node_id": NODE}
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("cluster_id", "node_id"), [("other-cluster", NODE), (CLUSTER, "n9"), ("x", "y")]
)
def test_sqlite_refuses_a_data_dir_of_another_cluster_or_node(
    db: Path, cluster_id: str, node_id: str
) -> None:
    open_sqlite(db).close()
    with pytest.raises(StorageError) as info:
        SqliteStorage(db, cluster_id=cluster_id, node_id=node_id)
    message = str(info.value)
    assert (
        f"data dir {db} belongs to cluster {CLUSTER!r} node {NODE!r}, refusing to start as "
        f"cluster {cluster_id!r} node {node_id!r}"
    ) in message
    with open_sqlite(db) as s:  # the rightful owner still opens it
        assert s.load() == LoadedState(HardState(), None, ())


def test_sqlite_refuses_a_garbage_file(db: Path) -> None:
    db.write_bytes(b"this is not a database, just some text\n" * 200)
    with pytest.raises(StorageError, match="file is not a database") as info:
        open_sqlite(db)
    assert str(db) in str(info.value)


def test_sqlite_refuses_a_foreign_sqlite_file(db: Path) -> None:
    conn = raw(db)
    conn.execute("CREATE TABLE accounts(id INTEGER)")
    conn.close()
    with pytest.raises(StorageError, match="not raftlease storage"):
        open_sqlite(db)


def test_sqlite_refuses_an_unknown_format_version(db: Path) -> None:
    open_sqlite(db).close()
    conn = raw(db)
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'format_version'")
    conn.close()
    with pytest.raises(StorageError, match="format version '99'"):
        open_sqlite(db)


def test_sqlite_refuses_a_second_opener(db: Path) -> None:
    with open_sqlite(db) as s:
        with pytest.raises(StorageError, match="in use by another process"):
            open_sqlite(db)
        s.save(HardState(1), None, ents(1, 1))  # the first handle is unaffected
    with open_sqlite(db) as s:
        assert indices(s.load()) == [1]


def test_sqlite_missing_directory_is_a_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="cannot open"):
        open_sqlite(tmp_path / "no" / "such" / "dir.db")


def test_sqlite_close_is_idempotent_and_use_after_close_raises(db: Path) -> None:
    s = open_sqlite(db)
    s.close()
    s.close()
    with pytest.raises(StorageError, match="closed"):
        s.load()
    with pytest.raises(StorageError, match="closed"):
        s.save(HardState(1), None, [])
    with pytest.raises(StorageError, match="closed"):
        s.compact(snap(0, 0))


# -- SqliteStorage: corruption ----------------------------------------------------------------


def make_log(db: Path, last: int = 5, commit: int = 2) -> None:
    with open_sqlite(db) as s:
        s.save(HardState(2, NodeId("n1"), commit), None, ents(1, last))


def tamper(db: Path, sql: str, *params: object) -> None:
    conn = raw(db)
    try:
        assert conn.execute(sql, params).rowcount == 1
    finally:
        conn.close()


def test_sqlite_corrupt_middle_entry_is_refused_naming_its_index(db: Path) -> None:
    make_log(db)
    tamper(db, "UPDATE entries SET data = ? WHERE idx = 3", b"bit rot")
    with open_sqlite(db) as s, pytest.raises(StorageError) as info:
        s.load()
    message = str(info.value)
    assert "log corrupt at index 3: checksum mismatch; refusing to start" in message
    assert "Do not restart this node with an empty data dir under the same id" in message
    assert "wipe" not in message


def test_sqlite_mistyped_field_counts_as_corruption(db: Path) -> None:
    make_log(db)
    tamper(db, "UPDATE entries SET data = 'text, not a blob' WHERE idx = 2")
    with open_sqlite(db) as s, pytest.raises(StorageError, match="log corrupt at index 2"):
        s.load()


def test_sqlite_gap_in_the_log_is_refused_naming_the_missing_index(db: Path) -> None:
    make_log(db)
    tamper(db, "DELETE FROM entries WHERE idx = 4")
    with open_sqlite(db) as s, pytest.raises(StorageError, match="log corrupt at index 4"):
        s.load()


def test_sqlite_log_must_start_right_after_the_snapshot(db: Path) -> None:
    make_log(db)
    tamper(db, "DELETE FROM entries WHERE idx = 1")
    with open_sqlite(db) as s, pytest.raises(StorageError, match="log corrupt at index 1"):
        s.load()


def test_sqlite_corrupt_last_entry_is_refused_not_dropped(db: Path) -> None:
    # SQLite commits are atomic, so a bad last row is bit rot in an entry this node may have
    # acknowledged to a leader: dropping it could lose a committed entry. Refuse to start.
    make_log(db, last=5, commit=2)
    tamper(db, "UPDATE entries SET term = 7 WHERE idx = 5")
    with open_sqlite(db) as s, pytest.raises(StorageError, match="log corrupt at index 5"):
        s.load()


def test_sqlite_corrupt_snapshot_is_refused(db: Path) -> None:
    with open_sqlite(db) as s:
        s.save(None, None, ents(1, 5))
        s.compact(snap(3, 1))
    tamper(db, "UPDATE snapshot SET data = ?", b"stale")
    with open_sqlite(db) as s, pytest.raises(StorageError, match="snapshot at index 3 corrupt"):
        s.load()


def test_sqlite_corrupt_hard_state_is_refused(db: Path) -> None:
    make_log(db)
    tamper(db, "UPDATE hard_state SET voted_for = 'n2'")
    with open_sqlite(db) as s, pytest.raises(StorageError, match="hard state corrupt"):
        s.load()


# -- SqliteStorage against MemoryStorage ------------------------------------------------------

VOTES = st.sampled_from([None, NodeId("n1"), NodeId("n2")])
HARD_STATES = st.builds(HardState, st.integers(0, 6), VOTES, st.integers(0, 30))
KINDS = st.sampled_from(list(EntryKind))


def term_at(state: LoadedState, index: int) -> int | None:
    base = state.snapshot.index if state.snapshot is not None else 0
    if index == base:
        return state.snapshot.term if state.snapshot is not None else 0
    if base < index <= base + len(state.entries):
        return state.entries[index - base - 1].term
    return None


def draw_entries(data: st.DataObject, base: int, last: int) -> list[Entry]:
    """Mostly valid (start in base+1..last+1), sometimes not (start at base or last+2)."""
    first = data.draw(st.integers(max(base, 0), last + 2), label="first")
    count = data.draw(st.integers(0, 4), label="count")
    term = data.draw(st.integers(1, 6), label="term")
    return [
        Entry(i, term, data.draw(KINDS), data.draw(st.binary(max_size=6)))
        for i in range(first, first + count)
    ]


def draw_snapshot(data: st.DataObject, state: LoadedState) -> Snapshot:
    base = state.snapshot.index if state.snapshot is not None else 0
    index = data.draw(st.integers(max(base - 1, 0), base + len(state.entries) + 2))
    known = term_at(state, index)
    term = data.draw(st.sampled_from([known if known is not None else 1, 1, 2, 3]))
    return Snapshot(index, term, (NodeId("n1"), NodeId("n2")), data.draw(st.binary(max_size=4)))


Op = tuple[HardState | None, Snapshot | None, list[Entry]] | Snapshot  # save args, or compact


def apply(s: AnyStorage, op: Op) -> str:
    try:
        if isinstance(op, Snapshot):
            s.compact(op)
        else:
            s.save(*op)
    except StorageError:
        return "refused"
    return "ok"


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(data=st.data())
def test_sqlite_matches_memory_over_random_operations(data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "node.db"
        model = MemoryStorage()
        real = open_sqlite(path)
        try:
            for _ in range(data.draw(st.integers(1, 14), label="steps")):
                state = model.load()
                kind = data.draw(st.sampled_from(["save", "save", "compact", "restart"]))
                if kind == "restart":
                    real.close()
                    real = open_sqlite(path)
                    assert real.load() == state
                    continue
                op: Op
                if kind == "compact":
                    op = draw_snapshot(data, state)
                else:
                    hs = data.draw(st.none() | HARD_STATES, label="hard_state")
                    snapshot = draw_snapshot(data, state) if data.draw(st.booleans()) else None
                    if snapshot is None:
                        entries = draw_entries(data, model.first_index - 1, model.last_index)
                    else:
                        last = max(snapshot.index, model.last_index)
                        entries = draw_entries(data, snapshot.index, last)
                    op = (hs, snapshot, entries)
                outcomes = (apply(model, op), apply(real, op))
                assert outcomes[0] == outcomes[1], (op, outcomes)
                if outcomes[0] == "refused":
                    assert model.load() == state  # a refused call changes nothing
                assert real.load() == model.load()
            real.close()
            real = open_sqlite(path)
            assert real.load() == model.load()
        finally:
            real.close()


# -- a real crash -----------------------------------------------------------------------------

CRASH_CHILD = """
import sys
from raftlease.core.messages import Entry, Snapshot
from raftlease.core.ready import HardState
from raftlease.storage.sqlite import SqliteStorage

path, first, term = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = SqliteStorage(path, cluster_id="crash", node_id="n1")
index, batch = first, 0
while True:
    batch += 1
    size = 1 + batch % 5
    entries = [Entry(i, term, data=b"entry-%d" % i) for i in range(index, index + size)]
    last = index + size - 1
    s.save(HardState(term, "n1", last), None, entries)
    sys.stdout.write("%d\\n" % last)
    sys.stdout.flush()
    if batch % 25 == 0:
        s.compact(Snapshot(last - 7, term, ("n1",), b"snap"))
    index = last + 1
"""


@pytest.mark.integration
def test_sigkill_never_loses_an_acknowledged_save(tmp_path: Path) -> None:
    """A child saves in a loop and prints each index once ``save`` returned; SIGKILL it at
    random points (three rounds on the same file): every printed index must load back."""
    path = tmp_path / "crash.db"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    next_index = 1
    for term, wanted in enumerate([40, 120, 300], start=1):
        proc = subprocess.Popen(
            [sys.executable, "-c", CRASH_CHILD, str(path), str(next_index), str(term)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        assert proc.stdout is not None
        assert proc.stderr is not None
        acked: list[int] = []
        try:
            while len(acked) < wanted:
                line = proc.stdout.readline()
                if not line:
                    pytest.fail(f"child died: {proc.stderr.read().decode()}")
                acked.append(int(line))
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            proc.stdout.close()
            proc.stderr.close()
        assert proc.returncode == -signal.SIGKILL
        with SqliteStorage(path, cluster_id="crash", node_id="n1") as s:
            state = s.load()
        last = (
            state.entries[-1].index
            if state.entries
            else state.snapshot.index
            if state.snapshot
            else 0
        )
        assert last >= acked[-1], f"acknowledged index {acked[-1]} lost; log ends at {last}"
        assert state.hard_state.term == term
        assert state.hard_state.commit >= acked[-1]
        for e in state.entries:
            assert e.data == b"entry-%d" % e.index
        next_index = last + 1
