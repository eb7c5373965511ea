"""The embedded store: one SQLite database file, for a single node.

Strategy and invariants:

- **Connections.** One connection per thread (``threading.local``), all in autocommit mode
  with explicit transactions: reads run in a deferred ``BEGIN`` (a consistent WAL snapshot;
  readers never wait for the writer), writes in ``BEGIN IMMEDIATE`` (the write lock is taken
  up front, so two writers never deadlock upgrading a read lock; a waiting writer retries for
  ``busy_timeout`` seconds, then gets ``StoreUnavailable``). A thread's connection closes
  when the thread ends or the store closes. ``:memory:`` databases have one connection under
  a lock instead (an in-memory database is private to its connection).
- **Durability.** WAL journal with the default ``synchronous = FULL``: a committed change
  survives a power loss. Writes are rare (operator actions, state changes), so the fsync per
  commit costs nothing that matters.
- **Records** are stored as the JSON of ``vshare.store._codec`` (the same text an etcd store
  writes) next to the columns the lookups and uniqueness rules need; only those columns are
  ever queried. Adding a record field with a default therefore needs no SQL migration.
- **Revision and feed.** ``meta`` holds ``revision`` and ``compacted``; a write that changes
  something adds its rows to ``changes`` under ``revision + 1`` and bumps ``revision`` in the
  same transaction, so the feed and the data can never disagree. Each write also drops the
  changes older than ``keep_revisions`` revisions.
- **Waiting.** ``wait_for_change`` polls the revision every ``poll_interval`` seconds (other
  processes cannot signal us; a read of one row in WAL mode is microseconds) and is woken at
  once by writes made through this same object.
- **Schema.** ``MIGRATIONS`` is the ordered list of schema versions, each a tuple of SQL
  statements applied in one transaction on open, with ``meta.schema_version`` set in that
  same transaction. A database at a newer version than this code knows is refused before
  anything touches it (not even the journal mode); a database with tables but no ``meta``
  is not ours and is refused too.
- **Permissions.** The file is created 0600 (it holds token hashes); SQLite gives the
  ``-wal`` and ``-shm`` files the database file's mode.
"""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
import threading
import time
import urllib.parse
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Final

from vshare.policy import IdentityFacts, Instance, Level, identity_keys
from vshare.store._base import Store
from vshare.store._codec import dumps, load_as, loads
from vshare.store._errors import Compacted, Conflict, NotFound, StoreUnavailable
from vshare.store._quota import QuotaUsage, check_share, grows, tally
from vshare.store._records import (
    Change,
    GatewayRecord,
    GatewayStatus,
    InstanceRecord,
    Kind,
    Op,
    QuotaRecord,
    RuleRecord,
    RuleState,
    ShareCache,
    ShareRecord,
    ShareStatus,
    Snapshot,
    TokenRecord,
    new_id,
)

__all__ = ["MIGRATIONS", "SqliteStore"]

#: Schema versions in order: ``MIGRATIONS[n]`` turns version n into version n + 1.
#: Append only; never edit a released entry.
MIGRATIONS: Final[list[tuple[str, ...]]] = [
    (  # 1: the first schema
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID",
        "INSERT INTO meta (key, value) VALUES ('revision', 0), ('compacted', 0)",
        """CREATE TABLE shares (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            tenant TEXT NOT NULL,
            data TEXT NOT NULL)""",
        "CREATE INDEX shares_tenant ON shares (tenant)",
        """CREATE TABLE rules (
            id TEXT PRIMARY KEY,
            share_id TEXT NOT NULL REFERENCES shares (id),
            access_type TEXT NOT NULL,
            access_to TEXT NOT NULL,
            state TEXT NOT NULL,
            data TEXT NOT NULL)""",
        "CREATE INDEX rules_share ON rules (share_id)",
        # Manila's rule: one live rule per (share, type, target); tombstones do not count.
        """CREATE UNIQUE INDEX rules_live ON rules (share_id, access_type, access_to)
            WHERE state <> 'deleted'""",
        """CREATE TABLE instances (
            uuid TEXT PRIMARY KEY,
            tenant TEXT NOT NULL,
            data TEXT NOT NULL)""",
        "CREATE INDEX instances_tenant ON instances (tenant)",
        # One row per identity; the primary key makes an identity belong to one instance.
        """CREATE TABLE identities (
            kind TEXT NOT NULL,
            value TEXT NOT NULL,
            uuid TEXT NOT NULL REFERENCES instances (uuid),
            PRIMARY KEY (kind, value)) WITHOUT ROWID""",
        "CREATE INDEX identities_uuid ON identities (uuid)",
        """CREATE TABLE tokens (
            name TEXT PRIMARY KEY,
            hash TEXT NOT NULL UNIQUE,
            data TEXT NOT NULL)""",
        """CREATE TABLE gateways (
            id TEXT PRIMARY KEY,
            data TEXT NOT NULL,
            last_seen REAL NOT NULL,
            ttl REAL NOT NULL)""",
        """CREATE TABLE changes (
            revision INTEGER NOT NULL,
            seq INTEGER NOT NULL,
            kind TEXT NOT NULL,
            key TEXT NOT NULL,
            op TEXT NOT NULL,
            data TEXT,
            PRIMARY KEY (revision, seq)) WITHOUT ROWID""",
    ),
    (  # 2: per-tenant quotas; tenant '' holds the defaults
        "CREATE TABLE quotas (tenant TEXT PRIMARY KEY, data TEXT NOT NULL) WITHOUT ROWID",
    ),
]

MEMORY: Final = ":memory:"


def _meta(db: sqlite3.Connection, key: str) -> int:
    row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    if row is None:
        raise StoreUnavailable(f"store is damaged: meta has no {key!r}")
    return int(row[0])


def _set_meta(db: sqlite3.Connection, key: str, value: int) -> None:
    db.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def schema_version(db: sqlite3.Connection, label: str) -> int:
    """The schema version of an open database: 0 when it is empty.

    Raises:
        StoreUnavailable: it has tables but is not a vshare store.
        sqlite3.Error: it cannot be read (not a database, locked, ...).
    """
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not tables:
        return 0
    row = None
    if "meta" in tables:
        row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is None:
        raise StoreUnavailable(f"store {label}: the database is not a vshare store")
    return int(row[0])


def _refuse_newer(version: int, known: int, label: str) -> None:
    if version > known:
        raise StoreUnavailable(
            f"store {label}: schema version {version} is newer than this vshare knows"
            f" ({known}); upgrade vshare"
        )


def migrate(db: sqlite3.Connection, migrations: Sequence[tuple[str, ...]], label: str) -> int:
    """Bring the database to the last version of ``migrations``, in one transaction;
    returns that version.

    Raises:
        StoreUnavailable: the database is newer than ``migrations``, is not a vshare store,
            or a migration failed (then nothing of any migration was applied).
        sqlite3.Error: the database cannot be read or locked.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        # Read again under the write lock: another process may have migrated meanwhile.
        version = schema_version(db, label)
        _refuse_newer(version, len(migrations), label)
        for number in range(version + 1, len(migrations) + 1):
            try:
                for statement in migrations[number - 1]:
                    db.execute(statement)
            except sqlite3.Error as exc:
                raise StoreUnavailable(
                    f"store {label}: migration to schema version {number} failed: {exc}"
                ) from None
            _set_meta(db, "schema_version", number)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return len(migrations)


class _Holder:
    """A thread's connection. sqlite3 connections cannot be weakly referenced; this can,
    so the store can close every live connection without keeping dead threads' alive."""

    __slots__ = ("__weakref__", "conn")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn


class _Tx:
    """One write transaction: its connection, the revision its changes will get, and the
    changes made so far (committed with the data, or not at all)."""

    __slots__ = ("changes", "db", "revision")

    def __init__(self, db: sqlite3.Connection, revision: int) -> None:
        self.db = db
        self.revision = revision
        self.changes: list[tuple[Kind, str, Op, str | None]] = []

    def change(self, kind: Kind, key: str, op: Op, data: str | None = None) -> None:
        self.changes.append((kind, key, op, data))


class SqliteStore(Store):
    """A :class:`Store` in one SQLite database file (see the module note).

    Args:
        path: the database file (created 0600 if missing; its directory must exist), or
            ``":memory:"`` for a private in-memory database (tests).
        busy_timeout: seconds a write waits for another writer before giving up with
            ``StoreUnavailable``.
        keep_revisions: how many recent revisions the change feed keeps.
        poll_interval: seconds between revision checks in ``wait_for_change``.

    Raises:
        StoreUnavailable: the file cannot be created or opened, is not a vshare store, has
            a newer schema, or stays locked longer than ``busy_timeout``.
        ValueError: a parameter is out of range.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = 5.0,
        keep_revisions: int = 10_000,
        poll_interval: float = 0.05,
    ) -> None:
        if not busy_timeout >= 0 or not math.isfinite(busy_timeout):
            raise ValueError("busy_timeout must be 0 or more seconds")
        if keep_revisions < 1:
            raise ValueError("keep_revisions must be at least 1")
        if not poll_interval > 0:
            raise ValueError("poll_interval must be more than 0 seconds")
        self.path = os.fspath(path)
        self._memory = self.path == MEMORY
        if not self._memory:
            # Absolute: connections are opened later, per thread, maybe after a chdir.
            self.path = os.path.abspath(self.path)
            # POSIX keeps a leading "//" (sqlite:////abs/path.db gives one), and SQLite would
            # read "file://abs/..." as a URI authority: one slash is the same file.
            if self.path.startswith("//"):
                self.path = "/" + self.path.lstrip("/")
        self.busy_timeout = busy_timeout
        self.keep_revisions = keep_revisions
        self.poll_interval = poll_interval
        self._closed = False
        self._local = threading.local()
        self._holders: weakref.WeakSet[_Holder] = weakref.WeakSet()
        self._holders_lock = threading.Lock()
        self._shared_lock = threading.RLock()
        self._changed = threading.Condition()
        self._generation = 0  # bumped (under _changed) by every commit through this object
        created = False if self._memory else self._create_file()
        try:
            db = self._open_connection()
            try:
                self._prepare(db)
            except sqlite3.Error as exc:
                db.close()
                raise self._unavailable(exc) from None
            except BaseException:
                db.close()
                raise
        except BaseException:
            if created:
                self._remove_empty_file()
            raise
        holder = _Holder(db)
        self._shared = holder if self._memory else None
        self._adopt(holder)

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r})"

    # --- opening ---------------------------------------------------------------------------

    def _create_file(self) -> bool:
        """Create the file if missing; True if this call created it."""
        # Create it ourselves, O_EXCL with 0600, so SQLite never creates it with the umask's
        # mode; then SQLite opens it with mode=rw and cannot create a file anywhere else.
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            return False
        except OSError as exc:
            raise StoreUnavailable(
                f"store {self.path}: cannot create the database file: {exc.strerror}"
            ) from None
        os.close(fd)
        return True

    def _remove_empty_file(self) -> None:
        """After a failed open: a file we created and nothing wrote to does not stay."""
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_size != 0:
                return
            for suffix in ("-wal", "-shm", ""):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path + suffix)

    def _open_connection(self) -> sqlite3.Connection:
        if self._memory:
            target, uri = MEMORY, False
        else:
            target, uri = f"file:{urllib.parse.quote(self.path)}?mode=rw", True
        try:
            db = sqlite3.connect(
                target,
                timeout=self.busy_timeout,
                isolation_level=None,  # autocommit: transactions are explicit, below
                check_same_thread=False,  # close() may run on another thread
                uri=uri,
            )
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from None
        try:
            db.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as exc:
            db.close()
            raise self._unavailable(exc) from None
        return db

    def _prepare(self, db: sqlite3.Connection) -> None:
        # The version check comes before anything that could write (journal mode, schema).
        _refuse_newer(schema_version(db, self.path), len(MIGRATIONS), self.path)
        if not self._memory:
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreUnavailable(f"store {self.path}: cannot use a WAL journal ({mode})")
        migrate(db, MIGRATIONS, self.path)

    def _adopt(self, holder: _Holder) -> None:
        with self._holders_lock:
            if self._closed:
                holder.conn.close()
                raise self._closed_error()
            self._holders.add(holder)
        if not self._memory:
            self._local.holder = holder

    # --- connections, transactions, errors -------------------------------------------------

    def _closed_error(self) -> StoreUnavailable:
        return StoreUnavailable(f"store {self.path} is closed")

    def _unavailable(self, exc: sqlite3.Error) -> StoreUnavailable:
        text = str(exc)
        if "locked" in text or "busy" in text:
            return StoreUnavailable(
                f"store {self.path}: the database is locked"
                f" (busy for more than {self.busy_timeout:g} s)"
            )
        return StoreUnavailable(f"store {self.path}: {text}")

    @contextlib.contextmanager
    def _use(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection; sqlite3 errors become store errors."""
        if self._closed:
            raise self._closed_error()
        try:
            if self._shared is not None:
                with self._shared_lock:
                    yield self._shared.conn
                return
            holder: _Holder | None = getattr(self._local, "holder", None)
            if holder is None:
                holder = _Holder(self._open_connection())
                self._adopt(holder)
            yield holder.conn
        except sqlite3.IntegrityError as exc:
            # The explicit checks come first; this is the schema's own safety net.
            raise Conflict(f"store {self.path}: {exc}") from None
        except sqlite3.Error as exc:
            if self._closed:
                raise self._closed_error() from None
            raise self._unavailable(exc) from None

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: everything read inside sees one state of the database."""
        with self._use() as db:
            db.execute("BEGIN")
            try:
                yield db
            finally:
                if db.in_transaction:
                    db.execute("ROLLBACK")  # nothing was written; this only ends the read

    @contextlib.contextmanager
    def _write(self) -> Iterator[_Tx]:
        """A write transaction; its changes get one new revision, committed with them."""
        with self._use() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                tx = _Tx(db, _meta(db, "revision") + 1)
                yield tx
                if tx.changes:
                    db.executemany(
                        "INSERT INTO changes (revision, seq, kind, key, op, data)"
                        " VALUES (?, ?, ?, ?, ?, ?)",
                        [(tx.revision, seq, *change) for seq, change in enumerate(tx.changes)],
                    )
                    _set_meta(db, "revision", tx.revision)
                    self._trim(db, tx.revision - self.keep_revisions)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):  # keep the original error
                        db.execute("ROLLBACK")
                raise
        if tx.changes:
            with self._changed:
                self._generation += 1
                self._changed.notify_all()

    @staticmethod
    def _trim(db: sqlite3.Connection, upto: int) -> None:
        if upto > _meta(db, "compacted"):
            db.execute("DELETE FROM changes WHERE revision <= ?", (upto,))
            _set_meta(db, "compacted", upto)

    # --- shares ---------------------------------------------------------------------------

    @staticmethod
    def _check_share_name(db: sqlite3.Connection, name: str, share_id: str) -> None:
        """Conflict unless ``name`` is free for the share ``share_id`` (names and ids share
        one namespace)."""
        row = db.execute(
            "SELECT id, name FROM shares WHERE (name = ? OR id = ?) AND id <> ?",
            (name, name, share_id),
        ).fetchone()
        if row is not None:
            if row[1] == name:
                raise Conflict(f"share name {name!r} is taken (share {row[0]})")
            raise Conflict(f"share name {name!r} is the id of another share")

    @staticmethod
    def _share(db: sqlite3.Connection, share_id: str) -> ShareRecord:
        row = db.execute("SELECT data FROM shares WHERE id = ?", (share_id,)).fetchone()
        if row is None:
            raise NotFound(f"share {share_id} not found")
        return load_as(ShareRecord, row[0])

    def create_share(self, share: ShareRecord) -> ShareRecord:
        with self._write() as tx:
            stored = replace(share, id=share.id or new_id(), revision=tx.revision)
            db = tx.db
            if db.execute("SELECT 1 FROM shares WHERE id = ?", (stored.id,)).fetchone():
                raise Conflict(f"share {stored.id} exists")
            if db.execute("SELECT 1 FROM shares WHERE name = ?", (stored.id,)).fetchone():
                raise Conflict(f"share id {stored.id!r} is the name of another share")
            self._check_share_name(db, stored.name, stored.id)
            check_share(self._quota_usage(db, stored.tenant), None, stored)
            data = dumps(stored)
            db.execute(
                "INSERT INTO shares (id, name, tenant, data) VALUES (?, ?, ?, ?)",
                (stored.id, stored.name, stored.tenant, data),
            )
            tx.change("share", stored.id, "put", data)
        return stored

    def get_share(self, share_id: str) -> ShareRecord:
        with self._use() as db:
            return self._share(db, share_id)

    def find_share(self, name_or_id: str) -> ShareRecord | None:
        with self._use() as db:
            row = db.execute(
                "SELECT data FROM shares WHERE id = ? OR name = ?", (name_or_id, name_or_id)
            ).fetchone()
        return None if row is None else load_as(ShareRecord, row[0])

    def list_shares(self, tenant: str | None = None) -> list[ShareRecord]:
        with self._use() as db:
            if tenant is None:
                rows = db.execute("SELECT data FROM shares ORDER BY name").fetchall()
            else:
                rows = db.execute(
                    "SELECT data FROM shares WHERE tenant = ? ORDER BY name", (tenant,)
                ).fetchall()
        return [load_as(ShareRecord, r[0]) for r in rows]

    def update_share(
        self,
        share_id: str,
        *,
        expect_revision: int | None = None,
        name: str | None = None,
        size_gib: int | None = None,
        status: ShareStatus | None = None,
        uid: int | None = None,
        gid: int | None = None,
        cache: ShareCache | None = None,
    ) -> ShareRecord:
        given = {"name": name, "size_gib": size_gib, "status": status, "uid": uid, "gid": gid,
                 "cache": cache}  # fmt: skip
        changes: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
        with self._write() as tx:
            old = self._share(tx.db, share_id)
            if expect_revision is not None and old.revision != expect_revision:
                raise Conflict(
                    f"share {share_id} changed: revision {old.revision}, not {expect_revision}"
                )
            new = replace(old, **changes)  # validates the new values
            if new == old:
                return old
            if new.name != old.name:
                self._check_share_name(tx.db, new.name, share_id)
            if grows(old, new):
                check_share(self._quota_usage(tx.db, old.tenant), old, new)
            new = replace(new, revision=tx.revision)
            data = dumps(new)
            tx.db.execute(
                "UPDATE shares SET name = ?, data = ? WHERE id = ?", (new.name, data, share_id)
            )
            tx.change("share", share_id, "put", data)
        return new

    def delete_share(self, share_id: str) -> None:
        with self._write() as tx:
            self._share(tx.db, share_id)
            rules = tx.db.execute(
                "SELECT id FROM rules WHERE share_id = ? ORDER BY id", (share_id,)
            ).fetchall()
            for (rule_id,) in rules:
                tx.change("rule", rule_id, "delete")
            tx.db.execute("DELETE FROM rules WHERE share_id = ?", (share_id,))
            tx.db.execute("DELETE FROM shares WHERE id = ?", (share_id,))
            tx.change("share", share_id, "delete")

    # --- access rules ---------------------------------------------------------------------

    @staticmethod
    def _rule(db: sqlite3.Connection, rule_id: str) -> RuleRecord:
        row = db.execute("SELECT data FROM rules WHERE id = ?", (rule_id,)).fetchone()
        if row is None:
            raise NotFound(f"access rule {rule_id} not found")
        return load_as(RuleRecord, row[0])

    @staticmethod
    def _check_live_duplicate(db: sqlite3.Connection, rule: RuleRecord) -> None:
        if rule.state is RuleState.DELETED:
            return
        row = db.execute(
            "SELECT id FROM rules WHERE share_id = ? AND access_type = ? AND access_to = ?"
            " AND state <> 'deleted' AND id <> ?",
            (rule.share_id, rule.access_type, rule.access_to, rule.id),
        ).fetchone()
        if row is not None:
            raise Conflict(
                f"share {rule.share_id} already has an {rule.access_type} rule for"
                f" {rule.access_to!r} (rule {row[0]})"
            )

    def add_rule(self, rule: RuleRecord) -> RuleRecord:
        with self._write() as tx:
            stored = replace(rule, id=rule.id or new_id(), revision=tx.revision)
            self._share(tx.db, stored.share_id)
            if tx.db.execute("SELECT 1 FROM rules WHERE id = ?", (stored.id,)).fetchone():
                raise Conflict(f"access rule {stored.id} exists")
            self._check_live_duplicate(tx.db, stored)
            data = dumps(stored)
            tx.db.execute(
                "INSERT INTO rules (id, share_id, access_type, access_to, state, data)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (stored.id, stored.share_id, stored.access_type, stored.access_to,
                 stored.state.value, data),
            )  # fmt: skip
            tx.change("rule", stored.id, "put", data)
        return stored

    def get_rule(self, rule_id: str) -> RuleRecord:
        with self._use() as db:
            return self._rule(db, rule_id)

    def list_rules(self, share_id: str) -> list[RuleRecord]:
        with self._read() as db:
            self._share(db, share_id)
            rows = db.execute("SELECT data FROM rules WHERE share_id = ?", (share_id,)).fetchall()
        rules = [load_as(RuleRecord, r[0]) for r in rows]
        return sorted(rules, key=lambda r: (r.created_at, r.id))

    def update_rule(
        self,
        rule_id: str,
        *,
        expect_revision: int | None = None,
        state: RuleState | None = None,
        level: Level | None = None,
    ) -> RuleRecord:
        given = {"state": state, "level": level}
        changes: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
        with self._write() as tx:
            old = self._rule(tx.db, rule_id)
            if expect_revision is not None and old.revision != expect_revision:
                raise Conflict(
                    f"access rule {rule_id} changed: revision {old.revision}, not {expect_revision}"
                )
            new = replace(old, **changes)
            if new == old:
                return old
            self._check_live_duplicate(tx.db, new)
            new = replace(new, revision=tx.revision)
            data = dumps(new)
            tx.db.execute(
                "UPDATE rules SET state = ?, data = ? WHERE id = ?",
                (new.state.value, data, rule_id),
            )
            tx.change("rule", rule_id, "put", data)
        return new

    def delete_rule(self, rule_id: str) -> None:
        with self._write() as tx:
            self._rule(tx.db, rule_id)
            tx.db.execute("DELETE FROM rules WHERE id = ?", (rule_id,))
            tx.change("rule", rule_id, "delete")

    # --- instances ------------------------------------------------------------------------

    def put_instance(self, record: InstanceRecord) -> InstanceRecord:
        uuid = record.uuid
        with self._write() as tx:
            db = tx.db
            for kind, value in sorted(record.instance.keys):
                row = db.execute(
                    "SELECT uuid FROM identities WHERE kind = ? AND value = ?", (kind, value)
                ).fetchone()
                if row is not None and row[0] != uuid:
                    raise Conflict(f"instance {uuid}: {kind} {value} belongs to instance {row[0]}")
            row = db.execute("SELECT data FROM instances WHERE uuid = ?", (uuid,)).fetchone()
            if row is not None:
                old = load_as(InstanceRecord, row[0])
                if old.instance == record.instance:
                    return old
                record = replace(record, created_at=old.created_at)
            data = dumps(record)
            db.execute("DELETE FROM identities WHERE uuid = ?", (uuid,))
            db.execute(
                "INSERT INTO instances (uuid, tenant, data) VALUES (?, ?, ?)"
                " ON CONFLICT (uuid) DO UPDATE SET tenant = excluded.tenant, data = excluded.data",
                (uuid, record.tenant, data),
            )
            db.executemany(
                "INSERT INTO identities (kind, value, uuid) VALUES (?, ?, ?)",
                [(kind, value, uuid) for kind, value in sorted(record.instance.keys)],
            )
            tx.change("instance", uuid, "put", data)
        return record

    def get_instance(self, uuid: str) -> InstanceRecord:
        with self._use() as db:
            row = db.execute("SELECT data FROM instances WHERE uuid = ?", (uuid,)).fetchone()
        if row is None:
            raise NotFound(f"instance {uuid} not found")
        return load_as(InstanceRecord, row[0])

    def remove_instance(self, uuid: str) -> None:
        with self._write() as tx:
            if tx.db.execute("SELECT 1 FROM instances WHERE uuid = ?", (uuid,)).fetchone() is None:
                raise NotFound(f"instance {uuid} not found")
            tx.db.execute("DELETE FROM identities WHERE uuid = ?", (uuid,))
            tx.db.execute("DELETE FROM instances WHERE uuid = ?", (uuid,))
            tx.change("instance", uuid, "delete")

    def list_instances(self, tenant: str | None = None) -> list[InstanceRecord]:
        with self._use() as db:
            if tenant is None:
                rows = db.execute("SELECT data FROM instances ORDER BY uuid").fetchall()
            else:
                rows = db.execute(
                    "SELECT data FROM instances WHERE tenant = ? ORDER BY uuid", (tenant,)
                ).fetchall()
        return [load_as(InstanceRecord, r[0]) for r in rows]

    def resolve(self, facts: IdentityFacts) -> Instance | None:
        keys = identity_keys(facts)
        if not keys:
            return None
        with self._read() as db:
            for kind, value in keys:  # strongest first: the first match wins
                row = db.execute(
                    "SELECT i.data FROM identities AS k JOIN instances AS i ON i.uuid = k.uuid"
                    " WHERE k.kind = ? AND k.value = ?",
                    (kind, value),
                ).fetchone()
                if row is not None:
                    return load_as(InstanceRecord, row[0]).instance
        return None

    # --- API tokens -----------------------------------------------------------------------

    def add_token(self, token: TokenRecord) -> TokenRecord:
        with self._write() as tx:
            if tx.db.execute("SELECT 1 FROM tokens WHERE name = ?", (token.name,)).fetchone():
                raise Conflict(f"token {token.name!r} exists")
            if tx.db.execute("SELECT 1 FROM tokens WHERE hash = ?", (token.hash,)).fetchone():
                raise Conflict(f"token {token.name!r}: another token has the same secret")
            data = dumps(token)
            tx.db.execute(
                "INSERT INTO tokens (name, hash, data) VALUES (?, ?, ?)",
                (token.name, token.hash, data),
            )
            tx.change("token", token.name, "put", data)
        return token

    def find_token(self, token_hash: str) -> TokenRecord | None:
        # An indexed lookup leaks timing about the *hash*, which tells nothing about any
        # secret (preimage resistance), so no constant-time comparison is needed.
        with self._use() as db:
            row = db.execute(
                "SELECT data FROM tokens WHERE hash = ?", (token_hash.lower(),)
            ).fetchone()
        return None if row is None else load_as(TokenRecord, row[0])

    def list_tokens(self) -> list[TokenRecord]:
        with self._use() as db:
            rows = db.execute("SELECT data FROM tokens ORDER BY name").fetchall()
        return [load_as(TokenRecord, r[0]) for r in rows]

    def remove_token(self, name: str) -> None:
        with self._write() as tx:
            if tx.db.execute("DELETE FROM tokens WHERE name = ?", (name,)).rowcount == 0:
                raise NotFound(f"token {name!r} not found")
            tx.change("token", name, "delete")

    # --- quotas ---------------------------------------------------------------------------

    @staticmethod
    def _quota_usage(db: sqlite3.Connection, tenant: str) -> QuotaUsage:
        stored = dict(
            db.execute("SELECT tenant, data FROM quotas WHERE tenant IN ('', ?)", (tenant,))
        )
        used = db.execute(
            "SELECT count(*), coalesce(sum(json_extract(data, '$.size_gib')), 0) FROM shares"
            " WHERE tenant = ?",
            (tenant,),
        ).fetchone()
        records = {t: load_as(QuotaRecord, d) for t, d in stored.items()}
        return tally(tenant, records.get(""), records.get(tenant), *used)

    def put_quota(self, quota: QuotaRecord) -> QuotaRecord:
        data = dumps(quota)
        with self._write() as tx:
            row = tx.db.execute("SELECT data FROM quotas WHERE tenant = ?", (quota.tenant,))
            old = row.fetchone()
            if quota.is_empty and old is not None:
                tx.db.execute("DELETE FROM quotas WHERE tenant = ?", (quota.tenant,))
                tx.change("quota", quota.tenant, "delete")
            elif not quota.is_empty and (old is None or old[0] != data):
                tx.db.execute(
                    "INSERT INTO quotas (tenant, data) VALUES (?, ?)"
                    " ON CONFLICT (tenant) DO UPDATE SET data = excluded.data",
                    (quota.tenant, data),
                )
                tx.change("quota", quota.tenant, "put", data)
        return quota

    def list_quotas(self) -> list[QuotaRecord]:
        with self._use() as db:
            rows = db.execute("SELECT data FROM quotas ORDER BY tenant").fetchall()
        return [load_as(QuotaRecord, r[0]) for r in rows]

    def quota_usage(self, tenant: str) -> QuotaUsage:
        with self._read() as db:
            return self._quota_usage(db, tenant)

    # --- gateways -------------------------------------------------------------------------

    def heartbeat(self, gateway: GatewayRecord, ttl_seconds: float) -> GatewayStatus:
        if not ttl_seconds > 0 or not math.isfinite(ttl_seconds):
            raise ValueError("a gateway's ttl must be more than 0 seconds")
        data = dumps(gateway)  # with its load: the row is rewritten at every heartbeat
        registration = dumps(gateway.registration())
        with self._write() as tx:
            now = time.time()
            row = tx.db.execute("SELECT data FROM gateways WHERE id = ?", (gateway.id,)).fetchone()
            if row is None or dumps(load_as(GatewayRecord, row[0]).registration()) != registration:
                tx.change("gateway", gateway.id, "put", registration)
            tx.db.execute(
                "INSERT INTO gateways (id, data, last_seen, ttl) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET data = excluded.data,"
                " last_seen = excluded.last_seen, ttl = excluded.ttl",
                (gateway.id, data, now, float(ttl_seconds)),
            )
        return GatewayStatus(
            gateway=gateway,
            last_seen=datetime.fromtimestamp(now, UTC),
            ttl_seconds=float(ttl_seconds),
            healthy=True,
        )

    def list_gateways(self) -> list[GatewayStatus]:
        with self._use() as db:
            rows = db.execute("SELECT data, last_seen, ttl FROM gateways ORDER BY id").fetchall()
        now = time.time()
        return [
            GatewayStatus(
                gateway=load_as(GatewayRecord, data),
                last_seen=datetime.fromtimestamp(last_seen, UTC),
                ttl_seconds=ttl,
                healthy=now - last_seen < ttl,
            )
            for data, last_seen, ttl in rows
        ]

    def remove_gateway(self, gateway_id: str) -> None:
        with self._write() as tx:
            if tx.db.execute("DELETE FROM gateways WHERE id = ?", (gateway_id,)).rowcount == 0:
                raise NotFound(f"gateway {gateway_id!r} not found")
            tx.change("gateway", gateway_id, "delete")

    # --- revision and change feed ---------------------------------------------------------

    def revision(self) -> int:
        with self._use() as db:
            return _meta(db, "revision")

    def changes_since(self, revision: int) -> list[Change]:
        with self._read() as db:
            current = _meta(db, "revision")
            compacted = _meta(db, "compacted")
            if revision < compacted:
                raise Compacted(
                    f"changes after revision {revision} were compacted (the feed starts after"
                    f" {compacted}); reload a snapshot"
                )
            if revision > current:
                raise Compacted(
                    f"revision {revision} is ahead of the store ({current}); reload a snapshot"
                )
            rows = db.execute(
                "SELECT revision, kind, key, op, data FROM changes WHERE revision > ?"
                " ORDER BY revision, seq",
                (revision,),
            ).fetchall()
        return [
            Change(
                revision=rev,
                kind=kind,
                key=key,
                op=op,
                record=None if data is None else loads(kind, data),
            )
            for rev, kind, key, op, data in rows
        ]

    def wait_for_change(self, revision: int, timeout: float) -> int:
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            with self._changed:
                generation = self._generation
            current = self.revision()
            remaining = deadline - time.monotonic()
            if current > revision or remaining <= 0:
                return current
            with self._changed:
                # A commit through this object since the read above: look again at once.
                if self._generation == generation:
                    self._changed.wait(min(self.poll_interval, remaining))

    def compact(self, revision: int) -> None:
        with self._write() as tx:
            current = tx.revision - 1
            if revision > current:
                raise ValueError(f"cannot compact to {revision}: the store is at {current}")
            self._trim(tx.db, revision)

    def snapshot(self) -> Snapshot:
        with self._read() as db:
            revision = _meta(db, "revision")
            shares = db.execute("SELECT data FROM shares ORDER BY name").fetchall()
            rules = db.execute("SELECT data FROM rules").fetchall()
            instances = db.execute("SELECT data FROM instances ORDER BY uuid").fetchall()
        return Snapshot(
            revision=revision,
            shares=tuple(load_as(ShareRecord, r[0]) for r in shares),
            rules=tuple(
                sorted(
                    (load_as(RuleRecord, r[0]) for r in rules),
                    key=lambda r: (r.share_id, r.created_at, r.id),
                )
            ),
            instances=tuple(load_as(InstanceRecord, r[0]) for r in instances),
        )

    # --- life cycle -----------------------------------------------------------------------

    def close(self) -> None:
        with self._holders_lock:
            if self._closed:
                return
            self._closed = True
            holders = list(self._holders)
            self._holders.clear()
        for holder in holders:
            with contextlib.suppress(sqlite3.Error):
                holder.conn.close()
