"""The GlusterFS backend class: every operation of :class:`~vshare.backend.base.Backend` on
``glfs_object`` handles (the rules are in the package note of :mod:`vshare.backend.gluster`)."""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Callable
from typing import Final

from vshare.backend import _gfapi
from vshare.backend._common import (
    I64_MAX,
    IO_FLAGS_KEPT,
    U64,
    AttrChange,
    check_offset,
    check_open,
    decode,
    einval_on_value_error,
    err,
    name_bytes,
    owner_id,
    readdir_position,
)
from vshare.backend._gfapi_abi import (
    SET_ATTR_ATIME,
    SET_ATTR_GID,
    SET_ATTR_MODE,
    SET_ATTR_MTIME,
    SET_ATTR_UID,
)
from vshare.backend.base import Attr, DirEntry, Listing, Node, OpenFile, StatFs
from vshare.backend.gluster import _volumes
from vshare.backend.gluster._core import GlusterCore
from vshare.backend.gluster._fields import (
    attr_of,
    check_xattr_value,
    qid_of_gfid,
    setattrs_of,
    timespec,
    xattr_allowed,
    xattr_name,
)
from vshare.backend.gluster._handles import GlusterNode, GlusterOpenFile
from vshare.terms import CACHE_MODES, CacheMode

__all__ = ["GlusterBackend"]

log = logging.getLogger("vshare.backend.gluster")

_FUSE_SUPER_MAGIC: Final = 0x65735546
_READDIR_BATCH_MAX: Final = 1 << 20
#: Entries a directory's open reads ahead (:meth:`GlusterBackend._list_ahead`): the
#: gateway's own batch (``READDIRPLUS_MAX``), so a listing it could cache is read whole.
_LIST_AHEAD_MAX: Final = 512


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

    def getattr(self, node: Node) -> Attr:
        n = self._node(node)
        cached = n._cache != "none"
        attr = self._cache.attr(n.qid_path) if cached else None
        if attr is None:
            token = self._cache.token()
            attr, fresh = self._fetch_attr(n)
            if cached and fresh:
                self._cache.put_attr(token, attr)
        return self._links_seen(attr)

    @einval_on_value_error
    def lookup_nowait(self, parent: Node, name: str) -> Node | None:
        p = self._parent(parent)
        if p._cache == "none":
            return None
        raw = name_bytes(name)
        node = self._cached_node(p, raw)
        if node is not None:
            self._vol.ancestry.note(p.qid_path, node.qid_path)  # as _lookup does
        elif self._listed_absent(p.qid_path, raw):
            raise err(errno.ENOENT)
        return node

    def getattr_nowait(self, node: Node) -> Attr | None:
        n = self._node(node)
        attr = None if n._cache == "none" else self._cache.attr(n.qid_path)
        return None if attr is None else self._links_seen(attr)

    @einval_on_value_error
    def getattr_at_nowait(self, parent: Node, name: str) -> Attr | None:
        p = self._parent(parent)
        if p._cache == "none":
            return None
        raw = name_bytes(name)
        qid = self._cached_child_qid(p, raw)
        if qid is None:
            if self._listed_absent(p.qid_path, raw):
                raise err(errno.ENOENT)
            return None
        attr = self._cache.attr(qid)
        if attr is None:
            return None
        self._vol.ancestry.note(p.qid_path, qid)  # as _lookup does
        return self._links_seen(attr)

    def getattr_at(self, parent: Node, name: str) -> Attr:
        p = self._parent(parent)
        if p._cache != "none":  # the cache's own path: its names, then its attributes
            return super().getattr_at(parent, name)
        # The lookup's stat is the object's attributes, as a getattr right after it would
        # fetch them: one call to the brick, not two.
        obj, st = self._lookup_object(p, name_bytes(name))
        node = self._adopt((obj, st))
        try:
            self._vol.ancestry.note(p.qid_path, node.qid_path)  # as _lookup does
            return self._links_seen(attr_of(st, node.qid_path))
        finally:
            node.close()

    def _links_seen(self, attr: Attr) -> Attr:
        """``attr`` as POSIX counts links: 0 for a file this backend unlinked while open
        (GlusterFS still counts the one under ``.glusterfs/unlink``; package note)."""
        qid = attr.qid_path
        if qid in self._orphans:
            if self._open_file_of(qid) is None:
                with self._handles_lock:
                    self._orphans.discard(qid)
            return attr._replace(nlink=0)
        return attr

    def _setattr(self, n: GlusterNode, change: AttrChange) -> None:
        mode, uid, gid, size, atime_ns, mtime_ns = change
        ftype = n.file_type
        atime = None if atime_ns is None else timespec(atime_ns)
        mtime = None if mtime_ns is None else timespec(mtime_ns)
        # One setattr fop carries what can go together: the brick applies owner, then mode,
        # then times (posix_setattr; the order of chown, chmod and utimensat, which keeps
        # the set-id bits a chmod gives after a chown). A truncation sets the mtime itself:
        # times asked with one go in a call of their own after it.
        first: list[tuple[str, object, int]] = [
            ("st_uid", None if uid is None else owner_id(uid), SET_ATTR_UID),
            ("st_gid", None if gid is None else owner_id(gid), SET_ATTR_GID),
            ("st_mode", None if mode is None else ftype | mode, SET_ATTR_MODE),
        ]
        last: list[tuple[str, object, int]] = [
            ("st_atim", atime, SET_ATTR_ATIME),
            ("st_mtim", mtime, SET_ATTR_MTIME),
        ]
        if size is None:
            first, last = first + last, []
        with n._ref as obj:
            try:
                st, valid = setattrs_of(*first)
                if valid:
                    _gfapi.h_setattrs(self._fs, obj, st, valid)
                if size is not None:
                    _gfapi.h_truncate(self._fs, obj, size)
                st, valid = setattrs_of(*last)
                if valid:
                    _gfapi.h_setattrs(self._fs, obj, st, valid)
            finally:
                self._changed(n.qid_path)

    # -- I/O -----------------------------------------------------------------------------------

    def _open(self, n: GlusterNode, flags: int, *, is_dir: bool, accmode: int) -> OpenFile:
        if is_dir and (accmode != os.O_RDONLY or flags & os.O_TRUNC):
            raise err(errno.EISDIR)
        later = self._open_later(n, flags, is_dir=is_dir, accmode=accmode)
        if later is not None:
            return later
        if is_dir:
            fd = self._opendir(n)
            if n._cache != "none":
                return self._list_ahead(n, self._wrap_fd(fd, n, is_dir=True, accmode=accmode))
        else:
            with n._ref as obj:
                fd = _gfapi.h_open(self._fs, obj, flags & IO_FLAGS_KEPT)
            if flags & os.O_TRUNC:
                self._changed(n.qid_path)
        return self._wrap_fd(fd, n, is_dir=is_dir, accmode=accmode)

    @einval_on_value_error
    def create(self, parent: Node, name: str, flags: int, mode: int) -> tuple[Node, OpenFile]:
        p = self._parent(parent)
        raw = name_bytes(name)
        accmode = flags & os.O_ACCMODE
        if accmode == os.O_ACCMODE:
            raise err(errno.EINVAL)
        oflags = flags & IO_FLAGS_KEPT & ~os.O_TRUNC
        token = self._cache.token()
        changed = -1
        try:
            with p._ref as pobj:  # one create fop, whose fd stays open: no open after it
                obj, st, fd = _gfapi.h_creat_open(
                    self._fs, pobj, raw, oflags | os.O_CREAT | os.O_EXCL, mode & 0o7777
                )
        finally:
            changed = self._changed(p.qid_path, name=raw)
        try:
            node = self._adopt((obj, st), p._cache)
        except BaseException:
            _gfapi.close(fd)
            raise
        self._vol.ancestry.note(p.qid_path, node.qid_path)
        if p._cache != "none" and changed == token + 1:
            # The one invalidation since ``token`` is ours, of the parent, after the create:
            # none of another client's change to the new file came meanwhile, and the fill's
            # own check (from ``changed`` on) refuses it if one comes now. A ``stat`` right
            # after a create, a listing's or a ``find``'s first lookup: no call to the brick.
            self._remember(changed, p, raw, node, st)
        try:
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
            return self._pread(f, buf, offset)
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
    def readdir(self, file: OpenFile, cookie: int, max_entries: int) -> Listing[DirEntry]:
        # From the cached listing where there is one (a directory's open reads it: a
        # kernel client's Treaddir, the change feed's and the quota scan's listings).
        f = self._file(file)
        if f._is_dir and f._listings:
            readdir_position(cookie, max_entries)  # its checks (EINVAL) first
            held = self._listed(f._qid, cookie, max_entries)
            if held is not None:
                return Listing([entry for entry, _ in held.entries], held.end)
        return super().readdir(file, cookie, max_entries)

    def _readdir(self, f: GlusterOpenFile, position: int, max_entries: int) -> Listing[DirEntry]:
        listed = self._readdirplus(f, position, max_entries)
        return Listing([entry for entry, _ in listed.entries], listed.end)

    def _readdirplus(
        self,
        f: GlusterOpenFile,
        position: int,
        max_entries: int,
        objects: list[tuple[int, int]] | None = None,
    ) -> Listing[tuple[DirEntry, Attr | None]]:
        """Entries from ``glfs_readdirplus_r``, each with the stat the brick's readdirp
        sent along (None for ``.``, ``..`` and an entry that came without one), and whether
        they reach the end of the directory; with ``objects``, the entries' gfapi objects
        too, by index in the list returned (the caller closes them)."""
        out: list[tuple[DirEntry, Attr | None]] = []
        dirent, st = f._dirent, f._dirstat
        assert dirent is not None and st is not None
        limit = min(max_entries, _READDIR_BATCH_MAX)
        with f._ref as fd, f._dir_lock:
            _gfapi.seekdir(fd, position)
            while True:
                if len(out) >= limit:
                    return Listing(out, False)
                if objects is None:
                    if not _gfapi.readdirplus(fd, dirent, st):
                        break
                else:  # and each entry's object, for the caller (which closes them)
                    more, obj = _gfapi.xreaddirplus(fd, dirent, st)
                    if not more:
                        break
                    if obj is not None:
                        objects.append((len(out), obj))
                qid = st.st_ino or dirent.d_ino
                ftype = (dirent.d_type << 12) or stat.S_IFMT(st.st_mode)
                name = decode(dirent.d_name)
                attr = None
                if st.st_ino and st.st_mode and name not in (".", ".."):
                    attr = attr_of(st, qid)
                if name not in (".", ".."):
                    self._vol.ancestry.note(f._qid, qid)
                out.append((DirEntry(name, qid, ftype, dirent.d_off & U64), attr))
        return Listing(out, True)

    def _list_ahead(self, d: GlusterNode, file: GlusterOpenFile) -> GlusterOpenFile:
        """A directory just opened (cache modes meta and all), listed at once from its start
        in the open's own call, as GlusterFS's readdir-ahead translator preloads a listing
        on OPENDIR: a directory is opened to be read. A listing that fits
        (:data:`_LIST_AHEAD_MAX`) is cached and the directory closed again; what is
        returned is a deferred open whose listing, seek and close the gateway answers from
        memory, on its event loop (one worker-thread hop for `find`'s or `ls`'s opendir,
        readdir, readdir, releasedir, where there were three). Anything else (a longer
        directory, an error, a change meanwhile) keeps the open ``file``; a longer
        directory's first entries are cached as its listing's head, which the first
        listing's first batch is answered from (no entry is read twice), unless a head
        is cached already."""
        if self._cache.has_listing(d.qid_path, head=True):
            return file
        try:
            complete = self._listing_from_brick(d, file, 0, _LIST_AHEAD_MAX).end
        except OSError:
            return file  # the listing's own readdir will meet it, and say so
        except BaseException:
            file.close()
            raise
        if not complete or not self._cache.has_listing(d.qid_path):
            return file
        file.close()
        return self._wrap_deferred(d, 0, is_dir=True)

    @einval_on_value_error
    def readdir_attrs(
        self, directory: Node, file: OpenFile, cookie: int, max_entries: int
    ) -> Listing[tuple[DirEntry, Attr | None]]:
        f = self._file(file)
        if not f._is_dir:
            raise err(errno.ENOTDIR)
        d = self._node(directory)
        position = readdir_position(cookie, max_entries)  # its checks (EINVAL) first
        if d._cache != "none":
            held = self._listed(d.qid_path, cookie, max_entries)
            if held is not None:
                return held
        return self._listing_from_brick(d, f, position, max_entries)

    def _listing_from_brick(
        self, d: GlusterNode, f: GlusterOpenFile, position: int, max_entries: int
    ) -> Listing[tuple[DirEntry, Attr | None]]:
        """Entries of ``d`` after the directory offset ``position`` read through its open
        ``f``, and whether they reach its end.

        The stats come with the listing (readdirp): one network round trip per batch,
        where the default's lookup and getattr of each name would cost one or two each.
        An entry the brick sent without a stat is looked up (getattr_at: one call).
        In cache modes meta and all, a whole listing is kept (the volume's cache, dropped
        when the directory or any entry's object changes): `find`, `ls -l`, `rm -rf`
        reading a directory again reach no brick."""
        caching = d._cache != "none"
        token = self._cache.token()
        # With a cache mode, the listing brings each entry's object: its name is cached as
        # a lookup's would be (a `stat`, an open or an unlink of it after `ls` or `find`
        # reaches no brick).
        objects: list[tuple[int, int]] | None = [] if caching else None
        try:
            listed = self._readdirplus(f, position, max_entries, objects)
            out, complete = list(listed.entries), listed.end
            for i, (entry, attr) in enumerate(out):
                if attr is None and entry.name not in (".", ".."):
                    try:
                        out[i] = (entry, self.getattr_at(d, entry.name))
                    except OSError as exc:
                        if exc.errno not in (errno.ENOENT, errno.ESTALE):
                            raise
            if objects:
                self._remember_listed(token, d, out, objects)
        finally:
            for _, obj in objects or ():
                _gfapi.h_close(obj)
        if caching and position == 0 and out:
            self._keep_listing(token, d.qid_path, out, whole=complete)
        return Listing(out, complete)

    def open_nowait(self, node: Node, flags: int) -> OpenFile | None:
        n = self._node(node)
        if n._cache == "none" or n.file_type not in (stat.S_IFDIR, stat.S_IFREG):
            return None
        is_dir, accmode = check_open(n.file_type, flags)
        return self._open_later(n, flags, is_dir=is_dir, accmode=accmode)

    def _open_later(
        self, n: GlusterNode, flags: int, *, is_dir: bool, accmode: int
    ) -> GlusterOpenFile | None:
        """The open of ``n`` put off until first needed, made with no call, where the
        cache mode allows it; else None. A read-only open of a file, as GlusterFS's own
        client does by default (open-behind: lazy-open, then read-after-open): reads that
        each reach the end go without it, the first that stops short makes it
        (``_pread``); an open for a stat, or whose reads the data cache answers, costs no
        OPEN and FLUSH at all. A directory whose listing is cached: a listing that misses
        it makes the OPENDIR."""
        if n._cache == "none" or accmode != os.O_RDONLY or flags & os.O_TRUNC:
            return None
        if not is_dir:
            return self._wrap_deferred(n, flags & IO_FLAGS_KEPT)
        if not self._cache.has_listing(n.qid_path):
            return None
        return self._wrap_deferred(n, 0, is_dir=True)

    def close_is_quick(self, file: OpenFile) -> bool:
        return self._file(file)._fd is None  # put off, never made: a node to let go

    @einval_on_value_error
    def readdir_attrs_nowait(
        self, directory: Node, file: OpenFile, cookie: int, max_entries: int
    ) -> Listing[tuple[DirEntry, Attr | None]] | None:
        f = self._file(file)
        d = self._node(directory)
        if not f._is_dir or d._cache == "none":
            return None
        readdir_position(cookie, max_entries)  # the same checks (EINVAL)
        return self._listed(d.qid_path, cookie, max_entries)

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

    def _fallocate(
        self,
        f: GlusterOpenFile,
        offset: int,
        length: int,
        keep_size: bool,
        punch_hole: bool,
        zero_range: bool,
    ) -> None:
        if f._accmode == os.O_RDONLY:
            raise err(errno.EBADF)
        try:
            with f._ref as fd:
                if punch_hole:
                    _gfapi.discard(fd, offset, length)
                elif zero_range:
                    _gfapi.zerofill(fd, offset, length)
                    # growing the size, as Linux's ZERO_RANGE without KEEP_SIZE does, is
                    # ours to do
                    if not keep_size and _gfapi.fstat(fd).st_size < offset + length:
                        _gfapi.ftruncate(fd, offset + length)
                else:
                    _gfapi.fallocate(fd, offset, length, keep_size=keep_size)
        finally:
            self._changed(f._qid)

    # -- names ---------------------------------------------------------------------------------

    def _new_entry(
        self, parent: GlusterNode, raw: bytes, make: Callable[[int], tuple[int, _gfapi.Stat]]
    ) -> GlusterNode:
        """The node of the entry ``make(parent's object)`` made as ``parent/raw``."""
        try:
            with parent._ref as pobj:
                made = make(pobj)
        finally:
            self._changed(parent.qid_path, name=raw)
        node = self._adopt(made, parent._cache)
        self._vol.ancestry.note(parent.qid_path, node.qid_path)
        return node

    def _mkdir(self, parent: GlusterNode, raw: bytes, perms: int) -> GlusterNode:
        return self._new_entry(parent, raw, lambda pobj: _gfapi.h_mkdir(self._fs, pobj, raw, perms))

    def _symlink(self, parent: GlusterNode, raw: bytes, target: bytes) -> GlusterNode:
        fs = self._fs
        return self._new_entry(parent, raw, lambda pobj: _gfapi.h_symlink(fs, pobj, raw, target))

    def _mknod(self, parent: GlusterNode, raw: bytes, mode: int) -> GlusterNode:
        fs = self._fs
        return self._new_entry(parent, raw, lambda pobj: _gfapi.h_mknod(fs, pobj, raw, mode, 0))

    def _readlink(self, n: GlusterNode) -> str:
        with n._ref as obj:
            return decode(_gfapi.h_readlink(self._fs, obj))

    def _link(self, parent: GlusterNode, raw: bytes, target: GlusterNode) -> None:
        try:
            with parent._ref as pobj, target._ref as tobj:
                _gfapi.h_link(self._fs, tobj, pobj, raw)
            self._vol.ancestry.note(parent.qid_path, target.qid_path)
        finally:
            self._changed(parent.qid_path, name=raw)
            self._changed(target.qid_path)

    def _rename(
        self, op: GlusterNode, old_raw: bytes, new_dir: GlusterNode, new_raw: bytes
    ) -> None:
        # The moved object's ctime and a replaced one's nlink change too: drop them if the
        # cache knows who they are (it cannot have their attributes from this name else).
        moved = [self._cached_child_qid(op, old_raw), self._cached_child_qid(new_dir, new_raw)]
        try:
            with op._ref as oobj, new_dir._ref as nobj:
                _gfapi.h_rename(self._fs, oobj, old_raw, nobj, new_raw)
            self._note_moved(new_dir, new_raw)
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

    def _entry_kind(self, p: GlusterNode, raw: bytes) -> tuple[int, int, int]:
        """The file type, qid and link count of ``p/raw``: from the volume's cache when it
        holds the name and its attributes (modes meta and all, kept right by upcalls), else
        from a lookup."""
        if p._cache != "none":
            qid = self._cached_child_qid(p, raw)
            attr = None if qid is None else self._cache.attr(qid)
            if attr is not None:
                return stat.S_IFMT(attr.mode), attr.qid_path, attr.nlink
        with p._ref as pobj:
            obj, st = _gfapi.h_lookupat(self._fs, pobj, raw, follow=False)
        try:
            gfid = _gfapi.h_extract_handle(obj)
        finally:
            _gfapi.h_close(obj)
        return stat.S_IFMT(st.st_mode), qid_of_gfid(gfid), st.st_nlink

    def _unlink(self, p: GlusterNode, raw: bytes, *, rmdir: bool) -> None:
        # The type decides the errno (package note: unlink). When the cache holds the
        # name, gfapi's own resolution of it in glfs_h_unlink finds it in its inode table
        # too (the cache keeps a reference): the brick sees the unlink alone.
        kind, qid, links = self._entry_kind(p, raw)
        if rmdir and kind != stat.S_IFDIR:
            raise err(errno.ENOTDIR)
        if not rmdir and kind == stat.S_IFDIR:
            raise err(errno.EISDIR)
        self._open_deferred(qid)  # an open file stays readable after its unlink, as POSIX
        try:
            with p._ref as pobj:
                _gfapi.h_unlink(self._fs, pobj, raw)
        finally:
            self._changed(p.qid_path, name=raw)
            self._cache.invalidate(qid, "local")
        if kind == stat.S_IFREG and links == 1 and self._open_file_of(qid) is not None:
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

    # -- xattrs (only user.* and POSIX ACLs: package note, point 6) ------------------------------

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
        check_xattr_value(value, flags)
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
