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
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Final, TypeVar

from vshare.store._codec import dumps, load_as, loads
from vshare.store._errors import Conflict, NotFound, StoreUnavailable
from vshare.store._ledger import LedgerStore, Tx, View, check_compact, check_feed, snapshot_of
from vshare.store._records import (
    Change,
    GatewayRecord,
    GatewayStatus,
    InstanceRecord,
    Kind,
    Op,
    QuotaRecord,
    RuleRecord,
    ShareRecord,
    Snapshot,
    TokenRecord,
)
from vshare.store._sqlite_schema import (
    MIGRATIONS,
    migrate,
    refuse_newer,
    schema_version,
    set_meta,
)
from vshare.store._sqlite_schema import meta as _meta

__all__ = ["MIGRATIONS", "SqliteStore", "migrate", "schema_version"]

MEMORY: Final = ":memory:"
_R = TypeVar("_R", ShareRecord, RuleRecord, InstanceRecord, TokenRecord, QuotaRecord)
_T = TypeVar("_T")


class _Holder:
    """A thread's connection. sqlite3 connections cannot be weakly referenced; this can,
    so the store can close every live connection without keeping dead threads' alive."""

    __slots__ = ("__weakref__", "conn")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn


class _SqlView:
    """The reads of :class:`~vshare.store._ledger.View` over one connection, in a
    transaction the caller opened."""

    __slots__ = ("db",)

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def _one(self, cls: type[_R], sql: str, *args: str) -> _R | None:
        row = self.db.execute(sql, args).fetchone()
        return None if row is None else load_as(cls, row[0])

    def _all(self, cls: type[_R], sql: str, *args: str) -> list[_R]:
        return [load_as(cls, r[0]) for r in self.db.execute(sql, args).fetchall()]

    def _text(self, sql: str, *args: str) -> str | None:
        row = self.db.execute(sql, args).fetchone()
        return None if row is None else str(row[0])

    def share(self, share_id: str) -> ShareRecord | None:
        return self._one(ShareRecord, "SELECT data FROM shares WHERE id = ?", share_id)

    def share_id_named(self, name: str) -> str | None:
        return self._text("SELECT id FROM shares WHERE name = ?", name)

    def shares(self, tenant: str | None) -> list[ShareRecord]:
        if tenant is None:
            return self._all(ShareRecord, "SELECT data FROM shares")
        return self._all(ShareRecord, "SELECT data FROM shares WHERE tenant = ?", tenant)

    def rule(self, rule_id: str) -> RuleRecord | None:
        return self._one(RuleRecord, "SELECT data FROM rules WHERE id = ?", rule_id)

    def rules_of(self, share_id: str) -> list[RuleRecord]:
        return self._all(RuleRecord, "SELECT data FROM rules WHERE share_id = ?", share_id)

    def every_rule(self) -> list[RuleRecord]:
        return self._all(RuleRecord, "SELECT data FROM rules")

    def instance(self, uuid: str) -> InstanceRecord | None:
        return self._one(InstanceRecord, "SELECT data FROM instances WHERE uuid = ?", uuid)

    def instances(self, tenant: str | None) -> list[InstanceRecord]:
        if tenant is None:
            return self._all(InstanceRecord, "SELECT data FROM instances")
        return self._all(InstanceRecord, "SELECT data FROM instances WHERE tenant = ?", tenant)

    def identity_owner(self, kind: str, value: str) -> str | None:
        return self._text("SELECT uuid FROM identities WHERE kind = ? AND value = ?", kind, value)

    def token(self, name: str) -> TokenRecord | None:
        return self._one(TokenRecord, "SELECT data FROM tokens WHERE name = ?", name)

    def token_name_of_hash(self, token_hash: str) -> str | None:
        return self._text("SELECT name FROM tokens WHERE hash = ?", token_hash)

    def tokens(self) -> list[TokenRecord]:
        return self._all(TokenRecord, "SELECT data FROM tokens")

    def quota(self, tenant: str) -> QuotaRecord | None:
        return self._one(QuotaRecord, "SELECT data FROM quotas WHERE tenant = ?", tenant)

    def quotas(self) -> list[QuotaRecord]:
        return self._all(QuotaRecord, "SELECT data FROM quotas")

    def usage(self, tenant: str) -> tuple[int, int]:
        count, total = self.db.execute(
            "SELECT count(*), coalesce(sum(json_extract(data, '$.size_gib')), 0) FROM shares"
            " WHERE tenant = ?",
            (tenant,),
        ).fetchone()
        return int(count), int(total)


class _SqlTx(_SqlView):
    """One write transaction (:class:`~vshare.store._ledger.Tx`): its connection, the
    revision its changes will get, and the changes made so far (committed with the data,
    or not at all). The schema's unique keys back the ledger's checks."""

    __slots__ = ("changes", "revision")

    def __init__(self, db: sqlite3.Connection, revision: int) -> None:
        super().__init__(db)
        self.revision = revision
        self.changes: list[tuple[Kind, str, Op, str | None]] = []

    def change(self, kind: Kind, key: str, op: Op, data: str | None = None) -> None:
        self.changes.append((kind, key, op, data))

    def put_share(self, old: ShareRecord | None, new: ShareRecord, data: str) -> None:
        if old is not None:
            self.db.execute(
                "UPDATE shares SET name = ?, data = ? WHERE id = ?", (new.name, data, new.id)
            )
            return
        self.db.execute(
            "INSERT INTO shares (id, name, tenant, data) VALUES (?, ?, ?, ?)",
            (new.id, new.name, new.tenant, data),
        )

    def drop_share(self, share: ShareRecord, rules: Sequence[RuleRecord]) -> None:
        self.db.execute("DELETE FROM rules WHERE share_id = ?", (share.id,))
        self.db.execute("DELETE FROM shares WHERE id = ?", (share.id,))

    def put_rule(self, old: RuleRecord | None, new: RuleRecord, data: str) -> None:
        if old is not None:
            self.db.execute(
                "UPDATE rules SET state = ?, data = ? WHERE id = ?", (new.state.value, data, new.id)
            )
            return
        self.db.execute(
            "INSERT INTO rules (id, share_id, access_type, access_to, state, data)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (new.id, new.share_id, new.access_type, new.access_to, new.state.value, data),
        )

    def drop_rule(self, rule: RuleRecord) -> None:
        self.db.execute("DELETE FROM rules WHERE id = ?", (rule.id,))

    def put_instance(self, old: InstanceRecord | None, new: InstanceRecord, data: str) -> None:
        self.db.execute("DELETE FROM identities WHERE uuid = ?", (new.uuid,))
        self.db.execute(
            "INSERT INTO instances (uuid, tenant, data) VALUES (?, ?, ?)"
            " ON CONFLICT (uuid) DO UPDATE SET tenant = excluded.tenant, data = excluded.data",
            (new.uuid, new.tenant, data),
        )
        self.db.executemany(
            "INSERT INTO identities (kind, value, uuid) VALUES (?, ?, ?)",
            [(kind, value, new.uuid) for kind, value in sorted(new.instance.keys)],
        )

    def drop_instance(self, record: InstanceRecord) -> None:
        self.db.execute("DELETE FROM identities WHERE uuid = ?", (record.uuid,))
        self.db.execute("DELETE FROM instances WHERE uuid = ?", (record.uuid,))

    def put_token(self, token: TokenRecord, data: str) -> None:
        self.db.execute(
            "INSERT INTO tokens (name, hash, data) VALUES (?, ?, ?)",
            (token.name, token.hash, data),
        )

    def drop_token(self, token: TokenRecord) -> None:
        self.db.execute("DELETE FROM tokens WHERE name = ?", (token.name,))

    def put_quota(self, quota: QuotaRecord, data: str) -> None:
        self.db.execute(
            "INSERT INTO quotas (tenant, data) VALUES (?, ?)"
            " ON CONFLICT (tenant) DO UPDATE SET data = excluded.data",
            (quota.tenant, data),
        )

    def drop_quota(self, tenant: str) -> None:
        self.db.execute("DELETE FROM quotas WHERE tenant = ?", (tenant,))


class SqliteStore(LedgerStore):
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
        refuse_newer(schema_version(db, self.path), len(MIGRATIONS), self.path)
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

    def _read(self, fn: Callable[[View], _T]) -> _T:
        with self._reading() as db:
            return fn(_SqlView(db))

    def _write(self, fn: Callable[[Tx], _T]) -> _T:
        with self._writing() as tx:
            return fn(tx)

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: everything read inside sees one state of the database."""
        with self._use() as db:
            db.execute("BEGIN")
            try:
                yield db
            finally:
                if db.in_transaction:
                    db.execute("ROLLBACK")  # nothing was written; this only ends the read

    @contextlib.contextmanager
    def _writing(self) -> Iterator[_SqlTx]:
        """A write transaction; its changes get one new revision, committed with them."""
        with self._use() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                tx = _SqlTx(db, _meta(db, "revision") + 1)
                yield tx
                if tx.changes:
                    db.executemany(
                        "INSERT INTO changes (revision, seq, kind, key, op, data)"
                        " VALUES (?, ?, ?, ?, ?, ?)",
                        [(tx.revision, seq, *change) for seq, change in enumerate(tx.changes)],
                    )
                    set_meta(db, "revision", tx.revision)
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
            set_meta(db, "compacted", upto)

    # --- gateways -------------------------------------------------------------------------

    def heartbeat(self, gateway: GatewayRecord, ttl_seconds: float) -> GatewayStatus:
        if not ttl_seconds > 0 or not math.isfinite(ttl_seconds):
            raise ValueError("a gateway's ttl must be more than 0 seconds")
        data = dumps(gateway)  # with its load: the row is rewritten at every heartbeat
        registration = dumps(gateway.registration())
        with self._writing() as tx:
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
        with self._writing() as tx:
            if tx.db.execute("DELETE FROM gateways WHERE id = ?", (gateway_id,)).rowcount == 0:
                raise NotFound(f"gateway {gateway_id!r} not found")
            tx.change("gateway", gateway_id, "delete")

    # --- revision and change feed ---------------------------------------------------------

    def revision(self) -> int:
        with self._use() as db:
            return _meta(db, "revision")

    def changes_since(self, revision: int) -> list[Change]:
        with self._reading() as db:
            current = _meta(db, "revision")
            check_feed(revision, current, _meta(db, "compacted"))
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
        with self._writing() as tx:
            check_compact(revision, tx.revision - 1)
            self._trim(tx.db, revision)

    def snapshot(self) -> Snapshot:
        with self._reading() as db:
            view = _SqlView(db)
            return snapshot_of(_meta(db, "revision"), view, view.every_rule())

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
