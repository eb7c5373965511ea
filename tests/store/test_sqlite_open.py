"""Opening a SQLite store (issue 21): ``sqlite:////abs`` is an absolute path, and a failed
open leaves no empty database file behind."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from vshare.store import SqliteStore, StoreUnavailable, open_store


def test_four_slashes_name_an_absolute_path(tmp_path: Path) -> None:
    with open_store(f"sqlite:///{tmp_path}/state.db") as store:
        assert isinstance(store, SqliteStore) and store.path == str(tmp_path / "state.db")
        assert store.revision() >= 0
    assert (tmp_path / "state.db").stat().st_size > 0


def test_a_failed_open_leaves_no_empty_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: SqliteStore, db: sqlite3.Connection) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(SqliteStore, "_prepare", broken)
    with pytest.raises(StoreUnavailable, match="disk I/O error"):
        SqliteStore(tmp_path / "state.db")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_open_keeps_a_file_it_did_not_create(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    SqliteStore(tmp_path / "state.db").close()
    size = (tmp_path / "state.db").stat().st_size

    def broken(self: SqliteStore, db: sqlite3.Connection) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(SqliteStore, "_prepare", broken)
    with pytest.raises(StoreUnavailable):
        SqliteStore(tmp_path / "state.db")
    assert (tmp_path / "state.db").stat().st_size == size
