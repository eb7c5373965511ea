"""The SQLite store's schema: its versions (``MIGRATIONS``), the ``meta`` table and the
migration that brings a database to the newest version in one transaction (see
``sqlite.py``'s module note, "Schema")."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Final

from vshare.store._errors import StoreUnavailable

__all__ = ["MIGRATIONS", "meta", "migrate", "refuse_newer", "schema_version", "set_meta"]

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


def meta(db: sqlite3.Connection, key: str) -> int:
    row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    if row is None:
        raise StoreUnavailable(f"store is damaged: meta has no {key!r}")
    return int(row[0])


def set_meta(db: sqlite3.Connection, key: str, value: int) -> None:
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


def refuse_newer(version: int, known: int, label: str) -> None:
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
        refuse_newer(version, len(migrations), label)
        for number in range(version + 1, len(migrations) + 1):
            try:
                for statement in migrations[number - 1]:
                    db.execute(statement)
            except sqlite3.Error as exc:
                raise StoreUnavailable(
                    f"store {label}: migration to schema version {number} failed: {exc}"
                ) from None
            set_meta(db, "schema_version", number)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return len(migrations)
