"""The one conformance suite every :class:`~vshare.backend.base.Backend` runs, unchanged.

Two pytest test classes share one fixture protocol:

- :class:`BackendConformance`: every method of the interface, with its errnos.
- :class:`EscapeBattery`: attempts to leave the share (names, share paths, symlinks absolute,
  relative and to a sibling share, a directory swapped for a symlink while other threads walk
  through it, hard links, device nodes, hostile numbers). Each test ends by checking that
  nothing outside the share changed, and no test ever sees the outside's secret bytes.

How a backend runs them (see ``tests/backend/test_posix.py``)::

    @pytest.fixture
    def backend_factory(tmp_path) -> BackendFactory:
        def make() -> BackendUnderTest:
            ...  # a fresh, empty volume holding an empty share directory
            return BackendUnderTest(backend, "shares/a", LocalVolumeFixture(volume_dir))
        return make

    class TestMineConformance(BackendConformance): ...
    class TestMineEscapes(EscapeBattery): ...

The factory returns a new backend over a new volume on every call; the share is a directory
of that volume, at least one level below its root (``"a"`` or ``"shares/a"``). The suite
prepares files through the :class:`VolumeFixture` (the "host" side, bypassing the backend)
and closes the backends it makes. The test process should be root for the ownership tests
(they are skipped otherwise). Nothing here imports a particular backend.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import stat
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import pytest

from vshare.backend.base import TIME_NOW, Backend, DirEntry, Node, OpenFile

__all__ = [
    "BackendConformance",
    "BackendFactory",
    "BackendUnderTest",
    "EscapeBattery",
    "LocalVolumeFixture",
    "VolumeFixture",
    "raises_errno",
]


class VolumeFixture(Protocol):
    """Direct access to the volume under test, bypassing the backend.

    Paths are relative to the volume root and ``/``-separated. POSIX volumes use
    :class:`LocalVolumeFixture`; a GlusterFS volume can use gfapi or a FUSE mount.
    """

    def host_write(self, relpath: str, data: bytes) -> None:
        """Create or replace a regular file (missing parent directories are made)."""

    def host_read(self, relpath: str) -> bytes:
        """The content of a regular file."""

    def host_mkdir(self, relpath: str) -> None:
        """Make a directory and its parents; no error if it exists."""

    def host_symlink(self, relpath: str, target: str) -> None:
        """Make a symlink whose target is ``target`` verbatim."""

    def host_link(self, existing: str, new: str) -> None:
        """Make a hard link ``new`` to ``existing``."""

    def host_rename(self, old: str, new: str) -> None:
        """rename(2): atomic, replaces ``new`` if it is a file, symlink or empty dir."""

    def host_exists(self, relpath: str) -> bool:
        """Whether the name exists (a dangling symlink exists)."""

    def host_absolute(self, relpath: str) -> str:
        """An absolute symlink target that a server *following* symlinks would resolve to
        ``relpath`` (the host path on POSIX, ``/relpath`` inside a GlusterFS volume)."""

    def host_snapshot(self) -> dict[str, tuple[object, ...]]:
        """Every object in the volume, by relative path (``""`` for the root), with a tuple
        that changes when its type, mode, owner, size, link count, mtime, content (files),
        target (symlinks) or extended attributes change. Symlinks are not followed."""


class LocalVolumeFixture:
    """:class:`VolumeFixture` for a volume that is a directory on this machine."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)

    def _path(self, relpath: str) -> str:
        return os.path.join(self.root, relpath) if relpath else self.root

    def host_write(self, relpath: str, data: bytes) -> None:
        path = self._path(relpath)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)

    def host_read(self, relpath: str) -> bytes:
        with open(self._path(relpath), "rb") as f:
            return f.read()

    def host_mkdir(self, relpath: str) -> None:
        os.makedirs(self._path(relpath), exist_ok=True)

    def host_symlink(self, relpath: str, target: str) -> None:
        os.symlink(os.fsencode(target), self._path(relpath))

    def host_link(self, existing: str, new: str) -> None:
        os.link(self._path(existing), self._path(new), follow_symlinks=False)

    def host_rename(self, old: str, new: str) -> None:
        os.rename(self._path(old), self._path(new))

    def host_exists(self, relpath: str) -> bool:
        return os.path.lexists(self._path(relpath))

    def host_absolute(self, relpath: str) -> str:
        return self._path(relpath)

    def host_snapshot(self) -> dict[str, tuple[object, ...]]:
        out: dict[str, tuple[object, ...]] = {}
        self._snap("", out)
        return out

    def _snap(self, rel: str, out: dict[str, tuple[object, ...]]) -> None:
        path = self._path(rel)
        st = os.lstat(path)
        content: object = None
        if stat.S_ISREG(st.st_mode):
            content = self.host_read(rel)
        elif stat.S_ISLNK(st.st_mode):
            content = os.readlink(path)
        xattrs = tuple(
            sorted(
                (name, os.getxattr(path, name, follow_symlinks=False))
                for name in os.listxattr(path, follow_symlinks=False)
            )
        )
        out[rel] = (
            stat.S_IFMT(st.st_mode),
            st.st_mode,
            st.st_uid,
            st.st_gid,
            st.st_size,
            st.st_nlink,
            st.st_mtime_ns,
            content,
            xattrs,
        )
        if stat.S_ISDIR(st.st_mode):
            for name in sorted(os.listdir(path)):
                self._snap(posixpath.join(rel, name), out)


class BackendUnderTest(NamedTuple):
    """What a factory returns: a fresh backend, the share's path in it, and the host side."""

    backend: Backend
    share: str
    host: VolumeFixture


BackendFactory = Callable[[], BackendUnderTest]


@contextlib.contextmanager
def raises_errno(*codes: int) -> Iterator[None]:
    """Like ``pytest.raises(OSError)`` and the errno must be one of ``codes``. Anything but an
    OSError propagates and fails the test (the interface raises nothing else)."""
    with pytest.raises(OSError) as info:
        yield
    got = info.value.errno
    assert got in codes, (
        f"errno {errno.errorcode.get(got or 0, got)}, expected one of "
        f"{[errno.errorcode[c] for c in codes]}: {info.value!r}"
    )


# ---------------------------------------------------------------------------------------------
# Helpers


@dataclass
class Vol:
    """The volume under test, with the share's root node open."""

    backend: Backend
    share: str
    host: VolumeFixture
    root: Node

    def rel(self, *names: str) -> str:
        """Volume-relative path of a path inside the share."""
        return posixpath.join(self.share, *names)

    def mkfile(self, parent: Node, name: str, data: bytes = b"", mode: int = 0o644) -> Node:
        node, file = self.backend.create(parent, name, os.O_RDWR, mode)
        try:
            if data:
                assert self.backend.write(file, 0, memoryview(data)) == len(data)
        finally:
            file.close()
        return node

    def read_all(self, node: Node, chunk: int = 65536) -> bytes:
        file = self.backend.open(node, os.O_RDONLY)
        try:
            out = bytearray()
            buf = bytearray(chunk)
            while True:
                n = self.backend.read(file, len(out), memoryview(buf))
                if n == 0:
                    return bytes(out)
                out += buf[:n]
        finally:
            file.close()

    def listing(self, file: OpenFile, batch: int, cookie: int = 0) -> list[DirEntry]:
        """The whole listing after ``cookie``, ``batch`` entries a call; each end a backend
        tells is checked to be one (the next call from there lists nothing)."""
        out: list[DirEntry] = []
        for _ in range(1_000_000):
            entries, end = self.backend.readdir(file, cookie, batch)
            if not entries:
                return out
            assert len(entries) <= batch
            out.extend(entries)
            cookie = entries[-1].cookie
            if end:
                assert list(self.backend.readdir(file, cookie, batch).entries) == []
                return out
        raise AssertionError("readdir never reached the end")

    def names(self, directory: Node, batch: int = 100) -> list[str]:
        file = self.backend.open(directory, os.O_RDONLY)
        try:
            return [e.name for e in self.listing(file, batch)]
        finally:
            file.close()


class _Suite:
    """The fixture both classes use; ``backend_factory`` comes from the backend's tests."""

    @pytest.fixture
    def vol(self, backend_factory: BackendFactory) -> Iterator[Vol]:
        backend, share, host = backend_factory()
        try:
            root = backend.open_root(share)
            try:
                yield Vol(backend, share, host, root)
            finally:
                root.close()
        finally:
            backend.close()


def _perm(mode: int) -> int:
    return mode & 0o7777


# ---------------------------------------------------------------------------------------------
# The interface


class BackendConformance(_Suite):
    """Every method of :class:`~vshare.backend.base.Backend`, with its errnos."""

    # -- open_root, lookup, getattr -------------------------------------------------------------

    def test_open_root(self, vol: Vol) -> None:
        attr = vol.backend.getattr(vol.root)
        assert stat.S_ISDIR(attr.mode)
        assert vol.root.is_dir and not vol.root.is_symlink
        assert attr.qid_path == vol.root.qid_path
        again = vol.backend.open_root(vol.share)
        assert again.qid_path == vol.root.qid_path
        again.close()

    def test_open_root_errors(self, vol: Vol) -> None:
        vol.host.host_write(vol.rel("file"), b"x")
        with raises_errno(errno.ENOENT):
            vol.backend.open_root(vol.rel("missing"))
        with raises_errno(errno.ENOTDIR):
            vol.backend.open_root(vol.rel("file"))
        with raises_errno(errno.ENOTDIR):
            vol.backend.open_root(vol.rel("file", "below"))

    def test_lookup(self, vol: Vol) -> None:
        vol.host.host_write(vol.rel("f"), b"data")
        vol.host.host_mkdir(vol.rel("d"))
        f = vol.backend.lookup(vol.root, "f")
        d = vol.backend.lookup(vol.root, "d")
        assert f.file_type == stat.S_IFREG and not f.is_dir
        assert d.file_type == stat.S_IFDIR and d.is_dir
        assert vol.read_all(f) == b"data"
        with raises_errno(errno.ENOENT):
            vol.backend.lookup(vol.root, "missing")
        with raises_errno(errno.ENOENT):
            vol.backend.lookup(d, "missing")
        with raises_errno(errno.ENOTDIR):
            vol.backend.lookup(f, "anything")

    def test_getattr(self, vol: Vol) -> None:
        node = vol.mkfile(vol.root, "f", b"0123456789", 0o640)
        attr = vol.backend.getattr(node)
        assert stat.S_ISREG(attr.mode)
        assert _perm(attr.mode) & ~0o640 == 0  # the umask may clear bits, never add them
        assert attr.size == 10
        assert attr.nlink == 1
        assert attr.blksize > 0
        assert attr.blocks >= 0
        assert attr.mtime_ns > 0 and attr.ctime_ns > 0 and attr.atime_ns > 0
        assert attr.btime_ns >= 0
        assert attr.qid_path == node.qid_path
        assert vol.backend.getattr(vol.root).nlink >= 2

    def test_qid_paths(self, vol: Vol) -> None:
        a = vol.mkfile(vol.root, "a")
        b = vol.mkfile(vol.root, "b")
        d = vol.backend.mkdir(vol.root, "d", 0o755)
        s = vol.backend.symlink(vol.root, "s", "a")
        in_d = vol.mkfile(d, "a")
        qids = [n.qid_path for n in (vol.root, a, b, d, s, in_d)]
        assert len(set(qids)) == len(qids)
        assert all(0 <= q < 1 << 64 for q in qids)
        for name, node in (("a", a), ("b", b), ("d", d), ("s", s)):
            again = vol.backend.lookup(vol.root, name)
            assert again.qid_path == node.qid_path
            assert vol.backend.getattr(again).qid_path == node.qid_path
            again.close()
        vol.backend.link(vol.root, "hard", a)
        hard = vol.backend.lookup(vol.root, "hard")
        assert hard.qid_path == a.qid_path
        file = vol.backend.open(vol.root, os.O_RDONLY)
        by_name = {e.name: e for e in vol.listing(file, 100)}
        file.close()
        for name, node in (("a", a), ("b", b), ("d", d), ("s", s), ("hard", a)):
            assert by_name[name].qid_path == node.qid_path

    # -- create, open, read, write --------------------------------------------------------------

    def test_create(self, vol: Vol) -> None:
        node, file = vol.backend.create(vol.root, "new", os.O_RDWR, 0o600)
        assert node.file_type == stat.S_IFREG
        assert vol.backend.write(file, 0, memoryview(b"hello")) == 5
        buf = bytearray(16)
        assert vol.backend.read(file, 0, memoryview(buf)) == 5
        assert buf[:5] == b"hello"
        file.close()
        assert vol.host.host_read(vol.rel("new")) == b"hello"
        assert _perm(vol.backend.getattr(node).mode) & ~0o600 == 0
        assert vol.backend.lookup(vol.root, "new").qid_path == node.qid_path

    def test_create_eexist(self, vol: Vol) -> None:
        vol.mkfile(vol.root, "f", b"keep")
        vol.backend.mkdir(vol.root, "d", 0o755)
        vol.backend.symlink(vol.root, "dangling", "nowhere")
        for name in ("f", "d", "dangling"):
            with raises_errno(errno.EEXIST):
                vol.backend.create(vol.root, name, os.O_RDWR | os.O_TRUNC, 0o644)
        assert vol.host.host_read(vol.rel("f")) == b"keep"
        assert not vol.host.host_exists(vol.rel("nowhere"))

    def test_create_ignores_creation_flags_in_open(self, vol: Vol) -> None:
        node = vol.mkfile(vol.root, "f", b"abc")
        file = vol.backend.open(node, os.O_RDONLY | os.O_CREAT | os.O_EXCL)
        buf = bytearray(8)
        assert vol.backend.read(file, 0, memoryview(buf)) == 3
        file.close()

    def test_open_access_modes(self, vol: Vol) -> None:
        node = vol.mkfile(vol.root, "f", b"abcdef")
        buf = memoryview(bytearray(4))
        ro = vol.backend.open(node, os.O_RDONLY)
        with raises_errno(errno.EBADF):
            vol.backend.write(ro, 0, memoryview(b"x"))
        ro.close()
        wo = vol.backend.open(node, os.O_WRONLY)
        with raises_errno(errno.EBADF):
            vol.backend.read(wo, 0, buf)
        assert vol.backend.write(wo, 2, memoryview(b"XY")) == 2
        wo.close()
        assert vol.read_all(node) == b"abXYef"

    def test_open_trunc_and_append(self, vol: Vol) -> None:
        node = vol.mkfile(vol.root, "f", b"abcdef")
        vol.backend.open(node, os.O_WRONLY | os.O_TRUNC).close()
        assert vol.backend.getattr(node).size == 0
        vol.host.host_write(vol.rel("f"), b"abc")
        app = vol.backend.open(node, os.O_WRONLY | os.O_APPEND)
        assert vol.backend.write(app, 0, memoryview(b"12")) == 2
        assert vol.backend.write(app, 0, memoryview(b"34")) == 2
        app.close()
        assert vol.read_all(node) == b"abc1234"

    def test_fallocate(self, vol: Vol) -> None:
        """fallocate(2)'s modes as Linux has them: allocate (the size grows unless
        keep_size), punch a hole (keep_size only), zero a range (the size grows unless
        keep_size); the refusals of Linux's vfs_fallocate."""
        be = vol.backend
        node = vol.mkfile(vol.root, "f", b"x" * 8192)
        file = be.open(node, os.O_RDWR)
        try:
            be.fallocate(file, 0, 16384)
            assert be.getattr(node).size == 16384
            be.fallocate(file, 16384, 65536, keep_size=True)
            assert be.getattr(node).size == 16384
            be.fallocate(file, 0, 4096, keep_size=True, punch_hole=True)
            be.fallocate(file, 4096, 100, keep_size=True, zero_range=True)
            be.fallocate(file, 16000, 1000, zero_range=True)
            assert be.getattr(node).size == 17000
            with raises_errno(errno.EOPNOTSUPP):
                be.fallocate(file, 0, 10, punch_hole=True)  # without keep_size
            with raises_errno(errno.EOPNOTSUPP):
                be.fallocate(file, 0, 10, keep_size=True, punch_hole=True, zero_range=True)
            for offset, length in ((-1, 10), (0, 0), (0, -5)):
                with raises_errno(errno.EINVAL):
                    be.fallocate(file, offset, length)
            with raises_errno(errno.EFBIG):
                be.fallocate(file, (1 << 63) - 5, 10)
        finally:
            file.close()
        assert vol.read_all(node) == bytes(4196) + b"x" * (8192 - 4196) + bytes(17000 - 8192)
        ro = be.open(node, os.O_RDONLY)
        with raises_errno(errno.EBADF):
            be.fallocate(ro, 0, 10)
        ro.close()
        directory = be.open(vol.root, os.O_RDONLY)
        with raises_errno(errno.EISDIR):
            be.fallocate(directory, 0, 10)
        directory.close()

    def test_open_directory(self, vol: Vol) -> None:
        d = vol.backend.mkdir(vol.root, "d", 0o755)
        file = vol.backend.open(d, os.O_RDONLY)
        with raises_errno(errno.EISDIR):
            vol.backend.read(file, 0, memoryview(bytearray(10)))
        file.close()
        for flags in (os.O_WRONLY, os.O_RDWR):
            with raises_errno(errno.EISDIR):
                vol.backend.open(d, flags)

    def test_open_symlink_eloop(self, vol: Vol) -> None:
        vol.mkfile(vol.root, "target", b"t")
        link = vol.backend.symlink(vol.root, "link", "target")
        for flags in (os.O_RDONLY, os.O_WRONLY, os.O_RDWR, os.O_RDWR | os.O_TRUNC):
            with raises_errno(errno.ELOOP):
                vol.backend.open(link, flags)
        assert vol.host.host_read(vol.rel("target")) == b"t"

    def test_read_write_offsets(self, vol: Vol) -> None:
        node, file = vol.backend.create(vol.root, "f", os.O_RDWR, 0o644)
        assert vol.backend.write(file, 10, memoryview(b"xyz")) == 3
        buf = bytearray(100)
        assert vol.backend.read(file, 0, memoryview(buf)) == 13
        assert bytes(buf[:13]) == b"\0" * 10 + b"xyz"
        assert vol.backend.read(file, 11, memoryview(buf)) == 2
        assert vol.backend.read(file, 13, memoryview(buf)) == 0  # at EOF
        assert vol.backend.read(file, 1000, memoryview(buf)) == 0  # past EOF
        assert vol.backend.read(file, 0, memoryview(bytearray(0))) == 0
        assert vol.backend.write(file, 0, memoryview(b"")) == 0
        small = bytearray(2)
        assert vol.backend.read(file, 10, memoryview(small)) == 2
        assert small == b"xy"
        # the buffer is filled in place (a slice of a larger buffer works)
        big = bytearray(b"-" * 8)
        assert vol.backend.read(file, 10, memoryview(big)[2:5]) == 3
        assert big == b"--xyz---"
        file.close()
        node.close()

    def test_beyond_4gib_sparse(self, vol: Vol) -> None:
        offset = 5 * 2**30 + 123
        node, file = vol.backend.create(vol.root, "sparse", os.O_RDWR, 0o644)
        assert vol.backend.write(file, offset, memoryview(b"far")) == 3
        attr = vol.backend.getattr(node)
        assert attr.size == offset + 3
        assert attr.blocks * 512 < 2**30, "expected a sparse file"
        buf = bytearray(16)
        assert vol.backend.read(file, offset, memoryview(buf)) == 3
        assert buf[:3] == b"far"
        assert vol.backend.read(file, offset + 3, memoryview(buf)) == 0
        assert vol.backend.read(file, 2**33, memoryview(buf)) == 0
        assert vol.backend.read(file, 2**32, memoryview(buf)) == 16
        assert buf == bytes(16)  # a hole reads as zeros
        file.close()

    def test_read_after_unlink(self, vol: Vol) -> None:
        node = vol.mkfile(vol.root, "f", b"still here")
        file = vol.backend.open(node, os.O_RDONLY)
        vol.backend.unlink(vol.root, "f", rmdir=False)
        buf = bytearray(32)
        assert vol.backend.read(file, 0, memoryview(buf)) == 10
        assert vol.backend.getattr(node).nlink == 0
        file.close()

    def test_node_follows_inode_across_rename(self, vol: Vol) -> None:
        d = vol.backend.mkdir(vol.root, "d", 0o755)
        node = vol.mkfile(vol.root, "f", b"content")
        vol.backend.rename(vol.root, "f", d, "g")
        assert vol.read_all(node) == b"content"
        assert vol.backend.lookup(d, "g").qid_path == node.qid_path
        vol.host.host_rename(vol.rel("d"), vol.rel("e"))
        assert vol.backend.lookup(d, "g").qid_path == node.qid_path

    def test_fsync(self, vol: Vol) -> None:
        node, file = vol.backend.create(vol.root, "f", os.O_RDWR, 0o644)
        vol.backend.write(file, 0, memoryview(b"durable"))
        vol.backend.fsync(file, datasync=False)
        vol.backend.fsync(file, datasync=True)
        file.close()
        dfile = vol.backend.open(vol.root, os.O_RDONLY)
        vol.backend.fsync(dfile, datasync=False)
        vol.backend.fsync(dfile, datasync=True)
        dfile.close()
        assert vol.read_all(node) == b"durable"

    # -- setattr ----------------------------------------------------------------------------

    def test_setattr_mode(self, vol: Vol) -> None:
        f = vol.mkfile(vol.root, "f")
        d = vol.backend.mkdir(vol.root, "d", 0o755)
        for mode in (0o600, 0o755, 0o000, 0o4755, 0o2750, 0o6711):  # set-id bits: gateway policy
            vol.backend.setattr(f, mode=mode)
            attr = vol.backend.getattr(f)
            assert stat.S_ISREG(attr.mode)
            assert _perm(attr.mode) == mode
        for mode in (0o1777, 0o700, 0o2775):
            vol.backend.setattr(d, mode=mode)
            attr = vol.backend.getattr(d)
            assert stat.S_ISDIR(attr.mode)
            assert _perm(attr.mode) == mode

    def test_setattr_owner(self, vol: Vol) -> None:
        f = vol.mkfile(vol.root, "f")
        attr = vol.backend.getattr(f)
        vol.backend.setattr(f, uid=attr.uid, gid=attr.gid)  # to itself: always allowed
        if os.geteuid() != 0:
            pytest.skip("changing owners needs root")
        vol.backend.setattr(f, uid=12345)
        attr = vol.backend.getattr(f)
        assert (attr.uid, attr.gid) == (12345, attr.gid)
        vol.backend.setattr(f, gid=23456)
        assert vol.backend.getattr(f).gid == 23456
        vol.backend.setattr(f, uid=0, gid=0)
        attr = vol.backend.getattr(f)
        assert (attr.uid, attr.gid) == (0, 0)
        link = vol.backend.symlink(vol.root, "link", "f")
        vol.backend.setattr(link, uid=4242, gid=4343)
        link_attr = vol.backend.getattr(link)
        assert (link_attr.uid, link_attr.gid) == (4242, 4343)
        attr = vol.backend.getattr(f)
        assert (attr.uid, attr.gid) == (0, 0)  # the target is untouched

    def test_setattr_owner_keeps_requested_setid_bits(self, vol: Vol) -> None:
        if os.geteuid() != 0:
            pytest.skip("changing owners needs root")
        f = vol.mkfile(vol.root, "f")
        vol.backend.setattr(f, mode=0o6755, uid=12345, gid=23456)
        attr = vol.backend.getattr(f)
        assert (_perm(attr.mode), attr.uid, attr.gid) == (0o6755, 12345, 23456)

    def test_setattr_all_at_once(self, vol: Vol) -> None:
        """Owner, mode, size and times in one call, as a client merges them: each applied,
        set-id bits kept after the owner changes, the times last (a truncation moves the
        mtime), with a size and without."""
        root = os.geteuid() == 0
        f = vol.mkfile(vol.root, "f", b"0123456789")
        owner = {"uid": 12345, "gid": 23456} if root else {}
        mode = 0o6750 if root else 0o750
        vol.backend.setattr(f, mode=mode, size=4, atime_ns=1_000_000_123, mtime_ns=2_000_000_456,
                            **owner)  # fmt: skip
        attr = vol.backend.getattr(f)
        assert (_perm(attr.mode), attr.size) == (mode, 4)
        assert (attr.atime_ns, attr.mtime_ns) == (1_000_000_123, 2_000_000_456)
        if root:
            assert (attr.uid, attr.gid) == (12345, 23456)
        owner = {"uid": 0, "gid": 0} if root else {}
        mode = 0o4711 if root else 0o711
        vol.backend.setattr(f, mode=mode, atime_ns=3_000_000_007, mtime_ns=4_000_000_009, **owner)
        attr = vol.backend.getattr(f)
        assert (_perm(attr.mode), attr.size) == (mode, 4)
        assert (attr.atime_ns, attr.mtime_ns) == (3_000_000_007, 4_000_000_009)
        if root:
            assert (attr.uid, attr.gid) == (0, 0)

    def test_setattr_size(self, vol: Vol) -> None:
        f = vol.mkfile(vol.root, "f", b"0123456789")
        vol.backend.setattr(f, size=4)
        assert vol.read_all(f) == b"0123"
        vol.backend.setattr(f, size=8)
        assert vol.read_all(f) == b"0123" + b"\0" * 4
        vol.backend.setattr(f, size=0)
        assert vol.backend.getattr(f).size == 0
        d = vol.backend.mkdir(vol.root, "d", 0o755)
        with raises_errno(errno.EISDIR):
            vol.backend.setattr(d, size=0)

    def test_setattr_times(self, vol: Vol) -> None:
        f = vol.mkfile(vol.root, "f", b"x")
        vol.backend.setattr(f, atime_ns=1_000_000_123, mtime_ns=2_000_000_456)
        attr = vol.backend.getattr(f)
        assert (attr.atime_ns, attr.mtime_ns) == (1_000_000_123, 2_000_000_456)
        vol.backend.setattr(f, atime_ns=3_000_000_000)
        attr = vol.backend.getattr(f)
        assert (attr.atime_ns, attr.mtime_ns) == (3_000_000_000, 2_000_000_456)
        vol.backend.setattr(f, mtime_ns=1_700_000_000_999_999_999)
        attr = vol.backend.getattr(f)
        assert (attr.atime_ns, attr.mtime_ns) == (3_000_000_000, 1_700_000_000_999_999_999)

    def test_setattr_time_now(self, vol: Vol) -> None:
        f = vol.mkfile(vol.root, "f", b"x")
        vol.backend.setattr(f, atime_ns=1_000_000_000, mtime_ns=1_000_000_000)
        before = time.time_ns()
        vol.backend.setattr(f, mtime_ns=TIME_NOW)
        after = time.time_ns()
        attr = vol.backend.getattr(f)
        slack = 2_000_000_000  # coarse file system clocks lag the wall clock a little
        assert before - slack <= attr.mtime_ns <= after + slack
        assert attr.atime_ns == 1_000_000_000
        vol.backend.setattr(f, atime_ns=TIME_NOW, mtime_ns=5_000_000_000)
        attr = vol.backend.getattr(f)
        assert before - slack <= attr.atime_ns <= time.time_ns() + slack
        assert attr.mtime_ns == 5_000_000_000

    def test_setattr_nothing(self, vol: Vol) -> None:
        f = vol.mkfile(vol.root, "f", b"abc", 0o640)
        before = vol.backend.getattr(f)
        vol.backend.setattr(f)
        after = vol.backend.getattr(f)
        assert (after.mode, after.size, after.mtime_ns, after.uid, after.gid) == (
            before.mode,
            before.size,
            before.mtime_ns,
            before.uid,
            before.gid,
        )

    def test_setattr_symlink(self, vol: Vol) -> None:
        f = vol.mkfile(vol.root, "f", b"abc")
        vol.backend.setattr(f, mtime_ns=7_000_000_000)
        link = vol.backend.symlink(vol.root, "link", "f")
        with pytest.raises(OSError):
            vol.backend.setattr(link, mode=0o600)
        with pytest.raises(OSError):
            vol.backend.setattr(link, size=0)
        vol.backend.setattr(link, mtime_ns=9_000_000_000)
        assert vol.backend.getattr(link).mtime_ns == 9_000_000_000
        attr = vol.backend.getattr(f)
        assert (attr.size, attr.mtime_ns) == (3, 7_000_000_000)

    # -- names ------------------------------------------------------------------------------

    def test_mkdir(self, vol: Vol) -> None:
        d = vol.backend.mkdir(vol.root, "d", 0o750)
        assert d.is_dir
        attr = vol.backend.getattr(d)
        assert stat.S_ISDIR(attr.mode) and _perm(attr.mode) & ~0o750 == 0
        assert vol.backend.lookup(vol.root, "d").qid_path == d.qid_path
        sub = vol.backend.mkdir(d, "sub", 0o755)
        assert vol.backend.lookup(d, "sub").qid_path == sub.qid_path
        vol.mkfile(vol.root, "f")
        for name in ("d", "f"):
            with raises_errno(errno.EEXIST):
                vol.backend.mkdir(vol.root, name, 0o755)
        with raises_errno(errno.ENOTDIR):
            vol.backend.mkdir(vol.backend.lookup(vol.root, "f"), "x", 0o755)

    def test_symlink_readlink(self, vol: Vol) -> None:
        targets = {
            "plain": "plain",
            "abs": "/etc/passwd",
            "up": "../../../../x",
            "long": "a/" * 500 + "z",
            "dangling": "no/such/thing",
            "spaces": "with space and ünïcödé",
            "raw": "bad-\udcff-utf8",  # not UTF-8 on disk: surrogate escapes round-trip
        }
        for name, target in targets.items():
            node = vol.backend.symlink(vol.root, name, target)
            assert node.is_symlink
            assert stat.S_ISLNK(vol.backend.getattr(node).mode)
            assert vol.backend.readlink(node) == target
            again = vol.backend.lookup(vol.root, name)
            assert again.is_symlink and again.qid_path == node.qid_path
            assert vol.backend.readlink(again) == target
        with raises_errno(errno.EEXIST):
            vol.backend.symlink(vol.root, "plain", "other")
        with raises_errno(errno.EINVAL):
            vol.backend.readlink(vol.mkfile(vol.root, "f"))
        with raises_errno(errno.EINVAL):
            vol.backend.readlink(vol.root)

    def test_mknod(self, vol: Vol) -> None:
        fifo = vol.backend.mknod(vol.root, "fifo", stat.S_IFIFO | 0o640, 0)
        assert fifo.file_type == stat.S_IFIFO
        attr = vol.backend.getattr(fifo)
        assert stat.S_ISFIFO(attr.mode) and _perm(attr.mode) & ~0o640 == 0
        assert vol.backend.lookup(vol.root, "fifo").qid_path == fifo.qid_path
        sock = vol.backend.mknod(vol.root, "sock", stat.S_IFSOCK | 0o600, 0)
        assert sock.file_type == stat.S_IFSOCK
        for node in (fifo, sock):
            for flags in (os.O_RDONLY, os.O_WRONLY, os.O_RDWR):
                with raises_errno(errno.EPERM, errno.ENXIO):
                    vol.backend.open(node, flags)
        with raises_errno(errno.EEXIST):
            vol.backend.mknod(vol.root, "fifo", stat.S_IFIFO | 0o600, 0)

    def test_mknod_devices_refused(self, vol: Vol) -> None:
        for kind, rdev in ((stat.S_IFCHR, os.makedev(1, 3)), (stat.S_IFBLK, os.makedev(7, 0))):
            for perm in (0o666, 0o600, 0o4777):
                with raises_errno(errno.EPERM):
                    vol.backend.mknod(vol.root, "dev", kind | perm, rdev)
            with raises_errno(errno.ENOENT):
                vol.backend.lookup(vol.root, "dev")
        assert not vol.host.host_exists(vol.rel("dev"))

    def test_link(self, vol: Vol) -> None:
        a = vol.mkfile(vol.root, "a", b"shared")
        d = vol.backend.mkdir(vol.root, "d", 0o755)
        vol.backend.link(d, "b", a)
        b = vol.backend.lookup(d, "b")
        assert b.qid_path == a.qid_path
        assert vol.backend.getattr(a).nlink == 2
        assert vol.backend.getattr(b).nlink == 2
        assert vol.read_all(b) == b"shared"
        with raises_errno(errno.EEXIST):
            vol.backend.link(vol.root, "a", a)
        with raises_errno(errno.EPERM):
            vol.backend.link(vol.root, "dirlink", d)
        vol.backend.unlink(vol.root, "a", rmdir=False)
        assert vol.backend.getattr(b).nlink == 1

    def test_rename(self, vol: Vol) -> None:
        a = vol.mkfile(vol.root, "a", b"A")
        vol.mkfile(vol.root, "b", b"B")
        vol.backend.rename(vol.root, "a", vol.root, "b")  # over an existing file
        with raises_errno(errno.ENOENT):
            vol.backend.lookup(vol.root, "a")
        b = vol.backend.lookup(vol.root, "b")
        assert b.qid_path == a.qid_path
        assert vol.read_all(b) == b"A"
        d1 = vol.backend.mkdir(vol.root, "d1", 0o755)
        d2 = vol.backend.mkdir(vol.root, "d2", 0o755)
        vol.backend.rename(vol.root, "b", d1, "x")  # across directories
        vol.backend.rename(d1, "x", d2, "y")
        assert vol.backend.lookup(d2, "y").qid_path == a.qid_path
        assert vol.host.host_read(vol.rel("d2", "y")) == b"A"
        with raises_errno(errno.ENOENT):
            vol.backend.rename(vol.root, "missing", vol.root, "z")

    def test_rename_errors(self, vol: Vol) -> None:
        d1 = vol.backend.mkdir(vol.root, "d1", 0o755)
        vol.backend.mkdir(vol.root, "d2", 0o755)
        vol.backend.mkdir(vol.root, "empty", 0o755)
        vol.mkfile(d1, "f")
        vol.mkfile(vol.root, "file")
        with raises_errno(errno.ENOTEMPTY, errno.EEXIST):
            vol.backend.rename(vol.root, "d2", vol.root, "d1")
        with raises_errno(errno.EISDIR):
            vol.backend.rename(vol.root, "file", vol.root, "d2")
        with raises_errno(errno.ENOTDIR):
            vol.backend.rename(vol.root, "d2", vol.root, "file")
        with raises_errno(errno.EINVAL):
            vol.backend.rename(vol.root, "d1", d1, "inside-itself")
        vol.backend.rename(vol.root, "d2", vol.root, "empty")  # a dir over an empty dir
        assert vol.backend.lookup(vol.root, "empty").is_dir

    def test_unlink(self, vol: Vol) -> None:
        vol.mkfile(vol.root, "f")
        d = vol.backend.mkdir(vol.root, "d", 0o755)
        vol.mkfile(d, "inner")
        vol.backend.mkdir(vol.root, "empty", 0o755)
        with raises_errno(errno.EISDIR):
            vol.backend.unlink(vol.root, "d", rmdir=False)
        with raises_errno(errno.ENOTDIR):
            vol.backend.unlink(vol.root, "f", rmdir=True)
        with raises_errno(errno.ENOTEMPTY, errno.EEXIST):
            vol.backend.unlink(vol.root, "d", rmdir=True)
        with raises_errno(errno.ENOENT):
            vol.backend.unlink(vol.root, "missing", rmdir=False)
        with raises_errno(errno.ENOENT):
            vol.backend.unlink(vol.root, "missing", rmdir=True)
        vol.backend.unlink(vol.root, "f", rmdir=False)
        vol.backend.unlink(vol.root, "empty", rmdir=True)
        vol.backend.unlink(d, "inner", rmdir=False)
        vol.backend.unlink(vol.root, "d", rmdir=True)
        for name in ("f", "empty", "d"):
            assert not vol.host.host_exists(vol.rel(name))
        vol.backend.symlink(vol.root, "link", ".")
        vol.backend.unlink(vol.root, "link", rmdir=False)  # removes the link, not "."
        assert vol.backend.getattr(vol.root).nlink >= 2

    def test_statfs(self, vol: Vol) -> None:
        for node in (vol.root, vol.mkfile(vol.root, "f")):
            st = vol.backend.statfs(node)
            assert st.bsize > 0
            assert st.blocks > 0
            assert 0 <= st.bfree <= st.blocks
            assert 0 <= st.bavail <= st.blocks
            assert 0 <= st.ffree <= st.files or st.files == 0
            assert st.namelen >= 255
            assert 0 <= st.fsid < 1 << 64
            assert st.fs_type >= 0

    # -- xattrs -----------------------------------------------------------------------------

    def test_xattrs(self, vol: Vol) -> None:
        for node in (vol.mkfile(vol.root, "f"), vol.backend.mkdir(vol.root, "d", 0o755)):
            with raises_errno(errno.ENODATA):
                vol.backend.getxattr(node, "user.vshare.a")
            vol.backend.setxattr(node, "user.vshare.a", b"one", 0)
            assert vol.backend.getxattr(node, "user.vshare.a") == b"one"
            with raises_errno(errno.EEXIST):
                vol.backend.setxattr(node, "user.vshare.a", b"two", os.XATTR_CREATE)
            with raises_errno(errno.ENODATA):
                vol.backend.setxattr(node, "user.vshare.b", b"two", os.XATTR_REPLACE)
            vol.backend.setxattr(node, "user.vshare.a", b"three", os.XATTR_REPLACE)
            vol.backend.setxattr(node, "user.vshare.b", b"\0bin\xff\0", os.XATTR_CREATE)
            vol.backend.setxattr(node, "user.vshare.empty", b"", 0)
            vol.backend.setxattr(node, "user.vshare.big", bytes(range(256)) * 8, 0)
            assert vol.backend.getxattr(node, "user.vshare.a") == b"three"
            assert vol.backend.getxattr(node, "user.vshare.b") == b"\0bin\xff\0"
            assert vol.backend.getxattr(node, "user.vshare.empty") == b""
            assert vol.backend.getxattr(node, "user.vshare.big") == bytes(range(256)) * 8
            names = set(vol.backend.listxattr(node))
            assert {"user.vshare.a", "user.vshare.b", "user.vshare.empty"} <= names
            vol.backend.removexattr(node, "user.vshare.a")
            with raises_errno(errno.ENODATA):
                vol.backend.getxattr(node, "user.vshare.a")
            with raises_errno(errno.ENODATA):
                vol.backend.removexattr(node, "user.vshare.a")
            assert "user.vshare.a" not in vol.backend.listxattr(node)

    # -- readdir ----------------------------------------------------------------------------

    def _populate(self, vol: Vol, parent: Node, count: int, prefix: str = "e") -> set[str]:
        names = {f"{prefix}{i:04d}" for i in range(count)}
        for name in names:
            vol.mkfile(parent, name).close()
        return names

    def test_readdir_batches(self, vol: Vol) -> None:
        d = vol.backend.mkdir(vol.root, "d", 0o755)
        names = self._populate(vol, d, 40)
        vol.backend.mkdir(d, "sub", 0o755).close()
        vol.backend.symlink(d, "sym", "e0000").close()
        expected = sorted([*names, "sub", "sym", ".", ".."])
        file = vol.backend.open(d, os.O_RDONLY)
        for batch in (1, 2, 3, 7, 64, 10_000):
            entries = vol.listing(file, batch)
            assert sorted(e.name for e in entries) == expected, f"batch {batch}"
        by_name = {e.name: e for e in vol.listing(file, 5)}
        assert by_name["."].file_type in (0, stat.S_IFDIR)
        assert by_name[".."].file_type in (0, stat.S_IFDIR)
        assert by_name["sub"].file_type in (0, stat.S_IFDIR)
        assert by_name["sym"].file_type in (0, stat.S_IFLNK)
        assert by_name["e0007"].file_type in (0, stat.S_IFREG)
        file.close()

    def test_readdir_resume_from_every_cookie(self, vol: Vol) -> None:
        d = vol.backend.mkdir(vol.root, "d", 0o755)
        self._populate(vol, d, 30)
        file = vol.backend.open(d, os.O_RDONLY)
        entries = vol.listing(file, 4)
        assert len(entries) == 32
        names = [e.name for e in entries]
        for i, entry in enumerate(entries):
            rest = [e.name for e in vol.listing(file, 1000, cookie=entry.cookie)]
            assert rest == names[i + 1 :], f"resuming after {entry.name!r}"
        assert vol.backend.readdir(file, entries[-1].cookie, 10) == ([], True)
        # starting over from 0 gives the same listing again
        assert [e.name for e in vol.listing(file, 1000)] == names
        file.close()

    def test_readdir_tells_the_end(self, vol: Vol) -> None:
        """A listing says whether it reaches the directory's end, so that nobody asks again
        to learn it: never when entries follow, and always when it comes up empty."""
        d = vol.backend.mkdir(vol.root, "d", 0o755)
        self._populate(vol, d, 10)
        file = vol.backend.open(d, os.O_RDONLY)
        try:
            some = vol.backend.readdir(file, 0, 5)
            assert len(some.entries) == 5 and not some.end
            attrs = vol.backend.readdir_attrs(d, file, 0, 5)
            assert len(attrs.entries) == 5 and not attrs.end
            everything = vol.backend.readdir(file, 0, 1000)
            assert len(everything.entries) == 12
            last = everything.entries[-1].cookie
            assert vol.backend.readdir(file, last, 10) == ([], True)
            assert vol.backend.readdir_attrs(d, file, last, 10) == ([], True)
            # The real backends see the end when they reach it within the call.
            assert everything.end
            assert vol.backend.readdir_attrs(d, file, 0, 1000).end
        finally:
            file.close()

    def test_readdir_1000(self, vol: Vol) -> None:
        d = vol.backend.mkdir(vol.root, "big", 0o755)
        names = self._populate(vol, d, 1000, prefix="file-with-a-longer-name-")
        file = vol.backend.open(d, os.O_RDONLY)
        for batch in (1000, 64, 9):
            listed = [e.name for e in vol.listing(file, batch)]
            assert len(listed) == 1002
            assert set(listed) == {*names, ".", ".."}
        file.close()

    def test_readdir_attrs_are_what_lookup_and_getattr_give(self, vol: Vol) -> None:
        """readdir_attrs (what Treaddirplus answers from): each entry's attributes, the
        same as a lookup of its name would give, from any cookie; none for . and .."""
        d = vol.backend.mkdir(vol.root, "d", 0o755)
        names = self._populate(vol, d, 12)
        vol.backend.mkdir(d, "sub", 0o700).close()
        vol.backend.symlink(d, "sym", "../../../etc/passwd").close()
        file = vol.backend.open(d, os.O_RDONLY)
        listed = vol.backend.readdir_attrs(d, file, 0, 1000).entries
        assert sorted(e.name for e, _ in listed) == sorted([*names, "sub", "sym", ".", ".."])
        for entry, attr in listed:
            if entry.name in (".", ".."):
                assert attr is None
                continue
            assert attr is not None, entry.name
            node = vol.backend.lookup(d, entry.name)
            want = vol.backend.getattr(node)
            node.close()
            assert attr.qid_path == want.qid_path == entry.qid_path, entry.name
            assert (attr.mode, attr.size, attr.nlink, attr.mtime_ns) == (
                want.mode, want.size, want.nlink, want.mtime_ns,
            ), entry.name  # fmt: skip
        by_name = {e.name: a for e, a in listed}
        assert stat.S_ISLNK(by_name["sym"].mode)  # type: ignore[union-attr]  # not followed
        assert stat.S_IMODE(by_name["sub"].mode) == 0o700  # type: ignore[union-attr]
        cookie = listed[5][0].cookie
        rest = vol.backend.readdir_attrs(d, file, cookie, 1000).entries
        assert [e.name for e, _ in rest] == [e.name for e, _ in listed[6:]]
        assert vol.backend.readdir_attrs(d, file, listed[-1][0].cookie, 10) == ([], True)
        file.close()

    def test_getattr_at_is_lookup_and_getattr(self, vol: Vol) -> None:
        d = vol.backend.mkdir(vol.root, "d", 0o755)
        _, f = vol.backend.create(d, "f", os.O_RDWR, 0o640)
        f.close()
        vol.backend.symlink(d, "sym", "../../../etc/passwd").close()
        for name in ("f", "sym"):
            node = vol.backend.lookup(d, name)
            want = vol.backend.getattr(node)
            node.close()
            assert vol.backend.getattr_at(d, name) == want, name
        assert stat.S_ISLNK(vol.backend.getattr_at(d, "sym").mode)  # not followed
        with raises_errno(errno.ENOENT):
            vol.backend.getattr_at(d, "missing")
        file = vol.backend.lookup(d, "f")
        with raises_errno(errno.ENOTDIR):
            vol.backend.getattr_at(file, "x")
        file.close()

    def test_readdir_errors(self, vol: Vol) -> None:
        _, file = vol.backend.create(vol.root, "f", os.O_RDWR, 0o644)
        with raises_errno(errno.ENOTDIR):
            vol.backend.readdir(file, 0, 10)
        file.close()

    def test_readdir_during_changes(self, vol: Vol) -> None:
        """A listing while entries come and go never raises and never repeats a name; the
        entries that stay are each listed exactly once."""
        d = vol.backend.mkdir(vol.root, "d", 0o755)
        stable = self._populate(vol, d, 100, prefix="stable-")
        stop = threading.Event()
        errors: list[str] = []

        def churn() -> None:
            try:
                live: list[str] = []
                for i in range(1_000_000):
                    if stop.is_set():
                        return
                    name = f"tmp-{i}"
                    vol.mkfile(d, name).close()
                    live.append(name)
                    if len(live) > 20:
                        vol.backend.unlink(d, live.pop(0), rmdir=False)
            except BaseException:
                errors.append(traceback.format_exc())

        thread = threading.Thread(target=churn, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 1.0
            passes = 0
            while time.monotonic() < deadline or passes < 3:
                file = vol.backend.open(d, os.O_RDONLY)
                try:
                    names = [e.name for e in vol.listing(file, 7)]
                finally:
                    file.close()
                duplicates = {n for n in names if names.count(n) > 1}
                assert not duplicates, f"listed twice in one pass: {sorted(duplicates)}"
                missing = stable - set(names)
                assert not missing, f"stable entries missing: {sorted(missing)}"
                passes += 1
        finally:
            stop.set()
            thread.join(10)
        assert not errors, errors[0]

    def test_readdir_shared_open_file(self, vol: Vol) -> None:
        """Several threads list through the same OpenFile at once, each from its cookies."""
        d = vol.backend.mkdir(vol.root, "d", 0o755)
        expected = sorted([*self._populate(vol, d, 60), ".", ".."])
        file = vol.backend.open(d, os.O_RDONLY)
        errors: list[str] = []

        def worker(batch: int) -> None:
            try:
                for _ in range(25):
                    got = sorted(e.name for e in vol.listing(file, batch))
                    assert got == expected
            except BaseException:
                errors.append(traceback.format_exc())

        threads = [threading.Thread(target=worker, args=(b,)) for b in (1, 2, 3, 5, 8, 13)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        file.close()
        assert not errors, errors[0]

    def test_non_utf8_names(self, vol: Vol) -> None:
        name = "caf\udce9"  # b"caf\xe9": Latin-1, not UTF-8
        node = vol.mkfile(vol.root, name, b"latin")
        assert name in vol.names(vol.root)
        assert vol.backend.lookup(vol.root, name).qid_path == node.qid_path
        assert vol.read_all(vol.backend.lookup(vol.root, name)) == b"latin"

    # -- handles ----------------------------------------------------------------------------

    def test_clone_independence(self, vol: Vol) -> None:
        node = vol.mkfile(vol.root, "f", b"abc")
        copy = vol.backend.clone(node)
        assert copy.qid_path == node.qid_path and copy.file_type == node.file_type
        node.close()
        assert vol.read_all(copy) == b"abc"
        assert vol.backend.getattr(copy).size == 3
        copy2 = vol.backend.clone(copy)
        copy.close()
        assert vol.backend.getattr(copy2).qid_path == copy2.qid_path
        copy2.close()
        root2 = vol.backend.clone(vol.root)
        assert vol.backend.lookup(root2, "f").qid_path == copy2.qid_path
        root2.close()
        assert vol.backend.getattr(vol.root).qid_path == vol.root.qid_path

    def test_open_file_outlives_node(self, vol: Vol) -> None:
        node = vol.mkfile(vol.root, "f", b"abc")
        file = vol.backend.open(node, os.O_RDONLY)
        node.close()
        buf = bytearray(8)
        assert vol.backend.read(file, 0, memoryview(buf)) == 3
        file.close()

    def test_close_idempotent(self, vol: Vol, backend_factory: BackendFactory) -> None:
        node, file = vol.backend.create(vol.root, "f", os.O_RDWR, 0o644)
        file.close()
        file.close()
        node.close()
        node.close()
        dfile = vol.backend.open(vol.root, os.O_RDONLY)
        dfile.close()
        dfile.close()
        other = backend_factory()
        other_root = other.backend.open_root(other.share)
        other_root.close()
        other.backend.close()
        other.backend.close()
        other_root.close()

    def test_concurrent_use_of_one_node(self, vol: Vol) -> None:
        node = vol.mkfile(vol.root, "f", b"payload")
        errors: list[str] = []

        def worker() -> None:
            try:
                for _ in range(200):
                    found = vol.backend.lookup(vol.root, "f")
                    assert found.qid_path == node.qid_path
                    file = vol.backend.open(node, os.O_RDONLY)
                    buf = bytearray(16)
                    assert vol.backend.read(file, 0, memoryview(buf)) == 7
                    file.close()
                    assert vol.backend.getattr(node).size == 7
                    found.close()
            except BaseException:
                errors.append(traceback.format_exc())

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors[0]


# ---------------------------------------------------------------------------------------------
# The escape battery

INSIDE = b"inside the share"
BAD_NAMES: tuple[str, ...] = (
    "..",
    ".",
    "",
    "/",
    "a/b",
    "x\0y",
    "../outside-secret",
    "d/f",
    "d/..",
    "/etc",
)
_WALK_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP})


@dataclass
class Outside:
    """What the battery plants around the share, and the check that it stayed unchanged.

    Volume layout (``<parent>`` is the share's parent directory, maybe the volume root)::

        outside-secret                    SECRET
        outside-dir/f                     SECRET    (same name as the share's d/f)
        outside-dir/secret-only-name      SECRET
        <parent>/sibling-share/f          SECRET    (another share next to ours)
        <share>/d/f                       INSIDE
    """

    vol: Vol
    secret: bytes
    up: str  # "../" * depth: from the share root to the volume root
    sibling: str  # volume-relative path of the sibling share
    before: dict[str, tuple[object, ...]] = field(default_factory=dict)

    def snapshot(self) -> dict[str, tuple[object, ...]]:
        share = self.vol.share
        return {
            path: entry
            for path, entry in self.vol.host.host_snapshot().items()
            if path != share and not path.startswith(share + "/")
        }

    def remember(self) -> None:
        self.before = self.snapshot()

    def assert_untouched(self) -> None:
        after = self.snapshot()
        changed = sorted(
            path
            for path in self.before.keys() | after.keys()
            if self.before.get(path) != after.get(path)
        )
        assert not changed, f"changed outside the share: {changed}"

    def assert_clean(self, data: bytes | str | Sequence[object]) -> None:
        """``data`` (a read, a listing, a link target) holds nothing from outside."""
        if isinstance(data, bytes):
            assert self.secret not in data, "read the secret"
        elif isinstance(data, str):
            assert self.secret.decode() not in data and "secret-only-name" not in data
        else:
            for item in data:
                self.assert_clean(item if isinstance(item, (bytes, str)) else repr(item))


class EscapeBattery(_Suite):
    """Attempts to leave the share. Each test ends with :meth:`Outside.assert_untouched`."""

    #: How long the swap race runs (it runs longer, up to 5x, until both states were seen).
    swap_race_seconds: float = 2.0

    @pytest.fixture
    def outside(self, vol: Vol) -> Outside:
        secret = b"SECRET-" + uuid.uuid4().hex.encode()
        parent = posixpath.dirname(vol.share)
        host = vol.host
        host.host_write("outside-secret", secret)
        host.host_write("outside-dir/f", secret)
        host.host_write("outside-dir/secret-only-name", secret)
        sibling = posixpath.join(parent, "sibling-share")
        host.host_write(posixpath.join(sibling, "f"), secret)
        host.host_write(vol.rel("d", "f"), INSIDE)
        depth = len(vol.share.split("/"))
        out = Outside(vol, secret, "../" * depth, sibling)
        out.remember()
        return out

    def _outward_links(self, vol: Vol, out: Outside) -> dict[str, str]:
        """name → target of symlinks that would lead out of the share if followed."""
        return {
            "abs-file": vol.host.host_absolute("outside-secret"),
            "abs-dir": vol.host.host_absolute("outside-dir"),
            "rel-file": out.up + "outside-secret",
            "rel-dir": out.up + "outside-dir",
            "sibling": out.up + out.sibling,
            "sibling-file": out.up + posixpath.join(out.sibling, "f"),
            "slash": "/",
            "dotdot": "..",
            "dotdot-dotdot": "../..",
        }

    @staticmethod
    def _name_taking_calls(vol: Vol, file: Node, name: str) -> list[Callable[[], object]]:
        b = vol.backend
        return [
            lambda: b.lookup(vol.root, name),
            lambda: b.create(vol.root, name, os.O_RDWR, 0o644),
            lambda: b.mkdir(vol.root, name, 0o755),
            lambda: b.symlink(vol.root, name, "target"),
            lambda: b.mknod(vol.root, name, stat.S_IFIFO | 0o644, 0),
            lambda: b.link(vol.root, name, file),
            lambda: b.rename(vol.root, name, vol.root, "renamed"),
            lambda: b.rename(vol.root, "file", vol.root, name),
            lambda: b.unlink(vol.root, name, rmdir=False),
            lambda: b.unlink(vol.root, name, rmdir=True),
        ]

    def test_bad_names_rejected_everywhere(self, vol: Vol, outside: Outside) -> None:
        f = vol.mkfile(vol.root, "file", b"x")
        for name in BAD_NAMES:
            for call in self._name_taking_calls(vol, f, name):
                with raises_errno(errno.EINVAL):
                    call()
        assert vol.host.host_read(vol.rel("file")) == b"x"
        assert vol.host.host_read(vol.rel("d", "f")) == INSIDE
        assert sorted(vol.names(vol.root)) == [".", "..", "d", "file"]
        outside.assert_untouched()

    def test_open_root_stays_in_volume(self, vol: Vol, outside: Outside) -> None:
        b = vol.backend
        vol.host.host_symlink(vol.rel("to-outside"), outside.up + "outside-dir")
        vol.host.host_symlink(vol.rel("to-sibling"), outside.up + outside.sibling)
        vol.host.host_symlink(vol.rel("to-d"), "d")
        vol.host.host_symlink(vol.rel("to-abs"), vol.host.host_absolute("outside-dir"))
        base = posixpath.basename(vol.share)
        for path in (
            "..",
            "../x",
            "../" + vol.share,
            vol.rel(".."),
            vol.rel("..", base),
            vol.rel("..", "..", "outside-dir"),
            vol.rel(".", "d"),
            "/etc",
            "/outside-dir",
            vol.rel("x\0y"),
        ):
            with raises_errno(errno.EINVAL, errno.ENOENT):
                b.open_root(path)
        for name in ("to-outside", "to-sibling", "to-d", "to-abs"):
            with raises_errno(errno.ENOTDIR, errno.ELOOP):
                b.open_root(vol.rel(name))
            with raises_errno(errno.ENOTDIR, errno.ELOOP, errno.ENOENT):
                b.open_root(vol.rel(name, "f"))
        with raises_errno(errno.ENOTDIR):
            b.open_root(vol.rel("d", "f"))
        outside.assert_untouched()

    def test_symlinks_are_data(self, vol: Vol, outside: Outside) -> None:
        b = vol.backend
        links = self._outward_links(vol, outside)
        nodes: dict[str, Node] = {}
        for name, target in links.items():
            vol.host.host_symlink(vol.rel(name), target)  # planted by the host
            nodes[name] = b.lookup(vol.root, name)
            nodes["made-" + name] = b.symlink(vol.root, "made-" + name, target)  # by a guest
        for name, node in nodes.items():
            target = links[name.removeprefix("made-")]
            assert node.is_symlink, name
            assert stat.S_ISLNK(b.getattr(node).mode)
            assert b.readlink(node) == target
            for flags in (os.O_RDONLY, os.O_WRONLY, os.O_RDWR | os.O_TRUNC, os.O_APPEND):
                with raises_errno(errno.ELOOP):
                    b.open(node, flags)
            for child in ("f", "secret-only-name", "d"):
                with raises_errno(errno.ENOTDIR, errno.ELOOP):
                    b.lookup(node, child)
            with raises_errno(errno.ENOTDIR, errno.ELOOP):
                b.create(node, "planted", os.O_RDWR, 0o644)
            with raises_errno(errno.ENOTDIR, errno.ELOOP):
                b.mkdir(node, "planted", 0o755)
            with raises_errno(errno.ENOTDIR, errno.ELOOP):
                b.symlink(node, "planted", "x")
            with raises_errno(errno.ENOTDIR, errno.ELOOP):
                b.unlink(node, "f", rmdir=False)
            with raises_errno(errno.ENOTDIR, errno.ELOOP):
                b.rename(node, "f", vol.root, "stolen")
            outside.assert_clean(b.listxattr(node))
        assert not vol.host.host_exists(vol.rel("stolen"))
        outside.assert_untouched()

    def test_symlink_metadata_stays_on_the_link(self, vol: Vol, outside: Outside) -> None:
        b = vol.backend
        for name, target in self._outward_links(vol, outside).items():
            node = b.symlink(vol.root, name, target)
            b.setattr(node, atime_ns=1_000_000_000, mtime_ns=1_000_000_000)
            b.setattr(node, atime_ns=TIME_NOW, mtime_ns=TIME_NOW)
            with pytest.raises(OSError):
                b.setattr(node, mode=0o777)
            with pytest.raises(OSError):
                b.setattr(node, size=0)
            if os.geteuid() == 0:
                b.setattr(node, uid=4242, gid=4242)
                assert b.getattr(node).uid == 4242
            with contextlib.suppress(OSError):  # Linux: no user.* xattrs on symlinks (EPERM)
                b.setxattr(node, "user.vshare.escape", b"x", 0)
            with contextlib.suppress(OSError):
                outside.assert_clean([b.getxattr(node, "user.vshare.escape")])
            with contextlib.suppress(OSError):
                b.removexattr(node, "user.vshare.escape")
            outside.assert_clean(b.listxattr(node))
            # a hard link to a symlink node links the symlink, not its target
            b.link(vol.root, "hard-" + name, node)
            hard = b.lookup(vol.root, "hard-" + name)
            assert hard.is_symlink and hard.qid_path == node.qid_path
            assert b.readlink(hard) == target
        outside.assert_untouched()

    def test_directory_replaced_by_symlink(self, vol: Vol, outside: Outside) -> None:
        """A node keeps naming the directory it was found as; a new lookup sees the link."""
        b = vol.backend
        d = b.lookup(vol.root, "d")
        vol.host.host_rename(vol.rel("d"), vol.rel("d.moved"))
        vol.host.host_symlink(vol.rel("d"), outside.up + "outside-dir")
        data = vol.read_all(b.lookup(d, "f"))
        assert data == INSIDE
        outside.assert_clean(data)
        outside.assert_clean(vol.names(d))
        fresh = b.lookup(vol.root, "d")
        assert fresh.is_symlink
        with raises_errno(errno.ENOTDIR, errno.ELOOP):
            b.lookup(fresh, "f")
        with raises_errno(errno.ENOTDIR, errno.ELOOP):
            b.open_root(vol.rel("d"))
        outside.assert_untouched()

    def test_swap_race(self, vol: Vol, outside: Outside) -> None:
        """The host swaps ``d`` for a symlink to outside (relative, then absolute) in a tight
        loop while two threads walk into ``d`` and read ``d/f``: never the secret."""
        b = vol.backend
        host = vol.host
        host.host_symlink(vol.rel("d.rel"), outside.up + "outside-dir")
        host.host_symlink(vol.rel("d.abs"), host.host_absolute("outside-dir"))
        stop = threading.Event()
        errors: list[str] = []
        seen = {"dir": 0, "symlink": 0, "missing": 0, "open_root": 0}
        lock = threading.Lock()

        def count(key: str) -> None:
            with lock:
                seen[key] += 1

        def swapper() -> None:
            d, real = vol.rel("d"), vol.rel("d.real")
            try:
                while not stop.is_set():
                    for link in (vol.rel("d.rel"), vol.rel("d.abs")):
                        host.host_rename(d, real)
                        host.host_rename(link, d)
                        host.host_rename(d, link)
                        host.host_rename(real, d)
            except BaseException:
                errors.append(traceback.format_exc())

        def expect_walk_error(call: Callable[..., object], *args: object) -> None:
            try:
                call(*args)
            except OSError as e:
                if e.errno not in _WALK_ERRNOS:
                    raise
            else:
                raise AssertionError("walked through a symlink")

        def walker() -> None:
            try:
                while not stop.is_set():
                    try:
                        node = b.lookup(vol.root, "d")
                    except OSError as e:
                        if e.errno != errno.ENOENT:
                            raise
                        count("missing")
                        continue
                    try:
                        if node.is_symlink:
                            count("symlink")
                            outside.assert_clean(b.readlink(node))
                            expect_walk_error(b.open, node, os.O_RDONLY)
                            expect_walk_error(b.lookup, node, "f")
                        else:
                            assert node.is_dir
                            count("dir")
                            data = vol.read_all(b.lookup(node, "f"))
                            outside.assert_clean(data)
                            assert data == INSIDE
                            outside.assert_clean(vol.names(node, batch=2))
                    finally:
                        node.close()
                    try:
                        top = b.open_root(vol.rel("d"))
                    except OSError as e:
                        if e.errno not in _WALK_ERRNOS:
                            raise
                        continue
                    try:
                        count("open_root")
                        data = vol.read_all(b.lookup(top, "f"))
                        outside.assert_clean(data)
                        assert data == INSIDE
                    finally:
                        top.close()
            except BaseException:
                errors.append(traceback.format_exc())

        threads = [threading.Thread(target=swapper, daemon=True)]
        threads += [threading.Thread(target=walker, daemon=True) for _ in range(2)]
        for t in threads:
            t.start()
        start = time.monotonic()
        while True:
            time.sleep(0.05)
            elapsed = time.monotonic() - start
            if errors or elapsed > 5 * self.swap_race_seconds:
                break
            if elapsed > self.swap_race_seconds and seen["dir"] and seen["symlink"]:
                break
        stop.set()
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads)
        assert not errors, errors[0]
        assert seen["dir"] > 0 and seen["symlink"] > 0, seen
        assert host.host_read(vol.rel("d", "f")) == INSIDE
        outside.assert_untouched()

    def test_hardlink_planted_by_host(self, vol: Vol, outside: Outside) -> None:
        """A hard link the host made to a file outside is that file: the backend serves it
        as a regular file (nlink 2). The backend itself cannot make one: ``link`` takes a
        node, and every node comes from inside the share."""
        vol.host.host_write("outside-dir/shared-by-host", b"host-shared")
        vol.host.host_link("outside-dir/shared-by-host", vol.rel("planted"))
        outside.remember()
        node = vol.backend.lookup(vol.root, "planted")
        assert node.file_type == stat.S_IFREG
        assert vol.backend.getattr(node).nlink == 2
        assert vol.read_all(node) == b"host-shared"
        with raises_errno(errno.EINVAL):
            vol.backend.link(vol.root, "../outside-dir/x", node)
        outside.assert_untouched()

    def test_device_nodes_refused(self, vol: Vol, outside: Outside) -> None:
        d = vol.backend.lookup(vol.root, "d")
        for parent in (vol.root, d):
            for mode, rdev in (
                (stat.S_IFCHR | 0o666, os.makedev(1, 3)),  # /dev/null
                (stat.S_IFCHR | 0o600, os.makedev(1, 1)),  # /dev/mem
                (stat.S_IFBLK | 0o660, os.makedev(8, 0)),  # /dev/sda
                (stat.S_IFCHR | 0o6777, 0),
            ):
                with raises_errno(errno.EPERM):
                    vol.backend.mknod(parent, "dev", mode, rdev)
                with raises_errno(errno.ENOENT):
                    vol.backend.lookup(parent, "dev")
        outside.assert_untouched()

    def test_outside_names_not_visible(self, vol: Vol, outside: Outside) -> None:
        for name in ("outside-secret", "outside-dir", "sibling-share", "secret-only-name"):
            with raises_errno(errno.ENOENT):
                vol.backend.lookup(vol.root, name)
        outside.assert_clean(vol.names(vol.root))
        outside.assert_untouched()

    def test_hostile_numbers(self, vol: Vol, outside: Outside) -> None:
        b = vol.backend
        node, file = b.create(vol.root, "f", os.O_RDWR, 0o644)
        b.write(file, 0, memoryview(b"0123456789"))
        buf = memoryview(bytearray(64))
        try:
            n = b.read(file, 2**63 - 1, buf)
        except OSError as e:
            assert e.errno == errno.EINVAL
        else:
            assert n == 0
        for offset in (-1, -(2**63), 2**63, 2**64, 2**100):
            with pytest.raises(OSError):
                b.read(file, offset, buf)
        for offset in (-1, 2**63 - 1, 2**63, 2**64, 2**100):
            with pytest.raises(OSError):
                b.write(file, offset, memoryview(b"x"))
        for size in (-1, 2**63, 2**64, 2**100):
            with pytest.raises(OSError):
                b.setattr(node, size=size)
        for ns in (2**100, -(2**100)):
            with pytest.raises(OSError):
                b.setattr(node, mtime_ns=ns)
            with pytest.raises(OSError):
                b.setattr(node, atime_ns=ns)
        for ident in (-5, 2**32, 2**64):
            with pytest.raises(OSError):
                b.setattr(node, uid=ident)
            with pytest.raises(OSError):
                b.setattr(node, gid=ident)
        for mode in (-1, 0o10000, stat.S_IFCHR | 0o644, 2**40):
            with pytest.raises(OSError):
                b.setattr(node, mode=mode)
        with pytest.raises(OSError):
            b.setxattr(node, "user.vshare.x", b"v", 0x7FFF)
        for name in ("", "user.\0x", "user." + "x" * 100_000):
            with pytest.raises(OSError):
                b.getxattr(node, name)
            with pytest.raises(OSError):
                b.setxattr(node, name, b"v", 0)
        for target in ("x\0y", ""):
            with pytest.raises(OSError):
                b.symlink(vol.root, "bad-link", target)
        for name in ("n" * 256, "n" * 100_000):
            with raises_errno(errno.ENAMETOOLONG):
                b.lookup(vol.root, name)
            with raises_errno(errno.ENAMETOOLONG):
                b.create(vol.root, name, os.O_RDWR, 0o644)
        dfile = b.open(vol.root, os.O_RDONLY)
        for cookie in (-1, 2**64, 2**100):
            with pytest.raises(OSError):
                b.readdir(dfile, cookie, 10)
        for max_entries in (-1, -(2**63)):
            with pytest.raises(OSError):
                b.readdir(dfile, 0, max_entries)
        try:
            assert list(b.readdir(dfile, 0, 0).entries) == []
        except OSError as e:
            assert e.errno == errno.EINVAL
        names = [e.name for e in b.readdir(dfile, 0, 2**62).entries]
        assert sorted(names) == [".", "..", "d", "f"]
        dfile.close()
        assert b.getattr(node).size == 10
        file.close()
        outside.assert_untouched()
