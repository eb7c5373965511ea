"""Whole-tree helpers over the POSIX backend: sizes and removal stay inside the tree."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vshare.backend.posix import PosixBackend
from vshare.backend.tree import apparent_size, remove_tree


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    vol = tmp_path / "vol"
    (vol / "share" / "a" / "b").mkdir(parents=True)
    (vol / "share" / "one").write_bytes(b"1" * 100)
    (vol / "share" / "a" / "two").write_bytes(b"2" * 1000)
    with open(vol / "share" / "a" / "b" / "sparse", "wb") as f:
        f.truncate(1 << 30)
    os.link(vol / "share" / "one", vol / "share" / "a" / "one-again")
    (vol / "outside").mkdir()
    (vol / "outside" / "keep").write_bytes(b"k" * 5000)
    os.symlink("../outside", vol / "share" / "escape")
    os.symlink(str(vol / "outside" / "keep"), vol / "share" / "a" / "abs-escape")
    os.mkfifo(vol / "share" / "fifo")
    return vol


def test_apparent_size_counts_files_and_not_what_symlinks_point_at(volume: Path) -> None:
    backend = PosixBackend(str(volume))
    root = backend.open_root("share")
    try:
        # every regular file's st_size (a hard link counts each time it is reached)
        assert apparent_size(backend, root) == 100 + 1000 + (1 << 30) + 100
    finally:
        root.close()
        backend.close()


def test_remove_tree_removes_everything_and_nothing_outside(volume: Path) -> None:
    backend = PosixBackend(str(volume))
    parent = backend.open_root("share/a")
    try:
        remove_tree(backend, parent, "b")
        assert not (volume / "share" / "a" / "b").exists()
    finally:
        parent.close()
    share_parent = backend.open_root("share")
    try:
        for name in ("a", "escape", "fifo", "one"):
            remove_tree(backend, share_parent, name)
        assert list((volume / "share").iterdir()) == []
        with pytest.raises(FileNotFoundError):
            remove_tree(backend, share_parent, "a")
    finally:
        share_parent.close()
        backend.close()
    assert (volume / "outside" / "keep").read_bytes() == b"k" * 5000
