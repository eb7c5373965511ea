"""The GlusterFS backend class: every operation of :class:`~vshare.backend.base.Backend` on
``glfs_object`` handles (the rules are in the package note of :mod:`vshare.backend.gluster`)."""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Sequence
from typing import Final

from vshare.backend import _gfapi
from vshare.backend._common import (
    I64_MAX,
    IO_FLAGS_KEPT,
    U64,
    check_link_target,
    check_offset,
    check_open,
    check_readlink,
    check_setattr,
    check_xattr_flags,
    decode,
    einval_on_value_error,
    err,
    mknod_kind,
    name_bytes,
    owner_id,
    readdir_position,
)
from vshare.backend.base import Attr, DirEntry, Node, OpenFile, StatFs
from vshare.backend.gluster import _volumes
from vshare.backend.gluster._core import GlusterCore
from vshare.backend.gluster._fields import (
    XATTR_SIZE_MAX,
    qid_of_gfid,
    timespec,
    xattr_allowed,
    xattr_name,
)
from vshare.backend.gluster._handles import GlusterOpenFile
from vshare.terms import CACHE_MODES, CacheMode

__all__ = ["GlusterBackend"]

log = logging.getLogger("vshare.backend.gluster")

_FUSE_SUPER_MAGIC: Final = 0x65735546
_READDIR_BATCH_MAX: Final = 1 << 20
_CLOSE_WAIT: Final = 60.0
_OPENDIR_RETRY: Final = (0.0, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02)
_LOOKUP_RETRY: Final = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02)


class GlusterBackend(GlusterCore):
    """A GlusterFS volume (or one directory of it) through libgfapi.

    Args:
        uri: ``gluster://HOST[:PORT]/VOLUME[/DIR]`` (:func:`parse_uri`).
        log_file: gfapi's log (None: its default under ``/var/log/glusterfs``).
        log_level: gfapi's log level (0 none ... 9 trace; 7 is its INFO).

    Raises:
        ValueError: a malformed URI.
        OSError: libgfapi is missing, or the volume cannot be reached (``glfs_init``).
    """

    # -- nodes ---------------------------------------------------------------------------------

    @einval_on_value_error
    def open_root(self, path: str, *, cache: CacheMode = "none") -> Node:
        if cache not in CACHE_MODES:
            raise ValueError(f"cache mode {cache!r}: expected one of {', '.join(CACHE_MODES)}")
        if cache != "none":
            # A cache is only as good as the upcalls that empty it: on a volume that does
            # not send them, the share runs uncached (coherent, slower) rather than stale.
            problem = _volumes.check_options(self._vol)
            if problem is not None:
                self._vol.fallbacks += 1
                why = f"{self._uri}: share {path!r}: cache mode {cache} served as none"
                log.warning("%s: %s", why, problem)
                cache = "none"
        return self._walk(path, cache)

    def clone(self, node: Node) -> Node:
        return self._clone(self._node(node))

    @einval_on_value_error
    def lookup(self, parent: Node, name: str) -> Node:
        return self._lookup(self._dir_node(parent), name_bytes(name))

    def getattr(self, node: Node) -> Attr:
        n = self._node(node)
        cached = n._cache != "none"
        attr = self._cache.attr(n.qid_path) if cached else None
        if attr is None:
            token = self._cache.token()
            attr, fresh = self._fetch_attr(n)
            if cached and fresh:
                self._cache.put_attr(token, attr)
        if n.qid_path in self._orphans:
            if self._open_file_of(n.qid_path) is None:
                with self._handles_lock:
                    self._orphans.discard(n.qid_path)
            return attr._replace(nlink=0)
        return attr

    @einval_on_value_error
    def setattr(
        self,
        node: Node,
        *,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        size: int | None = None,
        atime_ns: int | None = None,
        mtime_ns: int | None = None,
    ) -> None:
        n = self._node(node)
        ftype = n.file_type
        check_setattr(ftype, mode, size)
        owner = _gfapi.Stat()
        owner_valid = 0
        if uid is not None:
            owner.st_uid = owner_id(uid)
            owner_valid |= _gfapi.SET_ATTR_UID
        if gid is not None:
            owner.st_gid = owner_id(gid)
            owner_valid |= _gfapi.SET_ATTR_GID
        times = _gfapi.Stat()
        times_valid = 0
        if atime_ns is not None:
            times.st_atim = timespec(atime_ns)
            times_valid |= _gfapi.SET_ATTR_ATIME
        if mtime_ns is not None:
            times.st_mtim = timespec(mtime_ns)
            times_valid |= _gfapi.SET_ATTR_MTIME
        with n._ref as obj:
            if owner_valid:
                _gfapi.h_setattrs(self._fs, obj, owner, owner_valid)
                self._changed(n.qid_path)
            if mode is not None:
                perms = _gfapi.Stat()
                perms.st_mode = ftype | mode
                _gfapi.h_setattrs(self._fs, obj, perms, _gfapi.SET_ATTR_MODE)
                self._changed(n.qid_path)
            try:
                if size is not None:
                    _gfapi.h_truncate(self._fs, obj, size)
                if times_valid:
                    _gfapi.h_setattrs(self._fs, obj, times, times_valid)
            finally:
                self._changed(n.qid_path)

    # -- I/O -----------------------------------------------------------------------------------

    @einval_on_value_error
    def open(self, node: Node, flags: int) -> OpenFile:
        n = self._node(node)
        is_dir, accmode = check_open(n.file_type, flags)
        if is_dir:
            if accmode != os.O_RDONLY or flags & os.O_TRUNC:
                raise err(errno.EISDIR)
            fd = self._opendir(n)
        elif n._cache == "all" and accmode == os.O_RDONLY and not flags & os.O_TRUNC:
            return self._wrap_deferred(n, flags & IO_FLAGS_KEPT)
        else:
            with n._ref as obj:
                fd = _gfapi.h_open(self._fs, obj, flags & IO_FLAGS_KEPT)
            if flags & os.O_TRUNC:
                self._changed(n.qid_path)
        return self._wrap_fd(fd, n, is_dir=is_dir, accmode=accmode)

    @einval_on_value_error
    def create(self, parent: Node, name: str, flags: int, mode: int) -> tuple[Node, OpenFile]:
        p = self._dir_node(parent)
        raw = name_bytes(name)
        accmode = flags & os.O_ACCMODE
        if accmode == os.O_ACCMODE:
            raise err(errno.EINVAL)
        oflags = flags & IO_FLAGS_KEPT & ~os.O_TRUNC
        try:
            with p._ref as pobj:
                made = _gfapi.h_creat(
                    self._fs, pobj, raw, oflags | os.O_CREAT | os.O_EXCL, mode & 0o7777
                )
        finally:
            self._changed(p.qid_path, name=raw)
        node = self._adopt(made, p._cache)
        try:
            with node._ref as obj:
                fd = _gfapi.h_open(self._fs, obj, oflags)
            return node, self._wrap_fd(fd, node, is_dir=False, accmode=accmode)
        except BaseException:
            node.close()
            raise

    def _io_check(self, file: OpenFile, offset: int, refused: int) -> GlusterOpenFile:
        f = self._file(file)
        if f._is_dir:
            raise err(errno.EISDIR)
        if f._accmode == refused:
            raise err(errno.EBADF)
        check_offset(offset)
        return f

    @einval_on_value_error
    def read(self, file: OpenFile, offset: int, buf: memoryview) -> int:
        f = self._io_check(file, offset, os.O_WRONLY)
        if not f._cache_data:
            with f._ref as fd:
                return _gfapi.pread(fd, buf, offset)
        done, complete = self._from_cache(f._qid, offset, buf)
        if complete:
            return done
        return done + self._read_through(f, offset + done, buf[done:])

    def read_nowait(self, file: OpenFile, offset: int, buf: memoryview) -> int | None:
        """From the data cache only (shares in cache mode ``all``); None on any miss."""
        try:
            f = self._io_check(file, offset, os.O_WRONLY)
        except OSError:
            return None  # read() will say why
        if not f._cache_data:
            return None
        done, complete = self._from_cache(f._qid, offset, buf)
        return done if complete else None

    @einval_on_value_error
    def write(self, file: OpenFile, offset: int, data: memoryview) -> int:
        f = self._io_check(file, offset, os.O_RDONLY)
        if offset + data.nbytes > I64_MAX:
            raise err(errno.EFBIG)
        try:
            with f._ref as fd:
                return _gfapi.pwrite(fd, data, offset)
        finally:
            self._changed(f._qid)

    @einval_on_value_error
    def readdir(self, file: OpenFile, cookie: int, max_entries: int) -> Sequence[DirEntry]:
        f = self._file(file)
        if not f._is_dir:
            raise err(errno.ENOTDIR)
        position = readdir_position(cookie, max_entries)
        out: list[DirEntry] = []
        dirent, st = f._dirent, f._dirstat
        assert dirent is not None and st is not None
        limit = min(max_entries, _READDIR_BATCH_MAX)
        with f._ref as fd, f._dir_lock:
            _gfapi.seekdir(fd, position)
            while len(out) < limit and _gfapi.readdirplus(fd, dirent, st):
                qid = st.st_ino or dirent.d_ino
                ftype = (dirent.d_type << 12) or stat.S_IFMT(st.st_mode)
                out.append(DirEntry(decode(dirent.d_name), qid, ftype, dirent.d_off & U64))
        return out

    @einval_on_value_error
    def fsync(self, file: OpenFile, *, datasync: bool) -> None:
        f = self._file(file)
        if f._is_dir:
            with f._ref:
                return  # see the package note
        with f._ref as fd:
            if datasync:
                _gfapi.fdatasync(fd)
            else:
                _gfapi.fsync(fd)

    # -- names ---------------------------------------------------------------------------------

    @einval_on_value_error
    def mkdir(self, parent: Node, name: str, mode: int) -> Node:
        p = self._dir_node(parent)
        raw = name_bytes(name)
        try:
            with p._ref as pobj:
                return self._adopt(_gfapi.h_mkdir(self._fs, pobj, raw, mode & 0o7777), p._cache)
        finally:
            self._changed(p.qid_path, name=raw)

    @einval_on_value_error
    def symlink(self, parent: Node, name: str, target: str) -> Node:
        p = self._dir_node(parent)
        raw = name_bytes(name)
        raw_target = target.encode("utf-8", "surrogateescape")
        if not raw_target:
            raise err(errno.ENOENT)  # as symlink(2)
        try:
            with p._ref as pobj:
                return self._adopt(_gfapi.h_symlink(self._fs, pobj, raw, raw_target), p._cache)
        finally:
            self._changed(p.qid_path, name=raw)

    @einval_on_value_error
    def mknod(self, parent: Node, name: str, mode: int, rdev: int) -> Node:
        p = self._dir_node(parent)
        raw = name_bytes(name)
        kind = mknod_kind(mode)
        try:
            with p._ref as pobj:
                made = _gfapi.h_mknod(self._fs, pobj, raw, kind | (mode & 0o7777), 0)
        finally:
            self._changed(p.qid_path, name=raw)
        return self._adopt(made, p._cache)

    def readlink(self, node: Node) -> str:
        n = self._node(node)
        check_readlink(n.file_type)
        with n._ref as obj:
            return decode(_gfapi.h_readlink(self._fs, obj))

    @einval_on_value_error
    def link(self, parent: Node, name: str, target: Node) -> None:
        p = self._dir_node(parent)
        t = self._node(target)
        raw = name_bytes(name)
        check_link_target(t.file_type)
        try:
            with p._ref as pobj, t._ref as tobj:
                _gfapi.h_link(self._fs, tobj, pobj, raw)
        finally:
            self._changed(p.qid_path, name=raw)
            self._changed(t.qid_path)

    @einval_on_value_error
    def rename(self, old_parent: Node, old_name: str, new_parent: Node, new_name: str) -> None:
        op = self._dir_node(old_parent)
        new_dir = self._dir_node(new_parent)
        old_raw = name_bytes(old_name)
        new_raw = name_bytes(new_name)
        # The moved object's ctime and a replaced one's nlink change too: drop them if the
        # cache knows who they are (it cannot have their attributes from this name else).
        moved = [self._cached_child_qid(op, old_raw), self._cached_child_qid(new_dir, new_raw)]
        try:
            with op._ref as oobj, new_dir._ref as nobj:
                _gfapi.h_rename(self._fs, oobj, old_raw, nobj, new_raw)
        except OSError as e:
            if e.errno != errno.EEXIST:
                raise
            # GlusterFS answers EEXIST where rename(2) says EISDIR (a non-directory over a
            # directory) or ENOTDIR (a directory over a non-directory).
            old_kind, new_kind = self._kind(op, old_raw), self._kind(new_dir, new_raw)
            if new_kind == stat.S_IFDIR and old_kind not in (None, stat.S_IFDIR):
                raise err(errno.EISDIR) from None
            if old_kind == stat.S_IFDIR and new_kind not in (None, stat.S_IFDIR):
                raise err(errno.ENOTDIR) from None
            raise
        finally:
            self._changed(op.qid_path, name=old_raw)
            self._changed(new_dir.qid_path, name=new_raw)
            for qid in moved:
                if qid is not None:
                    self._changed(qid)

    @einval_on_value_error
    def unlink(self, parent: Node, name: str, *, rmdir: bool) -> None:
        p = self._dir_node(parent)
        raw = name_bytes(name)
        # The type decides the errno (package note: unlink).
        with p._ref as pobj:
            obj, st = _gfapi.h_lookupat(self._fs, pobj, raw, follow=False)
        try:
            gfid = _gfapi.h_extract_handle(obj)
        finally:
            _gfapi.h_close(obj)
        kind = stat.S_IFMT(st.st_mode)
        if rmdir and kind != stat.S_IFDIR:
            raise err(errno.ENOTDIR)
        if not rmdir and kind == stat.S_IFDIR:
            raise err(errno.EISDIR)
        qid = qid_of_gfid(gfid)
        self._open_deferred(qid)  # an open file stays readable after its unlink, as POSIX
        try:
            with p._ref as pobj:
                _gfapi.h_unlink(self._fs, pobj, raw)
        finally:
            self._changed(p.qid_path, name=raw)
            self._cache.invalidate(qid, "local")
        if kind == stat.S_IFREG and st.st_nlink == 1 and self._open_file_of(qid) is not None:
            with self._handles_lock:
                self._orphans.add(qid)

    def statfs(self, node: Node) -> StatFs:
        n = self._node(node)
        with n._ref as obj:
            st = _gfapi.h_statfs(self._fs, obj)
        return StatFs(
            fs_type=_FUSE_SUPER_MAGIC,
            bsize=st.f_frsize or st.f_bsize,  # the unit of the block counts
            blocks=st.f_blocks,
            bfree=st.f_bfree,
            bavail=st.f_bavail,
            files=st.f_files,
            ffree=st.f_ffree,
            fsid=st.f_fsid & U64,
            namelen=st.f_namemax,
        )

    # -- xattrs (only user.* and POSIX ACLs: module note, point 6) -------------------------------

    @einval_on_value_error
    def getxattr(self, node: Node, name: str) -> bytes:
        n = self._node(node)
        raw = xattr_name(name)
        if n.file_type == stat.S_IFLNK:
            raise err(errno.ENODATA)  # point 6: no xattr call on a symlink object
        with n._ref as obj:
            return _gfapi.h_getxattr(self._fs, obj, raw)

    def listxattr(self, node: Node) -> list[str]:
        n = self._node(node)
        if n.file_type == stat.S_IFLNK:
            return []
        with n._ref as obj:
            names = _gfapi.h_listxattr(self._fs, obj)
        return [s for s in map(decode, names) if xattr_allowed(s)]

    @einval_on_value_error
    def setxattr(self, node: Node, name: str, value: bytes, flags: int) -> None:
        n = self._node(node)
        raw = xattr_name(name)
        check_xattr_flags(flags)
        if len(value) > XATTR_SIZE_MAX:
            raise err(errno.E2BIG)
        if n.file_type == stat.S_IFLNK:
            raise err(errno.EPERM)  # as Linux answers for user.* on a symlink
        try:
            with n._ref as obj:
                _gfapi.h_setxattr(self._fs, obj, raw, bytes(value), flags)
        finally:
            self._changed(n.qid_path)

    @einval_on_value_error
    def removexattr(self, node: Node, name: str) -> None:
        n = self._node(node)
        raw = xattr_name(name)
        if n.file_type == stat.S_IFLNK:
            raise err(errno.EPERM)
        try:
            with n._ref as obj:
                _gfapi.h_removexattr(self._fs, obj, raw)
        finally:
            self._changed(n.qid_path)
