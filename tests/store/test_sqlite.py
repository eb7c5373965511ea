"""SqliteStore: the shared conformance suite, then SQLite-only details.

The suite runs twice: on a database file (with a second SqliteStore on the same file as
``second_store``, as another process would open it) and on a private in-memory database
(where ``second_store`` is the same object).
"""

from __future__ import annotations

import gc
import hashlib
import os
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vshare.store import (
    Compacted,
    OverQuota,
    QuotaRecord,
    SqliteStore,
    Store,
    StoreUnavailable,
    open_store,
)
from vshare.store import sqlite as sqlite_mod
from vshare.testing.store_conformance import StoreConformance, make_share


@pytest.fixture(params=["file", "memory"])
def variant(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "vshare.db"


@pytest.fixture
def store(variant: str, db_path: Path) -> Iterator[Store]:
    s = SqliteStore(db_path if variant == "file" else ":memory:")
    yield s
    s.close()


@pytest.fixture
def second_store(variant: str, store: Store, db_path: Path) -> Iterator[Store]:
    if variant == "memory":
        yield store  # a private in-memory database cannot be opened twice
        return
    s = SqliteStore(db_path)
    yield s
    s.close()


class TestSqliteConformance(StoreConformance):
    pass


# ---------------------------------------------------------------------------------------------
# SQLite only


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def _schema_version(raw: sqlite3.Connection) -> int:
    return int(raw.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text and "\n" not in text, repr(text)
    return text


def test_files_are_private_whatever_the_umask(db_path: Path) -> None:
    old = os.umask(0)
    try:
        with SqliteStore(db_path) as store:
            store.create_share(make_share())
            modes = {
                p.name: stat.S_IMODE(p.stat().st_mode)
                for p in db_path.parent.iterdir()
                if p.name.startswith(db_path.name)
            }
    finally:
        os.umask(old)
    assert db_path.name in modes
    assert f"{db_path.name}-wal" in modes  # written while open: WAL in use
    assert modes == dict.fromkeys(modes, 0o600)


def test_wal_journal_and_schema_version(db_path: Path) -> None:
    SqliteStore(db_path).close()
    raw = _raw(db_path)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert _schema_version(raw) == len(sqlite_mod.MIGRATIONS)
    finally:
        raw.close()


def test_foreign_keys_are_enforced(db_path: Path) -> None:
    # The explicit checks come first; the schema is the safety net behind them.
    with SqliteStore(db_path) as store, store._use() as db, pytest.raises(sqlite3.IntegrityError):
        db.execute(
            "INSERT INTO rules (id, share_id, access_type, access_to, state, data)"
            " VALUES ('r', 'no-such-share', 'ip', '10.0.0.1', 'active', '{}')"
        )


def test_reopen_keeps_data_and_revision(db_path: Path) -> None:
    with SqliteStore(db_path) as store:
        share = store.create_share(make_share())
        store.update_share(share.id, size_gib=3)
        revision = store.revision()
        feed = store.changes_since(0)
    with SqliteStore(db_path) as store:
        assert store.revision() == revision
        assert store.get_share(share.id).size_gib == 3
        assert store.changes_since(0) == feed
        assert store.create_share(make_share("beta")).revision == revision + 1


def test_a_share_written_before_cache_existed_reads_as_meta(db_path: Path) -> None:
    """Records are JSON next to the columns lookups need (module note), so a field added
    with a default needs no migration: an old row, without "cache", opens as "meta"."""
    with SqliteStore(db_path) as store:
        share = store.create_share(make_share(cache="all"))
    db = sqlite3.connect(db_path)
    with db:
        db.execute("UPDATE shares SET data = json_remove(data, '$.cache')")
    db.close()
    with SqliteStore(db_path) as store:
        old = store.get_share(share.id)
        assert old.cache == "meta"
        assert store.update_share(share.id, cache="none").cache == "none"


def test_newer_schema_is_refused_and_left_alone(db_path: Path) -> None:
    with SqliteStore(db_path) as store:
        store.create_share(make_share())
    raw = _raw(db_path)
    raw.execute("UPDATE meta SET value = 99 WHERE key = 'schema_version'")
    # Out of WAL, so that switching the journal mode before the check would show.
    assert raw.execute("PRAGMA journal_mode = DELETE").fetchone()[0] == "delete"
    raw.close()
    before = _digest(db_path)
    with pytest.raises(StoreUnavailable) as info:
        SqliteStore(db_path)
    assert "schema version 99" in _one_line(info.value)
    assert _digest(db_path) == before
    assert not Path(f"{db_path}-wal").exists()


@pytest.mark.parametrize(
    ("content", "expect"),
    [
        (b"this is not a database, just some bytes" * 100, "not a database"),
        (None, "not a vshare store"),  # a SQLite database of something else
    ],
    ids=["garbage", "foreign"],
)
def test_foreign_files_are_refused(db_path: Path, content: bytes | None, expect: str) -> None:
    if content is None:
        raw = _raw(db_path)
        raw.execute("CREATE TABLE songs (title TEXT)")
        raw.close()
    else:
        db_path.write_bytes(content)
    before = _digest(db_path)
    with pytest.raises(StoreUnavailable) as info:
        SqliteStore(db_path)
    assert expect in _one_line(info.value)
    assert _digest(db_path) == before


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable) as info:
        SqliteStore(tmp_path / "no" / "such" / "dir.db")
    assert "cannot create" in _one_line(info.value)


V2 = (
    "ALTER TABLE shares ADD COLUMN note TEXT",
    "UPDATE shares SET note = 'migrated'",
    "CREATE TABLE extra (x INTEGER)",
)


def test_a_version_1_store_gets_quotas(db_path: Path) -> None:
    with SqliteStore(db_path) as store:
        share = store.create_share(make_share(size_gib=7))
    raw = _raw(db_path)
    try:  # what a store written by vshare before quotas looks like
        raw.execute("DROP TABLE quotas")
        raw.execute("UPDATE meta SET value = 1 WHERE key = 'schema_version'")
    finally:
        raw.close()
    with SqliteStore(db_path) as store:
        assert store.get_share(share.id) == share
        usage = store.quota_usage("acme")
        assert (usage.used_shares, usage.used_gigabytes) == (1, 7)
        store.put_quota(QuotaRecord(tenant="acme", shares=1))
        with pytest.raises(OverQuota):
            store.create_share(make_share("beta"))
    raw = _raw(db_path)
    try:
        assert _schema_version(raw) == 2
    finally:
        raw.close()


def test_migration_from_an_older_version(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    v1 = list(sqlite_mod.MIGRATIONS)
    with SqliteStore(db_path) as store:
        share = store.create_share(make_share())
        revision = store.revision()
    monkeypatch.setattr(sqlite_mod, "MIGRATIONS", [*v1, V2])
    with SqliteStore(db_path) as store:
        assert store.get_share(share.id) == share
        assert store.revision() == revision
    raw = _raw(db_path)
    try:
        assert _schema_version(raw) == len(v1) + 1
        assert raw.execute("SELECT note FROM shares").fetchall() == [("migrated",)]
        assert raw.execute("SELECT count(*) FROM extra").fetchone() == (0,)
    finally:
        raw.close()
    # The v1 code now meets a v2 database: refused, not downgraded.
    monkeypatch.setattr(sqlite_mod, "MIGRATIONS", v1)
    with pytest.raises(StoreUnavailable, match=f"schema version {len(v1) + 1}"):
        SqliteStore(db_path)


def test_a_failed_migration_changes_nothing(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    v1 = list(sqlite_mod.MIGRATIONS)
    with SqliteStore(db_path) as store:
        store.create_share(make_share())
    monkeypatch.setattr(
        sqlite_mod, "MIGRATIONS", [*v1, V2, ("CREATE TABLE more (y)", "THIS IS NOT SQL")]
    )
    with pytest.raises(StoreUnavailable) as info:
        SqliteStore(db_path)
    assert f"migration to schema version {len(v1) + 2} failed" in _one_line(info.value)
    raw = _raw(db_path)
    try:
        assert _schema_version(raw) == len(v1)
        tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert not tables & {"extra", "more"}
        assert "note" not in {r[1] for r in raw.execute("PRAGMA table_info(shares)")}
    finally:
        raw.close()


def test_migrations_run_in_order_on_a_new_database(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    known = list(sqlite_mod.MIGRATIONS)
    monkeypatch.setattr(sqlite_mod, "MIGRATIONS", [*known, V2])
    with SqliteStore(db_path) as store:
        store.create_share(make_share())
    raw = _raw(db_path)
    try:
        assert _schema_version(raw) == len(known) + 1
        assert raw.execute("SELECT note FROM shares").fetchall() == [(None,)]
    finally:
        raw.close()


CHILD = """
import sys, time
from vshare.store import ShareRecord, SqliteStore
store = SqliteStore(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
time.sleep(0.2)  # so that the parent is surely waiting: part of what is measured
store.create_share(ShareRecord(
    name="from-child", tenant="t", backend="posix:/v", path="shares/c", size_gib=1))
print(repr(time.time()), flush=True)
store.close()
"""


def test_a_write_in_another_process_wakes_the_waiter(db_path: Path) -> None:
    with SqliteStore(db_path) as store:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(db_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None and child.stdin is not None
            assert child.stdout.readline().strip() == "ready"
            revision = store.revision()
            child.stdin.write("go\n")
            child.stdin.flush()
            result = store.wait_for_change(revision, 10.0)
            woke = time.time()
            committed = float(child.stdout.readline())
            assert child.wait(10) == 0
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        assert result == revision + 1
        assert woke - committed < 0.5, f"woken {woke - committed:.3f} s after the commit"
        found = store.find_share("from-child")
        assert found is not None and found.revision == result


def test_a_locked_database_gives_store_unavailable(db_path: Path) -> None:
    with SqliteStore(db_path, busy_timeout=0.2) as store:
        store.create_share(make_share())
        holder = _raw(db_path)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            start = time.monotonic()
            with pytest.raises(StoreUnavailable) as info:
                store.create_share(make_share("beta"))
            took = time.monotonic() - start
            assert "locked" in _one_line(info.value)
            assert 0.15 <= took < 3.0
            # Readers are not blocked by a writer in WAL mode.
            assert [s.name for s in store.list_shares()] == ["alpha"]
            # Opening needs the write lock (migrations): refused the same way.
            with pytest.raises(StoreUnavailable, match="locked"):
                SqliteStore(db_path, busy_timeout=0.2)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        # Once the lock is gone the store works again; the failed write left no trace.
        assert store.create_share(make_share("beta")).revision == 2


def test_automatic_compaction_keeps_recent_revisions(db_path: Path) -> None:
    with SqliteStore(db_path, keep_revisions=3) as store:
        for i in range(6):
            store.create_share(make_share(f"s{i}"))
        assert store.revision() == 6
        assert [c.revision for c in store.changes_since(3)] == [4, 5, 6]
        with pytest.raises(Compacted) as info:
            store.changes_since(2)
        _one_line(info.value)
        raw = _raw(db_path)
        try:
            assert raw.execute("SELECT min(revision), count(*) FROM changes").fetchone() == (4, 3)
        finally:
            raw.close()


def test_connections_of_finished_threads_are_released(db_path: Path) -> None:
    with SqliteStore(db_path) as store:

        def read() -> None:
            store.revision()

        for _ in range(20):
            thread = threading.Thread(target=read)
            thread.start()
            thread.join()
        gc.collect()
        assert len(store._holders) <= 2  # this thread's, maybe one not yet collected


def test_close_closes_connections_of_other_threads(db_path: Path) -> None:
    store = SqliteStore(db_path)
    ready = threading.Event()
    release = threading.Event()

    def hold() -> None:
        store.revision()  # opens this thread's connection
        ready.set()
        release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    assert ready.wait(10)
    connections = [h.conn for h in store._holders]
    assert len(connections) == 2
    store.close()
    release.set()
    thread.join()
    for conn in connections:
        with pytest.raises(sqlite3.ProgrammingError):
            conn.execute("SELECT 1")


@pytest.mark.parametrize(
    "kwargs",
    [{"busy_timeout": -1}, {"keep_revisions": 0}, {"poll_interval": 0}],
)
def test_parameters_are_checked(db_path: Path, kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        SqliteStore(db_path, **kwargs)  # type: ignore[arg-type]


# --- open_store --------------------------------------------------------------------------------


def test_open_store_sqlite_absolute(db_path: Path) -> None:
    with open_store(f"sqlite://{db_path}") as store:
        assert isinstance(store, SqliteStore)
        assert store.path == str(db_path)
        store.create_share(make_share())
    assert db_path.exists()


def test_open_store_sqlite_relative(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    with open_store("sqlite:data/vshare.db") as store:
        # Kept absolute: a later chdir must not make new threads open another file.
        assert isinstance(store, SqliteStore)
        assert store.path == str(tmp_path / "data" / "vshare.db")
    assert (tmp_path / "data" / "vshare.db").exists()


def test_open_store_memory() -> None:
    with open_store("memory:") as store:
        share = store.create_share(make_share())
        assert store.get_share(share.id) == share
    with open_store("memory:") as other:
        assert other.list_shares() == []  # each memory: store is its own


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("etcd+https://10.0.0.1:2379", "unknown scheme 'etcd+https'"),
        ("postgres://db/vshare", "unknown scheme 'postgres'"),
        ("/var/lib/vshare.db", "no scheme"),
        ("sqlite:", "names no file"),
        ("sqlite://host/vshare.db", "use sqlite:///absolute/path.db"),
        ("sqlite:///", "use sqlite:///absolute/path.db"),
        ("memory:x", "memory: takes nothing"),
    ],
)
def test_open_store_refuses(uri: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        open_store(uri)
    assert message in _one_line(info.value)


def test_file_names_that_need_quoting(tmp_path: Path) -> None:
    path = tmp_path / "a dir%20" / "v?share#1.db"
    path.parent.mkdir()
    with SqliteStore(path) as store:
        store.create_share(make_share())
    assert sorted(p.name for p in path.parent.iterdir()) == ["v?share#1.db"]
    with SqliteStore(path) as store:
        assert [s.name for s in store.list_shares()] == ["alpha"]
