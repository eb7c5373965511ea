"""The host side of a GlusterFS volume for the shared suites: a VolumeFixture through gfapi.

It acts through the process's one ``glfs`` of the volume with path-like walks from a
directory of the volume (``glfs_h_lookupat`` on a multi-component path, intermediate
symlinks followed and the last one not, as the POSIX calls of ``LocalVolumeFixture`` do).
This is the "host": trusted code that plants things around the share, bypassing the backend.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import stat
import time
from collections.abc import Iterator

from vshare.backend import _gfapi


class GfapiVolumeFixture:
    """:class:`~vshare.testing.backend_conformance.VolumeFixture` over gfapi.

    Args:
        fs: the ``glfs`` of the volume (kept alive by the caller).
        root: the directory of the GlusterFS volume that is the backend's volume root
            (``""`` for the volume's own root); host paths are relative to it.
        snapshot_skips: a name in ``root`` that :meth:`host_snapshot` leaves out.
    """

    def __init__(self, fs: int, root: str, *, snapshot_skips: str = "") -> None:
        self.fs = fs
        self.root = root.strip("/")
        self.snapshot_skips = snapshot_skips
        self.rename_retries = 0

    # -- walking -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _object(self, relpath: str, *, follow: bool) -> Iterator[tuple[int, _gfapi.Stat]]:
        path = "/" + posixpath.join(self.root, relpath) if (self.root or relpath) else "/"
        root, _ = _gfapi.h_lookupat_root(self.fs)
        try:
            if path.rstrip("/") == "":
                obj, st = _gfapi.object_copy(root), _gfapi.h_stat(self.fs, root)
            else:
                obj, st = _gfapi.h_lookupat(
                    self.fs, root, os.fsencode(path.lstrip("/")), follow=follow
                )
        finally:
            _gfapi.h_close(root)
        try:
            yield obj, st
        finally:
            _gfapi.h_close(obj)

    @contextlib.contextmanager
    def _parent(self, relpath: str) -> Iterator[tuple[int, bytes]]:
        parent, name = posixpath.split(relpath)
        with self._object(parent, follow=True) as (obj, _):
            yield obj, os.fsencode(name)

    def _read_fd(self, fd: int) -> bytes:
        out = bytearray()
        buf = bytearray(1 << 20)
        while True:
            n = _gfapi.pread(fd, memoryview(buf), len(out))
            if n == 0:
                return bytes(out)
            out += buf[:n]

    # -- the protocol --------------------------------------------------------------------------

    def host_write(self, relpath: str, data: bytes) -> None:
        self.host_mkdir(posixpath.dirname(relpath))
        with self._parent(relpath) as (parent, name):
            try:
                obj, _ = _gfapi.h_lookupat(self.fs, parent, name, follow=True)
                flags = os.O_WRONLY | os.O_TRUNC
            except OSError as e:
                if e.errno != errno.ENOENT:
                    raise
                obj, _ = _gfapi.h_creat(self.fs, parent, name, os.O_RDWR, 0o644)
                flags = os.O_WRONLY
        try:
            fd = _gfapi.h_open(self.fs, obj, flags)
            try:
                if data:
                    assert _gfapi.pwrite(fd, memoryview(data), 0) == len(data)
            finally:
                _gfapi.close(fd)
        finally:
            _gfapi.h_close(obj)

    def host_read(self, relpath: str) -> bytes:
        with self._object(relpath, follow=True) as (obj, _):
            fd = _gfapi.h_open(self.fs, obj, os.O_RDONLY)
            try:
                return self._read_fd(fd)
            finally:
                _gfapi.close(fd)

    def host_mkdir(self, relpath: str) -> None:
        done = ""
        for part in [p for p in relpath.split("/") if p]:
            with self._object(done, follow=True) as (parent, _):
                try:
                    obj, _ = _gfapi.h_mkdir(self.fs, parent, os.fsencode(part), 0o755)
                    _gfapi.h_close(obj)
                except OSError as e:
                    if e.errno != errno.EEXIST:
                        raise
            done = posixpath.join(done, part)

    def host_symlink(self, relpath: str, target: str) -> None:
        with self._parent(relpath) as (parent, name):
            obj, _ = _gfapi.h_symlink(self.fs, parent, name, os.fsencode(target))
            _gfapi.h_close(obj)

    def host_link(self, existing: str, new: str) -> None:
        with self._object(existing, follow=False) as (obj, _), self._parent(new) as (p, name):
            _gfapi.h_link(self.fs, obj, p, name)

    def host_rename(self, old: str, new: str) -> None:
        # Sharing the backend's glfs, a rename racing the backend's lookups of the same names
        # is sometimes refused with EEXIST by gfapi: glfs_h_rename compares the types of
        # source and target as its caches have them, and a lookup answered just before the
        # previous rename can leave the old entry cached (md-cache: up to 1 s). The host
        # asks again, with fresh lookups, until the cache has let it go (at most 3 s).
        deadline = time.monotonic() + 3.0
        delay = 0.001
        while True:
            try:
                with self._parent(old) as (op, oname), self._parent(new) as (np_, nname):
                    _gfapi.h_rename(self.fs, op, oname, np_, nname)
                return
            except OSError as e:
                if e.errno != errno.EEXIST or time.monotonic() > deadline:
                    raise
                self.rename_retries += 1
                self._refresh(old)
                self._refresh(new)
                time.sleep(delay)
                delay = min(delay * 2, 0.1)

    def _refresh(self, relpath: str) -> None:
        """Look ``relpath`` up on the brick: gfapi then drops a stale cached entry of it."""
        with contextlib.suppress(OSError), self._object(relpath, follow=False):
            pass

    def host_exists(self, relpath: str) -> bool:
        try:
            with self._object(relpath, follow=False):
                return True
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR):
                return False
            raise

    def host_absolute(self, relpath: str) -> str:
        return "/" + posixpath.join(self.root, relpath) if self.root else "/" + relpath

    def host_snapshot(self) -> dict[str, tuple[object, ...]]:
        out: dict[str, tuple[object, ...]] = {}
        with self._object("", follow=True) as (obj, _):
            self._snap(obj, "", out)
        return out

    def _snap(self, obj: int, rel: str, out: dict[str, tuple[object, ...]]) -> None:
        st = _gfapi.h_stat(self.fs, obj)
        content: object = None
        kind = stat.S_IFMT(st.st_mode)
        if kind == stat.S_IFREG:
            fd = _gfapi.h_open(self.fs, obj, os.O_RDONLY)
            try:
                content = self._read_fd(fd)
            finally:
                _gfapi.close(fd)
        elif kind == stat.S_IFLNK:
            content = _gfapi.h_readlink(self.fs, obj)
        xattrs: tuple[tuple[bytes, bytes], ...] = ()
        if kind != stat.S_IFLNK:  # gluster answers nothing useful on symlinks
            names = sorted(_gfapi.h_listxattr(self.fs, obj))
            xattrs = tuple((n, _gfapi.h_getxattr(self.fs, obj, n)) for n in names)
        out[rel] = (
            kind,
            st.st_mode,
            st.st_uid,
            st.st_gid,
            st.st_size,
            st.st_nlink,
            st.st_mtim.tv_sec * 10**9 + st.st_mtim.tv_nsec,
            content,
            xattrs,
        )
        if kind != stat.S_IFDIR:
            return
        names = []
        fd = _gfapi.h_opendir(self.fs, obj)
        try:
            dirent, dst = _gfapi.Dirent(), _gfapi.Stat()
            while _gfapi.readdirplus(fd, dirent, dst):
                if dirent.d_name not in (b".", b".."):
                    names.append(dirent.d_name)
        finally:
            _gfapi.closedir(fd)
        for name in sorted(names):
            if not rel and name == os.fsencode(self.snapshot_skips):
                continue
            child, _ = _gfapi.h_lookupat(self.fs, obj, name, follow=False)
            try:
                self._snap(child, posixpath.join(rel, os.fsdecode(name)), out)
            finally:
                _gfapi.h_close(child)
